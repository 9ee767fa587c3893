// Fused symmetric InfoNCE (CLIP / ConVIRT) over paired embeddings img, txt [B, d]: logits
// z_ij = s * img_i . txt_j (s = logit scale, used as given: no normalisation inside),
// loss = (sum_i rowlse_i + sum_j collse_j - 2 sum_i z_ii) / (2B), and its backward
// d img_i = s sum_j dz_ij txt_j, d txt_j = s sum_i dz_ij img_i, d s = sum_ij dz_ij img_i.txt_j
// with dz_ij = g/(2B) (softmax_row_i(j) + softmax_col_j(i) - 2[i=j]). Memory O(B d): the
// B x B logits exist only as on-chip tiles (tensor cores for bf16/f16, f32 accumulation;
// plain FMA tiles for f32), row/column log-sum-exps are merged online, and every reduction
// is in a fixed order (deterministic, no atomics).
// CPU twin: src/ops/loss/info_nce.rs (forward / InfoNceBack::backward).
// "Launch contract" at the end of the file.
#include "common.cuh"

namespace medsyn_nce {

using medsyn::from_f32;
using medsyn::to_f32;

constexpr int THREADS = 256;  // 8 warps in every kernel of this file
constexpr int WARPS = THREADS / 32;
constexpr float LOG2E = 1.4426950408889634f;
constexpr float LN2 = 0.6931471805599453f;

// +infinity (NVRTC has no INFINITY macro).
__device__ __forceinline__ float inf() { return __int_as_float(0x7f800000); }

// BEGIN PTX WRAPPERS (warp-level tensor-core and async-copy primitives)

__device__ __forceinline__ unsigned char* dyn_smem() {
    extern __shared__ __align__(16) unsigned char medsyn_nce_smem[];
    return medsyn_nce_smem;
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

// ldmatrix .x4 .trans: as ldsm_x4 but register r[i] of lane l receives the elements at
// rows 2(l%4) and 2(l%4)+1, column l/4 of matrix i (row 2(l%4) in the low half).
__device__ __forceinline__ void ldsm_x4_t(unsigned (&r)[4], const void* row_ptr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
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

// 2^x by the MUFU unit (ex2.approx.ftz: ~2 ulp, subnormal results flush to 0, 2^-inf = 0);
// plain exp2f adds range fix-ups around it that softmax weights do not need.
__device__ __forceinline__ float fast_exp2(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
    return y;
}

// END PTX WRAPPERS

__device__ __forceinline__ float shfl_xor(float v, int m) { return __shfl_xor_sync(0xffffffffu, v, m); }

// Online log-sum-exp state in log2 units: (m, s) stands for log2(s) + m. Merge b into a.
__device__ __forceinline__ void lse_merge(float& m_a, float& s_a, float m_b, float s_b) {
    const float m = fmaxf(m_a, m_b);
    if (m == -inf()) {
        m_a = -inf();
        s_a = 0.f;
        return;
    }
    s_a = s_a * fast_exp2(m_a - m) + s_b * fast_exp2(m_b - m);
    m_a = m;
}

// Whether rows of a [rows, d] operand with row stride ld can be copied as 16-byte chunks.
template <typename T>
__device__ __forceinline__ bool rows_vectorizable(const T* base, long long ld) {
    return (ld % (16 / (long long)sizeof(T))) == 0 && (reinterpret_cast<unsigned long long>(base) & 15ull) == 0;
}

// Copy the ROWS x COLS window (rows row0.., columns col0..) of a row-major [nrows, ncols]
// matrix g (row stride ld) into shared s (row stride lds); elements outside the matrix
// become zero. vec: 16-byte chunks wholly inside the matrix go by cp.async (complete at the
// next cp_async_wait); all other elements by plain loads (visible after __syncthreads).
template <typename T, int ROWS, int COLS>
__device__ __forceinline__ void load_window(T* s, int lds, const T* g, long long ld, int row0, int nrows, int col0,
                                            int ncols, bool vec) {
    constexpr int EPC = 16 / (int)sizeof(T);  // elements per 16-byte chunk
    constexpr int CH = COLS / EPC;
    static_assert(COLS % EPC == 0, "chunked columns");
#pragma unroll 1
    for (int idx = threadIdx.x; idx < ROWS * CH; idx += THREADS) {
        const int r = idx / CH, c = idx % CH, row = row0 + r, col = col0 + c * EPC;
        T* dst = s + r * lds + c * EPC;
        if (vec && row < nrows && col + EPC <= ncols) {
            cp_async16(dst, g + (long long)row * ld + col);
        } else {
#pragma unroll
            for (int e = 0; e < EPC; ++e)
                dst[e] = (row < nrows && col + e < ncols) ? g[(long long)row * ld + col + e] : from_f32<T>(0.f);
        }
    }
}

// acc[MT][NT][4] += A (16MT x K) * B (K x 8NT) for one warp. A is row-major in shared memory
// (row stride lda) starting at the warp's first row and first k; B is stored either [n][k]
// (BNK, row stride ldb, starting at the warp's first n) or [k][n] (!BNK, starting at the
// first k, first n). acc[mt][nt][c] is row 16mt + g + 8(c>>1), column 8nt + 2t + (c&1)
// (g = lane/4, t = lane%4: the mma.sync accumulator layout). 16-bit T: ldmatrix + mma.sync
// (NT even); float: FMAs with the same accumulator layout.
template <typename T, int MT, int NT, bool BNK, int K>
__device__ __forceinline__ void warp_gemm(float (&acc)[MT][NT][4], const T* A, int lda, const T* Bm, int ldb) {
    const int lane = threadIdx.x & 31;
    static_assert(K % 16 == 0, "k steps of 16");
    if constexpr (sizeof(T) == 2) {
        static_assert(NT % 2 == 0, "ldmatrix.x4 loads two n8 tiles");
#pragma unroll
        for (int ks = 0; ks < K / 16; ++ks) {
            // A fragment: matrix i = lane/8 is rows 16mt + 8(i&1) .., columns 16ks + 8(i>>1) ..
            unsigned a[MT][4];
#pragma unroll
            for (int mt = 0; mt < MT; ++mt)
                ldsm_x4(a[mt], A + (mt * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * lda + ks * 16 + (lane >> 4) * 8);
#pragma unroll
            for (int np = 0; np < NT / 2; ++np) {
                unsigned b[4];
                if constexpr (BNK) {
                    // [n][k]: matrix i is n 16np + 8(i>>1) .., k 16ks + 8(i&1) .. -> b0,b1 of
                    // n tile 2np in b[0], b[1] and of n tile 2np+1 in b[2], b[3].
                    ldsm_x4(b, Bm + (np * 16 + (lane & 7) + (lane >> 4) * 8) * ldb + ks * 16 + ((lane >> 3) & 1) * 8);
                } else {
                    // [k][n], .trans: matrix i is k 16ks + 8(i&1) .., n 16np + 8(i>>1) ..
                    ldsm_x4_t(b, Bm + (ks * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * ldb + np * 16 + (lane >> 4) * 8);
                }
#pragma unroll
                for (int mt = 0; mt < MT; ++mt) {
                    mma16816<T>(acc[mt][2 * np], a[mt], b[0], b[1]);
                    mma16816<T>(acc[mt][2 * np + 1], a[mt], b[2], b[3]);
                }
            }
        }
    } else {
        const int g = lane >> 2, t = lane & 3;
#pragma unroll 4
        for (int k = 0; k < K; ++k) {
            float av[MT][2], bv[NT][2];
#pragma unroll
            for (int mt = 0; mt < MT; ++mt)
#pragma unroll
                for (int h = 0; h < 2; ++h) av[mt][h] = to_f32(A[(mt * 16 + g + 8 * h) * lda + k]);
#pragma unroll
            for (int nt = 0; nt < NT; ++nt)
#pragma unroll
                for (int e = 0; e < 2; ++e)
                    bv[nt][e] = to_f32(BNK ? Bm[(nt * 8 + 2 * t + e) * ldb + k] : Bm[k * ldb + nt * 8 + 2 * t + e]);
#pragma unroll
            for (int mt = 0; mt < MT; ++mt)
#pragma unroll
                for (int nt = 0; nt < NT; ++nt)
#pragma unroll
                    for (int c = 0; c < 4; ++c)
                        acc[mt][nt][c] = fmaf(av[mt][c >> 1], bv[nt][c & 1], acc[mt][nt][c]);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Forward, pass 1: partial log-sum-exps. Block (rg, cg) = (blockIdx.x, blockIdx.y) covers
// rows [rg*rpg, (rg+1)*rpg) and columns [cg*cpg, (cg+1)*cpg) of the logits (rpg, cpg
// multiples of 128) in 128 x 128 tiles, row block by row block. A tile is img rows x txt
// rows over d, streamed in k chunks of KC (64 for f16/bf16, 32 for f32) through a 2-stage
// cp.async pipeline; 8 warps as
// 2 (rows) x 4 (columns), each 64 x 32 (MT = 4, NT = 4). After each tile the rows'
// (max, sum) over the tile's columns are merged into running row states (one per row of the
// row block, flushed to row_part[cg] when its columns are done) and the columns' over the
// tile's rows into running column states for the whole column group (flushed to
// col_part[rg] at the end). Partials are (max, sum) in log2 units: row_part[(cg*2)*B + i]
// = max, row_part[(cg*2+1)*B + i] = sum; likewise col_part[(rg*2 + 0/1)*B + j].
// Shared memory: T As[2][128][KC+P], Bs[2][128][KC+P] (P = 8 for 16-bit, 4 for f32), then
// f32 rt_m/rt_s[4][128] (tile row partials per column warp), ct_m/ct_s[2][128] (tile column
// partials per row warp), rs_m/rs_s[128] (running rows), cs_m/cs_s[cpg] (running columns).
template <typename T>
struct FwdCfg {
    static constexpr int BM = 128, BN = 128, KC = sizeof(T) == 2 ? 64 : 32;
    static constexpr int LDK = KC + (sizeof(T) == 2 ? 8 : 4);
    static constexpr int MT = 4, NT = 4;  // warp tile 64 x 32
    static constexpr int STAGE = (BM + BN) * LDK;
    static constexpr int FIXED = 2 * STAGE * (int)sizeof(T) + (2 * 4 * BM + 2 * 2 * BN + 2 * BM) * 4;
    static constexpr int smem(int cpg) { return FIXED + 2 * cpg * 4; }
};

template <typename T>
__device__ __forceinline__ void infonce_fwd_stats_impl(const T* __restrict__ img, long long ld_img,
                                                       const T* __restrict__ txt, long long ld_txt,
                                                       const float* __restrict__ scale_ptr, int B, int d, int rpg,
                                                       int cpg, float* __restrict__ row_part,
                                                       float* __restrict__ col_part) {
    using C = FwdCfg<T>;
    constexpr int BM = C::BM, BN = C::BN, KC = C::KC, LDK = C::LDK, MT = C::MT, NT = C::NT;
    T* As = reinterpret_cast<T*>(dyn_smem());  // [2][BM][LDK]
    T* Bs = As + 2 * BM * LDK;                 // [2][BN][LDK]
    float* rt_m = reinterpret_cast<float*>(Bs + 2 * BN * LDK);
    float* rt_s = rt_m + 4 * BM;
    float* ct_m = rt_s + 4 * BM;
    float* ct_s = ct_m + 2 * BN;
    float* rs_m = ct_s + 2 * BN;
    float* rs_s = rs_m + BM;
    float* cs_m = rs_s + BM;
    float* cs_s = cs_m + cpg;

    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int g = lane >> 2, t = lane & 3;
    const int wm = warp >> 2, wn = warp & 3;  // warp rows 64wm.., columns 32wn..
    const float s2 = *scale_ptr * LOG2E;
    const int rg = blockIdx.x, cg = blockIdx.y;
    const int r_begin = rg * rpg, r_end = min(B, r_begin + rpg);
    const int c_begin = cg * cpg, c_end = min(B, c_begin + cpg);
    const bool ivec = rows_vectorizable(img, ld_img), tvec = rows_vectorizable(txt, ld_txt);
    const int nk = (d + KC - 1) / KC;

    for (int c = tid; c < cpg; c += THREADS) {
        cs_m[c] = -inf();
        cs_s[c] = 0.f;
    }

    for (int rb = r_begin; rb < r_end; rb += BM) {
        if (tid < BM) {  // thread tid owns running row state tid (init, merge, flush)
            rs_m[tid] = -inf();
            rs_s[tid] = 0.f;
        }
        for (int cb = c_begin; cb < c_end; cb += BN) {
            float acc[MT][NT][4];
#pragma unroll
            for (int mt = 0; mt < MT; ++mt)
#pragma unroll
                for (int nt = 0; nt < NT; ++nt)
#pragma unroll
                    for (int c = 0; c < 4; ++c) acc[mt][nt][c] = 0.f;

            __syncthreads();  // the previous tile's merges are done with rt/ct (also when d == 0)
            load_window<T, BM, KC>(As, LDK, img, ld_img, rb, B, 0, d, ivec);
            load_window<T, BN, KC>(Bs, LDK, txt, ld_txt, cb, B, 0, d, tvec);
            cp_async_commit();
            for (int kc = 0; kc < nk; ++kc) {
                if (kc + 1 < nk) {  // stage (kc+1)&1 was last read in iteration kc-1 (synced)
                    const int st = (kc + 1) & 1;
                    load_window<T, BM, KC>(As + st * BM * LDK, LDK, img, ld_img, rb, B, (kc + 1) * KC, d, ivec);
                    load_window<T, BN, KC>(Bs + st * BN * LDK, LDK, txt, ld_txt, cb, B, (kc + 1) * KC, d, tvec);
                }
                cp_async_commit();
                cp_async_wait<1>();  // chunk kc has landed
                __syncthreads();
                const int st = kc & 1;
                warp_gemm<T, MT, NT, true, KC>(acc, As + st * BM * LDK + wm * 64 * LDK, LDK,
                                               Bs + st * BN * LDK + wn * 32 * LDK, LDK);
                __syncthreads();
            }

            // Logits in log2 units; rows or columns past B are -inf.
#pragma unroll
            for (int mt = 0; mt < MT; ++mt)
#pragma unroll
                for (int nt = 0; nt < NT; ++nt)
#pragma unroll
                    for (int c = 0; c < 4; ++c) {
                        const int row = rb + wm * 64 + mt * 16 + g + (c >> 1) * 8;
                        const int col = cb + wn * 32 + nt * 8 + 2 * t + (c & 1);
                        acc[mt][nt][c] = (row < B && col < B) ? acc[mt][nt][c] * s2 : -inf();
                    }
            // Row partials of this warp's 32 columns: a row is spread over a quad's 4 lanes.
#pragma unroll
            for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
                for (int hh = 0; hh < 2; ++hh) {
                    float m = -inf();
#pragma unroll
                    for (int nt = 0; nt < NT; ++nt) m = fmaxf(m, fmaxf(acc[mt][nt][hh * 2], acc[mt][nt][hh * 2 + 1]));
                    m = fmaxf(m, shfl_xor(m, 1));
                    m = fmaxf(m, shfl_xor(m, 2));
                    const float mu = m == -inf() ? 0.f : m;
                    float sum = 0.f;
#pragma unroll
                    for (int nt = 0; nt < NT; ++nt)
                        sum += fast_exp2(acc[mt][nt][hh * 2] - mu) + fast_exp2(acc[mt][nt][hh * 2 + 1] - mu);
                    sum += shfl_xor(sum, 1);
                    sum += shfl_xor(sum, 2);
                    if (t == 0) {
                        const int rl = wm * 64 + mt * 16 + g + hh * 8;
                        rt_m[wn * BM + rl] = m;
                        rt_s[wn * BM + rl] = sum;
                    }
                }
            }
            // Column partials of this warp's 64 rows: a column is spread over the 8 groups g.
#pragma unroll
            for (int nt = 0; nt < NT; ++nt) {
#pragma unroll
                for (int e = 0; e < 2; ++e) {
                    float m = -inf();
#pragma unroll
                    for (int mt = 0; mt < MT; ++mt) m = fmaxf(m, fmaxf(acc[mt][nt][e], acc[mt][nt][2 + e]));
                    m = fmaxf(m, shfl_xor(m, 4));
                    m = fmaxf(m, shfl_xor(m, 8));
                    m = fmaxf(m, shfl_xor(m, 16));
                    const float mu = m == -inf() ? 0.f : m;
                    float sum = 0.f;
#pragma unroll
                    for (int mt = 0; mt < MT; ++mt) sum += fast_exp2(acc[mt][nt][e] - mu) + fast_exp2(acc[mt][nt][2 + e] - mu);
                    sum += shfl_xor(sum, 4);
                    sum += shfl_xor(sum, 8);
                    sum += shfl_xor(sum, 16);
                    if (g == 0) {
                        const int cl = wn * 32 + nt * 8 + 2 * t + e;
                        ct_m[wm * BN + cl] = m;
                        ct_s[wm * BN + cl] = sum;
                    }
                }
            }
            __syncthreads();
            if (tid < BM) {
                float m = rs_m[tid], s = rs_s[tid];
#pragma unroll
                for (int w = 0; w < 4; ++w) lse_merge(m, s, rt_m[w * BM + tid], rt_s[w * BM + tid]);
                rs_m[tid] = m;
                rs_s[tid] = s;
            } else if (tid - BM < BN) {
                const int cl = tid - BM, cc = cb - c_begin + cl;
                float m = cs_m[cc], s = cs_s[cc];
#pragma unroll
                for (int w = 0; w < 2; ++w) lse_merge(m, s, ct_m[w * BN + cl], ct_s[w * BN + cl]);
                cs_m[cc] = m;
                cs_s[cc] = s;
            }
        }
        if (tid < BM && rb + tid < r_end) {
            row_part[(long long)(cg * 2) * B + rb + tid] = rs_m[tid];
            row_part[(long long)(cg * 2 + 1) * B + rb + tid] = rs_s[tid];
        }
    }
    __syncthreads();
    for (int c = tid; c < c_end - c_begin; c += THREADS) {
        col_part[(long long)(rg * 2) * B + c_begin + c] = cs_m[c];
        col_part[(long long)(rg * 2 + 1) * B + c_begin + c] = cs_s[c];
    }
}

// Forward, pass 2: for every pair i, merge the partials into the natural-log
// row_lse[i] (over the ncg column groups) and col_lse[i] (over the nrg row groups), the
// positive logit z_ii = s img_i . txt_i, and the block's sum of row_lse + col_lse - 2 z_ii
// into partial[blockIdx.x] (fixed order). One warp per pair, 8 pairs per block.
template <typename T>
__device__ __forceinline__ void infonce_fwd_finish_impl(const float* __restrict__ row_part, int ncg,
                                                        const float* __restrict__ col_part, int nrg,
                                                        const T* __restrict__ img, long long ld_img,
                                                        const T* __restrict__ txt, long long ld_txt,
                                                        const float* __restrict__ scale_ptr, int B, int d,
                                                        float* __restrict__ row_lse, float* __restrict__ col_lse,
                                                        float* __restrict__ partial) {
    __shared__ float terms[WARPS];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int i = blockIdx.x * WARPS + warp;
    float term = 0.f;
    if (i < B) {  // warp-uniform
        float dot = 0.f;
        for (int k = lane; k < d; k += 32)
            dot += to_f32(img[(long long)i * ld_img + k]) * to_f32(txt[(long long)i * ld_txt + k]);
        dot = medsyn::warp_sum(dot);
        float rm = -inf(), rs = 0.f, cm = -inf(), cs = 0.f;
        for (int p = 0; p < ncg; ++p) lse_merge(rm, rs, row_part[(long long)(p * 2) * B + i], row_part[(long long)(p * 2 + 1) * B + i]);
        for (int p = 0; p < nrg; ++p) lse_merge(cm, cs, col_part[(long long)(p * 2) * B + i], col_part[(long long)(p * 2 + 1) * B + i]);
        const float rl = rm == -inf() ? -inf() : (rm + log2f(rs)) * LN2;
        const float cl = cm == -inf() ? -inf() : (cm + log2f(cs)) * LN2;
        if (lane == 0) {
            row_lse[i] = rl;
            col_lse[i] = cl;
        }
        term = rl + cl - 2.f * (*scale_ptr) * dot;
    }
    if (lane == 0) terms[warp] = term;
    __syncthreads();
    if (threadIdx.x == 0) {
        float s = 0.f;
        for (int w = 0; w < WARPS; ++w) s += terms[w];
        partial[blockIdx.x] = s;
    }
}

// G scaling for f16 (identity for bf16/f32). |G| = |s dz| <= 2 |s c| (p_row + p_col <= 2)
// is ~ s g/(2B) p: at real batch sizes it lies below f16's normal range (2^-14; subnormal
// from there, flushed to 0 below 2^-25), so the f16 copy of G would lose the off-diagonal
// terms. f16 stores G * 2^k instead, with 2^k chosen so that |s c| 2^k is in [2^13, 2^14)
// (then |G| 2^k < 2^15 < 65504, and entries down to 2^-29 of the largest stay normal), and
// the f32 epilogue multiplies 2^-k back out: powers of two, so the scaling itself is exact.
// bf16 has f32's exponent range and f32 is stored as is: both keep 2^k = 1 (unchanged).
template <typename T>
struct GScale {
    __device__ __forceinline__ static void get(float, float& up, float& down) {
        up = 1.f;
        down = 1.f;
    }
};
template <>
struct GScale<__half> {
    __device__ __forceinline__ static void get(float sc, float& up, float& down) {
        const int be = (__float_as_int(sc) >> 23) & 0xff;  // biased exponent of |s c|
        if (be == 0 || be == 0xff) {  // zero, f32-subnormal, inf or NaN: leave G unscaled
            up = 1.f;
            down = 1.f;
            return;
        }
        // |sc| in [2^e, 2^(e+1)), e = be - 127 in [-126, 127]; 2^k = 2^(13 - e), k in
        // [-114, 126] so that 2^k and 2^-k are both normal f32 (e < -113 keeps 2^126).
        const int k = min(126, 13 - (be - 127));
        up = __int_as_float((127 + k) << 23);
        down = __int_as_float((127 - k) << 23);
    }
};

// ---------------------------------------------------------------------------------------
// Backward, for one side: da_i = s sum_j dz_ij b_j over all j, with
// dz_ij = c (exp(z_ij - lse_a_i) + exp(z_ij - lse_b_j) - 2[i=j]), z_ij = s a_i . b_j,
// c = gout / (2B). Launched twice: (a, b, lse_a, lse_b) = (img, txt, row_lse, col_lse) gives
// d img and (txt, img, col_lse, row_lse) gives d txt (z is symmetric under the swap). When
// dscale_part is given, the block also writes sum over its rows and all j of dz_ij a_i . b_j
// (its share of d s). One block owns BM rows of a (resident in shared memory, zero padded to
// DP columns) and walks the column tiles b_j (BN rows of b each):
//   phase 1: Z = A B_j^T (BM x BN over DP), 8 warps as 2 x 4 (MT1 x NT1 m16/n8 tiles each);
//            G = s dz 2^k (as T; 2^k = 1 but for f16, see GScale) to shared memory,
//            masked to 0 outside B x B;
//   phase 2: dA += G B_j (BM x DP over BN), 8 warps as WM2 x WN2, each 32 rows x DP/WN2
//            columns kept in registers for the whole walk; written as dA 2^-k.
// nbuf = 2 double-buffers B_j (its copy overlaps the previous tile's math), nbuf = 1 loads
// it after each tile (less shared memory). Shared memory: T As[BM][LD], Bs[nbuf][BN][LD],
// Gs[BM][BN+P] (LD = DP + P; P = 8 for 16-bit, 4 for f32), then f32 la2[BM] (lse_a log2 e),
// lb2[2][BN] (lse_b log2 e), red[8].
template <typename T, int DP, int BM, int BN>
struct BwdCfg {
    static constexpr int P = sizeof(T) == 2 ? 8 : 4;
    static constexpr int LD = DP + P, LDG = BN + P;
    static constexpr int MT1 = BM / 32, NT1 = BN / 32;  // phase-1 warp tile (warps 2 x 4)
    static constexpr int WM2 = BM / 32, WN2 = WARPS / WM2;
    static constexpr int MT2 = 2, NT2 = DP / (8 * WN2);  // phase-2 warp tile 32 x DP/WN2
    static constexpr int FIXED = (BM * LD + BM * LDG) * (int)sizeof(T) + (BM + 2 * BN + WARPS) * 4;
    static constexpr int smem(int nbuf) { return FIXED + nbuf * BN * LD * (int)sizeof(T); }
    static_assert(BM % 32 == 0 && BN % 32 == 0 && WARPS % WM2 == 0 && DP % (8 * WN2) == 0, "tile shapes");
};

template <typename T, int DP, int BM, int BN>
__device__ __forceinline__ void infonce_bwd(const T* __restrict__ a, long long lda, const T* __restrict__ bm,
                                            long long ldb, const float* __restrict__ lse_a,
                                            const float* __restrict__ lse_b, const float* __restrict__ scale_ptr,
                                            const float* __restrict__ gout, int B, int d, T* __restrict__ da,
                                            long long ldda, float* __restrict__ dscale_part, int nbuf) {
    using C = BwdCfg<T, DP, BM, BN>;
    constexpr int LD = C::LD, LDG = C::LDG, MT1 = C::MT1, NT1 = C::NT1, MT2 = C::MT2, NT2 = C::NT2, WN2 = C::WN2;
    T* As = reinterpret_cast<T*>(dyn_smem());  // [BM][LD]
    T* Gs = As + BM * LD;                      // [BM][LDG]
    T* Bs = Gs + BM * LDG;                     // [nbuf][BN][LD]
    float* la2 = reinterpret_cast<float*>(Bs + nbuf * BN * LD);
    float* lb2 = la2 + BM;  // [2][BN]
    float* red = lb2 + 2 * BN;

    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int g = lane >> 2, t = lane & 3;
    const int wm1 = warp >> 2, wn1 = warp & 3;       // phase 1: rows 16 MT1 wm1.., columns 8 NT1 wn1..
    const int wm2 = warp / WN2, wn2 = warp % WN2;    // phase 2: rows 32 wm2.., columns 8 NT2 wn2..
    const float s = *scale_ptr, s2 = s * LOG2E;
    const float c = *gout / (2.f * (float)B);
    float g_up, g_down;  // G is stored times g_up; dA is written times g_down = 1 / g_up
    GScale<T>::get(s * c, g_up, g_down);
    const int i0 = blockIdx.x * BM;
    const bool avec = rows_vectorizable(a, lda), bvec = rows_vectorizable(bm, ldb);
    const int ntiles = (B + BN - 1) / BN;

    auto load_b_tile = [&](int j, int buf) {
        load_window<T, BN, DP>(Bs + buf * BN * LD, LD, bm, ldb, j * BN, B, 0, d, bvec);
        for (int x = tid; x < BN; x += THREADS) {
            const int col = j * BN + x;
            lb2[buf * BN + x] = col < B ? lse_b[col] * LOG2E : 0.f;
        }
    };
    load_window<T, BM, DP>(As, LD, a, lda, i0, B, 0, d, avec);
    for (int x = tid; x < BM; x += THREADS) la2[x] = i0 + x < B ? lse_a[i0 + x] * LOG2E : 0.f;
    load_b_tile(0, 0);
    cp_async_commit();

    // dacc[mt][nt][q]: row i0 + 32wm2 + 16mt + g + 8(q>>1), column 8(NT2 wn2 + nt) + 2t + (q&1).
    float dacc[MT2][NT2][4];
#pragma unroll
    for (int mt = 0; mt < MT2; ++mt)
#pragma unroll
        for (int nt = 0; nt < NT2; ++nt)
#pragma unroll
            for (int q = 0; q < 4; ++q) dacc[mt][nt][q] = 0.f;
    float ds_acc = 0.f;

    for (int j = 0; j < ntiles; ++j) {
        const int buf = nbuf == 2 ? (j & 1) : 0;
        if (nbuf == 2) {
            if (j + 1 < ntiles) load_b_tile(j + 1, (j + 1) & 1);  // buffer last read in tile j-1
            cp_async_commit();
            cp_async_wait<1>();  // tile j has landed
        } else {
            cp_async_wait<0>();
        }
        __syncthreads();
        const T* Bc = Bs + buf * BN * LD;
        const float* lb2c = lb2 + buf * BN;

        // Phase 1: z[mt][nt][q] = a_row . b_col, row 16 MT1 wm1 + 16mt + g + 8(q>>1),
        // column 8 NT1 wn1 + 8nt + 2t + (q&1) of the tile.
        float z[MT1][NT1][4];
#pragma unroll
        for (int mt = 0; mt < MT1; ++mt)
#pragma unroll
            for (int nt = 0; nt < NT1; ++nt)
#pragma unroll
                for (int q = 0; q < 4; ++q) z[mt][nt][q] = 0.f;
        warp_gemm<T, MT1, NT1, true, DP>(z, As + wm1 * MT1 * 16 * LD, LD, Bc + wn1 * NT1 * 8 * LD, LD);
#pragma unroll
        for (int mt = 0; mt < MT1; ++mt) {
#pragma unroll
            for (int nt = 0; nt < NT1; ++nt) {
#pragma unroll
                for (int hh = 0; hh < 2; ++hh) {
                    const int rl = wm1 * MT1 * 16 + mt * 16 + g + hh * 8;
                    const int cl = wn1 * NT1 * 8 + nt * 8 + 2 * t;
                    float gv[2];
#pragma unroll
                    for (int e = 0; e < 2; ++e) {
                        const int row = i0 + rl, col = j * BN + cl + e;
                        const float zz = z[mt][nt][hh * 2 + e];
                        gv[e] = 0.f;
                        if (row < B && col < B) {
                            const float z2 = zz * s2;
                            float dz = fast_exp2(z2 - la2[rl]) + fast_exp2(z2 - lb2c[cl + e]);
                            if (row == col) dz -= 2.f;
                            dz *= c;
                            ds_acc = fmaf(dz, zz, ds_acc);
                            gv[e] = dz * s * g_up;
                        }
                    }
                    Gs[rl * LDG + cl] = from_f32<T>(gv[0]);
                    Gs[rl * LDG + cl + 1] = from_f32<T>(gv[1]);
                }
            }
        }
        __syncthreads();  // G complete

        // Phase 2: dA += G B_j.
        warp_gemm<T, MT2, NT2, false, BN>(dacc, Gs + wm2 * 32 * LDG, LDG, Bc + wn2 * NT2 * 8, LD);
        __syncthreads();  // every warp is done with B_j and G
        if (nbuf != 2 && j + 1 < ntiles) {
            load_b_tile(j + 1, 0);
            cp_async_commit();
        }
    }
    cp_async_wait<0>();

#pragma unroll
    for (int mt = 0; mt < MT2; ++mt)
#pragma unroll
        for (int nt = 0; nt < NT2; ++nt)
#pragma unroll
            for (int q = 0; q < 4; ++q) {
                const int row = i0 + wm2 * 32 + mt * 16 + g + (q >> 1) * 8;
                const int col = (wn2 * NT2 + nt) * 8 + 2 * t + (q & 1);
                if (row < B && col < d) da[(long long)row * ldda + col] = from_f32<T>(dacc[mt][nt][q] * g_down);
            }

    if (dscale_part != nullptr) {
        const float v = medsyn::warp_sum(ds_acc);
        if (lane == 0) red[warp] = v;
        __syncthreads();
        if (tid == 0) {
            float total = 0.f;
            for (int w = 0; w < WARPS; ++w) total += red[w];
            dscale_part[blockIdx.x] = total;
        }
    }
}

}  // namespace medsyn_nce

// out[0] = factor * sum_{k<n} part[k], summed in a fixed order (deterministic). One block
// of 256 threads. Used for the loss (factor 1/(2B)) and for d(logit scale) (factor 1).
extern "C" __global__ void __launch_bounds__(256) infonce_reduce(const float* __restrict__ part, int n, float factor,
                                                                 float* __restrict__ out) {
    __shared__ float warp_part[medsyn_nce::WARPS];
    float s = 0.f;
    for (int k = threadIdx.x; k < n; k += blockDim.x) s += part[k];
    s = medsyn::warp_sum(s);
    if ((threadIdx.x & 31) == 0) warp_part[threadIdx.x >> 5] = s;
    __syncthreads();
    if (threadIdx.x == 0) {
        float total = 0.f;
        for (int w = 0; w < medsyn_nce::WARPS; ++w) total += warp_part[w];
        out[0] = total * factor;
    }
}

// ---------------------------------------------------------------------------------------
// Entry points.

using medsyn_nce::infonce_fwd_finish_impl;
using medsyn_nce::infonce_fwd_stats_impl;
// infonce_fwd_stats_{f32,f16,bf16}: partial row/column log-sum-exps; grid (nrg, ncg), block 256,
// dynamic shared FwdCfg<T>::smem(cpg).
MEDSYN_DTYPES_LB(infonce_fwd_stats, (256),
              (const T* img, long long ld_img, const T* txt, long long ld_txt, const float* scale, int B, int d,
               int rpg, int cpg, float* row_part, float* col_part),
              (img, ld_img, txt, ld_txt, scale, B, d, rpg, cpg, row_part, col_part))
// infonce_fwd_finish_{f32,f16,bf16}: row_lse, col_lse, per-block loss partials; grid
// ceil(B/8), block 256, 32 bytes of static shared memory.
MEDSYN_DTYPES_LB(infonce_fwd_finish, (256),
              (const float* row_part, int ncg, const float* col_part, int nrg, const T* img, long long ld_img,
               const T* txt, long long ld_txt, const float* scale, int B, int d, float* row_lse, float* col_lse,
               float* partial),
              (row_part, ncg, col_part, nrg, img, ld_img, txt, ld_txt, scale, B, d, row_lse, col_lse, partial))

#define MEDSYN_NCE_BWD_PARAMS                                                                              \
    (const T* a, long long lda, const T* b, long long ldb, const float* lse_a, const float* lse_b,         \
     const float* scale, const float* gout, int B, int d, T* da, long long ldda, float* dscale_part,       \
     int nbuf)
#define MEDSYN_NCE_BWD_ARGS (a, lda, b, ldb, lse_a, lse_b, scale, gout, B, d, da, ldda, dscale_part, nbuf)

// Backward instances per padded width DP (d <= DP): BM rows per block, BN columns per tile.
#define MEDSYN_NCE_BWD(DP, BM16, BN16, BM32, BN32)                                                          \
    template <typename T>                                                                                   \
    __device__ __forceinline__ void infonce_bwd_d##DP##_impl MEDSYN_NCE_BWD_PARAMS {                        \
        if constexpr (sizeof(T) == 2)                                                                       \
            medsyn_nce::infonce_bwd<T, DP, BM16, BN16> MEDSYN_NCE_BWD_ARGS;                                 \
        else                                                                                                \
            medsyn_nce::infonce_bwd<T, DP, BM32, BN32> MEDSYN_NCE_BWD_ARGS;                                 \
    }                                                                                                       \
    MEDSYN_DTYPES_LB(infonce_bwd_d##DP, (256), MEDSYN_NCE_BWD_PARAMS, MEDSYN_NCE_BWD_ARGS)

// infonce_bwd_d{DP}_{f32,f16,bf16}: one side's embedding gradient (+ d scale partials); grid
// ceil(B/BM), block 256, dynamic shared BwdCfg::smem(nbuf) (sizes in the launch contract).
//             DP  16-bit BM BN   f32 BM BN
MEDSYN_NCE_BWD(128, 64, 64, 32, 32)
MEDSYN_NCE_BWD(256, 64, 64, 32, 32)
MEDSYN_NCE_BWD(512, 64, 64, 32, 32)
MEDSYN_NCE_BWD(768, 32, 64, 32, 32)

// =======================================================================================
// Launch contract (the Rust launch side is written from this).
//
// Common: T = float (suffix f32), __half (f16), __nv_bfloat16 (bf16); everything else f32.
//   img, txt: [B, d] of T, element (i, k) at img[i*ld_img + k] (row stride in elements,
//   columns contiguous; 16-byte aligned rows with ld a multiple of 16/sizeof(T) use
//   cp.async, other layouts plain loads). scale: device pointer to one f32, the logit scale
//   s (1/temperature, or CLIP's exp(logit_scale) computed by the caller). gout: device
//   pointer to one f32, the upstream gradient of the loss. Requires B >= 1, d >= 1. Memory
//   is O(B d): no B x B buffer anywhere. Shared memory above 48 KiB needs
//   cuFuncSetAttribute(f, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, bytes).
//   Every result is deterministic (fixed reduction orders, no atomics).
//
// Forward (mirrors forward() in src/ops/loss/info_nce.rs), three launches in order:
//   1. infonce_fwd_stats_{f32,f16,bf16}
//      (const T* img, i64 ld_img, const T* txt, i64 ld_txt, const float* scale, i32 B, i32 d,
//       i32 rpg, i32 cpg, float* row_part, float* col_part)
//      rpg, cpg: rows / columns per group, multiples of 128; nrg = ceil(B/rpg),
//      ncg = ceil(B/cpg). Suggested: rpg = cpg = 128 * ceil(ceil(B/128) / 16), i.e. at most
//      16 x 16 groups (B = 65536: 4096, 256 blocks; B = 4096: 256).
//      grid (nrg, ncg), block (256), dynamic shared bytes 80896 + 8*cpg (every dtype;
//      B = 65536, cpg = 4096: 113664).
//      Scratch written in full: row_part f32 [2*ncg*B], col_part f32 [2*nrg*B].
//   2. infonce_fwd_finish_{f32,f16,bf16}
//      (const float* row_part, i32 ncg, const float* col_part, i32 nrg, const T* img,
//       i64 ld_img, const T* txt, i64 ld_txt, const float* scale, i32 B, i32 d,
//       float* row_lse, float* col_lse, float* partial)
//      grid (nf = ceil(B/8)), block (256), no dynamic shared memory. Writes row_lse[i]
//      (image->text, over j of z_ij), col_lse[j] (text->image, over i of z_ij), natural log,
//      f32 [B] each: save both for the backward; partial f32 [nf] scratch.
//   3. infonce_reduce(const float* partial, i32 nf, f32 factor = 1/(2B), float* loss)
//      grid (1), block (256). loss: f32 [1], the mean of the two cross-entropies.
//
// Backward (mirrors InfoNceBack::backward): DP = the smallest of 128, 256, 512, 768 that is
//   >= d (d > 768 is not supported here). BM = 64 (f16/bf16, DP <= 512), 32 (f16/bf16
//   DP = 768, and f32). nbuf = 2 (double-buffered, faster) when its shared size fits the
//   device, else 1. Dynamic shared bytes BwdCfg::smem(nbuf):
//        DP:                  128      256      512      768
//     f16/bf16 nbuf=1:      44832    77600   143136   154272
//     f16/bf16 nbuf=2:      62240   111392   209696   (too big)
//     f32 nbuf=1:           38816    71584   137120   202656 (sm_90 only)
//     f32 nbuf=2:           55712   104864   203168   (too big)
//   4. d img: infonce_bwd_d{DP}_{f32,f16,bf16}
//      (const T* a = img, i64 lda = ld_img, const T* b = txt, i64 ldb = ld_txt,
//       const float* lse_a = row_lse, const float* lse_b = col_lse, const float* scale,
//       const float* gout, i32 B, i32 d, T* da = dimg, i64 ldda, float* dscale_part, i32 nbuf)
//      grid (nb = ceil(B/BM)), block (256). Writes every element (rows < B, columns < d) of
//      dimg (row stride ldda). f16 keeps its G = s dz tiles scaled by a power of two derived
//      from s gout / (2B) (GScale: no f16 subnormal flush at large B); no launch-side effect. dscale_part: f32 [nb] scratch, or nullptr when the logit
//      scale needs no gradient.
//   5. d txt: the same kernel with (a, lda, b, ldb, lse_a, lse_b, da, ldda) =
//      (txt, ld_txt, img, ld_img, col_lse, row_lse, dtxt, ld_dtxt) and dscale_part = nullptr
//      (d s is symmetric: whichever of 4 / 5 runs may produce it).
//      Skip 4 or 5 when that embedding needs no gradient.
//   6. infonce_reduce(dscale_part, nb, 1.0f, dscale): dscale f32 [1] = dL/ds (the CPU
//      twin's grad_scale), when the scale needs a gradient.
