// kernels/elementwise.cu under the emulator: every unary op and its backward (float64
// reference), binary ops through each Reach mode (exact: the kernel must equal the f32
// operation rounded to T), affine / clamp / clamp_backward (exact), powf and its backward
// (float64 reference), and the six casts between f32, f16 and bf16 against an independent
// round-to-nearest-even reference (bit-exact; every f16 and bf16 bit pattern, random f32
// bit patterns and hand-picked ties, overflows and subnormals). Each kernel runs on 16-byte
// aligned buffers (packed path + scalar tail) and on unaligned buffers ending exactly at a
// guard page (scalar path, any over-read faults). Outputs start as NaN.
#include "emu.h"
#include "gen_elementwise.cpp"
#include "check.h"

static const char* UNARY_NAMES[] = {"neg",  "exp",        "log", "sqrt",   "tanh",   "sigmoid", "relu", "silu",
                                    "gelu", "gelu_tanh", "quick_gelu", "abs", "square", "recip", "sin", "cos"};
constexpr int N_UNARY = 16;
constexpr double GELU_TANH_K = 0.7978845608028654, GELU_TANH_C = 0.044715;

static double sigm(double x) { return 1.0 / (1.0 + std::exp(-x)); }

static double unary_ref(int op, double x) {
    switch (op) {
        case 0: return -x;
        case 1: return std::exp(x);
        case 2: return std::log(x);
        case 3: return std::sqrt(x);
        case 4: return std::tanh(x);
        case 5: return sigm(x);
        case 6: return x > 0 ? x : 0.0;
        case 7: return x * sigm(x);
        case 8: return x * 0.5 * std::erfc(-x / std::sqrt(2.0));
        case 9: return 0.5 * x * (1.0 + std::tanh(GELU_TANH_K * (x + GELU_TANH_C * x * x * x)));
        case 10: return x * sigm(1.702 * x);
        case 11: return std::fabs(x);
        case 12: return x * x;
        case 13: return 1.0 / x;
        case 14: return std::sin(x);
        case 15: return std::cos(x);
    }
    return NAN;
}

// f'(x); the ops whose CPU derivative reads the forward output (exp, sqrt, tanh, sigmoid,
// recip) use the y that the kernel is given.
static double unary_deriv_ref(int op, double x, double y) {
    switch (op) {
        case 0: return -1.0;
        case 1: return y;
        case 2: return 1.0 / x;
        case 3: return 0.5 / y;
        case 4: return 1.0 - y * y;
        case 5: return y * (1.0 - y);
        case 6: return x > 0 ? 1.0 : 0.0;
        case 7: return sigm(x) * (1.0 + x * (1.0 - sigm(x)));
        case 8: return 0.5 * std::erfc(-x / std::sqrt(2.0)) + x * std::exp(-0.5 * x * x) / std::sqrt(2.0 * M_PI);
        case 9: {
            const double t = std::tanh(GELU_TANH_K * (x + GELU_TANH_C * x * x * x));
            return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * GELU_TANH_K * (1.0 + 3.0 * GELU_TANH_C * x * x);
        }
        case 10: return sigm(1.702 * x) + 1.702 * x * sigm(1.702 * x) * (1.0 - sigm(1.702 * x));
        case 11: return x > 0 ? 1.0 : (x < 0 ? -1.0 : 0.0);
        case 12: return 2.0 * x;
        case 13: return -y * y;
        case 14: return std::cos(x);
        case 15: return -std::sin(x);
    }
    return NAN;
}

// Two blocks: every thread makes several grid-stride passes (block sizes 64..256).
static unsigned grid_for(long long) { return 2; }

template <typename T>
void unary_ops(long long n, bool exact, unsigned seed) {
    printf("%s unary n=%lld exact=%d\n", tname<T>(), n, exact);
    std::mt19937 rng(seed);
    T *x = dalloc<T>(n, exact), *y = dalloc<T>(n, exact), *yin = dalloc<T>(n, exact), *dy = dalloc<T>(n, exact),
      *dx = dalloc<T>(n, exact);
    std::vector<double> vdy = fill_normal(dy, n, rng);
    const double tol = tol3<T>(2e-6, 1e-3, 8e-3);
    for (int op = 0; op < N_UNARY; ++op) {
        std::vector<double> vx = fill_normal(x, n, rng, 2.f);
        if (op == 2 || op == 3 || op == 13)  // log, sqrt, recip: positive inputs
            for (long long i = 0; i < n; ++i) {
                x[i] = tof<T>(std::fabs((float)vx[i]) + 0.25f);
                vx[i] = fromt(x[i]);
            }
        if (op == 6 || op == 11) {  // relu, abs: exact zeros too
            x[0] = tof<T>(0.f);
            vx[0] = 0;
        }
        std::vector<double> ry(n), rdx(n), vy(n);
        for (long long i = 0; i < n; ++i) {
            ry[i] = unary_ref(op, vx[i]);
            yin[i] = tof<T>((float)ry[i]);
            vy[i] = fromt(yin[i]);
            rdx[i] = vdy[i] * unary_deriv_ref(op, vx[i], vy[i]);
        }
        fill_nan(y, n);
        fill_nan(dx, n);
        emu::launch(dim3{grid_for(n), 1, 1}, 64, 0, [&] { ENTRY(unary, T, op, n, x, y); });
        emu::launch(dim3{grid_for(n), 1, 1}, 128, 0, [&] { ENTRY(unary_backward, T, op, n, x, yin, dy, dx); });
        char what[64];
        snprintf(what, sizeof what, "%s", UNARY_NAMES[op]);
        report(what, elemerr(to_f64(y, n), ry, 1.0), tol);
        snprintf(what, sizeof what, "%s backward", UNARY_NAMES[op]);
        report(what, elemerr(to_f64(dx, n), rdx, 1.0), tol * 2);
    }
}

