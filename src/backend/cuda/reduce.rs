//! Launches of kernels/reduce.cu: sum / mean and max / argmax over the middle axis of
//! [outer, n, inner], and the two-stage whole-buffer sum (CPU twin: backend::cpu::reduce via
//! ops::reduce).

use super::check;
use crate::cuda::gpu::{suffix, Ptr};
use crate::cuda::{Block, Gpu};
use crate::error::{Error, Result};
use crate::tensor::DType;
use cudarc::driver::{LaunchConfig, PushKernelArg};

/// Launch shape of [`sum`] and [`max`]; every field None = the default choice.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReduceLaunch {
    /// inner == 1: the block (threads per row BX, rows per block BY): BX a multiple of 32,
    /// BX·BY <= 1024. Default (32, 8) for n <= 1024, (256, 1) up to 32768, else (1024, 1).
    pub rows_block: Option<(u32, u32)>,
    /// inner > 1: BY of the (32, BY) column tile, 1..=32. Default 8.
    pub cols_by: Option<u32>,
    /// Cap on grid.x (rows and tiles are block-strided). Default 65535·16.
    pub max_blocks: Option<u32>,
    /// [`sum`] with inner > 1 only: split n over this many blocks (grid.y, 1..=65535) that
    /// write f32 partial sums, then add them with `sum_cols_finish`. Default: 1 unless the
    /// column tiles are fewer than 64 and n >= 1024 (then enough splits for ~128 blocks).
    pub splits: Option<u32>,
    /// [`sum`] with inner > 1 only: the f32 scratch of the split path (>= splits·outer·inner
    /// floats). Given, the two-kernel path runs even at one split; absent, it is allocated
    /// from `g.allocator()` when splits > 1.
    pub partial: Option<Ptr>,
}

/// Launch shape of [`sum_all`]; every field None = the default choice.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SumAllLaunch {
    /// Threads per block of the partial pass (multiple of 32, <= 1024). Default 256.
    pub block: Option<u32>,
    /// The f32 scratch of P = min(1024, ceil(n / (block·16))) partial sums (>= P floats);
    /// absent, it is allocated from `g.allocator()`.
    pub partial: Option<Ptr>,
}

const GRID_CAP: u32 = 65535 * 16;

