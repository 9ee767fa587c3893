// kernels/layer_norm.cu under the emulator: forward (mean/rstd saved; with and without
// weight/bias; a warp per row and a block per row), backward dx, and dweight/dbias both
// directly (one chunk) and through the partial buffer + finish kernel (several chunks),
// against a float64 reference from the same (rounded) inputs; outputs start as NaN.
#include "emu.h"
#include "gen_layer_norm.cpp"
#include "check.h"

struct Case {
    int rows, n;
    int bx, by, grid;  // forward / dx launch
    int pby, chunks;   // params launch: block (32, pby), grid (.., chunks)
    bool affine, exact;
    float eps;
};

template <typename T>
void run(const Case& c, unsigned seed) {
    const long long R = c.rows, n = c.n, total = R * n;
    printf("%s rows=%lld n=%lld block (%d,%d) grid %d params (32,%d) chunks %d affine=%d exact=%d eps=%g\n", tname<T>(),
           R, n, c.bx, c.by, c.grid, c.pby, c.chunks, c.affine, c.exact, c.eps);
    std::mt19937 rng(seed);
    T *x = dalloc<T>(total, c.exact), *g = dalloc<T>(total, c.exact), *y = dalloc<T>(total, c.exact),
      *dx = dalloc<T>(total, c.exact);
    T *w = nullptr, *b = nullptr, *dw = dalloc<T>(n, c.exact), *db = dalloc<T>(n, c.exact);
    std::vector<double> vx = fill_normal(x, total, rng, 1.5f, -0.7f), vg = fill_normal(g, total, rng);
    std::vector<double> vw(n, 1.0), vb(n, 0.0);
    if (c.affine) {
        w = dalloc<T>(n, c.exact);
        b = dalloc<T>(n, c.exact);
        vw = fill_normal(w, n, rng, 0.5f, 1.f);
        vb = fill_normal(b, n, rng, 0.5f);
    }
    float *mean = dalloc<float>(R, c.exact), *rstd = dalloc<float>(R, c.exact);
    float* partial = c.chunks > 1 ? dalloc<float>(2 * c.chunks * n, c.exact) : nullptr;
    fill_nan(y, total);
    fill_nan(dx, total);
    fill_nan(dw, n);
    fill_nan(db, n);
    fill_nan(mean, R);
    fill_nan(rstd, R);
    if (partial) fill_nan(partial, 2 * c.chunks * n);

    const dim3 block{(unsigned)c.bx, (unsigned)c.by, 1}, grid{(unsigned)c.grid, 1, 1};
    emu::launch(grid, block, 0, [&] { ENTRY(layer_norm, T, R, n, c.eps, x, w, b, y, mean, rstd); });
    emu::launch(grid, block, 0, [&] { ENTRY(layer_norm_backward_dx, T, R, n, x, g, w, mean, rstd, dx); });
    const unsigned tiles = (unsigned)std::min<long long>((n + 31) / 32, 2);  // block-strided tiles
    emu::launch(dim3{tiles, (unsigned)c.chunks, 1}, dim3{32, (unsigned)c.pby, 1}, 0,
                [&] { ENTRY(layer_norm_backward_params, T, R, n, x, g, mean, rstd, partial, dw, db); });
    if (c.chunks > 1)
        emu::launch(dim3{2, 1, 1}, 64, 0,
                    [&] { ENTRY(layer_norm_backward_params_finish, T, n, c.chunks, partial, dw, db); });

    std::vector<double> ry(total), rmean(R), rrstd(R), rdx(total), rdw(n, 0.0), rdb(n, 0.0);
    for (long long r = 0; r < R; ++r) {
        const double* xr = &vx[r * n];
        double s = 0, q = 0;
        for (long long j = 0; j < n; ++j) s += xr[j];
        const double mu = s / n;
        for (long long j = 0; j < n; ++j) q += (xr[j] - mu) * (xr[j] - mu);
        const double rs = 1.0 / std::sqrt(q / n + (double)c.eps);
        rmean[r] = mu;
        rrstd[r] = rs;
        double m1 = 0, m2 = 0;
        for (long long j = 0; j < n; ++j) {
            const double h = (xr[j] - mu) * rs, gv = vg[r * n + j];
            ry[r * n + j] = h * vw[j] + vb[j];
            m1 += gv * vw[j];
            m2 += gv * vw[j] * h;
            rdw[j] += gv * h;
            rdb[j] += gv;
        }
        m1 /= n;
        m2 /= n;
        for (long long j = 0; j < n; ++j) {
            const double h = (xr[j] - mu) * rs;
            rdx[r * n + j] = rs * (vg[r * n + j] * vw[j] - m1 - h * m2);
        }
    }
    const double tol = tol3<T>(1e-5, 2e-3, 1e-2);
    report("y", relerr(to_f64(y, total), ry), tol);
    report("mean", relerr(to_f64(mean, R), rmean), 1e-5);
    report("rstd", relerr(to_f64(rstd, R), rrstd), 1e-5);
    report("dx", relerr(to_f64(dx, total), rdx), tol * 2);
    report("dweight", relerr(to_f64(dw, n), rdw), tol * 2);
    report("dbias", relerr(to_f64(db, n), rdb), tol * 2);
}

int main(int argc, char** argv) {
    parse_args(argc, argv);
    //             rows n   bx  by grid pby chunks affine exact eps
    run<float>({37, 50, 32, 8, 3, 8, 1, true, false, 1e-5f}, 1);   // warp per row, partial last pass
    run<float>({5, 300, 128, 1, 2, 4, 3, false, true, 0.25f}, 2);  // block per row, 3 chunks
    run<bf16>({37, 50, 32, 8, 2, 8, 4, true, true, 1e-5f}, 3);
    run<f16>({9, 700, 256, 2, 3, 8, 1, true, false, 1e-5f}, 4);    // two rows per block of 256
    run<bf16>({3, 1, 32, 4, 1, 2, 2, true, true, 1e-3f}, 5);        // n == 1 (x̂ = 0)
    run<f16>({64, 33, 64, 4, 5, 32, 2, false, true, 1e-5f}, 6);    // 32 x 32 params tile
    return finish();
}
