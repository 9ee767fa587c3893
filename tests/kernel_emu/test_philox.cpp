// kernels/philox.cu under the emulator: the Philox4x32-10 block function against
// Random123's published known-answer vectors; philox_raw against words computed by
// src/tensor/random.rs (embedded below) and against a reference implementation here over
// 1000 blocks, independent of the launch shape; philox_uniform (bit-exact) and
// philox_normal (f64 within 4 ulp, f32/f16/bf16 exact from that) against the same
// reference transforms, with words and values from random.rs's Philox::uniform / normal.
#include "emu.h"
#include "gen_philox.cpp"
#include "check.h"

// Random123 known answers (kat_vectors: philox4x32 10): counter, key, output.
struct Kat {
    unsigned ctr[4], key[2], out[4];
};
static const Kat KATS[] = {
    {{0, 0, 0, 0}, {0, 0}, {0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u}},
    {{~0u, ~0u, ~0u, ~0u}, {~0u, ~0u}, {0x408f276du, 0x41c83b0eu, 0xa20bc7c6u, 0x6d5451fdu}},
    {{0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u},
     {0xa4093822u, 0x299f31d0u},
     {0xd16cfe09u, 0x94fdccebu, 0x5001e420u, 0x24126ea1u}},
};

// Words 0..11 (blocks 0, 1, 2) of the stream at (seed, counter): philox4x32_10([c lo, c hi,
// 0, 0], [seed lo, seed hi]) with c = counter + b (wrapping). Printed by a copy of
// philox4x32_10 from src/tensor/random.rs run with rustc (the Random123 answer for
// seed 0, counter 0 is the first row's first block; counter u64::MAX wraps to 0).
struct Stream {
    unsigned long long seed, counter;
    unsigned words[12];
};
static const Stream RUST_WORDS[] = {
    {0x0ull, 0x0ull, {0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u, 0xf8e4cca4u, 0x5cb200dbu, 0xb1a574ebu, 0x097eff67u, 0x04faa329u, 0x51c732a6u, 0x241513adu, 0x459135e4u}},
    {0x0ull, 0x7ull, {0xa8b31d31u, 0x0ae45c73u, 0xb856e2f8u, 0x73ddf25eu, 0x3fc6a964u, 0xa08e039cu, 0xf0d30bd2u, 0xd7fe9a1bu, 0x96e901bcu, 0x2ada33bau, 0xf27a9b3du, 0x1b02f0d2u}},
    {0x0ull, 0xffffffffull, {0xc5b20a9du, 0x4434ec4eu, 0x11bbe4fbu, 0x2a1ef7a5u, 0x6ad0c5ecu, 0xea236249u, 0x73a459f5u, 0x074944b3u, 0x6da11836u, 0xe4c29d23u, 0xfc0d53eeu, 0x645d5243u}},
    {0x0ull, 0xffffffffffffffffull, {0xf3ce744du, 0xdfb9980fu, 0x5a7caad1u, 0x25d14252u, 0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u, 0xf8e4cca4u, 0x5cb200dbu, 0xb1a574ebu, 0x097eff67u}},
    {0x1ull, 0x0ull, {0xe3e80670u, 0xe50a0ebcu, 0x95f222c0u, 0xb615aa27u, 0xac08141bu, 0xdfc5ccbeu, 0x79c07a47u, 0xa7f66093u, 0x3f55b3f0u, 0x8e76cc9du, 0xb68faa8eu, 0xebed3676u}},
    {0x1ull, 0x7ull, {0x7b0ea8fdu, 0x77ac0715u, 0x8ec2d935u, 0x852722c3u, 0xd9f0dd99u, 0xe9669ebeu, 0xffffe894u, 0xc25467b4u, 0x38104998u, 0xa9187856u, 0xded463e5u, 0x316177c5u}},
    {0x1ull, 0xffffffffull, {0x00790b3fu, 0xbbcdb053u, 0xf78808c7u, 0x69fffa4du, 0x833ff8dcu, 0x225c963cu, 0x232b88b3u, 0x0b334b07u, 0xf8361f71u, 0xb53e90b6u, 0x18eab44au, 0x22786bdau}},
    {0x1ull, 0xffffffffffffffffull, {0xcd60644bu, 0x892854e3u, 0xce8609efu, 0x1d7e96ddu, 0xe3e80670u, 0xe50a0ebcu, 0x95f222c0u, 0xb615aa27u, 0xac08141bu, 0xdfc5ccbeu, 0x79c07a47u, 0xa7f66093u}},
    {0x2aull, 0x0ull, {0x9ceaf053u, 0x77f5493bu, 0x12bf50adu, 0x5742b3d7u, 0xfcdb2127u, 0x53ba6cfdu, 0x838f5a6eu, 0x744e06fbu, 0xd36c0225u, 0xa8875dcbu, 0x9a4d6d99u, 0xc609a559u}},
    {0x2aull, 0x7ull, {0x5bbd83b1u, 0x68784c85u, 0x172067aau, 0x2e6b75b7u, 0x8c4a529cu, 0x22658bcbu, 0xe7eb75d9u, 0x7fc3c9afu, 0x442f2860u, 0x65727aa0u, 0xb7f3ab90u, 0x7f141a11u}},
    {0x2aull, 0xffffffffull, {0x6e2412deu, 0x41d4ec95u, 0x29dd3e0cu, 0xaed56cfau, 0x42e0b8b3u, 0x7dbf5de8u, 0x2fe739d4u, 0x6aaf03ebu, 0x220383a8u, 0x6880ffbeu, 0x93ef3466u, 0xda94bb0du}},
    {0x2aull, 0xffffffffffffffffull, {0x8f40bd76u, 0x17643835u, 0x6fae237cu, 0xd013aba5u, 0x9ceaf053u, 0x77f5493bu, 0x12bf50adu, 0x5742b3d7u, 0xfcdb2127u, 0x53ba6cfdu, 0x838f5a6eu, 0x744e06fbu}},
    {0xffffffffffffffffull, 0x0ull, {0x72a47709u, 0x15474739u, 0x9f41b01fu, 0x22799a5au, 0x19fed511u, 0x4b67e034u, 0x9d2c02e2u, 0x9fe857b4u, 0x17625282u, 0x6f3d8616u, 0xe2c154aau, 0x98e39092u}},
    {0xffffffffffffffffull, 0x7ull, {0x6e20f2b1u, 0xc1403a74u, 0x90c17850u, 0x5cf56484u, 0xdb1963c0u, 0x7a38feffu, 0x00994225u, 0x1bb5e845u, 0x25b3564au, 0x95cdae72u, 0xe765fa8fu, 0x2f1f876au}},
    {0xffffffffffffffffull, 0xffffffffull, {0xc25672deu, 0x7c03af71u, 0xc1b7863eu, 0x1d02bb96u, 0x85af3999u, 0xf0ea2a5eu, 0x1c58f27cu, 0x402bd930u, 0x8b1cc081u, 0xbb70a852u, 0x50957cf5u, 0xf23d29adu}},
    {0xffffffffffffffffull, 0xffffffffffffffffull, {0x4d18d7d2u, 0x430ac65au, 0xbd2fa22au, 0x0afae10du, 0x72a47709u, 0x15474739u, 0x9f41b01fu, 0x22799a5au, 0x19fed511u, 0x4b67e034u, 0x9d2c02e2u, 0x9fe857b4u}},
};

