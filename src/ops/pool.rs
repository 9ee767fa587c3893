//! 2-D pooling and upsampling with autograd (PyTorch semantics): max pool (gradient
//! to the argmax), average pool, adaptive average pool, nearest upsample.

use crate::autograd::{op_output, Backward};
use crate::backend::cpu::{self, pool as kernel, pool::Pool2dGeom};
use crate::bail;
use crate::error::Result;
use crate::tensor::Tensor;

/// [N, C, H, W] → (planes N·C, H, W), or an error naming the op.
fn planes(x: &Tensor, op: &str) -> Result<(usize, usize, usize)> {
    if x.rank() != 4 || !x.dtype().is_float() {
        bail!(
            "{op}: input must be a float [N, C, H, W] tensor, got {:?} of {}",
            x.shape(),
            x.dtype()
        );
    }
    let s = x.shape();
    Ok((s[0] * s[1], s[2], s[3]))
}

fn pool_geom(
    x: &Tensor,
    op: &str,
    kernel: (usize, usize),
    stride: (usize, usize),
    padding: (usize, usize),
) -> Result<Pool2dGeom> {
    let (planes, h, w) = planes(x, op)?;
    if kernel.0 == 0 || kernel.1 == 0 || stride.0 == 0 || stride.1 == 0 {
        bail!("{op}: kernel {kernel:?} and stride {stride:?} must be positive");
    }
    if 2 * padding.0 > kernel.0 || 2 * padding.1 > kernel.1 {
        bail!("{op}: padding {padding:?} must be at most half the kernel {kernel:?}");
    }
    let oh = Pool2dGeom::out_size(h, kernel.0, stride.0, padding.0);
    let ow = Pool2dGeom::out_size(w, kernel.1, stride.1, padding.1);
    let (Some(oh), Some(ow)) = (oh, ow) else {
        bail!(
            "{op}: kernel {kernel:?} is larger than the padded input {:?} (padding {padding:?})",
            &x.shape()[2..]
        );
    };
    if h * w > u32::MAX as usize {
        bail!("{op}: planes of {h}x{w} are too large");
    }
    Ok(Pool2dGeom {
        planes,
        h,
        w,
        kernel,
        stride,
        padding,
        oh,
        ow,
    })
}

fn out_shape(x: &Tensor, oh: usize, ow: usize) -> [usize; 4] {
    [x.shape()[0], x.shape()[1], oh, ow]
}

/// Each window's argmax: on the host, or (device path) a device I32 tensor of the u32 indices.
enum Argmax {
    Host(Vec<u32>),
    #[cfg(feature = "cuda")]
    Device(Tensor),
}

struct MaxPoolBack {
    geom: Pool2dGeom,
    argmax: Argmax,
}

impl Backward for MaxPoolBack {
    fn name(&self) -> &'static str {
        "max_pool2d"
    }
    fn backward(
        &self,
        g: &Tensor,
        inputs: &[Tensor],
        _: &[bool],
        _: &Tensor,
    ) -> Result<Vec<Option<Tensor>>> {
        let x = &inputs[0];
        #[cfg_attr(not(feature = "cuda"), allow(clippy::infallible_destructuring_match))]
        let argmax = match &self.argmax {
            Argmax::Host(a) => a,
            #[cfg(feature = "cuda")]
            Argmax::Device(idx) => {
                let cx = crate::ops::cuda::OnCuda::of(&[idx])?.expect("a device argmax");
                let dx = crate::ops::cuda::pool::max_pool2d_backward(&cx, &self.geom, g, idx, x)?;
                return Ok(vec![Some(dx)]);
            }
        };
        let dx = crate::with_real!(x.dtype(), T => {
            let d = kernel::max_pool2d_backward(&self.geom, &g.to_vec::<T>(), argmax);
            Tensor::from_values(d, x.shape(), x.dtype())?
        });
        Ok(vec![Some(dx)])
    }
}

struct AvgPoolBack {
    geom: Pool2dGeom,
    count_include_pad: bool,
}

