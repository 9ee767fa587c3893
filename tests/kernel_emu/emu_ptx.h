// Emulated replacements for a kernel file's "BEGIN PTX WRAPPERS" .. "END PTX WRAPPERS"
// section (prep.py splices this in): the same functions, built on emu.h.
#pragma once
inline unsigned char* dyn_smem() { return emu::smem; }
inline void ldsm_x4(unsigned (&r)[4], const void* p) { emu::ldsm(r, p, false); }
inline void ldsm_x4_t(unsigned (&r)[4], const void* p) { emu::ldsm(r, p, true); }
template <typename T>
inline void mma16816(float (&d)[4], const unsigned (&a)[4], unsigned b0, unsigned b1) {
    emu::mma<T>(d, a, b0, b1);
}
template <typename T>
inline unsigned pack2(float lo, float hi) {
    T a = medsyn::from_f32<T>(lo), b = medsyn::from_f32<T>(hi);
    unsigned short x, y;
    std::memcpy(&x, &a, 2);
    std::memcpy(&y, &b, 2);
    return x | ((unsigned)y << 16);
}
inline void cp_async16(void* s, const void* g) { emu::cp_async(s, g); }
inline void cp_async_commit() { emu::cp_commit(); }
template <int N>
inline void cp_async_wait() {
    emu::cp_wait(N);
}
// ex2.approx.ftz.f32: subnormal results flush to zero.
inline float fast_exp2(float x) {
    const float r = exp2f(x);
    return std::fpclassify(r) == FP_SUBNORMAL ? 0.f : r;
}
