//! kernels/pool.cu vs src/backend/cpu/pool.rs (max pool with its argmax, average pool with and
//! without count_include_pad, adaptive average pool; each with its backward).

use crate::support::*;
use cudarc::driver::CudaFunction;
use medsyn::backend::cpu::pool::{self as cpu, Pool2dGeom};
use medsyn::cuda::gpu::{round_to, suffix};
use medsyn::cuda::Gpu;
use medsyn::tensor::DType;

/// (planes, h, w, kernel, stride, padding): a ResNet-stem-like 3×3/2 pad 1, 2×2/2, a row wider
/// than one block (w = 150 > 128) with unequal strides, padding = kernel/2 with kh != kw,
/// 1×1 planes, many planes of odd size.
#[allow(clippy::type_complexity)]
const CASES: [(
    usize,
    usize,
    usize,
    (usize, usize),
    (usize, usize),
    (usize, usize),
); 6] = [
    (6, 17, 23, (3, 3), (2, 2), (1, 1)),
    (3, 32, 32, (2, 2), (2, 2), (0, 0)),
    (5, 9, 150, (3, 2), (1, 3), (1, 1)),
    (2, 7, 5, (4, 5), (3, 2), (2, 2)),
    (4, 1, 1, (1, 1), (1, 1), (0, 0)),
    (37, 5, 7, (3, 3), (1, 1), (1, 1)),
];

/// (planes, h, w, oh, ow) for the adaptive pool: global, overlapping bins, more outputs than
/// inputs (oh > h), a wide row, non-dividing bins.
const ADAPTIVE: [(usize, usize, usize, usize, usize); 5] = [
    (6, 7, 7, 1, 1),
    (3, 10, 13, 4, 5),
    (2, 5, 3, 7, 6),
    (5, 33, 150, 7, 7),
    (9, 14, 14, 3, 3),
];

/// The contract's 2-D launch: rows block-strided, BX = min(128, roundup32(cols)),
/// BY = max(1, 128 / BX), grid = ceil(rows / BY).
fn launch_2d(rows: usize, cols: usize) -> LaunchConfig {
    let bx = (cols.div_ceil(32) * 32).min(128) as u32;
    let by = (128 / bx).max(1);
    LaunchConfig {
        grid_dim: ((rows as u32).div_ceil(by), 1, 1),
        block_dim: (bx, by, 1),
        shared_mem_bytes: 0,
    }
}

fn geom(
    planes: usize,
    h: usize,
    w: usize,
    kernel: (usize, usize),
    stride: (usize, usize),
    padding: (usize, usize),
) -> Pool2dGeom {
    assert!(2 * padding.0 <= kernel.0 && 2 * padding.1 <= kernel.1);
    Pool2dGeom {
        planes,
        h,
        w,
        kernel,
        stride,
        padding,
        oh: Pool2dGeom::out_size(h, kernel.0, stride.0, padding.0).unwrap(),
        ow: Pool2dGeom::out_size(w, kernel.1, stride.1, padding.1).unwrap(),
    }
}

/// The 11 leading i64 geometry parameters in the kernels' order.
fn geom_args(g: &Pool2dGeom) -> [i64; 11] {
    [
        g.planes,
        g.h,
        g.w,
        g.kernel.0,
        g.kernel.1,
        g.stride.0,
        g.stride.1,
        g.padding.0,
        g.padding.1,
        g.oh,
        g.ow,
    ]
    .map(|v| v as i64)
}

fn func(g: &Gpu, name: &str, dt: DType) -> CudaFunction {
    g.function("pool", &format!("{name}_{}", suffix(dt).unwrap()))
        .unwrap()
}

#[test]
fn max_pool2d_forward_index_and_backward_match_cpu() {
    let Some(g) = gpu() else { return };
    for (case, &(planes, h, w, k, s, p)) in CASES.iter().enumerate() {
        let geo = geom(planes, h, w, k, s, p);
        let (len, olen) = (planes * h * w, planes * geo.oh * geo.ow);
        for dt in DTYPES {
            let seed = 400 + case as u64;
            // Rounded to bf16/f16 the values tie often: first-maximum order is then checked too.
            let x = uniform_as(seed, len, -4.0, 4.0, dt);
            let dy = uniform_as(seed + 50, olen, -1.0, 1.0, dt);
            let (want, want_idx) = cpu::max_pool2d(&geo, &x);
            let want_dx = round_to(&cpu::max_pool2d_backward(&geo, &dy, &want_idx), dt);

            let xd = g.upload_as(&x, dt).unwrap();
            let dyd = g.upload_as(&dy, dt).unwrap();
            let mut yd = g.poisoned_as(olen, dt).unwrap();
            let mut idx = g.poisoned::<u32>(olen).unwrap();
            let mut dxd = g.poisoned_as(len, dt).unwrap();
            let a = geom_args(&geo);

            let f = func(g, "max_pool2d", dt);
            let mut b = g.stream().launch_builder(&f);
            for v in &a {
                b.arg(v);
            }
            b.arg(&xd.bytes).arg(&mut yd.bytes).arg(&mut idx);
            unsafe { b.launch(launch_2d(planes * geo.oh, geo.ow)) }.unwrap();

            let f = func(g, "max_pool2d_backward", dt);
            let mut b = g.stream().launch_builder(&f);
            for v in &a {
                b.arg(v);
            }
            b.arg(&dyd.bytes).arg(&idx).arg(&mut dxd.bytes);
            unsafe { b.launch(launch_2d(planes * h, w)) }.unwrap();

            let y = g.download_f32(&yd).unwrap();
            let got_idx = g.download(&idx).unwrap();
            let dx = g.download_f32(&dxd).unwrap();
            // No arithmetic forward; the CPU's summation order backward: bit-identical.
            check("max_pool2d", dt, &y, &want, 0.0, 0.0);
            check_exact(
                &format!("max_pool2d idx {}", suffix(dt).unwrap()),
                &got_idx,
                &want_idx,
            );
            check("max_pool2d_backward", dt, &dx, &want_dx, 0.0, 0.0);
        }
    }
}

