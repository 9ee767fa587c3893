//! Winograd F(2×2, 3×3) conv2d forward for f32 (3×3 kernels, stride 1, dilation 1,
//! groups 1): 2.25× fewer multiplies than the direct GEMM, which is what SD's U-Net
//! and VAE spend most of their CPU time on.
//!
//! y = Aᵀ [ (G g Gᵀ) ∘ (Bᵀ d B) ] A per 2×2 output tile, with the elementwise product
//! summed over input channels as 16 GEMMs (one per transform coefficient ξ):
//! M[ξ] (o × tiles) = U[ξ] (o × c) · V[ξ] (c × tiles). The transforms use only
//! ±1 and ½ coefficients, so the rounding error stays at the direct GEMM's level
//! (tested against it in `tests`).

use super::conv::Conv2dGeom;
use super::gemm::{matmul, MatRef};
use super::vmath::{avx2_fma, simd_dispatch};
use rayon::prelude::*;
use std::cell::RefCell;

/// Coefficients per tile transform (4×4).
const XI: usize = 16;
/// Channel counts below this keep the direct path (the transforms would dominate).
const MIN_CHANNELS: usize = 16;

/// Fewer 2×2 tiles than this over the batch keep the direct path. The weight
/// transform (o·c·16 values) is kept across calls by the op (ops/conv_weight_cache.rs),
/// so it no longer sets this bound: from 32 tiles on (the 8×8 latents of SD's lowest
/// level at batch 2) the 16 GEMMs beat the direct one; below, streaming U (16/9 of the
/// weights) costs more than the multiplies saved.
const MIN_TILES: usize = 32;

/// False when the environment sets `MEDSYN_WINOGRAD=0` (read once): every conv then
/// takes the direct GEMM path, e.g. to compare speed or rounding.
fn enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("MEDSYN_WINOGRAD").map_or(true, |v| v != "0"))
}

/// True when `g` is a conv this path computes (and where it pays).
pub fn applicable(g: &Conv2dGeom) -> bool {
    enabled() && shape_fits(g)
}

fn shape_fits(g: &Conv2dGeom) -> bool {
    g.groups == 1
        && (g.kh, g.kw) == (3, 3)
        && g.stride == (1, 1)
        && g.dilation == (1, 1)
        && g.c >= MIN_CHANNELS
        && g.o >= MIN_CHANNELS
        && g.oh >= 2
        && g.ow >= 2
        && g.n * g.oh.div_ceil(2) * g.ow.div_ceil(2) >= MIN_TILES
}

/// Tile count and the plane strides of V [c][ξ][·] and M [ξ][o·tiles]: each padded by
/// 64 bytes, so that the 16 planes a transform walks together do not map to the same
/// cache sets (unpadded, M's planes are often a multiple of 64 KiB apart).
#[derive(Clone, Copy)]
struct Strides {
    tiles: usize,
    v: usize,
    m: usize,
}

impl Strides {
    fn new(g: &Conv2dGeom) -> Self {
        let (th, tw) = tile_grid(g);
        let tiles = g.n * th * tw;
        Strides {
            tiles,
            v: tiles + 16,
            m: g.o * tiles + 16,
        }
    }
}

/// Tile grid of one image: (rows, columns) of 2×2 output tiles.
fn tile_grid(g: &Conv2dGeom) -> (usize, usize) {
    (g.oh.div_ceil(2), g.ow.div_ceil(2))
}

/// G (4×3): the filter transform's rows.
const G: [[f32; 3]; 4] = [
    [1.0, 0.0, 0.0],
    [0.5, 0.5, 0.5],
    [0.5, -0.5, 0.5],
    [0.0, 0.0, 1.0],
];

