//! Launches of kernels/elementwise.cu: unary maps and their backward, binary ops through a
//! `Reach`, affine / clamp / powf (+ backward) and dtype casts (CPU twins:
//! backend::cpu::{elementwise, binary}, ops::{unary, cast}).

use super::check;
use crate::backend::cpu::binary::{Binary, Reach};
use crate::backend::cpu::elementwise::Unary;
use crate::cuda::gpu::{suffix, Ptr};
use crate::cuda::Gpu;
use crate::error::{Error, Result};
use crate::tensor::DType;
use cudarc::driver::{CudaFunction, LaunchConfig, PushKernelArg};

/// The grid of these grid-stride kernels (any grid is correct; every thread loops).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Launch {
    /// Upper bound on the blocks; None = the contract's choice, 16 blocks per SM.
    pub max_blocks: Option<u32>,
}

/// The kernel's `(mode, inner)` arguments of a Reach: Full 0, Trailing 1, Leading 2; inner is
/// ignored (0) for Full.
pub fn reach_code(r: Reach) -> (i32, i64) {
    match r {
        Reach::Full => (0, 0),
        Reach::Trailing(k) => (1, k as i64),
        Reach::Leading(k) => (2, k as i64),
    }
}

/// Elements an operand read through `r` must hold for `n` outputs.
pub fn reach_len(r: Reach, n: usize) -> usize {
    match r {
        Reach::Full => n,
        Reach::Trailing(k) => k,
        Reach::Leading(k) => n.div_ceil(k.max(1)),
    }
}

/// y = f(x) for `op` over n contiguous elements; x, y: n elements of one float dtype.
pub fn unary(g: &Gpu, op: Unary, x: Ptr, y: Ptr, n: usize, launch: Launch) -> Result<()> {
    let name = format!("unary({})", op.name());
    inputs(&name, &[("x", x, n)], y, n)?;
    if n == 0 {
        return Ok(());
    }
    let (code, nn) = (op as i32, n as i64);
    let (f, cfg, kernel) = prepare(g, "unary", y.dtype, n, launch)?;
    let mut b = g.stream().launch_builder(&f);
    b.arg(&code).arg(&nn).arg(&x.addr).arg(&y.addr);
    // SAFETY: argument types and order follow the kernel's signature; sizes checked above.
    check::launched(unsafe { b.launch(cfg) }, &kernel)
}

/// dx = dy·f'(x, y) for `op` (Unary::derivative), n elements each. Exp, Sqrt, Tanh, Sigmoid
/// and Recip read y (the forward's output), the others x; the one an op does not read may be
/// null (the other is passed in its place).
#[allow(clippy::too_many_arguments)]
pub fn unary_backward(
    g: &Gpu,
    op: Unary,
    x: Ptr,
    y: Ptr,
    dy: Ptr,
    dx: Ptr,
    n: usize,
    launch: Launch,
) -> Result<()> {
    let name = format!("unary_backward({})", op.name());
    let reads_y = matches!(
        op,
        Unary::Exp | Unary::Sqrt | Unary::Tanh | Unary::Sigmoid | Unary::Recip
    );
    let (x, y) = match (x.is_null(), y.is_null()) {
        (true, false) if reads_y => (y, y),
        (false, true) if !reads_y => (x, x),
        _ => (x, y),
    };
    inputs(&name, &[("x", x, n), ("y", y, n), ("dy", dy, n)], dx, n)?;
    if n == 0 {
        return Ok(());
    }
    let (code, nn) = (op as i32, n as i64);
    let (f, cfg, kernel) = prepare(g, "unary_backward", dx.dtype, n, launch)?;
    let mut b = g.stream().launch_builder(&f);
    b.arg(&code)
        .arg(&nn)
        .arg(&x.addr)
        .arg(&y.addr)
        .arg(&dy.addr)
        .arg(&dx.addr);
    // SAFETY: argument types and order follow the kernel's signature; sizes checked above.
    check::launched(unsafe { b.launch(cfg) }, &kernel)
}

