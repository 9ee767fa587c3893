// 2-D pooling over [planes, h, w] planes with PyTorch semantics: max pool (saving the
// flat in-plane argmax as u32), average pool (count_include_pad or not), adaptive
// average pool, each with its backward. CPU twin: src/backend/cpu/pool.rs
// (max_pool2d, max_pool2d_backward, avg_pool2d, avg_pool2d_backward,
// adaptive_avg_pool2d, adaptive_avg_pool2d_backward), called by src/ops/pool.rs.
// The backwards are gathers (one thread per input pixel visits the outputs whose
// window covers it, in the CPU's output order), so they need no atomics and add in
// the same order as the CPU's scatter loops. Compute f32.
#include "common.cuh"

namespace pl {

using medsyn::from_f32;
using medsyn::to_f32;

// A pooling window layout: planes of [h, w] → [oh, ow] (Pool2dGeom).
struct Geom {
    long long planes, h, w, kh, kw, sh, sw, ph, pw, oh, ow;
};

// Output rows oy whose raw window [oy·sh − ph, oy·sh − ph + kh) contains input row y
// (and, for columns, the same with w): [lo, hi] clamped to [0, n_out − 1].
__device__ __forceinline__ void covering(long long y, long long k, long long s, long long p, long long n_out,
                                         long long& lo, long long& hi) {
    const long long num = y + p - k + 1;  // oy·s >= num
    lo = num <= 0 ? 0 : (num + s - 1) / s;
    hi = min(n_out - 1, (y + p) / s);  // oy·s <= y + p
}

// The divisor of output (oy, ox): the window inside the padded input
// (count_include_pad) or the number of real elements it covers (avg_divisor).
__device__ __forceinline__ long long avg_divisor(const Geom& g, long long oy, long long ox, bool include_pad) {
    const long long y0 = oy * g.sh - g.ph, x0 = ox * g.sw - g.pw;
    const long long y1 = y0 + g.kh, x1 = x0 + g.kw;
    if (include_pad) {
        const long long ye = min(y1, g.h + g.ph), xe = min(x1, g.w + g.pw);
        return (ye - y0) * (xe - x0);
    }
    const long long cy0 = max(y0, 0LL), cx0 = max(x0, 0LL), cy1 = min(y1, g.h), cx1 = min(x1, g.w);
    return (cy1 - cy0) * (cx1 - cx0);
}

// PyTorch's adaptive bin of output i of n_out over size: [⌊i·size/n_out⌋, ⌈(i+1)·size/n_out⌉).
__device__ __forceinline__ void adaptive_bin(long long i, long long size, long long n_out, long long& lo,
                                             long long& hi) {
    lo = i * size / n_out;
    hi = ((i + 1) * size + n_out - 1) / n_out;
}

// Window maps (used by each_output / each_input): rows(oy) and cols(ox) give the input
// range [lo, hi) that output row oy / column ox pools; out_rows(y) and out_cols(x) give
// the output range [lo, hi) whose windows may contain input row y / column x.

// Max / average pooling: windows of the padded input clipped to the input.
struct Windows {
    Geom g;
    __device__ __forceinline__ void rows(long long oy, long long& lo, long long& hi) const {
        lo = max(oy * g.sh - g.ph, 0LL);
        hi = min(oy * g.sh - g.ph + g.kh, g.h);
    }
    __device__ __forceinline__ void cols(long long ox, long long& lo, long long& hi) const {
        lo = max(ox * g.sw - g.pw, 0LL);
        hi = min(ox * g.sw - g.pw + g.kw, g.w);
    }
    __device__ __forceinline__ void out_rows(long long y, long long& lo, long long& hi) const {
        covering(y, g.kh, g.sh, g.ph, g.oh, lo, hi);
        ++hi;
    }
    __device__ __forceinline__ void out_cols(long long x, long long& lo, long long& hi) const {
        covering(x, g.kw, g.sw, g.pw, g.ow, lo, hi);
        ++hi;
    }
};

// Adaptive average pooling: PyTorch's bins (they may overlap); out_rows / out_cols
// bound the bins containing y / x (membership is re-checked by the caller).
struct Bins {
    long long h, w, oh, ow;
    __device__ __forceinline__ void rows(long long oy, long long& lo, long long& hi) const {
        adaptive_bin(oy, h, oh, lo, hi);
    }
    __device__ __forceinline__ void cols(long long ox, long long& lo, long long& hi) const {
        adaptive_bin(ox, w, ow, lo, hi);
    }
    __device__ __forceinline__ void out_rows(long long y, long long& lo, long long& hi) const {
        lo = y * oh / h;
        hi = min(oh, ((y + 1) * oh + h - 1) / h);
    }
    __device__ __forceinline__ void out_cols(long long x, long long& lo, long long& hi) const {
        lo = x * ow / w;
        hi = min(ow, ((x + 1) * ow + w - 1) / w);
    }
};

// Calls f(o, src, y0, y1, x0, x1, oy, ox) for each output element of this thread:
// o = (p·oh + oy)·ow + ox, src = plane p of x, [y0, y1) × [x0, x1) its window from
// win. Output rows (planes·oh) are block-strided over (blockIdx.x, threadIdx.y);
// threadIdx.x walks ow.
template <typename T, typename Win, typename F>
__device__ __forceinline__ void each_output(long long planes, long long h, long long w, long long oh, long long ow,
                                            const T* __restrict__ x, const Win& win, F f) {
    const long long rows = planes * oh;
    for (long long row = medsyn::first_row(); row < rows; row += medsyn::row_stride()) {
        const long long p = row / oh, oy = row % oh;
        const T* src = x + p * h * w;
        long long y0, y1;
        win.rows(oy, y0, y1);
        for (long long ox = threadIdx.x; ox < ow; ox += blockDim.x) {
            long long x0, x1;
            win.cols(ox, x0, x1);
            f(row * ow + ox, src, y0, y1, x0, x1, oy, ox);
        }
    }
}

// Calls f(i, at, y, x, oy0, oy1, ox0, ox1) for each input element of this thread:
// i = (p·h + y)·w + x, at = p·oh·ow (plane p's offset in dy and idx), and
// [oy0, oy1) × [ox0, ox1) the outputs whose windows may contain it, from win. Input
// rows (planes·h) are block-strided over (blockIdx.x, threadIdx.y); threadIdx.x walks w.
template <typename Win, typename F>
__device__ __forceinline__ void each_input(long long planes, long long h, long long w, long long oh, long long ow,
                                           const Win& win, F f) {
    const long long rows = planes * h;
    for (long long row = medsyn::first_row(); row < rows; row += medsyn::row_stride()) {
        const long long p = row / h, y = row % h;
        long long oy0, oy1;
        win.out_rows(y, oy0, oy1);
        for (long long x = threadIdx.x; x < w; x += blockDim.x) {
            long long ox0, ox1;
            win.out_cols(x, ox0, ox1);
            f(row * w + x, p * oh * ow, y, x, oy0, oy1, ox0, ox1);
        }
    }
}

// Σ of src [., w] over [y0, y1) × [x0, x1): each row summed, then the rows added in
// order (the CPU's order).
template <typename T>
__device__ __forceinline__ float window_sum(const T* __restrict__ src, long long w, long long y0, long long y1,
                                            long long x0, long long x1) {
    float s = 0.0f;
    for (long long yy = y0; yy < y1; ++yy) {
        float r = 0.0f;
        for (long long xx = x0; xx < x1; ++xx) r += to_f32(src[yy * w + xx]);
        s += r;
    }
    return s;
}

}  // namespace pl