/// U [ξ][o][c] = G g Gᵀ for each 3×3 filter g = w[o, c], as one small GEMM:
/// U [16 × o·c] = K [16 × 9] · wᵀ, where K[4k + j][3a + b] = G[k][a]·G[j][b] and wᵀ
/// is w [o·c, 9] read transposed in place. [`forward`] takes the result, so that
/// callers can keep it across calls (ops/conv_weight_cache.rs).
pub fn transform_weights(g: &Conv2dGeom, w: &[f32]) -> Vec<f32> {
    let mut k = [0f32; XI * 9];
    for (xi, row) in k.chunks_exact_mut(9).enumerate() {
        let (gk, gj) = (G[xi / 4], G[xi % 4]);
        for (t, v) in row.iter_mut().enumerate() {
            *v = gk[t / 3] * gj[t % 3];
        }
    }
    let kmat = MatRef {
        data: &k,
        offset: 0,
        rs: 9,
        cs: 1,
    };
    let wt = MatRef {
        data: w,
        offset: 0,
        rs: 1,
        cs: 9,
    };
    let n = g.o * g.c;
    let mut u = vec![0f32; XI * n];
    matmul(XI, n, 9, kmat, wt, &mut u, n, false, true);
    u
}

/// o = a + b + c (elementwise over equal-length slices; zips so that it vectorises).
fn sum3(o: &mut [f32], a: &[f32], b: &[f32], c: &[f32]) {
    for (((o, &a), &b), &c) in o.iter_mut().zip(a).zip(b).zip(c) {
        *o = a + b + c;
    }
}

/// o = a − b − c.
fn diff3(o: &mut [f32], a: &[f32], b: &[f32], c: &[f32]) {
    for (((o, &a), &b), &c) in o.iter_mut().zip(a).zip(b).zip(c) {
        *o = a - b - c;
    }
}

/// o = a + s·b for s = ±1.
fn add_signed(o: &mut [f32], a: &[f32], b: &[f32], s: f32) {
    for ((o, &a), &b) in o.iter_mut().zip(a).zip(b) {
        *o = a + s * b;
    }
}

/// V [c][ξ][tiles] = Bᵀ d B for each 4×4 input patch d (zeros outside the image),
/// tiles numbered (image, tile row, tile column). Parallel over channels.
fn transform_input(g: &Conv2dGeom, x: &[f32], vs: usize, v: &mut [f32]) {
    v.par_chunks_mut(XI * vs)
        .enumerate()
        .for_each(|(c, vc)| input_channel(g, x, c, vs, vc));
}

/// Splits one input row into the even and odd columns of its padded row (input
/// column ix sits at padded column ix + pl; zeros elsewhere). Index loops over
/// pre-cut slices, so that the stride-2 reads vectorise.
#[inline(always)]
fn deinterleave(src: &[f32], pl: usize, even: &mut [f32], odd: &mut [f32]) {
    even.fill(0.0);
    odd.fill(0.0);
    let (rest, base) = if pl % 2 == 1 {
        if let (Some(slot), Some(&first)) = (odd.get_mut(pl / 2), src.first()) {
            *slot = first;
        }
        (src.get(1..).unwrap_or(&[]), pl.div_ceil(2))
    } else {
        (src, pl / 2)
    };
    let room = even.len().min(odd.len()).saturating_sub(base);
    let count = (rest.len() / 2).min(room);
    let (e, o, pairs) = (
        &mut even[base..base + count],
        &mut odd[base..base + count],
        &rest[..2 * count],
    );
    for t in 0..count {
        e[t] = pairs[2 * t];
        o[t] = pairs[2 * t + 1];
    }
    if rest.len() % 2 == 1 && count == rest.len() / 2 && count < room {
        even[base + count] = rest[2 * count];
    }
}

