//! backend::cuda::reduce (kernels/reduce.cu) vs src/backend/cpu/reduce.rs: sum/mean and max/argmax over rows
//! (inner == 1) and over the middle axis of [outer, n, inner], and the two-stage sum_all.
//!
//! Sum inputs are multiples of 1/8 in [-1.5, 2.375): every partial sum of fewer than 2^21/2.375
//! of them is exact in f32, so any summation order gives the CPU's f64 sum exactly and a lost
//! or doubled element shows (tolerance 1/32 · scale).

use crate::support::*;
use medsyn::backend::cpu::reduce as cpu;
use medsyn::backend::cuda::reduce::{self as gpu_reduce, ReduceLaunch, SumAllLaunch};
use medsyn::cuda::gpu::{round_to, suffix, Ptr};
use medsyn::cuda::{DevBuf, Gpu};
use medsyn::tensor::DType;

/// Poisoned elements after every output: a stray write shows.
const GUARD: usize = 8;
const JUNK: f32 = 12345.0;
const NO_CAP: u32 = u32::MAX;

/// (rows, n, BX, BY, grid cap, x offset in elements): one warp per row, multi-warp rows,
/// several rows per block, block-strided rows (capped grid), packed and scalar loads.
const ROW_CASES: [(usize, usize, u32, u32, u32, usize); 9] = [
    (37, 77, 32, 8, NO_CAP, 0),
    (19, 1000, 32, 8, NO_CAP, 0),
    (19, 1000, 32, 8, NO_CAP, 1),
    (5, 3000, 256, 1, NO_CAP, 0),
    (6, 4099, 512, 2, NO_CAP, 0),
    (4, 4096, 128, 8, NO_CAP, 0),
    (300, 64, 32, 4, 7, 0),
    (1, 1, 32, 1, NO_CAP, 0),
    (3, 100_003, 1024, 1, NO_CAP, 0),
];

/// (outer, n, inner, BY, grid.x cap, splits, through the partial buffer).
const SUM_COL_CASES: [(usize, usize, usize, u32, u32, u32, bool); 9] = [
    (6, 33, 17, 8, NO_CAP, 1, false),
    (3, 1000, 129, 32, NO_CAP, 4, true),
    (2, 5, 64, 1, NO_CAP, 1, false),
    (1, 4099, 3, 16, NO_CAP, 7, true),
    (2, 5, 40, 4, 3, 8, true),
    (4, 300, 33, 8, 2, 1, false),
    (3, 50, 20, 8, NO_CAP, 1, true),
    (1, 64, 1000, 8, NO_CAP, 2, true),
    (2, 1, 33, 32, NO_CAP, 1, false),
];

/// (outer, n, inner, BY, grid.x cap).
const MAX_COL_CASES: [(usize, usize, usize, u32, u32); 7] = [
    (6, 33, 17, 8, NO_CAP),
    (3, 1000, 129, 32, NO_CAP),
    (2, 5, 64, 1, NO_CAP),
    (1, 4099, 3, 16, NO_CAP),
    (4, 300, 33, 8, 2),
    (5, 1, 7, 4, NO_CAP),
    (2, 77, 1000, 8, NO_CAP),
];

/// (n, block, x offset in elements).
const ALL_CASES: [(usize, u32, usize); 7] = [
    (1, 256, 0),
    (31, 256, 0),
    (1000, 256, 1),
    (4099, 512, 0),
    (65_536, 1024, 0),
    (800_003, 256, 0),
    (800_003, 512, 1),
];

/// k/8 for integer k in [-12, 20): exact in f32, bf16 and f16, with many ties.
fn quantized(seed: u64, n: usize) -> Vec<f32> {
    uniform(seed, n, -12.0, 20.0)
        .into_iter()
        .map(|v| v.floor() / 8.0)
        .collect()
}

fn upload_at(g: &Gpu, vals: &[f32], off: usize, dt: DType) -> DevBuf {
    let mut v = vec![JUNK; off];
    v.extend_from_slice(vals);
    g.upload_as(&v, dt).unwrap()
}