// The window geometry every max / average pooling entry point takes first (Pool2dGeom).
#define MEDSYN_POOL_GEOM_PARAMS                                                                        \
    long long planes, long long h, long long w, long long kh, long long kw, long long sh, long long sw, \
        long long ph, long long pw, long long oh, long long ow
#define MEDSYN_POOL_GEOM_ARGS planes, h, w, kh, kw, sh, sw, ph, pw, oh, ow

// ---------------------------------------------------------------------------------
// Max pool.

// out[p, oy, ox] = max over the window clipped to the input (padding is −inf);
// idx = flat in-plane index y·w + x of the maximum (first maximum; a NaN replaces the
// current best, so the last NaN wins, as the CPU's loop). Block (BX, BY): BY output
// rows (planes·oh of them) per block, BX threads across ow; grid any (block-strided);
// no smem.
template <typename T>
__device__ void max_pool2d_impl(MEDSYN_POOL_GEOM_PARAMS, const T* __restrict__ x, T* __restrict__ out,
                                unsigned int* __restrict__ idx) {
    const pl::Windows win{{MEDSYN_POOL_GEOM_ARGS}};
    pl::each_output(planes, h, w, oh, ow, x, win,
                    [&](long long o, const T* src, long long y0, long long y1, long long x0, long long x1, long long,
                        long long) {
                        float best = medsyn::neg_inf();
                        long long at = y0 * w + x0;
                        for (long long yy = y0; yy < y1; ++yy)
                            for (long long xx = x0; xx < x1; ++xx) {
                                const float v = pl::to_f32(src[yy * w + xx]);
                                if (v > best || isnan(v)) {
                                    best = v;
                                    at = yy * w + xx;
                                }
                            }
                        out[o] = pl::from_f32<T>(best);
                        idx[o] = (unsigned int)at;
                    });
}
MEDSYN_DTYPES(max_pool2d,
              (MEDSYN_POOL_GEOM_PARAMS, const T* __restrict__ x, T* __restrict__ out, unsigned int* __restrict__ idx),
              (MEDSYN_POOL_GEOM_ARGS, x, out, idx))

