//! Launches of kernels/geglu.cu: GEGLU y = h·gelu(gate) over rows [h | gate] and its backward
//! (CPU twin: backend::cpu::geglu).

use super::check;
use crate::cuda::gpu::{suffix, Ptr};
use crate::cuda::Gpu;
use crate::error::Result;
use crate::tensor::DType;
use cudarc::driver::{LaunchConfig, PushKernelArg};

const OP: &str = "geglu";

/// Launch-shape overrides (the default is the contract's shape; tests cap the grid to exercise
/// the block-strided rows).
#[derive(Clone, Copy, Debug)]
pub struct GegluLaunch {
    /// Most blocks in the grid (rows are block-strided past it).
    pub grid_cap: u32,
}

impl Default for GegluLaunch {
    fn default() -> Self {
        GegluLaunch {
            grid_cap: 65535 * 16,
        }
    }
}

/// y [rows, d] = h·gelu(gate) (exact erf GELU) from x [rows, 2d] = [h | gate]; x and y of one
/// floating dtype.
pub fn geglu(g: &Gpu, x: Ptr, y: Ptr, rows: usize, d: usize, launch: GegluLaunch) -> Result<()> {
    check::need(OP, "x", x, rows * 2 * d)?;
    check::need(OP, "y", y, rows * d)?;
    check::dtype(OP, "y", y, x.dtype)?;
    if rows * d == 0 {
        return Ok(());
    }
    let s = suffix(x.dtype)?;
    let cfg = config(rows, d, x.dtype, launch);
    let f = g.function("geglu", &format!("geglu_{s}"))?;
    let (r, dd) = (rows as i64, d as i64);
    let mut b = g.stream().launch_builder(&f);
    b.arg(&r).arg(&dd).arg(&x.addr).arg(&y.addr);
    // SAFETY: argument types and order follow the kernel's signature; sizes checked above.
    check::launched(unsafe { b.launch(cfg) }, "geglu")
}

/// dx [rows, 2d] = [dy·gelu(gate) | dy·h·gelu'(gate)] from x [rows, 2d] and dy [rows, d]
/// (one floating dtype).
pub fn geglu_backward(
    g: &Gpu,
    x: Ptr,
    dy: Ptr,
    dx: Ptr,
    rows: usize,
    d: usize,
    launch: GegluLaunch,
) -> Result<()> {
    const OP: &str = "geglu_backward";
    check::need(OP, "x", x, rows * 2 * d)?;
    check::need(OP, "dy", dy, rows * d)?;
    check::need(OP, "dx", dx, rows * 2 * d)?;
    check::dtype(OP, "dy", dy, x.dtype)?;
    check::dtype(OP, "dx", dx, x.dtype)?;
    if rows * d == 0 {
        return Ok(());
    }
    let s = suffix(x.dtype)?;
    let cfg = config(rows, d, x.dtype, launch);
    let f = g.function("geglu", &format!("geglu_backward_{s}"))?;
    let (r, dd) = (rows as i64, d as i64);
    let mut b = g.stream().launch_builder(&f);
    b.arg(&r).arg(&dd).arg(&x.addr).arg(&dy.addr).arg(&dx.addr);
    // SAFETY: as in `geglu`.
    check::launched(unsafe { b.launch(cfg) }, "geglu_backward")
}

/// The contract's launch: BX = min(256, roundup32(ceil(d / P))) with P the 16-byte pack width
/// when d is a multiple of it (else 1), BY = max(1, 256 / BX), grid = min(ceil(rows / BY), cap).
fn config(rows: usize, d: usize, dtype: DType, launch: GegluLaunch) -> LaunchConfig {
    let pack = 16 / dtype.size_in_bytes();
    let p = if d.is_multiple_of(pack) { pack } else { 1 };
    let bx = (d.div_ceil(p).div_ceil(32) * 32).clamp(32, 256) as u32;
    let by = (256 / bx).max(1);
    LaunchConfig {
        grid_dim: (
            check::blocks(rows, by as usize, launch.grid_cap.max(1) as usize),
            1,
            1,
        ),
        block_dim: (bx, by, 1),
        shared_mem_bytes: 0,
    }
}
