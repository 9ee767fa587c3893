// kernels/conv_backward.cu under the emulator: im2col_cn (bit-exact against a float64 reference
// gather, zeros in the padding) and col2im_cn (against a float64 scatter-add adjoint), plus the
// grad-input chain with groups (dcol = W_gᵀ·dY_g per group in f64, rounded to T, col2im) against
// the grouped conv's input gradient from its definition. Strides, padding, dilation, odd sizes,
// one-block-per-256 and capped (grid-stride) grids; buffers end at a guard page and outputs
// start NaN-poisoned (every element must be written).
#include "emu.h"
#include "gen_conv_backward.cpp"
#include "check.h"

struct Geo {
    int N, C, H, W, KH, KW, sh, sw, ph, pw, dh, dw, groups, O;
    int OH() const { return (H + 2 * ph - dh * (KH - 1) - 1) / sh + 1; }
    int OW() const { return (W + 2 * pw - dw * (KW - 1) - 1) / sw + 1; }
    long long P() const { return (long long)OH() * OW(); }
    long long NP() const { return N * P(); }
    long long rows() const { return (long long)C * KH * KW; }
    long long in_len() const { return (long long)N * C * H * W; }
};

// Calls f(r, j, n, c, iy, ix) for every col element (r, j) whose window reads inside the image.
template <typename F>
static void for_each_tap(const Geo& g, F f) {
    const int OH = g.OH(), OW = g.OW();
    for (int c = 0; c < g.C; ++c)
        for (int ki = 0; ki < g.KH; ++ki)
            for (int kj = 0; kj < g.KW; ++kj) {
                const long long r = ((long long)c * g.KH + ki) * g.KW + kj;
                for (int n = 0; n < g.N; ++n)
                    for (int oy = 0; oy < OH; ++oy)
                        for (int ox = 0; ox < OW; ++ox) {
                            const int iy = oy * g.sh - g.ph + ki * g.dh, ix = ox * g.sw - g.pw + kj * g.dw;
                            const long long j = (long long)n * g.P() + (long long)oy * OW + ox;
                            if (iy >= 0 && iy < g.H && ix >= 0 && ix < g.W) f(r, j, n, c, iy, ix);
                        }
            }
}

static unsigned grid_for(long long work, bool capped) {
    const long long full = (work + 255) / 256;
    return (unsigned)std::max<long long>(1, capped ? std::min<long long>(full, 3) : full);
}

template <typename T>
static void run_im2col(const Geo& g, bool capped, std::mt19937& rng) {
    const long long xl = g.in_len(), cl = g.rows() * g.NP();
    T* x = dalloc_exact<T>(xl);
    T* col = dalloc_exact<T>(cl);
    const std::vector<double> xv = fill_normal(x, xl, rng);
    fill_nan(col, cl);
    std::vector<double> want(cl, 0.0);
    for_each_tap(g, [&](long long r, long long j, int n, int c, int iy, int ix) {
        want[r * g.NP() + j] = xv[(((long long)n * g.C + c) * g.H + iy) * g.W + ix];
    });
    emu::launch(dim3{grid_for(cl, capped), 1, 1}, 256, 0, [&] {
        ENTRY(im2col_cn, T, x, col, g.N, g.C, g.H, g.W, g.KH, g.KW, g.sh, g.sw, g.ph, g.pw, g.dh, g.dw, g.OH(),
              g.OW());
    });
    const std::vector<double> got = to_f64(col, cl);
    bool exact = true;
    for (long long i = 0; i < cl; ++i) exact &= got[i] == want[i];
    report((std::string("im2col_cn ") + tname<T>() + (capped ? " capped" : "")).c_str(), exact ? 0.0 : INFINITY,
           0.0);
}

// dx from dcol by col2im_cn, checked against `want` (f64).
template <typename T>
static void run_col2im(const Geo& g, const T* dcol, const std::vector<double>& want, bool capped, const char* what) {
    const long long xl = g.in_len();
    T* dx = dalloc_exact<T>(xl);
    fill_nan(dx, xl);
    emu::launch(dim3{grid_for(xl, capped), 1, 1}, 256, 0, [&] {
        ENTRY(col2im_cn, T, dcol, dx, g.N, g.C, g.H, g.W, g.KH, g.KW, g.sh, g.sw, g.ph, g.pw, g.dh, g.dw, g.OH(),
              g.OW());
    });
    report((std::string(what) + " " + tname<T>() + (capped ? " capped" : "")).c_str(), relerr(to_f64(dx, xl), want),
           tol3<T>(2e-6, 1e-3, 8e-3));
}

