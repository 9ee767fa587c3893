//! `StableDiffusion`: diffusers' text-to-image sampling loop over the loaded
//! components — prompt encoding with classifier-free guidance, the scheduler loop
//! over the U-Net, and VAE decoding — with the same arithmetic as
//! `StableDiffusionPipeline.__call__`.

use super::folder::PipelineFolder;
use crate::autograd::no_grad;
use crate::error::{Context, Result};
use crate::io::TensorSet;
use crate::models::clip::{ClipTextConfig, ClipTextModel, ClipTokenizer};
use crate::models::unet::{UNet2DConditionModel, UNetConfig};
use crate::models::vae::{AutoencoderKL, VaeConfig};
use crate::models::{Config, Weights};
use crate::schedulers::Scheduler;
use crate::tensor::{DType, Device, Tensor};
use crate::{bail, ensure};
use std::path::Path;

/// The loaded pipeline. Latents are kept in f32 between steps whatever the model
/// dtype (the U-Net sees them cast to its dtype); the VAE runs in f32 when the
/// model dtype is f16 and its config asks for `force_upcast`, as diffusers does.
/// Without a VAE (a pixel-space folder, see [`PipelineFolder::is_pixel_space`]) the
/// "latents" are the RGB pixels in [-1, 1].
pub struct StableDiffusion {
    pub folder: PipelineFolder,
    pub tokenizer: ClipTokenizer,
    pub text_encoder: ClipTextModel,
    pub unet: UNet2DConditionModel,
    /// None for a pixel-space pipeline.
    pub vae: Option<AutoencoderKL>,
    pub scheduler_config: Config,
    pub dtype: DType,
    /// Where the weights live (`to_device`); latents and embeddings follow them.
    pub device: Device,
    vae_dtype: DType,
    vae_scale_factor: usize,
    scaling_factor: f64,
}

/// Prompts after tokenization, with what truncation cut (diffusers warns about it).
pub struct EncodedPrompts {
    /// [2B, L, D] (negatives first) with guidance, [B, L, D] without.
    pub embeds: Tensor,
    /// (prompt index, removed text) for every prompt cut at the tokenizer's limit.
    pub truncated: Vec<(usize, String)>,
}

impl StableDiffusion {
    /// Loads every component of a diffusers folder in `dtype` (weights memory-mapped).
    pub fn load(root: &Path, dtype: DType) -> Result<StableDiffusion> {
        ensure!(
            dtype.is_float(),
            "generation runs in f32, bf16 or f16, not {dtype:?}"
        );
        let folder = PipelineFolder::open(root)?;
        let tokenizer = ClipTokenizer::from_dir(&folder.component("tokenizer"))?;

        let text_cfg = ClipTextConfig::from_config(&folder.config("text_encoder")?)?;
        let set = TensorSet::open(folder.component("text_encoder"))?;
        let text_encoder = ClipTextModel::load(&text_cfg, &Weights::from_set(&set, dtype))?;

        let unet_cfg = UNetConfig::from_config(&folder.config("unet")?)?;
        if folder.is_pixel_space() {
            let c = unet_cfg.in_channels;
            ensure!(
                c == 3 && unet_cfg.out_channels == 3,
                "{}: a pixel-space pipeline (no vae/) needs a U-Net with 3 input and 3 output channels (RGB), this one has {c} and {}",
                folder.root.display(),
                unet_cfg.out_channels
            );
        }
        let set = TensorSet::open(folder.component("unet"))?;
        let unet = UNet2DConditionModel::load(&unet_cfg, &Weights::from_set(&set, dtype))?;

        let (vae, vae_dtype, vae_scale_factor, scaling_factor) = if folder.is_pixel_space() {
            (None, dtype, 1, 1.0)
        } else {
            let vae_config = folder.config("vae")?;
            let force_upcast = vae_config.bool_or("force_upcast", true)?;
            let vae_dtype = if dtype == DType::F16 && force_upcast {
                DType::F32
            } else {
                dtype
            };
            let vae_cfg = VaeConfig::from_config(&vae_config)?;
            let set = TensorSet::open(folder.component("vae"))?;
            let vae = AutoencoderKL::load(&vae_cfg, &Weights::from_set(&set, vae_dtype))?;
            let levels = vae_config.usize_list("block_out_channels")?.len();
            (
                Some(vae),
                vae_dtype,
                1usize << levels.saturating_sub(1),
                vae_config.f64_or("scaling_factor", 0.18215)?,
            )
        };

        let scheduler_config = folder.config("scheduler")?;
        Ok(StableDiffusion {
            folder,
            tokenizer,
            text_encoder,
            unet,
            vae,
            scheduler_config,
            dtype,
            device: Device::Cpu,
            vae_dtype,
            vae_scale_factor,
            scaling_factor,
        })
    }

