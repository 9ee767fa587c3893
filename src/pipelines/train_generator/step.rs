//! The generator's training objective (diffusers' train_text_to_image.py): encode
//! images with the frozen VAE, noise them at random timesteps, and regress the
//! U-Net's prediction on the epsilon or v target with a mean squared error.

use crate::autograd::no_grad;
use crate::error::Result;
use crate::pipelines::stable_diffusion::StableDiffusion;
use crate::schedulers::NoiseSchedule;
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
/// an f32 scalar (computed in f32 whatever the model dtype).
pub fn diffusion_loss(
    models: &StableDiffusion,
    schedule: &NoiseSchedule,
    pixels: &Tensor,
    ids: &Tensor,
    draws: &StepNoise,
) -> Result<Tensor> {
    let (dtype, vae_dtype) = (models.dtype, models.vae_dtype());
    let latents = {
        let _g = no_grad();
        let dist = models.vae.encode(&pixels.to_dtype(vae_dtype)?)?;
        dist.sample(&draws.vae_noise.to_dtype(vae_dtype)?)?
            .to_dtype(DType::F32)?
            .scale(models.scaling_factor())?
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
    pred.sub(&target)?.square()?.mean_all()
}
