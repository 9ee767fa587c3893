// GEGLU over rows [h | gate] of width 2·d: y = h·gelu(gate) with the exact (erf) GELU,
// and its backward dx = [dy·gelu(gate) | dy·h·gelu'(gate)]. CPU twin:
// src/backend/cpu/geglu.rs (geglu_forward, geglu_backward) through vmath's f32 forms
// gelu(g) = g·½erfc(−g/√2), gelu'(g) = Φ(g) + g·φ(g). Compute f32.
#include "common.cuh"

namespace gg {

using medsyn::aligned16;
using medsyn::Chunk;
using medsyn::FRAC_1_SQRT_2;
using medsyn::from_f32;
using medsyn::INV_SQRT_2PI;
using medsyn::load_chunk;
using medsyn::store_chunk;
using medsyn::to_f32;

// Φ(g) (vmath's erfc form) and φ(g).
__device__ __forceinline__ float cdf(float g) { return 0.5f * erfcf(-g * FRAC_1_SQRT_2); }
__device__ __forceinline__ float pdf(float g) { return INV_SQRT_2PI * expf(-0.5f * g * g); }

template <typename T, int P>
__device__ __forceinline__ void forward_rows(long long rows, long long d, const T* __restrict__ x, T* __restrict__ y) {
    for (long long r = medsyn::first_row(); r < rows; r += medsyn::row_stride()) {
        const T* h = x + r * 2 * d;
        const T* gate = h + d;
        T* yr = y + r * d;
        for (long long j = (long long)threadIdx.x * P; j < d; j += (long long)blockDim.x * P) {
            const Chunk<T, P> hc = load_chunk<T, P>(h + j), gc = load_chunk<T, P>(gate + j);
            Chunk<T, P> o;
#pragma unroll
            for (int k = 0; k < P; ++k) {
                const float g = to_f32(gc.v[k]);
                o.v[k] = from_f32<T>(to_f32(hc.v[k]) * (g * cdf(g)));
            }
            store_chunk<T, P>(yr + j, o);
        }
    }
}

template <typename T, int P>
__device__ __forceinline__ void backward_rows(long long rows, long long d, const T* __restrict__ x,
                                              const T* __restrict__ dy, T* __restrict__ dx) {
    for (long long r = medsyn::first_row(); r < rows; r += medsyn::row_stride()) {
        const T* h = x + r * 2 * d;
        const T* gate = h + d;
        const T* dyr = dy + r * d;
        T* dh = dx + r * 2 * d;
        T* dgate = dh + d;
        for (long long j = (long long)threadIdx.x * P; j < d; j += (long long)blockDim.x * P) {
            const Chunk<T, P> hc = load_chunk<T, P>(h + j), gc = load_chunk<T, P>(gate + j);
            const Chunk<T, P> yc = load_chunk<T, P>(dyr + j);
            Chunk<T, P> oh, og;
#pragma unroll
            for (int k = 0; k < P; ++k) {
                const float g = to_f32(gc.v[k]), c = cdf(g), p = pdf(g), dv = to_f32(yc.v[k]);
                oh.v[k] = from_f32<T>(dv * g * c);
                og.v[k] = from_f32<T>(dv * to_f32(hc.v[k]) * (c + g * p));
            }
            store_chunk<T, P>(dh + j, oh);
            store_chunk<T, P>(dgate + j, og);
        }
    }
}

}  // namespace gg

// y [rows, d] = h·gelu(gate) from x [rows, 2d] = [h | gate]. Block (BX, BY): BX threads
// across a row's columns, BY rows per block (any shape, BX·BY <= 1024); grid any
// (block-strided over rows); no smem. 16-byte packs when x, y are aligned and d is a
// multiple of 16/sizeof(T).
template <typename T>
__device__ void geglu_impl(long long rows, long long d, const T* __restrict__ x, T* __restrict__ y) {
    constexpr int V = medsyn::Pack<T>::N;
    if (gg::aligned16(x) && gg::aligned16(y) && d % V == 0)
        gg::forward_rows<T, V>(rows, d, x, y);
    else
        gg::forward_rows<T, 1>(rows, d, x, y);
}
MEDSYN_DTYPES(geglu, (long long rows, long long d, const T* __restrict__ x, T* __restrict__ y), (rows, d, x, y))

// dx [rows, 2d] = [dy·gelu(gate) | dy·h·(Φ(gate) + gate·φ(gate))] from x and dy [rows, d].
// Launch as geglu; no smem.
template <typename T>
__device__ void geglu_backward_impl(long long rows, long long d, const T* __restrict__ x, const T* __restrict__ dy,
                                    T* __restrict__ dx) {
    constexpr int V = medsyn::Pack<T>::N;
    if (gg::aligned16(x) && gg::aligned16(dy) && gg::aligned16(dx) && d % V == 0)
        gg::backward_rows<T, V>(rows, d, x, dy, dx);
    else
        gg::backward_rows<T, 1>(rows, d, x, dy, dx);
}
MEDSYN_DTYPES(geglu_backward,
              (long long rows, long long d, const T* __restrict__ x, const T* __restrict__ dy, T* __restrict__ dx),
              (rows, d, x, dy, dx))

/*
Launch contract (geglu.cu)
==========================
Layout: x and dx contiguous [rows, 2d] (each row = [h (d) | gate (d)], as
Tensor::geglu's last dim of 2d), y and dy contiguous [rows, d]. Suffix = storage type
T (compute f32). Outputs must not alias inputs.

geglu_T(i64 rows, i64 d, const T* x, T* y)
    block (BX, BY) with BX·BY <= 1024: BX = min(256, roundup32(ceil(d / P))) with
    P = 16/sizeof(T) when d % P == 0 (else P = 1), BY = max(1, 256 / BX); grid =
    min(ceil(rows/BY), 65535·k) (rows are block-strided; any grid works); no smem.
    Mirrors cpu::geglu::geglu_forward (vmath::geglu_into).
geglu_backward_T(i64 rows, i64 d, const T* x, const T* dy, T* dx)
    launch as geglu_T; no smem. Mirrors cpu::geglu::geglu_backward
    (vmath::geglu_backward_into).
CUDA's erfcf/expf differ from vmath's polynomial erfc/exp by a few ulp: compare with
an f32 tolerance (~1e-6 relative).
*/
