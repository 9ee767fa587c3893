// Elementwise kernels: unary maps and their backward (the `Unary` enum of
// src/backend/cpu/elementwise.rs), binary ops over operands read through a `Reach`
// (src/backend/cpu/binary.rs), affine / clamp / powf (src/ops/unary.rs) and dtype
// casts between f32, f16 and bf16 (src/ops/cast.rs). Every kernel is a grid-stride
// loop over a flat, contiguous index space with 64-bit indices; where all pointers
// are 16-byte aligned, 16-byte packs are loaded and stored (the tail runs scalar).
// Compute is f32 for every storage type (the CPU twin computes f32 for f32/f16/bf16).
#include "common.cuh"

namespace ew {

using medsyn::aligned16;
using medsyn::from_f32;
using medsyn::global_tid;
using medsyn::grid_stride;
using medsyn::load_pack;
using medsyn::Pack;
using medsyn::store_pack;
using medsyn::to_f32;

// y[i] = f(x[i]) for i < n (f maps f32 to f32); packs when both pointers are aligned.
template <typename T, typename F>
__device__ __forceinline__ void map1(long long n, const T* __restrict__ x, T* __restrict__ y, F f) {
    constexpr int V = Pack<T>::N;
    const long long tid = global_tid(), stride = grid_stride();
    long long done = 0;
    if (aligned16(x) && aligned16(y)) {
        const long long packs = n / V;
        for (long long p = tid; p < packs; p += stride) {
            Pack<T> a = load_pack(x + p * V), o;
#pragma unroll
            for (int k = 0; k < V; ++k) o.v[k] = from_f32<T>(f(to_f32(a.v[k])));
            store_pack(y + p * V, o);
        }
        done = packs * V;
    }
    for (long long i = done + tid; i < n; i += stride) y[i] = from_f32<T>(f(to_f32(x[i])));
}

// out[i] = f(a[i], b[i]) for i < n (both full-size); packs when all are aligned.
template <typename T, typename F>
__device__ __forceinline__ void map2(long long n, const T* __restrict__ a, const T* __restrict__ b,
                                     T* __restrict__ out, F f) {
    constexpr int V = Pack<T>::N;
    const long long tid = global_tid(), stride = grid_stride();
    long long done = 0;
    if (aligned16(a) && aligned16(b) && aligned16(out)) {
        const long long packs = n / V;
        for (long long p = tid; p < packs; p += stride) {
            Pack<T> pa = load_pack(a + p * V), pb = load_pack(b + p * V), o;
#pragma unroll
            for (int k = 0; k < V; ++k) o.v[k] = from_f32<T>(f(to_f32(pa.v[k]), to_f32(pb.v[k])));
            store_pack(out + p * V, o);
        }
        done = packs * V;
    }
    for (long long i = done + tid; i < n; i += stride)
        out[i] = from_f32<T>(f(to_f32(a[i]), to_f32(b[i])));
}

// out[i] = f(a[i], b[i], c[i]) for i < n (all full-size); packs when all are aligned.
template <typename T, typename F>
__device__ __forceinline__ void map3(long long n, const T* __restrict__ a, const T* __restrict__ b,
                                     const T* __restrict__ c, T* __restrict__ out, F f) {
    constexpr int V = Pack<T>::N;
    const long long tid = global_tid(), stride = grid_stride();
    long long done = 0;
    if (aligned16(a) && aligned16(b) && aligned16(c) && aligned16(out)) {
        const long long packs = n / V;
        for (long long p = tid; p < packs; p += stride) {
            Pack<T> pa = load_pack(a + p * V), pb = load_pack(b + p * V), pc = load_pack(c + p * V), o;
#pragma unroll
            for (int k = 0; k < V; ++k)
                o.v[k] = from_f32<T>(f(to_f32(pa.v[k]), to_f32(pb.v[k]), to_f32(pc.v[k])));
            store_pack(out + p * V, o);
        }
        done = packs * V;
    }
    for (long long i = done + tid; i < n; i += stride)
        out[i] = from_f32<T>(f(to_f32(a[i]), to_f32(b[i]), to_f32(c[i])));
}

// Unary functions: codes are the declaration order of `Unary` in
// src/backend/cpu/elementwise.rs (the Rust side passes `op as i32`). ----------------

enum UnaryOp {
    NEG = 0, EXP = 1, LOG = 2, SQRT = 3, TANH = 4, SIGMOID = 5, RELU = 6, SILU = 7, GELU = 8,
    GELU_TANH = 9, QUICK_GELU = 10, ABS = 11, SQUARE = 12, RECIP = 13, SIN = 14, COS = 15,
};

using medsyn::FRAC_1_SQRT_2;
using medsyn::INV_SQRT_2PI;
using medsyn::sigmoid;
constexpr float SQRT_2_OVER_PI = 0.7978845608028654f;
constexpr float GELU_TANH_C = 0.044715f;

// f(x), as the CPU's f32 path computes it (vmath's forms for the vectorised maps:
// GELU as x·½erfc(−x/√2), tanh-GELU as x·sigmoid(2·inner); Unary::apply otherwise).
__device__ __forceinline__ float unary_apply(int op, float x) {
    switch (op) {
        case NEG: return -x;
        case EXP: return expf(x);
        case LOG: return logf(x);
        case SQRT: return sqrtf(x);
        case TANH: return tanhf(x);
        case SIGMOID: return sigmoid(x);
        case RELU: return fmaxf(x, 0.0f);  // Rust's f32::max: NaN -> 0, like fmaxf
        case SILU: return x * sigmoid(x);
        case GELU: return x * (0.5f * erfcf(-x * FRAC_1_SQRT_2));
        case GELU_TANH: {
            const float inner = SQRT_2_OVER_PI * (x + GELU_TANH_C * x * x * x);
            return x * sigmoid(2.0f * inner);
        }
        case QUICK_GELU: return x * sigmoid(1.702f * x);
        case ABS: return fabsf(x);
        case SQUARE: return x * x;
        case RECIP: return 1.0f / x;
        case SIN: return sinf(x);
        case COS: return cosf(x);
        default: return __int_as_float(0x7fffffff);  // unknown op: NaN, never silent
    }
}

// f'(x) given x and y = f(x): Unary::derivative term by term.
__device__ __forceinline__ float unary_derivative(int op, float x, float y) {
    switch (op) {
        case NEG: return -1.0f;
        case EXP: return y;
        case LOG: return 1.0f / x;
        case SQRT: return 0.5f / y;
        case TANH: return 1.0f - y * y;
        case SIGMOID: return y * (1.0f - y);
        case RELU: return x > 0.0f ? 1.0f : 0.0f;
        case SILU: {
            const float s = sigmoid(x);
            return s * (1.0f + x * (1.0f - s));
        }
        case GELU: {
            const float cdf = 0.5f * (1.0f + erff(x * FRAC_1_SQRT_2));
            const float pdf = expf(-(0.5f * x * x)) * INV_SQRT_2PI;
            return cdf + x * pdf;
        }
        case GELU_TANH: {
            const float inner = SQRT_2_OVER_PI * (x + GELU_TANH_C * x * x * x);
            const float t = tanhf(inner);
            return 0.5f * (1.0f + t) +
                   0.5f * x * (1.0f - t * t) * SQRT_2_OVER_PI * (1.0f + 3.0f * GELU_TANH_C * x * x);
        }
        case QUICK_GELU: {
            const float k = 1.702f;
            const float s = sigmoid(k * x);
            return s + x * k * s * (1.0f - s);
        }
        case ABS: {
            // Rust: x.signum() * (x == 0 ? 0 : 1); signum(NaN) = NaN, signum(±0) = ±1.
            const float sign = isnan(x) ? x : copysignf(1.0f, x);
            return sign * (x == 0.0f ? 0.0f : 1.0f);
        }
        case SQUARE: return 2.0f * x;
        case RECIP: return -y * y;
        case SIN: return cosf(x);
        case COS: return -sinf(x);
        default: return __int_as_float(0x7fffffff);
    }
}

// Binary ops: codes are the declaration order of `Binary` in src/backend/cpu/binary.rs.
enum BinaryOp { ADD = 0, SUB = 1, MUL = 2, DIV = 3, MAXIMUM = 4, MINIMUM = 5 };
// Reach modes (`Reach` in binary.rs): FULL reads v[i], TRAILING(inner) v[i % inner],
// LEADING(inner) v[i / inner].
enum ReachMode { FULL = 0, TRAILING = 1, LEADING = 2 };

__device__ __forceinline__ float binary_apply(int op, float a, float b) {
    switch (op) {
        // _rn forms: no contraction, so results equal the CPU's bit for bit.
        case ADD: return __fadd_rn(a, b);
        case SUB: return __fsub_rn(a, b);
        case MUL: return __fmul_rn(a, b);
        case DIV: return __fdiv_rn(a, b);
        case MAXIMUM: return fmaxf(a, b);  // Rust f32::max / min ignore a NaN operand, as these do
        case MINIMUM: return fminf(a, b);
        default: return __int_as_float(0x7fffffff);
    }
}

__device__ __forceinline__ long long reach_index(int mode, long long inner, long long i) {
    return mode == TRAILING ? i % inner : (mode == LEADING ? i / inner : i);
}

}  // namespace ew

