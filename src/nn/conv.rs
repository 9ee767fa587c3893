//! `Conv2d` with stride, padding, dilation and groups (weight [O, C/groups, kH, kW]).

use super::{init, Module};
use crate::bail;
use crate::error::Result;
use crate::tensor::{DType, Philox, Tensor};

/// Convolution geometry, PyTorch's defaults.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2dConfig {
    pub stride: (usize, usize),
    pub padding: (usize, usize),
    pub dilation: (usize, usize),
    pub groups: usize,
    pub bias: bool,
}

impl Default for Conv2dConfig {
    fn default() -> Self {
        Conv2dConfig {
            stride: (1, 1),
            padding: (0, 0),
            dilation: (1, 1),
            groups: 1,
            bias: true,
        }
    }
}

pub struct Conv2d {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
    pub config: Conv2dConfig,
}

impl Conv2d {
    /// A fresh layer with PyTorch's default initialisation.
    pub fn new(
        in_channels: usize,
        out_channels: usize,
        kernel: (usize, usize),
        config: Conv2dConfig,
        dtype: DType,
        rng: &mut Philox,
    ) -> Result<Conv2d> {
        if config.groups == 0
            || !in_channels.is_multiple_of(config.groups)
            || !out_channels.is_multiple_of(config.groups)
        {
            bail!("Conv2d: {in_channels} in / {out_channels} out channels do not split into {} groups", config.groups);
        }
        let shape = [
            out_channels,
            in_channels / config.groups,
            kernel.0,
            kernel.1,
        ];
        let (weight, bias) = init::default_weight_and_bias(rng, &shape, config.bias, dtype)?;
        Ok(Conv2d {
            weight,
            bias,
            config,
        })
    }

    /// From existing tensors; `config.bias` is taken from whether `bias` is given.
    pub fn from_weights(
        weight: Tensor,
        bias: Option<Tensor>,
        config: Conv2dConfig,
    ) -> Result<Conv2d> {
        if weight.rank() != 4 {
            bail!(
                "Conv2d: weight must be [O, C/groups, kH, kW], got {:?}",
                weight.shape()
            );
        }
        if let Some(b) = &bias {
            if b.shape() != [weight.shape()[0]] {
                bail!(
                    "Conv2d: bias shape {:?} does not match weight {:?}",
                    b.shape(),
                    weight.shape()
                );
            }
        }
        let config = Conv2dConfig {
            bias: bias.is_some(),
            ..config
        };
        Ok(Conv2d {
            weight,
            bias,
            config,
        })
    }
}

impl Module for Conv2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let c = &self.config;
        x.conv2d(
            &self.weight,
            self.bias.as_ref(),
            c.stride,
            c.padding,
            c.dilation,
            c.groups,
        )
    }

    fn parameters(&self) -> Vec<(String, Tensor)> {
        let mut p = vec![("weight".to_string(), self.weight.clone())];
        p.extend(self.bias.iter().map(|b| ("bias".to_string(), b.clone())));
        p
    }
}
