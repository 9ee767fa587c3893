//! CPU conv2d kernels: an implicit GEMM packing B straight from the image (f32 forward,
//! groups 1, AVX2), im2col over output-row tiles feeding the GEMM (other forwards, grad
//! weight), grad input as a transposed conv (stride 1) or col2im, grad bias; groups and
//! dilation throughout; and 2-D zero padding.

use super::gemm::{matmul, matmul_packed_b, packed_b_available, Im2col, MatRef, PackB};
use super::winograd;
use crate::tensor::{DType, Real};
use rayon::prelude::*;
use std::cell::RefCell;

/// Shapes of one conv2d: input [n, c, h, w], weight [o, c/groups, kh, kw],
/// output [n, o, oh, ow]. Built (and validated) by `Tensor::conv2d`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2dGeom {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub o: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride: (usize, usize),
    pub padding: (usize, usize),
    pub dilation: (usize, usize),
    pub groups: usize,
    pub oh: usize,
    pub ow: usize,
}

/// Elements of one im2col tile buffer we aim for (1 MiB of f32: stays in L2/L3
/// while the GEMM packs it). Chosen by measurement, see benches/cpu_gemm_conv.rs.
const TILE_ELEMS: usize = 1 << 18;

impl Conv2dGeom {
    /// Input channels per group.
    pub fn cg(&self) -> usize {
        self.c / self.groups
    }
    /// Output channels per group.
    pub fn og(&self) -> usize {
        self.o / self.groups
    }
    /// GEMM depth per group: (c/groups)·kh·kw.
    pub fn kg(&self) -> usize {
        self.cg() * self.kh * self.kw
    }
    /// Rows of a full im2col matrix (all groups).
    fn krows(&self) -> usize {
        self.c * self.kh * self.kw
    }
    /// Output pixels per image.
    pub fn p(&self) -> usize {
        self.oh * self.ow
    }
    fn in_len(&self) -> usize {
        self.c * self.h * self.w
    }
    fn out_len(&self) -> usize {
        self.o * self.p()
    }
    pub fn weight_len(&self) -> usize {
        self.o * self.kg()
    }
    /// 1×1, stride 1, no padding: the input image is already the GEMM operand.
    pub fn pointwise(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.stride == (1, 1) && self.padding == (0, 0)
    }
    /// Output rows per im2col tile.
    fn tile_rows(&self) -> usize {
        (TILE_ELEMS / (self.krows() * self.ow).max(1)).clamp(1, self.oh.max(1))
    }
    /// Images on separate threads with single-threaded GEMMs (true) or one image at a
    /// time with multi-threaded GEMMs (false). Batch parallelism wins when every
    /// thread gets an equal share of images (measured: benches/cpu_gemm_conv.rs).
    fn batch_parallel(&self) -> bool {
        let t = rayon::current_num_threads();
        t > 1 && self.n >= t && (self.n.is_multiple_of(t) || self.n >= 4 * t)
    }
    /// Valid output columns [lo, hi) for kernel column offset `off` = kj·dw.
    fn valid_cols(&self, off: usize) -> (usize, usize) {
        let (sw, pw) = (self.stride.1, self.padding.1);
        let lo = if pw > off { (pw - off).div_ceil(sw) } else { 0 }.min(self.ow);
        let hi = if self.w + pw > off {
            ((self.w + pw - off - 1) / sw + 1).min(self.ow)
        } else {
            0
        };
        (lo, hi.max(lo))
    }
    /// Input row read by output row `oy` at kernel row `ki` (None: padding).
    fn input_row(&self, oy: usize, ki: usize) -> Option<usize> {
        let iy = oy * self.stride.0 + ki * self.dilation.0;
        iy.checked_sub(self.padding.0).filter(|&r| r < self.h)
    }
}

