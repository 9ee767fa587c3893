//! BLIS-style f32 GEMM for AVX2/FMA CPUs: NC/KC/MC blocking, packed panels (or operands
//! read in place when packing would not pay), a 6×16 microkernel, rayon threads sharing
//! one packed B block; B may also come from a packer (implicit GEMM, e.g. conv im2col).

mod block;
pub mod im2col;
mod kernel;
mod pack;

use super::{Im2col, MatRef, PackB};
use block::Block;
use kernel::{MR, NR};
use rayon::prelude::*;
use std::cell::Cell;
use std::thread::LocalKey;

const _: () = assert!(NR == super::PACKED_B_COLS);

/// Depth of one packed block (A micro-panel 6 KiB, B micro-panel 16 KiB: L1-sized).
const KC: usize = 256;
/// Rows of one packed A block (MC×KC ≈ 144 KiB: L2-resident). Multiple of MR.
const MC: usize = 144;
/// Columns of one packed B block (KC×NC ≈ 4 MiB: L3-resident). Multiple of NR.
const NC: usize = 4080;
/// Columns of one B block produced by a [`PackB`] packer: small enough that the packed
/// block stays in L2 between packing and use (implicit operands are cheap to re-pack,
/// and the A block they meet is small).
const NC_PACKER: usize = 512;
/// Problems up to this many multiply-adds skip blocking and packing altogether.
const TINY_WORK: usize = 512;
/// Threaded problems below this many multiply-adds split into independent slices (one
/// dispatch); larger ones share each packed B block between threads.
const SHARED_B_MIN_WORK: usize = 512 * 512 * 512;
/// Problems below this many multiply-adds run on one thread.
const PARALLEL_MIN_WORK: usize = 96 * 96 * 96;
/// Row-major B is read in place (not packed) when its k rows span at most
/// `INPLACE_B_L1_SPAN` floats (it sits in L1 without set conflicts), or when M has at most
/// `INPLACE_B_MAX_M` rows (each B panel then feeds too few microkernel calls to repay its
/// packing) and the rows span at most `INPLACE_B_L2_SPAN` floats (L2 and the TLB).
const INPLACE_B_L1_SPAN: usize = 8 * 1024;
const INPLACE_B_MAX_M: usize = 2 * MR;
const INPLACE_B_L2_SPAN: usize = 64 * 1024;
/// A is read in place (not packed) when N has at most this many columns.
const INPLACE_A_MAX_N: usize = 4 * NR;

/// True when this CPU can run [`sgemm`].
pub fn available() -> bool {
    is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
}

/// True when [`sgemm`] is the better choice for this shape: everything but
/// matrix-vector products (m or n of 1), where the `gemm` crate's GEMV paths win.
pub fn preferred(m: usize, n: usize) -> bool {
    m > 1 && n > 1
}

/// One 64-byte line of floats: buffers built from these are cache-line aligned.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([f32; 16]);

thread_local! {
    static A_BUF: Cell<Vec<Line>> = const { Cell::new(Vec::new()) };
    static B_BUF: Cell<Vec<Line>> = const { Cell::new(Vec::new()) };
    static EDGE_BUF: Cell<Vec<Line>> = const { Cell::new(Vec::new()) };
}

/// Runs `f` on this thread's reusable, 64-byte-aligned buffer of at least `floats`
/// floats. A nested call on the same thread (rayon work stealing) finds the buffer
/// taken and allocates its own.
fn with_buf<R>(
    key: &'static LocalKey<Cell<Vec<Line>>>,
    floats: usize,
    f: impl FnOnce(&mut [f32]) -> R,
) -> R {
    let mut buf = key.take();
    let lines = floats.div_ceil(16);
    if buf.len() < lines {
        buf = vec![Line([0.0; 16]); lines];
    }
    let out = f(as_floats(&mut buf[..lines]));
    key.set(buf);
    out
}

fn as_floats(lines: &mut [Line]) -> &mut [f32] {
    // SAFETY: `Line` is `repr(C)` around `[f32; 16]` with size exactly 64 bytes (no
    // padding), so `lines` is `16 * len` initialised, properly aligned floats.
    unsafe { std::slice::from_raw_parts_mut(lines.as_mut_ptr().cast::<f32>(), lines.len() * 16) }
}

