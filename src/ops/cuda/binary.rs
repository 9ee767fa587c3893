//! CUDA path of the broadcasting binary ops (add, sub, mul, div, maximum, minimum): operands
//! read in place through a `Reach` (same shape, bias-like trailing or leading broadcast), other
//! broadcasts expanded on the device first; a mixed-dtype pair is cast to the promoted dtype on
//! the device.

use super::cast::as_dtype;
use super::OnCuda;
use crate::backend::cpu::binary::{Binary, Reach};
use crate::backend::cuda::elementwise::{self, Launch};
use crate::error::Result;
use crate::tensor::{DType, Storage, Tensor};

/// out (`shape`, `dtype`) = op(a, b) broadcast to `shape`. `reach` is the CPU op's pattern
/// finder (ops::binary::reach), so both backends read the same operands in place.
pub fn binary(
    cx: &OnCuda,
    op: Binary,
    a: &Tensor,
    b: &Tensor,
    shape: &[usize],
    dtype: DType,
    reach: fn(&[usize], &[usize]) -> Option<Reach>,
) -> Result<Storage> {
    let n: usize = shape.iter().product();
    let (storage, out) = cx.output(n, dtype)?;
    if n == 0 {
        return Ok(storage);
    }
    let operand = |t: &Tensor| -> Result<(Tensor, Reach)> {
        let t = as_dtype(cx, t, dtype)?;
        match reach(t.shape(), shape) {
            Some(r) => Ok((t, r)),
            None => Ok((t.broadcast_as(shape)?.contiguous()?, Reach::Full)),
        }
    };
    let ((ta, ra), (tb, rb)) = (operand(a)?, operand(b)?);
    let (da, db) = (cx.input(&ta)?, cx.input(&tb)?);
    elementwise::binary(
        &cx.gpu,
        op,
        da.ptr,
        ra,
        db.ptr,
        rb,
        out,
        n,
        Launch::default(),
    )?;
    Ok(storage)
}