// One input channel over all images: per tile row, the four padded input rows split
// into even and odd columns so that every step is a loop over contiguous slices
// (tile tx reads columns 2tx .. 2tx+3 = even[tx], odd[tx], even[tx+1], odd[tx+1]).
simd_dispatch!(input_channel(g: &Conv2dGeom, x: &[f32], c: usize, vs: usize, vc: &mut [f32]) -> () {
    let (th, tw) = tile_grid(g);
    let (pt, pl) = (g.padding.0 as isize, g.padding.1);
    let half = tw + 1;
    // [even | odd] columns of the four rows, then of their vertical transform.
    let mut rows = vec![[vec![0f32; half], vec![0f32; half]]; 4];
    let mut a = rows.clone();
    for i in 0..g.n {
        let plane = &x[(i * g.c + c) * g.h * g.w..][..g.h * g.w];
        for ty in 0..th {
            for (k, [even, odd]) in rows.iter_mut().enumerate() {
                let iy = (2 * ty + k) as isize - pt;
                if (0..g.h as isize).contains(&iy) {
                    deinterleave(&plane[iy as usize * g.w..][..g.w], pl, even, odd);
                } else {
                    even.fill(0.0);
                    odd.fill(0.0);
                }
            }
            // Vertical transform (Bᵀ d): a0 = d0 − d2, a1 = d1 + d2,
            // a2 = d2 − d1, a3 = d1 − d3, on even and odd columns alike.
            for p in 0..2 {
                let (d0, d1, d2, d3) = (&rows[0][p], &rows[1][p], &rows[2][p], &rows[3][p]);
                add_signed(&mut a[0][p], d0, d2, -1.0);
                add_signed(&mut a[1][p], d1, d2, 1.0);
                add_signed(&mut a[2][p], d2, d1, -1.0);
                add_signed(&mut a[3][p], d1, d3, -1.0);
            }
            // Horizontal transform (· B) per tile, into the four planes 4k + j.
            let t0 = (i * th + ty) * tw;
            for (k, [even, odd]) in a.iter().enumerate() {
                let block = &mut vc[4 * k * vs..(4 * k + 4) * vs];
                let (p0, rest) = block.split_at_mut(vs);
                let (p1, rest) = rest.split_at_mut(vs);
                let (p2, p3) = rest.split_at_mut(vs);
                let (o0, o1) = (&mut p0[t0..t0 + tw], &mut p1[t0..t0 + tw]);
                let (o2, o3) = (&mut p2[t0..t0 + tw], &mut p3[t0..t0 + tw]);
                let (e0, e1) = (&even[..tw], &even[1..]);
                let (d0, d1) = (&odd[..tw], &odd[1..]);
                add_signed(o0, e0, e1, -1.0);
                add_signed(o1, d0, e1, 1.0);
                add_signed(o2, e1, d0, -1.0);
                add_signed(o3, d0, d1, -1.0);
            }
        }
    }
});

/// y [n][o][oh][ow] = Aᵀ M A (+ bias) from M [ξ][o][tiles]. Parallel over output planes.
fn transform_output(g: &Conv2dGeom, m: &[f32], bias: Option<&[f32]>, s: Strides) -> Vec<f32> {
    let plane = g.oh * g.ow;
    let mut y = vec![0f32; g.n * g.o * plane];
    y.par_chunks_mut(plane).enumerate().for_each(|(io, yp)| {
        let (i, o) = (io / g.o, io % g.o);
        output_plane(g, m, bias.map_or(0.0, |b| b[o]), s, i, o, yp)
    });
    y
}

