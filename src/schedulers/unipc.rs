//! UniPC (arXiv 2302.04867) as diffusers' `UniPCMultistepScheduler`: a UniP
//! predictor and UniC corrector of orders 1-3 (bh1/bh2, data or noise prediction).

use super::arith::{axpby, div, expm1_32, mul};
use super::config::{PredictionType, SchedulerConfig, SolverType};
use super::dpm_solver::{alpha_sigma, lambda, multistep_schedule, solver_alphas_cumprod};
use super::{check_steps, Scheduler, StepCursor};
use crate::bail;
use crate::error::Result;
use crate::tensor::Tensor;

pub(crate) struct UniPC {
    cfg: SchedulerConfig,
    ac: Vec<f32>,
    sigmas: Vec<f32>,
    timesteps: Vec<f64>,
    cursor: StepCursor,
    model_outputs: Vec<Option<Tensor>>,
    lower_order_nums: usize,
    last_sample: Option<Tensor>,
    this_order: usize,
}

const NAME: &str = "UniPCMultistepScheduler";

/// `torch.linalg.solve` of a small float32 system: LU with partial pivoting, then
/// triangular solves that multiply by the pivots' reciprocals (what MKL's sgesv
/// computes, bit for bit on the 2×2 systems of UniPC order 2).
fn solve(mut a: Vec<Vec<f32>>, mut b: Vec<f32>) -> Vec<f32> {
    let n = b.len();
    for k in 0..n {
        let p = (k..n).fold(k, |p, r| if a[r][k].abs() > a[p][k].abs() { r } else { p });
        a.swap(k, p);
        b.swap(k, p);
        let inv = 1.0 / a[k][k];
        for r in k + 1..n {
            a[r][k] *= inv;
            for c in k + 1..n {
                let l = a[r][k];
                a[r][c] -= l * a[k][c];
            }
        }
    }
    for r in 0..n {
        for c in 0..r {
            b[r] -= a[r][c] * b[c];
        }
    }
    for k in (0..n).rev() {
        b[k] *= 1.0 / a[k][k];
        for r in 0..k {
            b[r] -= b[k] * a[r][k];
        }
    }
    b
}

/// The coefficients shared by UniP and UniC: h·φ₁, B(h), and the matrix R and
/// vector b of the order conditions.
struct Coeffs {
    h_phi_1: f32,
    b_h: f32,
    r: Vec<Vec<f32>>,
    b: Vec<f32>,
}

fn coeffs(h: f32, rks: &[f32], order: usize, predict_x0: bool, solver: SolverType) -> Coeffs {
    let hh = if predict_x0 { -h } else { h };
    let h_phi_1 = expm1_32(hh);
    let mut h_phi_k = h_phi_1 / hh - 1.0;
    let mut factorial = 1u64;
    let b_h = match solver {
        SolverType::Bh1 => hh,
        _ => expm1_32(hh),
    };
    let (mut r, mut b) = (vec![], vec![]);
    for i in 1..=order {
        r.push(
            rks.iter()
                .map(|&x| match i - 1 {
                    0 => 1.0,
                    1 => x,
                    _ => x * x,
                })
                .collect(),
        );
        b.push(h_phi_k * factorial as f32 / b_h);
        factorial *= i as u64 + 1;
        h_phi_k = h_phi_k / hh - (1.0 / factorial as f64) as f32;
    }
    Coeffs { h_phi_1, b_h, r, b }
}

impl UniPC {
    pub(crate) fn new(cfg: SchedulerConfig) -> Result<Self> {
        let ac = solver_alphas_cumprod(&cfg);
        Ok(UniPC {
            model_outputs: vec![None; cfg.solver_order],
            cfg,
            ac,
            sigmas: vec![],
            timesteps: vec![],
            cursor: StepCursor::default(),
            lower_order_nums: 0,
            last_sample: None,
            this_order: 1,
        })
    }

    fn convert(&self, mo: &Tensor, x: &Tensor, i: usize) -> Result<Tensor> {
        let (a, s) = alpha_sigma(self.sigmas[i]);
        Ok(match (self.cfg.predict_x0, self.cfg.prediction_type) {
            (true, PredictionType::Epsilon) => div(&x.sub(&mul(mo, s)?)?, a)?,
            (true, PredictionType::Sample) => mo.clone(),
            (true, PredictionType::VPrediction) => axpby(a, x, -s, mo)?,
            (false, PredictionType::Epsilon) => mo.clone(),
            (false, PredictionType::Sample) => div(&x.sub(&mul(mo, a)?)?, s)?,
            (false, PredictionType::VPrediction) => axpby(a, mo, s, x)?,
        })
    }

    fn history(&self, k: usize) -> Result<&Tensor> {
        let n = self.model_outputs.len();
        match self.model_outputs.get(n - k).and_then(|m| m.as_ref()) {
            Some(m) => Ok(m),
            None => bail!("{NAME}: missing model output history"),
        }
    }

    /// x_t from x_s0 by the exponential integrator: the part shared by UniP and UniC.
    fn base(&self, x: &Tensor, m0: &Tensor, t: f32, s0: f32, h_phi_1: f32) -> Result<Tensor> {
        let (a_t, s_t) = alpha_sigma(t);
        let (a_s0, s_s0) = alpha_sigma(s0);
        if self.cfg.predict_x0 {
            axpby(s_t / s_s0, x, -(a_t * h_phi_1), m0)
        } else {
            axpby(a_t / a_s0, x, -(s_t * h_phi_1), m0)
        }
    }

