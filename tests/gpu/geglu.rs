//! kernels/geglu.cu vs src/backend/cpu/geglu.rs (geglu forward and backward, packed and scalar rows).

use crate::support::*;
use medsyn::backend::cpu::geglu as cpu;
use medsyn::cuda::gpu::suffix;
use medsyn::tensor::DType;

/// (rows, d, grid cap): odd widths (scalar path), widths packed for f32 only (d % 4 == 0,
/// d % 8 != 0), packed for every dtype, wide rows (several passes per thread), and capped
/// grids (block-strided rows with a partial last pass).
const CASES: [(usize, usize, u32); 7] = [
    (37, 77, u32::MAX),
    (7, 1, u32::MAX),
    (19, 20, 2),
    (64, 320, u32::MAX),
    (5, 5120, u32::MAX),
    (300, 40, 3),
    (11, 1283, u32::MAX),
];

/// The contract's launch: BX = min(256, roundup32(ceil(d / P))), BY = max(1, 256 / BX),
/// grid = min(ceil(rows / BY), cap).
fn launch_cfg(rows: usize, d: usize, dt: DType, cap: u32) -> LaunchConfig {
    let pack = if dt == DType::F32 { 4 } else { 8 };
    let p = if d.is_multiple_of(pack) { pack } else { 1 };
    let bx = (d.div_ceil(p).div_ceil(32) * 32).clamp(32, 256) as u32;
    let by = (256 / bx).max(1);
    let blocks = ((rows as u32).div_ceil(by)).clamp(1, cap);
    LaunchConfig {
        grid_dim: (blocks, 1, 1),
        block_dim: (bx, by, 1),
        shared_mem_bytes: 0,
    }
}

#[test]
fn geglu_forward_and_backward_match_cpu() {
    for (case, &(rows, d, cap)) in CASES.iter().enumerate() {
        for dt in DTYPES {
            let seed = 300 + case as u64;
            let x = uniform_as(seed, rows * 2 * d, -3.0, 3.0, dt);
            let dy = uniform_as(seed + 70, rows * d, -1.0, 1.0, dt);
            let want_y = cpu::geglu_forward(&x, d);
            let want_dx = cpu::geglu_backward(&x, &dy, d);
            assert_eq!((want_y.len(), want_dx.len()), (rows * d, rows * 2 * d));
            let Some(g) = gpu() else { continue };

            let xd = g.upload_as(&x, dt).unwrap();
            let dyd = g.upload_as(&dy, dt).unwrap();
            let mut yd = g.poisoned_as(rows * d, dt).unwrap();
            let mut dxd = g.poisoned_as(rows * 2 * d, dt).unwrap();
            let s = suffix(dt).unwrap();
            let (r, dd) = (rows as i64, d as i64);
            let cfg = launch_cfg(rows, d, dt, cap);
            let f = g.function("geglu", &format!("geglu_{s}")).unwrap();
            unsafe {
                g.stream()
                    .launch_builder(&f)
                    .arg(&r)
                    .arg(&dd)
                    .arg(&xd.bytes)
                    .arg(&mut yd.bytes)
                    .launch(cfg)
            }
            .unwrap();
            let f = g.function("geglu", &format!("geglu_backward_{s}")).unwrap();
            unsafe {
                g.stream()
                    .launch_builder(&f)
                    .arg(&r)
                    .arg(&dd)
                    .arg(&xd.bytes)
                    .arg(&dyd.bytes)
                    .arg(&mut dxd.bytes)
                    .launch(cfg)
            }
            .unwrap();
            let y = g.download_f32(&yd).unwrap();
            let dx = g.download_f32(&dxd).unwrap();
            // erfcf/expf vs vmath's polynomials: a few f32 ulp, plus an absolute floor for
            // gelu'(g) = Φ(g) + g·φ(g) cancelling near g ≈ −0.75 (|dy·h| <= 3).
            check("geglu", dt, &y, &want_y, 1e-5, rtol(dt));
            check("geglu_backward", dt, &dx, &want_dx, 1e-5, rtol(dt));
        }
    }
}
