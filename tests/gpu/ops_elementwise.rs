//! Op-level CUDA paths of the elementwise family (binary ops through every Reach and general
//! broadcasts, mixed-dtype promotion, casts, affine / clamp / powf, the unary maps, GEGLU,
//! sum / mean / max reductions, softmax): each op on random inputs on the CPU and on cuda:0,
//! forward values and gradients compared, the output on cuda:0, the op not on the host fallback,
//! and the gradient each backward rule hands on living on the device (a probe op behind the
//! inputs sees it).

use crate::op_harness::{arg, assert_native, run, Check, In, DEV};
use crate::support::{check_exact, gpu, uniform, DTYPES};
use medsyn::tensor::{DType, Tensor};
use medsyn::Result;

/// `run` of a one-input op with the default checks.
fn run1(name: &str, dtype: DType, seed: u64, x: In, f: &dyn Fn(&Tensor) -> Result<Tensor>) {
    run(name, dtype, seed, &[x], Check::default(), &|x| f(&x[0]));
}

fn binary_cases() -> Vec<(&'static str, Vec<usize>, In)> {
    let b = |s: &[usize]| arg(s, -2.0, 2.0);
    vec![
        ("same", vec![3, 37], b(&[3, 37])),
        ("trailing", vec![2, 5, 33], b(&[33])),
        ("trailing2", vec![4, 3, 5], b(&[3, 5])),
        ("leading", vec![2, 3, 5, 7], b(&[2, 3, 1, 1])),
        ("general", vec![4, 1, 6], b(&[1, 5, 1])),
        ("middle", vec![3, 5, 7], b(&[3, 1, 7])),
        ("scalar", vec![3, 4], b(&[])),
        ("transposed", vec![5, 7], b(&[5, 7]).transposed()),
        ("odd", vec![1001], b(&[1001])),
        ("frozen", vec![6, 9], b(&[9]).frozen()),
        ("empty", vec![0, 4], b(&[4])),
    ]
}

type BinFn = fn(&Tensor, &Tensor) -> Result<Tensor>;

const BINARY: [(&str, BinFn); 6] = [
    ("add", Tensor::add),
    ("sub", Tensor::sub),
    ("mul", Tensor::mul),
    ("div", Tensor::div),
    ("maximum", Tensor::maximum),
    ("minimum", Tensor::minimum),
];

#[test]
fn binary_ops_every_reach() {
    let Some(_g) = gpu() else { return };
    for (op, f) in BINARY {
        for dtype in DTYPES {
            for (seed, (case, a_shape, b)) in binary_cases().into_iter().enumerate() {
                let mut b = b;
                if op == "div" {
                    (b.lo, b.hi) = (0.5, 2.0);
                }
                let a = arg(&a_shape, -2.0, 2.0);
                // Operand order both ways: the broadcast one first and second.
                run(
                    &format!("{op} {case}"),
                    dtype,
                    seed as u64,
                    &[a.clone(), b.clone()],
                    Check::default(),
                    &|x| f(&x[0], &x[1]),
                );
                if op != "div" {
                    run(
                        &format!("{op} {case} swapped"),
                        dtype,
                        seed as u64 + 50,
                        &[b, a],
                        Check::default(),
                        &|x| f(&x[0], &x[1]),
                    );
                }
            }
        }
    }
    assert_native(&["BinaryBack", "SumBack", "CastBack", "UnaryBack"]);
}

#[test]
fn binary_mixed_dtypes_promote_on_device() {
    let Some(_g) = gpu() else { return };
    let pairs = [
        (DType::F32, DType::BF16),
        (DType::F16, DType::F32),
        (DType::BF16, DType::F16),
    ];
    for (i, (da, db)) in pairs.into_iter().enumerate() {
        for (op, f) in [BINARY[0], BINARY[2]] {
            let a = arg(&[3, 2, 17], -2.0, 2.0).of(da);
            let b = arg(&[17], -2.0, 2.0).of(db);
            run(
                &format!("{op} {da:?}+{db:?}"),
                DType::F32,
                i as u64,
                &[a, b],
                Check::default(),
                &|x| f(&x[0], &x[1]),
            );
        }
    }
    assert_native(&["BinaryBack", "SumBack", "CastBack"]);
}

#[test]
fn casts_between_float_dtypes() {
    let Some(_g) = gpu() else { return };
    for (i, src) in DTYPES.into_iter().enumerate() {
        for dst in DTYPES {
            if src == dst {
                continue;
            }
            let x = arg(&[7, 67], -300.0, 300.0).of(src);
            run1(
                &format!("to_dtype {src:?}->{dst:?}"),
                src,
                i as u64,
                x.clone(),
                &|x| x.to_dtype(dst),
            );
            let x = x.transposed();
            run1(
                &format!("to_dtype {src:?}->{dst:?} transposed"),
                src,
                i as u64 + 9,
                x,
                &|x| x.to_dtype(dst),
            );
        }
    }
    // Integer results stay on the tensor's device too.
    let x = Tensor::from_vec(vec![1.7f32, -2.2, 3.0], &[3]).unwrap();
    let i = x.to_device(DEV).unwrap().to_dtype(DType::I64).unwrap();
    assert_eq!(i.device(), DEV);
    check_exact("to_dtype f32->i64", &i.to_vec_i64(), &[1, -2, 3]);
    assert_native(&["CastBack"]);
}

