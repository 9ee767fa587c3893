//! diffusers' `Downsample2D` (stride-2 conv; with padding 0 the input is first padded
//! by one on the right and bottom, as the VAE does) and `Upsample2D` (nearest ×2 + conv).

use crate::ensure;
use crate::error::Result;
use crate::models::Weights;
use crate::nn::{Conv2d, Module};
use crate::tensor::Tensor;

pub struct Downsample2D {
    pub conv: Conv2d,
    /// The conv's padding; 0 means the asymmetric (0, 1, 0, 1) zero pad first.
    pub padding: usize,
}

impl Downsample2D {
    /// `Downsample2D(channels, use_conv=True, out_channels, padding)`, weights at `conv`.
    pub fn load(w: &Weights, channels: usize, out_channels: usize, padding: usize) -> Result<Self> {
        Ok(Downsample2D {
            conv: w.conv2d("conv", channels, out_channels, 3, 2, padding)?,
            padding,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if self.padding == 0 {
            self.conv.forward(&x.pad2d(0, 1, 0, 1)?)
        } else {
            self.conv.forward(x)
        }
    }

    pub fn parameters(&self) -> Vec<(String, Tensor)> {
        crate::nn::prefixed("conv", self.conv.parameters())
    }
}

pub struct Upsample2D {
    pub conv: Conv2d,
}

impl Upsample2D {
    /// `Upsample2D(channels, use_conv=True, out_channels)`, weights at `conv`.
    pub fn load(w: &Weights, channels: usize, out_channels: usize) -> Result<Self> {
        Ok(Upsample2D {
            conv: w.conv2d("conv", channels, out_channels, 3, 1, 1)?,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        ensure!(
            x.rank() == 4,
            "Upsample2D: input must be [B, C, H, W], got {:?}",
            x.shape()
        );
        self.conv.forward(&x.upsample_nearest2d(2)?)
    }

    pub fn parameters(&self) -> Vec<(String, Tensor)> {
        crate::nn::prefixed("conv", self.conv.parameters())
    }
}