// ---------------------------------------------------------------------------------
// Unary forward and backward.

// y = f(x) for f = Unary code `op`, n elements; grid-stride, any grid/block, no smem.
template <typename T>
__device__ void unary_impl(int op, long long n, const T* __restrict__ x, T* __restrict__ y) {
    ew::map1(n, x, y, [op](float v) { return ew::unary_apply(op, v); });
}
MEDSYN_DTYPES(unary, (int op, long long n, const T* __restrict__ x, T* __restrict__ y), (op, n, x, y))

// dx = dy·f'(x, y) for Unary code `op`; x and y both given (an op that does not read
// one still needs a valid pointer: pass the other); grid-stride, no smem.
template <typename T>
__device__ void unary_backward_impl(int op, long long n, const T* __restrict__ x, const T* __restrict__ y,
                                    const T* __restrict__ dy, T* __restrict__ dx) {
    ew::map3(n, x, y, dy, dx,
             [op](float xv, float yv, float g) { return g * ew::unary_derivative(op, xv, yv); });
}
MEDSYN_DTYPES(unary_backward,
              (int op, long long n, const T* __restrict__ x, const T* __restrict__ y,
               const T* __restrict__ dy, T* __restrict__ dx),
              (op, n, x, y, dy, dx))

// ---------------------------------------------------------------------------------
// Binary ops with broadcast operands.

