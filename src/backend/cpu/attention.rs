//! Scaled dot-product attention kernels, flash-attention style: per (batch, head)
//! and query-row block, scores for one key block at a time with an online softmax
//! (the full Lq×Lk matrix is never stored); the backward recomputes each score
//! block from the saved log-sum-exp. QKᵀ, PV and the backward products are GEMMs.
//!
//! Fully masked query rows (every key masked) give a zero output row, a log-sum-exp
//! of −∞ and zero gradients. PyTorch returns NaN for such rows instead.

use super::gemm::{matmul, MatRef};
use super::vmath;
use crate::tensor::Real;
use rayon::prelude::*;

/// Query rows per block (one score buffer of BLOCK_Q × BLOCK_K per task).
pub const BLOCK_Q: usize = 64;
/// Keys per block: 256 amortises each row's max/exp/rescale pass over more keys than
/// 64 did (about 25% faster at SD's head width 16, 1 thread) while the score block
/// (64 KiB in f32) stays in L2.
pub const BLOCK_K: usize = 256;

/// A strided 4-D operand: element (i0, i1, i2, i3) lives at
/// `data[offset + i0*strides[0] + i1*strides[1] + i2*strides[2] + i3*strides[3]]`.
/// q/k/v are [B, H, L, D]; an additive bias is [B, H, Lq, Lk] (stride 0 broadcasts).
#[derive(Clone, Copy, Debug)]
pub struct Strided4<'a, T> {
    pub data: &'a [T],
    pub offset: usize,
    pub strides: [usize; 4],
}

impl<'a, T> Strided4<'a, T> {
    fn base(&self, b: usize, h: usize) -> usize {
        self.offset + b * self.strides[0] + h * self.strides[1]
    }
    /// Rows from `l0` of head (b, h) as a matrix [L, D].
    fn rows(&self, b: usize, h: usize, l0: usize) -> MatRef<'a, T> {
        MatRef {
            data: self.data,
            offset: self.base(b, h) + l0 * self.strides[2],
            rs: self.strides[2],
            cs: self.strides[3],
        }
    }
    /// The transpose of `rows`: a matrix [D, L].
    fn rows_t(&self, b: usize, h: usize, l0: usize) -> MatRef<'a, T> {
        MatRef {
            data: self.data,
            offset: self.base(b, h) + l0 * self.strides[2],
            rs: self.strides[3],
            cs: self.strides[2],
        }
    }
}

/// Problem sizes: q [B,H,Lq,D], k [B,H,Lk,D], v [B,H,Lk,Dv].
#[derive(Clone, Copy, Debug)]
pub struct AttnDims {
    pub batch: usize,
    pub heads: usize,
    pub lq: usize,
    pub lk: usize,
    pub d: usize,
    pub dv: usize,
}

/// The masks applied to the scaled scores; any combination.
#[derive(Clone, Copy, Debug)]
pub struct Masks<'a, T> {
    /// Query i sees key j only when j <= i (top-left aligned, as PyTorch's `is_causal`).
    pub causal: bool,
    /// [B, Lk]: false hides the key from every query of that batch row.
    pub key_keep: Option<&'a [bool]>,
    /// Added to the scaled scores (−∞ entries mask).
    pub bias: Option<Strided4<'a, T>>,
}

/// Which gradients the backward computes.
#[derive(Clone, Copy, Debug)]
pub struct AttnNeeds {
    pub q: bool,
    pub k: bool,
    pub v: bool,
    pub bias: bool,
}

/// Backward results; `dbias` is the full [B, H, Lq, Lk] score gradient (the op
/// reduces it to the bias's broadcast shape).
pub struct AttnGrads<T> {
    pub dq: Option<Vec<T>>,
    pub dk: Option<Vec<T>>,
    pub dv: Option<Vec<T>>,
    pub dbias: Option<Vec<T>>,
}