// dx[p, y, x] = Σ dy[p, oy, ox] over outputs (in (oy, ox) order) whose saved argmax is
// y·w + x. Block (BX, BY): BY input rows (planes·h) per block, BX threads across w;
// grid any (block-strided); no smem.
template <typename T>
__device__ void max_pool2d_backward_impl(MEDSYN_POOL_GEOM_PARAMS, const T* __restrict__ dy,
                                         const unsigned int* __restrict__ idx, T* __restrict__ dx) {
    const pl::Windows win{{MEDSYN_POOL_GEOM_ARGS}};
    pl::each_input(planes, h, w, oh, ow, win,
                   [&](long long i, long long at, long long y, long long xx, long long oy0, long long oy1,
                       long long ox0, long long ox1) {
                       const T* g = dy + at;
                       const unsigned int* ix = idx + at;
                       const unsigned int target = (unsigned int)(y * w + xx);
                       float acc = 0.0f;
                       for (long long oy = oy0; oy < oy1; ++oy)
                           for (long long ox = ox0; ox < ox1; ++ox)
                               if (ix[oy * ow + ox] == target) acc += pl::to_f32(g[oy * ow + ox]);
                       dx[i] = pl::from_f32<T>(acc);
                   });
}
MEDSYN_DTYPES(max_pool2d_backward,
              (MEDSYN_POOL_GEOM_PARAMS, const T* __restrict__ dy, const unsigned int* __restrict__ idx,
               T* __restrict__ dx),
              (MEDSYN_POOL_GEOM_ARGS, dy, idx, dx))

// ---------------------------------------------------------------------------------
// Average pool.

