//! DDIM (arXiv 2010.02502) as diffusers' `DDIMScheduler`: deterministic at eta = 0,
//! with eta > 0 adding caller-supplied noise scaled by eta·σ_t.

use super::arith::{axpby, div, mul};
use super::betas::{alphas_cumprod, betas};
use super::config::{PredictionType, SchedulerConfig};
use super::spacing::spaced;
use super::{check_steps, Scheduler, StepCursor};
use crate::error::Result;
use crate::tensor::Tensor;

pub(crate) struct Ddim {
    cfg: SchedulerConfig,
    eta: f64,
    ac: Vec<f32>,
    final_ac: f32,
    steps: usize,
    ts: Vec<i64>,
    timesteps: Vec<f64>,
    cursor: StepCursor,
}

const NAME: &str = "DDIMScheduler";

impl Ddim {
    pub(crate) fn new(cfg: SchedulerConfig, eta: f64) -> Result<Self> {
        let ac = alphas_cumprod(&betas(&cfg.betas));
        let final_ac = if cfg.set_alpha_to_one { 1.0 } else { ac[0] };
        Ok(Ddim {
            cfg,
            eta,
            ac,
            final_ac,
            steps: 0,
            ts: vec![],
            timesteps: vec![],
            cursor: StepCursor::default(),
        })
    }

    fn alpha(&self, t: i64) -> Result<f32> {
        if t < 0 {
            return Ok(self.final_ac);
        }
        match self.ac.get(t as usize) {
            Some(&a) => Ok(a),
            None => crate::bail!("{NAME}: timestep {t} is outside the training schedule"),
        }
    }
}

impl Scheduler for Ddim {
    fn set_timesteps(&mut self, steps: usize) -> Result<()> {
        check_steps(&self.cfg, steps)?;
        let c = &self.cfg;
        self.ts = spaced(
            c.timestep_spacing,
            c.betas.num_train_timesteps,
            steps,
            c.steps_offset,
            true,
        )
        .into_iter()
        .map(|v| v as i64)
        .collect();
        self.timesteps = self.ts.iter().map(|&t| t as f64).collect();
        self.steps = steps;
        self.cursor.reset(self.ts.len());
        Ok(())
    }

    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn init_noise_sigma(&self) -> f64 {
        1.0
    }

    fn scale_model_input(&self, sample: &Tensor, step_index: usize) -> Result<Tensor> {
        self.cursor.check(NAME, step_index)?;
        Ok(sample.clone())
    }

    fn needs_noise(&self) -> bool {
        self.eta > 0.0
    }

    fn step(
        &mut self,
        model_output: &Tensor,
        step_index: usize,
        sample: &Tensor,
        noise: Option<&Tensor>,
    ) -> Result<Tensor> {
        let inp = self.cursor.begin_step(
            NAME,
            self.needs_noise(),
            model_output,
            step_index,
            sample,
            noise,
        )?;
        let (dtype, mo, x) = (inp.dtype, inp.model_output, inp.sample);
        let noise = inp.noise;
        let t = self.ts[step_index];
        let prev_t = t - (self.cfg.betas.num_train_timesteps / self.steps) as i64;
        let a_t = self.alpha(t)?;
        let a_prev = self.alpha(prev_t)?;
        let b_t = 1.0 - a_t;

        let (mut x0, eps) = match self.cfg.prediction_type {
            PredictionType::Epsilon => {
                let x0 = div(&x.sub(&mul(&mo, b_t.sqrt())?)?, a_t.sqrt())?;
                (x0, mo.clone())
            }
            PredictionType::Sample => {
                let eps = div(&x.sub(&mul(&mo, a_t.sqrt())?)?, b_t.sqrt())?;
                (mo.clone(), eps)
            }
            PredictionType::VPrediction => (
                axpby(a_t.sqrt(), &x, -b_t.sqrt(), &mo)?,
                axpby(a_t.sqrt(), &mo, b_t.sqrt(), &x)?,
            ),
        };
        if self.cfg.clip_sample {
            let r = self.cfg.clip_sample_range;
            x0 = x0.clamp(-r, r)?;
        }
        // σ_t² = (1 - ᾱ_prev) / (1 - ᾱ_t) · (1 - ᾱ_t / ᾱ_prev)
        let b_prev = 1.0 - a_prev;
        let variance = (b_prev / b_t) * (1.0 - a_t / a_prev);
        let std_dev_t = self.eta as f32 * variance.sqrt();
        let direction = mul(&eps, (1.0 - a_prev - std_dev_t * std_dev_t).sqrt())?;
        let mut prev = mul(&x0, a_prev.sqrt())?.add(&direction)?;
        if let Some(n) = noise {
            prev = prev.add(&mul(&n, std_dev_t)?)?;
        }
        prev.to_dtype(dtype)
    }

    fn name(&self) -> &str {
        NAME
    }

    fn config(&self) -> &SchedulerConfig {
        &self.cfg
    }
}