// out[i] = op(a at i, b at i) for i < n, each operand read through its reach
// (mode, inner); grid-stride, no smem. Full/Full with aligned pointers uses packs.
template <typename T>
__device__ void binary_impl(int op, long long n, const T* __restrict__ a, int mode_a, long long inner_a,
                            const T* __restrict__ b, int mode_b, long long inner_b, T* __restrict__ out) {
    if (mode_a == ew::FULL && mode_b == ew::FULL) {
        ew::map2(n, a, b, out, [op](float p, float q) { return ew::binary_apply(op, p, q); });
        return;
    }
    // A reach with inner < 1 is a launch error; guard so it cannot divide by zero.
    if ((mode_a != ew::FULL && inner_a < 1) || (mode_b != ew::FULL && inner_b < 1)) return;
    const long long tid = ew::global_tid(), stride = ew::grid_stride();
    for (long long i = tid; i < n; i += stride) {
        const float p = medsyn::to_f32(a[ew::reach_index(mode_a, inner_a, i)]);
        const float q = medsyn::to_f32(b[ew::reach_index(mode_b, inner_b, i)]);
        out[i] = medsyn::from_f32<T>(ew::binary_apply(op, p, q));
    }
}
MEDSYN_DTYPES(binary,
              (int op, long long n, const T* __restrict__ a, int mode_a, long long inner_a,
               const T* __restrict__ b, int mode_b, long long inner_b, T* __restrict__ out),
              (op, n, a, mode_a, inner_a, b, mode_b, inner_b, out))

// ---------------------------------------------------------------------------------
// Scalar ops.

// y = x·mul + add (two roundings, no FMA, as the CPU); grid-stride, no smem.
template <typename T>
__device__ void affine_impl(long long n, const T* __restrict__ x, float mul, float add, T* __restrict__ y) {
    ew::map1(n, x, y, [mul, add](float v) { return __fadd_rn(__fmul_rn(v, mul), add); });
}
MEDSYN_DTYPES(affine, (long long n, const T* __restrict__ x, float mul, float add, T* __restrict__ y),
              (n, x, mul, add, y))

