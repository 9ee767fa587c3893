// Fused AdamW step over a flat parameter buffer (fp32 master weights, fp32 moments,
// f32/f16/bf16 model copy, gradient in the parameter's dtype or f32) and the device side of dynamic loss scaling
// (inf/NaN check + unscale setting a device flag, scale update, loss × scale), so a
// mixed-precision step runs without host synchronisation. CPU twins:
// src/optim/adamw.rs (Hyper, update, AdamW::step, step_with_scaler) and
// src/optim/loss_scale.rs (LossScaler::unscale_and_check, update, scale).
//
// Order of one mixed-precision step on a stream (all device-side):
//   grad_unscale_check_T  per gradient buffer (sets *found_inf; unscales in place)
//   adamw_hyper           per group: skip flag from *found_inf, step += 1, scalars
//   adamw_step_T          per parameter buffer (returns at once when skip is set);
//                         adamw_step_g32_T for a half parameter with an f32 gradient
//   loss_scale_update     once (backoff/growth from *found_inf; clears *found_inf)
// The update itself uses IEEE round-to-nearest intrinsics in the CPU's operation
// order (no FMA contraction), so with the same scalars the masters and moments are
// bit-identical to the CPU's f32 update.
#include "common.cuh"

// Per-step AdamW scalars for one parameter group (32 bytes, device memory), the
// CPU's `Hyper` rounded to f32 as `update` does (T::from_f64), plus the skip flag.
struct AdamwHyper {
    float decay;            // 1 − lr·weight_decay
    float one_minus_beta1;  // 1 − β1
    float beta2;            // β2
    float one_minus_beta2;  // 1 − β2
    float neg_step_size;    // −lr / (1 − β1^step)
    float bc2_sqrt;         // sqrt(1 − β2^step)
    float eps;
    int skip;  // 1: gradients overflowed this step; adamw_step does nothing
};

// For i < n: if found_inf is non-null and *found_inf != 0, hyper[i].skip = 1 (step i
// unchanged); else steps[i] += 1 and hyper[i] = the CPU's Hyper for that step, computed
// in f64 (pow for β^step) and rounded to f32. 1-D grid-stride (n usually 1: one group
// with one shared step count; or one entry per parameter), no smem.
extern "C" __global__ void adamw_hyper(int n, const int* __restrict__ found_inf, long long* __restrict__ steps,
                                       double lr, double beta1, double beta2, double eps, double weight_decay,
                                       AdamwHyper* __restrict__ hyper) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
        AdamwHyper h = hyper[i];
        if (found_inf && *found_inf != 0) {
            h.skip = 1;
        } else {
            const long long step = steps[i] + 1;
            steps[i] = step;
            const double t = (double)step;
            h.decay = (float)(1.0 - lr * weight_decay);
            h.one_minus_beta1 = (float)(1.0 - beta1);
            h.beta2 = (float)beta2;
            h.one_minus_beta2 = (float)(1.0 - beta2);
            h.neg_step_size = (float)(-(lr / (1.0 - pow(beta1, t))));
            h.bc2_sqrt = (float)sqrt(1.0 - pow(beta2, t));  // the CPU's powf(0.5)
            h.eps = (float)eps;
            h.skip = 0;
        }
        hyper[i] = h;
    }
}

// One AdamW update of n parameters unless hyper->skip, with gradients stored as G:
//   g  = grad (× inv_scale, rounded to G as the CPU's in-place unscale stores it (a no-op
//        rounding for G = float), when inv_scale is non-null)
//   p' = p·decay + neg_step·(m'/(sqrt(v')/bc2 + eps)),  m' = m + (1−β1)(g − m),
//   v' = v·β2 + (1−β2)·g·g
// master: f32 weights (the parameter itself for f32 parameters, the fp32 master for
// f16/bf16 ones); param: the model copy of type T (null for f32 parameters), written
// as round_T(p'). Shared body of adamw_step_T (G = T) and adamw_step_g32_T (G = float).
template <typename T, typename G>
__device__ void adamw_update(long long n, const AdamwHyper* __restrict__ hyper, float* __restrict__ master,
                             T* __restrict__ param, const G* __restrict__ grad, float* __restrict__ m,
                             float* __restrict__ v, const float* __restrict__ inv_scale) {
    const AdamwHyper h = *hyper;
    if (h.skip) return;
    const float k = inv_scale ? *inv_scale : 1.0f;
    for (long long i = medsyn::global_tid(); i < n; i += medsyn::grid_stride()) {
        float g = medsyn::to_f32(grad[i]);
        if (inv_scale) g = medsyn::to_f32(medsyn::from_f32<G>(__fmul_rn(g, k)));
        const float mi0 = m[i], vi0 = v[i];
        const float pi = __fmul_rn(master[i], h.decay);
        const float mi = __fadd_rn(mi0, __fmul_rn(h.one_minus_beta1, __fsub_rn(g, mi0)));
        const float vi = __fadd_rn(__fmul_rn(vi0, h.beta2), __fmul_rn(__fmul_rn(h.one_minus_beta2, g), g));
        const float denom = __fadd_rn(__fdiv_rn(__fsqrt_rn(vi), h.bc2_sqrt), h.eps);
        const float p = __fadd_rn(pi, __fmul_rn(h.neg_step_size, __fdiv_rn(mi, denom)));
        master[i] = p;
        m[i] = mi;
        v[i] = vi;
        if (param) param[i] = medsyn::from_f32<T>(p);
    }
}

