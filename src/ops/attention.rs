//! Scaled dot-product attention (fused, flash-attention style on the CPU backend)
//! with combinable causal / key-padding / additive masks, and its fused backward.
//!
//! Difference from PyTorch: a query row whose keys are all masked gets a zero
//! output row and zero gradients; `torch.nn.functional.scaled_dot_product_attention`
//! returns NaN there. Zero rows keep padded batches (BERT) finite.

use crate::autograd::{op_output, Backward};
use crate::backend::cpu::{
    self,
    attention::{self as kernels, AttnDims, AttnGrads, AttnNeeds, Masks, Strided4},
};
use crate::error::Result;
use crate::tensor::{Layout, Real, Tensor};
use crate::{bail, ensure};
use std::borrow::Cow;

/// Which scores are hidden or biased; the parts combine (CLIP's text tower uses
/// `causal()`, BERT uses `key_padding(mask)`, both together work too).
#[derive(Clone, Copy, Debug, Default)]
pub struct AttentionMask<'a> {
    /// Query i attends to key j only when j <= i (top-left aligned, as PyTorch's
    /// `is_causal=True`, also when Lq != Lk).
    pub causal: bool,
    /// [B, Lk] of any dtype: non-zero keeps the key, zero hides it from all queries.
    pub key_padding: Option<&'a Tensor>,
    /// Float tensor broadcastable to [B, H, Lq, Lk], added to the scaled scores
    /// (−∞ entries mask). It receives a gradient when it requires one.
    pub additive: Option<&'a Tensor>,
}

impl<'a> AttentionMask<'a> {
    /// No masking.
    pub fn none() -> Self {
        Self::default()
    }
    /// Causal masking only.
    pub fn causal() -> Self {
        Self {
            causal: true,
            ..Self::default()
        }
    }
    /// Key padding only (`keep` is [B, Lk], non-zero = keep).
    pub fn key_padding(keep: &'a Tensor) -> Self {
        Self {
            key_padding: Some(keep),
            ..Self::default()
        }
    }
    /// An additive bias only.
    pub fn additive(bias: &'a Tensor) -> Self {
        Self {
            additive: Some(bias),
            ..Self::default()
        }
    }
    /// This mask, also causal.
    pub fn with_causal(self) -> Self {
        Self {
            causal: true,
            ..self
        }
    }
    /// This mask, also hiding padded keys.
    pub fn with_key_padding(self, keep: &'a Tensor) -> Self {
        Self {
            key_padding: Some(keep),
            ..self
        }
    }
    /// This mask, also adding `bias`.
    pub fn with_additive(self, bias: &'a Tensor) -> Self {
        Self {
            additive: Some(bias),
            ..self
        }
    }
}

/// A tensor's values as `T` with the layout to index them by (borrowed when the
/// dtype already matches).
struct Operand<'s, T: Clone> {
    data: Cow<'s, [T]>,
    layout: Layout,
}

impl<T: Real> Operand<'_, T> {
    fn view(&self) -> Strided4<'_, T> {
        let s = self.layout.strides();
        Strided4 {
            data: &self.data,
            offset: self.layout.offset(),
            strides: [s[0], s[1], s[2], s[3]],
        }
    }
}

fn operand<'s, T: Real>(
    storage: &'s crate::tensor::Storage,
    t: &Tensor,
    shape: Option<&[usize]>,
) -> Result<Operand<'s, T>> {
    let (data, layout) = cpu::strided::<T>(storage, t.layout());
    let layout = match shape {
        Some(s) => layout.broadcast_to(s)?,
        None => layout,
    };
    Ok(Operand { data, layout })
}

/// Saved for the backward: inputs are [q, k, v, additive?].
struct AttnBack {
    dims: AttnDims,
    causal: bool,
    key_keep: Option<Vec<bool>>,
    has_bias: bool,
    scale: f64,
    /// Per-row log-sum-exp of the masked scores, in the compute dtype.
    lse: Tensor,
}

impl Backward for AttnBack {
    fn name(&self) -> &'static str {
        "scaled_dot_product_attention"
    }

    fn backward(
        &self,
        g: &Tensor,
        inputs: &[Tensor],
        needs: &[bool],
        out: &Tensor,
    ) -> Result<Vec<Option<Tensor>>> {
        let (q, k, v) = (&inputs[0], &inputs[1], &inputs[2]);
        let bias = self.has_bias.then(|| &inputs[3]);
        let need = AttnNeeds {
            q: needs[0],
            k: needs[1],
            v: needs[2],
            bias: self.has_bias && needs[3],
        };
        let d = self.dims;
        crate::with_real!(q.dtype(), T => {
            let (sq, sk, sv) = (q.storage(), k.storage(), v.storage());
            let (oq, ok, ov) = (operand::<T>(&sq, q, None)?, operand::<T>(&sk, k, None)?, operand::<T>(&sv, v, None)?);
            let sb = bias.map(|b| b.storage());
            let full = [d.batch, d.heads, d.lq, d.lk];
            let ob = match (bias, &sb) {
                (Some(b), Some(s)) => Some(operand::<T>(s, b, Some(&full))?),
                _ => None,
            };
            let masks = Masks { causal: self.causal, key_keep: self.key_keep.as_deref(), bias: ob.as_ref().map(|o| o.view()) };
            let AttnGrads { dq, dk, dv, dbias } = kernels::attention_backward(
                oq.view(), ok.view(), ov.view(),
                &out.to_vec::<T>(), &g.to_vec::<T>(), &self.lse.to_vec::<T>(),
                d, &masks, self.scale, need,
            );
            let wrap = |v: Option<Vec<T>>, like: &Tensor| -> Result<Option<Tensor>> {
                v.map(|v| Tensor::from_values(v, like.shape(), like.dtype())).transpose()
            };
            let mut grads = vec![wrap(dq, q)?, wrap(dk, k)?, wrap(dv, v)?];
            if let Some(b) = bias {
                grads.push(match dbias {
                    Some(db) => Some(Tensor::from_vec(db, &full)?.sum_to(b.shape())?.to_dtype(b.dtype())?),
                    None => None,
                });
            }
            Ok(grads)
        })
    }
}

