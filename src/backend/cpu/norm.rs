//! Normalisation kernels: LayerNorm, GroupNorm (optionally fused with SiLU) and
//! BatchNorm; forwards save mean/rstd, fused backwards give dx, dweight, dbias.
//!
//! Statistics and backward row sums accumulate in f64 (cheap next to the memory
//! traffic, and it keeps large groups such as SD's 40960-element GroupNorm groups
//! accurate in f32).

use super::vmath::{self, Map};
use super::PAR_CHUNK;
use crate::tensor::Real;
use rayon::prelude::*;

/// Mean and 1/sqrt(biased variance + eps) of `x` (two passes).
fn moments<T: Real>(x: &[T], eps: f64) -> (T, T) {
    let n = x.len().max(1) as f64;
    let mean = vmath::sum_f64(x, 0.0, false) / n;
    let var = vmath::sum_f64(x, mean, true) / n;
    (T::from_f64(mean), T::from_f64(1.0 / (var + eps).sqrt()))
}

fn sigmoid<T: Real>(z: T) -> T {
    T::one() / (T::one() + (-z).exp())
}

/// d silu(z) / dz = s·(1 + z·(1 − s)) with s = sigmoid(z).
fn silu_grad<T: Real>(z: T) -> T {
    let s = sigmoid(z);
    s * (T::one() + z * (T::one() - s))
}

/// Per-channel affine parameters of a group-normalised input.
#[derive(Clone, Copy)]
pub struct Affine<'a, T> {
    pub weight: Option<&'a [T]>,
    pub bias: Option<&'a [T]>,
}

impl<T: Real> Affine<'_, T> {
    #[inline]
    fn w(&self, c: usize) -> T {
        self.weight.map_or(T::one(), |w| w[c])
    }
    #[inline]
    fn b(&self, c: usize) -> T {
        self.bias.map_or(T::zero(), |b| b[c])
    }
}

/// Which gradients a backward kernel computes (frozen inputs cost nothing).
#[derive(Clone, Copy, Debug)]
pub struct Needs {
    pub x: bool,
    pub weight: bool,
    pub bias: bool,
}

/// Gradients from a normalisation backward (None where not needed).
pub struct NormGrads<T> {
    pub dx: Option<Vec<T>>,
    pub dweight: Option<Vec<T>>,
    pub dbias: Option<Vec<T>>,
}

/// How a unit's elements map to affine parameters: consecutive runs of `run`
/// elements share one parameter; unit `u` starts at parameter `(u % cycle) · per_unit`.
/// LayerNorm: run 1, one cycle (parameter = element). GroupNorm: run = spatial size,
/// cycle = groups, per_unit = channels per group.
#[derive(Clone, Copy)]
struct ParamMap {
    run: usize,
    cycle: usize,
    per_unit: usize,
}

impl ParamMap {
    fn first(&self, u: usize) -> usize {
        (u % self.cycle) * self.per_unit
    }
}

/// The affine weight and bias of a unit's parameters, with absent ones as 1 and 0.
fn unit_affine<T: Real>(affine: Affine<'_, T>, first: usize, count: usize) -> (Vec<T>, Vec<T>) {
    let w = affine.weight.map_or_else(
        || vec![T::one(); count],
        |w| w[first..first + count].to_vec(),
    );
    let b = affine.bias.map_or_else(
        || vec![T::zero(); count],
        |b| b[first..first + count].to_vec(),
    );
    (w, b)
}

