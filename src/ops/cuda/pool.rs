//! Device paths of the pooling ops and nearest upsampling (backend::cuda::{pool, upsample}):
//! forward and backward over contiguous [planes, h, w], results in the input's dtype.

use super::OnCuda;
use crate::backend::cpu::pool::Pool2dGeom;
use crate::backend::cuda::{pool as kp, upsample as ku};
use crate::error::Result;
use crate::tensor::{DType, Storage, Tensor};

/// Whether the pooling kernels take `dtype` (f64 stays on the host).
pub fn pool_dtype(dtype: DType) -> bool {
    matches!(dtype, DType::F32 | DType::BF16 | DType::F16)
}

/// Max pool: (values, argmax as a device I32 tensor [planes·oh·ow] holding the u32 in-plane
/// indices the backward reads).
pub fn max_pool2d(cx: &OnCuda, geo: &Pool2dGeom, x: &Tensor) -> Result<(Storage, Tensor)> {
    let xi = cx.input(x)?;
    let olen = geo.planes * geo.oh * geo.ow;
    let (out, o) = cx.output(olen, x.dtype())?;
    let (idx, ip) = cx.output(olen, DType::I32)?;
    kp::max_pool2d(&cx.gpu, geo, xi.ptr, o, ip)?;
    Ok((out, super::tensor(idx, &[olen])?))
}

/// dx of max pool from dy and the forward's device argmax.
pub fn max_pool2d_backward(
    cx: &OnCuda,
    geo: &Pool2dGeom,
    g: &Tensor,
    argmax: &Tensor,
    x: &Tensor,
) -> Result<Tensor> {
    let gi = cx.input(&g.to_dtype(x.dtype())?)?;
    let ii = cx.input(argmax)?;
    let (dx, p) = cx.output(x.numel(), x.dtype())?;
    kp::max_pool2d_backward(&cx.gpu, geo, gi.ptr, ii.ptr, p)?;
    super::tensor(dx, x.shape())
}

pub fn avg_pool2d(cx: &OnCuda, geo: &Pool2dGeom, cip: bool, x: &Tensor) -> Result<Storage> {
    let xi = cx.input(x)?;
    let (out, o) = cx.output(geo.planes * geo.oh * geo.ow, x.dtype())?;
    kp::avg_pool2d(&cx.gpu, geo, cip, xi.ptr, o)?;
    Ok(out)
}

pub fn avg_pool2d_backward(
    cx: &OnCuda,
    geo: &Pool2dGeom,
    cip: bool,
    g: &Tensor,
    x: &Tensor,
) -> Result<Tensor> {
    let gi = cx.input(&g.to_dtype(x.dtype())?)?;
    let (dx, p) = cx.output(x.numel(), x.dtype())?;
    kp::avg_pool2d_backward(&cx.gpu, geo, cip, gi.ptr, p)?;
    super::tensor(dx, x.shape())
}

pub fn adaptive_avg_pool2d(
    cx: &OnCuda,
    x: &Tensor,
    planes: usize,
    hw: (usize, usize),
    ohw: (usize, usize),
) -> Result<Storage> {
    let xi = cx.input(x)?;
    let (out, o) = cx.output(planes * ohw.0 * ohw.1, x.dtype())?;
    kp::adaptive_avg_pool2d(&cx.gpu, xi.ptr, o, planes, hw, ohw)?;
    Ok(out)
}

pub fn upsample_nearest2d(
    cx: &OnCuda,
    x: &Tensor,
    planes: usize,
    hw: (usize, usize),
    scale: usize,
) -> Result<Storage> {
    let xi = cx.input(x)?;
    let (out, o) = cx.output(planes * hw.0 * hw.1 * scale * scale, x.dtype())?;
    ku::upsample_nearest2d(&cx.gpu, xi.ptr, o, planes, hw, scale)?;
    Ok(out)
}

/// The backward of adaptive average pooling (`Some(out)`) or of nearest upsampling by
/// `scale` (`None` for `adaptive`): dx of x's shape and dtype.
pub fn resize_backward(
    cx: &OnCuda,
    g: &Tensor,
    x: &Tensor,
    adaptive: Option<(usize, usize)>,
    scale: usize,
) -> Result<Tensor> {
    let s = x.shape();
    let (planes, hw) = (s[0] * s[1], (s[2], s[3]));
    let gi = cx.input(&g.to_dtype(x.dtype())?)?;
    let (dx, p) = cx.output(x.numel(), x.dtype())?;
    match adaptive {
        Some(ohw) => kp::adaptive_avg_pool2d_backward(&cx.gpu, gi.ptr, p, planes, hw, ohw)?,
        None => ku::upsample_nearest2d_backward(&cx.gpu, gi.ptr, p, planes, hw, scale)?,
    }
    super::tensor(dx, x.shape())
}
