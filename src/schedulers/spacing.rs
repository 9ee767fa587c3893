//! Inference timesteps and sigmas as diffusers computes them with numpy: the
//! leading / trailing / linspace spacings, `np.interp` of the training sigmas,
//! Karras sigmas and the sigma → timestep inversion.

use super::config::TimestepSpacing;

/// `np.linspace(start, stop, num)` (float64): `i * step + start`, last = stop.
pub(crate) fn np_linspace(start: f64, stop: f64, num: usize) -> Vec<f64> {
    if num == 0 {
        return vec![];
    }
    if num == 1 {
        return vec![start];
    }
    let div = (num - 1) as f64;
    let delta = stop - start;
    let step = delta / div;
    let mut y: Vec<f64> = (0..num)
        .map(|i| {
            let v = if step == 0.0 {
                i as f64 / div * delta
            } else {
                i as f64 * step
            };
            v + start
        })
        .collect();
    y[num - 1] = stop;
    y
}

/// `np.arange(start, stop, step)` for floats: `ceil((stop - start) / step)` values
/// `start + i * ((start + step) - start)`.
pub(crate) fn np_arange(start: f64, stop: f64, step: f64) -> Vec<f64> {
    let len = ((stop - start) / step).ceil();
    if len.is_nan() || len <= 0.0 {
        return vec![];
    }
    let len = len as usize;
    let delta = (start + step) - start;
    (0..len)
        .map(|i| match i {
            0 => start,
            1 => start + step,
            _ => start + i as f64 * delta,
        })
        .collect()
}

/// numpy's `round` (half to even).
pub(crate) fn np_round(x: f64) -> f64 {
    x.round_ties_even()
}

/// Descending integer timesteps of PNDM / DDIM / Euler (before any class-specific
/// cast): `steps` values spread over `0..num_train` by `spacing`. `linspace_round`:
/// whether linspace values are rounded (PNDM, DDIM) or kept fractional (Euler).
pub(crate) fn spaced(
    spacing: TimestepSpacing,
    num_train: usize,
    steps: usize,
    offset: usize,
    linspace_round: bool,
) -> Vec<f64> {
    let t = num_train as f64;
    match spacing {
        TimestepSpacing::Linspace => np_linspace(0.0, t - 1.0, steps)
            .into_iter()
            .rev()
            .map(|v| if linspace_round { np_round(v) } else { v })
            .collect(),
        TimestepSpacing::Leading => {
            let ratio = num_train / steps;
            (0..steps)
                .rev()
                .map(|i| (i * ratio + offset) as f64)
                .collect()
        }
        TimestepSpacing::Trailing => np_arange(t, 0.0, -(t / steps as f64))
            .into_iter()
            .map(|v| np_round(v) - 1.0)
            .collect(),
    }
}

/// Descending timesteps of the multistep solvers (DPM-Solver, UniPC), which space
/// `steps + 1` points and drop the last: `last` is the first timestep past the
/// usable range (`num_train` unless `lambda_min_clipped` clips it).
pub(crate) fn spaced_multistep(
    spacing: TimestepSpacing,
    num_train: usize,
    last: usize,
    steps: usize,
    offset: usize,
) -> Vec<f64> {
    match spacing {
        TimestepSpacing::Linspace => {
            let mut v: Vec<f64> = np_linspace(0.0, last as f64 - 1.0, steps + 1)
                .into_iter()
                .map(np_round)
                .rev()
                .collect();
            v.pop();
            v
        }
        TimestepSpacing::Leading => {
            let ratio = last / (steps + 1);
            (1..=steps)
                .rev()
                .map(|i| (i * ratio + offset) as f64)
                .collect()
        }
        TimestepSpacing::Trailing => {
            np_arange(last as f64, 0.0, -(num_train as f64 / steps as f64))
                .into_iter()
                .map(|v| np_round(v) - 1.0)
                .collect()
        }
    }
}

/// `np.interp(x, arange(len(fp)), fp)`.
pub(crate) fn interp(x: &[f64], fp: &[f32]) -> Vec<f64> {
    let n = fp.len();
    x.iter()
        .map(|&xv| {
            if xv.is_nan() {
                return xv;
            }
            if xv < 0.0 {
                return fp[0] as f64;
            }
            if xv >= (n - 1) as f64 {
                return fp[n - 1] as f64;
            }
            let j = xv.floor() as usize;
            if j as f64 == xv {
                return fp[j] as f64;
            }
            let slope = (fp[j + 1] as f64 - fp[j] as f64) / 1.0;
            slope * (xv - j as f64) + fp[j] as f64
        })
        .collect()
}

/// diffusers' `_convert_to_karras`: `n` sigmas from `max` down to `min`, rho = 7.
pub(crate) fn karras(sigma_min: f64, sigma_max: f64, n: usize) -> Vec<f64> {
    let rho = 7.0f64;
    let min_inv = sigma_min.powf(1.0 / rho);
    let max_inv = sigma_max.powf(1.0 / rho);
    np_linspace(0.0, 1.0, n)
        .into_iter()
        .map(|r| (max_inv + r * (min_inv - max_inv)).powf(rho))
        .collect()
}

/// `np.log` of the float32 training sigmas (numpy keeps float32; its SIMD log may
/// differ from this correctly rounded one in the last bit).
pub(crate) fn log_sigmas(train_sigmas: &[f32]) -> Vec<f32> {
    train_sigmas
        .iter()
        .map(|s| (*s as f64).ln() as f32)
        .collect()
}

/// diffusers' `_sigma_to_t`: the fractional training timestep of `sigma` by linear
/// interpolation in log sigma.
pub(crate) fn sigma_to_t(sigma: f64, log_sigmas: &[f32]) -> f64 {
    let log_sigma = sigma.max(1e-10).ln();
    let n = log_sigmas.len();
    // argmax of cumsum(dists >= 0): the last index with log_sigmas <= log_sigma.
    let mut low = 0usize;
    for (i, &l) in log_sigmas.iter().enumerate() {
        if log_sigma - l as f64 >= 0.0 {
            low = i;
        }
    }
    let low = low.min(n - 2);
    let high = low + 1;
    let (lo, hi) = (log_sigmas[low], log_sigmas[high]);
    let w = ((lo as f64 - log_sigma) / (lo - hi) as f64).clamp(0.0, 1.0);
    (1.0 - w) * low as f64 + w * high as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numpy_helpers_match_known_values() {
        assert_eq!(np_linspace(0.0, 999.0, 4), vec![0.0, 333.0, 666.0, 999.0]);
        assert_eq!(
            np_arange(1000.0, 0.0, -250.0),
            vec![1000.0, 750.0, 500.0, 250.0]
        );
        assert_eq!(np_round(2.5), 2.0);
        assert_eq!(np_round(3.5), 4.0);
        assert_eq!(
            spaced(TimestepSpacing::Leading, 1000, 4, 1, true),
            vec![751.0, 501.0, 251.0, 1.0]
        );
        assert_eq!(
            spaced(TimestepSpacing::Trailing, 1000, 4, 1, true),
            vec![999.0, 749.0, 499.0, 249.0]
        );
        assert_eq!(
            interp(&[0.5, 2.0, 5.0], &[0.0, 1.0, 3.0]),
            vec![0.5, 3.0, 3.0]
        );
    }
}
