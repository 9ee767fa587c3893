// Strided copy: dst (any strided view) = src (any strided view of the same shape), element
// for element, by element size (1, 2, 4 or 8 bytes: every dtype, no conversion). What
// contiguous() of a permuted / narrowed / broadcast view, cat (each input into a narrowed
// slice of the output) and set_data need on the device. CPU twin: CpuStorage::gather
// (src/tensor/storage.rs) and scatter_into (src/tensor/layout.rs).
#include "common.cuh"

// The most dimensions a copy takes (the launch side merges dims first; see the contract).
#define MEDSYN_COPY_MAX_RANK 8

// Shape and strides (in elements, >= 0; 0 broadcasts) of both views, passed by value;
// entries at index >= rank are not read.
struct CopyDims {
    long long shape[MEDSYN_COPY_MAX_RANK];
    long long src_stride[MEDSYN_COPY_MAX_RANK];
    long long dst_stride[MEDSYN_COPY_MAX_RANK];
};

// dst[Σ c_k·dst_stride[k]] = src[Σ c_k·src_stride[k]] for every multi-index c of `shape`,
// c taken from the linear index i < n in row-major order (the last dim fastest).
// Grid-stride over i, any grid / 1-D block; no smem. rank == 1 with both strides 1 is a
// plain copy.
template <typename T>
__device__ __forceinline__ void strided_copy_impl(long long n, int rank, const CopyDims& d, const T* __restrict__ src,
                                                  T* __restrict__ dst) {
    const long long first = medsyn::global_tid(), step = medsyn::grid_stride();
    if (rank == 1 && d.src_stride[0] == 1 && d.dst_stride[0] == 1) {
        for (long long i = first; i < n; i += step) dst[i] = src[i];
        return;
    }
    if (rank < 1 || rank > MEDSYN_COPY_MAX_RANK) return;  // outside the contract: write nothing
    for (long long i = first; i < n; i += step) {
        long long rem = i, s = 0, o = 0;
        // Innermost dim first; unrolled so that every array index is a constant (no local
        // memory copy of the parameter struct). Dim 0 takes the remainder as it is
        // (i < n = Π shape, so rem < shape[0] there).
#pragma unroll
        for (int k = MEDSYN_COPY_MAX_RANK - 1; k >= 1; --k) {
            if (k < rank) {
                const long long c = rem % d.shape[k];
                rem /= d.shape[k];
                s += c * d.src_stride[k];
                o += c * d.dst_stride[k];
            }
        }
        s += rem * d.src_stride[0];
        o += rem * d.dst_stride[0];
        dst[o] = src[s];
    }
}

#define MEDSYN_STRIDED_COPY(SUFFIX, TYPE)                                                                       \
    extern "C" __global__ void __launch_bounds__(256)                                                          \
        strided_copy_##SUFFIX(long long n, int rank, CopyDims dims, const TYPE* __restrict__ src,             \
                              TYPE* __restrict__ dst) {                                                        \
        strided_copy_impl<TYPE>(n, rank, dims, src, dst);                                                      \
    }

// strided_copy_b1: 1-byte elements (u8); grid-stride, block <= 256 (256), no smem.
MEDSYN_STRIDED_COPY(b1, unsigned char)
// strided_copy_b2: 2-byte elements (f16, bf16); grid-stride, block <= 256 (256), no smem.
MEDSYN_STRIDED_COPY(b2, unsigned short)
// strided_copy_b4: 4-byte elements (f32, i32); grid-stride, block <= 256 (256), no smem.
MEDSYN_STRIDED_COPY(b4, unsigned int)
// strided_copy_b8: 8-byte elements (f64, i64); grid-stride, block <= 256 (256), no smem.
MEDSYN_STRIDED_COPY(b8, unsigned long long)

/*
Launch contract (copy.cu)
=========================
strided_copy_bK(i64 n, int rank, CopyDims dims, const TK* src, TK* dst),
    K = element size in bytes: b1 (u8), b2 (f16, bf16), b4 (f32, i32), b8 (f64, i64);
    TK = unsigned char / unsigned short / unsigned int / unsigned long long (bits only,
    no conversion: the bytes are copied as they are, NaN payloads included).
    dims (by value, 192 bytes, 8-byte aligned, no padding) = struct { i64 shape[8];
    i64 src_stride[8]; i64 dst_stride[8]; }; the Rust twin is a #[repr(C)] struct of
    three [i64; 8] (backend::cuda::copy). Entries at index >= rank are ignored (pass 0).
    n = Π shape[0..rank] (elements), 1 <= rank <= 8, shape[k] >= 1, strides >= 0 in
    elements (0 broadcasts a source dim). src and dst are already advanced by their
    views' storage offsets. For every multi-index c (row-major order of the linear index):
        dst[Σ c_k·dst_stride[k]] = src[Σ c_k·src_stride[k]].
    Requirements (checked by the launch side, not by the kernel): both views in bounds of
    their buffers; the dst view does not alias itself (no 0 stride on a dst dim of size
    > 1, no overlapping strides); src and dst do not overlap (__restrict__). rank == 1
    with both strides 1 is a plain copy. Outside 1..=8 the kernel writes nothing.
    Grid-stride: block 256 (at most 256: __launch_bounds__), grid = min(ceil(n/256),
    16·SMs); no shared memory; n == 0: nothing to launch.
    Mirrors CpuStorage::gather (src view → contiguous) followed by scatter_into (contiguous
    → dst view); bit-exact.
    The launch side (backend::cuda::copy::strided_copy) first merges dims that are
    contiguous with each other in both views and drops size-1 dims (merged_dims), so
    most copies run at rank 1-3.
*/
