//! Launches of kernels/conv.cu: conv2d forward as an implicit GEMM, the general NCHW kernel and
//! the NHWC tensor-core fast path with its layout transposes and split depth (CPU twin:
//! backend::cpu::conv::conv2d_forward).

use super::check;
use crate::backend::cpu::conv::Conv2dGeom;
use crate::cuda::gpu::{suffix, Ptr};
use crate::cuda::Gpu;
use crate::error::{Error, Result};
use crate::tensor::DType;
use cudarc::driver::{LaunchConfig, PushKernelArg};

const OP: &str = "conv2d";

/// Dynamic shared bytes of conv2d_fwd_{f16,bf16} and conv2d_fwd_f32.
const SMEM_TC: usize = 40960;
const SMEM_F32: usize = 8192;
/// Depth per pipeline stage of the tensor-core kernels (bounds the split count).
const BK: usize = 32;
/// Output pixels per block of the tensor-core kernels.
const BM: usize = 128;

/// Launch choices of the NHWC fast path: channels per block (`tbn`, 128 → conv2d_fwd_nhwc,
/// 64 → conv2d_fwd_nhwc_n64) and how many blocks share the depth (`splits`, 1 = whole depth,
/// written directly; > 1 = f32 partial sums in a workspace, then conv2d_splitk_finish).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NhwcLaunch {
    pub tbn: usize,
    pub splits: usize,
}

impl NhwcLaunch {
    /// The launch contract's measured choice for `geom` on a GPU with `sms` multiprocessors:
    /// tbn 64 when O/groups <= 64, else 128; split the depth only for grids under two blocks
    /// per SM, at most 8 ways and a quarter of the depth's 32-deep stages.
    pub fn choose(geom: &Conv2dGeom, sms: usize) -> NhwcLaunch {
        let og = geom.og();
        let tbn = if og <= 64 { 64 } else { 128 };
        let blocks = (geom.n * geom.p()).div_ceil(BM) * og.div_ceil(tbn) * geom.groups;
        let kt = geom.kg().div_ceil(BK);
        let splits = (2 * sms / blocks.max(1)).clamp(1, (kt / 4).clamp(1, 8));
        NhwcLaunch { tbn, splits }
    }

    /// [`NhwcLaunch::choose`] for `g`'s multiprocessor count.
    pub fn for_gpu(g: &Gpu, geom: &Conv2dGeom) -> Result<NhwcLaunch> {
        Ok(NhwcLaunch::choose(geom, g.sm_count()?))
    }
}

/// Whether the NHWC fast path serves `geom` in `dtype`: f16/bf16 with C/groups % 8 == 0.
pub fn nhwc_applies(geom: &Conv2dGeom, dtype: DType) -> bool {
    matches!(dtype, DType::BF16 | DType::F16) && geom.groups > 0 && geom.cg().is_multiple_of(8)
}

/// y [N, O, OH, OW] = conv2d(x [N, C, H, W], w [O, C/groups, KH, KW]) + bias [O] (null = no
/// bias), all contiguous in one dtype (f32, bf16, f16). Takes the NHWC fast path when
/// [`nhwc_applies`] (x and w reordered into scratch from `g.allocator()`, tile width and split
/// count by [`NhwcLaunch::for_gpu`]) and conv2d_fwd otherwise. Queued on the stream; the scratch
/// returns to the allocator in stream order.
pub fn conv2d_forward(g: &Gpu, geom: &Conv2dGeom, x: Ptr, w: Ptr, bias: Ptr, y: Ptr) -> Result<()> {
    if !nhwc_applies(geom, y.dtype) {
        return conv2d_forward_general(g, geom, x, w, bias, y);
    }
    validate(geom)?;
    check_io(geom, x, w, bias, y)?;
    if empty(geom) {
        return Ok(());
    }
    let (wt_block, wt) = g.scratch(geom.weight_len(), y.dtype)?;
    conv2d_weight_to_ohwi(g, geom, w, wt, None)?;
    conv2d_forward_ohwi(g, geom, x, wt, bias, y, None)?;
    drop(wt_block);
    Ok(())
}

