//! Mean squared error between two tensors of one shape.

use super::{loss_dtype, reduce_losses, Reduction, Upstream};
use crate::autograd::{op_output, Backward};
use crate::backend::cpu;
use crate::bail;
use crate::error::Result;
use crate::tensor::Tensor;

struct MseBack {
    reduction: Reduction,
    count: f64,
}

impl Backward for MseBack {
    fn name(&self) -> &'static str {
        "mse_loss"
    }
    fn backward(
        &self,
        g: &Tensor,
        inputs: &[Tensor],
        needs: &[bool],
        out: &Tensor,
    ) -> Result<Vec<Option<Tensor>>> {
        let (a, b) = (&inputs[0], &inputs[1]);
        #[cfg(feature = "cuda")]
        if let Some(cx) = crate::ops::cuda::OnCuda::of(&[g, a, b])? {
            if crate::ops::cuda::loss::mse_applies(a, b) {
                return crate::ops::cuda::loss::mse_backward(
                    &cx,
                    a,
                    b,
                    g,
                    self.reduction,
                    self.count,
                    needs,
                );
            }
        }
        crate::with_real!(out.dtype(), T => {
            let up = Upstream::<T>::new(g, self.reduction, self.count);
            let (av, bv) = (a.to_vec::<T>(), b.to_vec::<T>());
            let two = T::from_f64(2.0);
            let d = cpu::par_fill(av.len(), |i| two * (av[i] - bv[i]) * up.at(i));
            let ga = if needs[0] { Some(Tensor::from_values(d.clone(), a.shape(), a.dtype())?) } else { None };
            let gb = if needs[1] {
                Some(Tensor::from_values(d.into_iter().map(|v| -v).collect(), b.shape(), b.dtype())?)
            } else {
                None
            };
            Ok(vec![ga, gb])
        })
    }
}

impl Tensor {
    /// `F.mse_loss(self, target)`: mean of squared differences (shapes must match).
    pub fn mse_loss(&self, target: &Tensor) -> Result<Tensor> {
        self.mse_loss_with(target, Reduction::Mean)
    }

    /// MSE with an explicit reduction.
    pub fn mse_loss_with(&self, target: &Tensor, reduction: Reduction) -> Result<Tensor> {
        let dtype = loss_dtype("mse_loss", &[self, target])?;
        if self.shape() != target.shape() {
            bail!(
                "mse_loss: input shape {:?} does not match target shape {:?}",
                self.shape(),
                target.shape()
            );
        }
        let count = self.numel() as f64;
        #[cfg(feature = "cuda")]
        if let Some(cx) = crate::ops::cuda::OnCuda::of(&[self, target])? {
            if crate::ops::cuda::loss::mse_applies(self, target) {
                let storage = crate::ops::cuda::loss::mse_forward(&cx, self, target, reduction)?;
                let shape: &[usize] = if reduction == Reduction::None {
                    self.shape()
                } else {
                    &[]
                };
                return op_output(storage, shape, &[self, target], || MseBack {
                    reduction,
                    count,
                });
            }
        }
        let (storage, shape) = crate::with_real!(dtype, T => {
            let (av, bv) = (self.to_vec::<T>(), target.to_vec::<T>());
            let losses = cpu::par_fill(av.len(), |i| (av[i] - bv[i]) * (av[i] - bv[i]));
            let (v, shape) = reduce_losses(losses, self.shape(), reduction, count);
            (cpu::storage_from(v, dtype), shape)
        });
        op_output(storage, &shape, &[self, target], || MseBack {
            reduction,
            count,
        })
    }
}
