//! CUDA paths of the elementwise unary ops and their backward: the `Unary` maps, affine,
//! clamp, powf and GEGLU (kernels/elementwise.cu, kernels/geglu.cu).

use super::OnCuda;
use crate::backend::cpu::elementwise::Unary;
use crate::backend::cuda::elementwise::{self, Launch};
use crate::backend::cuda::geglu::{self, GegluLaunch};
use crate::cuda::gpu::Ptr;
use crate::error::Result;
use crate::tensor::{Storage, Tensor};

/// The ops whose derivative reads the forward's output y (the others read x).
fn reads_y(op: Unary) -> bool {
    matches!(
        op,
        Unary::Exp | Unary::Sqrt | Unary::Tanh | Unary::Sigmoid | Unary::Recip
    )
}

/// y = f(x), contiguous, x's shape and dtype.
pub fn unary(cx: &OnCuda, op: Unary, x: &Tensor) -> Result<Storage> {
    let n = x.numel();
    let xd = cx.input(x)?;
    let (storage, y) = cx.output(n, x.dtype())?;
    elementwise::unary(&cx.gpu, op, xd.ptr, y, n, Launch::default())?;
    Ok(storage)
}

/// dx = g·f'(x, y) in x's dtype (`g` of that dtype too); only the one of x and y the
/// derivative reads is touched.
pub fn unary_backward(
    cx: &OnCuda,
    op: Unary,
    x: &Tensor,
    y: &Tensor,
    g: &Tensor,
) -> Result<Storage> {
    let n = x.numel();
    let dt = x.dtype();
    let (xd, yd) = if reads_y(op) {
        (None, Some(cx.input(y)?))
    } else {
        (Some(cx.input(x)?), None)
    };
    let gd = cx.input(g)?;
    let ptr = |d: &Option<super::DevIn>| d.as_ref().map_or(Ptr::null(dt), |d| d.ptr);
    let (storage, dx) = cx.output(n, dt)?;
    elementwise::unary_backward(
        &cx.gpu,
        op,
        ptr(&xd),
        ptr(&yd),
        gd.ptr,
        dx,
        n,
        Launch::default(),
    )?;
    Ok(storage)
}

/// y = x·mul + add (mul and add rounded to f32).
pub fn affine(cx: &OnCuda, x: &Tensor, mul: f64, add: f64) -> Result<Storage> {
    let n = x.numel();
    let xd = cx.input(x)?;
    let (storage, y) = cx.output(n, x.dtype())?;
    elementwise::affine(&cx.gpu, xd.ptr, y, n, mul, add, Launch::default())?;
    Ok(storage)
}

/// y = clamp(x, lo, hi).
pub fn clamp(cx: &OnCuda, x: &Tensor, lo: f64, hi: f64) -> Result<Storage> {
    let n = x.numel();
    let xd = cx.input(x)?;
    let (storage, y) = cx.output(n, x.dtype())?;
    elementwise::clamp(&cx.gpu, xd.ptr, y, n, lo, hi, Launch::default())?;
    Ok(storage)
}

/// dx = g where lo <= x <= hi, else 0.
pub fn clamp_backward(cx: &OnCuda, x: &Tensor, g: &Tensor, lo: f64, hi: f64) -> Result<Storage> {
    let n = x.numel();
    let (xd, gd) = (cx.input(x)?, cx.input(g)?);
    let (storage, dx) = cx.output(n, x.dtype())?;
    elementwise::clamp_backward(&cx.gpu, xd.ptr, gd.ptr, dx, n, lo, hi, Launch::default())?;
    Ok(storage)
}

/// y = x^p.
pub fn powf(cx: &OnCuda, x: &Tensor, p: f64) -> Result<Storage> {
    let n = x.numel();
    let xd = cx.input(x)?;
    let (storage, y) = cx.output(n, x.dtype())?;
    elementwise::powf(&cx.gpu, xd.ptr, y, n, p, Launch::default())?;
    Ok(storage)
}

/// dx = g·x^(p−1)·p.
pub fn powf_backward(cx: &OnCuda, x: &Tensor, g: &Tensor, p: f64) -> Result<Storage> {
    let n = x.numel();
    let (xd, gd) = (cx.input(x)?, cx.input(g)?);
    let (storage, dx) = cx.output(n, x.dtype())?;
    elementwise::powf_backward(&cx.gpu, xd.ptr, gd.ptr, dx, n, p, Launch::default())?;
    Ok(storage)
}

/// y [rows, d] = h·gelu(gate) from x [rows, 2d] = [h | gate].
pub fn geglu(cx: &OnCuda, x: &Tensor, rows: usize, d: usize) -> Result<Storage> {
    let xd = cx.input(x)?;
    let (storage, y) = cx.output(rows * d, x.dtype())?;
    geglu::geglu(&cx.gpu, xd.ptr, y, rows, d, GegluLaunch::default())?;
    Ok(storage)
}

/// dx [rows, 2d] from x [rows, 2d] and g [rows, d].
pub fn geglu_backward(
    cx: &OnCuda,
    x: &Tensor,
    g: &Tensor,
    rows: usize,
    d: usize,
) -> Result<Storage> {
    let (xd, gd) = (cx.input(x)?, cx.input(g)?);
    let (storage, dx) = cx.output(rows * 2 * d, x.dtype())?;
    geglu::geglu_backward(&cx.gpu, xd.ptr, gd.ptr, dx, rows, d, GegluLaunch::default())?;
    Ok(storage)
}
