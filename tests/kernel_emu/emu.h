// Cooperative CUDA block emulator: every CUDA thread of a block runs as its own ucontext;
// __syncthreads and warp collectives (shuffles, __syncwarp, mma.sync, ldmatrix) are real
// barriers between those contexts; mma.sync / ldmatrix / cp.async are emulated from the PTX
// ISA fragment layouts (emu_ptx.h replaces a kernel file's PTX wrapper section). Blocks of a
// grid run one after another. Shared memory starts NaN-poisoned; test buffers end at guard
// pages. See README.md for what this can and cannot catch.
#pragma once
// Context switches use _setjmp/_longjmp between stacks; the fortified longjmp would
// reject jumps to another stack.
#undef _FORTIFY_SOURCE
#include <setjmp.h>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <type_traits>
#include <vector>

#include "cuda_bf16.h"
#include "cuda_fp16.h"

// ---- CUDA language stand-ins ---------------------------------------------------------

struct dim3 {
    unsigned x = 1, y = 1, z = 1;
};
inline dim3 threadIdx, blockIdx, blockDim, gridDim;
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __restrict__ __restrict
#define __align__(n) alignas(n)
#define __shared__ static
#define __launch_bounds__(...)

// CUDA's integer min/max overloads (mixed widths give the wider type).
template <typename A, typename B, typename = std::enable_if_t<std::is_integral_v<A> && std::is_integral_v<B>>>
inline std::common_type_t<A, B> min(A a, B b) {
    using C = std::common_type_t<A, B>;
    return (C)a < (C)b ? (C)a : (C)b;
}
template <typename A, typename B, typename = std::enable_if_t<std::is_integral_v<A> && std::is_integral_v<B>>>
inline std::common_type_t<A, B> max(A a, B b) {
    using C = std::common_type_t<A, B>;
    return (C)a > (C)b ? (C)a : (C)b;
}
using std::isfinite;
using std::isinf;
using std::isnan;
using std::memcpy;

struct alignas(16) uint4 {
    unsigned x, y, z, w;
};
struct alignas(8) uint2 {
    unsigned x, y;
};
inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) { return {x, y, z, w}; }
inline uint2 make_uint2(unsigned x, unsigned y) { return {x, y}; }

inline float __int_as_float(int i) {
    float f;
    std::memcpy(&f, &i, 4);
    return f;
}
inline int __float_as_int(float f) {
    int i;
    std::memcpy(&i, &f, 4);
    return i;
}
// IEEE round-to-nearest arithmetic (the programs are compiled with -ffp-contract=off, so
// a + b is one rounded add, never part of an FMA).
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __fsqrt_rn(float a) { return std::sqrt(a); }
inline double __dadd_rn(double a, double b) { return a + b; }
inline double __dsub_rn(double a, double b) { return a - b; }
inline double __dmul_rn(double a, double b) { return a * b; }
inline float __double2float_rn(double v) { return (float)v; }
inline unsigned __umulhi(unsigned a, unsigned b) { return (unsigned)(((uint64_t)a * b) >> 32); }
// Not atomic, but emulated threads only switch at barriers, so read-modify-write is whole.
inline float atomicAdd(float* p, float v) {
    float o = *p;
    *p = o + v;
    return o;
}

// __syncthreads records its call site: all threads of a block must wait at the same one.
namespace emu {
inline void block_barrier(const char* file, int line);
}
#define __syncthreads() emu::block_barrier(__FILE__, __LINE__)
inline void __syncwarp(unsigned = 0xffffffffu);
inline float __shfl_xor_sync(unsigned, float v, int m);
inline float __shfl_sync(unsigned, float v, int src);

#include "common.cuh"

