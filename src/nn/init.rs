//! Parameter initialisers from a Philox stream, with PyTorch's default rules.

use crate::bail;
use crate::error::Result;
use crate::tensor::{DType, Philox, Tensor};

/// Fan-in of a weight: shape[1] · receptive field (Linear [out, in], Conv [O, C/g, kh, kw]).
pub fn fan_in(shape: &[usize]) -> Result<usize> {
    if shape.len() < 2 {
        bail!("fan_in needs a weight of rank >= 2, got shape {shape:?}");
    }
    Ok(shape[1] * shape[2..].iter().product::<usize>())
}

/// U(-bound, bound) as a trainable parameter.
pub fn uniform(rng: &mut Philox, shape: &[usize], bound: f64, dtype: DType) -> Result<Tensor> {
    Tensor::rand_uniform(rng, -bound, bound, shape, dtype)?.into_param()
}

/// N(0, std²) as a trainable parameter.
pub fn normal(rng: &mut Philox, shape: &[usize], std: f64, dtype: DType) -> Result<Tensor> {
    Tensor::randn(rng, shape, DType::F64)?
        .scale(std)?
        .to_dtype(dtype)?
        .into_param()
}

/// `nn.init.kaiming_uniform_(w, a)`: U(-b, b) with b = gain·√(3 / fan_in),
/// gain = √(2 / (1 + a²)).
pub fn kaiming_uniform(rng: &mut Philox, shape: &[usize], a: f64, dtype: DType) -> Result<Tensor> {
    let gain = (2.0 / (1.0 + a * a)).sqrt();
    let bound = gain * (3.0 / fan_in(shape)? as f64).sqrt();
    uniform(rng, shape, bound, dtype)
}

/// PyTorch's default for Linear and Conv weights: kaiming-uniform with a = √5,
/// i.e. U(-1/√fan_in, 1/√fan_in); the bias draws from the same range.
pub fn default_weight_and_bias(
    rng: &mut Philox,
    shape: &[usize],
    bias: bool,
    dtype: DType,
) -> Result<(Tensor, Option<Tensor>)> {
    let weight = kaiming_uniform(rng, shape, 5f64.sqrt(), dtype)?;
    let bias = if bias {
        let bound = 1.0 / (fan_in(shape)? as f64).sqrt();
        Some(uniform(rng, &[shape[0]], bound, dtype)?)
    } else {
        None
    };
    Ok((weight, bias))
}