/// col[(c·kh + ki)·kw + kj, t] = x[c, iy, ix] for output pixels of rows [oy0, oy1)
/// (zero where the window reads padding). `x` is one image.
fn im2col<T: Real>(g: &Conv2dGeom, x: &[T], oy0: usize, oy1: usize, col: &mut [T], threads: bool) {
    let pt = (oy1 - oy0) * g.ow;
    let fill_row = |r: usize, row: &mut [T]| {
        let (c, ki, kj) = (r / (g.kh * g.kw), (r / g.kw) % g.kh, r % g.kw);
        let plane = &x[c * g.h * g.w..(c + 1) * g.h * g.w];
        let off = kj * g.dilation.1;
        let (lo, hi) = g.valid_cols(off);
        if g.stride == (1, 1) && g.ow == g.w && lo < hi {
            return shifted_copy(g, plane, row, oy0, oy1, ki, off, (lo, hi));
        }
        for (t, oy) in (oy0..oy1).enumerate() {
            let dst = &mut row[t * g.ow..(t + 1) * g.ow];
            let Some(iy) = g.input_row(oy, ki) else {
                dst.fill(T::zero());
                continue;
            };
            let src = &plane[iy * g.w..(iy + 1) * g.w];
            dst[..lo].fill(T::zero());
            dst[hi..].fill(T::zero());
            if g.stride.1 == 1 {
                dst[lo..hi].copy_from_slice(&src[lo + off - g.padding.1..hi + off - g.padding.1]);
            } else {
                for (ox, d) in dst.iter_mut().enumerate().take(hi).skip(lo) {
                    *d = src[ox * g.stride.1 + off - g.padding.1];
                }
            }
        }
    };
    if threads {
        col.par_chunks_mut(pt)
            .enumerate()
            .for_each(|(r, row)| fill_row(r, row));
    } else {
        col.chunks_mut(pt)
            .enumerate()
            .for_each(|(r, row)| fill_row(r, row));
    }
}

/// One im2col row for stride 1 and `ow == w` ("same" convs): the tile's valid rows
/// read one contiguous run of the input plane, so copy it at once and then zero
/// the few columns that wrapped around from neighbouring rows (and padding rows).
#[allow(clippy::too_many_arguments)]
fn shifted_copy<T: Real>(
    g: &Conv2dGeom,
    plane: &[T],
    row: &mut [T],
    oy0: usize,
    oy1: usize,
    ki: usize,
    off: usize,
    (lo, hi): (usize, usize),
) {
    let ow = g.ow;
    let valid = |oy: usize| g.input_row(oy, ki).is_some();
    let (Some(ta), Some(tb)) = ((oy0..oy1).position(valid), (oy0..oy1).rposition(valid)) else {
        row.fill(T::zero());
        return;
    };
    let tb = tb + 1;
    row[..ta * ow].fill(T::zero());
    row[tb * ow..].fill(T::zero());
    let iy = g.input_row(oy0 + ta, ki).expect("valid row");
    let src = iy * g.w + lo + off - g.padding.1;
    let len = (tb - ta - 1) * ow + (hi - lo);
    row[ta * ow + lo..ta * ow + lo + len].copy_from_slice(&plane[src..src + len]);
    // Column-major zeroing of the edges (a few elements per row; no memset calls).
    for ox in (0..lo).chain(hi..ow) {
        for t in ta..tb {
            row[t * ow + ox] = T::zero();
        }
    }
}

/// The adjoint of `im2col`: dx[c, iy, ix] += col[...] (one image, rows [oy0, oy1)).
fn col2im<T: Real>(g: &Conv2dGeom, col: &[T], oy0: usize, oy1: usize, dx: &mut [T], threads: bool) {
    let pt = (oy1 - oy0) * g.ow;
    let per_channel = g.kh * g.kw * pt;
    let add_channel = |plane: &mut [T], rows: &[T]| {
        for (rk, row) in rows.chunks(pt).enumerate() {
            let (ki, kj) = (rk / g.kw, rk % g.kw);
            let off = kj * g.dilation.1;
            let (lo, hi) = g.valid_cols(off);
            for (t, oy) in (oy0..oy1).enumerate() {
                let Some(iy) = g.input_row(oy, ki) else {
                    continue;
                };
                let src = &row[t * g.ow..(t + 1) * g.ow];
                let dst = &mut plane[iy * g.w..(iy + 1) * g.w];
                for (ox, &v) in src.iter().enumerate().take(hi).skip(lo) {
                    dst[ox * g.stride.1 + off - g.padding.1] += v;
                }
            }
        }
    };
    let hw = g.h * g.w;
    if threads {
        dx.par_chunks_mut(hw)
            .zip(col.par_chunks(per_channel))
            .for_each(|(p, c)| add_channel(p, c));
    } else {
        dx.chunks_mut(hw)
            .zip(col.chunks(per_channel))
            .for_each(|(p, c)| add_channel(p, c));
    }
}

