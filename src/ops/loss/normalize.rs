//! L2 normalisation along a dimension, as `F.normalize(x, p=2, dim, eps)`:
//! x / max(‖x‖, eps), with its backward.

use crate::autograd::{op_output, Backward};
use crate::backend::cpu;
use crate::bail;
use crate::error::Result;
use crate::tensor::{resolve_dim, Real, Tensor};

struct L2NormalizeBack {
    dim: usize,
    eps: f64,
}

/// (outer, n, inner) of a row-major shape split around `dim`.
fn split(shape: &[usize], dim: usize) -> (usize, usize, usize) {
    (
        shape[..dim].iter().product(),
        shape[dim],
        shape[dim + 1..].iter().product(),
    )
}

/// max(‖x‖, eps) of every fibre along the split dimension, indexed by outer·inner.
fn norms<T: Real>(x: &[T], (outer, n, inner): (usize, usize, usize), eps: T) -> Vec<T> {
    cpu::par_fill(outer * inner, |f| {
        let (o, i) = (f / inner, f % inner);
        let base = o * n * inner + i;
        let ss: T = (0..n)
            .map(|k| x[base + k * inner] * x[base + k * inner])
            .sum();
        ss.sqrt().max(eps)
    })
}

impl Backward for L2NormalizeBack {
    fn name(&self) -> &'static str {
        "l2_normalize"
    }
    fn backward(
        &self,
        g: &Tensor,
        inputs: &[Tensor],
        _: &[bool],
        out: &Tensor,
    ) -> Result<Vec<Option<Tensor>>> {
        let x = &inputs[0];
        let dims = split(x.shape(), self.dim);
        #[cfg(feature = "cuda")]
        if let Some(cx) = crate::ops::cuda::OnCuda::of(&[g, x])? {
            if crate::ops::cuda::loss::l2_normalize_applies(x.dtype(), dims) {
                let dx =
                    crate::ops::cuda::loss::l2_normalize_backward(&cx, x, out, g, dims, self.eps)?;
                return Ok(vec![Some(dx)]);
            }
        }
        let (_, n, inner) = dims;
        let dx = crate::with_real!(x.dtype(), T => {
            let (xv, yv, gv) = (x.to_vec::<T>(), out.to_vec::<T>(), g.to_vec::<T>());
            let eps = T::from_f64(self.eps);
            let raw = norms(&xv, dims, T::zero());
            // Where ‖x‖ > eps: dx = (g - y (y·g)) / ‖x‖; else (clamped) dx = g / eps.
            let dots = cpu::par_fill(raw.len(), |f| {
                let base = (f / inner) * n * inner + f % inner;
                (0..n).map(|k| yv[base + k * inner] * gv[base + k * inner]).sum::<T>()
            });
            let dx = cpu::par_fill(xv.len(), |idx| {
                let (o, i) = (idx / (n * inner), idx % inner);
                let f = o * inner + i;
                if raw[f] > eps {
                    (gv[idx] - yv[idx] * dots[f]) / raw[f]
                } else {
                    gv[idx] / eps
                }
            });
            Tensor::from_values(dx, x.shape(), x.dtype())?
        });
        Ok(vec![Some(dx)])
    }
}

impl Tensor {
    /// `F.normalize(self, p=2, dim, eps)`: unit L2 norm along `dim`.
    pub fn l2_normalize(&self, dim: isize, eps: f64) -> Result<Tensor> {
        if !self.dtype().is_float() {
            bail!("l2_normalize: needs a float tensor, got {}", self.dtype());
        }
        if eps.is_nan() || eps < 0.0 {
            bail!("l2_normalize: eps must be non-negative, got {eps}");
        }
        let dim = resolve_dim(dim, self.rank())?;
        let dims = split(self.shape(), dim);
        #[cfg(feature = "cuda")]
        if let Some(cx) = crate::ops::cuda::OnCuda::of(&[self])? {
            if crate::ops::cuda::loss::l2_normalize_applies(self.dtype(), dims) {
                let storage = crate::ops::cuda::loss::l2_normalize(&cx, self, dims, eps)?;
                return op_output(storage, self.shape(), &[self], || L2NormalizeBack {
                    dim,
                    eps,
                });
            }
        }
        let (_, n, inner) = dims;
        let storage = crate::with_real!(self.dtype(), T => {
            let xv = self.to_vec::<T>();
            let nrm = norms(&xv, dims, T::from_f64(eps));
            let y = cpu::par_fill(xv.len(), |idx| xv[idx] / nrm[(idx / (n * inner)) * inner + idx % inner]);
            cpu::storage_from(y, self.dtype())
        });
        op_output(storage, self.shape(), &[self], || L2NormalizeBack {
            dim,
            eps,
        })
    }
}
