//! The generator's training objective (diffusers' train_text_to_image.py): encode
//! images with the frozen VAE, noise them at random timesteps, and regress the
//! U-Net's prediction on the epsilon or v target with a mean squared error.

use crate::autograd::no_grad;
use crate::ensure;
use crate::error::Result;
use crate::pipelines::stable_diffusion::StableDiffusion;
use crate::schedulers::{NoiseSchedule, PredictionType};
use crate::tensor::{DType, Tensor};

/// The random draws of one step, explicit so a test can feed a reference's values.
pub struct StepNoise {
    /// Standard normals for the VAE posterior sample, latent-shaped.
    pub vae_noise: Tensor,
    /// The diffusion noise, latent-shaped.
    pub noise: Tensor,
    pub timesteps: Vec<usize>,
}

/// Loss of one micro-batch: `mse(unet(add_noise(z, ε, t), t, text(ids)), target)`
/// with `z = scaling_factor · (μ + σ·vae_noise)` from the VAE encoder. The loss is
/// an f32 scalar (computed in f32 whatever the model dtype). A pixel-space pipeline
/// has no VAE: `z` is the pixels and `vae_noise` is unused.
pub fn diffusion_loss(
    models: &StableDiffusion,
    schedule: &NoiseSchedule,
    pixels: &Tensor,
    ids: &Tensor,
    draws: &StepNoise,
) -> Result<Tensor> {
    weighted_diffusion_loss(models, schedule, pixels, ids, draws, None)
}

/// The loss with diffusers' `--snr_gamma` (Min-SNR weighting, arXiv 2303.09556): each
/// sample's mean squared error times `min(SNR(t), γ) / SNR(t)` (epsilon target) or
/// `min(SNR(t), γ) / (SNR(t) + 1)` (v target) or `min(SNR(t), γ)` (sample target, as
/// diffusers leaves it), then the batch mean. `None` = unweighted.
pub fn weighted_diffusion_loss(
    models: &StableDiffusion,
    schedule: &NoiseSchedule,
    pixels: &Tensor,
    ids: &Tensor,
    draws: &StepNoise,
    snr_gamma: Option<f64>,
) -> Result<Tensor> {
    let (dtype, vae_dtype) = (models.dtype, models.vae_dtype());
    let latents = match &models.vae {
        Some(vae) => {
            let _g = no_grad();
            let dist = vae.encode(&pixels.to_dtype(vae_dtype)?)?;
            dist.sample(&draws.vae_noise.to_dtype(vae_dtype)?)?
                .to_dtype(DType::F32)?
                .scale(models.scaling_factor())?
        }
        // Pixel space: the pixels in [-1, 1] are what the U-Net denoises.
        None => pixels.to_dtype(DType::F32)?.detach(),
    };
    let noise = draws.noise.to_dtype(DType::F32)?;
    let noisy = schedule.add_noise(&latents, &noise, &draws.timesteps)?;
    let target = schedule.target(&latents, &noise, &draws.timesteps)?;
    let context = models.text_encoder.forward(ids, None)?.last_hidden_state;
    let t: Vec<f64> = draws.timesteps.iter().map(|&t| t as f64).collect();
    let pred = models
        .unet
        .forward(&noisy.to_dtype(dtype)?, &t, &context.to_dtype(dtype)?)?
        .to_dtype(DType::F32)?;
    let err = pred.sub(&target)?.square()?;
    let Some(gamma) = snr_gamma else {
        return err.mean_all();
    };
    ensure!(gamma > 0.0, "--snr-gamma must be positive, got {gamma}");
    let kind = schedule.prediction_type();
    let weights: Vec<f32> = schedule
        .snr(&draws.timesteps)?
        .into_iter()
        .map(|snr| {
            let w = snr.min(gamma);
            (match kind {
                PredictionType::Epsilon => w / snr,
                PredictionType::VPrediction => w / (snr + 1.0),
                PredictionType::Sample => w,
            }) as f32
        })
        .collect();
    let w = Tensor::from_vec(weights, &[draws.timesteps.len()])?;
    err.mean_dims(&[1, 2, 3], false)?.mul(&w)?.mean_all()
}