    /// `(mi − m0) / r_k` for the k-th previous output, with r_k = (λ_si − λ_s0) / h.
    fn differences(
        &self,
        m0: &Tensor,
        l_s0: f32,
        h: f32,
        order: usize,
        sigma_of: impl Fn(usize) -> f32,
        output_of: impl Fn(usize) -> usize,
    ) -> Result<(Vec<f32>, Vec<Tensor>)> {
        let (mut rks, mut d1s) = (vec![], vec![]);
        for k in 1..order {
            let (_, _, l_si) = lambda(sigma_of(k));
            let rk = (l_si - l_s0) / h;
            d1s.push(div(&self.history(output_of(k))?.sub(m0)?, rk)?);
            rks.push(rk);
        }
        rks.push(1.0);
        Ok((rks, d1s))
    }

    fn scale_t(&self, t: f32, c: &Coeffs) -> f32 {
        let (a_t, s_t) = alpha_sigma(t);
        if self.cfg.predict_x0 {
            a_t * c.b_h
        } else {
            s_t * c.b_h
        }
    }

    /// The UniP predictor from x_i to x_{i+1}.
    fn predict(&self, x: &Tensor, order: usize, i: usize) -> Result<Tensor> {
        let m0 = self.history(1)?;
        let (t, s0) = (self.sigmas[i + 1], self.sigmas[i]);
        let (_, _, l_t) = lambda(t);
        let (_, _, l_s0) = lambda(s0);
        let h = l_t - l_s0;
        let (rks, d1s) = self.differences(m0, l_s0, h, order, |k| self.sigmas[i - k], |k| k + 1)?;
        let c = coeffs(h, &rks, order, self.cfg.predict_x0, self.cfg.solver_type);
        if d1s.is_empty() && t == 0.0 && !self.cfg.predict_x0 {
            // Ending on sigma 0 from a noise prediction: σ_t·(e^h − 1) is 0·∞ in
            // diffusers (NaN); its limit σ_s0/α_s0 gives the data prediction.
            let (a_s0, s_s0) = alpha_sigma(s0);
            return div(&x.sub(&mul(m0, s_s0)?)?, a_s0);
        }
        // (with bh1, diffusers multiplies B(h) = −∞ by the absent correction 0:
        // the order-1 step ends here instead)
        let x_t = self.base(x, m0, t, s0, c.h_phi_1)?;
        if d1s.is_empty() {
            return Ok(x_t);
        }
        let rhos: Vec<f32> = if order == 2 {
            vec![0.5]
        } else {
            let r: Vec<Vec<f32>> = c.r[..order - 1]
                .iter()
                .map(|row| row[..order - 1].to_vec())
                .collect();
            solve(r, c.b[..order - 1].to_vec())
        };
        let res = weighted(&rhos, &d1s)?;
        x_t.sub(&mul(&res, self.scale_t(t, &c))?)
    }

    /// The UniC corrector of x_i from x_{i-1} (`last`) and the new model output.
    fn correct(&self, model_t: &Tensor, last: &Tensor, order: usize, i: usize) -> Result<Tensor> {
        let m0 = self.history(1)?;
        let (t, s0) = (self.sigmas[i], self.sigmas[i - 1]);
        let (_, _, l_t) = lambda(t);
        let (_, _, l_s0) = lambda(s0);
        let h = l_t - l_s0;
        let (rks, d1s) =
            self.differences(m0, l_s0, h, order, |k| self.sigmas[i - (k + 1)], |k| k + 1)?;
        let c = coeffs(h, &rks, order, self.cfg.predict_x0, self.cfg.solver_type);
        let x_t = self.base(last, m0, t, s0, c.h_phi_1)?;
        let rhos = if order == 1 {
            vec![0.5]
        } else {
            solve(c.r.clone(), c.b.clone())
        };
        let d1_t = model_t.sub(m0)?;
        let last_term = mul(&d1_t, rhos[order - 1])?;
        let inner = if d1s.is_empty() {
            last_term
        } else {
            weighted(&rhos[..order - 1], &d1s)?.add(&last_term)?
        };
        x_t.sub(&mul(&inner, self.scale_t(t, &c))?)
    }
}

/// Σ_k ρ_k · D_k (diffusers' einsum over the history).
fn weighted(rhos: &[f32], ds: &[Tensor]) -> Result<Tensor> {
    let mut acc = mul(&ds[0], rhos[0])?;
    for (r, d) in rhos.iter().zip(ds).skip(1) {
        acc = acc.add(&mul(d, *r)?)?;
    }
    Ok(acc)
}

impl Scheduler for UniPC {
    fn set_timesteps(&mut self, steps: usize) -> Result<()> {
        check_steps(&self.cfg, steps)?;
        let n_train = self.cfg.betas.num_train_timesteps;
        let (sigmas, ts) = multistep_schedule(&self.cfg, &self.ac, steps, n_train, true, true);
        self.sigmas = sigmas;
        self.timesteps = ts;
        self.cursor.reset(self.timesteps.len());
        self.model_outputs = vec![None; self.cfg.solver_order];
        self.lower_order_nums = 0;
        self.last_sample = None;
        self.this_order = 1;
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
        let (dtype, mo, mut x) = (inp.dtype, inp.model_output, inp.sample);
        let i = step_index;
        let use_corrector = i > 0 && !self.cfg.disable_corrector.contains(&(i - 1));
        let m = self.convert(&mo, &x, i)?;
        if use_corrector {
            if let Some(last) = self.last_sample.take() {
                x = self.correct(&m, &last, self.this_order, i)?;
            }
        }
        self.model_outputs.remove(0);
        self.model_outputs.push(Some(m));

        let order = self.cfg.solver_order;
        let mut this_order = if self.cfg.lower_order_final {
            order.min(self.timesteps.len() - i)
        } else {
            order
        };
        this_order = this_order.min(self.lower_order_nums + 1);
        self.this_order = this_order;
        self.last_sample = Some(x.clone());
        let prev = self.predict(&x, this_order, i)?;
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
