//! `ClipTextConfig`: transformers' `CLIPTextConfig` keys (text_encoder/config.json).

use crate::error::{Error, Result};
use crate::models::Config;
use crate::tensor::Tensor;

/// The MLP activation (`hidden_act`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClipActivation {
    /// `quick_gelu`: x·σ(1.702x), OpenAI CLIP (SD 1.x).
    QuickGelu,
    /// `gelu`: exact (erf) GELU, OpenCLIP (SD 2.x).
    Gelu,
    /// `gelu_new` / `gelu_pytorch_tanh`: the tanh approximation.
    GeluTanh,
}

impl ClipActivation {
    pub fn forward(self, x: &Tensor) -> Result<Tensor> {
        match self {
            ClipActivation::QuickGelu => x.quick_gelu(),
            ClipActivation::Gelu => x.gelu(),
            ClipActivation::GeluTanh => x.gelu_tanh(),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct ClipTextConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub max_position_embeddings: usize,
    pub hidden_act: ClipActivation,
    pub layer_norm_eps: f64,
    pub bos_token_id: i64,
    pub eos_token_id: i64,
    pub pad_token_id: i64,
    /// Only used by `CLIPTextModelWithProjection` (not by SD 1.x/2.x).
    pub projection_dim: usize,
}

impl ClipTextConfig {
    /// Reads a `CLIPTextConfig` (or the `text_config` of a full `CLIPConfig`);
    /// absent keys take transformers' defaults, unsupported values are errors
    /// naming the file and key.
    pub fn from_config(cfg: &Config) -> Result<ClipTextConfig> {
        if let Some(text) = cfg.get("text_config") {
            return Self::from_config(&Config::from_value(cfg.path(), text.clone())?);
        }
        let model_type = cfg.str_or("model_type", "clip_text_model")?;
        if model_type != "clip_text_model" {
            return Err(Error::file(
                cfg.path(),
                format!("key `model_type`: `{model_type}` is not a CLIP text model (expected clip_text_model)"),
            ));
        }
        let act = cfg.choice(
            "hidden_act",
            "quick_gelu",
            &["quick_gelu", "gelu", "gelu_new", "gelu_pytorch_tanh"],
        )?;
        let hidden_act = match act.as_str() {
            "quick_gelu" => ClipActivation::QuickGelu,
            "gelu" => ClipActivation::Gelu,
            _ => ClipActivation::GeluTanh,
        };
        if cfg.f64_or("attention_dropout", 0.0)? != 0.0 {
            return Err(Error::file(
                cfg.path(),
                "key `attention_dropout`: only 0 is supported (dropout is not implemented)",
            ));
        }
        let id = |key: &str, default: i64| -> Result<i64> {
            match cfg.get(key) {
                None => Ok(default),
                Some(v) => v.as_i64().ok_or_else(|| {
                    Error::file(
                        cfg.path(),
                        format!("key `{key}`: expected an integer, got {v}"),
                    )
                }),
            }
        };
        let c = ClipTextConfig {
            vocab_size: cfg.usize_or("vocab_size", 49408)?,
            hidden_size: cfg.usize_or("hidden_size", 512)?,
            intermediate_size: cfg.usize_or("intermediate_size", 2048)?,
            num_hidden_layers: cfg.usize_or("num_hidden_layers", 12)?,
            num_attention_heads: cfg.usize_or("num_attention_heads", 8)?,
            max_position_embeddings: cfg.usize_or("max_position_embeddings", 77)?,
            hidden_act,
            layer_norm_eps: cfg.f64_or("layer_norm_eps", 1e-5)?,
            bos_token_id: id("bos_token_id", 49406)?,
            eos_token_id: id("eos_token_id", 49407)?,
            pad_token_id: id("pad_token_id", 1)?,
            projection_dim: cfg.usize_or("projection_dim", 512)?,
        };
        let heads = c.num_attention_heads;
        if heads == 0 || !c.hidden_size.is_multiple_of(heads) {
            return Err(Error::file(
                cfg.path(),
                format!(
                    "key `num_attention_heads`: {heads} does not divide hidden_size {}",
                    c.hidden_size
                ),
            ));
        }
        if c.num_hidden_layers == 0 {
            return Err(Error::file(
                cfg.path(),
                "key `num_hidden_layers`: must be at least 1",
            ));
        }
        Ok(c)
    }

    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }
}
