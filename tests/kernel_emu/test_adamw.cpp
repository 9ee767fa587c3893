// kernels/adamw.cu under the emulator: the per-step scalars (adamw_hyper), two AdamW
// steps of f32 parameters and of bf16/f16 parameters with f32 masters and on-the-fly
// unscaling, with gradients in the parameter's dtype (adamw_step_T) or in f32
// (adamw_step_g32_T: unscaled without rounding to T, incl. unscaled f16 gradients in
// f16's subnormal range), checked bit for bit against a scalar transcription of src/optim/adamw.rs's
// `update` (and within 1e-6 against the float64 AdamW formula); the inf/NaN check flag
// and in-place unscale of grad_unscale_check, the skipped step, loss_scale_update's
// backoff / growth, and scale_by_device. Outputs start as NaN.
#include "emu.h"
#include "gen_adamw.cpp"
#include "check.h"

constexpr double LR = 1e-3, BETA1 = 0.9, BETA2 = 0.999, EPS = 1e-8, WD = 0.01;

// adamw.rs's Hyper for `step`, as AdamW::step computes it (f64).
struct Hyper {
    double decay, one_minus_beta1, beta2, one_minus_beta2, step_size, bc2_sqrt, eps;
};
static Hyper hyper_ref(long long step) {
    const double t = (double)step;
    return {1.0 - LR * WD, 1.0 - BETA1, BETA2, 1.0 - BETA2, LR / (1.0 - std::pow(BETA1, t)),
            std::pow(1.0 - std::pow(BETA2, t), 0.5), EPS};
}

// adamw.rs `update::<f32>` for one element (same operations, same order, f32).
static void update_ref(float& p, float g, float& m, float& v, const Hyper& h) {
    const float decay = (float)h.decay, b1c = (float)h.one_minus_beta1, b2 = (float)h.beta2,
                b2c = (float)h.one_minus_beta2, neg_step = (float)(-h.step_size), bc2 = (float)h.bc2_sqrt,
                eps = (float)h.eps;
    const float pi = p * decay;
    const float mi = m + b1c * (g - m);
    const float vi = v * b2 + b2c * g * g;
    const float denom = std::sqrt(vi) / bc2 + eps;
    p = pi + neg_step * (mi / denom);
    m = mi;
    v = vi;
}

static bool same_bits(float a, float b) { return memcmp(&a, &b, 4) == 0; }

// The AdamW entry point for a parameter of type T with gradients of type G:
// adamw_step_T when G = T, adamw_step_g32_T (T half) when G = float.
template <typename T, typename G>
void step_entry(long long n, const AdamwHyper* hyper, float* master, T* param, const G* grad, float* m, float* v,
                const float* inv_scale) {
    if constexpr (std::is_same_v<T, G>)
        ENTRY(adamw_step, T, n, hyper, master, param, grad, m, v, inv_scale);
    else if constexpr (std::is_same_v<T, __half>)
        medsyn_entry_adamw_step_g32_f16::adamw_step_g32_f16(n, hyper, master, param, grad, m, v, inv_scale);
    else
        medsyn_entry_adamw_step_g32_bf16::adamw_step_g32_bf16(n, hyper, master, param, grad, m, v, inv_scale);
}

static void check_hyper(const AdamwHyper* got, long long step) {
    const Hyper h = hyper_ref(step);
    const bool ok = same_bits(got->decay, (float)h.decay) && same_bits(got->one_minus_beta1, (float)h.one_minus_beta1) &&
                    same_bits(got->beta2, (float)h.beta2) && same_bits(got->one_minus_beta2, (float)h.one_minus_beta2) &&
                    same_bits(got->neg_step_size, (float)(-h.step_size)) &&
                    same_bits(got->bc2_sqrt, (float)h.bc2_sqrt) && same_bits(got->eps, (float)h.eps) && got->skip == 0;
    char what[64];
    snprintf(what, sizeof what, "hyper step %lld", step);
    expect(what, ok);
}

