// kernels/group_norm.cu under the emulator: forward (stats + apply, with and without
// SiLU, with and without weight/bias, units split over several blocks) and backward
// (sums, dx, dweight/dbias) against a float64 reference computed here from the same
// (rounded) inputs; every output starts as NaN.
#include "emu.h"
#include "gen_group_norm.cpp"
#include "check.h"

struct Case {
    int batch, channels, spatial, groups;
    int splits, grid_x;        // stats/apply/dx grid (grid_x, splits)
    int block_stats, block_apply;
    int bx, by;                // backward_sums block
    bool silu, affine, exact;  // exact: buffers end exactly at the guard page (and are
                               // unaligned unless their size is a multiple of 16 bytes)
    double eps;
};

template <typename T>
void run(const Case& c, unsigned seed) {
    const long long B = c.batch, C = c.channels, S = c.spatial, G = c.groups, cpg = C / G, N = cpg * S;
    const long long units = B * G, total = B * C * S;
    printf("%s batch=%lld C=%lld S=%lld G=%lld splits=%d grid.x=%d blocks %d/%d sums (%d,%d) silu=%d affine=%d "
           "exact=%d eps=%g\n",
           tname<T>(), B, C, S, G, c.splits, c.grid_x, c.block_stats, c.block_apply, c.bx, c.by, c.silu, c.affine,
           c.exact, c.eps);
    std::mt19937 rng(seed);
    T *x = dalloc<T>(total, c.exact), *g = dalloc<T>(total, c.exact), *y = dalloc<T>(total, c.exact),
      *dx = dalloc<T>(total, c.exact);
    T *w = nullptr, *bias = nullptr, *dw = dalloc<T>(C, c.exact), *db = dalloc<T>(C, c.exact);
    std::vector<double> vx = fill_normal(x, total, rng, 2.f, 0.5f), vg = fill_normal(g, total, rng);
    std::vector<double> vw(C, 1.0), vb(C, 0.0);
    if (c.affine) {
        w = dalloc<T>(C, c.exact);
        bias = dalloc<T>(C, c.exact);
        vw = fill_normal(w, C, rng, 0.5f, 1.f);
        vb = fill_normal(bias, C, rng, 0.5f);
    }
    float* partial = dalloc<float>(2 * units * c.splits, c.exact);
    float *mean = dalloc<float>(units, c.exact), *rstd = dalloc<float>(units, c.exact);
    float* sums = dalloc<float>(2 * B * C, c.exact);
    fill_nan(y, total);
    fill_nan(dx, total);
    fill_nan(dw, C);
    fill_nan(db, C);
    fill_nan(partial, 2 * units * c.splits);
    fill_nan(mean, units);
    fill_nan(rstd, units);
    fill_nan(sums, 2 * B * C);

    const dim3 grid{(unsigned)c.grid_x, (unsigned)c.splits, 1};
    emu::launch(grid, c.block_stats, 0, [&] { ENTRY(group_norm_stats, T, B, C, S, G, x, partial); });
    emu::launch(grid, c.block_apply, 0,
                [&] { ENTRY(group_norm_apply, T, B, C, S, G, c.eps, (int)c.silu, x, w, bias, partial, y, mean, rstd); });
    const long long rows = B * C;
    const unsigned sums_grid = (unsigned)std::min<long long>((rows + c.by - 1) / c.by, 3);  // block-strided rows
    emu::launch(dim3{sums_grid, 1, 1}, dim3{(unsigned)c.bx, (unsigned)c.by, 1}, 0,
                [&] { ENTRY(group_norm_backward_sums, T, B, C, S, G, (int)c.silu, x, g, w, bias, mean, rstd, sums); });
    emu::launch(grid, c.block_apply, 0, [&] {
        ENTRY(group_norm_backward_dx, T, B, C, S, G, (int)c.silu, x, g, w, bias, mean, rstd, sums, dx);
    });
    emu::launch(dim3{(unsigned)((C + 63) / 64), 1, 1}, 64, 0,
                [&] { ENTRY(group_norm_backward_params, T, B, C, sums, dw, db); });

    // float64 reference
    std::vector<double> ry(total), rmean(units), rrstd(units), rdx(total), rdw(C, 0.0), rdb(C, 0.0);
    for (long long u = 0; u < units; ++u) {
        const long long base = u * N, c0 = (u % G) * cpg;
        double s = 0, q = 0;
        for (long long e = 0; e < N; ++e) s += vx[base + e];
        const double mu = s / N;
        for (long long e = 0; e < N; ++e) q += (vx[base + e] - mu) * (vx[base + e] - mu);
        const double rs = 1.0 / std::sqrt(q / N + c.eps);
        rmean[u] = mu;
        rrstd[u] = rs;
        std::vector<double> h(N), gw(N);
        double m1 = 0, m2 = 0;
        for (long long e = 0; e < N; ++e) {
            const long long ch = c0 + e / S;
            h[e] = (vx[base + e] - mu) * rs;
            const double z = h[e] * vw[ch] + vb[ch], sg = 1.0 / (1.0 + std::exp(-z));
            ry[base + e] = c.silu ? z * sg : z;
            const double gz = vg[base + e] * (c.silu ? sg * (1.0 + z * (1.0 - sg)) : 1.0);
            gw[e] = gz * vw[ch];
            m1 += gw[e];
            m2 += gw[e] * h[e];
            rdw[ch] += gz * h[e];
            rdb[ch] += gz;
        }
        m1 /= N;
        m2 /= N;
        for (long long e = 0; e < N; ++e) rdx[base + e] = rs * (gw[e] - m1 - h[e] * m2);
    }
    const double tol = tol3<T>(1e-5, 2e-3, 1e-2);
    report("y", relerr(to_f64(y, total), ry), tol);
    report("mean", relerr(to_f64(mean, units), rmean), 1e-5);
    report("rstd", relerr(to_f64(rstd, units), rrstd), 1e-5);
    report("dx", relerr(to_f64(dx, total), rdx), tol * 2);
    report("dweight", relerr(to_f64(dw, C), rdw), tol * 2);
    report("dbias", relerr(to_f64(db, C), rdb), tol * 2);
}

int main(int argc, char** argv) {
    parse_args(argc, argv);
    //         B   C     S  G  splits gx  bs   ba   bx  by  silu   affine exact  eps
    run<float>({2, 6, 20, 3, 1, 6, 64, 64, 32, 8, false, true, false, 1e-5}, 1);
    run<float>({1, 4, 1000, 2, 3, 2, 256, 128, 256, 1, true, true, false, 0.5}, 2);  // a unit over 3 blocks
    run<bf16>({2, 4, 1000, 2, 3, 4, 128, 256, 128, 2, true, true, false, 1e-5}, 3);
    run<f16>({3, 8, 25, 4, 2, 5, 96, 64, 32, 4, false, false, true, 1e-5}, 4);  // scalar path, no affine, grid-stride units
    run<bf16>({2, 10, 1, 5, 1, 10, 32, 32, 32, 8, true, true, true, 0.1}, 5);  // spatial == 1
    run<float>({1, 2, 5, 1, 4, 1, 32, 32, 32, 2, true, true, true, 1e-5}, 6);  // empty slices (N = 10, 4 splits)
    run<f16>({2, 32, 64, 8, 4, 16, 64, 64, 64, 2, true, true, false, 1e-5}, 7);  // packed f16, 4 splits
    run<float>({2, 8, 33, 4, 2, 3, 64, 32, 32, 8, true, false, true, 1e-3}, 8);  // f32 scalar path, silu without affine
    return finish();
}
