// kernels/batch_norm.cu under the emulator: training statistics (stats + finish, with and
// without the f32 running-stat update, channels split into slices incl. empty ones,
// channels block-strided past a capped grid), eval statistics from f32 running stats, the
// normalisation (with and without weight/bias), and the backward (sums + finish → dweight,
// dbias, m1, m2; dx with batch or running statistics) against a float64 reference from the
// same (rounded) inputs; every output starts as NaN, null outputs must stay NaN.
#include "emu.h"
#include "gen_batch_norm.cpp"
#include "check.h"

struct Case {
    int batch, channels, spatial;
    int splits, grid_x, block_stats;  // stats / backward sums: grid (grid_x, splits)
    int bx, by, row_grid;             // apply / backward dx: block (bx, by), grid row_grid
    int chan_block, chan_grid;        // finish / eval stats: 1-D grid-stride over channels
    bool training, running, affine, exact;
    double eps, momentum;
};

template <typename T>
void run(const Case& c, unsigned seed) {
    const long long B = c.batch, C = c.channels, S = c.spatial, M = B * S, total = B * C * S;
    const long long np = 2 * C * c.splits;
    printf("%s batch=%lld C=%lld S=%lld splits=%d grid.x=%d block %d apply (%d,%d)x%d chan %dx%d train=%d "
           "running=%d affine=%d exact=%d eps=%g momentum=%g\n",
           tname<T>(), B, C, S, c.splits, c.grid_x, c.block_stats, c.bx, c.by, c.row_grid, c.chan_block,
           c.chan_grid, c.training, c.running, c.affine, c.exact, c.eps, c.momentum);
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
    // Running stats: f32 for every T (nn::BatchNorm2d's buffers); always allocated so the
    // "not given" cases can check they stay untouched.
    float *rm = dalloc<float>(C, c.exact), *rv = dalloc<float>(C, c.exact);
    std::uniform_real_distribution<float> ud(0.f, 1.f);
    for (long long i = 0; i < C; ++i) {
        rm[i] = 2.f * ud(rng) - 1.f;
        rv[i] = 0.5f + 1.5f * ud(rng);
    }
    const std::vector<double> vrm = to_f64(rm, C), vrv = to_f64(rv, C);
    float *partial = dalloc<float>(np, c.exact), *mean = dalloc<float>(C, c.exact), *rstd = dalloc<float>(C, c.exact);
    float *m1 = dalloc<float>(C, c.exact), *m2 = dalloc<float>(C, c.exact);
    fill_nan(y, total);
    fill_nan(dx, total);
    fill_nan(dw, C);
    fill_nan(db, C);
    fill_nan(partial, np);
    fill_nan(mean, C);
    fill_nan(rstd, C);
    fill_nan(m1, C);
    fill_nan(m2, C);

    const dim3 cgrid{(unsigned)c.grid_x, (unsigned)c.splits, 1};
    const dim3 pgrid{(unsigned)c.chan_grid, 1, 1};
    float* rmp = c.running ? rm : nullptr;
    float* rvp = c.running ? rv : nullptr;
    if (c.training) {
        emu::launch(cgrid, c.block_stats, 0, [&] { ENTRY(batch_norm_stats, T, B, C, S, x, partial); });
        emu::launch(pgrid, c.chan_block, 0, [&] {
            ENTRY(batch_norm_stats_finish, T, B, C, S, c.splits, c.eps, c.momentum, partial, mean, rstd, rmp, rvp);
        });
    } else {
        emu::launch(pgrid, c.chan_block, 0, [&] { ENTRY(batch_norm_eval_stats, T, C, c.eps, rm, rv, mean, rstd); });
    }
    const dim3 rblock{(unsigned)c.bx, (unsigned)c.by, 1}, rgrid{(unsigned)c.row_grid, 1, 1};
    emu::launch(rgrid, rblock, 0, [&] { ENTRY(batch_norm_apply, T, B, C, S, x, mean, rstd, w, bias, y); });

    // Backward: sums only when some output needs them (dweight/dbias with affine, dx with
    // batch statistics); m1/m2 only in training.
    const bool need_sums = c.affine || c.training;
    T* dwp = c.affine ? dw : nullptr;
    T* dbp = c.affine ? db : nullptr;
    float* m1p = c.training ? m1 : nullptr;
    float* m2p = c.training ? m2 : nullptr;
    if (need_sums) {
        fill_nan(partial, np);
        emu::launch(cgrid, c.block_stats, 0,
                    [&] { ENTRY(batch_norm_backward_sums, T, B, C, S, x, g, mean, rstd, partial); });
        emu::launch(pgrid, c.chan_block, 0,
                    [&] { ENTRY(batch_norm_backward_finish, T, B, C, S, c.splits, partial, dwp, dbp, m1p, m2p); });
    }
    emu::launch(rgrid, rblock, 0,
                [&] { ENTRY(batch_norm_backward_dx, T, B, C, S, x, g, w, mean, rstd, m1p, m2p, dx); });

    // float64 reference
    std::vector<double> rmean(C), rrstd(C), nrm = vrm, nrv = vrv, ry(total), rdx(total);
    std::vector<double> rdw(C, 0.0), rdb(C, 0.0), rm1(C), rm2(C);
    for (long long ch = 0; ch < C; ++ch) {
        auto at = [&](long long m) { return ((m / S) * C + ch) * S + m % S; };
        double mu, rs;
        if (c.training) {
            double s = 0, q = 0;
            for (long long m = 0; m < M; ++m) s += vx[at(m)];
            mu = s / M;
            for (long long m = 0; m < M; ++m) q += (vx[at(m)] - mu) * (vx[at(m)] - mu);
            const double var = q / M;
            rs = 1.0 / std::sqrt(var + c.eps);
            if (c.running) {
                nrm[ch] = (1.0 - c.momentum) * vrm[ch] + c.momentum * mu;
                nrv[ch] = (1.0 - c.momentum) * vrv[ch] + c.momentum * ((double)M / (double)(M - 1)) * var;
            }
        } else {
            mu = vrm[ch];
            rs = 1.0 / std::sqrt(vrv[ch] + c.eps);
        }
        rmean[ch] = mu;
        rrstd[ch] = rs;
        double sg = 0, sgx = 0;
        for (long long m = 0; m < M; ++m) {
            const long long e = at(m);
            const double h = (vx[e] - mu) * rs;
            ry[e] = h * vw[ch] + vb[ch];
            sg += vg[e];
            sgx += vg[e] * h;
        }
        rdw[ch] = sgx;
        rdb[ch] = sg;
        rm1[ch] = sg / M;
        rm2[ch] = sgx / M;
        for (long long m = 0; m < M; ++m) {
            const long long e = at(m);
            const double h = (vx[e] - mu) * rs;
            rdx[e] = c.training ? vw[ch] * rs * (vg[e] - rm1[ch] - h * rm2[ch]) : vg[e] * vw[ch] * rs;
        }
    }
    const double tol = tol3<T>(1e-5, 2e-3, 1e-2);
    report("mean", relerr(to_f64(mean, C), rmean), 1e-5);
    report("rstd", relerr(to_f64(rstd, C), rrstd), 1e-5);
    // Running stats stay f32: the f64 update rounded once (no T rounding, any T).
    report("running_mean", relerr(to_f64(rm, C), nrm), 1e-5);
    report("running_var", relerr(to_f64(rv, C), nrv), 1e-5);
    if (!(c.training && c.running)) {
        expect("running stats untouched", bit_mismatches(rm, std::vector<float>(vrm.begin(), vrm.end()).data(), C) == 0 &&
                                              bit_mismatches(rv, std::vector<float>(vrv.begin(), vrv.end()).data(), C) == 0);
    }
    report("y", relerr(to_f64(y, total), ry), tol);
    report("dx", relerr(to_f64(dx, total), rdx), tol * 2);
    if (c.affine) {
        report("dweight", relerr(to_f64(dw, C), rdw), tol * 2);
        report("dbias", relerr(to_f64(db, C), rdb), tol * 2);
    } else {
        bool untouched = true;
        for (long long i = 0; i < C; ++i) untouched &= std::isnan(fromt(dw[i])) && std::isnan(fromt(db[i]));
        expect("null dweight/dbias untouched", untouched);
    }
    if (c.training) {
        report("m1", relerr(to_f64(m1, C), rm1), 1e-5);
        report("m2", relerr(to_f64(m2, C), rm2), 1e-5);
    } else {
        bool untouched = true;
        for (long long i = 0; i < C; ++i) untouched &= std::isnan(m1[i]) && std::isnan(m2[i]);
        expect("null m1/m2 untouched", untouched);
    }
}

