// BatchNorm over x [batch, channels, spatial]: per-channel batch statistics (mean,
// biased variance → rstd, running-stat update), the normalisation, and the backward
// (per-channel Σ g and Σ g·x̂ → dweight, dbias, dx with batch or running statistics).
// CPU twin: src/backend/cpu/norm.rs (channel_moments, channel_normalize,
// batch_norm_backward) driven by Tensor::batch_norm in src/ops/norm.rs.
//
// Channel c's elements are x[(b·C + c)·S + s] for b < batch, s < S: M = batch·S of
// them, read as a flat index m = b·S + s. Each channel may be split into `splits`
// slices of M (grid.y) whose partial moments / sums are combined in slice order in
// f64 (Chan's formula for moments), so results are deterministic for a fixed launch
// and the statistics end in f64 as on the CPU. No atomics.
#include "common.cuh"

namespace bn {

using medsyn::block_sum;
using medsyn::from_f32;
using medsyn::load_or;
using medsyn::to_f32;

// Walks m = b·S + s from a start by a fixed step, yielding the element offset
// (b·C + c)·S + s without dividing in the loop. 32-bit parts: S < 2^31, batch < 2^31.
struct Walker {
    long long b;
    int s, db, ds, S;
    __device__ Walker(long long m, long long step, long long spatial)
        : b(m / spatial), s((int)(m % spatial)), db((int)(step / spatial)), ds((int)(step % spatial)),
          S((int)spatial) {}
    __device__ __forceinline__ long long offset(long long channels, long long c) const {
        return (b * channels + c) * S + s;
    }
    __device__ __forceinline__ void advance() {
        b += db;
        s += ds;
        if (s >= S) { s -= S; ++b; }
    }
};

// The slice [m0, m1) of split k of M elements.
__device__ __forceinline__ void slice(long long M, long long splits, long long k, long long& m0, long long& m1) {
    const long long per = (M + splits - 1) / splits;
    m0 = k * per;
    m1 = min(M, m0 + per);
}

// Calls f(c, at, m0, m1) for each channel c of this block (block-strided over grid.x)
// with [m0, m1) the slice k = blockIdx.y of splits = gridDim.y of its M = batch·spatial
// elements and at = (c·splits + k)·2 its entry in the partial buffer. Nothing for an
// empty slice (uniform over the block).
template <typename F>
__device__ __forceinline__ void channel_slices(long long batch, long long channels, long long spatial, F f) {
    const long long M = batch * spatial, splits = gridDim.y, k = blockIdx.y;
    long long m0, m1;
    slice(M, splits, k, m0, m1);
    if (m1 <= m0) return;
    for (long long c = blockIdx.x; c < channels; c += gridDim.x) f(c, (c * splits + k) * 2, m0, m1);
}

// Calls f(offset) for the elements of channel c in this thread's share (thread-strided)
// of the slice [m0, m1).
template <typename F>
__device__ __forceinline__ void walk(long long m0, long long m1, long long channels, long long spatial, long long c,
                                     F f) {
    const long long step = blockDim.x;
    Walker it(m0 + threadIdx.x, step, spatial);
    for (long long m = m0 + threadIdx.x; m < m1; m += step, it.advance()) f(it.offset(channels, c));
}

}  // namespace bn

// ---------------------------------------------------------------------------------
// Statistics (training).

// partial[(c·splits + k)·2 + {0, 1}] = (mean, Σ(x − mean)²) of slice k of channel c.
// grid (channels, block-strided in x; splits in y), 1-D block (multiple of 32, <= 1024);
// static smem 128 B.
template <typename T>
__device__ void batch_norm_stats_impl(long long batch, long long channels, long long spatial,
                                      const T* __restrict__ x, float* __restrict__ partial) {
    __shared__ float sa[32];
    if (blockDim.x % 32 != 0) return;  // launch error (warp reductions need whole warps)
    bn::channel_slices(batch, channels, spatial, [&](long long c, long long at, long long m0, long long m1) {
        float acc = 0.0f;
        bn::walk(m0, m1, channels, spatial, c, [&](long long e) { acc += bn::to_f32(x[e]); });
        const float mu = bn::block_sum(acc, sa) / (float)(m1 - m0);
        acc = 0.0f;
        bn::walk(m0, m1, channels, spatial, c, [&](long long e) {
            const float d = bn::to_f32(x[e]) - mu;
            acc += d * d;
        });
        const float q = bn::block_sum(acc, sa);
        if (threadIdx.x == 0) {
            partial[at + 0] = mu;
            partial[at + 1] = q;
        }
    });
}
MEDSYN_DTYPES(batch_norm_stats,
              (long long batch, long long channels, long long spatial, const T* __restrict__ x,
               float* __restrict__ partial),
              (batch, channels, spatial, x, partial))

