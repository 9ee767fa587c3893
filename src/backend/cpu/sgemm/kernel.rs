//! The AVX2/FMA f32 microkernels: an up-to-6×16 tile of C (+)= A panel · B panel, with
//! A and B either packed or read in place through strides.

use std::arch::x86_64::*;

/// Rows of C per microkernel call (A panel height).
pub const MR: usize = 6;
/// Columns of C per microkernel call (B panel width: two ymm registers).
pub const NR: usize = 16;

/// One microkernel call: `C[r][j] (+)= Σ_{p<kc} A(r, p) · B(p, j)` for r < `rows` ≤ 6.
///
/// A(r, p) is read at `a + r*a_rs + p*a_cs` and B(p, j) at `b + p*b_rs + j`; packed
/// panels have `a_rs = 1, a_cs = MR` and `b_rs = NR` (the `PACKED_A` / `PACKED_B` kernel
/// instantiations use those constants and ignore the fields). C's row r starts at
/// `c + r*ldc`. With `load_c` false C is overwritten and never read.
#[derive(Clone, Copy)]
pub struct Tile {
    pub kc: usize,
    pub a: *const f32,
    pub a_rs: usize,
    pub a_cs: usize,
    pub b: *const f32,
    pub b_rs: usize,
    pub c: *mut f32,
    pub ldc: usize,
    pub rows: usize,
    pub load_c: bool,
}

/// The microkernel for a `ROWS`×(8·`VECS`) tile (`ROWS` ≤ 6, `VECS` ∈ {1, 2}): per k
/// step `VECS` B loads, `ROWS` A broadcasts and `ROWS·VECS` FMAs into register
/// accumulators. The full 6×16 tile keeps 12 FMA chains in flight, enough for the FMA
/// latency × throughput of Zen and Haswell-class cores; smaller tiles alternate two sets
/// of accumulators between even and odd k steps to get close to that.
///
/// # Safety
/// - the CPU supports AVX2 and FMA;
/// - `t.rows == ROWS`; A(r, p) is readable for r < `ROWS`, p < kc (a packed panel
///   has MR-float k steps); B(p, j) is readable for p < kc, j < 8·`VECS`, and 32-byte
///   aligned when `PACKED_B`;
/// - for r < `ROWS` the 8·`VECS` floats at `c + r*ldc` are writable (and readable when
///   `load_c`) and overlap neither A nor B.
#[allow(clippy::needless_range_loop)] // constant-bound index loops unroll into registers
#[target_feature(enable = "avx2,fma")]
pub unsafe fn kernel<
    const ROWS: usize,
    const VECS: usize,
    const PACKED_A: bool,
    const PACKED_B: bool,
>(
    t: &Tile,
) {
    debug_assert!(t.rows == ROWS && ROWS <= MR && (VECS == 1 || VECS == 2));
    let (kc, c, ldc) = (t.kc, t.c, t.ldc);
    let (a_rs, a_cs) = if PACKED_A { (1, MR) } else { (t.a_rs, t.a_cs) };
    let b_rs = if PACKED_B { NR } else { t.b_rs };
    let sets = if ROWS * VECS >= 8 { 1 } else { 2 };
    // SAFETY (whole body): A offsets stay below ROWS rows and kc k steps, B offsets below
    // kc rows and 8·VECS columns, C stores touch rows < ROWS, columns < 8·VECS: all inside
    // the caller's guarantees.
    unsafe {
        let mut ar = [t.a; MR];
        for (r, p) in ar.iter_mut().enumerate().take(ROWS) {
            *p = t.a.add(r * a_rs);
        }
        for r in 0..ROWS {
            _mm_prefetch::<_MM_HINT_T0>(c.add(r * ldc) as *const i8);
            _mm_prefetch::<_MM_HINT_T0>(c.add(r * ldc + 8 * VECS - 1) as *const i8);
        }
        let load_b = |ptr: *const f32| {
            if PACKED_B {
                _mm256_load_ps(ptr)
            } else {
                _mm256_loadu_ps(ptr)
            }
        };
        let mut acc = [[[_mm256_setzero_ps(); 2]; MR]; 2];
        let b = t.b;
        // Offsets (not advanced pointers) along k: a pointer past the last row would be
        // out of bounds of B's allocation.
        let mut ob = 0;
        let mut oa = 0;
        let mut p = 0;
        // One k step `u` past the cursors, into accumulator set `s`.
        macro_rules! step {
            ($u:expr, $s:expr) => {{
                let mut bv = [_mm256_setzero_ps(); 2];
                for (w, v) in bv.iter_mut().enumerate().take(VECS) {
                    *v = load_b(b.add(ob + $u * b_rs + 8 * w));
                }
                for r in 0..ROWS {
                    let x = _mm256_broadcast_ss(&*ar[r].add(oa + $u * a_cs));
                    for w in 0..VECS {
                        acc[$s][r][w] = _mm256_fmadd_ps(x, bv[w], acc[$s][r][w]);
                    }
                }
            }};
        }
        while p + 4 <= kc {
            if PACKED_A {
                // A hint only; it may point past the panel, hence `wrapping_add`.
                _mm_prefetch::<_MM_HINT_T0>(ar[0].wrapping_add(oa + 48 * MR) as *const i8);
            }
            step!(0, 0);
            step!(1, sets - 1);
            step!(2, 0);
            step!(3, sets - 1);
            oa += 4 * a_cs;
            ob += 4 * b_rs;
            p += 4;
        }
        while p < kc {
            step!(0, 0);
            oa += a_cs;
            ob += b_rs;
            p += 1;
        }
        for r in 0..ROWS {
            let ptr = c.add(r * ldc);
            for w in 0..VECS {
                let mut v = acc[0][r][w];
                if sets == 2 {
                    v = _mm256_add_ps(v, acc[1][r][w]);
                }
                let cp = ptr.add(8 * w);
                if t.load_c {
                    v = _mm256_add_ps(_mm256_loadu_ps(cp), v);
                }
                _mm256_storeu_ps(cp, v);
            }
        }
    }
}