namespace emu {

struct Copy {
    void* dst;
    const void* src;
};

// Kinds of warp collectives: every lane of a warp must arrive at the same kind.
enum WarpOp { W_NONE = 0, W_SYNC, W_SHFL_XOR, W_SHFL_IDX, W_MMA, W_LDSM, W_LDSM_T };

struct Thread {
    ucontext_t ctx;   // the initial context (entered once with setcontext)
    jmp_buf resume;   // where a started thread continues
    bool started = false;
    char* stack = nullptr;
    int state = 0;  // 0 runnable, 1 at a block barrier, 2 at a warp collective, 3 done
    long long barriers = 0;     // __syncthreads passed
    const char* bar_file = "";  // the __syncthreads it waits at
    int bar_line = 0;
    long long collectives = 0;  // warp collectives entered
    int wop = W_NONE;           // the collective it waits in
    std::vector<std::vector<Copy>> groups;  // committed cp.async groups, oldest first
    std::vector<Copy> open;                 // cp.async issued since the last commit
};

constexpr size_t STACK_BYTES = 256 * 1024;
constexpr size_t PAGE = 4096;

inline std::vector<Thread> th;
inline std::vector<char*> stack_pool;  // one stack per thread slot, reused by every block
inline int cur = 0;                    // linear index of the running thread
inline jmp_buf sched;  // the scheduler's resume point
inline std::function<void()> body;
inline unsigned char* smem = nullptr;
inline size_t smem_size = 0;
inline uint64_t slot[32][32][8];  // per (warp, lane) exchange registers of warp collectives
inline bool reverse_order = false;  // run threads and blocks in reverse order
inline long long n_switch = 0;

[[noreturn]] inline void fail(const char* m) {
    fflush(stdout);
    fprintf(stderr, "EMU FAIL: %s (thread %d, threadIdx %u,%u,%u, block %u,%u,%u)\n", m, cur, threadIdx.x, threadIdx.y,
            threadIdx.z, blockIdx.x, blockIdx.y, blockIdx.z);
    abort();
}

inline void* map_or_die(size_t bytes) {
    void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) {
        perror("mmap");
        abort();
    }
    return p;
}

// n bytes whose last byte sits right below a PROT_NONE page (reads or writes past the end
// fault). `align` is the start alignment: with align 16 the block may end up to 15 bytes
// before the guard. The start is rounded down to `align` (so n is never shortened).
inline void* guarded_aligned(size_t bytes, size_t align) {
    size_t n = (bytes + PAGE - 1) / PAGE * PAGE + PAGE;  // at least one spare page in front
    char* base = (char*)map_or_die(n + PAGE);
    mprotect(base + n, PAGE, PROT_NONE);
    uintptr_t start = ((uintptr_t)(base + n) - bytes) / align * align;
    return (void*)start;
}
// The original helper: 16-byte aligned, at most 15 bytes before the guard.
inline void* guarded(size_t bytes) { return guarded_aligned(bytes, 16); }

// Switches: a thread saves its registers with _setjmp and jumps to the scheduler; the
// scheduler resumes it with _longjmp (no signal-mask system calls, unlike swapcontext).
inline void yield_state(int s) {
    th[cur].state = s;
    ++n_switch;
    if (!_setjmp(th[cur].resume)) _longjmp(sched, 1);
}
inline void tramp() {
    body();
    th[cur].state = 3;
    _longjmp(sched, 1);
}
inline void run_thread(int i) {
    if (!_setjmp(sched)) {
        if (th[i].started) _longjmp(th[i].resume, 1);
        th[i].started = true;
        setcontext(&th[i].ctx);
    }
}

inline int nthreads() { return (int)th.size(); }
inline int lane() { return cur & 31; }
inline int warp() { return cur >> 5; }

inline void set_thread_index(int i) {
    cur = i;
    const unsigned bx = blockDim.x, by = blockDim.y;
    threadIdx = dim3{i % bx, (i / bx) % by, i / (bx * by)};
}

// Release every warp whose lanes all wait in a collective; returns whether any was.
inline bool release_warps() {
    const int threads = nthreads();
    bool released = false;
    for (int w = 0; w * 32 < threads; ++w) {
        const int l0 = w * 32, l1 = std::min(threads, l0 + 32);
        int waiting = 0, running = 0;
        for (int l = l0; l < l1; ++l) {
            waiting += th[l].state == 2;
            running += th[l].state == 0;
        }
        if (waiting == 0) continue;
        if (l1 - l0 != 32) {
            cur = l0;
            fail("warp collective in a partial warp (block size not a multiple of 32)");
        }
        if (waiting == 32) {
            for (int l = l0; l < l1; ++l)
                if (th[l].wop != th[l0].wop || th[l].collectives != th[l0].collectives) {
                    cur = l;
                    fail("lanes of a warp meet in different warp collectives (divergence)");
                }
            for (int l = l0; l < l1; ++l) th[l].state = 0;
            released = true;
        } else if (running == 0) {
            for (int l = l0; l < l1; ++l)
                if (th[l].state != 2) cur = l;
            fail("warp collective with missing lanes (a lane exited or waits at __syncthreads)");
        }
    }
    return released;
}

