//! Launches of kernels/infonce.cu: the fused symmetric InfoNCE loss (forward: stats, finish,
//! reduce; backward: one launch per embedding side plus the logit-scale reduction), O(B·d)
//! memory (CPU twin: ops::loss::info_nce).

use super::check;
use crate::cuda::gpu::{suffix, Ptr};
use crate::cuda::Gpu;
use crate::error::{Error, Result};
use crate::tensor::DType;
use cudarc::driver::sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN as OPTIN;
use cudarc::driver::{LaunchConfig, PushKernelArg};

const OP: &str = "info_nce";
/// Logit tile edge of the forward stats kernel (row / column groups are multiples of it).
pub const GROUP_MULTIPLE: usize = 128;
/// Widest embedding the backward supports.
pub const MAX_BACKWARD_D: usize = 768;

/// B embeddings of width d: row i at `ptr[i * ld ..]`, columns contiguous, `ld >= d`.
#[derive(Clone, Copy, Debug)]
pub struct Rows {
    pub ptr: Ptr,
    pub ld: usize,
}

impl Rows {
    /// A contiguous [B, d] buffer.
    pub fn contiguous(ptr: Ptr, d: usize) -> Rows {
        Rows { ptr, ld: d }
    }

    fn check(&self, what: &str, b: usize, d: usize, dtype: DType) -> Result<i64> {
        if self.ld < d {
            return Err(Error::msg(format!(
                "{OP}: {what} row stride {} is below the width {d}",
                self.ld
            )));
        }
        check::need(OP, what, self.ptr, (b - 1) * self.ld + d)?;
        check::dtype(OP, what, self.ptr, dtype)?;
        i64::try_from(self.ld).map_err(|_| Error::msg(format!("{OP}: {what} stride exceeds i64")))
    }
}

/// Launch-shape choices the tests vary; `Default` is the contract's suggestion.
#[derive(Clone, Copy, Debug, Default)]
pub struct InfoNceLaunch {
    /// Rows per forward group (a multiple of 128); None: [`suggested_group`].
    pub rpg: Option<usize>,
    /// Columns per forward group (a multiple of 128); None: [`suggested_group`].
    pub cpg: Option<usize>,
    /// Backward B-tile buffers (1 or 2); None: 2 when its shared memory fits the device, else 1.
    pub nbuf: Option<usize>,
}

/// The contract's rows / columns per forward group: 128 · ceil(ceil(B/128) / 16), i.e. at
/// most 16 x 16 groups.
pub fn suggested_group(b: usize) -> usize {
    GROUP_MULTIPLE * b.div_ceil(GROUP_MULTIPLE).div_ceil(16)
}

/// Dynamic shared bytes of infonce_fwd_stats (FwdCfg<T>::smem(cpg), every dtype).
pub fn forward_smem(cpg: usize) -> usize {
    80896 + 8 * cpg
}

/// The backward's padded width DP (the smallest of 128, 256, 512, 768 that is >= d; None above
/// 768).
pub fn backward_dp(d: usize) -> Option<usize> {
    [128, 256, 512, 768].into_iter().find(|&dp| dp >= d)
}

/// The backward's (BM rows per block, BN columns per tile) for a dtype and DP (the
/// MEDSYN_NCE_BWD instances).
pub fn backward_tiles(dtype: DType, dp: usize) -> (usize, usize) {
    match (dtype, dp) {
        (DType::F32, _) => (32, 32),
        (_, 768) => (32, 64),
        _ => (64, 64),
    }
}

/// Dynamic shared bytes of infonce_bwd_d{DP} (BwdCfg<T, DP, BM, BN>::smem(nbuf)).
pub fn backward_smem(dtype: DType, dp: usize, nbuf: usize) -> usize {
    let (bm, bn) = backward_tiles(dtype, dp);
    let (p, es) = if dtype == DType::F32 { (4, 4) } else { (8, 2) };
    let (ld, ldg) = (dp + p, bn + p);
    (bm * ld + bm * ldg) * es + (bm + 2 * bn + 8) * 4 + nbuf * bn * ld * es
}

/// The device's opt-in shared memory per block (what the largest launch may use).
pub fn max_smem(g: &Gpu) -> Result<usize> {
    g.context()
        .attribute(OPTIN)
        .map(|v| v as usize)
        .map_err(|e| crate::cuda::modules::driver_error(e, "reading the shared-memory limit"))
}