/// Normalise contiguous units of `unit` elements: y = norm(x)·w + b per parameter
/// run (then SiLU when `silu`). Returns (y, mean, rstd), one mean/rstd per unit.
fn unit_norm_forward<T: Real>(
    x: &[T],
    unit: usize,
    eps: f64,
    affine: Affine<'_, T>,
    silu: bool,
    map: ParamMap,
) -> (Vec<T>, Vec<T>, Vec<T>) {
    let units = x.len() / unit.max(1);
    let mut y = vec![T::zero(); x.len()];
    let mut mean = vec![T::zero(); units];
    let mut rstd = vec![T::zero(); units];
    if unit == 0 {
        return (y, mean, rstd);
    }
    let min_len = (PAR_CHUNK / unit).max(1);
    y.par_chunks_mut(unit)
        .zip(x.par_chunks(unit))
        .zip(mean.par_iter_mut().zip(rstd.par_iter_mut()))
        .enumerate()
        .with_min_len(min_len)
        .for_each(|(u, ((yu, xu), (m, r)))| {
            let (mu, rs) = moments(xu, eps);
            *m = mu;
            *r = rs;
            let (w, b) = unit_affine(affine, map.first(u), unit / map.run);
            if map.run == 1 {
                for (((yo, &xv), &wc), &bc) in yu.iter_mut().zip(xu).zip(&w).zip(&b) {
                    *yo = (xv - mu) * rs * wc + bc;
                }
            } else {
                let runs = yu.chunks_mut(map.run).zip(xu.chunks(map.run));
                for ((yr, xr), (&wc, &bc)) in runs.zip(w.iter().zip(&b)) {
                    let scale = rs * wc;
                    let shift = bc - mu * scale;
                    yr.iter_mut()
                        .zip(xr)
                        .for_each(|(yo, &xv)| *yo = xv * scale + shift);
                }
            }
            if silu {
                vmath::map_in_place(Map::Silu, yu);
            }
        });
    (y, mean, rstd)
}

/// Backward of [`unit_norm_forward`]: parallel over tasks of whole units; each
/// task writes its dx rows and returns partial parameter sums `[dw | db]` of
/// length `2 * params`, which are then added up.
#[allow(clippy::too_many_arguments)]
fn unit_norm_backward<T: Real>(
    x: &[T],
    g: &[T],
    unit: usize,
    mean: &[T],
    rstd: &[T],
    affine: Affine<'_, T>,
    silu: bool,
    params: usize,
    needs: Needs,
    map: ParamMap,
) -> NormGrads<T> {
    let units = mean.len();
    let per_task = (PAR_CHUNK / unit.max(1)).max(1);
    let tasks = units.div_ceil(per_task);
    let acc_len = if needs.weight || needs.bias {
        2 * params
    } else {
        0
    };
    let inv_n = 1.0 / unit.max(1) as f64;
    let run = |t: usize, mut dx: Option<&mut [T]>| -> Vec<T> {
        let mut acc = vec![T::zero(); acc_len];
        let mut gz = vec![T::zero(); unit];
        let mut xh = vec![T::zero(); unit];
        let mut z = vec![T::zero(); if silu { unit } else { 0 }];
        let (u0, u1) = (t * per_task, ((t + 1) * per_task).min(units));
        for u in u0..u1 {
            let xu = &x[u * unit..(u + 1) * unit];
            let gu = &g[u * unit..(u + 1) * unit];
            let (mu, rs) = (mean[u], rstd[u]);
            let first = map.first(u);
            let (w, b) = unit_affine(affine, first, unit / map.run);
            xh.iter_mut()
                .zip(xu)
                .for_each(|(h, &xv)| *h = (xv - mu) * rs);
            // gz: gradient at the affine output (before SiLU when fused); gz·w is
            // the gradient at x̂.
            gz.copy_from_slice(gu);
            if silu {
                let runs = z.chunks_mut(map.run).zip(xh.chunks(map.run));
                for ((zr, hr), (&wc, &bc)) in runs.zip(w.iter().zip(&b)) {
                    zr.iter_mut().zip(hr).for_each(|(zo, &h)| *zo = h * wc + bc);
                }
                gz.iter_mut()
                    .zip(&z)
                    .for_each(|(o, &zv)| *o *= silu_grad(zv));
            }
            if acc_len > 0 {
                let runs = gz.chunks(map.run).zip(xh.chunks(map.run)).enumerate();
                for (r, (gr, hr)) in runs {
                    let (mut sw, mut sb) = (T::zero(), T::zero());
                    for (&gv, &h) in gr.iter().zip(hr) {
                        sw += gv * h;
                        sb += gv;
                    }
                    acc[first + r] += sw;
                    acc[params + first + r] += sb;
                }
            }
            if let Some(d) = dx.as_deref_mut() {
                let d = &mut d[(u - u0) * unit..(u - u0 + 1) * unit];
                let (mut s1, mut s2) = (0f64, 0f64);
                let runs = d
                    .chunks_mut(map.run)
                    .zip(gz.chunks(map.run).zip(xh.chunks(map.run)));
                for ((dr, (gr, hr)), &wc) in runs.zip(&w) {
                    for ((o, &gv), &h) in dr.iter_mut().zip(gr).zip(hr) {
                        let gw = gv * wc;
                        s1 += gw.as_f64();
                        s2 += (gw * h).as_f64();
                        *o = gw;
                    }
                }
                let (m1, m2) = (T::from_f64(s1 * inv_n), T::from_f64(s2 * inv_n));
                d.iter_mut()
                    .zip(&xh)
                    .for_each(|(o, &h)| *o = rs * (*o - m1 - h * m2));
            }
        }
        acc
    };
    let add = |mut a: Vec<T>, b: Vec<T>| {
        a.iter_mut().zip(&b).for_each(|(p, q)| *p += *q);
        a
    };
    let zero = || vec![T::zero(); acc_len];
    let mut dx = needs.x.then(|| vec![T::zero(); x.len()]);
    let acc = match dx.as_mut() {
        Some(d) if !d.is_empty() => d
            .par_chunks_mut(per_task * unit)
            .enumerate()
            .map(|(t, c)| run(t, Some(c)))
            .reduce(zero, add),
        _ => (0..tasks)
            .into_par_iter()
            .map(|t| run(t, None))
            .reduce(zero, add),
    };
    NormGrads {
        dx,
        dweight: needs.weight.then(|| acc[..params].to_vec()),
        dbias: needs.bias.then(|| acc[params..].to_vec()),
    }
}