#[test]
fn avg_pool2d_forward_and_backward_match_cpu() {
    let Some(g) = gpu() else { return };
    for (case, &(planes, h, w, k, s, p)) in CASES.iter().enumerate() {
        let geo = geom(planes, h, w, k, s, p);
        let (len, olen) = (planes * h * w, planes * geo.oh * geo.ow);
        for include_pad in [true, false] {
            for dt in DTYPES {
                let seed = 500 + case as u64 + 20 * include_pad as u64;
                let x = uniform_as(seed, len, -4.0, 4.0, dt);
                let dy = uniform_as(seed + 50, olen, -1.0, 1.0, dt);
                let want = round_to(&cpu::avg_pool2d(&geo, &x, include_pad), dt);
                let want_dx = round_to(&cpu::avg_pool2d_backward(&geo, &dy, include_pad), dt);

                let xd = g.upload_as(&x, dt).unwrap();
                let dyd = g.upload_as(&dy, dt).unwrap();
                let mut yd = g.poisoned_as(olen, dt).unwrap();
                let mut dxd = g.poisoned_as(len, dt).unwrap();
                let a = geom_args(&geo);
                let cip = include_pad as i32;

                let f = func(g, "avg_pool2d", dt);
                let mut b = g.stream().launch_builder(&f);
                for v in &a {
                    b.arg(v);
                }
                b.arg(&cip).arg(&xd.bytes).arg(&mut yd.bytes);
                unsafe { b.launch(launch_2d(planes * geo.oh, geo.ow)) }.unwrap();

                let f = func(g, "avg_pool2d_backward", dt);
                let mut b = g.stream().launch_builder(&f);
                for v in &a {
                    b.arg(v);
                }
                b.arg(&cip).arg(&dyd.bytes).arg(&mut dxd.bytes);
                unsafe { b.launch(launch_2d(planes * h, w)) }.unwrap();

                let tag = if include_pad { "" } else { "/exclude_pad" };
                let y = g.download_f32(&yd).unwrap();
                let dx = g.download_f32(&dxd).unwrap();
                // Same order of f32 operations as the CPU: equal up to a last-bit slack.
                let (atol, rt) = tolerance(dt);
                check(&format!("avg_pool2d{tag}"), dt, &y, &want, atol, rt);
                check(
                    &format!("avg_pool2d_backward{tag}"),
                    dt,
                    &dx,
                    &want_dx,
                    atol,
                    rt,
                );
            }
        }
    }
}

#[test]
fn adaptive_avg_pool2d_forward_and_backward_match_cpu() {
    let Some(g) = gpu() else { return };
    for (case, &(planes, h, w, oh, ow)) in ADAPTIVE.iter().enumerate() {
        let (len, olen) = (planes * h * w, planes * oh * ow);
        for dt in DTYPES {
            let seed = 600 + case as u64;
            let x = uniform_as(seed, len, -4.0, 4.0, dt);
            let dy = uniform_as(seed + 50, olen, -1.0, 1.0, dt);
            let want = round_to(&cpu::adaptive_avg_pool2d(&x, planes, (h, w), (oh, ow)), dt);
            let want_dx = round_to(
                &cpu::adaptive_avg_pool2d_backward(&dy, planes, (h, w), (oh, ow)),
                dt,
            );

            let xd = g.upload_as(&x, dt).unwrap();
            let dyd = g.upload_as(&dy, dt).unwrap();
            let mut yd = g.poisoned_as(olen, dt).unwrap();
            let mut dxd = g.poisoned_as(len, dt).unwrap();
            let (p, hh, ww, ohh, oww) = (planes as i64, h as i64, w as i64, oh as i64, ow as i64);

            let f = func(g, "adaptive_avg_pool2d", dt);
            unsafe {
                g.stream()
                    .launch_builder(&f)
                    .arg(&p)
                    .arg(&hh)
                    .arg(&ww)
                    .arg(&ohh)
                    .arg(&oww)
                    .arg(&xd.bytes)
                    .arg(&mut yd.bytes)
                    .launch(launch_2d(planes * oh, ow))
            }
            .unwrap();
            let f = func(g, "adaptive_avg_pool2d_backward", dt);
            unsafe {
                g.stream()
                    .launch_builder(&f)
                    .arg(&p)
                    .arg(&hh)
                    .arg(&ww)
                    .arg(&ohh)
                    .arg(&oww)
                    .arg(&dyd.bytes)
                    .arg(&mut dxd.bytes)
                    .launch(launch_2d(planes * h, w))
            }
            .unwrap();

            let y = g.download_f32(&yd).unwrap();
            let dx = g.download_f32(&dxd).unwrap();
            let (atol, rt) = tolerance(dt);
            check("adaptive_avg_pool2d", dt, &y, &want, atol, rt);
            check("adaptive_avg_pool2d_backward", dt, &dx, &want_dx, atol, rt);
        }
    }
}

/// (atol, rtol) for a kernel that repeats the CPU's f32 operations in order (expected exact;
/// a last-bit difference in f32 may move a bf16/f16 rounding by one step).
fn tolerance(dt: DType) -> (f64, f64) {
    match dt {
        DType::F32 => (1e-6, 1e-6),
        _ => (1e-6, rtol(dt)),
    }
}