#[test]
fn unary_maps_forward_and_backward() {
    let Some(_g) = gpu() else { return };
    type UnFn = fn(&Tensor) -> Result<Tensor>;
    let ops: [(&str, UnFn, f32, f32); 16] = [
        ("neg", Tensor::neg, -3.0, 3.0),
        ("exp", Tensor::exp, -3.0, 3.0),
        ("log", Tensor::log, 0.2, 3.0),
        ("sqrt", Tensor::sqrt, 0.2, 3.0),
        ("tanh", Tensor::tanh, -3.0, 3.0),
        ("sigmoid", Tensor::sigmoid, -6.0, 6.0),
        ("relu", Tensor::relu, -3.0, 3.0),
        ("silu", Tensor::silu, -6.0, 6.0),
        ("gelu", Tensor::gelu, -4.0, 4.0),
        ("gelu_tanh", Tensor::gelu_tanh, -4.0, 4.0),
        ("quick_gelu", Tensor::quick_gelu, -4.0, 4.0),
        ("abs", Tensor::abs, -3.0, 3.0),
        ("square", Tensor::square, -3.0, 3.0),
        ("recip", Tensor::recip, 0.2, 3.0),
        ("sin", Tensor::sin, -3.0, 3.0),
        ("cos", Tensor::cos, -3.0, 3.0),
    ];
    for (k, (op, f, lo, hi)) in ops.into_iter().enumerate() {
        for dtype in DTYPES {
            run1(op, dtype, k as u64, arg(&[7, 131], lo, hi), &f);
            let x = arg(&[9, 33], lo, hi).transposed();
            run1(&format!("{op} transposed"), dtype, k as u64 + 40, x, &f);
            run1(
                &format!("{op} scalar"),
                dtype,
                k as u64 + 80,
                arg(&[], lo, hi),
                &f,
            );
        }
    }
    assert_native(&["UnaryBack"]);
}

