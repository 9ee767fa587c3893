//! The training-side noise schedule as diffusers' `DDPMScheduler` provides it to
//! training scripts: `add_noise`, `get_velocity`, the loss target per prediction
//! type and the SNR of min-SNR weighting.

use super::betas::{alphas_cumprod, betas, BetaConfig};
use super::config::PredictionType;
use crate::error::Result;
use crate::models::config::Config;
use crate::tensor::{DType, Tensor};
use crate::{bail, ensure};
use half::{bf16, f16};
use serde_json::json;

/// `alphas_cumprod` and the prediction type of a DDPM training schedule.
#[derive(Clone, Debug)]
pub struct NoiseSchedule {
    alphas_cumprod: Vec<f32>,
    prediction_type: PredictionType,
}

/// Rounds an f32 result to `dtype` (torch computes half ops in f32, then rounds).
fn round_to(dtype: DType, x: f32) -> f64 {
    match dtype {
        DType::BF16 => bf16::from_f32(x).to_f64(),
        DType::F16 => f16::from_f32(x).to_f64(),
        _ => x as f64,
    }
}

impl NoiseSchedule {
    /// From a model folder's `scheduler_config.json` read as
    /// `DDPMScheduler.from_config(file)` (None: DDPM's defaults), with an optional
    /// prediction-type override (training scripts' `--prediction_type`).
    pub fn from_config(folder: Option<&Config>, prediction_type: Option<&str>) -> Result<Self> {
        let empty;
        let cfg = match folder {
            Some(c) => c,
            None => {
                empty = Config::from_value("<DDPMScheduler defaults>", json!({}))?;
                &empty
            }
        };
        let read = || -> Result<Self> {
            cfg.reject("thresholding", "dynamic thresholding is not implemented")?;
            let b = BetaConfig::read(cfg, true)?;
            let pred = match prediction_type {
                Some(p) => p.to_string(),
                None => cfg.str_or("prediction_type", "epsilon")?,
            };
            Ok(NoiseSchedule {
                alphas_cumprod: alphas_cumprod(&betas(&b)),
                prediction_type: PredictionType::parse(&pred)?,
            })
        };
        read().map_err(|e| e.context("DDPMScheduler (training noise schedule)"))
    }

    pub fn num_train_timesteps(&self) -> usize {
        self.alphas_cumprod.len()
    }

    pub fn prediction_type(&self) -> PredictionType {
        self.prediction_type
    }

    /// ᾱ_t for every training timestep (float32, as diffusers').
    pub fn alphas_cumprod(&self) -> &[f32] {
        &self.alphas_cumprod
    }

    /// Per-sample coefficients [B, 1, ..., 1] of `x`'s dtype: (√ᾱ_t, √(1−ᾱ_t)),
    /// computed as diffusers does after casting ᾱ to the sample dtype.
    fn coeffs(&self, x: &Tensor, timesteps: &[usize], what: &str) -> Result<(Tensor, Tensor)> {
        let dtype = x.dtype();
        ensure!(
            dtype.is_float(),
            "{what}: needs a float sample, got {dtype}"
        );
        ensure!(
            x.rank() >= 1 && x.dim(0)? == timesteps.len(),
            "{what}: {} timesteps for a batch of shape {:?}",
            timesteps.len(),
            x.shape()
        );
        let (mut sa, mut sb) = (vec![], vec![]);
        for &t in timesteps {
            let Some(&a) = self.alphas_cumprod.get(t) else {
                bail!(
                    "{what}: timestep {t} is outside 0..{}",
                    self.alphas_cumprod.len()
                );
            };
            if dtype == DType::F64 {
                let a = a as f64;
                sa.push(a.sqrt());
                sb.push((1.0 - a).sqrt());
            } else {
                let a = round_to(dtype, a) as f32;
                sa.push(round_to(dtype, a.sqrt()));
                let one_minus = round_to(dtype, 1.0 - a) as f32;
                sb.push(round_to(dtype, one_minus.sqrt()));
            }
        }
        let mut shape = vec![1; x.rank()];
        shape[0] = timesteps.len();
        Ok((
            Tensor::from_values(sa, &shape, dtype)?,
            Tensor::from_values(sb, &shape, dtype)?,
        ))
    }

    fn check_pair(x0: &Tensor, noise: &Tensor, what: &str) -> Result<()> {
        ensure!(
            x0.shape() == noise.shape() && x0.dtype() == noise.dtype(),
            "{what}: sample {:?} {} and noise {:?} {} must match",
            x0.shape(),
            x0.dtype(),
            noise.shape(),
            noise.dtype()
        );
        Ok(())
    }

    /// x_t = √ᾱ_t · x0 + √(1−ᾱ_t) · ε, one timestep per batch row.
    pub fn add_noise(&self, x0: &Tensor, noise: &Tensor, timesteps: &[usize]) -> Result<Tensor> {
        Self::check_pair(x0, noise, "add_noise")?;
        let (a, b) = self.coeffs(x0, timesteps, "add_noise")?;
        a.mul(x0)?.add(&b.mul(noise)?)
    }

    /// v = √ᾱ_t · ε − √(1−ᾱ_t) · x0 (the v-prediction target).
    pub fn velocity(&self, x0: &Tensor, noise: &Tensor, timesteps: &[usize]) -> Result<Tensor> {
        Self::check_pair(x0, noise, "velocity")?;
        let (a, b) = self.coeffs(x0, timesteps, "velocity")?;
        a.mul(noise)?.sub(&b.mul(x0)?)
    }

    /// The loss target of the schedule's prediction type: ε, v or x0.
    pub fn target(&self, x0: &Tensor, noise: &Tensor, timesteps: &[usize]) -> Result<Tensor> {
        Self::check_pair(x0, noise, "target")?;
        match self.prediction_type {
            PredictionType::Epsilon => Ok(noise.clone()),
            PredictionType::VPrediction => self.velocity(x0, noise, timesteps),
            PredictionType::Sample => Ok(x0.clone()),
        }
    }

    /// SNR(t) = ᾱ_t / (1 − ᾱ_t) as diffusers' `training_utils.compute_snr` (f32).
    pub fn snr(&self, timesteps: &[usize]) -> Result<Vec<f64>> {
        timesteps
            .iter()
            .map(|&t| {
                let Some(&a) = self.alphas_cumprod.get(t) else {
                    bail!(
                        "snr: timestep {t} is outside 0..{}",
                        self.alphas_cumprod.len()
                    );
                };
                let r = a.sqrt() / (1.0 - a).sqrt();
                Ok((r * r) as f64)
            })
            .collect()
    }
}
