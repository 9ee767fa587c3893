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
use rayon::prelude::*;

/// Coefficients per tile transform (4×4).
const XI: usize = 16;
/// Channel counts below this keep the direct path (the transforms would dominate).
const MIN_CHANNELS: usize = 16;

/// True when `g` is a conv this path computes (and where it pays).
pub fn applicable(g: &Conv2dGeom) -> bool {
    g.groups == 1
        && (g.kh, g.kw) == (3, 3)
        && g.stride == (1, 1)
        && g.dilation == (1, 1)
        && g.c >= MIN_CHANNELS
        && g.o >= MIN_CHANNELS
        && g.oh >= 2
        && g.ow >= 2
}

/// Tile grid of one image: (rows, columns) of 2×2 output tiles.
fn tile_grid(g: &Conv2dGeom) -> (usize, usize) {
    (g.oh.div_ceil(2), g.ow.div_ceil(2))
}

/// U [o][ξ][c] = G g Gᵀ for each 3×3 filter g = w[o, c].
fn transform_weights(g: &Conv2dGeom, w: &[f32]) -> Vec<f32> {
    let mut u = vec![0f32; g.o * XI * g.c];
    u.par_chunks_mut(XI * g.c).enumerate().for_each(|(o, uo)| {
        for c in 0..g.c {
            let f = &w[(o * g.c + c) * 9..][..9];
            // Rows: (G g)[k][x].
            let mut gg = [[0f32; 3]; 4];
            for x in 0..3 {
                let (a, b, d) = (f[x], f[3 + x], f[6 + x]);
                gg[0][x] = a;
                gg[1][x] = 0.5 * (a + b + d);
                gg[2][x] = 0.5 * (a - b + d);
                gg[3][x] = d;
            }
            for (k, r) in gg.iter().enumerate() {
                let t = [
                    r[0],
                    0.5 * (r[0] + r[1] + r[2]),
                    0.5 * (r[0] - r[1] + r[2]),
                    r[2],
                ];
                for (j, &v) in t.iter().enumerate() {
                    uo[(4 * k + j) * g.c + c] = v;
                }
            }
        }
    });
    u
}

/// V [c][ξ][tiles] = Bᵀ d B for each 4×4 input patch d (zeros outside the image),
/// tiles numbered (image, tile row, tile column).
fn transform_input(g: &Conv2dGeom, x: &[f32], tiles: usize) -> Vec<f32> {
    let (th, tw) = tile_grid(g);
    let (pt, pl) = (g.padding.0 as isize, g.padding.1 as isize);
    // Padded row width: input columns −pl .. −pl + wp.
    let wp = 2 * tw + 2;
    let mut v = vec![0f32; g.c * XI * tiles];
    v.par_chunks_mut(XI * tiles)
        .enumerate()
        .for_each(|(c, vc)| {
            let mut rows = vec![[0f32; 4]; 0];
            rows.resize(wp, [0f32; 4]);
            let mut a = vec![[0f32; 4]; wp];
            for i in 0..g.n {
                let plane = &x[(i * g.c + c) * g.h * g.w..][..g.h * g.w];
                for ty in 0..th {
                    // The four input rows of this tile row, zero-padded.
                    for (b, r) in rows.iter_mut().enumerate() {
                        let ix = b as isize - pl;
                        for (k, e) in r.iter_mut().enumerate() {
                            let iy = (2 * ty + k) as isize - pt;
                            let inside =
                                (0..g.h as isize).contains(&iy) && (0..g.w as isize).contains(&ix);
                            *e = if inside {
                                plane[iy as usize * g.w + ix as usize]
                            } else {
                                0.0
                            };
                        }
                    }
                    // Vertical transform (Bᵀ d), per padded column.
                    for (ab, d) in a.iter_mut().zip(&rows) {
                        *ab = [d[0] - d[2], d[1] + d[2], d[2] - d[1], d[1] - d[3]];
                    }
                    // Horizontal transform (· B), per tile.
                    let t0 = (i * th + ty) * tw;
                    for tx in 0..tw {
                        let col = &a[2 * tx..2 * tx + 4];
                        for k in 0..4 {
                            let (c0, c1, c2, c3) = (col[0][k], col[1][k], col[2][k], col[3][k]);
                            let out = [c0 - c2, c1 + c2, c2 - c1, c1 - c3];
                            for (j, &val) in out.iter().enumerate() {
                                vc[(4 * k + j) * tiles + t0 + tx] = val;
                            }
                        }
                    }
                }
            }
        });
    v
}