// out = (Σ over the clipped window, row sums added in order) / divisor (zero padding);
// an empty window or a zero divisor gives 0, as on the CPU. Launch as max_pool2d.
template <typename T>
__device__ void avg_pool2d_impl(MEDSYN_POOL_GEOM_PARAMS, int count_include_pad, const T* __restrict__ x,
                                T* __restrict__ out) {
    const pl::Windows win{{MEDSYN_POOL_GEOM_ARGS}};
    pl::each_output(planes, h, w, oh, ow, x, win,
                    [&](long long o, const T* src, long long y0, long long y1, long long x0, long long x1,
                        long long oy, long long ox) {
                        const long long div = pl::avg_divisor(win.g, oy, ox, count_include_pad != 0);
                        float v = 0.0f;
                        if (y0 < y1 && x0 < x1 && div != 0)
                            v = pl::window_sum(src, w, y0, y1, x0, x1) / (float)div;
                        out[o] = pl::from_f32<T>(v);
                    });
}
MEDSYN_DTYPES(avg_pool2d,
              (MEDSYN_POOL_GEOM_PARAMS, int count_include_pad, const T* __restrict__ x, T* __restrict__ out),
              (MEDSYN_POOL_GEOM_ARGS, count_include_pad, x, out))

// dx[p, y, x] = Σ dy[p, oy, ox] / divisor(oy, ox) over the outputs (in (oy, ox) order)
// whose clipped window covers (y, x), skipping empty windows and zero divisors.
// Launch as max_pool2d_backward.
template <typename T>
__device__ void avg_pool2d_backward_impl(MEDSYN_POOL_GEOM_PARAMS, int count_include_pad, const T* __restrict__ dy,
                                         T* __restrict__ dx) {
    const pl::Windows win{{MEDSYN_POOL_GEOM_ARGS}};
    pl::each_input(planes, h, w, oh, ow, win,
                   [&](long long i, long long at, long long, long long, long long oy0, long long oy1, long long ox0,
                       long long ox1) {
                       const T* g = dy + at;
                       float acc = 0.0f;
                       for (long long oy = oy0; oy < oy1; ++oy)
                           for (long long ox = ox0; ox < ox1; ++ox) {
                               // (y, x) is inside the input, so the covering raw window's
                               // clipped form contains it and is non-empty.
                               const long long div = pl::avg_divisor(win.g, oy, ox, count_include_pad != 0);
                               if (div == 0) continue;
                               acc += pl::to_f32(g[oy * ow + ox]) / (float)div;
                           }
                       dx[i] = pl::from_f32<T>(acc);
                   });
}
MEDSYN_DTYPES(avg_pool2d_backward,
              (MEDSYN_POOL_GEOM_PARAMS, int count_include_pad, const T* __restrict__ dy, T* __restrict__ dx),
              (MEDSYN_POOL_GEOM_ARGS, count_include_pad, dy, dx))

// ---------------------------------------------------------------------------------
// Adaptive average pool.

// out[p, oy, ox] = mean of x over bin rows × bin cols (row sums added in order).
// Launch as max_pool2d (rows = planes·oh).
template <typename T>
__device__ void adaptive_avg_pool2d_impl(long long planes, long long h, long long w, long long oh, long long ow,
                                         const T* __restrict__ x, T* __restrict__ out) {
    pl::each_output(planes, h, w, oh, ow, x, pl::Bins{h, w, oh, ow},
                    [&](long long o, const T* src, long long y0, long long y1, long long x0, long long x1, long long,
                        long long) {
                        const float s = pl::window_sum(src, w, y0, y1, x0, x1);
                        out[o] = pl::from_f32<T>(s / (float)((y1 - y0) * (x1 - x0)));
                    });
}
MEDSYN_DTYPES(adaptive_avg_pool2d,
              (long long planes, long long h, long long w, long long oh, long long ow, const T* __restrict__ x,
               T* __restrict__ out),
              (planes, h, w, oh, ow, x, out))

