//! Packing strided f32 operands into the microkernel's panel layouts (zero-padded edges),
//! with AVX 8×8-transpose fast paths for row-major A and column-major (transposed) B.

use super::kernel::{MR, NR};
use super::MatRef;
use std::arch::x86_64::*;

/// Floats `pack_a` may write past the end of its panels (overlapping 8-wide stores).
pub const A_SLACK: usize = 8;

/// Packs rows `i0..i0+rows` × columns `p0..p0+kc` of `a` into MR-row panels:
/// panel `q` holds `out[q*MR*kc + p*MR + r] = a(i0 + q*MR + r, p0 + p)`, with rows past
/// `rows` zero. `out` must hold `rows.div_ceil(MR) * MR * kc + A_SLACK` floats.
///
/// # Safety
/// AVX2 is available and `a(i, p)` is in bounds for every `i < i0 + rows`, `p < p0 + kc`.
pub unsafe fn pack_a(
    a: &MatRef<'_, f32>,
    i0: usize,
    rows: usize,
    p0: usize,
    kc: usize,
    out: &mut [f32],
) {
    let panels = rows.div_ceil(MR);
    assert!(out.len() >= panels * MR * kc + A_SLACK);
    for q in 0..panels {
        let r_valid = MR.min(rows - q * MR);
        let base = a.offset + (i0 + q * MR) * a.rs + p0 * a.cs;
        let start = q * MR * kc;
        if a.cs == 1 && kc >= 8 {
            // SAFETY: AVX2 is available (our contract); rows base + r*rs, r < r_valid, each hold kc
            // in-bounds floats (our contract); `out` has the slack the 8-wide stores
            // need past this panel (asserted above), and panels are packed in order so
            // spill into the next panel is overwritten when that panel is packed.
            unsafe {
                pack_a_rows(
                    a.data.as_ptr().add(base),
                    a.rs,
                    r_valid,
                    kc,
                    out.as_mut_ptr().add(start),
                )
            };
            continue;
        }
        let panel = &mut out[start..start + MR * kc];
        if r_valid == MR && a.rs == 1 {
            // Column-major A: each k step is MR consecutive floats.
            for (p, dst) in panel.chunks_exact_mut(MR).enumerate() {
                let s = base + p * a.cs;
                dst.copy_from_slice(&a.data[s..s + MR]);
            }
            continue;
        }
        for r in 0..MR {
            if r >= r_valid {
                for p in 0..kc {
                    panel[p * MR + r] = 0.0;
                }
                continue;
            }
            let row = base + r * a.rs;
            for p in 0..kc {
                panel[p * MR + r] = a.data[row + p * a.cs];
            }
        }
    }
}

/// Row-major A panel: `rows` ≤ 6 rows at `src + r*rs` (the rest zero), kc ≥ 8 columns,
/// transposed 8 at a time.
///
/// # Safety
/// AVX2 is available; `src + r*rs + p` is readable for r < rows, p < kc; `dst` is
/// writable for `MR*kc + A_SLACK` floats.
#[target_feature(enable = "avx2,fma")]
unsafe fn pack_a_rows(src: *const f32, rs: usize, rows: usize, kc: usize, dst: *mut f32) {
    // SAFETY: offsets stay below kc in each row r < rows and below MR*kc + A_SLACK in dst.
    unsafe {
        let z = _mm256_setzero_ps();
        let mut p = 0;
        while p + 8 <= kc {
            let row = |r: usize| {
                if r < rows {
                    _mm256_loadu_ps(src.add(r * rs + p))
                } else {
                    z
                }
            };
            let t = transpose8([row(0), row(1), row(2), row(3), row(4), row(5), z, z]);
            // Each store writes 8 floats; the next one overwrites the 2 spare lanes.
            for (pp, v) in t.iter().enumerate() {
                _mm256_storeu_ps(dst.add((p + pp) * MR), *v);
            }
            p += 8;
        }
        while p < kc {
            for r in 0..MR {
                *dst.add(p * MR + r) = if r < rows { *src.add(r * rs + p) } else { 0.0 };
            }
            p += 1;
        }
    }
}

/// Packs rows `p0..p0+kc` × columns `j0 + q*NR ..` of `b` for the NR-column panels
/// `q in q0..q0 + out.len()/(NR*kc)`: `out[(q-q0)*NR*kc + p*NR + c] = b(p0 + p, j0 + q*NR + c)`,
/// with columns at or past `j0 + cols` zero. `out` must be 32-byte aligned.
///
/// # Safety
/// AVX2 is available and `b(p, j)` is in bounds for every `p < p0 + kc`, `j < j0 + cols`.
pub unsafe fn pack_b(
    b: &MatRef<'_, f32>,
    p0: usize,
    kc: usize,
    j0: usize,
    cols: usize,
    q0: usize,
    out: &mut [f32],
) {
    assert!((out.as_ptr() as usize).is_multiple_of(32));
    let panels = out.len() / (NR * kc);
    let mut first = 0;
    if b.cs == 1 {
        // Row-major B: all full panels at once, walking B's rows in order.
        first = panels.min((cols / NR).saturating_sub(q0));
        let base = b.offset + p0 * b.rs + j0 + q0 * NR;
        // SAFETY: AVX2 is available; rows p < kc hold `first`·16 in-bounds floats from
        // `base` (our contract); `out` holds `panels ≥ first` aligned panels of NR·kc.
        unsafe { pack_b_rows(b.data.as_ptr().add(base), b.rs, kc, first, out.as_mut_ptr()) };
    }
    for (dq, panel) in out.chunks_exact_mut(NR * kc).enumerate().skip(first) {
        let q = q0 + dq;
        let c_valid = NR.min(cols - q * NR);
        let base = b.offset + p0 * b.rs + (j0 + q * NR) * b.cs;
        if c_valid == NR && b.rs == 1 && kc >= 8 {
            // SAFETY: as above, with 16 columns base + c*cs each holding kc floats.
            unsafe { pack_b_cols(b.data.as_ptr().add(base), b.cs, kc, panel.as_mut_ptr()) };
            continue;
        }
        if b.cs == 1 {
            // Row-major B, last partial panel.
            for (p, dst) in panel.chunks_exact_mut(NR).enumerate() {
                let s = base + p * b.rs;
                dst[..c_valid].copy_from_slice(&b.data[s..s + c_valid]);
                dst[c_valid..].fill(0.0);
            }
            continue;
        }
        for c in 0..NR {
            if c >= c_valid {
                for p in 0..kc {
                    panel[p * NR + c] = 0.0;
                }
                continue;
            }
            let col = base + c * b.cs;
            for p in 0..kc {
                panel[p * NR + c] = b.data[col + p * b.rs];
            }
        }
    }
}

