//! PNDM (pseudo numerical methods, arXiv 2202.09778) as diffusers' `PNDMScheduler`:
//! an optional Runge-Kutta warm-up (PRK) then linear multistep (PLMS) steps.

use super::arith::{axpby, div, mul};
use super::betas::{alphas_cumprod, betas};
use super::config::{PredictionType, SchedulerConfig};
use super::spacing::spaced;
use super::{check_steps, Scheduler, StepCursor};
use crate::error::Result;
use crate::tensor::Tensor;
use crate::{bail, ensure};

pub(crate) struct Pndm {
    cfg: SchedulerConfig,
    ac: Vec<f32>,
    final_ac: f32,
    steps: usize,
    timesteps: Vec<f64>,
    ts: Vec<i64>,
    prk_len: usize,
    cursor: StepCursor,
    counter: usize,
    ets: Vec<Tensor>,
    cur_model_output: Option<Tensor>,
    cur_sample: Option<Tensor>,
}

const NAME: &str = "PNDMScheduler";

impl Pndm {
    pub(crate) fn new(cfg: SchedulerConfig) -> Result<Self> {
        let ac = alphas_cumprod(&betas(&cfg.betas));
        let final_ac = if cfg.set_alpha_to_one { 1.0 } else { ac[0] };
        Ok(Pndm {
            cfg,
            ac,
            final_ac,
            steps: 0,
            timesteps: vec![],
            ts: vec![],
            prk_len: 0,
            cursor: StepCursor::default(),
            counter: 0,
            ets: vec![],
            cur_model_output: None,
            cur_sample: None,
        })
    }

    fn alpha(&self, t: i64) -> Result<f32> {
        if t < 0 {
            return Ok(self.final_ac);
        }
        match self.ac.get(t as usize) {
            Some(&a) => Ok(a),
            None => bail!("{NAME}: timestep {t} is outside the training schedule"),
        }
    }

    /// Formula (9) of the PNDM paper: x_{t-δ} from x_t and the noise estimate.
    fn prev_sample(&self, sample: &Tensor, t: i64, prev_t: i64, mo: &Tensor) -> Result<Tensor> {
        let a_t = self.alpha(t)?;
        let a_prev = self.alpha(prev_t)?;
        let b_t = 1.0 - a_t;
        let b_prev = 1.0 - a_prev;
        let mo = match self.cfg.prediction_type {
            PredictionType::VPrediction => axpby(a_t.sqrt(), mo, b_t.sqrt(), sample)?,
            _ => mo.clone(),
        };
        let sample_coeff = (a_prev / a_t).sqrt();
        let denom = a_t * b_prev.sqrt() + (a_t * b_t * a_prev).sqrt();
        let update = div(&mul(&mo, a_prev - a_t)?, denom)?;
        mul(sample, sample_coeff)?.sub(&update)
    }

    fn step_prk(&mut self, mo: &Tensor, t: i64, sample: &Tensor) -> Result<Tensor> {
        let half = (self.cfg.betas.num_train_timesteps / self.steps / 2) as i64;
        let diff_to_prev = if self.counter % 2 == 1 { 0 } else { half };
        let prev_t = t - diff_to_prev;
        let t = self.ts[self.counter / 4 * 4];
        let mut mo = mo.clone();
        match self.counter % 4 {
            0 => {
                self.cur_model_output = Some(mul(&mo, 1.0 / 6.0)?);
                self.ets.push(mo.clone());
                self.cur_sample = Some(sample.clone());
            }
            1 | 2 => {
                let cur = self.cur_model_output.take().unwrap_or(mo.zeros_like()?);
                self.cur_model_output = Some(cur.add(&mul(&mo, 1.0 / 3.0)?)?);
            }
            _ => {
                let cur = self.cur_model_output.take().unwrap_or(mo.zeros_like()?);
                mo = cur.add(&mul(&mo, 1.0 / 6.0)?)?;
            }
        }
        let cur_sample = self.cur_sample.clone().unwrap_or_else(|| sample.clone());
        let prev = self.prev_sample(&cur_sample, t, prev_t, &mo)?;
        self.counter += 1;
        Ok(prev)
    }

