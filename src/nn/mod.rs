//! Neural-network layers built on the ops: each layer holds its parameter tensors,
//! has `forward`, and lists its parameters under PyTorch state-dict names.

mod batch_norm;
mod conv;
mod embedding;
mod group_norm;
pub mod init;
mod layer_norm;
mod linear;
mod state;

pub use batch_norm::BatchNorm2d;
pub use conv::{Conv2d, Conv2dConfig};
pub use embedding::Embedding;
pub use group_norm::GroupNorm;
pub use layer_norm::LayerNorm;
pub use linear::Linear;
pub use state::{load_state_dict, save_state_dict};

use crate::error::Result;
use crate::tensor::Tensor;

/// The layer convention: parameters and buffers carry PyTorch's state-dict names,
/// so `state_dict()` lines up with a PyTorch checkpoint of the same module.
pub trait Module {
    fn forward(&self, x: &Tensor) -> Result<Tensor>;

    /// Learnable parameters ("weight", "bias", ...).
    fn parameters(&self) -> Vec<(String, Tensor)>;

    /// Non-learnable state ("running_mean", "running_var", ...).
    fn buffers(&self) -> Vec<(String, Tensor)> {
        Vec::new()
    }

    /// Parameters then buffers, as PyTorch's `state_dict()`.
    fn state_dict(&self) -> Vec<(String, Tensor)> {
        let mut all = self.parameters();
        all.extend(self.buffers());
        all
    }

    /// Stop training this module: no gradient is computed or kept for its parameters.
    fn freeze(&self) -> Result<()> {
        self.parameters()
            .iter()
            .try_for_each(|(_, p)| p.set_requires_grad(false))
    }

    /// Train this module's parameters again.
    fn unfreeze(&self) -> Result<()> {
        self.parameters()
            .iter()
            .try_for_each(|(_, p)| p.set_requires_grad(true))
    }

    /// The parameters that currently require grad.
    fn trainable_parameters(&self) -> Vec<Tensor> {
        self.parameters()
            .into_iter()
            .map(|(_, p)| p)
            .filter(Tensor::requires_grad)
            .collect()
    }
}

/// Moves every tensor of `named` (a model's parameters and buffers) to `device` in place, as
/// PyTorch's `module.to(device)`; an error names the tensor that could not be moved.
pub fn move_to(named: &[(String, Tensor)], device: crate::tensor::Device) -> Result<()> {
    for (name, t) in named {
        t.move_to(device)
            .map_err(|e| e.context(format!("moving `{name}` to {device}")))?;
    }
    Ok(())
}

/// Moves a model's float buffers (BatchNorm running statistics) to `device`, as `move_to`;
/// integer counters (`num_batches_tracked`) stay on the host, where BatchNorm increments them
/// without reading the device back.
pub fn move_buffers_to(named: &[(String, Tensor)], device: crate::tensor::Device) -> Result<()> {
    let floats: Vec<(String, Tensor)> = named
        .iter()
        .filter(|(_, t)| t.dtype().is_float())
        .cloned()
        .collect();
    move_to(&floats, device)
}

/// Prefix every name with `prefix.` (to nest a child module's entries).
pub fn prefixed(prefix: &str, named: Vec<(String, Tensor)>) -> Vec<(String, Tensor)> {
    named
        .into_iter()
        .map(|(n, t)| (format!("{prefix}.{n}"), t))
        .collect()
}

#[cfg(test)]
mod tests;
