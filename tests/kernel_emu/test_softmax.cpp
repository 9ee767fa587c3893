// kernels/softmax.cu under the emulator: softmax and log-softmax over rows (inner == 1,
// softmax_rows / softmax_backward_rows) and over the middle axis of [outer, n, inner]
// (softmax_cols / softmax_backward_cols), against a float64 reference from the same
// (rounded) inputs, including the edge rules of the CPU twin (−inf entries, a row of only
// −inf, NaN and +inf make the row NaN); outputs start as NaN.
#include "emu.h"
#include "gen_softmax.cpp"
#include "check.h"

struct Case {
    int outer, n, inner;
    int bx, by, grid;  // rows: block (bx, by); cols: block bx (by ignored)
    bool log, specials, exact;
};

// Reference softmax of one line (n values at stride) with the CPU's edge rules.
static void ref_line(const std::vector<double>& x, long long at, long long n, long long stride, bool log,
                     std::vector<double>& y) {
    bool nan = false;
    double m = -INFINITY;
    for (long long j = 0; j < n; ++j) {
        const double v = x[at + j * stride];
        nan |= std::isnan(v) || v == INFINITY;
        m = std::max(m, v);
    }
    if (m == -INFINITY) nan = true;  // only −inf: exp(−inf − (−inf)) = NaN
    double s = 0;
    if (!nan)
        for (long long j = 0; j < n; ++j) s += std::exp(x[at + j * stride] - m);
    for (long long j = 0; j < n; ++j) {
        const double v = x[at + j * stride];
        y[at + j * stride] = nan ? NAN : (log ? (v - m) - std::log(s) : std::exp(v - m) / s);
    }
}

template <typename T>
void run(const Case& c, unsigned seed) {
    const bool rows_kernel = c.inner == 1;
    const long long O = c.outer, n = c.n, I = c.inner, total = O * n * I, lines = O * I;
    printf("%s %s outer=%lld n=%lld inner=%lld block (%d,%d) grid %d log=%d specials=%d exact=%d\n", tname<T>(),
           rows_kernel ? "rows" : "cols", O, n, I, c.bx, rows_kernel ? c.by : 1, c.grid, c.log, c.specials, c.exact);
    std::mt19937 rng(seed);
    T *x = dalloc<T>(total, c.exact), *y = dalloc<T>(total, c.exact), *yin = dalloc<T>(total, c.exact),
      *g = dalloc<T>(total, c.exact), *dx = dalloc<T>(total, c.exact);
    std::vector<double> vx = fill_normal(x, total, rng, 3.f, 2.f), vg = fill_normal(g, total, rng);
    if (c.specials && lines >= 5 && n >= 3) {
        // line 0: some −inf entries; 1: only −inf; 2: a NaN; 3: a +inf; 4: large values
        auto set = [&](long long line, long long j, float v) {
            const long long at = (line / I) * n * I + line % I + j * I;
            x[at] = tof<T>(v);
            vx[at] = fromt(x[at]);
        };
        set(0, 0, -INFINITY);
        set(0, n - 1, -INFINITY);
        for (long long j = 0; j < n; ++j) set(1, j, -INFINITY);
        set(2, n / 2, NAN);
        set(3, 1, INFINITY);
        for (long long j = 0; j < n; ++j) set(4, j, 60.f + (float)(j % 7));
    }
    fill_nan(y, total);
    fill_nan(dx, total);
    std::vector<double> ry(total), rdx(total);
    for (long long l = 0; l < lines; ++l) ref_line(vx, (l / I) * n * I + l % I, n, I, c.log, ry);
    // the backward's y: the reference forward of finite random rows, rounded to T
    std::vector<double> vx2(total), vy(total);
    {
        std::normal_distribution<double> nd(0.0, 2.0);
        for (auto& v : vx2) v = nd(rng);
        for (long long l = 0; l < lines; ++l) ref_line(vx2, (l / I) * n * I + l % I, n, I, c.log, vy);
        for (long long i = 0; i < total; ++i) {
            yin[i] = tof<T>((float)vy[i]);
            vy[i] = fromt(yin[i]);
        }
    }
    for (long long l = 0; l < lines; ++l) {
        const long long at = (l / I) * n * I + l % I;
        double dot = 0;
        for (long long j = 0; j < n; ++j) dot += c.log ? vg[at + j * I] : vg[at + j * I] * vy[at + j * I];
        for (long long j = 0; j < n; ++j) {
            const long long e = at + j * I;
            rdx[e] = c.log ? vg[e] - std::exp(vy[e]) * dot : vy[e] * (vg[e] - dot);
        }
    }
    const int lg = c.log;
    if (rows_kernel) {
        const dim3 grid{(unsigned)c.grid, 1, 1}, block{(unsigned)c.bx, (unsigned)c.by, 1};
        emu::launch(grid, block, 0, [&] { ENTRY(softmax_rows, T, O, n, lg, x, y); });
        emu::launch(grid, block, 0, [&] { ENTRY(softmax_backward_rows, T, O, n, lg, yin, g, dx); });
    } else {
        const dim3 grid{(unsigned)c.grid, 1, 1};
        emu::launch(grid, c.bx, 0, [&] { ENTRY(softmax_cols, T, O, n, I, lg, x, y); });
        emu::launch(grid, c.bx, 0, [&] { ENTRY(softmax_backward_cols, T, O, n, I, lg, yin, g, dx); });
    }
    const double tol = tol3<T>(1e-5, 2e-3, 1e-2);
    report(c.log ? "log_softmax" : "softmax", relerr(to_f64(y, total), ry), tol);
    report("backward", relerr(to_f64(dx, total), rdx), tol * 2);
}

int main(int argc, char** argv) {
    parse_args(argc, argv);
    //          outer n inner bx by grid log  specials exact
    run<float>({21, 37, 1, 32, 8, 2, false, true, false}, 1);  // warp per row, rows block-strided
    run<float>({21, 37, 1, 32, 8, 2, true, true, true}, 2);
    run<bf16>({3, 2000, 1, 256, 1, 2, false, true, true}, 3);  // block per row
    run<f16>({6, 1500, 1, 128, 2, 2, true, true, false}, 4);
    run<bf16>({10, 1, 1, 32, 4, 2, true, false, true}, 5);  // n == 1
    run<float>({3, 17, 13, 32, 1, 2, false, true, true}, 6);  // columns, grid-stride
    run<float>({3, 17, 13, 64, 1, 1, true, true, false}, 7);
    run<f16>({2, 40, 7, 32, 1, 1, false, true, true}, 8);
    run<bf16>({4, 9, 5, 32, 1, 3, true, false, false}, 9);
    return finish();
}
