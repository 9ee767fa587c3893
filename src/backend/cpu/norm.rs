//! Normalisation kernels: LayerNorm, GroupNorm (optionally fused with SiLU) and
//! BatchNorm; forwards save mean/rstd, fused backwards give dx, dweight, dbias.
//!
//! Statistics and backward row sums accumulate in f64 (cheap next to the memory
//! traffic, and it keeps large groups such as SD's 40960-element GroupNorm groups
//! accurate in f32).

use super::PAR_CHUNK;
use crate::tensor::Real;
use rayon::prelude::*;

/// Mean and 1/sqrt(biased variance + eps) of `x` (two passes).
fn moments<T: Real>(x: &[T], eps: f64) -> (T, T) {
    let n = x.len().max(1) as f64;
    let mean = x.iter().map(|v| v.as_f64()).sum::<f64>() / n;
    let var = x.iter().map(|v| (v.as_f64() - mean).powi(2)).sum::<f64>() / n;
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

/// Normalise contiguous units of `unit` elements: y = norm(x)·w[ch(e)] + b[ch(e)]
/// (then SiLU when `silu`), where `ch(u, e)` maps unit `u`, element `e` to a parameter
/// index. Returns (y, mean, rstd), one mean/rstd per unit.
fn unit_norm_forward<T: Real>(
    x: &[T],
    unit: usize,
    eps: f64,
    affine: Affine<'_, T>,
    silu: bool,
    ch: impl Fn(usize, usize) -> usize + Sync,
) -> (Vec<T>, Vec<T>, Vec<T>) {
    let units = x.len() / unit;
    let mut y = vec![T::zero(); x.len()];
    let mut mean = vec![T::zero(); units];
    let mut rstd = vec![T::zero(); units];
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
            for (e, (yo, &xv)) in yu.iter_mut().zip(xu).enumerate() {
                let c = ch(u, e);
                let z = (xv - mu) * rs * affine.w(c) + affine.b(c);
                *yo = if silu { z * sigmoid(z) } else { z };
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
    ch: impl Fn(usize, usize) -> usize + Sync,
) -> NormGrads<T> {
    let units = mean.len();
    let per_task = (PAR_CHUNK / unit).max(1);
    let tasks = units.div_ceil(per_task);
    let acc_len = if needs.weight || needs.bias {
        2 * params
    } else {
        0
    };
    let inv_n = 1.0 / unit as f64;
    let run = |t: usize, mut dx: Option<&mut [T]>| -> Vec<T> {
        let mut acc = vec![T::zero(); acc_len];
        let (u0, u1) = (t * per_task, ((t + 1) * per_task).min(units));
        for u in u0..u1 {
            let xu = &x[u * unit..(u + 1) * unit];
            let gu = &g[u * unit..(u + 1) * unit];
            let (mu, rs) = (mean[u], rstd[u]);
            let mut dxu = dx
                .as_deref_mut()
                .map(|d| &mut d[(u - u0) * unit..(u - u0 + 1) * unit]);
            let (mut s1, mut s2) = (0f64, 0f64);
            for e in 0..unit {
                let c = ch(u, e);
                let xh = (xu[e] - mu) * rs;
                // gz: gradient at the affine output (before SiLU when fused).
                let gz = if silu {
                    gu[e] * silu_grad(xh * affine.w(c) + affine.b(c))
                } else {
                    gu[e]
                };
                if acc_len > 0 {
                    acc[c] += gz * xh;
                    acc[params + c] += gz;
                }
                if let Some(d) = dxu.as_deref_mut() {
                    let gw = gz * affine.w(c);
                    s1 += gw.as_f64();
                    s2 += (gw * xh).as_f64();
                    d[e] = gw;
                }
            }
            if let Some(d) = dxu {
                let (m1, m2) = (T::from_f64(s1 * inv_n), T::from_f64(s2 * inv_n));
                for e in 0..unit {
                    let xh = (xu[e] - mu) * rs;
                    d[e] = rs * (d[e] - m1 - xh * m2);
                }
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
    unit_norm_forward(x, n, eps, affine, false, |_, e| e)
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
    unit_norm_backward(x, g, n, mean, rstd, affine, false, n, needs, |_, e| e)
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
    /// Channel of element `e` of group unit `u` (units are (batch, group) pairs).
    fn channel(&self, u: usize, e: usize) -> usize {
        (u % self.groups) * (self.channels / self.groups) + e / self.spatial
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
    unit_norm_forward(x, shape.unit(), eps, affine, silu, |u, e| {
        shape.channel(u, e)
    })
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
        |u, e| shape.channel(u, e),
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
