// kernels/geglu.cu under the emulator: y = h·gelu(gate) over rows [h | gate] and its
// backward [dy·gelu(gate) | dy·h·gelu'(gate)], exact (erf) GELU, against a float64
// reference from the same (rounded) inputs; packed (d a multiple of 16/sizeof(T), aligned)
// and scalar paths, rows block-strided; outputs start as NaN.
#include "emu.h"
#include "gen_geglu.cpp"
#include "check.h"

struct Case {
    int rows, d, bx, by, grid;
    bool exact;
};

template <typename T>
void run(const Case& c, unsigned seed) {
    const long long R = c.rows, d = c.d;
    printf("%s rows=%lld d=%lld block (%d,%d) grid %d exact=%d\n", tname<T>(), R, d, c.bx, c.by, c.grid, c.exact);
    std::mt19937 rng(seed);
    T *x = dalloc<T>(R * 2 * d, c.exact), *y = dalloc<T>(R * d, c.exact), *dy = dalloc<T>(R * d, c.exact),
      *dx = dalloc<T>(R * 2 * d, c.exact);
    std::vector<double> vx = fill_normal(x, R * 2 * d, rng, 2.f), vdy = fill_normal(dy, R * d, rng);
    fill_nan(y, R * d);
    fill_nan(dx, R * 2 * d);
    const dim3 grid{(unsigned)c.grid, 1, 1}, block{(unsigned)c.bx, (unsigned)c.by, 1};
    emu::launch(grid, block, 0, [&] { ENTRY(geglu, T, R, d, x, y); });
    emu::launch(grid, block, 0, [&] { ENTRY(geglu_backward, T, R, d, x, dy, dx); });
    std::vector<double> ry(R * d), rdx(R * 2 * d);
    for (long long r = 0; r < R; ++r)
        for (long long j = 0; j < d; ++j) {
            const double h = vx[r * 2 * d + j], g = vx[r * 2 * d + d + j], gy = vdy[r * d + j];
            const double cdf = 0.5 * std::erfc(-g / std::sqrt(2.0)), pdf = std::exp(-0.5 * g * g) / std::sqrt(2 * M_PI);
            ry[r * d + j] = h * g * cdf;
            rdx[r * 2 * d + j] = gy * g * cdf;
            rdx[r * 2 * d + d + j] = gy * h * (cdf + g * pdf);
        }
    const double tol = tol3<T>(1e-5, 2e-3, 1e-2);
    report("y", relerr(to_f64(y, R * d), ry), tol);
    report("dx", relerr(to_f64(dx, R * 2 * d), rdx), tol);
}

int main(int argc, char** argv) {
    parse_args(argc, argv);
    //          rows  d   bx  by grid exact
    run<float>({13, 64, 32, 4, 2, false}, 1);   // packed (4 floats)
    run<float>({7, 37, 64, 2, 3, true}, 2);     // scalar path
    run<f16>({9, 80, 32, 8, 1, false}, 3);      // packed (8 halves), rows block-strided
    run<f16>({5, 45, 32, 2, 2, true}, 4);
    run<bf16>({6, 320, 64, 1, 4, false}, 5);    // several packs per thread
    run<bf16>({11, 1, 32, 8, 1, true}, 6);      // d == 1
    return finish();
}
