//! Device paths of the losses: fused symmetric InfoNCE (backend::cuda::infonce), and
//! l2_normalize and MSE composed from the elementwise / reduce kernels in f32 (the CPU twins'
//! compute type for half inputs), results cast to the caller's dtype.

use super::{DevIn, OnCuda};
use crate::backend::cpu::binary::{Binary, Reach};
use crate::backend::cpu::elementwise::Unary;
use crate::backend::cuda::elementwise::{self as ew, Launch};
use crate::backend::cuda::infonce::{self as nce, InfoNceLaunch, Rows};
use crate::backend::cuda::reduce::{self, ReduceLaunch, SumAllLaunch};
use crate::cuda::gpu::Ptr;
use crate::error::Result;
use crate::ops::loss::Reduction;
use crate::tensor::{DType, Storage, Tensor};

/// Whether the kernels take `dtype` (f64 and integers stay on the host).
pub fn gpu_dtype(dtype: DType) -> bool {
    matches!(dtype, DType::F32 | DType::BF16 | DType::F16)
}

/// A fresh f32 buffer of `len` elements, as a tensor (keeps the block alive) and its pointer.
fn f32_buf(cx: &OnCuda, len: usize) -> Result<(Tensor, Ptr)> {
    let (s, p) = cx.output(len, DType::F32)?;
    Ok((super::tensor(s, &[len])?, p))
}

/// `t` contiguous on the device as f32 (cast by the kernel when it is bf16 / f16).
fn as_f32(cx: &OnCuda, t: &Tensor) -> Result<DevIn> {
    let ti = cx.input(t)?;
    if t.dtype() == DType::F32 {
        return Ok(ti);
    }
    let n = t.numel();
    let (buf, p) = f32_buf(cx, n)?;
    ew::cast(&cx.gpu, ti.ptr, p, n, Launch::default())?;
    cx.view(&buf)
}

/// An f32 device buffer (`src`, `len` elements) as a tensor of `shape` and `dtype`.
fn from_f32(cx: &OnCuda, src: (Tensor, Ptr), shape: &[usize], dtype: DType) -> Result<Tensor> {
    let (t, p) = src;
    if dtype == DType::F32 {
        return t.reshape(shape);
    }
    let n = t.numel();
    let (s, q) = cx.output(n, dtype)?;
    ew::cast(&cx.gpu, p, q, n, Launch::default())?;
    super::tensor(s, shape)
}

fn unary(cx: &OnCuda, op: Unary, x: Ptr, n: usize) -> Result<(Tensor, Ptr)> {
    let (t, p) = f32_buf(cx, n)?;
    ew::unary(&cx.gpu, op, x, p, n, Launch::default())?;
    Ok((t, p))
}

fn binary(
    cx: &OnCuda,
    op: Binary,
    a: (Ptr, Reach),
    b: (Ptr, Reach),
    n: usize,
) -> Result<(Tensor, Ptr)> {
    let (t, p) = f32_buf(cx, n)?;
    ew::binary(&cx.gpu, op, a.0, a.1, b.0, b.1, p, n, Launch::default())?;
    Ok((t, p))
}

fn affine(cx: &OnCuda, x: Ptr, n: usize, mul: f64) -> Result<(Tensor, Ptr)> {
    let (t, p) = f32_buf(cx, n)?;
    ew::affine(&cx.gpu, x, p, n, mul, 0.0, Launch::default())?;
    Ok((t, p))
}

/// max(x, lo) elementwise (clamp to [lo, inf)).
fn at_least(cx: &OnCuda, x: Ptr, n: usize, lo: f64) -> Result<(Tensor, Ptr)> {
    let (t, p) = f32_buf(cx, n)?;
    ew::clamp(&cx.gpu, x, p, n, lo, f64::INFINITY, Launch::default())?;
    Ok((t, p))
}

// ---------------------------------------------------------------------------------------
// InfoNCE.

