// GroupNorm over x [batch, channels, spatial] with per-channel weight/bias, optionally
// fused with SiLU: forward saving mean and rstd (f32, one per (batch, group)) and the
// backward (dx, dweight, dbias, each only when requested) recomputing the
// pre-activation from x, mean and rstd. CPU twin: src/backend/cpu/norm.rs
// (group_norm, group_norm_backward; biased variance, rstd = 1/sqrt(var + eps)).
//
// A "unit" is one (batch, group): the contiguous elements [u·N, (u+1)·N) with
// N = (channels/groups)·spatial, u = b·groups + g; its channel-local index of element
// e is e / spatial. Units can be large (SD: 10 channels × 4096 = 40960 elements), so
// each unit may be split into `splits` slices handled by separate blocks (grid.y):
//   forward:  group_norm_stats  (per slice: mean and Σ(x − mean)², two passes)
//             group_norm_apply  (combines the slices' moments in f64, Chan's formula,
//                                in slice order, then normalises its slice)
//   backward: group_norm_backward_sums   (per (batch, channel): Σ gz·x̂ and Σ gz)
//             group_norm_backward_dx     (per slice; the unit's Σ gw, Σ gw·x̂ come from
//                                         the per-channel sums)
//             group_norm_backward_params (dweight, dbias: Σ over batch of the sums)
// with gz the gradient at the affine output (times silu'(z) when fused) and gw = gz·w.
// With splits = 1 the forward is one block per unit. No atomics: every result is
// deterministic for a fixed launch shape. Compute f32; the slice combine and rstd in f64.
#include "common.cuh"

