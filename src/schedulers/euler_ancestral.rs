//! Euler ancestral as diffusers' `EulerAncestralDiscreteScheduler`: an Euler step
//! down to σ_down plus caller-supplied noise scaled by σ_up.

use super::arith::{div, mul};
use super::config::SchedulerConfig;
use super::euler::SigmaSchedule;
use super::{check_steps, Scheduler, StepCursor};
use crate::error::Result;
use crate::tensor::Tensor;

pub(crate) struct EulerAncestral {
    cfg: SchedulerConfig,
    sched: SigmaSchedule,
    cursor: StepCursor,
}

const NAME: &str = "EulerAncestralDiscreteScheduler";

impl EulerAncestral {
    pub(crate) fn new(cfg: SchedulerConfig) -> Result<Self> {
        let sched = SigmaSchedule::new(&cfg);
        Ok(EulerAncestral {
            cfg,
            sched,
            cursor: StepCursor::default(),
        })
    }
}

impl Scheduler for EulerAncestral {
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
        true
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
            .begin_step(NAME, true, model_output, step_index, sample, noise)?;
        let (dtype, mo, x) = (inp.dtype, inp.model_output, inp.sample);
        let Some(noise) = inp.noise else {
            crate::bail!("{NAME}: step needs noise");
        };
        let sigma = self.sched.sigmas[step_index];
        let x0 = SigmaSchedule::x0(self.cfg.prediction_type, sigma, &mo, &x)?;
        let (from, to) = (sigma, self.sched.sigmas[step_index + 1]);
        let sigma_up = (to * to * (from * from - to * to) / (from * from)).sqrt();
        let sigma_down = (to * to - sigma_up * sigma_up).sqrt();
        let derivative = div(&x.sub(&x0)?, sigma)?;
        let prev = x.add(&mul(&derivative, sigma_down - sigma)?)?;
        prev.add(&mul(&noise, sigma_up)?)?.to_dtype(dtype)
    }

    fn name(&self) -> &str {
        NAME
    }

    fn config(&self) -> &SchedulerConfig {
        &self.cfg
    }
}
