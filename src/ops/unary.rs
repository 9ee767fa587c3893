//! Elementwise unary ops and activations (GELU erf/tanh, quick-GELU, SiLU, ReLU,
//! GEGLU), scalar affine and power.

use crate::autograd::{op_output, Backward};
use crate::backend::cpu::{self, elementwise::Unary};
use crate::bail;
use crate::error::Result;
use crate::tensor::Tensor;

/// The device an op on `ts` runs on when it is a GPU and `x` is of a kernel dtype (f32, bf16,
/// f16); None sends the op down the CPU path (the host fallback for device inputs).
#[cfg(feature = "cuda")]
fn on_cuda(ts: &[&Tensor], x: &Tensor) -> Result<Option<crate::ops::cuda::OnCuda>> {
    if !crate::ops::cuda::cast::kernel_float(x.dtype()) {
        return Ok(None);
    }
    crate::ops::cuda::OnCuda::of(ts)
}

struct UnaryBack(Unary);

impl Backward for UnaryBack {
    fn name(&self) -> &'static str {
        self.0.name()
    }
    fn backward(
        &self,
        g: &Tensor,
        inputs: &[Tensor],
        _: &[bool],
        out: &Tensor,
    ) -> Result<Vec<Option<Tensor>>> {
        let x = &inputs[0];
        #[cfg(feature = "cuda")]
        if let Some(cx) = on_cuda(&[x, out, g], x)? {
            let g = g.to_dtype(x.dtype())?;
            let dx = crate::ops::cuda::unary::unary_backward(&cx, self.0, x, out, &g)?;
            return Ok(vec![Some(crate::ops::cuda::tensor(dx, x.shape())?)]);
        }
        let dx = crate::with_real!(x.dtype(), T => {
            let d = cpu::elementwise::unary_backward(
                self.0,
                &x.to_vec::<T>(),
                &out.to_vec::<T>(),
                &g.to_vec::<T>(),
            );
            Tensor::from_values(d, x.shape(), x.dtype())?
        });
        Ok(vec![Some(dx)])
    }
}

fn unary(op: Unary, x: &Tensor) -> Result<Tensor> {
    if !x.dtype().is_float() {
        bail!("{} needs a float tensor, got {}", op.name(), x.dtype());
    }
    #[cfg(feature = "cuda")]
    if let Some(cx) = on_cuda(&[x], x)? {
        let storage = crate::ops::cuda::unary::unary(&cx, op, x)?;
        return op_output(storage, x.shape(), &[x], || UnaryBack(op));
    }
    let storage = crate::with_real!(x.dtype(), T => {
        cpu::storage_from(x.with_values::<T, _>(|v| cpu::elementwise::unary(op, v)), x.dtype())
    });
    op_output(storage, x.shape(), &[x], || UnaryBack(op))
}

struct GegluBack;

impl Backward for GegluBack {
    fn name(&self) -> &'static str {
        "geglu"
    }
    fn backward(
        &self,
        g: &Tensor,
        inputs: &[Tensor],
        _: &[bool],
        _: &Tensor,
    ) -> Result<Vec<Option<Tensor>>> {
        let x = &inputs[0];
        let d = x.shape().last().copied().unwrap_or(0) / 2;
        #[cfg(feature = "cuda")]
        if let Some(cx) = on_cuda(&[x, g], x)? {
            let g = g.to_dtype(x.dtype())?;
            let rows = x.shape()[..x.rank() - 1].iter().product();
            let dx = crate::ops::cuda::unary::geglu_backward(&cx, x, &g, rows, d)?;
            return Ok(vec![Some(crate::ops::cuda::tensor(dx, x.shape())?)]);
        }
        let dx = crate::with_real!(x.dtype(), T => {
            let dx = cpu::geglu::geglu_backward(&x.to_vec::<T>(), &g.to_vec::<T>(), d);
            Tensor::from_values(dx, x.shape(), x.dtype())?
        });
        Ok(vec![Some(dx)])
    }
}

struct AffineBack(f64);
impl Backward for AffineBack {
    fn name(&self) -> &'static str {
        "affine"
    }
    fn backward(
        &self,
        g: &Tensor,
        _: &[Tensor],
        _: &[bool],
        _: &Tensor,
    ) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(g.affine(self.0, 0.0)?)])
    }
}

