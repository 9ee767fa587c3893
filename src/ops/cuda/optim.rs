//! The optimizers' device side (feature `cuda`): private state buffers updated in place, device
//! copies and read-backs, the loss scaler's device state, the global gradient norm with its clip
//! coefficient, and the EMA update — all queued on the device's stream without host sync
//! (except the read-backs, which say so).

use super::{tensor, DevIn, OnCuda};
use crate::backend::cpu::binary::{Binary, Reach};
use crate::backend::cpu::elementwise::Unary;
use crate::backend::cuda::elementwise::{self as ew, Launch};
use crate::backend::cuda::{adamw as k, reduce};
use crate::cuda::gpu::Ptr;
use crate::cuda::Gpu;
use crate::error::{Error, Result};
use crate::tensor::{CpuStorage, CudaStorage, DType, Device, Tensor};
use cudarc::driver::DeviceRepr;

/// A private device buffer of optimizer state (moments, fp32 masters, step counters, scaler
/// state, EMA shadows) that kernels update in place. It is never wrapped in a tensor — its
/// storage's cached host copy would go stale — so it is read with [`StateBuf::download`] and
/// handed out as a tensor only as a fresh copy ([`StateBuf::to_tensor`]).
pub struct StateBuf(CudaStorage);

impl StateBuf {
    /// `len` elements of `dtype`, contents undefined (the caller's kernel writes them).
    pub fn uninit(cx: &OnCuda, len: usize, dtype: DType) -> Result<StateBuf> {
        Ok(StateBuf(CudaStorage::alloc(
            &cx.gpu, cx.ordinal, len, dtype,
        )?))
    }

    /// `len` zeros of `dtype`.
    pub fn zeros(cx: &OnCuda, len: usize, dtype: DType) -> Result<StateBuf> {
        let b = StateBuf::uninit(cx, len, dtype)?;
        memset0(&cx.gpu, b.ptr())?;
        Ok(b)
    }

    /// A device copy of host values.
    pub fn upload(cx: &OnCuda, host: &CpuStorage) -> Result<StateBuf> {
        Ok(StateBuf(CudaStorage::upload(&cx.gpu, cx.ordinal, host)?))
    }

    /// A device copy of `src`'s first `n` elements (no host sync).
    pub fn copy_of(cx: &OnCuda, src: Ptr, n: usize) -> Result<StateBuf> {
        let b = StateBuf::uninit(cx, n, src.dtype)?;
        copy(&cx.gpu, src, b.ptr(), n)?;
        Ok(b)
    }

    /// `t`'s values widened to f32 (copied for f32, cast for bf16/f16), as a new f32 buffer.
    pub fn f32_of(cx: &OnCuda, t: &Tensor) -> Result<StateBuf> {
        let x = cx.input(t)?;
        let n = t.numel();
        match t.dtype() {
            DType::F32 => StateBuf::copy_of(cx, x.ptr, n),
            DType::BF16 | DType::F16 => {
                let b = StateBuf::uninit(cx, n, DType::F32)?;
                if n > 0 {
                    ew::cast(&cx.gpu, x.ptr, b.ptr(), n, Launch::default())?;
                }
                Ok(b)
            }
            other => Err(Error::msg(format!(
                "optimizer state on cuda:{}: {other} values have no device path",
                cx.ordinal
            ))),
        }
    }

