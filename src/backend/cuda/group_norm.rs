//! Launches of kernels/group_norm.cu: GroupNorm (optionally fused with SiLU) over
//! [batch, channels, spatial] with saved mean/rstd, and its backward
//! (CPU twin: backend::cpu::norm group_norm / group_norm_backward).

use super::check;
use crate::cuda::gpu::{address, suffix, Ptr};
use crate::cuda::Gpu;
use crate::error::Result;
use crate::tensor::DType;
use cudarc::driver::{LaunchConfig, PushKernelArg};

const OP: &str = "group_norm";

/// Launch-shape overrides; the default is the contract's choice for the problem.
#[derive(Clone, Copy, Debug, Default)]
pub struct GroupNormLaunch {
    /// Slices per (batch, group) unit (grid.y of stats / apply / backward dx, 1..=65535).
    /// None: about 4 blocks per SM, slices of at least 8192 elements.
    pub splits: Option<u32>,
    /// Most blocks in grid.x of every grid but the channel one (units / rows are
    /// block-strided past it). None: the contract's caps.
    pub grid_cap: Option<u32>,
    /// 1-D block of group_norm_stats (multiple of 32, <= 1024). None: 512 for units of at
    /// least 16384 elements, else 256.
    pub block_stats: Option<u32>,
    /// 1-D block of group_norm_apply and group_norm_backward_dx (multiple of 32, <= 512).
    /// None: 256.
    pub block_apply: Option<u32>,
}

/// The problem's shape and the checked launch shape.
struct Plan {
    batch: i64,
    channels: i64,
    spatial: i64,
    groups: i64,
    units: usize,
    splits: u32,
    cap: Option<u32>,
    block_stats: u32,
    block_apply: u32,
}

impl Plan {
    #[allow(clippy::too_many_arguments)]
    fn new(
        g: &Gpu,
        op: &str,
        batch: usize,
        channels: usize,
        spatial: usize,
        groups: usize,
        launch: GroupNormLaunch,
    ) -> Result<Plan> {
        if groups == 0 || !channels.is_multiple_of(groups) {
            crate::bail!("{op}: channels = {channels} is not a multiple of groups = {groups}");
        }
        if spatial == 0 && batch * channels > 0 {
            crate::bail!("{op}: spatial must be > 0");
        }
        check::int(op, "spatial", spatial)?;
        check::int(op, "channels / groups", channels / groups)?;
        let units = batch * groups;
        let unit = channels / groups * spatial;
        let splits = match launch.splits {
            Some(s) if !(1..=65535).contains(&s) => {
                crate::bail!("{op}: splits = {s} outside 1..=65535")
            }
            Some(s) => s,
            None if units == 0 => 1,
            None => (4 * g.sm_count()?)
                .div_ceil(units)
                .clamp(1, unit.div_ceil(8192).clamp(1, 65535)) as u32,
        };
        let block_stats = launch
            .block_stats
            .unwrap_or(if unit >= 16384 { 512 } else { 256 });
        let block_apply = launch.block_apply.unwrap_or(256);
        for (what, b, max) in [
            ("block_stats", block_stats, 1024),
            ("block_apply", block_apply, 512),
        ] {
            if b == 0 || b % 32 != 0 || b > max {
                crate::bail!("{op}: {what} = {b} must be a multiple of 32 in 32..={max}");
            }
        }
        Ok(Plan {
            batch: batch as i64,
            channels: channels as i64,
            spatial: spatial as i64,
            groups: groups as i64,
            units,
            splits,
            cap: launch.grid_cap,
            block_stats,
            block_apply,
        })
    }

    /// (units, splits) with a 1-D block.
    fn unit_grid(&self, block: u32) -> LaunchConfig {
        let cap = self.cap.unwrap_or(i32::MAX as u32).max(1) as usize;
        LaunchConfig {
            grid_dim: (check::blocks(self.units, 1, cap), self.splits, 1),
            block_dim: (block, 1, 1),
            shared_mem_bytes: 0,
        }
    }
}