    fn step_plms(&mut self, mo: &Tensor, t: i64, sample: &Tensor) -> Result<Tensor> {
        ensure!(
            self.cfg.skip_prk_steps || self.ets.len() >= 3,
            "{NAME}: PLMS steps need the 12 Runge-Kutta warm-up steps first"
        );
        let ratio = (self.cfg.betas.num_train_timesteps / self.steps) as i64;
        let (mut t, mut prev_t) = (t, t - ratio);
        if self.counter != 1 {
            let keep = self.ets.len().saturating_sub(3);
            self.ets.drain(..keep);
            self.ets.push(mo.clone());
        } else {
            prev_t = t;
            t += ratio;
        }
        let e = |k: usize| &self.ets[self.ets.len() - k];
        let mut sample = sample.clone();
        let mo = match (self.ets.len(), self.counter) {
            (1, 0) => {
                self.cur_sample = Some(sample.clone());
                mo.clone()
            }
            (1, 1) => {
                let m = div(&mo.add(e(1))?, 2.0)?;
                sample = match self.cur_sample.take() {
                    Some(s) => s,
                    None => bail!("{NAME}: the second PLMS step needs the first one's sample"),
                };
                m
            }
            (2, _) => div(&mul(e(1), 3.0)?.sub(e(2))?, 2.0)?,
            (3, _) => {
                let s = axpby(23.0, e(1), -16.0, e(2))?.add(&mul(e(3), 5.0)?)?;
                div(&s, 12.0)?
            }
            _ => {
                let s = axpby(55.0, e(1), -59.0, e(2))?
                    .add(&mul(e(3), 37.0)?)?
                    .sub(&mul(e(4), 9.0)?)?;
                mul(&s, 1.0 / 24.0)?
            }
        };
        let prev = self.prev_sample(&sample, t, prev_t, &mo)?;
        self.counter += 1;
        Ok(prev)
    }
}

impl Scheduler for Pndm {
    fn set_timesteps(&mut self, steps: usize) -> Result<()> {
        check_steps(&self.cfg, steps)?;
        let c = &self.cfg;
        let n_train = c.betas.num_train_timesteps;
        let mut base: Vec<i64> = spaced(c.timestep_spacing, n_train, steps, c.steps_offset, true)
            .into_iter()
            .map(|v| v as i64)
            .collect();
        base.reverse(); // ascending, as diffusers' `_timesteps`
        let m = base.len();
        let (prk, plms): (Vec<i64>, Vec<i64>) = if c.skip_prk_steps {
            let mut p: Vec<i64> = base[..m - 1].to_vec();
            if m >= 2 {
                p.push(base[m - 2]);
            }
            p.push(base[m - 1]);
            p.reverse();
            (vec![], p)
        } else {
            ensure!(
                m >= 4,
                "{NAME}: the Runge-Kutta warm-up needs at least 4 inference steps (got {steps}); \
                 set skip_prk_steps or use more steps"
            );
            let half = (n_train / steps / 2) as i64;
            // _ts[-4:].repeat(2) + tile([0, half], 4), drop the last, repeat(2)[1:-1], reversed
            let pairs: Vec<i64> = base[m - 4..].iter().flat_map(|&t| [t, t + half]).collect();
            let rep: Vec<i64> = pairs[..7].iter().flat_map(|&t| [t, t]).collect();
            let mut prk = rep[1..rep.len() - 1].to_vec();
            prk.reverse();
            let mut plms = base[..m - 3].to_vec();
            plms.reverse();
            (prk, plms)
        };
        self.steps = steps;
        self.prk_len = prk.len();
        self.ts = prk.into_iter().chain(plms).collect();
        self.timesteps = self.ts.iter().map(|&t| t as f64).collect();
        self.cursor.reset(self.ts.len());
        self.counter = 0;
        self.ets.clear();
        self.cur_model_output = None;
        self.cur_sample = None;
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
        let t = self.ts[step_index];
        let prev = if self.counter < self.prk_len {
            self.step_prk(&mo, t, &x)?
        } else {
            self.step_plms(&mo, t, &x)?
        };
        prev.to_dtype(dtype)
    }

    fn name(&self) -> &str {
        NAME
    }

    fn config(&self) -> &SchedulerConfig {
        &self.cfg
    }
}
