//! The norms' CUDA paths: LayerNorm, GroupNorm (+SiLU) and BatchNorm forward kernels saving f32
//! mean/rstd on the device, and their fused backward kernels (gradients only where needed).

use super::{tensor, OnCuda};
use crate::backend::cuda::batch_norm as bn;
use crate::backend::cuda::group_norm as gn;
use crate::backend::cuda::layer_norm as ln;
use crate::cuda::gpu::Ptr;
use crate::error::{Error, Result};
use crate::tensor::{DType, Device, Storage, Tensor};

/// A norm's output on the device with its saved f32 statistics.
pub struct NormOut {
    pub y: Storage,
    pub mean: Tensor,
    pub rstd: Tensor,
}

/// Gradients of [x, weight, bias] (None where not asked for).
pub type NormGrads = (Option<Tensor>, Option<Tensor>, Option<Tensor>);

/// Which gradients the backward writes.
#[derive(Clone, Copy)]
pub struct Want {
    pub x: bool,
    pub weight: bool,
    pub bias: bool,
}

/// True when x, weight and bias share one dtype that the kernels take (f32, bf16, f16).
pub fn supported(x: &Tensor, w: Option<&Tensor>, b: Option<&Tensor>) -> bool {
    matches!(x.dtype(), DType::F32 | DType::BF16 | DType::F16)
        && w.is_none_or(|t| t.dtype() == x.dtype())
        && b.is_none_or(|t| t.dtype() == x.dtype())
}

/// True when a saved statistic lives on a GPU (the forward ran there).
pub fn on_device(stat: &Tensor) -> bool {
    stat.device() != Device::Cpu
}

/// The pointer of an optional parameter uploaded/made contiguous (null when absent), with the
/// tensor that keeps it alive.
fn opt_input(cx: &OnCuda, t: Option<&Tensor>, dtype: DType) -> Result<(Option<super::DevIn>, Ptr)> {
    match t {
        Some(t) => {
            let d = cx.input(t)?;
            let p = d.ptr;
            Ok((Some(d), p))
        }
        None => Ok((None, Ptr::null(dtype))),
    }
}

/// A fresh output of `len` elements when `want`, else nothing (a null pointer).
fn opt_output(cx: &OnCuda, want: bool, len: usize, dtype: DType) -> Result<(Option<Storage>, Ptr)> {
    if want {
        let (s, p) = cx.output(len, dtype)?;
        Ok((Some(s), p))
    } else {
        Ok((None, Ptr::null(dtype)))
    }
}

fn wrap(s: Option<Storage>, shape: &[usize]) -> Result<Option<Tensor>> {
    s.map(|s| tensor(s, shape)).transpose()
}

/// The incoming gradient on the device, contiguous, in x's dtype.
fn grad_in(cx: &OnCuda, g: &Tensor, dtype: DType) -> Result<super::DevIn> {
    cx.input(&g.to_dtype(dtype)?)
}

/// What every norm's forward hands its kernels: x, the optional weight/bias (null pointers
/// when absent; the uploads are kept alive here) and the f32 mean/rstd outputs of `units`.
struct Fwd {
    x: super::DevIn,
    _w: Option<super::DevIn>,
    _b: Option<super::DevIn>,
    wp: Ptr,
    bp: Ptr,
    mean: Storage,
    mp: Ptr,
    rstd: Storage,
    rp: Ptr,
    units: usize,
}

impl Fwd {
    fn new(
        cx: &OnCuda,
        x: &Tensor,
        w: Option<&Tensor>,
        b: Option<&Tensor>,
        units: usize,
    ) -> Result<Fwd> {
        let dt = x.dtype();
        let xd = cx.input(x)?;
        let (_w, wp) = opt_input(cx, w, dt)?;
        let (_b, bp) = opt_input(cx, b, dt)?;
        let (mean, mp) = cx.output(units, DType::F32)?;
        let (rstd, rp) = cx.output(units, DType::F32)?;
        Ok(Fwd {
            x: xd,
            _w,
            _b,
            wp,
            bp,
            mean,
            mp,
            rstd,
            rp,
            units,
        })
    }

