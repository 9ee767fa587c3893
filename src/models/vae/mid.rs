//! The VAE's `UNetMidBlock2D`: ResNet, then (single-head self-attention over the
//! pixels with GroupNorm and a residual, ResNet).

use super::VaeConfig;
use crate::error::Result;
use crate::models::blocks::{push_named, Attention, AttentionConfig, ResnetBlock2D};
use crate::models::Weights;
use crate::tensor::Tensor;

pub struct VaeMidBlock {
    pub resnets: Vec<ResnetBlock2D>,
    /// `None` when the config sets `mid_block_add_attention: false`.
    pub attention: Option<Attention>,
}

impl VaeMidBlock {
    pub fn load(cfg: &VaeConfig, w: &Weights) -> Result<Self> {
        let c = *cfg.block_out_channels.last().expect("checked non-empty");
        let attention = cfg
            .mid_block_add_attention
            .then(|| {
                let a = AttentionConfig {
                    query_dim: c,
                    cross_attention_dim: None,
                    heads: 1,
                    dim_head: c,
                    bias: true,
                    out_bias: true,
                    norm_num_groups: Some(cfg.norm_num_groups),
                    eps: 1e-6,
                    residual_connection: true,
                    rescale_output_factor: 1.0,
                    upcast_attention: false,
                };
                Attention::load(&a, &w.pp("attentions").pp(0))
            })
            .transpose()?;
        let resnets = (0..2)
            .map(|j| ResnetBlock2D::load(&cfg.resnet(c, c), &w.pp("resnets").pp(j)))
            .collect::<Result<_>>()?;
        Ok(VaeMidBlock { resnets, attention })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = self.resnets[0].forward(x, None)?;
        if let Some(a) = &self.attention {
            h = a.forward(&h, None)?;
        }
        self.resnets[1].forward(&h, None)
    }

    pub fn parameters(&self) -> Vec<(String, Tensor)> {
        let mut p = Vec::new();
        if let Some(a) = &self.attention {
            push_named(&mut p, "attentions.0", a.parameters());
        }
        for (j, r) in self.resnets.iter().enumerate() {
            push_named(&mut p, &format!("resnets.{j}"), r.parameters());
        }
        p
    }
}
