//! kernels/upsample.cu vs src/backend/cpu/pool.rs (nearest 2-D upsampling and its backward).

use crate::support::*;
use medsyn::backend::cpu::pool as cpu;
use medsyn::cuda::gpu::{round_to, suffix};

/// (planes, h, w, s): odd sizes, a row wider than one block (w > 256), s = 1 and s = 4.
const CASES: [(usize, usize, usize, usize); 5] = [
    (6, 7, 9, 2),
    (3, 5, 300, 3),
    (2, 16, 16, 1),
    (1, 3, 5, 4),
    (33, 8, 8, 2),
];

/// The contract's block (BX, BY) for a row of `w` source columns.
fn block(w: usize) -> (u32, u32) {
    let bx = (w.div_ceil(32) * 32).min(256) as u32;
    (bx, (256 / bx).max(1))
}

#[test]
fn upsample_nearest2d_forward_and_backward_match_cpu() {
    let Some(g) = gpu() else { return };
    for (case, &(planes, h, w, s)) in CASES.iter().enumerate() {
        for dt in DTYPES {
            let (len, olen) = (planes * h * w, planes * h * w * s * s);
            let seed = 300 + case as u64;
            let x = uniform_as(seed, len, -3.0, 3.0, dt);
            let dy = uniform_as(seed + 50, olen, -1.0, 1.0, dt);
            let want = cpu::upsample_nearest2d(&x, planes, (h, w), s);
            let want_dx = round_to(
                &cpu::upsample_nearest2d_backward(&dy, planes, (h, w), s),
                dt,
            );

            let xd = g.upload_as(&x, dt).unwrap();
            let dyd = g.upload_as(&dy, dt).unwrap();
            let mut yd = g.poisoned_as(olen, dt).unwrap();
            let mut dxd = g.poisoned_as(len, dt).unwrap();
            let sfx = suffix(dt).unwrap();
            let (p, hh, ww, ss) = (planes as i64, h as i64, w as i64, s as i32);
            let (bx, by) = block(w);

            let cfg = LaunchConfig {
                grid_dim: (((planes * h * s) as u32).div_ceil(by), 1, 1),
                block_dim: (bx, by, 1),
                shared_mem_bytes: 0,
            };
            let f = g
                .function("upsample", &format!("upsample_nearest2d_{sfx}"))
                .unwrap();
            unsafe {
                g.stream()
                    .launch_builder(&f)
                    .arg(&p)
                    .arg(&hh)
                    .arg(&ww)
                    .arg(&ss)
                    .arg(&xd.bytes)
                    .arg(&mut yd.bytes)
                    .launch(cfg)
            }
            .unwrap();

            let cfg = LaunchConfig {
                grid_dim: (((planes * h) as u32).div_ceil(by), 1, 1),
                block_dim: (bx, by, 1),
                shared_mem_bytes: 0,
            };
            let f = g
                .function("upsample", &format!("upsample_nearest2d_backward_{sfx}"))
                .unwrap();
            unsafe {
                g.stream()
                    .launch_builder(&f)
                    .arg(&p)
                    .arg(&hh)
                    .arg(&ww)
                    .arg(&ss)
                    .arg(&dyd.bytes)
                    .arg(&mut dxd.bytes)
                    .launch(cfg)
            }
            .unwrap();

            let y = g.download_f32(&yd).unwrap();
            let dx = g.download_f32(&dxd).unwrap();
            // A copy, and the CPU's summation order: both bit-identical by contract.
            check("upsample_nearest2d", dt, &y, &want, 0.0, 0.0);
            check("upsample_nearest2d_backward", dt, &dx, &want_dx, 0.0, 0.0);
        }
    }
}
