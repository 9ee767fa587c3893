//! The VAE decoder: conv_in → mid block → `UpDecoderBlock2D`s (layers_per_block + 1
//! ResNets, then nearest ×2 + conv, except the last) → GroupNorm+SiLU → conv_out.

use super::{VaeConfig, VaeMidBlock};
use crate::error::Result;
use crate::models::blocks::{push_named, push_params, ResnetBlock2D, Upsample2D};
use crate::models::Weights;
use crate::nn::{Conv2d, GroupNorm, Module};
use crate::tensor::Tensor;

pub struct UpDecoderBlock {
    pub resnets: Vec<ResnetBlock2D>,
    pub upsampler: Option<Upsample2D>,
}

pub struct Decoder {
    pub conv_in: Conv2d,
    pub mid_block: VaeMidBlock,
    pub up_blocks: Vec<UpDecoderBlock>,
    pub conv_norm_out: GroupNorm,
    pub conv_out: Conv2d,
}

impl Decoder {
    /// The decoder at `w` (`decoder.` in a diffusers VAE).
    pub fn load(cfg: &VaeConfig, w: &Weights) -> Result<Self> {
        let boc = &cfg.block_out_channels;
        let n = boc.len();
        let deepest = boc[n - 1];
        let conv_in = w.conv2d("conv_in", cfg.latent_channels, deepest, 3, 1, 1)?;
        let mid_block = VaeMidBlock::load(cfg, &w.pp("mid_block"))?;
        let mut up_blocks = Vec::with_capacity(n);
        let mut cin = deepest;
        for i in 0..n {
            let out = boc[n - 1 - i];
            let bw = w.pp("up_blocks").pp(i);
            let resnets = (0..cfg.layers_per_block + 1)
                .map(|j| {
                    let c = if j == 0 { cin } else { out };
                    ResnetBlock2D::load(&cfg.resnet(c, out), &bw.pp("resnets").pp(j))
                })
                .collect::<Result<_>>()?;
            let upsampler = (i + 1 < n)
                .then(|| Upsample2D::load(&bw.pp("upsamplers").pp(0), out, out))
                .transpose()?;
            up_blocks.push(UpDecoderBlock { resnets, upsampler });
            cin = out;
        }
        Ok(Decoder {
            conv_in,
            mid_block,
            up_blocks,
            conv_norm_out: w.group_norm("conv_norm_out", cfg.norm_num_groups, boc[0], 1e-6)?,
            conv_out: w.conv2d("conv_out", boc[0], cfg.out_channels, 3, 1, 1)?,
        })
    }

    /// Latents [B, latent_channels, h, w] → images [B, out_channels, h·f, w·f].
    pub fn forward(&self, z: &Tensor) -> Result<Tensor> {
        let mut h = self.conv_in.forward(z)?;
        h = self.mid_block.forward(&h)?;
        for block in &self.up_blocks {
            for r in &block.resnets {
                h = r.forward(&h, None)?;
            }
            if let Some(u) = &block.upsampler {
                h = u.forward(&h)?;
            }
        }
        self.conv_out.forward(&self.conv_norm_out.forward_silu(&h)?)
    }

    pub fn parameters(&self) -> Vec<(String, Tensor)> {
        let mut p = Vec::new();
        push_params(&mut p, "conv_in", &self.conv_in);
        push_named(&mut p, "mid_block", self.mid_block.parameters());
        for (i, b) in self.up_blocks.iter().enumerate() {
            for (j, r) in b.resnets.iter().enumerate() {
                push_named(
                    &mut p,
                    &format!("up_blocks.{i}.resnets.{j}"),
                    r.parameters(),
                );
            }
            if let Some(u) = &b.upsampler {
                push_named(
                    &mut p,
                    &format!("up_blocks.{i}.upsamplers.0"),
                    u.parameters(),
                );
            }
        }
        push_params(&mut p, "conv_norm_out", &self.conv_norm_out);
        push_params(&mut p, "conv_out", &self.conv_out);
        p
    }
}
