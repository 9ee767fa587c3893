//! conv2d (PyTorch semantics: stride, padding, dilation, groups; GEMM-backed) and
//! 2-D zero padding, each with its backward.

use super::conv_weight_cache;
use crate::autograd::{op_output, Backward};
use crate::backend::cpu::{self, conv as kernel, conv::Conv2dGeom, winograd};
use crate::bail;
use crate::error::Result;
use crate::tensor::{DType, Storage, Tensor};

struct Conv2dBack(Conv2dGeom);

/// The conv's output tensor, recording its backward.
fn finish_conv2d(
    storage: Storage,
    geom: &Conv2dGeom,
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
) -> Result<Tensor> {
    let mut inputs = vec![x, weight];
    inputs.extend(bias);
    let geom = *geom;
    op_output(
        storage,
        &[geom.n, geom.o, geom.oh, geom.ow],
        &inputs,
        || Conv2dBack(geom),
    )
}

impl Backward for Conv2dBack {
    fn name(&self) -> &'static str {
        "conv2d"
    }
    fn backward(
        &self,
        g: &Tensor,
        inputs: &[Tensor],
        needs: &[bool],
        _: &Tensor,
    ) -> Result<Vec<Option<Tensor>>> {
        let geom = &self.0;
        let (x, w) = (&inputs[0], &inputs[1]);
        let dtype = x.dtype();
        let mut grads = vec![None; inputs.len()];
        #[cfg(feature = "cuda")]
        {
            let mut all = vec![g];
            all.extend(inputs.iter());
            if let Some(cx) = crate::ops::cuda::OnCuda::of(&all)? {
                if crate::ops::cuda::conv::conv_dtype(dtype) && g.dtype() == dtype {
                    if needs[0] || needs[1] {
                        let (dx, dw) = crate::ops::cuda::conv::backward(
                            &cx, geom, x, w, g, needs[0], needs[1],
                        )?;
                        grads[0] = dx;
                        grads[1] = dw;
                    }
                    if needs.len() > 2 && needs[2] {
                        // conv2d_bias_grad: dY summed over batch and pixels per channel.
                        grads[2] = Some(g.sum_dims(&[0, 2, 3], false)?);
                    }
                    return Ok(grads);
                }
            }
        }
        crate::with_real!(dtype, T => {
            let gs = g.storage();
            let dy = gs.cpu().values::<T>(g.layout());
            if needs[0] || needs[1] {
                let (xs, ws) = (x.storage(), w.storage());
                // Grad input needs the weight; grad weight needs the input. Read only those.
                let xv = needs[1].then(|| xs.cpu().values::<T>(x.layout()));
                let wv = needs[0].then(|| ws.cpu().values::<T>(w.layout()));
                let (dx, dw) = kernel::conv2d_backward::<T>(geom, xv.as_deref(), wv.as_deref(), &dy);
                if let Some(dx) = dx {
                    grads[0] = Some(Tensor::from_values(dx, x.shape(), dtype)?);
                }
                if let Some(dw) = dw {
                    grads[1] = Some(Tensor::from_values(dw, w.shape(), dtype)?);
                }
            }
            if needs.len() > 2 && needs[2] {
                let db = kernel::conv2d_bias_grad::<T>(geom, &dy);
                grads[2] = Some(Tensor::from_values(db, inputs[2].shape(), dtype)?);
            }
        });
        // A dtype without device kernels (f64) on a GPU: computed on the host (above), the
        // gradients go back to their inputs' device so that the rest of the backward stays there.
        if g.device() != crate::tensor::Device::Cpu {
            for (gr, x) in grads.iter_mut().zip(inputs) {
                if let Some(t) = gr.take() {
                    *gr = Some(t.to_device(x.device())?);
                }
            }
        }
        Ok(grads)
    }
}

/// Validate conv2d operands and compute the geometry (output size included).
fn conv_geom(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    stride: (usize, usize),
    padding: (usize, usize),
    dilation: (usize, usize),
    groups: usize,
) -> Result<Conv2dGeom> {
    if x.rank() != 4 {
        bail!(
            "conv2d: input must be [N, C, H, W], got shape {:?}",
            x.shape()
        );
    }
    if weight.rank() != 4 {
        bail!(
            "conv2d: weight must be [O, C/groups, kH, kW], got shape {:?}",
            weight.shape()
        );
    }
    if !x.dtype().is_float() || weight.dtype() != x.dtype() {
        bail!(
            "conv2d: input and weight must share one float dtype, got {} and {}",
            x.dtype(),
            weight.dtype()
        );
    }
    let (s, ws) = (x.shape(), weight.shape());
    let (n, c, h, w) = (s[0], s[1], s[2], s[3]);
    let (o, ci, kh, kw) = (ws[0], ws[1], ws[2], ws[3]);
    if groups == 0 || c % groups != 0 || o % groups != 0 {
        bail!("conv2d: groups={groups} must divide input channels {c} and output channels {o}");
    }
    if ci != c / groups {
        bail!("conv2d: weight {ws:?} expects {} input channels (x groups {groups}), input {s:?} has {c}", ci * groups);
    }
    if c == 0 || o == 0 || h == 0 || w == 0 || kh == 0 || kw == 0 {
        bail!("conv2d: empty channel, spatial or kernel dimension (input {s:?}, weight {ws:?})");
    }
    if stride.0 == 0 || stride.1 == 0 || dilation.0 == 0 || dilation.1 == 0 {
        bail!("conv2d: stride {stride:?} and dilation {dilation:?} must be positive");
    }
    if let Some(b) = bias {
        if b.shape() != [o] || b.dtype() != x.dtype() {
            bail!(
                "conv2d: bias must be [{o}] of dtype {}, got {:?} of {}",
                x.dtype(),
                b.shape(),
                b.dtype()
            );
        }
    }
    let (eh, ew) = (dilation.0 * (kh - 1) + 1, dilation.1 * (kw - 1) + 1);
    let (hp, wp) = (h + 2 * padding.0, w + 2 * padding.1);
    if eh > hp || ew > wp {
        bail!("conv2d: kernel {kh}x{kw} (dilated extent {eh}x{ew}) is larger than the padded input {hp}x{wp} (input {s:?}, padding {padding:?})");
    }
    Ok(Conv2dGeom {
        n,
        c,
        h,
        w,
        o,
        kh,
        kw,
        stride,
        padding,
        dilation,
        groups,
        oh: (hp - eh) / stride.0 + 1,
        ow: (wp - ew) / stride.1 + 1,
    })
}

