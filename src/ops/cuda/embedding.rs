//! Embedding's CUDA path: the row gather from a table on the device (ids as i64 on the
//! device) and its backward, a scatter-add into an f32 table gradient cast to the table's dtype.

use super::{tensor, OnCuda};
use crate::autograd::{op_output, Backward};
use crate::backend::cuda::embedding as kernels;
use crate::cuda::gpu::Ptr;
use crate::error::Result;
use crate::tensor::{DType, Tensor};

/// The table dtypes the kernels gather.
pub fn supported(weight: &Tensor) -> bool {
    matches!(weight.dtype(), DType::F32 | DType::BF16 | DType::F16)
}

/// Saved for the backward: the flattened i64 ids on the device.
struct EmbeddingCudaBack {
    ids: Tensor,
}

impl Backward for EmbeddingCudaBack {
    fn name(&self) -> &'static str {
        "embedding"
    }

    fn backward(
        &self,
        g: &Tensor,
        inputs: &[Tensor],
        _: &[bool],
        _: &Tensor,
    ) -> Result<Vec<Option<Tensor>>> {
        let w = &inputs[0];
        let (vocab, dim) = (w.shape()[0], w.shape()[1]);
        let Some(cx) = OnCuda::of(&[&self.ids])? else {
            crate::bail!("internal: embedding's saved ids left the device");
        };
        let ids = cx.view(&self.ids)?;
        let gd = cx.input(&g.to_dtype(w.dtype())?)?;
        let (dw, dwp) = cx.output(vocab * dim, DType::F32)?;
        kernels::embedding_backward(&cx.gpu, ids.ptr, gd.ptr, dwp, self.ids.numel(), vocab, dim)?;
        Ok(vec![Some(tensor(dw, w.shape())?.to_dtype(w.dtype())?)])
    }
}

/// Rows of `weight` [V, D] (on the op's GPU) for `ids` of any integer dtype and shape. Ids
/// on the host were checked against V by the caller; ids on the device are not read back
/// (that would wait for the device): an out-of-range id there gives a row of zeros.
pub fn embedding(cx: &OnCuda, ids: &Tensor, weight: &Tensor) -> Result<Tensor> {
    let (vocab, dim) = (weight.shape()[0], weight.shape()[1]);
    let n = ids.numel();
    let ids64 = ids
        .to_dtype(DType::I64)?
        .to_device(cx.device())?
        .contiguous()?
        .reshape(&[n])?;
    // A table with a unit column stride is read in place with its row stride.
    let w = weight.detach().to_device(cx.device())?;
    let ld_of = |t: &Tensor| {
        let s = t.layout().strides();
        if dim > 1 && s[1] != 1 {
            None
        } else if vocab <= 1 {
            Some(dim)
        } else if s[0] >= dim {
            Some(s[0])
        } else {
            None
        }
    };
    let (w, ld) = match ld_of(&w) {
        Some(ld) => (w, ld),
        None => (w.contiguous()?, dim),
    };
    let wd = cx.view(&w)?;
    let idd = cx.view(&ids64)?;
    let (out, op) = cx.output(n * dim, weight.dtype())?;
    kernels::embedding(
        &cx.gpu,
        idd.ptr,
        wd.ptr,
        op,
        Ptr::null(DType::I32),
        n,
        vocab,
        dim,
        ld.max(dim),
    )?;
    let mut shape = ids.shape().to_vec();
    shape.push(dim);
    op_output(out, &shape, &[weight], || EmbeddingCudaBack { ids: ids64 })
}