struct Block {
    b: usize,
    h: usize,
    i0: usize,
    bq: usize,
    j0: usize,
    bk: usize,
}

impl Block {
    /// Every key of the block lies after every query of the block.
    fn causally_hidden(&self) -> bool {
        self.j0 >= self.i0 + self.bq
    }
}

/// s[r*bk + c] = scale·q_{i0+r}·k_{j0+c} + bias, or −∞ where masked.
fn score_block<T: Real>(
    q: &Strided4<T>,
    k: &Strided4<T>,
    masks: &Masks<T>,
    dims: &AttnDims,
    blk: &Block,
    scale: T,
    s: &mut [T],
) {
    let Block {
        b,
        h,
        i0,
        bq,
        j0,
        bk,
    } = *blk;
    matmul(
        bq,
        bk,
        dims.d,
        q.rows(b, h, i0),
        k.rows_t(b, h, j0),
        s,
        bk,
        false,
        false,
    );
    let keep = masks
        .key_keep
        .map(|m| &m[b * dims.lk + j0..b * dims.lk + j0 + bk]);
    // Causal masking touches only blocks that straddle the diagonal.
    let causal = masks.causal && j0 + bk > i0 + 1;
    for (r, row) in s[..bq * bk].chunks_mut(bk).enumerate() {
        let i = i0 + r;
        match masks.bias {
            Some(t) => {
                let (at, cs) = (t.base(b, h) + i * t.strides[2], t.strides[3]);
                for (c, v) in row.iter_mut().enumerate() {
                    *v = *v * scale + t.data[at + (j0 + c) * cs];
                }
            }
            None => row.iter_mut().for_each(|v| *v *= scale),
        }
        if let Some(kp) = keep {
            for (v, _) in row.iter_mut().zip(kp).filter(|(_, &k)| !k) {
                *v = T::neg_infinity();
            }
        }
        // Keys j > i are hidden: columns from i + 1 − j0 on.
        if causal && i + 1 < j0 + bk {
            row[(i + 1).saturating_sub(j0)..].fill(T::neg_infinity());
        }
    }
}

/// Forward: (out [B,H,Lq,Dv], lse [B,H,Lq]) where lse is each row's log-sum-exp of
/// the masked scores (−∞ for fully masked rows). Parallel over (batch·head, query block).
pub fn attention_forward<T: Real>(
    q: Strided4<T>,
    k: Strided4<T>,
    v: Strided4<T>,
    dims: AttnDims,
    masks: &Masks<T>,
    scale: f64,
) -> (Vec<T>, Vec<T>) {
    let AttnDims {
        heads, lq, lk, dv, ..
    } = dims;
    let bh_count = dims.batch * heads;
    let mut out = vec![T::zero(); bh_count * lq * dv];
    let mut lse = vec![T::neg_infinity(); bh_count * lq];
    if out.is_empty() {
        return (out, lse);
    }
    let scale = T::from_f64(scale);
    let mut tasks = Vec::with_capacity(bh_count * lq.div_ceil(BLOCK_Q));
    for (bh, (oh, lh)) in out.chunks_mut(lq * dv).zip(lse.chunks_mut(lq)).enumerate() {
        for (qb, (oc, lc)) in oh
            .chunks_mut(BLOCK_Q * dv)
            .zip(lh.chunks_mut(BLOCK_Q))
            .enumerate()
        {
            tasks.push((bh, qb * BLOCK_Q, oc, lc));
        }
    }
    tasks.into_par_iter().for_each(|(bh, i0, o, lse_rows)| {
        let (b, h, bq) = (bh / heads, bh % heads, lse_rows.len());
        let mut s = vec![T::zero(); bq * BLOCK_K];
        let mut m = vec![T::neg_infinity(); bq];
        let mut l = vec![T::zero(); bq];
        for j0 in (0..lk).step_by(BLOCK_K) {
            let blk = Block {
                b,
                h,
                i0,
                bq,
                j0,
                bk: BLOCK_K.min(lk - j0),
            };
            if masks.causal && blk.causally_hidden() {
                break;
            }
            let bk = blk.bk;
            score_block(&q, &k, masks, &dims, &blk, scale, &mut s);
            for (r, row) in s[..bq * bk].chunks_mut(bk).enumerate() {
                let m_new = vmath::max_of(row, m[r]);
                if m_new == T::neg_infinity() {
                    // Everything so far is masked: nothing to add (o and l stay 0).
                    row.fill(T::zero());
                    continue;
                }
                let alpha = (m[r] - m_new).exp();
                let sum = vmath::exp_sub_sum(row, m_new);
                l[r] = l[r] * alpha + sum;
                if alpha != T::one() {
                    o[r * dv..(r + 1) * dv].iter_mut().for_each(|x| *x *= alpha);
                }
                m[r] = m_new;
            }
            let p = MatRef {
                data: &s[..],
                offset: 0,
                rs: bk,
                cs: 1,
            };
            matmul(bq, dv, bk, p, v.rows(b, h, j0), o, dv, true, false);
        }
        for r in 0..bq {
            if l[r] > T::zero() {
                let inv = l[r].recip();
                o[r * dv..(r + 1) * dv].iter_mut().for_each(|x| *x *= inv);
                lse_rows[r] = m[r] + l[r].ln();
            } else {
                o[r * dv..(r + 1) * dv].fill(T::zero());
                lse_rows[r] = T::neg_infinity();
            }
        }
    });
    (out, lse)
}