impl Backward for AvgPoolBack {
    fn name(&self) -> &'static str {
        "avg_pool2d"
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
        if let Some(cx) = crate::ops::cuda::OnCuda::of(&[g, x])? {
            if crate::ops::cuda::pool::pool_dtype(x.dtype()) {
                let dx = crate::ops::cuda::pool::avg_pool2d_backward(
                    &cx,
                    &self.geom,
                    self.count_include_pad,
                    g,
                    x,
                )?;
                return Ok(vec![Some(dx)]);
            }
        }
        let dx = crate::with_real!(x.dtype(), T => {
            let d = kernel::avg_pool2d_backward(&self.geom, &g.to_vec::<T>(), self.count_include_pad);
            Tensor::from_values(d, x.shape(), x.dtype())?
        });
        Ok(vec![Some(dx)])
    }
}

/// Backward of the shape-only ops: adaptive average pool and nearest upsample.
enum ResizeBack {
    Adaptive { out: (usize, usize) },
    Upsample { scale: usize },
}

impl Backward for ResizeBack {
    fn name(&self) -> &'static str {
        match self {
            ResizeBack::Adaptive { .. } => "adaptive_avg_pool2d",
            ResizeBack::Upsample { .. } => "upsample_nearest2d",
        }
    }
    fn backward(
        &self,
        g: &Tensor,
        inputs: &[Tensor],
        _: &[bool],
        _: &Tensor,
    ) -> Result<Vec<Option<Tensor>>> {
        let x = &inputs[0];
        let (p, h, w) = planes(x, self.name())?;
        #[cfg(feature = "cuda")]
        if let Some(cx) = crate::ops::cuda::OnCuda::of(&[g, x])? {
            if crate::ops::cuda::pool::pool_dtype(x.dtype()) {
                let (adaptive, scale) = match *self {
                    ResizeBack::Adaptive { out } => (Some(out), 1),
                    ResizeBack::Upsample { scale } => (None, scale),
                };
                let dx = crate::ops::cuda::pool::resize_backward(&cx, g, x, adaptive, scale)?;
                return Ok(vec![Some(dx)]);
            }
        }
        let dx = crate::with_real!(x.dtype(), T => {
            let gy = g.to_vec::<T>();
            let d = match *self {
                ResizeBack::Adaptive { out } => kernel::adaptive_avg_pool2d_backward(&gy, p, (h, w), out),
                ResizeBack::Upsample { scale } => kernel::upsample_nearest2d_backward(&gy, p, (h, w), scale),
            };
            Tensor::from_values(d, x.shape(), x.dtype())?
        });
        Ok(vec![Some(dx)])
    }
}

impl Tensor {
    /// `F.max_pool2d(x, kernel, stride, padding)` on [N, C, H, W]: padding counts as
    /// -inf; the gradient goes to each window's (first) maximum.
    pub fn max_pool2d(
        &self,
        kernel: (usize, usize),
        stride: (usize, usize),
        padding: (usize, usize),
    ) -> Result<Tensor> {
        let geom = pool_geom(self, "max_pool2d", kernel, stride, padding)?;
        #[cfg(feature = "cuda")]
        if let Some(cx) = crate::ops::cuda::OnCuda::of(&[self])? {
            if crate::ops::cuda::pool::pool_dtype(self.dtype()) {
                let (storage, idx) = crate::ops::cuda::pool::max_pool2d(&cx, &geom, self)?;
                return op_output(storage, &out_shape(self, geom.oh, geom.ow), &[self], || {
                    MaxPoolBack {
                        geom,
                        argmax: Argmax::Device(idx),
                    }
                });
            }
        }
        let (storage, argmax) = crate::with_real!(self.dtype(), T => {
            let (v, idx) = kernel::max_pool2d(&geom, &self.to_vec::<T>());
            (cpu::storage_from(v, self.dtype()), Argmax::Host(idx))
        });
        op_output(storage, &out_shape(self, geom.oh, geom.ow), &[self], || {
            MaxPoolBack { geom, argmax }
        })
    }