    /// The output `y` with the saved statistics as [units] tensors.
    fn finish(self, y: Storage) -> Result<NormOut> {
        Ok(NormOut {
            y,
            mean: tensor(self.mean, &[self.units])?,
            rstd: tensor(self.rstd, &[self.units])?,
        })
    }
}

/// What every norm's backward hands its kernels: x, the incoming gradient in x's dtype, the
/// optional weight (null when absent), the saved statistics and the wanted gradients' outputs
/// (null pointers for the others; weight/bias gradients of `params` elements).
struct Back {
    x: super::DevIn,
    g: super::DevIn,
    _w: Option<super::DevIn>,
    wp: Ptr,
    mean: super::DevIn,
    rstd: super::DevIn,
    dx: Option<Storage>,
    dxp: Ptr,
    dw: Option<Storage>,
    dwp: Ptr,
    db: Option<Storage>,
    dbp: Ptr,
}

impl Back {
    #[allow(clippy::too_many_arguments)]
    fn new(
        cx: &OnCuda,
        x: &Tensor,
        g: &Tensor,
        w: Option<&Tensor>,
        mean: &Tensor,
        rstd: &Tensor,
        params: usize,
        want: Want,
    ) -> Result<Back> {
        let dt = x.dtype();
        let xd = cx.input(x)?;
        let gd = grad_in(cx, g, dt)?;
        let (_w, wp) = opt_input(cx, w, dt)?;
        let (md, rd) = (cx.view(mean)?, cx.view(rstd)?);
        let (dx, dxp) = opt_output(cx, want.x, x.numel(), dt)?;
        let (dw, dwp) = opt_output(cx, want.weight, params, dt)?;
        let (db, dbp) = opt_output(cx, want.bias, params, dt)?;
        Ok(Back {
            x: xd,
            g: gd,
            _w,
            wp,
            mean: md,
            rstd: rd,
            dx,
            dxp,
            dw,
            dwp,
            db,
            dbp,
        })
    }

    /// The gradients in the shapes of x, weight and bias.
    fn finish(self, x: &Tensor, w: Option<&Tensor>, b: Option<&Tensor>) -> Result<NormGrads> {
        Ok((
            wrap(self.dx, x.shape())?,
            wrap_like(self.dw, w)?,
            wrap_like(self.db, b)?,
        ))
    }
}

/// LayerNorm of x [rows, n] (any leading shape) with optional weight/bias [n].
pub fn layer_norm(
    cx: &OnCuda,
    x: &Tensor,
    w: Option<&Tensor>,
    b: Option<&Tensor>,
    n: usize,
    eps: f64,
) -> Result<NormOut> {
    let rows = x.numel() / n;
    let f = Fwd::new(cx, x, w, b, rows)?;
    let (y, yp) = cx.output(rows * n, x.dtype())?;
    ln::layer_norm(
        &cx.gpu,
        f.x.ptr,
        f.wp,
        f.bp,
        yp,
        f.mp,
        f.rp,
        rows,
        n,
        eps as f32,
        ln::LayerNormLaunch::default(),
    )?;
    f.finish(y)
}

/// The backward of [`layer_norm`].
#[allow(clippy::too_many_arguments)]
pub fn layer_norm_backward(
    cx: &OnCuda,
    x: &Tensor,
    g: &Tensor,
    w: Option<&Tensor>,
    b: Option<&Tensor>,
    mean: &Tensor,
    rstd: &Tensor,
    n: usize,
    want: Want,
) -> Result<NormGrads> {
    let rows = x.numel() / n;
    let k = Back::new(cx, x, g, w, mean, rstd, n, want)?;
    ln::layer_norm_backward(
        &cx.gpu,
        k.x.ptr,
        k.g.ptr,
        k.wp,
        k.mean.ptr,
        k.rstd.ptr,
        k.dxp,
        k.dwp,
        k.dbp,
        rows,
        n,
        ln::LayerNormLaunch::default(),
    )?;
    k.finish(x, w, b)
}

