// LayerNorm over rows of n elements with optional elementwise weight/bias [n]:
// forward saving mean and rstd (f32, one per row) and the backward (dx per row;
// dweight/dbias as deterministic column sums in two stages, no atomics). CPU twin:
// src/backend/cpu/norm.rs (layer_norm, layer_norm_backward): biased variance,
// rstd = 1/sqrt(var + eps), y = (x − mean)·rstd·w + b. Statistics are two-pass
// (mean, then Σ(x − mean)²) in f32 (the CPU uses f64).
#include "common.cuh"

namespace ln {

using medsyn::from_f32;
using medsyn::group_sum;
using medsyn::group_sum2;
using medsyn::load_or;
using medsyn::to_f32;

}  // namespace ln

// y[r] = (x[r] − mean_r)·rstd_r·w + b over rows r of n elements; writes mean[r] and
// rstd[r] (f32) when those pointers are non-null; weight/bias may be null (1 and 0).
// Block (BX, BY): BX threads (multiple of 32) per row, BY rows per block, BX·BY <= 1024;
// grid any (block-strided over rows); static smem 128 B.
template <typename T>
__device__ void layer_norm_impl(long long rows, long long n, float eps, const T* __restrict__ x,
                                const T* __restrict__ weight, const T* __restrict__ bias, T* __restrict__ y,
                                float* __restrict__ mean_out, float* __restrict__ rstd_out) {
    __shared__ float scratch[32];
    if (blockDim.x % 32 != 0) return;  // launch error (warp reductions need whole warps)
    const float inv_n = 1.0f / (float)(n > 0 ? n : 1);
    medsyn::for_each_row_group(rows, [&](long long row) {
        const bool valid = row < rows;
        const T* xr = x + (valid ? row : 0) * n;
        float acc = 0.0f;
        if (valid)
            for (long long j = threadIdx.x; j < n; j += blockDim.x) acc += ln::to_f32(xr[j]);
        const float mu = ln::group_sum(acc, scratch) * inv_n;
        acc = 0.0f;
        if (valid)
            for (long long j = threadIdx.x; j < n; j += blockDim.x) {
                const float d = ln::to_f32(xr[j]) - mu;
                acc += d * d;
            }
        const float var = ln::group_sum(acc, scratch) * inv_n;
        const float rs = 1.0f / sqrtf(var + eps);
        if (!valid) return;  // no barrier below: safe to skip
        if (threadIdx.x == 0) {
            if (mean_out) mean_out[row] = mu;
            if (rstd_out) rstd_out[row] = rs;
        }
        T* yr = y + row * n;
        for (long long j = threadIdx.x; j < n; j += blockDim.x) {
            const float v = (ln::to_f32(xr[j]) - mu) * rs * ln::load_or(weight, j, 1.0f) + ln::load_or(bias, j, 0.0f);
            yr[j] = ln::from_f32<T>(v);
        }
    });
}
MEDSYN_DTYPES(layer_norm,
              (long long rows, long long n, float eps, const T* __restrict__ x, const T* __restrict__ weight,
               const T* __restrict__ bias, T* __restrict__ y, float* __restrict__ mean_out,
               float* __restrict__ rstd_out),
              (rows, n, eps, x, weight, bias, y, mean_out, rstd_out))

