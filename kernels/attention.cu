// Fused scaled-dot-product attention, FlashAttention-2 design: forward (out, per-row
// log-sum-exp) and backward (dq, dk, dv) on tensor cores (mma.sync m16n8k16, bf16/f16 in,
// f32 accumulation) with an online softmax, so the Lq x Lk score matrix never reaches
// global memory; plus a plain f32 (CUDA-core) path. CPU twin: src/backend/cpu/attention.rs
// (attention_forward / attention_backward), semantics as there: scores scale * q.k, keys
// hidden by the key-padding keep mask (per batch, key) and/or causally (key j visible to
// query i iff j <= i, top-left aligned); a fully masked row gives out = 0, lse = -inf and
// zero gradients. The additive-bias mask of the CPU op is not handled here.
// "Launch contract" at the end of the file.
#include "common.cuh"

namespace medsyn_attn {

using medsyn::from_f32;
using medsyn::to_f32;

constexpr int WARPS = 4;
constexpr int THREADS = WARPS * 32;
constexpr float LOG2E = 1.4426950408889634f;
constexpr float LN2 = 0.6931471805599453f;

// +infinity (NVRTC has no INFINITY macro).
__device__ __forceinline__ float inf() { return __int_as_float(0x7f800000); }

// BEGIN PTX WRAPPERS (warp-level tensor-core and async-copy primitives)

__device__ __forceinline__ unsigned char* dyn_smem() {
    extern __shared__ __align__(16) unsigned char medsyn_attn_smem[];
    return medsyn_attn_smem;
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

// Two f32 values rounded to T and packed (lo in the low 16 bits) as one mma operand register.
template <typename T>
__device__ __forceinline__ unsigned pack2(float lo, float hi);

template <>
__device__ __forceinline__ unsigned pack2<__nv_bfloat16>(float lo, float hi) {
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<unsigned*>(&v);
}

template <>
__device__ __forceinline__ unsigned pack2<__half>(float lo, float hi) {
    __half2 v = __floats2half2_rn(lo, hi);
    return *reinterpret_cast<unsigned*>(&v);
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

// Whether rows of a [L, D] operand (row stride sl, column stride sd, in elements of T)
// can be copied as 16-byte chunks: contiguous rows, 16-byte aligned.
template <typename T>
__device__ __forceinline__ bool rows_vectorizable(const T* base, long long sl, long long sd) {
    return sd == 1 && (sl % (16 / (long long)sizeof(T))) == 0 &&
           (reinterpret_cast<unsigned long long>(base) & 15ull) == 0;
}

// Copy rows [row0, row0 + ROWS) of one head's [L, D] matrix (element (r, c) at
// g[r*sl + c*sd]) into the shared tile s[ROWS][LDS], columns [0, DP): rows >= L and
// columns >= D are written as zeros (so padding adds nothing to any product). vec: each
// 16-byte chunk (EPC = 8 half or 4 float elements) is one cp.async (completes at the next
// cp_async_wait); otherwise plain element loads (visible after the next __syncthreads).
// All THREADS threads call it.
template <typename T, int D, int DP, int LDS, int ROWS>
__device__ __forceinline__ void load_rows(T* s, const T* g, long long sl, long long sd, int row0, int L,
                                          bool vec) {
    constexpr int EPC = 16 / (int)sizeof(T);
    static_assert(D % EPC == 0 && DP % EPC == 0 && LDS % EPC == 0, "16-byte chunks");
    constexpr int CH = DP / EPC;
    if (vec) {
#pragma unroll 1
        for (int idx = threadIdx.x; idx < ROWS * CH; idx += THREADS) {
            const int r = idx / CH, c = idx % CH, row = row0 + r;
            T* dst = s + r * LDS + c * EPC;
            if (row < L && c * EPC < D) {
                cp_async16(dst, g + (long long)row * sl + c * EPC);
            } else {
                unsigned* z = reinterpret_cast<unsigned*>(dst);
                z[0] = 0u;
                z[1] = 0u;
                z[2] = 0u;
                z[3] = 0u;
            }
        }
    } else {
#pragma unroll 1
        for (int idx = threadIdx.x; idx < ROWS * DP; idx += THREADS) {
            const int r = idx / DP, c = idx % DP, row = row0 + r;
            s[r * LDS + c] = (row < L && c < D) ? g[(long long)row * sl + (long long)c * sd] : from_f32<T>(0.f);
        }
    }
}

// f32 path (CUDA cores): acc[MT][NT][4] += A (16MT x K) * B (K x 8NT) for one warp, with
// the mma16816 accumulator layout (element c of acc[mt][nt] is row 16mt + g + 8(c>>1),
// column 8nt + 2t + (c&1)). A is row-major in shared memory (row stride lda, from the
// warp's first row); B is stored [n][k] (BNK, row stride ldb) or [k][n] (!BNK).
template <int MT, int NT, bool BNK, int K>
__device__ __forceinline__ void fma_tile(float (&acc)[MT][NT][4], const float* A, int lda, const float* Bm, int ldb) {
    const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
#pragma unroll 1
    for (int k = 0; k < K; ++k) {
        float av[MT][2], bv[NT][2];
#pragma unroll
        for (int mt = 0; mt < MT; ++mt)
#pragma unroll
            for (int h = 0; h < 2; ++h) av[mt][h] = A[(mt * 16 + g + 8 * h) * lda + k];
#pragma unroll
        for (int nt = 0; nt < NT; ++nt)
#pragma unroll
            for (int e = 0; e < 2; ++e)
                bv[nt][e] = BNK ? Bm[(nt * 8 + 2 * t + e) * ldb + k] : Bm[k * ldb + nt * 8 + 2 * t + e];
#pragma unroll
        for (int mt = 0; mt < MT; ++mt)
#pragma unroll
            for (int nt = 0; nt < NT; ++nt)
#pragma unroll
                for (int c = 0; c < 4; ++c) acc[mt][nt][c] = fmaf(av[mt][c >> 1], bv[nt][c & 1], acc[mt][nt][c]);
    }
}

// fma_tile for a single 16-row tile (acc[NT][4]).
template <int NT, bool BNK, int K>
__device__ __forceinline__ void fma_tile1(float (&acc)[NT][4], const float* A, int lda, const float* Bm, int ldb) {
    const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
#pragma unroll 1
    for (int k = 0; k < K; ++k) {
        const float a0 = A[g * lda + k], a1 = A[(g + 8) * lda + k];
#pragma unroll
        for (int nt = 0; nt < NT; ++nt) {
#pragma unroll
            for (int e = 0; e < 2; ++e) {
                const float b = BNK ? Bm[(nt * 8 + 2 * t + e) * ldb + k] : Bm[k * ldb + nt * 8 + 2 * t + e];
                acc[nt][e] = fmaf(a0, b, acc[nt][e]);
                acc[nt][2 + e] = fmaf(a1, b, acc[nt][2 + e]);
            }
        }
    }
}

// Shared-memory row padding: 8 halves (16 bytes) or 4 floats.
template <typename T>
constexpr int row_pad() {
    return sizeof(T) == 2 ? 8 : 4;
}

// ---------------------------------------------------------------------------------------
// Forward. One block of 4 warps computes BM = 64*MT query rows of one (batch, head); warp w
// owns rows [16*MT*w, 16*MT*(w+1)) of the block (MT m16 tiles). Key tiles of BN keys are
// streamed through shared memory: K_j and V_j are single-buffered, with V_j's copy
// overlapping S = Q K_j^T and K_{j+1}'s copy overlapping the softmax and P V_j
// (FlashAttention-2 order: two barriers per key tile).
// Shared memory: Qs[BM][LDS], Ks[BN][LDS], Vs[BN][LDS] of T, LDS = DP + 8 for 16-bit T (the
// 16-byte row skew makes the 8 row addresses of every ldmatrix hit distinct bank groups),
// DP + 4 for f32; then f32 kbias[2][BN] (0 or -inf per key of a K tile: past Lk or dropped
// by the padding mask; double buffered with the K tiles); for f32 only, Ps[4][16MT][BN+4]
// (each warp's P tile, the A operand of P V on CUDA cores). Head width D is padded to
// DP = roundup(D, 16) with zero columns. Scores stay unscaled until the exponent:
// p = exp2(s*scale*log2e - m*scale*log2e). T = float runs the same schedule with
// fma_tile products (QREG is ignored).
template <typename T, int D, int MT, int BN, bool QREG>
struct FwdCfg {
    static constexpr int DP = (D + 15) / 16 * 16;
    static constexpr int LDS = DP + row_pad<T>();
    static constexpr int BM = WARPS * 16 * MT;
    static constexpr int NT = BN / 8;   // n8 tiles of S per row tile (keys)
    static constexpr int OT = DP / 8;   // n8 tiles of O per row tile (head columns)
    static constexpr int KS = DP / 16;  // k16 steps of Q K^T
    static constexpr bool F32 = sizeof(T) == 4;
    static constexpr int LDP = BN + 4;  // f32 P staging row stride
    static constexpr int SMEM = (BM + 2 * BN) * LDS * (int)sizeof(T) + 2 * BN * 4 + (F32 ? BM * LDP * 4 : 0);
    static_assert(BN % 16 == 0 && OT % 2 == 0, "tile shapes");
};

template <typename T, int D, int MT, int BN, bool QREG>
__device__ __forceinline__ void flash_fwd(const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v,
                                          T* __restrict__ o, float* __restrict__ lse,
                                          const unsigned char* __restrict__ keep, long long keep_sb, int H, int Lq,
                                          int Lk, float scale, int causal, long long q_sb, long long q_sh,
                                          long long q_sl, long long q_sd, long long k_sb, long long k_sh,
                                          long long k_sl, long long k_sd, long long v_sb, long long v_sh,
                                          long long v_sl, long long v_sd, long long o_sb, long long o_sh,
                                          long long o_sl, long long o_sd) {
    using C = FwdCfg<T, D, MT, BN, QREG>;
    constexpr int DP = C::DP, LDS = C::LDS, BM = C::BM, NT = C::NT, OT = C::OT, KS = C::KS;
    T* Qs = reinterpret_cast<T*>(dyn_smem());
    T* Ks = Qs + BM * LDS;
    T* Vs = Ks + BN * LDS;
    float* kbias = reinterpret_cast<float*>(Vs + BN * LDS);  // [2][BN]
    float* Ps = kbias + 2 * BN;                              // f32 only: [BM][LDP]

    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int g = lane >> 2, t = lane & 3;  // mma groupID / threadID_in_group
    // Causal: the last query blocks see the most keys; start them first.
    const int qb = causal ? (int)(gridDim.x - 1 - blockIdx.x) : (int)blockIdx.x;
    const int bh = blockIdx.y, b = bh / H, h = bh % H;
    const int i0 = qb * BM;
    const T* qh = q + b * q_sb + h * q_sh;
    const T* kh = k + b * k_sb + h * k_sh;
    const T* vh = v + b * v_sb + h * v_sh;
    T* oh = o + b * o_sb + h * o_sh;
    const unsigned char* keep_b = keep ? keep + b * keep_sb : nullptr;
    const bool qvec = rows_vectorizable(qh, q_sl, q_sd);
    const bool kvec = rows_vectorizable(kh, k_sl, k_sd);
    const bool vvec = rows_vectorizable(vh, v_sl, v_sd);

    int nk = (Lk + BN - 1) / BN;
    if (causal) nk = min(nk, (min(i0 + BM, Lq) + BN - 1) / BN);  // keys <= last row of the block

    // Stage key tile j0.. (K rows and their bias) into the buffers of tile parity `buf`.
    auto load_k_tile = [&](int j0, int buf) {
        load_rows<T, D, DP, LDS, BN>(Ks, kh, k_sl, k_sd, j0, Lk, kvec);
        for (int c = threadIdx.x; c < BN; c += THREADS) {
            const int key = j0 + c;
            kbias[buf * BN + c] = (key < Lk && (keep_b == nullptr || keep_b[key] != 0)) ? 0.f : -inf();
        }
    };

    load_rows<T, D, DP, LDS, BM>(Qs, qh, q_sl, q_sd, i0, Lq, qvec);
    if (nk > 0) load_k_tile(0, 0);
    cp_async_commit();

    const int wrow = warp * 16 * MT;  // the warp's first row within the block tile
    const float sl2 = scale * LOG2E;
    // acc_o[mt][ot][c]: O rows wrow+16mt+g (c = 0,1) and +8 (c = 2,3), columns 8ot+2t+(c&1).
    float acc_o[MT][OT][4];
    float m_run[MT][2], l_run[MT][2];  // per row (mt, half): running max of raw scores, partial sum
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
        for (int ot = 0; ot < OT; ++ot)
#pragma unroll
            for (int c = 0; c < 4; ++c) acc_o[mt][ot][c] = 0.f;
        m_run[mt][0] = m_run[mt][1] = -inf();
        l_run[mt][0] = l_run[mt][1] = 0.f;
    }
    // Q as A fragments, kept in registers when QREG: qf[mt][ks] covers rows wrow+16mt..+15,
    // columns 16ks..16ks+15.
    unsigned qf[QREG ? MT : 1][QREG ? KS : 1][4];

    for (int j = 0; j < nk; ++j) {
        const int j0 = j * BN;
        cp_async_wait<0>();  // K_j (and Q) have landed
        __syncthreads();     // ... for every thread; and every warp is done with V_{j-1}
        load_rows<T, D, DP, LDS, BN>(Vs, vh, v_sl, v_sd, j0, Lk, vvec);  // overlaps S = Q K_j^T
        cp_async_commit();

        // S = Q K_j^T: s[mt][nt][c] = row wrow+16mt+g+8(c>>1), key j0+8nt+2t+(c&1).
        float s[MT][NT][4];
#pragma unroll
        for (int mt = 0; mt < MT; ++mt)
#pragma unroll
            for (int nt = 0; nt < NT; ++nt)
#pragma unroll
                for (int c = 0; c < 4; ++c) s[mt][nt][c] = 0.f;
        if constexpr (C::F32) {
            fma_tile<MT, NT, true, DP>(s, reinterpret_cast<const float*>(Qs) + wrow * LDS, LDS,
                                       reinterpret_cast<const float*>(Ks), LDS);
        } else {
            // A fragment of rows r0..r0+15, columns c0..c0+15 of Qs: matrix i = lane/8 is rows
            // r0 + 8(i&1) .., columns c0 + 8(i>>1) .. (a[0..3] order of mma16816).
            if (QREG && j == 0) {
#pragma unroll
                for (int mt = 0; mt < MT; ++mt)
#pragma unroll
                    for (int ks = 0; ks < KS; ++ks)
                        ldsm_x4(qf[QREG ? mt : 0][QREG ? ks : 0],
                                Qs + (wrow + mt * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * LDS + ks * 16 +
                                    (lane >> 4) * 8);
            }
#pragma unroll
            for (int ks = 0; ks < KS; ++ks) {
                unsigned a[MT][4];
#pragma unroll
                for (int mt = 0; mt < MT; ++mt) {
                    if (QREG) {
#pragma unroll
                        for (int c = 0; c < 4; ++c) a[mt][c] = qf[QREG ? mt : 0][QREG ? ks : 0][c];
                    } else {
                        ldsm_x4(a[mt], Qs + (wrow + mt * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * LDS + ks * 16 +
                                           (lane >> 4) * 8);
                    }
                }
#pragma unroll
                for (int np = 0; np < NT / 2; ++np) {
                    // B = K^T (k = head column, n = key) is K stored [key][col]: matrix i = lane/8
                    // is keys 16np + 8(i>>1) .., columns 16ks + 8(i&1) ..; so kb[0], kb[1] are
                    // b0, b1 of key tile 2np and kb[2], kb[3] those of key tile 2np+1.
                    unsigned kb[4];
                    ldsm_x4(kb, Ks + (np * 16 + (lane & 7) + (lane >> 4) * 8) * LDS + ks * 16 + ((lane >> 3) & 1) * 8);
#pragma unroll
                    for (int mt = 0; mt < MT; ++mt) {
                        mma16816<T>(s[mt][2 * np], a[mt], kb[0], kb[1]);
                        mma16816<T>(s[mt][2 * np + 1], a[mt], kb[2], kb[3]);
                    }
                }
            }
        }

        cp_async_wait<0>();  // V_j has landed
        __syncthreads();     // ... for every thread; and every warp is done reading K_j
        if (j + 1 < nk) {    // K_{j+1} overlaps the softmax and O += P V_j
            load_k_tile(j0 + BN, (j + 1) & 1);
            cp_async_commit();
        }

        // Mask the raw scores: keys past Lk or padded (kbias = -inf), causally hidden keys.
        const bool bias_tile = keep_b != nullptr || j0 + BN > Lk;
        const bool causal_tile = causal && j0 + BN > i0 + 1;
        if (bias_tile || causal_tile) {
            const float* kb = kbias + (j & 1) * BN;
#pragma unroll
            for (int nt = 0; nt < NT; ++nt) {
#pragma unroll
                for (int e = 0; e < 2; ++e) {
                    const int kc = nt * 8 + 2 * t + e;
                    const float bias = bias_tile ? kb[kc] : 0.f;
#pragma unroll
                    for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
                        for (int hh = 0; hh < 2; ++hh) {
                            const int row = i0 + wrow + mt * 16 + g + hh * 8;
                            float x = s[mt][nt][hh * 2 + e] + bias;
                            if (causal_tile && j0 + kc > row) x = -inf();
                            s[mt][nt][hh * 2 + e] = x;
                        }
                    }
                }
            }
        }

        // Online softmax per row; a row's values are spread over the 4 lanes of a quad.
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
            for (int hh = 0; hh < 2; ++hh) {
                float mx = -inf();
#pragma unroll
                for (int nt = 0; nt < NT; ++nt) mx = fmaxf(mx, fmaxf(s[mt][nt][hh * 2], s[mt][nt][hh * 2 + 1]));
                mx = fmaxf(mx, shfl_xor(mx, 1));
                mx = fmaxf(mx, shfl_xor(mx, 2));
                const float m_new = fmaxf(m_run[mt][hh], mx);
                // In log2 units; everything so far masked: subtract 0 so that exp2(-inf) = 0.
                const float m_sc = m_new == -inf() ? 0.f : m_new * sl2;
                const float alpha = fast_exp2(m_run[mt][hh] * sl2 - m_sc);
                float sum = 0.f;
#pragma unroll
                for (int nt = 0; nt < NT; ++nt) {
#pragma unroll
                    for (int e = 0; e < 2; ++e) {
                        const float p = fast_exp2(fmaf(s[mt][nt][hh * 2 + e], sl2, -m_sc));
                        s[mt][nt][hh * 2 + e] = p;
                        sum += p;
                    }
                }
                l_run[mt][hh] = l_run[mt][hh] * alpha + sum;
                m_run[mt][hh] = m_new;
#pragma unroll
                for (int ot = 0; ot < OT; ++ot) {
                    acc_o[mt][ot][hh * 2] *= alpha;
                    acc_o[mt][ot][hh * 2 + 1] *= alpha;
                }
            }
        }

        if constexpr (C::F32) {
            // O += P V_j on CUDA cores: the warp's P rows go through shared memory (only this
            // warp reads them; the previous tile's reads are ordered by the barriers above).
            float* Pw = Ps + wrow * C::LDP;
#pragma unroll
            for (int mt = 0; mt < MT; ++mt)
#pragma unroll
                for (int nt = 0; nt < NT; ++nt)
#pragma unroll
                    for (int c = 0; c < 4; ++c)
                        Pw[(mt * 16 + g + (c >> 1) * 8) * C::LDP + nt * 8 + 2 * t + (c & 1)] = s[mt][nt][c];
            __syncwarp();
            fma_tile<MT, OT, false, BN>(acc_o, Pw, C::LDP, reinterpret_cast<const float*>(Vs), LDS);
        } else {
            // O += P V_j. The S accumulators of key tiles 2kk, 2kk+1 are exactly the A fragment
            // (rows g/g+8, k = keys 2t.., 2t+8..) of k-step kk.
#pragma unroll
            for (int kk = 0; kk < BN / 16; ++kk) {
                unsigned pa[MT][4];
#pragma unroll
                for (int mt = 0; mt < MT; ++mt) {
                    pa[mt][0] = pack2<T>(s[mt][2 * kk][0], s[mt][2 * kk][1]);
                    pa[mt][1] = pack2<T>(s[mt][2 * kk][2], s[mt][2 * kk][3]);
                    pa[mt][2] = pack2<T>(s[mt][2 * kk + 1][0], s[mt][2 * kk + 1][1]);
                    pa[mt][3] = pack2<T>(s[mt][2 * kk + 1][2], s[mt][2 * kk + 1][3]);
                }
#pragma unroll
                for (int np = 0; np < OT / 2; ++np) {
                    // B = V (k = key, n = head column) stored [key][col]: .trans of matrix i =
                    // keys 16kk + 8(i&1) .., columns 16np + 8(i>>1) .. gives b0, b1 of column
                    // tile 2np (vb[0], vb[1]) and of column tile 2np+1 (vb[2], vb[3]).
                    unsigned vb[4];
                    ldsm_x4_t(vb, Vs + (kk * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * LDS + np * 16 + (lane >> 4) * 8);
#pragma unroll
                    for (int mt = 0; mt < MT; ++mt) {
                        mma16816<T>(acc_o[mt][2 * np], pa[mt], vb[0], vb[1]);
                        mma16816<T>(acc_o[mt][2 * np + 1], pa[mt], vb[2], vb[3]);
                    }
                }
            }
        }
    }
    cp_async_wait<0>();

    // Normalise, write O and the natural-log lse = (m scale log2e + log2 l) ln 2.
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
        for (int hh = 0; hh < 2; ++hh) {
            float l = l_run[mt][hh];
            l += shfl_xor(l, 1);
            l += shfl_xor(l, 2);
            const bool any = l > 0.f;
            const float inv = any ? 1.f / l : 0.f;
            const int row = i0 + wrow + mt * 16 + g + hh * 8;
            if (row < Lq) {
                if (t == 0) lse[(long long)bh * Lq + row] = any ? (m_run[mt][hh] * sl2 + log2f(l)) * LN2 : -inf();
                T* orow = oh + (long long)row * o_sl;
#pragma unroll
                for (int ot = 0; ot < OT; ++ot) {
#pragma unroll
                    for (int e = 0; e < 2; ++e) {
                        const int col = ot * 8 + 2 * t + e;
                        if (col < D) orow[(long long)col * o_sd] = from_f32<T>(any ? acc_o[mt][ot][hh * 2 + e] * inv : 0.f);
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Backward. One block of 4 warps owns BN = 64 keys of one (batch, head) and walks every
// query block of BM rows that can see them; warp w owns keys [16w, 16w+16) of the block and
// computes the transposed products S^T = K Q^T, dP^T = V dO^T (rows = its keys, columns =
// the BM queries), so that dV += P^T dO and dK += dS^T Q accumulate in its registers.
// dQ += dS K is formed from dS^T staged in shared memory and added with f32 atomics to
// dq_acc (then scaled and converted by flash_attn_bwd_dq). Q, dO, lse and D are double
// buffered (the next query block's copy overlaps this one's math).
// Shared memory (T unless noted): Ks[BN][LDS], Vs[BN][LDS], Qs[2][BM][LDS], dOs[2][BM][LDS],
// dSs[BN][BM+P], then f32 lse2[2][BM] (lse * log2 e, +inf for empty/absent rows) and
// dsum[2][BM]; LDS = DP + P, P = 8 (16-bit) or 4 (f32). T = float runs the same schedule on
// CUDA cores (fma_tile), with P^T and dS^T staged through dSs as the A operands.
template <typename T, int D, int BM>
struct BwdCfg {
    static constexpr int DP = (D + 15) / 16 * 16;
    static constexpr int LDS = DP + row_pad<T>();
    static constexpr int BN = WARPS * 16;
    static constexpr int LDSS = BM + row_pad<T>();
    static constexpr bool F32 = sizeof(T) == 4;
    static constexpr int NQ = BM / 8;   // n8 tiles of S^T per warp (queries)
    static constexpr int OT = DP / 8;   // n8 tiles of dK / dV (head columns)
    static constexpr int KS = DP / 16;  // k16 steps over the head width
    static constexpr int SMEM = (2 * BN * LDS + 4 * BM * LDS + BN * LDSS) * (int)sizeof(T) + 4 * BM * 4;
    static_assert(BM % 16 == 0 && OT % 2 == 0, "tile shapes");
};

template <typename T, int D, int BM>
__device__ __forceinline__ void flash_bwd(const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v,
                                          const T* __restrict__ dout, const float* __restrict__ lse,
                                          const float* __restrict__ dsum, float* __restrict__ dq_acc,
                                          T* __restrict__ dk, T* __restrict__ dv,
                                          const unsigned char* __restrict__ keep, long long keep_sb, int H, int Lq,
                                          int Lk, float scale, int causal, long long q_sb, long long q_sh,
                                          long long q_sl, long long q_sd, long long k_sb, long long k_sh,
                                          long long k_sl, long long k_sd, long long v_sb, long long v_sh,
                                          long long v_sl, long long v_sd, long long do_sb, long long do_sh,
                                          long long do_sl, long long do_sd, long long dk_sb, long long dk_sh,
                                          long long dk_sl, long long dk_sd, long long dv_sb, long long dv_sh,
                                          long long dv_sl, long long dv_sd) {
    using C = BwdCfg<T, D, BM>;
    constexpr int DP = C::DP, LDS = C::LDS, BN = C::BN, LDSS = C::LDSS, NQ = C::NQ, OT = C::OT, KS = C::KS;
    T* Ks = reinterpret_cast<T*>(dyn_smem());
    T* Vs = Ks + BN * LDS;
    T* Qs = Vs + BN * LDS;          // [2][BM][LDS]
    T* dOs = Qs + 2 * BM * LDS;     // [2][BM][LDS]
    T* dSs = dOs + 2 * BM * LDS;    // [BN][LDSS]
    float* lse2_s = reinterpret_cast<float*>(dSs + BN * LDSS);  // [2][BM]
    float* dsum_s = lse2_s + 2 * BM;                            // [2][BM]

    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int g = lane >> 2, t = lane & 3;
    const int bh = blockIdx.y, b = bh / H, h = bh % H;
    const int j0 = blockIdx.x * BN;
    const int wkey = warp * 16;  // the warp's first key within the block
    const T* qh = q + b * q_sb + h * q_sh;
    const T* kh = k + b * k_sb + h * k_sh;
    const T* vh = v + b * v_sb + h * v_sh;
    const T* doh = dout + b * do_sb + h * do_sh;
    const float* lse_h = lse + (long long)bh * Lq;
    const float* dsum_h = dsum + (long long)bh * Lq;
    const bool qvec = rows_vectorizable(qh, q_sl, q_sd);
    const bool kvec = rows_vectorizable(kh, k_sl, k_sd);
    const bool vvec = rows_vectorizable(vh, v_sl, v_sd);
    const bool dovec = rows_vectorizable(doh, do_sl, do_sd);
    const float sl2 = scale * LOG2E;

    // This thread's two keys (rows g and g+8 of the warp's S^T tiles) and whether they are
    // visible at all (inside Lk and kept by the padding mask).
    bool key_ok[2];
#pragma unroll
    for (int hh = 0; hh < 2; ++hh) {
        const int key = j0 + wkey + g + hh * 8;
        key_ok[hh] = key < Lk && (keep == nullptr || keep[b * keep_sb + key] != 0);
    }

    const int nq = (Lq + BM - 1) / BM;
    const int ib0 = causal ? j0 / BM : 0;  // earlier query blocks see none of these keys

    // Stage the query block starting at row i0 into buffer st.
    auto load_q_block = [&](int st, int i0) {
        load_rows<T, D, DP, LDS, BM>(Qs + st * BM * LDS, qh, q_sl, q_sd, i0, Lq, qvec);
        load_rows<T, D, DP, LDS, BM>(dOs + st * BM * LDS, doh, do_sl, do_sd, i0, Lq, dovec);
        for (int r = threadIdx.x; r < BM; r += THREADS) {
            const int row = i0 + r;
            const float l = row < Lq ? lse_h[row] : -inf();
            // P = exp2(x - lse2): +inf makes absent and fully masked rows contribute 0.
            lse2_s[st * BM + r] = l == -inf() ? inf() : l * LOG2E;
            dsum_s[st * BM + r] = row < Lq ? dsum_h[row] : 0.f;
        }
    };

    load_rows<T, D, DP, LDS, BN>(Ks, kh, k_sl, k_sd, j0, Lk, kvec);
    load_rows<T, D, DP, LDS, BN>(Vs, vh, v_sl, v_sd, j0, Lk, vvec);
    if (ib0 < nq) load_q_block(0, ib0 * BM);
    cp_async_commit();

    // dk_acc / dv_acc[ot][c]: key wkey+g+8(c>>1), head column 8ot+2t+(c&1).
    float dk_acc[OT][4], dv_acc[OT][4];
#pragma unroll
    for (int ot = 0; ot < OT; ++ot)
#pragma unroll
        for (int c = 0; c < 4; ++c) dk_acc[ot][c] = dv_acc[ot][c] = 0.f;

    // A fragment (16 keys x 16 head columns at 16ks) of the warp's rows of Ks or Vs.
    const int a_row = wkey + (lane & 7) + ((lane >> 3) & 1) * 8, a_col = (lane >> 4) * 8;
    // B fragments for a [query][col] tile read as (k = col, n = query): matrix i = lane/8 is
    // queries 16np + 8(i>>1) .., columns 16ks + 8(i&1) .. (see the forward's K).
    const int bn_row = (lane & 7) + (lane >> 4) * 8, bn_col = ((lane >> 3) & 1) * 8;
    // B fragments for a [query][col] tile read as (k = query, n = col), .trans: matrix i is
    // queries 16kk + 8(i&1) .., columns 16np + 8(i>>1) .. (see the forward's V).
    const int bt_row = (lane & 7) + ((lane >> 3) & 1) * 8, bt_col = (lane >> 4) * 8;

    for (int ib = ib0; ib < nq; ++ib) {
        const int st = (ib - ib0) & 1, i0 = ib * BM;
        if (ib + 1 < nq) load_q_block(st ^ 1, i0 + BM);
        cp_async_commit();
        cp_async_wait<1>();  // this block's Q, dO (and K, V) have landed
        __syncthreads();
        const T* Qc = Qs + st * BM * LDS;
        const T* dOc = dOs + st * BM * LDS;
        const float* lse2_c = lse2_s + st * BM;
        const float* dsum_c = dsum_s + st * BM;

        // S^T = K Q^T: sT[nt][c] = key wkey+g+8(c>>1), query i0+8nt+2t+(c&1).
        float sT[NQ][4];
#pragma unroll
        for (int nt = 0; nt < NQ; ++nt)
#pragma unroll
            for (int c = 0; c < 4; ++c) sT[nt][c] = 0.f;
        if constexpr (C::F32) {
            fma_tile1<NQ, true, DP>(sT, reinterpret_cast<const float*>(Ks) + wkey * LDS, LDS,
                                    reinterpret_cast<const float*>(Qc), LDS);
        } else {
#pragma unroll
            for (int ks = 0; ks < KS; ++ks) {
                unsigned a[4];
                ldsm_x4(a, Ks + a_row * LDS + ks * 16 + a_col);
#pragma unroll
                for (int np = 0; np < NQ / 2; ++np) {
                    unsigned qb4[4];
                    ldsm_x4(qb4, Qc + (np * 16 + bn_row) * LDS + ks * 16 + bn_col);
                    mma16816<T>(sT[2 * np], a, qb4[0], qb4[1]);
                    mma16816<T>(sT[2 * np + 1], a, qb4[2], qb4[3]);
                }
            }
        }
        // P^T = exp(scale S^T - lse), 0 where masked.
#pragma unroll
        for (int nt = 0; nt < NQ; ++nt) {
#pragma unroll
            for (int c = 0; c < 4; ++c) {
                const int qc = nt * 8 + 2 * t + (c & 1);
                const int key = j0 + wkey + g + (c >> 1) * 8;
                const bool ok = key_ok[c >> 1] && !(causal && key > i0 + qc);
                sT[nt][c] = ok ? fast_exp2(sT[nt][c] * sl2 - lse2_c[qc]) : 0.f;
            }
        }
        // f32: the warp's 16 rows of dSs hold the A operand (P^T, later dS^T) of its products.
        float* dSw = reinterpret_cast<float*>(dSs) + wkey * LDSS;
        auto stage_rows = [&](const float (&x)[NQ][4]) {
#pragma unroll
            for (int nt = 0; nt < NQ; ++nt)
#pragma unroll
                for (int c = 0; c < 4; ++c) dSw[(g + (c >> 1) * 8) * LDSS + nt * 8 + 2 * t + (c & 1)] = x[nt][c];
            __syncwarp();
        };

        // dV += P^T dO (k = queries: the sT tiles 2kk, 2kk+1 form the A fragment of step kk).
        if (dv != nullptr) {
            if constexpr (C::F32) {
                stage_rows(sT);
                fma_tile1<OT, false, BM>(dv_acc, dSw, LDSS, reinterpret_cast<const float*>(dOc), LDS);
                __syncwarp();  // done reading before dS^T overwrites the rows
            } else {
#pragma unroll
                for (int kk = 0; kk < NQ / 2; ++kk) {
                    unsigned pa[4];
                    pa[0] = pack2<T>(sT[2 * kk][0], sT[2 * kk][1]);
                    pa[1] = pack2<T>(sT[2 * kk][2], sT[2 * kk][3]);
                    pa[2] = pack2<T>(sT[2 * kk + 1][0], sT[2 * kk + 1][1]);
                    pa[3] = pack2<T>(sT[2 * kk + 1][2], sT[2 * kk + 1][3]);
#pragma unroll
                    for (int np = 0; np < OT / 2; ++np) {
                        unsigned ob[4];
                        ldsm_x4_t(ob, dOc + (kk * 16 + bt_row) * LDS + np * 16 + bt_col);
                        mma16816<T>(dv_acc[2 * np], pa, ob[0], ob[1]);
                        mma16816<T>(dv_acc[2 * np + 1], pa, ob[2], ob[3]);
                    }
                }
            }
        }

        // dP^T = V dO^T, same fragment layout as S^T.
        float dpT[NQ][4];
#pragma unroll
        for (int nt = 0; nt < NQ; ++nt)
#pragma unroll
            for (int c = 0; c < 4; ++c) dpT[nt][c] = 0.f;
        if constexpr (C::F32) {
            fma_tile1<NQ, true, DP>(dpT, reinterpret_cast<const float*>(Vs) + wkey * LDS, LDS,
                                    reinterpret_cast<const float*>(dOc), LDS);
        } else {
#pragma unroll
            for (int ks = 0; ks < KS; ++ks) {
                unsigned a[4];
                ldsm_x4(a, Vs + a_row * LDS + ks * 16 + a_col);
#pragma unroll
                for (int np = 0; np < NQ / 2; ++np) {
                    unsigned ob[4];
                    ldsm_x4(ob, dOc + (np * 16 + bn_row) * LDS + ks * 16 + bn_col);
                    mma16816<T>(dpT[2 * np], a, ob[0], ob[1]);
                    mma16816<T>(dpT[2 * np + 1], a, ob[2], ob[3]);
                }
            }
        }
        // dS^T = P^T o (dP^T - D), D = rowsum(dO o O) of each query (unscaled; sT now holds dS^T).
#pragma unroll
        for (int nt = 0; nt < NQ; ++nt)
#pragma unroll
            for (int c = 0; c < 4; ++c) sT[nt][c] *= dpT[nt][c] - dsum_c[nt * 8 + 2 * t + (c & 1)];

        // dK += dS^T Q (scaled at the end). dS^T also goes to dSs[key][query] for dQ.
        if constexpr (C::F32) {
            if (dk != nullptr || dq_acc != nullptr) stage_rows(sT);
            if (dk != nullptr) fma_tile1<OT, false, BM>(dk_acc, dSw, LDSS, reinterpret_cast<const float*>(Qc), LDS);
        } else {
            if (dk != nullptr) {
#pragma unroll
                for (int kk = 0; kk < NQ / 2; ++kk) {
                    unsigned pa[4];
                    pa[0] = pack2<T>(sT[2 * kk][0], sT[2 * kk][1]);
                    pa[1] = pack2<T>(sT[2 * kk][2], sT[2 * kk][3]);
                    pa[2] = pack2<T>(sT[2 * kk + 1][0], sT[2 * kk + 1][1]);
                    pa[3] = pack2<T>(sT[2 * kk + 1][2], sT[2 * kk + 1][3]);
#pragma unroll
                    for (int np = 0; np < OT / 2; ++np) {
                        unsigned qb4[4];
                        ldsm_x4_t(qb4, Qc + (kk * 16 + bt_row) * LDS + np * 16 + bt_col);
                        mma16816<T>(dk_acc[2 * np], pa, qb4[0], qb4[1]);
                        mma16816<T>(dk_acc[2 * np + 1], pa, qb4[2], qb4[3]);
                    }
                }
            }
            if (dq_acc != nullptr) {
#pragma unroll
                for (int nt = 0; nt < NQ; ++nt)
#pragma unroll
                    for (int hh = 0; hh < 2; ++hh)
                        *reinterpret_cast<unsigned*>(dSs + (wkey + g + hh * 8) * LDSS + nt * 8 + 2 * t) =
                            pack2<T>(sT[nt][hh * 2], sT[nt][hh * 2 + 1]);
            }
        }

        // dQ += scale dS K over the block's keys: the BM x DP product is split into
        // (16-row, 16-column) units spread over the warps.
        if (dq_acc != nullptr) {
            __syncthreads();  // all of dSs written
            constexpr int MQ = BM / 16, UNITS = MQ * (DP / 16);
            for (int u = warp; u < UNITS; u += WARPS) {
                const int mt = u % MQ, np = u / MQ;
                // acc[x][c]: query i0 + 16mt + g + 8(c>>1), head column 16np + 8x + 2t + (c&1).
                float acc[2][4];
#pragma unroll
                for (int x = 0; x < 2; ++x)
#pragma unroll
                    for (int c = 0; c < 4; ++c) acc[x][c] = 0.f;
                if constexpr (C::F32) {
                    const float* dSf = reinterpret_cast<const float*>(dSs);
                    const float* Kf = reinterpret_cast<const float*>(Ks);
#pragma unroll 4
                    for (int kk = 0; kk < BN; ++kk) {
                        const float a0 = dSf[kk * LDSS + mt * 16 + g], a1 = dSf[kk * LDSS + mt * 16 + g + 8];
#pragma unroll
                        for (int x = 0; x < 2; ++x)
#pragma unroll
                            for (int e = 0; e < 2; ++e) {
                                const float kv = Kf[kk * LDS + np * 16 + x * 8 + 2 * t + e];
                                acc[x][e] = fmaf(a0, kv, acc[x][e]);
                                acc[x][2 + e] = fmaf(a1, kv, acc[x][2 + e]);
                            }
                    }
                } else {
#pragma unroll
                    for (int ks = 0; ks < BN / 16; ++ks) {
                        // A = dS (rows = queries 16mt.., k = keys 16ks..) read from dSs[key][query]
                        // with .trans: matrix i is keys 16ks + 8(i>>1) .., queries 16mt + 8(i&1) ..
                        unsigned a[4];
                        ldsm_x4_t(a, dSs + (ks * 16 + (lane & 7) + (lane >> 4) * 8) * LDSS + mt * 16 +
                                         ((lane >> 3) & 1) * 8);
                        // B = K (k = keys, n = head columns), .trans as the forward's V.
                        unsigned kb[4];
                        ldsm_x4_t(kb, Ks + (ks * 16 + bt_row) * LDS + np * 16 + bt_col);
                        mma16816<T>(acc[0], a, kb[0], kb[1]);
                        mma16816<T>(acc[1], a, kb[2], kb[3]);
                    }
                }
#pragma unroll
                for (int x = 0; x < 2; ++x) {
#pragma unroll
                    for (int c = 0; c < 4; ++c) {
                        const int row = i0 + mt * 16 + g + (c >> 1) * 8;
                        const int col = np * 16 + x * 8 + 2 * t + (c & 1);
                        if (row < Lq && col < D) atomicAdd(dq_acc + ((long long)bh * Lq + row) * D + col, acc[x][c] * scale);
                    }
                }
            }
        }
        __syncthreads();  // buffers st and dSs are free for the next query block
    }
    cp_async_wait<0>();

#pragma unroll
    for (int hh = 0; hh < 2; ++hh) {
        const int key = j0 + wkey + g + hh * 8;
        if (key >= Lk) continue;
#pragma unroll
        for (int ot = 0; ot < OT; ++ot) {
#pragma unroll
            for (int e = 0; e < 2; ++e) {
                const int col = ot * 8 + 2 * t + e;
                if (col >= D) continue;
                if (dk != nullptr)
                    dk[b * dk_sb + h * dk_sh + key * dk_sl + col * dk_sd] = from_f32<T>(dk_acc[ot][hh * 2 + e] * scale);
                if (dv != nullptr)
                    dv[b * dv_sb + h * dv_sh + key * dv_sl + col * dv_sd] = from_f32<T>(dv_acc[ot][hh * 2 + e]);
            }
        }
    }
}

}  // namespace medsyn_attn

// ---------------------------------------------------------------------------------------
// Backward helpers (any head width, every dtype).

namespace medsyn_attn {

// dsum[bh*Lq + i] = sum_d dO[b,h,i,d] * O[b,h,i,d] (the CPU twin's delta) and, when dq_acc
// is given, zero its row (bh, i). One warp per row, 8 rows per block of 256 threads.
template <typename T>
__device__ __forceinline__ void flash_attn_bwd_pre_impl(const T* __restrict__ o, const T* __restrict__ dout,
                                                        float* __restrict__ dsum, float* __restrict__ dq_acc, int B,
                                                        int H, int Lq, int D, long long o_sb, long long o_sh,
                                                        long long o_sl, long long o_sd, long long do_sb,
                                                        long long do_sh, long long do_sl, long long do_sd) {
    const long long row = (long long)blockIdx.x * 8 + (threadIdx.x >> 5);
    const int lane = threadIdx.x & 31;
    if (row >= (long long)B * H * Lq) return;  // the whole warp leaves together
    const long long bh = row / Lq;
    const long long i = row % Lq, b = bh / H, h = bh % H;
    const T* orow = o + b * o_sb + h * o_sh + i * o_sl;
    const T* drow = dout + b * do_sb + h * do_sh + i * do_sl;
    float acc = 0.f;
    for (int c = lane; c < D; c += 32) acc += to_f32(orow[c * o_sd]) * to_f32(drow[c * do_sd]);
    acc = medsyn::warp_sum(acc);
    if (lane == 0) dsum[row] = acc;
    if (dq_acc != nullptr)
        for (int c = lane; c < D; c += 32) dq_acc[row * D + c] = 0.f;
}

// dq[b,h,i,d] = dq_acc[((b*H + h)*Lq + i)*D + d] as T (the scale is already in dq_acc).
// Grid-stride over B*H*Lq*D elements; blocks of 256 threads.
template <typename T>
__device__ __forceinline__ void flash_attn_bwd_dq_impl(const float* __restrict__ dq_acc, T* __restrict__ dq, int B,
                                                       int H, int Lq, int D, long long dq_sb, long long dq_sh,
                                                       long long dq_sl, long long dq_sd) {
    const long long n = (long long)B * H * Lq * D;
    for (long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x; idx < n;
         idx += (long long)gridDim.x * blockDim.x) {
        const long long c = idx % D, r = idx / D;
        const long long i = r % Lq, bh = r / Lq, b = bh / H, h = bh % H;
        dq[b * dq_sb + h * dq_sh + i * dq_sl + c * dq_sd] = from_f32<T>(dq_acc[idx]);
    }
}

}  // namespace medsyn_attn

// ---------------------------------------------------------------------------------------
// Entry points.

#define MEDSYN_ATTN_FWD_PARAMS                                                                              \
    (const T* q, const T* k, const T* v, T* o, float* lse, const unsigned char* keep, long long keep_sb,   \
     int H, int Lq, int Lk, float scale, int causal, long long q_sb, long long q_sh, long long q_sl,        \
     long long q_sd, long long k_sb, long long k_sh, long long k_sl, long long k_sd, long long v_sb,        \
     long long v_sh, long long v_sl, long long v_sd, long long o_sb, long long o_sh, long long o_sl,        \
     long long o_sd)
#define MEDSYN_ATTN_FWD_ARGS                                                                                \
    (q, k, v, o, lse, keep, keep_sb, H, Lq, Lk, scale, causal, q_sb, q_sh, q_sl, q_sd, k_sb, k_sh, k_sl,    \
     k_sd, v_sb, v_sh, v_sl, v_sd, o_sb, o_sh, o_sl, o_sd)
#define MEDSYN_ATTN_BWD_PARAMS                                                                              \
    (const T* q, const T* k, const T* v, const T* dout, const float* lse, const float* dsum, float* dq_acc, \
     T* dk, T* dv, const unsigned char* keep, long long keep_sb, int H, int Lq, int Lk, float scale,        \
     int causal, long long q_sb, long long q_sh, long long q_sl, long long q_sd, long long k_sb,            \
     long long k_sh, long long k_sl, long long k_sd, long long v_sb, long long v_sh, long long v_sl,        \
     long long v_sd, long long do_sb, long long do_sh, long long do_sl, long long do_sd, long long dk_sb,    \
     long long dk_sh, long long dk_sl, long long dk_sd, long long dv_sb, long long dv_sh, long long dv_sl,  \
     long long dv_sd)
#define MEDSYN_ATTN_BWD_ARGS                                                                                \
    (q, k, v, dout, lse, dsum, dq_acc, dk, dv, keep, keep_sb, H, Lq, Lk, scale, causal, q_sb, q_sh, q_sl,   \
     q_sd, k_sb, k_sh, k_sl, k_sd, v_sb, v_sh, v_sl, v_sd, do_sb, do_sh, do_sl, do_sd, dk_sb, dk_sh, dk_sl, \
     dk_sd, dv_sb, dv_sh, dv_sl, dv_sd)

// Tile choice per head width D: forward (MT m16 tiles per warp -> 64*MT query rows per
// block, BN keys per tile, Q fragments kept in registers (QREG) or re-read from shared
// memory; f16/bf16 only) and backward (BM query rows per step; 64 keys per block). The f32
// entry points use the same tiles on CUDA cores. Chosen so that ptxas reports no spills at
// sm_80 and sm_90a (check with scripts/compile_kernel.py after any change).
#define MEDSYN_ATTN_WIDTH(D, MT, BN, QREG, BM)                                                              \
    template <typename T>                                                                                   \
    __device__ __forceinline__ void flash_attn_fwd_d##D##_impl MEDSYN_ATTN_FWD_PARAMS {                     \
        medsyn_attn::flash_fwd<T, D, MT, BN, QREG> MEDSYN_ATTN_FWD_ARGS;                                    \
    }                                                                                                       \
    template <typename T>                                                                                   \
    __device__ __forceinline__ void flash_attn_bwd_d##D##_impl MEDSYN_ATTN_BWD_PARAMS {                     \
        medsyn_attn::flash_bwd<T, D, BM> MEDSYN_ATTN_BWD_ARGS;                                              \
    }                                                                                                       \
    MEDSYN_DTYPES_LB(flash_attn_fwd_d##D, (128), MEDSYN_ATTN_FWD_PARAMS, MEDSYN_ATTN_FWD_ARGS)              \
    MEDSYN_DTYPES_LB(flash_attn_bwd_d##D, (128), MEDSYN_ATTN_BWD_PARAMS, MEDSYN_ATTN_BWD_ARGS)

// flash_attn_fwd_d{D}_{f32,f16,bf16}: forward, grid (ceil(Lq/BM), B*H), block 128, dynamic
// shared FwdCfg::SMEM; flash_attn_bwd_d{D}_{f32,f16,bf16}: backward (dk, dv, dq_acc), grid
// (ceil(Lk/64), B*H), block 128, dynamic shared BwdCfg::SMEM (sizes in the launch contract).
//                D   MT  BN  QREG   BM
MEDSYN_ATTN_WIDTH(40, 2, 64, true, 64)
MEDSYN_ATTN_WIDTH(64, 2, 64, false, 64)
MEDSYN_ATTN_WIDTH(80, 2, 64, false, 64)
MEDSYN_ATTN_WIDTH(128, 2, 32, false, 32)
MEDSYN_ATTN_WIDTH(160, 2, 32, false, 16)

using medsyn_attn::flash_attn_bwd_pre_impl;
using medsyn_attn::flash_attn_bwd_dq_impl;
// flash_attn_bwd_pre_{f32,f16,bf16}: dsum = rowsum(dO o O), zero dq_acc; grid ceil(B*H*Lq/8),
// block 256, no shared memory.
MEDSYN_DTYPES_LB(flash_attn_bwd_pre, (256),
              (const T* o, const T* dout, float* dsum, float* dq_acc, int B, int H, int Lq, int D, long long o_sb,
               long long o_sh, long long o_sl, long long o_sd, long long do_sb, long long do_sh, long long do_sl,
               long long do_sd),
              (o, dout, dsum, dq_acc, B, H, Lq, D, o_sb, o_sh, o_sl, o_sd, do_sb, do_sh, do_sl, do_sd))
// flash_attn_bwd_dq_{f32,f16,bf16}: dq = dq_acc as T; grid-stride, block 256, no shared memory.
MEDSYN_DTYPES_LB(flash_attn_bwd_dq, (256),
              (const float* dq_acc, T* dq, int B, int H, int Lq, int D, long long dq_sb, long long dq_sh,
               long long dq_sl, long long dq_sd),
              (dq_acc, dq, B, H, Lq, D, dq_sb, dq_sh, dq_sl, dq_sd))

// =======================================================================================
// Launch contract (the Rust launch side is written from this).
//
// Common to all entry points
//   T: float (suffix f32), __half (f16), __nv_bfloat16 (bf16). lse, dsum, dq_acc are f32.
//   Operands q [B,H,Lq,D], k [B,H,Lk,D], v [B,H,Lk,D], o and dout [B,H,Lq,D], dk, dv
//   [B,H,Lk,D], dq [B,H,Lq,D]: element (b,h,l,d) of X is X[b*X_sb + h*X_sh + l*X_sl + d*X_sd]
//   (int64 element strides, so permuted views such as [B,L,H,D] storage need no copy; rows
//   with X_sd == 1, X_sl a multiple of 16/sizeof(T) and a 16-byte aligned (b,h) start are
//   copied with cp.async, anything else element by element). Requirements: v's width equals
//   D (Dv == D); D in {40, 64, 80, 128, 160} (the kernels' names carry it); B*H <= 65535
//   (grid.y); no zero grid dimension (skip everything when B*H*Lq == 0; skip
//   flash_attn_bwd_d* when Lk == 0: then dk, dv are empty and dq is 0, which bwd_pre and
//   bwd_dq produce). Lq, Lk need not be multiples of any tile. Lk == 0 in the forward gives
//   o = 0 and lse = -inf.
//   keep: optional uint8 key-padding keep mask, element (b, j) at keep[b*keep_sb + j],
//   nonzero keeps key j for every query of batch b (the CPU op's key_padding turned into
//   0/1 bytes); nullptr = no padding mask. causal: 0 or 1 (query i sees key j iff j <= i).
//   scale: the softmax scale, > 0 (the op's default 1/sqrt(D); the running maximum is taken
//   on unscaled scores, so a negative scale needs the CPU path). The CPU op's additive bias mask
//   is not supported here (the runtime must use another path for it).
//   Dynamic shared memory above 48 KiB needs cuFuncSetAttribute(f,
//   CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, bytes) once per function; every size
//   below fits sm_80 (max 163 KiB per block) and sm_90 (227 KiB).
//
// Forward: flash_attn_fwd_d{D}_{f32,f16,bf16}
//   (const T* q, const T* k, const T* v, T* o, float* lse, const uint8* keep, i64 keep_sb,
//    i32 H, i32 Lq, i32 Lk, f32 scale, i32 causal,
//    i64 q_sb, q_sh, q_sl, q_sd, i64 k_sb, k_sh, k_sl, k_sd, i64 v_sb, v_sh, v_sl, v_sd,
//    i64 o_sb, o_sh, o_sl, o_sd)
//   grid (ceil(Lq / 128), B*H), block (128), dynamic shared bytes:
//        D:      40      64      80     128     160
//     f16/bf16: 29184   37376   45568   52480   64768
//     f32:      88576  104960  121344  120064  144640
//   Writes o (every element of rows < Lq, columns < D) and lse[(b*H + h)*Lq + i] (f32,
//   contiguous [B,H,Lq]): the natural-log log-sum-exp of the row's masked scaled scores,
//   -inf for a fully masked row (whose o row is 0). Save lse for the backward.
//   Mirrors attention_forward (src/backend/cpu/attention.rs).
//
// Backward (mirrors attention_backward): three launches in this order on one stream.
//   1. flash_attn_bwd_pre_{f32,f16,bf16}
//      (const T* o, const T* dout, float* dsum, float* dq_acc, i32 B, i32 H, i32 Lq, i32 D,
//       i64 o_sb, o_sh, o_sl, o_sd, i64 do_sb, do_sh, do_sl, do_sd)
//      grid (ceil(B*H*Lq / 8)), block (256), no shared memory. o is the forward's output.
//      Writes dsum[(b*H+h)*Lq + i] = sum_d dout*o (f32 [B*H*Lq], scratch) and, when dq_acc
//      (f32 [B*H*Lq*D], contiguous, scratch) is non-null, zeroes it.
//   2. flash_attn_bwd_d{D}_{f32,f16,bf16}
//      (const T* q, const T* k, const T* v, const T* dout, const float* lse,
//       const float* dsum, float* dq_acc, T* dk, T* dv, const uint8* keep, i64 keep_sb,
//       i32 H, i32 Lq, i32 Lk, f32 scale, i32 causal,
//       i64 q_sb, q_sh, q_sl, q_sd, i64 k_sb, k_sh, k_sl, k_sd, i64 v_sb, v_sh, v_sl, v_sd,
//       i64 do_sb, do_sh, do_sl, do_sd, i64 dk_sb, dk_sh, dk_sl, dk_sd,
//       i64 dv_sb, dv_sh, dv_sl, dv_sd)
//      grid (ceil(Lk / 64), B*H), block (128), dynamic shared bytes:
//        D:      40      64      80     128     160
//     f16/bf16: 53248   65536   77824   75264   67840
//     f32:      98304  122880  147456  144896  131328
//      Same q, k, v, keep, causal, scale as the forward. dk, dv: T outputs, every element
//      (keys < Lk, columns < D) written, no zeroing needed; nullptr skips that gradient
//      (and its products). dq_acc: the zeroed accumulator from step 1, or nullptr when dq
//      is not needed. dq is accumulated with f32 atomicAdd (scale already applied), so dq
//      can differ in the last bits from run to run; dk and dv are deterministic.
//   3. flash_attn_bwd_dq_{f32,f16,bf16}
//      (const float* dq_acc, T* dq, i32 B, i32 H, i32 Lq, i32 D, i64 dq_sb, dq_sh, dq_sl, dq_sd)
//      grid (any, e.g. min(ceil(B*H*Lq*D / 256), 65535)), block (256), no shared memory
//      (grid-stride loop). Skip steps 3 (and the dq_acc zeroing) when dq is not needed.
//   Scratch: dsum 4*B*H*Lq bytes, dq_acc 4*B*H*Lq*D bytes.