/// Wᵀ of group `gi`: a [kg, og] view of the weight.
fn w_t<'a, T: Real>(g: &Conv2dGeom, w: &'a [T], gi: usize) -> MatRef<'a, T> {
    MatRef {
        data: w,
        offset: gi * g.og() * g.kg(),
        rs: 1,
        cs: g.kg(),
    }
}

thread_local! {
    /// Per-thread scratch (im2col tile, GEMM tile) kept across calls: fresh megabyte
    /// buffers per call cost page faults and zeroing (measured on batch-1 convs).
    static SCRATCH: RefCell<[Vec<f64>; 2]> = const { RefCell::new([Vec::new(), Vec::new()]) };
}

/// Run `f` on two scratch slices of `T` of lengths `a` and `b` (contents unspecified).
/// Uses this thread's buffers, or fresh ones when they are in use (re-entrant calls).
fn with_scratch<T: Real, R>(a: usize, b: usize, f: impl FnOnce(&mut [T], &mut [T]) -> R) -> R {
    let words = |n: usize| (n * std::mem::size_of::<T>()).div_ceil(8);
    let run = |bufs: &mut [Vec<f64>; 2]| {
        let [ba, bb] = bufs;
        for (buf, n) in [(&mut *ba, a), (&mut *bb, b)] {
            if buf.len() < words(n) {
                buf.resize(words(n), 0.0);
            }
        }
        let sa: &mut [T] = bytemuck::cast_slice_mut(&mut ba[..words(a)]);
        let sb: &mut [T] = bytemuck::cast_slice_mut(&mut bb[..words(b)]);
        f(&mut sa[..a], &mut sb[..b])
    };
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut bufs) => run(&mut bufs),
        Err(_) => run(&mut [Vec::new(), Vec::new()]),
    })
}

/// Output tiles of one image: (first output row, end row, first pixel, pixels).
fn tiles(g: &Conv2dGeom) -> impl Iterator<Item = (usize, usize, usize, usize)> + '_ {
    let rows = g.tile_rows();
    (0..g.oh).step_by(rows).map(move |oy0| {
        let oy1 = (oy0 + rows).min(g.oh);
        (oy0, oy1, oy0 * g.ow, (oy1 - oy0) * g.ow)
    })
}

/// Forward of 1×1 stride-1 convs: out (one image, [o, p]) = W · x, no copies.
fn forward_pointwise<T: Real>(
    g: &Conv2dGeom,
    x: &[T],
    w: &[T],
    bias: Option<&[T]>,
    out: &mut [T],
    threads: bool,
) {
    let (p, og, cg) = (g.p(), g.og(), g.cg());
    if let Some(b) = bias {
        for (row, &bv) in out.chunks_mut(p).zip(b) {
            row.fill(bv);
        }
    }
    for gi in 0..g.groups {
        let wg = MatRef {
            data: w,
            offset: gi * og * cg,
            rs: cg,
            cs: 1,
        };
        let xg = MatRef {
            data: x,
            offset: gi * cg * p,
            rs: p,
            cs: 1,
        };
        matmul(
            og,
            p,
            cg,
            wg,
            xg,
            &mut out[gi * og * p..],
            p,
            bias.is_some(),
            threads,
        );
    }
}

/// Output rows [oy0, oy1) of one image into `out` ([o, pixels]) through the im2col
/// tile `col` and one GEMM per group.
#[allow(clippy::too_many_arguments)]
fn forward_tile<T: Real>(
    g: &Conv2dGeom,
    x: &[T],
    w: &[T],
    bias: Option<&[T]>,
    (oy0, oy1): (usize, usize),
    col: &mut [T],
    out: &mut [T],
    threads: bool,
) {
    let (og, kg) = (g.og(), g.kg());
    let n = (oy1 - oy0) * g.ow;
    im2col(g, x, oy0, oy1, col, threads);
    if let Some(b) = bias {
        for (row, &bv) in out.chunks_mut(n).zip(b) {
            row.fill(bv);
        }
    }
    for gi in 0..g.groups {
        let wg = MatRef {
            data: w,
            offset: gi * og * kg,
            rs: kg,
            cs: 1,
        };
        let cm = MatRef {
            data: &*col,
            offset: gi * kg * n,
            rs: n,
            cs: 1,
        };
        matmul(
            og,
            n,
            kg,
            wg,
            cm,
            &mut out[gi * og * n..],
            n,
            bias.is_some(),
            threads,
        );
    }
}