// Philox::from_state(seed, counter).uniform(6) and .normal(6) of src/tensor/random.rs (f64
// bit patterns), printed by a copy of random.rs's Philox run with rustc.
struct Draws {
    unsigned long long seed, counter, uniform[6], normal[6];
};
static const Draws RUST_DRAWS[] = {
    {0x2aull, 0x7ull,
     {0x3fd6ef60c0000000ull, 0x3fda1e1300000000ull, 0x3fb7206700000000ull, 0x3fc735ba80000000ull,
      0x3fe1894a40000000ull, 0x3fc132c580000000ull},
     {0xbff33462ed431aaeull, 0x3fe90741641b4c6bull, 0x3fed58a827c03885ull, 0x3fffde8407043821ull,
      0x3fe750bd77255313ull, 0x3fea3bbdf79c8927ull}},
    {0xffffffffffffffffull, 0xffffffffffffffffull,
     {0x3fd34635c0000000ull, 0x3fd0c2b180000000ull, 0x3fe7a5f440000000ull, 0x3fa5f5c200000000ull,
      0x3fdca91dc0000000ull, 0x3fb5474700000000ull},
     {0xbfbd95d483f2cf97ull, 0x3ff8b81d05794ad4ull, 0x3fe7fd5abf2d640eull, 0x3fca81318e84126bull,
      0x3ff193d8d7daaf02ull, 0x3fe43bd27af93b06ull}},
};

