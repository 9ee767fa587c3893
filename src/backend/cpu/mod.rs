//! The CPU backend: kernels over plain slices, generic over the compute type
//! (`f32` for f32/f16/bf16 tensors, `f64` for f64 tensors).

pub mod attention;
pub mod binary;
pub mod conv;
pub mod elementwise;
pub mod geglu;
pub mod gemm;
pub mod norm;
pub mod pool;
pub mod reduce;
pub mod softmax;
pub mod vmath;
pub mod winograd;

use crate::tensor::{CpuStorage, Layout, Real, Storage, Tensor};
use rayon::prelude::*;
use std::borrow::Cow;

/// Elements per rayon task for elementwise loops.
pub const PAR_CHUNK: usize = 1 << 14;

/// The tensor's values as `T` in row-major order (borrowed when possible).
pub fn values<T: Real>(t: &Tensor) -> Vec<T> {
    t.to_vec::<T>()
}

/// Storage holding `T` with the tensor's own layout (no copy when the dtype is
/// `T` already), or a converted contiguous copy with a contiguous layout.
pub fn strided<'a, T: Real>(storage: &'a Storage, layout: &Layout) -> (Cow<'a, [T]>, Layout) {
    let cpu = storage.cpu();
    if cpu.dtype() == T::DTYPE {
        let all = Layout::contiguous(&[cpu.len()]);
        (cpu.values::<T>(&all), layout.clone())
    } else {
        (cpu.values::<T>(layout), Layout::contiguous(layout.shape()))
    }
}

/// Wrap computed values as CPU storage of `dtype`.
pub fn storage_from<T: Real>(values: Vec<T>, dtype: crate::tensor::DType) -> Storage {
    Storage::Cpu(CpuStorage::from_real(values, dtype))
}

/// An output buffer poisoned with NaN, for kernels that overwrite every element:
/// an element a kernel forgets to write shows up as NaN instead of a plausible 0.
pub fn poisoned<T: Real>(n: usize) -> Vec<T> {
    vec![T::nan(); n]
}

/// out[i] = f(i) for all i, in parallel chunks.
pub fn par_fill<T: Real>(n: usize, f: impl Fn(usize) -> T + Sync) -> Vec<T> {
    let mut out = poisoned::<T>(n);
    out.par_chunks_mut(PAR_CHUNK)
        .enumerate()
        .for_each(|(c, chunk)| {
            let base = c * PAR_CHUNK;
            for (j, o) in chunk.iter_mut().enumerate() {
                *o = f(base + j);
            }
        });
    out
}