int main(int argc, char** argv) {
    parse_args(argc, argv);
    //          B   C    S  splits gx  bs   bx   by rg  cb  cg  train  running affine exact  eps   mom
    run<float>({4, 3, 49, 1, 3, 256, 64, 4, 3, 256, 1, true, true, true, false, 1e-5, 0.1}, 1);
    run<bf16>({4, 3, 49, 1, 3, 256, 64, 4, 3, 256, 1, true, true, true, false, 1e-5, 0.1}, 1);
    run<f16>({4, 3, 49, 1, 3, 256, 64, 4, 3, 256, 1, true, true, true, false, 1e-5, 0.1}, 1);
    // A channel over 3 slices (M = 2000), no affine, block 512, odd apply rows.
    run<float>({2, 5, 1000, 3, 5, 512, 256, 1, 4, 32, 1, true, true, false, false, 1e-5, 0.1}, 2);
    run<bf16>({2, 5, 1000, 3, 5, 512, 256, 1, 4, 32, 1, true, true, false, true, 1e-5, 0.1}, 2);
    // No running stats; channels block-strided past grid.x = 5; finish grid-strided (one
    // block of 8 threads: three passes over 17 channels); exact (unaligned) buffers.
    run<f16>({8, 17, 9, 4, 5, 256, 32, 8, 2, 8, 1, true, false, true, true, 1e-3, 0.1}, 3);
    run<float>({8, 17, 9, 4, 5, 256, 32, 8, 2, 8, 1, true, false, true, true, 1e-3, 0.1}, 3);
    // spatial 1 (BatchNorm1d-like), M = 3 in 5 splits: trailing slices empty.
    run<bf16>({3, 7, 1, 5, 7, 256, 32, 8, 1, 32, 1, true, true, true, true, 1e-5, 0.3}, 4);
    run<float>({3, 7, 1, 5, 7, 256, 32, 8, 1, 32, 1, true, true, true, true, 1e-5, 0.3}, 4);
    // Eval: with affine (sums for dweight/dbias, dx from running stats), without (no sums).
    run<float>({2, 6, 30, 2, 4, 256, 32, 8, 1, 32, 1, false, true, true, false, 1e-5, 0.1}, 5);
    run<f16>({2, 6, 30, 2, 4, 256, 32, 8, 1, 32, 1, false, true, true, true, 1e-5, 0.1}, 5);
    run<bf16>({1, 33, 14, 1, 33, 256, 32, 8, 2, 16, 2, false, true, false, false, 1e-5, 0.1}, 6);
    // Many channels, several block-strided passes, block 1024.
    run<bf16>({3, 40, 25, 2, 7, 1024, 32, 8, 3, 16, 1, true, true, true, false, 1e-5, 0.1}, 7);
    return finish();
}