/// The destination pointer shared by threads that write disjoint tiles of it.
#[derive(Clone, Copy)]
struct DstPtr(*mut f32);
// SAFETY: threads only write disjoint (row range × column range) windows of the
// destination, which outlives the parallel section.
unsafe impl Send for DstPtr {}
unsafe impl Sync for DstPtr {}

impl DstPtr {
    /// The pointer `off` floats further (a method, so closures capture the `Sync` wrapper).
    ///
    /// # Safety
    /// The result stays inside the destination allocation.
    unsafe fn add(self, off: usize) -> DstPtr {
        // SAFETY: forwarded from the caller.
        DstPtr(unsafe { self.0.add(off) })
    }
}

/// Splits `len` into `ceil(len / max)` near-equal blocks, each rounded up to `unit`.
fn block_size(len: usize, max: usize, unit: usize) -> usize {
    let blocks = len.div_ceil(max).max(1);
    len.div_ceil(blocks).div_ceil(unit) * unit
}

/// dst[m×n] (row-major, leading dim `ldd`) (+)= a[m×k] · b[k×n] for f32.
///
/// Panics unless [`available`] is true, m, n, k > 0, every `a(i, p)`, `b(p, j)` with
/// i < m, p < k, j < n is inside its slice, and the m×n window of dst fits.
#[allow(clippy::too_many_arguments)]
pub fn sgemm(
    m: usize,
    n: usize,
    k: usize,
    a: MatRef<'_, f32>,
    b: MatRef<'_, f32>,
    dst: &mut [f32],
    ldd: usize,
    accumulate: bool,
    allow_threads: bool,
) {
    assert!(available() && m > 0 && n > 0 && k > 0);
    assert!(a.offset + (m - 1) * a.rs + (k - 1) * a.cs < a.data.len());
    assert!(b.offset + (k - 1) * b.rs + (n - 1) * b.cs < b.data.len());
    assert!((m == 1 || ldd >= n) && (m - 1) * ldd + n <= dst.len());

    if m * n * k <= TINY_WORK {
        tiny(m, n, k, &a, &b, dst, ldd, accumulate);
        return;
    }
    let threads = thread_count(allow_threads, m * n * k);
    let dst = DstPtr(dst.as_mut_ptr());
    if threads > 1 && m * n * k < SHARED_B_MIN_WORK {
        // Small problem: one rayon dispatch of independent slices (each packs what it
        // needs) beats two synchronised phases per block.
        let (rows, cols) = slice_shape(m, n, threads);
        let row_units = m.div_ceil(rows);
        let units = row_units * n.div_ceil(cols);
        (0..units).into_par_iter().with_max_len(1).for_each(|u| {
            let (i0, j0) = ((u % row_units) * rows, (u / row_units) * cols);
            let (mu, nu) = (rows.min(m - i0), cols.min(n - j0));
            let a = MatRef {
                offset: a.offset + i0 * a.rs,
                ..a
            };
            let b = MatRef {
                offset: b.offset + j0 * b.cs,
                ..b
            };
            // SAFETY: the slice's rows i0..i0+mu, columns j0..j0+nu lie inside the
            // checked m×n window of dst and no other unit writes them.
            let d = unsafe { dst.add(i0 * ldd + j0) };
            // SAFETY: as above; the sub-views of a and b stay inside the checked ranges.
            unsafe { blocked(mu, nu, k, a, b, None, d, ldd, accumulate, 1) };
        });
        return;
    }
    // SAFETY: dst's m×n window with leading dimension ldd was checked above.
    unsafe { blocked(m, n, k, a, b, None, dst, ldd, accumulate, threads) };
}

/// A [`PackB`] whose columns start `j0` further into another one.
struct Shifted<'x> {
    inner: &'x dyn PackB,
    j0: usize,
}

impl PackB for Shifted<'_> {
    fn pack(&self, p0: usize, kc: usize, j: usize, end: usize, out: &mut [f32]) {
        self.inner.pack(p0, kc, j + self.j0, end + self.j0, out);
    }
}

