//! Launches of kernels/adamw.cu: AdamW on device state (per-step scalars, the fused update with
//! fp32 masters) and dynamic loss scaling (overflow check and unscale, scale update, loss ×
//! scale) (CPU twin: optim::AdamW, optim::LossScaler).

use super::check;
use crate::cuda::gpu::{suffix, Ptr};
use crate::cuda::Gpu;
use crate::error::Result;
use crate::tensor::DType;
use cudarc::driver::{LaunchConfig, PushKernelArg};

/// Bytes of one parameter's AdamwHyper record (7 f32 scalars + an i32 skip flag).
pub const HYPER_BYTES: usize = 32;

/// The optimizer's hyper-parameters as AdamW::step uses them (f64, rounded to f32 on device).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamwScalars {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

/// The contract's 1-D grid-stride launch: block 256, ceil(n / 256) blocks (capped).
fn config_1d(n: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (check::blocks(n, 256, 65535 * 16), 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    }
}

fn single(op: &str, what: &str, p: Ptr, dtype: DType) -> Result<()> {
    check::dtype(op, what, p, dtype)?;
    check::need(op, what, p, 1)
}

fn hyper_record(op: &str, hyper: Ptr, count: usize) -> Result<()> {
    check::dtype(op, "hyper", hyper, DType::U8)?;
    check::need(op, "hyper", hyper, HYPER_BYTES * count)?;
    crate::ensure!(
        hyper.addr.is_multiple_of(4),
        "{op}: hyper records must be 4-byte aligned"
    );
    Ok(())
}

/// Per parameter i < n: increments `steps[i]` (i64) unless `found_inf` (i32 [1], nullable: no
/// scaler, always step) is set, and writes its AdamwHyper record (`hyper`: U8,
/// HYPER_BYTES·n bytes) with the bias corrections for that step, or skip = 1 on overflow.
pub fn adamw_hyper(
    g: &Gpu,
    found_inf: Ptr,
    steps: Ptr,
    hyper: Ptr,
    n: usize,
    s: &AdamwScalars,
) -> Result<()> {
    const OP: &str = "adamw_hyper";
    let ni = check::int(OP, "parameter count", n)?;
    check::dtype(OP, "found_inf", found_inf, DType::I32)?;
    check::need_opt(OP, "found_inf", found_inf, 1)?;
    check::dtype(OP, "steps", steps, DType::I64)?;
    check::need(OP, "steps", steps, n)?;
    hyper_record(OP, hyper, n)?;
    if n == 0 {
        return Ok(());
    }
    let block = if n == 1 { 32 } else { 256 };
    let cfg = LaunchConfig {
        grid_dim: (check::blocks(n, block, 65535), 1, 1),
        block_dim: (block as u32, 1, 1),
        shared_mem_bytes: 0,
    };
    let f = g.function("adamw", OP)?;
    let mut b = g.stream().launch_builder(&f);
    b.arg(&ni).arg(&found_inf.addr).arg(&steps.addr);
    b.arg(&s.lr)
        .arg(&s.beta1)
        .arg(&s.beta2)
        .arg(&s.eps)
        .arg(&s.weight_decay);
    b.arg(&hyper.addr);
    // SAFETY: argument types and order follow the kernel's signature; sizes checked above.
    check::launched(unsafe { b.launch(cfg) }, OP)
}

/// One AdamW update of a parameter of `n` elements from its `hyper` record (U8, HYPER_BYTES;
/// does nothing when the record says skip): `master` f32 [n] (the parameter itself for f32
/// parameters, its fp32 master for f16/bf16 ones), `param` the f16/bf16 model copy [n]
/// (required for half parameters, null for f32 ones), `grad` [n], moments `m`, `v` f32 [n],
/// `inv_scale` f32 [1] (nullable: non-null unscales the gradient here).
///
/// Supported (param, grad) pairs and their kernels: (null, f32) → adamw_step_f32; (f16/bf16,
/// the same dtype) → adamw_step_f16/bf16 (the unscaled gradient is rounded to the half type);
/// (f16/bf16, f32) → adamw_step_g32_f16/bf16, the CPU's convention (a half leaf's gradient is
/// f32 and is unscaled in f32; check/unscale it with `grad_unscale_check` on the f32 buffer).
/// Any other pair is refused.
#[allow(clippy::too_many_arguments)]
pub fn adamw_step(
    g: &Gpu,
    hyper: Ptr,
    master: Ptr,
    param: Ptr,
    grad: Ptr,
    m: Ptr,
    v: Ptr,
    inv_scale: Ptr,
    n: usize,
) -> Result<()> {
    const OP: &str = "adamw_step";
    hyper_record(OP, hyper, 1)?;
    let sfx = suffix(grad.dtype)?;
    check::need(OP, "grad", grad, n)?;
    for (what, p) in [("master", master), ("m", m), ("v", v)] {
        check::dtype(OP, what, p, DType::F32)?;
        check::need(OP, what, p, n)?;
    }
    let name = match (grad.dtype, param.is_null()) {
        // An f32 parameter: updated in `master`.
        (DType::F32, true) => "adamw_step_f32".to_string(),
        // A half parameter with an f32 gradient.
        (DType::F32, false) => {
            crate::ensure!(
                param.dtype.is_half(),
                "{OP}: param is {:?} with an f32 gradient: f32 parameters are updated in \
                 `master` and `param` must be null; a non-null `param` takes an f32 gradient \
                 only when it is F16 or BF16",
                param.dtype
            );
            check::need(OP, "param", param, n)?;
            format!("adamw_step_g32_{}", suffix(param.dtype)?)
        }
        // A half gradient: the parameter is of the same half dtype.
        (gd, _) => {
            check::dtype(OP, "param", param, gd)?;
            check::need(OP, "param", param, n)?;
            format!("adamw_step_{sfx}")
        }
    };
    check::dtype(OP, "inv_scale", inv_scale, DType::F32)?;
    check::need_opt(OP, "inv_scale", inv_scale, 1)?;
    if n == 0 {
        return Ok(());
    }
    let f = g.function("adamw", &name)?;
    let nn = n as i64;
    let mut b = g.stream().launch_builder(&f);
    b.arg(&nn)
        .arg(&hyper.addr)
        .arg(&master.addr)
        .arg(&param.addr);
    b.arg(&grad.addr)
        .arg(&m.addr)
        .arg(&v.addr)
        .arg(&inv_scale.addr);
    // SAFETY: as above.
    check::launched(unsafe { b.launch(config_1d(n)) }, &name)
}