/// Row-major B: `panels` full panels from rows `src + p*rs`, 16·panels contiguous floats
/// each. Walks 8 rows at a time across all panels, so B is read in (nearly) sequential
/// order rather than one 64-byte piece per row and panel.
///
/// # Safety
/// AVX2 is available; `src + p*rs + c` is readable for p < kc, c < 16·panels; `dst` is
/// 32-byte aligned and writable for `panels·NR·kc` floats.
#[target_feature(enable = "avx2,fma")]
unsafe fn pack_b_rows(src: *const f32, rs: usize, kc: usize, panels: usize, dst: *mut f32) {
    const ROWS: usize = 8;
    // SAFETY: offsets stay inside the ranges stated above.
    unsafe {
        let mut p0 = 0;
        while p0 < kc {
            let p1 = (p0 + ROWS).min(kc);
            for q in 0..panels {
                let out = dst.add(q * NR * kc);
                for p in p0..p1 {
                    let s = src.add(p * rs + q * NR);
                    _mm256_store_ps(out.add(p * NR), _mm256_loadu_ps(s));
                    _mm256_store_ps(out.add(p * NR + 8), _mm256_loadu_ps(s.add(8)));
                }
            }
            p0 = p1;
        }
    }
}

/// Column-major B panel: 16 columns at `src + c*cs`, each kc ≥ 8 contiguous floats,
/// transposed 8×8 at a time.
///
/// # Safety
/// AVX2 is available; `src + c*cs + p` is readable for c < 16, p < kc; `dst` is
/// 32-byte aligned and writable for `NR*kc` floats.
#[target_feature(enable = "avx2,fma")]
unsafe fn pack_b_cols(src: *const f32, cs: usize, kc: usize, dst: *mut f32) {
    // SAFETY: offsets stay inside the ranges stated above.
    unsafe {
        let mut p = 0;
        while p + 8 <= kc {
            for g in 0..2 {
                let col = |c: usize| _mm256_loadu_ps(src.add((g * 8 + c) * cs + p));
                let t = transpose8([
                    col(0),
                    col(1),
                    col(2),
                    col(3),
                    col(4),
                    col(5),
                    col(6),
                    col(7),
                ]);
                for (pp, v) in t.iter().enumerate() {
                    _mm256_store_ps(dst.add((p + pp) * NR + g * 8), *v);
                }
            }
            p += 8;
        }
        while p < kc {
            for c in 0..NR {
                *dst.add(p * NR + c) = *src.add(c * cs + p);
            }
            p += 1;
        }
    }
}

/// 8×8 transpose: output vector j holds lane j of each input, in input order.
#[target_feature(enable = "avx2,fma")]
#[inline]
fn transpose8(r: [__m256; 8]) -> [__m256; 8] {
    let t0 = _mm256_unpacklo_ps(r[0], r[1]);
    let t1 = _mm256_unpackhi_ps(r[0], r[1]);
    let t2 = _mm256_unpacklo_ps(r[2], r[3]);
    let t3 = _mm256_unpackhi_ps(r[2], r[3]);
    let t4 = _mm256_unpacklo_ps(r[4], r[5]);
    let t5 = _mm256_unpackhi_ps(r[4], r[5]);
    let t6 = _mm256_unpacklo_ps(r[6], r[7]);
    let t7 = _mm256_unpackhi_ps(r[6], r[7]);
    let s0 = _mm256_shuffle_ps::<0x44>(t0, t2);
    let s1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
    let s2 = _mm256_shuffle_ps::<0x44>(t1, t3);
    let s3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
    let s4 = _mm256_shuffle_ps::<0x44>(t4, t6);
    let s5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
    let s6 = _mm256_shuffle_ps::<0x44>(t5, t7);
    let s7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
    [
        _mm256_permute2f128_ps::<0x20>(s0, s4),
        _mm256_permute2f128_ps::<0x20>(s1, s5),
        _mm256_permute2f128_ps::<0x20>(s2, s6),
        _mm256_permute2f128_ps::<0x20>(s3, s7),
        _mm256_permute2f128_ps::<0x31>(s0, s4),
        _mm256_permute2f128_ps::<0x31>(s1, s5),
        _mm256_permute2f128_ps::<0x31>(s2, s6),
        _mm256_permute2f128_ps::<0x31>(s3, s7),
    ]
}
