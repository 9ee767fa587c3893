// conv2d backward helpers: im2col into the "col" layout [C·KH·KW, N·OH·OW] (row
// c·KH·KW + ki·KW + kj, column n·OH·OW + oy·OW + ox) and its adjoint col2im as a gather (no
// atomics), for the cuBLAS GEMMs of src/backend/cuda/conv_backward.rs (grad weight = dYᵀ-ish
// GEMM against col, grad input = col2im(Wᵀ·dY)). CPU twin: backend::cpu::conv::conv2d_backward
// (its im2col / col2im over all images at once).
#include "common.cuh"

// col[r, n·P + oy·OW + ox] = x[n, c, oy·sh − ph + ki·dh, ox·sw − pw + kj·dw] (0 outside the
// image), r = c·KH·KW + ki·KW + kj, P = OH·OW. One thread per col element, grid-stride, 1-D
// blocks of 256, no smem.
template <typename T>
__device__ __forceinline__ void im2col_cn_impl(const T* __restrict__ x, T* __restrict__ col, int n, int c, int h,
                                               int w, int kh, int kw, int sh, int sw, int ph, int pw, int dh, int dw,
                                               int oh, int ow) {
    const long long p = (long long)oh * ow;
    const long long np = (long long)n * p;
    const long long total = (long long)c * kh * kw * np;
    const int khw = kh * kw;
    for (long long i = medsyn::global_tid(); i < total; i += medsyn::grid_stride()) {
        const long long r = i / np, j = i - r * np;  // r < C·KH·KW and P fit in int
        const long long img = j / p;
        const int q = (int)(j - img * p);
        const int oy = q / ow, ox = q - oy * ow;
        const int ch = (int)r / khw, k = (int)r - ch * khw;
        const int ki = k / kw, kj = k % kw;
        const int iy = oy * sh - ph + ki * dh, ix = ox * sw - pw + kj * dw;
        T v = medsyn::from_f32<T>(0.0f);
        if (iy >= 0 && iy < h && ix >= 0 && ix < w) v = x[((img * c + ch) * h + iy) * (long long)w + ix];
        col[i] = v;
    }
}

MEDSYN_DTYPES_LB(im2col_cn, (256),
                 (const T* __restrict__ x, T* __restrict__ col, int n, int c, int h, int w, int kh, int kw, int sh,
                  int sw, int ph, int pw, int dh, int dw, int oh, int ow),
                 (x, col, n, c, h, w, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow))

// dx[n, c, y, x] = Σ over (ki, kj) (ki outer) with y + ph − ki·dh = oy·sh, x + pw − kj·dw =
// ox·sw, 0 <= oy < OH, 0 <= ox < OW of dcol[c·KH·KW + ki·KW + kj, n·P + oy·OW + ox], summed in
// f32, stored as T. One thread per dx element (gather: no atomics, every element written),
// grid-stride, 1-D blocks of 256, no smem.
template <typename T>
__device__ __forceinline__ void col2im_cn_impl(const T* __restrict__ dcol, T* __restrict__ dx, int n, int c, int h,
                                               int w, int kh, int kw, int sh, int sw, int ph, int pw, int dh, int dw,
                                               int oh, int ow) {
    const long long p = (long long)oh * ow;
    const long long np = (long long)n * p;
    const long long hw = (long long)h * w;
    const long long total = (long long)n * c * hw;
    for (long long i = medsyn::global_tid(); i < total; i += medsyn::grid_stride()) {
        const long long nc = i / hw;  // the plane (n, c); H·W and C fit in int
        const int pix = (int)(i - nc * hw);
        const int y = pix / w, xx = pix - y * w;
        const long long img = nc / c;
        const int ch = (int)(nc - img * c);
        const long long colbase = img * p;
        float s = 0.0f;
        for (int ki = 0; ki < kh; ++ki) {
            const int ty = y + ph - ki * dh;
            if (ty < 0 || ty % sh != 0) continue;
            const int oy = ty / sh;
            if (oy >= oh) continue;
            const long long rowbase = (long long)(ch * kh + ki) * kw;
            for (int kj = 0; kj < kw; ++kj) {
                const int tx = xx + pw - kj * dw;
                if (tx < 0 || tx % sw != 0) continue;
                const int ox = tx / sw;
                if (ox >= ow) continue;
                s += medsyn::to_f32(dcol[(rowbase + kj) * np + colbase + (long long)oy * ow + ox]);
            }
        }
        dx[i] = medsyn::from_f32<T>(s);
    }
}

MEDSYN_DTYPES_LB(col2im_cn, (256),
                 (const T* __restrict__ dcol, T* __restrict__ dx, int n, int c, int h, int w, int kh, int kw, int sh,
                  int sw, int ph, int pw, int dh, int dw, int oh, int ow),
                 (dcol, dx, n, c, h, w, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow))

// Launch contract
// ---------------
// Geometry as backend::cpu::conv::Conv2dGeom: x [N, C, H, W] (NCHW, contiguous), kernel
// KH x KW, stride (sh, sw) >= 1, padding (ph, pw), dilation (dh, dw) >= 1, output OH x OW
// with OH = (H + 2·ph − dh·(KH − 1) − 1) / sh + 1 (likewise OW). Every int argument is >= 0
// (N may be 0: nothing to do) and so are the products H·W, OH·OW, C·KH·KW, H + 2·ph and
// W + 2·pw within int32; element counts (N·C·H·W, C·KH·KW·N·OH·OW) are computed in 64 bits.
// Groups do not appear: the col layout stacks every channel's rows, so group g's rows are
// [g·(C/groups)·KH·KW, (g + 1)·(C/groups)·KH·KW).
//
// im2col_cn_{f32,f16,bf16}(const T* x, T* col, int N, int C, int H, int W, int KH, int KW,
//                          int sh, int sw, int ph, int pw, int dh, int dw, int OH, int OW)
//   x: N·C·H·W elements; col: C·KH·KW·N·OH·OW elements, every one written.
//   grid: any 1-D (grid-stride; ceil(total / 256) capped), block 256 (1-D, <= 256 by the
//   launch bounds), shared 0. Copies values bit for bit (zeros outside the image).
//   Mirrors backend::cpu::conv::im2col (all images side by side instead of one tile).
//
// col2im_cn_{f32,f16,bf16}(const T* dcol, T* dx, int N, int C, int H, int W, int KH, int KW,
//                          int sh, int sw, int ph, int pw, int dh, int dw, int OH, int OW)
//   dcol: C·KH·KW·N·OH·OW elements (col layout); dx: N·C·H·W elements, every one written
//   (0 where no window covers the pixel). f32 sum over (ki, kj), ki outer, rounded once to T.
//   grid: any 1-D (grid-stride), block 256, shared 0. Mirrors backend::cpu::conv::col2im
//   (the adjoint of im2col; the CPU scatters per tile in T, this gathers in f32).
