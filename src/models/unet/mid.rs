//! The U-Net's `UNetMidBlock2DCrossAttn`: ResNet, then (transformer, ResNet) per layer.

use super::config::UNetConfig;
use crate::error::Result;
use crate::models::blocks::{push_named, ResnetBlock2D, Transformer2DModel};
use crate::models::Weights;
use crate::tensor::Tensor;

pub struct MidBlock {
    pub resnets: Vec<ResnetBlock2D>,
    pub attentions: Vec<Transformer2DModel>,
}

impl MidBlock {
    /// The mid block at the deepest level (weights at `mid_block`); it has one
    /// transformer layer group, as diffusers builds it, and never only-cross attention.
    pub fn load(cfg: &UNetConfig, w: &Weights) -> Result<Self> {
        let c = *cfg.block_out_channels.last().expect("at least one block");
        let scale = cfg.mid_block_scale_factor;
        let t = cfg.transformer(
            c,
            *cfg.num_attention_heads.last().expect("one per block"),
            *cfg.transformer_layers_per_block
                .last()
                .expect("one per block"),
            *cfg.cross_attention_dim.last().expect("one per block"),
            false,
        );
        let resnets = (0..2)
            .map(|j| ResnetBlock2D::load(&cfg.resnet(c, c, scale), &w.pp("resnets").pp(j)))
            .collect::<Result<_>>()?;
        let attentions = vec![Transformer2DModel::load(&t, &w.pp("attentions").pp(0))?];
        Ok(MidBlock {
            resnets,
            attentions,
        })
    }

    pub fn forward(&self, x: &Tensor, temb: &Tensor, context: &Tensor) -> Result<Tensor> {
        let mut h = self.resnets[0].forward(x, Some(temb))?;
        for (attn, resnet) in self.attentions.iter().zip(&self.resnets[1..]) {
            h = attn.forward(&h, context)?;
            h = resnet.forward(&h, Some(temb))?;
        }
        Ok(h)
    }

    pub fn parameters(&self) -> Vec<(String, Tensor)> {
        let mut p = Vec::new();
        for (j, a) in self.attentions.iter().enumerate() {
            push_named(&mut p, &format!("attentions.{j}"), a.parameters());
        }
        for (j, r) in self.resnets.iter().enumerate() {
            push_named(&mut p, &format!("resnets.{j}"), r.parameters());
        }
        p
    }
}