/// The (uninitialised) output buffer, written by parallel tile workers at disjoint places.
struct SharedOut<T>(*mut T, usize);
// SAFETY: workers only write through `write`, at ranges no other worker touches.
unsafe impl<T: Send> Sync for SharedOut<T> {}

impl<T: Copy> SharedOut<T> {
    /// Copy `src` to elements [start, start + src.len()).
    /// SAFETY: no one else may access that range meanwhile.
    unsafe fn write(&self, start: usize, src: &[T]) {
        assert!(start + src.len() <= self.1);
        std::ptr::copy_nonoverlapping(src.as_ptr(), self.0.add(start), src.len());
    }
}

/// Output pixels per implicit-GEMM unit we aim for: the packed B block (kc × this) and
/// the unit's [o, pixels] result stay in L2.
const IMPLICIT_PIXELS: usize = 256;

/// Columns `j0..` of an [`Im2col`] operand.
struct ColumnsFrom<'a>(&'a Im2col<'a>, usize);

impl PackB for ColumnsFrom<'_> {
    fn pack(&self, p0: usize, kc: usize, j: usize, end: usize, out: &mut [f32]) {
        self.0.pack(p0, kc, j + self.1, end + self.1, out);
    }
}

/// conv2d forward for f32 (`T` must be f32), groups == 1, as implicit GEMMs: each unit
/// (image, run of output rows) computes W · im2col(x) with B packed straight from the
/// image into a scratch tile, then copies it out. Units run on separate threads with
/// single-threaded GEMMs when there are enough of them.
fn forward_implicit<T: Real>(g: &Conv2dGeom, x: &[T], w: &[T], bias: Option<&[T]>) -> Vec<T> {
    let (il, ol, p, kg) = (g.in_len(), g.out_len(), g.p(), g.kg());
    let x: &[f32] = bytemuck::cast_slice(x);
    let bias: Option<&[f32]> = bias.map(bytemuck::cast_slice);
    let wm = MatRef {
        data: bytemuck::cast_slice::<T, f32>(w),
        offset: 0,
        rs: kg,
        cs: 1,
    };
    let rows = (IMPLICIT_PIXELS / g.ow).clamp(1, g.oh);
    let units: Vec<(usize, usize, usize)> = (0..g.n)
        .flat_map(|i| {
            (0..g.oh)
                .step_by(rows)
                .map(move |oy0| (i, oy0, (oy0 + rows).min(g.oh)))
        })
        .collect();
    // Every element is written exactly once by the units below, so skip zeroing.
    let mut out: Vec<T> = Vec::with_capacity(g.n * ol);
    let shared = SharedOut(out.as_mut_ptr().cast::<f32>(), g.n * ol);
    let run = |&(i, oy0, oy1): &(usize, usize, usize), threaded: bool| {
        let n = (oy1 - oy0) * g.ow;
        // Tile rows a multiple of 4 KiB apart would alias in L1: pad them.
        let ld = n + 16;
        with_scratch::<f32, _>(0, (g.o - 1) * ld + n, |_, tile| {
            if let Some(b) = bias {
                for (row, &bv) in tile.chunks_mut(ld).zip(b) {
                    row[..n].fill(bv);
                }
            }
            let img = Im2col::new(
                &x[i * il..(i + 1) * il],
                [g.c, g.h, g.w],
                (g.kh, g.kw),
                g.stride,
                g.padding,
                g.dilation,
                g.ow,
            )
            .expect("implicit GEMM available");
            let b = ColumnsFrom(&img, oy0 * g.ow);
            matmul_packed_b(g.o, n, kg, wm, &b, tile, ld, bias.is_some(), threaded);
            for (o, res) in tile.chunks(ld).enumerate() {
                // SAFETY: unit (i, oy0..oy1) alone writes rows oy0..oy1 of image i.
                unsafe { shared.write(i * ol + o * p + oy0 * g.ow, &res[..n]) };
            }
        });
    };
    let threads = rayon::current_num_threads();
    if threads > 1
        && units.len() >= threads
        && (units.len().is_multiple_of(threads) || units.len() >= 2 * threads)
    {
        units.par_iter().for_each(|u| run(u, false));
    } else {
        units.iter().for_each(|u| run(u, true));
    }
    // SAFETY: the units cover every (image, channel, output row) exactly once, so all
    // n·o·oh·ow elements are initialised.
    unsafe { out.set_len(g.n * ol) };
    out
}