/// y = GroupNorm(x) (then SiLU when `silu`) over x [batch, channels, spatial] with `groups`
/// groups (biased variance, rstd = 1/sqrt(var + eps)); weight, bias [channels] may be null (1
/// and 0); mean, rstd are f32 [batch·groups] (u = b·groups + g) and may be null (inference).
/// x, y, weight, bias of one floating dtype. The slice moments go through an f32 scratch of
/// 2·batch·groups·splits floats taken from `g.allocator()`.
#[allow(clippy::too_many_arguments)]
pub fn group_norm(
    g: &Gpu,
    x: Ptr,
    weight: Ptr,
    bias: Ptr,
    y: Ptr,
    mean: Ptr,
    rstd: Ptr,
    (batch, channels, spatial, groups): (usize, usize, usize, usize),
    eps: f64,
    silu: bool,
    launch: GroupNormLaunch,
) -> Result<()> {
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
        check::need_opt(OP, what, p, batch * groups)?;
        check::dtype(OP, what, p, DType::F32)?;
    }
    let plan = Plan::new(g, OP, batch, channels, spatial, groups, launch)?;
    if plan.units == 0 {
        return Ok(());
    }
    let s = suffix(t)?;
    let (bb, cc, ss, gg) = (plan.batch, plan.channels, plan.spatial, plan.groups);
    let scratch = g
        .allocator()
        .alloc(2 * plan.units * plan.splits as usize * 4)?;
    let partial = address(scratch.slice(), g.stream());
    let f = g.function("group_norm", &format!("group_norm_stats_{s}"))?;
    let mut b = g.stream().launch_builder(&f);
    b.arg(&bb)
        .arg(&cc)
        .arg(&ss)
        .arg(&gg)
        .arg(&x.addr)
        .arg(&partial);
    // SAFETY: argument types and order follow the kernel's signature; sizes checked above,
    // partial holds 2·units·splits floats.
    check::launched(
        unsafe { b.launch(plan.unit_grid(plan.block_stats)) },
        "group_norm_stats",
    )?;
    let silu = silu as i32;
    let f = g.function("group_norm", &format!("group_norm_apply_{s}"))?;
    let mut b = g.stream().launch_builder(&f);
    b.arg(&bb).arg(&cc).arg(&ss).arg(&gg).arg(&eps).arg(&silu);
    b.arg(&x.addr)
        .arg(&weight.addr)
        .arg(&bias.addr)
        .arg(&partial);
    b.arg(&y.addr).arg(&mean.addr).arg(&rstd.addr);
    // SAFETY: as above; the same grid (the same splits) as the stats kernel.
    check::launched(
        unsafe { b.launch(plan.unit_grid(plan.block_apply)) },
        "group_norm_apply",
    )
}

