// Self-test of the emulator itself: the faults it must report (divergent __syncthreads, a
// warp collective with missing or mismatched lanes, an access past a guarded buffer, a
// shared access out of range), NaN-poisoned shared memory, cp.async data arriving only at
// its wait, 2-D thread indices, and mma.sync / ldmatrix (.trans) against the fragment
// layouts as the PTX ISA documents them (restated here independently of emu.h).
#include <sys/wait.h>

#include "emu.h"
#include "emu_ptx.h"
#include "check.h"

// Runs f in a child process; returns the signal that ended it (0: exited normally).
template <typename F>
int child_signal(F f) {
    fflush(stdout);
    const pid_t pid = fork();
    if (pid == 0) {
        freopen("/dev/null", "w", stderr);  // the expected EMU FAIL message
        f();
        _exit(0);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    return WIFSIGNALED(status) ? WTERMSIG(status) : 0;
}

static void faults() {
    printf("faults the emulator must report\n");
    expect("__syncthreads after threads exited", child_signal([] {
               emu::launch(dim3{1, 1, 1}, 64, 0, [] {
                   if (threadIdx.x < 32) __syncthreads();
                   __syncthreads();
               });
           }) == SIGABRT);
    expect("__syncthreads at different call sites", child_signal([] {
               emu::launch(dim3{1, 1, 1}, 64, 0, [] {
                   if (threadIdx.x < 32)
                       __syncthreads();
                   else
                       __syncthreads();
               });
           }) == SIGABRT);
    expect("shuffle with missing lanes", child_signal([] {
               emu::launch(dim3{1, 1, 1}, 64, 0, [] {
                   if (threadIdx.x % 32 < 16) medsyn::warp_sum(1.0f);
               });
           }) == SIGABRT);
    expect("lanes in different collectives", child_signal([] {
               emu::launch(dim3{1, 1, 1}, 32, 0, [] {
                   if (threadIdx.x < 16)
                       __shfl_xor_sync(0xffffffffu, 1.0f, 1);
                   else
                       __syncwarp();
               });
           }) == SIGABRT);
    expect("write past a guarded buffer", child_signal([] {
               float* p = dalloc_exact<float>(100);
               emu::launch(dim3{1, 1, 1}, 128, 0, [p] {
                   if (threadIdx.x <= 100) p[threadIdx.x] = 1.f;
               });
           }) == SIGSEGV);
    expect("ldmatrix outside shared memory", child_signal([] {
               emu::launch(dim3{1, 1, 1}, 32, 256, [] {
                   unsigned r[4];
                   ldsm_x4(r, dyn_smem() + 16 * (threadIdx.x % 32));  // rows 16..31 are past 256 B
               });
           }) == SIGABRT);
    expect("a correct kernel runs", child_signal([] {
               emu::launch(dim3{2, 1, 1}, dim3{32, 4, 1}, 0, [] {
                   __syncthreads();
                   medsyn::warp_sum(1.0f);
               });
           }) == 0);
}

static void memory() {
    printf("shared memory, cp.async, thread indices\n");
    float* out = dalloc<float>(4 * 96);
    fill_nan(out, 4 * 96);
    float* src = dalloc<float>(4);
    for (int i = 0; i < 4; ++i) src[i] = (float)(i + 1);
    emu::launch(dim3{2, 2, 1}, dim3{32, 3, 1}, 64, [&] {
        float* s = (float*)dyn_smem();
        const int t = threadIdx.x + 32 * threadIdx.y, blk = blockIdx.x + 2 * blockIdx.y;
        if (t == 0) {
            out[blk * 96 + 0] = s[0];  // poison
            cp_async16(s, src);
            cp_async_commit();
            out[blk * 96 + 1] = s[0];  // not yet arrived
            cp_async_wait<0>();
            out[blk * 96 + 2] = s[3];  // arrived
        }
        __syncthreads();
        if (t >= 3) out[blk * 96 + t] = (float)(threadIdx.x * 100 + threadIdx.y * 10 + blk);
    });
    bool ok = true, idx = true;
    for (int blk = 0; blk < 4; ++blk) {
        ok &= std::isnan(out[blk * 96]) && std::isnan(out[blk * 96 + 1]) && out[blk * 96 + 2] == 4.f;
        for (int t = 3; t < 96; ++t) idx &= out[blk * 96 + t] == (float)((t % 32) * 100 + (t / 32) * 10 + blk);
    }
    expect("poison, cp.async at its wait", ok);
    expect("2-D threadIdx / blockIdx", idx);
}

// D = A·B for A 16x16, B 16x8 (bf16) through ldmatrix + mma.sync with the documented
// layouts: ldmatrix .x4 gives lane l, register i the pair (row l/4, columns 2(l%4), +1) of
// 8x8 matrix i; .trans the pair (rows 2(l%4), +1; column l/4); mma m16n8k16 takes
// a[0] = A[g][2t..], a[1] = A[g+8][2t..], a[2] = A[g][2t+8..], a[3] = A[g+8][2t+8..],
// b0 = B[2t..2t+1][g], b1 = B[2t+8..2t+9][g] and gives d = D[g][2t..], D[g+8][2t..].
static void tensor_core() {
    printf("mma.sync / ldmatrix layouts\n");
    std::mt19937 rng(3);
    std::normal_distribution<float> nd(0.f, 1.f);
    bf16 *A = dalloc<bf16>(256), *Bm = dalloc<bf16>(128);
    for (int i = 0; i < 256; ++i) A[i] = tof<bf16>(nd(rng));
    for (int i = 0; i < 128; ++i) Bm[i] = tof<bf16>(nd(rng));
    float* D = dalloc<float>(128);
    float* Dt = dalloc<float>(128);
    fill_nan(D, 128);
    fill_nan(Dt, 128);
    emu::launch(dim3{1, 1, 1}, 32, (256 + 128) * 2, [&] {
        bf16* sA = (bf16*)dyn_smem();  // A row-major [16][16]
        bf16* sB = sA + 256;           // B stored [k][n] = [16][8]
        const int l = threadIdx.x, g = l / 4, t = l % 4;
        for (int i = l; i < 256; i += 32) sA[i] = A[i];
        for (int i = l; i < 128; i += 32) sB[i] = Bm[i];
        __syncthreads();
        // A fragments with ldmatrix: matrices (rows 0-7, cols 0-7), (8-15, 0-7), (0-7, 8-15), (8-15, 8-15)
        unsigned a[4];
        const int mi = l / 8, r = l % 8;
        ldsm_x4(a, sA + ((mi & 1) * 8 + r) * 16 + (mi >> 1) * 8);
        // B fragments with ldmatrix.trans from [k][n]: matrices k 0-7 and k 8-15 (x4 loads
        // two more copies of them)
        unsigned bt[4];
        ldsm_x4_t(bt, sB + ((mi & 1) * 8 + r) * 8);
        float d[4] = {0, 0, 0, 0};
        mma16816<bf16>(d, a, bt[0], bt[1]);
        for (int i = 0; i < 4; ++i) D[(g + 8 * (i >> 1)) * 8 + 2 * t + (i & 1)] = d[i];
        // the same with fragments packed by hand from the documented layout
        auto pk = [](bf16 lo, bf16 hi) { return pack2<bf16>(medsyn::to_f32(lo), medsyn::to_f32(hi)); };
        unsigned ah[4] = {pk(A[g * 16 + 2 * t], A[g * 16 + 2 * t + 1]), pk(A[(g + 8) * 16 + 2 * t], A[(g + 8) * 16 + 2 * t + 1]),
                          pk(A[g * 16 + 2 * t + 8], A[g * 16 + 2 * t + 9]),
                          pk(A[(g + 8) * 16 + 2 * t + 8], A[(g + 8) * 16 + 2 * t + 9])};
        const unsigned b0 = pk(Bm[(2 * t) * 8 + g], Bm[(2 * t + 1) * 8 + g]), b1 = pk(Bm[(2 * t + 8) * 8 + g], Bm[(2 * t + 9) * 8 + g]);
        float e[4] = {0, 0, 0, 0};
        mma16816<bf16>(e, ah, b0, b1);
        for (int i = 0; i < 4; ++i) Dt[(g + 8 * (i >> 1)) * 8 + 2 * t + (i & 1)] = e[i];
    });
    std::vector<double> ref(128), got(128), got2(128);
    for (int i = 0; i < 16; ++i)
        for (int j = 0; j < 8; ++j) {
            double s = 0;
            for (int k = 0; k < 16; ++k) s += (double)fromt(A[i * 16 + k]) * fromt(Bm[k * 8 + j]);
            ref[i * 8 + j] = s;
            got[i * 8 + j] = D[i * 8 + j];
            got2[i * 8 + j] = Dt[i * 8 + j];
        }
    report("ldmatrix + mma vs A·B", relerr(got, ref), 1e-6);
    report("packed fragments + mma", relerr(got2, ref), 1e-6);
}

int main(int argc, char** argv) {
    parse_args(argc, argv);
    faults();
    memory();
    tensor_core();
    return finish();
}
