// kernels/conv.cu under the emulator: conv2d forward (implicit GEMM; tensor cores for
// f16/bf16, SIMT for f32) against a float64 reference, for 3x3 / 1x1 / strided / dilated /
// grouped / batched / non-square geometries whose GEMM sizes M, N, K are not tile multiples,
// with and without bias, weights on the cp.async path (K % 8 == 0) and the scalar path;
// the NHWC layout conversions and the NHWC cp.async kernels (f16/bf16, cg % 8 == 0; 128 and
// 64 channels per block; whole depth, and depth split 3 ways with the f32 finish kernel).
#include "emu.h"
#include "gen_conv.cpp"
#include "check.h"

struct Case {
    const char* name;
    int N, C, H, W, O, KH, KW, sh, sw, ph, pw, dh, dw, groups;
    bool bias;
};

template <typename T>
void test(const Case& cs, unsigned seed) {
    const int OH = (cs.H + 2 * cs.ph - cs.dh * (cs.KH - 1) - 1) / cs.sh + 1;
    const int OW = (cs.W + 2 * cs.pw - cs.dw * (cs.KW - 1) - 1) / cs.sw + 1;
    const int cg = cs.C / cs.groups, og = cs.O / cs.groups, K = cg * cs.KH * cs.KW;
    const long long M = (long long)cs.N * OH * OW;
    printf("%s %s: N=%d C=%d %dx%d -> O=%d %dx%d, k %dx%d s %d,%d p %d,%d d %d,%d g %d bias %d (GEMM M=%lld N=%d K=%d)\n",
           cs.name, tname<T>(), cs.N, cs.C, cs.H, cs.W, cs.O, OH, OW, cs.KH, cs.KW, cs.sh, cs.sw, cs.ph, cs.pw, cs.dh,
           cs.dw, cs.groups, cs.bias, M, og, K);
    std::mt19937 rng(seed);
    const size_t nx = (size_t)cs.N * cs.C * cs.H * cs.W, nw = (size_t)cs.O * K, ny = (size_t)cs.N * cs.O * OH * OW;
    // Exact-size buffers: any read or write past an end faults.
    T *x = dalloc_exact<T>(nx), *w = dalloc_exact<T>(nw), *y = dalloc_exact<T>(ny);
    T* b = cs.bias ? dalloc_exact<T>(cs.O) : nullptr;
    std::vector<double> rx = fill_normal(x, nx, rng), rw = fill_normal(w, nw, rng, 0.3f), rb;
    if (b) rb = fill_normal(b, cs.O, rng);
    fill_nan(y, ny);

    const bool tc = !std::is_same_v<T, float>;
    const int bm = tc ? 128 : 64, bn = tc ? 128 : 64;
    const size_t smem = tc ? 40960 : 8192;
    dim3 grid{(unsigned)((M + bm - 1) / bm), (unsigned)((og + bn - 1) / bn), (unsigned)cs.groups};
    emu::launch(grid, 256, smem, [&] {
        ENTRY(conv2d_fwd, T, x, w, b, y, cs.N, cs.C, cs.H, cs.W, cs.O, cs.KH, cs.KW, OH, OW, cs.sh, cs.sw, cs.ph,
              cs.pw, cs.dh, cs.dw, cs.groups);
    });

    std::vector<double> ref(ny), got = to_f64(y, ny);
    for (int n = 0; n < cs.N; ++n)
        for (int o = 0; o < cs.O; ++o) {
            const int gi = o / og;
            for (int oy = 0; oy < OH; ++oy)
                for (int ox = 0; ox < OW; ++ox) {
                    double acc = b ? rb[o] : 0.0;
                    for (int ci = 0; ci < cg; ++ci)
                        for (int ki = 0; ki < cs.KH; ++ki)
                            for (int kj = 0; kj < cs.KW; ++kj) {
                                const int iy = oy * cs.sh - cs.ph + ki * cs.dh, ix = ox * cs.sw - cs.pw + kj * cs.dw;
                                if (iy < 0 || iy >= cs.H || ix < 0 || ix >= cs.W) continue;
                                const int c = gi * cg + ci;
                                acc += rx[(((size_t)n * cs.C + c) * cs.H + iy) * cs.W + ix] *
                                       rw[(((size_t)o * cg + ci) * cs.KH + ki) * cs.KW + kj];
                            }
                    ref[(((size_t)n * cs.O + o) * OH + oy) * OW + ox] = acc;
                }
        }
    // Scale-relative error; bf16/f16 outputs carry one rounding of the result (2^-9 / 2^-12
    // relative) plus f32 accumulation over K terms.
    report("y", relerr(got, ref), tol3<T>(1e-5, 3e-3, 1.2e-2));
    // Elementwise too, so a small wrong element hides not behind a large scale.
    report("y elementwise", elemerr(got, ref, 0.3), tol3<T>(5e-5, 6e-3, 3e-2));

    // The layout conversions (every dtype, exact) and, for f16/bf16 with cg % 8 == 0, the
    // NHWC cp.async path on their outputs.
    const long long HW = (long long)cs.H * cs.W;
    const int KHW = cs.KH * cs.KW;
    T *xt = dalloc_exact<T>(nx), *wt = dalloc_exact<T>(nw);
    fill_nan(xt, nx);
    fill_nan(wt, nw);
    dim3 tgrid{(unsigned)((HW + 31) / 32), (unsigned)((cs.C + 31) / 32), (unsigned)cs.N};
    emu::launch(tgrid, dim3{32, 8, 1}, 33 * 32 * sizeof(T), [&] { ENTRY(conv2d_nchw_to_nhwc, T, x, xt, cs.C, HW); });
    // grid-stride: fewer blocks than elements / 256 when there are many
    const unsigned wblocks = (unsigned)std::min<size_t>((nw + 255) / 256, 3);
    emu::launch(dim3{wblocks, 1, 1}, 256, 0, [&] { ENTRY(conv2d_weight_to_ohwi, T, w, wt, cs.O, cg, KHW); });
    size_t xbad = 0, wbad = 0;
    for (int n = 0; n < cs.N; ++n)
        for (int c = 0; c < cs.C; ++c)
            for (long long q = 0; q < HW; ++q)
                xbad += memcmp(&xt[((size_t)n * HW + q) * cs.C + c], &x[((size_t)n * cs.C + c) * HW + q], sizeof(T)) != 0;
    for (int o = 0; o < cs.O; ++o)
        for (int ci = 0; ci < cg; ++ci)
            for (int kk = 0; kk < KHW; ++kk)
                wbad += memcmp(&wt[((size_t)o * KHW + kk) * cg + ci], &w[((size_t)o * cg + ci) * KHW + kk], sizeof(T)) != 0;
    expect("nchw_to_nhwc exact", xbad == 0);
    expect("weight_to_ohwi exact", wbad == 0);
    if constexpr (!std::is_same_v<T, float>) {
        if (cg % 8 != 0) return;
        float* ws = dalloc_exact<float>(ny);
        for (int tbn : {128, 64})
            for (int splits : {1, 3}) {
                fill_nan(y, ny);
                for (size_t i = 0; i < ny; ++i) ws[i] = 0.f;  // the contract: ws zeroed by the caller
                float* wsp = splits > 1 ? ws : nullptr;
                dim3 ngrid{grid.x, (unsigned)((og + tbn - 1) / tbn), (unsigned)(cs.groups * splits)};
                emu::launch(ngrid, 256, tbn == 128 ? 81920 : 61440, [&] {
#define NHWC_ARGS xt, wt, b, y, cs.N, cs.C, cs.H, cs.W, cs.O, cs.KH, cs.KW, OH, OW, cs.sh, cs.sw, cs.ph, cs.pw, cs.dh, cs.dw, cs.groups, wsp, splits
                    // (no f32 entries: ENTRY would name one)
                    if constexpr (std::is_same_v<T, __half>) {
                        if (tbn == 128) medsyn_entry_conv2d_fwd_nhwc_f16::conv2d_fwd_nhwc_f16(NHWC_ARGS);
                        else medsyn_entry_conv2d_fwd_nhwc_n64_f16::conv2d_fwd_nhwc_n64_f16(NHWC_ARGS);
                    } else {
                        if (tbn == 128) medsyn_entry_conv2d_fwd_nhwc_bf16::conv2d_fwd_nhwc_bf16(NHWC_ARGS);
                        else medsyn_entry_conv2d_fwd_nhwc_n64_bf16::conv2d_fwd_nhwc_n64_bf16(NHWC_ARGS);
                    }
#undef NHWC_ARGS
                });
                if (splits > 1) {
                    const long long total = (long long)ny, P = (long long)OH * OW;
                    emu::launch(dim3{3, 1, 1}, 256, 0, [&] { ENTRY(conv2d_splitk_finish, T, ws, b, y, total, cs.O, P); });
                }
                got = to_f64(y, ny);
                char what[64];
                snprintf(what, sizeof what, "y nhwc n%d split %d", tbn, splits);
                report(what, relerr(got, ref), tol3<T>(1e-5, 3e-3, 1.2e-2));
                snprintf(what, sizeof what, "y nhwc n%d split %d elem", tbn, splits);
                report(what, elemerr(got, ref, 0.3), tol3<T>(5e-5, 6e-3, 3e-2));
            }
    }
}

