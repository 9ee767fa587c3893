//! DPM-Solver++ multistep (arXiv 2211.01095) as diffusers'
//! `DPMSolverMultistepScheduler` with algorithm_type dpmsolver++ (orders 1-3,
//! midpoint or heun), plus the sigma schedule it shares with UniPC.

use super::arith::{axpby, div, exp32, ln32, mul};
use super::betas::{alphas_cumprod, betas, train_sigmas, BetaSchedule};
use super::config::{FinalSigmas, PredictionType, SchedulerConfig, SolverType};
use super::spacing::{interp, karras, log_sigmas, sigma_to_t, spaced_multistep};
use super::{check_steps, Scheduler, StepCursor};
use crate::ensure;
use crate::error::Result;
use crate::tensor::Tensor;

/// `alphas_cumprod` of a multistep solver (the last set to 2⁻²⁴ after zero-SNR
/// rescaling, as diffusers does to keep sigma finite).
pub(crate) fn solver_alphas_cumprod(cfg: &SchedulerConfig) -> Vec<f32> {
    let mut ac = alphas_cumprod(&betas(&cfg.betas));
    if cfg.betas.rescale_betas_zero_snr {
        let n = ac.len();
        ac[n - 1] = 2f32.powi(-24);
    }
    ac
}

/// (α_t, σ_t) of a VP sigma: α = 1/√(σ²+1), σ_t = σ·α (float32).
pub(crate) fn alpha_sigma(sigma: f32) -> (f32, f32) {
    let a = 1.0 / (sigma * sigma + 1.0).sqrt();
    (a, sigma * a)
}

/// λ = log α − log σ of a VP sigma.
pub(crate) fn lambda(sigma: f32) -> (f32, f32, f32) {
    let (a, s) = alpha_sigma(sigma);
    (a, s, ln32(a) - ln32(s))
}

/// Timesteps and sigmas of DPM-Solver / UniPC `set_timesteps`. `last`: the end of
/// the usable range; `round_karras`: whether Karras timesteps are rounded;
/// `karras_last_min`: whether `final_sigmas_type = sigma_min` with Karras sigmas
/// ends on the smallest Karras sigma (UniPC) rather than the first training one.
pub(crate) fn multistep_schedule(
    cfg: &SchedulerConfig,
    ac: &[f32],
    steps: usize,
    last: usize,
    round_karras: bool,
    karras_last_min: bool,
) -> (Vec<f32>, Vec<f64>) {
    let n_train = cfg.betas.num_train_timesteps;
    let mut ts = spaced_multistep(cfg.timestep_spacing, n_train, last, steps, cfg.steps_offset);
    let train = train_sigmas(ac);
    let (sig, last_sigma) = if cfg.use_karras_sigmas {
        let lo = cfg.sigma_min.unwrap_or(train[0] as f64);
        let hi = cfg.sigma_max.unwrap_or(train[n_train - 1] as f64);
        let sig = karras(lo, hi, steps);
        let logs = log_sigmas(&train);
        ts = sig
            .iter()
            .map(|&s| {
                let t = sigma_to_t(s, &logs);
                if round_karras {
                    t.round_ties_even()
                } else {
                    t
                }
            })
            .collect();
        let last_min = if karras_last_min {
            sig[sig.len() - 1] as f32
        } else {
            train[0]
        };
        (sig, last_min)
    } else {
        (interp(&ts, &train), train[0])
    };
    let last_sigma = match cfg.final_sigmas_type {
        FinalSigmas::Zero => 0.0,
        FinalSigmas::SigmaMin => last_sigma,
    };
    let sigmas = sig.iter().map(|&s| s as f32).chain([last_sigma]).collect();
    // `.astype(np.int64)` truncates toward zero
    let ts = ts.iter().map(|&t| t.trunc()).collect();
    (sigmas, ts)
}

pub(crate) struct DpmSolver {
    cfg: SchedulerConfig,
    ac: Vec<f32>,
    sigmas: Vec<f32>,
    timesteps: Vec<f64>,
    cursor: StepCursor,
    model_outputs: Vec<Option<Tensor>>,
    lower_order_nums: usize,
}

const NAME: &str = "DPMSolverMultistepScheduler";

impl DpmSolver {
    pub(crate) fn new(cfg: SchedulerConfig) -> Result<Self> {
        let ac = solver_alphas_cumprod(&cfg);
        Ok(DpmSolver {
            model_outputs: vec![None; cfg.solver_order],
            cfg,
            ac,
            sigmas: vec![],
            timesteps: vec![],
            cursor: StepCursor::default(),
            lower_order_nums: 0,
        })
    }

    /// The number of training timesteps left after `lambda_min_clipped`.
    fn last_timestep(&self) -> usize {
        let clip = self.cfg.lambda_min_clipped as f32;
        // searchsorted(flip(lambda_t), clip): the count of flipped values below it
        let clipped = self
            .ac
            .iter()
            .rev()
            .map(|&a| ln32(a.sqrt()) - ln32((1.0 - a).sqrt()))
            .take_while(|&l| l < clip)
            .count();
        self.cfg.betas.num_train_timesteps - clipped
    }

