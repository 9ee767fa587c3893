//! Views, broadcasting elementwise ops, reductions, casts, matmul and concat:
//! values against hand-computed results and gradients against f64 finite differences.

mod common;
use common::*;
use medsyn::autograd::no_grad;
use medsyn::tensor::Philox;
use medsyn::{DType, Tensor};

#[test]
fn views_share_storage_and_transposed_matmul_reads_strides() {
    let a = Tensor::from_vec((0..6).map(|i| i as f32).collect(), &[2, 3]).unwrap();
    let t = a.t().unwrap();
    assert!(t.same_storage(&a));
    assert!(!t.is_contiguous());
    assert_eq!(t.to_vec_f32(), vec![0., 3., 1., 4., 2., 5.]);
    let n = a.narrow(1, 1, 2).unwrap();
    assert!(n.same_storage(&a));
    assert_eq!(n.to_vec_f32(), vec![1., 2., 4., 5.]);
    let b = Tensor::from_vec(vec![1f32, 2., 3.], &[3])
        .unwrap()
        .broadcast_as(&[2, 3])
        .unwrap();
    assert!(b.same_storage(&b));
    assert_eq!(b.layout().strides(), &[0, 1]);
    // a @ a^T through the transposed view
    let p = a.matmul(&t).unwrap();
    assert_eq!(p.to_vec_f32(), vec![5., 14., 14., 50.]);
    let r = a.reshape(&[3, 2]).unwrap();
    assert!(r.same_storage(&a));
}

#[test]
fn broadcasting_binary_ops() {
    let a = Tensor::from_vec(vec![1f32, 2., 3., 4., 5., 6.], &[2, 3]).unwrap();
    let b = Tensor::from_vec(vec![10f32, 20., 30.], &[3]).unwrap();
    assert_eq!(
        a.add(&b).unwrap().to_vec_f32(),
        vec![11., 22., 33., 14., 25., 36.]
    );
    let c = Tensor::from_vec(vec![2f32, 4.], &[2, 1]).unwrap();
    assert_eq!(
        a.div(&c).unwrap().to_vec_f32(),
        vec![0.5, 1., 1.5, 1., 1.25, 1.5]
    );
    assert!(a.add(&Tensor::zeros(&[4], DType::F32).unwrap()).is_err());
}

#[test]
fn half_dtypes_store_as_half_and_compute_in_f32() {
    let a = Tensor::from_vec(vec![1.0f32, 1.0 / 3.0], &[2]).unwrap();
    let h = a.to_dtype(DType::BF16).unwrap();
    assert_eq!(h.dtype(), DType::BF16);
    assert_eq!(h.storage().len(), 2);
    let s = h.add(&h).unwrap();
    assert_eq!(s.dtype(), DType::BF16);
    let v = s.to_vec_f32();
    assert!((v[1] - 2.0 / 3.0).abs() < 4e-3);
    let f = a.to_dtype(DType::F16).unwrap().to_vec_f32();
    assert!((f[1] - 1.0 / 3.0).abs() < 3e-4);
}

#[test]
fn reductions_and_argmax() {
    let a = Tensor::from_vec((0..24).map(|i| i as f64).collect(), &[2, 3, 4]).unwrap();
    assert_eq!(
        a.sum_dims(&[1], false).unwrap().to_vec_f64(),
        vec![12., 15., 18., 21., 48., 51., 54., 57.]
    );
    assert_eq!(a.mean_dims(&[0, 2], true).unwrap().shape(), &[1, 3, 1]);
    assert_eq!(a.mean_all().unwrap().to_scalar().unwrap(), 11.5);
    assert_eq!(
        a.max_dim(-1, false).unwrap().to_vec_f64(),
        vec![3., 7., 11., 15., 19., 23.]
    );
    assert_eq!(
        a.argmax(1).unwrap().to_vec_i64(),
        vec![2, 2, 2, 2, 2, 2, 2, 2]
    );
}

#[test]
fn gradients_match_finite_differences() {
    let mut rng = Philox::new(1);
    let a = rand_leaf(&mut rng, &[2, 3, 4]);
    let b = rand_leaf(&mut rng, &[3, 1]);
    assert_gradcheck(
        "add/mul/div broadcast",
        |x| x[0].mul(&x[1])?.add(&x[1])?.div(&x[1].affine(0.1, 2.0)?),
        &[a.clone(), b.clone()],
    );
    assert_gradcheck(
        "sub/maximum",
        |x| x[0].sub(&x[1])?.maximum(&x[1].scale(0.3)?),
        &[a.clone(), b.clone()],
    );
    let m1 = rand_leaf(&mut rng, &[2, 3, 5]);
    let m2 = rand_leaf(&mut rng, &[5, 4]);
    assert_gradcheck(
        "matmul 3d@2d",
        |x| x[0].matmul(&x[1]),
        &[m1.clone(), m2.clone()],
    );
    let m3 = rand_leaf(&mut rng, &[2, 1, 4, 5]);
    assert_gradcheck(
        "matmul broadcast batch, transposed",
        |x| x[0].matmul(&x[1].t()?),
        &[m1.clone(), m3],
    );
    assert_gradcheck(
        "permute/reshape/narrow/contiguous",
        |x| {
            x[0].permute(&[2, 0, 1])?
                .contiguous()?
                .reshape(&[8, 3])?
                .narrow(0, 2, 5)?
                .square()
        },
        std::slice::from_ref(&a),
    );
    assert_gradcheck(
        "sum/mean/max",
        |x| {
            let s = x[0].sum_dims(&[0], true)?;
            let m = x[0].mean_dims(&[-1], true)?;
            let mx = x[0].max_dim(1, true)?;
            s.add(&m)?.add(&mx)
        },
        std::slice::from_ref(&a),
    );
    let c = rand_leaf(&mut rng, &[2, 2, 4]);
    assert_gradcheck(
        "cat/chunk",
        |x| {
            let y = Tensor::cat(&[&x[0], &x[1]], 1)?;
            let parts = y.chunk(5, 1)?;
            parts[0].mul(&parts[4])?.add(&parts[2])
        },
        &[a.clone(), c],
    );
    assert_gradcheck(
        "unsqueeze/squeeze/broadcast",
        |x| {
            x[0].unsqueeze(1)?
                .broadcast_as(&[3, 4, 1])?
                .squeeze(-1)?
                .exp()
        },
        &[rand_leaf(&mut rng, &[3, 1])],
    );
    assert_gradcheck(
        "linear",
        |x| x[0].linear(&x[1], Some(&x[2])),
        &[m1, rand_leaf(&mut rng, &[7, 5]), rand_leaf(&mut rng, &[7])],
    );
}