// dx[r] = rstd·(gw − mean(gw) − x̂·mean(gw·x̂)) with x̂ = (x − mean)·rstd, gw = g·w
// (weight may be null: w = 1), from the forward's mean/rstd. Launch as layer_norm;
// static smem 256 B.
template <typename T>
__device__ void layer_norm_backward_dx_impl(long long rows, long long n, const T* __restrict__ x,
                                            const T* __restrict__ g, const T* __restrict__ weight,
                                            const float* __restrict__ mean, const float* __restrict__ rstd,
                                            T* __restrict__ dx) {
    __shared__ float sa[32], sb[32];
    if (blockDim.x % 32 != 0) return;  // launch error (warp reductions need whole warps)
    const float inv_n = 1.0f / (float)(n > 0 ? n : 1);
    medsyn::for_each_row_group(rows, [&](long long row) {
        const bool valid = row < rows;
        const long long at = (valid ? row : 0) * n;
        const float mu = valid ? mean[row] : 0.0f, rs = valid ? rstd[row] : 0.0f;
        float s1 = 0.0f, s2 = 0.0f;
        if (valid)
            for (long long j = threadIdx.x; j < n; j += blockDim.x) {
                const float h = (ln::to_f32(x[at + j]) - mu) * rs;
                const float gw = ln::to_f32(g[at + j]) * ln::load_or(weight, j, 1.0f);
                s1 += gw;
                s2 += gw * h;
            }
        ln::group_sum2(s1, s2, sa, sb);
        if (!valid) return;
        const float m1 = s1 * inv_n, m2 = s2 * inv_n;
        for (long long j = threadIdx.x; j < n; j += blockDim.x) {
            const float h = (ln::to_f32(x[at + j]) - mu) * rs;
            const float gw = ln::to_f32(g[at + j]) * ln::load_or(weight, j, 1.0f);
            dx[at + j] = ln::from_f32<T>(rs * (gw - m1 - h * m2));
        }
    });
}
MEDSYN_DTYPES(layer_norm_backward_dx,
              (long long rows, long long n, const T* __restrict__ x, const T* __restrict__ g,
               const T* __restrict__ weight, const float* __restrict__ mean, const float* __restrict__ rstd,
               T* __restrict__ dx),
              (rows, n, x, g, weight, mean, rstd, dx))

// Column sums dweight[j] = Σ_r g·x̂, dbias[j] = Σ_r g over rows r (stage 1).
// Block (32, BY), BY in 1..32: threadIdx.x = one of 32 consecutive columns,
// threadIdx.y strides over rows. grid.x = ceil(n/32) column tiles (block-strided),
// grid.y = chunks (<= 65535): chunk c covers rows [c·per, min(rows, (c+1)·per)),
// per = ceil(rows/chunks). chunks == 1 and partial == null: writes dweight/dbias
// (either may be null) directly; else writes f32 partial[(c·2 + 0)·n + j] (Σ g·x̂)
// and partial[(c·2 + 1)·n + j] (Σ g), finished by layer_norm_backward_params_finish.
// Static smem 2·32·33·4 = 8448 B.
template <typename T>
__device__ void layer_norm_backward_params_impl(long long rows, long long n, const T* __restrict__ x,
                                                const T* __restrict__ g, const float* __restrict__ mean,
                                                const float* __restrict__ rstd, float* __restrict__ partial,
                                                T* __restrict__ dweight, T* __restrict__ dbias) {
    __shared__ float tw[32][33], tb[32][33];
    if (blockDim.x != 32 || blockDim.y > 32) return;  // launch error: the tile is 32 × 32
    if (gridDim.y > 1 && !partial) return;  // launch error: chunks need the partial buffer
    const long long chunks = gridDim.y, c = blockIdx.y;
    const long long per = (rows + chunks - 1) / chunks;
    const long long r0 = c * per, r1 = min(rows, r0 + per);
    const long long tiles = (n + 31) / 32;
    for (long long t = blockIdx.x; t < tiles; t += gridDim.x) {
        const long long j = t * 32 + threadIdx.x;
        float sw = 0.0f, sb = 0.0f;
        if (j < n)
            for (long long r = r0 + threadIdx.y; r < r1; r += blockDim.y) {
                const float gv = ln::to_f32(g[r * n + j]);
                sw += gv * ((ln::to_f32(x[r * n + j]) - mean[r]) * rstd[r]);
                sb += gv;
            }
        __syncthreads();  // previous tile's readers are done
        tw[threadIdx.y][threadIdx.x] = sw;
        tb[threadIdx.y][threadIdx.x] = sb;
        __syncthreads();
        if (threadIdx.y == 0 && j < n) {
            sw = 0.0f;
            sb = 0.0f;
            for (int k = 0; k < (int)blockDim.y; ++k) {
                sw += tw[k][threadIdx.x];
                sb += tb[k][threadIdx.x];
            }
            if (partial) {
                partial[(c * 2 + 0) * n + j] = sw;
                partial[(c * 2 + 1) * n + j] = sb;
            } else {
                if (dweight) dweight[j] = ln::from_f32<T>(sw);
                if (dbias) dbias[j] = ln::from_f32<T>(sb);
            }
        }
    }
}
MEDSYN_DTYPES(layer_norm_backward_params,
              (long long rows, long long n, const T* __restrict__ x, const T* __restrict__ g,
               const float* __restrict__ mean, const float* __restrict__ rstd, float* __restrict__ partial,
               T* __restrict__ dweight, T* __restrict__ dbias),
              (rows, n, x, g, mean, rstd, partial, dweight, dbias))

