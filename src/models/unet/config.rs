//! `UNetConfig`: the keys of diffusers' `UNet2DConditionModel` config.json that Stable
//! Diffusion 1.x/2.x use, resolved per block (diffusers' legacy head-count rule
//! included); unsupported values are errors naming the file and key.

use crate::error::{Error, Result};
use crate::models::blocks::{Activation, ResnetConfig, TimeEmbeddingNorm, Transformer2DConfig};
use crate::models::Config;
use serde_json::Value;
use std::path::PathBuf;

/// A down block type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DownBlockType {
    CrossAttnDownBlock2D,
    DownBlock2D,
}

/// An up block type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpBlockType {
    UpBlock2D,
    CrossAttnUpBlock2D,
}

impl DownBlockType {
    pub const SUPPORTED: [&'static str; 2] = ["CrossAttnDownBlock2D", "DownBlock2D"];
    pub fn has_cross_attention(self) -> bool {
        self == DownBlockType::CrossAttnDownBlock2D
    }
}

impl UpBlockType {
    pub const SUPPORTED: [&'static str; 2] = ["UpBlock2D", "CrossAttnUpBlock2D"];
    pub fn has_cross_attention(self) -> bool {
        self == UpBlockType::CrossAttnUpBlock2D
    }
}

/// Keys whose non-default values select architecture parts medsyn does not build.
const REJECTED: [(&str, &str); 10] = [
    (
        "dual_cross_attention",
        "dual cross-attention (versatile diffusion) is not implemented",
    ),
    ("class_embed_type", "class embeddings are not implemented"),
    ("num_class_embeds", "class embeddings are not implemented"),
    (
        "addition_embed_type",
        "added (SDXL-style) embeddings are not implemented",
    ),
    ("encoder_hid_dim", "an encoder_hid_proj is not implemented"),
    (
        "encoder_hid_dim_type",
        "an encoder_hid_proj is not implemented",
    ),
    (
        "cross_attention_norm",
        "a cross-attention norm is not implemented",
    ),
    (
        "resnet_skip_time_act",
        "skipping the time-embedding activation is not implemented",
    ),
    (
        "reverse_transformer_layers_per_block",
        "asymmetric transformer depths are not implemented",
    ),
    (
        "class_embeddings_concat",
        "class embeddings are not implemented",
    ),
];

/// The resolved configuration of a `UNet2DConditionModel`. Per-block lists have one
/// entry per down block (in down order; up blocks use them reversed).
#[derive(Clone, Debug)]
pub struct UNetConfig {
    /// The config file (for messages).
    pub path: PathBuf,
    /// Latent height/width the model was trained at (diffusers' `sample_size`; 64 when unset).
    pub sample_size: usize,
    pub in_channels: usize,
    pub out_channels: usize,
    pub center_input_sample: bool,
    pub flip_sin_to_cos: bool,
    pub freq_shift: f64,
    pub down_block_types: Vec<DownBlockType>,
    /// `UNetMidBlock2DCrossAttn` when true, no mid block when false (`null`).
    pub mid_block: bool,
    pub up_block_types: Vec<UpBlockType>,
    pub only_cross_attention: Vec<bool>,
    pub block_out_channels: Vec<usize>,
    pub layers_per_block: Vec<usize>,
    pub downsample_padding: usize,
    pub mid_block_scale_factor: f64,
    pub norm_num_groups: usize,
    pub norm_eps: f64,
    pub cross_attention_dim: Vec<usize>,
    pub transformer_layers_per_block: Vec<usize>,
    /// Attention heads per block (diffusers' legacy rule: `num_attention_heads`, or
    /// `attention_head_dim` when that is null — which then means the head count).
    pub num_attention_heads: Vec<usize>,
    pub use_linear_projection: bool,
    pub upcast_attention: bool,
    pub resnet_time_scale_shift: TimeEmbeddingNorm,
    /// Width of the time embedding (`time_embedding_dim`, default 4·block_out_channels[0]).
    pub time_embed_dim: usize,
    pub time_embedding_act_fn: Option<Activation>,
    pub timestep_post_act: Option<Activation>,
    pub time_cond_proj_dim: Option<usize>,
    pub conv_in_kernel: usize,
    pub conv_out_kernel: usize,
}

impl UNetConfig {
    /// Reads and checks a diffusers `unet/config.json`.
    pub fn from_config(cfg: &Config) -> Result<UNetConfig> {
        let err = |key: &str, what: String| Error::file(cfg.path(), format!("key `{key}`: {what}"));
        for (key, why) in REJECTED {
            cfg.reject(key, why)?;
        }
        let dropout = cfg.f64_or("dropout", 0.0)?;
        if dropout != 0.0 {
            return Err(err(
                "dropout",
                format!("{dropout} is not supported: medsyn's U-Net applies no dropout"),
            ));
        }
        cfg.choice("time_embedding_type", "positional", &["positional"])?;
        cfg.choice("attention_type", "default", &["default"])?;
        let out_scale = cfg.f64_or("resnet_out_scale_factor", 1.0)?;
        if out_scale != 1.0 {
            return Err(err(
                "resnet_out_scale_factor",
                format!("{out_scale} is not supported (only 1.0)"),
            ));
        }

        let down_names = cfg.str_list("down_block_types")?;
        let down_block_types = down_names
            .iter()
            .map(|n| match n.as_str() {
                "CrossAttnDownBlock2D" => Ok(DownBlockType::CrossAttnDownBlock2D),
                "DownBlock2D" => Ok(DownBlockType::DownBlock2D),
                other => Err(err(
                    "down_block_types",
                    format!(
                        "`{other}` is not supported (supported: {})",
                        DownBlockType::SUPPORTED.join(", ")
                    ),
                )),
            })
            .collect::<Result<Vec<_>>>()?;
        let up_block_types = cfg
            .str_list("up_block_types")?
            .iter()
            .map(|n| match n.as_str() {
                "UpBlock2D" => Ok(UpBlockType::UpBlock2D),
                "CrossAttnUpBlock2D" => Ok(UpBlockType::CrossAttnUpBlock2D),
                other => Err(err(
                    "up_block_types",
                    format!(
                        "`{other}` is not supported (supported: {})",
                        UpBlockType::SUPPORTED.join(", ")
                    ),
                )),
            })
            .collect::<Result<Vec<_>>>()?;
        let n = down_block_types.len();
        if n == 0 {
            return Err(err("down_block_types", "is empty".into()));
        }
        if up_block_types.len() != n {
            return Err(err(
                "up_block_types",
                format!(
                    "has {} entries but down_block_types has {n}",
                    up_block_types.len()
                ),
            ));
        }
        // The raw value distinguishes an absent key (diffusers' default) from null (no mid block).
        let mid_block = match cfg.value().get("mid_block_type") {
            None => true,
            Some(Value::Null) => false,
            Some(Value::String(s)) if s == "UNetMidBlock2DCrossAttn" => true,
            Some(v) => {
                return Err(err(
                    "mid_block_type",
                    format!("{v} is not supported (supported: UNetMidBlock2DCrossAttn, null)"),
                ))
            }
        };

        let block_out_channels = cfg.usize_list("block_out_channels")?;
        if block_out_channels.len() != n {
            return Err(err(
                "block_out_channels",
                format!(
                    "has {} entries but down_block_types has {n}",
                    block_out_channels.len()
                ),
            ));
        }
        let per_block_or = |key: &str, default: usize| -> Result<Vec<usize>> {
            if cfg.has(key) {
                if let Some(Value::Array(a)) = cfg.get(key) {
                    if a.iter().any(Value::is_array) {
                        return Err(err(
                            key,
                            "nested lists (asymmetric U-Nets) are not supported".into(),
                        ));
                    }
                }
                cfg.usize_per_block(key, n)
            } else {
                Ok(vec![default; n])
            }
        };
        let layers_per_block = per_block_or("layers_per_block", 2)?;
        let transformer_layers_per_block = per_block_or("transformer_layers_per_block", 1)?;
        let cross_attention_dim = cfg.usize_per_block("cross_attention_dim", n)?;
        let num_attention_heads = if cfg.has("num_attention_heads") {
            cfg.usize_per_block("num_attention_heads", n)?
        } else {
            cfg.usize_per_block("attention_head_dim", n).map_err(|e| {
                e.context("the head counts come from `attention_head_dim` (diffusers' legacy meaning) when `num_attention_heads` is null")
            })?
        };
        let only_cross_attention = match cfg.get("only_cross_attention") {
            None => vec![false; n],
            Some(Value::Bool(b)) => vec![*b; n],
            Some(Value::Array(a)) if a.len() == n && a.iter().all(Value::is_boolean) => {
                a.iter().map(|v| v.as_bool().unwrap_or(false)).collect()
            }
            Some(v) => {
                return Err(err(
                    "only_cross_attention",
                    format!("expected true/false or a list of {n} of them, got {v}"),
                ))
            }
        };
        let norm_num_groups = cfg.usize_or("norm_num_groups", 32)?;
        for (i, (&c, &h)) in block_out_channels
            .iter()
            .zip(&num_attention_heads)
            .enumerate()
        {
            if c % norm_num_groups != 0 {
                return Err(err(
                    "norm_num_groups",
                    format!("{norm_num_groups} groups do not divide block {i}'s {c} channels"),
                ));
            }
            if h == 0 || c % h != 0 {
                return Err(err(
                    if cfg.has("num_attention_heads") {
                        "num_attention_heads"
                    } else {
                        "attention_head_dim"
                    },
                    format!("{h} heads do not divide block {i}'s {c} channels"),
                ));
            }
        }
        // The blocks use the fused GroupNorm+SiLU: only SiLU.
        cfg.choice("act_fn", "silu", &["silu", "swish"])?;
        let shift = cfg.str_or("resnet_time_scale_shift", "default")?;
        let resnet_time_scale_shift = TimeEmbeddingNorm::from_name(&shift).ok_or_else(|| {
            err(
                "resnet_time_scale_shift",
                format!(
                    "`{shift}` is not supported (supported: {})",
                    TimeEmbeddingNorm::SUPPORTED.join(", ")
                ),
            )
        })?;
        let odd_kernel = |key: &str| -> Result<usize> {
            let k = cfg.usize_or(key, 3)?;
            if k % 2 == 0 {
                return Err(err(
                    key,
                    format!("{k}: only odd kernel sizes keep the size"),
                ));
            }
            Ok(k)
        };
        let sample_size = match cfg.get("sample_size") {
            None => 64,
            Some(Value::Array(a)) => a.first().and_then(Value::as_u64).ok_or_else(|| {
                err(
                    "sample_size",
                    "expected an integer or [height, width]".into(),
                )
            })? as usize,
            Some(_) => cfg.usize("sample_size")?,
        };
        Ok(UNetConfig {
            path: cfg.path().to_path_buf(),
            sample_size,
            in_channels: cfg.usize_or("in_channels", 4)?,
            out_channels: cfg.usize_or("out_channels", 4)?,
            center_input_sample: cfg.bool_or("center_input_sample", false)?,
            flip_sin_to_cos: cfg.bool_or("flip_sin_to_cos", true)?,
            freq_shift: cfg.f64_or("freq_shift", 0.0)?,
            down_block_types,
            mid_block,
            up_block_types,
            only_cross_attention,
            layers_per_block,
            downsample_padding: cfg.usize_or("downsample_padding", 1)?,
            mid_block_scale_factor: cfg.f64_or("mid_block_scale_factor", 1.0)?,
            norm_num_groups,
            norm_eps: cfg.f64_or("norm_eps", 1e-5)?,
            cross_attention_dim,
            transformer_layers_per_block,
            num_attention_heads,
            use_linear_projection: cfg.bool_or("use_linear_projection", false)?,
            upcast_attention: cfg.bool_or("upcast_attention", false)?,
            resnet_time_scale_shift,
            time_embed_dim: cfg.usize_or("time_embedding_dim", 4 * block_out_channels[0])?,
            block_out_channels,
            time_embedding_act_fn: Activation::from_config(cfg, "time_embedding_act_fn", None)?,
            timestep_post_act: Activation::from_config(cfg, "timestep_post_act", None)?,
            time_cond_proj_dim: cfg.opt_usize("time_cond_proj_dim")?,
            conv_in_kernel: odd_kernel("conv_in_kernel")?,
            conv_out_kernel: odd_kernel("conv_out_kernel")?,
        })
    }