/// LayerNorm over rows of `n` elements with elementwise weight/bias of length `n`.
/// Returns (y, mean, rstd) with one mean/rstd per row.
pub fn layer_norm<T: Real>(
    x: &[T],
    n: usize,
    affine: Affine<'_, T>,
    eps: f64,
) -> (Vec<T>, Vec<T>, Vec<T>) {
    unit_norm_forward(
        x,
        n,
        eps,
        affine,
        false,
        ParamMap {
            run: 1,
            cycle: 1,
            per_unit: 0,
        },
    )
}

/// Backward of [`layer_norm`]: dx = rstd·(gw − mean(gw) − x̂·mean(gw·x̂)) with
/// gw = g·w; dw = Σ_rows g·x̂; db = Σ_rows g.
pub fn layer_norm_backward<T: Real>(
    x: &[T],
    g: &[T],
    n: usize,
    mean: &[T],
    rstd: &[T],
    affine: Affine<'_, T>,
    needs: Needs,
) -> NormGrads<T> {
    let map = ParamMap {
        run: 1,
        cycle: 1,
        per_unit: 0,
    };
    unit_norm_backward(x, g, n, mean, rstd, affine, false, n, needs, map)
}

/// Shape of a GroupNorm problem: x is [batch, channels, spatial] row-major.
#[derive(Clone, Copy, Debug)]
pub struct GroupShape {
    pub channels: usize,
    pub spatial: usize,
    pub groups: usize,
}

impl GroupShape {
    fn unit(&self) -> usize {
        self.channels / self.groups * self.spatial
    }
    /// Units are (batch, group) pairs; each channel's spatial run shares a parameter.
    fn param_map(&self) -> ParamMap {
        ParamMap {
            run: self.spatial.max(1),
            cycle: self.groups,
            per_unit: self.channels / self.groups,
        }
    }
}

/// GroupNorm (then SiLU when `silu`), per-channel weight/bias. Returns
/// (y, mean, rstd) with one mean/rstd per (batch, group).
pub fn group_norm<T: Real>(
    x: &[T],
    shape: GroupShape,
    affine: Affine<'_, T>,
    eps: f64,
    silu: bool,
) -> (Vec<T>, Vec<T>, Vec<T>) {
    unit_norm_forward(x, shape.unit(), eps, affine, silu, shape.param_map())
}

/// Backward of [`group_norm`] (through the SiLU when fused; the pre-activation
/// is recomputed from x, mean and rstd rather than stored).
#[allow(clippy::too_many_arguments)]
pub fn group_norm_backward<T: Real>(
    x: &[T],
    g: &[T],
    shape: GroupShape,
    mean: &[T],
    rstd: &[T],
    affine: Affine<'_, T>,
    silu: bool,
    needs: Needs,
) -> NormGrads<T> {
    unit_norm_backward(
        x,
        g,
        shape.unit(),
        mean,
        rstd,
        affine,
        silu,
        shape.channels,
        needs,
        shape.param_map(),
    )
}

