//! Launches of kernels/layer_norm.cu: LayerNorm over rows with saved mean/rstd and its backward
//! (dx, and dweight/dbias as deterministic column sums) (CPU twin: backend::cpu::norm).

use super::check;
use crate::cuda::gpu::{address, suffix, Ptr};
use crate::cuda::Gpu;
use crate::error::Result;
use crate::tensor::DType;
use cudarc::driver::{LaunchConfig, PushKernelArg};

const OP: &str = "layer_norm";

/// Launch-shape overrides; the default is the contract's choice for the problem.
#[derive(Clone, Copy, Debug)]
pub struct LayerNormLaunch {
    /// Forward / dx block (BX, BY): BX a multiple of 32, BX·BY <= 1024. None: (32, 8) for
    /// n <= 1024 (a warp per row), else (256, 1).
    pub block: Option<(u32, u32)>,
    /// Most blocks of the forward / dx grid (rows are block-strided past it).
    pub grid_cap: u32,
    /// Row chunks of the dweight/dbias kernel (grid.y, 1..=65535); 1 writes the results
    /// directly, more go through an f32 partial buffer (from `g.allocator()`) and the finish
    /// kernel. None: about 4 blocks per SM.
    pub chunks: Option<u32>,
}

impl Default for LayerNormLaunch {
    fn default() -> Self {
        LayerNormLaunch {
            block: None,
            grid_cap: 65535 * 16,
            chunks: None,
        }
    }
}

/// y = (x − mean)·rstd·weight + bias over rows of x [rows, n] (biased variance, rstd =
/// 1/sqrt(var + eps)). weight, bias [n] may be null (1 and 0); mean, rstd are f32 [rows] and
/// may be null (inference; the backward needs them). x, y, weight, bias of one floating dtype.
#[allow(clippy::too_many_arguments)]
pub fn layer_norm(
    g: &Gpu,
    x: Ptr,
    weight: Ptr,
    bias: Ptr,
    y: Ptr,
    mean: Ptr,
    rstd: Ptr,
    rows: usize,
    n: usize,
    eps: f32,
    launch: LayerNormLaunch,
) -> Result<()> {
    let t = x.dtype;
    check::need(OP, "x", x, rows * n)?;
    check::need(OP, "y", y, rows * n)?;
    check::dtype(OP, "y", y, t)?;
    for (what, p) in [("weight", weight), ("bias", bias)] {
        check::need_opt(OP, what, p, n)?;
        check::dtype(OP, what, p, t)?;
    }
    for (what, p) in [("mean", mean), ("rstd", rstd)] {
        check::need_opt(OP, what, p, rows)?;
        check::dtype(OP, what, p, DType::F32)?;
    }
    let cfg = row_config(OP, rows, n, launch)?;
    if rows == 0 {
        return Ok(());
    }
    let s = suffix(t)?;
    let f = g.function("layer_norm", &format!("layer_norm_{s}"))?;
    let (r, nn) = (rows as i64, n as i64);
    let mut b = g.stream().launch_builder(&f);
    b.arg(&r).arg(&nn).arg(&eps).arg(&x.addr);
    b.arg(&weight.addr).arg(&bias.addr).arg(&y.addr);
    b.arg(&mean.addr).arg(&rstd.addr);
    // SAFETY: argument types and order follow the kernel's signature; sizes checked above.
    check::launched(unsafe { b.launch(cfg) }, "layer_norm")
}