    pub fn ptr(&self) -> Ptr {
        self.0.ptr()
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    pub fn dtype(&self) -> DType {
        self.0.dtype()
    }
    pub fn ordinal(&self) -> usize {
        self.0.ordinal()
    }

    /// The values on the host. Waits for the device's queued work (a host sync).
    pub fn download<T: DeviceRepr + Default + Clone>(&self) -> Result<Vec<T>> {
        let p = self.ptr();
        if std::mem::size_of::<T>() != p.dtype.size_in_bytes() {
            return Err(Error::msg(format!(
                "internal: reading {} state back as {}",
                p.dtype,
                std::any::type_name::<T>()
            )));
        }
        let mut out = vec![T::default(); p.len];
        if p.len > 0 {
            let gpu = self.0.gpu();
            crate::cuda::devices::bind(gpu, self.ordinal())?;
            // SAFETY: `out` holds exactly the buffer's bytes; the stream is synchronised below,
            // before `out` is read or dropped.
            unsafe {
                cudarc::driver::result::memcpy_dtoh_async(
                    &mut out[..],
                    p.addr,
                    gpu.stream().cu_stream(),
                )
            }
            .map_err(|e| {
                Error::msg(format!(
                    "cuda:{}: reading optimizer state back failed: {e}",
                    self.ordinal()
                ))
            })?;
            gpu.sync()?;
        }
        Ok(out)
    }

    /// A tensor of `shape` on the device holding a fresh copy of the values (no host sync).
    pub fn to_tensor(&self, shape: &[usize]) -> Result<Tensor> {
        let cx = OnCuda {
            gpu: self.0.gpu().clone(),
            ordinal: self.ordinal(),
        };
        let (s, dst) = cx.output(self.len(), self.dtype())?;
        copy(&cx.gpu, self.ptr(), dst, self.len())?;
        tensor(s, shape)
    }

    /// An f32 buffer's values as a CPU tensor of `shape` (a host sync).
    pub fn to_cpu_tensor(&self, shape: &[usize]) -> Result<Tensor> {
        Tensor::from_vec(self.download::<f32>()?, shape)
    }
}

/// The GPU an optimizer's update of `p` runs on: `Some` when `p` lives on a CUDA device and has
/// a dtype the kernels take (f32, bf16, f16); f64 parameters keep the host path.
pub fn param_device(p: &Tensor) -> Result<Option<OnCuda>> {
    match (p.device(), p.dtype()) {
        (Device::Cuda(_), DType::F32 | DType::BF16 | DType::F16) => OnCuda::of(&[p]),
        _ => Ok(None),
    }
}

/// Copies `n` elements from `src` to `dst` (same dtype) on the stream.
pub fn copy(gpu: &Gpu, src: Ptr, dst: Ptr, n: usize) -> Result<()> {
    if src.dtype != dst.dtype || src.len < n || dst.len < n {
        return Err(Error::msg(format!(
            "internal: device copy of {n} elements from {} {:?} to {} {:?}",
            src.len, src.dtype, dst.len, dst.dtype
        )));
    }
    let bytes = n * src.dtype.size_in_bytes();
    if bytes == 0 {
        return Ok(());
    }
    current(gpu)?;
    // SAFETY: both ranges hold `bytes` bytes (checked above) of live device buffers kept by the
    // caller until this copy is queued; later frees are stream-ordered after it.
    unsafe {
        cudarc::driver::result::memcpy_dtod_async(
            dst.addr,
            src.addr,
            bytes,
            gpu.stream().cu_stream(),
        )
    }
    .map_err(|e| Error::msg(format!("device copy of {bytes} bytes failed: {e}")))
}

fn memset0(gpu: &Gpu, p: Ptr) -> Result<()> {
    let bytes = p.len * p.dtype.size_in_bytes();
    if bytes == 0 {
        return Ok(());
    }
    current(gpu)?;
    // SAFETY: `p` addresses `bytes` bytes of a block the caller owns.
    unsafe { cudarc::driver::result::memset_d8_async(p.addr, 0, bytes, gpu.stream().cu_stream()) }
        .map_err(|e| Error::msg(format!("zero-filling {bytes} bytes of device state: {e}")))
}

/// Makes `gpu`'s context current on this thread: the raw driver calls here run on the legacy
/// default stream, which is the current context's.
fn current(gpu: &Gpu) -> Result<()> {
    gpu.context()
        .bind_to_thread()
        .map_err(|e| Error::msg(format!("making a GPU context current failed: {e}")))
}

/// One f32 element of a small scalar scratch.
fn slot(p: Ptr, i: usize) -> Result<Ptr> {
    let mut s = p.offset(i)?;
    s.len = 1;
    Ok(s)
}

/// The loss scaler's device state (GradScaler's `_scale`, `_growth_tracker`, `found_inf`, plus
/// the f32 inverse scale the unscale kernels read), mirrored by the host's f64 scale.
pub struct ScalerState {
    found_inf: StateBuf,
    scale: StateBuf,
    tracker: StateBuf,
    inv_scale: StateBuf,
}

impl ScalerState {
    /// Uploads `scale` and `growth_tracker` (found_inf 0, inv_scale = (f32)(1/scale)).
    pub fn upload(cx: &OnCuda, scale: f64, growth_tracker: u64) -> Result<ScalerState> {
        Ok(ScalerState {
            found_inf: StateBuf::upload(cx, &CpuStorage::I32(vec![0]))?,
            scale: StateBuf::upload(cx, &CpuStorage::F64(vec![scale]))?,
            tracker: StateBuf::upload(cx, &CpuStorage::I64(vec![growth_tracker as i64]))?,
            inv_scale: StateBuf::upload(cx, &CpuStorage::F32(vec![(1.0 / scale) as f32]))?,
        })
    }