// One output plane (image i, channel o), with Aᵀ = [[1, 1, 1, 0], [0, 1, −1, −1]]:
// per tile row, the even and odd output columns of both output rows as loops over
// contiguous slices, then interleaved.
simd_dispatch!(output_plane(g: &Conv2dGeom, m: &[f32], b: f32, s: Strides, i: usize, o: usize, yp: &mut [f32]) -> () {
    let (th, tw) = tile_grid(g);
    // q[r][j] = (Aᵀ m)[r][j] over the tiles of a tile row; out[r][s] = (q A)[r][s].
    let mut q = vec![vec![0f32; tw]; 8];
    let mut out = vec![vec![0f32; tw]; 4];
    for ty in 0..th {
        let t0 = (i * th + ty) * tw;
        let ms = |xi: usize| &m[xi * s.m + o * s.tiles + t0..][..tw];
        for j in 0..4 {
            let (m0, m1, m2, m3) = (ms(j), ms(4 + j), ms(8 + j), ms(12 + j));
            let (top, bottom) = q.split_at_mut(4);
            let (q0, q1) = (&mut top[j], &mut bottom[j]);
            sum3(q0, m0, m1, m2);
            diff3(q1, m1, m2, m3);
        }
        for r in 0..2 {
            let (qa, qb, qc, qd) = (&q[4 * r], &q[4 * r + 1], &q[4 * r + 2], &q[4 * r + 3]);
            let (left, right) = out.split_at_mut(2 * r + 1);
            let (even, odd) = (&mut left[2 * r], &mut right[0]);
            sum3(even, qa, qb, qc);
            diff3(odd, qb, qc, qd);
            if b != 0.0 {
                even.iter_mut().chain(odd.iter_mut()).for_each(|v| *v += b);
            }
        }
        for r in 0..2 {
            let oy = 2 * ty + r;
            if oy >= g.oh {
                continue;
            }
            let dst = &mut yp[oy * g.ow..(oy + 1) * g.ow];
            let (even, odd) = (&out[2 * r], &out[2 * r + 1]);
            // Output column 2t is even[t], 2t + 1 is odd[t] (the last may be cut).
            let pairs = (g.ow / 2).min(tw);
            let (d, e, od) = (&mut dst[..2 * pairs], &even[..pairs], &odd[..pairs]);
            for t in 0..pairs {
                d[2 * t] = e[t];
                d[2 * t + 1] = od[t];
            }
            if g.ow % 2 == 1 {
                dst[g.ow - 1] = even[pairs];
            }
        }
    }
});

thread_local! {
    /// Per-thread transform buffers (V, M) kept across calls: the U-Net calls the
    /// same shapes over and over, and fresh multi-megabyte buffers cost page faults.
    static SCRATCH: RefCell<[Vec<f32>; 2]> = const { RefCell::new([Vec::new(), Vec::new()]) };
}

