// Conv2d forward as an implicit GEMM (no im2col buffer): per group, output pixels (n, oh,
// ow) x output channels of the group, depth cg*kh*kw, gathered straight from the input;
// OIHW weights as PyTorch; stride, padding, dilation, groups; optional bias; NCHW output.
// Two tensor-core paths for bf16/f16 (mma.sync m16n8k16, f32 accumulation, ldmatrix):
//  * conv2d_fwd: any geometry, from NCHW x and OIHW w directly (A tile gathered element by
//    element through registers, weight tile by cp.async, double-buffered);
//  * conv2d_fwd_nhwc[_n64]: x transposed to NHWC and w to OHWI first (conv2d_nchw_to_nhwc,
//    conv2d_weight_to_ohwi), then both operands stream by 16-byte cp.async through a
//    4-stage pipeline (C/groups % 8 == 0), optionally with the depth split over blocks
//    (f32 partial sums in a workspace + conv2d_splitk_finish) for grids that would not
//    fill the GPU. About 2-4x faster than conv2d_fwd.
// f32 on CUDA cores (tiled SIMT GEMM, fmaf). CPU twin: src/backend/cpu/conv.rs
// conv2d_forward (Conv2dGeom). "Launch contract" at the end of the file.
#include "common.cuh"

namespace medsyn_conv {

using medsyn::from_f32;
using medsyn::to_f32;

// Tensor-core tile: BM output pixels x BN output channels per block, BK deep per stage;
// 8 warps as 2 (M) x 4 (N), each warp 64 x 32 (4 m16 x 4 n8 mma tiles).
constexpr int BM = 128, BN = 128, BK = 32, THREADS = 256;
constexpr int LDS = BK + 8;                  // shared row stride (elements): 80 bytes, ldmatrix conflict-free
constexpr int A_ELEMS = BM * LDS;            // A tile [BM][LDS] (pixel rows, k contiguous)
constexpr int B_ELEMS = BN * LDS;            // B tile [BN][LDS] (channel rows, k contiguous)
constexpr int STAGE = A_ELEMS + B_ELEMS;     // elements per stage
constexpr int SMEM_TC = 2 * STAGE * 2;       // bytes, two stages of 16-bit elements: 40960
constexpr int LDC = BM + 8;                  // epilogue staging [BN][LDC] of T (reuses the stages)
static_assert(BN * LDC * 2 <= SMEM_TC, "epilogue tile fits the stages");
static_assert(SMEM_TC == 40960, "launch contract: f16/bf16 dynamic shared bytes");

// SIMT (f32) tile: 64 pixels x 64 channels x 16 deep, 256 threads of 4 x 4 outputs.
constexpr int SBM = 64, SBN = 64, SBK = 16;
constexpr int SMEM_F32 = 2 * SBK * SBN * 4;  // As [SBK][SBM] + Bs [SBK][SBN] floats: 8192
static_assert(SMEM_F32 == 8192 && SBM == SBN, "launch contract: f32 dynamic shared bytes");

// BEGIN PTX WRAPPERS (warp-level tensor-core and async-copy primitives)

__device__ __forceinline__ unsigned char* dyn_smem() {
    extern __shared__ __align__(16) unsigned char medsyn_conv_smem[];
    return medsyn_conv_smem;
}

__device__ __forceinline__ unsigned smem_u32(const void* p) {
    return static_cast<unsigned>(__cvta_generic_to_shared(p));
}

// ldmatrix .x4 (b16): lanes 8i..8i+7 pass the addresses of rows 0..7 (16 bytes each) of
// 8x8 matrix i; register r[i] of lane l receives row l/4, columns 2(l%4), 2(l%4)+1 of
// matrix i (lower column in the low half).
__device__ __forceinline__ void ldsm_x4(unsigned (&r)[4], const void* row_ptr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_u32(row_ptr)));
}

// d += A(16x16) * B(16x8), f32 accumulators. With g = lane/4, t = lane%4 (PTX ISA,
// "Matrix Fragments for mma.m16n8k16 with floating point type"):
//   a[0] = A[g][2t..2t+1]    a[1] = A[g+8][2t..2t+1]
//   a[2] = A[g][2t+8..2t+9]  a[3] = A[g+8][2t+8..2t+9]
//   b0 = B[2t..2t+1][g]      b1 = B[2t+8..2t+9][g]
//   d[0..1] = D[g][2t..2t+1] d[2..3] = D[g+8][2t..2t+1]
// (pairs packed low element first).
template <typename T>
__device__ __forceinline__ void mma16816(float (&d)[4], const unsigned (&a)[4], unsigned b0, unsigned b1);

template <>
__device__ __forceinline__ void mma16816<__nv_bfloat16>(float (&d)[4], const unsigned (&a)[4], unsigned b0,
                                                        unsigned b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

template <>
__device__ __forceinline__ void mma16816<__half>(float (&d)[4], const unsigned (&a)[4], unsigned b0, unsigned b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// 16-byte asynchronous global -> shared copy (both addresses 16-byte aligned).
__device__ __forceinline__ void cp_async16(void* smem, const void* gmem) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(smem_u32(smem)), "l"(gmem) : "memory");
}

__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }

