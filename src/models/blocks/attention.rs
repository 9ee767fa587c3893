//! diffusers' `Attention` (with `AttnProcessor2_0`): to_q/to_k/to_v/to_out.0, multi-head
//! scaled dot-product attention through the fused op, optional GroupNorm on the input,
//! residual connection and output rescaling. Takes [B, L, C] or [B, C, H, W].

use super::push_params;
use crate::error::Result;
use crate::models::Weights;
use crate::nn::{GroupNorm, Linear, Module};
use crate::ops::attention::AttentionMask;
use crate::tensor::Tensor;
use crate::{bail, ensure};

/// The constructor arguments of diffusers' `Attention` that Stable Diffusion uses.
#[derive(Clone, Debug)]
pub struct AttentionConfig {
    pub query_dim: usize,
    /// Width of the context for cross-attention; `None` for self-attention.
    pub cross_attention_dim: Option<usize>,
    pub heads: usize,
    pub dim_head: usize,
    /// Bias on to_q/to_k/to_v.
    pub bias: bool,
    /// Bias on to_out.0.
    pub out_bias: bool,
    /// GroupNorm groups applied to the input first (the VAE's mid-block attention).
    pub norm_num_groups: Option<usize>,
    pub eps: f64,
    pub residual_connection: bool,
    pub rescale_output_factor: f64,
    /// Accepted for completeness: scores and softmax are always computed in f32 for
    /// half dtypes (the fused op's compute type), which is what this flag asks for.
    pub upcast_attention: bool,
}

impl AttentionConfig {
    /// Self- or cross-attention as in a transformer block (no norm, no residual,
    /// no q/k/v bias, bias on the output projection).
    pub fn transformer(
        query_dim: usize,
        cross_attention_dim: Option<usize>,
        heads: usize,
        dim_head: usize,
        upcast_attention: bool,
    ) -> Self {
        AttentionConfig {
            query_dim,
            cross_attention_dim,
            heads,
            dim_head,
            bias: false,
            out_bias: true,
            norm_num_groups: None,
            eps: 1e-5,
            residual_connection: false,
            rescale_output_factor: 1.0,
            upcast_attention,
        }
    }
}

pub struct Attention {
    pub group_norm: Option<GroupNorm>,
    pub to_q: Linear,
    pub to_k: Linear,
    pub to_v: Linear,
    pub to_out: Linear,
    pub heads: usize,
    pub residual_connection: bool,
    pub rescale_output_factor: f64,
    /// Width the context must have (the query width for self-attention).
    pub context_dim: usize,
}

impl Attention {
    /// Builds the layer from `w` (names `to_q`, `to_k`, `to_v`, `to_out.0`,
    /// `group_norm`). Checkpoints with diffusers' deprecated attention-block names
    /// (`query`, `key`, `value`, `proj_attn`, as in older VAEs) load too;
    /// `parameters()` then reports the current names, as diffusers does.
    pub fn load(cfg: &AttentionConfig, w: &Weights) -> Result<Attention> {
        ensure!(
            cfg.heads > 0 && cfg.dim_head > 0,
            "Attention: {} heads of width {} at `{}`",
            cfg.heads,
            cfg.dim_head,
            w.full_name("")
        );
        let inner = cfg.heads * cfg.dim_head;
        let context_dim = cfg.cross_attention_dim.unwrap_or(cfg.query_dim);
        let legacy = !w.contains("to_q.weight") && w.contains("query.weight");
        let (q, k, v, o) = if legacy {
            ("query", "key", "value", "proj_attn")
        } else {
            ("to_q", "to_k", "to_v", "to_out.0")
        };
        let group_norm = cfg
            .norm_num_groups
            .map(|g| w.group_norm("group_norm", g, cfg.query_dim, cfg.eps))
            .transpose()?;
        Ok(Attention {
            group_norm,
            to_q: w.linear(q, cfg.query_dim, inner, cfg.bias)?,
            to_k: w.linear(k, context_dim, inner, cfg.bias)?,
            to_v: w.linear(v, context_dim, inner, cfg.bias)?,
            to_out: w.linear(o, inner, cfg.query_dim, cfg.out_bias)?,
            heads: cfg.heads,
            residual_connection: cfg.residual_connection,
            rescale_output_factor: cfg.rescale_output_factor,
            context_dim,
        })
    }

