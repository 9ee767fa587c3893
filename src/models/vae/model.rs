//! `AutoencoderKL`: encoder → quant_conv → a diagonal Gaussian over latents;
//! post_quant_conv → decoder back to images in [-1, 1].

use super::{Decoder, Encoder, VaeConfig};
use crate::error::Result;
use crate::models::blocks::{push_named, push_params};
use crate::models::Weights;
use crate::nn::{Conv2d, Module};
use crate::tensor::{DType, Tensor};
use crate::{bail, ensure};

/// diffusers' `DiagonalGaussianDistribution`: the encoder's latent distribution.
#[derive(Clone)]
pub struct DiagonalGaussian {
    pub mean: Tensor,
    /// Log-variance, clamped to [-30, 20] as diffusers does.
    pub logvar: Tensor,
}

impl DiagonalGaussian {
    /// The most likely latent: the mean.
    pub fn mode(&self) -> Tensor {
        self.mean.clone()
    }

    /// exp(logvar / 2).
    pub fn std(&self) -> Result<Tensor> {
        self.logvar.scale(0.5)?.exp()
    }

    /// mean + std · noise, for standard-normal `noise` of the mean's shape and dtype.
    pub fn sample(&self, noise: &Tensor) -> Result<Tensor> {
        ensure!(
            noise.shape() == self.mean.shape(),
            "DiagonalGaussian::sample: noise shape {:?} differs from the latents' {:?}",
            noise.shape(),
            self.mean.shape()
        );
        self.mean.add(&self.std()?.mul(noise)?)
    }

    /// KL divergence to N(0, I) per batch item: ½·Σ(mean² + var − 1 − logvar).
    pub fn kl(&self) -> Result<Tensor> {
        let t = self
            .mean
            .square()?
            .add(&self.logvar.exp()?)?
            .sub(&self.logvar)?
            .add_scalar(-1.0)?;
        t.sum_dims(&[1, 2, 3], false)?.scale(0.5)
    }
}

pub struct AutoencoderKL {
    config: VaeConfig,
    dtype: DType,
    /// `None` for a decoder-only load.
    pub encoder: Option<Encoder>,
    pub decoder: Decoder,
    pub quant_conv: Option<Conv2d>,
    pub post_quant_conv: Option<Conv2d>,
}

impl AutoencoderKL {
    /// Builds the VAE described by `cfg` from `w` (diffusers' names); it runs in
    /// `w`'s dtype. From a file, every tensor must be used.
    pub fn load(cfg: &VaeConfig, w: &Weights) -> Result<Self> {
        let l = cfg.latent_channels;
        let vae = AutoencoderKL {
            config: cfg.clone(),
            dtype: w.dtype(),
            encoder: Some(Encoder::load(cfg, &w.pp("encoder"))?),
            quant_conv: cfg
                .use_quant_conv
                .then(|| w.conv2d("quant_conv", 2 * l, 2 * l, 1, 1, 0))
                .transpose()?,
            ..Self::decoder_parts(cfg, w)?
        };
        if w.source_name().is_some() {
            w.ensure_all_used("VAE")?;
        }
        Ok(vae)
    }

    /// Only the decoder half (post_quant_conv + decoder), for generation: the
    /// encoder's weights are not read. `encode` then fails.
    pub fn load_decoder_only(cfg: &VaeConfig, w: &Weights) -> Result<Self> {
        let vae = Self::decoder_parts(cfg, w)?;
        let unused: Vec<String> = w
            .unused()
            .into_iter()
            .filter(|n| n.starts_with("decoder.") || n.starts_with("post_quant_conv."))
            .collect();
        ensure!(
            unused.is_empty(),
            "{}: decoder tensors not described by the VAE config: {}",
            w.source_name().unwrap_or_default(),
            unused.join(", ")
        );
        Ok(vae)
    }

    fn decoder_parts(cfg: &VaeConfig, w: &Weights) -> Result<Self> {
        let l = cfg.latent_channels;
        Ok(AutoencoderKL {
            config: cfg.clone(),
            dtype: w.dtype(),
            encoder: None,
            decoder: Decoder::load(cfg, &w.pp("decoder"))?,
            quant_conv: None,
            post_quant_conv: cfg
                .use_post_quant_conv
                .then(|| w.conv2d("post_quant_conv", l, l, 1, 1, 0))
                .transpose()?,
        })
    }

    pub fn config(&self) -> &VaeConfig {
        &self.config
    }

    /// The dtype the model runs in (its weights').
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The config's `scaling_factor` (latents = scaling_factor · encoded sample).
    pub fn scaling_factor(&self) -> f64 {
        self.config.scaling_factor
    }

    /// The config's `shift_factor` (None for Stable Diffusion 1.x/2.x).
    pub fn shift_factor(&self) -> Option<f64> {
        self.config.shift_factor
    }

    fn check(&self, what: &str, x: &Tensor, channels: usize) -> Result<()> {
        ensure!(
            x.rank() == 4 && x.shape()[1] == channels,
            "VAE {what}: input must be [B, {channels}, H, W] ({}), got shape {:?}",
            self.config.path.display(),
            x.shape()
        );
        ensure!(
            x.dtype() == self.dtype,
            "VAE {what}: input is {} but the model runs in {} (its weights' dtype); convert with to_dtype",
            x.dtype(),
            self.dtype
        );
        Ok(())
    }

    /// Images [B, in_channels, H, W] in [-1, 1] → the latent distribution
    /// (mean and clamped log-variance, [B, latent_channels, H/f, W/f]).
    pub fn encode(&self, x: &Tensor) -> Result<DiagonalGaussian> {
        let Some(encoder) = &self.encoder else {
            bail!("VAE encode: this VAE was loaded decoder-only");
        };
        self.check("encode", x, self.config.in_channels)?;
        let mut moments = encoder.forward(x)?;
        if let Some(q) = &self.quant_conv {
            moments = q.forward(&moments)?;
        }
        let halves = moments.chunk(2, 1)?;
        let lo = Tensor::scalar(-30.0, self.dtype)?;
        let hi = Tensor::scalar(20.0, self.dtype)?;
        Ok(DiagonalGaussian {
            mean: halves[0].clone(),
            logvar: halves[1].maximum(&lo)?.minimum(&hi)?,
        })
    }

    /// Latents [B, latent_channels, h, w] (already divided by the scaling factor) →
    /// the decoder's raw output [B, out_channels, h·f, w·f] in [-1, 1] space.
    pub fn decode(&self, z: &Tensor) -> Result<Tensor> {
        self.check("decode", z, self.config.latent_channels)?;
        let z = match &self.post_quant_conv {
            Some(p) => p.forward(z)?,
            None => z.clone(),
        };
        self.decoder.forward(&z)
    }

    /// Every parameter under diffusers' names.
    pub fn parameters(&self) -> Vec<(String, Tensor)> {
        let mut p = Vec::new();
        if let Some(e) = &self.encoder {
            push_named(&mut p, "encoder", e.parameters());
        }
        push_named(&mut p, "decoder", self.decoder.parameters());
        if let Some(q) = &self.quant_conv {
            push_params(&mut p, "quant_conv", q);
        }
        if let Some(q) = &self.post_quant_conv {
            push_params(&mut p, "post_quant_conv", q);
        }
        p
    }
}