// Per channel: combine the slices (f64) into mean and biased var; mean_out[c] = mean,
// rstd_out[c] = 1/sqrt(var + eps) (f32 from f64); when running_mean/running_var (f32 for
// every T, as nn::BatchNorm2d's and PyTorch's buffers) are non-null update them in place:
// rm = (1 − momentum)·rm + momentum·mean, rv = (1 − momentum)·rv + momentum·(M/(M − 1))·var
// (f64, stored as f32). 1-D grid-stride over channels, any grid/block, no smem.
template <typename T>
__device__ void batch_norm_stats_finish_impl(long long batch, long long channels, long long spatial, int splits,
                                             double eps, double momentum, const float* __restrict__ partial,
                                             float* __restrict__ mean_out, float* __restrict__ rstd_out,
                                             float* __restrict__ running_mean, float* __restrict__ running_var) {
    const long long M = batch * spatial;
    for (long long c = medsyn::global_tid(); c < channels; c += medsyn::grid_stride()) {
        medsyn::Moments mo;
        for (int k = 0; k < splits; ++k) {
            long long m0, m1;
            bn::slice(M, splits, k, m0, m1);
            if (m1 <= m0) break;
            mo.add((double)(m1 - m0), partial[(c * splits + k) * 2 + 0], partial[(c * splits + k) * 2 + 1]);
        }
        const double mean = mo.mean, var = mo.var();
        mean_out[c] = (float)mean;
        rstd_out[c] = (float)(1.0 / sqrt(var + eps));
        if (running_mean && running_var) {
            const double rm = (double)running_mean[c], rv = (double)running_var[c];
            const double corr = M > 1 ? (double)M / (double)(M - 1) : 1.0;
            running_mean[c] = (float)((1.0 - momentum) * rm + momentum * 1.0 * mean);
            running_var[c] = (float)((1.0 - momentum) * rv + momentum * corr * var);
        }
    }
}
MEDSYN_DTYPES(batch_norm_stats_finish,
              (long long batch, long long channels, long long spatial, int splits, double eps, double momentum,
               const float* __restrict__ partial, float* __restrict__ mean_out, float* __restrict__ rstd_out,
               float* __restrict__ running_mean, float* __restrict__ running_var),
              (batch, channels, spatial, splits, eps, momentum, partial, mean_out, rstd_out, running_mean,
               running_var))

// Eval mode: mean_out[c] = running_mean[c], rstd_out[c] = 1/sqrt(running_var[c] + eps)
// (f64, as the CPU); running stats f32 for every T (the suffix names the layer's dtype;
// the body does not depend on it). 1-D grid-stride over channels, any grid/block, no smem.
template <typename T>
__device__ void batch_norm_eval_stats_impl(long long channels, double eps, const float* __restrict__ running_mean,
                                           const float* __restrict__ running_var, float* __restrict__ mean_out,
                                           float* __restrict__ rstd_out) {
    for (long long c = medsyn::global_tid(); c < channels; c += medsyn::grid_stride()) {
        mean_out[c] = running_mean[c];
        rstd_out[c] = (float)(1.0 / sqrt((double)running_var[c] + eps));
    }
}
MEDSYN_DTYPES(batch_norm_eval_stats,
              (long long channels, double eps, const float* __restrict__ running_mean,
               const float* __restrict__ running_var, float* __restrict__ mean_out, float* __restrict__ rstd_out),
              (channels, eps, running_mean, running_var, mean_out, rstd_out))

// ---------------------------------------------------------------------------------
// Normalisation.

// y[b, c, s] = x·scale + shift, scale = rstd[c]·w[c], shift = b[c] − mean[c]·scale
// (weight/bias nullable: 1 and 0). Rows r = b·C + c of S elements. Block (BX, BY): BX
// threads across a row, BY rows per block (BX·BY <= 1024); grid any (block-strided);
// no smem.
template <typename T>
__device__ void batch_norm_apply_impl(long long batch, long long channels, long long spatial,
                                      const T* __restrict__ x, const float* __restrict__ mean,
                                      const float* __restrict__ rstd, const T* __restrict__ weight,
                                      const T* __restrict__ bias, T* __restrict__ y) {
    const long long rows = batch * channels;
    for (long long r = medsyn::first_row(); r < rows; r += medsyn::row_stride()) {
        const long long c = r % channels;
        const float scale = rstd[c] * bn::load_or(weight, c, 1.0f);
        const float shift = bn::load_or(bias, c, 0.0f) - mean[c] * scale;
        const T* xr = x + r * spatial;
        T* yr = y + r * spatial;
        for (long long s = threadIdx.x; s < spatial; s += blockDim.x)
            yr[s] = bn::from_f32<T>(bn::to_f32(xr[s]) * scale + shift);
    }
}
MEDSYN_DTYPES(batch_norm_apply,
              (long long batch, long long channels, long long spatial, const T* __restrict__ x,
               const float* __restrict__ mean, const float* __restrict__ rstd, const T* __restrict__ weight,
               const T* __restrict__ bias, T* __restrict__ y),
              (batch, channels, spatial, x, mean, rstd, weight, bias, y))