/// A parameter's gradient in the parameter's shape (None when not computed).
fn wrap_like(s: Option<Storage>, like: Option<&Tensor>) -> Result<Option<Tensor>> {
    match (s, like) {
        (Some(s), Some(t)) => Ok(Some(tensor(s, t.shape())?)),
        _ => Ok(None),
    }
}

/// GroupNorm (then SiLU when `silu`) of x [batch, channels, spatial..].
#[allow(clippy::too_many_arguments)]
pub fn group_norm(
    cx: &OnCuda,
    x: &Tensor,
    w: Option<&Tensor>,
    b: Option<&Tensor>,
    (batch, channels, spatial, groups): (usize, usize, usize, usize),
    eps: f64,
    silu: bool,
) -> Result<NormOut> {
    let f = Fwd::new(cx, x, w, b, batch * groups)?;
    let (y, yp) = cx.output(x.numel(), x.dtype())?;
    gn::group_norm(
        &cx.gpu,
        f.x.ptr,
        f.wp,
        f.bp,
        yp,
        f.mp,
        f.rp,
        (batch, channels, spatial, groups),
        eps,
        silu,
        gn::GroupNormLaunch::default(),
    )?;
    f.finish(y)
}

/// The backward of [`group_norm`] (bias matters with `silu`, which recomputes the affine).
#[allow(clippy::too_many_arguments)]
pub fn group_norm_backward(
    cx: &OnCuda,
    x: &Tensor,
    g: &Tensor,
    w: Option<&Tensor>,
    b: Option<&Tensor>,
    mean: &Tensor,
    rstd: &Tensor,
    (batch, channels, spatial, groups): (usize, usize, usize, usize),
    silu: bool,
    want: Want,
) -> Result<NormGrads> {
    let k = Back::new(cx, x, g, w, mean, rstd, channels, want)?;
    let (_b, bp) = opt_input(cx, b, x.dtype())?;
    let (_sums, sums) = cx.output(2 * batch * channels, DType::F32)?;
    gn::group_norm_backward(
        &cx.gpu,
        k.x.ptr,
        k.g.ptr,
        k.wp,
        bp,
        k.mean.ptr,
        k.rstd.ptr,
        sums,
        k.dxp,
        k.dwp,
        k.dbp,
        (batch, channels, spatial, groups),
        silu,
        gn::GroupNormLaunch::default(),
    )?;
    k.finish(x, w, b)
}

/// True when BatchNorm can run on the device for these running statistics: absent, or f32
/// (as nn::BatchNorm2d keeps them for f32/bf16/f16 layers) — and in training, also on the
/// op's device and owning their storage (they are updated there; CPU running statistics would
/// need a host sync to update, so that case stays on the host).
pub fn batch_norm_running_ok(
    cx: &OnCuda,
    running: Option<(&Tensor, &Tensor)>,
    training: bool,
) -> bool {
    let Some((m, v)) = running else {
        return true;
    };
    if m.dtype() != DType::F32 || v.dtype() != DType::F32 {
        return false;
    }
    if !training {
        return true;
    }
    let updatable = |t: &Tensor| {
        t.device() == cx.device()
            && t.is_contiguous()
            && t.layout().offset() == 0
            && t.storage().len() == t.numel()
    };
    updatable(m) && updatable(v)
}

/// A device copy of an f32 running statistic (fresh storage for the kernel to update).
fn copy_stat(cx: &OnCuda, t: &Tensor) -> Result<(Storage, Ptr)> {
    let src = cx.view(t)?;
    let n = t.numel();
    let (s, p) = cx.output(n, DType::F32)?;
    if n > 0 {
        // SAFETY: both addresses hold `n` f32 elements (src is a contiguous tensor of n
        // elements on this device, p a fresh block of n); queued on the device's stream.
        unsafe {
            cudarc::driver::result::memcpy_dtod_async(
                p.addr,
                src.ptr.addr,
                n * 4,
                cx.gpu.stream().cu_stream(),
            )
        }
        .map_err(|e| Error::msg(format!("batch_norm: copying running statistics: {e}")))?;
    }
    Ok((s, p))
}

