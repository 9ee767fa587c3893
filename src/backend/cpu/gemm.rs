//! Dense matrix multiply: our AVX2/FMA kernel (sgemm/) for f32 where the CPU has it,
//! the `gemm` crate for f64 and as the fallback (see benches/cpu_gemm_conv.rs, tests/gemm.rs).

use crate::tensor::{DType, Real};

#[cfg(target_arch = "x86_64")]
#[path = "sgemm/mod.rs"]
mod sgemm;

/// A strided matrix view: element (i, j) lives at `data[offset + i*rs + j*cs]`.
#[derive(Clone, Copy, Debug)]
pub struct MatRef<'a, T> {
    pub data: &'a [T],
    pub offset: usize,
    pub rs: usize,
    pub cs: usize,
}

/// Problems below this many multiply-adds run on one thread.
const PARALLEL_MIN_WORK: usize = 48 * 48 * 48;

/// dst[m×n] (row-major, leading dim `ldd`) = beta_dst·dst + a[m×k]·b[k×n].
/// `accumulate` false ignores dst's previous contents.
#[allow(clippy::too_many_arguments)]
pub fn matmul<T: Real>(
    m: usize,
    n: usize,
    k: usize,
    a: MatRef<'_, T>,
    b: MatRef<'_, T>,
    dst: &mut [T],
    ldd: usize,
    accumulate: bool,
    allow_threads: bool,
) {
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                dst[i * ldd..i * ldd + n].fill(T::zero());
            }
        }
        return;
    }
    // Bounds: the furthest element each operand touches must exist.
    assert!(a.offset + (m - 1) * a.rs + (k - 1) * a.cs < a.data.len());
    assert!(b.offset + (k - 1) * b.rs + (n - 1) * b.cs < b.data.len());
    assert!((m - 1) * ldd + n <= dst.len());
    #[cfg(target_arch = "x86_64")]
    if T::DTYPE == DType::F32 && sgemm::preferred(m, n) && sgemm::available() {
        let dst = bytemuck::cast_slice_mut::<T, f32>(dst);
        sgemm::sgemm(
            m,
            n,
            k,
            as_f32(a),
            as_f32(b),
            dst,
            ldd,
            accumulate,
            allow_threads,
        );
        return;
    }
    let threads = if allow_threads && m * n * k >= PARALLEL_MIN_WORK {
        gemm::Parallelism::Rayon(rayon::current_num_threads())
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: the asserts above keep every access inside the slices; dst does not
    // alias a or b (it is a distinct &mut borrow).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            ldd as isize,
            accumulate,
            a.data.as_ptr().add(a.offset),
            a.cs as isize,
            a.rs as isize,
            b.data.as_ptr().add(b.offset),
            b.cs as isize,
            b.rs as isize,
            T::one(),
            T::one(),
            false,
            false,
            false,
            threads,
        );
    }
}

/// The same view over f32 data (`T` must be f32: same size and alignment).
#[cfg(target_arch = "x86_64")]
fn as_f32<T: Real>(x: MatRef<'_, T>) -> MatRef<'_, f32> {
    MatRef {
        data: bytemuck::cast_slice::<T, f32>(x.data),
        offset: x.offset,
        rs: x.rs,
        cs: x.cs,
    }
}
