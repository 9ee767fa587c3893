//! Gradient clipping by global L2 norm, as `torch.nn.utils.clip_grad_norm_`.

use crate::error::Result;
use crate::tensor::Tensor;

/// Scale the gradients of `params` by max_norm / (total + 1e-6) when their global
/// L2 norm `total` exceeds `max_norm`; return `total` (before clipping). A non-finite
/// norm is returned as is and leaves the gradients untouched (the loss scaler skips
/// that step), where PyTorch would multiply them by NaN.
pub fn clip_grad_norm(params: &[Tensor], max_norm: f64) -> Result<f64> {
    let grads: Vec<(Tensor, Tensor)> = params
        .iter()
        .filter_map(|p| p.grad().map(|g| (p.clone(), g)))
        .collect();
    let mut sq = 0.0f64;
    for (_, g) in &grads {
        sq += g.with_values::<f64, _>(|v| v.iter().map(|x| x * x).sum::<f64>());
    }
    let total = sq.sqrt();
    if !total.is_finite() {
        return Ok(total);
    }
    let coef = max_norm / (total + 1e-6);
    if coef < 1.0 {
        for (p, g) in grads {
            p.set_grad(Some(g.scale(coef)?));
        }
    }
    Ok(total)
}
