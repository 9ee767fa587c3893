// Reductions over the middle axis of an [outer, n, inner] row-major block: sum / mean
// (sum × scale) and max with argmax, plus a deterministic two-stage sum of a whole
// buffer (sum_all / mean_all). CPU twins: src/backend/cpu/reduce.rs (sum_rows,
// max_rows over [outer, n] rows, i.e. inner = 1) driven by src/ops/reduce.rs (which
// permutes the reduced dims last; here inner > 1 reads the middle axis in place).
// Accumulation is f32 (the CPU accumulates sums in f64: compare with an f32
// tolerance); every reduction order is fixed by the launch shape, so results are
// bitwise reproducible for a given launch.
#include "common.cuh"

namespace rd {

using medsyn::aligned16;
using medsyn::block_sum;
using medsyn::from_f32;
using medsyn::group_sum;
using medsyn::load_pack;
using medsyn::neg_inf;
using medsyn::Pack;
using medsyn::to_f32;

// Argmax order of src/backend/cpu/reduce.rs::max_rows, made symmetric so that any
// combination order gives the sequential answer: a NaN beats a number (the first
// NaN wins), else the larger value, else the lower index.
__device__ __forceinline__ bool beats(float v2, long long i2, float v1, long long i1) {
    const bool n1 = isnan(v1), n2 = isnan(v2);
    if (n1 != n2) return n2;
    if (!n1 && v2 != v1) return v2 > v1;
    return i2 < i1;
}
// An empty candidate: loses to every real (value, index) pair.
constexpr long long NO_INDEX = 0x7fffffffffffffffLL;

__device__ __forceinline__ void warp_argmax(float& v, long long& i) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        const float v2 = __shfl_xor_sync(0xffffffffu, v, o);
        const long long i2 = __shfl_xor_sync(0xffffffffu, i, o);
        if (beats(v2, i2, v, i)) { v = v2; i = i2; }
    }
}

// group_sum's argmax form; sv/si hold 32 entries each.
__device__ __forceinline__ void group_argmax(float& v, long long& i, float* sv, long long* si) {
    medsyn::group_reduce2(v, i, sv, si, neg_inf(), NO_INDEX, [&] { warp_argmax(v, i); });
}

}  // namespace rd

// ---------------------------------------------------------------------------------
// inner == 1: rows [rows, n], reduced along n.

// y[r] = scale · Σ_j x[r, j]. Block (BX, BY): BX threads (multiple of 32) share a row,
// BY rows per block, BX·BY <= 1024; grid any (block-stride over rows); static smem 128 B.
template <typename T>
__device__ void sum_rows_impl(long long rows, long long n, float scale, const T* __restrict__ x,
                              T* __restrict__ y) {
    __shared__ float scratch[32];
    if (blockDim.x % 32 != 0) return;  // launch error (warp reductions need whole warps)
    constexpr int V = rd::Pack<T>::N;
    const bool packed = rd::aligned16(x) && n % V == 0;
    medsyn::for_each_row_group(rows, [&](long long row) {
        float acc = 0.0f;
        if (row < rows) {
            const T* xr = x + row * n;
            if (packed) {
                for (long long p = threadIdx.x; p < n / V; p += blockDim.x) {
                    const rd::Pack<T> a = rd::load_pack(xr + p * V);
#pragma unroll
                    for (int k = 0; k < V; ++k) acc += rd::to_f32(a.v[k]);
                }
            } else {
                for (long long j = threadIdx.x; j < n; j += blockDim.x) acc += rd::to_f32(xr[j]);
            }
        }
        const float s = rd::group_sum(acc, scratch);
        if (row < rows && threadIdx.x == 0) y[row] = rd::from_f32<T>(s * scale);
    });
}
MEDSYN_DTYPES(sum_rows, (long long rows, long long n, float scale, const T* __restrict__ x, T* __restrict__ y),
              (rows, n, scale, x, y))

