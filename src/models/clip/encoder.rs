//! One CLIP encoder layer (pre-LN): x + attn(LN1(x)), then x + MLP(LN2(x)),
//! with transformers' names (`self_attn.{q,k,v,out}_proj`, `mlp.fc1/fc2`,
//! `layer_norm1/2`).

use super::config::{ClipActivation, ClipTextConfig};
use crate::error::Result;
use crate::models::Weights;
use crate::nn::{prefixed, LayerNorm, Linear, Module};
use crate::ops::attention::AttentionMask;
use crate::tensor::Tensor;

/// Multi-head self-attention with biased q/k/v/out projections.
struct ClipAttention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    out_proj: Linear,
    heads: usize,
}

impl ClipAttention {
    fn load(cfg: &ClipTextConfig, w: &Weights) -> Result<Self> {
        let d = cfg.hidden_size;
        Ok(ClipAttention {
            q_proj: w.linear("q_proj", d, d, true)?,
            k_proj: w.linear("k_proj", d, d, true)?,
            v_proj: w.linear("v_proj", d, d, true)?,
            out_proj: w.linear("out_proj", d, d, true)?,
            heads: cfg.num_attention_heads,
        })
    }

    /// x [B, L, D] → [B, L, D]; scores scaled by 1/√head_dim.
    fn forward(&self, x: &Tensor, mask: AttentionMask<'_>) -> Result<Tensor> {
        let &[b, l, d] = x.shape() else {
            crate::bail!("CLIP attention: expected [B, L, D], got {:?}", x.shape())
        };
        let heads = |t: Tensor| {
            t.reshape(&[b, l, self.heads, d / self.heads])?
                .permute(&[0, 2, 1, 3])
        };
        let q = heads(self.q_proj.forward(x)?)?;
        let k = heads(self.k_proj.forward(x)?)?;
        let v = heads(self.v_proj.forward(x)?)?;
        let o = q.attention(&k, &v, mask, None)?; // [B, H, L, Dh]
        let o = o.permute(&[0, 2, 1, 3])?.reshape(&[b, l, d])?;
        self.out_proj.forward(&o)
    }

    fn parameters(&self) -> Vec<(String, Tensor)> {
        let mut p = prefixed("q_proj", self.q_proj.parameters());
        p.extend(prefixed("k_proj", self.k_proj.parameters()));
        p.extend(prefixed("v_proj", self.v_proj.parameters()));
        p.extend(prefixed("out_proj", self.out_proj.parameters()));
        p
    }
}

/// fc1 → activation → fc2.
struct ClipMlp {
    fc1: Linear,
    fc2: Linear,
    act: ClipActivation,
}

impl ClipMlp {
    fn load(cfg: &ClipTextConfig, w: &Weights) -> Result<Self> {
        let (d, ff) = (cfg.hidden_size, cfg.intermediate_size);
        Ok(ClipMlp {
            fc1: w.linear("fc1", d, ff, true)?,
            fc2: w.linear("fc2", ff, d, true)?,
            act: cfg.hidden_act,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.fc2.forward(&self.act.forward(&self.fc1.forward(x)?)?)
    }

    fn parameters(&self) -> Vec<(String, Tensor)> {
        let mut p = prefixed("fc1", self.fc1.parameters());
        p.extend(prefixed("fc2", self.fc2.parameters()));
        p
    }
}

/// transformers' `CLIPEncoderLayer`.
pub(crate) struct ClipEncoderLayer {
    layer_norm1: LayerNorm,
    self_attn: ClipAttention,
    layer_norm2: LayerNorm,
    mlp: ClipMlp,
}

impl ClipEncoderLayer {
    pub fn load(cfg: &ClipTextConfig, w: &Weights) -> Result<Self> {
        let (d, eps) = (cfg.hidden_size, cfg.layer_norm_eps);
        Ok(ClipEncoderLayer {
            layer_norm1: w.layer_norm("layer_norm1", d, eps)?,
            self_attn: ClipAttention::load(cfg, &w.pp("self_attn"))?,
            layer_norm2: w.layer_norm("layer_norm2", d, eps)?,
            mlp: ClipMlp::load(cfg, &w.pp("mlp"))?,
        })
    }

    pub fn forward(&self, x: &Tensor, mask: AttentionMask<'_>) -> Result<Tensor> {
        let x = x.add(
            &self
                .self_attn
                .forward(&self.layer_norm1.forward(x)?, mask)?,
        )?;
        x.add(&self.mlp.forward(&self.layer_norm2.forward(&x)?)?)
    }

    pub fn parameters(&self) -> Vec<(String, Tensor)> {
        let mut p = prefixed("self_attn", self.self_attn.parameters());
        p.extend(prefixed("layer_norm1", self.layer_norm1.parameters()));
        p.extend(prefixed("mlp", self.mlp.parameters()));
        p.extend(prefixed("layer_norm2", self.layer_norm2.parameters()));
        p
    }
}
