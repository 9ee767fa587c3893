//! Losses (cross-entropy, BCE-with-logits, MSE, InfoNCE, L2 normalise) against
//! PyTorch float64 references (f32 and bf16 inputs), float64 finite differences,
//! and bad-input errors.

mod common;
use common::*;
use medsyn::ops::loss::Reduction;
use medsyn::tensor::Philox;
use medsyn::{DType, Tensor};

const DTYPES: [DType; 2] = [DType::F32, DType::BF16];

/// Weighted backward as the fixture did: sum(out * w).
fn weighted_backward(out: &Tensor, w: &Tensor) {
    out.mul(w).unwrap().sum_all().unwrap().backward().unwrap();
}

fn grad(t: &Tensor) -> Tensor {
    t.grad().expect("gradient")
}

#[test]
fn cross_entropy_matches_torch() {
    let fx = Fixture::load("losses_optim");
    let targets = fx.get("ce.targets");
    let cases = [
        ("mean", 0.0, Reduction::Mean),
        ("sum", 0.0, Reduction::Sum),
        ("none", 0.0, Reduction::None),
        ("smooth", 0.1, Reduction::Mean),
        ("smooth_none", 0.25, Reduction::None),
    ];
    for dtype in DTYPES {
        for (name, eps, red) in cases {
            let x = fx.param("ce.logits", dtype);
            let y = x
                .cross_entropy_with(&targets, Some(-100), eps, red)
                .unwrap();
            assert_eq!(
                y.dtype(),
                DType::F32,
                "losses return f32 for {dtype} inputs"
            );
            let what = format!("ce {name} {dtype}");
            assert_close(&y, &fx.get(&format!("ce.{name}.out")), tol(dtype), &what);
            weighted_backward(&y, &fx.get(&format!("ce.{name}.w")));
            assert_close(
                &grad(&x),
                &fx.get(&format!("ce.{name}.dlogits")),
                tol(dtype),
                &format!("{what} dlogits"),
            );
        }
    }
    // The default entry point is the mean.
    let x = fx.param("ce.logits", DType::F32);
    let y = x.cross_entropy(&targets, Some(-100), 0.0).unwrap();
    assert_close(&y, &fx.get("ce.mean.out"), 1e-5, "ce default");
}

#[test]
fn bce_with_logits_matches_torch() {
    let fx = Fixture::load("losses_optim");
    let pw = fx.get("bce.pos_weight");
    let cases = [
        ("mean", false, Reduction::Mean),
        ("pw", true, Reduction::Mean),
        ("pw_none", true, Reduction::None),
        ("sum", false, Reduction::Sum),
    ];
    for dtype in DTYPES {
        for (name, with_pw, red) in cases {
            let x = fx.param("bce.x", dtype);
            let y = fx.param("bce.y", dtype);
            let p = pw.to_dtype(dtype).unwrap();
            let l = x
                .bce_with_logits_with(&y, with_pw.then_some(&p), red)
                .unwrap();
            let what = format!("bce {name} {dtype}");
            assert_close(&l, &fx.get(&format!("bce.{name}.out")), tol(dtype), &what);
            weighted_backward(&l, &fx.get(&format!("bce.{name}.w")));
            assert_close(
                &grad(&x),
                &fx.get(&format!("bce.{name}.dx")),
                tol(dtype),
                &format!("{what} dx"),
            );
            assert_close(
                &grad(&y),
                &fx.get(&format!("bce.{name}.dy")),
                tol(dtype),
                &format!("{what} dy"),
            );
        }
    }
    let x = fx.param("bce.x", DType::F32);
    let l = x
        .bce_with_logits(&fx.get("bce.y").to_dtype(DType::F32).unwrap(), None)
        .unwrap();
    assert_close(&l, &fx.get("bce.mean.out"), 1e-5, "bce default");
}

#[test]
fn bce_is_stable_for_large_logits() {
    let x = Tensor::from_vec(vec![-200.0f32, 200.0, 0.0], &[3]).unwrap();
    let y = Tensor::from_vec(vec![1.0f32, 0.0, 0.5], &[3]).unwrap();
    let l = x
        .bce_with_logits_with(&y, None, Reduction::None)
        .unwrap()
        .to_vec_f64();
    assert!(
        (l[0] - 200.0).abs() < 1e-4 && (l[1] - 200.0).abs() < 1e-4,
        "{l:?}"
    );
    assert!((l[2] - std::f64::consts::LN_2).abs() < 1e-6, "{l:?}");
}

