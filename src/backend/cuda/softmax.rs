//! Launches of kernels/softmax.cu: softmax / log-softmax over the middle axis of [outer, n, inner]
//! and the backward from the saved output (CPU twin: backend::cpu::softmax).

use super::check;
use crate::cuda::gpu::{suffix, Ptr};
use crate::cuda::Gpu;
use crate::error::Result;
use cudarc::driver::{LaunchConfig, PushKernelArg};

const OP: &str = "softmax";

/// y = softmax (or log-softmax) of x [outer, n, inner] over n.
pub fn softmax(
    g: &Gpu,
    x: Ptr,
    y: Ptr,
    outer: usize,
    n: usize,
    inner: usize,
    log: bool,
) -> Result<()> {
    launch(g, "", &[x], y, outer, n, inner, log)
}

/// dx from the forward's output y and the incoming gradient dy (same shape as softmax's).
#[allow(clippy::too_many_arguments)]
pub fn softmax_backward(
    g: &Gpu,
    y: Ptr,
    dy: Ptr,
    dx: Ptr,
    outer: usize,
    n: usize,
    inner: usize,
    log: bool,
) -> Result<()> {
    launch(g, "backward_", &[y, dy], dx, outer, n, inner, log)
}

#[allow(clippy::too_many_arguments)]
fn launch(
    g: &Gpu,
    kind: &str,
    inputs: &[Ptr],
    out: Ptr,
    outer: usize,
    n: usize,
    inner: usize,
    log: bool,
) -> Result<()> {
    let len = outer * n * inner;
    for (i, p) in inputs.iter().enumerate() {
        check::need(OP, &format!("input {i}"), *p, len)?;
        check::dtype(OP, &format!("input {i}"), *p, out.dtype)?;
    }
    check::need(OP, "output", out, len)?;
    if len == 0 {
        return Ok(());
    }
    let s = suffix(out.dtype)?;
    let (o, nn, ii, lg) = (outer as i64, n as i64, inner as i64, log as i32);
    let ptrs: Vec<u64> = inputs.iter().map(|p| p.addr).collect();
    if inner == 1 {
        // One warp per row (8 rows a block) up to 1024 columns, else 512 threads a row.
        let (bx, by) = if n <= 1024 { (32u32, 8u32) } else { (512, 1) };
        let cfg = LaunchConfig {
            grid_dim: (check::blocks(outer, by as usize, 65535 * 16), 1, 1),
            block_dim: (bx, by, 1),
            shared_mem_bytes: 0,
        };
        let f = g.function("softmax", &format!("softmax_{kind}rows_{s}"))?;
        let mut b = g.stream().launch_builder(&f);
        b.arg(&o).arg(&nn).arg(&lg);
        for p in &ptrs {
            b.arg(p);
        }
        b.arg(&out.addr);
        // SAFETY: argument types and order follow the kernel's signature; sizes checked above.
        unsafe { b.launch(cfg) }
            .map_err(|e| crate::cuda::modules::driver_error(e, "launching softmax_rows"))?;
    } else {
        let cfg = LaunchConfig {
            grid_dim: (check::blocks(outer * inner, 256, 65535 * 64), 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        let f = g.function("softmax", &format!("softmax_{kind}cols_{s}"))?;
        let mut b = g.stream().launch_builder(&f);
        b.arg(&o).arg(&nn).arg(&ii).arg(&lg);
        for p in &ptrs {
            b.arg(p);
        }
        b.arg(&out.addr);
        // SAFETY: as above.
        unsafe { b.launch(cfg) }
            .map_err(|e| crate::cuda::modules::driver_error(e, "launching softmax_cols"))?;
    }
    Ok(())
}
