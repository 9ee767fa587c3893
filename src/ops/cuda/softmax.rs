//! CUDA path of softmax / log-softmax over the middle axis of [outer, n, inner] and its
//! backward from the saved output (kernels/softmax.cu).

use super::OnCuda;
use crate::backend::cuda::softmax as kernels;
use crate::error::Result;
use crate::tensor::{Storage, Tensor};

/// y = (log-)softmax of x along the axis of length `n` followed by `inner` elements.
pub fn softmax(cx: &OnCuda, x: &Tensor, n: usize, inner: usize, log: bool) -> Result<Storage> {
    let len = x.numel();
    let (storage, y) = cx.output(len, x.dtype())?;
    if len == 0 {
        return Ok(storage);
    }
    let xd = cx.input(x)?;
    kernels::softmax(&cx.gpu, xd.ptr, y, len / (n * inner), n, inner, log)?;
    Ok(storage)
}

/// dx from the forward's output `y` and the incoming gradient `g` (y's shape and dtype).
pub fn softmax_backward(
    cx: &OnCuda,
    y: &Tensor,
    g: &Tensor,
    n: usize,
    inner: usize,
    log: bool,
) -> Result<Storage> {
    let len = y.numel();
    let (storage, dx) = cx.output(len, y.dtype())?;
    if len == 0 {
        return Ok(storage);
    }
    let (yd, gd) = (cx.input(y)?, cx.input(g)?);
    kernels::softmax_backward(
        &cx.gpu,
        yd.ptr,
        gd.ptr,
        dx,
        len / (n * inner),
        n,
        inner,
        log,
    )?;
    Ok(storage)
}
