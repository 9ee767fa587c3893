//! Binary cross-entropy on logits, in the stable softplus form, with soft targets
//! and an optional `pos_weight`; gradients for logits, targets and pos_weight.

use super::{loss_dtype, reduce_losses, Reduction, Upstream};
use crate::autograd::{op_output, Backward};
use crate::backend::cpu;
use crate::bail;
use crate::error::Result;
use crate::tensor::{Real, Tensor};

/// softplus(-x) = log(1 + exp(-x)), without overflow.
fn softplus_neg<T: Real>(x: T) -> T {
    (-x).max(T::zero()) + (-x.abs()).exp().ln_1p()
}

/// sigmoid(-x), without overflow.
fn sigmoid_neg<T: Real>(x: T) -> T {
    if x >= T::zero() {
        let e = (-x).exp();
        e / (T::one() + e)
    } else {
        T::one() / (T::one() + x.exp())
    }
}

struct BceBack {
    reduction: Reduction,
    count: f64,
}

/// Logits, targets and the positive weight broadcast to the logits' shape.
type Operands<T> = (Vec<T>, Vec<T>, Option<Vec<T>>);

/// Values of logits, targets and the (broadcast) positive weight as `T`.
fn operands<T: Real>(inputs: &[Tensor]) -> Result<Operands<T>> {
    let x = &inputs[0];
    let pw = match inputs.get(2) {
        Some(p) => Some(p.broadcast_as(x.shape())?.detach().to_vec::<T>()),
        None => None,
    };
    Ok((x.to_vec::<T>(), inputs[1].to_vec::<T>(), pw))
}

impl Backward for BceBack {
    fn name(&self) -> &'static str {
        "bce_with_logits"
    }
    fn backward(
        &self,
        g: &Tensor,
        inputs: &[Tensor],
        needs: &[bool],
        _: &Tensor,
    ) -> Result<Vec<Option<Tensor>>> {
        let x = &inputs[0];
        let compute = if inputs.iter().any(|t| t.dtype() == crate::DType::F64) {
            crate::DType::F64
        } else {
            crate::DType::F32
        };
        crate::with_real!(compute, T => {
            let up = Upstream::<T>::new(g, self.reduction, self.count);
            let (xv, yv, pw) = operands::<T>(inputs)?;
            let pw_at = |i: usize| pw.as_ref().map_or(T::one(), |p| p[i]);
            let n = xv.len();
            let mut out = vec![None, None];
            if needs[0] {
                // d/dx = (1 - y) - (1 + (pw - 1) y) sigmoid(-x)
                let d = cpu::par_fill(n, |i| {
                    let lw = T::one() + (pw_at(i) - T::one()) * yv[i];
                    up.at(i) * ((T::one() - yv[i]) - lw * sigmoid_neg(xv[i]))
                });
                out[0] = Some(Tensor::from_values(d, x.shape(), inputs[0].dtype())?);
            }
            if needs[1] {
                // d/dy = -x + (pw - 1) softplus(-x)
                let d = cpu::par_fill(n, |i| up.at(i) * (-xv[i] + (pw_at(i) - T::one()) * softplus_neg(xv[i])));
                out[1] = Some(Tensor::from_values(d, x.shape(), inputs[1].dtype())?);
            }
            if let Some(p) = inputs.get(2) {
                out.push(if needs[2] {
                    // d/dpw = y softplus(-x), summed over the broadcast
                    let d = cpu::par_fill(n, |i| up.at(i) * yv[i] * softplus_neg(xv[i]));
                    Some(Tensor::from_values(d, x.shape(), compute)?.sum_to(p.shape())?.to_dtype(p.dtype())?)
                } else {
                    None
                });
            }
            Ok(out)
        })
    }
}

impl Tensor {
    /// Mean `F.binary_cross_entropy_with_logits(logits, targets, pos_weight=..)`.
    /// Targets are probabilities of the same shape (soft targets allowed);
    /// `pos_weight` broadcasts against the logits (typically one per class).
    pub fn bce_with_logits(&self, targets: &Tensor, pos_weight: Option<&Tensor>) -> Result<Tensor> {
        self.bce_with_logits_with(targets, pos_weight, Reduction::Mean)
    }

    /// BCE-with-logits with an explicit reduction.
    pub fn bce_with_logits_with(
        &self,
        targets: &Tensor,
        pos_weight: Option<&Tensor>,
        reduction: Reduction,
    ) -> Result<Tensor> {
        let mut inputs = vec![self, targets];
        inputs.extend(pos_weight);
        let dtype = loss_dtype("bce_with_logits", &inputs)?;
        if targets.shape() != self.shape() {
            bail!(
                "bce_with_logits: targets shape {:?} does not match logits {:?}",
                targets.shape(),
                self.shape()
            );
        }
        if let Some(p) = pos_weight {
            if p.layout().broadcast_to(self.shape()).is_err() {
                bail!(
                    "bce_with_logits: pos_weight shape {:?} does not broadcast to logits {:?}",
                    p.shape(),
                    self.shape()
                );
            }
        }
        let owned: Vec<Tensor> = inputs.iter().map(|&t| t.clone()).collect();
        let count = self.numel() as f64;
        let storage = crate::with_real!(dtype, T => {
            let (xv, yv, pw) = operands::<T>(&owned)?;
            let losses = cpu::par_fill(xv.len(), |i| {
                let lw = T::one() + (pw.as_ref().map_or(T::one(), |p| p[i]) - T::one()) * yv[i];
                (T::one() - yv[i]) * xv[i] + lw * softplus_neg(xv[i])
            });
            let (v, shape) = reduce_losses(losses, self.shape(), reduction, count);
            (cpu::storage_from(v, dtype), shape)
        });
        op_output(storage.0, &storage.1, &inputs, || BceBack {
            reduction,
            count,
        })
    }
}
