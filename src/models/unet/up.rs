//! The U-Net's up blocks: `CrossAttnUpBlock2D` and `UpBlock2D`. Each layer
//! concatenates the latest skip connection to its input along the channels; every
//! block but the last ends in a nearest ×2 upsampler + conv.

use super::config::{UNetConfig, UpBlockType};
use crate::bail;
use crate::error::Result;
use crate::models::blocks::{push_named, ResnetBlock2D, Transformer2DModel, Upsample2D};
use crate::models::Weights;
use crate::tensor::Tensor;

pub struct UpBlock {
    pub kind: UpBlockType,
    pub resnets: Vec<ResnetBlock2D>,
    /// One per ResNet for `CrossAttnUpBlock2D`, empty for `UpBlock2D`.
    pub attentions: Vec<Transformer2DModel>,
    pub upsampler: Option<Upsample2D>,
}

impl UpBlock {
    /// Up block `i` (counted from the deepest), fed `prev_channels` by the block
    /// below; per-block settings are the down blocks' reversed (weights at `up_blocks.i`).
    pub fn load(cfg: &UNetConfig, i: usize, prev_channels: usize, w: &Weights) -> Result<Self> {
        let n = cfg.block_out_channels.len();
        let rev = n - 1 - i; // the matching down block
        let kind = cfg.up_block_types[i];
        let out = cfg.block_out_channels[rev];
        let skip_in = cfg.block_out_channels[rev.saturating_sub(1)];
        let layers = cfg.layers_per_block[rev] + 1;
        let mut resnets = Vec::with_capacity(layers);
        let mut attentions = Vec::new();
        for j in 0..layers {
            let skip = if j + 1 == layers { skip_in } else { out };
            let cin = if j == 0 { prev_channels } else { out };
            resnets.push(ResnetBlock2D::load(
                &cfg.resnet(cin + skip, out, 1.0),
                &w.pp("resnets").pp(j),
            )?);
            if kind.has_cross_attention() {
                let t = cfg.transformer(
                    out,
                    cfg.num_attention_heads[rev],
                    cfg.transformer_layers_per_block[rev],
                    cfg.cross_attention_dim[rev],
                    cfg.only_cross_attention[rev],
                );
                attentions.push(Transformer2DModel::load(&t, &w.pp("attentions").pp(j))?);
            }
        }
        let upsampler = (i + 1 < n)
            .then(|| Upsample2D::load(&w.pp("upsamplers").pp(0), out, out))
            .transpose()?;
        Ok(UpBlock {
            kind,
            resnets,
            attentions,
            upsampler,
        })
    }

    /// Runs the block, taking its skip connections from the end of `skips`.
    pub fn forward(
        &self,
        x: &Tensor,
        skips: &mut Vec<Tensor>,
        temb: &Tensor,
        context: &Tensor,
    ) -> Result<Tensor> {
        let mut h = x.clone();
        for (j, resnet) in self.resnets.iter().enumerate() {
            let Some(skip) = skips.pop() else {
                bail!("U-Net: an up block ran out of skip connections");
            };
            h = Tensor::cat(&[&h, &skip], 1)?;
            h = resnet.forward(&h, Some(temb))?;
            if let Some(attn) = self.attentions.get(j) {
                h = attn.forward(&h, context)?;
            }
        }
        if let Some(u) = &self.upsampler {
            h = u.forward(&h)?;
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
        if let Some(u) = &self.upsampler {
            push_named(&mut p, "upsamplers.0", u.parameters());
        }
        p
    }
}