#[test]
fn mse_matches_torch() {
    let fx = Fixture::load("losses_optim");
    for dtype in DTYPES {
        for (name, red) in [
            ("mean", Reduction::Mean),
            ("sum", Reduction::Sum),
            ("none", Reduction::None),
        ] {
            let a = fx.param("mse.a", dtype);
            let b = fx.param("mse.b", dtype);
            let l = a.mse_loss_with(&b, red).unwrap();
            let what = format!("mse {name} {dtype}");
            assert_close(&l, &fx.get(&format!("mse.{name}.out")), tol(dtype), &what);
            weighted_backward(&l, &fx.get(&format!("mse.{name}.w")));
            assert_close(
                &grad(&a),
                &fx.get(&format!("mse.{name}.da")),
                tol(dtype),
                &format!("{what} da"),
            );
            assert_close(
                &grad(&b),
                &fx.get(&format!("mse.{name}.db")),
                tol(dtype),
                &format!("{what} db"),
            );
        }
    }
}

#[test]
fn l2_normalize_matches_torch() {
    let fx = Fixture::load("losses_optim");
    for dtype in DTYPES {
        for (name, dim) in [("last", -1), ("first", 0)] {
            let x = fx.param("norm.x", dtype);
            let y = x.l2_normalize(dim, 1e-6).unwrap();
            assert_eq!(y.dtype(), dtype);
            let what = format!("l2_normalize {name} {dtype}");
            assert_close(&y, &fx.get(&format!("norm.{name}.out")), tol(dtype), &what);
            weighted_backward(&y, &fx.get(&format!("norm.{name}.w")));
            // Row 2 is ~1e-9 in size: clamped by eps in the "last" case (gradient g/eps).
            assert_close(
                &grad(&x),
                &fx.get(&format!("norm.{name}.dx")),
                tol(dtype),
                &format!("{what} dx"),
            );
        }
    }
}

#[test]
fn info_nce_matches_torch() {
    let fx = Fixture::load("losses_optim");
    for dtype in DTYPES {
        // Normalised embeddings at temperature 0.1, default tiling (one tile).
        let img = fx.param("nce.img", dtype);
        let txt = fx.param("nce.txt", dtype);
        let l = img
            .l2_normalize(-1, 1e-12)
            .unwrap()
            .info_nce(&txt.l2_normalize(-1, 1e-12).unwrap(), 0.1)
            .unwrap();
        let what = format!("info_nce t=0.1 {dtype}");
        assert_close(&l, &fx.get("nce.t01.out"), tol(dtype), &what);
        l.backward().unwrap();
        assert_close(
            &grad(&img),
            &fx.get("nce.t01.dimg"),
            tol(dtype),
            &format!("{what} dimg"),
        );
        assert_close(
            &grad(&txt),
            &fx.get("nce.t01.dtxt"),
            tol(dtype),
            &format!("{what} dtxt"),
        );

        // Raw embeddings, trainable logit scale, 3-row tiles over B = 8 (3 tiles, ragged).
        for block in [3, 8] {
            let img = fx.param("nce.img", dtype);
            let txt = fx.param("nce.txt", dtype);
            let scale = fx.param("nce.raw.scale", DType::F32);
            let l = img.info_nce_tiled(&txt, &scale, block).unwrap();
            let what = format!("info_nce raw {dtype} block {block}");
            assert_close(&l, &fx.get("nce.raw.out"), tol(dtype), &what);
            l.backward().unwrap();
            assert_close(
                &grad(&img),
                &fx.get("nce.raw.dimg"),
                tol(dtype),
                &format!("{what} dimg"),
            );
            assert_close(
                &grad(&txt),
                &fx.get("nce.raw.dtxt"),
                tol(dtype),
                &format!("{what} dtxt"),
            );
            assert_close(
                &grad(&scale),
                &fx.get("nce.raw.dscale"),
                tol(dtype),
                &format!("{what} dscale"),
            );
        }
    }
}