    pub fn ordinal(&self) -> usize {
        self.found_inf.ordinal()
    }

    /// `grad` (f32/bf16/f16, on this device) divided by the scale into a fresh tensor (rounded
    /// to its dtype, as LossScaler::unscale_and_check); an inf/NaN in it sets the device flag.
    pub fn unscale(&self, cx: &OnCuda, grad: &Tensor) -> Result<Tensor> {
        let g = cx.input(grad)?;
        let n = grad.numel();
        let (s, out) = cx.output(n, grad.dtype())?;
        copy(&cx.gpu, g.ptr, out, n)?;
        k::grad_unscale_check(&cx.gpu, out, self.inv_scale.ptr(), self.found_inf.ptr(), n)?;
        tensor(s, grad.shape())
    }

    /// Whether a gradient unscaled since the last [`ScalerState::update`] overflowed: the one
    /// host sync of a mixed-precision step (GradScaler reads it back too).
    pub fn found_inf(&self) -> Result<bool> {
        Ok(self.found_inf.download::<i32>()?[0] != 0)
    }

    /// LossScaler::update on the device state (clears the flag).
    pub fn update(&self, gpu: &Gpu, growth: f64, backoff: f64, interval: u64) -> Result<()> {
        k::loss_scale_update(
            gpu,
            self.found_inf.ptr(),
            self.scale.ptr(),
            self.tracker.ptr(),
            self.inv_scale.ptr(),
            growth,
            backoff,
            interval,
        )
    }

