// kernels/attention.cu under the emulator: flash attention forward (out, lse) and backward
// (bwd_pre, main, dq conversion) for every head width, f32/f16/bf16, causal and key-padding
// masks, permuted and column-strided operand layouts, and edge shapes (Lq or Lk of 1,
// Lk == 0, fully masked batches), against a float64 reference; outputs start as NaN.
#include "emu.h"
#include "gen_attention.cpp"
#include "check.h"

struct Layout4 { long long sb, sh, sl, sd; };
// kind 0: [B,H,L,D] contiguous; 1: [B,L,H,D] permuted view; 2: [B,H,D,L] (column stride != 1)
Layout4 make_layout(int kind, int B, int H, int L, int D) {
    if (kind == 0) return {(long long)H * L * D, (long long)L * D, D, 1};
    if (kind == 1) return {(long long)L * H * D, D, (long long)H * D, 1};
    return {(long long)H * D * L, (long long)D * L, 1, L};
}

struct Case { int B, H, Lq, Lk, D; bool causal, keep; int lq, lk, lv, lo; };

template <typename T, int D>
void run_fwd(const T* q, const T* k, const T* v, T* o, float* lse, const unsigned char* keep, long long keep_sb, int B, int H, int Lq,
             int Lk, float scale, int causal, Layout4 a, Layout4 bk, Layout4 c, Layout4 d, int BM, size_t smem) {
    dim3 grid{(unsigned)((Lq + BM - 1) / BM), (unsigned)(B * H), 1};
    emu::launch(grid, 128, smem, [&] {
        if constexpr (D == 40) flash_attn_fwd_d40_impl<T>(q, k, v, o, lse, keep, keep_sb, H, Lq, Lk, scale, causal, a.sb, a.sh, a.sl, a.sd, bk.sb, bk.sh, bk.sl, bk.sd, c.sb, c.sh, c.sl, c.sd, d.sb, d.sh, d.sl, d.sd);
        if constexpr (D == 64) flash_attn_fwd_d64_impl<T>(q, k, v, o, lse, keep, keep_sb, H, Lq, Lk, scale, causal, a.sb, a.sh, a.sl, a.sd, bk.sb, bk.sh, bk.sl, bk.sd, c.sb, c.sh, c.sl, c.sd, d.sb, d.sh, d.sl, d.sd);
        if constexpr (D == 80) flash_attn_fwd_d80_impl<T>(q, k, v, o, lse, keep, keep_sb, H, Lq, Lk, scale, causal, a.sb, a.sh, a.sl, a.sd, bk.sb, bk.sh, bk.sl, bk.sd, c.sb, c.sh, c.sl, c.sd, d.sb, d.sh, d.sl, d.sd);
        if constexpr (D == 128) flash_attn_fwd_d128_impl<T>(q, k, v, o, lse, keep, keep_sb, H, Lq, Lk, scale, causal, a.sb, a.sh, a.sl, a.sd, bk.sb, bk.sh, bk.sl, bk.sd, c.sb, c.sh, c.sl, c.sd, d.sb, d.sh, d.sl, d.sd);
        if constexpr (D == 160) flash_attn_fwd_d160_impl<T>(q, k, v, o, lse, keep, keep_sb, H, Lq, Lk, scale, causal, a.sb, a.sh, a.sl, a.sd, bk.sb, bk.sh, bk.sl, bk.sd, c.sb, c.sh, c.sl, c.sd, d.sb, d.sh, d.sl, d.sd);
    });
}

template <typename T, int D>
void run_bwd(const T* q, const T* k, const T* v, const T* dout, const float* lse, const float* dsum, float* dq_acc, T* dk, T* dv,
             const unsigned char* keep, long long keep_sb, int B, int H, int Lq, int Lk, float scale, int causal, Layout4 a, Layout4 bk,
             Layout4 c, Layout4 dd, Layout4 e, Layout4 f, size_t smem) {
    dim3 grid{(unsigned)((Lk + 63) / 64), (unsigned)(B * H), 1};
    emu::launch(grid, 128, smem, [&] {
#define ARGS (q, k, v, dout, lse, dsum, dq_acc, dk, dv, keep, keep_sb, H, Lq, Lk, scale, causal, a.sb, a.sh, a.sl, a.sd, bk.sb, bk.sh, bk.sl, bk.sd, c.sb, c.sh, c.sl, c.sd, dd.sb, dd.sh, dd.sl, dd.sd, e.sb, e.sh, e.sl, e.sd, f.sb, f.sh, f.sl, f.sd)
        if constexpr (D == 40) flash_attn_bwd_d40_impl<T> ARGS;
        if constexpr (D == 64) flash_attn_bwd_d64_impl<T> ARGS;
        if constexpr (D == 80) flash_attn_bwd_d80_impl<T> ARGS;
        if constexpr (D == 128) flash_attn_bwd_d128_impl<T> ARGS;
        if constexpr (D == 160) flash_attn_bwd_d160_impl<T> ARGS;
#undef ARGS
    });
}