/// BatchNorm of x [batch, channels, spatial..]: batch statistics (`training`; running stats,
/// when given, are updated on the device: fresh storage installed with `replace_storage`) or
/// the running statistics (eval). Call only when [`batch_norm_running_ok`] holds.
#[allow(clippy::too_many_arguments)]
pub fn batch_norm(
    cx: &OnCuda,
    x: &Tensor,
    w: Option<&Tensor>,
    b: Option<&Tensor>,
    running: Option<(&Tensor, &Tensor)>,
    (batch, channels, spatial): (usize, usize, usize),
    training: bool,
    momentum: f64,
    eps: f64,
) -> Result<NormOut> {
    let f = Fwd::new(cx, x, w, b, channels)?;
    let (xp, mp, rp) = (f.x.ptr, f.mp, f.rp);
    let shape = (batch, channels, spatial);
    let launch = bn::BatchNormLaunch::default();
    match (training, running) {
        (true, None) => bn::batch_norm_stats(
            &cx.gpu,
            xp,
            mp,
            rp,
            Ptr::null(DType::F32),
            Ptr::null(DType::F32),
            shape,
            eps,
            momentum,
            launch,
        )?,
        (true, Some((rm, rv))) => {
            let (new_m, nmp) = copy_stat(cx, rm)?;
            let (new_v, nvp) = copy_stat(cx, rv)?;
            bn::batch_norm_stats(&cx.gpu, xp, mp, rp, nmp, nvp, shape, eps, momentum, launch)?;
            rm.replace_storage(new_m)?;
            rv.replace_storage(new_v)?;
        }
        (false, Some((rm, rv))) => {
            let (md, vd) = (cx.input(rm)?, cx.input(rv)?);
            bn::batch_norm_eval_stats(&cx.gpu, md.ptr, vd.ptr, mp, rp, channels, eps)?;
        }
        (false, None) => crate::bail!("batch_norm: eval mode needs running_mean and running_var"),
    }
    let (y, yp) = cx.output(x.numel(), x.dtype())?;
    bn::batch_norm_apply(&cx.gpu, xp, mp, rp, f.wp, f.bp, yp, shape, launch)?;
    f.finish(y)
}

/// The backward of [`batch_norm`] (`training`: through the batch statistics).
#[allow(clippy::too_many_arguments)]
pub fn batch_norm_backward(
    cx: &OnCuda,
    x: &Tensor,
    g: &Tensor,
    w: Option<&Tensor>,
    b: Option<&Tensor>,
    mean: &Tensor,
    rstd: &Tensor,
    (batch, channels, spatial): (usize, usize, usize),
    training: bool,
    want: Want,
) -> Result<NormGrads> {
    if batch * spatial == 0 {
        // An empty batch (eval only; the launcher refuses it): dx is empty, dweight and dbias
        // are sums over nothing, as on the CPU.
        let zeros = |want: bool, len: usize| -> Result<Option<Storage>> {
            want.then(|| cx.zeros(len, x.dtype()).map(|z| z.0))
                .transpose()
        };
        return Ok((
            wrap(zeros(want.x, x.numel())?, x.shape())?,
            wrap_like(zeros(want.weight, channels)?, w)?,
            wrap_like(zeros(want.bias, channels)?, b)?,
        ));
    }
    let k = Back::new(cx, x, g, w, mean, rstd, channels, want)?;
    let (_m1, m1) = cx.output(channels, DType::F32)?;
    let (_m2, m2) = cx.output(channels, DType::F32)?;
    bn::batch_norm_backward(
        &cx.gpu,
        k.x.ptr,
        k.g.ptr,
        k.wp,
        k.mean.ptr,
        k.rstd.ptr,
        m1,
        m2,
        k.dxp,
        k.dwp,
        k.dbp,
        (batch, channels, spatial),
        training,
        bn::BatchNormLaunch::default(),
    )?;
    k.finish(x, w, b)
}