// adamw_update with grad and param both of type T (f32 parameters: param null; half
// parameters with half gradients). 1-D grid-stride, any grid/block, no smem.
template <typename T>
__device__ void adamw_step_impl(long long n, const AdamwHyper* __restrict__ hyper, float* __restrict__ master,
                                T* __restrict__ param, const T* __restrict__ grad, float* __restrict__ m,
                                float* __restrict__ v, const float* __restrict__ inv_scale) {
    adamw_update<T, T>(n, hyper, master, param, grad, m, v, inv_scale);
}
MEDSYN_DTYPES(adamw_step,
              (long long n, const AdamwHyper* __restrict__ hyper, float* __restrict__ master, T* __restrict__ param,
               const T* __restrict__ grad, float* __restrict__ m, float* __restrict__ v,
               const float* __restrict__ inv_scale),
              (n, hyper, master, param, grad, m, v, inv_scale))

// adamw_update for a half parameter (T = f16/bf16, param required) with f32 gradients,
// the CPU's convention (backward leaves a half leaf's gradient in f32; the scaler
// unscales it in f32 without rounding to T). 1-D grid-stride, any grid/block, no smem.
// Entry points adamw_step_g32_f16 and adamw_step_g32_bf16 only (f32 parameters with
// f32 gradients are adamw_step_f32).
template <typename T>
__device__ void adamw_step_g32_impl(long long n, const AdamwHyper* __restrict__ hyper, float* __restrict__ master,
                                    T* __restrict__ param, const float* __restrict__ grad, float* __restrict__ m,
                                    float* __restrict__ v, const float* __restrict__ inv_scale) {
    adamw_update<T, float>(n, hyper, master, param, grad, m, v, inv_scale);
}
MEDSYN_ENTRY(adamw_step_g32, f16, __half,
             (long long n, const AdamwHyper* __restrict__ hyper, float* __restrict__ master, T* __restrict__ param,
              const float* __restrict__ grad, float* __restrict__ m, float* __restrict__ v,
              const float* __restrict__ inv_scale),
             (n, hyper, master, param, grad, m, v, inv_scale))
MEDSYN_ENTRY(adamw_step_g32, bf16, __nv_bfloat16,
             (long long n, const AdamwHyper* __restrict__ hyper, float* __restrict__ master, T* __restrict__ param,
              const float* __restrict__ grad, float* __restrict__ m, float* __restrict__ v,
              const float* __restrict__ inv_scale),
             (n, hyper, master, param, grad, m, v, inv_scale))

// Sets *found_inf = 1 if any of grad[0..n) is inf or NaN (checked before scaling, as
// the CPU); when inv_scale is non-null also grad[i] = round_T(grad[i]·inv_scale) in
// place (LossScaler::unscale_and_check). With inv_scale null it only checks (then
// adamw_step unscales on the fly: same bits). 1-D grid-stride, any grid/block, no
// smem; never clears the flag (loss_scale_update or a memset does).
template <typename T>
__device__ void grad_unscale_check_impl(long long n, T* __restrict__ grad, const float* __restrict__ inv_scale,
                                        int* __restrict__ found_inf) {
    const float k = inv_scale ? *inv_scale : 1.0f;
    bool bad = false;
    for (long long i = medsyn::global_tid(); i < n; i += medsyn::grid_stride()) {
        const float g = medsyn::to_f32(grad[i]);
        bad |= !isfinite(g);
        if (inv_scale) grad[i] = medsyn::from_f32<T>(__fmul_rn(g, k));
    }
    if (bad) *found_inf = 1;  // every writer stores the same value
}
MEDSYN_DTYPES(grad_unscale_check,
              (long long n, T* __restrict__ grad, const float* __restrict__ inv_scale, int* __restrict__ found_inf),
              (n, grad, inv_scale, found_inf))

// LossScaler::update on device state, then clears *found_inf for the next step:
// overflow: scale ·= backoff, tracker = 0; else tracker += 1 and after
// growth_interval clean steps scale ·= growth (kept only if finite), tracker = 0.
// inv_scale = (f32)(1/scale) for the next unscale. Grid 1, block 1, no smem.
extern "C" __global__ void loss_scale_update(int* __restrict__ found_inf, double* __restrict__ scale,
                                             long long* __restrict__ growth_tracker, float* __restrict__ inv_scale,
                                             double growth_factor, double backoff_factor,
                                             long long growth_interval) {
    if (blockIdx.x != 0 || threadIdx.x != 0) return;
    double s = *scale;
    long long t = *growth_tracker;
    if (*found_inf != 0) {
        s *= backoff_factor;
        t = 0;
    } else {
        t += 1;
        if (t >= growth_interval) {
            const double grown = s * growth_factor;
            if (isfinite(grown)) s = grown;
            t = 0;
        }
    }
    *scale = s;
    *growth_tracker = t;
    *inv_scale = (float)(1.0 / s);
    *found_inf = 0;
}