// ---------------------------------------------------------------------------------
// Backward.

// partial[(c·splits + k)·2 + {0, 1}] = (Σ g, Σ g·x̂) over slice k of channel c, with
// x̂ = (x − mean[c])·rstd[c]. Launch as batch_norm_stats; static smem 256 B.
template <typename T>
__device__ void batch_norm_backward_sums_impl(long long batch, long long channels, long long spatial,
                                              const T* __restrict__ x, const T* __restrict__ g,
                                              const float* __restrict__ mean, const float* __restrict__ rstd,
                                              float* __restrict__ partial) {
    __shared__ float sa[32], sb[32];
    if (blockDim.x % 32 != 0) return;  // launch error (warp reductions need whole warps)
    bn::channel_slices(batch, channels, spatial, [&](long long c, long long at, long long m0, long long m1) {
        const float mu = mean[c], rs = rstd[c];
        float sg = 0.0f, sgx = 0.0f;
        bn::walk(m0, m1, channels, spatial, c, [&](long long e) {
            const float gv = bn::to_f32(g[e]);
            sg += gv;
            sgx += gv * ((bn::to_f32(x[e]) - mu) * rs);
        });
        sg = bn::block_sum(sg, sa);
        sgx = bn::block_sum(sgx, sb);
        if (threadIdx.x == 0) {
            partial[at + 0] = sg;
            partial[at + 1] = sgx;
        }
    });
}
MEDSYN_DTYPES(batch_norm_backward_sums,
              (long long batch, long long channels, long long spatial, const T* __restrict__ x,
               const T* __restrict__ g, const float* __restrict__ mean, const float* __restrict__ rstd,
               float* __restrict__ partial),
              (batch, channels, spatial, x, g, mean, rstd, partial))

// Per channel, Σ over slices in order (f64): dweight[c] = Σ g·x̂, dbias[c] = Σ g (T),
// m1[c] = Σ g / M, m2[c] = Σ g·x̂ / M (f32, for batch_norm_backward_dx with batch
// statistics); every output nullable. 1-D grid-stride over channels, no smem.
template <typename T>
__device__ void batch_norm_backward_finish_impl(long long batch, long long channels, long long spatial, int splits,
                                                const float* __restrict__ partial, T* __restrict__ dweight,
                                                T* __restrict__ dbias, float* __restrict__ m1,
                                                float* __restrict__ m2) {
    const long long M = batch * spatial;
    const double inv_m = 1.0 / (double)(M > 0 ? M : 1);
    for (long long c = medsyn::global_tid(); c < channels; c += medsyn::grid_stride()) {
        double sg = 0.0, sgx = 0.0;
        for (int k = 0; k < splits; ++k) {
            long long a, b;
            bn::slice(M, splits, k, a, b);
            if (b <= a) break;
            sg += partial[(c * splits + k) * 2 + 0];
            sgx += partial[(c * splits + k) * 2 + 1];
        }
        if (dweight) dweight[c] = bn::from_f32<T>((float)sgx);
        if (dbias) dbias[c] = bn::from_f32<T>((float)sg);
        if (m1) m1[c] = (float)(sg * inv_m);
        if (m2) m2[c] = (float)(sgx * inv_m);
    }
}
MEDSYN_DTYPES(batch_norm_backward_finish,
              (long long batch, long long channels, long long spatial, int splits, const float* __restrict__ partial,
               T* __restrict__ dweight, T* __restrict__ dbias, float* __restrict__ m1, float* __restrict__ m2),
              (batch, channels, spatial, splits, partial, dweight, dbias, m1, m2))

