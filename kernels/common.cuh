// Shared device helpers for kernels/*.cu: dtype conversion to and from f32 (every
// kernel computes in f32 and loads/stores f32, f16 or bf16), small math helpers,
// grid-stride / row loop indices, 16-byte vector loads and stores, warp, row-group
// and block reductions, Chan's moment combination, and the entry-point macros.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

namespace medsyn {

// ---- dtype conversion -------------------------------------------------------------

__device__ __forceinline__ float to_f32(float v) { return v; }
__device__ __forceinline__ float to_f32(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_f32(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T> __device__ __forceinline__ T from_f32(float v);
template <> __device__ __forceinline__ float from_f32<float>(float v) { return v; }
template <> __device__ __forceinline__ __half from_f32<__half>(float v) { return __float2half_rn(v); }
template <> __device__ __forceinline__ __nv_bfloat16 from_f32<__nv_bfloat16>(float v) {
    return __float2bfloat16_rn(v);
}

// p[i] as f32, or `absent` when p is null (optional weight / bias vectors).
template <typename T> __device__ __forceinline__ float load_or(const T* p, long long i, float absent) {
    return p ? to_f32(p[i]) : absent;
}

// ---- constants and scalar math ----------------------------------------------------

// −inf as f32 (bit pattern 0xff800000).
__device__ __forceinline__ float neg_inf() { return __int_as_float((int)0xff800000u); }

constexpr float FRAC_1_SQRT_2 = 0.70710678118654752440f;  // 1/√2
constexpr float INV_SQRT_2PI = 0.3989422804014327f;       // 1/√(2π)

// 1/(1 + exp(−x)) (the CPU's f32 sigmoid form).
__device__ __forceinline__ float sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

// ---- loop indices -----------------------------------------------------------------

// 1-D grid-stride loops: for (i = global_tid(); i < n; i += grid_stride()).
__device__ __forceinline__ long long global_tid() { return (long long)blockIdx.x * blockDim.x + threadIdx.x; }
__device__ __forceinline__ long long grid_stride() { return (long long)gridDim.x * blockDim.x; }

// Rows over 2-D blocks, BY = blockDim.y rows per block, block-strided:
// for (r = first_row(); r < rows; r += row_stride()); threadIdx.x walks the row.
// Threads of one block may run different numbers of passes: no barriers inside.
__device__ __forceinline__ long long first_row() { return (long long)blockIdx.x * blockDim.y + threadIdx.y; }
__device__ __forceinline__ long long row_stride() { return (long long)gridDim.x * blockDim.y; }

// The same rows, but every thread of the block makes the same number of calls
// body(row) (row >= rows on a last partial pass: body must skip its loads and
// stores, yet still reach the barriers), so body may call group_sum & co.
template <typename F> __device__ __forceinline__ void for_each_row_group(long long rows, F body) {
    for (long long base = (long long)blockIdx.x * blockDim.y; base < rows; base += (long long)gridDim.x * blockDim.y)
        body(base + threadIdx.y);
}

// ---- 16-byte vector accesses ------------------------------------------------------

__device__ __forceinline__ bool aligned16(const void* p) { return ((unsigned long long)p & 15ull) == 0; }

// P consecutive elements of T; load_chunk / store_chunk use one 16-byte access when
// P·sizeof(T) == 16 (the pointer must then be 16-byte aligned), else P scalar ones.
template <typename T, int P> struct alignas(P * sizeof(T) == 16 ? 16 : alignof(T)) Chunk {
    static constexpr int N = P;
    T v[P];
};
template <typename T, int P> __device__ __forceinline__ Chunk<T, P> load_chunk(const T* p) {
    Chunk<T, P> c;
    if constexpr (P * sizeof(T) == 16) {
        const uint4 raw = *reinterpret_cast<const uint4*>(p);
        memcpy(&c, &raw, 16);
    } else {
#pragma unroll
        for (int k = 0; k < P; ++k) c.v[k] = p[k];
    }
    return c;
}
template <typename T, int P> __device__ __forceinline__ void store_chunk(T* p, const Chunk<T, P>& c) {
    if constexpr (P * sizeof(T) == 16) {
        uint4 raw;
        memcpy(&raw, &c, 16);
        *reinterpret_cast<uint4*>(p) = raw;
    } else {
#pragma unroll
        for (int k = 0; k < P; ++k) p[k] = c.v[k];
    }
}

// 16 bytes of T (4 floats or 8 halves): Pack<T>::N elements; p 16-byte aligned.
template <typename T> using Pack = Chunk<T, 16 / sizeof(T)>;
template <typename T> __device__ __forceinline__ Pack<T> load_pack(const T* p) {
    return load_chunk<T, Pack<T>::N>(p);
}
template <typename T> __device__ __forceinline__ void store_pack(T* p, const Pack<T>& c) {
    store_chunk<T, Pack<T>::N>(p, c);
}

// ---- reductions -------------------------------------------------------------------

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// The skeleton of a reduction over a "row group": the blockDim.x threads that share
// threadIdx.y (2-D blocks; ROWS = false: a 1-D block, the whole block is one group and
// threadIdx.y is not read). blockDim.x is a multiple of 32 and blockDim.x·blockDim.y
// <= 1024. warp() reduces the caller's value within its warp (butterfly: every lane
// gets the result). When the group spans several warps, lane 0 of each warp stores
// its partial with put(slot), slot < 32 (the slots of one group are consecutive:
// threadIdx.y·warps + warp), and after a barrier each lane loads take(slot, ok)
// (ok = false for lanes past the group's warp count: they load the identity) and
// warp() runs again, so every thread of the group ends with the same total. Call
// from every thread of the block (it has barriers when blockDim.x > 32); the barrier
// before put() makes back-to-back calls on the same scratch safe.
template <bool ROWS = true, typename Warp, typename Put, typename Take>
__device__ __forceinline__ void group_reduce(Warp warp, Put put, Take take) {
    warp();
    if (blockDim.x == 32) return;
    const int warps = blockDim.x >> 5, lane = threadIdx.x & 31;
    const int base = ROWS ? threadIdx.y * warps : 0;
    __syncthreads();  // scratch may still be read by a previous call
    if (lane == 0) put(base + (threadIdx.x >> 5));
    __syncthreads();
    take(base + lane, lane < warps);
    warp();
}

// group_reduce of one value v kept in scratch[32] (identity `empty` for the unused
// slots): warp() reduces v within each warp.
template <bool ROWS = true, typename V, typename Warp>
__device__ __forceinline__ void group_reduce1(V& v, V* scratch, V empty, Warp warp) {
    group_reduce<ROWS>(warp, [&](int s) { scratch[s] = v; }, [&](int s, bool ok) { v = ok ? scratch[s] : empty; });
}

// group_reduce of a pair (a, b) kept in two scratch arrays of 32 (identities ea, eb):
// warp() reduces the pair within each warp.
template <bool ROWS = true, typename A, typename B, typename Warp>
__device__ __forceinline__ void group_reduce2(A& a, B& b, A* sa, B* sb, A ea, B eb, Warp warp) {
    group_reduce<ROWS>(
        warp,
        [&](int s) {
            sa[s] = a;
            sb[s] = b;
        },
        [&](int s, bool ok) {
            a = ok ? sa[s] : ea;
            b = ok ? sb[s] : eb;
        });
}

// Sum of v over the row group, result in every thread of it; scratch 32 floats.
__device__ __forceinline__ float group_sum(float v, float* scratch) {
    group_reduce1(v, scratch, 0.0f, [&] { v = warp_sum(v); });
    return v;
}
// Two sums at once (one pair of barriers); scratch 2×32 floats.
__device__ __forceinline__ void group_sum2(float& a, float& b, float* sa, float* sb) {
    group_reduce2(a, b, sa, sb, 0.0f, 0.0f, [&] {
        a = warp_sum(a);
        b = warp_sum(b);
    });
}
// The same over a whole 1-D block (blockDim.y == 1).
__device__ __forceinline__ float block_sum(float v, float* scratch) {
    group_reduce1<false>(v, scratch, 0.0f, [&] { v = warp_sum(v); });
    return v;
}
__device__ __forceinline__ void block_sum2(float& a, float& b, float* sa, float* sb) {
    group_reduce2<false>(a, b, sa, sb, 0.0f, 0.0f, [&] {
        a = warp_sum(a);
        b = warp_sum(b);
    });
}

// ---- moments ----------------------------------------------------------------------

// Chan et al.'s pairwise combination of partial moments (count, mean, M2 = Σ(x −
// mean)²) in f64; add the parts in a fixed order for deterministic results.
struct Moments {
    double n = 0.0, mean = 0.0, m2 = 0.0;
    __device__ __forceinline__ void add(double nb, double mb, double m2b) {
        if (n == 0.0) {
            n = nb;
            mean = mb;
            m2 = m2b;
        } else {
            const double d = mb - mean, tot = n + nb;
            mean += d * (nb / tot);
            m2 += m2b + d * d * (n * nb / tot);
            n = tot;
        }
    }
    // The biased variance M2 / n (0 when empty).
    __device__ __forceinline__ double var() const { return n > 0.0 ? m2 / n : 0.0; }
};

}  // namespace medsyn

// Instantiate a templated kernel body `NAME##_impl<T>` as extern "C" entry points
// NAME_f32, NAME_f16, NAME_bf16 (the names the Rust side looks up). PARAMS may use `T`
// for the element type. MEDSYN_DTYPES_LB adds `__launch_bounds__ BOUNDS` to each, e.g.
// MEDSYN_DTYPES_LB(NAME, (256), PARAMS, ARGS) or (256, 2) with a minimum block count
// per SM (launching more threads per block than the bound then fails).
#define MEDSYN_ENTRY_Q(NAME, SUFFIX, TYPE, QUALS, PARAMS, ARGS)                         \
    namespace medsyn_entry_##NAME##_##SUFFIX {                                          \
    using T = TYPE;                                                                     \
    extern "C" __global__ void QUALS NAME##_##SUFFIX PARAMS { NAME##_impl<T> ARGS; }    \
    }
#define MEDSYN_ENTRY(NAME, SUFFIX, TYPE, PARAMS, ARGS) MEDSYN_ENTRY_Q(NAME, SUFFIX, TYPE, , PARAMS, ARGS)
#define MEDSYN_DTYPES(NAME, PARAMS, ARGS)                                               \
    MEDSYN_ENTRY(NAME, f32, float, PARAMS, ARGS)                                        \
    MEDSYN_ENTRY(NAME, f16, __half, PARAMS, ARGS)                                       \
    MEDSYN_ENTRY(NAME, bf16, __nv_bfloat16, PARAMS, ARGS)
#define MEDSYN_DTYPES_LB(NAME, BOUNDS, PARAMS, ARGS)                                    \
    MEDSYN_ENTRY_Q(NAME, f32, float, __launch_bounds__ BOUNDS, PARAMS, ARGS)            \
    MEDSYN_ENTRY_Q(NAME, f16, __half, __launch_bounds__ BOUNDS, PARAMS, ARGS)           \
    MEDSYN_ENTRY_Q(NAME, bf16, __nv_bfloat16, __launch_bounds__ BOUNDS, PARAMS, ARGS)
