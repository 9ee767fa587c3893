//! Launches of kernels/upsample.cu: nearest-neighbour 2-D upsampling by an integer factor and
//! its backward over contiguous [planes, h, w] (CPU twin: backend::cpu::pool::upsample_nearest2d).

use super::check;
use crate::cuda::gpu::{suffix, Ptr};
use crate::cuda::Gpu;
use crate::error::Result;
use cudarc::driver::{LaunchConfig, PushKernelArg};

/// Block (BX, BY) = (min(256, roundup32(w)), max(1, 256 / BX)) and a grid over `rows` rows
/// (block-strided, so the cap only bounds the grid).
fn config(rows: usize, w: usize) -> LaunchConfig {
    let bx = (w.div_ceil(32) * 32).clamp(32, 256);
    let by = (256 / bx).max(1);
    LaunchConfig {
        grid_dim: (check::blocks(rows, by, 65535 * 16), 1, 1),
        block_dim: (bx as u32, by as u32, 1),
        shared_mem_bytes: 0,
    }
}

#[allow(clippy::too_many_arguments)]
fn launch(
    g: &Gpu,
    op: &str,
    (input, iname, ilen): (Ptr, &str, usize),
    (output, oname, olen): (Ptr, &str, usize),
    planes: usize,
    (h, w): (usize, usize),
    s: usize,
    rows: usize,
) -> Result<()> {
    crate::ensure!(s >= 1, "{op}: scale factor must be at least 1");
    let si = check::int(op, "scale factor", s)?;
    check::need(op, iname, input, ilen)?;
    check::dtype(op, iname, input, output.dtype)?;
    check::need(op, oname, output, olen)?;
    let sfx = suffix(output.dtype)?;
    if olen == 0 {
        return Ok(());
    }
    let (p, hh, ww) = (planes as i64, h as i64, w as i64);
    let name = format!("{op}_{sfx}");
    let f = g.function("upsample", &name)?;
    let mut b = g.stream().launch_builder(&f);
    b.arg(&p).arg(&hh).arg(&ww).arg(&si);
    b.arg(&input.addr).arg(&output.addr);
    // SAFETY: argument types and order follow the kernel's signature; sizes checked above.
    check::launched(unsafe { b.launch(config(rows, w)) }, &name)
}

/// out [planes, h·s, w·s] = x [planes, h, w] with each element repeated s × s (same dtype;
/// f32, bf16 or f16; s >= 1). A copy: bit-identical to the CPU.
pub fn upsample_nearest2d(
    g: &Gpu,
    x: Ptr,
    out: Ptr,
    planes: usize,
    hw: (usize, usize),
    s: usize,
) -> Result<()> {
    let (len, olen) = (planes * hw.0 * hw.1, planes * hw.0 * hw.1 * s * s);
    let rows = planes * hw.0 * s;
    let op = "upsample_nearest2d";
    launch(
        g,
        op,
        (x, "x", len),
        (out, "output", olen),
        planes,
        hw,
        s,
        rows,
    )
}

/// dx [planes, h, w] = the sum of each s × s block of dy [planes, h·s, w·s] (f32 sums in the
/// CPU's order; all of dx written).
pub fn upsample_nearest2d_backward(
    g: &Gpu,
    dy: Ptr,
    dx: Ptr,
    planes: usize,
    hw: (usize, usize),
    s: usize,
) -> Result<()> {
    let (len, olen) = (planes * hw.0 * hw.1, planes * hw.0 * hw.1 * s * s);
    let rows = planes * hw.0;
    let op = "upsample_nearest2d_backward";
    launch(
        g,
        op,
        (dy, "dy", olen),
        (dx, "dx", len),
        planes,
        hw,
        s,
        rows,
    )
}