/// The forward's scratch: row_part f32 [2·ncg·B], col_part f32 [2·nrg·B], partial f32
/// [ceil(B/8)] (all written in full by the forward).
#[derive(Clone, Copy, Debug)]
pub struct ForwardScratch {
    pub row_part: Ptr,
    pub col_part: Ptr,
    pub partial: Ptr,
}

/// Element counts of (row_part, col_part, partial) for batch `b` and the launch choice.
pub fn forward_scratch_len(b: usize, launch: &InfoNceLaunch) -> Result<(usize, usize, usize)> {
    let (rpg, cpg) = groups(b, launch)?;
    Ok((
        2 * b.div_ceil(cpg) * b,
        2 * b.div_ceil(rpg) * b,
        b.div_ceil(8),
    ))
}

fn groups(b: usize, launch: &InfoNceLaunch) -> Result<(usize, usize)> {
    let rpg = launch.rpg.unwrap_or_else(|| suggested_group(b));
    let cpg = launch.cpg.unwrap_or_else(|| suggested_group(b));
    for (what, v) in [("rows per group", rpg), ("columns per group", cpg)] {
        if v == 0 || v % GROUP_MULTIPLE != 0 {
            return Err(Error::msg(format!(
                "{OP}: {what} = {v} must be a positive multiple of {GROUP_MULTIPLE}"
            )));
        }
    }
    let ncg = b.div_ceil(cpg);
    if ncg > 65535 {
        return Err(Error::msg(format!(
            "{OP}: {ncg} column groups exceed the grid limit 65535; use larger groups"
        )));
    }
    Ok((rpg, cpg))
}

fn check_sizes(b: usize, d: usize) -> Result<(i32, i32)> {
    if b == 0 || d == 0 {
        return Err(Error::msg(format!(
            "{OP}: needs a batch and a width of at least 1 (got B = {b}, d = {d})"
        )));
    }
    Ok((check::int(OP, "B", b)?, check::int(OP, "d", d)?))
}

fn scalar(what: &str, p: Ptr) -> Result<()> {
    check::need(OP, what, p, 1)?;
    check::dtype(OP, what, p, DType::F32)
}

fn f32_vec(what: &str, p: Ptr, n: usize) -> Result<()> {
    check::need(OP, what, p, n)?;
    check::dtype(OP, what, p, DType::F32)
}