/// Per-channel mean and biased variance of x [batch, channels, spatial].
pub fn channel_moments<T: Real>(
    x: &[T],
    batch: usize,
    channels: usize,
    spatial: usize,
) -> (Vec<f64>, Vec<f64>) {
    let count = (batch * spatial).max(1) as f64;
    (0..channels)
        .into_par_iter()
        .map(|c| {
            let rows = (0..batch).map(|b| &x[(b * channels + c) * spatial..][..spatial]);
            let mean = rows.clone().flatten().map(|v| v.as_f64()).sum::<f64>() / count;
            let var = rows
                .flatten()
                .map(|v| (v.as_f64() - mean).powi(2))
                .sum::<f64>()
                / count;
            (mean, var)
        })
        .unzip()
}

/// y[b, c, s] = (x − mean[c])·rstd[c]·w[c] + b[c] (BatchNorm's normalisation).
pub fn channel_normalize<T: Real>(
    x: &[T],
    channels: usize,
    spatial: usize,
    mean: &[T],
    rstd: &[T],
    affine: Affine<'_, T>,
) -> Vec<T> {
    let mut y = vec![T::zero(); x.len()];
    if spatial == 0 {
        return y;
    }
    y.par_chunks_mut(spatial)
        .zip(x.par_chunks(spatial))
        .enumerate()
        .with_min_len((PAR_CHUNK / spatial).max(1))
        .for_each(|(row, (yr, xr))| {
            let c = row % channels;
            let scale = rstd[c] * affine.w(c);
            let shift = affine.b(c) - mean[c] * scale;
            yr.iter_mut()
                .zip(xr)
                .for_each(|(o, &v)| *o = v * scale + shift);
        });
    y
}

/// BatchNorm backward. `batch_stats`: mean/rstd came from this batch (training),
/// so dx = w·rstd·(g − mean(g) − x̂·mean(g·x̂)) over each channel; otherwise they are
/// running statistics (constants) and dx = g·w·rstd.
#[allow(clippy::too_many_arguments)]
pub fn batch_norm_backward<T: Real>(
    x: &[T],
    g: &[T],
    batch: usize,
    channels: usize,
    spatial: usize,
    mean: &[T],
    rstd: &[T],
    affine: Affine<'_, T>,
    batch_stats: bool,
    needs: Needs,
) -> NormGrads<T> {
    let need_sums = needs.weight || needs.bias || (needs.x && batch_stats);
    // Per channel: Σ g and Σ g·x̂.
    let (sum_g, sum_gx): (Vec<f64>, Vec<f64>) = if need_sums {
        (0..channels)
            .into_par_iter()
            .map(|c| {
                let (mut sg, mut sgx) = (0f64, 0f64);
                for b in 0..batch {
                    let at = (b * channels + c) * spatial;
                    for (&xv, &gv) in x[at..at + spatial].iter().zip(&g[at..at + spatial]) {
                        let xh = (xv - mean[c]) * rstd[c];
                        sg += gv.as_f64();
                        sgx += (gv * xh).as_f64();
                    }
                }
                (sg, sgx)
            })
            .unzip()
    } else {
        (Vec::new(), Vec::new())
    };
    let dx = (needs.x && spatial > 0).then(|| {
        let inv_m = 1.0 / (batch * spatial).max(1) as f64;
        let mut dx = vec![T::zero(); x.len()];
        dx.par_chunks_mut(spatial)
            .enumerate()
            .with_min_len((PAR_CHUNK / spatial).max(1))
            .for_each(|(row, d)| {
                let c = row % channels;
                let k = affine.w(c) * rstd[c];
                let at = row * spatial;
                let (xr, gr) = (&x[at..at + spatial], &g[at..at + spatial]);
                if batch_stats {
                    let m1 = T::from_f64(sum_g[c] * inv_m);
                    let m2 = T::from_f64(sum_gx[c] * inv_m);
                    for e in 0..spatial {
                        let xh = (xr[e] - mean[c]) * rstd[c];
                        d[e] = k * (gr[e] - m1 - xh * m2);
                    }
                } else {
                    d.iter_mut().zip(gr).for_each(|(o, &gv)| *o = gv * k);
                }
            });
        dx
    });
    let dx = dx.or_else(|| needs.x.then(|| vec![T::zero(); x.len()]));
    NormGrads {
        dx,
        dweight: needs
            .weight
            .then(|| sum_gx.iter().map(|&v| T::from_f64(v)).collect()),
        dbias: needs
            .bias
            .then(|| sum_g.iter().map(|&v| T::from_f64(v)).collect()),
    }
}
