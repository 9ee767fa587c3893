//! Concatenation along a dimension (split/chunk are views, in `view.rs`).

use crate::autograd::{op_output, Backward};
use crate::backend::cpu;
use crate::bail;
use crate::error::Result;
use crate::tensor::{resolve_dim, Layout, Tensor};

struct CatBack {
    dim: usize,
}
impl Backward for CatBack {
    fn name(&self) -> &'static str {
        "cat"
    }
    fn backward(
        &self,
        g: &Tensor,
        inputs: &[Tensor],
        needs: &[bool],
        _: &Tensor,
    ) -> Result<Vec<Option<Tensor>>> {
        let mut start = 0;
        let mut grads = Vec::with_capacity(inputs.len());
        for (x, &need) in inputs.iter().zip(needs) {
            let len = x.shape()[self.dim];
            grads.push(if need {
                Some(g.narrow(self.dim as isize, start, len)?.contiguous()?)
            } else {
                None
            });
            start += len;
        }
        Ok(grads)
    }
}

impl Tensor {
    /// Concatenate tensors of one dtype along `dim`; other dims must match.
    pub fn cat(tensors: &[&Tensor], dim: isize) -> Result<Tensor> {
        let Some(first) = tensors.first() else {
            bail!("cat of an empty list");
        };
        let dim = resolve_dim(dim, first.rank())?;
        let mut shape = first.shape().to_vec();
        shape[dim] = 0;
        for t in tensors {
            let same_others = t.rank() == first.rank()
                && (0..t.rank()).all(|d| d == dim || t.shape()[d] == first.shape()[d]);
            if !same_others || t.dtype() != first.dtype() {
                bail!(
                    "cat along dim {dim}: {:?} ({}) does not fit {:?} ({})",
                    t.shape(),
                    t.dtype(),
                    first.shape(),
                    first.dtype()
                );
            }
            shape[dim] += t.shape()[dim];
        }
        let dtype = first.dtype();
        #[cfg(feature = "cuda")]
        if let Some(cx) = crate::ops::cuda::OnCuda::of(tensors)? {
            let storage = crate::ops::cuda::copy::cat(&cx, tensors, &shape, dim)?;
            return op_output(storage, &shape, tensors, || CatBack { dim });
        }
        let storage = crate::with_real!(dtype, T => {
            let mut out = vec![T::zero(); shape.iter().product()];
            let full = Layout::contiguous(&shape);
            let mut start = 0;
            for t in tensors {
                let len = t.shape()[dim];
                let src = t.to_vec::<T>();
                crate::tensor::scatter_into(&mut out, &full.narrow(dim, start, len)?, &src);
                start += len;
            }
            cpu::storage_from(out, dtype)
        });
        op_output(storage, &shape, tensors, || CatBack { dim })
    }
}
