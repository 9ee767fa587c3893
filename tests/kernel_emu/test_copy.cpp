// kernels/copy.cu under the emulator: strided_copy_b1/b2/b4/b8 from permuted, narrowed
// (offset) and broadcast (stride 0) source views into contiguous, narrowed and permuted
// destination views, ranks 1..8, odd sizes, the rank-1 plain-copy path, grid-stride
// (few blocks) and one-block-per-256 grids. Buffers hold exactly the views' storage
// extents and end at a guard page (any out-of-range access faults); the destination
// starts as 0xff bytes and must equal, bit for bit, the reference (every element of the
// view copied in row-major order; everything outside the view still 0xff).
#include "emu.h"
#include "gen_copy.cpp"
#include "check.h"

#include <algorithm>
#include <numeric>

struct View {
    std::vector<long long> shape, strides;
    long long offset = 0;
};

static long long numel(const std::vector<long long>& shape) {
    long long n = 1;
    for (long long d : shape) n *= d;
    return n;
}

// One past the largest storage index the view touches (0 when empty).
static long long extent(const View& v) {
    if (numel(v.shape) == 0) return 0;
    long long e = v.offset + 1;
    for (size_t k = 0; k < v.shape.size(); ++k) e += (v.shape[k] - 1) * v.strides[k];
    return e;
}

static View contiguous(const std::vector<long long>& shape, long long offset = 0) {
    View v{shape, std::vector<long long>(shape.size()), offset};
    long long s = 1;
    for (size_t k = shape.size(); k-- > 0;) {
        v.strides[k] = s;
        s *= shape[k];
    }
    return v;
}

// A view of `shape`: contiguous storage of a shape padded by 0..2 per dim (when `narrow`)
// in a random dim order (when `permute`), narrowed at random starts, with some dims
// broadcast (stride 0, when `broadcast`) and 0..4 extra elements in front.
static View random_view(std::mt19937& rng, const std::vector<long long>& shape, bool permute, bool narrow,
                        bool broadcast) {
    const size_t r = shape.size();
    std::vector<size_t> perm(r), inv(r);
    std::iota(perm.begin(), perm.end(), 0);
    if (permute) std::shuffle(perm.begin(), perm.end(), rng);
    for (size_t i = 0; i < r; ++i) inv[perm[i]] = i;
    std::vector<long long> pad(r), big(r);
    for (size_t i = 0; i < r; ++i) pad[i] = narrow ? rng() % 3 : 0;
    for (size_t k = 0; k < r; ++k) big[k] = shape[inv[k]] + pad[inv[k]];
    const View store = contiguous(big, rng() % 5);
    View v{shape, std::vector<long long>(r), store.offset};
    for (size_t i = 0; i < r; ++i) {
        v.strides[i] = store.strides[perm[i]];
        v.offset += (long long)(rng() % (pad[i] + 1)) * v.strides[i];
        if (broadcast && rng() % 3 == 0) v.strides[i] = 0;
    }
    return v;
}

template <typename T>
static void launch_copy(unsigned grid, long long n, int rank, const CopyDims& dims, const T* src, T* dst) {
    emu::launch(dim3{grid, 1, 1}, 256, 0, [&] {
        if constexpr (sizeof(T) == 1)
            strided_copy_b1(n, rank, dims, src, dst);
        else if constexpr (sizeof(T) == 2)
            strided_copy_b2(n, rank, dims, src, dst);
        else if constexpr (sizeof(T) == 4)
            strided_copy_b4(n, rank, dims, src, dst);
        else
            strided_copy_b8(n, rank, dims, src, dst);
    });
}

static std::string describe(const View& v) {
    std::string s = "[";
    for (size_t k = 0; k < v.shape.size(); ++k)
        s += std::to_string(v.shape[k]) + "/" + std::to_string(v.strides[k]) + (k + 1 < v.shape.size() ? " " : "");
    return s + "]+" + std::to_string(v.offset);
}