    /// Number of 2× upsamplers (the sample's height and width must be multiples of 2^this).
    pub fn num_upsamplers(&self) -> usize {
        self.block_out_channels.len() - 1
    }

    /// A ResNet block of this U-Net (time embedding, groups, eps from the config).
    pub fn resnet(
        &self,
        in_channels: usize,
        out_channels: usize,
        output_scale_factor: f64,
    ) -> ResnetConfig {
        ResnetConfig {
            in_channels,
            out_channels,
            temb_channels: Some(self.time_embed_dim),
            groups: self.norm_num_groups,
            groups_out: None,
            eps: self.norm_eps,
            time_embedding_norm: self.resnet_time_scale_shift,
            output_scale_factor,
        }
    }

    /// The Transformer2DModel of a block with `channels` channels, `heads` heads
    /// (head width channels / heads, as diffusers' cross-attention blocks compute it).
    pub fn transformer(
        &self,
        channels: usize,
        heads: usize,
        num_layers: usize,
        cross_attention_dim: usize,
        only_cross_attention: bool,
    ) -> Transformer2DConfig {
        Transformer2DConfig {
            heads,
            head_dim: channels / heads,
            in_channels: channels,
            num_layers,
            cross_attention_dim,
            norm_num_groups: self.norm_num_groups,
            use_linear_projection: self.use_linear_projection,
            only_cross_attention,
            upcast_attention: self.upcast_attention,
        }
    }
}