fn at(b: &DevBuf, off: usize) -> Ptr {
    b.ptr().offset(off).unwrap()
}

/// A poisoned output of n elements followed by GUARD poisoned elements.
struct Out {
    buf: DevBuf,
    n: usize,
}

impl Out {
    fn new(g: &Gpu, n: usize, dt: DType) -> Out {
        Out {
            buf: g.poisoned_as(n + GUARD, dt).unwrap(),
            n,
        }
    }

    /// The n outputs (and the GUARD after them) as a launch argument.
    fn ptr(&self) -> Ptr {
        self.buf.ptr()
    }

    fn read(&self, g: &Gpu, what: &str) -> Vec<f32> {
        let all = g.download_f32(&self.buf).unwrap();
        assert!(
            all[self.n..].iter().all(|v| v.is_nan()),
            "{what}: wrote past its {} outputs",
            self.n
        );
        all[..self.n].to_vec()
    }
}

/// A poisoned (-1) index output of n entries plus GUARD.
fn idx_buf(g: &Gpu, n: usize) -> cudarc::driver::CudaSlice<i64> {
    g.poisoned::<i64>(n + GUARD).unwrap()
}

fn read_idx(g: &Gpu, buf: &cudarc::driver::CudaSlice<i64>, n: usize, what: &str) -> Vec<i64> {
    let all = g.download(buf).unwrap();
    assert!(
        all[n..].iter().all(|&v| v == -1),
        "{what}: wrote past its {n} indices"
    );
    all[..n].to_vec()
}

/// The CPU twin of sum / mean over rows of length n: cpu::sum_rows (f64 accumulation) times
/// the f32 scale (ops::reduce::sum_impl), rounded to T.
fn want_sum(rows_x: &[f32], rows: usize, n: usize, scale: f32, dt: DType) -> Vec<f32> {
    let s: Vec<f32> = cpu::sum_rows(rows_x, rows, n)
        .into_iter()
        .map(|v| v * scale)
        .collect();
    round_to(&s, dt)
}

/// Rows of length n get NaNs (row % 5 == 1: two, the first wins), all −inf (== 2) or two +inf
/// ties (== 3); the rest keep their quantized values (ties everywhere).
fn add_row_specials(x: &mut [f32], n: usize) {
    for (r, row) in x.chunks_mut(n).enumerate() {
        match r % 5 {
            1 => {
                row[n / 3] = f32::NAN;
                row[2 * n / 3] = f32::NAN;
            }
            2 => row.fill(f32::NEG_INFINITY),
            3 => {
                row[n / 2] = f32::INFINITY;
                row[n - 1] = f32::INFINITY;
            }
            _ => {}
        }
    }
}

/// [outer, n, inner] -> [outer·inner, n] (the layout the CPU reduces over rows).
fn to_rows(x: &[f32], outer: usize, n: usize, inner: usize) -> Vec<f32> {
    let mut t = vec![0.0; x.len()];
    for o in 0..outer {
        for j in 0..n {
            for i in 0..inner {
                t[(o * inner + i) * n + j] = x[(o * n + j) * inner + i];
            }
        }
    }
    t
}

/// [outer·inner, n] -> [outer, n, inner].
fn from_rows(t: &[f32], outer: usize, n: usize, inner: usize) -> Vec<f32> {
    let mut x = vec![0.0; t.len()];
    for o in 0..outer {
        for j in 0..n {
            for i in 0..inner {
                x[(o * n + j) * inner + i] = t[(o * inner + i) * n + j];
            }
        }
    }
    x
}

fn cap_of(cap: u32) -> Option<u32> {
    (cap != NO_CAP).then_some(cap)
}

/// The rows launch of block (bx, by) and grid cap.
fn row_launch(bx: u32, by: u32, cap: u32) -> ReduceLaunch {
    ReduceLaunch {
        rows_block: Some((bx, by)),
        max_blocks: cap_of(cap),
        ..Default::default()
    }
}