// Reference Philox4x32-10 (Salmon et al.), written out here.
static void ref_block(const unsigned in[4], const unsigned key[2], unsigned out[4]) {
    uint32_t c0 = in[0], c1 = in[1], c2 = in[2], c3 = in[3], k0 = key[0], k1 = key[1];
    for (int r = 0; r < 10; ++r) {
        const uint64_t p0 = (uint64_t)0xD2511F53u * c0, p1 = (uint64_t)0xCD9E8D57u * c2;
        const uint32_t n0 = (uint32_t)(p1 >> 32) ^ c1 ^ k0, n1 = (uint32_t)p1, n2 = (uint32_t)(p0 >> 32) ^ c3 ^ k1,
                       n3 = (uint32_t)p0;
        c0 = n0;
        c1 = n1;
        c2 = n2;
        c3 = n3;
        k0 += 0x9E3779B9u;
        k1 += 0xBB67AE85u;
    }
    out[0] = c0;
    out[1] = c1;
    out[2] = c2;
    out[3] = c3;
}
static void ref_stream(unsigned long long seed, unsigned long long counter, long long nblocks, std::vector<unsigned>& w) {
    w.resize(4 * nblocks);
    const unsigned key[2] = {(unsigned)seed, (unsigned)(seed >> 32)};
    for (long long b = 0; b < nblocks; ++b) {
        const unsigned long long c = counter + (unsigned long long)b;
        const unsigned in[4] = {(unsigned)c, (unsigned)(c >> 32), 0, 0};
        ref_block(in, key, &w[4 * b]);
    }
}
static double ref_uniform(unsigned x) { return (double)(x >> 8) * (1.0 / 16777216.0); }
static double ref_open(unsigned x) { return ((double)(x >> 8) + 1.0) * (1.0 / 16777216.0); }
static void ref_normals(const std::vector<unsigned>& w, long long n, std::vector<double>& z) {
    z.resize(n);
    for (long long i = 0; i < n; ++i) {
        const long long pair = i / 2 * 2;
        const double r = std::sqrt(-2.0 * std::log(ref_open(w[pair])));
        const double theta = 2.0 * M_PI * ref_open(w[pair + 1]);
        z[i] = i % 2 == 0 ? r * std::cos(theta) : r * std::sin(theta);
    }
}
static double bits_f64(unsigned long long b) {
    double d;
    memcpy(&d, &b, 8);
    return d;
}
static long long ulps(double a, double b) {
    long long x, y;
    memcpy(&x, &a, 8);
    memcpy(&y, &b, 8);
    if ((x < 0) != (y < 0)) return a == b ? 0 : LLONG_MAX;
    return std::llabs(x - y);
}

static void raw(long long nblocks, unsigned long long seed, unsigned long long counter, dim3 grid, int block,
                unsigned* out) {
    emu::launch(grid, block, 0, [&] { philox_raw(nblocks, seed, counter, out); });
}

void known_answers() {
    printf("Random123 known answers (px::philox4x32_10)\n");
    for (const Kat& k : KATS) {
        const uint4 o = px::philox4x32_10(make_uint4(k.ctr[0], k.ctr[1], k.ctr[2], k.ctr[3]), make_uint2(k.key[0], k.key[1]));
        unsigned r[4];
        ref_block(k.ctr, k.key, r);
        char what[80];
        snprintf(what, sizeof what, "kat ctr %08x key %08x", k.ctr[0], k.key[0]);
        expect(what, o.x == k.out[0] && o.y == k.out[1] && o.z == k.out[2] && o.w == k.out[3] &&
                         memcmp(r, k.out, 16) == 0);
    }
}

void raw_words() {
    printf("philox_raw vs random.rs words and the reference\n");
    unsigned* out = dalloc_exact<unsigned>(12);
    for (const Stream& s : RUST_WORDS) {
        fill_nan((float*)out, 12);
        raw(3, s.seed, s.counter, dim3{1, 1, 1}, 32, out);
        std::vector<unsigned> w;
        ref_stream(s.seed, s.counter, 3, w);
        char what[80];
        snprintf(what, sizeof what, "seed %llx counter %llx", s.seed, s.counter);
        expect(what, memcmp(out, s.words, 48) == 0 && memcmp(w.data(), s.words, 48) == 0);
    }
    // 1000 blocks: reference; the same bytes for two launch shapes
    const long long nb = 1000;
    unsigned *a = dalloc_exact<unsigned>(4 * nb), *b = dalloc_exact<unsigned>(4 * nb);
    for (unsigned long long seed : {0ull, 42ull, ~0ull})
        for (unsigned long long counter : {0ull, 0xffffffffull - 500, ~0ull - 300}) {
            fill_nan((float*)a, 4 * nb);
            fill_nan((float*)b, 4 * nb);
            raw(nb, seed, counter, dim3{1, 1, 1}, 32, a);
            raw(nb, seed, counter, dim3{3, 1, 1}, 256, b);
            std::vector<unsigned> w;
            ref_stream(seed, counter, nb, w);
            char what[80];
            snprintf(what, sizeof what, "1000 blocks seed %llx counter %llx", seed, counter);
            expect(what, memcmp(a, w.data(), 16 * nb) == 0 && memcmp(b, a, 16 * nb) == 0);
        }
}

