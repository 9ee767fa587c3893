//! Gradient checking: autograd gradients against float64 central finite differences.

use crate::bail;
use crate::error::Result;
use crate::tensor::{DType, Tensor};

/// Largest |autograd - numeric| / max(1, |numeric|) over every input element.
#[derive(Debug, Clone)]
pub struct GradCheckReport {
    pub max_error: f64,
    pub worst_input: usize,
    pub worst_index: usize,
}

/// Check the gradients of `sum(f(inputs) * w)` for a fixed random weighting `w`
/// (so every output element matters) against central differences with step `eps`.
/// Inputs must be f64 leaves that require grad.
pub fn check_gradients(
    f: impl Fn(&[Tensor]) -> Result<Tensor>,
    inputs: &[Tensor],
    eps: f64,
) -> Result<GradCheckReport> {
    for (i, x) in inputs.iter().enumerate() {
        if x.dtype() != DType::F64 || !x.is_leaf() {
            bail!(
                "gradcheck input {i} must be an f64 leaf, got {} (leaf: {})",
                x.dtype(),
                x.is_leaf()
            );
        }
    }
    let out = f(inputs)?;
    // A deterministic, non-constant weighting of the outputs.
    let w: Vec<f64> = (0..out.numel())
        .map(|i| 0.5 + ((i * 7919 % 97) as f64) / 97.0)
        .collect();
    let w = Tensor::from_vec(w, out.shape())?;
    let objective = |xs: &[Tensor]| -> Result<f64> {
        let _g = crate::autograd::no_grad();
        f(xs)?.mul(&w)?.sum_all()?.to_scalar()
    };
    for x in inputs {
        x.clear_grad();
    }
    out.mul(&w)?.sum_all()?.backward()?;
    let mut report = GradCheckReport {
        max_error: 0.0,
        worst_input: 0,
        worst_index: 0,
    };
    for (i, x) in inputs.iter().enumerate() {
        if !x.requires_grad() {
            continue;
        }
        let analytic = match x.grad() {
            Some(g) => g.to_vec_f64(),
            None => vec![0.0; x.numel()],
        };
        let base = x.to_vec_f64();
        for j in 0..base.len() {
            let shifted = |delta: f64| -> Result<f64> {
                let mut v = base.clone();
                v[j] += delta;
                let xs: Vec<Tensor> = inputs
                    .iter()
                    .enumerate()
                    .map(|(k, t)| {
                        if k == i {
                            Tensor::from_vec(v.clone(), x.shape())
                        } else {
                            Ok(t.clone())
                        }
                    })
                    .collect::<Result<_>>()?;
                objective(&xs)
            };
            let numeric = (shifted(eps)? - shifted(-eps)?) / (2.0 * eps);
            let err = (analytic[j] - numeric).abs() / numeric.abs().max(1.0);
            if err > report.max_error || err.is_nan() {
                report = GradCheckReport {
                    max_error: err,
                    worst_input: i,
                    worst_index: j,
                };
            }
        }
    }
    Ok(report)
}
