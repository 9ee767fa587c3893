//! The sinusoidal timestep embedding (diffusers' `get_timestep_embedding`, reproducing
//! its float32 arithmetic) and `TimestepEmbedding` (linear_1 → act → linear_2).

use super::{push_params, Activation};
use crate::error::Result;
use crate::models::Weights;
use crate::nn::{Linear, Module};
use crate::tensor::{DType, Tensor};

/// [N, dim] sinusoidal embeddings of `timesteps`, as diffusers' `Timesteps` module
/// computes them in float32 (then cast to `dtype`): frequencies
/// exp(−ln(10000)·i / (dim/2 − shift)) and arguments t·freq rounded to f32, sin
/// then cos (swapped with `flip_sin_to_cos`), zero-padded for odd `dim`.
///
/// Each step rounds to f32 as PyTorch's f32 kernels do; `exp`, `sin` and `cos` are
/// evaluated in f64 and rounded once, so a frequency may differ from PyTorch's
/// (MKL's) by one f32 ulp, i.e. an argument by up to t·2⁻²⁴ (≈6e-5 at t = 1000).
pub fn timestep_embedding(
    timesteps: &[f64],
    dim: usize,
    flip_sin_to_cos: bool,
    freq_shift: f64,
    dtype: DType,
) -> Result<Tensor> {
    let half = dim / 2;
    crate::ensure!(
        half as f64 - freq_shift != 0.0,
        "timestep embedding: dim {dim} with freq_shift {freq_shift} divides by zero"
    );
    let neg_log = -(10000f64.ln()) as f32;
    let denom = (half as f64 - freq_shift) as f32;
    let freqs: Vec<f32> = (0..half)
        .map(|i| {
            let e = (neg_log * i as f32) / denom;
            (e as f64).exp() as f32
        })
        .collect();
    let mut out = vec![0f32; timesteps.len() * dim];
    for (row, &t) in out.chunks_mut(dim).zip(timesteps) {
        let t = t as f32;
        for (i, &f) in freqs.iter().enumerate() {
            let arg = (t * f) as f64;
            let (s, c) = (arg.sin() as f32, arg.cos() as f32);
            if flip_sin_to_cos {
                row[i] = c;
                row[half + i] = s;
            } else {
                row[i] = s;
                row[half + i] = c;
            }
        }
    }
    Tensor::from_vec(out, &[timesteps.len(), dim])?.to_dtype(dtype)
}

/// diffusers' `TimestepEmbedding`: optional `cond_proj` (added to the input),
/// `linear_1`, activation, `linear_2`, optional post-activation.
pub struct TimestepEmbedding {
    pub linear_1: Linear,
    pub act: Activation,
    pub linear_2: Linear,
    pub post_act: Option<Activation>,
    pub cond_proj: Option<Linear>,
}

impl TimestepEmbedding {
    pub fn load(
        w: &Weights,
        in_channels: usize,
        time_embed_dim: usize,
        act: Activation,
        post_act: Option<Activation>,
        cond_proj_dim: Option<usize>,
    ) -> Result<Self> {
        Ok(TimestepEmbedding {
            linear_1: w.linear("linear_1", in_channels, time_embed_dim, true)?,
            act,
            linear_2: w.linear("linear_2", time_embed_dim, time_embed_dim, true)?,
            post_act,
            cond_proj: cond_proj_dim
                .map(|d| w.linear("cond_proj", d, in_channels, false))
                .transpose()?,
        })
    }

    /// `sample` [N, in_channels]; `condition` [N, cond_proj_dim] when the layer has
    /// a `cond_proj` (ignored, as in diffusers, when `None`).
    pub fn forward(&self, sample: &Tensor, condition: Option<&Tensor>) -> Result<Tensor> {
        let x = match (&self.cond_proj, condition) {
            (Some(p), Some(c)) => sample.add(&p.forward(c)?)?,
            (None, Some(_)) => {
                crate::bail!("TimestepEmbedding: a condition was given but the model has no cond_proj (time_cond_proj_dim is not set)")
            }
            _ => sample.clone(),
        };
        let x = self.act.forward(&self.linear_1.forward(&x)?)?;
        let x = self.linear_2.forward(&x)?;
        match &self.post_act {
            Some(a) => a.forward(&x),
            None => Ok(x),
        }
    }

    pub fn parameters(&self) -> Vec<(String, Tensor)> {
        let mut p = Vec::new();
        push_params(&mut p, "linear_1", &self.linear_1);
        if let Some(c) = &self.cond_proj {
            push_params(&mut p, "cond_proj", c);
        }
        push_params(&mut p, "linear_2", &self.linear_2);
        p
    }
}
