//! CUDA path of dtype casts between f32, bf16 and f16 (the cast kernel), shared by
//! `Tensor::to_dtype` and the binary ops' promotion of a mixed pair.

use super::OnCuda;
use crate::backend::cuda::elementwise::{self, Launch};
use crate::error::Result;
use crate::tensor::{DType, Storage, Tensor};

/// The dtypes the elementwise/reduce/softmax kernels take (f64 and integers stay on the host).
pub fn kernel_float(dtype: DType) -> bool {
    matches!(dtype, DType::F32 | DType::BF16 | DType::F16)
}

/// `t` (any layout, any device) converted to `dtype` on the op's device: a fresh contiguous
/// buffer of `t.numel()` elements. Both dtypes must be kernel floats and differ.
pub fn cast(cx: &OnCuda, t: &Tensor, dtype: DType) -> Result<Storage> {
    let x = cx.input(t)?;
    let n = t.numel();
    let (storage, y) = cx.output(n, dtype)?;
    elementwise::cast(&cx.gpu, x.ptr, y, n, Launch::default())?;
    Ok(storage)
}

/// `t` as a contiguous tensor of `dtype` on the op's device (no autograd history): `t` itself
/// when it already is, else a device copy / cast.
pub fn as_dtype(cx: &OnCuda, t: &Tensor, dtype: DType) -> Result<Tensor> {
    let t = t.detach().to_device(cx.device())?;
    if t.dtype() == dtype {
        return Ok(t);
    }
    super::tensor(cast(cx, &t, dtype)?, t.shape())
}
