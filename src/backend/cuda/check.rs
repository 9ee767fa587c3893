//! Argument checks shared by the launch functions: buffer sizes, dtypes and launch-shape limits,
//! each failing with an error that names the op and the argument instead of launching out of bounds.

use crate::cuda::gpu::Ptr;
use crate::error::{Error, Result};
use crate::tensor::DType;

/// `p` must hold at least `elems` elements (a null pointer fails unless `elems` is 0).
pub fn need(op: &str, what: &str, p: Ptr, elems: usize) -> Result<()> {
    if elems > 0 && p.is_null() {
        return Err(Error::msg(format!(
            "{op}: {what} is a null pointer but {elems} elements are needed"
        )));
    }
    if p.len < elems {
        return Err(Error::msg(format!(
            "{op}: {what} holds {} elements, the shape needs {elems}",
            p.len
        )));
    }
    Ok(())
}

/// Like [`need`], but a null pointer (an absent optional argument) passes.
pub fn need_opt(op: &str, what: &str, p: Ptr, elems: usize) -> Result<()> {
    if p.is_null() {
        Ok(())
    } else {
        need(op, what, p, elems)
    }
}

/// `p` must be of `dtype` (null pointers pass).
pub fn dtype(op: &str, what: &str, p: Ptr, dtype: DType) -> Result<()> {
    if !p.is_null() && p.dtype != dtype {
        return Err(Error::msg(format!(
            "{op}: {what} is {:?}, expected {dtype:?}",
            p.dtype
        )));
    }
    Ok(())
}

/// A size that a kernel takes as `int` must fit in i32.
pub fn int(op: &str, what: &str, v: usize) -> Result<i32> {
    i32::try_from(v).map_err(|_| {
        Error::msg(format!(
            "{op}: {what} = {v} exceeds the kernel's 32-bit limit"
        ))
    })
}

/// Blocks for `work` items at `per_block` each, capped at `cap` (grid-stride kernels loop).
pub fn blocks(work: usize, per_block: usize, cap: usize) -> u32 {
    work.div_ceil(per_block.max(1)).clamp(1, cap) as u32
}

/// A launch's driver result as a crate error naming the kernel.
pub fn launched<T>(
    r: std::result::Result<T, cudarc::driver::DriverError>,
    kernel: &str,
) -> Result<()> {
    r.map(|_| ())
        .map_err(|e| crate::cuda::modules::driver_error(e, &format!("launching {kernel}")))
}