// y = x < lo ? lo : (x > hi ? hi : x) (NaN stays NaN); grid-stride, no smem.
template <typename T>
__device__ void clamp_impl(long long n, const T* __restrict__ x, float lo, float hi, T* __restrict__ y) {
    ew::map1(n, x, y, [lo, hi](float v) { return v < lo ? lo : (v > hi ? hi : v); });
}
MEDSYN_DTYPES(clamp, (long long n, const T* __restrict__ x, float lo, float hi, T* __restrict__ y),
              (n, x, lo, hi, y))

// dx = (lo <= x <= hi, compared in f64 with the op's f64 bounds) ? dy : 0; grid-stride.
template <typename T>
__device__ void clamp_backward_impl(long long n, const T* __restrict__ x, const T* __restrict__ dy, double lo,
                                    double hi, T* __restrict__ dx) {
    ew::map2(n, x, dy, dx, [lo, hi](float v, float g) {
        const double d = (double)v;
        return (d >= lo && d <= hi) ? g : 0.0f;
    });
}
MEDSYN_DTYPES(clamp_backward,
              (long long n, const T* __restrict__ x, const T* __restrict__ dy, double lo, double hi,
               T* __restrict__ dx),
              (n, x, dy, lo, hi, dx))

// y = powf(x, p) with p the exponent rounded to f32; grid-stride, no smem.
template <typename T>
__device__ void powf_impl(long long n, const T* __restrict__ x, float p, T* __restrict__ y) {
    ew::map1(n, x, y, [p](float v) { return powf(v, p); });
}
MEDSYN_DTYPES(powf, (long long n, const T* __restrict__ x, float p, T* __restrict__ y), (n, x, p, y))

// dx = dy · (powf(x, p_minus_1) · p) (the CPU's composition, fused; intermediates
// stay f32 where the CPU rounds them to the tensor dtype); grid-stride, no smem.
template <typename T>
__device__ void powf_backward_impl(long long n, const T* __restrict__ x, const T* __restrict__ dy, float p,
                                   float p_minus_1, T* __restrict__ dx) {
    ew::map2(n, x, dy, dx, [p, p_minus_1](float v, float g) {
        return __fmul_rn(g, __fmul_rn(powf(v, p_minus_1), p));
    });
}
MEDSYN_DTYPES(powf_backward,
              (long long n, const T* __restrict__ x, const T* __restrict__ dy, float p, float p_minus_1,
               T* __restrict__ dx),
              (n, x, dy, p, p_minus_1, dx))

// ---------------------------------------------------------------------------------
// Casts: through f32 (exact from every source), then round to nearest even into the
// destination, as the `half` crate's from_f32 (NaN payloads may differ: CUDA gives
// the canonical NaN).

// dst[i] = convert(src[i]) for i < n; grid-stride, 4 elements per step when the
// pointers allow (8- or 16-byte accesses), no smem.
template <typename S, typename D>
__device__ __forceinline__ void cast_body(long long n, const S* __restrict__ src, D* __restrict__ dst) {
    const long long tid = ew::global_tid(), stride = ew::grid_stride();
    long long done = 0;
    constexpr unsigned long long SA = 4 * sizeof(S), DA = 4 * sizeof(D);
    if (((unsigned long long)src % SA) == 0 && ((unsigned long long)dst % DA) == 0) {
        struct alignas(4 * sizeof(S)) SV { S v[4]; };
        struct alignas(4 * sizeof(D)) DV { D v[4]; };
        const long long quads = n / 4;
        for (long long q = tid; q < quads; q += stride) {
            const SV a = reinterpret_cast<const SV*>(src)[q];
            DV o;
#pragma unroll
            for (int k = 0; k < 4; ++k) o.v[k] = medsyn::from_f32<D>(medsyn::to_f32(a.v[k]));
            reinterpret_cast<DV*>(dst)[q] = o;
        }
        done = quads * 4;
    }
    for (long long i = done + tid; i < n; i += stride) dst[i] = medsyn::from_f32<D>(medsyn::to_f32(src[i]));
}

#define MEDSYN_CAST(SNAME, STYPE, DNAME, DTYPE)                                                     \
    extern "C" __global__ void cast_##SNAME##_##DNAME(long long n, const STYPE* __restrict__ src,   \
                                                      DTYPE* __restrict__ dst) {                    \
        cast_body<STYPE, DTYPE>(n, src, dst);                                                        \
    }