template <typename T>
void all(unsigned seed) {
    // name, N, C, H, W, O, KH, KW, sh, sw, ph, pw, dh, dw, groups, bias
    const Case cases[] = {
        {"3x3 pad 1", 1, 20, 9, 11, 24, 3, 3, 1, 1, 1, 1, 1, 1, 1, true},     // K=180 (scalar weights)
        {"3x3 stride 2", 1, 16, 13, 13, 40, 3, 3, 2, 2, 1, 1, 1, 1, 1, false}, // K=144 (cp.async weights)
        {"1x1 batch 2", 2, 24, 10, 10, 136, 1, 1, 1, 1, 0, 0, 1, 1, 1, true},  // M=200, N=136: 2x2 blocks
        {"3x3 dilation 2", 1, 12, 12, 12, 20, 3, 3, 1, 1, 2, 2, 2, 2, 1, true},
        {"groups 2 batch 2", 2, 20, 7, 9, 24, 3, 3, 1, 1, 1, 1, 1, 1, 2, true},  // cg=10, K=90
        {"groups 2 K%8", 1, 16, 8, 8, 16, 3, 3, 1, 1, 1, 1, 1, 1, 2, false},     // cg=8, K=72
        {"2x3 mixed", 3, 5, 7, 10, 7, 2, 3, 2, 1, 0, 1, 1, 2, 1, true},         // K=30, non-square
        {"3x3 K=360 O=130", 1, 40, 6, 6, 130, 3, 3, 1, 1, 1, 1, 1, 1, 1, true},
        {"3x3 no pad 1 pixel", 1, 3, 3, 3, 5, 3, 3, 1, 1, 0, 0, 1, 1, 1, true},  // M=1
        {"groups 2 C=64 O=144", 2, 64, 9, 9, 144, 3, 3, 1, 1, 1, 1, 1, 1, 2, true},  // K=288: 9 stages
        {"3x2 s2,1 p1,0 d2,1", 2, 32, 11, 13, 48, 3, 2, 2, 1, 1, 0, 2, 1, 1, false}, // K=192
    };
    for (const Case& c : cases) test<T>(c, seed++);
}

int main(int argc, char** argv) {
    parse_args(argc, argv);
    all<__nv_bfloat16>(1);
    all<__half>(101);
    all<float>(201);
    return finish();
}