/// x * mul + add.
pub fn affine(x: &Tensor, mul: f64, add: f64) -> Result<Tensor> {
    #[cfg(feature = "cuda")]
    if let Some(cx) = on_cuda(&[x], x)? {
        let storage = crate::ops::cuda::unary::affine(&cx, x, mul, add)?;
        return op_output(storage, x.shape(), &[x], || AffineBack(mul));
    }
    let storage = crate::with_real!(x.dtype(), T => {
        let (m, a) = (T::from_f64(mul), T::from_f64(add));
        let v = x.to_vec::<T>();
        cpu::storage_from(cpu::par_fill(v.len(), |i| v[i] * m + a), x.dtype())
    });
    op_output(storage, x.shape(), &[x], || AffineBack(mul))
}

struct ClampBack(f64, f64);
impl Backward for ClampBack {
    fn name(&self) -> &'static str {
        "clamp"
    }
    fn backward(
        &self,
        g: &Tensor,
        inputs: &[Tensor],
        _: &[bool],
        _: &Tensor,
    ) -> Result<Vec<Option<Tensor>>> {
        let x = &inputs[0];
        let (lo, hi) = (self.0, self.1);
        #[cfg(feature = "cuda")]
        if let Some(cx) = on_cuda(&[x, g], x)? {
            let g = g.to_dtype(x.dtype())?;
            let dx = crate::ops::cuda::unary::clamp_backward(&cx, x, &g, lo, hi)?;
            return Ok(vec![Some(crate::ops::cuda::tensor(dx, x.shape())?)]);
        }
        let dx = crate::with_real!(x.dtype(), T => {
            let (xv, gv) = (x.to_vec::<T>(), g.to_vec::<T>());
            // torch.clamp passes the gradient where lo <= x <= hi.
            let d = cpu::par_fill(xv.len(), |i| {
                let v = xv[i].as_f64();
                if v >= lo && v <= hi { gv[i] } else { T::zero() }
            });
            Tensor::from_values(d, x.shape(), x.dtype())?
        });
        Ok(vec![Some(dx)])
    }
}

/// min(max(x, lo), hi) (NaN stays NaN, as torch.clamp).
pub fn clamp(x: &Tensor, lo: f64, hi: f64) -> Result<Tensor> {
    if !x.dtype().is_float() || lo > hi {
        bail!(
            "clamp needs a float tensor and lo <= hi, got {} and [{lo}, {hi}]",
            x.dtype()
        );
    }
    #[cfg(feature = "cuda")]
    if let Some(cx) = on_cuda(&[x], x)? {
        let storage = crate::ops::cuda::unary::clamp(&cx, x, lo, hi)?;
        return op_output(storage, x.shape(), &[x], || ClampBack(lo, hi));
    }
    let storage = crate::with_real!(x.dtype(), T => {
        let (l, h) = (T::from_f64(lo), T::from_f64(hi));
        let v = x.to_vec::<T>();
        cpu::storage_from(
            cpu::par_fill(v.len(), |i| if v[i] < l { l } else if v[i] > h { h } else { v[i] }),
            x.dtype(),
        )
    });
    op_output(storage, x.shape(), &[x], || ClampBack(lo, hi))
}

struct PowBack(f64);
impl Backward for PowBack {
    fn name(&self) -> &'static str {
        "powf"
    }
    fn backward(
        &self,
        g: &Tensor,
        inputs: &[Tensor],
        _: &[bool],
        _: &Tensor,
    ) -> Result<Vec<Option<Tensor>>> {
        #[cfg(feature = "cuda")]
        if let Some(cx) = on_cuda(&[&inputs[0], g], &inputs[0])? {
            let x = &inputs[0];
            let g = g.to_dtype(x.dtype())?;
            let dx = crate::ops::cuda::unary::powf_backward(&cx, x, &g, self.0)?;
            return Ok(vec![Some(crate::ops::cuda::tensor(dx, x.shape())?)]);
        }
        Ok(vec![Some(
            g.mul(&inputs[0].powf(self.0 - 1.0)?.scale(self.0)?)?,
        )])
    }
}