// Wait until at most N of this thread's committed copy groups are still in flight.
template <int N>
__device__ __forceinline__ void cp_async_wait() {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

// END PTX WRAPPERS

// The raw 16 bits of a half / bfloat16 value.
template <typename T>
__device__ __forceinline__ unsigned bits16(T v) {
    unsigned short u;
    memcpy(&u, &v, 2);
    return u;
}

// The convolution's shape, as passed to the entry points (see the launch contract).
struct Geom {
    int N, C, H, W, O, KH, KW, OH, OW, sh, sw, ph, pw, dh, dw, groups;
};

// Epilogue of the tensor-core kernels: acc (+ bias) rounded to T, staged as
// Cs[channel][pixel] in the (idle) stage buffers, then written to y (NCHW) with
// consecutive threads on consecutive pixels. Called by all threads after a barrier.
template <typename T, int NT = 4>
__device__ __forceinline__ void store_tile(const float (&acc)[4][NT][4], T* cs, const T* __restrict__ bias,
                                           T* __restrict__ y, const Geom& g, int grp, int og, int n0,
                                           long long m0, long long M, long long P) {
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int wm = warp & 1, wn = warp >> 1, nvalid = og - n0;
    const int gq = lane >> 2, tq = lane & 3;
#pragma unroll
    for (int nt = 0; nt < NT; ++nt) {
#pragma unroll
        for (int e = 0; e < 2; ++e) {
            const int col = wn * (8 * NT) + nt * 8 + 2 * tq + e;
            const float bv = (bias && col < nvalid) ? to_f32(bias[(long long)grp * og + n0 + col]) : 0.f;
#pragma unroll
            for (int mt = 0; mt < 4; ++mt)
#pragma unroll
                for (int h = 0; h < 2; ++h) {
                    const int row = wm * 64 + mt * 16 + gq + 8 * h;
                    cs[col * LDC + row] = from_f32<T>(acc[mt][nt][2 * h + e] + bv);
                }
        }
    }
    __syncthreads();
    const int ar = tid & (BM - 1), ah = tid >> 7;
    const long long om = m0 + ar;
    if (om < M) {
        const long long img = om / P, p = om - img * P;
        T* yp = y + (img * g.O + (long long)grp * og + n0) * P + p;
#pragma unroll 4
        for (int col = ah; col < 32 * NT; col += THREADS / BM) {
            if (col < nvalid) yp[(long long)col * P] = cs[col * LDC + ar];
        }
    }
}

// Tensor-core body (T = __half or __nv_bfloat16). Block (blockIdx.x, blockIdx.y, blockIdx.z)
// computes output pixels [128 bx, +128) x channels [128 by, +128) of group bz.
template <typename T>
__device__ __forceinline__ void conv_tc(const T* __restrict__ x, const T* __restrict__ w,
                                        const T* __restrict__ bias, T* __restrict__ y, const Geom g) {
    T* smem = reinterpret_cast<T*>(dyn_smem());
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int wm = warp & 1, wn = warp >> 1;  // warp tile rows 64 wm.., columns 32 wn..
    const int cg = g.C / g.groups, og = g.O / g.groups, KHW = g.KH * g.KW, K = cg * KHW;
    const int grp = blockIdx.z;
    const long long P = (long long)g.OH * g.OW, M = (long long)g.N * P, HW = (long long)g.H * g.W;
    const long long m0 = (long long)blockIdx.x * BM;
    const int n0 = blockIdx.y * BN;

    // A gather role: this thread fills row ar (one output pixel) of the A tile, k columns
    // [16 ah, 16 ah + 16) of every stage. The pixel is fixed for the whole block.
    const int ar = tid & (BM - 1), ah = tid >> 7;
    const long long am = m0 + ar;
    const bool arow = am < M;
    const T* xrow = x;
    int iy0 = 0, ix0 = 0;
    if (arow) {
        const long long img = am / P;
        const int p = (int)(am - img * P), oy = p / g.OW, ox = p - oy * g.OW;
        iy0 = oy * g.sh - g.ph;
        ix0 = ox * g.sw - g.pw;
        xrow = x + (img * g.C + (long long)grp * cg) * HW;
    }
    // Weight rows of this block start at w + (grp*og + n0)*K; 16-byte copies need K % 8 == 0.
    const T* wblk = w + ((long long)grp * og + n0) * K;
    const bool wvec = (K % 8) == 0 && medsyn::aligned16(w);
    const int nvalid = og - n0;  // channels of this block that exist (>= 1)

    // 16 gathered A elements (k = kbase .. kbase+15 of this thread's pixel) packed in pairs.
    auto gather_a = [&](unsigned (&ra)[8], int kbase) {
        int ci = kbase / KHW;
        const int r = kbase - ci * KHW;
        int ki = r / g.KW, kj = r - ki * g.KW;
#pragma unroll
        for (int e = 0; e < 16; ++e) {
            unsigned v = 0u;
            if (arow && ci < cg) {
                const int iy = iy0 + ki * g.dh, ix = ix0 + kj * g.dw;
                if ((unsigned)iy < (unsigned)g.H && (unsigned)ix < (unsigned)g.W)
                    v = bits16(xrow[(long long)ci * HW + (long long)iy * g.W + ix]);
            }
            if (e & 1)
                ra[e >> 1] |= v << 16;
            else
                ra[e >> 1] = v;
            if (++kj == g.KW) {
                kj = 0;
                if (++ki == g.KH) {
                    ki = 0;
                    ++ci;
                }
            }
        }
    };
    auto store_a = [&](const unsigned (&ra)[8], int buf) {
        uint4* dst = reinterpret_cast<uint4*>(smem + buf * STAGE + ar * LDS + 16 * ah);
        dst[0] = make_uint4(ra[0], ra[1], ra[2], ra[3]);
        dst[1] = make_uint4(ra[4], ra[5], ra[6], ra[7]);
    };
    // Weight tile of stage kt into buffer buf: Bs[n][k] = w[grp*og + n0 + n][kt*BK + k]
    // (zero outside og x K). 16-byte cp.async chunks when wvec, else plain loads.
    auto load_b = [&](int buf, int kt) {
        T* bs = smem + buf * STAGE + A_ELEMS;
        const int k0 = kt * BK;
        if (wvec) {
#pragma unroll
            for (int i = 0; i < (BN * BK / 8) / THREADS; ++i) {
                const int idx = tid + i * THREADS, row = idx >> 2, c = idx & 3, gk = k0 + c * 8;
                T* dst = bs + row * LDS + c * 8;
                if (row < nvalid && gk < K) {
                    cp_async16(dst, wblk + (long long)row * K + gk);
                } else {
                    *reinterpret_cast<uint4*>(dst) = make_uint4(0u, 0u, 0u, 0u);
                }
            }
        } else {
#pragma unroll 4
            for (int i = 0; i < (BN * BK) / THREADS; ++i) {
                const int idx = tid + i * THREADS, row = idx >> 5, k = idx & 31, gk = k0 + k;
                bs[row * LDS + k] = (row < nvalid && gk < K) ? wblk[(long long)row * K + gk] : from_f32<T>(0.f);
            }
        }
    };

    float acc[4][4][4];
#pragma unroll
    for (int a = 0; a < 4; ++a)
#pragma unroll
        for (int b = 0; b < 4; ++b)
#pragma unroll
            for (int c = 0; c < 4; ++c) acc[a][b][c] = 0.f;

    const int KT = (K + BK - 1) / BK;
    unsigned ra[8];
    gather_a(ra, 16 * ah);
    store_a(ra, 0);
    load_b(0, 0);
    cp_async_commit();
    cp_async_wait<0>();
    __syncthreads();

#pragma unroll 1
    for (int kt = 0; kt < KT; ++kt) {
        const int cur = kt & 1;
        const bool more = kt + 1 < KT;
        if (more) {
            gather_a(ra, (kt + 1) * BK + 16 * ah);  // global loads in flight during the mma below
            load_b(cur ^ 1, kt + 1);
        }
        cp_async_commit();
        const T* as = smem + cur * STAGE;
        const T* bs = as + A_ELEMS;
#pragma unroll
        for (int kk = 0; kk < BK; kk += 16) {
            unsigned af[4][4], bfr[4][2];
#pragma unroll
            for (int mt = 0; mt < 4; ++mt)
                ldsm_x4(af[mt], as + (wm * 64 + mt * 16 + (lane & 15)) * LDS + kk + (lane >> 4) * 8);
#pragma unroll
            for (int np = 0; np < 2; ++np) {
                unsigned r[4];
                ldsm_x4(r, bs + (wn * 32 + np * 16 + (lane & 7) + ((lane >> 4) << 3)) * LDS + kk + ((lane >> 3) & 1) * 8);
                bfr[2 * np][0] = r[0];
                bfr[2 * np][1] = r[1];
                bfr[2 * np + 1][0] = r[2];
                bfr[2 * np + 1][1] = r[3];
            }
#pragma unroll
            for (int mt = 0; mt < 4; ++mt)
#pragma unroll
                for (int nt = 0; nt < 4; ++nt) mma16816<T>(acc[mt][nt], af[mt], bfr[nt][0], bfr[nt][1]);
        }
        if (more) store_a(ra, cur ^ 1);
        cp_async_wait<0>();
        __syncthreads();
    }

    store_tile<T>(acc, smem, bias, y, g, grp, og, n0, m0, M, P);
}

// f32 body on CUDA cores: block (bx, by, bz) computes pixels [64 bx, +64) x channels
// [64 by, +64) of group bz; thread (tx = tid % 16, ty = tid / 16) owns pixels tx + 16 i and
// channels ty + 16 j (i, j < 4).
__device__ __forceinline__ void conv_simt(const float* __restrict__ x, const float* __restrict__ w,
                                          const float* __restrict__ bias, float* __restrict__ y, const Geom g) {
    float* as = reinterpret_cast<float*>(dyn_smem());  // [SBK][SBM]
    float* bs = as + SBK * SBM;                        // [SBK][SBN]
    const int tid = threadIdx.x, tx = tid & 15, ty = tid >> 4;
    const int cg = g.C / g.groups, og = g.O / g.groups, KHW = g.KH * g.KW, K = cg * KHW;
    const int grp = blockIdx.z;
    const long long P = (long long)g.OH * g.OW, M = (long long)g.N * P, HW = (long long)g.H * g.W;
    const long long m0 = (long long)blockIdx.x * SBM;
    const int n0 = blockIdx.y * SBN, nvalid = og - n0;

    // Gather role: pixel row lm (fixed), k columns 4 lk .. 4 lk + 3 of each stage.
    const int lm = tid & (SBM - 1), lk = tid >> 6;
    const long long am = m0 + lm;
    const bool arow = am < M;
    const float* xrow = x;
    int iy0 = 0, ix0 = 0;
    if (arow) {
        const long long img = am / P;
        const int p = (int)(am - img * P), oy = p / g.OW, ox = p - oy * g.OW;
        iy0 = oy * g.sh - g.ph;
        ix0 = ox * g.sw - g.pw;
        xrow = x + (img * g.C + (long long)grp * cg) * HW;
    }
    // Weight role: channel row bn (fixed), k columns 4 bk .. 4 bk + 3.
    const int bn = tid >> 2, bk = tid & 3;
    const float* wrow = w + ((long long)grp * og + n0 + bn) * K;

    float acc[4][4];
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] = 0.f;

#pragma unroll 1
    for (int k0 = 0; k0 < K; k0 += SBK) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
            const int kl = 4 * lk + e, k = k0 + kl;
            float v = 0.f;
            if (arow && k < K) {
                const int ci = k / KHW, r = k - ci * KHW, ki = r / g.KW, kj = r - ki * g.KW;
                const int iy = iy0 + ki * g.dh, ix = ix0 + kj * g.dw;
                if ((unsigned)iy < (unsigned)g.H && (unsigned)ix < (unsigned)g.W)
                    v = xrow[(long long)ci * HW + (long long)iy * g.W + ix];
            }
            as[kl * SBM + lm] = v;
            const int kb = 4 * bk + e, kw = k0 + kb;
            bs[kb * SBN + bn] = (bn < nvalid && kw < K) ? wrow[kw] : 0.f;
        }
        __syncthreads();
