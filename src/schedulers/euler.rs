//! Euler (Karras et al. 2022, Algorithm 2 without churn) as diffusers'
//! `EulerDiscreteScheduler`, optionally on Karras sigmas; also the sigma schedule
//! and x0 prediction shared with Euler ancestral.

use super::arith::{div, mul, work};
use super::betas::{alphas_cumprod, betas, train_sigmas};
use super::config::{FinalSigmas, PredictionType, SchedulerConfig, TimestepSpacing};
use super::spacing::{interp, karras, log_sigmas, sigma_to_t, spaced};
use super::{check_steps, Scheduler, StepCursor};
use crate::error::Result;
use crate::tensor::Tensor;

/// The sigma-space state both Euler schedulers share.
pub(crate) struct SigmaSchedule {
    pub(crate) ac: Vec<f32>,
    /// One per model call plus the final one (float32, as diffusers').
    pub(crate) sigmas: Vec<f32>,
    pub(crate) timesteps: Vec<f64>,
}

impl SigmaSchedule {
    pub(crate) fn new(cfg: &SchedulerConfig) -> Self {
        let mut ac = alphas_cumprod(&betas(&cfg.betas));
        if cfg.betas.rescale_betas_zero_snr {
            // diffusers avoids an infinite sigma at the last timestep
            let n = ac.len();
            ac[n - 1] = 2f32.powi(-24);
        }
        SigmaSchedule {
            ac,
            sigmas: vec![],
            timesteps: vec![],
        }
    }

    /// diffusers' Euler `set_timesteps` (no custom timesteps or sigmas).
    pub(crate) fn set(&mut self, cfg: &SchedulerConfig, steps: usize) {
        let ts32: Vec<f32> = spaced(
            cfg.timestep_spacing,
            cfg.betas.num_train_timesteps,
            steps,
            cfg.steps_offset,
            false,
        )
        .into_iter()
        .map(|t| t as f32)
        .collect();
        let mut ts: Vec<f64> = ts32.iter().map(|&t| t as f64).collect();
        let train = train_sigmas(&self.ac);
        let mut sig = interp(&ts, &train);
        if cfg.kind.has_karras() && cfg.use_karras_sigmas {
            let lo = cfg.sigma_min.unwrap_or(sig[sig.len() - 1]);
            let hi = cfg.sigma_max.unwrap_or(sig[0]);
            sig = karras(lo, hi, steps);
            let logs = log_sigmas(&train);
            ts = sig.iter().map(|&s| sigma_to_t(s, &logs)).collect();
        }
        let last = match cfg.final_sigmas_type {
            FinalSigmas::Zero => 0.0,
            FinalSigmas::SigmaMin => train[0],
        };
        self.sigmas = sig.iter().map(|&s| s as f32).chain([last]).collect();
        self.timesteps = ts.iter().map(|&t| t as f32 as f64).collect();
    }

    /// `max(sigmas)`, or `sqrt(max² + 1)` for leading spacing (diffusers' quirk).
    pub(crate) fn init_noise_sigma(&self, spacing: TimestepSpacing) -> f64 {
        let max = self.sigmas.iter().fold(0f32, |m, &s| m.max(s));
        match spacing {
            TimestepSpacing::Leading => (max * max + 1.0).sqrt() as f64,
            _ => max as f64,
        }
    }

    /// `sample / sqrt(σ² + 1)`.
    pub(crate) fn scale(&self, sample: &Tensor, i: usize) -> Result<Tensor> {
        let s = self.sigmas[i];
        div(&work(sample, sample.dtype())?, (s * s + 1.0).sqrt())?.to_dtype(sample.dtype())
    }

    /// The denoised estimate x0 at sigma `s`.
    pub(crate) fn x0(pred: PredictionType, s: f32, mo: &Tensor, x: &Tensor) -> Result<Tensor> {
        match pred {
            PredictionType::Epsilon => x.sub(&mul(mo, s)?),
            PredictionType::VPrediction => {
                mul(mo, -s / (s * s + 1.0).sqrt())?.add(&div(x, s * s + 1.0)?)
            }
            PredictionType::Sample => Ok(mo.clone()),
        }
    }
}

pub(crate) struct Euler {
    cfg: SchedulerConfig,
    sched: SigmaSchedule,
    cursor: StepCursor,
}

const NAME: &str = "EulerDiscreteScheduler";

impl Euler {
    pub(crate) fn new(cfg: SchedulerConfig) -> Result<Self> {
        let sched = SigmaSchedule::new(&cfg);
        Ok(Euler {
            cfg,
            sched,
            cursor: StepCursor::default(),
        })
    }
}

impl Scheduler for Euler {
    fn set_timesteps(&mut self, steps: usize) -> Result<()> {
        check_steps(&self.cfg, steps)?;
        self.sched.set(&self.cfg, steps);
        self.cursor.reset(self.sched.timesteps.len());
        Ok(())
    }

    fn timesteps(&self) -> &[f64] {
        &self.sched.timesteps
    }

    fn init_noise_sigma(&self) -> f64 {
        self.sched.init_noise_sigma(self.cfg.timestep_spacing)
    }

    fn scale_model_input(&self, sample: &Tensor, step_index: usize) -> Result<Tensor> {
        self.cursor.check(NAME, step_index)?;
        self.sched.scale(sample, step_index)
    }

    fn needs_noise(&self) -> bool {
        false
    }

    fn step(
        &mut self,
        model_output: &Tensor,
        step_index: usize,
        sample: &Tensor,
        noise: Option<&Tensor>,
    ) -> Result<Tensor> {
        let inp = self
            .cursor
            .begin_step(NAME, false, model_output, step_index, sample, noise)?;
        let (dtype, mo, x) = (inp.dtype, inp.model_output, inp.sample);
        // s_churn = 0 (diffusers' default), so σ̂ = σ
        let sigma = self.sched.sigmas[step_index];
        let x0 = SigmaSchedule::x0(self.cfg.prediction_type, sigma, &mo, &x)?;
        let derivative = div(&x.sub(&x0)?, sigma)?;
        let dt = self.sched.sigmas[step_index + 1] - sigma;
        let prev = x.add(&mul(&derivative, dt)?)?;
        prev.to_dtype(dtype)
    }

    fn name(&self) -> &str {
        NAME
    }

    fn config(&self) -> &SchedulerConfig {
        &self.cfg
    }
}