template <typename T>
static void run_col2im_random(const Geo& g, bool capped, std::mt19937& rng) {
    const long long cl = g.rows() * g.NP();
    T* dcol = dalloc_exact<T>(cl);
    const std::vector<double> dv = fill_normal(dcol, cl, rng);
    std::vector<double> want(g.in_len(), 0.0);
    for_each_tap(g, [&](long long r, long long j, int n, int c, int iy, int ix) {
        want[(((long long)n * g.C + c) * g.H + iy) * g.W + ix] += dv[r * g.NP() + j];
    });
    run_col2im<T>(g, dcol, want, capped, "col2im_cn");
}

// The grad-input chain with groups: dcol_g = W_gᵀ·dY_g (f64, rounded to T as cuBLAS writes it),
// col2im → dx, against dx[n, c, iy, ix] = Σ dY[n, o, oy, ox]·W[o, c − g·Cg, ki, kj] over the
// taps of the grouped conv.
template <typename T>
static void run_chain(const Geo& g, std::mt19937& rng) {
    const int cg = g.C / g.groups, og = g.O / g.groups, khw = g.KH * g.KW;
    const long long kg = (long long)cg * khw, NP = g.NP(), P = g.P();
    const long long wl = (long long)g.O * kg, yl = (long long)g.N * g.O * P;
    std::vector<T> wt(wl), yt(yl);
    const std::vector<double> wv = fill_normal(wt.data(), wl, rng);
    const std::vector<double> yv = fill_normal(yt.data(), yl, rng);
    const long long cl = g.rows() * NP;
    T* dcol = dalloc_exact<T>(cl);
    for (int gi = 0; gi < g.groups; ++gi)
        for (long long rk = 0; rk < kg; ++rk)
            for (long long j = 0; j < NP; ++j) {
                const long long n = j / P, q = j % P;
                double s = 0;
                for (int o = 0; o < og; ++o) {
                    const long long oo = (long long)gi * og + o;
                    s += wv[oo * kg + rk] * yv[(n * g.O + oo) * P + q];
                }
                dcol[((long long)gi * kg + rk) * NP + j] = tof<T>((float)s);
            }
    std::vector<double> want(g.in_len(), 0.0);
    const int OW = g.OW();
    for (int n = 0; n < g.N; ++n)
        for (int o = 0; o < g.O; ++o) {
            const int gi = o / og;
            for (int ci = 0; ci < cg; ++ci)
                for (int ki = 0; ki < g.KH; ++ki)
                    for (int kj = 0; kj < g.KW; ++kj)
                        for (long long q = 0; q < P; ++q) {
                            const int oy = (int)(q / OW), ox = (int)(q % OW);
                            const int iy = oy * g.sh - g.ph + ki * g.dh, ix = ox * g.sw - g.pw + kj * g.dw;
                            if (iy < 0 || iy >= g.H || ix < 0 || ix >= g.W) continue;
                            const int c = gi * cg + ci;
                            want[(((long long)n * g.C + c) * g.H + iy) * g.W + ix] +=
                                yv[((long long)n * g.O + o) * P + q] * wv[((long long)o * cg + ci) * khw + ki * g.KW + kj];
                        }
        }
    // dcol was rounded to T before the sum: allow that rounding (relative to the scale).
    run_col2im<T>(g, dcol, want, false, "grad input chain");
}

template <typename T>
static void all(unsigned seed) {
    std::mt19937 rng(seed);
    const Geo cases[] = {
        // N  C  H  W KH KW sh sw ph pw dh dw groups O
        {2, 3, 5, 6, 3, 3, 1, 1, 1, 1, 1, 1, 1, 4},
        {3, 4, 7, 5, 3, 2, 2, 2, 1, 0, 1, 1, 2, 6},
        {2, 6, 9, 8, 3, 3, 1, 2, 2, 1, 2, 2, 3, 6},
        {1, 4, 6, 7, 2, 3, 2, 1, 0, 2, 2, 1, 4, 8},
        {2, 5, 4, 4, 1, 1, 1, 1, 0, 0, 1, 1, 1, 3},
        {3, 4, 5, 5, 3, 3, 2, 2, 3, 3, 1, 1, 4, 4},
        {2, 2, 8, 3, 5, 1, 3, 1, 2, 0, 1, 1, 2, 4},
        {1, 3, 11, 13, 4, 4, 3, 2, 1, 2, 1, 3, 1, 5},
    };
    for (const Geo& g : cases) {
        printf("%s N%d C%d %dx%d k%dx%d s%d,%d p%d,%d d%d,%d groups %d O%d -> %dx%d\n", tname<T>(), g.N, g.C, g.H, g.W,
               g.KH, g.KW, g.sh, g.sw, g.ph, g.pw, g.dh, g.dw, g.groups, g.O, g.OH(), g.OW());
        for (bool capped : {false, true}) {
            run_im2col<T>(g, capped, rng);
            run_col2im_random<T>(g, capped, rng);
        }
        run_chain<T>(g, rng);
    }
}

int main(int argc, char** argv) {
    parse_args(argc, argv);
    all<float>(11);
    all<__half>(12);
    all<__nv_bfloat16>(13);
    return finish();
}
