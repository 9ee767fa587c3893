//! Launches of kernels/attention.cu: fused flash attention forward (o, lse) and backward (pre,
//! main and dq passes) on strided [B, H, L, D] views (CPU twin: backend::cpu::attention).

use super::check;
use crate::cuda::gpu::{suffix, Ptr};
use crate::cuda::Gpu;
use crate::error::{Error, Result};
use crate::tensor::DType;
use cudarc::driver::{LaunchConfig, PushKernelArg};

const OP: &str = "attention";
/// Head widths the kernels are instantiated for.
pub const HEAD_WIDTHS: [usize; 5] = [40, 64, 80, 128, 160];
/// Query rows per forward block (64·MT, MT = 2 for every width).
const FWD_ROWS: usize = 128;
/// Keys per backward block.
const BWD_KEYS: usize = 64;

/// A strided [B, H, L, D] operand: element (b, h, l, d) at `ptr[b*s[0] + h*s[1] + l*s[2] +
/// d*s[3]]` (element strides, so permuted views such as [B, L, H, D] storage need no copy).
#[derive(Clone, Copy, Debug)]
pub struct View {
    pub ptr: Ptr,
    pub strides: [usize; 4],
}

impl View {
    /// A contiguous [B, H, L, D] buffer.
    pub fn contiguous(ptr: Ptr, heads: usize, len: usize, d: usize) -> View {
        View {
            ptr,
            strides: [heads * len * d, len * d, d, 1],
        }
    }

    /// Elements the view spans for sizes `dims` (0 when any size is 0).
    fn span(&self, dims: [usize; 4]) -> usize {
        if dims.contains(&0) {
            return 0;
        }
        1 + dims
            .iter()
            .zip(&self.strides)
            .map(|(&n, &s)| (n - 1) * s)
            .sum::<usize>()
    }

    fn check(&self, what: &str, dims: [usize; 4], dtype: DType) -> Result<[i64; 4]> {
        check::need(OP, what, self.ptr, self.span(dims))?;
        check::dtype(OP, what, self.ptr, dtype)?;
        let mut out = [0i64; 4];
        for (o, &s) in out.iter_mut().zip(&self.strides) {
            *o = i64::try_from(s)
                .map_err(|_| Error::msg(format!("{OP}: {what} stride {s} exceeds i64")))?;
        }
        Ok(out)
    }
}

/// The optional key-padding keep mask: u8 (`DType::U8`) [B, Lk] with batch stride
/// `batch_stride`; a nonzero byte at (b, j) keeps key j for every query of batch b.
#[derive(Clone, Copy, Debug)]
pub struct KeyKeep {
    pub ptr: Ptr,
    pub batch_stride: usize,
}

/// Sizes shared by q, k, v (D = Dv), the softmax scale (> 0) and the causal flag.
#[derive(Clone, Copy, Debug)]
pub struct AttnShape {
    pub batch: usize,
    pub heads: usize,
    pub lq: usize,
    pub lk: usize,
    pub d: usize,
    pub scale: f32,
    pub causal: bool,
}

impl AttnShape {
    fn q_dims(&self) -> [usize; 4] {
        [self.batch, self.heads, self.lq, self.d]
    }

    fn k_dims(&self) -> [usize; 4] {
        [self.batch, self.heads, self.lk, self.d]
    }
}

/// Dynamic shared bytes of flash_attn_fwd_d{d} (the launch contract's table).
pub fn forward_smem(d: usize, dtype: DType) -> Result<usize> {
    let half = dtype != DType::F32;
    Ok(match (d, half) {
        (40, true) => 29184,
        (64, true) => 37376,
        (80, true) => 45568,
        (128, true) => 52480,
        (160, true) => 64768,
        (40, false) => 88576,
        (64, false) => 104960,
        (80, false) => 121344,
        (128, false) => 120064,
        (160, false) => 144640,
        _ => return Err(width_error(d)),
    })
}

