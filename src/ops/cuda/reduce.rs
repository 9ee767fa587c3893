//! CUDA paths of the reductions: sum / mean over dims (one [outer, n, inner] pass when the
//! reduced dims are adjacent, else over a dims-last device copy, as the CPU does), whole-tensor
//! sum / mean, and max / argmax along one dim (kernels/reduce.cu).

use super::OnCuda;
use crate::backend::cuda::reduce::{self, ReduceLaunch, SumAllLaunch};
use crate::cuda::gpu::Ptr;
use crate::error::{Error, Result};
use crate::tensor::{DType, Storage, Tensor};

/// `x` (any layout) as a contiguous [outer, n, inner] with `dims` (sorted, distinct) in the
/// middle: in place when the reduced dims of size > 1 are adjacent up to size-1 dims between
/// them, else permuted (kept dims first, reduced last; inner = 1).
fn as_three(x: &Tensor, dims: &[usize]) -> Result<(Tensor, usize, usize, usize)> {
    let shape = x.shape();
    let big: Vec<usize> = dims.iter().copied().filter(|&d| shape[d] != 1).collect();
    let n: usize = big.iter().map(|&d| shape[d]).product();
    let adjacent = big
        .windows(2)
        .all(|w| (w[0] + 1..w[1]).all(|d| shape[d] == 1));
    match (big.first(), big.last()) {
        (Some(&lo), Some(&hi)) if adjacent => {
            let outer = shape[..lo].iter().product();
            let inner = shape[hi + 1..].iter().product();
            Ok((x.detach(), outer, n, inner))
        }
        (Some(_), Some(_)) => {
            let kept: Vec<usize> = (0..x.rank()).filter(|d| !dims.contains(d)).collect();
            let perm: Vec<usize> = kept.iter().chain(dims).copied().collect();
            let outer = kept.iter().map(|&d| shape[d]).product();
            Ok((x.detach().permute(&perm)?, outer, n, 1))
        }
        // Nothing of size > 1 is reduced: every element is its own sum.
        _ => Ok((x.detach(), x.numel(), 1, 1)),
    }
}

/// Σ (or mean) of `x` over `dims` (sorted, distinct), contiguous in the kept dims' order.
pub fn sum(cx: &OnCuda, x: &Tensor, dims: &[usize], mean: bool) -> Result<Storage> {
    let (p, outer, n, inner) = as_three(x, dims)?;
    let count = outer * inner;
    let dt = x.dtype();
    if count == 0 {
        return Ok(cx.output(0, dt)?.0);
    }
    if n == 0 {
        // A sum over nothing is 0 (so is the CPU's mean, which scales by 1/max(n, 1)).
        return Ok(cx.zeros(count, dt)?.0);
    }
    let xd = cx.input(&p)?;
    let (storage, y) = cx.output(count, dt)?;
    if count == 1 {
        reduce::sum_all(&cx.gpu, xd.ptr, y, n, mean, SumAllLaunch::default())?;
    } else {
        reduce::sum(
            &cx.gpu,
            xd.ptr,
            y,
            outer,
            n,
            inner,
            mean,
            ReduceLaunch::default(),
        )?;
    }
    Ok(storage)
}

/// The maximum of `x` along `dim` (size >= 1) and its first index (I64), each contiguous in
/// the kept dims' order.
pub fn max(cx: &OnCuda, x: &Tensor, dim: usize) -> Result<(Storage, Storage)> {
    let (values, idx) = max_impl(cx, x, dim, true)?;
    let values = values.ok_or_else(|| Error::msg("internal: max computed no values"))?;
    Ok((values, idx))
}

/// The first index (I64) of the maximum of `x` along `dim` (size >= 1).
pub fn argmax(cx: &OnCuda, x: &Tensor, dim: usize) -> Result<Storage> {
    Ok(max_impl(cx, x, dim, false)?.1)
}

fn max_impl(
    cx: &OnCuda,
    x: &Tensor,
    dim: usize,
    values: bool,
) -> Result<(Option<Storage>, Storage)> {
    let shape = x.shape();
    let outer: usize = shape[..dim].iter().product();
    let n = shape[dim];
    let inner: usize = shape[dim + 1..].iter().product();
    let count = outer * inner;
    let xd = cx.input(x)?;
    let (y_storage, y) = if values {
        let (s, p) = cx.output(count, x.dtype())?;
        (Some(s), p)
    } else {
        (None, Ptr::null(x.dtype()))
    };
    let (idx_storage, idx) = cx.output(count, DType::I64)?;
    reduce::max(
        &cx.gpu,
        xd.ptr,
        y,
        idx,
        outer,
        n,
        inner,
        ReduceLaunch::default(),
    )?;
    Ok((y_storage, idx_storage))
}
