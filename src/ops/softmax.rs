//! Softmax and log-softmax along one dimension (numerically stable), each with a
//! fused backward from the saved output.

use crate::autograd::{op_output, Backward};
use crate::backend::cpu::{self, softmax as kernels};
use crate::ensure;
use crate::error::Result;
use crate::tensor::{resolve_dim, Tensor};

/// Backward of (log-)softmax over the middle axis of [outer, n, inner].
struct SoftmaxBack {
    n: usize,
    inner: usize,
    log: bool,
}

impl Backward for SoftmaxBack {
    fn name(&self) -> &'static str {
        if self.log {
            "log_softmax"
        } else {
            "softmax"
        }
    }
    fn backward(
        &self,
        g: &Tensor,
        inputs: &[Tensor],
        _: &[bool],
        out: &Tensor,
    ) -> Result<Vec<Option<Tensor>>> {
        let x = &inputs[0];
        #[cfg(feature = "cuda")]
        if crate::ops::cuda::cast::kernel_float(x.dtype()) {
            if let Some(cx) = crate::ops::cuda::OnCuda::of(&[x, out, g])? {
                let (out, g) = (out.to_dtype(x.dtype())?, g.to_dtype(x.dtype())?);
                let dx = crate::ops::cuda::softmax::softmax_backward(
                    &cx, &out, &g, self.n, self.inner, self.log,
                )?;
                return Ok(vec![Some(crate::ops::cuda::tensor(dx, x.shape())?)]);
            }
        }
        let dx = crate::with_real!(x.dtype(), T => {
            let d = kernels::softmax_backward(&out.to_vec::<T>(), &g.to_vec::<T>(), self.n, self.inner, self.log);
            Tensor::from_values(d, x.shape(), x.dtype())?
        });
        Ok(vec![Some(dx)])
    }
}

fn softmax_impl(x: &Tensor, dim: isize, log: bool) -> Result<Tensor> {
    let op = if log { "log_softmax" } else { "softmax" };
    ensure!(
        x.dtype().is_float(),
        "{op} needs a float tensor, got {}",
        x.dtype()
    );
    let d = resolve_dim(dim, x.rank()).map_err(|e| e.context(op))?;
    let n = x.shape()[d];
    let inner: usize = x.shape()[d + 1..].iter().product();
    #[cfg(feature = "cuda")]
    if crate::ops::cuda::cast::kernel_float(x.dtype()) {
        if let Some(cx) = crate::ops::cuda::OnCuda::of(&[x])? {
            let storage = crate::ops::cuda::softmax::softmax(&cx, x, n, inner, log)?;
            return op_output(storage, x.shape(), &[x], || SoftmaxBack { n, inner, log });
        }
    }
    let storage = crate::with_real!(x.dtype(), T => {
        let y = x.with_values::<T, _>(|v| kernels::softmax(v, n, inner, log));
        cpu::storage_from(y, x.dtype())
    });
    op_output(storage, x.shape(), &[x], || SoftmaxBack { n, inner, log })
}

impl Tensor {
    /// exp(x − max) / Σ exp(x − max) along `dim` (negative counts from the end).
    pub fn softmax(&self, dim: isize) -> Result<Tensor> {
        softmax_impl(self, dim, false)
    }

    /// x − max − log Σ exp(x − max) along `dim`.
    pub fn log_softmax(&self, dim: isize) -> Result<Tensor> {
        softmax_impl(self, dim, true)
    }
}