/// `out[0] = factor · Σ part[..n]` (one block, fixed order).
fn reduce(g: &Gpu, part: Ptr, n: usize, factor: f32, out: Ptr) -> Result<()> {
    let f = g.function("infonce", "infonce_reduce")?;
    let n = check::int(OP, "reduced partials", n)?;
    let cfg = LaunchConfig {
        grid_dim: (1, 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    };
    let mut lb = g.stream().launch_builder(&f);
    lb.arg(&part.addr).arg(&n).arg(&factor).arg(&out.addr);
    // SAFETY: argument types and order follow the kernel's signature; sizes checked by callers.
    check::launched(unsafe { lb.launch(cfg) }, "infonce_reduce")
}

/// Symmetric InfoNCE forward of img, txt ([B, d] each, one dtype: f32, bf16, f16) with the
/// logit scale `scale` (device f32 [1]: 1/temperature or exp(logit_scale)): z = s·img·txtᵀ,
/// loss (f32 [1]) = mean of the image→text and text→image cross-entropies with targets on the
/// diagonal. Writes row_lse and col_lse (f32 [B], natural log): save them for
/// [`info_nce_backward`]. Launches stats, finish and reduce. Scratch: `scratch` when given
/// (sizes from [`forward_scratch_len`]; the tests inspect it), else allocated from
/// `g.allocator()` and returned to its cache after the launches are queued. B, d >= 1.
#[allow(clippy::too_many_arguments)]
pub fn info_nce_forward(
    g: &Gpu,
    img: Rows,
    txt: Rows,
    scale: Ptr,
    b: usize,
    d: usize,
    row_lse: Ptr,
    col_lse: Ptr,
    loss: Ptr,
    launch: &InfoNceLaunch,
    scratch: Option<ForwardScratch>,
) -> Result<()> {
    let (bb, dd) = check_sizes(b, d)?;
    let dt = img.ptr.dtype;
    let sfx = suffix(dt)?;
    let ldi = img.check("img", b, d, dt)?;
    let ldt = txt.check("txt", b, d, dt)?;
    scalar("scale", scale)?;
    f32_vec("row_lse", row_lse, b)?;
    f32_vec("col_lse", col_lse, b)?;
    scalar("loss", loss)?;
    let (rpg, cpg) = groups(b, launch)?;
    let (nrg, ncg) = (b.div_ceil(rpg), b.div_ceil(cpg));
    let (n_row, n_col, nf) = forward_scratch_len(b, launch)?;
    let mut blocks = Vec::new();
    let sc = match scratch {
        Some(s) => {
            f32_vec("row_part scratch", s.row_part, n_row)?;
            f32_vec("col_part scratch", s.col_part, n_col)?;
            f32_vec("partial scratch", s.partial, nf)?;
            s
        }
        None => {
            let mut take = |n: usize| -> Result<Ptr> {
                let blk = g.allocator().alloc(4 * n)?;
                let p = g.ptr_of(blk.slice(), DType::F32);
                blocks.push(blk);
                Ok(p)
            };
            ForwardScratch {
                row_part: take(n_row)?,
                col_part: take(n_col)?,
                partial: take(nf)?,
            }
        }
    };
    let (rr, cc) = (check::int(OP, "rpg", rpg)?, check::int(OP, "cpg", cpg)?);
    let (nr, nc) = (nrg as i32, ncg as i32);

    // 1. Partial row / column log-sum-exps.
    let smem = forward_smem(cpg);
    let name = format!("infonce_fwd_stats_{sfx}");
    let f = g.function_with_smem("infonce", &name, smem)?;
    let cfg = LaunchConfig {
        grid_dim: (nrg as u32, ncg as u32, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: smem as u32,
    };
    let mut lb = g.stream().launch_builder(&f);
    lb.arg(&img.ptr.addr)
        .arg(&ldi)
        .arg(&txt.ptr.addr)
        .arg(&ldt)
        .arg(&scale.addr)
        .arg(&bb)
        .arg(&dd)
        .arg(&rr)
        .arg(&cc)
        .arg(&sc.row_part.addr)
        .arg(&sc.col_part.addr);
    // SAFETY: argument types and order follow the kernel's signature; sizes checked above.
    check::launched(unsafe { lb.launch(cfg) }, &name)?;

    // 2. row_lse, col_lse and the loss partials.
    let name = format!("infonce_fwd_finish_{sfx}");
    let f = g.function("infonce", &name)?;
    let cfg = LaunchConfig {
        grid_dim: (nf as u32, 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    };
    let mut lb = g.stream().launch_builder(&f);
    lb.arg(&sc.row_part.addr)
        .arg(&nc)
        .arg(&sc.col_part.addr)
        .arg(&nr)
        .arg(&img.ptr.addr)
        .arg(&ldi)
        .arg(&txt.ptr.addr)
        .arg(&ldt)
        .arg(&scale.addr)
        .arg(&bb)
        .arg(&dd)
        .arg(&row_lse.addr)
        .arg(&col_lse.addr)
        .arg(&sc.partial.addr);
    // SAFETY: as above.
    check::launched(unsafe { lb.launch(cfg) }, &name)?;

    // 3. loss = Σ partial / 2B.
    reduce(g, sc.partial, nf, 1.0 / (2.0 * b as f32), loss)?;
    drop(blocks);
    Ok(())
}

/// Symmetric InfoNCE backward: from the forward's inputs, its row_lse / col_lse and the
/// upstream gradient `gout` (device f32 [1]), writes d img and d txt ([B, d] of the inputs'
/// dtype, row strides of their own; None skips a side) and d scale (f32 [1]; None when the
/// scale needs no gradient). d <= 768 ([`MAX_BACKWARD_D`]). One launch per side, plus the
/// d-scale reduction; the d-scale partials (f32 [ceil(B/BM)]) and, when only d scale is
/// wanted, a throw-away d img are allocated from `g.allocator()` and returned to its cache
/// after the launches are queued. Deterministic (no atomics); nbuf 1 and 2 give identical bits.
#[allow(clippy::too_many_arguments)]
pub fn info_nce_backward(
    g: &Gpu,
    img: Rows,
    txt: Rows,
    row_lse: Ptr,
    col_lse: Ptr,
    scale: Ptr,
    gout: Ptr,
    b: usize,
    d: usize,
    dimg: Option<Rows>,
    dtxt: Option<Rows>,
    dscale: Option<Ptr>,
    launch: &InfoNceLaunch,
) -> Result<()> {
    let (bb, dd) = check_sizes(b, d)?;
    let dt = img.ptr.dtype;
    let sfx = suffix(dt)?;
    let Some(dp) = backward_dp(d) else {
        return Err(Error::msg(format!(
            "{OP}: the fused backward supports d <= {MAX_BACKWARD_D}, got d = {d}; use the CPU path"
        )));
    };
    let ldi = img.check("img", b, d, dt)?;
    let ldt = txt.check("txt", b, d, dt)?;
    f32_vec("row_lse", row_lse, b)?;
    f32_vec("col_lse", col_lse, b)?;
    scalar("scale", scale)?;
    scalar("gout", gout)?;
    let ldgi = dimg.map(|r| r.check("dimg", b, d, dt)).transpose()?;
    let ldgt = dtxt.map(|r| r.check("dtxt", b, d, dt)).transpose()?;
    if let Some(p) = dscale {
        scalar("dscale", p)?;
    }
    if dimg.is_none() && dtxt.is_none() && dscale.is_none() {
        return Ok(());
    }

    let nbuf = match launch.nbuf {
        Some(n @ (1 | 2)) => n,
        Some(n) => {
            return Err(Error::msg(format!("{OP}: nbuf = {n}, expected 1 or 2")));
        }
        None if backward_smem(dt, dp, 2) <= max_smem(g)? => 2,
        None => 1,
    };
    let (bm, _) = backward_tiles(dt, dp);
    let nb = b.div_ceil(bm);
    let smem = backward_smem(dt, dp, nbuf);
    let name = format!("infonce_bwd_d{dp}_{sfx}");
    let f = g.function_with_smem("infonce", &name, smem)?;
    let cfg = LaunchConfig {
        grid_dim: (nb as u32, 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: smem as u32,
    };
    let nbuf_i = nbuf as i32;

    // Scratch: the d-scale partials and, for d scale alone, a d img nobody reads.
    let part_blk = match dscale {
        Some(_) => Some(g.allocator().alloc(4 * nb)?),
        None => None,
    };
    let part = part_blk
        .as_ref()
        .map_or(0u64, |blk| g.ptr_of(blk.slice(), DType::F32).addr);
    let spare_blk = if dimg.is_none() && dtxt.is_none() {
        Some(g.allocator().alloc(b * d * dt.size_in_bytes())?)
    } else {
        None
    };
    let img_side = match (dimg, ldgi, &spare_blk) {
        (Some(r), Some(ld), _) => Some((r.ptr.addr, ld)),
        (_, _, Some(blk)) => Some((g.ptr_of(blk.slice(), dt).addr, d as i64)),
        _ => None,
    };

    // (a, lda, b, ldb, lse_a, lse_b, da, ldda, dscale_part)
    let mut sides = Vec::new();
    if let Some((addr, ld)) = img_side {
        sides.push((img, ldi, txt, ldt, row_lse, col_lse, addr, ld, part));
    }
    if let (Some(r), Some(ld)) = (dtxt, ldgt) {
        // d scale is symmetric: the text side produces it when the image side does not run.
        let p = if img_side.is_some() { 0 } else { part };
        sides.push((txt, ldt, img, ldi, col_lse, row_lse, r.ptr.addr, ld, p));
    }
    for (a, lda, bmat, ldb, lse_a, lse_b, da, ldda, p) in sides {
        let mut lb = g.stream().launch_builder(&f);
        lb.arg(&a.ptr.addr)
            .arg(&lda)
            .arg(&bmat.ptr.addr)
            .arg(&ldb)
            .arg(&lse_a.addr)
            .arg(&lse_b.addr)
            .arg(&scale.addr)
            .arg(&gout.addr)
            .arg(&bb)
            .arg(&dd)
            .arg(&da)
            .arg(&ldda)
            .arg(&p)
            .arg(&nbuf_i);
        // SAFETY: argument types and order follow the kernel's signature; sizes checked above.
        check::launched(unsafe { lb.launch(cfg) }, &name)?;
    }
    if let (Some(out), Some(blk)) = (dscale, &part_blk) {
        let part = g.ptr_of(blk.slice(), DType::F32);
        reduce(g, part, nb, 1.0, out)?;
    }
    drop(spare_blk);
    drop(part_blk);
    Ok(())
}
