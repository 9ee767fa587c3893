//! Device paths of conv2d's forward (backend::cuda::conv: NHWC fast path or the general
//! implicit GEMM) and backward (backend::cuda::conv_backward: im2col/col2im + cuBLAS), and of
//! pad2d and its adjoint (zero fill + strided copy).

use super::copy::source;
use super::{DevIn, OnCuda};
use crate::backend::cpu::conv::Conv2dGeom;
use crate::backend::cuda::conv::conv2d_forward;
use crate::backend::cuda::copy::strided_copy;
use crate::cuda::gpu::Ptr;
use crate::error::Result;
use crate::tensor::{DType, Layout, Storage, Tensor};

/// Whether the conv kernels take `dtype` (f64 and integers stay on the host).
pub fn conv_dtype(dtype: DType) -> bool {
    matches!(dtype, DType::F32 | DType::BF16 | DType::F16)
}

/// y [N, O, OH, OW] = conv2d(x, w) + bias for a geometry validated by ops::conv (x, w, bias of
/// one f32/bf16/f16 dtype; non-contiguous or host operands are made contiguous on the device).
pub fn conv2d(
    cx: &OnCuda,
    geom: &Conv2dGeom,
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
) -> Result<Storage> {
    let dtype = x.dtype();
    let xi = cx.input(x)?;
    let wi = cx.input(w)?;
    let bi = bias.map(|b| cx.input(b)).transpose()?;
    let bptr = bi.as_ref().map_or(Ptr::null(dtype), |b| b.ptr);
    let (out, y) = cx.output(geom.n * geom.o * geom.p(), dtype)?;
    conv2d_forward(&cx.gpu, geom, xi.ptr, wi.ptr, bptr, y)?;
    Ok(out)
}

/// The window of the padded shape `shape` (rank r) that holds the unpadded [.., h, w].
fn window(
    shape: &[usize],
    (left, _, top, _): (usize, usize, usize, usize),
    h: usize,
    w: usize,
) -> Result<Layout> {
    let r = shape.len();
    Layout::contiguous(shape)
        .narrow(r - 2, top, h)?
        .narrow(r - 1, left, w)
}

/// x zero-padded on its last two dims by (left, right, top, bottom) into `shape` (any dtype:
/// the copy moves bits).
pub fn pad2d(
    cx: &OnCuda,
    x: &Tensor,
    pads: (usize, usize, usize, usize),
    shape: &[usize],
) -> Result<Storage> {
    let r = x.rank();
    let (h, w) = (x.shape()[r - 2], x.shape()[r - 1]);
    let (out, dst) = cx.zeros(shape.iter().product(), x.dtype())?;
    let (src, src_layout) = source(cx, x)?;
    strided_copy(
        &cx.gpu,
        src.ptr,
        &src_layout,
        dst,
        &window(shape, pads, h, w)?,
    )?;
    Ok(out)
}

/// pad2d's adjoint: the [.., h, w] window of g (shape of the padded output) as a contiguous
/// tensor of `x_shape`.
pub fn crop2d(
    cx: &OnCuda,
    g: &Tensor,
    pads: (usize, usize, usize, usize),
    x_shape: &[usize],
) -> Result<Tensor> {
    let r = x_shape.len();
    let (h, w) = (x_shape[r - 2], x_shape[r - 1]);
    let (src, l) = source(cx, g)?;
    let cropped = l.narrow(r - 2, pads.2, h)?.narrow(r - 1, pads.0, w)?;
    let (out, dst) = cx.output(x_shape.iter().product(), g.dtype())?;
    strided_copy(
        &cx.gpu,
        src.ptr,
        &cropped,
        dst,
        &Layout::contiguous(x_shape),
    )?;
    super::tensor(out, x_shape)
}

/// conv2d's gradients on the device from dy [N, O, OH, OW] (any layout; made contiguous): dx
/// [N, C, H, W] when `need_dx` (reads w), dw [O, C/groups, KH, KW] when `need_dw` (reads x);
/// nothing is read or computed for a gradient not wanted. f32/bf16/f16
/// (backend::cuda::conv_backward::conv2d_backward: im2col/col2im + cuBLAS).
pub fn backward(
    cx: &OnCuda,
    geom: &Conv2dGeom,
    x: &Tensor,
    w: &Tensor,
    dy: &Tensor,
    need_dx: bool,
    need_dw: bool,
) -> Result<(Option<Tensor>, Option<Tensor>)> {
    let dtype = dy.dtype();
    let dyi = cx.input(dy)?;
    let xi = need_dw.then(|| cx.input(x)).transpose()?;
    let wi = need_dx.then(|| cx.input(w)).transpose()?;
    let dx = need_dx
        .then(|| cx.output(geom.n * geom.c * geom.h * geom.w, dtype))
        .transpose()?;
    let dw = need_dw
        .then(|| cx.output(geom.weight_len(), dtype))
        .transpose()?;
    let ptr = |d: Option<&DevIn>| d.map_or(Ptr::null(dtype), |d| d.ptr);
    let out_ptr = |o: &Option<(Storage, Ptr)>| o.as_ref().map_or(Ptr::null(dtype), |o| o.1);
    crate::backend::cuda::conv_backward::conv2d_backward(
        &cx.gpu,
        geom,
        ptr(xi.as_ref()),
        ptr(wi.as_ref()),
        dyi.ptr,
        out_ptr(&dx),
        out_ptr(&dw),
    )?;
    let dx = dx.map(|(s, _)| super::tensor(s, x.shape())).transpose()?;
    let dw = dw.map(|(s, _)| super::tensor(s, w.shape())).transpose()?;
    Ok((dx, dw))
}
