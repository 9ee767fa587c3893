//! kernels/reduce.cu vs src/backend/cpu/reduce.rs: sum/mean and max/argmax over rows
//! (inner == 1) and over the middle axis of [outer, n, inner], and the two-stage sum_all.
//!
//! Sum inputs are multiples of 1/8 in [-1.5, 2.375): every partial sum of fewer than 2^21/2.375
//! of them is exact in f32, so any summation order gives the CPU's f64 sum exactly and a lost
//! or doubled element shows (tolerance 1/32 · scale).

use crate::support::*;
use cudarc::driver::{CudaView, CudaViewMut};
use medsyn::backend::cpu::reduce as cpu;
use medsyn::cuda::gpu::{round_to, suffix};
use medsyn::cuda::{DevBuf, Gpu};
use medsyn::tensor::DType;
use std::panic::{catch_unwind, AssertUnwindSafe};

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

fn esize(dt: DType) -> usize {
    if dt == DType::F32 {
        4
    } else {
        2
    }
}

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

fn at(b: &DevBuf, off: usize) -> CudaView<'_, u8> {
    b.bytes.slice(off * esize(b.dtype)..)
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

    fn view(&mut self) -> CudaViewMut<'_, u8> {
        let s = esize(self.buf.dtype);
        self.buf.bytes.slice_mut(..self.n * s)
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

fn soft(fails: &mut Vec<String>, what: String, f: impl FnOnce()) {
    if let Err(p) = catch_unwind(AssertUnwindSafe(f)) {
        let msg = p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        fails.push(format!("{what}: {msg}"));
    }
}

fn finish(fails: Vec<String>) {
    assert!(
        fails.is_empty(),
        "{} failing cases:\n{}",
        fails.len(),
        fails.join("\n")
    );
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

fn row_cfg(rows: usize, bx: u32, by: u32, cap: u32) -> LaunchConfig {
    LaunchConfig {
        grid_dim: ((rows.div_ceil(by as usize) as u32).clamp(1, cap), 1, 1),
        block_dim: (bx, by, 1),
        shared_mem_bytes: 0,
    }
}

fn col_cfg(outer: usize, inner: usize, by: u32, cap: u32, splits: u32) -> LaunchConfig {
    let tiles = outer * inner.div_ceil(32);
    LaunchConfig {
        grid_dim: ((tiles as u32).clamp(1, cap), splits, 1),
        block_dim: (32, by, 1),
        shared_mem_bytes: 0,
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
                let f = g.function("reduce", &format!("sum_rows_{s}")).unwrap();
                let x = quantized(5000 + c as u64, rows * n);
                let xd = upload_at(g, &x, off, dt);
                for scale64 in [1.0, 1.0 / n as f64] {
                    let scale = scale64 as f32;
                    let want = want_sum(&x, rows, n, scale, dt);
                    let (rr, nn) = (rows as i64, n as i64);
                    let mut y = Out::new(g, rows, dt);
                    unsafe {
                        g.stream()
                            .launch_builder(&f)
                            .arg(&rr)
                            .arg(&nn)
                            .arg(&scale)
                            .arg(&at(&xd, off))
                            .arg(&mut y.view())
                            .launch(row_cfg(rows, bx, by, cap))
                    }
                    .unwrap();
                    let got = y.read(g, "sum_rows");
                    check("sum_rows", dt, &got, &want, scale64 / 32.0, 0.0);
                }
            });
        }
    }
    finish(fails);
}