/// The NHWC fast path from NCHW x and already reordered weights wt [O, KH, KW, C/groups]
/// (from [`conv2d_weight_to_ohwi`], cached by the caller while w is unchanged): x → NHWC and the
/// f32 split workspace are scratch from `g.allocator()`. `launch` None = [`NhwcLaunch::for_gpu`].
/// f16/bf16 only, C/groups % 8 == 0.
pub fn conv2d_forward_ohwi(
    g: &Gpu,
    geom: &Conv2dGeom,
    x: Ptr,
    wt: Ptr,
    bias: Ptr,
    y: Ptr,
    launch: Option<NhwcLaunch>,
) -> Result<()> {
    validate(geom)?;
    check_io(geom, x, wt, bias, y)?;
    check_nhwc(geom, y.dtype)?;
    if empty(geom) {
        return Ok(());
    }
    let launch = match launch {
        Some(l) => l,
        None => NhwcLaunch::for_gpu(g, geom)?,
    };
    let (xt_block, xt) = g.scratch(geom.n * geom.c * geom.h * geom.w, y.dtype)?;
    conv2d_nchw_to_nhwc(g, geom, x, xt)?;
    let ws = if launch.splits > 1 {
        Some(g.scratch(geom.n * geom.o * geom.p(), DType::F32)?)
    } else {
        None
    };
    let ws_ptr = ws.as_ref().map_or(Ptr::null(DType::F32), |w| w.1);
    conv2d_fwd_nhwc(g, geom, xt, wt, bias, y, ws_ptr, launch)?;
    drop(xt_block);
    drop(ws);
    Ok(())
}

/// The general kernel conv2d_fwd_{f32,bf16,f16}: any geometry from NCHW x and OIHW w (shapes
/// as [`conv2d_forward`]); tensor cores for bf16/f16 (128 x 128 tiles), CUDA cores for f32.
pub fn conv2d_forward_general(
    g: &Gpu,
    geom: &Conv2dGeom,
    x: Ptr,
    w: Ptr,
    bias: Ptr,
    y: Ptr,
) -> Result<()> {
    validate(geom)?;
    check_io(geom, x, w, bias, y)?;
    let s = suffix(y.dtype)?;
    let (tile, smem) = if y.dtype == DType::F32 {
        (64, SMEM_F32)
    } else {
        (128, SMEM_TC)
    };
    let grid_y = grid_yz("O/groups tiles", geom.og().div_ceil(tile))?;
    let grid_z = grid_yz("groups", geom.groups)?;
    if empty(geom) {
        return Ok(());
    }
    let grid_x = grid_x(geom.n * geom.p(), tile)?;
    let ga = geom_args(geom)?;
    let kernel = format!("conv2d_fwd_{s}");
    let f = g.function_with_smem("conv", &kernel, smem)?;
    let cfg = LaunchConfig {
        grid_dim: (grid_x, grid_y, grid_z),
        block_dim: (256, 1, 1),
        shared_mem_bytes: smem as u32,
    };
    let mut b = g.stream().launch_builder(&f);
    b.arg(&x.addr).arg(&w.addr).arg(&bias.addr).arg(&y.addr);
    for v in &ga {
        b.arg(v);
    }
    // SAFETY: argument types and order follow the kernel's signature; sizes checked above.
    check::launched(unsafe { b.launch(cfg) }, &kernel)
}

/// Step a of the fast path: xt [N, H, W, C] = x [N, C, H, W] transposed (conv2d_nchw_to_nhwc;
/// f32, bf16, f16; N and C come from `geom`).
pub fn conv2d_nchw_to_nhwc(g: &Gpu, geom: &Conv2dGeom, x: Ptr, xt: Ptr) -> Result<()> {
    let len = geom.n * geom.c * geom.h * geom.w;
    let s = suffix(xt.dtype)?;
    check::dtype(OP, "x", x, xt.dtype)?;
    check::need(OP, "x", x, len)?;
    check::need(OP, "xt (NHWC scratch)", xt, len)?;
    if len == 0 {
        return Ok(());
    }
    let hw = geom.h * geom.w;
    let c = check::int(OP, "C", geom.c)?;
    check::int(OP, "H*W", hw)?;
    let grid = (
        grid_x(hw, 32)?,
        grid_yz("C/32 tiles", geom.c.div_ceil(32))?,
        grid_yz("N", geom.n)?,
    );
    let kernel = format!("conv2d_nchw_to_nhwc_{s}");
    let f = g.function("conv", &kernel)?;
    let cfg = LaunchConfig {
        grid_dim: grid,
        block_dim: (32, 8, 1),
        shared_mem_bytes: (33 * 32 * xt.dtype.size_in_bytes()) as u32,
    };
    let hw = hw as i64;
    let mut b = g.stream().launch_builder(&f);
    b.arg(&x.addr).arg(&xt.addr).arg(&c).arg(&hw);
    // SAFETY: as in conv2d_forward_general.
    check::launched(unsafe { b.launch(cfg) }, &kernel)
}

