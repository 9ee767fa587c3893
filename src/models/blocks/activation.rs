//! The activations diffusers configs name (`act_fn`, `time_embedding_act_fn`, ...).

use crate::error::Result;
use crate::models::Config;
use crate::tensor::Tensor;

/// An activation chosen by name in a config.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// `silu` / `swish`: x·σ(x).
    Silu,
    /// `gelu`: the exact (erf) GELU.
    Gelu,
}

impl Activation {
    /// The names accepted in configs.
    pub const SUPPORTED: [&'static str; 3] = ["silu", "swish", "gelu"];

    /// Parses a name; `None` for an unsupported one.
    pub fn from_name(name: &str) -> Option<Activation> {
        match name {
            "silu" | "swish" => Some(Activation::Silu),
            "gelu" => Some(Activation::Gelu),
            _ => None,
        }
    }

    /// The activation named by `key` (`default` when absent or null; `None` when
    /// the default is `None` and the key is unset); other names are an error that
    /// names the file and key.
    pub fn from_config(cfg: &Config, key: &str, default: Option<&str>) -> Result<Option<Self>> {
        let name = match (cfg.opt_str(key)?, default) {
            (Some(n), _) => n,
            (None, Some(d)) => d.to_string(),
            (None, None) => return Ok(None),
        };
        cfg.choice(key, &name, &Self::SUPPORTED)?;
        Ok(Self::from_name(&name))
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Activation::Silu => x.silu(),
            Activation::Gelu => x.gelu(),
        }
    }
}