namespace gn {

using medsyn::aligned16;
using medsyn::block_sum;
using medsyn::block_sum2;
using medsyn::Chunk;
using medsyn::from_f32;
using medsyn::group_sum2;
using medsyn::load_chunk;
using medsyn::load_or;
using medsyn::sigmoid;
using medsyn::store_chunk;
using medsyn::to_f32;

// d silu(z)/dz = s·(1 + z·(1 − s)), s = sigmoid(z) (norm.rs silu_grad).
__device__ __forceinline__ float silu_grad(float z) {
    const float s = sigmoid(z);
    return s * (1.0f + z * (1.0f - s));
}

// Problem shape, and the slice [e0, e1) of every unit that this block handles:
// slice k = blockIdx.y of splits = gridDim.y.
struct Geo {
    long long channels, spatial, groups, cpg, unit;  // unit = cpg·spatial = N
    long long units, splits, k, e0, e1;              // units = batch·groups
    __device__ Geo(long long batch, long long c, long long s, long long g)
        : channels(c), spatial(s), groups(g), cpg(c / g), unit(c / g * s), units(batch * g), splits(gridDim.y),
          k(blockIdx.y) {
        e0 = k * per(splits);
        e1 = min(unit, e0 + per(splits));
    }
    // Slice length: ceil(N / splits) rounded up to a multiple of 8 (so slices start
    // on pack boundaries for every element size).
    __device__ long long per(long long splits) const {
        const long long p = (unit + splits - 1) / splits;
        return (p + 7) / 8 * 8;
    }
};

// The channel-local index of a thread's current element, advanced by a fixed step
// without dividing in the loop.
// 32-bit: needs spatial < 2^31 and channels/groups < 2^31 (checked by the launch side).
struct ChannelCursor {
    int cl, r, dcl, dr, s;
    __device__ ChannelCursor(long long e, long long step, long long spatial)
        : cl((int)(e / spatial)), r((int)(e % spatial)), dcl((int)(step / spatial)), dr((int)(step % spatial)),
          s((int)spatial) {}
    __device__ __forceinline__ void advance() {
        cl += dcl;
        r += dr;
        if (r >= s) { r -= s; ++cl; }
    }
};

// Chan et al.'s combination of the `splits` slice moments (mean_k, M2_k) of unit u, in
// slice order, in f64; returns (mean, biased variance).
__device__ inline void combine_slices(const float* __restrict__ partial, long long u, long long splits,
                                      const Geo& geo, double& mean, double& var) {
    const long long per = geo.per(splits);
    medsyn::Moments mo;
    for (long long k = 0; k < splits; ++k) {
        const long long e0 = k * per, e1 = min(geo.unit, e0 + per);
        if (e1 <= e0) break;
        mo.add((double)(e1 - e0), partial[(u * splits + k) * 2 + 0], partial[(u * splits + k) * 2 + 1]);
    }
    mean = mo.mean;
    var = mo.var();
}

// ---- slice bodies, P = elements per step (1, or a 16-byte pack) -------------------

// Σ x over [e0, e1) of base (thread-strided by P-element steps).
template <typename T, int P>
__device__ __forceinline__ float slice_sum(const T* __restrict__ base, long long e0, long long e1) {
    float acc = 0.0f;
    for (long long e = e0 + (long long)threadIdx.x * P; e < e1; e += (long long)blockDim.x * P) {
        const Chunk<T, P> c = load_chunk<T, P>(base + e);
#pragma unroll
        for (int k = 0; k < P; ++k) acc += to_f32(c.v[k]);
    }
    return acc;
}

template <typename T, int P>
__device__ __forceinline__ float slice_sq(const T* __restrict__ base, long long e0, long long e1, float mu) {
    float acc = 0.0f;
    for (long long e = e0 + (long long)threadIdx.x * P; e < e1; e += (long long)blockDim.x * P) {
        const Chunk<T, P> c = load_chunk<T, P>(base + e);
#pragma unroll
        for (int k = 0; k < P; ++k) {
            const float d = to_f32(c.v[k]) - mu;
            acc += d * d;
        }
    }
    return acc;
}

// Calls f(e, w, b) for each P-element step e of this thread in the slice [e0, e1) of a
// unit whose first channel is c0 (thread-strided), with w, b (1 and 0 when null) the
// weight and bias of the step's channel (a step never crosses a channel: P divides
// spatial).
template <int P, typename T, typename F>
__device__ __forceinline__ void slice_steps(long long e0, long long e1, long long c0, long long spatial,
                                            const T* __restrict__ weight, const T* __restrict__ bias, F f) {
    const long long step = (long long)blockDim.x * P;
    long long e = e0 + (long long)threadIdx.x * P;
    ChannelCursor cur(e, step, spatial);
    for (; e < e1; e += step, cur.advance()) {
        const long long c = c0 + cur.cl;
        f(e, load_or(weight, c, 1.0f), load_or(bias, c, 0.0f));
    }
}

// x̂ = (x − mean)·rstd of one element into h, and the gradient at the affine output:
// g, times silu'(x̂·w + b) when the SiLU is fused.
__device__ __forceinline__ float grad_z(float xv, float gv, float mu, float rs, float w, float b, bool silu,
                                        float& h) {
    h = (xv - mu) * rs;
    return silu ? gv * silu_grad(h * w + b) : gv;
}

// y = x·scale + shift per channel (scale = rstd·w, shift = b − mean·scale; the CPU's
// form for spatial > 1, and (x − mean)·rstd·w + b for spatial == 1), then SiLU.
template <typename T, int P>
__device__ __forceinline__ void slice_apply(const T* __restrict__ xb, T* __restrict__ yb, long long e0,
                                            long long e1, long long c0, long long spatial, float mu, float rs,
                                            const T* __restrict__ weight, const T* __restrict__ bias, bool silu) {
    slice_steps<P>(e0, e1, c0, spatial, weight, bias, [&](long long e, float w, float b) {
        const float scale = rs * w, shift = b - mu * scale;
        const Chunk<T, P> xc = load_chunk<T, P>(xb + e);
        Chunk<T, P> yc;
#pragma unroll
        for (int k = 0; k < P; ++k) {
            const float xv = to_f32(xc.v[k]);
            float v = spatial == 1 ? (xv - mu) * rs * w + b : xv * scale + shift;
            if (silu) v = v * sigmoid(v);
            yc.v[k] = from_f32<T>(v);
        }
        store_chunk<T, P>(yb + e, yc);
    });
}

// dx = rstd·(gz·w − m1 − x̂·m2) over the slice.
template <typename T, int P>
__device__ __forceinline__ void slice_dx(const T* __restrict__ xb, const T* __restrict__ gb, T* __restrict__ db,
                                         long long e0, long long e1, long long c0, long long spatial, float mu,
                                         float rs, float m1, float m2, const T* __restrict__ weight,
                                         const T* __restrict__ bias, bool silu) {
    slice_steps<P>(e0, e1, c0, spatial, weight, bias, [&](long long e, float w, float b) {
        const Chunk<T, P> xc = load_chunk<T, P>(xb + e), gc = load_chunk<T, P>(gb + e);
        Chunk<T, P> dc;
#pragma unroll
        for (int k = 0; k < P; ++k) {
            float h;
            const float gz = grad_z(to_f32(xc.v[k]), to_f32(gc.v[k]), mu, rs, w, b, silu, h);
            dc.v[k] = from_f32<T>(rs * (gz * w - m1 - h * m2));
        }
        store_chunk<T, P>(db + e, dc);
    });
}

// Σ gz·x̂ and Σ gz over one (batch, channel) row, thread-strided in P-element steps.
template <typename T, int P>
__device__ __forceinline__ void row_sums(const T* __restrict__ xr, const T* __restrict__ gr, long long spatial,
                                         float mu, float rs, float w, float b, bool silu, float& sgx, float& sg) {
    for (long long s = (long long)threadIdx.x * P; s < spatial; s += (long long)blockDim.x * P) {
        const Chunk<T, P> xc = load_chunk<T, P>(xr + s), gc = load_chunk<T, P>(gr + s);
#pragma unroll
        for (int k = 0; k < P; ++k) {
            float h;
            const float gz = grad_z(to_f32(xc.v[k]), to_f32(gc.v[k]), mu, rs, w, b, silu, h);
            sgx += gz * h;
            sg += gz;
        }
    }
}

}  // namespace gn

