//! One (jc, pc) block of the blocked GEMM: the ic / jr / ir loops over A panels (packed
//! or in place) and B panels, and the dispatch to the right microkernel instantiation.

use super::kernel::{kernel, Tile, MR, NR};
use super::{block_size, pack, with_buf, DstPtr, Line, MatRef, A_BUF, EDGE_BUF, MC};

/// One (jc, pc) step: a KC×NC block of B (packed, or read in place) and the
/// destination window it feeds.
pub(super) struct Block<'x, 'a> {
    pub(super) a: &'x MatRef<'a, f32>,
    pub(super) b: &'x MatRef<'a, f32>,
    pub(super) bpack: Option<&'x [f32]>,
    pub(super) pack_a: bool,
    pub(super) dst: DstPtr,
    pub(super) ldd: usize,
    pub(super) jc: usize,
    pub(super) nc: usize,
    pub(super) pc: usize,
    pub(super) kc: usize,
    pub(super) load_c: bool,
}

/// Where a microkernel reads its A rows: a packed MR×kc panel or A in place.
#[derive(Clone, Copy)]
enum APanel<'x> {
    Packed(&'x [f32]),
    InPlace,
}

impl Block<'_, '_> {
    /// Rows `i0..i1` × B panels `q0..q1` of this block, packing A (if at all) on this
    /// thread.
    pub(super) fn run(&self, i0: usize, i1: usize, q0: usize, q1: usize) {
        let kc = self.kc;
        if !self.pack_a {
            self.run_rows(i0, i1, q0, q1, APanel::InPlace);
            return;
        }
        let mc_max = block_size(i1 - i0, MC, MR);
        with_buf(&A_BUF, mc_max * kc + pack::A_SLACK, |abuf| {
            let mut ic = i0;
            while ic < i1 {
                let mc = mc_max.min(i1 - ic);
                // SAFETY: AVX2 was asserted in `sgemm` and rows ic..ic+mc ≤ m, columns
                // pc..pc+kc ≤ k of A were bounds-checked there; abuf has the slack.
                unsafe { pack::pack_a(self.a, ic, mc, self.pc, kc, abuf) };
                self.run_rows(ic, ic + mc, q0, q1, APanel::Packed(abuf));
                ic += mc;
            }
        });
    }

    /// The jr / ir loops over rows `i0..i1` (A packed from row `i0` in `ap`, or in place).
    /// Packed A: B panels outer (each stays in L1 while the A block streams from L2). A in
    /// place (N is narrow): rows outer, so each A row panel is read from memory once.
    fn run_rows(&self, i0: usize, i1: usize, q0: usize, q1: usize, ap: APanel<'_>) {
        let kc = self.kc;
        // B read in place still packs a last panel that is not 8 or 16 columns wide.
        let last_nr = self.nc - (q1 - 1) * NR;
        let edge = self.bpack.is_none() && last_nr < NR && last_nr != 8;
        with_buf(&EDGE_BUF, if edge { NR * kc } else { 0 }, |ebuf| {
            if edge {
                // SAFETY: AVX2 was asserted in `sgemm`; b(p, j) for p < k, j < n was
                // bounds-checked there; `ebuf` holds NR·kc floats, 64-byte aligned.
                unsafe { pack::pack_b(self.b, self.pc, kc, self.jc, self.nc, q1 - 1, ebuf) };
            }
            let ebuf = &*ebuf;
            let b_panel = |q: usize, nr: usize| -> (*const f32, bool) {
                match self.bpack {
                    Some(bpack) => (bpack[q * NR * kc..(q + 1) * NR * kc].as_ptr(), true),
                    None if nr == NR || nr == 8 => {
                        let b = self.b;
                        let j = self.jc + q * NR;
                        (b.data[b.offset + self.pc * b.rs + j..].as_ptr(), false)
                    }
                    None => (ebuf.as_ptr(), true),
                }
            };
            let a_panel = |i: usize| -> *const f32 {
                match ap {
                    APanel::Packed(buf) => buf[(i - i0) * kc..].as_ptr(),
                    APanel::InPlace => {
                        let a = self.a;
                        a.data[a.offset + i * a.rs + self.pc * a.cs..].as_ptr()
                    }
                }
            };
            let packed_a = matches!(ap, APanel::Packed(_));
            let nr_of = |q: usize| NR.min(self.nc - q * NR);
            if packed_a {
                for q in q0..q1 {
                    let (nr, bp) = (nr_of(q), b_panel(q, nr_of(q)));
                    for i in (i0..i1).step_by(MR) {
                        let mr = MR.min(i1 - i);
                        self.tile(a_panel(i), true, bp, i, self.jc + q * NR, mr, nr);
                    }
                }
            } else {
                for i in (i0..i1).step_by(MR) {
                    let (mr, ap) = (MR.min(i1 - i), a_panel(i));
                    for q in q0..q1 {
                        let nr = nr_of(q);
                        self.tile(ap, false, b_panel(q, nr), i, self.jc + q * NR, mr, nr);
                    }
                }
            }
        });
    }