#pragma unroll
        for (int k = 0; k < SBK; ++k) {
            float av[4], bv[4];
#pragma unroll
            for (int i = 0; i < 4; ++i) av[i] = as[k * SBM + tx + 16 * i];
#pragma unroll
            for (int j = 0; j < 4; ++j) bv[j] = bs[k * SBN + ty + 16 * j];
#pragma unroll
            for (int i = 0; i < 4; ++i)
#pragma unroll
                for (int j = 0; j < 4; ++j) acc[i][j] = fmaf(av[i], bv[j], acc[i][j]);
        }
        __syncthreads();
    }

#pragma unroll
    for (int i = 0; i < 4; ++i) {
        const long long m = m0 + tx + 16 * i;
        if (m >= M) continue;
        const long long img = m / P, p = m - img * P;
        float* yp = y + (img * g.O + (long long)grp * og + n0) * P + p;
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            const int col = ty + 16 * j;
            if (col < nvalid) {
                const float bv = bias ? bias[(long long)grp * og + n0 + col] : 0.f;
                yp[(long long)col * P] = acc[i][j] + bv;
            }
        }
    }
}

// ---- NHWC fast path (f16/bf16): the input transposed to [N, H, W, C] and the weight to
// [O, KH, KW, C/groups] first (conv2d_nchw_to_nhwc, conv2d_weight_to_ohwi), so that with
// depth ordered k = (ki*KW + kj)*cg + ci every 8 consecutive k of one pixel are 16
// contiguous bytes: both GEMM operands then stream by cp.async through a STAGES-deep
// shared-memory pipeline. Needs cg % 8 == 0.