// ---------------------------------------------------------------------------------
// Forward.

// Slice moments: partial[(u·splits + k)·2 + {0, 1}] = (mean, Σ(x − mean)²) of slice k
// of unit u. grid (units-stride in x, splits in y), 1-D block (multiple of 32, <= 1024);
// static smem 256 B.
template <typename T>
__device__ void group_norm_stats_impl(long long batch, long long channels, long long spatial, long long groups,
                                      const T* __restrict__ x, float* __restrict__ partial) {
    __shared__ float sa[32], sb[32];
    if (blockDim.x % 32 != 0) return;  // launch error (warp reductions need whole warps)
    const gn::Geo geo(batch, channels, spatial, groups);
    const long long e0 = geo.e0, e1 = geo.e1;
    constexpr int V = medsyn::Pack<T>::N;
    const bool packed = gn::aligned16(x) && spatial % V == 0;
    for (long long u = blockIdx.x; u < geo.units; u += gridDim.x) {
        if (e1 <= e0) break;  // an empty slice (uniform over the block): nothing to write
        const T* xb = x + u * geo.unit;
        float s = packed ? gn::slice_sum<T, V>(xb, e0, e1) : gn::slice_sum<T, 1>(xb, e0, e1);
        const float mu = gn::block_sum(s, sa) / (float)(e1 - e0);
        float q = packed ? gn::slice_sq<T, V>(xb, e0, e1, mu) : gn::slice_sq<T, 1>(xb, e0, e1, mu);
        q = gn::block_sum(q, sb);
        if (threadIdx.x == 0) {
            partial[(u * geo.splits + geo.k) * 2 + 0] = mu;
            partial[(u * geo.splits + geo.k) * 2 + 1] = q;
        }
    }
}
MEDSYN_DTYPES(group_norm_stats,
              (long long batch, long long channels, long long spatial, long long groups, const T* __restrict__ x,
               float* __restrict__ partial),
              (batch, channels, spatial, groups, x, partial))