// dx[p, y, x] = Σ dy[p, oy, ox] / bin size over the bins (in (oy, ox) order) that
// contain (y, x) (bins may overlap). Launch as max_pool2d_backward (rows = planes·h).
template <typename T>
__device__ void adaptive_avg_pool2d_backward_impl(long long planes, long long h, long long w, long long oh,
                                                  long long ow, const T* __restrict__ dy, T* __restrict__ dx) {
    const pl::Bins bins{h, w, oh, ow};
    // Candidate bins for (y, x): oy in [⌊y·oh/h⌋, ⌈(y+1)·oh/h⌉) (likewise ox), membership
    // re-checked.
    pl::each_input(planes, h, w, oh, ow, bins,
                   [&](long long i, long long at, long long y, long long xx, long long oy0, long long oy1,
                       long long ox0, long long ox1) {
                       const T* g = dy + at;
                       float acc = 0.0f;
                       for (long long oy = oy0; oy < oy1; ++oy) {
                           long long by0, by1;
                           bins.rows(oy, by0, by1);
                           if (y < by0 || y >= by1) continue;
                           for (long long ox = ox0; ox < ox1; ++ox) {
                               long long bx0, bx1;
                               bins.cols(ox, bx0, bx1);
                               if (xx < bx0 || xx >= bx1) continue;
                               acc += pl::to_f32(g[oy * ow + ox]) / (float)((by1 - by0) * (bx1 - bx0));
                           }
                       }
                       dx[i] = pl::from_f32<T>(acc);
                   });
}
MEDSYN_DTYPES(adaptive_avg_pool2d_backward,
              (long long planes, long long h, long long w, long long oh, long long ow, const T* __restrict__ dy,
               T* __restrict__ dx),
              (planes, h, w, oh, ow, dy, dx))

/*
Launch contract (pool.cu)
=========================
Layout: x, dx contiguous [planes, h, w] (planes = N·C); out, dy contiguous
[planes, oh, ow]; idx contiguous u32 [planes, oh, ow] (flat in-plane argmax y·w + x).
Geometry as cpu::pool::Pool2dGeom, validated by src/ops/pool.rs::pool_geom before
launching: kernel (kh, kw) >= 1, stride (sh, sw) >= 1, 2·padding <= kernel,
oh = (h + 2ph − kh)/sh + 1 (likewise ow), h·w < 2^32. Adaptive: h, w, oh, ow >= 1.
Suffix = storage type T (compute f32). Every output element is written (dx too),
so no zeroing is needed.

Forward kernels (rows = planes·oh output rows): block (BX, BY) with BX =
min(128, roundup32(ow)), BY = max(1, 128 / BX); grid = min(ceil(rows/BY), 65535·k)
(any grid works); no smem.
Backward kernels (rows = planes·h input rows): block (BX, BY) with BX =
min(128, roundup32(w)), BY = max(1, 128 / BX); grid = min(ceil(rows/BY), 65535·k);
no smem.

max_pool2d_T(i64 planes, h, w, kh, kw, sh, sw, ph, pw, oh, ow, const T* x, T* out, u32* idx)
    mirrors cpu::pool::max_pool2d (bit-identical: no arithmetic).
max_pool2d_backward_T(i64 planes, h, w, kh, kw, sh, sw, ph, pw, oh, ow,
                      const T* dy, const u32* idx, T* dx)
    mirrors cpu::pool::max_pool2d_backward (same summation order: bit-identical in f32).
avg_pool2d_T(i64 planes, h, w, kh, kw, sh, sw, ph, pw, oh, ow, int count_include_pad,
             const T* x, T* out)                mirrors cpu::pool::avg_pool2d.
avg_pool2d_backward_T(i64 planes, h, w, kh, kw, sh, sw, ph, pw, oh, ow,
                      int count_include_pad, const T* dy, T* dx)
    mirrors cpu::pool::avg_pool2d_backward (same order; f32 bit-identical).
adaptive_avg_pool2d_T(i64 planes, h, w, oh, ow, const T* x, T* out)
    mirrors cpu::pool::adaptive_avg_pool2d.
adaptive_avg_pool2d_backward_T(i64 planes, h, w, oh, ow, const T* dy, T* dx)
    mirrors cpu::pool::adaptive_avg_pool2d_backward.
(All parameters named h, w, ... above are i64, in the order written.)
*/