constexpr int STAGES = 4;
// Dynamic shared bytes of the NHWC kernel with TBN channels per block (4 stages of A and B).
constexpr int smem_nhwc(int tbn) { return STAGES * (A_ELEMS + tbn * LDS) * 2; }
static_assert(smem_nhwc(128) == 81920 && smem_nhwc(64) == 61440, "launch contract: nhwc dynamic shared bytes");

// TBN = 128 (warp tiles 64 x 32) or 64 (warp tiles 64 x 16): channels per block.
template <typename T, int TBN>
__device__ __forceinline__ void conv_tc_nhwc(const T* __restrict__ xt, const T* __restrict__ wt,
                                             const T* __restrict__ bias, T* __restrict__ y, const Geom g,
                                             float* __restrict__ ws, int splits) {
    T* smem = reinterpret_cast<T*>(dyn_smem());
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int wm = warp & 1, wn = warp >> 1;
    const int cg = g.C / g.groups, og = g.O / g.groups, K = cg * g.KH * g.KW;
    const int grp = blockIdx.z / splits, split = blockIdx.z - grp * splits;
    // This block's share of the depth: stages [kt0, kt1) of KT (all of them when splits == 1).
    const int KT = (K + BK - 1) / BK;
    const int kt0 = (int)((long long)split * KT / splits), kt1 = (int)((long long)(split + 1) * KT / splits);
    const int nk = kt1 - kt0;
    const long long P = (long long)g.OH * g.OW, M = (long long)g.N * P;
    const long long m0 = (long long)blockIdx.x * BM;
    constexpr int NT = TBN / 32, TSTAGE = A_ELEMS + TBN * LDS;
    static_assert(TBN * LDC * 2 <= smem_nhwc(TBN), "epilogue tile fits the stages");
    const int n0 = blockIdx.y * TBN, nvalid = og - n0;

    // A role: pixel row ar (fixed), 16-byte chunks ah and ah + 2 of each stage's 4.
    const int ar = tid & (BM - 1), ah = tid >> 7;
    const long long am = m0 + ar;
    const bool arow = am < M;
    const T* ximg = xt;
    int iy0 = 0, ix0 = 0;
    if (arow) {
        const long long img = am / P;
        const int p = (int)(am - img * P), oy = p / g.OW, ox = p - oy * g.OW;
        iy0 = oy * g.sh - g.ph;
        ix0 = ox * g.sw - g.pw;
        ximg = xt + img * g.H * (long long)g.W * g.C + (long long)grp * cg;
    }
    // A chunk state for chunks c_i = ah + 2 i (i < 2) of the next stage to load: depth
    // k = kt*BK + 8 c_i as (ki, kj, ci); stages are loaded in order kt = kt0, kt0 + 1, ...,
    // so the state advances by BK per call (no divisions in the loop). ki >= KH: past K.
    int sci[2], ski[2], skj[2];
#pragma unroll
    for (int i = 0; i < 2; ++i) {
        const int k = kt0 * BK + 8 * (ah + 2 * i), kk = k / cg;
        sci[i] = k - kk * cg;
        ski[i] = kk / g.KW;
        skj[i] = kk - ski[i] * g.KW;
    }
    // B role: rows (tid + i*THREADS) >> 2, chunk tid & 3 (same for both i).
    const int bc = tid & 3;
    const T* wrow0 = wt + ((long long)grp * og + n0 + (tid >> 2)) * K + bc * 8;
    const long long wstep = (long long)(THREADS / 4) * K;  // rows advance by 64 per i

    auto load_stage = [&](int buf, int kt) {
        T* as = smem + buf * TSTAGE;
        T* bs = as + A_ELEMS;
        const int k0 = kt * BK;
#pragma unroll
        for (int i = 0; i < 2; ++i) {
            const int c = ah + 2 * i;
            T* dst = as + ar * LDS + c * 8;
            const int iy = iy0 + ski[i] * g.dh, ix = ix0 + skj[i] * g.dw;
            // ki < KH (k < K) and the tap inside the image (ki >= KH also fails iy < H
            // only sometimes, so test it explicitly)
            const bool ok = arow && ski[i] < g.KH && (unsigned)iy < (unsigned)g.H && (unsigned)ix < (unsigned)g.W;
            if (ok)
                cp_async16(dst, ximg + ((long long)iy * g.W + ix) * g.C + sci[i]);
            else
                *reinterpret_cast<uint4*>(dst) = make_uint4(0u, 0u, 0u, 0u);
            sci[i] += BK;
            while (sci[i] >= cg) {
                sci[i] -= cg;
                if (++skj[i] == g.KW) {
                    skj[i] = 0;
                    ++ski[i];
                }
            }
        }
        const bool kin = k0 + bc * 8 < K;
#pragma unroll
        for (int i = 0; i < (TBN * BK / 8) / THREADS; ++i) {
            const int row = (tid >> 2) + i * (THREADS / 4);
            T* dst = bs + row * LDS + bc * 8;
            if (kin && row < nvalid)
                cp_async16(dst, wrow0 + i * wstep + k0);
            else
                *reinterpret_cast<uint4*>(dst) = make_uint4(0u, 0u, 0u, 0u);
        }
    };

    float acc[4][NT][4];
#pragma unroll
    for (int a = 0; a < 4; ++a)
#pragma unroll
        for (int b = 0; b < NT; ++b)
#pragma unroll
            for (int c = 0; c < 4; ++c) acc[a][b][c] = 0.f;

#pragma unroll
    for (int s = 0; s < STAGES - 1; ++s) {
        if (s < nk) load_stage(s, kt0 + s);
        cp_async_commit();
    }
#pragma unroll 1
    for (int j = 0; j < nk; ++j) {
        cp_async_wait<STAGES - 2>();  // local stage j has landed (this thread's copies) ...
        __syncthreads();              // ... and everyone's; buffer (j-1) % STAGES is free
        if (j + STAGES - 1 < nk) load_stage((j + STAGES - 1) % STAGES, kt0 + j + STAGES - 1);
        cp_async_commit();
        const T* as = smem + (j % STAGES) * TSTAGE;
        const T* bs = as + A_ELEMS;
#pragma unroll
        for (int kk = 0; kk < BK; kk += 16) {
            unsigned af[4][4], bfr[NT][2];
#pragma unroll
            for (int mt = 0; mt < 4; ++mt)
                ldsm_x4(af[mt], as + (wm * 64 + mt * 16 + (lane & 15)) * LDS + kk + (lane >> 4) * 8);
#pragma unroll
            for (int np = 0; np < NT / 2; ++np) {
                unsigned r[4];
                ldsm_x4(r, bs + (wn * (8 * NT) + np * 16 + (lane & 7) + ((lane >> 4) << 3)) * LDS + kk + ((lane >> 3) & 1) * 8);
                bfr[2 * np][0] = r[0];
                bfr[2 * np][1] = r[1];
                bfr[2 * np + 1][0] = r[2];
                bfr[2 * np + 1][1] = r[3];
            }
#pragma unroll
            for (int mt = 0; mt < 4; ++mt)
#pragma unroll
                for (int nt = 0; nt < NT; ++nt) mma16816<T>(acc[mt][nt], af[mt], bfr[nt][0], bfr[nt][1]);
        }
    }
    cp_async_wait<0>();
    __syncthreads();
    if (ws == nullptr) {
        store_tile<T, NT>(acc, smem, bias, y, g, grp, og, n0, m0, M, P);
        return;
    }
    // Split depth: add the f32 partial sums (no bias) into ws (NCHW, zeroed by the caller),
    // staged as [channel][pixel] floats so that consecutive threads add consecutive pixels.
    constexpr int LDC32 = BM + 4;
    static_assert(TBN * LDC32 * 4 <= smem_nhwc(TBN), "f32 epilogue tile fits the stages");
    float* cs = reinterpret_cast<float*>(smem);
    const int gq = lane >> 2, tq = lane & 3;
#pragma unroll
    for (int nt = 0; nt < NT; ++nt)
#pragma unroll
        for (int e = 0; e < 2; ++e)
#pragma unroll
            for (int mt = 0; mt < 4; ++mt)
#pragma unroll
                for (int h = 0; h < 2; ++h)
                    cs[(wn * (8 * NT) + nt * 8 + 2 * tq + e) * LDC32 + wm * 64 + mt * 16 + gq + 8 * h] =
                        acc[mt][nt][2 * h + e];
    __syncthreads();
    if (arow) {
        const long long img = am / P, p = am - img * P;
        float* wp = ws + (img * g.O + (long long)grp * og + n0) * P + p;
#pragma unroll 4
        for (int col = ah; col < TBN; col += THREADS / BM)
            if (col < nvalid) atomicAdd(wp + (long long)col * P, cs[col * LDC32 + ar]);
    }
}