template <typename T, int D, int MT, int BN, bool QREG, int BM>
void test(const Case& cs, double tol, unsigned seed) {
    using namespace medsyn_attn;
    const int B = cs.B, H = cs.H, Lq = cs.Lq, Lk = cs.Lk;
    printf("D=%d %s smem fwd %d bwd %d B=%d H=%d Lq=%d Lk=%d causal=%d keep=%d layouts q%d k%d v%d o%d\n", D, std::is_same<T, float>::value ? "f32" : std::is_same<T, __half>::value ? "f16" : "bf16", FwdCfg<T, D, MT, BN, QREG>::SMEM, BwdCfg<T, D, BM>::SMEM,
           B, H, Lq, Lk, cs.causal, cs.keep, cs.lq, cs.lk, cs.lv, cs.lo);
    std::mt19937 rng(seed);
    std::normal_distribution<float> nd(0.f, 1.f);
    Layout4 lq = make_layout(cs.lq, B, H, Lq, D), lk = make_layout(cs.lk, B, H, Lk, D), lv = make_layout(cs.lv, B, H, Lk, D),
            lo = make_layout(cs.lo, B, H, Lq, D);
    size_t nq = (size_t)B * H * Lq * D, nk = (size_t)B * H * Lk * D;
    T *q = dalloc<T>(nq), *k = dalloc<T>(nk), *v = dalloc<T>(nk), *o = dalloc<T>(nq), *dout = dalloc<T>(nq);
    T *dq = dalloc<T>(nq), *dk = dalloc<T>(nk), *dv = dalloc<T>(nk);
    float *lse = dalloc<float>((size_t)B * H * Lq), *dsum = dalloc<float>((size_t)B * H * Lq), *dq_acc = dalloc<float>(nq);
    unsigned char* keep = nullptr;
    for (size_t i = 0; i < nq; ++i) { q[i] = tof<T>(nd(rng)); dout[i] = tof<T>(nd(rng)); o[i] = tof<T>(NAN); dq[i] = tof<T>(NAN); dq_acc[i] = NAN; }
    for (size_t i = 0; i < nk; ++i) { k[i] = tof<T>(nd(rng)); v[i] = tof<T>(nd(rng)); dk[i] = tof<T>(NAN); dv[i] = tof<T>(NAN); }
    for (int i = 0; i < B * H * Lq; ++i) { lse[i] = NAN; dsum[i] = NAN; }
    if (cs.keep) {
        keep = dalloc<unsigned char>((size_t)B * Lk);
        for (int b = 0; b < B; ++b)
            for (int j = 0; j < Lk; ++j) keep[b * Lk + j] = (B > 1 && b == B - 1) ? 0 : (rng() % 3 != 0);  // with B > 1 the last batch hides every key
    }
    auto at = [](const T* p, Layout4 l, int b, int h, int i, int d) { return (double)fromt(p[b * l.sb + h * l.sh + (long long)i * l.sl + (long long)d * l.sd]); };
    const float scale = 1.f / std::sqrt((float)D);
    using C = FwdCfg<T, D, MT, BN, QREG>;
    run_fwd<T, D>(q, k, v, o, lse, keep, Lk, B, H, Lq, Lk, scale, cs.causal, lq, lk, lv, lo, C::BM, C::SMEM);
    // reference
    std::vector<double> ro(nq), rl((size_t)B * H * Lq), go(nq), gl(rl.size());
    std::vector<double> rdq(nq, 0), rdk(nk, 0), rdv(nk, 0), gdq(nq), gdk(nk), gdv(nk);
    for (int b = 0; b < B; ++b)
        for (int h = 0; h < H; ++h) {
            int bh = b * H + h;
            std::vector<double> P((size_t)Lq * Lk, 0.0);
            for (int i = 0; i < Lq; ++i) {
                std::vector<double> s(Lk);
                double mx = -INFINITY;
                for (int j = 0; j < Lk; ++j) {
                    bool vis = (!keep || keep[b * Lk + j]) && (!cs.causal || j <= i);
                    double acc = 0;
                    for (int d = 0; d < D; ++d) acc += at(q, lq, b, h, i, d) * at(k, lk, b, h, j, d);
                    s[j] = vis ? acc * scale : -INFINITY;
                    mx = std::max(mx, s[j]);
                }
                double l = 0;
                if (mx > -INFINITY) for (int j = 0; j < Lk; ++j) l += std::exp(s[j] - mx);
                double ls = l > 0 ? mx + std::log(l) : -INFINITY;
                rl[(size_t)bh * Lq + i] = ls;
                for (int j = 0; j < Lk; ++j) P[(size_t)i * Lk + j] = l > 0 ? std::exp(s[j] - ls) : 0.0;
                for (int d = 0; d < D; ++d) {
                    double acc = 0;
                    for (int j = 0; j < Lk; ++j) acc += P[(size_t)i * Lk + j] * at(v, lv, b, h, j, d);
                    ro[((size_t)bh * Lq + i) * D + d] = acc;
                }
            }
            // backward
            for (int i = 0; i < Lq; ++i) {
                double delta = 0;
                for (int d = 0; d < D; ++d) delta += at(dout, lo, b, h, i, d) * ro[((size_t)bh * Lq + i) * D + d];
                for (int j = 0; j < Lk; ++j) {
                    double p = P[(size_t)i * Lk + j];
                    if (p == 0) continue;
                    double dp = 0;
                    for (int d = 0; d < D; ++d) dp += at(dout, lo, b, h, i, d) * at(v, lv, b, h, j, d);
                    double ds = p * (dp - delta);
                    for (int d = 0; d < D; ++d) {
                        rdv[((size_t)bh * Lk + j) * D + d] += p * at(dout, lo, b, h, i, d);
                        rdq[((size_t)bh * Lq + i) * D + d] += scale * ds * at(k, lk, b, h, j, d);
                        rdk[((size_t)bh * Lk + j) * D + d] += scale * ds * at(q, lq, b, h, i, d);
                    }
                }
            }
        }
    for (int b = 0; b < B; ++b)
        for (int h = 0; h < H; ++h)
            for (int i = 0; i < Lq; ++i) {
                size_t r = (size_t)(b * H + h) * Lq + i;
                gl[r] = lse[r];
                for (int d = 0; d < D; ++d) go[r * D + d] = at(o, lo, b, h, i, d);
            }
    if (getenv("DBG")) for (int i = 0; i < 4; ++i) printf("o %g ref %g lse %g ref %g\n", go[i], ro[i], gl[i], rl[i]);
    report("out", relerr(go, ro), tol);
    // lse: compare finite ones, check -inf agreement
    {
        // relative to max(1, max |lse|); -inf (fully masked rows) must match exactly
        double e = 0, m = 1;
        bool infok = true;
        for (size_t i = 0; i < rl.size(); ++i) {
            if (!std::isfinite(rl[i]) || !std::isfinite(gl[i])) { infok &= (rl[i] == gl[i]); continue; }
            e = std::max(e, std::fabs(gl[i] - rl[i]));
            m = std::max(m, std::fabs(rl[i]));
        }
        report("lse", infok ? e / m : INFINITY, tol);
    }
    // backward: pre (dsum + zero dq_acc), main, dq conversion; dO shares o's layout
    {
        long long rows = (long long)B * H * Lq;
        emu::launch(dim3{(unsigned)((rows + 7) / 8), 1, 1}, 256, 0, [&] {
            flash_attn_bwd_pre_impl<T>(o, dout, dsum, dq_acc, B, H, Lq, D, lo.sb, lo.sh, lo.sl, lo.sd, lo.sb, lo.sh, lo.sl, lo.sd);
        });
        Layout4 gq = make_layout(0, B, H, Lq, D), gk = make_layout(0, B, H, Lk, D);
        using CB = BwdCfg<T, D, BM>;
        if (Lk > 0)  // the launch contract: skip the main backward when Lk == 0 (no blocks)
            run_bwd<T, D>(q, k, v, dout, lse, dsum, dq_acc, dk, dv, keep, Lk, B, H, Lq, Lk, scale, cs.causal, lq, lk, lv, lo, gk, gk, CB::SMEM);
        emu::launch(dim3{4, 1, 1}, 256, 0, [&] { flash_attn_bwd_dq_impl<T>(dq_acc, dq, B, H, Lq, D, gq.sb, gq.sh, gq.sl, gq.sd); });
        for (size_t i = 0; i < nq; ++i) gdq[i] = fromt(dq[i]);
        for (size_t i = 0; i < nk; ++i) { gdk[i] = fromt(dk[i]); gdv[i] = fromt(dv[i]); }
        report("dq", relerr(gdq, rdq), tol * 1.5);
        report("dk", relerr(gdk, rdk), tol * 1.5);
        report("dv", relerr(gdv, rdv), tol);
    }
}

