//! The VAE encoder: conv_in → `DownEncoderBlock2D`s (ResNets, then a stride-2 conv
//! after a (0, 1, 0, 1) pad, except the last) → mid block → GroupNorm+SiLU → conv_out
//! to 2·latent_channels (mean and log-variance).

use super::{VaeConfig, VaeMidBlock};
use crate::error::Result;
use crate::models::blocks::{push_named, push_params, Downsample2D, ResnetBlock2D};
use crate::models::Weights;
use crate::nn::{Conv2d, GroupNorm, Module};
use crate::tensor::Tensor;

pub struct DownEncoderBlock {
    pub resnets: Vec<ResnetBlock2D>,
    pub downsampler: Option<Downsample2D>,
}

pub struct Encoder {
    pub conv_in: Conv2d,
    pub down_blocks: Vec<DownEncoderBlock>,
    pub mid_block: VaeMidBlock,
    pub conv_norm_out: GroupNorm,
    pub conv_out: Conv2d,
}

impl Encoder {
    /// The encoder at `w` (`encoder.` in a diffusers VAE).
    pub fn load(cfg: &VaeConfig, w: &Weights) -> Result<Self> {
        let boc = &cfg.block_out_channels;
        let conv_in = w.conv2d("conv_in", cfg.in_channels, boc[0], 3, 1, 1)?;
        let mut down_blocks = Vec::with_capacity(boc.len());
        let mut cin = boc[0];
        for (i, &out) in boc.iter().enumerate() {
            let bw = w.pp("down_blocks").pp(i);
            let resnets = (0..cfg.layers_per_block)
                .map(|j| {
                    let c = if j == 0 { cin } else { out };
                    ResnetBlock2D::load(&cfg.resnet(c, out), &bw.pp("resnets").pp(j))
                })
                .collect::<Result<_>>()?;
            let downsampler = (i + 1 < boc.len())
                .then(|| Downsample2D::load(&bw.pp("downsamplers").pp(0), out, out, 0))
                .transpose()?;
            down_blocks.push(DownEncoderBlock {
                resnets,
                downsampler,
            });
            cin = out;
        }
        let last = *boc.last().expect("checked non-empty");
        Ok(Encoder {
            conv_in,
            down_blocks,
            mid_block: VaeMidBlock::load(cfg, &w.pp("mid_block"))?,
            conv_norm_out: w.group_norm("conv_norm_out", cfg.norm_num_groups, last, 1e-6)?,
            conv_out: w.conv2d("conv_out", last, 2 * cfg.latent_channels, 3, 1, 1)?,
        })
    }

    /// Images [B, in_channels, H, W] → moments [B, 2·latent_channels, H/f, W/f].
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = self.conv_in.forward(x)?;
        for block in &self.down_blocks {
            for r in &block.resnets {
                h = r.forward(&h, None)?;
            }
            if let Some(d) = &block.downsampler {
                h = d.forward(&h)?;
            }
        }
        h = self.mid_block.forward(&h)?;
        self.conv_out.forward(&self.conv_norm_out.forward_silu(&h)?)
    }

    pub fn parameters(&self) -> Vec<(String, Tensor)> {
        let mut p = Vec::new();
        push_params(&mut p, "conv_in", &self.conv_in);
        for (i, b) in self.down_blocks.iter().enumerate() {
            for (j, r) in b.resnets.iter().enumerate() {
                push_named(
                    &mut p,
                    &format!("down_blocks.{i}.resnets.{j}"),
                    r.parameters(),
                );
            }
            if let Some(d) = &b.downsampler {
                push_named(
                    &mut p,
                    &format!("down_blocks.{i}.downsamplers.0"),
                    d.parameters(),
                );
            }
        }
        push_named(&mut p, "mid_block", self.mid_block.parameters());
        push_params(&mut p, "conv_norm_out", &self.conv_norm_out);
        push_params(&mut p, "conv_out", &self.conv_out);
        p
    }
}