// x [N, C, H*W] -> xt [N, H*W, C] through a 32 x 33 shared tile; block (32, 8), grid
// (ceil(H*W/32), ceil(C/32), N).
template <typename T>
__device__ __forceinline__ void nchw_to_nhwc(const T* __restrict__ x, T* __restrict__ xt, int C, long long HW) {
    T* tile = reinterpret_cast<T*>(dyn_smem());  // [32][33]
    const int tx = threadIdx.x, ty = threadIdx.y;
    const long long p0 = (long long)blockIdx.x * 32;
    const int c0 = blockIdx.y * 32;
    const long long n = blockIdx.z;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
        const int c = c0 + ty + 8 * j;
        const long long p = p0 + tx;
        if (c < C && p < HW) tile[(ty + 8 * j) * 33 + tx] = x[(n * C + c) * HW + p];
    }
    __syncthreads();
#pragma unroll
    for (int j = 0; j < 4; ++j) {
        const long long p = p0 + ty + 8 * j;
        const int c = c0 + tx;
        if (c < C && p < HW) xt[(n * HW + p) * C + c] = tile[tx * 33 + ty + 8 * j];
    }
}

// w [O, cg, KH*KW] -> wt [O, KH*KW, cg] (grid-stride over O*cg*KH*KW elements).
template <typename T, typename I>
__device__ __forceinline__ void weight_to_ohwi_idx(const T* __restrict__ w, T* __restrict__ wt, I total, int cg, int KHW) {
    const I per = (I)cg * KHW;
    for (I i = (I)medsyn::global_tid(); i < total; i += (I)medsyn::grid_stride()) {
        const I o = i / per;
        const int r = (int)(i - o * per), kk = r / cg, ci = r - kk * cg;
        wt[i] = w[(o * cg + ci) * KHW + kk];
    }
}
template <typename T>
__device__ __forceinline__ void weight_to_ohwi(const T* __restrict__ w, T* __restrict__ wt, int O, int cg, int KHW) {
    const long long total = (long long)O * cg * KHW;
    if (total < (1ll << 31))
        weight_to_ohwi_idx<T, int>(w, wt, (int)total, cg, KHW);  // 32-bit divisions when they suffice
    else
        weight_to_ohwi_idx<T, long long>(w, wt, total, cg, KHW);
}