    /// (scale, growth_tracker) read back (a host sync; for checks).
    pub fn read(&self) -> Result<(f64, i64)> {
        Ok((
            self.scale.download::<f64>()?[0],
            self.tracker.download::<i64>()?[0],
        ))
    }
}

/// Global L2 norm of `grads` (f32 tensors on `cx`'s device) and the gradients clipped to
/// `max_norm`, as clip_grad_norm on the device: returns the norm as an f32 [] device tensor and
/// each gradient times c = min(1, max_norm / (norm + 1e-6)), with c = 1 when the norm is not
/// finite (gradients left as they are). Squares and sums are f32 (the CPU sums in f64: the
/// norm agrees to ~1e-6 relative; a norm above ~1.8e19 overflows to inf here). No host sync.
pub fn clip_grad_norm(
    cx: &OnCuda,
    grads: &[Tensor],
    max_norm: f64,
) -> Result<(Tensor, Vec<Tensor>)> {
    let g = &cx.gpu;
    let l = Launch::default();
    // Scalars: 0 partial total, 1 norm, 2 norm + 1e-6, 3 zero, 4 one, 5 max_norm, 6 ratio,
    // 7 norm·0 (0, or NaN when the norm is not finite), 8 ratio + that, 9 coefficient.
    let sc = StateBuf::zeros(cx, 10, DType::F32)?;
    let s = |i| slot(sc.ptr(), i);
    let parts = StateBuf::zeros(cx, grads.len().max(1), DType::F32)?;
    let max_n = grads.iter().map(|t| t.numel()).max().unwrap_or(0);
    let sq = StateBuf::uninit(cx, max_n.max(1), DType::F32)?;
    let mut inputs = Vec::with_capacity(grads.len());
    for (i, t) in grads.iter().enumerate() {
        if t.dtype() != DType::F32 {
            return Err(Error::msg(format!(
                "internal: device clip_grad_norm takes f32 gradients, got {}",
                t.dtype()
            )));
        }
        let x = cx.input(t)?;
        let n = t.numel();
        if n > 0 {
            ew::unary(g, Unary::Square, x.ptr, sq.ptr(), n, l)?;
            reduce::sum_all(
                g,
                sq.ptr(),
                slot(parts.ptr(), i)?,
                n,
                false,
                Default::default(),
            )?;
        }
        inputs.push(x);
    }
    if !grads.is_empty() {
        reduce::sum_all(
            g,
            parts.ptr(),
            s(0)?,
            grads.len(),
            false,
            Default::default(),
        )?;
    }
    ew::unary(g, Unary::Sqrt, s(0)?, s(1)?, 1, l)?;
    ew::affine(g, s(1)?, s(2)?, 1, 1.0, 1e-6, l)?;
    ew::affine(g, s(3)?, s(4)?, 1, 0.0, 1.0, l)?;
    ew::affine(g, s(3)?, s(5)?, 1, 0.0, max_norm, l)?;
    let full = Reach::Full;
    ew::binary(g, Binary::Div, s(5)?, full, s(2)?, full, s(6)?, 1, l)?;
    ew::affine(g, s(1)?, s(7)?, 1, 0.0, 0.0, l)?;
    ew::binary(g, Binary::Add, s(6)?, full, s(7)?, full, s(8)?, 1, l)?;
    // fminf ignores a NaN operand: a non-finite norm gives 1.
    ew::binary(g, Binary::Minimum, s(8)?, full, s(4)?, full, s(9)?, 1, l)?;
    let mut clipped = Vec::with_capacity(grads.len());
    for (t, x) in grads.iter().zip(&inputs) {
        let n = t.numel();
        let (st, out) = cx.output(n, DType::F32)?;
        if n > 0 {
            ew::binary(
                g,
                Binary::Mul,
                x.ptr,
                full,
                s(9)?,
                Reach::Trailing(1),
                out,
                n,
                l,
            )?;
        }
        clipped.push(tensor(st, t.shape())?);
    }
    let (ns, np) = cx.output(1, DType::F32)?;
    copy(g, s(1)?, np, 1)?;
    Ok((tensor(ns, &[])?, clipped))
}

/// One EMA step of an f32 shadow towards `p` (on the shadow's device): returns the new shadow
/// s − (1 − decay)·(s − p) in a fresh buffer, with the CPU's f32 operation order (bit-identical).
pub fn ema_update(cx: &OnCuda, shadow: &StateBuf, p: &Tensor, one_minus: f32) -> Result<StateBuf> {
    let g = &cx.gpu;
    let l = Launch::default();
    let n = p.numel();
    if shadow.len() != n || shadow.dtype() != DType::F32 {
        return Err(Error::msg(format!(
            "EMA: parameter of {n} values, shadow of {}",
            shadow.len()
        )));
    }
    let p32 = StateBuf::f32_of(cx, p)?;
    let d = StateBuf::uninit(cx, n, DType::F32)?;
    let out = StateBuf::uninit(cx, n, DType::F32)?;
    if n > 0 {
        // s − `x` into `into`.
        let shadow_minus = |x, into| {
            let full = Reach::Full;
            ew::binary(g, Binary::Sub, shadow.ptr(), full, x, full, into, n, l)
        };
        shadow_minus(p32.ptr(), d.ptr())?;
        // (s − p)·(1 − decay) into p32's buffer (no longer needed).
        ew::affine(g, d.ptr(), p32.ptr(), n, one_minus as f64, 0.0, l)?;
        shadow_minus(p32.ptr(), out.ptr())?;
    }
    Ok(out)
}

/// `p`'s storage as a launch argument, for an optimizer that replaces it (`p` must own its
/// whole storage contiguously, as `Tensor::replace_storage` requires).
pub fn whole(cx: &OnCuda, p: &Tensor) -> Result<DevIn> {
    if !p.is_contiguous() || p.layout().offset() != 0 || p.storage().len() != p.numel() {
        return Err(Error::msg(
            "a device optimizer needs a parameter that owns its whole storage contiguously",
        ));
    }
    cx.view(p)
}