/// Step b of the fast path: wt [O, KH, KW, C/groups] = w [O, C/groups, KH, KW] reordered
/// (conv2d_weight_to_ohwi; f32, bf16, f16). Depends on w alone: cache wt while w is unchanged.
/// `max_blocks` caps the grid-stride grid (None = the contract's 4096).
pub fn conv2d_weight_to_ohwi(
    g: &Gpu,
    geom: &Conv2dGeom,
    w: Ptr,
    wt: Ptr,
    max_blocks: Option<usize>,
) -> Result<()> {
    if geom.groups == 0 || !geom.c.is_multiple_of(geom.groups) {
        return Err(Error::msg(format!(
            "{OP}: groups = {} does not divide C = {}",
            geom.groups, geom.c
        )));
    }
    let len = geom.weight_len();
    let s = suffix(wt.dtype)?;
    check::dtype(OP, "w", w, wt.dtype)?;
    check::need(OP, "w", w, len)?;
    check::need(OP, "wt (OHWI weights)", wt, len)?;
    if len == 0 {
        return Ok(());
    }
    let o = check::int(OP, "O", geom.o)?;
    let cg = check::int(OP, "C/groups", geom.cg())?;
    let khw = check::int(OP, "KH*KW", geom.kh * geom.kw)?;
    check::int(OP, "C/groups*KH*KW", geom.kg())?;
    let kernel = format!("conv2d_weight_to_ohwi_{s}");
    let f = g.function("conv", &kernel)?;
    let cfg = LaunchConfig {
        grid_dim: (
            check::blocks(len, 256, max_blocks.unwrap_or(4096).max(1)),
            1,
            1,
        ),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    };
    let mut b = g.stream().launch_builder(&f);
    b.arg(&w.addr).arg(&wt.addr).arg(&o).arg(&cg).arg(&khw);
    // SAFETY: as in conv2d_forward_general.
    check::launched(unsafe { b.launch(cfg) }, &kernel)
}