/// Runs a max kernel three ways (y and idx, y only, idx only; the absent one null) and checks
/// values and indices exactly against the CPU's (values, argmax).
#[allow(clippy::too_many_arguments)]
fn run_max(
    g: &Gpu,
    name: &str,
    dt: DType,
    lead: &[i64],
    xd: &DevBuf,
    off: usize,
    count: usize,
    cfg: LaunchConfig,
    want_v: &[f32],
    want_i: &[i64],
) {
    let s = suffix(dt).unwrap();
    let f = g.function("reduce", &format!("{name}_{s}")).unwrap();
    let null = 0u64;
    for (wy, wi) in [(true, true), (true, false), (false, true)] {
        let mut y = Out::new(g, count, dt);
        let mut idx = idx_buf(g, count);
        {
            let xv = at(xd, off);
            let mut yv = y.view();
            let mut iv = idx.slice_mut(..count);
            let mut b = g.stream().launch_builder(&f);
            for a in lead {
                b.arg(a);
            }
            b.arg(&xv);
            if wy {
                b.arg(&mut yv);
            } else {
                b.arg(&null);
            }
            if wi {
                b.arg(&mut iv);
            } else {
                b.arg(&null);
            }
            unsafe { b.launch(cfg) }.unwrap();
        }
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
                let lead = [rows as i64, n as i64];
                let cfg = row_cfg(rows, bx, by, cap);
                run_max(g, "max_rows", dt, &lead, &xd, off, rows, cfg, &wv, &wi);
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
    let s = suffix(dt).unwrap();
    let f = g.function("reduce", &format!("sum_cols_{s}")).unwrap();
    let fin = g
        .function("reduce", &format!("sum_cols_finish_{s}"))
        .unwrap();
    let count = outer * inner;
    let x = quantized(seed, outer * n * inner);
    let xt = to_rows(&x, outer, n, inner);
    let xd = g.upload_as(&x, dt).unwrap();
    let (oo, nn, ii, cc, sp) = (
        outer as i64,
        n as i64,
        inner as i64,
        count as i64,
        splits as i32,
    );
    let null = 0u64;
    let cfg = col_cfg(outer, inner, by, cap, splits);
    for scale64 in [1.0, 1.0 / n as f64] {
        let scale = scale64 as f32;
        let want = want_sum(&xt, count, n, scale, dt);
        let mut y = Out::new(g, count, dt);
        if partial {
            let mut part = g.poisoned::<f32>(splits as usize * count + GUARD).unwrap();
            {
                let mut pv = part.slice_mut(..splits as usize * count);
                unsafe {
                    g.stream()
                        .launch_builder(&f)
                        .arg(&oo)
                        .arg(&nn)
                        .arg(&ii)
                        .arg(&scale)
                        .arg(&xd.bytes)
                        .arg(&mut pv)
                        .arg(&null)
                        .launch(cfg)
                }
                .unwrap();
            }
            unsafe {
                g.stream()
                    .launch_builder(&fin)
                    .arg(&cc)
                    .arg(&sp)
                    .arg(&scale)
                    .arg(&part)
                    .arg(&mut y.view())
                    .launch(grid(count.div_ceil(256) as u32, 256, 0))
            }
            .unwrap();
            let p = g.download(&part).unwrap();
            assert!(
                p[splits as usize * count..].iter().all(|v| v.is_nan()),
                "sum_cols: wrote past its partials"
            );
        } else {
            unsafe {
                g.stream()
                    .launch_builder(&f)
                    .arg(&oo)
                    .arg(&nn)
                    .arg(&ii)
                    .arg(&scale)
                    .arg(&xd.bytes)
                    .arg(&null)
                    .arg(&mut y.view())
                    .launch(cfg)
            }
            .unwrap();
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
                let lead = [outer as i64, n as i64, inner as i64];
                let cfg = col_cfg(outer, inner, by, cap, 1);
                run_max(g, "max_cols", dt, &lead, &xd, 0, count, cfg, &wv, &wi);
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
                let fp = g
                    .function("reduce", &format!("sum_all_partial_{s}"))
                    .unwrap();
                let ff = g
                    .function("reduce", &format!("sum_all_finish_{s}"))
                    .unwrap();
                let x = quantized(9000 + c as u64, n);
                let xd = upload_at(g, &x, off, dt);
                let parts = n.div_ceil(block as usize * 16).clamp(1, 1024);
                let (nn, pp) = (n as i64, parts as i32);
                for scale64 in [1.0, 1.0 / n as f64] {
                    let scale = scale64 as f32;
                    let want = want_sum(&x, 1, n, scale, dt);
                    let mut part = g.poisoned::<f32>(parts + GUARD).unwrap();
                    {
                        let mut pv = part.slice_mut(..parts);
                        unsafe {
                            g.stream()
                                .launch_builder(&fp)
                                .arg(&nn)
                                .arg(&at(&xd, off))
                                .arg(&mut pv)
                                .launch(grid(parts as u32, block, 0))
                        }
                        .unwrap();
                    }
                    let mut y = Out::new(g, 1, dt);
                    unsafe {
                        g.stream()
                            .launch_builder(&ff)
                            .arg(&pp)
                            .arg(&scale)
                            .arg(&part)
                            .arg(&mut y.view())
                            .launch(grid(1, 256, 0))
                    }
                    .unwrap();
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