/// out[i] = op(a at i, b at i) for i < n, each operand read through its Reach (Full: n
/// elements, Trailing(k): k, Leading(k): ceil(n/k); k >= 1); a, b, out of one float dtype
/// (cast a mixed pair to the promoted dtype first).
#[allow(clippy::too_many_arguments)]
pub fn binary(
    g: &Gpu,
    op: Binary,
    a: Ptr,
    ra: Reach,
    b: Ptr,
    rb: Reach,
    out: Ptr,
    n: usize,
    launch: Launch,
) -> Result<()> {
    let name = format!("binary({})", op.name());
    for (what, r) in [("a", ra), ("b", rb)] {
        if matches!(r, Reach::Trailing(0) | Reach::Leading(0)) {
            return Err(Error::msg(format!(
                "{name}: operand {what} has reach {r:?}; the repeat length must be >= 1"
            )));
        }
    }
    let sized = [("a", a, reach_len(ra, n)), ("b", b, reach_len(rb, n))];
    inputs(&name, &sized, out, n)?;
    if n == 0 {
        return Ok(());
    }
    let (code, nn) = (op as i32, n as i64);
    let ((ma, ia), (mb, ib)) = (reach_code(ra), reach_code(rb));
    let (f, cfg, kernel) = prepare(g, "binary", out.dtype, n, launch)?;
    let (pa, pb) = (a.addr, b.addr);
    let mut l = g.stream().launch_builder(&f);
    l.arg(&code).arg(&nn).arg(&pa).arg(&ma).arg(&ia);
    l.arg(&pb).arg(&mb).arg(&ib).arg(&out.addr);
    // SAFETY: argument types and order follow the kernel's signature; sizes checked above.
    check::launched(unsafe { l.launch(cfg) }, &kernel)
}

/// y = x·mul + add (mul and add rounded to f32, two roundings, as ops::unary::affine).
#[allow(clippy::too_many_arguments)]
pub fn affine(g: &Gpu, x: Ptr, y: Ptr, n: usize, mul: f64, add: f64, launch: Launch) -> Result<()> {
    inputs("affine", &[("x", x, n)], y, n)?;
    if n == 0 {
        return Ok(());
    }
    let (nn, m, a) = (n as i64, mul as f32, add as f32);
    let (f, cfg, kernel) = prepare(g, "affine", y.dtype, n, launch)?;
    let mut b = g.stream().launch_builder(&f);
    b.arg(&nn).arg(&x.addr).arg(&m).arg(&a).arg(&y.addr);
    // SAFETY: argument types and order follow the kernel's signature; sizes checked above.
    check::launched(unsafe { b.launch(cfg) }, &kernel)
}

/// y = clamp(x, lo, hi) with the bounds rounded to f32 (NaN stays NaN), as ops::unary::clamp.
#[allow(clippy::too_many_arguments)]
pub fn clamp(g: &Gpu, x: Ptr, y: Ptr, n: usize, lo: f64, hi: f64, launch: Launch) -> Result<()> {
    inputs("clamp", &[("x", x, n)], y, n)?;
    if n == 0 {
        return Ok(());
    }
    let (nn, l, h) = (n as i64, lo as f32, hi as f32);
    let (f, cfg, kernel) = prepare(g, "clamp", y.dtype, n, launch)?;
    let mut b = g.stream().launch_builder(&f);
    b.arg(&nn).arg(&x.addr).arg(&l).arg(&h).arg(&y.addr);
    // SAFETY: argument types and order follow the kernel's signature; sizes checked above.
    check::launched(unsafe { b.launch(cfg) }, &kernel)
}

/// dx = dy where lo <= x <= hi (compared in f64), else 0 (clamp's backward).
#[allow(clippy::too_many_arguments)]
pub fn clamp_backward(
    g: &Gpu,
    x: Ptr,
    dy: Ptr,
    dx: Ptr,
    n: usize,
    lo: f64,
    hi: f64,
    launch: Launch,
) -> Result<()> {
    let op = "clamp_backward";
    inputs(op, &[("x", x, n), ("dy", dy, n)], dx, n)?;
    if n == 0 {
        return Ok(());
    }
    let nn = n as i64;
    let (f, cfg, kernel) = prepare(g, op, dx.dtype, n, launch)?;
    let mut b = g.stream().launch_builder(&f);
    b.arg(&nn)
        .arg(&x.addr)
        .arg(&dy.addr)
        .arg(&lo)
        .arg(&hi)
        .arg(&dx.addr);
    // SAFETY: argument types and order follow the kernel's signature; sizes checked above.
    check::launched(unsafe { b.launch(cfg) }, &kernel)
}

/// y = x^p with p rounded to f32, as Tensor::powf.
pub fn powf(g: &Gpu, x: Ptr, y: Ptr, n: usize, p: f64, launch: Launch) -> Result<()> {
    inputs("powf", &[("x", x, n)], y, n)?;
    if n == 0 {
        return Ok(());
    }
    let (nn, pf) = (n as i64, p as f32);
    let (f, cfg, kernel) = prepare(g, "powf", y.dtype, n, launch)?;
    let mut b = g.stream().launch_builder(&f);
    b.arg(&nn).arg(&x.addr).arg(&pf).arg(&y.addr);
    // SAFETY: argument types and order follow the kernel's signature; sizes checked above.
    check::launched(unsafe { b.launch(cfg) }, &kernel)
}