    /// `F.avg_pool2d(x, kernel, stride, padding, count_include_pad=...)` on [N, C, H, W]
    /// (zero padding; `count_include_pad` false divides by the real elements only).
    pub fn avg_pool2d(
        &self,
        kernel: (usize, usize),
        stride: (usize, usize),
        padding: (usize, usize),
        count_include_pad: bool,
    ) -> Result<Tensor> {
        let geom = pool_geom(self, "avg_pool2d", kernel, stride, padding)?;
        #[cfg(feature = "cuda")]
        if let Some(cx) = crate::ops::cuda::OnCuda::of(&[self])? {
            if crate::ops::cuda::pool::pool_dtype(self.dtype()) {
                let storage =
                    crate::ops::cuda::pool::avg_pool2d(&cx, &geom, count_include_pad, self)?;
                return op_output(storage, &out_shape(self, geom.oh, geom.ow), &[self], || {
                    AvgPoolBack {
                        geom,
                        count_include_pad,
                    }
                });
            }
        }
        let storage = crate::with_real!(self.dtype(), T => {
            cpu::storage_from(kernel::avg_pool2d(&geom, &self.to_vec::<T>(), count_include_pad), self.dtype())
        });
        op_output(storage, &out_shape(self, geom.oh, geom.ow), &[self], || {
            AvgPoolBack {
                geom,
                count_include_pad,
            }
        })
    }

    /// `F.adaptive_avg_pool2d(x, (out_h, out_w))`: output cell i averages input
    /// [⌊i·H/out_h⌋, ⌈(i+1)·H/out_h⌉) (likewise for columns). ResNet's global pool is (1, 1).
    pub fn adaptive_avg_pool2d(&self, out_h: usize, out_w: usize) -> Result<Tensor> {
        let (p, h, w) = planes(self, "adaptive_avg_pool2d")?;
        if out_h == 0 || out_w == 0 || h == 0 || w == 0 {
            bail!(
                "adaptive_avg_pool2d: output {out_h}x{out_w} and input {h}x{w} must be non-empty"
            );
        }
        let out = (out_h, out_w);
        #[cfg(feature = "cuda")]
        if let Some(cx) = crate::ops::cuda::OnCuda::of(&[self])? {
            if crate::ops::cuda::pool::pool_dtype(self.dtype()) {
                let storage =
                    crate::ops::cuda::pool::adaptive_avg_pool2d(&cx, self, p, (h, w), out)?;
                return op_output(storage, &out_shape(self, out_h, out_w), &[self], || {
                    ResizeBack::Adaptive { out }
                });
            }
        }
        let storage = crate::with_real!(self.dtype(), T => {
            cpu::storage_from(kernel::adaptive_avg_pool2d(&self.to_vec::<T>(), p, (h, w), (out_h, out_w)), self.dtype())
        });
        op_output(storage, &out_shape(self, out_h, out_w), &[self], || {
            ResizeBack::Adaptive { out }
        })
    }

    /// `F.interpolate(x, scale_factor=scale, mode="nearest")` for an integer scale:
    /// [N, C, H, W] → [N, C, H·scale, W·scale]; the gradient sums each scale×scale block.
    pub fn upsample_nearest2d(&self, scale: usize) -> Result<Tensor> {
        let (p, h, w) = planes(self, "upsample_nearest2d")?;
        if scale == 0 {
            bail!("upsample_nearest2d: scale must be positive");
        }
        #[cfg(feature = "cuda")]
        if let Some(cx) = crate::ops::cuda::OnCuda::of(&[self])? {
            if crate::ops::cuda::pool::pool_dtype(self.dtype()) {
                let storage =
                    crate::ops::cuda::pool::upsample_nearest2d(&cx, self, p, (h, w), scale)?;
                return op_output(
                    storage,
                    &out_shape(self, h * scale, w * scale),
                    &[self],
                    || ResizeBack::Upsample { scale },
                );
            }
        }
        let storage = crate::with_real!(self.dtype(), T => {
            cpu::storage_from(kernel::upsample_nearest2d(&self.to_vec::<T>(), p, (h, w), scale), self.dtype())
        });
        op_output(
            storage,
            &out_shape(self, h * scale, w * scale),
            &[self],
            || ResizeBack::Upsample { scale },
        )
    }
}