/// Validate shapes; return the problem sizes.
fn check(q: &Tensor, k: &Tensor, v: &Tensor, mask: &AttentionMask<'_>) -> Result<AttnDims> {
    const OP: &str = "scaled_dot_product_attention";
    for (name, t) in [("q", q), ("k", k), ("v", v)] {
        ensure!(
            t.rank() == 4,
            "{OP}: {name} must be [B, H, L, D], got shape {:?}",
            t.shape()
        );
    }
    ensure!(
        q.dtype().is_float() && q.dtype() == k.dtype() && q.dtype() == v.dtype(),
        "{OP}: q, k, v need one float dtype, got {}, {}, {}",
        q.dtype(),
        k.dtype(),
        v.dtype()
    );
    let (qs, ks, vs) = (q.shape(), k.shape(), v.shape());
    ensure!(
        qs[..2] == ks[..2] && qs[..2] == vs[..2],
        "{OP}: batch and head dims differ: q {qs:?}, k {ks:?}, v {vs:?}"
    );
    ensure!(
        qs[3] == ks[3],
        "{OP}: q and k head widths differ: q {qs:?}, k {ks:?}"
    );
    ensure!(
        ks[2] == vs[2],
        "{OP}: k and v lengths differ: k {ks:?}, v {vs:?}"
    );
    ensure!(qs[3] > 0, "{OP}: zero head width");
    let dims = AttnDims {
        batch: qs[0],
        heads: qs[1],
        lq: qs[2],
        lk: ks[2],
        d: qs[3],
        dv: vs[3],
    };
    if let Some(kp) = mask.key_padding {
        ensure!(
            kp.shape() == [dims.batch, dims.lk],
            "{OP}: key padding mask must be [B, Lk] = [{}, {}], got {:?}",
            dims.batch,
            dims.lk,
            kp.shape()
        );
    }
    if let Some(b) = mask.additive {
        ensure!(
            b.dtype().is_float(),
            "{OP}: additive mask must be float, got {}",
            b.dtype()
        );
        let full = [dims.batch, dims.heads, dims.lq, dims.lk];
        if b.layout().broadcast_to(&full).is_err() {
            bail!(
                "{OP}: additive mask of shape {:?} does not broadcast to [B, H, Lq, Lk] = {full:?}",
                b.shape()
            );
        }
    }
    Ok(dims)
}

/// softmax(q·kᵀ·scale + mask)·v for q [B,H,Lq,D], k [B,H,Lk,D], v [B,H,Lk,Dv]
/// (any strides: e.g. a permuted [B,L,H,D] view is read in place) → [B,H,Lq,Dv].
/// `scale` defaults to 1/√D. Fully masked rows give zeros (see the module docs).
pub fn scaled_dot_product_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: AttentionMask<'_>,
    scale: Option<f64>,
) -> Result<Tensor> {
    let dims = check(q, k, v, &mask)?;
    let scale = scale.unwrap_or(1.0 / (dims.d as f64).sqrt());
    #[cfg(feature = "cuda")]
    if let Some(cx) = crate::ops::cuda::OnCuda::of(&[q, k, v])? {
        if crate::ops::cuda::attention::supported(&dims, q.dtype(), &mask, scale) {
            return crate::ops::cuda::attention::attention(&cx, q, k, v, &mask, dims, scale);
        }
    }
    let key_keep: Option<Vec<bool>> = mask
        .key_padding
        .map(|t| t.to_vec_f64().iter().map(|&x| x != 0.0).collect());
    let (storage, lse) = crate::with_real!(q.dtype(), T => {
        let (sq, sk, sv) = (q.storage(), k.storage(), v.storage());
        let (oq, ok, ov) = (operand::<T>(&sq, q, None)?, operand::<T>(&sk, k, None)?, operand::<T>(&sv, v, None)?);
        let sb = mask.additive.map(|b| b.storage());
        let full = [dims.batch, dims.heads, dims.lq, dims.lk];
        let ob = match (mask.additive, &sb) {
            (Some(b), Some(s)) => Some(operand::<T>(s, b, Some(&full))?),
            _ => None,
        };
        let masks = Masks { causal: mask.causal, key_keep: key_keep.as_deref(), bias: ob.as_ref().map(|o| o.view()) };
        let (o, lse) = kernels::attention_forward(oq.view(), ok.view(), ov.view(), dims, &masks, scale);
        let n = lse.len();
        (cpu::storage_from(o, q.dtype()), Tensor::from_vec(lse, &[n])?)
    });
    let mut inputs = vec![q, k, v];
    inputs.extend(mask.additive);
    let shape = [dims.batch, dims.heads, dims.lq, dims.dv];
    op_output(storage, &shape, &inputs, || AttnBack {
        dims,
        causal: mask.causal,
        key_keep,
        has_bias: mask.additive.is_some(),
        scale,
        lse,
    })
}

impl Tensor {
    /// `scaled_dot_product_attention(self, k, v, mask, scale)` with self as the queries.
    pub fn attention(
        &self,
        k: &Tensor,
        v: &Tensor,
        mask: AttentionMask<'_>,
        scale: Option<f64>,
    ) -> Result<Tensor> {
        scaled_dot_product_attention(self, k, v, mask, scale)
    }
}