// Binary ops: out[i] = round_T(op(a[ra(i)], b[rb(i)]) in f32), checked bit for bit.
static float binary_ref(int op, float a, float b) {
    switch (op) {
        case 0: return a + b;
        case 1: return a - b;
        case 2: return a * b;
        case 3: return a / b;
        case 4: return std::fmax(a, b);
        case 5: return std::fmin(a, b);
    }
    return NAN;
}
static long long reach(int mode, long long inner, long long i) {
    return mode == 1 ? i % inner : (mode == 2 ? i / inner : i);
}
static long long reach_len(int mode, long long inner, long long n) {
    return mode == 1 ? inner : (mode == 2 ? n / inner : n);
}

template <typename T>
void binary_ops(long long n, int mode_a, long long inner_a, int mode_b, long long inner_b, bool exact, unsigned seed) {
    static const char* modes[] = {"full", "trailing", "leading"};
    printf("%s binary n=%lld a %s(%lld) b %s(%lld) exact=%d\n", tname<T>(), n, modes[mode_a], inner_a, modes[mode_b],
           inner_b, exact);
    std::mt19937 rng(seed);
    const long long na = reach_len(mode_a, inner_a, n), nb = reach_len(mode_b, inner_b, n);
    T *a = dalloc<T>(na, exact), *b = dalloc<T>(nb, exact), *out = dalloc<T>(n, exact), *ref = dalloc<T>(n, exact);
    fill_normal(a, na, rng, 3.f);
    fill_normal(b, nb, rng, 3.f);
    a[na / 2] = tof<T>(NAN);  // max/min ignore a NaN operand; the others propagate it
    static const char* names[] = {"add", "sub", "mul", "div", "maximum", "minimum"};
    for (int op = 0; op < 6; ++op) {
        fill_nan(out, n);
        emu::launch(dim3{grid_for(n), 1, 1}, 64, 0,
                    [&] { ENTRY(binary, T, op, n, a, mode_a, inner_a, b, mode_b, inner_b, out); });
        for (long long i = 0; i < n; ++i)
            ref[i] = tof<T>(binary_ref(op, fromt(a[reach(mode_a, inner_a, i)]), fromt(b[reach(mode_b, inner_b, i)])));
        char what[64];
        snprintf(what, sizeof what, "%s mismatches", names[op]);
        report(what, (double)bit_mismatches(out, ref, n), 0);
    }
}