// Two steps of n parameters of dtype T (f32: the master is the parameter; f16/bf16: an f32
// master plus the model copy) with gradients of dtype G (T, or f32 for a half T) of
// standard deviation gsd after unscaling, scaled by 1/inv_scale when `scaled`.
template <typename T, typename G = T>
void steps(long long n, bool scaled, bool exact, unsigned seed, float gsd = 0.01f) {
    constexpr bool F32 = std::is_same_v<T, float>;
    static_assert(std::is_same_v<G, T> || (std::is_same_v<G, float> && !F32), "grad type");
    printf("%s adamw grad %s n=%lld scaled=%d exact=%d gsd=%g\n", tname<T>(), tname<G>(), n, scaled, exact, gsd);
    std::mt19937 rng(seed);
    float *master = dalloc<float>(n, exact), *m = dalloc<float>(n, exact), *v = dalloc<float>(n, exact);
    T* param = F32 ? nullptr : dalloc<T>(n, exact);
    G* grad = dalloc<G>(n, exact);
    float* inv_scale = scaled ? dalloc<float>(1) : nullptr;
    if (inv_scale) *inv_scale = 1.0f / 1024.0f;
    char what_premise[64];
    long long* step = dalloc<long long>(1);
    *step = 0;
    AdamwHyper* hyper = dalloc<AdamwHyper>(1);
    memset(hyper, 0xff, sizeof(AdamwHyper));
    std::vector<float> rp(n), rm(n, 0.f), rv(n, 0.f);
    std::vector<double> dp(n), dm(n, 0.0), dv(n, 0.0);  // float64 AdamW
    {
        std::normal_distribution<float> nd(0.f, 1.f);
        for (long long i = 0; i < n; ++i) {
            master[i] = F32 ? nd(rng) : fromt(tof<T>(nd(rng)));
            rp[i] = master[i];
            dp[i] = master[i];
            m[i] = 0.f;
            v[i] = 0.f;
        }
        if (param) fill_nan(param, n);
    }
    for (int s = 1; s <= 2; ++s) {
        std::normal_distribution<float> nd(0.f, scaled ? 1024.f * gsd : gsd);
        for (long long i = 0; i < n; ++i) grad[i] = tof<G>(nd(rng));
        emu::launch(dim3{1, 1, 1}, 32, 0, [&] { adamw_hyper(1, nullptr, step, LR, BETA1, BETA2, EPS, WD, hyper); });
        expect("step counter", *step == s);
        check_hyper(hyper, s);
        emu::launch(dim3{2, 1, 1}, 256, 0, [&] { step_entry(n, hyper, master, param, grad, m, v, inv_scale); });
        const Hyper h = hyper_ref(s);
        long long off_grid = 0;  // unscaled gradients that rounding to T would change
        long long f16_subnormal = 0;
        for (long long i = 0; i < n; ++i) {
            float g = fromt(grad[i]);
            if (scaled) g = fromt(tof<G>(g * *inv_scale));
            off_grid += fromt(tof<T>(g)) != g;
            f16_subnormal += std::fabs(g) < 6.103515625e-05f;  // below f16's smallest normal
            update_ref(rp[i], g, rm[i], rv[i], h);
            // float64 AdamW (decoupled weight decay, bias-corrected moments)
            dm[i] = BETA1 * dm[i] + (1 - BETA1) * g;
            dv[i] = BETA2 * dv[i] + (1 - BETA2) * (double)g * g;
            const double mh = dm[i] / (1 - std::pow(BETA1, s)), vh = dv[i] / (1 - std::pow(BETA2, s));
            dp[i] = dp[i] * (1 - LR * WD) - LR * mh / (std::sqrt(vh) + EPS);
        }
        if (!std::is_same_v<G, T>) {
            // The premise of an f32-gradient case: most gradients are not values of T, so
            // a kernel rounding them to T (as adamw_step_T's unscale does) would fail.
            snprintf(what_premise, sizeof what_premise, "step %d f32 grads off T's grid", s);
            expect(what_premise, off_grid > n / 2);
            if (std::is_same_v<T, __half> && gsd < 1e-4f) {
                snprintf(what_premise, sizeof what_premise, "step %d grads subnormal in f16", s);
                expect(what_premise, f16_subnormal > n / 2);
            }
        }
        size_t bad = 0, bad_param = 0;
        double e64 = 0;
        for (long long i = 0; i < n; ++i) {
            bad += !same_bits(master[i], rp[i]) || !same_bits(m[i], rm[i]) || !same_bits(v[i], rv[i]);
            if (param) {
                const T want = tof<T>(rp[i]);
                bad_param += memcmp(&param[i], &want, sizeof(T)) != 0;
            }
            e64 = std::max(e64, std::fabs(master[i] - dp[i]));
        }
        char what[64];
        snprintf(what, sizeof what, "step %d master/m/v mismatches", s);
        report(what, (double)bad, 0);
        if (param) {
            snprintf(what, sizeof what, "step %d param mismatches", s);
            report(what, (double)bad_param, 0);
        }
        snprintf(what, sizeof what, "step %d vs float64 AdamW", s);
        report(what, e64, 1e-6);
    }
    // A skipped step: found_inf set -> adamw_hyper marks skip, the step changes nothing.
    int* found_inf = dalloc<int>(1);
    *found_inf = 1;
    std::vector<float> before(master, master + n), mb(m, m + n), vb(v, v + n);
    emu::launch(dim3{1, 1, 1}, 32, 0, [&] { adamw_hyper(1, found_inf, step, LR, BETA1, BETA2, EPS, WD, hyper); });
    expect("skip: flag set, step kept", hyper->skip == 1 && *step == 2);
    std::vector<T> pb;
    if (param) pb.assign(param, param + n);
    emu::launch(dim3{2, 1, 1}, 256, 0, [&] { step_entry(n, hyper, master, param, grad, m, v, inv_scale); });
    if (param) expect("skip: param unchanged", memcmp(pb.data(), param, n * sizeof(T)) == 0);
    expect("skip: state unchanged", memcmp(before.data(), master, n * 4) == 0 && memcmp(mb.data(), m, n * 4) == 0 &&
                                        memcmp(vb.data(), v, n * 4) == 0);
    *found_inf = 0;
    emu::launch(dim3{1, 1, 1}, 32, 0, [&] { adamw_hyper(1, found_inf, step, LR, BETA1, BETA2, EPS, WD, hyper); });
    expect("no overflow: steps", hyper->skip == 0 && *step == 3);
    check_hyper(hyper, 3);
}

