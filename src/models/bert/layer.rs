//! One BERT encoder layer (post-LN): x = LN(x + attn(x)), then x = LN(x + FFN(x)),
//! with transformers' names (`attention.self.{query,key,value}`,
//! `attention.output.{dense,LayerNorm}`, `intermediate.dense`, `output.{dense,LayerNorm}`).

use super::config::{BertActivation, BertConfig};
use super::embeddings::layer_norm;
use crate::error::Result;
use crate::models::Weights;
use crate::nn::{prefixed, LayerNorm, Linear, Module};
use crate::ops::attention::AttentionMask;
use crate::tensor::Tensor;

/// `BertAttention`: multi-head self-attention, then dense + residual + LayerNorm.
struct BertAttention {
    query: Linear,
    key: Linear,
    value: Linear,
    dense: Linear,
    layer_norm: LayerNorm,
    heads: usize,
}

impl BertAttention {
    fn load(cfg: &BertConfig, w: &Weights) -> Result<Self> {
        let (d, s, o) = (cfg.hidden_size, w.pp("self"), w.pp("output"));
        Ok(BertAttention {
            query: s.linear("query", d, d, true)?,
            key: s.linear("key", d, d, true)?,
            value: s.linear("value", d, d, true)?,
            dense: o.linear("dense", d, d, true)?,
            layer_norm: layer_norm(&o, "LayerNorm", d, cfg.layer_norm_eps)?,
            heads: cfg.num_attention_heads,
        })
    }

    /// x [N, L, D] → [N, L, D]; padded keys hidden by `mask`, scores scaled by
    /// 1/√Dh. With `cls_bias` ([N, 1, 1, L]: 0 for tokens, very negative for
    /// padding) also the first query's attention probabilities [N, H, L].
    fn forward(
        &self,
        x: &Tensor,
        mask: AttentionMask<'_>,
        cls_bias: Option<&Tensor>,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let &[n, l, d] = x.shape() else {
            crate::bail!("BERT attention: expected [N, L, D], got {:?}", x.shape())
        };
        let heads = |t: Tensor| {
            t.reshape(&[n, l, self.heads, d / self.heads])?
                .permute(&[0, 2, 1, 3])
        };
        let q = heads(self.query.forward(x)?)?;
        let k = heads(self.key.forward(x)?)?;
        let v = heads(self.value.forward(x)?)?;
        let o = q.attention(&k, &v, mask, None)?; // [N, H, L, Dh]
        let probs = match cls_bias {
            Some(bias) => {
                // The fused op keeps no probabilities: recompute the one row asked for.
                let scale = 1.0 / ((d / self.heads) as f64).sqrt();
                let scores = q
                    .narrow(2, 0, 1)?
                    .matmul(&k.transpose(2, 3)?)?
                    .scale(scale)?;
                let p = scores.add(bias)?.softmax(-1)?; // [N, H, 1, L]
                Some(p.reshape(&[n, self.heads, l])?)
            }
            None => None,
        };
        let o = o.permute(&[0, 2, 1, 3])?.reshape(&[n, l, d])?;
        let out = self.layer_norm.forward(&self.dense.forward(&o)?.add(x)?)?;
        Ok((out, probs))
    }

    fn parameters(&self) -> Vec<(String, Tensor)> {
        let mut p = prefixed("self.query", self.query.parameters());
        p.extend(prefixed("self.key", self.key.parameters()));
        p.extend(prefixed("self.value", self.value.parameters()));
        p.extend(prefixed("output.dense", self.dense.parameters()));
        p.extend(prefixed("output.LayerNorm", self.layer_norm.parameters()));
        p
    }
}

/// transformers' `BertLayer`.
pub(crate) struct BertLayer {
    attention: BertAttention,
    intermediate: Linear,
    act: BertActivation,
    output: Linear,
    output_norm: LayerNorm,
}

impl BertLayer {
    pub fn load(cfg: &BertConfig, w: &Weights) -> Result<Self> {
        let (d, ff) = (cfg.hidden_size, cfg.intermediate_size);
        let out = w.pp("output");
        Ok(BertLayer {
            attention: BertAttention::load(cfg, &w.pp("attention"))?,
            intermediate: w.pp("intermediate").linear("dense", d, ff, true)?,
            act: cfg.hidden_act,
            output: out.linear("dense", ff, d, true)?,
            output_norm: layer_norm(&out, "LayerNorm", d, cfg.layer_norm_eps)?,
        })
    }

    /// x [N, L, D] → [N, L, D], and the [CLS] attention row when `cls_bias` is given
    /// (see `BertAttention::forward`).
    pub fn forward(
        &self,
        x: &Tensor,
        mask: AttentionMask<'_>,
        cls_bias: Option<&Tensor>,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let (a, probs) = self.attention.forward(x, mask, cls_bias)?;
        let h = self.act.forward(&self.intermediate.forward(&a)?)?;
        let out = self
            .output_norm
            .forward(&self.output.forward(&h)?.add(&a)?)?;
        Ok((out, probs))
    }

    pub fn parameters(&self) -> Vec<(String, Tensor)> {
        let mut p = prefixed("attention", self.attention.parameters());
        p.extend(prefixed(
            "intermediate.dense",
            self.intermediate.parameters(),
        ));
        p.extend(prefixed("output.dense", self.output.parameters()));
        p.extend(prefixed("output.LayerNorm", self.output_norm.parameters()));
        p
    }
}