/// The backward of [`group_norm`] (same shape, eps-free) from x, the incoming gradient dy
/// [batch, channels, spatial], weight/bias [channels] (null = 1 / 0; bias matters only with
/// `silu`) and the forward's f32 mean/rstd [batch·groups]: dx, dweight [channels], dbias
/// [channels], each computed only when non-null. `sums` is the caller's f32 scratch of
/// 2·batch·channels floats (left holding Σ gz·x̂ and Σ gz per (batch, channel) row). One
/// floating dtype for x, dy, weight, bias, dx, dweight, dbias.
#[allow(clippy::too_many_arguments)]
pub fn group_norm_backward(
    g: &Gpu,
    x: Ptr,
    dy: Ptr,
    weight: Ptr,
    bias: Ptr,
    mean: Ptr,
    rstd: Ptr,
    sums: Ptr,
    dx: Ptr,
    dweight: Ptr,
    dbias: Ptr,
    (batch, channels, spatial, groups): (usize, usize, usize, usize),
    silu: bool,
    launch: GroupNormLaunch,
) -> Result<()> {
    const OP: &str = "group_norm_backward";
    let t = x.dtype;
    let len = batch * channels * spatial;
    check::need(OP, "x", x, len)?;
    check::need(OP, "dy", dy, len)?;
    check::dtype(OP, "dy", dy, t)?;
    check::need_opt(OP, "dx", dx, len)?;
    check::dtype(OP, "dx", dx, t)?;
    for (what, p) in [
        ("weight", weight),
        ("bias", bias),
        ("dweight", dweight),
        ("dbias", dbias),
    ] {
        check::need_opt(OP, what, p, channels)?;
        check::dtype(OP, what, p, t)?;
    }
    for (what, p) in [("mean", mean), ("rstd", rstd)] {
        check::need(OP, what, p, batch * groups)?;
        check::dtype(OP, what, p, DType::F32)?;
    }
    check::need(OP, "sums", sums, 2 * batch * channels)?;
    check::dtype(OP, "sums", sums, DType::F32)?;
    let plan = Plan::new(g, OP, batch, channels, spatial, groups, launch)?;
    let params = !(dweight.is_null() && dbias.is_null());
    if channels == 0 || (dx.is_null() && !params) {
        return Ok(());
    }
    let s = suffix(t)?;
    let (bb, cc, ss, gg) = (plan.batch, plan.channels, plan.spatial, plan.groups);
    let silu = silu as i32;
    if batch > 0 {
        let rows = batch * channels;
        let (bx, by) = if spatial <= 1024 { (32, 8) } else { (256, 1) };
        let cap = plan.cap.unwrap_or(65535 * 16).max(1) as usize;
        let cfg = LaunchConfig {
            grid_dim: (check::blocks(rows, by as usize, cap), 1, 1),
            block_dim: (bx, by, 1),
            shared_mem_bytes: 0,
        };
        let f = g.function("group_norm", &format!("group_norm_backward_sums_{s}"))?;
        let mut b = g.stream().launch_builder(&f);
        b.arg(&bb).arg(&cc).arg(&ss).arg(&gg).arg(&silu);
        b.arg(&x.addr)
            .arg(&dy.addr)
            .arg(&weight.addr)
            .arg(&bias.addr);
        b.arg(&mean.addr).arg(&rstd.addr).arg(&sums.addr);
        // SAFETY: argument types and order follow the kernel's signature; sizes checked above.
        check::launched(unsafe { b.launch(cfg) }, "group_norm_backward_sums")?;
        if !dx.is_null() {
            let f = g.function("group_norm", &format!("group_norm_backward_dx_{s}"))?;
            let mut b = g.stream().launch_builder(&f);
            b.arg(&bb).arg(&cc).arg(&ss).arg(&gg).arg(&silu);
            b.arg(&x.addr)
                .arg(&dy.addr)
                .arg(&weight.addr)
                .arg(&bias.addr);
            b.arg(&mean.addr)
                .arg(&rstd.addr)
                .arg(&sums.addr)
                .arg(&dx.addr);
            // SAFETY: as above.
            check::launched(
                unsafe { b.launch(plan.unit_grid(plan.block_apply)) },
                "group_norm_backward_dx",
            )?;
        }
    }
    if !params {
        return Ok(());
    }
    // batch == 0: the sums are empty and dweight / dbias come out 0.
    let f = g.function("group_norm", &format!("group_norm_backward_params_{s}"))?;
    let mut b = g.stream().launch_builder(&f);
    b.arg(&bb).arg(&cc).arg(&sums.addr);
    b.arg(&dweight.addr).arg(&dbias.addr);
    let cfg = LaunchConfig {
        grid_dim: (check::blocks(channels, 256, 65535 * 16), 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    };
    // SAFETY: as above.
    check::launched(unsafe { b.launch(cfg) }, "group_norm_backward_params")
}