    /// Moves every component's weights to `device` (generation then runs there).
    pub fn to_device(&mut self, device: Device) -> Result<()> {
        crate::nn::move_to(&self.text_encoder.parameters(), device)?;
        crate::nn::move_to(&self.unet.parameters(), device)?;
        if let Some(vae) = &self.vae {
            crate::nn::move_to(&vae.parameters(), device)?;
        }
        self.device = device;
        Ok(())
    }

    /// diffusers' default image size: the U-Net's `sample_size` × the VAE's scale factor.
    pub fn default_size(&self) -> (usize, usize) {
        let s = self.unet.config().sample_size * self.vae_scale_factor;
        (s, s)
    }

    /// The VAE's latent scaling (`scaling_factor` in its config, SD: 0.18215).
    pub fn scaling_factor(&self) -> f64 {
        self.scaling_factor
    }

    /// The dtype the VAE runs in (f32 for f16 models with `force_upcast`).
    pub fn vae_dtype(&self) -> DType {
        self.vae_dtype
    }

    pub fn vae_scale_factor(&self) -> usize {
        self.vae_scale_factor
    }

    pub fn latent_channels(&self) -> usize {
        self.unet.config().in_channels
    }

    /// Token ids [N, 77] for `texts`, padded as diffusers does, and what got truncated.
    pub fn tokenize(&self, texts: &[String]) -> Result<(Tensor, Vec<(usize, String)>)> {
        let len = self.tokenizer.max_length();
        let mut ids = Vec::with_capacity(texts.len() * len);
        let mut cut = Vec::new();
        for (i, t) in texts.iter().enumerate() {
            let enc = self.tokenizer.encode(t)?;
            if enc.truncated {
                cut.push((i, enc.dropped_text.clone()));
            }
            ids.extend_from_slice(&enc.ids);
        }
        Ok((Tensor::from_i64(ids, &[texts.len(), len])?, cut))
    }

    /// CLIP embeddings for the prompts and, with guidance > 1, the negative prompts
    /// (an empty string when none is given), negatives first as diffusers concatenates.
    pub fn encode_prompts(
        &self,
        prompts: &[String],
        negatives: &[String],
        guidance: f64,
    ) -> Result<EncodedPrompts> {
        ensure!(
            negatives.len() == prompts.len(),
            "{} negative prompts for {} prompts",
            negatives.len(),
            prompts.len()
        );
        let _g = no_grad();
        let (ids, truncated) = self.tokenize(prompts)?;
        let ids = if guidance > 1.0 {
            // diffusers tokenizes the negatives to the prompt embeddings' length and
            // reports no truncation for them.
            let (neg, _) = self.tokenize(negatives)?;
            Tensor::cat(&[&neg, &ids], 0)?
        } else {
            ids
        };
        let embeds = self.text_encoder.forward(&ids, None)?.last_hidden_state;
        Ok(EncodedPrompts { embeds, truncated })
    }

