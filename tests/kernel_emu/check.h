// Shared helpers of the emulator test programs: guarded buffers, NaN poisoning, dtype
// conversion, error metrics, a failure count, and entry-point calls by dtype.
#pragma once
#include <cinttypes>
#include <climits>
#include <limits>
#include <random>
#include <string>
#include <type_traits>

using bf16 = __nv_bfloat16;
using f16 = __half;

template <typename T>
inline T tof(float x) {
    return medsyn::from_f32<T>(x);
}
inline float fromt(float x) { return x; }
inline float fromt(__half x) { return medsyn::to_f32(x); }
inline float fromt(__nv_bfloat16 x) { return medsyn::to_f32(x); }
inline double fromt(double x) { return x; }

template <typename T>
const char* tname() {
    if constexpr (std::is_same_v<T, float>) return "f32";
    if constexpr (std::is_same_v<T, __half>) return "f16";
    if constexpr (std::is_same_v<T, __nv_bfloat16>) return "bf16";
    if constexpr (std::is_same_v<T, double>) return "f64";
    return "?";
}

// n elements of X, 16-byte aligned, ending at most 15 bytes before a guard page.
template <typename X>
X* dalloc(size_t n) {
    return (X*)emu::guarded_aligned(n * sizeof(X) + 1, 16);
}
// n elements of X whose last byte is the last byte before a guard page (no slack: any
// read or write past the end faults). Aligned only to the element size, so unless
// n·sizeof(X) is a multiple of 16 the start is not 16-byte aligned.
template <typename X>
X* dalloc_exact(size_t n) {
    return (X*)emu::guarded_aligned(n * sizeof(X), alignof(X));
}
template <typename X>
X* dalloc(size_t n, bool exact) {
    return exact ? dalloc_exact<X>(n) : dalloc<X>(n);
}

template <typename T>
void fill_nan(T* p, size_t n) {
    for (size_t i = 0; i < n; ++i) p[i] = tof<T>(NAN);
}
inline void fill_nan(double* p, size_t n) {
    for (size_t i = 0; i < n; ++i) p[i] = NAN;
}

// Random values rounded to T; the rounded values as f64 for the reference.
template <typename T>
std::vector<double> fill_normal(T* p, size_t n, std::mt19937& rng, float sd = 1.f, float mean = 0.f) {
    std::normal_distribution<float> nd(mean, sd);
    std::vector<double> v(n);
    for (size_t i = 0; i < n; ++i) {
        p[i] = tof<T>(nd(rng));
        v[i] = fromt(p[i]);
    }
    return v;
}

template <typename T>
std::vector<double> to_f64(const T* p, size_t n) {
    std::vector<double> v(n);
    for (size_t i = 0; i < n; ++i) v[i] = fromt(p[i]);
    return v;
}

inline int failures = 0;
inline int checks = 0;

// Prints and counts one check: err must be finite and <= tol.
inline void report(const char* what, double err, double tol) {
    const bool ok = err <= tol && !std::isnan(err);
    ++checks;
    if (!ok) ++failures;
    printf("  %-28s err %.3e (tol %.1e) %s\n", what, err, tol, ok ? "ok" : "FAIL");
}
// A pass/fail check without a magnitude.
inline void expect(const char* what, bool ok) {
    ++checks;
    if (!ok) ++failures;
    printf("  %-28s %s\n", what, ok ? "ok" : "FAIL");
}

// max |a − r| / max |r| (scale-relative); inf when a has NaN where r has none or the
// non-finite values differ.
inline double relerr(const std::vector<double>& a, const std::vector<double>& r) {
    double m = 0, e = 0;
    for (size_t i = 0; i < a.size(); ++i) {
        if (!std::isfinite(r[i]) || !std::isfinite(a[i])) {
            const bool same = (std::isnan(r[i]) && std::isnan(a[i])) || a[i] == r[i];
            if (!same) return INFINITY;
            continue;
        }
        m = std::max(m, std::fabs(r[i]));
        e = std::max(e, std::fabs(a[i] - r[i]));
    }
    return m > 0 ? e / m : e;
}
// max |a − r| / (|r| + floor) (elementwise relative, absolute below `floor`); non-finite
// values must match as in relerr.
inline double elemerr(const std::vector<double>& a, const std::vector<double>& r, double floor) {
    double e = 0;
    for (size_t i = 0; i < a.size(); ++i) {
        if (!std::isfinite(r[i]) || !std::isfinite(a[i])) {
            const bool same = (std::isnan(r[i]) && std::isnan(a[i])) || a[i] == r[i];
            if (!same) return INFINITY;
            continue;
        }
        e = std::max(e, std::fabs(a[i] - r[i]) / (std::fabs(r[i]) + floor));
    }
    return e;
}
// Number of elements whose bits differ (NaN == NaN).
template <typename T>
size_t bit_mismatches(const T* a, const T* b, size_t n) {
    size_t bad = 0;
    for (size_t i = 0; i < n; ++i) {
        if (std::isnan((double)fromt(a[i])) && std::isnan((double)fromt(b[i]))) continue;
        bad += memcmp(&a[i], &b[i], sizeof(T)) != 0;
    }
    return bad;
}

// Tolerance per dtype: f32 `t32`, f16 `t16`, bf16 `tbf`.
template <typename T>
double tol3(double t32, double t16, double tbf) {
    if constexpr (std::is_same_v<T, float>) return t32;
    if constexpr (std::is_same_v<T, __half>) return t16;
    return tbf;
}

// The extern "C" entry point NAME_{f32,f16,bf16} for T (the name the Rust side loads;
// the MEDSYN_DTYPES macros put each in namespace medsyn_entry_NAME_SUFFIX).
#define ENTRY(NAME, T, ...)                                                        \
    do {                                                                           \
        if constexpr (std::is_same_v<T, float>)                                    \
            medsyn_entry_##NAME##_f32::NAME##_f32(__VA_ARGS__);                    \
        else if constexpr (std::is_same_v<T, __half>)                              \
            medsyn_entry_##NAME##_f16::NAME##_f16(__VA_ARGS__);                    \
        else                                                                       \
            medsyn_entry_##NAME##_bf16::NAME##_bf16(__VA_ARGS__);                  \
    } while (0)

// Arguments: "rev" runs threads and blocks in reverse order.
inline void parse_args(int argc, char** argv) {
    for (int i = 1; i < argc; ++i)
        if (std::string(argv[i]) == "rev") emu::reverse_order = true;
    printf("emulator order: %s\n", emu::reverse_order ? "reverse" : "forward");
}
inline int finish() {
    printf("%s (%d of %d checks failed)\n", failures ? "FAILED" : "ALL OK", failures, checks);
    return failures != 0;
}
