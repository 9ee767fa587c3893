//! Losses as fused ops, each with its forward and backward side by side:
//! cross-entropy, BCE-with-logits, MSE, symmetric InfoNCE, and L2 normalisation.
//!
//! Losses compute in f32 for half inputs (f64 for f64) and return that compute
//! dtype, as PyTorch does under autocast; gradients come back in each input's dtype.

mod bce;
mod cross_entropy;
mod info_nce;
mod mse;
mod normalize;

pub use info_nce::DEFAULT_BLOCK_ROWS;

use crate::bail;
use crate::error::Result;
use crate::tensor::{DType, Real, Tensor};

/// How per-element losses are combined, as PyTorch's `reduction=`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Reduction {
    /// Average (over non-ignored elements for cross-entropy).
    #[default]
    Mean,
    Sum,
    /// Per-element losses, unreduced.
    None,
}

/// The compute dtype of a loss over float inputs: f64 when any is f64, else f32.
fn loss_dtype(op: &str, inputs: &[&Tensor]) -> Result<DType> {
    let mut dtype = DType::F32;
    for t in inputs {
        if !t.dtype().is_float() {
            bail!("{op}: needs float inputs, got {}", t.dtype());
        }
        if t.dtype() == DType::F64 {
            dtype = DType::F64;
        }
    }
    Ok(dtype)
}

/// Combine per-element losses (shape `shape`) under `reduction`; `count` is the
/// mean's denominator. Returns (values, output shape).
fn reduce_losses<T: Real>(
    losses: Vec<T>,
    shape: &[usize],
    reduction: Reduction,
    count: f64,
) -> (Vec<T>, Vec<usize>) {
    match reduction {
        Reduction::None => (losses, shape.to_vec()),
        Reduction::Sum | Reduction::Mean => {
            let total: f64 = losses.iter().map(|v| v.as_f64()).sum();
            let v = if reduction == Reduction::Mean {
                total / count
            } else {
                total
            };
            (vec![T::from_f64(v)], vec![])
        }
    }
}

/// The upstream gradient of each per-element loss, given the output gradient.
struct Upstream<T> {
    per_element: Option<Vec<T>>,
    scalar: T,
}

impl<T: Real> Upstream<T> {
    fn new(g: &Tensor, reduction: Reduction, count: f64) -> Upstream<T> {
        match reduction {
            Reduction::None => Upstream {
                per_element: Some(g.to_vec::<T>()),
                scalar: T::zero(),
            },
            Reduction::Sum => Upstream {
                per_element: None,
                scalar: T::from_f64(g.to_vec_f64()[0]),
            },
            Reduction::Mean => Upstream {
                per_element: None,
                scalar: T::from_f64(g.to_vec_f64()[0] / count),
            },
        }
    }
    fn at(&self, i: usize) -> T {
        match &self.per_element {
            Some(v) => v[i],
            None => self.scalar,
        }
    }
}