/// The backward of [`layer_norm`] from x [rows, n], the incoming gradient dy [rows, n], weight
/// [n] (null = 1) and the forward's f32 mean/rstd [rows]: dx [rows, n], dweight [n] = Σ dy·x̂
/// and dbias [n] = Σ dy, each computed only when non-null. With more than one row chunk an f32
/// scratch of 2·chunks·n floats is taken from `g.allocator()`. One floating dtype for x, dy,
/// weight, dx, dweight, dbias.
#[allow(clippy::too_many_arguments)]
pub fn layer_norm_backward(
    g: &Gpu,
    x: Ptr,
    dy: Ptr,
    weight: Ptr,
    mean: Ptr,
    rstd: Ptr,
    dx: Ptr,
    dweight: Ptr,
    dbias: Ptr,
    rows: usize,
    n: usize,
    launch: LayerNormLaunch,
) -> Result<()> {
    const OP: &str = "layer_norm_backward";
    let t = x.dtype;
    check::need(OP, "x", x, rows * n)?;
    check::need(OP, "dy", dy, rows * n)?;
    check::dtype(OP, "dy", dy, t)?;
    check::need_opt(OP, "dx", dx, rows * n)?;
    for (what, p) in [("weight", weight), ("dweight", dweight), ("dbias", dbias)] {
        check::need_opt(OP, what, p, n)?;
        check::dtype(OP, what, p, t)?;
    }
    check::dtype(OP, "dx", dx, t)?;
    for (what, p) in [("mean", mean), ("rstd", rstd)] {
        check::need(OP, what, p, rows)?;
        check::dtype(OP, what, p, DType::F32)?;
    }
    let cfg = row_config(OP, rows, n, launch)?;
    let s = suffix(t)?;
    let (r, nn) = (rows as i64, n as i64);
    if !dx.is_null() && rows * n > 0 {
        let f = g.function("layer_norm", &format!("layer_norm_backward_dx_{s}"))?;
        let mut b = g.stream().launch_builder(&f);
        b.arg(&r)
            .arg(&nn)
            .arg(&x.addr)
            .arg(&dy.addr)
            .arg(&weight.addr);
        b.arg(&mean.addr).arg(&rstd.addr).arg(&dx.addr);
        // SAFETY: as in `layer_norm`.
        check::launched(unsafe { b.launch(cfg) }, "layer_norm_backward_dx")?;
    }
    if (dweight.is_null() && dbias.is_null()) || n == 0 {
        return Ok(());
    }
    let tiles = n.div_ceil(32);
    let chunks = match launch.chunks {
        Some(c) => {
            if !(1..=65535).contains(&c) {
                crate::bail!("{OP}: chunks = {c} outside 1..=65535");
            }
            c as usize
        }
        None => rows
            .div_ceil(64)
            .min((4 * g.sm_count()? / tiles).max(1))
            .clamp(1, 65535),
    };
    let pcfg = LaunchConfig {
        grid_dim: (check::blocks(n, 32, 65535 * 16), chunks as u32, 1),
        block_dim: (32, 8, 1),
        shared_mem_bytes: 0,
    };
    let f = g.function("layer_norm", &format!("layer_norm_backward_params_{s}"))?;
    if chunks == 1 {
        let mut b = g.stream().launch_builder(&f);
        b.arg(&r).arg(&nn).arg(&x.addr).arg(&dy.addr);
        b.arg(&mean.addr).arg(&rstd.addr).arg(&0u64);
        b.arg(&dweight.addr).arg(&dbias.addr);
        // SAFETY: as in `layer_norm`.
        return check::launched(unsafe { b.launch(pcfg) }, "layer_norm_backward_params");
    }
    // Partial column sums per chunk, then the finish kernel; the scratch goes back to the
    // allocator's cache after queuing (stream order keeps it alive for the kernels).
    let scratch = g.allocator().alloc(2 * chunks * n * 4)?;
    let partial = address(scratch.slice(), g.stream());
    let mut b = g.stream().launch_builder(&f);
    b.arg(&r).arg(&nn).arg(&x.addr).arg(&dy.addr);
    b.arg(&mean.addr).arg(&rstd.addr).arg(&partial);
    b.arg(&0u64).arg(&0u64);
    // SAFETY: as in `layer_norm`; partial holds 2·chunks·n floats.
    check::launched(unsafe { b.launch(pcfg) }, "layer_norm_backward_params")?;
    let f = g.function(
        "layer_norm",
        &format!("layer_norm_backward_params_finish_{s}"),
    )?;
    let ch = chunks as i32;
    let mut b = g.stream().launch_builder(&f);
    b.arg(&nn).arg(&ch).arg(&partial);
    b.arg(&dweight.addr).arg(&dbias.addr);
    let fcfg = LaunchConfig {
        grid_dim: (check::blocks(n, 256, 65535 * 16), 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    };
    // SAFETY: as above.
    check::launched(
        unsafe { b.launch(fcfg) },
        "layer_norm_backward_params_finish",
    )
}

/// The forward / dx launch: the given or default block, grid = min(ceil(rows / BY), cap).
fn row_config(op: &str, rows: usize, n: usize, launch: LayerNormLaunch) -> Result<LaunchConfig> {
    let (bx, by) = launch
        .block
        .unwrap_or(if n <= 1024 { (32, 8) } else { (256, 1) });
    if bx == 0 || bx % 32 != 0 || by == 0 || bx * by > 1024 {
        crate::bail!("{op}: block ({bx}, {by}) needs BX a multiple of 32 and BX·BY in 1..=1024");
    }
    Ok(LaunchConfig {
        grid_dim: (
            check::blocks(rows, by as usize, launch.grid_cap.max(1) as usize),
            1,
            1,
        ),
        block_dim: (bx, by, 1),
        shared_mem_bytes: 0,
    })
}