/// The values of an f32 compute slice (`T` is f32 where this is called).
fn as_f32<T: Real>(v: &[T]) -> &[f32] {
    bytemuck::cast_slice(v)
}

/// conv2d forward over the batch: x [n, c, h, w], w [o, c/groups, kh, kw] → [n, o, oh, ow].
/// Work is split into (image, output-row tile) units; with enough units they run on
/// separate threads with single-threaded GEMMs, else one at a time with threaded GEMMs.
pub fn conv2d_forward<T: Real>(g: &Conv2dGeom, x: &[T], w: &[T], bias: Option<&[T]>) -> Vec<T> {
    let (il, ol, p) = (g.in_len(), g.out_len(), g.p());
    if ol == 0 {
        return Vec::new();
    }
    let threads = rayon::current_num_threads();
    if g.pointwise() {
        let mut out = vec![T::zero(); g.n * ol];
        if g.batch_parallel() {
            out.par_chunks_mut(ol).enumerate().for_each(|(i, o)| {
                forward_pointwise(g, &x[i * il..(i + 1) * il], w, bias, o, false)
            });
        } else {
            for (i, o) in out.chunks_mut(ol).enumerate() {
                forward_pointwise(g, &x[i * il..(i + 1) * il], w, bias, o, true);
            }
        }
        return out;
    }
    if T::DTYPE == DType::F32 && winograd::applicable(g) {
        let u = winograd::transform_weights(g, as_f32(w));
        let y = winograd::forward(g, as_f32(x), &u, bias.map(as_f32));
        return y.into_iter().map(T::from_f32).collect();
    }
    if g.groups == 1 && T::DTYPE == DType::F32 && packed_b_available() {
        return forward_implicit(g, x, w, bias);
    }
    let rows = g.tile_rows();
    let units: Vec<(usize, usize, usize)> = (0..g.n)
        .flat_map(|i| {
            (0..g.oh)
                .step_by(rows)
                .map(move |oy0| (i, oy0, (oy0 + rows).min(g.oh)))
        })
        .collect();
    // Every element is written exactly once by the units below, so skip zeroing.
    let mut out: Vec<T> = Vec::with_capacity(g.n * ol);
    let shared = SharedOut(out.as_mut_ptr(), g.n * ol);
    let run = |&(i, oy0, oy1): &(usize, usize, usize), threaded: bool| {
        let n = (oy1 - oy0) * g.ow;
        with_scratch(g.krows() * n, g.o * n, |col, tile| {
            forward_tile(
                g,
                &x[i * il..(i + 1) * il],
                w,
                bias,
                (oy0, oy1),
                col,
                tile,
                threaded,
            );
            for (o, res) in tile.chunks(n).enumerate() {
                // SAFETY: unit (i, oy0..oy1) alone writes rows oy0..oy1 of image i.
                unsafe { shared.write(i * ol + o * p + oy0 * g.ow, res) };
            }
        });
    };
    if threads > 1
        && units.len() >= threads
        && (units.len().is_multiple_of(threads) || units.len() >= 2 * threads)
    {
        units.par_iter().for_each(|u| run(u, false));
    } else {
        units.iter().for_each(|u| run(u, true));
    }
    // SAFETY: the units cover every (image, channel, output row) exactly once, so all
    // n·o·oh·ow elements are initialised.
    unsafe { out.set_len(g.n * ol) };
    out
}