// y = x · (f32)(*scale) + 0 (the CPU's loss.scale(scale) = affine(scale, 0) with the
// scale read from device memory). 1-D grid-stride, any grid/block, no smem.
template <typename T>
__device__ void scale_by_device_impl(long long n, const T* __restrict__ x, const double* __restrict__ scale,
                                     T* __restrict__ y) {
    const float k = (float)*scale;
    for (long long i = medsyn::global_tid(); i < n; i += medsyn::grid_stride())
        y[i] = medsyn::from_f32<T>(__fadd_rn(__fmul_rn(medsyn::to_f32(x[i]), k), 0.0f));
}
MEDSYN_DTYPES(scale_by_device,
              (long long n, const T* __restrict__ x, const double* __restrict__ scale, T* __restrict__ y),
              (n, x, scale, y))

/*
Launch contract (adamw.cu)
==========================
Device state the Rust side allocates: per parameter buffer m, v (f32, zeroed), a
gradient buffer (the parameter's dtype, or f32 for a half parameter: adamw_step_g32_T)
and, for f16/bf16 parameters, an f32 master (initialised from the parameter; the CPU's
master_matches re-sync is a host decision: re-cast with cast_f16_f32/cast_bf16_f32);
per group (or per parameter) an i64 step counter (zeroed, or restored from a
checkpoint) and an AdamwHyper (32 bytes: 7 f32 + i32 skip, field order as the struct);
for loss scaling one int found_inf (zeroed), one f64 scale (= init_scale), one i64
growth_tracker (0), one f32 inv_scale (= (f32)(1/init_scale)).

adamw_hyper(int n, const int* found_inf (nullable), i64* steps, double lr, double beta1,
            double beta2, double eps, double weight_decay, AdamwHyper* hyper)
    grid ceil(n/256), block 256 (n = 1: grid 1, block 32); no smem. found_inf null
    (no scaler) always steps. Mirrors the Hyper computed in AdamW::step. β^step uses
    CUDA's f64 pow (≤ 2 ulp) where the CPU uses libm's powf: the f32 scalars agree
    except, rarely, in the last bit.
adamw_step_T(i64 n, const AdamwHyper* hyper, float* master, T* param (nullable),
             const T* grad, float* m, float* v, const float* inv_scale (nullable))
    T = dtype of grad and param. f32 parameters: adamw_step_f32 with master = the
    parameter buffer, param = null. f16/bf16 with f16/bf16 gradients: master = the f32
    master, param = the parameter. inv_scale: non-null to unscale here (skip
    grad_unscale_check's write; the unscaled gradient is rounded to T as
    grad_unscale_check_T would store it); null when the gradients are already unscaled
    or no scaler is used.
    1-D grid-stride: block 256, grid min(ceil(n/256), 8·SMs·(2048/256)); no smem.
    Mirrors adamw::update (+ step_param's master handling); bit-identical given equal
    AdamwHyper scalars.
adamw_step_g32_T(i64 n, const AdamwHyper* hyper, float* master, T* param,
                 const float* grad, float* m, float* v, const float* inv_scale (nullable))
    T ∈ {f16, bf16} only (entries adamw_step_g32_f16, adamw_step_g32_bf16): a half
    parameter with an f32 gradient, the CPU's convention (engine's leaf_grad_dtype keeps
    a half leaf's gradient in f32). master = the f32 master, param = the parameter
    (required, written as round_T(master)). inv_scale: non-null to unscale here in f32
    (no rounding to T, as LossScaler::unscale_and_check on an f32 gradient); the
    overflow check / in-place unscale of such gradients is grad_unscale_check_f32.
    Launch as adamw_step_T. Mirrors AdamW::step / step_with_scaler on a half parameter
    whose gradient is f32; bit-identical given equal AdamwHyper scalars.
grad_unscale_check_T(i64 n, T* grad, const float* inv_scale (nullable), int* found_inf)
    T = dtype of the gradient buffer (grad_unscale_check_f32 for the f32 gradients of
    half parameters, as used with adamw_step_g32_T). 1-D grid-stride (block 256, grid
    as adamw_step); no smem. Mirrors LossScaler::unscale_and_check (per buffer; the
    flag ORs over buffers).
loss_scale_update(int* found_inf, double* scale, i64* growth_tracker, float* inv_scale,
                  double growth_factor, double backoff_factor, i64 growth_interval)
    grid 1, block 1; after every adamw_step of the step. Mirrors LossScaler::update
    (enabled scaler; with the scaler disabled none of these kernels run). The host
    reads scale/found_inf back only when it wants to (logging, checkpoints).
scale_by_device_T(i64 n, const T* x, const double* scale, T* y)
    1-D grid-stride; mirrors LossScaler::scale (loss · scale) with the device scale.
*/
