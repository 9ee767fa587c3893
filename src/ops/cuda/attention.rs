//! Attention's CUDA path: the fused flash-attention forward (o, f32 lse) and backward, reading
//! q, k, v (and the incoming gradient) in place through their [B, H, L, D] strides, with the
//! causal and key-padding masks; its own backward node (`AttnCudaBack`).

use super::{tensor, DevIn, OnCuda};
use crate::autograd::{op_output, Backward};
use crate::backend::cpu::attention::AttnDims;
use crate::backend::cuda::attention::{
    attention_backward, attention_forward, AttnGrads, AttnShape, KeyKeep, View, HEAD_WIDTHS,
};
use crate::error::Result;
use crate::ops::attention::AttentionMask;
use crate::tensor::{CpuStorage, DType, Layout, Storage, Tensor};

/// True when the kernels cover this problem: f32/bf16/f16, D = Dv in [`HEAD_WIDTHS`], no
/// additive mask, a positive scale and B·H within the grid.
pub fn supported(dims: &AttnDims, dtype: DType, mask: &AttentionMask<'_>, scale: f64) -> bool {
    matches!(dtype, DType::F32 | DType::BF16 | DType::F16)
        && mask.additive.is_none()
        && dims.d == dims.dv
        && HEAD_WIDTHS.contains(&dims.d)
        && scale.is_finite()
        && scale > 0.0
        && (scale as f32) > 0.0
        && dims.batch * dims.heads <= 65535
        && [dims.batch, dims.heads, dims.lq, dims.lk]
            .iter()
            .all(|&n| n <= i32::MAX as usize)
        && dims.batch * dims.heads * dims.lq * dims.d <= i32::MAX as usize
}

/// A tensor on the device as it is (uploaded first when it lives elsewhere), read through its
/// strides.
fn strided(cx: &OnCuda, t: &Tensor) -> Result<(DevIn, [usize; 4])> {
    let t = t.detach().to_device(cx.device())?;
    let s = t.layout().strides();
    let strides = [s[0], s[1], s[2], s[3]];
    Ok((cx.view(&t)?, strides))
}

fn view(d: &DevIn, strides: [usize; 4]) -> View {
    View {
        ptr: d.ptr,
        strides,
    }
}

/// The key-padding mask as contiguous u8 [B, Lk] on the device (1 keeps a key). A u8 mask is
/// used as it is; another dtype on the host is converted there; another dtype on the device
/// is read back once (the one host sync of this path).
fn keep_mask(cx: &OnCuda, kp: &Tensor) -> Result<Tensor> {
    if kp.dtype() == DType::U8 {
        return kp.detach().to_device(cx.device())?.contiguous();
    }
    let bytes: Vec<u8> = kp
        .to_vec_f64()
        .iter()
        .map(|&x| u8::from(x != 0.0))
        .collect();
    let host = Tensor::from_storage(
        Storage::Cpu(CpuStorage::U8(bytes)),
        Layout::contiguous(kp.shape()),
    )?;
    host.to_device(cx.device())
}

fn key_keep(cx: &OnCuda, keep: Option<&Tensor>) -> Result<(Option<DevIn>, Option<KeyKeep>)> {
    match keep {
        None => Ok((None, None)),
        Some(t) => {
            let d = cx.view(t)?;
            let k = KeyKeep {
                ptr: d.ptr,
                batch_stride: t.shape()[1],
            };
            Ok((Some(d), Some(k)))
        }
    }
}

fn shape_of(d: &AttnDims, scale: f64, causal: bool) -> AttnShape {
    AttnShape {
        batch: d.batch,
        heads: d.heads,
        lq: d.lq,
        lk: d.lk,
        d: d.d,
        scale: scale as f32,
        causal,
    }
}

/// Saved for the device backward: inputs are [q, k, v].
struct AttnCudaBack {
    dims: AttnDims,
    causal: bool,
    /// u8 [B, Lk] on the device.
    keep: Option<Tensor>,
    scale: f64,
    /// f32 [B·H·Lq] on the device.
    lse: Tensor,
}

