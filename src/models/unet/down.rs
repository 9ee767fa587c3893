//! The U-Net's down blocks: `CrossAttnDownBlock2D` (ResNet + transformer per layer)
//! and `DownBlock2D` (ResNets only), each ending in a stride-2 downsampler except
//! the last; every layer's output is kept as a skip connection.

use super::config::{DownBlockType, UNetConfig};
use crate::error::Result;
use crate::models::blocks::{push_named, Downsample2D, ResnetBlock2D, Transformer2DModel};
use crate::models::Weights;
use crate::tensor::Tensor;

pub struct DownBlock {
    pub kind: DownBlockType,
    pub resnets: Vec<ResnetBlock2D>,
    /// One per ResNet for `CrossAttnDownBlock2D`, empty for `DownBlock2D`.
    pub attentions: Vec<Transformer2DModel>,
    pub downsampler: Option<Downsample2D>,
}

impl DownBlock {
    /// Down block `i` of `cfg`, taking `in_channels` (weights at `down_blocks.i`).
    pub fn load(cfg: &UNetConfig, i: usize, in_channels: usize, w: &Weights) -> Result<Self> {
        let kind = cfg.down_block_types[i];
        let out = cfg.block_out_channels[i];
        let layers = cfg.layers_per_block[i];
        let mut resnets = Vec::with_capacity(layers);
        let mut attentions = Vec::new();
        for j in 0..layers {
            let cin = if j == 0 { in_channels } else { out };
            resnets.push(ResnetBlock2D::load(
                &cfg.resnet(cin, out, 1.0),
                &w.pp("resnets").pp(j),
            )?);
            if kind.has_cross_attention() {
                let t = cfg.transformer(
                    out,
                    cfg.num_attention_heads[i],
                    cfg.transformer_layers_per_block[i],
                    cfg.cross_attention_dim[i],
                    cfg.only_cross_attention[i],
                );
                attentions.push(Transformer2DModel::load(&t, &w.pp("attentions").pp(j))?);
            }
        }
        let last = i + 1 == cfg.block_out_channels.len();
        let downsampler = (!last)
            .then(|| {
                Downsample2D::load(
                    &w.pp("downsamplers").pp(0),
                    out,
                    out,
                    cfg.downsample_padding,
                )
            })
            .transpose()?;
        Ok(DownBlock {
            kind,
            resnets,
            attentions,
            downsampler,
        })
    }

    /// Runs the block on x, pushing each layer's output (and the downsampled
    /// output) onto `skips`; returns the block's output.
    pub fn forward(
        &self,
        x: &Tensor,
        temb: &Tensor,
        context: &Tensor,
        skips: &mut Vec<Tensor>,
    ) -> Result<Tensor> {
        let mut h = x.clone();
        for (j, resnet) in self.resnets.iter().enumerate() {
            h = resnet.forward(&h, Some(temb))?;
            if let Some(attn) = self.attentions.get(j) {
                h = attn.forward(&h, context)?;
            }
            skips.push(h.clone());
        }
        if let Some(d) = &self.downsampler {
            h = d.forward(&h)?;
            skips.push(h.clone());
        }
        Ok(h)
    }

    pub fn parameters(&self) -> Vec<(String, Tensor)> {
        let mut p = Vec::new();
        for (j, r) in self.resnets.iter().enumerate() {
            push_named(&mut p, &format!("resnets.{j}"), r.parameters());
        }
        for (j, a) in self.attentions.iter().enumerate() {
            push_named(&mut p, &format!("attentions.{j}"), a.parameters());
        }
        if let Some(d) = &self.downsampler {
            push_named(&mut p, "downsamplers.0", d.parameters());
        }
        p
    }
}