    /// C[i.., j..] (+)= one A panel · one B panel, `mr`×`nr` valid.
    #[allow(clippy::too_many_arguments)]
    #[inline]
    fn tile(
        &self,
        a: *const f32,
        packed_a: bool,
        (b, packed_b): (*const f32, bool),
        i: usize,
        j: usize,
        mr: usize,
        nr: usize,
    ) {
        let mut t = Tile {
            kc: self.kc,
            a,
            a_rs: self.a.rs,
            a_cs: self.a.cs,
            b,
            b_rs: self.b.rs,
            // SAFETY: row i < m, column j < n lie inside dst's checked window.
            c: unsafe { self.dst.0.add(i * self.ldd + j) },
            ldc: self.ldd,
            rows: mr,
            load_c: self.load_c,
        };
        if nr == NR || nr == 8 {
            // SAFETY: see `call`; C is dst's rows i..i+mr, columns j..j+nr, inside the
            // checked window and written by this thread alone.
            unsafe { call(&t, nr, packed_a, packed_b) };
            return;
        }
        let mut tmp = [Line([0.0; 16]); MR];
        t.c = tmp.as_mut_ptr().cast();
        t.ldc = NR;
        t.load_c = false;
        // SAFETY: see `call`; C is the local 6×16 `tmp`.
        unsafe { call(&t, nr, packed_a, packed_b) };
        for (r, row) in tmp.iter().enumerate().take(mr) {
            // SAFETY: row i+r < m and columns j..j+nr ≤ n are inside dst's checked
            // window, written by this thread alone.
            let out = unsafe {
                std::slice::from_raw_parts_mut(self.dst.0.add((i + r) * self.ldd + j), nr)
            };
            if self.load_c {
                for (o, v) in out.iter_mut().zip(&row.0[..nr]) {
                    *o += v;
                }
            } else {
                out.copy_from_slice(&row.0[..nr]);
            }
        }
    }
}

/// Runs the microkernel instantiation for `t.rows` rows, `nr` columns (≤ 8 or ≤ 16) and
/// the packing of A and B.
///
/// # Safety
/// `available()` holds and `t` meets [`kernel`]'s contract for that instantiation: A
/// packed is an MR·kc panel, A in place has rows < `t.rows`, columns < kc in bounds; B
/// packed is an NR·kc panel, 32-byte aligned; B in place has `cs == 1` and 8 or 16 columns
/// of kc rows in bounds; C is writable for `t.rows` rows of 8 or 16 columns.
#[inline]
unsafe fn call(t: &Tile, nr: usize, packed_a: bool, packed_b: bool) {
    macro_rules! by_packing {
        ($rows:literal, $vecs:literal) => {
            match (packed_a, packed_b) {
                (true, true) => kernel::<$rows, $vecs, true, true>(t),
                (true, false) => kernel::<$rows, $vecs, true, false>(t),
                (false, true) => kernel::<$rows, $vecs, false, true>(t),
                (false, false) => kernel::<$rows, $vecs, false, false>(t),
            }
        };
    }
    macro_rules! by_width {
        ($rows:literal) => {
            if nr > 8 {
                by_packing!($rows, 2)
            } else {
                by_packing!($rows, 1)
            }
        };
    }
    // SAFETY: forwarded from the caller.
    unsafe {
        match t.rows {
            6 => by_width!(6),
            5 => by_width!(5),
            4 => by_width!(4),
            3 => by_width!(3),
            2 => by_width!(2),
            1 => by_width!(1),
            r => unreachable!("microkernel rows {r}"),
        }
    }
}
