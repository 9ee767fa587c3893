//! `BertConfig`: transformers' `BertConfig` keys (a BERT checkpoint's config.json).

use crate::error::{Error, Result};
use crate::models::Config;
use crate::tensor::Tensor;
use std::path::Path;

/// The feed-forward activation (`hidden_act`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BertActivation {
    /// `gelu`: exact (erf) GELU, as BERT and Bio_ClinicalBERT use.
    Gelu,
    /// `gelu_new` / `gelu_pytorch_tanh`: the tanh approximation.
    GeluTanh,
    /// `relu`.
    Relu,
}

impl BertActivation {
    pub fn forward(self, x: &Tensor) -> Result<Tensor> {
        match self {
            BertActivation::Gelu => x.gelu(),
            BertActivation::GeluTanh => x.gelu_tanh(),
            BertActivation::Relu => x.relu(),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct BertConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub hidden_act: BertActivation,
    pub max_position_embeddings: usize,
    pub type_vocab_size: usize,
    pub layer_norm_eps: f64,
    /// Std of transformers' fresh-weight initialisation (`BertModel::new_random`).
    pub initializer_range: f64,
    /// The word embeddings' `padding_idx` (`None` when the config sets it to null):
    /// as in PyTorch, that row receives no gradient. Which keys are padding is
    /// told by the attention mask.
    pub pad_token_id: Option<i64>,
}

impl BertConfig {
    /// Reads a config.json (e.g. Bio_ClinicalBERT's, which has no `model_type`).
    pub fn load(path: impl AsRef<Path>) -> Result<BertConfig> {
        Self::from_config(&Config::load(path)?)
    }

    /// Absent keys take transformers' `BertConfig` defaults (BERT-base); settings
    /// medsyn does not implement are errors naming the file and key.
    pub fn from_config(cfg: &Config) -> Result<BertConfig> {
        let bad = |key: &str, what: String| Error::file(cfg.path(), format!("key `{key}`: {what}"));
        if let Some(t) = cfg.opt_str("model_type")? {
            if t != "bert" {
                return Err(bad(
                    "model_type",
                    format!("`{t}` is not a BERT model (expected bert)"),
                ));
            }
        }
        if let Some(p) = cfg.opt_str("position_embedding_type")? {
            if p != "absolute" {
                return Err(bad(
                    "position_embedding_type",
                    format!("`{p}` is not supported: medsyn's BERT has absolute position embeddings only"),
                ));
            }
        }
        cfg.reject("is_decoder", "medsyn's BERT is an encoder (no causal mask)")?;
        cfg.reject(
            "add_cross_attention",
            "medsyn's BERT has no cross-attention layers",
        )?;
        let act = cfg.choice(
            "hidden_act",
            "gelu",
            &["gelu", "gelu_new", "gelu_pytorch_tanh", "relu"],
        )?;
        let hidden_act = match act.as_str() {
            "gelu" => BertActivation::Gelu,
            "relu" => BertActivation::Relu,
            _ => BertActivation::GeluTanh,
        };
        let pad_token_id = match cfg.get("pad_token_id") {
            None => None,
            Some(v) => Some(
                v.as_i64()
                    .ok_or_else(|| bad("pad_token_id", format!("expected an integer, got {v}")))?,
            ),
        };
        let c = BertConfig {
            vocab_size: cfg.usize_or("vocab_size", 30522)?,
            hidden_size: cfg.usize_or("hidden_size", 768)?,
            num_hidden_layers: cfg.usize_or("num_hidden_layers", 12)?,
            num_attention_heads: cfg.usize_or("num_attention_heads", 12)?,
            intermediate_size: cfg.usize_or("intermediate_size", 3072)?,
            hidden_act,
            max_position_embeddings: cfg.usize_or("max_position_embeddings", 512)?,
            type_vocab_size: cfg.usize_or("type_vocab_size", 2)?,
            layer_norm_eps: cfg.f64_or("layer_norm_eps", 1e-12)?,
            initializer_range: cfg.f64_or("initializer_range", 0.02)?,
            pad_token_id,
        };
        c.validate().map_err(|e| Error::file(cfg.path(), e))?;
        Ok(c)
    }

    /// Checks the sizes fit together (a message naming the key on failure).
    pub fn validate(&self) -> std::result::Result<(), String> {
        let heads = self.num_attention_heads;
        if heads == 0 || !self.hidden_size.is_multiple_of(heads) {
            return Err(format!(
                "key `num_attention_heads`: {heads} does not divide hidden_size {}",
                self.hidden_size
            ));
        }
        for (key, v) in [
            ("num_hidden_layers", self.num_hidden_layers),
            ("vocab_size", self.vocab_size),
            ("intermediate_size", self.intermediate_size),
            ("max_position_embeddings", self.max_position_embeddings),
            ("type_vocab_size", self.type_vocab_size),
        ] {
            if v == 0 {
                return Err(format!("key `{key}`: must be at least 1"));
            }
        }
        if self.layer_norm_eps.is_nan() || self.layer_norm_eps <= 0.0 {
            return Err(format!(
                "key `layer_norm_eps`: must be positive, got {}",
                self.layer_norm_eps
            ));
        }
        Ok(())
    }

    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }
}
