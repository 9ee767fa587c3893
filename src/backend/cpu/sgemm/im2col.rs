//! Packing B panels straight from an image for conv2d's implicit GEMM (im2col on the fly).

use super::kernel::NR;
use super::Im2col;
use std::arch::x86_64::*;

/// Packs `out.len() / (NR·kc)` panels of the im2col matrix of `g` (rows `p0..p0+kc`,
/// columns from `j`, zero at or past `end`); see [`Im2col`] for the layout.
///
/// # Safety
/// AVX2 is available, `g.x` holds `c·h·w` floats, every row p0+p < c·kh·kw, and
/// `out.len()` is a multiple of `NR·kc`.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn pack(g: &Im2col<'_>, p0: usize, kc: usize, j: usize, end: usize, out: &mut [f32]) {
    let (h, w) = (g.h as isize, g.w as isize);
    let (sh, sw) = (g.stride.0 as isize, g.stride.1 as isize);
    let (ph, pw) = (g.padding.0 as isize, g.padding.1 as isize);
    let hw = g.h * g.w;
    // Per packed row: (plane offset, kernel row offset dy, kernel column offset dx).
    let tab: Vec<(isize, isize, isize)> = (p0..p0 + kc)
        .map(|r| {
            let (ci, ki, kj) = (r / (g.kh * g.kw), (r / g.kw) % g.kh, r % g.kw);
            (
                (ci * hw) as isize,
                (ki * g.dilation.0) as isize,
                (kj * g.dilation.1) as isize,
            )
        })
        .collect();
    let x = g.x.as_ptr();
    // SAFETY: every load below reads x[plane + iy·w + ix] with 0 ≤ iy < h, 0 ≤ ix < w
    // (masked lanes are not read), inside the image; stores stay inside `out`.
    unsafe {
        let zero = _mm256_setzero_ps();
        let lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        let step_lo = _mm256_mullo_epi32(lanes, _mm256_set1_epi32(sw as i32));
        let step_hi = _mm256_add_epi32(step_lo, _mm256_set1_epi32(8 * sw as i32));
        let wv = _mm256_set1_epi32(w as i32);
        let neg1 = _mm256_set1_epi32(-1);
        for (q, panel) in out.chunks_exact_mut(NR * kc).enumerate() {
            let j0 = j + q * NR;
            let cols = NR.min(end.saturating_sub(j0));
            let dst = panel.as_mut_ptr();
            if cols == NR && j0 % g.ow + NR <= g.ow {
                // One output row: each packed row reads one input row.
                let (iy0, ix0) = (
                    (j0 / g.ow) as isize * sh - ph,
                    (j0 % g.ow) as isize * sw - pw,
                );
                for (p, &(plane, dy, dx)) in tab.iter().enumerate() {
                    let d = dst.add(p * NR);
                    let iy = iy0 + dy;
                    if iy < 0 || iy >= h {
                        _mm256_storeu_ps(d, zero);
                        _mm256_storeu_ps(d.add(8), zero);
                        continue;
                    }
                    let ix = ix0 + dx;
                    let row = x.wrapping_offset(plane + iy * w);
                    if sw == 1 && ix >= 0 && ix + NR as isize <= w {
                        let s = row.offset(ix);
                        _mm256_storeu_ps(d, _mm256_loadu_ps(s));
                        _mm256_storeu_ps(d.add(8), _mm256_loadu_ps(s.add(8)));
                        continue;
                    }
                    let ixv = _mm256_set1_epi32(ix as i32);
                    for (half, step) in [step_lo, step_hi].into_iter().enumerate() {
                        let idx = _mm256_add_epi32(ixv, step);
                        let ok = _mm256_and_si256(
                            _mm256_cmpgt_epi32(idx, neg1),
                            _mm256_cmpgt_epi32(wv, idx),
                        );
                        let v = if sw == 1 {
                            let s = row.wrapping_offset(ix + 8 * half as isize);
                            _mm256_maskload_ps(s, ok)
                        } else {
                            // Invalid lanes are masked off: their (clamped) index is unused.
                            let idx = _mm256_and_si256(idx, ok);
                            _mm256_mask_i32gather_ps::<4>(zero, row, idx, _mm256_castsi256_ps(ok))
                        };
                        _mm256_storeu_ps(d.add(8 * half), v);
                    }
                }
                continue;
            }
            // Panels that straddle output rows or run past `end`: element by element.
            for c in 0..NR {
                let col = j0 + c;
                let (iy0, ix0) = if c < cols {
                    (
                        (col / g.ow) as isize * sh - ph,
                        (col % g.ow) as isize * sw - pw,
                    )
                } else {
                    (isize::MIN / 4, 0)
                };
                for (p, &(plane, dy, dx)) in tab.iter().enumerate() {
                    let (iy, ix) = (iy0 + dy, ix0 + dx);
                    *dst.add(p * NR + c) = if iy >= 0 && iy < h && ix >= 0 && ix < w {
                        *x.offset(plane + iy * w + ix)
                    } else {
                        0.0
                    };
                }
            }
        }
    }
}