/// One image's share of the backward: dw += dY·im2col(x)ᵀ when `x` is given,
/// dx = col2im(Wᵀ·dY) when `w` and `dx` are given.
#[allow(clippy::too_many_arguments)]
fn backward_image<T: Real>(
    g: &Conv2dGeom,
    x: Option<&[T]>,
    w: Option<&[T]>,
    dy: &[T],
    dx: Option<&mut [T]>,
    dw: Option<&mut [T]>,
    threads: bool,
) {
    let (p, og, kg, cg) = (g.p(), g.og(), g.kg(), g.cg());
    let dyg = |gi: usize, p0: usize| MatRef {
        data: dy,
        offset: gi * og * p + p0,
        rs: p,
        cs: 1,
    };
    let (mut dx, mut dw) = (dx, dw);
    if g.pointwise() {
        if let (Some(x), Some(dw)) = (x, dw.as_deref_mut()) {
            for gi in 0..g.groups {
                let xt = MatRef {
                    data: x,
                    offset: gi * cg * p,
                    rs: 1,
                    cs: p,
                };
                matmul(
                    og,
                    kg,
                    p,
                    dyg(gi, 0),
                    xt,
                    &mut dw[gi * og * kg..],
                    kg,
                    true,
                    threads,
                );
            }
        }
        if let (Some(w), Some(dx)) = (w, dx.as_deref_mut()) {
            for gi in 0..g.groups {
                matmul(
                    kg,
                    p,
                    og,
                    w_t(g, w, gi),
                    dyg(gi, 0),
                    &mut dx[gi * cg * p..],
                    p,
                    false,
                    threads,
                );
            }
        }
        return;
    }
    let len = |on: bool, pt: usize| if on { g.krows() * pt } else { 0 };
    for (oy0, oy1, p0, pt) in tiles(g) {
        with_scratch(len(x.is_some(), pt), len(w.is_some(), pt), |col, dcol| {
            if let (Some(x), Some(dw)) = (x, dw.as_deref_mut()) {
                im2col(g, x, oy0, oy1, col, threads);
                for gi in 0..g.groups {
                    let ct = MatRef {
                        data: &*col,
                        offset: gi * kg * pt,
                        rs: 1,
                        cs: pt,
                    };
                    matmul(
                        og,
                        kg,
                        pt,
                        dyg(gi, p0),
                        ct,
                        &mut dw[gi * og * kg..],
                        kg,
                        true,
                        threads,
                    );
                }
            }
            if let (Some(w), Some(dx)) = (w, dx.as_deref_mut()) {
                for gi in 0..g.groups {
                    matmul(
                        kg,
                        pt,
                        og,
                        w_t(g, w, gi),
                        dyg(gi, p0),
                        &mut dcol[gi * kg * pt..],
                        pt,
                        false,
                        threads,
                    );
                }
                col2im(g, dcol, oy0, oy1, dx, threads);
            }
        });
    }
}

/// For stride 1 (and padding ≤ the dilated kernel extent − 1) the input gradient is
/// itself a conv2d: dY convolved with the spatially flipped, channel-swapped weight at
/// padding dil·(k − 1) − pad. This geometry, or None when that does not apply.
fn transposed_geom(g: &Conv2dGeom) -> Option<Conv2dGeom> {
    let (eh, ew) = (g.dilation.0 * (g.kh - 1), g.dilation.1 * (g.kw - 1));
    if g.stride != (1, 1) || g.padding.0 > eh || g.padding.1 > ew {
        return None;
    }
    Some(Conv2dGeom {
        c: g.o,
        h: g.oh,
        w: g.ow,
        o: g.c,
        padding: (eh - g.padding.0, ew - g.padding.1),
        oh: g.h,
        ow: g.w,
        ..*g
    })
}

/// W'[gi·cg + c, o, i, j] = W[gi·og + o, c, kh−1−i, kw−1−j]: the weight of the transposed conv.
fn flip_weight<T: Real>(g: &Conv2dGeom, w: &[T]) -> Vec<T> {
    let (cg, og, kk) = (g.cg(), g.og(), g.kh * g.kw);
    let mut out = vec![T::zero(); w.len()];
    for gi in 0..g.groups {
        for o in 0..og {
            for c in 0..cg {
                let src = &w[((gi * og + o) * cg + c) * kk..][..kk];
                let dst = &mut out[((gi * cg + c) * og + o) * kk..][..kk];
                dst.iter_mut()
                    .zip(src.iter().rev())
                    .for_each(|(d, &s)| *d = s);
            }
        }
    }
    out
}

/// conv2d gradients: grad input when `w` is given (needs the weight), grad weight
/// when `x` is given (needs the input). Nothing is computed for the other.
pub fn conv2d_backward<T: Real>(
    g: &Conv2dGeom,
    x: Option<&[T]>,
    w: Option<&[T]>,
    dy: &[T],
) -> (Option<Vec<T>>, Option<Vec<T>>) {
    if let (Some(w), Some(gt)) = (w, transposed_geom(g)) {
        let dx = conv2d_forward(&gt, dy, &flip_weight(g, w), None);
        let dw = x.and_then(|x| backward_pass(g, Some(x), None, dy).1);
        return (Some(dx), dw);
    }
    backward_pass(g, x, w, dy)
}

