//! Device copies behind the views' materialisations: `contiguous`, `cat` (each input into its
//! slice of the output) and `pad_into` (the adjoint of `narrow`), all through the strided-copy
//! kernel (backend::cuda::copy). CPU twins: CpuStorage::gather and layout::scatter_into.

use super::{DevIn, OnCuda};
use crate::backend::cuda::copy::strided_copy;
use crate::error::Result;
use crate::tensor::{Layout, Storage, Tensor};

/// `t` on the device as it is (uploaded first when it lives elsewhere): the address of its first
/// element and its layout re-based there (offset 0), for the strided copies.
pub fn source(cx: &OnCuda, t: &Tensor) -> Result<(DevIn, Layout)> {
    let d = if t.device() == cx.device() {
        cx.view(t)?
    } else {
        cx.input(t)?
    };
    // `d.ptr` already points at the layout's offset: read from there with offset 0.
    let l = d.tensor.layout();
    let layout = Layout::new(l.shape().to_vec(), l.strides().to_vec(), 0);
    Ok((d, layout))
}

/// A row-major copy of `t`.
pub fn contiguous(cx: &OnCuda, t: &Tensor) -> Result<Storage> {
    let (src, src_layout) = source(cx, t)?;
    let (out, dst) = cx.output(t.numel(), t.dtype())?;
    strided_copy(
        &cx.gpu,
        src.ptr,
        &src_layout,
        dst,
        &Layout::contiguous(t.shape()),
    )?;
    Ok(out)
}

/// The tensors (one dtype, shapes checked by the caller) side by side along `dim` in a new
/// tensor of `shape`.
pub fn cat(cx: &OnCuda, tensors: &[&Tensor], shape: &[usize], dim: usize) -> Result<Storage> {
    let dtype = tensors[0].dtype();
    let (out, dst) = cx.output(shape.iter().product(), dtype)?;
    let full = Layout::contiguous(shape);
    let mut start = 0;
    for t in tensors {
        let len = t.shape()[dim];
        let (src, src_layout) = source(cx, t)?;
        strided_copy(
            &cx.gpu,
            src.ptr,
            &src_layout,
            dst,
            &full.narrow(dim, start, len)?,
        )?;
        start += len;
    }
    Ok(out)
}

/// `t` written into zeros of `shape` at `start` along `dim`.
pub fn pad_into(
    cx: &OnCuda,
    t: &Tensor,
    shape: &[usize],
    dim: usize,
    start: usize,
) -> Result<Storage> {
    let (out, dst) = cx.zeros(shape.iter().product(), t.dtype())?;
    let window = Layout::contiguous(shape).narrow(dim, start, t.shape()[dim])?;
    let (src, src_layout) = source(cx, t)?;
    strided_copy(&cx.gpu, src.ptr, &src_layout, dst, &window)?;
    Ok(out)
}