/// Whether the fused kernels serve these operands: img and txt of one f32/bf16/f16 dtype,
/// width >= 1, and a float scale (cast to f32 on the device).
pub fn info_nce_applies(img: &Tensor, txt: &Tensor, scale: &Tensor) -> bool {
    gpu_dtype(img.dtype())
        && txt.dtype() == img.dtype()
        && gpu_dtype(scale.dtype())
        && img.shape()[1] >= 1
}

/// Whether the fused backward serves width `d` in `dtype` on this device: d <= 768 and its
/// single-buffered shared memory fits (f32 at d > 512 needs sm_90's 227 KiB); else the host
/// fallback computes it.
pub fn info_nce_backward_applies(cx: &OnCuda, dtype: DType, d: usize) -> bool {
    nce::backward_dp(d).is_some_and(|dp| {
        nce::max_smem(&cx.gpu).is_ok_and(|m| nce::backward_smem(dtype, dp, 1) <= m)
    })
}

/// Forward: (loss f32 [1], row_lse f32 [B], col_lse f32 [B]) on the device.
pub fn info_nce_forward(
    cx: &OnCuda,
    img: &Tensor,
    txt: &Tensor,
    scale: &Tensor,
) -> Result<(Storage, Tensor, Tensor)> {
    let (b, d) = (img.shape()[0], img.shape()[1]);
    let ii = cx.input(img)?;
    let ti = cx.input(txt)?;
    let si = as_f32(cx, scale)?;
    let (row, rp) = f32_buf(cx, b)?;
    let (col, cp) = f32_buf(cx, b)?;
    let (loss, lp) = cx.output(1, DType::F32)?;
    nce::info_nce_forward(
        &cx.gpu,
        Rows::contiguous(ii.ptr, d),
        Rows::contiguous(ti.ptr, d),
        si.ptr,
        b,
        d,
        rp,
        cp,
        lp,
        &InfoNceLaunch::default(),
        None,
    )?;
    Ok((loss, row, col))
}

/// Backward (d <= [`nce::MAX_BACKWARD_D`]): the upstream gradient `g` is read by the kernels
/// from device memory (no host sync). Gradients in each input's dtype and shape; None where
/// `needs` is false.
#[allow(clippy::too_many_arguments)]
pub fn info_nce_backward(
    cx: &OnCuda,
    img: &Tensor,
    txt: &Tensor,
    scale: &Tensor,
    g: &Tensor,
    row: &Tensor,
    col: &Tensor,
    needs: &[bool],
) -> Result<Vec<Option<Tensor>>> {
    let (b, d) = (img.shape()[0], img.shape()[1]);
    let dtype = img.dtype();
    let ii = cx.input(img)?;
    let ti = cx.input(txt)?;
    let si = as_f32(cx, scale)?;
    let gi = as_f32(cx, g)?;
    let (ri, ci) = (cx.input(row)?, cx.input(col)?);
    let dimg = needs[0].then(|| cx.output(b * d, dtype)).transpose()?;
    let dtxt = needs[1].then(|| cx.output(b * d, dtype)).transpose()?;
    let dscale = needs[2].then(|| f32_buf(cx, 1)).transpose()?;
    nce::info_nce_backward(
        &cx.gpu,
        Rows::contiguous(ii.ptr, d),
        Rows::contiguous(ti.ptr, d),
        ri.ptr,
        ci.ptr,
        si.ptr,
        gi.ptr,
        b,
        d,
        dimg.as_ref().map(|(_, p)| Rows::contiguous(*p, d)),
        dtxt.as_ref().map(|(_, p)| Rows::contiguous(*p, d)),
        dscale.as_ref().map(|(_, p)| *p),
        &InfoNceLaunch::default(),
    )?;
    let side = |o: Option<(Storage, Ptr)>, like: &Tensor| -> Result<Option<Tensor>> {
        o.map(|(s, _)| super::tensor(s, like.shape())).transpose()
    };
    Ok(vec![
        side(dimg, img)?,
        side(dtxt, txt)?,
        dscale
            .map(|buf| from_f32(cx, buf, scale.shape(), scale.dtype()))
            .transpose()?,
    ])
}

