//! diffusers' `BasicTransformerBlock` (self-attention, cross-attention, GEGLU/GELU
//! feed-forward, pre-LayerNorm residuals), `FeedForward`, and `Transformer2DModel`
//! (GroupNorm, proj_in, transformer blocks over the H·W tokens, proj_out, residual).

use super::{push_named, push_params, Attention, AttentionConfig};
use crate::ensure;
use crate::error::Result;
use crate::models::Weights;
use crate::nn::{Conv2d, GroupNorm, LayerNorm, Linear, Module};
use crate::tensor::Tensor;

/// The feed-forward's first layer (`activation_fn`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FeedForwardKind {
    /// `geglu`: proj to 2·inner, first half · GELU(second half).
    Geglu,
    /// `gelu`: proj to inner, then GELU.
    Gelu,
}

/// `FeedForward(dim, mult=4, activation_fn)`: `net.0.proj`, activation, `net.2`.
pub struct FeedForward {
    pub proj: Linear,
    pub out: Linear,
    pub kind: FeedForwardKind,
}

impl FeedForward {
    pub fn load(w: &Weights, dim: usize, kind: FeedForwardKind) -> Result<Self> {
        let inner = 4 * dim;
        let proj_out = match kind {
            FeedForwardKind::Geglu => 2 * inner,
            FeedForwardKind::Gelu => inner,
        };
        Ok(FeedForward {
            proj: w.linear("net.0.proj", dim, proj_out, true)?,
            out: w.linear("net.2", inner, dim, true)?,
            kind,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = match self.kind {
            // GEGLU as two half-width projections (the weight's row halves, as views):
            // value · GELU(gate) then reads contiguous tensors instead of the two
            // strided halves of one wide output. Same products, same result.
            FeedForwardKind::Geglu => {
                let inner = self.proj.weight.shape()[0] / 2;
                let half = |i: usize| -> Result<Tensor> {
                    let w = self.proj.weight.narrow(0, i * inner, inner)?;
                    let b = match &self.proj.bias {
                        Some(b) => Some(b.narrow(0, i * inner, inner)?),
                        None => None,
                    };
                    x.linear(&w, b.as_ref())
                };
                half(0)?.mul(&half(1)?.gelu()?)?
            }
            FeedForwardKind::Gelu => self.proj.forward(x)?.gelu()?,
        };
        self.out.forward(&h)
    }

    pub fn parameters(&self) -> Vec<(String, Tensor)> {
        let mut p = Vec::new();
        push_params(&mut p, "net.0.proj", &self.proj);
        push_params(&mut p, "net.2", &self.out);
        p
    }
}

/// `BasicTransformerBlock` with `norm_type="layer_norm"` (Stable Diffusion's).
pub struct BasicTransformerBlock {
    pub norm1: LayerNorm,
    pub attn1: Attention,
    pub norm2: LayerNorm,
    pub attn2: Attention,
    pub norm3: LayerNorm,
    pub ff: FeedForward,
    /// attn1 attends to the context too (no self-attention).
    pub only_cross_attention: bool,
}

impl BasicTransformerBlock {
    pub fn load(w: &Weights, cfg: &Transformer2DConfig) -> Result<Self> {
        let dim = cfg.heads * cfg.head_dim;
        let attn1 = AttentionConfig::transformer(
            dim,
            cfg.only_cross_attention.then_some(cfg.cross_attention_dim),
            cfg.heads,
            cfg.head_dim,
            cfg.upcast_attention,
        );
        let attn2 = AttentionConfig::transformer(
            dim,
            Some(cfg.cross_attention_dim),
            cfg.heads,
            cfg.head_dim,
            cfg.upcast_attention,
        );
        Ok(BasicTransformerBlock {
            norm1: w.layer_norm("norm1", dim, 1e-5)?,
            attn1: Attention::load(&attn1, &w.pp("attn1"))?,
            norm2: w.layer_norm("norm2", dim, 1e-5)?,
            attn2: Attention::load(&attn2, &w.pp("attn2"))?,
            norm3: w.layer_norm("norm3", dim, 1e-5)?,
            ff: FeedForward::load(&w.pp("ff"), dim, FeedForwardKind::Geglu)?,
            only_cross_attention: cfg.only_cross_attention,
        })
    }

    /// x [B, L, dim], context [B, Lk, cross_attention_dim] → [B, L, dim].
    pub fn forward(&self, x: &Tensor, context: &Tensor) -> Result<Tensor> {
        let ctx1 = self.only_cross_attention.then_some(context);
        let x = self.attn1.forward(&self.norm1.forward(x)?, ctx1)?.add(x)?;
        let x = self
            .attn2
            .forward(&self.norm2.forward(&x)?, Some(context))?
            .add(&x)?;
        self.ff.forward(&self.norm3.forward(&x)?)?.add(&x)
    }

    pub fn parameters(&self) -> Vec<(String, Tensor)> {
        let mut p = Vec::new();
        push_params(&mut p, "norm1", &self.norm1);
        push_named(&mut p, "attn1", self.attn1.parameters());
        push_params(&mut p, "norm2", &self.norm2);
        push_named(&mut p, "attn2", self.attn2.parameters());
        push_params(&mut p, "norm3", &self.norm3);
        push_named(&mut p, "ff", self.ff.parameters());
        p
    }
}

/// The arguments of `Transformer2DModel` for continuous (image) inputs.
#[derive(Clone, Debug)]
pub struct Transformer2DConfig {
    pub heads: usize,
    pub head_dim: usize,
    pub in_channels: usize,
    pub num_layers: usize,
    pub cross_attention_dim: usize,
    pub norm_num_groups: usize,
    pub use_linear_projection: bool,
    pub only_cross_attention: bool,
    pub upcast_attention: bool,
}

/// proj_in / proj_out: a 1×1 conv on [B, C, H, W] or a linear on [B, HW, C].
enum Proj {
    Conv(Conv2d),
    Linear(Linear),
}

impl Proj {
    fn load(w: &Weights, name: &str, inp: usize, out: usize, linear: bool) -> Result<Proj> {
        Ok(if linear {
            Proj::Linear(w.linear(name, inp, out, true)?)
        } else {
            Proj::Conv(w.conv2d(name, inp, out, 1, 1, 0)?)
        })
    }

    fn module(&self) -> &dyn Module {
        match self {
            Proj::Conv(c) => c,
            Proj::Linear(l) => l,
        }
    }
}

pub struct Transformer2DModel {
    pub norm: GroupNorm,
    proj_in: Proj,
    pub transformer_blocks: Vec<BasicTransformerBlock>,
    proj_out: Proj,
}

impl Transformer2DModel {
    pub fn load(cfg: &Transformer2DConfig, w: &Weights) -> Result<Self> {
        let (c, inner) = (cfg.in_channels, cfg.heads * cfg.head_dim);
        ensure!(
            cfg.norm_num_groups > 0 && c % cfg.norm_num_groups == 0,
            "Transformer2DModel at `{}`: {c} channels do not split into {} groups",
            w.full_name(""),
            cfg.norm_num_groups
        );
        let lin = cfg.use_linear_projection;
        let blocks = w.pp("transformer_blocks");
        Ok(Transformer2DModel {
            norm: w.group_norm("norm", cfg.norm_num_groups, c, 1e-6)?,
            proj_in: Proj::load(w, "proj_in", c, inner, lin)?,
            transformer_blocks: (0..cfg.num_layers)
                .map(|i| BasicTransformerBlock::load(&blocks.pp(i), cfg))
                .collect::<Result<_>>()?,
            proj_out: Proj::load(w, "proj_out", inner, c, lin)?,
        })
    }

    /// x [B, C, H, W], context [B, Lk, D] → [B, C, H, W].
    pub fn forward(&self, x: &Tensor, context: &Tensor) -> Result<Tensor> {
        ensure!(
            x.rank() == 4,
            "Transformer2DModel: input must be [B, C, H, W], got {:?}",
            x.shape()
        );
        let &[b, _, h, w] = x.shape() else {
            unreachable!()
        };
        let xn = self.norm.forward(x)?;
        // To tokens [B, HW, inner]: the permute is copied once by the reshape.
        let to_tokens = |t: &Tensor| -> Result<Tensor> {
            let c = t.shape()[1];
            t.permute(&[0, 2, 3, 1])?.reshape(&[b, h * w, c])
        };
        let mut tokens = match &self.proj_in {
            Proj::Conv(conv) => to_tokens(&conv.forward(&xn)?)?,
            Proj::Linear(lin) => lin.forward(&to_tokens(&xn)?)?,
        };
        for block in &self.transformer_blocks {
            tokens = block.forward(&tokens, context)?;
        }
        let to_image = |t: &Tensor| -> Result<Tensor> {
            let c = t.shape()[2];
            t.reshape(&[b, h, w, c])?.permute(&[0, 3, 1, 2])
        };
        let out = match &self.proj_out {
            Proj::Conv(conv) => conv.forward(&to_image(&tokens)?)?,
            Proj::Linear(lin) => to_image(&lin.forward(&tokens)?)?,
        };
        out.add(x)
    }

    pub fn parameters(&self) -> Vec<(String, Tensor)> {
        let mut p = Vec::new();
        push_params(&mut p, "norm", &self.norm);
        push_params(&mut p, "proj_in", self.proj_in.module());
        for (i, b) in self.transformer_blocks.iter().enumerate() {
            push_named(&mut p, &format!("transformer_blocks.{i}"), b.parameters());
        }
        push_params(&mut p, "proj_out", self.proj_out.module());
        p
    }
}