// y = GroupNorm(x) (then SiLU when `silu`) over slice k of unit u, from the slice
// moments; the slice-0 block of unit u also writes mean[u], rstd[u] (f32; nullable).
// Same grid as group_norm_stats (so the same `splits`), 1-D block <= 512; static smem 8 B.
template <typename T>
__device__ void group_norm_apply_impl(long long batch, long long channels, long long spatial, long long groups,
                                      double eps, int silu, const T* __restrict__ x, const T* __restrict__ weight,
                                      const T* __restrict__ bias, const float* __restrict__ partial,
                                      T* __restrict__ y, float* __restrict__ mean_out, float* __restrict__ rstd_out) {
    __shared__ float stats[2];
    const gn::Geo geo(batch, channels, spatial, groups);
    constexpr int V = medsyn::Pack<T>::N;
    const bool packed = gn::aligned16(x) && gn::aligned16(y) && spatial % V == 0;
    for (long long u = blockIdx.x; u < geo.units; u += gridDim.x) {
        __syncthreads();  // the previous unit's readers of `stats` are done
        if (threadIdx.x == 0) {
            double mean, var;
            gn::combine_slices(partial, u, geo.splits, geo, mean, var);
            const float mu = (float)mean, rs = (float)(1.0 / sqrt(var + eps));
            stats[0] = mu;
            stats[1] = rs;
            if (geo.k == 0) {
                if (mean_out) mean_out[u] = mu;
                if (rstd_out) rstd_out[u] = rs;
            }
        }
        __syncthreads();
        const float mu = stats[0], rs = stats[1];
        const long long c0 = (u % groups) * geo.cpg;
        const T* xb = x + u * geo.unit;
        T* yb = y + u * geo.unit;
        if (packed)
            gn::slice_apply<T, V>(xb, yb, geo.e0, geo.e1, c0, spatial, mu, rs, weight, bias, silu != 0);
        else
            gn::slice_apply<T, 1>(xb, yb, geo.e0, geo.e1, c0, spatial, mu, rs, weight, bias, silu != 0);
    }
}
MEDSYN_DTYPES(group_norm_apply,
              (long long batch, long long channels, long long spatial, long long groups, double eps, int silu,
               const T* __restrict__ x, const T* __restrict__ weight, const T* __restrict__ bias,
               const float* __restrict__ partial, T* __restrict__ y, float* __restrict__ mean_out,
               float* __restrict__ rstd_out),
              (batch, channels, spatial, groups, eps, silu, x, weight, bias, partial, y, mean_out, rstd_out))

// ---------------------------------------------------------------------------------
// Backward.

// Per (batch, channel) row r = b·channels + c of `spatial` elements:
// sums[2r] = Σ gz·x̂, sums[2r + 1] = Σ gz, with x̂ = (x − mean)·rstd of the row's unit and
// gz = g (· silu'(x̂·w + b) when `silu`). Block (BX, BY): BX threads (multiple of 32) per
// row, BY rows per block, BX·BY <= 1024; grid any (block-strided); static smem 256 B.
template <typename T>
__device__ void group_norm_backward_sums_impl(long long batch, long long channels, long long spatial,
                                              long long groups, int silu, const T* __restrict__ x,
                                              const T* __restrict__ g, const T* __restrict__ weight,
                                              const T* __restrict__ bias, const float* __restrict__ mean,
                                              const float* __restrict__ rstd, float* __restrict__ sums) {
    __shared__ float sa[32], sb[32];
    if (blockDim.x % 32 != 0) return;  // launch error (warp reductions need whole warps)
    const long long rows = batch * channels, cpg = channels / groups;
    constexpr int V = medsyn::Pack<T>::N;
    const bool packed = gn::aligned16(x) && gn::aligned16(g) && spatial % V == 0;
    medsyn::for_each_row_group(rows, [&](long long r) {
        float sgx = 0.0f, sg = 0.0f;
        if (r < rows) {
            const long long b = r / channels, c = r % channels, u = b * groups + c / cpg;
            const float mu = mean[u], rs = rstd[u];
            const float w = gn::load_or(weight, c, 1.0f), bb = gn::load_or(bias, c, 0.0f);
            const T *xr = x + r * spatial, *gr = g + r * spatial;
            if (packed)
                gn::row_sums<T, V>(xr, gr, spatial, mu, rs, w, bb, silu != 0, sgx, sg);
            else
                gn::row_sums<T, 1>(xr, gr, spatial, mu, rs, w, bb, silu != 0, sgx, sg);
        }
        gn::group_sum2(sgx, sg, sa, sb);
        if (r < rows && threadIdx.x == 0) {
            sums[2 * r] = sgx;
            sums[2 * r + 1] = sg;
        }
    });
}
MEDSYN_DTYPES(group_norm_backward_sums,
              (long long batch, long long channels, long long spatial, long long groups, int silu,
               const T* __restrict__ x, const T* __restrict__ g, const T* __restrict__ weight,
               const T* __restrict__ bias, const float* __restrict__ mean, const float* __restrict__ rstd,
               float* __restrict__ sums),
              (batch, channels, spatial, groups, silu, x, g, weight, bias, mean, rstd, sums))

