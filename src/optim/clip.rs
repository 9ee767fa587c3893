//! Gradient clipping by global L2 norm, as `torch.nn.utils.clip_grad_norm_`, on the
//! host or (feature `cuda`) on the gradients' GPU.

use crate::error::Result;
use crate::tensor::{DType, Tensor};

/// Scale the gradients of `params` by max_norm / (total + 1e-6) when their global
/// L2 norm `total` exceeds `max_norm`; return `total` (before clipping). A non-finite
/// norm is returned as is and leaves the gradients untouched (the loss scaler skips
/// that step), where PyTorch would multiply them by NaN.
///
/// Gradients on a GPU are clipped there ([`clip_grad_norm_tensor`]); returning the
/// norm as an f64 then reads it back, which waits for the GPU (a host sync per call).
/// Use [`clip_grad_norm_tensor`] in a training loop that only logs the norm now and
/// then.
pub fn clip_grad_norm(params: &[Tensor], max_norm: f64) -> Result<f64> {
    #[cfg(feature = "cuda")]
    if let Some(norm) = device::clip(params, max_norm)? {
        return norm.to_scalar();
    }
    host_clip(params, max_norm)
}

/// [`clip_grad_norm`] returning the norm as a one-element tensor instead of reading it
/// back: when the gradients are f32 on one GPU, an f32 tensor of shape [] on that
/// device (squares summed in f32, agreeing with the host's f64 sum to ~1e-6 relative),
/// computed and applied without host sync; otherwise the host result as an f64 scalar.
pub fn clip_grad_norm_tensor(params: &[Tensor], max_norm: f64) -> Result<Tensor> {
    #[cfg(feature = "cuda")]
    if let Some(norm) = device::clip(params, max_norm)? {
        return Ok(norm);
    }
    Tensor::scalar(host_clip(params, max_norm)?, DType::F64)
}

fn host_clip(params: &[Tensor], max_norm: f64) -> Result<f64> {
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

#[cfg(feature = "cuda")]
mod device {
    use super::*;
    use crate::ops::cuda::OnCuda;
    use crate::tensor::Device;

    /// The device clip when every gradient is f32 on one GPU (what backward leaves for
    /// f32/bf16/f16 parameters there); None for the host code otherwise.
    pub(super) fn clip(params: &[Tensor], max_norm: f64) -> Result<Option<Tensor>> {
        let with: Vec<(&Tensor, Tensor)> = params
            .iter()
            .filter_map(|p| p.grad().map(|g| (p, g)))
            .collect();
        let Some(Device::Cuda(ordinal)) = with.first().map(|(_, g)| g.device()) else {
            return Ok(None);
        };
        if with
            .iter()
            .any(|(_, g)| g.device() != Device::Cuda(ordinal) || g.dtype() != DType::F32)
        {
            return Ok(None);
        }
        let grads: Vec<Tensor> = with.iter().map(|(_, g)| g.clone()).collect();
        let Some(cx) = OnCuda::of(&[&grads[0]])? else {
            return Ok(None);
        };
        let (norm, clipped) = crate::ops::cuda::optim::clip_grad_norm(&cx, &grads, max_norm)?;
        for ((p, _), g) in with.iter().zip(clipped) {
            p.set_grad(Some(g));
        }
        Ok(Some(norm))
    }
}