template <typename T>
void uniform(long long n, unsigned long long seed, unsigned long long counter, double lo, double hi, bool exact) {
    printf("%s philox_uniform n=%lld seed %llx counter %llx [%g, %g) exact=%d\n", tname<T>(), n, seed, counter, lo, hi,
           exact);
    T *out = dalloc<T>(n, exact), *ref = dalloc<T>(n, exact);
    fill_nan(out, n);
    emu::launch(dim3{2, 1, 1}, 64, 0, [&] { ENTRY(philox_uniform, T, n, seed, counter, lo, hi, out); });
    std::vector<unsigned> w;
    ref_stream(seed, counter, (n + 3) / 4, w);
    for (long long i = 0; i < n; ++i) ref[i] = tof<T>((float)(lo + (hi - lo) * ref_uniform(w[i])));
    report("uniform mismatches", (double)bit_mismatches(out, ref, n), 0);
}

template <typename T>
void normal(long long n, unsigned long long seed, unsigned long long counter, bool exact) {
    printf("%s philox_normal n=%lld seed %llx counter %llx exact=%d\n", tname<T>(), n, seed, counter, exact);
    T* out = dalloc<T>(n, exact);
    fill_nan(out, n);
    emu::launch(dim3{3, 1, 1}, 32, 0, [&] {
        if constexpr (std::is_same_v<T, double>)
            medsyn_entry_philox_normal_f64::philox_normal_f64(n, seed, counter, out);
        else
            ENTRY(philox_normal, T, n, seed, counter, out);
    });
    std::vector<unsigned> w;
    std::vector<double> z;
    ref_stream(seed, counter, (n + 3) / 4, w);
    ref_normals(w, n, z);
    if constexpr (std::is_same_v<T, double>) {
        long long worst = 0;
        for (long long i = 0; i < n; ++i) worst = std::max(worst, ulps(out[i], z[i]));
        report("normal f64 ulps", (double)worst, 4);
    } else {
        T* ref = dalloc<T>(n, exact);
        for (long long i = 0; i < n; ++i) ref[i] = tof<T>((float)z[i]);
        report("normal mismatches", (double)bit_mismatches(out, ref, n), 0);
    }
}

// The reference transforms reproduce random.rs's Philox::uniform / normal.
void rust_draws() {
    printf("reference transforms vs random.rs draws\n");
    for (const Draws& d : RUST_DRAWS) {
        std::vector<unsigned> w;
        std::vector<double> z;
        ref_stream(d.seed, d.counter, 2, w);
        ref_normals(w, 6, z);
        bool ok = true;
        for (int i = 0; i < 6; ++i) ok &= ref_uniform(w[i]) == bits_f64(d.uniform[i]) && ulps(z[i], bits_f64(d.normal[i])) <= 4;
        float* uf = dalloc_exact<float>(6);
        double* nz = dalloc_exact<double>(6);
        emu::launch(dim3{1, 1, 1}, 32, 0, [&] {
            medsyn_entry_philox_uniform_f32::philox_uniform_f32(6, d.seed, d.counter, 0.0, 1.0, uf);
            medsyn_entry_philox_normal_f64::philox_normal_f64(6, d.seed, d.counter, nz);
        });
        for (int i = 0; i < 6; ++i) {
            ok &= uf[i] == (float)bits_f64(d.uniform[i]) && ulps(nz[i], bits_f64(d.normal[i])) <= 4;
        }
        char what[80];
        snprintf(what, sizeof what, "draws seed %llx counter %llx", d.seed, d.counter);
        expect(what, ok);
    }
}

int main(int argc, char** argv) {
    parse_args(argc, argv);
    known_answers();
    raw_words();
    rust_draws();
    uniform<float>(1003, 42, 7, -2.0, 3.0, false);  // partial last block
    uniform<bf16>(1001, ~0ull, ~0ull - 10, 0.0, 1.0, true);
    uniform<f16>(998, 1, 0xffffffffull, -1.0, 1.0, false);
    normal<double>(1003, 42, 7, true);
    normal<float>(1001, 0, ~0ull - 2, false);
    normal<bf16>(1002, 5, 123, true);
    normal<f16>(999, 9, 1ull << 40, false);
    return finish();
}