// y = ws (+ bias) as T, ws the split-depth f32 sums [N, O, P]; grid-stride.
template <typename T>
__device__ __forceinline__ void splitk_finish(const float* __restrict__ ws, const T* __restrict__ bias,
                                              T* __restrict__ y, long long total, int O, long long P) {
    for (long long i = medsyn::global_tid(); i < total; i += medsyn::grid_stride()) {
        float v = ws[i];
        if (bias) v += to_f32(bias[(i / P) % O]);
        y[i] = from_f32<T>(v);
    }
}

}  // namespace medsyn_conv

// ---------------------------------------------------------------------------------------
// Entry points.

#define MEDSYN_CONV_PARAMS                                                                               \
    (const T* x, const T* w, const T* bias, T* y, int N, int C, int H, int W, int O, int KH, int KW, int OH, \
     int OW, int sh, int sw, int ph, int pw, int dh, int dw, int groups)
#define MEDSYN_CONV_ARGS (x, w, bias, y, N, C, H, W, O, KH, KW, OH, OW, sh, sw, ph, pw, dh, dw, groups)

template <typename T>
__device__ __forceinline__ void conv2d_fwd_impl MEDSYN_CONV_PARAMS {
    medsyn_conv::conv_tc<T>(x, w, bias, y, medsyn_conv::Geom{N, C, H, W, O, KH, KW, OH, OW, sh, sw, ph, pw, dh, dw, groups});
}
template <>
__device__ __forceinline__ void conv2d_fwd_impl<float>(const float* x, const float* w, const float* bias, float* y,
                                                       int N, int C, int H, int W, int O, int KH, int KW, int OH,
                                                       int OW, int sh, int sw, int ph, int pw, int dh, int dw,
                                                       int groups) {
    medsyn_conv::conv_simt(x, w, bias, y, medsyn_conv::Geom{N, C, H, W, O, KH, KW, OH, OW, sh, sw, ph, pw, dh, dw, groups});
}

// conv2d_fwd_{f16,bf16}: y = conv2d(x, w) + bias on tensor cores; grid (ceil(N*OH*OW/128),
// ceil((O/groups)/128), groups), block 256, dynamic shared 40960 bytes.
MEDSYN_ENTRY_Q(conv2d_fwd, f16, __half, __launch_bounds__(256, 2), MEDSYN_CONV_PARAMS, MEDSYN_CONV_ARGS)
MEDSYN_ENTRY_Q(conv2d_fwd, bf16, __nv_bfloat16, __launch_bounds__(256, 2), MEDSYN_CONV_PARAMS, MEDSYN_CONV_ARGS)
// conv2d_fwd_f32: the same on CUDA cores; grid (ceil(N*OH*OW/64), ceil((O/groups)/64), groups),
// block 256, dynamic shared 8192 bytes.
MEDSYN_ENTRY_Q(conv2d_fwd, f32, float, __launch_bounds__(256, 4), MEDSYN_CONV_PARAMS, MEDSYN_CONV_ARGS)