/// Dynamic shared bytes of flash_attn_bwd_d{d} (the launch contract's table).
pub fn backward_smem(d: usize, dtype: DType) -> Result<usize> {
    let half = dtype != DType::F32;
    Ok(match (d, half) {
        (40, true) => 53248,
        (64, true) => 65536,
        (80, true) => 77824,
        (128, true) => 75264,
        (160, true) => 67840,
        (40, false) => 98304,
        (64, false) => 122880,
        (80, false) => 147456,
        (128, false) => 144896,
        (160, false) => 131328,
        _ => return Err(width_error(d)),
    })
}

fn width_error(d: usize) -> Error {
    Error::msg(format!(
        "{OP}: no kernel for head width {d} (supported: {HEAD_WIDTHS:?}); use the CPU path"
    ))
}

/// Checks shared by both directions: dtype, head width, grid limits, scale and the mask.
/// Returns the dtype suffix and the mask's (address, batch stride).
fn check_common(
    s: &AttnShape,
    dtype: DType,
    keep: Option<KeyKeep>,
) -> Result<(&'static str, u64, i64)> {
    let sfx = suffix(dtype)?;
    if !HEAD_WIDTHS.contains(&s.d) {
        return Err(width_error(s.d));
    }
    let bh = s.batch * s.heads;
    if bh > 65535 {
        return Err(Error::msg(format!(
            "{OP}: batch*heads = {bh} exceeds the kernels' grid limit 65535"
        )));
    }
    check::int(OP, "heads", s.heads)?;
    check::int(OP, "batch", s.batch)?;
    check::int(OP, "lq", s.lq)?;
    check::int(OP, "lk", s.lk)?;
    check::int(OP, "batch*heads*lq*d", bh * s.lq * s.d)?;
    if !(s.scale.is_finite() && s.scale > 0.0) {
        return Err(Error::msg(format!(
            "{OP}: scale {} must be finite and > 0 (the kernels take the maximum on unscaled scores)",
            s.scale
        )));
    }
    match keep {
        None => Ok((sfx, 0, 0)),
        Some(m) => {
            let len = if s.batch == 0 || s.lk == 0 {
                0
            } else {
                (s.batch - 1) * m.batch_stride + s.lk
            };
            check::need(OP, "key mask", m.ptr, len)?;
            check::dtype(OP, "key mask", m.ptr, DType::U8)?;
            let sb = i64::try_from(m.batch_stride)
                .map_err(|_| Error::msg(format!("{OP}: key mask stride exceeds i64")))?;
            Ok((sfx, m.ptr.addr, sb))
        }
    }
}

/// Attention forward: o = softmax(scale · q kᵀ, key mask, causal) v and the natural-log
/// row log-sum-exp `lse` (f32 [B, H, Lq] contiguous; -inf and o = 0 for fully masked rows; save
/// it for the backward). q, o: [B, H, Lq, D]; k, v: [B, H, Lk, D], all of one dtype (f32, bf16,
/// f16) with any strides; D in [`HEAD_WIDTHS`]. Lk = 0 gives o = 0, lse = -inf.
#[allow(clippy::too_many_arguments)]
pub fn attention_forward(
    g: &Gpu,
    q: View,
    k: View,
    v: View,
    o: View,
    lse: Ptr,
    keep: Option<KeyKeep>,
    shape: &AttnShape,
) -> Result<()> {
    let s = shape;
    let dt = q.ptr.dtype;
    let (sfx, keep_addr, keep_sb) = check_common(s, dt, keep)?;
    let qs = q.check("q", s.q_dims(), dt)?;
    let ks = k.check("k", s.k_dims(), dt)?;
    let vs = v.check("v", s.k_dims(), dt)?;
    let os = o.check("o", s.q_dims(), dt)?;
    let rows = s.batch * s.heads * s.lq;
    check::need(OP, "lse", lse, rows)?;
    check::dtype(OP, "lse", lse, DType::F32)?;
    if rows == 0 {
        return Ok(());
    }
    let smem = forward_smem(s.d, dt)?;
    let name = format!("flash_attn_fwd_d{}_{sfx}", s.d);
    let f = g.function_with_smem("attention", &name, smem)?;
    let cfg = LaunchConfig {
        grid_dim: (
            s.lq.div_ceil(FWD_ROWS) as u32,
            (s.batch * s.heads) as u32,
            1,
        ),
        block_dim: (128, 1, 1),
        shared_mem_bytes: smem as u32,
    };
    let (h, lq, lk) = (s.heads as i32, s.lq as i32, s.lk as i32);
    let causal = s.causal as i32;
    let mut b = g.stream().launch_builder(&f);
    b.arg(&q.ptr.addr)
        .arg(&k.ptr.addr)
        .arg(&v.ptr.addr)
        .arg(&o.ptr.addr)
        .arg(&lse.addr)
        .arg(&keep_addr)
        .arg(&keep_sb)
        .arg(&h)
        .arg(&lq)
        .arg(&lk)
        .arg(&s.scale)
        .arg(&causal);
    for st in [&qs, &ks, &vs, &os] {
        b.arg(&st[0]).arg(&st[1]).arg(&st[2]).arg(&st[3]);
    }
    // SAFETY: argument types and order follow the kernel's signature; sizes checked above.
    check::launched(unsafe { b.launch(cfg) }, &name)
}

