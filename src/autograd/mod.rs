//! Reverse-mode automatic differentiation.
//!
//! Every op that produces a tensor from inputs that require grad records a
//! [`Node`]: its backward rule and its inputs. [`Tensor::backward`] walks the
//! graph in reverse topological order; leaves that require grad accumulate
//! their gradient. Frozen inputs get no gradient computed (`needs_grad` is false).

mod engine;
mod grad_mode;
pub mod gradcheck;

pub use grad_mode::{is_grad_enabled, no_grad, NoGradGuard};

use crate::error::Result;
use crate::tensor::{Layout, Storage, Tensor};

/// The backward rule of one op. `grad` is the gradient of the op's output;
/// return one gradient per input (`None` where `needs_grad[i]` is false).
/// Backward rules run with gradient recording off.
pub trait Backward: Send + Sync {
    fn name(&self) -> &'static str;
    fn backward(
        &self,
        grad: &Tensor,
        inputs: &[Tensor],
        needs_grad: &[bool],
        output: &Tensor,
    ) -> Result<Vec<Option<Tensor>>>;
}

/// How a non-leaf tensor was computed.
pub struct Node {
    pub(crate) backward: Box<dyn Backward>,
    pub(crate) inputs: Vec<Tensor>,
    pub(crate) needs_grad: Vec<bool>,
}

impl Node {
    pub fn op_name(&self) -> &'static str {
        self.backward.name()
    }
}

/// A node for an op on `inputs`, or `None` when no gradient can flow
/// (recording off, or no input requires grad). `make` runs only if needed.
pub fn record<B: Backward + 'static>(inputs: &[&Tensor], make: impl FnOnce() -> B) -> Option<Node> {
    if !is_grad_enabled() {
        return None;
    }
    let needs_grad: Vec<bool> = inputs.iter().map(|t| t.requires_grad()).collect();
    if !needs_grad.iter().any(|&b| b) {
        return None;
    }
    Some(Node {
        backward: Box::new(make()),
        inputs: inputs.iter().map(|&t| t.clone()).collect(),
        needs_grad,
    })
}

/// Build an op's output tensor from fresh CPU storage, recording its node.
pub fn op_output<B: Backward + 'static>(
    storage: Storage,
    shape: &[usize],
    inputs: &[&Tensor],
    make: impl FnOnce() -> B,
) -> Result<Tensor> {
    let node = record(inputs, make);
    // An op computed on the host for device inputs (no CUDA path yet): its output goes to
    // the inputs' device.
    let device = crate::ops::device::op_device(inputs);
    let storage = if storage.device() != device {
        crate::ops::device::note_host_fallback(std::any::type_name::<B>());
        crate::ops::device::place(storage, device)?
    } else {
        storage
    };
    let out = Tensor::from_storage(storage, Layout::contiguous(shape))?;
    Ok(match node {
        None => out,
        Some(node) => out.view_with(out.layout().clone(), Some(node)),
    })
}