// grad_unscale_check: flag on inf/NaN (checked before scaling), in-place unscale,
// never clears the flag.
template <typename T>
void unscale_check(long long n, bool exact, unsigned seed) {
    printf("%s grad_unscale_check n=%lld exact=%d\n", tname<T>(), n, exact);
    std::mt19937 rng(seed);
    T *g = dalloc<T>(n, exact), *orig = dalloc<T>(n, exact), *ref = dalloc<T>(n, exact);
    fill_normal(orig, n, rng, 100.f);
    float* inv = dalloc<float>(1);
    *inv = 1.0f / 512.0f;
    int* found = dalloc<int>(1);
    auto run = [&](const float* inv_scale) {
        emu::launch(dim3{2, 1, 1}, 128, 0, [&] { ENTRY(grad_unscale_check, T, n, g, inv_scale, found); });
    };
    memcpy(g, orig, n * sizeof(T));
    *found = 0;
    run(inv);
    for (long long i = 0; i < n; ++i) ref[i] = tof<T>(fromt(orig[i]) * *inv);
    expect("finite: flag stays 0", *found == 0);
    report("unscaled mismatches", (double)bit_mismatches(g, ref, n), 0);
    memcpy(g, orig, n * sizeof(T));
    run(nullptr);
    expect("check only: grads untouched", memcmp(g, orig, n * sizeof(T)) == 0 && *found == 0);
    for (int kind = 0; kind < 3; ++kind) {
        memcpy(g, orig, n * sizeof(T));
        const long long at = kind == 0 ? n - 1 : (kind == 1 ? 0 : n / 2);
        g[at] = tof<T>(kind == 0 ? INFINITY : (kind == 1 ? -INFINITY : NAN));
        *found = 0;
        run(kind == 2 ? nullptr : inv);
        expect(kind == 0 ? "+inf sets the flag" : (kind == 1 ? "-inf sets the flag" : "NaN sets the flag"), *found == 1);
    }
    memcpy(g, orig, n * sizeof(T));
    *found = 1;
    run(inv);
    expect("finite: a set flag stays set", *found == 1);
    // loss · scale with the device scale
    double* scale = dalloc<double>(1);
    *scale = 4096.0;
    T* y = dalloc<T>(n, exact);
    fill_nan(y, n);
    emu::launch(dim3{2, 1, 1}, 64, 0, [&] { ENTRY(scale_by_device, T, n, orig, scale, y); });
    for (long long i = 0; i < n; ++i) ref[i] = tof<T>(fromt(orig[i]) * (float)*scale + 0.0f);
    report("scale_by_device mismatches", (double)bit_mismatches(y, ref, n), 0);
}

// loss_scale_update: backoff on overflow, growth after growth_interval clean steps (only
// to a finite scale), inv_scale = (f32)(1/scale), found_inf cleared.
void scaler() {
    printf("loss_scale_update\n");
    int* found = dalloc<int>(1);
    double* scale = dalloc<double>(1);
    long long* tracker = dalloc<long long>(1);
    float* inv = dalloc<float>(1);
    auto update = [&] {
        emu::launch(dim3{1, 1, 1}, 1, 0, [&] { loss_scale_update(found, scale, tracker, inv, 2.0, 0.5, 2); });
    };
    *scale = 65536.0;
    *tracker = 1;
    *found = 1;
    *inv = NAN;
    update();
    expect("overflow: backoff", *scale == 32768.0 && *tracker == 0 && *found == 0 && *inv == (float)(1.0 / 32768.0));
    update();
    expect("clean step 1: no growth yet", *scale == 32768.0 && *tracker == 1 && *found == 0);
    update();
    expect("clean step 2: growth", *scale == 65536.0 && *tracker == 0 && *inv == (float)(1.0 / 65536.0));
    *scale = 1e308;
    *tracker = 1;
    update();
    expect("growth to inf refused", *scale == 1e308 && *tracker == 0);
}

int main(int argc, char** argv) {
    parse_args(argc, argv);
    steps<float>(1005, false, false, 1);
    steps<float>(1005, true, true, 2);
    steps<bf16>(1005, true, false, 3);
    steps<f16>(777, false, true, 4);
    // Half parameters with f32 gradients (adamw_step_g32_T), the CPU's convention.
    steps<bf16, float>(1005, true, false, 8);
    steps<f16, float>(777, false, true, 9);
    steps<f16, float>(1005, true, true, 10);
    // Unscaled gradients ~2e-5: mostly subnormal in f16 (< 6.1e-5), kept exact in f32.
    steps<f16, float>(1005, true, false, 11, 2e-5f);
    steps<bf16, float>(513, true, true, 12, 2e-5f);
    unscale_check<float>(1001, false, 5);
    unscale_check<bf16>(1001, true, 6);
    unscale_check<f16>(1001, false, 7);
    scaler();
    return finish();
}