// affine, clamp, clamp_backward (exact) and powf, powf_backward (float64 reference).
template <typename T>
void scalar_ops(long long n, bool exact, unsigned seed) {
    printf("%s affine/clamp/powf n=%lld exact=%d\n", tname<T>(), n, exact);
    std::mt19937 rng(seed);
    T *x = dalloc<T>(n, exact), *dy = dalloc<T>(n, exact), *out = dalloc<T>(n, exact), *ref = dalloc<T>(n, exact);
    std::vector<double> vx = fill_normal(x, n, rng, 2.f), vdy = fill_normal(dy, n, rng);
    x[1] = tof<T>(-1.0f);  // exactly on the clamp bounds
    x[2] = tof<T>(0.5f);
    vx[1] = -1.0;
    vx[2] = 0.5;
    const unsigned grid = grid_for(n);
    const float mul = 1.37f, add = -0.21f;
    fill_nan(out, n);
    emu::launch(dim3{grid, 1, 1}, 256, 0, [&] { ENTRY(affine, T, n, x, mul, add, out); });
    for (long long i = 0; i < n; ++i) ref[i] = tof<T>(fromt(x[i]) * mul + add);
    report("affine mismatches", (double)bit_mismatches(out, ref, n), 0);

    const float lo = -1.0f, hi = 0.5f;
    fill_nan(out, n);
    emu::launch(dim3{grid, 1, 1}, 64, 0, [&] { ENTRY(clamp, T, n, x, lo, hi, out); });
    for (long long i = 0; i < n; ++i) ref[i] = tof<T>(std::min(std::max(fromt(x[i]), lo), hi));
    report("clamp mismatches", (double)bit_mismatches(out, ref, n), 0);

    fill_nan(out, n);
    emu::launch(dim3{grid, 1, 1}, 64, 0, [&] { ENTRY(clamp_backward, T, n, x, dy, -1.0, 0.5, out); });
    for (long long i = 0; i < n; ++i) ref[i] = (vx[i] >= -1.0 && vx[i] <= 0.5) ? dy[i] : tof<T>(0.f);
    report("clamp_backward mismatches", (double)bit_mismatches(out, ref, n), 0);

    // powf on positive inputs
    for (long long i = 0; i < n; ++i) {
        x[i] = tof<T>(std::fabs((float)vx[i]) + 0.1f);
        vx[i] = fromt(x[i]);
    }
    const double p = 2.5;
    std::vector<double> rp(n), rdp(n);
    for (long long i = 0; i < n; ++i) {
        rp[i] = std::pow(vx[i], p);
        rdp[i] = vdy[i] * p * std::pow(vx[i], p - 1.0);
    }
    const double tol = tol3<T>(2e-6, 1e-3, 8e-3);
    fill_nan(out, n);
    emu::launch(dim3{grid, 1, 1}, 256, 0, [&] { ENTRY(powf, T, n, x, (float)p, out); });
    report("powf", elemerr(to_f64(out, n), rp, 1.0), tol);
    fill_nan(out, n);
    emu::launch(dim3{grid, 1, 1}, 256, 0, [&] { ENTRY(powf_backward, T, n, x, dy, (float)p, (float)(p - 1.0), out); });
    report("powf_backward", elemerr(to_f64(out, n), rdp, 1.0), tol * 2);
}

// ---- casts: an independent round-to-nearest-even reference --------------------------

static uint16_t u16(__half h) {
    uint16_t b;
    memcpy(&b, &h, 2);
    return b;
}
static uint16_t u16(__nv_bfloat16 h) {
    uint16_t b;
    memcpy(&b, &h, 2);
    return b;
}
static uint32_t u32(float f) {
    uint32_t b;
    memcpy(&b, &f, 4);
    return b;
}
// Decoding by the formats' definitions.
static double f16_value(uint16_t h) {
    const int s = h >> 15, e = (h >> 10) & 31, m = h & 1023;
    const double v = e == 31 ? (m ? NAN : INFINITY) : (e == 0 ? std::ldexp(m, -24) : std::ldexp(1024 + m, e - 25));
    return s ? -v : v;
}
static double bf16_value(uint16_t h) {
    const int s = h >> 15, e = (h >> 7) & 255, m = h & 127;
    const double v = e == 255 ? (m ? NAN : INFINITY) : (e == 0 ? std::ldexp(m, -133) : std::ldexp(128 + m, e - 134));
    return s ? -v : v;
}
// Round x (exact in double) to a binary format with `mant` stored mantissa bits, minimum
// normal exponent emin and exponent bias, to nearest even; returns the bit pattern.
static uint16_t round_rne(double x, int mant, int emin, int bias, int exp_bits) {
    const uint16_t sign = std::signbit(x) ? (uint16_t)(1u << 15) : 0;
    const uint16_t inf = (uint16_t)(((1u << exp_bits) - 1) << mant);
    if (std::isnan(x)) return sign | inf | (uint16_t)(1u << (mant - 1));
    const double a = std::fabs(x);
    if (std::isinf(a)) return sign | inf;
    if (a == 0) return sign;
    const int e = std::max(std::ilogb(a), emin);
    const double q = std::ldexp(1.0, e - mant);    // spacing of representable values at a
    const double r = std::nearbyint(a / q) * q;  // ties to even (default rounding mode)
    const double max = std::ldexp((double)((2 << mant) - 1), (1 << (exp_bits - 1)) - 1 - mant);
    if (r > max) return sign | inf;
    if (r < std::ldexp(1.0, emin)) return sign | (uint16_t)(r / std::ldexp(1.0, emin - mant));  // subnormal
    const int e2 = std::ilogb(r);
    const unsigned m = (unsigned)(r / std::ldexp(1.0, e2 - mant)) - (1u << mant);
    return sign | (uint16_t)((unsigned)(e2 + bias) << mant) | (uint16_t)m;
}
static uint16_t to_f16_bits(double x) { return round_rne(x, 10, -14, 15, 5); }
static uint16_t to_bf16_bits(double x) { return round_rne(x, 7, -126, 127, 8); }