// y[r] = max_j x[r, j], idx[r] = its index (first maximum; first NaN wins); y or idx
// may be null. n >= 1. Block (BX, BY) as sum_rows; static smem 384 B.
template <typename T>
__device__ void max_rows_impl(long long rows, long long n, const T* __restrict__ x, T* __restrict__ y,
                              long long* __restrict__ idx) {
    __shared__ float sv[32];
    __shared__ long long si[32];
    if (blockDim.x % 32 != 0) return;  // launch error (warp reductions need whole warps)
    medsyn::for_each_row_group(rows, [&](long long row) {
        float v = rd::neg_inf();
        long long i = rd::NO_INDEX;
        if (row < rows) {
            const T* xr = x + row * n;
            for (long long j = threadIdx.x; j < n; j += blockDim.x) {
                const float c = rd::to_f32(xr[j]);
                if (rd::beats(c, j, v, i)) { v = c; i = j; }
            }
        }
        rd::group_argmax(v, i, sv, si);
        if (row < rows && threadIdx.x == 0) {
            if (y) y[row] = rd::from_f32<T>(v);
            if (idx) idx[row] = i;
        }
    });
}
MEDSYN_DTYPES(max_rows,
              (long long rows, long long n, const T* __restrict__ x, T* __restrict__ y, long long* __restrict__ idx),
              (rows, n, x, y, idx))

// ---------------------------------------------------------------------------------
// inner > 1: [outer, n, inner] reduced along n, read in place (coalesced along inner).

// Partial or final column sums. Block (32, BY), BY in 1..32: threadIdx.x = one of 32
// consecutive columns i, threadIdx.y strides over n. grid.x: (outer · ceil(inner/32))
// tiles, block-strided; grid.y = splits (<= 65535): split s covers n-range
// [s·chunk, min(n, (s+1)·chunk)), chunk = ceil(n / splits). With partial == null
// (splits must be 1) writes y[o, i] = scale · sum; else writes f32
// partial[(s·outer + o)·inner + i] and sum_cols_finish adds the splits.
// Static smem 32·33·4 = 4224 B.
template <typename T>
__device__ void sum_cols_impl(long long outer, long long n, long long inner, float scale,
                              const T* __restrict__ x, float* __restrict__ partial, T* __restrict__ y) {
    __shared__ float tile[32][33];
    if (blockDim.x != 32 || blockDim.y > 32) return;  // launch error: the tile is 32 × 32
    if (gridDim.y > 1 && !partial) return;  // launch error: splits need the partial buffer
    const long long tiles_per_outer = (inner + 31) / 32;
    const long long tiles = outer * tiles_per_outer;
    const long long splits = gridDim.y, s = blockIdx.y;
    const long long chunk = (n + splits - 1) / splits;
    const long long j0 = s * chunk, j1 = min(n, j0 + chunk);
    for (long long t = blockIdx.x; t < tiles; t += gridDim.x) {
        const long long o = t / tiles_per_outer;
        const long long i = (t % tiles_per_outer) * 32 + threadIdx.x;
        float acc = 0.0f;
        if (i < inner) {
            const T* xo = x + o * n * inner + i;
            for (long long j = j0 + threadIdx.y; j < j1; j += blockDim.y) acc += rd::to_f32(xo[j * inner]);
        }
        __syncthreads();  // the previous tile's readers are done with `tile`
        tile[threadIdx.y][threadIdx.x] = acc;
        __syncthreads();
        if (threadIdx.y == 0 && i < inner) {
            float sum = 0.0f;
            for (int r = 0; r < (int)blockDim.y; ++r) sum += tile[r][threadIdx.x];
            if (partial) partial[(s * outer + o) * inner + i] = sum;
            else y[o * inner + i] = rd::from_f32<T>(sum * scale);
        }
    }
}
MEDSYN_DTYPES(sum_cols,
              (long long outer, long long n, long long inner, float scale, const T* __restrict__ x,
               float* __restrict__ partial, T* __restrict__ y),
              (outer, n, inner, scale, x, partial, y))