// ---------------------------------------------------------------------------------------
// L2 normalisation.

/// How the per-fibre norms [outer, inner] broadcast over x [outer, n, inner], when the binary
/// kernel's reaches can express it (inner == 1 or outer == 1).
fn fibre_reach((outer, n, inner): (usize, usize, usize)) -> Option<Reach> {
    if inner == 1 {
        Some(Reach::Leading(n))
    } else if outer == 1 {
        Some(Reach::Trailing(inner))
    } else {
        None
    }
}

/// Whether the device path serves l2_normalize of this dtype and (outer, n, inner) split.
pub fn l2_normalize_applies(dtype: DType, dims: (usize, usize, usize)) -> bool {
    gpu_dtype(dtype) && fibre_reach(dims).is_some() && dims.0 * dims.1 * dims.2 > 0
}

/// ‖x‖ of each fibre (f32 [outer·inner]) from x as f32.
fn raw_norms(
    cx: &OnCuda,
    xf: Ptr,
    (outer, n, inner): (usize, usize, usize),
) -> Result<(Tensor, Ptr)> {
    let len = outer * n * inner;
    let (_sq, sp) = unary(cx, Unary::Square, xf, len)?;
    let (_ss, ssp) = f32_buf(cx, outer * inner)?;
    reduce::sum(
        &cx.gpu,
        sp,
        ssp,
        outer,
        n,
        inner,
        false,
        ReduceLaunch::default(),
    )?;
    unary(cx, Unary::Sqrt, ssp, outer * inner)
}

/// y = x / max(‖x‖, eps) along the split's middle axis, in x's dtype.
pub fn l2_normalize(
    cx: &OnCuda,
    x: &Tensor,
    dims: (usize, usize, usize),
    eps: f64,
) -> Result<Storage> {
    let reach = fibre_reach(dims).expect("l2_normalize_applies checked");
    let len = x.numel();
    let xf = as_f32(cx, x)?;
    let (_raw, rp) = raw_norms(cx, xf.ptr, dims)?;
    let (_den, dp) = at_least(cx, rp, dims.0 * dims.2, eps)?;
    if x.dtype() == DType::F32 {
        let (s, q) = cx.output(len, DType::F32)?;
        ew::binary(
            &cx.gpu,
            Binary::Div,
            xf.ptr,
            Reach::Full,
            dp,
            reach,
            q,
            len,
            Launch::default(),
        )?;
        return Ok(s);
    }
    let (_y, yp) = binary(cx, Binary::Div, (xf.ptr, Reach::Full), (dp, reach), len)?;
    let (s, q) = cx.output(len, x.dtype())?;
    ew::cast(&cx.gpu, yp, q, len, Launch::default())?;
    Ok(s)
}

/// dx of l2_normalize: (g − y (y·g)) / ‖x‖ where ‖x‖ > eps, g / eps where clamped.
pub fn l2_normalize_backward(
    cx: &OnCuda,
    x: &Tensor,
    y: &Tensor,
    g: &Tensor,
    dims: (usize, usize, usize),
    eps: f64,
) -> Result<Tensor> {
    let reach = fibre_reach(dims).expect("l2_normalize_applies checked");
    let (len, fibres) = (x.numel(), dims.0 * dims.2);
    let xf = as_f32(cx, x)?;
    let yf = as_f32(cx, y)?;
    let gf = as_f32(cx, g)?;
    let (_raw, rp) = raw_norms(cx, xf.ptr, dims)?;
    let (_yg, ygp) = binary(
        cx,
        Binary::Mul,
        (yf.ptr, Reach::Full),
        (gf.ptr, Reach::Full),
        len,
    )?;
    let (_dots, dp) = f32_buf(cx, fibres)?;
    reduce::sum(
        &cx.gpu,
        ygp,
        dp,
        dims.0,
        dims.1,
        dims.2,
        false,
        ReduceLaunch::default(),
    )?;
    // Keep y·g only where ‖x‖ > eps (as f32, like the CPU twin): ‖x‖ >= the next f32 above eps.
    let eps32 = eps as f32;
    let above = if eps32 >= 0.0 {
        f32::from_bits(eps32.to_bits() + 1)
    } else {
        0.0
    };
    let (_dm, dmp) = f32_buf(cx, fibres)?;
    ew::clamp_backward(
        &cx.gpu,
        rp,
        dp,
        dmp,
        fibres,
        above as f64,
        f64::INFINITY,
        Launch::default(),
    )?;
    let (_den, denp) = at_least(cx, rp, fibres, eps)?;
    let (_t, tp) = binary(cx, Binary::Mul, (yf.ptr, Reach::Full), (dmp, reach), len)?;
    let (_u, up) = binary(
        cx,
        Binary::Sub,
        (gf.ptr, Reach::Full),
        (tp, Reach::Full),
        len,
    )?;
    let dx = binary(cx, Binary::Div, (up, Reach::Full), (denp, reach), len)?;
    from_f32(cx, dx, x.shape(), x.dtype())
}

