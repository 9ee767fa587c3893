//! One timm ViT `Block` (pre-LN): x + attn(norm1(x)), then x + mlp(norm2(x)), with
//! timm's names (`norm1`, `attn.qkv`, `attn.proj`, `norm2`, `mlp.fc1`, `mlp.fc2`).

use super::config::VitConfig;
use crate::bail;
use crate::error::Result;
use crate::models::{Init, Weights};
use crate::nn::{prefixed, LayerNorm, Linear, Module};
use crate::ops::attention::AttentionMask;
use crate::tensor::Tensor;

/// nn.Linear as timm's `init_weights_vit_timm` initialises it when fresh
/// (weight ~ N(0, 0.02²), bias 0); from a file, the stored tensors.
pub(super) fn timm_linear(
    w: &Weights,
    name: &str,
    inp: usize,
    out: usize,
    bias: bool,
) -> Result<Linear> {
    let w = w.pp(name);
    let weight = w.get("weight", &[out, inp], Init::Normal(0.02))?;
    let bias = bias
        .then(|| w.get("bias", &[out], Init::Zeros))
        .transpose()?;
    Linear::from_weights(weight, bias)
}

/// Mutable references to a linear layer's tensors under local names.
pub(super) fn linear_mut<'a>(prefix: &str, l: &'a mut Linear) -> Vec<(String, &'a mut Tensor)> {
    let mut v = vec![(format!("{prefix}.weight"), &mut l.weight)];
    v.extend(l.bias.as_mut().map(|b| (format!("{prefix}.bias"), b)));
    v
}

/// Mutable references to a LayerNorm's tensors under local names.
pub(super) fn norm_mut<'a>(prefix: &str, n: &'a mut LayerNorm) -> Vec<(String, &'a mut Tensor)> {
    let mut v: Vec<_> = n
        .weight
        .as_mut()
        .map(|w| (format!("{prefix}.weight"), w))
        .into_iter()
        .collect();
    v.extend(n.bias.as_mut().map(|b| (format!("{prefix}.bias"), b)));
    v
}

/// Multi-head self-attention with one fused q/k/v projection.
struct Attention {
    qkv: Linear,
    proj: Linear,
    num_heads: usize,
}

impl Attention {
    fn load(cfg: &VitConfig, w: &Weights) -> Result<Self> {
        let d = cfg.embed_dim;
        Ok(Attention {
            qkv: timm_linear(w, "qkv", d, 3 * d, cfg.qkv_bias)?,
            proj: timm_linear(w, "proj", d, d, true)?,
            num_heads: cfg.num_heads,
        })
    }

    /// x [B, N, C] → [B, N, C]: qkv → [B, N, 3, H, Dh] → q, k, v as [B, H, N, Dh]
    /// views, softmax(q·kᵀ/√Dh)·v, heads merged, then proj.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let &[b, n, c] = x.shape() else {
            bail!("ViT attention: expected [B, N, C], got {:?}", x.shape())
        };
        let h = self.num_heads;
        let qkv = self
            .qkv
            .forward(x)?
            .reshape(&[b, n, 3, h, c / h])?
            .permute(&[2, 0, 3, 1, 4])?;
        let part = |i: usize| qkv.narrow(0, i, 1)?.squeeze(0);
        let (q, k, v) = (part(0)?, part(1)?, part(2)?);
        let o = q.attention(&k, &v, AttentionMask::none(), None)?;
        let o = o.permute(&[0, 2, 1, 3])?.reshape(&[b, n, c])?;
        self.proj.forward(&o)
    }

    fn params_mut(&mut self) -> Vec<(String, &mut Tensor)> {
        let mut p = linear_mut("qkv", &mut self.qkv);
        p.extend(linear_mut("proj", &mut self.proj));
        p
    }
}

/// fc1 → exact GELU → fc2.
struct Mlp {
    fc1: Linear,
    fc2: Linear,
}

impl Mlp {
    fn load(cfg: &VitConfig, w: &Weights) -> Result<Self> {
        let (d, hidden) = (cfg.embed_dim, cfg.mlp_hidden());
        Ok(Mlp {
            fc1: timm_linear(w, "fc1", d, hidden, true)?,
            fc2: timm_linear(w, "fc2", hidden, d, true)?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.fc2.forward(&self.fc1.forward(x)?.gelu()?)
    }

    fn params_mut(&mut self) -> Vec<(String, &mut Tensor)> {
        let mut p = linear_mut("fc1", &mut self.fc1);
        p.extend(linear_mut("fc2", &mut self.fc2));
        p
    }
}

/// timm's `Block` without layer scale, drop-path or dropout.
pub(super) struct Block {
    norm1: LayerNorm,
    attn: Attention,
    norm2: LayerNorm,
    mlp: Mlp,
}

impl Block {
    pub fn load(cfg: &VitConfig, w: &Weights) -> Result<Self> {
        let (d, eps) = (cfg.embed_dim, cfg.layer_norm_eps);
        Ok(Block {
            norm1: w.layer_norm("norm1", d, eps)?,
            attn: Attention::load(cfg, &w.pp("attn"))?,
            norm2: w.layer_norm("norm2", d, eps)?,
            mlp: Mlp::load(cfg, &w.pp("mlp"))?,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let x = x.add(&self.attn.forward(&self.norm1.forward(x)?)?)?;
        x.add(&self.mlp.forward(&self.norm2.forward(&x)?)?)
    }

    /// Parameters in timm's state-dict order.
    pub fn parameters(&self) -> Vec<(String, Tensor)> {
        let mut p = prefixed("norm1", self.norm1.parameters());
        p.extend(prefixed("attn.qkv", self.attn.qkv.parameters()));
        p.extend(prefixed("attn.proj", self.attn.proj.parameters()));
        p.extend(prefixed("norm2", self.norm2.parameters()));
        p.extend(prefixed("mlp.fc1", self.mlp.fc1.parameters()));
        p.extend(prefixed("mlp.fc2", self.mlp.fc2.parameters()));
        p
    }

    /// The same tensors as `parameters`, mutable (to swap them by name).
    pub fn params_mut(&mut self) -> Vec<(String, &mut Tensor)> {
        let mut p = norm_mut("norm1", &mut self.norm1);
        p.extend(prefixed_mut("attn", self.attn.params_mut()));
        p.extend(norm_mut("norm2", &mut self.norm2));
        p.extend(prefixed_mut("mlp", self.mlp.params_mut()));
        p
    }
}

/// `prefixed` for mutable references.
pub(super) fn prefixed_mut<'a>(
    prefix: &str,
    named: Vec<(String, &'a mut Tensor)>,
) -> Vec<(String, &'a mut Tensor)> {
    named
        .into_iter()
        .map(|(n, t)| (format!("{prefix}.{n}"), t))
        .collect()
}