int main(int argc, char** argv) {
    parse_args(argc, argv);
    using bf = __nv_bfloat16;
    // test<T, D, MT, BN, QREG, BM>: the tile parameters must match MEDSYN_ATTN_WIDTH in
    // attention.cu (the shared-memory sizes come from them)
    // {B, H, Lq, Lk, D, causal, keep, lq, lk, lv, lo}
    test<bf, 64, 2, 64, false, 64>({2, 2, 70, 77, 64, false, false, 0, 0, 0, 0}, 2e-2, 1);
    test<bf, 64, 2, 64, false, 64>({2, 1, 130, 77, 64, true, true, 1, 1, 1, 1}, 2e-2, 2);
    test<__half, 64, 2, 64, false, 64>({1, 2, 150, 150, 64, true, false, 2, 0, 2, 0}, 5e-3, 3);
    test<bf, 40, 2, 64, true, 64>({2, 2, 70, 77, 40, false, true, 1, 1, 1, 1}, 2e-2, 4);
    test<__half, 40, 2, 64, true, 64>({1, 1, 200, 33, 40, true, false, 0, 2, 0, 1}, 5e-3, 5);
    test<bf, 80, 2, 64, false, 64>({2, 1, 70, 77, 80, false, true, 1, 1, 1, 1}, 2e-2, 6);
    test<__half, 80, 2, 64, false, 64>({1, 2, 129, 140, 80, true, false, 0, 0, 2, 0}, 5e-3, 7);
    test<bf, 128, 2, 32, false, 32>({2, 1, 70, 77, 128, false, true, 0, 1, 1, 0}, 2e-2, 8);
    test<__half, 128, 2, 32, false, 32>({1, 1, 140, 100, 128, true, false, 1, 0, 0, 1}, 5e-3, 9);
    test<bf, 160, 2, 32, false, 16>({2, 1, 70, 77, 160, true, true, 1, 1, 1, 1}, 2e-2, 10);
    test<__half, 160, 2, 32, false, 16>({1, 1, 100, 65, 160, false, false, 2, 2, 2, 2}, 5e-3, 11);
    test<bf, 64, 2, 64, false, 64>({1, 1, 1, 1, 64, false, false, 0, 0, 0, 0}, 2e-2, 12);
    test<bf, 64, 2, 64, false, 64>({1, 1, 5, 300, 64, true, false, 0, 0, 0, 0}, 2e-2, 13);
    test<bf, 128, 2, 32, false, 32>({1, 2, 3, 0, 128, false, false, 0, 0, 0, 0}, 2e-2, 14);
    test<float, 64, 2, 64, false, 64>({2, 1, 70, 77, 64, true, true, 1, 1, 2, 1}, 2e-5, 21);
    test<float, 40, 2, 64, true, 64>({1, 2, 100, 140, 40, false, false, 0, 2, 0, 0}, 2e-5, 22);
    test<float, 80, 2, 64, false, 64>({1, 1, 129, 77, 80, true, false, 1, 1, 1, 1}, 2e-5, 23);
    test<float, 128, 2, 32, false, 32>({2, 1, 70, 50, 128, false, true, 0, 0, 0, 0}, 2e-5, 24);
    test<float, 160, 2, 32, false, 16>({1, 1, 90, 77, 160, true, true, 2, 1, 0, 1}, 2e-5, 25);
    return finish();
}
