//! Launches of kernels/batch_norm.cu: BatchNorm statistics (training, with the running-stat
//! update, or eval), the normalisation and the backward over [batch, channels, spatial]
//! (CPU twin: backend::cpu::norm channel_moments / channel_normalize / batch_norm_backward).

use super::check;
use crate::cuda::gpu::{address, suffix, Ptr};
use crate::cuda::Gpu;
use crate::error::Result;
use crate::tensor::DType;
use cudarc::driver::{LaunchConfig, PushKernelArg};

const OP: &str = "batch_norm";

/// Launch-shape overrides; the default is the contract's choice for the problem.
#[derive(Clone, Copy, Debug, Default)]
pub struct BatchNormLaunch {
    /// Slices per channel (grid.y of the stats / backward sums kernels, 1..=65535). None:
    /// about 4 blocks per SM, slices of at least 4096 elements.
    pub splits: Option<u32>,
    /// Most blocks in grid.x of the channel grids and the row grids (apply, backward dx);
    /// channels / rows are block-strided past it. None: the contract's caps.
    pub grid_cap: Option<u32>,
    /// 1-D block of the stats / backward sums kernels (multiple of 32 in 256..=1024). None:
    /// 512 for slices of at least 16384 elements, else 256.
    pub block: Option<u32>,
}

/// [batch, channels, spatial] and the checked launch shape.
struct Plan {
    batch: i64,
    channels: i64,
    spatial: i64,
    rows: usize,
    nch: usize,
    splits: u32,
    cap: Option<u32>,
    block: u32,
}

impl Plan {
    fn new(
        g: &Gpu,
        op: &str,
        (batch, channels, spatial): (usize, usize, usize),
        launch: BatchNormLaunch,
    ) -> Result<Plan> {
        check::int(op, "spatial", spatial)?;
        check::int(op, "batch", batch)?;
        let m = batch * spatial;
        let splits = match launch.splits {
            Some(s) if !(1..=65535).contains(&s) => {
                crate::bail!("{op}: splits = {s} outside 1..=65535")
            }
            Some(s) => s,
            None if channels == 0 => 1,
            None => (4 * g.sm_count()?)
                .div_ceil(channels)
                .clamp(1, m.div_ceil(4096).clamp(1, 65535)) as u32,
        };
        let per = m.div_ceil(splits as usize);
        let block = launch.block.unwrap_or(if per >= 16384 { 512 } else { 256 });
        if !(256..=1024).contains(&block) || !block.is_multiple_of(32) {
            crate::bail!("{op}: block = {block} must be a multiple of 32 in 256..=1024");
        }
        Ok(Plan {
            batch: batch as i64,
            channels: channels as i64,
            spatial: spatial as i64,
            rows: batch * channels,
            nch: channels,
            splits,
            cap: launch.grid_cap,
            block,
        })
    }

    /// (channels, splits) with the stats block.
    fn channel_grid(&self) -> LaunchConfig {
        let cap = self.cap.unwrap_or(i32::MAX as u32).max(1) as usize;
        LaunchConfig {
            grid_dim: (check::blocks(self.nch, 1, cap), self.splits, 1),
            block_dim: (self.block, 1, 1),
            shared_mem_bytes: 0,
        }
    }

    /// Rows b·C + c of `spatial` elements: BX = min(256, roundup32(spatial)), BY = 256 / BX.
    fn row_grid(&self) -> LaunchConfig {
        let bx = ((self.spatial as usize).div_ceil(32) * 32).clamp(32, 256) as u32;
        let by = (256 / bx).max(1);
        let cap = self.cap.unwrap_or(65535 * 16).max(1) as usize;
        LaunchConfig {
            grid_dim: (check::blocks(self.rows, by as usize, cap), 1, 1),
            block_dim: (bx, by, 1),
            shared_mem_bytes: 0,
        }
    }
}

