//! Arithmetic shared by the schedulers, with torch's rounding: a tensor times or
//! divided by a scalar rounds once in the tensor's dtype, like torch's ops with a
//! 0-d tensor or Python float; the working dtype of half samples is f32; float32
//! log/exp/expm1 are correctly rounded (through f64), the value torch's vector
//! math libraries approximate to within an ulp.

use crate::error::Result;
use crate::tensor::{DType, Tensor};

/// The dtype scheduler arithmetic runs in for a sample of `dtype` (f16/bf16 → f32,
/// as diffusers' Euler and DPM-Solver upcast).
pub(crate) fn working_dtype(dtype: DType) -> Result<DType> {
    Ok(match dtype {
        DType::F64 => DType::F64,
        DType::F32 | DType::F16 | DType::BF16 => DType::F32,
        other => crate::bail!("schedulers need a float sample, got {other}"),
    })
}

/// `t` in the working dtype of `dtype`.
pub(crate) fn work(t: &Tensor, dtype: DType) -> Result<Tensor> {
    t.to_dtype(working_dtype(dtype)?)
}

/// `t * s`.
pub(crate) fn mul(t: &Tensor, s: impl Into<f64>) -> Result<Tensor> {
    t.scale(s.into())
}

/// `t / s` (a true division, as torch divides by a 0-d tensor).
pub(crate) fn div(t: &Tensor, s: impl Into<f64>) -> Result<Tensor> {
    t.div(&Tensor::scalar(s.into(), t.dtype())?)
}

/// `a * x + b * y`, each product rounded before the sum (torch's `a * x + b * y`).
pub(crate) fn axpby(
    a: impl Into<f64>,
    x: &Tensor,
    b: impl Into<f64>,
    y: &Tensor,
) -> Result<Tensor> {
    x.scale(a.into())?.add(&y.scale(b.into())?)
}

/// ln(x) of a float32, correctly rounded.
pub(crate) fn ln32(x: f32) -> f32 {
    (x as f64).ln() as f32
}

/// exp(x) of a float32, correctly rounded.
pub(crate) fn exp32(x: f32) -> f32 {
    (x as f64).exp() as f32
}

/// exp(x) − 1 of a float32, correctly rounded.
pub(crate) fn expm1_32(x: f32) -> f32 {
    (x as f64).exp_m1() as f32
}