/// The fused, tiled InfoNCE against the plain formula built from matmul and
/// cross-entropy, at a batch that needs several default tiles.
#[test]
fn info_nce_large_batch_matches_plain_formula() {
    let mut rng = Philox::new(5);
    let (b, d) = (600, 16);
    let img = Tensor::randn(&mut rng, &[b, d], DType::F64)
        .unwrap()
        .l2_normalize(-1, 1e-12)
        .unwrap()
        .into_param()
        .unwrap();
    let txt = Tensor::randn(&mut rng, &[b, d], DType::F64)
        .unwrap()
        .l2_normalize(-1, 1e-12)
        .unwrap()
        .into_param()
        .unwrap();
    let fused = img.info_nce(&txt, 0.07).unwrap();
    fused.backward().unwrap();
    let (gi, gt) = (img.grad().unwrap(), txt.grad().unwrap());
    img.clear_grad();
    txt.clear_grad();
    let labels = Tensor::from_i64((0..b as i64).collect(), &[b]).unwrap();
    let logits = img
        .matmul(&txt.t().unwrap())
        .unwrap()
        .scale(1.0 / 0.07)
        .unwrap();
    let plain = logits
        .cross_entropy(&labels, None, 0.0)
        .unwrap()
        .add(
            &logits
                .t()
                .unwrap()
                .contiguous()
                .unwrap()
                .cross_entropy(&labels, None, 0.0)
                .unwrap(),
        )
        .unwrap()
        .scale(0.5)
        .unwrap();
    plain.backward().unwrap();
    assert_close(&fused, &plain, 1e-12, "info_nce loss vs plain");
    assert_close(&gi, &img.grad().unwrap(), 1e-10, "info_nce dimg vs plain");
    assert_close(&gt, &txt.grad().unwrap(), 1e-10, "info_nce dtxt vs plain");
}

#[test]
fn loss_gradients_match_finite_differences() {
    let mut rng = Philox::new(9);
    let logits = rand_leaf(&mut rng, &[5, 4])
        .affine(3.0, 0.0)
        .unwrap()
        .detach()
        .into_param()
        .unwrap();
    let t = Tensor::from_i64(vec![1, -1, 3, 0, 2], &[5]).unwrap();
    for (eps, red) in [
        (0.0, Reduction::Mean),
        (0.2, Reduction::None),
        (0.1, Reduction::Sum),
    ] {
        assert_gradcheck(
            "cross_entropy",
            |x| x[0].cross_entropy_with(&t, Some(-1), eps, red),
            std::slice::from_ref(&logits),
        );
    }
    let x = rand_leaf(&mut rng, &[3, 4])
        .affine(4.0, 0.0)
        .unwrap()
        .detach()
        .into_param()
        .unwrap();
    let y = rand_leaf(&mut rng, &[3, 4])
        .affine(0.5, 0.5)
        .unwrap()
        .detach()
        .into_param()
        .unwrap();
    let pw = rand_leaf(&mut rng, &[4])
        .affine(0.5, 1.5)
        .unwrap()
        .detach()
        .into_param()
        .unwrap();
    assert_gradcheck(
        "bce_with_logits",
        |v| v[0].bce_with_logits(&v[1], None),
        &[x.clone(), y.clone()],
    );
    assert_gradcheck(
        "bce_with_logits pos_weight",
        |v| v[0].bce_with_logits_with(&v[1], Some(&v[2]), Reduction::None),
        &[x, y, pw],
    );
    let a = rand_leaf(&mut rng, &[2, 3]);
    let b = rand_leaf(&mut rng, &[2, 3]);
    assert_gradcheck("mse", |v| v[0].mse_loss(&v[1]), &[a.clone(), b.clone()]);
    assert_gradcheck(
        "mse none",
        |v| v[0].mse_loss_with(&v[1], Reduction::None),
        &[a, b],
    );
    let n = rand_leaf(&mut rng, &[3, 4, 2]);
    assert_gradcheck(
        "l2_normalize dim 1",
        |v| v[0].l2_normalize(1, 1e-12),
        std::slice::from_ref(&n),
    );
    let img = rand_leaf(&mut rng, &[7, 5]);
    let txt = rand_leaf(&mut rng, &[7, 5]);
    let s = Tensor::scalar(4.0, DType::F64)
        .unwrap()
        .into_param()
        .unwrap();
    for block in [2, 7] {
        assert_gradcheck(
            "info_nce",
            |v| v[0].info_nce_tiled(&v[1], &v[2], block),
            &[img.clone(), txt.clone(), s.clone()],
        );
    }
}