/// The column launch of block (32, by) and grid.x cap.
fn col_launch(by: u32, cap: u32) -> ReduceLaunch {
    ReduceLaunch {
        cols_by: Some(by),
        max_blocks: cap_of(cap),
        ..Default::default()
    }
}

#[test]
fn sum_rows_matches_cpu() {
    let Some(g) = gpu() else { return };
    let mut fails = Vec::new();
    for (c, &(rows, n, bx, by, cap, off)) in ROW_CASES.iter().enumerate() {
        for dt in DTYPES {
            let s = suffix(dt).unwrap();
            let what = format!("sum_rows {s} rows={rows} n={n} block=({bx},{by}) off={off}");
            soft(&mut fails, what, || {
                let x = quantized(5000 + c as u64, rows * n);
                let xd = upload_at(g, &x, off, dt);
                for mean in [false, true] {
                    let scale64 = if mean { 1.0 / n as f64 } else { 1.0 };
                    let want = want_sum(&x, rows, n, scale64 as f32, dt);
                    let y = Out::new(g, rows, dt);
                    let l = row_launch(bx, by, cap);
                    gpu_reduce::sum(g, at(&xd, off), y.ptr(), rows, n, 1, mean, l).unwrap();
                    let got = y.read(g, "sum_rows");
                    check("sum_rows", dt, &got, &want, scale64 / 32.0, 0.0);
                }
            });
        }
    }
    finish(fails);
}

/// Runs gpu_reduce::max three ways (y and idx, y only, idx only; the absent one null) and
/// checks values and indices exactly against the CPU's (values, argmax).
#[allow(clippy::too_many_arguments)]
fn run_max(
    g: &Gpu,
    name: &str,
    dt: DType,
    (outer, n, inner): (usize, usize, usize),
    xd: &DevBuf,
    off: usize,
    launch: ReduceLaunch,
    want_v: &[f32],
    want_i: &[i64],
) {
    let s = suffix(dt).unwrap();
    let count = outer * inner;
    for (wy, wi) in [(true, true), (true, false), (false, true)] {
        let y = Out::new(g, count, dt);
        let idx = idx_buf(g, count);
        let yp = if wy { y.ptr() } else { Ptr::null(dt) };
        let ip = if wi {
            g.ptr_of(&idx, DType::I64)
        } else {
            Ptr::null(DType::I64)
        };
        gpu_reduce::max(g, at(xd, off), yp, ip, outer, n, inner, launch).unwrap();
        let got_v = y.read(g, name);
        let got_i = read_idx(g, &idx, count, name);
        if wy {
            check(name, dt, &got_v, want_v, 0.0, 0.0);
        } else {
            assert!(
                got_v.iter().all(|v| v.is_nan()),
                "{name}: y null, yet written"
            );
        }
        if wi {
            check_exact(&format!("{name} idx {s}"), &got_i, want_i);
        } else {
            assert!(
                got_i.iter().all(|&i| i == -1),
                "{name}: idx null, yet written"
            );
        }
    }
}

#[test]
fn max_rows_matches_cpu() {
    let Some(g) = gpu() else { return };
    let mut fails = Vec::new();
    for (c, &(rows, n, bx, by, cap, off)) in ROW_CASES.iter().enumerate() {
        for dt in DTYPES {
            let s = suffix(dt).unwrap();
            let what = format!("max_rows {s} rows={rows} n={n} block=({bx},{by}) off={off}");
            soft(&mut fails, what, || {
                let mut x = quantized(6000 + c as u64, rows * n);
                add_row_specials(&mut x, n);
                let (wv, wi) = cpu::max_rows(&x, n);
                let wi: Vec<i64> = wi.into_iter().map(|i| i as i64).collect();
                let xd = upload_at(g, &x, off, dt);
                let l = row_launch(bx, by, cap);
                run_max(g, "max_rows", dt, (rows, n, 1), &xd, off, l, &wv, &wi);
            });
        }
    }
    finish(fails);
}