// ---------------------------------------------------------------------------------------
// MSE.

/// Whether the device path serves MSE of these operands (f32/bf16/f16, non-empty).
pub fn mse_applies(a: &Tensor, b: &Tensor) -> bool {
    gpu_dtype(a.dtype()) && gpu_dtype(b.dtype()) && a.numel() > 0
}

/// a − b in f32 (a and b of the same shape, any of the device dtypes).
fn difference(cx: &OnCuda, a: &Tensor, b: &Tensor) -> Result<(Tensor, Ptr)> {
    let (af, bf) = (as_f32(cx, a)?, as_f32(cx, b)?);
    let full = Reach::Full;
    binary(cx, Binary::Sub, (af.ptr, full), (bf.ptr, full), a.numel())
}

/// MSE forward in f32: per-element squares (Reduction::None, shape of a) or their sum / mean
/// (f32 [1]).
pub fn mse_forward(cx: &OnCuda, a: &Tensor, b: &Tensor, reduction: Reduction) -> Result<Storage> {
    let n = a.numel();
    let (_d, dp) = difference(cx, a, b)?;
    let out_len = if reduction == Reduction::None { n } else { 1 };
    let (out, op) = cx.output(out_len, DType::F32)?;
    match reduction {
        Reduction::None => ew::unary(&cx.gpu, Unary::Square, dp, op, n, Launch::default())?,
        Reduction::Sum | Reduction::Mean => {
            let (_sq, sp) = unary(cx, Unary::Square, dp, n)?;
            let mean = reduction == Reduction::Mean;
            reduce::sum_all(&cx.gpu, sp, op, n, mean, SumAllLaunch::default())?;
        }
    }
    Ok(out)
}

/// MSE backward: d = 2 (a − b) · upstream (g per element, or g / count for the mean), then
/// d and −d in each input's dtype.
pub fn mse_backward(
    cx: &OnCuda,
    a: &Tensor,
    b: &Tensor,
    g: &Tensor,
    reduction: Reduction,
    count: f64,
    needs: &[bool],
) -> Result<Vec<Option<Tensor>>> {
    let n = a.numel();
    let (_d, dp) = difference(cx, a, b)?;
    let gf = as_f32(cx, g)?;
    let (g_reach, factor) = match reduction {
        Reduction::None => (Reach::Full, 2.0),
        Reduction::Sum => (Reach::Trailing(1), 2.0),
        Reduction::Mean => (Reach::Trailing(1), 2.0 / count),
    };
    let (_p, pp) = binary(cx, Binary::Mul, (dp, Reach::Full), (gf.ptr, g_reach), n)?;
    let grad = affine(cx, pp, n, factor)?;
    let ga = if needs[0] {
        Some(from_f32(cx, grad.clone(), a.shape(), a.dtype())?)
    } else {
        None
    };
    let gb = if needs[1] {
        let neg = affine(cx, grad.1, n, -1.0)?;
        Some(from_f32(cx, neg, b.shape(), b.dtype())?)
    } else {
        None
    };
    Ok(vec![ga, gb])
}