// Stage 2: dweight[j] = Σ_c partial[(c·2)·n + j], dbias[j] = Σ_c partial[(c·2+1)·n + j]
// (chunks added in order; either output may be null). 1-D grid-stride over n, any
// grid/block, no smem.
template <typename T>
__device__ void layer_norm_backward_params_finish_impl(long long n, int chunks, const float* __restrict__ partial,
                                                       T* __restrict__ dweight, T* __restrict__ dbias) {
    for (long long j = medsyn::global_tid(); j < n; j += medsyn::grid_stride()) {
        float sw = 0.0f, sb = 0.0f;
        for (int c = 0; c < chunks; ++c) {
            sw += partial[((long long)c * 2 + 0) * n + j];
            sb += partial[((long long)c * 2 + 1) * n + j];
        }
        if (dweight) dweight[j] = ln::from_f32<T>(sw);
        if (dbias) dbias[j] = ln::from_f32<T>(sb);
    }
}
MEDSYN_DTYPES(layer_norm_backward_params_finish,
              (long long n, int chunks, const float* __restrict__ partial, T* __restrict__ dweight,
               T* __restrict__ dbias),
              (n, chunks, partial, dweight, dbias))

/*
Launch contract (layer_norm.cu)
===============================
Layout: x, y, g, dx contiguous [rows, n] (rows = product of the leading dims);
weight, bias, dweight, dbias contiguous [n] in T; mean, rstd f32 [rows]. Suffix =
storage type T (compute f32). eps = (f32)eps. Outputs must not alias inputs.

layer_norm_T(i64 rows, i64 n, float eps, const T* x, const T* weight (nullable),
             const T* bias (nullable), T* y, float* mean (nullable), float* rstd (nullable))
    block (BX, BY), BX multiple of 32, BX·BY <= 1024: (32, 8) for n <= 1024 (a warp per
    row), (128, 1)..(512, 1) above; grid = min(ceil(rows/BY), 65535·k) (rows are
    block-strided; any grid works); static smem 128 B. mean/rstd are needed by the
    backward (pass null in inference). Mirrors cpu::norm::layer_norm.
layer_norm_backward_dx_T(i64 rows, i64 n, const T* x, const T* g, const T* weight (nullable),
                         const float* mean, const float* rstd, T* dx)
    launch as layer_norm_T; static smem 256 B. Only when dx is needed.
layer_norm_backward_params_T(i64 rows, i64 n, const T* x, const T* g, const float* mean,
                             const float* rstd, float* partial (nullable),
                             T* dweight (nullable), T* dbias (nullable))
    only when dweight or dbias is needed. block (32, 8); grid (min(ceil(n/32), 65535·k),
    chunks), chunks in 1..65535 chosen so that ceil(n/32)·chunks ≈ 4·SMs (e.g.
    chunks = min(ceil(rows/64), max(1, 4·SMs / ceil(n/32)))). chunks == 1: partial =
    null, writes dweight/dbias. chunks > 1: partial = f32 scratch of 2·chunks·n floats,
    then layer_norm_backward_params_finish_T. Static smem 8448 B.
layer_norm_backward_params_finish_T(i64 n, int chunks, const float* partial,
                                    T* dweight (nullable), T* dbias (nullable))
    1-D grid-stride over n (block 256, grid ceil(n/256)); no smem.
Together these mirror cpu::norm::layer_norm_backward (Needs x/weight/bias → which
kernels run and which pointers are null). Deterministic: fixed reduction orders, no
atomics (for a fixed launch shape).
*/