#[test]
fn sum_cols_matches_cpu() {
    let Some(g) = gpu() else { return };
    let mut fails = Vec::new();
    for (c, &(outer, n, inner, by, cap, splits, partial)) in SUM_COL_CASES.iter().enumerate() {
        for dt in DTYPES {
            let s = suffix(dt).unwrap();
            let what = format!(
                "sum_cols {s} [{outer},{n},{inner}] by={by} cap={cap} splits={splits} partial={partial}"
            );
            soft(&mut fails, what, || {
                sum_cols_case(
                    g,
                    dt,
                    outer,
                    n,
                    inner,
                    by,
                    cap,
                    splits,
                    partial,
                    7000 + c as u64,
                )
            });
        }
    }
    finish(fails);
}

#[allow(clippy::too_many_arguments)]
fn sum_cols_case(
    g: &Gpu,
    dt: DType,
    outer: usize,
    n: usize,
    inner: usize,
    by: u32,
    cap: u32,
    splits: u32,
    partial: bool,
    seed: u64,
) {
    let count = outer * inner;
    let x = quantized(seed, outer * n * inner);
    let xt = to_rows(&x, outer, n, inner);
    let xd = g.upload_as(&x, dt).unwrap();
    for mean in [false, true] {
        let scale64 = if mean { 1.0 / n as f64 } else { 1.0 };
        let want = want_sum(&xt, count, n, scale64 as f32, dt);
        let y = Out::new(g, count, dt);
        let mut l = col_launch(by, cap);
        l.splits = Some(splits);
        if partial {
            let part = g.poisoned::<f32>(splits as usize * count + GUARD).unwrap();
            l.partial = Some(g.ptr_of(&part, DType::F32));
            gpu_reduce::sum(g, xd.ptr(), y.ptr(), outer, n, inner, mean, l).unwrap();
            let p = g.download(&part).unwrap();
            assert!(
                p[splits as usize * count..].iter().all(|v| v.is_nan()),
                "sum_cols: wrote past its partials"
            );
        } else {
            gpu_reduce::sum(g, xd.ptr(), y.ptr(), outer, n, inner, mean, l).unwrap();
        }
        let got = y.read(g, "sum_cols");
        let name = if partial {
            "sum_cols+finish"
        } else {
            "sum_cols"
        };
        check(name, dt, &got, &want, scale64 / 32.0, 0.0);
    }
}

#[test]
fn max_cols_matches_cpu() {
    let Some(g) = gpu() else { return };
    let mut fails = Vec::new();
    for (c, &(outer, n, inner, by, cap)) in MAX_COL_CASES.iter().enumerate() {
        for dt in DTYPES {
            let s = suffix(dt).unwrap();
            let what = format!("max_cols {s} [{outer},{n},{inner}] by={by} cap={cap}");
            soft(&mut fails, what, || {
                let count = outer * inner;
                let mut xt = quantized(8000 + c as u64, count * n);
                add_row_specials(&mut xt, n);
                let (wv, wi) = cpu::max_rows(&xt, n);
                let wi: Vec<i64> = wi.into_iter().map(|i| i as i64).collect();
                let x = from_rows(&xt, outer, n, inner);
                let xd = g.upload_as(&x, dt).unwrap();
                let l = col_launch(by, cap);
                run_max(g, "max_cols", dt, (outer, n, inner), &xd, 0, l, &wv, &wi);
            });
        }
    }
    finish(fails);
}

