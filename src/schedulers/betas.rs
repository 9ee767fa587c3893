//! The training noise schedule shared by every scheduler: betas (linear,
//! scaled_linear, squaredcos_cap_v2 or trained), zero-terminal-SNR rescaling and
//! `alphas_cumprod`, reproducing diffusers' float32 torch arithmetic bit for bit.

use crate::ensure;
use crate::error::Result;
use crate::models::config::Config;

/// How the betas are made (`beta_schedule` / `trained_betas`).
#[derive(Clone, Debug, PartialEq)]
pub enum BetaSchedule {
    Linear,
    ScaledLinear,
    SquaredCosCapV2,
    Trained(Vec<f64>),
}

/// The keys that define the training noise schedule.
#[derive(Clone, Debug, PartialEq)]
pub struct BetaConfig {
    pub num_train_timesteps: usize,
    pub beta_start: f64,
    pub beta_end: f64,
    pub schedule: BetaSchedule,
    pub rescale_betas_zero_snr: bool,
}

impl BetaConfig {
    /// Reads the schedule keys (diffusers' defaults: 1000 steps, linear
    /// 0.0001..0.02). `knows_rescale`: whether the class has `rescale_betas_zero_snr`
    /// (PNDM has not and ignores the key).
    pub fn read(cfg: &Config, knows_rescale: bool) -> Result<BetaConfig> {
        let num_train_timesteps = cfg.usize_or("num_train_timesteps", 1000)?;
        ensure!(
            num_train_timesteps >= 2,
            "{}: num_train_timesteps must be at least 2, got {num_train_timesteps}",
            cfg.path().display()
        );
        let schedule = if cfg.has("trained_betas") {
            let b = cfg.f64_list("trained_betas")?;
            ensure!(
                b.len() == num_train_timesteps,
                "{}: trained_betas has {} entries but num_train_timesteps is {num_train_timesteps}",
                cfg.path().display(),
                b.len()
            );
            BetaSchedule::Trained(b)
        } else {
            match cfg
                .choice(
                    "beta_schedule",
                    "linear",
                    &["linear", "scaled_linear", "squaredcos_cap_v2"],
                )?
                .as_str()
            {
                "linear" => BetaSchedule::Linear,
                "scaled_linear" => BetaSchedule::ScaledLinear,
                _ => BetaSchedule::SquaredCosCapV2,
            }
        };
        Ok(BetaConfig {
            num_train_timesteps,
            beta_start: cfg.f64_or("beta_start", 0.0001)?,
            beta_end: cfg.f64_or("beta_end", 0.02)?,
            schedule,
            rescale_betas_zero_snr: knows_rescale
                && cfg.bool_or("rescale_betas_zero_snr", false)?,
        })
    }
}

/// `torch.linspace(start, end, n, dtype=torch.float32)` exactly: torch's CPU kernel
/// computes `start + step * i` (first half) and `end - step * (n - 1 - i)` (second
/// half) in float32 with fused multiply-adds.
pub(crate) fn torch_linspace_f32(start: f64, end: f64, n: usize) -> Vec<f32> {
    let (s, e) = (start as f32, end as f32);
    if n == 1 {
        return vec![s];
    }
    let step = (e - s) / (n - 1) as f32;
    let half = n / 2;
    (0..n)
        .map(|i| {
            if i < half {
                step.mul_add(i as f32, s)
            } else {
                (-step).mul_add((n - 1 - i) as f32, e)
            }
        })
        .collect()
}

/// diffusers' `betas_for_alpha_bar(n)` with the cosine transform (max_beta 0.999).
fn betas_for_alpha_bar(n: usize) -> Vec<f32> {
    let alpha_bar = |t: f64| {
        ((t + 0.008) / 1.008 * std::f64::consts::PI / 2.0)
            .cos()
            .powi(2)
    };
    (0..n)
        .map(|i| {
            let (t1, t2) = (i as f64 / n as f64, (i + 1) as f64 / n as f64);
            (1.0 - alpha_bar(t2) / alpha_bar(t1)).min(0.999) as f32
        })
        .collect()
}

/// diffusers' `rescale_zero_terminal_snr` (arXiv 2305.08891, Algorithm 1), in f32.
pub(crate) fn rescale_zero_terminal_snr(betas: &[f32]) -> Vec<f32> {
    let ac = alphas_cumprod(betas);
    let mut s: Vec<f32> = ac.iter().map(|a| a.sqrt()).collect();
    let (s0, st) = (s[0], s[s.len() - 1]);
    let k = s0 / (s0 - st);
    for v in s.iter_mut() {
        *v = (*v - st) * k;
    }
    let bar: Vec<f32> = s.iter().map(|v| v * v).collect();
    let mut alphas = Vec::with_capacity(bar.len());
    alphas.push(bar[0]);
    alphas.extend(bar.windows(2).map(|w| w[1] / w[0]));
    alphas.iter().map(|a| 1.0 - a).collect()
}

/// The betas of a schedule (float32, as diffusers' `scheduler.betas`).
pub fn betas(c: &BetaConfig) -> Vec<f32> {
    let n = c.num_train_timesteps;
    let b = match &c.schedule {
        BetaSchedule::Trained(v) => v.iter().map(|&x| x as f32).collect(),
        BetaSchedule::Linear => torch_linspace_f32(c.beta_start, c.beta_end, n),
        BetaSchedule::ScaledLinear => {
            torch_linspace_f32(c.beta_start.powf(0.5), c.beta_end.powf(0.5), n)
                .into_iter()
                .map(|x| x * x)
                .collect()
        }
        BetaSchedule::SquaredCosCapV2 => betas_for_alpha_bar(n),
    };
    if c.rescale_betas_zero_snr {
        rescale_zero_terminal_snr(&b)
    } else {
        b
    }
}

/// `torch.cumprod(1 - betas)` in float32 (torch accumulates in double on the CPU).
pub fn alphas_cumprod(betas: &[f32]) -> Vec<f32> {
    let mut acc = 1.0f64;
    betas
        .iter()
        .map(|b| {
            acc *= (1.0f32 - b) as f64;
            acc as f32
        })
        .collect()
}

/// `((1 - alphas_cumprod) / alphas_cumprod) ** 0.5` in float32: the sigma of each
/// training timestep.
pub(crate) fn train_sigmas(ac: &[f32]) -> Vec<f32> {
    ac.iter().map(|a| ((1.0 - a) / a).sqrt()).collect()
}