/// dx = dy·(x^(p−1)·p) with (f32)p and (f32)(p − 1), intermediates in f32 (powf's backward).
#[allow(clippy::too_many_arguments)]
pub fn powf_backward(
    g: &Gpu,
    x: Ptr,
    dy: Ptr,
    dx: Ptr,
    n: usize,
    p: f64,
    launch: Launch,
) -> Result<()> {
    let op = "powf_backward";
    inputs(op, &[("x", x, n), ("dy", dy, n)], dx, n)?;
    if n == 0 {
        return Ok(());
    }
    let (nn, pf, pm1) = (n as i64, p as f32, (p - 1.0) as f32);
    let (f, cfg, kernel) = prepare(g, op, dx.dtype, n, launch)?;
    let mut b = g.stream().launch_builder(&f);
    b.arg(&nn)
        .arg(&x.addr)
        .arg(&dy.addr)
        .arg(&pf)
        .arg(&pm1)
        .arg(&dx.addr);
    // SAFETY: argument types and order follow the kernel's signature; sizes checked above.
    check::launched(unsafe { b.launch(cfg) }, &kernel)
}

/// dst = src converted between two different dtypes of f32, f16 and bf16 (round to nearest
/// even through f32, as ops::cast::to_dtype); n elements each, dtypes taken from the pointers.
pub fn cast(g: &Gpu, src: Ptr, dst: Ptr, n: usize, launch: Launch) -> Result<()> {
    let op = "cast";
    check::need(op, "src", src, n)?;
    check::need(op, "dst", dst, n)?;
    let (s, d) = (cast_name(src.dtype)?, cast_name(dst.dtype)?);
    if s == d {
        return Err(Error::msg(format!(
            "cast: src and dst are both {:?}; there is no identity cast kernel (copy instead)",
            src.dtype
        )));
    }
    disjoint(op, "src", src, n, dst, n)?;
    if n == 0 {
        return Ok(());
    }
    let kernel = format!("cast_{s}_{d}");
    let f = g.function("elementwise", &kernel)?;
    let nn = n as i64;
    let cfg = config(g, n, 4, launch)?;
    let mut b = g.stream().launch_builder(&f);
    b.arg(&nn).arg(&src.addr).arg(&dst.addr);
    // SAFETY: argument types and order follow the kernel's signature; sizes checked above.
    check::launched(unsafe { b.launch(cfg) }, &kernel)
}

fn cast_name(dt: DType) -> Result<&'static str> {
    match dt {
        DType::F32 | DType::F16 | DType::BF16 => suffix(dt),
        other => Err(Error::msg(format!(
            "cast: {other:?} is not a GPU cast dtype (f32, f16, bf16)"
        ))),
    }
}

/// Checks every input's length and dtype against the output's, the output's length, and that
/// the output overlaps no input (the kernels read inputs through __restrict__ pointers).
fn inputs(op: &str, ins: &[(&str, Ptr, usize)], out: Ptr, n: usize) -> Result<()> {
    suffix(out.dtype).map_err(|e| Error::msg(format!("{op}: output: {e}")))?;
    check::need(op, "output", out, n)?;
    for &(what, p, len) in ins {
        check::need(op, what, p, len)?;
        check::dtype(op, what, p, out.dtype)?;
        disjoint(op, what, p, len, out, n)?;
    }
    Ok(())
}

/// The output's `out_len` elements must not overlap the input's `len`.
fn disjoint(op: &str, what: &str, p: Ptr, len: usize, out: Ptr, out_len: usize) -> Result<()> {
    let (a0, a1) = (p.addr, p.addr + (len * p.dtype.size_in_bytes()) as u64);
    let (b0, b1) = (
        out.addr,
        out.addr + (out_len * out.dtype.size_in_bytes()) as u64,
    );
    if len > 0 && out_len > 0 && a0 < b1 && b0 < a1 {
        return Err(Error::msg(format!(
            "{op}: the output overlaps input {what} (the kernel needs them disjoint)"
        )));
    }
    Ok(())
}

/// Block 256, `bytes_per_step / sizeof(T)` elements a thread-step, grid ceil(n / per block)
/// capped at the launch's bound (16 blocks per SM by default).
fn config(g: &Gpu, n: usize, elems_per_step: usize, launch: Launch) -> Result<LaunchConfig> {
    let cap = match launch.max_blocks {
        Some(c) => c.max(1) as usize,
        None => 16 * g.sm_count()?,
    };
    Ok(LaunchConfig {
        grid_dim: (check::blocks(n, 256 * elems_per_step, cap), 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    })
}

/// The kernel `{kernel}_{suffix(dt)}` with its launch shape (16-byte thread-steps).
fn prepare(
    g: &Gpu,
    kernel: &str,
    dt: DType,
    n: usize,
    launch: Launch,
) -> Result<(CudaFunction, LaunchConfig, String)> {
    let name = format!("{kernel}_{}", suffix(dt)?);
    let f = g.function("elementwise", &name)?;
    let cfg = config(g, n, 16 / dt.size_in_bytes(), launch)?;
    Ok((f, cfg, name))
}