#[test]
fn sum_all_matches_cpu() {
    let Some(g) = gpu() else { return };
    let mut fails = Vec::new();
    for (c, &(n, block, off)) in ALL_CASES.iter().enumerate() {
        for dt in DTYPES {
            let s = suffix(dt).unwrap();
            let what = format!("sum_all {s} n={n} block={block} off={off}");
            soft(&mut fails, what, || {
                let x = quantized(9000 + c as u64, n);
                let xd = upload_at(g, &x, off, dt);
                let parts = n.div_ceil(block as usize * 16).clamp(1, 1024);
                for mean in [false, true] {
                    let scale64 = if mean { 1.0 / n as f64 } else { 1.0 };
                    let want = want_sum(&x, 1, n, scale64 as f32, dt);
                    let part = g.poisoned::<f32>(parts + GUARD).unwrap();
                    let y = Out::new(g, 1, dt);
                    let l = SumAllLaunch {
                        block: Some(block),
                        partial: Some(g.ptr_of(&part, DType::F32)),
                    };
                    gpu_reduce::sum_all(g, at(&xd, off), y.ptr(), n, mean, l).unwrap();
                    let p = g.download(&part).unwrap();
                    assert!(
                        p[parts..].iter().all(|v| v.is_nan()),
                        "sum_all_partial: wrote past its {parts} partials"
                    );
                    let got = y.read(g, "sum_all");
                    check("sum_all", dt, &got, &want, scale64 / 32.0, 0.0);
                }
            });
        }
    }
    finish(fails);
}

/// The default launches (no config): rows, split columns with allocated scratch, sum_all with
/// allocated partials.
#[test]
fn default_launches_match_cpu() {
    let Some(g) = gpu() else { return };
    let dt = DType::F32;
    let d = ReduceLaunch::default();
    for (outer, n, inner) in [(37, 77, 1), (3, 40_000, 1), (2, 5000, 3), (6, 33, 17)] {
        let count = outer * inner;
        let x = quantized(9500 + n as u64, outer * n * inner);
        let xd = g.upload_as(&x, dt).unwrap();
        let want = want_sum(&to_rows(&x, outer, n, inner), count, n, 1.0, dt);
        let y = Out::new(g, count, dt);
        gpu_reduce::sum(g, xd.ptr(), y.ptr(), outer, n, inner, false, d).unwrap();
        check(
            "sum (default)",
            dt,
            &y.read(g, "sum"),
            &want,
            1.0 / 32.0,
            0.0,
        );
    }
    let x = quantized(9600, 100_003);
    let xd = g.upload_as(&x, dt).unwrap();
    let want = want_sum(&x, 1, x.len(), 1.0, dt);
    let y = Out::new(g, 1, dt);
    let l = SumAllLaunch::default();
    gpu_reduce::sum_all(g, xd.ptr(), y.ptr(), x.len(), false, l).unwrap();
    check(
        "sum_all (default)",
        dt,
        &y.read(g, "sum_all"),
        &want,
        1.0 / 32.0,
        0.0,
    );
}

#[test]
fn reduce_refuses_bad_buffers() {
    let Some(g) = gpu() else { return };
    let dt = DType::F32;
    let d = ReduceLaunch::default();
    let x = g.upload_as(&[0.5; 12], dt).unwrap();
    let y = g.poisoned_as(3, dt).unwrap();
    let err = gpu_reduce::sum(g, x.ptr(), y.ptr(), 2, 3, 2, false, d).unwrap_err();
    assert!(err.to_string().contains("y holds 3 elements"), "{err}");
    let idx = g.poisoned::<i32>(4).unwrap();
    let ip = g.ptr_of(&idx, DType::I32);
    let null = Ptr::null(dt);
    let err = gpu_reduce::max(g, x.ptr(), null, ip, 4, 3, 1, d).unwrap_err();
    assert!(err.to_string().contains("expected I64"), "{err}");
    let l = ReduceLaunch {
        splits: Some(4),
        partial: Some(g.ptr_of(&idx, DType::F32)),
        ..d
    };
    let y4 = g.poisoned_as(4, dt).unwrap();
    let err = gpu_reduce::sum(g, x.ptr(), y4.ptr(), 2, 3, 2, false, l).unwrap_err();
    assert!(
        err.to_string().contains("partial holds 4 elements"),
        "{err}"
    );
}
