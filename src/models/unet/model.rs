//! `UNet2DConditionModel`: conv_in → timestep embedding → down blocks (keeping skips)
//! → mid block → up blocks (consuming skips) → GroupNorm+SiLU → conv_out.

use super::{DownBlock, MidBlock, UNetConfig, UpBlock};
use crate::error::Result;
use crate::models::blocks::{
    push_named, push_params, timestep_embedding, Activation, TimestepEmbedding,
};
use crate::models::Weights;
use crate::nn::{Conv2d, GroupNorm, Module};
use crate::tensor::{DType, Tensor};
use crate::{bail, ensure};

pub struct UNet2DConditionModel {
    config: UNetConfig,
    dtype: DType,
    pub conv_in: Conv2d,
    pub time_embedding: TimestepEmbedding,
    pub down_blocks: Vec<DownBlock>,
    pub mid_block: Option<MidBlock>,
    pub up_blocks: Vec<UpBlock>,
    pub conv_norm_out: GroupNorm,
    pub conv_out: Conv2d,
}

impl UNet2DConditionModel {
    /// Builds the U-Net described by `cfg` from `w` (diffusers' parameter names); the
    /// model runs in `w`'s dtype. From a file, every tensor must be used.
    pub fn load(cfg: &UNetConfig, w: &Weights) -> Result<Self> {
        let c0 = cfg.block_out_channels[0];
        let (kin, kout) = (cfg.conv_in_kernel, cfg.conv_out_kernel);
        let conv_in = w.conv2d("conv_in", cfg.in_channels, c0, kin, 1, (kin - 1) / 2)?;
        let time_embedding = TimestepEmbedding::load(
            &w.pp("time_embedding"),
            c0,
            cfg.time_embed_dim,
            Activation::Silu,
            cfg.timestep_post_act,
            cfg.time_cond_proj_dim,
        )?;
        let mut down_blocks = Vec::with_capacity(cfg.down_block_types.len());
        let mut channels = c0;
        for i in 0..cfg.down_block_types.len() {
            down_blocks.push(DownBlock::load(
                cfg,
                i,
                channels,
                &w.pp("down_blocks").pp(i),
            )?);
            channels = cfg.block_out_channels[i];
        }
        let mid_block = cfg
            .mid_block
            .then(|| MidBlock::load(cfg, &w.pp("mid_block")))
            .transpose()?;
        let mut up_blocks = Vec::with_capacity(cfg.up_block_types.len());
        for i in 0..cfg.up_block_types.len() {
            up_blocks.push(UpBlock::load(cfg, i, channels, &w.pp("up_blocks").pp(i))?);
            channels = cfg.block_out_channels[cfg.block_out_channels.len() - 1 - i];
        }
        let conv_norm_out = w.group_norm("conv_norm_out", cfg.norm_num_groups, c0, cfg.norm_eps)?;
        let conv_out = w.conv2d("conv_out", c0, cfg.out_channels, kout, 1, (kout - 1) / 2)?;
        if w.source_name().is_some() {
            w.ensure_all_used("U-Net")?;
        }
        Ok(UNet2DConditionModel {
            config: cfg.clone(),
            dtype: w.dtype(),
            conv_in,
            time_embedding,
            down_blocks,
            mid_block,
            up_blocks,
            conv_norm_out,
            conv_out,
        })
    }

    pub fn config(&self) -> &UNetConfig {
        &self.config
    }