/// The gradients a backward run writes (None skips that gradient and its products): dq
/// [B, H, Lq, D], dk and dv [B, H, Lk, D], of the operands' dtype, any strides.
#[derive(Clone, Copy, Debug, Default)]
pub struct AttnGrads {
    pub dq: Option<View>,
    pub dk: Option<View>,
    pub dv: Option<View>,
}

/// Attention backward from the forward's output `o` and `lse` and the incoming gradient
/// `dout` ([B, H, Lq, D], like o): three launches on the stream (bwd_pre: dsum = rowsum(dout∘o)
/// and the zeroed dq accumulator; bwd_d{D}: dk, dv and the f32 dq accumulation; bwd_dq: dq as
/// T). Same q, k, v, mask and shape as the forward. Scratch (dsum f32 [B·H·Lq] and, when dq is
/// wanted, dq_acc f32 [B·H·Lq·D]) is allocated here from `g.allocator()` and handed back to
/// its cache after the launches are queued (stream order keeps it alive for them). dq is
/// accumulated with f32 atomics, so its last bits can vary between runs; dk, dv are
/// deterministic. With B·H·Lq == 0 nothing is launched (dk, dv, if any, are left to the caller
/// to zero); with Lk == 0 dq is written as 0.
#[allow(clippy::too_many_arguments)]
pub fn attention_backward(
    g: &Gpu,
    q: View,
    k: View,
    v: View,
    o: View,
    dout: View,
    lse: Ptr,
    keep: Option<KeyKeep>,
    grads: AttnGrads,
    shape: &AttnShape,
) -> Result<()> {
    let s = shape;
    let dt = q.ptr.dtype;
    let (sfx, keep_addr, keep_sb) = check_common(s, dt, keep)?;
    let qs = q.check("q", s.q_dims(), dt)?;
    let ks = k.check("k", s.k_dims(), dt)?;
    let vs = v.check("v", s.k_dims(), dt)?;
    let os = o.check("o", s.q_dims(), dt)?;
    let dos = dout.check("dout", s.q_dims(), dt)?;
    let check_grad = |what: &str, gv: Option<View>, dims| -> Result<(u64, [i64; 4])> {
        match gv {
            None => Ok((0, [0; 4])),
            Some(x) => Ok((x.ptr.addr, x.check(what, dims, dt)?)),
        }
    };
    let (dq_addr, dqs) = check_grad("dq", grads.dq, s.q_dims())?;
    let (dk_addr, dks) = check_grad("dk", grads.dk, s.k_dims())?;
    let (dv_addr, dvs) = check_grad("dv", grads.dv, s.k_dims())?;
    let bh = s.batch * s.heads;
    let rows = bh * s.lq;
    check::need(OP, "lse", lse, rows)?;
    check::dtype(OP, "lse", lse, DType::F32)?;
    if rows == 0 {
        return Ok(());
    }
    let want_dq = grads.dq.is_some();
    let want_main = s.lk > 0 && (want_dq || grads.dk.is_some() || grads.dv.is_some());
    if !want_dq && !want_main {
        return Ok(());
    }

    // Scratch from the caching allocator (see the doc comment).
    let dsum_blk = g.allocator().alloc(4 * rows)?;
    let dsum = g.ptr_of(dsum_blk.slice(), DType::F32);
    let acc_blk = if want_dq {
        Some(g.allocator().alloc(4 * rows * s.d)?)
    } else {
        None
    };
    let dq_acc = acc_blk
        .as_ref()
        .map_or(0u64, |b| g.ptr_of(b.slice(), DType::F32).addr);

    let (b_i, h_i, lq_i, lk_i, d_i) = (
        s.batch as i32,
        s.heads as i32,
        s.lq as i32,
        s.lk as i32,
        s.d as i32,
    );
    let stream = g.stream();

    // 1. dsum = rowsum(dout ∘ o); zero dq_acc.
    let name = format!("flash_attn_bwd_pre_{sfx}");
    let f = g.function("attention", &name)?;
    let mut lb = stream.launch_builder(&f);
    lb.arg(&o.ptr.addr)
        .arg(&dout.ptr.addr)
        .arg(&dsum.addr)
        .arg(&dq_acc)
        .arg(&b_i)
        .arg(&h_i)
        .arg(&lq_i)
        .arg(&d_i);
    for st in [&os, &dos] {
        lb.arg(&st[0]).arg(&st[1]).arg(&st[2]).arg(&st[3]);
    }
    let cfg = LaunchConfig {
        grid_dim: (rows.div_ceil(8) as u32, 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    };
    // SAFETY: argument types and order follow the kernel's signature; sizes checked above.
    check::launched(unsafe { lb.launch(cfg) }, &name)?;

    // 2. dk, dv and the dq accumulation.
    if want_main {
        let smem = backward_smem(s.d, dt)?;
        let name = format!("flash_attn_bwd_d{}_{sfx}", s.d);
        let f = g.function_with_smem("attention", &name, smem)?;
        let cfg = LaunchConfig {
            grid_dim: (s.lk.div_ceil(BWD_KEYS) as u32, bh as u32, 1),
            block_dim: (128, 1, 1),
            shared_mem_bytes: smem as u32,
        };
        let causal = s.causal as i32;
        let mut lb = stream.launch_builder(&f);
        lb.arg(&q.ptr.addr)
            .arg(&k.ptr.addr)
            .arg(&v.ptr.addr)
            .arg(&dout.ptr.addr)
            .arg(&lse.addr)
            .arg(&dsum.addr)
            .arg(&dq_acc)
            .arg(&dk_addr)
            .arg(&dv_addr)
            .arg(&keep_addr)
            .arg(&keep_sb)
            .arg(&h_i)
            .arg(&lq_i)
            .arg(&lk_i)
            .arg(&s.scale)
            .arg(&causal);
        for st in [&qs, &ks, &vs, &dos, &dks, &dvs] {
            lb.arg(&st[0]).arg(&st[1]).arg(&st[2]).arg(&st[3]);
        }
        // SAFETY: as above.
        check::launched(unsafe { lb.launch(cfg) }, &name)?;
    }

    // 3. dq = dq_acc as T.
    if want_dq {
        let name = format!("flash_attn_bwd_dq_{sfx}");
        let f = g.function("attention", &name)?;
        let cfg = LaunchConfig {
            grid_dim: (check::blocks(rows * s.d, 256, 65535), 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut lb = stream.launch_builder(&f);
        lb.arg(&dq_acc)
            .arg(&dq_addr)
            .arg(&b_i)
            .arg(&h_i)
            .arg(&lq_i)
            .arg(&d_i)
            .arg(&dqs[0])
            .arg(&dqs[1])
            .arg(&dqs[2])
            .arg(&dqs[3]);
        // SAFETY: as above.
        check::launched(unsafe { lb.launch(cfg) }, &name)?;
    }
    // The scratch blocks return to the cache here, after the launches that use them are queued.
    drop(acc_blk);
    drop(dsum_blk);
    Ok(())
}
