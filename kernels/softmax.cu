// Softmax and log-softmax over the middle axis of an [outer, n, inner] row-major
// block, and the fused backward from the saved output. CPU twin:
// src/backend/cpu/softmax.rs (softmax, softmax_backward). The forward keeps a running
// (max, Σ exp(x − max)) per thread ("online softmax"), merges them across the row,
// then writes y = exp(x − max)/Σ or (x − max) − ln Σ: two reads of x, one write.
// Compute and accumulation in f32.
#include "common.cuh"

namespace sm {

using medsyn::from_f32;
using medsyn::group_sum;
using medsyn::neg_inf;
using medsyn::to_f32;

// exp(from − to) for a running max `from` raised to `to` (to >= from): 1 when both are
// −inf (a row that so far only holds −inf, e.g. masked entries, keeps its count and
// is zeroed once a finite max appears), NaN when both are +inf (as the CPU's
// exp(inf − inf) makes the whole row NaN).
__device__ __forceinline__ float rescale(float from, float to) {
    return (from == to && to == neg_inf()) ? 1.0f : expf(from - to);
}

// Add element x to the running (m, s).
__device__ __forceinline__ void online_add(float& m, float& s, float x) {
    if (x > m) {
        // x's own term exp(x − x): 1, or NaN for x = +inf (the CPU's row turns NaN).
        s = s * rescale(m, x) + (isinf(x) ? __int_as_float(0x7fffffff) : 1.0f);
        m = x;
    } else {
        s += rescale(x, m);  // x NaN: NaN, and the row turns NaN as on the CPU
    }
}

// Merge two running pairs (symmetric, so every lane of a butterfly gets the same bits).
__device__ __forceinline__ void online_merge(float& m, float& s, float m2, float s2) {
    const float mm = fmaxf(m, m2);
    s = s * rescale(m, mm) + s2 * rescale(m2, mm);
    m = mm;
}

// Merge the (m, s) pairs across a warp (butterfly: every lane gets the same bits).
__device__ __forceinline__ void warp_merge(float& m, float& s) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1)
        online_merge(m, s, __shfl_xor_sync(0xffffffffu, m, o), __shfl_xor_sync(0xffffffffu, s, o));
}

// Merge (m, s) over the row group; all get the result. blockDim.x multiple of 32,
// blockDim.x·blockDim.y <= 1024; scratch 2×32 floats.
__device__ __forceinline__ void group_merge(float& m, float& s, float* sm_m, float* sm_s) {
    medsyn::group_reduce2(m, s, sm_m, sm_s, neg_inf(), 0.0f, [&] { warp_merge(m, s); });
}

// The output of element x given the row's max m and sum s.
__device__ __forceinline__ float softmax_out(float x, float m, float inv_s, float log_s, bool log) {
    return log ? (x - m) - log_s : expf(x - m) * inv_s;
}

}  // namespace sm

// y = softmax (or log_softmax when `log`) of each row x[r, 0..n) (inner == 1).
// Block (BX, BY): BX threads (multiple of 32) per row, BY rows per block, BX·BY <= 1024
// (one warp per row for n <= 1024, e.g. (32, 8); else (256..1024, 1)); grid any
// (block-strided over rows); static smem 256 B.
template <typename T>
__device__ void softmax_rows_impl(long long rows, long long n, int log, const T* __restrict__ x,
                                  T* __restrict__ y) {
    __shared__ float sm_m[32], sm_s[32];
    if (blockDim.x % 32 != 0) return;  // launch error (warp reductions need whole warps)
    medsyn::for_each_row_group(rows, [&](long long row) {
        float m = sm::neg_inf(), s = 0.0f;
        if (row < rows) {
            const T* xr = x + row * n;
            for (long long j = threadIdx.x; j < n; j += blockDim.x) sm::online_add(m, s, sm::to_f32(xr[j]));
        }
        sm::group_merge(m, s, sm_m, sm_s);
        if (row < rows) {
            const T* xr = x + row * n;
            T* yr = y + row * n;
            const float inv_s = 1.0f / s, log_s = logf(s);
            for (long long j = threadIdx.x; j < n; j += blockDim.x)
                yr[j] = sm::from_f32<T>(sm::softmax_out(sm::to_f32(xr[j]), m, inv_s, log_s, log != 0));
        }
    });
}
MEDSYN_DTYPES(softmax_rows, (long long rows, long long n, int log, const T* __restrict__ x, T* __restrict__ y),
              (rows, n, log, x, y))

// Softmax over n of x [outer, n, inner] with inner > 1, read in place: one thread per
// (o, i) column, coalesced along inner. 1-D grid-stride over outer·inner, any
// grid/block, no smem.
template <typename T>
__device__ void softmax_cols_impl(long long outer, long long n, long long inner, int log,
                                  const T* __restrict__ x, T* __restrict__ y) {
    const long long cols = outer * inner;
    for (long long c = medsyn::global_tid(); c < cols; c += medsyn::grid_stride()) {
        const long long o = c / inner, i = c % inner;
        const T* xc = x + o * n * inner + i;
        T* yc = y + o * n * inner + i;
        float m = sm::neg_inf(), s = 0.0f;
        for (long long j = 0; j < n; ++j) sm::online_add(m, s, sm::to_f32(xc[j * inner]));
        const float inv_s = 1.0f / s, log_s = logf(s);
        for (long long j = 0; j < n; ++j)
            yc[j * inner] = sm::from_f32<T>(sm::softmax_out(sm::to_f32(xc[j * inner]), m, inv_s, log_s, log != 0));
    }
}
MEDSYN_DTYPES(softmax_cols,
              (long long outer, long long n, long long inner, int log, const T* __restrict__ x, T* __restrict__ y),
              (outer, n, inner, log, x, y))