/// Grad weight (dY·im2col(x)ᵀ summed over images) and grad input (col2im(Wᵀ·dY)),
/// each only when its operand is given.
fn backward_pass<T: Real>(
    g: &Conv2dGeom,
    x: Option<&[T]>,
    w: Option<&[T]>,
    dy: &[T],
) -> (Option<Vec<T>>, Option<Vec<T>>) {
    let (il, ol, wl) = (g.in_len(), g.out_len(), g.weight_len());
    let mut dx_all = w.map(|_| vec![T::zero(); g.n * il]);
    let image = |i: usize| x.map(|x| &x[i * il..(i + 1) * il]);
    if g.batch_parallel() {
        let items: Vec<(usize, Option<&mut [T]>)> = match dx_all.as_mut() {
            Some(d) => d.chunks_mut(il).map(Some).enumerate().collect(),
            None => (0..g.n).map(|i| (i, None)).collect(),
        };
        let dw = items
            .into_par_iter()
            .fold(
                || x.map(|_| vec![T::zero(); wl]),
                |mut dw, (i, dxi)| {
                    let dyi = &dy[i * ol..(i + 1) * ol];
                    backward_image(g, image(i), w, dyi, dxi, dw.as_deref_mut(), false);
                    dw
                },
            )
            .reduce_with(|a, b| match (a, b) {
                (Some(mut a), Some(b)) => {
                    a.iter_mut().zip(&b).for_each(|(u, v)| *u += *v);
                    Some(a)
                }
                (a, _) => a,
            })
            .flatten();
        return (dx_all, dw);
    }
    let mut dw = x.map(|_| vec![T::zero(); wl]);
    let mut dx_images: Vec<Option<&mut [T]>> = match dx_all.as_mut() {
        Some(d) => d.chunks_mut(il).map(Some).collect(),
        None => (0..g.n).map(|_| None).collect(),
    };
    for (i, dxi) in dx_images.iter_mut().enumerate() {
        let dyi = &dy[i * ol..(i + 1) * ol];
        backward_image(
            g,
            image(i),
            w,
            dyi,
            dxi.as_deref_mut(),
            dw.as_deref_mut(),
            true,
        );
    }
    (dx_all, dw)
}

/// Bias gradient: the sum of dY over batch and pixels, per output channel.
pub fn conv2d_bias_grad<T: Real>(g: &Conv2dGeom, dy: &[T]) -> Vec<T> {
    let (p, ol) = (g.p(), g.out_len());
    (0..g.o)
        .into_par_iter()
        .map(|o| {
            let s: f64 = (0..g.n)
                .map(|i| {
                    dy[i * ol + o * p..i * ol + (o + 1) * p]
                        .iter()
                        .map(|v| v.as_f64())
                        .sum::<f64>()
                })
                .sum();
            T::from_f64(s)
        })
        .collect()
}

/// Zero padding of the last two dims: `planes` planes of [h, w] grow to
/// [h + top + bottom, w + left + right].
pub fn pad2d<T: Real>(
    x: &[T],
    planes: usize,
    h: usize,
    w: usize,
    (left, right, top, bottom): (usize, usize, usize, usize),
) -> Vec<T> {
    let (ph, pw) = (h + top + bottom, w + left + right);
    let mut out = vec![T::zero(); planes * ph * pw];
    if h * w == 0 {
        return out;
    }
    out.par_chunks_mut(ph * pw)
        .zip(x.par_chunks(h * w))
        .for_each(|(o, src)| {
            for y in 0..h {
                o[(y + top) * pw + left..(y + top) * pw + left + w]
                    .copy_from_slice(&src[y * w..(y + 1) * w]);
            }
        });
    out
}

/// The adjoint of `pad2d`: crop the padded planes back to [h, w].
pub fn crop2d<T: Real>(
    g: &[T],
    planes: usize,
    h: usize,
    w: usize,
    (left, right, top, bottom): (usize, usize, usize, usize),
) -> Vec<T> {
    let (ph, pw) = (h + top + bottom, w + left + right);
    let mut out = vec![T::zero(); planes * h * w];
    if h * w == 0 {
        return out;
    }
    out.par_chunks_mut(h * w)
        .zip(g.par_chunks(ph * pw))
        .for_each(|(o, src)| {
            for y in 0..h {
                o[y * w..(y + 1) * w]
                    .copy_from_slice(&src[(y + top) * pw + left..(y + top) * pw + left + w]);
            }
        });
    out
}