template <typename S>
double src_value(S v) {
    if constexpr (std::is_same_v<S, float>) return v;
    if constexpr (std::is_same_v<S, __half>) return f16_value(u16(v));
    if constexpr (std::is_same_v<S, __nv_bfloat16>) return bf16_value(u16(v));
}
// The expected destination bits of src value v: (bits, is_nan).
template <typename D>
bool dst_matches(D got, double v) {
    if (std::isnan(v)) return std::isnan(fromt(got));
    if constexpr (std::is_same_v<D, float>) return u32(got) == u32((float)v);  // widening: exact
    if constexpr (std::is_same_v<D, __half>) return u16(got) == to_f16_bits(v);
    if constexpr (std::is_same_v<D, __nv_bfloat16>) return u16(got) == to_bf16_bits(v);
}

template <typename S, typename D>
void cast_one(void (*kernel)(long long, const S*, D*), const std::vector<S>& src, bool exact) {
    const long long n = (long long)src.size();
    S* s = dalloc<S>(n, exact);
    D* d = dalloc<D>(n, exact);
    for (long long i = 0; i < n; ++i) s[i] = src[i];
    fill_nan(d, n);
    emu::launch(dim3{(unsigned)std::min<long long>((n + 255) / 256, 8), 1, 1}, 256, 0, [&] { kernel(n, s, d); });
    long long bad = 0, first = -1;
    for (long long i = 0; i < n; ++i)
        if (!dst_matches(d[i], src_value(s[i]))) {
            ++bad;
            if (first < 0) first = i;
        }
    char what[64];
    snprintf(what, sizeof what, "cast %s->%s mismatches", tname<S>(), tname<D>());
    report(what, (double)bad, 0);
    if (first >= 0) printf("    first at %lld: source %.9g\n", first, src_value(s[first]));
}

void casts(bool exact) {
    printf("casts n=65536.. exact=%d\n", exact);
    // f32 sources: hand-picked values, random bit patterns, random normals
    std::vector<float> f = {0.f, -0.f, INFINITY, -INFINITY, NAN, 65504.f, 65519.99f, 65520.f, -65520.f, 1e-8f,
                            3e-8f, std::ldexp(1.f, -25), std::ldexp(3.f, -26), 1.f + std::ldexp(1.f, -11),
                            1.f + 3 * std::ldexp(1.f, -11), 1.f + std::ldexp(1.f, -8), 1.f + 3 * std::ldexp(1.f, -8),
                            3.4e38f, -3.4e38f, 3.39e38f, std::numeric_limits<float>::max(), 1e-40f, -1e-45f,
                            std::numeric_limits<float>::min(), 6.1e-5f, 6.103515625e-05f};
    std::mt19937 rng(7);
    for (int i = 0; i < 40000; ++i) {
        uint32_t b = rng();
        float v;
        memcpy(&v, &b, 4);
        f.push_back(v);
    }
    std::normal_distribution<float> nd(0.f, 100.f);
    for (int i = 0; i < 20003; ++i) f.push_back(nd(rng));
    std::vector<__half> h(65536 + 3);
    std::vector<__nv_bfloat16> b(65536 + 3);
    for (size_t i = 0; i < h.size(); ++i) {
        const uint16_t bits = (uint16_t)(i * 40503u);  // a permutation of every pattern (+3 repeats)
        memcpy(&h[i], &bits, 2);
        memcpy(&b[i], &bits, 2);
    }
    cast_one(cast_f32_f16, f, exact);
    cast_one(cast_f32_bf16, f, exact);
    cast_one(cast_f16_f32, h, exact);
    cast_one(cast_bf16_f32, b, exact);
    cast_one(cast_f16_bf16, h, exact);
    cast_one(cast_bf16_f16, b, exact);
}

template <typename T>
void all(long long n, bool exact, unsigned seed) {
    unary_ops<T>(n, exact, seed);
    binary_ops<T>(n, 0, 0, 0, 0, exact, seed + 1);
    binary_ops<T>(n, 0, 0, 1, 7, exact, seed + 2);  // n = 7·k
    binary_ops<T>(n, 2, 7, 0, 0, exact, seed + 3);
    binary_ops<T>(n, 1, 7, 2, n / 7, exact, seed + 4);  // an outer product
    binary_ops<T>(n, 2, n / 7, 1, 7, exact, seed + 5);
    scalar_ops<T>(n, exact, seed + 6);
}

int main(int argc, char** argv) {
    parse_args(argc, argv);
    all<float>(1001, false, 1);  // 16-byte aligned: packs + a scalar tail (1001 = 7·143)
    all<float>(1001, true, 11);  // unaligned, ending at the guard page: scalar path
    all<f16>(1001, false, 21);
    all<f16>(1001, true, 31);
    all<bf16>(1001, false, 41);
    all<bf16>(1001, true, 51);
    casts(false);
    casts(true);
    return finish();
}