// dx = w·rstd·(g − m1 − x̂·m2) with batch statistics (m1, m2 non-null), or g·w·rstd with
// running statistics (m1 == m2 == null). Launch as batch_norm_apply; no smem.
template <typename T>
__device__ void batch_norm_backward_dx_impl(long long batch, long long channels, long long spatial,
                                            const T* __restrict__ x, const T* __restrict__ g,
                                            const T* __restrict__ weight, const float* __restrict__ mean,
                                            const float* __restrict__ rstd, const float* __restrict__ m1,
                                            const float* __restrict__ m2, T* __restrict__ dx) {
    const long long rows = batch * channels;
    const bool batch_stats = m1 && m2;
    for (long long r = medsyn::first_row(); r < rows; r += medsyn::row_stride()) {
        const long long c = r % channels;
        const float rs = rstd[c], mu = mean[c];
        const float kc = bn::load_or(weight, c, 1.0f) * rs;
        const float a = batch_stats ? m1[c] : 0.0f, b = batch_stats ? m2[c] : 0.0f;
        const T* xr = x + r * spatial;
        const T* gr = g + r * spatial;
        T* dr = dx + r * spatial;
        for (long long s = threadIdx.x; s < spatial; s += blockDim.x) {
            const float gv = bn::to_f32(gr[s]);
            float d;
            if (batch_stats) {
                const float xh = (bn::to_f32(xr[s]) - mu) * rs;
                d = kc * (gv - a - xh * b);
            } else {
                d = gv * kc;
            }
            dr[s] = bn::from_f32<T>(d);
        }
    }
}
MEDSYN_DTYPES(batch_norm_backward_dx,
              (long long batch, long long channels, long long spatial, const T* __restrict__ x,
               const T* __restrict__ g, const T* __restrict__ weight, const float* __restrict__ mean,
               const float* __restrict__ rstd, const float* __restrict__ m1, const float* __restrict__ m2,
               T* __restrict__ dx),
              (batch, channels, spatial, x, g, weight, mean, rstd, m1, m2, dx))

/*
Launch contract (batch_norm.cu)
===============================
Layout: x, y, g, dx contiguous [batch, channels, spatial] (x of [N, C, ...] with
spatial = product of the trailing dims); weight, bias, dweight, dbias [channels] in T
(the same dtype as x; nullable where marked); running_mean, running_var [channels] f32
for every T (as nn::BatchNorm2d keeps them in dtype.compute() and PyTorch keeps its
buffers in f32 under autocast: bf16/f16 running stats would stall under momentum
updates); mean, rstd, m1, m2 f32 [channels]. Suffix = storage type T of x (compute f32,
combines in f64).
Needs spatial < 2^31. M = batch·spatial elements per channel. `splits` (grid.y,
1..65535) cuts each channel's M elements into slices of ceil(M / splits); choose it so
that channels·splits ≈ 2–4·SMs, e.g. splits = clamp(ceil(4·SMs / channels), 1,
ceil(M / 4096)); a finish kernel must get the same `splits`.

Training forward (mirrors channel_moments + update_running + channel_normalize):
batch_norm_stats_T(i64 batch, i64 channels, i64 spatial, const T* x, float* partial)
    grid (min(channels, 2^31−1), splits), 1-D block 256..1024 (multiple of 32); static
    smem 128 B; partial: f32 scratch of 2·channels·splits floats.
batch_norm_stats_finish_T(i64 batch, i64 channels, i64 spatial, int splits, double eps,
                          double momentum, const float* partial, float* mean, float* rstd,
                          float* running_mean (nullable), float* running_var (nullable))
    1-D grid-stride over channels (block 256, grid ceil(channels/256)); no smem.
    Running stats are updated only when both pointers are non-null (the CPU's
    `running` = Some); M > 1 is checked by the op (training needs > 1 value).
Eval forward:
batch_norm_eval_stats_T(i64 channels, double eps, const float* running_mean,
                        const float* running_var, float* mean, float* rstd)
    1-D grid-stride over channels; no smem. All three suffixes are the same f32 code
    (T = the layer's dtype; the launcher may use any).
Both:
batch_norm_apply_T(i64 batch, i64 channels, i64 spatial, const T* x, const float* mean,
                   const float* rstd, const T* weight (nullable), const T* bias (nullable), T* y)
    block (BX, BY): BX = min(256, roundup32(spatial)), BY = max(1, 256 / BX); grid =
    min(ceil(batch·channels / BY), 65535·k) (rows block-strided); no smem.

Backward (mirrors cpu::norm::batch_norm_backward; need_sums = dweight || dbias ||
(dx && batch_stats)):
batch_norm_backward_sums_T(i64 batch, i64 channels, i64 spatial, const T* x, const T* g,
                           const float* mean, const float* rstd, float* partial)
    when need_sums; launch as batch_norm_stats (grid (channels, splits)); static smem
    256 B; partial: 2·channels·splits floats.
batch_norm_backward_finish_T(i64 batch, i64 channels, i64 spatial, int splits,
                             const float* partial, T* dweight (nullable), T* dbias (nullable),
                             float* m1 (nullable), float* m2 (nullable))
    when need_sums; 1-D grid-stride over channels; no smem. Pass m1/m2 (f32 scratch of
    channels floats each) when dx is needed with batch statistics.
batch_norm_backward_dx_T(i64 batch, i64 channels, i64 spatial, const T* x, const T* g,
                         const T* weight (nullable), const float* mean, const float* rstd,
                         const float* m1 (nullable), const float* m2 (nullable), T* dx)
    when dx is needed; m1, m2 from the finish kernel for batch statistics (training),
    null for running statistics (dx = g·w·rstd). Launch as batch_norm_apply; no smem.
*/
