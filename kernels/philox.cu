// Philox4x32-10 counter-based random numbers and the normal (Box–Muller) / uniform
// transforms, element for element the stream of src/tensor/random.rs (Philox::normal,
// Philox::uniform, Tensor::randn, Tensor::rand_uniform). Each thread computes one
// counter block (4 outputs) from (seed, counter + block index) alone, so results do
// not depend on the launch shape.
//
// The stream (random.rs): key = [seed lo32, seed hi32]; a draw of n values starting at
// the generator's `counter` uses blocks b = 0 .. ceil(n/4) − 1, block b encrypting the
// counter words [c lo32, c hi32, 0, 0] with c = counter + b (wrapping u64); element
// i = 4b + j takes output word j. Afterwards the generator's counter advances by
// ceil(n/4) (the host does that; these kernels do not keep state).
//   normal:  words (x0, x1) → (r·cos θ, r·sin θ) for j = 0, 1 and (x2, x3) → j = 2, 3,
//            r = sqrt(−2·ln u(x_even)), θ = 2π·u(x_odd), u(x) = ((x >> 8) + 1)·2^−24
//            in (0, 1]; all in f64 as on the CPU, then f64 → f32 (→ f16/bf16 from the
//            f32 value: the CPU's from_values rounds twice the same way).
//   uniform: lo + (hi − lo)·((x >> 8)·2^−24) in f64, then rounded as above.
//
// Bit-identity: the raw u32 words and the uniforms are bit-identical to the CPU (exact
// integer math; (x >> 8)·2^−24 and one f64 multiply-add in the same order — compiled
// without contraction via __dmul_rn/__dadd_rn). The normals use CUDA's f64 log
// (≤ 1 ulp), sqrt (exact) and sin/cos (≤ 2 ulp) where the CPU uses glibc's (almost
// always correctly rounded), so the f64 normals can differ from the CPU's by a few
// f64 ulp; after rounding to f32 they are identical except when an f64 value lies
// within those few ulp of an f32 rounding boundary (probability ~1e-8 per element).
//
// How a later test checks this (Rust, cuda feature; the CPU side is
// src/tensor/random.rs):
//   1. philox_raw(nblocks = 1, seed = 0, counter = 0) must give Random123's known
//      answer [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8] (= philox4x32_10([0; 4],
//      [0; 2]) in random.rs's test); then for seeds {0, 1, 42, u64::MAX} and counters
//      {0, 7, 2^32 − 1 (carries into the high word), u64::MAX (wraps to 0)} and
//      nblocks = 1000, word 4b + j must equal philox4x32_10([c as u32, (c >> 32) as
//      u32, 0, 0], [seed as u32, (seed >> 32) as u32])[j], c = counter + b — exactly.
//   2. philox_uniform_f32(n, seed, counter, lo, hi) == Tensor::rand_uniform(
//      &mut Philox::from_state(seed, counter), lo, hi, [n], F32) bit for bit, n odd
//      (e.g. 1_000_003, so the last block is partial), several seeds/counters.
//   3. philox_normal_f64 vs Philox::from_state(seed, counter).normal(n): every value
//      within 4 f64 ulp; philox_normal_f32 / _bf16 vs Tensor::randn(.., F32 / BF16)
//      equal bit for bit in all but at most a handful of 10^6 elements (report the
//      count; those differ by one f32 ulp).
//   4. Launch-shape independence: the same call with grid 1 × block 32 and with a
//      large grid gives identical bytes.
#include "common.cuh"

namespace px {

constexpr unsigned int M0 = 0xD2511F53u, M1 = 0xCD9E8D57u;
constexpr unsigned int W0 = 0x9E3779B9u, W1 = 0xBB67AE85u;

// philox4x32_10(counter, key) of random.rs: 10 rounds, the key bumped after each.
__device__ __forceinline__ uint4 philox4x32_10(uint4 c, uint2 k) {
#pragma unroll
    for (int r = 0; r < 10; ++r) {
        const unsigned int hi0 = __umulhi(M0, c.x), lo0 = M0 * c.x;
        const unsigned int hi1 = __umulhi(M1, c.z), lo1 = M1 * c.z;
        c = make_uint4(hi1 ^ c.y ^ k.x, lo1, hi0 ^ c.w ^ k.y, lo0);
        k.x += W0;
        k.y += W1;
    }
    return c;
}

// The four words of block b of the stream at (seed, counter).
__device__ __forceinline__ uint4 block(unsigned long long seed, unsigned long long counter, unsigned long long b) {
    const unsigned long long c = counter + b;  // wrapping, as wrapping_add
    return philox4x32_10(make_uint4((unsigned int)c, (unsigned int)(c >> 32), 0u, 0u),
                         make_uint2((unsigned int)seed, (unsigned int)(seed >> 32)));
}

// Uniform in (0, 1] from the top 24 bits (open_uniform): exact in f64.
__device__ __forceinline__ double open_uniform(unsigned int x) {
    return __dmul_rn((double)(x >> 8) + 1.0, 1.0 / 16777216.0);
}

// Uniform in [0, 1) (Philox::uniform): exact in f64.
__device__ __forceinline__ double uniform01(unsigned int x) { return __dmul_rn((double)(x >> 8), 1.0 / 16777216.0); }

constexpr double TWO_PI = 6.283185307179586476925286766559;  // 2·std::f64::consts::PI, exact

// Box–Muller of one pair: (r·cos θ, r·sin θ) in f64.
__device__ __forceinline__ void box_muller(unsigned int a, unsigned int b, double& z0, double& z1) {
    const double r = sqrt(__dmul_rn(-2.0, log(open_uniform(a))));
    const double theta = __dmul_rn(TWO_PI, open_uniform(b));
    z0 = __dmul_rn(r, cos(theta));
    z1 = __dmul_rn(r, sin(theta));
}

// f64 → T the way CpuStorage::from_real does for f64 values: to f32 (nearest), then
// to f16/bf16 from that f32; T = double keeps the value.
template <typename T> __device__ __forceinline__ T store_f64(double v) {
    return medsyn::from_f32<T>(__double2float_rn(v));
}
template <> __device__ __forceinline__ double store_f64<double>(double v) { return v; }

// The four normals of block b.
__device__ __forceinline__ void normals(unsigned long long seed, unsigned long long counter, unsigned long long b,
                                        double z[4]) {
    const uint4 x = block(seed, counter, b);
    box_muller(x.x, x.y, z[0], z[1]);
    box_muller(x.z, x.w, z[2], z[3]);
}

}  // namespace px

