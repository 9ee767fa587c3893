//! The backward pass: topological order, gradient routing, leaf accumulation.

use super::no_grad;
use crate::bail;
use crate::error::{Context, Result};
use crate::tensor::{DType, Tensor, TensorId};
use std::collections::{HashMap, HashSet};

/// Tensors reachable from `root` through nodes, each after everything that uses it.
fn reverse_topological(root: &Tensor) -> Vec<Tensor> {
    let mut order = Vec::new();
    let mut visited = HashSet::new();
    // Iterative post-order DFS: (tensor, children pushed?)
    let mut stack = vec![(root.clone(), false)];
    while let Some((t, expanded)) = stack.pop() {
        if expanded {
            order.push(t);
            continue;
        }
        if !visited.insert(t.id()) {
            continue;
        }
        stack.push((t.clone(), true));
        if let Some(node) = t.node() {
            for (input, &needs) in node.inputs.iter().zip(&node.needs_grad) {
                if needs && !visited.contains(&input.id()) {
                    stack.push((input.clone(), false));
                }
            }
        }
    }
    order.reverse();
    order
}

/// Gradients of leaves are kept in f32 for half leaves (master-gradient precision).
fn leaf_grad_dtype(dtype: DType) -> DType {
    if dtype.is_half() {
        DType::F32
    } else {
        dtype
    }
}

fn accumulate(slot: &mut HashMap<TensorId, Tensor>, id: TensorId, g: Tensor) -> Result<()> {
    let merged = match slot.remove(&id) {
        Some(prev) => prev.add(&g)?,
        None => g,
    };
    slot.insert(id, merged);
    Ok(())
}

impl Tensor {
    /// Backpropagate from a scalar (one-element) tensor, seeding with 1.
    pub fn backward(&self) -> Result<()> {
        if self.numel() != 1 {
            bail!(
                "backward() needs a one-element loss, got shape {:?} (use backward_with)",
                self.shape()
            );
        }
        // Seeded where the loss lives: a CPU seed for a device loss would send the first
        // backward rules down their host paths (reading device tensors back).
        let seed = Tensor::ones(self.shape(), self.dtype())?.to_device(self.device())?;
        self.backward_with(&seed)
    }

    /// Backpropagate with an explicit output gradient of this tensor's shape.
    /// Leaf gradients accumulate across calls until cleared.
    pub fn backward_with(&self, grad: &Tensor) -> Result<()> {
        if !self.requires_grad() {
            bail!("backward() on a tensor that does not require grad (no trainable input, or computed under no_grad)");
        }
        if grad.shape() != self.shape() {
            bail!(
                "backward gradient shape {:?} != output shape {:?}",
                grad.shape(),
                self.shape()
            );
        }
        let _guard = no_grad();
        let mut grads: HashMap<TensorId, Tensor> = HashMap::new();
        grads.insert(self.id(), grad.to_device(self.device())?);
        for t in reverse_topological(self) {
            let Some(g) = grads.remove(&t.id()) else {
                continue;
            };
            match t.node() {
                Some(node) => {
                    let input_grads = node
                        .backward
                        .backward(&g, &node.inputs, &node.needs_grad, &t)
                        .with_context(|| format!("backward of {}", node.op_name()))?;
                    if input_grads.len() != node.inputs.len() {
                        bail!(
                            "backward of {} returned {} gradients for {} inputs",
                            node.op_name(),
                            input_grads.len(),
                            node.inputs.len()
                        );
                    }
                    for ((input, needs), ig) in
                        node.inputs.iter().zip(&node.needs_grad).zip(input_grads)
                    {
                        if !needs {
                            continue;
                        }
                        let Some(ig) = ig else { continue };
                        if ig.shape() != input.shape() {
                            bail!("backward of {} gave a gradient of shape {:?} for an input of shape {:?}", node.op_name(), ig.shape(), input.shape());
                        }
                        accumulate(&mut grads, input.id(), ig)?;
                    }
                }
                None => {
                    if t.requires_grad() {
                        let g = g.to_dtype(leaf_grad_dtype(t.dtype()))?;
                        let total = match t.grad() {
                            Some(prev) => prev.add(&g)?,
                            None => g.contiguous()?,
                        };
                        // Host-fallback backward rules may produce CPU gradients for a
                        // device leaf: the gradient lives where its leaf does.
                        t.set_grad(Some(total.to_device(t.device())?));
                    }
                }
            }
        }
        Ok(())
    }
}
