//! `GroupNorm` over [N, C, ...] with per-channel affine weight and bias.

use super::Module;
use crate::bail;
use crate::error::Result;
use crate::tensor::{DType, Tensor};

pub struct GroupNorm {
    pub groups: usize,
    pub weight: Tensor,
    pub bias: Tensor,
    pub eps: f64,
}

impl GroupNorm {
    /// Weight 1 and bias 0, as PyTorch initialises them.
    pub fn new(groups: usize, channels: usize, eps: f64, dtype: DType) -> Result<GroupNorm> {
        if groups == 0 || !channels.is_multiple_of(groups) {
            bail!("GroupNorm: {channels} channels are not divisible by {groups} groups");
        }
        Ok(GroupNorm {
            groups,
            weight: Tensor::ones(&[channels], dtype)?.into_param()?,
            bias: Tensor::zeros(&[channels], dtype)?.into_param()?,
            eps,
        })
    }

    /// SiLU(GroupNorm(x)) through the fused kernel.
    pub fn forward_silu(&self, x: &Tensor) -> Result<Tensor> {
        x.group_norm_silu(self.groups, Some(&self.weight), Some(&self.bias), self.eps)
    }
}

impl Module for GroupNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.group_norm(self.groups, Some(&self.weight), Some(&self.bias), self.eps)
    }

    fn parameters(&self) -> Vec<(String, Tensor)> {
        vec![
            ("weight".to_string(), self.weight.clone()),
            ("bias".to_string(), self.bias.clone()),
        ]
    }
}
