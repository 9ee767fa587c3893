//! diffusers' `ResnetBlock2D`: GroupNorm+SiLU → conv → (+ time embedding) →
//! GroupNorm+SiLU → conv, plus a (1×1 conv) shortcut, divided by the output scale.

use super::push_params;
use crate::ensure;
use crate::error::Result;
use crate::models::Weights;
use crate::nn::{Conv2d, GroupNorm, Linear, Module};
use crate::tensor::Tensor;

/// How the time embedding conditions the block (`resnet_time_scale_shift`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeEmbeddingNorm {
    /// `default`: added to the features before the second norm.
    Default,
    /// `scale_shift`: norm2(h)·(1 + scale) + shift, with (scale, shift) from the embedding.
    ScaleShift,
}

impl TimeEmbeddingNorm {
    pub const SUPPORTED: [&'static str; 2] = ["default", "scale_shift"];

    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "default" => Some(TimeEmbeddingNorm::Default),
            "scale_shift" => Some(TimeEmbeddingNorm::ScaleShift),
            _ => None,
        }
    }
}

/// The constructor arguments of `ResnetBlock2D` that Stable Diffusion uses
/// (activation SiLU, pre-norm, no up/down-sampling inside the block).
#[derive(Clone, Debug)]
pub struct ResnetConfig {
    pub in_channels: usize,
    pub out_channels: usize,
    /// Width of the time embedding; `None` for the VAE's blocks (no `time_emb_proj`).
    pub temb_channels: Option<usize>,
    pub groups: usize,
    /// Groups of the second norm (default: `groups`).
    pub groups_out: Option<usize>,
    pub eps: f64,
    pub time_embedding_norm: TimeEmbeddingNorm,
    pub output_scale_factor: f64,
}

pub struct ResnetBlock2D {
    pub norm1: GroupNorm,
    pub conv1: Conv2d,
    pub time_emb_proj: Option<Linear>,
    pub norm2: GroupNorm,
    pub conv2: Conv2d,
    pub conv_shortcut: Option<Conv2d>,
    pub time_embedding_norm: TimeEmbeddingNorm,
    pub output_scale_factor: f64,
}

impl ResnetBlock2D {
    pub fn load(cfg: &ResnetConfig, w: &Weights) -> Result<ResnetBlock2D> {
        let (cin, cout) = (cfg.in_channels, cfg.out_channels);
        let groups_out = cfg.groups_out.unwrap_or(cfg.groups);
        for (what, c, g) in [("in", cin, cfg.groups), ("out", cout, groups_out)] {
            ensure!(
                g > 0 && c % g == 0,
                "ResnetBlock2D at `{}`: {c} {what} channels do not split into {g} groups (norm_num_groups)",
                w.full_name("")
            );
        }
        let proj_out = match cfg.time_embedding_norm {
            TimeEmbeddingNorm::Default => cout,
            TimeEmbeddingNorm::ScaleShift => 2 * cout,
        };
        Ok(ResnetBlock2D {
            norm1: w.group_norm("norm1", cfg.groups, cin, cfg.eps)?,
            conv1: w.conv2d("conv1", cin, cout, 3, 1, 1)?,
            time_emb_proj: cfg
                .temb_channels
                .map(|t| w.linear("time_emb_proj", t, proj_out, true))
                .transpose()?,
            norm2: w.group_norm("norm2", groups_out, cout, cfg.eps)?,
            conv2: w.conv2d("conv2", cout, cout, 3, 1, 1)?,
            conv_shortcut: (cin != cout)
                .then(|| w.conv2d("conv_shortcut", cin, cout, 1, 1, 0))
                .transpose()?,
            time_embedding_norm: cfg.time_embedding_norm,
            output_scale_factor: cfg.output_scale_factor,
        })
    }

    /// x [B, C, H, W] and, for blocks with a time projection, the embedding
    /// `temb` [B, T] (before the SiLU, which the block applies) → [B, C_out, H, W].
    pub fn forward(&self, x: &Tensor, temb: Option<&Tensor>) -> Result<Tensor> {
        let h = self.conv1.forward(&self.norm1.forward_silu(x)?)?;
        let t = match (&self.time_emb_proj, temb) {
            (Some(proj), Some(t)) => Some(proj.forward(&t.silu()?)?.unsqueeze(-1)?.unsqueeze(-1)?),
            (Some(_), None) => crate::bail!("ResnetBlock2D: this block needs a time embedding"),
            (None, _) => None,
        };
        let h = match (self.time_embedding_norm, t) {
            (TimeEmbeddingNorm::Default, Some(t)) => self.norm2.forward_silu(&h.add(&t)?)?,
            (TimeEmbeddingNorm::ScaleShift, Some(t)) => {
                let st = t.chunk(2, 1)?;
                let h = self.norm2.forward(&h)?;
                h.mul(&st[0].add_scalar(1.0)?)?.add(&st[1])?.silu()?
            }
            (_, None) => self.norm2.forward_silu(&h)?,
        };
        let h = self.conv2.forward(&h)?;
        let shortcut = match &self.conv_shortcut {
            Some(c) => c.forward(x)?,
            None => x.clone(),
        };
        let out = shortcut.add(&h)?;
        if self.output_scale_factor == 1.0 {
            Ok(out)
        } else {
            out.scale(1.0 / self.output_scale_factor)
        }
    }

    pub fn parameters(&self) -> Vec<(String, Tensor)> {
        let mut p = Vec::new();
        push_params(&mut p, "norm1", &self.norm1);
        push_params(&mut p, "conv1", &self.conv1);
        if let Some(t) = &self.time_emb_proj {
            push_params(&mut p, "time_emb_proj", t);
        }
        push_params(&mut p, "norm2", &self.norm2);
        push_params(&mut p, "conv2", &self.conv2);
        if let Some(c) = &self.conv_shortcut {
            push_params(&mut p, "conv_shortcut", c);
        }
        p
    }
}