impl Backward for AttnCudaBack {
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
        let Some(cx) = OnCuda::of(&[&self.lse])? else {
            crate::bail!("internal: attention's saved statistics left the device");
        };
        let d = self.dims;
        let dt = q.dtype();
        let g = g.to_dtype(dt)?;
        let (qd, qs) = strided(&cx, q)?;
        let (kd, ks) = strided(&cx, k)?;
        let (vd, vs) = strided(&cx, v)?;
        let (od, os) = strided(&cx, out)?;
        let (gd, gs) = strided(&cx, &g)?;
        let lse = cx.view(&self.lse)?;
        let (_keep, keep) = key_keep(&cx, self.keep.as_ref())?;
        let q_len = d.batch * d.heads * d.lq * d.d;
        let k_len = d.batch * d.heads * d.lk * d.d;
        // With no query rows the kernels launch nothing: dk, dv must start at zero then.
        let out_buf =
            |want: bool, len: usize| -> Result<Option<(Storage, crate::cuda::gpu::Ptr)>> {
                if !want {
                    Ok(None)
                } else if d.lq == 0 {
                    cx.zeros(len, dt).map(Some)
                } else {
                    cx.output(len, dt).map(Some)
                }
            };
        let dq = out_buf(needs[0], q_len)?;
        let dk = out_buf(needs[1], k_len)?;
        let dv = out_buf(needs[2], k_len)?;
        let grad_view = |b: &Option<(Storage, crate::cuda::gpu::Ptr)>, l: usize| {
            b.as_ref()
                .map(|(_, p)| View::contiguous(*p, d.heads, l, d.d))
        };
        let grads = AttnGrads {
            dq: grad_view(&dq, d.lq),
            dk: grad_view(&dk, d.lk),
            dv: grad_view(&dv, d.lk),
        };
        attention_backward(
            &cx.gpu,
            view(&qd, qs),
            view(&kd, ks),
            view(&vd, vs),
            view(&od, os),
            view(&gd, gs),
            lse.ptr,
            keep,
            grads,
            &shape_of(&d, self.scale, self.causal),
        )?;
        let wrap = |b: Option<(Storage, crate::cuda::gpu::Ptr)>, like: &Tensor| {
            b.map(|(s, _)| tensor(s, like.shape())).transpose()
        };
        Ok(vec![wrap(dq, q)?, wrap(dk, k)?, wrap(dv, v)?])
    }
}

/// softmax(q·kᵀ·scale, masks)·v on the device (call when [`supported`] holds) → [B, H, Lq, D].
pub fn attention(
    cx: &OnCuda,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: &AttentionMask<'_>,
    dims: AttnDims,
    scale: f64,
) -> Result<Tensor> {
    let dt = q.dtype();
    let (qd, qs) = strided(cx, q)?;
    let (kd, ks) = strided(cx, k)?;
    let (vd, vs) = strided(cx, v)?;
    let keep_t = mask.key_padding.map(|t| keep_mask(cx, t)).transpose()?;
    let (_keep, keep) = key_keep(cx, keep_t.as_ref())?;
    let rows = dims.batch * dims.heads * dims.lq;
    let (o, op) = cx.output(rows * dims.d, dt)?;
    let (lse, lp) = cx.output(rows, DType::F32)?;
    attention_forward(
        &cx.gpu,
        view(&qd, qs),
        view(&kd, ks),
        view(&vd, vs),
        View::contiguous(op, dims.heads, dims.lq, dims.d),
        lp,
        keep,
        &shape_of(&dims, scale, mask.causal),
    )?;
    let lse = tensor(lse, &[rows])?;
    let shape = [dims.batch, dims.heads, dims.lq, dims.d];
    op_output(o, &shape, &[q, k, v], || AttnCudaBack {
        dims,
        causal: mask.causal,
        keep: keep_t,
        scale,
        lse,
    })
}