#define MEDSYN_CONV_NHWC_PARAMS                                                                          \
    (const T* x, const T* w, const T* bias, T* y, int N, int C, int H, int W, int O, int KH, int KW, int OH, \
     int OW, int sh, int sw, int ph, int pw, int dh, int dw, int groups, float* ws, int splits)
#define MEDSYN_CONV_NHWC_ARGS (x, w, bias, y, N, C, H, W, O, KH, KW, OH, OW, sh, sw, ph, pw, dh, dw, groups, ws, splits)
template <typename T>
__device__ __forceinline__ void conv2d_fwd_nhwc_impl MEDSYN_CONV_NHWC_PARAMS {
    medsyn_conv::conv_tc_nhwc<T, 128>(x, w, bias, y, medsyn_conv::Geom{N, C, H, W, O, KH, KW, OH, OW, sh, sw, ph, pw, dh, dw, groups}, ws, splits);
}
template <typename T>
__device__ __forceinline__ void conv2d_fwd_nhwc_n64_impl MEDSYN_CONV_NHWC_PARAMS {
    medsyn_conv::conv_tc_nhwc<T, 64>(x, w, bias, y, medsyn_conv::Geom{N, C, H, W, O, KH, KW, OH, OW, sh, sw, ph, pw, dh, dw, groups}, ws, splits);
}
// conv2d_fwd_nhwc_{f16,bf16}: the same from xt [N,H,W,C] and wt [O,KH,KW,C/groups] (C/groups
// % 8 == 0), cp.async pipeline, optional split depth into ws; grid (ceil(N*OH*OW/128),
// ceil((O/groups)/128), groups*splits), block 256, dynamic shared 81920.
MEDSYN_ENTRY_Q(conv2d_fwd_nhwc, f16, __half, __launch_bounds__(256, 2), MEDSYN_CONV_NHWC_PARAMS, MEDSYN_CONV_NHWC_ARGS)
MEDSYN_ENTRY_Q(conv2d_fwd_nhwc, bf16, __nv_bfloat16, __launch_bounds__(256, 2), MEDSYN_CONV_NHWC_PARAMS, MEDSYN_CONV_NHWC_ARGS)
// conv2d_fwd_nhwc_n64_{f16,bf16}: as conv2d_fwd_nhwc with 64 channels per block; grid
// (ceil(N*OH*OW/128), ceil((O/groups)/64), groups*splits), block 256, dynamic shared 61440.
MEDSYN_ENTRY_Q(conv2d_fwd_nhwc_n64, f16, __half, __launch_bounds__(256, 2), MEDSYN_CONV_NHWC_PARAMS, MEDSYN_CONV_NHWC_ARGS)
MEDSYN_ENTRY_Q(conv2d_fwd_nhwc_n64, bf16, __nv_bfloat16, __launch_bounds__(256, 2), MEDSYN_CONV_NHWC_PARAMS, MEDSYN_CONV_NHWC_ARGS)

template <typename T>
__device__ __forceinline__ void conv2d_splitk_finish_impl(const float* ws, const T* bias, T* y, long long total, int O,
                                                          long long P) {
    medsyn_conv::splitk_finish<T>(ws, bias, y, total, O, P);
}
// conv2d_splitk_finish_{f32,f16,bf16}: y = ws + bias after a split-depth conv2d_fwd_nhwc*;
// grid-stride, block 256, no shared memory.
MEDSYN_DTYPES_LB(conv2d_splitk_finish, (256), (const float* ws, const T* bias, T* y, long long total, int O, long long P),
                 (ws, bias, y, total, O, P))

template <typename T>
__device__ __forceinline__ void conv2d_nchw_to_nhwc_impl(const T* x, T* xt, int C, long long HW) {
    medsyn_conv::nchw_to_nhwc<T>(x, xt, C, HW);
}
// conv2d_nchw_to_nhwc_{f32,f16,bf16}: xt[n][p][c] = x[n][c][p]; grid (ceil(HW/32), ceil(C/32), N),
// block (32, 8), dynamic shared 33*32*sizeof(T) bytes.
MEDSYN_DTYPES_LB(conv2d_nchw_to_nhwc, (256), (const T* x, T* xt, int C, long long HW), (x, xt, C, HW))

template <typename T>
__device__ __forceinline__ void conv2d_weight_to_ohwi_impl(const T* w, T* wt, int O, int cg, int KHW) {
    medsyn_conv::weight_to_ohwi<T>(w, wt, O, cg, KHW);
}
// conv2d_weight_to_ohwi_{f32,f16,bf16}: wt[o][kk][ci] = w[o][ci][kk]; grid-stride, block 256.
MEDSYN_DTYPES_LB(conv2d_weight_to_ohwi, (256), (const T* w, T* wt, int O, int cg, int KHW), (w, wt, O, cg, KHW))