// out[i] for i < n = the i-th standard normal of the stream at (seed, counter), in T.
// One thread per block of 4: 1-D grid-stride over ceil(n/4) blocks, any grid/block,
// no smem.
template <typename T>
__device__ void philox_normal_impl(long long n, unsigned long long seed, unsigned long long counter,
                                   T* __restrict__ out) {
    const long long blocks = (n + 3) / 4;
    for (long long b = medsyn::global_tid(); b < blocks; b += medsyn::grid_stride()) {
        double z[4];
        px::normals(seed, counter, (unsigned long long)b, z);
#pragma unroll
        for (int j = 0; j < 4; ++j)
            if (4 * b + j < n) out[4 * b + j] = px::store_f64<T>(z[j]);
    }
}
MEDSYN_DTYPES(philox_normal, (long long n, unsigned long long seed, unsigned long long counter, T* __restrict__ out),
              (n, seed, counter, out))

// The same normals in f64 (for the bit-identity test against Philox::normal).
MEDSYN_ENTRY(philox_normal, f64, double,
             (long long n, unsigned long long seed, unsigned long long counter, T* __restrict__ out),
             (n, seed, counter, out))

// out[i] = lo + (hi − lo)·u_i for i < n, u_i the i-th uniform in [0, 1) of the stream
// (Tensor::rand_uniform), in T. Launch as philox_normal; no smem.
template <typename T>
__device__ void philox_uniform_impl(long long n, unsigned long long seed, unsigned long long counter, double lo,
                                    double hi, T* __restrict__ out) {
    const long long blocks = (n + 3) / 4;
    const double span = __dsub_rn(hi, lo);
    for (long long b = medsyn::global_tid(); b < blocks; b += medsyn::grid_stride()) {
        const uint4 x = px::block(seed, counter, (unsigned long long)b);
        const unsigned int w[4] = {x.x, x.y, x.z, x.w};
#pragma unroll
        for (int j = 0; j < 4; ++j)
            if (4 * b + j < n) out[4 * b + j] = px::store_f64<T>(__dadd_rn(lo, __dmul_rn(span, px::uniform01(w[j]))));
    }
}
MEDSYN_DTYPES(philox_uniform,
              (long long n, unsigned long long seed, unsigned long long counter, double lo, double hi,
               T* __restrict__ out),
              (n, seed, counter, lo, hi, out))

// out[4b + j] = word j of block b for b < nblocks (raw stream, for tests). 1-D
// grid-stride, any grid/block, no smem.
extern "C" __global__ void philox_raw(long long nblocks, unsigned long long seed, unsigned long long counter,
                                      unsigned int* __restrict__ out) {
    for (long long b = medsyn::global_tid(); b < nblocks; b += medsyn::grid_stride()) {
        const uint4 x = px::block(seed, counter, (unsigned long long)b);
        out[4 * b + 0] = x.x;
        out[4 * b + 1] = x.y;
        out[4 * b + 2] = x.z;
        out[4 * b + 3] = x.w;
    }
}

/*
Launch contract (philox.cu)
===========================
All kernels: 1-D grid-stride over counter blocks (ceil(n/4), or nblocks): block 256,
grid min(ceil(blocks/256), 8·SMs·8) (any grid gives the same bytes); no smem. `seed`
and `counter` are the host Philox's seed() and counter() before the draw; after the
launch the host advances its counter by ceil(n/4) (Philox::advance), so CPU and GPU
draws interleave on one stream. out contiguous [n].

philox_normal_T(i64 n, u64 seed, u64 counter, T* out)        T in f32/f16/bf16
    mirrors Tensor::randn(&mut Philox::from_state(seed, counter), shape, dtype).
philox_normal_f64(i64 n, u64 seed, u64 counter, double* out)
    mirrors Philox::normal(n) (the f64 values; for tests).
philox_uniform_T(i64 n, u64 seed, u64 counter, double lo, double hi, T* out)
    mirrors Tensor::rand_uniform(rng, lo, hi, shape, dtype) (bit-identical).
philox_raw(i64 nblocks, u64 seed, u64 counter, u32* out)
    out has 4·nblocks words; mirrors philox4x32_10 at counters counter + b (tests).
*/