/// dst[m×n] (row-major, leading dim `ldd`) (+)= a[m×k] · B[k×n], where B exists only
/// through `b`, which writes its packed panels directly (an implicit GEMM, e.g. a conv
/// whose B is the im2col matrix of an image).
///
/// Panics unless [`available`] is true, m, n, k > 0, every `a(i, p)` with i < m, p < k is
/// inside its slice, and the m×n window of dst fits.
#[allow(clippy::too_many_arguments)]
pub fn sgemm_packed(
    m: usize,
    n: usize,
    k: usize,
    a: MatRef<'_, f32>,
    b: &dyn PackB,
    dst: &mut [f32],
    ldd: usize,
    accumulate: bool,
    allow_threads: bool,
) {
    assert!(available() && m > 0 && n > 0 && k > 0);
    assert!(a.offset + (m - 1) * a.rs + (k - 1) * a.cs < a.data.len());
    assert!((m == 1 || ldd >= n) && (m - 1) * ldd + n <= dst.len());
    // B is never read in place: this view only supplies the packed-panel row stride.
    let bm = MatRef {
        data: &[],
        offset: 0,
        rs: NR,
        cs: 1,
    };
    let threads = thread_count(allow_threads, m * n * k);
    let dst = DstPtr(dst.as_mut_ptr());
    if threads > 1 && m * n * k < SHARED_B_MIN_WORK {
        let (rows, cols) = slice_shape(m, n, threads);
        let row_units = m.div_ceil(rows);
        let units = row_units * n.div_ceil(cols);
        (0..units).into_par_iter().with_max_len(1).for_each(|u| {
            let (i0, j0) = ((u % row_units) * rows, (u / row_units) * cols);
            let (mu, nu) = (rows.min(m - i0), cols.min(n - j0));
            let a = MatRef {
                offset: a.offset + i0 * a.rs,
                ..a
            };
            let shifted = Shifted { inner: b, j0 };
            // SAFETY: the slice's rows i0..i0+mu, columns j0..j0+nu lie inside the
            // checked m×n window of dst and no other unit writes them.
            let d = unsafe { dst.add(i0 * ldd + j0) };
            // SAFETY: as above; the sub-view of a stays inside the checked range.
            unsafe { blocked(mu, nu, k, a, bm, Some(&shifted), d, ldd, accumulate, 1) };
        });
        return;
    }
    // SAFETY: dst's m×n window with leading dimension ldd was checked above.
    unsafe { blocked(m, n, k, a, bm, Some(b), dst, ldd, accumulate, threads) };
}

/// The blocked algorithm: jc / pc loops over packed (or in-place) B blocks, `threads`
/// sharing each packed B block. With `packer`, B's blocks come from it and `b` only
/// gives the packed row stride (NR).
///
/// # Safety
/// `available()`; m, n, k > 0; every a(i, p), and without `packer` every b(p, j), with
/// i < m, p < k, j < n is in bounds; `dst` is valid for writes (and reads) of the m×n window with leading dimension
/// `ldd`, and nothing else accesses that window meanwhile.
#[allow(clippy::too_many_arguments)]
unsafe fn blocked(
    m: usize,
    n: usize,
    k: usize,
    a: MatRef<'_, f32>,
    b: MatRef<'_, f32>,
    packer: Option<&dyn PackB>,
    dst: DstPtr,
    ldd: usize,
    accumulate: bool,
    threads: usize,
) {
    let kc_max = block_size(k, KC, 1);
    let nc_max = block_size(n, if packer.is_some() { NC_PACKER } else { NC }, NR);
    let span = k * b.rs + n;
    let pack_b = packer.is_some()
        || !(b.cs == 1
            && (span <= INPLACE_B_L1_SPAN || (m <= INPLACE_B_MAX_M && span <= INPLACE_B_L2_SPAN)));
    let pack_a = n > INPLACE_A_MAX_N;
    let b_floats = if pack_b { kc_max * nc_max } else { 0 };

    with_buf(&B_BUF, b_floats, |bbuf| {
        let mut jc = 0;
        while jc < n {
            let nc = nc_max.min(n - jc);
            let panels = nc.div_ceil(NR);
            let mut pc = 0;
            while pc < k {
                let kc = kc_max.min(k - pc);
                let bpack = if pack_b {
                    let out = &mut bbuf[..panels * NR * kc];
                    pack_b_block(&b, packer, pc, kc, jc, nc, threads, out);
                    Some(&*out)
                } else {
                    None
                };
                let blk = Block {
                    a: &a,
                    b: &b,
                    bpack,
                    pack_a,
                    dst,
                    ldd,
                    jc,
                    nc,
                    pc,
                    kc,
                    load_c: accumulate || pc > 0,
                };
                if threads == 1 {
                    blk.run(0, m, 0, panels);
                } else {
                    let (rows, cols) = work_units(threads, m, panels);
                    let row_units = m.div_ceil(rows);
                    let units = row_units * panels.div_ceil(cols);
                    (0..units).into_par_iter().with_max_len(1).for_each(|u| {
                        let (i0, q0) = ((u % row_units) * rows, (u / row_units) * cols);
                        blk.run(i0, (i0 + rows).min(m), q0, (q0 + cols).min(panels));
                    });
                }
                pc += kc;
            }
            jc += nc;
        }
    });
}