/// Split an optional per-(batch·head) buffer into per-head chunks.
fn per_head<T>(buf: &mut Option<Vec<T>>, chunk: usize, count: usize) -> Vec<Option<&mut [T]>> {
    match buf {
        Some(v) if chunk > 0 => v.chunks_mut(chunk).map(Some).collect(),
        _ => (0..count).map(|_| None).collect(),
    }
}

/// Backward from the saved output and log-sum-exp (flash-attention backward):
/// per key block and query block, P = exp(S − lse), dV += Pᵀ dO,
/// dS = P ∘ (dO Vᵀ − rowsum(dO ∘ O)), dQ += scale·dS K, dK += scale·dSᵀ Q.
/// Parallel over batch·head; only the requested gradients are computed.
#[allow(clippy::too_many_arguments)]
pub fn attention_backward<T: Real>(
    q: Strided4<T>,
    k: Strided4<T>,
    v: Strided4<T>,
    out: &[T],
    dout: &[T],
    lse: &[T],
    dims: AttnDims,
    masks: &Masks<T>,
    scale: f64,
    needs: AttnNeeds,
) -> AttnGrads<T> {
    let AttnDims {
        heads,
        lq,
        lk,
        d,
        dv,
        ..
    } = dims;
    let n = dims.batch * heads;
    let zeros = |len: usize, need: bool| need.then(|| vec![T::zero(); len]);
    let mut dq = zeros(n * lq * d, needs.q);
    let mut dk = zeros(n * lk * d, needs.k);
    let mut dvv = zeros(n * lk * dv, needs.v);
    let mut dbias = zeros(n * lq * lk, needs.bias);
    let scale_t = T::from_f64(scale);
    let parts: Vec<_> = per_head(&mut dq, lq * d, n)
        .into_iter()
        .zip(per_head(&mut dk, lk * d, n))
        .zip(per_head(&mut dvv, lk * dv, n))
        .zip(per_head(&mut dbias, lq * lk, n))
        .collect();
    parts.into_par_iter().enumerate().for_each(
        |(bh, (((mut dq_h, mut dk_h), mut dv_h), mut db_h))| {
            let (b, h) = (bh / heads, bh % heads);
            let out_h = &out[bh * lq * dv..(bh + 1) * lq * dv];
            let dout_h = &dout[bh * lq * dv..(bh + 1) * lq * dv];
            let lse_h = &lse[bh * lq..(bh + 1) * lq];
            // delta_i = Σ_d dO[i,d]·O[i,d] = Σ_j P[i,j]·dP[i,j]
            let delta: Vec<T> = if dv == 0 {
                vec![T::zero(); lq]
            } else {
                out_h
                    .chunks(dv)
                    .zip(dout_h.chunks(dv))
                    .map(|(o, g)| o.iter().zip(g).map(|(&a, &b)| a * b).sum())
                    .collect()
            };
            let need_ds = dq_h.is_some() || dk_h.is_some() || db_h.is_some();
            let mut p = vec![T::zero(); BLOCK_Q * BLOCK_K];
            let mut ds = vec![T::zero(); if need_ds { BLOCK_Q * BLOCK_K } else { 0 }];
            for j0 in (0..lk).step_by(BLOCK_K) {
                let bk = BLOCK_K.min(lk - j0);
                for i0 in (0..lq).step_by(BLOCK_Q) {
                    let blk = Block {
                        b,
                        h,
                        i0,
                        bq: BLOCK_Q.min(lq - i0),
                        j0,
                        bk,
                    };
                    if masks.causal && blk.causally_hidden() {
                        continue;
                    }
                    let bq = blk.bq;
                    score_block(&q, &k, masks, &dims, &blk, scale_t, &mut p);
                    for (r, row) in p[..bq * bk].chunks_mut(bk).enumerate() {
                        let lse_r = lse_h[i0 + r];
                        if lse_r == T::neg_infinity() {
                            row.fill(T::zero());
                        } else {
                            vmath::exp_sub_sum(row, lse_r);
                        }
                    }
                    let p_t = MatRef {
                        data: &p[..],
                        offset: 0,
                        rs: 1,
                        cs: bk,
                    };
                    let do_i = MatRef {
                        data: dout_h,
                        offset: i0 * dv,
                        rs: dv,
                        cs: 1,
                    };
                    if let Some(dv_h) = dv_h.as_deref_mut() {
                        matmul(bk, dv, bq, p_t, do_i, &mut dv_h[j0 * dv..], dv, true, false);
                    }
                    if !need_ds {
                        continue;
                    }
                    matmul(
                        bq,
                        bk,
                        dv,
                        do_i,
                        v.rows_t(b, h, j0),
                        &mut ds,
                        bk,
                        false,
                        false,
                    );
                    for r in 0..bq {
                        let (pr, dr) = (&p[r * bk..(r + 1) * bk], &mut ds[r * bk..(r + 1) * bk]);
                        for (x, &pv) in dr.iter_mut().zip(pr) {
                            *x = pv * (*x - delta[i0 + r]);
                        }
                        if let Some(db_h) = db_h.as_deref_mut() {
                            db_h[(i0 + r) * lk + j0..][..bk].copy_from_slice(dr);
                        }
                        dr.iter_mut().for_each(|x| *x *= scale_t);
                    }
                    let ds_m = MatRef {
                        data: &ds[..],
                        offset: 0,
                        rs: bk,
                        cs: 1,
                    };
                    if let Some(dq_h) = dq_h.as_deref_mut() {
                        matmul(
                            bq,
                            d,
                            bk,
                            ds_m,
                            k.rows(b, h, j0),
                            &mut dq_h[i0 * d..],
                            d,
                            true,
                            false,
                        );
                    }
                    if let Some(dk_h) = dk_h.as_deref_mut() {
                        let ds_t = MatRef {
                            data: &ds[..],
                            offset: 0,
                            rs: 1,
                            cs: bk,
                        };
                        matmul(
                            bk,
                            d,
                            bq,
                            ds_t,
                            q.rows(b, h, i0),
                            &mut dk_h[j0 * d..],
                            d,
                            true,
                            false,
                        );
                    }
                }
            }
        },
    );
    AttnGrads {
        dq,
        dk,
        dv: dvv,
        dbias,
    }
}