/// Sets `found_inf` (i32 [1]; only ever set, never cleared) when `grad` [n] (f32, bf16, f16)
/// holds an inf or NaN; with `inv_scale` (f32 [1], nullable) also unscales `grad` in place,
/// rounding to the buffer's dtype (an f32 buffer, e.g. a half parameter's f32 gradient, is
/// unscaled in f32 as the CPU's LossScaler does).
pub fn grad_unscale_check(
    g: &Gpu,
    grad: Ptr,
    inv_scale: Ptr,
    found_inf: Ptr,
    n: usize,
) -> Result<()> {
    const OP: &str = "grad_unscale_check";
    let sfx = suffix(grad.dtype)?;
    check::need(OP, "grad", grad, n)?;
    check::dtype(OP, "inv_scale", inv_scale, DType::F32)?;
    check::need_opt(OP, "inv_scale", inv_scale, 1)?;
    single(OP, "found_inf", found_inf, DType::I32)?;
    if n == 0 {
        return Ok(());
    }
    let name = format!("grad_unscale_check_{sfx}");
    let f = g.function("adamw", &name)?;
    let nn = n as i64;
    let mut b = g.stream().launch_builder(&f);
    b.arg(&nn)
        .arg(&grad.addr)
        .arg(&inv_scale.addr)
        .arg(&found_inf.addr);
    // SAFETY: as above.
    check::launched(unsafe { b.launch(config_1d(n)) }, &name)
}

/// LossScaler::update on device state, after every adamw_step of the step: backs `scale`
/// (f64 [1]) off on overflow (`found_inf`, i32 [1]), grows it after `growth_interval` clean
/// steps (`growth_tracker`, i64 [1]), writes `inv_scale` (f32 [1]) = 1/scale and clears
/// `found_inf` for the next step.
#[allow(clippy::too_many_arguments)]
pub fn loss_scale_update(
    g: &Gpu,
    found_inf: Ptr,
    scale: Ptr,
    growth_tracker: Ptr,
    inv_scale: Ptr,
    growth_factor: f64,
    backoff_factor: f64,
    growth_interval: u64,
) -> Result<()> {
    const OP: &str = "loss_scale_update";
    single(OP, "found_inf", found_inf, DType::I32)?;
    single(OP, "scale", scale, DType::F64)?;
    single(OP, "growth_tracker", growth_tracker, DType::I64)?;
    single(OP, "inv_scale", inv_scale, DType::F32)?;
    let interval = i64::try_from(growth_interval).map_err(|_| {
        crate::error::Error::msg(format!(
            "{OP}: growth_interval {growth_interval} exceeds i64"
        ))
    })?;
    let cfg = LaunchConfig {
        grid_dim: (1, 1, 1),
        block_dim: (1, 1, 1),
        shared_mem_bytes: 0,
    };
    let f = g.function("adamw", OP)?;
    let mut b = g.stream().launch_builder(&f);
    b.arg(&found_inf.addr)
        .arg(&scale.addr)
        .arg(&growth_tracker.addr);
    b.arg(&inv_scale.addr)
        .arg(&growth_factor)
        .arg(&backoff_factor)
        .arg(&interval);
    // SAFETY: as above.
    check::launched(unsafe { b.launch(cfg) }, OP)
}

/// y [n] = x [n] · (f32)(*scale) (LossScaler::scale with the device's f64 [1] `scale`); x and
/// y of one dtype (f32, bf16, f16).
pub fn scale_by_device(g: &Gpu, x: Ptr, scale: Ptr, y: Ptr, n: usize) -> Result<()> {
    const OP: &str = "scale_by_device";
    check::need(OP, "x", x, n)?;
    check::dtype(OP, "x", x, y.dtype)?;
    check::need(OP, "y", y, n)?;
    single(OP, "scale", scale, DType::F64)?;
    let sfx = suffix(y.dtype)?;
    if n == 0 {
        return Ok(());
    }
    let name = format!("scale_by_device_{sfx}");
    let f = g.function("adamw", &name)?;
    let nn = n as i64;
    let mut b = g.stream().launch_builder(&f);
    b.arg(&nn).arg(&x.addr).arg(&scale.addr).arg(&y.addr);
    // SAFETY: as above.
    check::launched(unsafe { b.launch(config_1d(n)) }, &name)
}
