//! Launches of kernels/pool.cu: 2-D max pooling (with its argmax), average pooling and adaptive
//! average pooling over contiguous [planes, h, w], each with its backward (CPU twin:
//! backend::cpu::pool).

use super::check;
use crate::backend::cpu::pool::Pool2dGeom;
use crate::cuda::gpu::{suffix, Ptr};
use crate::cuda::Gpu;
use crate::error::Result;
use crate::tensor::DType;
use cudarc::driver::{LaunchConfig, PushKernelArg};

/// The contract's 2-D launch over `rows` rows of `cols` columns: BX = min(128, roundup32(cols)),
/// BY = max(1, 128 / BX), grid ceil(rows / BY) capped (rows are block-strided).
fn config(rows: usize, cols: usize) -> LaunchConfig {
    let bx = (cols.div_ceil(32) * 32).clamp(32, 128);
    let by = (128 / bx).max(1);
    LaunchConfig {
        grid_dim: (check::blocks(rows, by, 65535 * 16), 1, 1),
        block_dim: (bx as u32, by as u32, 1),
        shared_mem_bytes: 0,
    }
}

/// The geometry's limits (as ops::pool validates them), then its 11 i64 kernel parameters.
fn geom_args(op: &str, geo: &Pool2dGeom) -> Result<[i64; 11]> {
    let (kh, kw) = geo.kernel;
    let (sh, sw) = geo.stride;
    let (ph, pw) = geo.padding;
    crate::ensure!(
        kh >= 1 && kw >= 1 && sh >= 1 && sw >= 1,
        "{op}: kernel {:?} and stride {:?} must be at least 1",
        geo.kernel,
        geo.stride
    );
    crate::ensure!(
        2 * ph <= kh && 2 * pw <= kw,
        "{op}: padding {:?} exceeds half the kernel {:?}",
        geo.padding,
        geo.kernel
    );
    let want = (
        Pool2dGeom::out_size(geo.h, kh, sh, ph),
        Pool2dGeom::out_size(geo.w, kw, sw, pw),
    );
    crate::ensure!(
        want == (Some(geo.oh), Some(geo.ow)),
        "{op}: output {}x{} does not match input {}x{} with kernel {:?}, stride {:?}, padding {:?}",
        geo.oh,
        geo.ow,
        geo.h,
        geo.w,
        geo.kernel,
        geo.stride,
        geo.padding
    );
    plane_limits(op, geo.planes, geo.h, geo.w, geo.oh, geo.ow)?;
    Ok([
        geo.planes, geo.h, geo.w, kh, kw, sh, sw, ph, pw, geo.oh, geo.ow,
    ]
    .map(|v| v as i64))
}

/// Planes must be indexable in 32 bits, and a non-empty output needs a non-empty input.
fn plane_limits(op: &str, planes: usize, h: usize, w: usize, oh: usize, ow: usize) -> Result<()> {
    crate::ensure!(
        (h * w) < (1usize << 32),
        "{op}: a {h}x{w} plane exceeds the kernel's 32-bit in-plane index"
    );
    crate::ensure!(
        planes * oh * ow == 0 || h * w > 0,
        "{op}: an empty {h}x{w} input cannot produce a {oh}x{ow} output"
    );
    Ok(())
}

/// Checks one input/output pair of the same float dtype.
fn pair(
    op: &str,
    (a, an, alen): (Ptr, &str, usize),
    (b, bn, blen): (Ptr, &str, usize),
) -> Result<()> {
    check::need(op, an, a, alen)?;
    check::dtype(op, an, a, b.dtype)?;
    check::need(op, bn, b, blen)?;
    suffix(b.dtype).map(|_| ())
}

fn launch(
    g: &Gpu,
    kernel: &str,
    dtype: DType,
    args: &[i64],
    extra_int: Option<i32>,
    ptrs: &[Ptr],
    cfg: LaunchConfig,
) -> Result<()> {
    let name = format!("{kernel}_{}", suffix(dtype)?);
    let f = g.function("pool", &name)?;
    let mut b = g.stream().launch_builder(&f);
    for v in args {
        b.arg(v);
    }
    if let Some(v) = &extra_int {
        b.arg(v);
    }
    for p in ptrs {
        b.arg(&p.addr);
    }
    // SAFETY: argument types and order follow the kernel's signature; every caller checks the
    // buffers' sizes and dtypes for the geometry first.
    check::launched(unsafe { b.launch(cfg) }, &name)
}

/// Max pooling with −inf padding: `x` [planes, h, w] → `out` [planes, oh, ow] (same dtype) and
/// `idx` (u32 as I32, [planes, oh, ow]): each window's first maximum as the flat in-plane index
/// y·w + x (NaN propagates). Every output element is written.
pub fn max_pool2d(g: &Gpu, geo: &Pool2dGeom, x: Ptr, out: Ptr, idx: Ptr) -> Result<()> {
    const OP: &str = "max_pool2d";
    let a = geom_args(OP, geo)?;
    let (len, olen) = (geo.planes * geo.h * geo.w, geo.planes * geo.oh * geo.ow);
    pair(OP, (x, "x", len), (out, "output", olen))?;
    check::dtype(OP, "idx", idx, DType::I32)?;
    check::need(OP, "idx", idx, olen)?;
    if olen == 0 {
        return Ok(());
    }
    let cfg = config(geo.planes * geo.oh, geo.ow);
    launch(g, OP, out.dtype, &a, None, &[x, out, idx], cfg)
}