// dx over slice k of unit u: rstd·(gz·w − m1 − x̂·m2) with m1 = Σ_c w_c·Σgz / N and
// m2 = Σ_c w_c·Σgz·x̂ / N over the unit's channels (from group_norm_backward_sums).
// grid (units-stride in x, splits in y), 1-D block (multiple of 32, <= 512); static
// smem 256 B.
template <typename T>
__device__ void group_norm_backward_dx_impl(long long batch, long long channels, long long spatial,
                                            long long groups, int silu, const T* __restrict__ x,
                                            const T* __restrict__ g, const T* __restrict__ weight,
                                            const T* __restrict__ bias, const float* __restrict__ mean,
                                            const float* __restrict__ rstd, const float* __restrict__ sums,
                                            T* __restrict__ dx) {
    __shared__ float sa[32], sb[32];
    if (blockDim.x % 32 != 0) return;  // launch error (warp reductions need whole warps)
    const gn::Geo geo(batch, channels, spatial, groups);
    const long long e0 = geo.e0, e1 = geo.e1;
    constexpr int V = medsyn::Pack<T>::N;
    const bool packed = gn::aligned16(x) && gn::aligned16(g) && gn::aligned16(dx) && spatial % V == 0;
    const float inv_n = 1.0f / (float)geo.unit;
    for (long long u = blockIdx.x; u < geo.units; u += gridDim.x) {
        const long long b = u / groups, c0 = (u % groups) * geo.cpg;
        float a1 = 0.0f, a2 = 0.0f;
        for (long long cl = threadIdx.x; cl < geo.cpg; cl += blockDim.x) {
            const long long c = c0 + cl;
            const float w = gn::load_or(weight, c, 1.0f);
            a1 += w * sums[2 * (b * channels + c) + 1];
            a2 += w * sums[2 * (b * channels + c)];
        }
        gn::block_sum2(a1, a2, sa, sb);
        if (e1 <= e0) continue;  // uniform over the block; no barrier follows
        const float mu = mean[u], rs = rstd[u], m1 = a1 * inv_n, m2 = a2 * inv_n;
        const T* xb = x + u * geo.unit;
        const T* gb = g + u * geo.unit;
        T* db = dx + u * geo.unit;
        if (packed)
            gn::slice_dx<T, V>(xb, gb, db, e0, e1, c0, spatial, mu, rs, m1, m2, weight, bias, silu != 0);
        else
            gn::slice_dx<T, 1>(xb, gb, db, e0, e1, c0, spatial, mu, rs, m1, m2, weight, bias, silu != 0);
    }
}
MEDSYN_DTYPES(group_norm_backward_dx,
              (long long batch, long long channels, long long spatial, long long groups, int silu,
               const T* __restrict__ x, const T* __restrict__ g, const T* __restrict__ weight,
               const T* __restrict__ bias, const float* __restrict__ mean, const float* __restrict__ rstd,
               const float* __restrict__ sums, T* __restrict__ dx),
              (batch, channels, spatial, groups, silu, x, g, weight, bias, mean, rstd, sums, dx))

