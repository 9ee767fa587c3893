//! Core ops against PyTorch float64 references (tests/fixtures/core_ops.safetensors,
//! made by scripts/fixtures/core_ops.py), in f32 and bf16.

mod common;
use common::*;
use medsyn::{DType, Tensor};

const DTYPES: [DType; 3] = [DType::F32, DType::BF16, DType::F16];

#[test]
fn binary_broadcast_matches_torch() {
    let fx = Fixture::load("core_ops");
    for dt in DTYPES {
        // Six chained ops, each rounded to the dtype, and a gradient of c that sums
        // cancelling terms (1/c - (ab+c)/c²): half dtypes get a wider margin here.
        let slack = if dt == DType::F32 { 4.0 } else { 15.0 };
        check_op(
            &fx,
            dt,
            &["binary.a", "binary.b", "binary.c"],
            |x| {
                x[0].mul(&x[1])?
                    .add(&x[2])?
                    .div(&x[2])?
                    .sub(&x[0].maximum(&x[1])?)?
                    .add(&x[0].minimum(&x[2])?)
            },
            "binary.out",
            "binary.w",
            &["binary.ga", "binary.gb", "binary.gc"],
            slack,
        );
    }
}

#[test]
fn activations_match_torch() {
    let fx = Fixture::load("core_ops");
    type F = fn(&Tensor) -> medsyn::Result<Tensor>;
    fn clamp(x: &Tensor) -> medsyn::Result<Tensor> {
        x.clamp(-1.5, 2.0)
    }
    let ops: [(&str, F); 12] = [
        ("clamp", clamp),
        ("exp", Tensor::exp),
        ("tanh", Tensor::tanh),
        ("sigmoid", Tensor::sigmoid),
        ("relu", Tensor::relu),
        ("silu", Tensor::silu),
        ("gelu", Tensor::gelu),
        ("gelu_tanh", Tensor::gelu_tanh),
        ("quick_gelu", Tensor::quick_gelu),
        ("abs", Tensor::abs),
        ("square", Tensor::square),
        ("neg", Tensor::neg),
    ];
    for dt in DTYPES {
        for (name, f) in ops {
            check_op(
                &fx,
                dt,
                &["unary.x"],
                |x| f(&x[0]),
                &format!("unary.{name}.out"),
                &format!("unary.{name}.w"),
                &[&format!("unary.{name}.gx")],
                2.0,
            );
        }
        check_op(
            &fx,
            dt,
            &["pos.x"],
            |x| {
                x[0].log()?
                    .add(&x[0].sqrt()?)?
                    .add(&x[0].powf(1.7)?)?
                    .add(&x[0].recip()?)
            },
            "pos.out",
            "pos.w",
            &["pos.gx"],
            4.0,
        );
        check_op(
            &fx,
            dt,
            &["geglu.x"],
            |x| x[0].geglu(),
            "geglu.out",
            "geglu.w",
            &["geglu.gx"],
            2.0,
        );
    }
}

#[test]
fn reductions_match_torch() {
    let fx = Fixture::load("core_ops");
    for dt in DTYPES {
        check_op(
            &fx,
            dt,
            &["reduce.x"],
            |x| {
                x[0].sum_dims(&[1], true)?
                    .add(&x[0].mean_dims(&[0, 2], true)?)?
                    .add(&x[0].max_dim(2, true)?)
            },
            "reduce.out",
            "reduce.w",
            &["reduce.gx"],
            4.0,
        );
    }
}

#[test]
fn matmul_linear_cat_match_torch() {
    let fx = Fixture::load("core_ops");
    for dt in DTYPES {
        check_op(
            &fx,
            dt,
            &["matmul.a", "matmul.b"],
            |x| x[0].matmul(&x[1].t()?),
            "matmul.out",
            "matmul.w",
            &["matmul.ga", "matmul.gb"],
            4.0,
        );
        check_op(
            &fx,
            dt,
            &["linear.x", "linear.weight", "linear.bias"],
            |x| x[0].linear(&x[1], Some(&x[2])),
            "linear.out",
            "linear.w",
            &["linear.gx", "linear.gw", "linear.gb"],
            4.0,
        );
        check_op(
            &fx,
            dt,
            &["cat.a", "cat.b"],
            |x| {
                let y = Tensor::cat(&[&x[0], &x[1]], 1)?;
                let p = y.split(&[1, 4], 1)?;
                p[1].scale(2.0)?.add(&p[0])
            },
            "cat.out",
            "cat.w",
            &["cat.ga", "cat.gb"],
            2.0,
        );
    }
}