#[test]
fn losses_reject_bad_inputs() {
    let logits = Tensor::zeros(&[3, 4], DType::F32).unwrap();
    let err = |r: medsyn::Result<Tensor>| r.expect_err("should fail").to_string();
    let e = err(logits.cross_entropy(&Tensor::from_i64(vec![0, 7, 1], &[3]).unwrap(), None, 0.0));
    assert!(e.contains("target 7") && e.contains("index 1"), "{e}");
    let e = err(logits.cross_entropy(
        &Tensor::from_i64(vec![0, 1, -100], &[3]).unwrap(),
        None,
        0.0,
    ));
    assert!(e.contains("-100") && e.contains("index 2"), "{e}");
    assert!(logits
        .cross_entropy(&Tensor::from_i64(vec![0, 1], &[2]).unwrap(), None, 0.0)
        .is_err());
    assert!(logits
        .cross_entropy(&Tensor::zeros(&[3], DType::F32).unwrap(), None, 0.0)
        .is_err());
    assert!(logits
        .reshape(&[12])
        .unwrap()
        .cross_entropy(&Tensor::from_i64(vec![0], &[1]).unwrap(), None, 0.0)
        .is_err());
    assert!(logits
        .cross_entropy(&Tensor::from_i64(vec![0, 1, 2], &[3]).unwrap(), None, 1.5)
        .is_err());
    let y = Tensor::zeros(&[3, 3], DType::F32).unwrap();
    assert!(logits.bce_with_logits(&y, None).is_err());
    assert!(logits
        .bce_with_logits(&logits, Some(&Tensor::ones(&[3], DType::F32).unwrap()))
        .is_err());
    assert!(logits.mse_loss(&y).is_err());
    assert!(logits
        .mse_loss(&Tensor::zeros(&[3, 4], DType::I64).unwrap())
        .is_err());
    assert!(logits.info_nce(&y, 0.1).is_err());
    assert!(logits.info_nce(&logits, 0.0).is_err());
    assert!(logits
        .info_nce_tiled(&logits, &Tensor::ones(&[2], DType::F32).unwrap(), 4)
        .is_err());
    assert!(Tensor::zeros(&[3], DType::I64)
        .unwrap()
        .l2_normalize(0, 1e-12)
        .is_err());
    assert!(logits.l2_normalize(2, 1e-12).is_err());
}

#[test]
fn nan_logits_give_nan_loss_and_all_ignored_mean_is_nan() {
    let x = Tensor::from_vec(vec![0.0f32, f32::NAN, 1.0, 2.0], &[2, 2]).unwrap();
    let t = Tensor::from_i64(vec![0, 1], &[2]).unwrap();
    assert!(x
        .cross_entropy(&t, None, 0.0)
        .unwrap()
        .to_scalar()
        .unwrap()
        .is_nan());
    let per = x
        .cross_entropy_with(&t, None, 0.0, Reduction::None)
        .unwrap()
        .to_vec_f64();
    assert!(per[0].is_nan() && per[1].is_finite(), "{per:?}");
    let ignored = Tensor::from_i64(vec![-100, -100], &[2]).unwrap();
    assert!(x
        .cross_entropy(&ignored, Some(-100), 0.0)
        .unwrap()
        .to_scalar()
        .unwrap()
        .is_nan());
    assert_eq!(
        x.cross_entropy_with(&ignored, Some(-100), 0.0, Reduction::Sum)
            .unwrap()
            .to_scalar()
            .unwrap(),
        0.0
    );
}

#[test]
fn frozen_loss_inputs_get_no_gradient() {
    let fx = Fixture::load("losses_optim");
    let a = fx.param("mse.a", DType::F32);
    let b = fx.get("mse.b").to_dtype(DType::F32).unwrap();
    a.mse_loss(&b).unwrap().backward().unwrap();
    assert!(a.grad().is_some() && b.grad().is_none());
    let img = fx.param("nce.img", DType::F32);
    let txt = fx.get("nce.txt").to_dtype(DType::F32).unwrap();
    img.info_nce(&txt, 0.1).unwrap().backward().unwrap();
    assert!(img.grad().is_some() && txt.grad().is_none());
}