// dweight[c] = Σ_b sums[2(b·C + c)], dbias[c] = Σ_b sums[2(b·C + c) + 1] (batches added
// in order; either output may be null). 1-D grid-stride over channels, any grid/block,
// no smem.
template <typename T>
__device__ void group_norm_backward_params_impl(long long batch, long long channels, const float* __restrict__ sums,
                                                T* __restrict__ dweight, T* __restrict__ dbias) {
    for (long long c = medsyn::global_tid(); c < channels; c += medsyn::grid_stride()) {
        float sw = 0.0f, sb = 0.0f;
        for (long long b = 0; b < batch; ++b) {
            sw += sums[2 * (b * channels + c)];
            sb += sums[2 * (b * channels + c) + 1];
        }
        if (dweight) dweight[c] = gn::from_f32<T>(sw);
        if (dbias) dbias[c] = gn::from_f32<T>(sb);
    }
}
MEDSYN_DTYPES(group_norm_backward_params,
              (long long batch, long long channels, const float* __restrict__ sums, T* __restrict__ dweight,
               T* __restrict__ dbias),
              (batch, channels, sums, dweight, dbias))

/*
Launch contract (group_norm.cu)
===============================
Layout: x, y, g, dx contiguous [batch, channels, spatial] (spatial = H·W, > 0);
channels % groups == 0; weight, bias, dweight, dbias [channels] in T (nullable:
absent weight = 1, bias = 0); mean, rstd f32 [batch·groups] indexed u = b·groups + g.
`silu` = 1 for group_norm_silu (SiLU applied after the affine; its backward goes
through SiLU, recomputing z = x̂·w + b). Suffix = storage type T (compute f32).
Outputs must not alias inputs. units = batch·groups, N = (channels/groups)·spatial.
`splits` (grid.y, 1..65535) cuts each unit into slices of per = roundup8(ceil(N /
splits)) elements; choose it so that units·splits ≈ 2–4·SMs and per >= 8·block
(e.g. splits = clamp(ceil(4·SMs / units), 1, ceil(N / 8192))). spatial and
channels/groups must be < 2^31 (32-bit channel cursors). 16-byte accesses are
used when the pointers are 16-byte aligned and spatial % (16/sizeof(T)) == 0.

Forward (mirrors cpu::norm::group_norm; y, mean, rstd):
group_norm_stats_T(i64 batch, i64 channels, i64 spatial, i64 groups, const T* x, float* partial)
    grid (min(units, 2^31−1), splits), block 1-D (multiple of 32, <= 1024; 512 or 1024
    for large units, 256 for small); static smem 256 B. partial: f32 scratch of
    2·units·splits floats.
group_norm_apply_T(i64 batch, i64 channels, i64 spatial, i64 groups, double eps, int silu,
                   const T* x, const T* weight, const T* bias, const float* partial,
                   T* y, float* mean (nullable), float* rstd (nullable))
    the same grid (the same splits!) as group_norm_stats, right after it on the same
    stream; block 1-D, multiple of 32, <= 512 (it uses up to 72 registers; 256 is a
    good choice); static smem 8 B. rstd = (f32)(1/sqrt(var + eps)) in f64 as the CPU.

Backward (mirrors cpu::norm::group_norm_backward; needs x, g, mean, rstd of the forward):
group_norm_backward_sums_T(i64 batch, i64 channels, i64 spatial, i64 groups, int silu,
                           const T* x, const T* g, const T* weight, const T* bias,
                           const float* mean, const float* rstd, float* sums)
    always first (whenever dx, dweight or dbias is needed). sums: f32 scratch of
    2·batch·channels floats. block (BX, BY), BX multiple of 32, BX·BY <= 1024: (32, 8)
    for spatial <= 1024, else (256, 1)..(1024, 1); grid min(ceil(batch·channels/BY),
    65535·k); static smem 256 B.
group_norm_backward_dx_T(i64 batch, i64 channels, i64 spatial, i64 groups, int silu,
                         const T* x, const T* g, const T* weight, const T* bias,
                         const float* mean, const float* rstd, const float* sums, T* dx)
    only when dx is needed; grid (min(units, 2^31−1), splits), block 1-D (multiple of
    32, <= 512: up to 72 registers; 256 is a good choice); static smem 256 B.
group_norm_backward_params_T(i64 batch, i64 channels, const float* sums,
                             T* dweight (nullable), T* dbias (nullable))
    only when dweight or dbias is needed; 1-D grid-stride (block 256, grid
    ceil(channels/256)); no smem.
*/