// cast_SRC_DST: dst = src converted; grid-stride, any grid/block, no smem.
MEDSYN_CAST(f32, float, f16, __half)
MEDSYN_CAST(f32, float, bf16, __nv_bfloat16)
MEDSYN_CAST(f16, __half, f32, float)
MEDSYN_CAST(bf16, __nv_bfloat16, f32, float)
MEDSYN_CAST(f16, __half, bf16, __nv_bfloat16)
MEDSYN_CAST(bf16, __nv_bfloat16, f16, __half)

/*
Launch contract (elementwise.cu)
================================
Common to every entry point: all tensors contiguous, element counts `n` as int64;
grid-stride loops, so any grid works: grid = min(ceil(n / (block·P)), 16·SMs) with
block = 256 and P = 16 / sizeof(T) elements per thread-step is a good choice; no shared
memory; n == 0 is a no-op. Pointers need only element alignment (16-byte alignment of
every pointer turns on 128-bit accesses). Outputs must not alias inputs (pointers are
__restrict__ and inputs may be read through the non-coherent cache).
Suffix _f32/_f16/_bf16 = storage type T of every tensor argument (compute is f32).

unary_T(int op, i64 n, const T* x, T* y)
    y = f(x), op = `Unary as i32`: Neg 0, Exp 1, Log 2, Sqrt 3, Tanh 4, Sigmoid 5,
    Relu 6, Silu 7, Gelu 8 (exact, erfc form), GeluTanh 9, QuickGelu 10 (1.702),
    Abs 11, Square 12, Recip 13, Sin 14, Cos 15. Unknown op writes NaN.
    Mirrors cpu::elementwise::unary (f32 path: vmath maps for Exp/Sigmoid/Silu/Gelu/
    GeluTanh/QuickGelu, Unary::apply otherwise). CUDA's expf/erfcf/tanhf differ from
    vmath's polynomials by a few ulp: compare with an f32 tolerance (~1e-6 rel).
unary_backward_T(int op, i64 n, const T* x, const T* y, const T* dy, T* dx)
    dx = dy · f'(x, y) (Unary::derivative). Ops reading y: Exp, Sqrt, Tanh, Sigmoid,
    Recip; the others read x. Both pointers must be valid (pass x twice if no y).
    Mirrors cpu::elementwise::unary_backward.
binary_T(int op, i64 n, const T* a, int mode_a, i64 inner_a,
         const T* b, int mode_b, i64 inner_b, T* out)
    out[i] = op(a[ra(i)], b[rb(i)]), op: Add 0, Sub 1, Mul 2, Div 3, Maximum 4,
    Minimum 5; mode: Full 0 (i), Trailing 1 (i % inner), Leading 2 (i / inner);
    inner >= 1 for modes 1 and 2 (ignored for Full). Both operands of one dtype T
    (the Rust side casts a mixed pair to the promoted dtype first). Bit-identical
    to cpu::binary::binary in f32 (no contraction).
affine_T(i64 n, const T* x, float mul, float add, T* y)
    y = x·mul + add with mul = add = (f32)f64; mirrors ops::unary::affine (scale,
    add_scalar). Bit-identical in f32.
clamp_T(i64 n, const T* x, float lo, float hi, T* y)      mirrors ops::unary::clamp.
clamp_backward_T(i64 n, const T* x, const T* dy, double lo, double hi, T* dx)
    dx = dy where lo <= x <= hi (compared in f64), else 0; mirrors ClampBack.
powf_T(i64 n, const T* x, float p, T* y)                   mirrors Tensor::powf.
powf_backward_T(i64 n, const T* x, const T* dy, float p, float p_minus_1, T* dx)
    dx = dy·(x^(p−1)·p), p = (f32)p, p_minus_1 = (f32)(p − 1.0); mirrors PowBack.
cast_S_D(i64 n, const S* src, D* dst), (S, D) in {f32→f16, f32→bf16, f16→f32,
    bf16→f32, f16→bf16, bf16→f16}: round to nearest even through f32; mirrors
    ops::cast::to_dtype (CpuStorage::from_real's f32 path). 4 elements per step
    when src is 4·sizeof(S)- and dst 4·sizeof(D)-aligned.
*/