// y[k] = scale · Σ_s partial[s·count + k] (splits added in order) for k < count
// (count = outer·inner); grid-stride, any 1-D grid/block, no smem.
template <typename T>
__device__ void sum_cols_finish_impl(long long count, int splits, float scale, const float* __restrict__ partial,
                                     T* __restrict__ y) {
    for (long long k = medsyn::global_tid(); k < count; k += medsyn::grid_stride()) {
        float sum = 0.0f;
        for (int s = 0; s < splits; ++s) sum += partial[(long long)s * count + k];
        y[k] = rd::from_f32<T>(sum * scale);
    }
}
MEDSYN_DTYPES(sum_cols_finish,
              (long long count, int splits, float scale, const float* __restrict__ partial, T* __restrict__ y),
              (count, splits, scale, partial, y))

// y[o, i] = max_j x[o, j, i], idx[o, i] = its j (first maximum; first NaN wins); y or
// idx may be null; n >= 1. Block (32, BY) and grid.x as sum_cols (grid.y = 1);
// static smem 32·33·(4 + 8) = 12672 B.
template <typename T>
__device__ void max_cols_impl(long long outer, long long n, long long inner, const T* __restrict__ x,
                              T* __restrict__ y, long long* __restrict__ idx) {
    __shared__ float tv[32][33];
    __shared__ long long ti[32][33];
    if (blockDim.x != 32 || blockDim.y > 32) return;  // launch error: the tile is 32 × 32
    const long long tiles_per_outer = (inner + 31) / 32;
    const long long tiles = outer * tiles_per_outer;
    for (long long t = blockIdx.x; t < tiles; t += gridDim.x) {
        const long long o = t / tiles_per_outer;
        const long long i = (t % tiles_per_outer) * 32 + threadIdx.x;
        float v = rd::neg_inf();
        long long a = rd::NO_INDEX;
        if (i < inner) {
            const T* xo = x + o * n * inner + i;
            for (long long j = threadIdx.y; j < n; j += blockDim.y) {
                const float c = rd::to_f32(xo[j * inner]);
                if (rd::beats(c, j, v, a)) { v = c; a = j; }
            }
        }
        __syncthreads();
        tv[threadIdx.y][threadIdx.x] = v;
        ti[threadIdx.y][threadIdx.x] = a;
        __syncthreads();
        if (threadIdx.y == 0 && i < inner) {
            for (int r = 1; r < (int)blockDim.y; ++r)
                if (rd::beats(tv[r][threadIdx.x], ti[r][threadIdx.x], v, a)) {
                    v = tv[r][threadIdx.x];
                    a = ti[r][threadIdx.x];
                }
            if (y) y[o * inner + i] = rd::from_f32<T>(v);
            if (idx) idx[o * inner + i] = a;
        }
    }
}
MEDSYN_DTYPES(max_cols,
              (long long outer, long long n, long long inner, const T* __restrict__ x, T* __restrict__ y,
               long long* __restrict__ idx),
              (outer, n, inner, x, y, idx))

// ---------------------------------------------------------------------------------
// Whole-buffer sum in two deterministic stages.

// partial[b] = Σ of x over the grid-stride share of block b. 1-D block (multiple of
// 32, <= 1024), grid = P blocks (the number of partials); static smem 128 B.
template <typename T>
__device__ void sum_all_partial_impl(long long n, const T* __restrict__ x, float* __restrict__ partial) {
    __shared__ float scratch[32];
    if (blockDim.x % 32 != 0) return;  // launch error (warp reductions need whole warps)
    constexpr int V = rd::Pack<T>::N;
    const long long tid = medsyn::global_tid(), stride = medsyn::grid_stride();
    float acc = 0.0f;
    long long done = 0;
    if (rd::aligned16(x)) {
        const long long packs = n / V;
        for (long long p = tid; p < packs; p += stride) {
            const rd::Pack<T> a = rd::load_pack(x + p * V);
#pragma unroll
            for (int k = 0; k < V; ++k) acc += rd::to_f32(a.v[k]);
        }
        done = packs * V;
    }
    for (long long i = done + tid; i < n; i += stride) acc += rd::to_f32(x[i]);
    const float s = rd::block_sum(acc, scratch);
    if (threadIdx.x == 0) partial[blockIdx.x] = s;
}
MEDSYN_DTYPES(sum_all_partial, (long long n, const T* __restrict__ x, float* __restrict__ partial), (n, x, partial))

