//! `VaeConfig`: the keys of diffusers' `AutoencoderKL` config.json; unsupported
//! values are errors naming the file and key.

use crate::error::{Error, Result};
use crate::models::blocks::ResnetConfig;
use crate::models::blocks::TimeEmbeddingNorm;
use crate::models::Config;
use std::path::PathBuf;

#[derive(Clone, Debug)]
pub struct VaeConfig {
    /// The config file (for messages).
    pub path: PathBuf,
    pub in_channels: usize,
    pub out_channels: usize,
    pub block_out_channels: Vec<usize>,
    pub layers_per_block: usize,
    pub latent_channels: usize,
    pub norm_num_groups: usize,
    /// Latents are multiplied by this after encoding (the pipeline divides before decoding).
    pub scaling_factor: f64,
    /// Subtracted before scaling (SD3/Flux VAEs); `None` for Stable Diffusion 1.x/2.x.
    pub shift_factor: Option<f64>,
    pub mid_block_add_attention: bool,
    pub use_quant_conv: bool,
    pub use_post_quant_conv: bool,
}

impl VaeConfig {
    /// Reads and checks a diffusers `vae/config.json` (`force_upcast` and
    /// `sample_size` are the pipeline's business and ignored here).
    pub fn from_config(cfg: &Config) -> Result<VaeConfig> {
        let err = |key: &str, what: String| Error::file(cfg.path(), format!("key `{key}`: {what}"));
        let block_out_channels = cfg.usize_list("block_out_channels")?;
        let n = block_out_channels.len();
        if n == 0 {
            return Err(err("block_out_channels", "is empty".into()));
        }
        for (key, allowed) in [
            ("down_block_types", "DownEncoderBlock2D"),
            ("up_block_types", "UpDecoderBlock2D"),
        ] {
            let types = cfg.str_list(key)?;
            if types.len() != n {
                return Err(err(
                    key,
                    format!("has {} entries but block_out_channels has {n}", types.len()),
                ));
            }
            if let Some(t) = types.iter().find(|t| *t != allowed) {
                return Err(err(
                    key,
                    format!("`{t}` is not supported (supported: {allowed})"),
                ));
            }
        }
        cfg.choice("act_fn", "silu", &["silu", "swish"])?;
        cfg.reject(
            "latents_mean",
            "per-channel latent statistics are not applied by medsyn's pipeline",
        )?;
        cfg.reject(
            "latents_std",
            "per-channel latent statistics are not applied by medsyn's pipeline",
        )?;
        let norm_num_groups = cfg.usize_or("norm_num_groups", 32)?;
        if let Some(c) = block_out_channels
            .iter()
            .find(|&&c| norm_num_groups == 0 || c % norm_num_groups != 0)
        {
            return Err(err(
                "norm_num_groups",
                format!("{norm_num_groups} groups do not divide {c} channels"),
            ));
        }
        Ok(VaeConfig {
            path: cfg.path().to_path_buf(),
            in_channels: cfg.usize_or("in_channels", 3)?,
            out_channels: cfg.usize_or("out_channels", 3)?,
            layers_per_block: cfg.usize_or("layers_per_block", 1)?,
            latent_channels: cfg.usize_or("latent_channels", 4)?,
            norm_num_groups,
            scaling_factor: cfg.f64_or("scaling_factor", 0.18215)?,
            shift_factor: cfg.opt_f64("shift_factor")?,
            mid_block_add_attention: cfg.bool_or("mid_block_add_attention", true)?,
            use_quant_conv: cfg.bool_or("use_quant_conv", true)?,
            use_post_quant_conv: cfg.bool_or("use_post_quant_conv", true)?,
            block_out_channels,
        })
    }

    /// Spatial downsampling factor between images and latents (2^(levels − 1)).
    pub fn scale_factor(&self) -> usize {
        1 << (self.block_out_channels.len() - 1)
    }

    /// A VAE ResNet block (no time embedding, eps 1e-6).
    pub(crate) fn resnet(&self, in_channels: usize, out_channels: usize) -> ResnetConfig {
        ResnetConfig {
            in_channels,
            out_channels,
            temb_channels: None,
            groups: self.norm_num_groups,
            groups_out: None,
            eps: 1e-6,
            time_embedding_norm: TimeEmbeddingNorm::Default,
            output_scale_factor: 1.0,
        }
    }
}