/// y[o, i] = Σ_j x[o, j, i] (times 1/n when `mean`: scale (f32)(1/n), as ops::reduce); x
/// contiguous [outer, n, inner], y [outer, inner], one float dtype. inner == 1 reduces rows
/// (`sum_rows`), else columns in place (`sum_cols`, optionally split over n through f32
/// partials and `sum_cols_finish`; see [`ReduceLaunch`]).
#[allow(clippy::too_many_arguments)]
pub fn sum(
    g: &Gpu,
    x: Ptr,
    y: Ptr,
    outer: usize,
    n: usize,
    inner: usize,
    mean: bool,
    launch: ReduceLaunch,
) -> Result<()> {
    const OP: &str = "sum";
    let count = outer * inner;
    float_io(OP, x, y, count * n, count)?;
    let scale = if mean { (1.0 / n as f64) as f32 } else { 1.0 };
    if count == 0 {
        return Ok(());
    }
    let s = suffix(y.dtype)?;
    let (oo, nn, ii) = (outer as i64, n as i64, inner as i64);
    if inner == 1 {
        if launch.splits.is_some() || launch.partial.is_some() {
            return Err(Error::msg(
                "sum: splits / partial apply to inner > 1 only (rows reduce in one pass)",
            ));
        }
        let cfg = rows_config(OP, outer, n, launch)?;
        let kernel = format!("sum_rows_{s}");
        let f = g.function("reduce", &kernel)?;
        let mut b = g.stream().launch_builder(&f);
        b.arg(&oo).arg(&nn).arg(&scale).arg(&x.addr).arg(&y.addr);
        // SAFETY: argument types and order follow the kernel's signature; sizes checked above.
        return check::launched(unsafe { b.launch(cfg) }, &kernel);
    }
    let tiles = outer * inner.div_ceil(32);
    let splits = match launch.splits {
        Some(sp) if (1..=65535).contains(&sp) => sp,
        Some(sp) => {
            return Err(Error::msg(format!(
                "sum: splits = {sp}; the kernel takes 1..=65535"
            )))
        }
        None if tiles < 64 && n >= 1024 => (128usize.div_ceil(tiles)).min(n / 256).max(1) as u32,
        None => 1,
    };
    let mut cfg = cols_config(OP, tiles, launch)?;
    cfg.grid_dim.1 = splits;
    let kernel = format!("sum_cols_{s}");
    let f = g.function("reduce", &kernel)?;
    if splits == 1 && launch.partial.is_none() {
        let null = 0u64;
        let mut b = g.stream().launch_builder(&f);
        b.arg(&oo).arg(&nn).arg(&ii).arg(&scale).arg(&x.addr);
        b.arg(&null).arg(&y.addr);
        // SAFETY: as above (partial null with one split: the kernel writes y).
        return check::launched(unsafe { b.launch(cfg) }, &kernel);
    }
    let parts = splits as usize * count;
    let (partial, _scratch) = scratch(g, OP, launch.partial, parts)?;
    let sp = check::int(OP, "splits", splits as usize)?;
    {
        let mut b = g.stream().launch_builder(&f);
        b.arg(&oo).arg(&nn).arg(&ii).arg(&scale).arg(&x.addr);
        b.arg(&partial.addr).arg(&y.addr);
        // SAFETY: as above; partial holds splits·outer·inner floats.
        check::launched(unsafe { b.launch(cfg) }, &kernel)?;
    }
    let kernel = format!("sum_cols_finish_{s}");
    let f = g.function("reduce", &kernel)?;
    let cc = count as i64;
    let cfg = LaunchConfig {
        grid_dim: (check::blocks(count, 256, GRID_CAP as usize), 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    };
    let mut b = g.stream().launch_builder(&f);
    b.arg(&cc)
        .arg(&sp)
        .arg(&scale)
        .arg(&partial.addr)
        .arg(&y.addr);
    // SAFETY: as above. An allocated scratch is freed after this launch in stream order.
    check::launched(unsafe { b.launch(cfg) }, &kernel)
}

/// y[o, i] = max_j x[o, j, i] and idx[o, i] = its j (the first maximum; a NaN wins, the first
/// NaN), as cpu::reduce::max_rows. x contiguous [outer, n, inner] (n >= 1); y [outer, inner]
/// in x's dtype and idx [outer, inner] I64, either (not both) may be null.
#[allow(clippy::too_many_arguments)]
pub fn max(
    g: &Gpu,
    x: Ptr,
    y: Ptr,
    idx: Ptr,
    outer: usize,
    n: usize,
    inner: usize,
    launch: ReduceLaunch,
) -> Result<()> {
    const OP: &str = "max";
    let count = outer * inner;
    if y.is_null() && idx.is_null() {
        return Err(Error::msg("max: neither y nor idx given"));
    }
    if launch.splits.is_some() || launch.partial.is_some() {
        return Err(Error::msg(
            "max: splits / partial apply to sum only (max reduces in one pass)",
        ));
    }
    check::need(OP, "x", x, count * n)?;
    suffix(x.dtype).map_err(|e| Error::msg(format!("{OP}: x: {e}")))?;
    check::need_opt(OP, "y", y, count)?;
    check::dtype(OP, "y", y, x.dtype)?;
    check::need_opt(OP, "idx", idx, count)?;
    check::dtype(OP, "idx", idx, DType::I64)?;
    if count == 0 {
        return Ok(());
    }
    if n == 0 {
        return Err(Error::msg(format!(
            "max: the reduced axis is empty (n = 0) for {count} outputs"
        )));
    }
    let s = suffix(x.dtype)?;
    let (oo, nn, ii) = (outer as i64, n as i64, inner as i64);
    if inner == 1 {
        let cfg = rows_config(OP, outer, n, launch)?;
        let kernel = format!("max_rows_{s}");
        let f = g.function("reduce", &kernel)?;
        let mut b = g.stream().launch_builder(&f);
        b.arg(&oo).arg(&nn).arg(&x.addr).arg(&y.addr).arg(&idx.addr);
        // SAFETY: argument types and order follow the kernel's signature; sizes checked above.
        return check::launched(unsafe { b.launch(cfg) }, &kernel);
    }
    let cfg = cols_config(OP, outer * inner.div_ceil(32), launch)?;
    let kernel = format!("max_cols_{s}");
    let f = g.function("reduce", &kernel)?;
    let mut b = g.stream().launch_builder(&f);
    b.arg(&oo).arg(&nn).arg(&ii).arg(&x.addr);
    b.arg(&y.addr).arg(&idx.addr);
    // SAFETY: as above.
    check::launched(unsafe { b.launch(cfg) }, &kernel)
}

/// y[0] = Σ x over n contiguous elements (times (f32)(1/n) when `mean`), deterministic for a
/// given block size: `sum_all_partial` into P f32 partials, then `sum_all_finish` (one block of
/// 256). x: n elements, y: 1 element of the same float dtype.
pub fn sum_all(g: &Gpu, x: Ptr, y: Ptr, n: usize, mean: bool, launch: SumAllLaunch) -> Result<()> {
    const OP: &str = "sum_all";
    float_io(OP, x, y, n, 1)?;
    let block = launch.block.unwrap_or(256);
    if !(32..=1024).contains(&block) || !block.is_multiple_of(32) {
        return Err(Error::msg(format!(
            "sum_all: block = {block}; the kernel needs a multiple of 32 up to 1024"
        )));
    }
    let parts = n.div_ceil(block as usize * 16).clamp(1, 1024);
    let scale = if mean { (1.0 / n as f64) as f32 } else { 1.0 };
    let (partial, _scratch) = scratch(g, OP, launch.partial, parts)?;
    let s = suffix(y.dtype)?;
    let (nn, pp) = (n as i64, parts as i32);
    let kernel = format!("sum_all_partial_{s}");
    let f = g.function("reduce", &kernel)?;
    {
        let cfg = LaunchConfig {
            grid_dim: (parts as u32, 1, 1),
            block_dim: (block, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut b = g.stream().launch_builder(&f);
        b.arg(&nn).arg(&x.addr).arg(&partial.addr);
        // SAFETY: argument types and order follow the kernel's signature; sizes checked above.
        check::launched(unsafe { b.launch(cfg) }, &kernel)?;
    }
    let kernel = format!("sum_all_finish_{s}");
    let f = g.function("reduce", &kernel)?;
    let cfg = LaunchConfig {
        grid_dim: (1, 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    };
    let mut b = g.stream().launch_builder(&f);
    b.arg(&pp).arg(&scale).arg(&partial.addr).arg(&y.addr);
    // SAFETY: as above. An allocated scratch is freed after this launch in stream order.
    check::launched(unsafe { b.launch(cfg) }, &kernel)
}

/// x (`x_len` elements) and y (`y_len`) of one float dtype.
fn float_io(op: &str, x: Ptr, y: Ptr, x_len: usize, y_len: usize) -> Result<()> {
    suffix(y.dtype).map_err(|e| Error::msg(format!("{op}: y: {e}")))?;
    check::need(op, "x", x, x_len)?;
    check::dtype(op, "x", x, y.dtype)?;
    check::need(op, "y", y, y_len)
}

/// The caller's f32 scratch (checked to hold `floats`), or one from the allocator (returned
/// too, to be dropped after the launches that use it).
fn scratch(g: &Gpu, op: &str, given: Option<Ptr>, floats: usize) -> Result<(Ptr, Option<Block>)> {
    if let Some(p) = given {
        check::need(op, "partial", p, floats)?;
        check::dtype(op, "partial", p, DType::F32)?;
        return Ok((p, None));
    }
    let block = g.allocator().alloc(floats * 4)?;
    let p = g.ptr_of(block.slice(), DType::F32);
    Ok((p, Some(block)))
}

/// sum_rows / max_rows: block (BX, BY), grid ceil(rows / BY) capped.
fn rows_config(op: &str, rows: usize, n: usize, launch: ReduceLaunch) -> Result<LaunchConfig> {
    let (bx, by) = launch.rows_block.unwrap_or(if n <= 1024 {
        (32, 8)
    } else if n <= 32768 {
        (256, 1)
    } else {
        (1024, 1)
    });
    if bx == 0 || !bx.is_multiple_of(32) || by == 0 || bx as u64 * by as u64 > 1024 {
        return Err(Error::msg(format!(
            "{op}: block ({bx}, {by}) is not ({{multiple of 32}}, BY) with BX·BY <= 1024"
        )));
    }
    Ok(LaunchConfig {
        grid_dim: (check::blocks(rows, by as usize, cap(launch)), 1, 1),
        block_dim: (bx, by, 1),
        shared_mem_bytes: 0,
    })
}

/// sum_cols / max_cols: block (32, BY), grid.x = the tiles capped (grid.y set by the caller).
fn cols_config(op: &str, tiles: usize, launch: ReduceLaunch) -> Result<LaunchConfig> {
    let by = launch.cols_by.unwrap_or(8);
    if !(1..=32).contains(&by) {
        return Err(Error::msg(format!(
            "{op}: column tile rows BY = {by}; the kernel takes 1..=32"
        )));
    }
    Ok(LaunchConfig {
        grid_dim: (check::blocks(tiles, 1, cap(launch)), 1, 1),
        block_dim: (32, by, 1),
        shared_mem_bytes: 0,
    })
}

fn cap(launch: ReduceLaunch) -> usize {
    launch.max_blocks.unwrap_or(GRID_CAP).clamp(1, GRID_CAP) as usize
}