    /// Attention of `x` ([B, L, C], or [B, C, H, W] attending over the H·W pixels)
    /// to `context` ([B, Lk, D]; `None` attends to `x` itself). Same shape as `x`.
    pub fn forward(&self, x: &Tensor, context: Option<&Tensor>) -> Result<Tensor> {
        let query_dim = self.to_q.weight.shape()[1];
        let (tokens, spatial) = match x.rank() {
            4 => {
                let &[b, c, h, w] = x.shape() else {
                    unreachable!()
                };
                ensure!(
                    c == query_dim,
                    "Attention: input has {c} channels, the layer expects {query_dim}"
                );
                let xn = match &self.group_norm {
                    Some(gn) => gn.forward(x)?,
                    None => x.clone(),
                };
                // [B, C, HW] → [B, HW, C], copied once for the three projections.
                let t = xn.reshape(&[b, c, h * w])?.transpose(1, 2)?.contiguous()?;
                (t, Some((b, c, h, w)))
            }
            3 => {
                ensure!(
                    x.shape()[2] == query_dim,
                    "Attention: input {:?} does not end in the query width {query_dim}",
                    x.shape()
                );
                let t = match &self.group_norm {
                    Some(gn) => gn
                        .forward(&x.transpose(1, 2)?)?
                        .transpose(1, 2)?
                        .contiguous()?,
                    None => x.clone(),
                };
                (t, None)
            }
            _ => bail!(
                "Attention: input must be [B, L, C] or [B, C, H, W], got {:?}",
                x.shape()
            ),
        };
        let (b, lq) = (tokens.shape()[0], tokens.shape()[1]);
        let ctx = match context {
            Some(c) => {
                ensure!(
                    c.rank() == 3 && c.shape()[0] == b && c.shape()[2] == self.context_dim,
                    "Attention: context must be [{b}, L, {}], got {:?}",
                    self.context_dim,
                    c.shape()
                );
                c
            }
            None => &tokens,
        };
        let q = self.to_q.forward(&tokens)?;
        let k = self.to_k.forward(ctx)?;
        let v = self.to_v.forward(ctx)?;
        let h = self.heads;
        // [B, L, H·D] → [B, H, L, D] as views: the fused op reads them through strides.
        let split = |t: &Tensor| -> Result<Tensor> {
            let (bb, l, inner) = (t.shape()[0], t.shape()[1], t.shape()[2]);
            t.reshape(&[bb, l, h, inner / h])?.permute(&[0, 2, 1, 3])
        };
        let o = split(&q)?.attention(&split(&k)?, &split(&v)?, AttentionMask::none(), None)?;
        let inner = q.shape()[2];
        let o = o.permute(&[0, 2, 1, 3])?.reshape(&[b, lq, inner])?;
        let mut out = self.to_out.forward(&o)?;
        if let Some((b, c, hh, ww)) = spatial {
            out = out.transpose(1, 2)?.reshape(&[b, c, hh, ww])?;
        }
        if self.residual_connection {
            out = out.add(x)?;
        }
        if self.rescale_output_factor != 1.0 {
            out = out.scale(1.0 / self.rescale_output_factor)?;
        }
        Ok(out)
    }

    /// Parameters under diffusers' names.
    pub fn parameters(&self) -> Vec<(String, Tensor)> {
        let mut p = Vec::new();
        if let Some(gn) = &self.group_norm {
            push_params(&mut p, "group_norm", gn);
        }
        push_params(&mut p, "to_q", &self.to_q);
        push_params(&mut p, "to_k", &self.to_k);
        push_params(&mut p, "to_v", &self.to_v);
        push_params(&mut p, "to_out.0", &self.to_out);
        p
    }
}