/// conv2d forward through Winograd F(2×2, 3×3); `applicable(g)` must hold.
/// x [n, c, h, w] and u = `transform_weights(g, w)` for w [o, c, 3, 3] → [n, o, oh, ow].
pub fn forward(g: &Conv2dGeom, x: &[f32], u: &[f32], bias: Option<&[f32]>) -> Vec<f32> {
    debug_assert!(shape_fits(g));
    assert_eq!(
        u.len(),
        XI * g.o * g.c,
        "winograd::forward: transformed weights of another shape"
    );
    let s = Strides::new(g);
    let lens = [g.c * XI * s.v, XI * s.m];
    let run = |bufs: &mut [Vec<f32>; 2]| {
        for (buf, &n) in bufs.iter_mut().zip(&lens) {
            if buf.len() < n {
                buf.resize(n, 0.0);
            }
        }
        let [v, m] = bufs;
        let (v, m) = (&mut v[..lens[0]], &mut m[..lens[1]]);
        transform_input(g, x, s.v, v);
        // The 16 GEMMs are independent: one per task, each single-threaded.
        m.par_chunks_mut(s.m).enumerate().for_each(|(xi, mx)| {
            let a = MatRef {
                data: u,
                offset: xi * g.o * g.c,
                rs: g.c,
                cs: 1,
            };
            let b = MatRef {
                data: &*v,
                offset: xi * s.v,
                rs: XI * s.v,
                cs: 1,
            };
            matmul(g.o, s.tiles, g.c, a, b, mx, s.tiles, false, false);
        });
        transform_output(g, m, bias, s)
    };
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut bufs) => run(&mut bufs),
        Err(_) => run(&mut [Vec::new(), Vec::new()]),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::Philox;

    fn geom(n: usize, c: usize, hw: (usize, usize), o: usize, pad: (usize, usize)) -> Conv2dGeom {
        Conv2dGeom {
            n,
            c,
            h: hw.0,
            w: hw.1,
            o,
            kh: 3,
            kw: 3,
            stride: (1, 1),
            padding: pad,
            dilation: (1, 1),
            groups: 1,
            oh: hw.0 + 2 * pad.0 - 2,
            ow: hw.1 + 2 * pad.1 - 2,
        }
    }

    /// Direct convolution in f64, the reference.
    fn direct(g: &Conv2dGeom, x: &[f32], w: &[f32], bias: &[f32]) -> Vec<f64> {
        let mut y = vec![0f64; g.n * g.o * g.oh * g.ow];
        for i in 0..g.n {
            for o in 0..g.o {
                for oy in 0..g.oh {
                    for ox in 0..g.ow {
                        let mut s = bias[o] as f64;
                        for c in 0..g.c {
                            for ki in 0..3 {
                                for kj in 0..3 {
                                    let iy = (oy + ki) as isize - g.padding.0 as isize;
                                    let ix = (ox + kj) as isize - g.padding.1 as isize;
                                    if iy < 0 || ix < 0 || iy >= g.h as isize || ix >= g.w as isize
                                    {
                                        continue;
                                    }
                                    let xv =
                                        x[((i * g.c + c) * g.h + iy as usize) * g.w + ix as usize];
                                    let wv = w[((o * g.c + c) * 3 + ki) * 3 + kj];
                                    s += xv as f64 * wv as f64;
                                }
                            }
                        }
                        y[((i * g.o + o) * g.oh + oy) * g.ow + ox] = s;
                    }
                }
            }
        }
        y
    }

    #[test]
    fn matches_direct_convolution_in_f64() {
        let mut rng = Philox::new(7);
        // Odd and even sizes, padding 0, 1, 2 and asymmetric.
        for (n, c, hw, o, pad) in [
            (2, 16, (16, 16), 16, (1, 1)),
            (3, 17, (15, 13), 19, (1, 1)),
            (8, 16, (9, 10), 16, (0, 0)),
            (8, 16, (8, 9), 18, (2, 1)),
        ] {
            let g = geom(n, c, hw, o, pad);
            assert!(applicable(&g));
            let f = |v: Vec<f64>| v.into_iter().map(|x| x as f32).collect::<Vec<f32>>();
            let x = f(rng.normal(n * c * hw.0 * hw.1));
            let w = f(rng.normal(o * c * 9));
            let b = f(rng.normal(o));
            let want = direct(&g, &x, &w, &b);
            let got = forward(&g, &x, &transform_weights(&g, &w), Some(&b));
            assert_eq!(got.len(), want.len());
            let scale = want.iter().fold(0f64, |a, v| a.max(v.abs()));
            let err = got
                .iter()
                .zip(&want)
                .fold(0f64, |a, (&p, &q)| a.max((p as f64 - q).abs()));
            assert!(
                err <= 2e-6 * scale,
                "{g:?}: max error {err} (scale {scale})"
            );
        }
    }

    #[test]
    fn small_or_strided_convs_are_not_taken() {
        let mut g = geom(1, 16, (32, 32), 16, (1, 1));
        g.stride = (2, 2);
        assert!(!applicable(&g));
        assert!(!applicable(&geom(1, 8, (32, 32), 16, (1, 1))));
        assert!(!applicable(&geom(1, 512, (8, 8), 512, (1, 1))));
        assert!(applicable(&geom(2, 512, (8, 8), 512, (1, 1))));
        let mut g = geom(1, 16, (32, 32), 16, (1, 1));
        g.groups = 2;
        assert!(!applicable(&g));
    }
}