// Run fn as a kernel over `grid` blocks of `block` threads with `smem_bytes` of dynamic
// shared memory (NaN-poisoned before every block).
inline void launch(dim3 grid, dim3 block, size_t smem_bytes, std::function<void()> fn) {
    const long long threads = (long long)block.x * block.y * block.z;
    if (threads < 1 || threads > 1024 || block.z > 64) fail("invalid block shape");
    if (grid.x < 1 || grid.y < 1 || grid.z < 1 || grid.y > 65535 || grid.z > 65535) fail("invalid grid shape");
    body = fn;
    gridDim = grid;
    blockDim = block;
    smem_size = smem_bytes;
    const size_t n = (smem_bytes + PAGE - 1) / PAGE * PAGE;
    char* base = (char*)map_or_die(n + PAGE);
    mprotect(base + n, PAGE, PROT_NONE);
    smem = (unsigned char*)base + (n - smem_bytes);
    while (stack_pool.size() < (size_t)threads) {
        char* s = (char*)map_or_die(STACK_BYTES + PAGE);
        mprotect(s, PAGE, PROT_NONE);  // stack overflow faults
        stack_pool.push_back(s + PAGE);
    }
    const long long nblocks = (long long)grid.x * grid.y * grid.z;
    for (long long bi = 0; bi < nblocks; ++bi) {
        const long long b = reverse_order ? nblocks - 1 - bi : bi;
        blockIdx = dim3{(unsigned)(b % grid.x), (unsigned)(b / grid.x % grid.y), (unsigned)(b / grid.x / grid.y)};
        memset(smem, 0xff, smem_bytes);  // NaN in every float type
        th.assign(threads, Thread{});
        for (int i = 0; i < threads; ++i) {
            th[i].stack = stack_pool[i];
            getcontext(&th[i].ctx);
            th[i].ctx.uc_stack.ss_sp = th[i].stack;
            th[i].ctx.uc_stack.ss_size = STACK_BYTES;
            th[i].ctx.uc_link = nullptr;
            makecontext(&th[i].ctx, tramp, 0);
        }
        for (;;) {
            for (int k = 0; k < threads; ++k) {
                const int i = reverse_order ? threads - 1 - k : k;
                if (th[i].state != 0) continue;
                set_thread_index(i);
                run_thread(i);
            }
            int done = 0, at_warp = 0;
            for (auto& t : th) {
                done += t.state == 3;
                at_warp += t.state == 2;
            }
            if (done == threads) break;
            if (at_warp) {
                if (!release_warps()) fail("deadlock in warp collectives");
                continue;
            }
            // Everyone not done waits at __syncthreads: all threads of the block must be
            // there (none exited), at the same call site and the same pass.
            int first = -1;
            for (int i = 0; i < threads; ++i) {
                if (th[i].state == 3) {
                    set_thread_index(i);
                    fail("__syncthreads while other threads of the block have exited");
                }
                if (first < 0) {
                    first = i;
                } else if (th[i].barriers != th[first].barriers || th[i].bar_line != th[first].bar_line ||
                           strcmp(th[i].bar_file, th[first].bar_file) != 0) {
                    set_thread_index(i);
                    fprintf(stderr, "thread %d waits at %s:%d (pass %lld), thread %d at %s:%d (pass %lld)\n", i,
                            th[i].bar_file, th[i].bar_line, th[i].barriers, first, th[first].bar_file,
                            th[first].bar_line, th[first].barriers);
                    fail("threads wait at different __syncthreads (divergent barrier)");
                }
            }
            for (auto& t : th)
                if (t.state == 1) t.state = 0;
        }
    }
    munmap(base, n + PAGE);
}
// 1-D blocks.
inline void launch(dim3 grid, int threads, size_t smem_bytes, std::function<void()> fn) {
    launch(grid, dim3{(unsigned)threads, 1, 1}, smem_bytes, fn);
}

inline void warp_collective(WarpOp op) {
    th[cur].wop = op;
    ++th[cur].collectives;
    yield_state(2);
}
// The second half of an exchange: every lane has read the slots before any lane reuses
// them.
inline void warp_done() {
    th[cur].wop = W_NONE;
    ++th[cur].collectives;
    yield_state(2);
}

inline void block_barrier(const char* file, int line) {
    ++th[cur].barriers;
    th[cur].bar_file = file;
    th[cur].bar_line = line;
    yield_state(1);
}

inline void check_smem(const void* p, size_t bytes, size_t align) {
    const unsigned char* c = (const unsigned char*)p;
    if (c < smem || c + bytes > smem + smem_size) fail("shared address out of range");
    if (((uintptr_t)c - (uintptr_t)smem) % align) fail("misaligned shared address");
}

template <typename T>
inline float f16bits_to_f32(unsigned short b) {
    T v;
    std::memcpy(&v, &b, 2);
    return medsyn::to_f32(v);
}