#[test]
fn activation_gradients_match_finite_differences() {
    let mut rng = Philox::new(2);
    let x = rand_leaf(&mut rng, &[3, 8])
        .affine(3.0, 0.0)
        .unwrap()
        .detach()
        .into_param()
        .unwrap();
    type F = fn(&Tensor) -> medsyn::Result<Tensor>;
    let ops: [(&str, F); 12] = [
        ("exp", Tensor::exp),
        ("tanh", Tensor::tanh),
        ("sigmoid", Tensor::sigmoid),
        ("relu", Tensor::relu),
        ("silu", Tensor::silu),
        ("gelu", Tensor::gelu),
        ("gelu_tanh", Tensor::gelu_tanh),
        ("quick_gelu", Tensor::quick_gelu),
        ("square", Tensor::square),
        ("sin", Tensor::sin),
        ("cos", Tensor::cos),
        ("neg", Tensor::neg),
    ];
    for (name, f) in ops {
        assert_gradcheck(name, |v| f(&v[0]), std::slice::from_ref(&x));
    }
    let pos = x
        .abs()
        .unwrap()
        .add_scalar(0.5)
        .unwrap()
        .detach()
        .into_param()
        .unwrap();
    assert_gradcheck(
        "log/sqrt/recip/powf",
        |v| {
            v[0].log()?
                .add(&v[0].sqrt()?)?
                .add(&v[0].recip()?)?
                .add(&v[0].powf(1.7)?)
        },
        &[pos],
    );
    let g = rand_leaf(&mut rng, &[2, 3, 8]);
    assert_gradcheck("geglu", |v| v[0].geglu(), &[g]);
}

#[test]
fn frozen_inputs_get_no_gradient_and_grads_accumulate() {
    let mut rng = Philox::new(3);
    let w = rand_leaf(&mut rng, &[4, 3]);
    let x = Tensor::rand_uniform(&mut rng, -1.0, 1.0, &[5, 3], DType::F64).unwrap();
    w.set_requires_grad(false).unwrap();
    let y = x.linear(&w, None).unwrap().sum_all().unwrap();
    assert!(!y.requires_grad());
    assert!(y.backward().is_err());
    w.set_requires_grad(true).unwrap();
    let loss = || x.linear(&w, None).unwrap().sum_all().unwrap();
    loss().backward().unwrap();
    let g1 = w.grad().unwrap().to_vec_f64();
    loss().backward().unwrap();
    let g2 = w.grad().unwrap().to_vec_f64();
    for (a, b) in g1.iter().zip(&g2) {
        assert!((2.0 * a - b).abs() < 1e-12);
    }
    // Inference mode records nothing.
    let _g = no_grad();
    assert!(!x.linear(&w, None).unwrap().requires_grad());
}

/// Bias-like broadcasts (read in place without expanding) give what the expanded
/// operand gives, in both operand orders.
#[test]
fn in_place_broadcast_patterns_match_expanded_operands() {
    let mut rng = Philox::new(9);
    let a = Tensor::randn(&mut rng, &[2, 3, 4, 5], DType::F32).unwrap();
    for shape in [
        &[5][..],
        &[4, 5],
        &[2, 3, 1, 1],
        &[3, 1, 1],
        &[1, 1],
        &[2, 1, 4, 5],
        &[1, 3, 4, 1],
    ] {
        let b = Tensor::randn(&mut rng, shape, DType::F32)
            .unwrap()
            .affine(1.0, 3.0)
            .unwrap();
        let wide = b.broadcast_as(a.shape()).unwrap().contiguous().unwrap();
        for (x, y, xw, yw) in [(&a, &b, &a, &wide), (&b, &a, &wide, &a)] {
            assert_eq!(
                x.sub(y).unwrap().to_vec_f32(),
                xw.sub(yw).unwrap().to_vec_f32(),
                "sub {shape:?}"
            );
            assert_eq!(
                x.div(y).unwrap().to_vec_f32(),
                xw.div(yw).unwrap().to_vec_f32(),
                "div {shape:?}"
            );
        }
    }
}