// Backward from the saved output y and the incoming gradient g, per row (inner == 1):
// softmax dx = y·(g − Σ g·y); log-softmax dx = g − exp(y)·Σ g. Launch as softmax_rows;
// static smem 128 B.
template <typename T>
__device__ void softmax_backward_rows_impl(long long rows, long long n, int log, const T* __restrict__ y,
                                           const T* __restrict__ g, T* __restrict__ dx) {
    __shared__ float scratch[32];
    if (blockDim.x % 32 != 0) return;  // launch error (warp reductions need whole warps)
    medsyn::for_each_row_group(rows, [&](long long row) {
        float acc = 0.0f;
        if (row < rows) {
            const T *yr = y + row * n, *gr = g + row * n;
            for (long long j = threadIdx.x; j < n; j += blockDim.x) {
                const float gv = sm::to_f32(gr[j]);
                acc += log ? gv : gv * sm::to_f32(yr[j]);
            }
        }
        const float dot = sm::group_sum(acc, scratch);
        if (row < rows) {
            const T *yr = y + row * n, *gr = g + row * n;
            T* dr = dx + row * n;
            for (long long j = threadIdx.x; j < n; j += blockDim.x) {
                const float gv = sm::to_f32(gr[j]), yv = sm::to_f32(yr[j]);
                dr[j] = sm::from_f32<T>(log ? gv - expf(yv) * dot : yv * (gv - dot));
            }
        }
    });
}
MEDSYN_DTYPES(softmax_backward_rows,
              (long long rows, long long n, int log, const T* __restrict__ y, const T* __restrict__ g,
               T* __restrict__ dx),
              (rows, n, log, y, g, dx))

// The backward for inner > 1: one thread per (o, i) column; launch as softmax_cols.
template <typename T>
__device__ void softmax_backward_cols_impl(long long outer, long long n, long long inner, int log,
                                           const T* __restrict__ y, const T* __restrict__ g,
                                           T* __restrict__ dx) {
    const long long cols = outer * inner;
    for (long long c = medsyn::global_tid(); c < cols; c += medsyn::grid_stride()) {
        const long long o = c / inner, i = c % inner, at = o * n * inner + i;
        float dot = 0.0f;
        for (long long j = 0; j < n; ++j) {
            const float gv = sm::to_f32(g[at + j * inner]);
            dot += log ? gv : gv * sm::to_f32(y[at + j * inner]);
        }
        for (long long j = 0; j < n; ++j) {
            const long long e = at + j * inner;
            const float gv = sm::to_f32(g[e]), yv = sm::to_f32(y[e]);
            dx[e] = sm::from_f32<T>(log ? gv - expf(yv) * dot : yv * (gv - dot));
        }
    }
}
MEDSYN_DTYPES(softmax_backward_cols,
              (long long outer, long long n, long long inner, int log, const T* __restrict__ y,
               const T* __restrict__ g, T* __restrict__ dx),
              (outer, n, inner, log, y, g, dx))

/*
Launch contract (softmax.cu)
============================
Layout: contiguous [outer, n, inner]; softmax along n. `log` = 0 softmax, 1
log-softmax. Outputs contiguous, same shape, must not alias inputs. Suffix = storage
type T (compute f32). n == 0 or rows == 0: nothing is written (the CPU returns an
empty/zero tensor).

softmax_rows_T(i64 rows, i64 n, int log, const T* x, T* y)              (inner == 1)
    block (BX, BY), BX multiple of 32, BX·BY <= 1024: (32, 8) when n <= 1024 (one
    warp per row, 8 rows per block), else (512, 1) or (1024, 1); grid =
    min(ceil(rows/BY), 65535·k) (rows are block-strided, any grid works); static
    smem 256 B. Mirrors cpu::softmax::softmax with inner == 1.
softmax_cols_T(i64 outer, i64 n, i64 inner, int log, const T* x, T* y)  (inner > 1)
    one thread per (o, i): 1-D grid-stride, block 256, grid ceil(outer·inner/256)
    (capped; any grid works); no smem. Mirrors cpu::softmax::softmax with inner > 1.
softmax_backward_rows_T(i64 rows, i64 n, int log, const T* y, const T* g, T* dx)
    y = the forward's output; launch as softmax_rows; static smem 128 B. Mirrors
    cpu::softmax::softmax_backward (inner == 1).
softmax_backward_cols_T(i64 outer, i64 n, i64 inner, int log, const T* y, const T* g, T* dx)
    launch as softmax_cols. Mirrors cpu::softmax::softmax_backward (inner > 1).
Semantics at the edges match the CPU: NaN anywhere in a row makes the row NaN; a
row of only −inf gives NaN; −inf entries beside finite ones give 0 (log: −inf);
+inf gives NaN for the row.
*/