/// Steps c-e of the fast path: y [N, O, OH, OW] (NCHW) from xt [N, H, W, C] and wt
/// [O, KH, KW, C/groups] (16-byte aligned) plus bias [O] (null = none), bf16/f16 with
/// C/groups % 8 == 0, with `launch`'s tile width and split count (1 <= splits <=
/// ceil(C/groups*KH*KW / 32)). With splits > 1, `ws` is an f32 workspace of N*O*OH*OW elements
/// (contents undefined: zeroed here) and conv2d_splitk_finish writes y; with splits == 1 pass a
/// null `ws` (ignored).
#[allow(clippy::too_many_arguments)]
pub fn conv2d_fwd_nhwc(
    g: &Gpu,
    geom: &Conv2dGeom,
    xt: Ptr,
    wt: Ptr,
    bias: Ptr,
    y: Ptr,
    ws: Ptr,
    launch: NhwcLaunch,
) -> Result<()> {
    validate(geom)?;
    check_io(geom, xt, wt, bias, y)?;
    check_nhwc(geom, y.dtype)?;
    for (what, p) in [("xt", xt), ("wt", wt)] {
        if !p.addr.is_multiple_of(16) {
            return Err(Error::msg(format!(
                "{OP}: {what} at {:#x} is not 16-byte aligned (the NHWC kernels copy 16 bytes)",
                p.addr
            )));
        }
    }
    let NhwcLaunch { tbn, splits } = launch;
    let (name, smem) = match tbn {
        128 => ("conv2d_fwd_nhwc", 81920),
        64 => ("conv2d_fwd_nhwc_n64", 61440),
        _ => {
            return Err(Error::msg(format!(
                "{OP}: tile width {tbn} channels: the NHWC kernels have 64 and 128"
            )))
        }
    };
    let kt = geom.kg().div_ceil(BK);
    if splits < 1 || splits > kt.max(1) {
        return Err(Error::msg(format!(
            "{OP}: {splits} depth splits; this conv's depth {} allows 1..={}",
            geom.kg(),
            kt.max(1)
        )));
    }
    let total = geom.n * geom.o * geom.p();
    if splits > 1 {
        check::need(OP, "ws (f32 workspace)", ws, total)?;
        check::dtype(OP, "ws (f32 workspace)", ws, DType::F32)?;
    }
    let grid_y = grid_yz("O/groups tiles", geom.og().div_ceil(tbn))?;
    let grid_z = grid_yz("groups*splits", geom.groups * splits)?;
    if empty(geom) {
        return Ok(());
    }
    let grid_x = grid_x(geom.n * geom.p(), BM)?;
    let ga = geom_args(geom)?;
    let s = suffix(y.dtype)?;
    let stream = g.stream();
    let ws_addr = if splits > 1 {
        // c. the workspace zeroed (0x00 bytes are 0.0f32).
        // SAFETY: ws holds at least `total` f32 elements (checked above), on this stream.
        unsafe {
            cudarc::driver::result::memset_d8_async(ws.addr, 0, total * 4, stream.cu_stream())
        }
        .map_err(|e| crate::cuda::modules::driver_error(e, "zeroing the conv2d split workspace"))?;
        ws.addr
    } else {
        0u64
    };
    // d. the conv.
    let kernel = format!("{name}_{s}");
    let f = g.function_with_smem("conv", &kernel, smem)?;
    let cfg = LaunchConfig {
        grid_dim: (grid_x, grid_y, grid_z),
        block_dim: (256, 1, 1),
        shared_mem_bytes: smem as u32,
    };
    let sp = splits as i32;
    let mut b = stream.launch_builder(&f);
    b.arg(&xt.addr).arg(&wt.addr).arg(&bias.addr).arg(&y.addr);
    for v in &ga {
        b.arg(v);
    }
    b.arg(&ws_addr).arg(&sp);
    // SAFETY: as in conv2d_forward_general; alignment and workspace checked above.
    check::launched(unsafe { b.launch(cfg) }, &kernel)?;
    if splits == 1 {
        return Ok(());
    }
    // e. y = ws + bias.
    let kernel = format!("conv2d_splitk_finish_{s}");
    let f = g.function("conv", &kernel)?;
    let cfg = LaunchConfig {
        grid_dim: (check::blocks(total, 256, 8192), 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    };
    let (tot, o, p) = (total as i64, geom.o as i32, geom.p() as i64);
    let mut b = stream.launch_builder(&f);
    b.arg(&ws.addr)
        .arg(&bias.addr)
        .arg(&y.addr)
        .arg(&tot)
        .arg(&o)
        .arg(&p);
    // SAFETY: as above.
    check::launched(unsafe { b.launch(cfg) }, &kernel)
}

/// No output elements: nothing to launch.
fn empty(geom: &Conv2dGeom) -> bool {
    geom.n * geom.p() == 0 || geom.o == 0
}

fn validate(geom: &Conv2dGeom) -> Result<()> {
    validate_geometry(OP, geom)
}

/// The geometry's own consistency: groups divide C and O, strides/dilations/kernel >= 1 and
/// OH/OW as PyTorch computes them; errors start with `op` (the forward's and the backward's
/// launches share it).
pub fn validate_geometry(op: &str, geom: &Conv2dGeom) -> Result<()> {
    let bad = |why: String| Err(Error::msg(format!("{op}: {why}")));
    if geom.groups == 0
        || !geom.c.is_multiple_of(geom.groups)
        || !geom.o.is_multiple_of(geom.groups)
    {
        return bad(format!(
            "groups = {} must divide C = {} and O = {}",
            geom.groups, geom.c, geom.o
        ));
    }
    let ones = [
        geom.kh,
        geom.kw,
        geom.stride.0,
        geom.stride.1,
        geom.dilation.0,
        geom.dilation.1,
    ];
    if ones.contains(&0) {
        return bad(format!(
            "kernel {}x{}, stride {:?} and dilation {:?} must be >= 1",
            geom.kh, geom.kw, geom.stride, geom.dilation
        ));
    }
    let out = |len: usize, pad: usize, d: usize, k: usize, s: usize| {
        (len + 2 * pad)
            .checked_sub(d * (k - 1) + 1)
            .map(|v| v / s + 1)
    };
    let oh = out(
        geom.h,
        geom.padding.0,
        geom.dilation.0,
        geom.kh,
        geom.stride.0,
    );
    let ow = out(
        geom.w,
        geom.padding.1,
        geom.dilation.1,
        geom.kw,
        geom.stride.1,
    );
    if oh != Some(geom.oh) || ow != Some(geom.ow) {
        return bad(format!(
            "output {}x{} does not match input {}x{}, kernel {}x{}, stride {:?}, padding {:?}, \
             dilation {:?} ({oh:?}x{ow:?})",
            geom.oh,
            geom.ow,
            geom.h,
            geom.w,
            geom.kh,
            geom.kw,
            geom.stride,
            geom.padding,
            geom.dilation
        ));
    }
    Ok(())
}

/// x, w (or their reordered forms, same sizes), bias and y: lengths and one dtype.
fn check_io(geom: &Conv2dGeom, x: Ptr, w: Ptr, bias: Ptr, y: Ptr) -> Result<()> {
    suffix(y.dtype).map_err(|e| Error::msg(format!("{OP}: {e}")))?;
    for (what, p) in [("x", x), ("w", w), ("bias", bias)] {
        check::dtype(OP, what, p, y.dtype)?;
    }
    check::need(OP, "x", x, geom.n * geom.c * geom.h * geom.w)?;
    check::need(OP, "w", w, geom.weight_len())?;
    check::need_opt(OP, "bias", bias, geom.o)?;
    check::need(OP, "y", y, geom.n * geom.o * geom.p())
}

/// The fast path's limits: f16/bf16, C/groups % 8 == 0.
fn check_nhwc(geom: &Conv2dGeom, dtype: DType) -> Result<()> {
    if !nhwc_applies(geom, dtype) {
        return Err(Error::msg(format!(
            "{OP}: the NHWC kernels take bf16/f16 with C/groups % 8 == 0 (got {dtype:?}, \
             C/groups = {})",
            geom.cg()
        )));
    }
    Ok(())
}

/// The 16 geometry arguments after the pointers, as the kernels' `int`s (with the contract's
/// 32-bit limits on the per-image sizes and the depth).
fn geom_args(geom: &Conv2dGeom) -> Result<[i32; 16]> {
    check::int(OP, "C/groups*KH*KW", geom.kg())?;
    check::int(OP, "H*W", geom.h * geom.w)?;
    check::int(OP, "OH*OW", geom.p())?;
    let i = |what: &str, v: usize| check::int(OP, what, v);
    Ok([
        i("N", geom.n)?,
        i("C", geom.c)?,
        i("H", geom.h)?,
        i("W", geom.w)?,
        i("O", geom.o)?,
        i("KH", geom.kh)?,
        i("KW", geom.kw)?,
        i("OH", geom.oh)?,
        i("OW", geom.ow)?,
        i("stride", geom.stride.0)?,
        i("stride", geom.stride.1)?,
        i("padding", geom.padding.0)?,
        i("padding", geom.padding.1)?,
        i("dilation", geom.dilation.0)?,
        i("dilation", geom.dilation.1)?,
        i("groups", geom.groups)?,
    ])
}

/// grid.x for `work` items at `per` a block (must fit the driver's 2^31 - 1).
fn grid_x(work: usize, per: usize) -> Result<u32> {
    let blocks = work.div_ceil(per).max(1);
    check::int(OP, "grid.x blocks", blocks).map(|v| v as u32)
}

/// grid.y / grid.z (at most 65535).
fn grid_yz(what: &str, v: usize) -> Result<u32> {
    if v > 65535 {
        return Err(Error::msg(format!(
            "{OP}: {what} = {v} exceeds the grid limit 65535"
        )));
    }
    Ok(v.max(1) as u32)
}