impl Tensor {
    /// `torch.clamp(x, lo, hi)`.
    pub fn clamp(&self, lo: f64, hi: f64) -> Result<Tensor> {
        clamp(self, lo, hi)
    }
    pub fn neg(&self) -> Result<Tensor> {
        unary(Unary::Neg, self)
    }
    pub fn exp(&self) -> Result<Tensor> {
        unary(Unary::Exp, self)
    }
    pub fn log(&self) -> Result<Tensor> {
        unary(Unary::Log, self)
    }
    pub fn sqrt(&self) -> Result<Tensor> {
        unary(Unary::Sqrt, self)
    }
    pub fn tanh(&self) -> Result<Tensor> {
        unary(Unary::Tanh, self)
    }
    pub fn sigmoid(&self) -> Result<Tensor> {
        unary(Unary::Sigmoid, self)
    }
    pub fn relu(&self) -> Result<Tensor> {
        unary(Unary::Relu, self)
    }
    pub fn silu(&self) -> Result<Tensor> {
        unary(Unary::Silu, self)
    }
    /// GELU, exact (erf) form: PyTorch's `gelu(approximate="none")`.
    pub fn gelu(&self) -> Result<Tensor> {
        unary(Unary::Gelu, self)
    }
    /// GELU, tanh approximation: PyTorch's `gelu(approximate="tanh")`.
    pub fn gelu_tanh(&self) -> Result<Tensor> {
        unary(Unary::GeluTanh, self)
    }
    /// x·sigmoid(1.702x) (OpenAI CLIP's activation).
    pub fn quick_gelu(&self) -> Result<Tensor> {
        unary(Unary::QuickGelu, self)
    }
    pub fn abs(&self) -> Result<Tensor> {
        unary(Unary::Abs, self)
    }
    pub fn square(&self) -> Result<Tensor> {
        unary(Unary::Square, self)
    }
    pub fn recip(&self) -> Result<Tensor> {
        unary(Unary::Recip, self)
    }
    pub fn sin(&self) -> Result<Tensor> {
        unary(Unary::Sin, self)
    }
    pub fn cos(&self) -> Result<Tensor> {
        unary(Unary::Cos, self)
    }

    /// x^p for a scalar exponent.
    pub fn powf(&self, p: f64) -> Result<Tensor> {
        #[cfg(feature = "cuda")]
        if let Some(cx) = on_cuda(&[self], self)? {
            let storage = crate::ops::cuda::unary::powf(&cx, self, p)?;
            return op_output(storage, self.shape(), &[self], || PowBack(p));
        }
        let storage = crate::with_real!(self.dtype(), T => {
            let v = self.to_vec::<T>();
            let e = T::from_f64(p);
            cpu::storage_from(cpu::par_fill(v.len(), |i| v[i].powf(e)), self.dtype())
        });
        op_output(storage, self.shape(), &[self], || PowBack(p))
    }

    /// GEGLU (diffusers): split the last dim in halves (h, gate); h · gelu(gate)
    /// with the exact GELU. One fused pass forward and backward.
    pub fn geglu(&self) -> Result<Tensor> {
        let dims = self.shape();
        let width = dims.last().copied().unwrap_or(0);
        if !self.dtype().is_float() || dims.is_empty() || width % 2 != 0 {
            bail!(
                "geglu needs a float tensor whose last dim is even, got {} {:?}",
                self.dtype(),
                dims
            );
        }
        let mut out_shape = dims.to_vec();
        *out_shape.last_mut().expect("non-empty") = width / 2;
        #[cfg(feature = "cuda")]
        if let Some(cx) = on_cuda(&[self], self)? {
            let rows = dims[..dims.len() - 1].iter().product();
            let storage = crate::ops::cuda::unary::geglu(&cx, self, rows, width / 2)?;
            return op_output(storage, &out_shape, &[self], || GegluBack);
        }
        let storage = crate::with_real!(self.dtype(), T => {
            let y = self.with_values::<T, _>(|v| cpu::geglu::geglu_forward(v, width / 2));
            cpu::storage_from(y, self.dtype())
        });
        op_output(storage, &out_shape, &[self], || GegluBack)
    }
}