/// y [n][o][oh][ow] = Aᵀ M A (+ bias) from M [ξ][o][tiles].
fn transform_output(g: &Conv2dGeom, m: &[f32], bias: Option<&[f32]>, tiles: usize) -> Vec<f32> {
    let (th, tw) = tile_grid(g);
    let plane = g.oh * g.ow;
    let mut y = vec![0f32; g.n * g.o * plane];
    y.par_chunks_mut(plane).enumerate().for_each(|(io, yp)| {
        let (i, o) = (io / g.o, io % g.o);
        let b = bias.map_or(0.0, |b| b[o]);
        for ty in 0..th {
            let t0 = (i * th + ty) * tw;
            for tx in 0..tw {
                let at = |xi: usize| m[(xi * g.o + o) * tiles + t0 + tx];
                // q = Aᵀ m (2×4), then q A (2×2).
                let mut q = [[0f32; 4]; 2];
                for j in 0..4 {
                    let (m0, m1, m2, m3) = (at(j), at(4 + j), at(8 + j), at(12 + j));
                    q[0][j] = m0 + m1 + m2;
                    q[1][j] = m1 - m2 - m3;
                }
                for (r, qr) in q.iter().enumerate() {
                    let oy = 2 * ty + r;
                    if oy >= g.oh {
                        continue;
                    }
                    let vals = [qr[0] + qr[1] + qr[2], qr[1] - qr[2] - qr[3]];
                    for (s, &val) in vals.iter().enumerate() {
                        let ox = 2 * tx + s;
                        if ox < g.ow {
                            yp[oy * g.ow + ox] = val + b;
                        }
                    }
                }
            }
        }
    });
    y
}

/// conv2d forward through Winograd F(2×2, 3×3); `applicable(g)` must hold.
/// x [n, c, h, w], w [o, c, 3, 3] → [n, o, oh, ow].
pub fn forward(g: &Conv2dGeom, x: &[f32], w: &[f32], bias: Option<&[f32]>) -> Vec<f32> {
    debug_assert!(applicable(g));
    let (th, tw) = tile_grid(g);
    let tiles = g.n * th * tw;
    let u = transform_weights(g, w);
    let v = transform_input(g, x, tiles);
    let mut m = vec![0f32; XI * g.o * tiles];
    // The 16 GEMMs are independent: one per task, each single-threaded.
    m.par_chunks_mut(g.o * tiles)
        .enumerate()
        .for_each(|(xi, mx)| {
            let a = MatRef {
                data: &u,
                offset: xi * g.c,
                rs: XI * g.c,
                cs: 1,
            };
            let b = MatRef {
                data: &v,
                offset: xi * tiles,
                rs: XI * tiles,
                cs: 1,
            };
            matmul(g.o, tiles, g.c, a, b, mx, tiles, false, false);
        });
    transform_output(g, &m, bias, tiles)
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
            (2, 16, (8, 8), 16, (1, 1)),
            (1, 17, (7, 9), 19, (1, 1)),
            (2, 16, (5, 6), 16, (0, 0)),
            (1, 16, (4, 5), 18, (2, 1)),
        ] {
            let g = geom(n, c, hw, o, pad);
            assert!(applicable(&g));
            let f = |v: Vec<f64>| v.into_iter().map(|x| x as f32).collect::<Vec<f32>>();
            let x = f(rng.normal(n * c * hw.0 * hw.1));
            let w = f(rng.normal(o * c * 9));
            let b = f(rng.normal(o));
            let want = direct(&g, &x, &w, &b);
            let got = forward(&g, &x, &w, Some(&b));
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
        let mut g = geom(1, 16, (8, 8), 16, (1, 1));
        g.stride = (2, 2);
        assert!(!applicable(&g));
        assert!(!applicable(&geom(1, 8, (8, 8), 16, (1, 1))));
        let mut g = geom(1, 16, (8, 8), 16, (1, 1));
        g.groups = 2;
        assert!(!applicable(&g));
    }
}
