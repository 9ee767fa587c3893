// Nearest-neighbour 2-D upsampling by an integer factor s over [planes, h, w] planes
// (out[p, y, x] = in[p, y / s, x / s]) and its backward (each input pixel receives the
// sum of its s×s output block). CPU twin: src/backend/cpu/pool.rs
// (upsample_nearest2d, upsample_nearest2d_backward), used by Tensor::upsample_nearest2d.
#include "common.cuh"

// out [planes, h·s, w·s] from x [planes, h, w]. Output row R (of planes·h·s) copies
// source row R / s; a thread takes one source column and writes its s outputs.
// Block (BX, BY): BX threads across columns, BY output rows per block (BX·BY <= 1024);
// grid any (block-strided over output rows); no smem.
template <typename T>
__device__ void upsample_nearest2d_impl(long long planes, long long h, long long w, int s, const T* __restrict__ x,
                                        T* __restrict__ out) {
    if (s < 1) return;  // a launch error; never divide by zero
    const long long rows = planes * h * s, ow = w * s;
    for (long long row = medsyn::first_row(); row < rows; row += medsyn::row_stride()) {
        const T* src = x + (row / s) * w;
        T* dst = out + row * ow;
        for (long long c = threadIdx.x; c < w; c += blockDim.x) {
            const T v = src[c];
            for (int k = 0; k < s; ++k) dst[c * s + k] = v;
        }
    }
}
MEDSYN_DTYPES(upsample_nearest2d,
              (long long planes, long long h, long long w, int s, const T* __restrict__ x, T* __restrict__ out),
              (planes, h, w, s, x, out))

// dx [planes, h, w] from dy [planes, h·s, w·s]: dx[p, y, c] = Σ_{r<s} (Σ_{k<s}
// dy[p, y·s + r, c·s + k]), each inner block row summed first, then the rows added in
// order, as the CPU does. Block (BX, BY) over input rows (planes·h) × columns; grid
// any (block-strided); no smem.
template <typename T>
__device__ void upsample_nearest2d_backward_impl(long long planes, long long h, long long w, int s,
                                                 const T* __restrict__ dy, T* __restrict__ dx) {
    if (s < 1) return;
    const long long rows = planes * h, ow = w * s;
    for (long long row = medsyn::first_row(); row < rows; row += medsyn::row_stride()) {
        const T* g = dy + row * s * ow;  // first of the s output rows of input row `row`
        T* d = dx + row * w;
        for (long long c = threadIdx.x; c < w; c += blockDim.x) {
            float acc = 0.0f;
            for (int r = 0; r < s; ++r) {
                const T* gr = g + r * ow + c * s;
                float block = medsyn::to_f32(gr[0]);
                for (int k = 1; k < s; ++k) block += medsyn::to_f32(gr[k]);
                acc += block;
            }
            d[c] = medsyn::from_f32<T>(acc);
        }
    }
}
MEDSYN_DTYPES(upsample_nearest2d_backward,
              (long long planes, long long h, long long w, int s, const T* __restrict__ dy, T* __restrict__ dx),
              (planes, h, w, s, dy, dx))

/*
Launch contract (upsample.cu)
=============================
Layout: x, dx contiguous [planes, h, w] (planes = N·C); out, dy contiguous
[planes, h·s, w·s]; s >= 1. Suffix = storage type T (compute f32 in the backward).

upsample_nearest2d_T(i64 planes, i64 h, i64 w, int s, const T* x, T* out)
    block (BX, BY): BX = min(256, roundup32(w)), BY = max(1, 256 / BX); grid =
    min(ceil(planes·h·s / BY), 65535·k) (rows block-strided; any grid works); no smem.
    Bit-identical to cpu::pool::upsample_nearest2d (a copy).
upsample_nearest2d_backward_T(i64 planes, i64 h, i64 w, int s, const T* dy, T* dx)
    block (BX, BY) as above; grid = min(ceil(planes·h / BY), 65535·k); no smem.
    Mirrors cpu::pool::upsample_nearest2d_backward in summation order (bit-identical
    in f32 up to the sign of a zero sum).
*/