// mma.sync.aligned.m16n8k16.row.col.f32.{bf16,f16}: d += A(16x16)·B(16x8), f32 accumulate.
template <typename T>
inline void mma(float (&d)[4], const unsigned (&a)[4], unsigned b0, unsigned b1) {
    const int w = warp(), l = lane();
    for (int i = 0; i < 4; ++i) slot[w][l][i] = a[i];
    slot[w][l][4] = b0;
    slot[w][l][5] = b1;
    warp_collective(W_MMA);
    const int g = l >> 2, t = l & 3;
    for (int i = 0; i < 4; ++i) {
        const int row = g + 8 * (i >> 1), col = 2 * t + (i & 1);
        float sum = 0.f;
        for (int k = 0; k < 16; ++k) {
            // A fragment: a[0] = A[g][2t..], a[1] = A[g+8][2t..], a[2] = A[g][2t+8..], a[3] = A[g+8][2t+8..]
            const int al = (row % 8) * 4 + (k % 8) / 2, ar = (row >= 8) + 2 * (k >= 8);
            const unsigned aw = (unsigned)slot[w][al][ar];
            const unsigned short ab = (k & 1) ? (aw >> 16) : (aw & 0xffff);
            // B fragment: b0 = B[2t..2t+1][g], b1 = B[2t+8..2t+9][g]
            const int bl = col * 4 + (k % 8) / 2, br = 4 + (k >= 8);
            const unsigned bw = (unsigned)slot[w][bl][br];
            const unsigned short bb = (k & 1) ? (bw >> 16) : (bw & 0xffff);
            sum += f16bits_to_f32<T>(ab) * f16bits_to_f32<T>(bb);
        }
        d[i] += sum;
    }
    warp_done();
}

// ldmatrix.sync.aligned.m8n8.x4[.trans].shared.b16: lanes 8i..8i+7 give the row addresses
// of matrix i.
inline void ldsm(unsigned (&r)[4], const void* p, bool trans) {
    const int w = warp(), l = lane();
    check_smem(p, 16, 16);
    slot[w][l][0] = (uint64_t)p;
    warp_collective(trans ? W_LDSM_T : W_LDSM);
    const int g = l >> 2, t = l & 3;
    for (int i = 0; i < 4; ++i) {
        if (!trans) {
            const unsigned char* rp = (const unsigned char*)slot[w][8 * i + g][0];
            unsigned v;
            std::memcpy(&v, rp + 4 * t, 4);
            r[i] = v;
        } else {
            const unsigned char* r0 = (const unsigned char*)slot[w][8 * i + 2 * t][0];
            const unsigned char* r1 = (const unsigned char*)slot[w][8 * i + 2 * t + 1][0];
            unsigned short lo, hi;
            std::memcpy(&lo, r0 + 2 * g, 2);
            std::memcpy(&hi, r1 + 2 * g, 2);
            r[i] = lo | ((unsigned)hi << 16);
        }
    }
    warp_done();
}

inline float shfl_xor(float v, int m) {
    const int w = warp(), l = lane();
    slot[w][l][0] = (uint64_t)(uint32_t)__float_as_int(v);
    warp_collective(W_SHFL_XOR);
    const float r = __int_as_float((int)(uint32_t)slot[w][(l ^ m) & 31][0]);
    warp_done();
    return r;
}
inline float shfl_idx(float v, int src) {
    const int w = warp(), l = lane();
    slot[w][l][0] = (uint64_t)(uint32_t)__float_as_int(v);
    warp_collective(W_SHFL_IDX);
    const float r = __int_as_float((int)(uint32_t)slot[w][src & 31][0]);
    warp_done();
    return r;
}

// cp.async.cg.shared.global (16 bytes): the copy happens at the cp.async.wait_group that
// retires its group, so a read before the wait sees the NaN poison.
inline void cp_async(void* dst, const void* src) {
    check_smem(dst, 16, 16);
    if ((uintptr_t)src % 16) fail("misaligned global cp.async source");
    th[cur].open.push_back({dst, src});
}
inline void cp_commit() {
    th[cur].groups.push_back(th[cur].open);
    th[cur].open.clear();
}
inline void cp_wait(int n) {
    auto& gs = th[cur].groups;
    while ((int)gs.size() > n) {
        for (auto& c : gs.front()) std::memcpy(c.dst, c.src, 16);
        gs.erase(gs.begin());
    }
}
}  // namespace emu

inline void __syncwarp(unsigned) {
    emu::warp_collective(emu::W_SYNC);
    emu::warp_done();
}
inline float __shfl_xor_sync(unsigned, float v, int m) { return emu::shfl_xor(v, m); }
inline float __shfl_sync(unsigned, float v, int src) { return emu::shfl_idx(v, src); }