/// Direct loops for tiny products, where setting up panels would cost more than the math.
#[allow(clippy::too_many_arguments)]
fn tiny(
    m: usize,
    n: usize,
    k: usize,
    a: &MatRef<'_, f32>,
    b: &MatRef<'_, f32>,
    dst: &mut [f32],
    ldd: usize,
    accumulate: bool,
) {
    for i in 0..m {
        let row = &mut dst[i * ldd..i * ldd + n];
        if !accumulate {
            row.fill(0.0);
        }
        for p in 0..k {
            let x = a.data[a.offset + i * a.rs + p * a.cs];
            let brow = b.offset + p * b.rs;
            for (j, d) in row.iter_mut().enumerate() {
                *d += x * b.data[brow + j * b.cs];
            }
        }
    }
}

/// Packs the kc×nc block of B at (pc, jc) into `out` (from `packer` when given), split
/// over `threads`.
#[allow(clippy::too_many_arguments)]
fn pack_b_block(
    b: &MatRef<'_, f32>,
    packer: Option<&dyn PackB>,
    pc: usize,
    kc: usize,
    jc: usize,
    nc: usize,
    threads: usize,
    out: &mut [f32],
) {
    let panels = nc.div_ceil(NR);
    if threads > 1 && panels > 1 {
        let per = panels.div_ceil(threads * UNITS_PER_THREAD);
        out.par_chunks_mut(per * NR * kc)
            .enumerate()
            .for_each(|(t, out)| match packer {
                Some(p) => p.pack(pc, kc, jc + t * per * NR, jc + nc, out),
                // SAFETY: AVX2 was asserted in `sgemm` and every b(p, j), p < k, j < n, was
                // bounds-checked there.
                None => unsafe { pack::pack_b(b, pc, kc, jc, nc, t * per, out) },
            });
    } else {
        match packer {
            Some(p) => p.pack(pc, kc, jc, jc + nc, out),
            // SAFETY: as above.
            None => unsafe { pack::pack_b(b, pc, kc, jc, nc, 0, out) },
        }
    }
}

/// Work units per thread: enough that rayon's work stealing evens out threads that run
/// at different speeds (a shared machine), few enough to keep each unit efficient.
const UNITS_PER_THREAD: usize = 4;

/// How threads share one (jc, pc) block: units of `rows` rows × `cols` B panels. Split M
/// (each unit packs its own rows of A once) unless M is too short, then split the panels.
fn work_units(threads: usize, m: usize, panels: usize) -> (usize, usize) {
    let want = threads * UNITS_PER_THREAD;
    if m.div_ceil(MR) >= 2 * threads {
        let rows = m.div_ceil(want).clamp(4 * MR, MC);
        (block_size(m, rows, MR), panels)
    } else {
        (m, panels.div_ceil(want).max(1))
    }
}

/// Threads for a problem of `work` multiply-adds (1 below the parallel threshold).
fn thread_count(allow_threads: bool, work: usize) -> usize {
    if allow_threads && work >= PARALLEL_MIN_WORK {
        rayon::current_num_threads().max(1)
    } else {
        1
    }
}

/// The (rows, cols) of the independent slices a small threaded problem splits
/// into: one per thread along the longer of m and n, tile-aligned.
fn slice_shape(m: usize, n: usize, threads: usize) -> (usize, usize) {
    if n >= m {
        (m, block_size(n, n.div_ceil(threads), NR))
    } else {
        (block_size(m, m.div_ceil(threads), MR), n)
    }
}