struct Pad2dBack((usize, usize, usize, usize));

impl Backward for Pad2dBack {
    fn name(&self) -> &'static str {
        "pad2d"
    }
    fn backward(
        &self,
        g: &Tensor,
        inputs: &[Tensor],
        _: &[bool],
        _: &Tensor,
    ) -> Result<Vec<Option<Tensor>>> {
        let x = &inputs[0];
        #[cfg(feature = "cuda")]
        if let Some(cx) = crate::ops::cuda::OnCuda::of(&[g])? {
            return Ok(vec![Some(crate::ops::cuda::conv::crop2d(
                &cx,
                g,
                self.0,
                x.shape(),
            )?)]);
        }
        let r = x.rank();
        let (h, w) = (x.shape()[r - 2], x.shape()[r - 1]);
        let planes = x.numel() / (h * w).max(1);
        let dx = crate::with_real!(x.dtype(), T => {
            Tensor::from_values(kernel::crop2d(&g.to_vec::<T>(), planes, h, w, self.0), x.shape(), x.dtype())?
        });
        Ok(vec![Some(dx)])
    }
}

impl Tensor {
    /// 2-D convolution, PyTorch's `F.conv2d`: input [N, C, H, W], weight
    /// [O, C/groups, kH, kW], optional bias [O] → [N, O, oH, oW] with
    /// oH = (H + 2·pad − dil·(kH − 1) − 1) / stride + 1.
    pub fn conv2d(
        &self,
        weight: &Tensor,
        bias: Option<&Tensor>,
        stride: (usize, usize),
        padding: (usize, usize),
        dilation: (usize, usize),
        groups: usize,
    ) -> Result<Tensor> {
        let geom = conv_geom(self, weight, bias, stride, padding, dilation, groups)?;
        let dtype = self.dtype();
        #[cfg(feature = "cuda")]
        {
            let mut inputs = vec![self, weight];
            inputs.extend(bias);
            if let Some(cx) = crate::ops::cuda::OnCuda::of(&inputs)? {
                if crate::ops::cuda::conv::conv_dtype(dtype) {
                    let storage = crate::ops::cuda::conv::conv2d(&cx, &geom, self, weight, bias)?;
                    return finish_conv2d(storage, &geom, self, weight, bias);
                }
            }
        }
        let storage = crate::with_real!(dtype, T => {
            let xs = self.storage();
            if dtype == DType::F32 && winograd::applicable(&geom) {
                // Same as the generic path, with the weight transform kept across calls.
                let xv = xs.cpu().values::<f32>(self.layout());
                let bv = bias.map(|b| b.to_vec::<f32>());
                let u = conv_weight_cache::winograd_weights(weight, &geom);
                let y = winograd::forward(&geom, &xv, &u, bv.as_deref());
                return finish_conv2d(cpu::storage_from(y, dtype), &geom, self, weight, bias);
            }
            let ws = weight.storage();
            let xv = xs.cpu().values::<T>(self.layout());
            let wv = ws.cpu().values::<T>(weight.layout());
            let bv = bias.map(|b| b.to_vec::<T>());
            cpu::storage_from(kernel::conv2d_forward::<T>(&geom, &xv, &wv, bv.as_deref()), dtype)
        });
        finish_conv2d(storage, &geom, self, weight, bias)
    }

    /// Zero-pad the last two dims (`F.pad(x, (left, right, top, bottom))`): callers
    /// use it for asymmetric padding, e.g. the VAE's stride-2 downsample.
    pub fn pad2d(&self, left: usize, right: usize, top: usize, bottom: usize) -> Result<Tensor> {
        if self.rank() < 2 || !self.dtype().is_float() {
            bail!(
                "pad2d needs a float tensor of rank >= 2, got {:?} of {}",
                self.shape(),
                self.dtype()
            );
        }
        let r = self.rank();
        let (h, w) = (self.shape()[r - 2], self.shape()[r - 1]);
        let planes: usize = self.shape()[..r - 2].iter().product();
        let pads = (left, right, top, bottom);
        let mut shape = self.shape().to_vec();
        shape[r - 2] = h + top + bottom;
        shape[r - 1] = w + left + right;
        #[cfg(feature = "cuda")]
        if let Some(cx) = crate::ops::cuda::OnCuda::of(&[self])? {
            let storage = crate::ops::cuda::conv::pad2d(&cx, self, pads, &shape)?;
            return op_output(storage, &shape, &[self], || Pad2dBack(pads));
        }
        let storage = crate::with_real!(self.dtype(), T => {
            let xs = self.storage();
            let xv = xs.cpu().values::<T>(self.layout());
            cpu::storage_from(kernel::pad2d(&xv, planes, h, w, pads), self.dtype())
        });
        op_output(storage, &shape, &[self], || Pad2dBack(pads))
    }
}
