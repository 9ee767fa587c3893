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

/// Columns of one packed B panel written by a [`PackB`].
pub const PACKED_B_COLS: usize = 16;

/// The B operand of an implicit f32 GEMM: writes B's packed panels directly (e.g. from an
/// image, for a conv), so B never exists as a matrix.
pub trait PackB: Sync {
    /// Fills `out`, `out.len() / (16·kc)` panels of 16 ([`PACKED_B_COLS`]) columns × `kc`
    /// rows, with `out[q·16·kc + p·16 + c] = B(p0 + p, j + 16·q + c)`, and 0 for columns
    /// at or past `end`.
    fn pack(&self, p0: usize, kc: usize, j: usize, end: usize, out: &mut [f32]);
}

/// The im2col matrix of one image x [c, h, w] as an implicit B operand (packed with AVX2):
/// B[(ci·kh + ki)·kw + kj, oy·ow + ox] = x[ci, oy·sh + ki·dh − ph, ox·sw + kj·dw − pw],
/// zero where that reads padding.
pub struct Im2col<'a> {
    x: &'a [f32],
    c: usize,
    h: usize,
    w: usize,
    kh: usize,
    kw: usize,
    stride: (usize, usize),
    padding: (usize, usize),
    dilation: (usize, usize),
    ow: usize,
}

impl<'a> Im2col<'a> {
    /// The operand for kernel `(kh, kw)` and `ow` output columns, or None where
    /// [`packed_b_available`] is false. Panics if `x` is shorter than c·h·w.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        x: &'a [f32],
        [c, h, w]: [usize; 3],
        (kh, kw): (usize, usize),
        stride: (usize, usize),
        padding: (usize, usize),
        dilation: (usize, usize),
        ow: usize,
    ) -> Option<Self> {
        assert!(x.len() >= c * h * w && ow > 0);
        packed_b_available().then_some(Im2col {
            x,
            c,
            h,
            w,
            kh,
            kw,
            stride,
            padding,
            dilation,
            ow,
        })
    }
}

impl PackB for Im2col<'_> {
    fn pack(&self, p0: usize, kc: usize, j: usize, end: usize, out: &mut [f32]) {
        assert!(p0 + kc <= self.c * self.kh * self.kw);
        assert!(out.len().is_multiple_of(PACKED_B_COLS * kc.max(1)));
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `new` returned this only with AVX2 available and x holding c·h·w
        // floats; the rows and `out` were checked above.
        unsafe {
            sgemm::im2col::pack(self, p0, kc, j, end, out)
        };
        #[cfg(not(target_arch = "x86_64"))]
        unreachable!(
            "Im2col exists only with AVX2 ({p0}, {kc}, {j}, {end}, {})",
            out.len()
        );
    }
}

/// True when [`matmul_packed_b`] runs here (an x86-64 CPU with AVX2 and FMA).
pub fn packed_b_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        sgemm::available()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// dst[m×n] (row-major, leading dim `ldd`) (+)= a[m×k]·B[k×n] for f32, B given by its
/// packer. Panics unless [`packed_b_available`]; m, n or k of 0 is handled as in [`matmul`].
#[allow(clippy::too_many_arguments)]
pub fn matmul_packed_b(
    m: usize,
    n: usize,
    k: usize,
    a: MatRef<'_, f32>,
    b: &dyn PackB,
    dst: &mut [f32],
    ldd: usize,
    accumulate: bool,
    allow_threads: bool,
) {
    assert!(packed_b_available(), "implicit GEMM needs AVX2 and FMA");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                dst[i * ldd..i * ldd + n].fill(0.0);
            }
        }
        return;
    }
    #[cfg(target_arch = "x86_64")]
    sgemm::sgemm_packed(m, n, k, a, b, dst, ldd, accumulate, allow_threads);
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (a, b, accumulate, allow_threads);
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