// y[0] = scale · Σ_b partial[b] for b < parts. Grid 1, 1-D block (multiple of 32,
// <= 1024); static smem 128 B.
template <typename T>
__device__ void sum_all_finish_impl(int parts, float scale, const float* __restrict__ partial, T* __restrict__ y) {
    __shared__ float scratch[32];
    if (blockDim.x % 32 != 0) return;  // launch error (warp reductions need whole warps)
    float acc = 0.0f;
    for (int b = threadIdx.x; b < parts; b += blockDim.x) acc += partial[b];
    const float s = rd::block_sum(acc, scratch);
    if (threadIdx.x == 0) y[0] = rd::from_f32<T>(s * scale);
}
MEDSYN_DTYPES(sum_all_finish, (int parts, float scale, const float* __restrict__ partial, T* __restrict__ y),
              (parts, scale, partial, y))

/*
Launch contract (reduce.cu)
===========================
Layout: x is contiguous [outer, n, inner] (row-major); the reduced axis is n. The
Rust side maps a reduction over dims to this form when the reduced dims are
contiguous and adjacent (else it permutes + copies first, as src/ops/reduce.rs does).
`scale` is (f32)(1/n) for mean, 1.0 for sum (the CPU multiplies the f32 sum by
T::from_f64(1/n)). Outputs are contiguous [outer, inner] in T; argmax as int64.
Suffix _f32/_f16/_bf16 = storage type T (accumulation is f32).

sum_rows_T(i64 rows, i64 n, float scale, const T* x, T* y)        (inner == 1)
    y[r] = scale·Σ_j x[r·n + j]. block (BX, BY): BX multiple of 32 (32 for n <= 1024
    → one warp per row, else 256..1024), BX·BY <= 1024 (e.g. (32, 8) or (256, 1));
    grid = min(ceil(rows/BY), 65535·k) (any; rows are block-strided); static smem
    128 B. Mirrors cpu::reduce::sum_rows (+ mean's scale in ops::reduce::sum_impl).
max_rows_T(i64 rows, i64 n, const T* x, T* y (nullable), i64* idx (nullable))
    max and argmax per row, n >= 1; same launch as sum_rows; static smem 384 B.
    Mirrors cpu::reduce::max_rows (first maximum; a NaN wins, the first NaN);
    bit-identical (no arithmetic).
sum_cols_T(i64 outer, i64 n, i64 inner, float scale, const T* x, float* partial, T* y)
    block (32, BY) with BY in 1..32 (e.g. (32, 8)); grid (G, splits): G = any
    (min(outer·ceil(inner/32), 65535·k)), splits in 1..65535. splits == 1 and
    partial == null: writes y. splits > 1: partial = f32 scratch of
    splits·outer·inner floats, y unused (may be null), then run sum_cols_finish_T.
    Static smem 4224 B. Mirrors sum_rows over the permuted [outer·inner, n].
sum_cols_finish_T(i64 count = outer·inner, int splits, float scale, const float* partial, T* y)
    1-D grid-stride, any grid/block (e.g. 256 threads), no smem.
max_cols_T(i64 outer, i64 n, i64 inner, const T* x, T* y (nullable), i64* idx (nullable))
    block (32, BY), BY in 1..32; grid.x any, grid.y = 1; static smem 12672 B.
    Mirrors max_rows over the permuted layout (idx = position along n).
sum_all_partial_T(i64 n, const T* x, float* partial)
    1-D block B (multiple of 32, <= 1024; 256 or 512), grid P (e.g. min(1024,
    ceil(n / (B·16)))), partial = P floats; static smem 128 B.
sum_all_finish_T(int parts = P, float scale, const float* partial, T* y)
    grid 1, 1-D block (multiple of 32, <= 1024; 256); static smem 128 B; y[0] =
    scale·Σ partial. Together: Tensor::sum_all / mean_all (ops::reduce::sum_impl over
    every dim). Deterministic for a fixed (P, B); a different P changes the rounding.
*/