// =======================================================================================
// Launch contract (the Rust launch side is written from this).
//
// Common: T is float (suffix f32), __half (f16), __nv_bfloat16 (bf16). Every entry point
// mirrors conv2d_forward (src/backend/cpu/conv.rs) with g the Conv2dGeom {n: N, c: C, h: H,
// w: W, o: O, kh: KH, kw: KW, stride: (sh, sw), padding: (ph, pw), dilation: (dh, dw), groups,
// oh: OH, ow: OW}. x: input [N, C, H, W], contiguous NCHW. w: weight [O, C/groups, KH, KW],
// contiguous OIHW (PyTorch's layout). bias: [O] or nullptr (no bias). y: output
// [N, O, OH, OW], contiguous; every element written (no zeroing needed). No operand aliases
// another. OH = (H + 2 ph - dh (KH - 1) - 1) / sh + 1, likewise OW (the caller computes
// them, >= 1); symmetric zero padding ph, pw >= 0; stride, dilation >= 1; groups divides C
// and O. Sizes: C/groups*KH*KW < 2^31, H*W and OH*OW < 2^31, N*C*H*W < 2^63 (offsets int64).
// Skip every launch when N*OH*OW == 0 or O == 0 (no grid dimension may be 0). grid.y and
// grid.z <= 65535. Results are rounded to T once, after the bias add (f32 accumulation).
// Dynamic shared memory above 48 KiB needs cuFuncSetAttribute(f,
// CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, bytes) once per function (fits sm_80
// and sm_90, two blocks per SM).
//
// 1. General path: conv2d_fwd_{f32,f16,bf16}
//    (const T* x, const T* w, const T* bias, T* y,
//     i32 N, i32 C, i32 H, i32 W, i32 O, i32 KH, i32 KW, i32 OH, i32 OW,
//     i32 sh, i32 sw, i32 ph, i32 pw, i32 dh, i32 dw, i32 groups)
//    f16 / bf16 (tensor cores): grid (ceil(N*OH*OW / 128), ceil((O/groups) / 128), groups),
//      block (256), dynamic shared 40960 bytes. The weight tile uses 16-byte cp.async when
//      (C/groups)*KH*KW % 8 == 0 and w is 16-byte aligned, else element loads (both correct).
//    f32 (CUDA cores): grid (ceil(N*OH*OW / 64), ceil((O/groups) / 64), groups), block (256),
//      dynamic shared 8192 bytes.
//
// 2. Fast path, f16 / bf16 with C/groups % 8 == 0 (every U-Net / ResNet conv but the
//    3-channel stem), launched in this order on one stream:
//    a. conv2d_nchw_to_nhwc_{f32,f16,bf16}(const T* x, T* xt, i32 C, i64 HW)
//       xt [N, H, W, C] (scratch, N*C*H*W elements): xt[(n*HW + p)*C + c] = x[(n*C + c)*HW + p]
//       with HW = H*W. grid (ceil(HW / 32), ceil(C / 32), N), block (32, 8),
//       dynamic shared 33*32*sizeof(T) bytes (2112 for f16/bf16, 4224 for f32).
//    b. conv2d_weight_to_ohwi_{f32,f16,bf16}(const T* w, T* wt, i32 O, i32 cg, i32 KHW)
//       wt [O, KH, KW, C/groups] (O*cg*KHW elements): wt[(o*KHW + kk)*cg + ci] =
//       w[(o*cg + ci)*KHW + kk], cg = C/groups, KHW = KH*KW. Grid-stride: grid any, e.g.
//       min(ceil(O*cg*KHW / 256), 4096), block (256), no shared memory. Depends on the
//       weights alone: cache wt while w is unchanged (inference) and skip this launch.
//    c. If splits > 1: zero ws (f32 [N, O, OH, OW], 4*N*O*OH*OW bytes), e.g.
//       cuMemsetD32Async.
//    d. conv2d_fwd_nhwc_{f16,bf16} or conv2d_fwd_nhwc_n64_{f16,bf16}
//       (const T* xt, const T* wt, const T* bias, T* y,
//        i32 N, i32 C, i32 H, i32 W, i32 O, i32 KH, i32 KW, i32 OH, i32 OW,
//        i32 sh, i32 sw, i32 ph, i32 pw, i32 dh, i32 dw, i32 groups, float* ws, i32 splits)
//       xt, wt from a, b (16-byte aligned: device allocations are). TBN = 128 (conv2d_fwd_nhwc,
//       dynamic shared 81920 bytes) or 64 (conv2d_fwd_nhwc_n64, dynamic shared 61440 bytes)
//       channels per block; grid (ceil(N*OH*OW / 128), ceil((O/groups) / TBN),
//       groups*splits), block (256). 1 <= splits <= ceil(C/groups*KH*KW / 32).
//       splits == 1: pass ws = nullptr; writes y (with bias) directly, deterministic.
//       splits > 1: ws must be the zeroed f32 buffer of c; the kernel adds f32 partial sums
//       into it with atomicAdd (bias and y untouched; the sum order, hence the last bits,
//       can vary from run to run), then run e.
//    e. (splits > 1 only) conv2d_splitk_finish_{f32,f16,bf16}
//       (const float* ws, const T* bias, T* y, i64 total, i32 O, i64 P)
//       y[i] = T(ws[i] + bias[(i / P) % O]) for i < total = N*O*OH*OW, P = OH*OW; bias may
//       be nullptr. Grid-stride: grid any, e.g. min(ceil(total / 256), 8192), block (256),
//       no shared memory.
//    Choice (measured on an H200, bf16 3x3 convs, benches/gpu/conv.rs): TBN = 64 when
//    O/groups <= 64, else 128; blocks = ceil(N*OH*OW/128) * ceil((O/groups)/TBN) * groups;
//    splits = clamp(floor(2 * SMs / blocks), 1, max(1, min(8, ceil(C/groups*KH*KW / 32) / 4)))
//    with SMs the multiprocessor count (132 on H100/H200): split only grids under two
//    blocks per SM.