/// One thread per channel (the finish / eval kernels).
fn per_channel(channels: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (check::blocks(channels, 256, 65535 * 16), 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// An f32 scratch of 2·channels·splits floats from the allocator (back to its cache when
/// dropped after queuing; stream order keeps it alive for the kernels).
fn scratch(g: &Gpu, plan: &Plan) -> Result<crate::cuda::allocator::Block> {
    g.allocator().alloc(2 * plan.nch * plan.splits as usize * 4)
}

/// Training statistics of x [batch, channels, spatial] per channel: mean and rstd =
/// 1/sqrt(var + eps) (biased variance; f32 [channels]); when running_mean / running_var
/// ([channels] f32 for every dtype of x, as nn::BatchNorm2d keeps them; both or neither)
/// are given they are updated in place:
/// r = (1 − momentum)·r + momentum·stat with the unbiased variance. Needs batch·spatial > 1.
/// The slice moments go through an f32 scratch of 2·channels·splits floats from
/// `g.allocator()`.
#[allow(clippy::too_many_arguments)]
pub fn batch_norm_stats(
    g: &Gpu,
    x: Ptr,
    mean: Ptr,
    rstd: Ptr,
    running_mean: Ptr,
    running_var: Ptr,
    (batch, channels, spatial): (usize, usize, usize),
    eps: f64,
    momentum: f64,
    launch: BatchNormLaunch,
) -> Result<()> {
    const OP: &str = "batch_norm_stats";
    let t = x.dtype;
    check::need(OP, "x", x, batch * channels * spatial)?;
    for (what, p) in [("mean", mean), ("rstd", rstd)] {
        check::need(OP, what, p, channels)?;
        check::dtype(OP, what, p, DType::F32)?;
    }
    if running_mean.is_null() != running_var.is_null() {
        crate::bail!("{OP}: running_mean and running_var must be given together");
    }
    for (what, p) in [("running_mean", running_mean), ("running_var", running_var)] {
        check::need_opt(OP, what, p, channels)?;
        check::dtype(OP, what, p, DType::F32)?;
    }
    if channels == 0 {
        return Ok(());
    }
    if batch * spatial < 2 {
        crate::bail!(
            "{OP}: training needs more than one value per channel (batch·spatial = {})",
            batch * spatial
        );
    }
    let plan = Plan::new(g, OP, (batch, channels, spatial), launch)?;
    let s = suffix(t)?;
    let (bb, cc, ss, sp) = (plan.batch, plan.channels, plan.spatial, plan.splits as i32);
    let block = scratch(g, &plan)?;
    let partial = address(block.slice(), g.stream());
    let f = g.function("batch_norm", &format!("batch_norm_stats_{s}"))?;
    let mut b = g.stream().launch_builder(&f);
    b.arg(&bb).arg(&cc).arg(&ss).arg(&x.addr).arg(&partial);
    // SAFETY: argument types and order follow the kernel's signature; sizes checked above,
    // partial holds 2·channels·splits floats.
    check::launched(unsafe { b.launch(plan.channel_grid()) }, "batch_norm_stats")?;
    let f = g.function("batch_norm", &format!("batch_norm_stats_finish_{s}"))?;
    let mut b = g.stream().launch_builder(&f);
    b.arg(&bb)
        .arg(&cc)
        .arg(&ss)
        .arg(&sp)
        .arg(&eps)
        .arg(&momentum);
    b.arg(&partial).arg(&mean.addr).arg(&rstd.addr);
    b.arg(&running_mean.addr).arg(&running_var.addr);
    // SAFETY: as above; the same splits as the stats kernel.
    check::launched(
        unsafe { b.launch(per_channel(channels)) },
        "batch_norm_stats_finish",
    )
}

/// Eval statistics: mean = running_mean, rstd = 1/sqrt(running_var + eps) (f32 [channels]
/// each) from running_mean / running_var [channels] (f32 for every layer dtype, as
/// nn::BatchNorm2d keeps them).
pub fn batch_norm_eval_stats(
    g: &Gpu,
    running_mean: Ptr,
    running_var: Ptr,
    mean: Ptr,
    rstd: Ptr,
    channels: usize,
    eps: f64,
) -> Result<()> {
    const OP: &str = "batch_norm_eval_stats";
    for (what, p) in [
        ("running_mean", running_mean),
        ("running_var", running_var),
        ("mean", mean),
        ("rstd", rstd),
    ] {
        check::need(OP, what, p, channels)?;
        check::dtype(OP, what, p, DType::F32)?;
    }
    if channels == 0 {
        return Ok(());
    }
    let cc = channels as i64;
    // Every suffix is the same all-f32 code (the stats are f32 for any layer dtype).
    let f = g.function("batch_norm", "batch_norm_eval_stats_f32")?;
    let mut b = g.stream().launch_builder(&f);
    b.arg(&cc)
        .arg(&eps)
        .arg(&running_mean.addr)
        .arg(&running_var.addr);
    b.arg(&mean.addr).arg(&rstd.addr);
    // SAFETY: argument types and order follow the kernel's signature; sizes checked above.
    check::launched(
        unsafe { b.launch(per_channel(channels)) },
        "batch_norm_eval_stats",
    )
}

/// y = (x − mean[c])·rstd[c]·weight[c] + bias[c] over x [batch, channels, spatial] from f32
/// mean/rstd [channels]; weight, bias [channels] may be null (1 and 0). x, y, weight, bias of
/// one floating dtype.
#[allow(clippy::too_many_arguments)]
pub fn batch_norm_apply(
    g: &Gpu,
    x: Ptr,
    mean: Ptr,
    rstd: Ptr,
    weight: Ptr,
    bias: Ptr,
    y: Ptr,
    shape: (usize, usize, usize),
    launch: BatchNormLaunch,
) -> Result<()> {
    let (batch, channels, spatial) = shape;
    let t = x.dtype;
    let len = batch * channels * spatial;
    check::need(OP, "x", x, len)?;
    check::need(OP, "y", y, len)?;
    check::dtype(OP, "y", y, t)?;
    for (what, p) in [("weight", weight), ("bias", bias)] {
        check::need_opt(OP, what, p, channels)?;
        check::dtype(OP, what, p, t)?;
    }
    for (what, p) in [("mean", mean), ("rstd", rstd)] {
        check::need(OP, what, p, channels)?;
        check::dtype(OP, what, p, DType::F32)?;
    }
    let plan = Plan::new(
        g,
        OP,
        shape,
        BatchNormLaunch {
            splits: Some(1),
            ..launch
        },
    )?;
    if len == 0 {
        return Ok(());
    }
    let s = suffix(t)?;
    let (bb, cc, ss) = (plan.batch, plan.channels, plan.spatial);
    let f = g.function("batch_norm", &format!("batch_norm_apply_{s}"))?;
    let mut b = g.stream().launch_builder(&f);
    b.arg(&bb)
        .arg(&cc)
        .arg(&ss)
        .arg(&x.addr)
        .arg(&mean.addr)
        .arg(&rstd.addr);
    b.arg(&weight.addr).arg(&bias.addr).arg(&y.addr);
    // SAFETY: argument types and order follow the kernel's signature; sizes checked above.
    check::launched(unsafe { b.launch(plan.row_grid()) }, "batch_norm_apply")
}

/// The backward of [`batch_norm_apply`] after [`batch_norm_stats`] (`training`: dx goes
/// through the batch statistics) or [`batch_norm_eval_stats`] (dx = dy·w·rstd): dx [batch,
/// channels, spatial], dweight = Σ dy·x̂ and dbias = Σ dy [channels], each only when
/// non-null, from x, dy, weight [channels] (null = 1) and the f32 mean/rstd [channels].
/// m1, m2 are the caller's f32 scratch of [channels] each (left holding Σ dy / M and
/// Σ dy·x̂ / M), needed when dx is computed in training. The per-slice sums go through an f32
/// scratch of 2·channels·splits floats from `g.allocator()`. Needs batch·spatial > 0.
#[allow(clippy::too_many_arguments)]
pub fn batch_norm_backward(
    g: &Gpu,
    x: Ptr,
    dy: Ptr,
    weight: Ptr,
    mean: Ptr,
    rstd: Ptr,
    m1: Ptr,
    m2: Ptr,
    dx: Ptr,
    dweight: Ptr,
    dbias: Ptr,
    shape: (usize, usize, usize),
    training: bool,
    launch: BatchNormLaunch,
) -> Result<()> {
    const OP: &str = "batch_norm_backward";
    let (batch, channels, spatial) = shape;
    let t = x.dtype;
    let len = batch * channels * spatial;
    check::need(OP, "x", x, len)?;
    check::need(OP, "dy", dy, len)?;
    check::dtype(OP, "dy", dy, t)?;
    check::need_opt(OP, "dx", dx, len)?;
    check::dtype(OP, "dx", dx, t)?;
    for (what, p) in [("weight", weight), ("dweight", dweight), ("dbias", dbias)] {
        check::need_opt(OP, what, p, channels)?;
        check::dtype(OP, what, p, t)?;
    }
    for (what, p) in [("mean", mean), ("rstd", rstd)] {
        check::need(OP, what, p, channels)?;
        check::dtype(OP, what, p, DType::F32)?;
    }
    let batch_dx = training && !dx.is_null();
    for (what, p) in [("m1", m1), ("m2", m2)] {
        if batch_dx {
            check::need(OP, what, p, channels)?;
        }
        check::dtype(OP, what, p, DType::F32)?;
    }
    let need_sums = !dweight.is_null() || !dbias.is_null() || batch_dx;
    if channels == 0 || (!need_sums && dx.is_null()) {
        return Ok(());
    }
    if batch * spatial == 0 {
        crate::bail!("{OP}: batch·spatial must be > 0");
    }
    let plan = Plan::new(g, OP, shape, launch)?;
    let s = suffix(t)?;
    let (bb, cc, ss, sp) = (plan.batch, plan.channels, plan.spatial, plan.splits as i32);
    let (m1a, m2a) = if batch_dx { (m1.addr, m2.addr) } else { (0, 0) };
    if need_sums {
        let block = scratch(g, &plan)?;
        let partial = address(block.slice(), g.stream());
        let f = g.function("batch_norm", &format!("batch_norm_backward_sums_{s}"))?;
        let mut b = g.stream().launch_builder(&f);
        b.arg(&bb).arg(&cc).arg(&ss).arg(&x.addr).arg(&dy.addr);
        b.arg(&mean.addr).arg(&rstd.addr).arg(&partial);
        // SAFETY: argument types and order follow the kernel's signature; sizes checked
        // above, partial holds 2·channels·splits floats.
        check::launched(
            unsafe { b.launch(plan.channel_grid()) },
            "batch_norm_backward_sums",
        )?;
        let f = g.function("batch_norm", &format!("batch_norm_backward_finish_{s}"))?;
        let mut b = g.stream().launch_builder(&f);
        b.arg(&bb).arg(&cc).arg(&ss).arg(&sp).arg(&partial);
        b.arg(&dweight.addr).arg(&dbias.addr).arg(&m1a).arg(&m2a);
        // SAFETY: as above; the same splits as the sums kernel.
        check::launched(
            unsafe { b.launch(per_channel(channels)) },
            "batch_norm_backward_finish",
        )?;
    }
    if dx.is_null() {
        return Ok(());
    }
    let f = g.function("batch_norm", &format!("batch_norm_backward_dx_{s}"))?;
    let mut b = g.stream().launch_builder(&f);
    b.arg(&bb)
        .arg(&cc)
        .arg(&ss)
        .arg(&x.addr)
        .arg(&dy.addr)
        .arg(&weight.addr);
    b.arg(&mean.addr)
        .arg(&rstd.addr)
        .arg(&m1a)
        .arg(&m2a)
        .arg(&dx.addr);
    // SAFETY: as above.
    check::launched(
        unsafe { b.launch(plan.row_grid()) },
        "batch_norm_backward_dx",
    )
}