/// dx [planes, h, w] from dy [planes, oh, ow] and the forward's `idx` (u32 as I32): each input
/// element sums, in output order, the dy of the windows whose maximum it was (all of dx written).
pub fn max_pool2d_backward(g: &Gpu, geo: &Pool2dGeom, dy: Ptr, idx: Ptr, dx: Ptr) -> Result<()> {
    const OP: &str = "max_pool2d_backward";
    let a = geom_args(OP, geo)?;
    let (len, olen) = (geo.planes * geo.h * geo.w, geo.planes * geo.oh * geo.ow);
    pair(OP, (dy, "dy", olen), (dx, "dx", len))?;
    check::dtype(OP, "idx", idx, DType::I32)?;
    check::need(OP, "idx", idx, olen)?;
    if len == 0 {
        return Ok(());
    }
    let cfg = config(geo.planes * geo.h, geo.w);
    launch(g, OP, dx.dtype, &a, None, &[dy, idx, dx], cfg)
}

/// Average pooling with zero padding: `x` [planes, h, w] → `out` [planes, oh, ow], dividing by
/// the whole window (`count_include_pad`) or by its in-bounds part.
pub fn avg_pool2d(
    g: &Gpu,
    geo: &Pool2dGeom,
    count_include_pad: bool,
    x: Ptr,
    out: Ptr,
) -> Result<()> {
    const OP: &str = "avg_pool2d";
    let a = geom_args(OP, geo)?;
    let (len, olen) = (geo.planes * geo.h * geo.w, geo.planes * geo.oh * geo.ow);
    pair(OP, (x, "x", len), (out, "output", olen))?;
    if olen == 0 {
        return Ok(());
    }
    let cfg = config(geo.planes * geo.oh, geo.ow);
    let cip = Some(count_include_pad as i32);
    launch(g, OP, out.dtype, &a, cip, &[x, out], cfg)
}

/// dx [planes, h, w] of [`avg_pool2d`] from dy [planes, oh, ow] (all of dx written).
pub fn avg_pool2d_backward(
    g: &Gpu,
    geo: &Pool2dGeom,
    count_include_pad: bool,
    dy: Ptr,
    dx: Ptr,
) -> Result<()> {
    const OP: &str = "avg_pool2d_backward";
    let a = geom_args(OP, geo)?;
    let (len, olen) = (geo.planes * geo.h * geo.w, geo.planes * geo.oh * geo.ow);
    pair(OP, (dy, "dy", olen), (dx, "dx", len))?;
    if len == 0 {
        return Ok(());
    }
    let cfg = config(geo.planes * geo.h, geo.w);
    let cip = Some(count_include_pad as i32);
    launch(g, OP, dx.dtype, &a, cip, &[dy, dx], cfg)
}

fn adaptive_args(
    op: &str,
    planes: usize,
    (h, w): (usize, usize),
    (oh, ow): (usize, usize),
) -> Result<[i64; 5]> {
    crate::ensure!(
        h >= 1 && w >= 1 && oh >= 1 && ow >= 1,
        "{op}: input {h}x{w} and output {oh}x{ow} must be non-empty"
    );
    plane_limits(op, planes, h, w, oh, ow)?;
    Ok([planes, h, w, oh, ow].map(|v| v as i64))
}

/// Adaptive average pooling (PyTorch's bins floor(i·h/oh) .. ceil((i+1)·h/oh)): `x`
/// [planes, h, w] → `out` [planes, oh, ow]; all sizes at least 1.
pub fn adaptive_avg_pool2d(
    g: &Gpu,
    x: Ptr,
    out: Ptr,
    planes: usize,
    hw: (usize, usize),
    ohw: (usize, usize),
) -> Result<()> {
    const OP: &str = "adaptive_avg_pool2d";
    let a = adaptive_args(OP, planes, hw, ohw)?;
    let (len, olen) = (planes * hw.0 * hw.1, planes * ohw.0 * ohw.1);
    pair(OP, (x, "x", len), (out, "output", olen))?;
    if olen == 0 {
        return Ok(());
    }
    let cfg = config(planes * ohw.0, ohw.1);
    launch(g, OP, out.dtype, &a, None, &[x, out], cfg)
}

/// dx [planes, h, w] of [`adaptive_avg_pool2d`] from dy [planes, oh, ow] (all of dx written).
pub fn adaptive_avg_pool2d_backward(
    g: &Gpu,
    dy: Ptr,
    dx: Ptr,
    planes: usize,
    hw: (usize, usize),
    ohw: (usize, usize),
) -> Result<()> {
    const OP: &str = "adaptive_avg_pool2d_backward";
    let a = adaptive_args(OP, planes, hw, ohw)?;
    let (len, olen) = (planes * hw.0 * hw.1, planes * ohw.0 * ohw.1);
    pair(OP, (dy, "dy", olen), (dx, "dx", len))?;
    if len == 0 {
        return Ok(());
    }
    let cfg = config(planes * hw.0, hw.1);
    launch(g, OP, dx.dtype, &a, None, &[dy, dx], cfg)
}