#[test]
fn affine_clamp_powf() {
    let Some(_g) = gpu() else { return };
    type Op = (&'static str, f32, f32, fn(&Tensor) -> Result<Tensor>);
    let ops: [Op; 8] = [
        ("affine", -2.0, 2.0, |x| x.affine(1.7, -0.3)),
        ("scale", -2.0, 2.0, |x| x.scale(-0.5)),
        ("add_scalar", -2.0, 2.0, |x| x.add_scalar(0.25)),
        ("clamp", -2.0, 2.0, |x| x.clamp(-0.5, 0.8)),
        ("clamp_wide", -2.0, 2.0, |x| x.clamp(-10.0, 10.0)),
        ("powf 2.5", 0.2, 3.0, |x| x.powf(2.5)),
        ("powf 2", -2.0, 2.0, |x| x.powf(2.0)),
        ("powf -1.5", 0.5, 2.0, |x| x.powf(-1.5)),
    ];
    for (k, (op, lo, hi, f)) in ops.into_iter().enumerate() {
        for dtype in DTYPES {
            run1(op, dtype, k as u64, arg(&[5, 203], lo, hi), &f);
            let x = arg(&[6, 11], lo, hi).transposed();
            run1(&format!("{op} transposed"), dtype, k as u64 + 20, x, &f);
        }
    }
    assert_native(&["AffineBack", "ClampBack", "PowBack"]);
}

#[test]
fn geglu_forward_and_backward() {
    let Some(_g) = gpu() else { return };
    for dtype in DTYPES {
        for (k, shape) in [vec![3, 5, 48], vec![4, 14], vec![2, 2]]
            .into_iter()
            .enumerate()
        {
            run1("geglu", dtype, k as u64, arg(&shape, -3.0, 3.0), &|x| {
                x.geglu()
            });
        }
        let x = arg(&[10, 6], -3.0, 3.0).transposed();
        run1("geglu transposed", dtype, 9, x, &|x| x.geglu());
    }
    assert_native(&["GegluBack"]);
}

#[test]
fn sums_and_means_over_dims() {
    let Some(_g) = gpu() else { return };
    type Case = (&'static str, Vec<usize>, Vec<isize>);
    let cases: Vec<Case> = vec![
        ("cols", vec![4, 6, 10], vec![1]),
        ("rows", vec![4, 6, 10], vec![2]),
        ("lead", vec![4, 6, 10], vec![0, 1]),
        ("trail", vec![4, 6, 10], vec![1, 2]),
        ("apart", vec![4, 6, 10], vec![0, 2]),
        ("none", vec![4, 6, 10], vec![]),
        ("neg", vec![4, 6, 10], vec![-1]),
        ("unit between", vec![3, 1, 5], vec![0, 2]),
        ("only units", vec![1, 6, 1, 5], vec![0, 2]),
        ("split cols", vec![2, 4096, 3], vec![1]),
        ("long rows", vec![3, 2000], vec![1]),
        ("one row", vec![1, 40000], vec![1]),
        ("empty", vec![0, 5], vec![0]),
    ];
    for dtype in DTYPES {
        for (k, (case, shape, dims)) in cases.iter().enumerate() {
            let x = arg(shape, 0.5, 1.5);
            for keepdim in [false, true] {
                let s = format!("sum_dims {case} keep={keepdim}");
                run1(&s, dtype, k as u64, x.clone(), &|x| {
                    x.sum_dims(dims, keepdim)
                });
                let s = format!("mean_dims {case} keep={keepdim}");
                run1(&s, dtype, k as u64, x.clone(), &|x| {
                    x.mean_dims(dims, keepdim)
                });
            }
        }
        let x = arg(&[9, 4], -1.0, 1.0).transposed();
        run1("sum_dims transposed", dtype, 30, x, &|x| {
            x.sum_dims(&[1], false)
        });
        for (k, n) in [21usize, 70001].into_iter().enumerate() {
            let x = arg(&[n], 0.5, 1.5);
            run1(&format!("sum_all {n}"), dtype, k as u64, x.clone(), &|x| {
                x.sum_all()
            });
            run1(&format!("mean_all {n}"), dtype, k as u64, x, &|x| {
                x.mean_all()
            });
        }
        let to: [(Vec<usize>, Vec<usize>); 3] = [
            (vec![2, 5, 33], vec![33]),
            (vec![2, 5, 33], vec![5, 1]),
            (vec![2, 3, 4], vec![1, 3, 1]),
        ];
        for (k, (from, target)) in to.into_iter().enumerate() {
            let x = arg(&from, -1.0, 1.0);
            run1(&format!("sum_to {target:?}"), dtype, k as u64, x, &|x| {
                x.sum_to(&target)
            });
        }
    }
    assert_native(&["SumBack"]);
}

#[test]
fn max_and_argmax_along_a_dim() {
    let Some(_g) = gpu() else { return };
    for dtype in DTYPES {
        for (k, dim) in [0isize, 1, 2, -1].into_iter().enumerate() {
            for keepdim in [false, true] {
                let x = arg(&[5, 9, 7], -3.0, 3.0);
                // The backward's scatter runs on the host (indices read back); the gradient it
                // hands on must still be back on the device.
                run(
                    &format!("max_dim {dim} keep={keepdim}"),
                    dtype,
                    k as u64,
                    &[x],
                    Check::default(),
                    &|x| x[0].max_dim(dim, keepdim),
                );
            }
            let vals = uniform(k as u64 + 3, 5 * 9 * 7, -3.0, 3.0);
            let x = Tensor::from_values(vals, &[5, 9, 7], dtype).unwrap();
            let want = x.argmax(dim).unwrap();
            let got = x.to_device(DEV).and_then(|t| t.argmax(dim)).unwrap();
            assert_eq!(got.device(), DEV);
            assert_eq!(got.shape(), want.shape());
            check_exact(
                &format!("argmax {dim} {dtype:?}"),
                &got.to_vec_i64(),
                &want.to_vec_i64(),
            );
        }
    }
    assert_native(&["MaxBack", "MaxIdxBack"]);
}

#[test]
fn softmax_and_log_softmax() {
    let Some(_g) = gpu() else { return };
    let cases: [(&str, Vec<usize>, isize); 5] = [
        ("rows", vec![6, 37], -1),
        ("cols", vec![4, 9, 5], 1),
        ("long rows", vec![3, 1500], -1),
        ("first dim", vec![2, 3, 4], 0),
        ("single", vec![5, 1], -1),
    ];
    for dtype in DTYPES {
        for (k, (case, shape, dim)) in cases.iter().enumerate() {
            let x = arg(shape, -4.0, 4.0);
            run1(
                &format!("softmax {case}"),
                dtype,
                k as u64,
                x.clone(),
                &|x| x.softmax(*dim),
            );
            run1(&format!("log_softmax {case}"), dtype, k as u64, x, &|x| {
                x.log_softmax(*dim)
            });
        }
        let x = arg(&[8, 6], -4.0, 4.0).transposed();
        run1("softmax transposed", dtype, 11, x, &|x| x.softmax(-1));
    }
    assert_native(&["SoftmaxBack"]);
}