    /// The dtype the model runs in (its weights').
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The predicted noise (or v) for `sample` [B, C, H, W] at `timesteps` (one per
    /// batch item, or one for all), conditioned on `encoder_hidden_states` [B, L, D].
    /// Inputs are in the model's dtype; H and W must be multiples of 2^(levels − 1).
    pub fn forward(
        &self,
        sample: &Tensor,
        timesteps: &[f64],
        encoder_hidden_states: &Tensor,
    ) -> Result<Tensor> {
        self.forward_with_cond(sample, timesteps, encoder_hidden_states, None)
    }

    /// `forward` with diffusers' `timestep_cond` [B, time_cond_proj_dim] (for models
    /// whose config sets `time_cond_proj_dim`).
    pub fn forward_with_cond(
        &self,
        sample: &Tensor,
        timesteps: &[f64],
        encoder_hidden_states: &Tensor,
        timestep_cond: Option<&Tensor>,
    ) -> Result<Tensor> {
        let batch = self.check_inputs(sample, timesteps, encoder_hidden_states)?;
        let cfg = &self.config;
        let ctx = encoder_hidden_states;
        let sample = if cfg.center_input_sample {
            sample.affine(2.0, -1.0)?
        } else {
            sample.clone()
        };
        let ts: Vec<f64> = if timesteps.len() == 1 {
            vec![timesteps[0]; batch]
        } else {
            timesteps.to_vec()
        };
        let t_emb = timestep_embedding(
            &ts,
            cfg.block_out_channels[0],
            cfg.flip_sin_to_cos,
            cfg.freq_shift,
            self.dtype,
        )?;
        let mut emb = self.time_embedding.forward(&t_emb, timestep_cond)?;
        if let Some(act) = &cfg.time_embedding_act_fn {
            emb = act.forward(&emb)?;
        }

        let mut h = self.conv_in.forward(&sample)?;
        let mut skips = vec![h.clone()];
        for block in &self.down_blocks {
            h = block.forward(&h, &emb, ctx, &mut skips)?;
        }
        if let Some(mid) = &self.mid_block {
            h = mid.forward(&h, &emb, ctx)?;
        }
        for block in &self.up_blocks {
            h = block.forward(&h, &mut skips, &emb, ctx)?;
        }
        ensure!(
            skips.is_empty(),
            "U-Net: {} skip connections left unused",
            skips.len()
        );
        self.conv_out.forward(&self.conv_norm_out.forward_silu(&h)?)
    }

    /// Validates shapes and dtypes; returns the batch size.
    fn check_inputs(&self, sample: &Tensor, timesteps: &[f64], ctx: &Tensor) -> Result<usize> {
        let cfg = &self.config;
        let file = cfg.path.display();
        ensure!(
            sample.rank() == 4,
            "U-Net: sample must be [B, C, H, W], got shape {:?}",
            sample.shape()
        );
        let &[b, c, h, w] = sample.shape() else {
            unreachable!()
        };
        ensure!(
            c == cfg.in_channels,
            "U-Net: sample has {c} channels, but the model expects in_channels = {} ({file})",
            cfg.in_channels
        );
        let m = 1usize << cfg.num_upsamplers();
        ensure!(
            h % m == 0 && w % m == 0 && h > 0 && w > 0,
            "U-Net: sample size {h}×{w} must be a positive multiple of {m} (2^{} downsamplings)",
            cfg.num_upsamplers()
        );
        ensure!(
            ctx.rank() == 3 && ctx.shape()[0] == b,
            "U-Net: encoder_hidden_states must be [B = {b}, L, D], got shape {:?}",
            ctx.shape()
        );
        let d = ctx.shape()[2];
        let uses = cfg.down_block_types.iter().map(|t| t.has_cross_attention());
        for (i, (needs, &dim)) in uses.zip(&cfg.cross_attention_dim).enumerate() {
            let needs =
                needs || cfg.up_block_types[cfg.up_block_types.len() - 1 - i].has_cross_attention();
            ensure!(
                !needs || d == dim,
                "U-Net: encoder_hidden_states have width {d}, but the model's cross_attention_dim is {dim} ({file})"
            );
        }
        ensure!(
            !cfg.mid_block || d == *cfg.cross_attention_dim.last().expect("one per block"),
            "U-Net: encoder_hidden_states have width {d}, but the mid block's cross_attention_dim is {} ({file})",
            cfg.cross_attention_dim.last().expect("one per block")
        );
        for (what, t) in [("sample", sample), ("encoder_hidden_states", ctx)] {
            ensure!(
                t.dtype() == self.dtype,
                "U-Net: {what} is {} but the model runs in {} (its weights' dtype); convert with to_dtype",
                t.dtype(),
                self.dtype
            );
        }
        if timesteps.len() != 1 && timesteps.len() != b {
            bail!(
                "U-Net: {} timesteps for a batch of {b} (give one, or one per batch item)",
                timesteps.len()
            );
        }
        ensure!(
            timesteps.iter().all(|t| t.is_finite()),
            "U-Net: timesteps must be finite, got {timesteps:?}"
        );
        Ok(b)
    }

    /// Every parameter under diffusers' names.
    pub fn parameters(&self) -> Vec<(String, Tensor)> {
        let mut p = Vec::new();
        push_params(&mut p, "conv_in", &self.conv_in);
        push_named(&mut p, "time_embedding", self.time_embedding.parameters());
        for (i, b) in self.down_blocks.iter().enumerate() {
            push_named(&mut p, &format!("down_blocks.{i}"), b.parameters());
        }
        if let Some(m) = &self.mid_block {
            push_named(&mut p, "mid_block", m.parameters());
        }
        for (i, b) in self.up_blocks.iter().enumerate() {
            push_named(&mut p, &format!("up_blocks.{i}"), b.parameters());
        }
        push_params(&mut p, "conv_norm_out", &self.conv_norm_out);
        push_params(&mut p, "conv_out", &self.conv_out);
        p
    }
}