    /// The data (x0) prediction of the model output.
    fn convert(&self, mo: &Tensor, x: &Tensor, i: usize) -> Result<Tensor> {
        let (a, s) = alpha_sigma(self.sigmas[i]);
        match self.cfg.prediction_type {
            PredictionType::Epsilon => div(&x.sub(&mul(mo, s)?)?, a),
            PredictionType::Sample => Ok(mo.clone()),
            PredictionType::VPrediction => axpby(a, x, -s, mo),
        }
    }

    fn history(&self, k: usize) -> Result<&Tensor> {
        let n = self.model_outputs.len();
        match self.model_outputs.get(n - k).and_then(|m| m.as_ref()) {
            Some(m) => Ok(m),
            None => crate::bail!("{NAME}: missing model output history"),
        }
    }

    fn first_order(&self, m: &Tensor, x: &Tensor, i: usize) -> Result<Tensor> {
        let (a_t, s_t, l_t) = lambda(self.sigmas[i + 1]);
        let (_, s_s, l_s) = lambda(self.sigmas[i]);
        let h = l_t - l_s;
        axpby(s_t / s_s, x, -(a_t * (exp32(-h) - 1.0)), m)
    }

    fn second_order(&self, x: &Tensor, i: usize) -> Result<Tensor> {
        let (a_t, s_t, l_t) = lambda(self.sigmas[i + 1]);
        let (_, s_s0, l_s0) = lambda(self.sigmas[i]);
        let (_, _, l_s1) = lambda(self.sigmas[i - 1]);
        let (m0, m1) = (self.history(1)?, self.history(2)?);
        let (h, h_0) = (l_t - l_s0, l_s0 - l_s1);
        let r0 = h_0 / h;
        let d1 = mul(&m0.sub(m1)?, 1.0 / r0)?;
        let phi = a_t * (exp32(-h) - 1.0);
        let base = axpby(s_t / s_s0, x, -phi, m0)?;
        match self.cfg.solver_type {
            SolverType::Heun => base.add(&mul(&d1, a_t * ((exp32(-h) - 1.0) / h + 1.0))?),
            _ => base.sub(&mul(&d1, 0.5 * phi)?),
        }
    }

    fn third_order(&self, x: &Tensor, i: usize) -> Result<Tensor> {
        let (a_t, s_t, l_t) = lambda(self.sigmas[i + 1]);
        let (_, s_s0, l_s0) = lambda(self.sigmas[i]);
        let (_, _, l_s1) = lambda(self.sigmas[i - 1]);
        let (_, _, l_s2) = lambda(self.sigmas[i - 2]);
        let (m0, m1, m2) = (self.history(1)?, self.history(2)?, self.history(3)?);
        let (h, h_0, h_1) = (l_t - l_s0, l_s0 - l_s1, l_s1 - l_s2);
        let (r0, r1) = (h_0 / h, h_1 / h);
        let d1_0 = mul(&m0.sub(m1)?, 1.0 / r0)?;
        let d1_1 = mul(&m1.sub(m2)?, 1.0 / r1)?;
        let diff = d1_0.sub(&d1_1)?;
        let d1 = d1_0.add(&mul(&diff, r0 / (r0 + r1))?)?;
        let d2 = mul(&diff, 1.0 / (r0 + r1))?;
        let e = exp32(-h) - 1.0;
        axpby(s_t / s_s0, x, -(a_t * e), m0)?
            .add(&mul(&d1, a_t * (e / h + 1.0))?)?
            .sub(&mul(&d2, a_t * ((e + h) / (h * h) - 0.5))?)
    }
}

impl Scheduler for DpmSolver {
    fn set_timesteps(&mut self, steps: usize) -> Result<()> {
        check_steps(&self.cfg, steps)?;
        let last = self.last_timestep();
        let round = self.cfg.betas.schedule != BetaSchedule::SquaredCosCapV2;
        let (sigmas, ts) = multistep_schedule(&self.cfg, &self.ac, steps, last, round, false);
        ensure!(
            !ts.is_empty(),
            "{NAME}: lambda_min_clipped leaves no timesteps"
        );
        self.sigmas = sigmas;
        self.timesteps = ts;
        self.cursor.reset(self.timesteps.len());
        self.model_outputs = vec![None; self.cfg.solver_order];
        self.lower_order_nums = 0;
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
        let (i, n) = (step_index, self.timesteps.len());
        let c = &self.cfg;
        let lower_order_final = i == n - 1
            && (c.euler_at_final
                || (c.lower_order_final && n < 15)
                || c.final_sigmas_type == FinalSigmas::Zero);
        let lower_order_second = i + 2 == n && c.lower_order_final && n < 15;

        let m = self.convert(&mo, &x, i)?;
        self.model_outputs.remove(0);
        self.model_outputs.push(Some(m.clone()));

        let order = c.solver_order;
        let prev = if order == 1 || self.lower_order_nums < 1 || lower_order_final {
            self.first_order(&m, &x, i)?
        } else if order == 2 || self.lower_order_nums < 2 || lower_order_second {
            self.second_order(&x, i)?
        } else {
            self.third_order(&x, i)?
        };
        if self.lower_order_nums < order {
            self.lower_order_nums += 1;
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