// Copies src view → dst view with `grid` blocks (0: ceil(n/256)) and checks every
// element of the destination buffer. `rank_arg` >= 0 overrides the rank passed (an
// out-of-contract rank must write nothing).
template <typename T>
static void run(const char* what, const View& s, const View& d, unsigned grid, unsigned seed, int rank_arg = -1) {
    const long long n = numel(s.shape);
    const int rank = (int)s.shape.size();
    if (s.shape != d.shape || d.shape.size() > 8) {
        printf("bad case %s\n", what);
        ++failures;
        return;
    }
    const unsigned g = grid ? grid : (unsigned)std::max<long long>(1, (n + 255) / 256);
    printf("b%zu %-22s n=%lld rank %d grid %u src %s dst %s\n", sizeof(T), what, n, rank, g, describe(s).c_str(),
           describe(d).c_str());
    std::mt19937 rng(seed);
    const long long se = std::max<long long>(extent(s), 1), de = std::max<long long>(extent(d), 1);
    T* src = dalloc_exact<T>(se);
    T* dst = dalloc_exact<T>(de);
    for (long long i = 0; i < se; ++i) {
        unsigned long long bits = ((unsigned long long)rng() << 32) ^ rng();
        memcpy(&src[i], &bits, sizeof(T));
    }
    memset(dst, 0xff, de * sizeof(T));
    std::vector<T> want(de);
    memset(want.data(), 0xff, de * sizeof(T));
    std::vector<char> in_view(de, 0);
    const bool writes = rank_arg < 0 || (rank_arg >= 1 && rank_arg <= 8);
    for (long long i = 0; i < n && writes; ++i) {
        long long rem = i, so = s.offset, dof = d.offset;
        for (int k = rank - 1; k >= 0; --k) {
            const long long c = rem % s.shape[k];
            rem /= s.shape[k];
            so += c * s.strides[k];
            dof += c * d.strides[k];
        }
        want[dof] = src[so];
        in_view[dof] = 1;
    }
    CopyDims dims;
    memset(&dims, 0, sizeof dims);
    for (int k = 0; k < rank; ++k) {
        dims.shape[k] = s.shape[k];
        dims.src_stride[k] = s.strides[k];
        dims.dst_stride[k] = d.strides[k];
    }
    launch_copy<T>(g, n, rank_arg >= 0 ? rank_arg : rank, dims, src + s.offset, dst + d.offset);
    long long bad_in = 0, bad_out = 0;
    for (long long i = 0; i < de; ++i)
        if (memcmp(&dst[i], &want[i], sizeof(T)) != 0) (in_view[i] ? bad_in : bad_out) += 1;
    report("copied elements wrong", (double)bad_in, 0);
    report("poison outside overwritten", (double)bad_out, 0);
}

template <typename T>
static void all_cases(unsigned seed) {
    std::mt19937 rng(seed);
    // Rank 1: the plain-copy path (odd size, both pointers offset), strided, reversed-like.
    run<T>("plain rank 1", contiguous({1031}, 3), contiguous({1031}, 5), 2, seed + 1);
    run<T>("plain rank 1 full grid", contiguous({777}), contiguous({777}, 1), 0, seed + 2);
    run<T>("strided rank 1", View{{301}, {3}, 2}, View{{301}, {2}, 1}, 1, seed + 3);
    run<T>("broadcast rank 1", View{{257}, {0}, 4}, contiguous({257}), 2, seed + 4);
    // Rank 2: transpose both ways, a cat-like narrowed destination row block.
    run<T>("transpose src", View{{37, 29}, {1, 37}, 0}, contiguous({37, 29}), 3, seed + 5);
    run<T>("transpose dst", contiguous({29, 37}), View{{29, 37}, {1, 29}, 0}, 0, seed + 6);
    run<T>("cat slice dst", contiguous({13, 6}), View{{13, 6}, {17, 1}, 5}, 2, seed + 7);
    // Ranks 1..8, random views (permuted + narrowed + broadcast src, permuted + narrowed dst).
    for (int r = 1; r <= 8; ++r) {
        for (int rep = 0; rep < 3; ++rep) {
            std::vector<long long> shape(r);
            const int maxd = r <= 3 ? 9 : (r <= 5 ? 5 : 3);
            for (auto& d : shape) d = 1 + rng() % maxd;
            const bool bcast = rep != 0;
            const View s = random_view(rng, shape, rep != 2, true, bcast);
            const View d = random_view(rng, shape, rep != 0, rep != 1, false);
            char what[48];
            snprintf(what, sizeof what, "random rank %d #%d", r, rep);
            run<T>(what, s, d, rep == 1 ? 0 : 2, seed + 100 + r * 10 + rep);
        }
    }
    // Nothing to copy; an out-of-contract rank writes nothing.
    run<T>("empty", contiguous({4, 0, 3}), contiguous({4, 0, 3}), 1, seed + 8);
    run<T>("rank 0 passed", View{{5, 7}, {1, 5}, 0}, contiguous({5, 7}), 1, seed + 9, 0);
    run<T>("rank 9 passed", View{{5, 7}, {1, 5}, 0}, contiguous({5, 7}), 1, seed + 10, 9);
}

int main(int argc, char** argv) {
    parse_args(argc, argv);
    all_cases<unsigned char>(1000);
    all_cases<unsigned short>(2000);
    all_cases<unsigned int>(3000);
    all_cases<unsigned long long>(4000);
    return finish();
}
