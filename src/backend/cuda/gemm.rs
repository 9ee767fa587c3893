//! Dense matrix multiplies on the GPU through cuBLAS (`cublasGemmStridedBatchedEx`): row-major
//! C = alpha·op(A)·op(B) + beta·C, batched with strides, f32/bf16/f16 storage with f32
//! accumulation (f32 without TF32, as PyTorch's default). CPU twin: backend::cpu::gemm::matmul.

use super::check;
use crate::cuda::gpu::Ptr;
use crate::cuda::Gpu;
use crate::error::{Error, Result};
use crate::tensor::DType;
use cudarc::cublas::sys::{
    cublasComputeType_t, cublasGemmAlgo_t, cublasOperation_t, cudaDataType_t,
};
use std::ffi::c_void;

const OP: &str = "gemm";

/// A row-major batched GEMM: for each batch item i, C_i[m, n] = alpha·op(A_i)·op(B_i) + beta·C_i,
/// where op(A) is [m, k] (A stored [m, k] with row stride `lda`, or [k, m] when `trans_a`) and
/// op(B) is [k, n] (B stored [k, n] with row stride `ldb`, or [n, k] when `trans_b`); C has row
/// stride `ldc`. Batch items are `stride_*` elements apart (0 broadcasts one matrix).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GemmShape {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub trans_a: bool,
    pub trans_b: bool,
    pub lda: usize,
    pub ldb: usize,
    pub ldc: usize,
    pub batch: usize,
    pub stride_a: usize,
    pub stride_b: usize,
    pub stride_c: usize,
    pub alpha: f32,
    pub beta: f32,
}

impl GemmShape {
    /// One dense, contiguous C[m, n] = A[m, k]·B[k, n] (`trans_b`: B stored [n, k], as a Linear
    /// weight).
    pub fn dense(m: usize, n: usize, k: usize, trans_b: bool) -> GemmShape {
        GemmShape {
            m,
            n,
            k,
            trans_a: false,
            trans_b,
            lda: k,
            ldb: if trans_b { k } else { n },
            ldc: n,
            batch: 1,
            stride_a: m * k,
            stride_b: k * n,
            stride_c: m * n,
            alpha: 1.0,
            beta: 0.0,
        }
    }

    /// Elements the operand spans: (batch − 1)·stride + the last matrix's extent.
    fn extent(rows: usize, cols: usize, ld: usize, stride: usize, batch: usize) -> usize {
        if rows == 0 || cols == 0 || batch == 0 {
            return 0;
        }
        (batch - 1) * stride + (rows - 1) * ld + cols
    }
}

/// Runs the GEMM of `shape` on `a`, `b` into `c` (all of one dtype).
pub fn gemm(g: &Gpu, a: Ptr, b: Ptr, c: Ptr, shape: &GemmShape) -> Result<()> {
    let s = shape;
    let (ar, ac) = if s.trans_a { (s.k, s.m) } else { (s.m, s.k) };
    let (br, bc) = if s.trans_b { (s.n, s.k) } else { (s.k, s.n) };
    if s.lda < ac || s.ldb < bc || s.ldc < s.n {
        return Err(Error::msg(format!(
            "{OP}: row strides lda {} / ldb {} / ldc {} are below the rows' lengths {ac} / {bc} / {}",
            s.lda, s.ldb, s.ldc, s.n
        )));
    }
    check::need(
        OP,
        "A",
        a,
        GemmShape::extent(ar, ac, s.lda, s.stride_a, s.batch),
    )?;
    check::need(
        OP,
        "B",
        b,
        GemmShape::extent(br, bc, s.ldb, s.stride_b, s.batch),
    )?;
    check::need(
        OP,
        "C",
        c,
        GemmShape::extent(s.m, s.n, s.ldc, s.stride_c, s.batch),
    )?;
    check::dtype(OP, "A", a, c.dtype)?;
    check::dtype(OP, "B", b, c.dtype)?;
    if s.m == 0 || s.n == 0 || s.batch == 0 {
        return Ok(());
    }
    let data_type = match c.dtype {
        DType::F32 => cudaDataType_t::CUDA_R_32F,
        DType::BF16 => cudaDataType_t::CUDA_R_16BF,
        DType::F16 => cudaDataType_t::CUDA_R_16F,
        other => {
            return Err(Error::msg(format!(
                "{OP}: dtype {other:?} is not f32, bf16 or f16"
            )))
        }
    };
    let int = |what: &str, v: usize| check::int(OP, what, v);
    let op = |t: bool| {
        if t {
            cublasOperation_t::CUBLAS_OP_T
        } else {
            cublasOperation_t::CUBLAS_OP_N
        }
    };
    // cuBLAS is column-major: the row-major C = op(A)·op(B) is the column-major
    // Cᵀ = op(B)ᵀ·op(A)ᵀ, whose operands are B and A with their own row strides as leading
    // dimensions and the same transposes.
    let (alpha, beta) = (s.alpha, s.beta);
    let blas = g.blas()?;
    // SAFETY: the extents of A, B and C were checked above for this shape, strides and batch;
    // alpha and beta are f32 as CUBLAS_COMPUTE_32F requires; the handle runs on g's stream.
    unsafe {
        cudarc::cublas::result::gemm_strided_batched_ex(
            *blas.handle(),
            op(s.trans_b),
            op(s.trans_a),
            int("n", s.n)?,
            int("m", s.m)?,
            int("k", s.k)?,
            (&alpha) as *const f32 as *const c_void,
            b.addr as *const c_void,
            data_type,
            int("ldb", s.ldb)?,
            s.stride_b as i64,
            a.addr as *const c_void,
            data_type,
            int("lda", s.lda)?,
            s.stride_a as i64,
            (&beta) as *const f32 as *const c_void,
            c.addr as *mut c_void,
            data_type,
            int("ldc", s.ldc)?,
            s.stride_c as i64,
            int("batch", s.batch)?,
            cublasComputeType_t::CUBLAS_COMPUTE_32F,
            cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
        )
    }
    .map_err(|e| Error::msg(format!("{OP}: cuBLAS failed: {e:?}")))
}
