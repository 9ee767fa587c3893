//! kernels/softmax.cu vs src/backend/cpu/softmax.rs (softmax, log-softmax, backward; rows and cols).

use crate::support::*;
use medsyn::backend::cpu::softmax as cpu;
use medsyn::cuda::gpu::suffix;

/// (outer, n, inner, log) cases: warp-per-row, wide rows, strided columns.
const CASES: [(usize, usize, usize, bool); 5] = [
    (37, 77, 1, false),
    (19, 1000, 1, true),
    (5, 3000, 1, false),
    (6, 33, 17, false),
    (3, 10, 129, true),
];

#[test]
fn softmax_forward_and_backward_match_cpu() {
    let Some(g) = gpu() else { return };
    for (case, &(outer, n, inner, log)) in CASES.iter().enumerate() {
        for dt in DTYPES {
            let len = outer * n * inner;
            let seed = 100 + case as u64;
            let x = uniform_as(seed, len, -6.0, 6.0, dt);
            let dy = uniform_as(seed + 50, len, -1.0, 1.0, dt);
            let want = cpu::softmax(&x, n, inner, log);
            let want_dx = cpu::softmax_backward(&round_to_dt(&want, dt), &dy, n, inner, log);

            let xd = g.upload_as(&x, dt).unwrap();
            let dyd = g.upload_as(&dy, dt).unwrap();
            let mut yd = g.poisoned_as(len, dt).unwrap();
            let mut dxd = g.poisoned_as(len, dt).unwrap();
            let s = suffix(dt).unwrap();
            let (o, nn, ii, lg) = (outer as i64, n as i64, inner as i64, log as i32);
            if inner == 1 {
                let rows = o;
                let (bx, by) = if n <= 1024 { (32u32, 8u32) } else { (512, 1) };
                let cfg = LaunchConfig {
                    grid_dim: ((outer as u32).div_ceil(by), 1, 1),
                    block_dim: (bx, by, 1),
                    shared_mem_bytes: 0,
                };
                let f = g.function("softmax", &format!("softmax_rows_{s}")).unwrap();
                unsafe {
                    g.stream()
                        .launch_builder(&f)
                        .arg(&rows)
                        .arg(&nn)
                        .arg(&lg)
                        .arg(&xd.bytes)
                        .arg(&mut yd.bytes)
                        .launch(cfg)
                }
                .unwrap();
                let f = g
                    .function("softmax", &format!("softmax_backward_rows_{s}"))
                    .unwrap();
                unsafe {
                    g.stream()
                        .launch_builder(&f)
                        .arg(&rows)
                        .arg(&nn)
                        .arg(&lg)
                        .arg(&yd.bytes)
                        .arg(&dyd.bytes)
                        .arg(&mut dxd.bytes)
                        .launch(cfg)
                }
                .unwrap();
            } else {
                let cfg = grid(((outer * inner) as u32).div_ceil(256), 256, 0);
                let f = g.function("softmax", &format!("softmax_cols_{s}")).unwrap();
                unsafe {
                    g.stream()
                        .launch_builder(&f)
                        .arg(&o)
                        .arg(&nn)
                        .arg(&ii)
                        .arg(&lg)
                        .arg(&xd.bytes)
                        .arg(&mut yd.bytes)
                        .launch(cfg)
                }
                .unwrap();
                let f = g
                    .function("softmax", &format!("softmax_backward_cols_{s}"))
                    .unwrap();
                unsafe {
                    g.stream()
                        .launch_builder(&f)
                        .arg(&o)
                        .arg(&nn)
                        .arg(&ii)
                        .arg(&lg)
                        .arg(&yd.bytes)
                        .arg(&dyd.bytes)
                        .arg(&mut dxd.bytes)
                        .launch(cfg)
                }
                .unwrap();
            }
            let y = g.download_f32(&yd).unwrap();
            let dx = g.download_f32(&dxd).unwrap();
            let name = if inner == 1 {
                "softmax_rows"
            } else {
                "softmax_cols"
            };
            let atol = if log { 1e-5 * n as f64 } else { 1e-7 };
            check(name, dt, &y, &want, atol, rtol(dt));
            let bname = if inner == 1 {
                "softmax_backward_rows"
            } else {
                "softmax_backward_cols"
            };
            check(
                bname,
                dt,
                &dx,
                &want_dx,
                1e-6 + rtol(dt) * 0.05,
                rtol(dt) * 2.0,
            );
        }
    }
}

fn round_to_dt(v: &[f32], dt: medsyn::tensor::DType) -> Vec<f32> {
    medsyn::cuda::gpu::round_to(v, dt)
}