    /// Runs the scheduler loop from `latents` ([B, C, h, w], f32, already scaled by
    /// `init_noise_sigma`). `noise(step)` supplies fresh noise for stochastic
    /// schedulers. Returns the final latents (diffusers' output_type "latent").
    pub fn denoise(
        &self,
        latents: Tensor,
        embeds: &Tensor,
        guidance: f64,
        scheduler: &mut dyn Scheduler,
        mut noise: impl FnMut(usize) -> Result<Tensor>,
        mut on_step: impl FnMut(usize),
    ) -> Result<Tensor> {
        let _g = no_grad();
        let guided = guidance > 1.0;
        let batch = latents.dim(0)?;
        ensure!(
            embeds.dim(0)? == if guided { 2 * batch } else { batch },
            "prompt embeddings for {} rows, latents for {batch} images",
            embeds.dim(0)?
        );
        let mut latents = latents.to_device(self.device)?.to_dtype(DType::F32)?;
        let on_host = self.device == Device::Cpu;
        let timesteps = scheduler.timesteps().to_vec();
        for (i, &t) in timesteps.iter().enumerate() {
            let input = if guided {
                Tensor::cat(&[&latents, &latents], 0)?
            } else {
                latents.clone()
            };
            let input = scheduler.scale_model_input(&input, i)?;
            let out = self
                .unet
                .forward(&input.to_dtype(self.dtype)?, &[t], embeds)
                .with_context(|| format!("U-Net at step {i} (t = {t})"))?
                .to_dtype(DType::F32)?;
            let pred = if guided {
                let halves = out.chunk(2, 0)?;
                let (uncond, text) = (&halves[0], &halves[1]);
                uncond.add(&text.sub(uncond)?.scale(guidance)?)?
            } else {
                out
            };
            let step_noise = if scheduler.needs_noise() {
                Some(noise(i)?)
            } else {
                None
            };
            latents = scheduler.step(&pred, i, &latents, step_noise.as_ref())?;
            // On a GPU, reading the latents back every step would stall the queue: NaN/inf
            // persist through the scheduler's arithmetic, so one check after the loop finds them.
            if on_host {
                check_finite(&latents, Some(i))?;
            }
            on_step(i);
        }
        if !on_host {
            check_finite(&latents, None)?;
        }
        Ok(latents)
    }

    /// Decodes latents to images in [0, 1] ([B, 3, H, W], f32), as diffusers'
    /// `vae.decode(latents / scaling_factor)` then `(x / 2 + 0.5).clamp(0, 1)`
    /// (pixel space: the latents are the pixels in [-1, 1]).
    pub fn decode(&self, latents: &Tensor) -> Result<Tensor> {
        let _g = no_grad();
        let x = match &self.vae {
            Some(vae) => {
                let z = latents
                    .scale(1.0 / self.scaling_factor)?
                    .to_dtype(self.vae_dtype)?;
                vae.decode(&z)?.to_dtype(DType::F32)?
            }
            None => latents.to_dtype(DType::F32)?,
        };
        x.affine(0.5, 0.5)?.clamp(0.0, 1.0)
    }

    /// The initial latents from standard normals: `noise * init_noise_sigma`.
    pub fn initial_latents(&self, noise: &Tensor, scheduler: &dyn Scheduler) -> Result<Tensor> {
        let shape = noise.shape();
        if shape.len() != 4 || shape[1] != self.latent_channels() {
            bail!(
                "latents must be [N, {}, h, w], got {shape:?}",
                self.latent_channels()
            );
        }
        noise
            .to_dtype(DType::F32)?
            .scale(scheduler.init_noise_sigma())
    }
}

fn check_finite(latents: &Tensor, step: Option<usize>) -> Result<()> {
    let bad = latents.to_vec_f32().iter().any(|x| !x.is_finite());
    if bad {
        let when = step.map_or("by the last step".to_string(), |s| format!("at step {s}"));
        bail!("the latents became NaN/inf {when}: try --dtype f32 or bf16 (f16 overflows in some models)");
    }
    Ok(())
}
