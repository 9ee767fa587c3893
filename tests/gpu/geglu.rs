//! backend::cuda::geglu (kernels/geglu.cu) vs src/backend/cpu/geglu.rs (geglu forward and
//! backward, packed and scalar rows), and its argument checks.

use crate::support::*;
use medsyn::backend::cpu::geglu as cpu;
use medsyn::backend::cuda::geglu::{self as gpu_geglu, GegluLaunch};
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
            let yd = g.poisoned_as(rows * d, dt).unwrap();
            let dxd = g.poisoned_as(rows * 2 * d, dt).unwrap();
            let launch = GegluLaunch { grid_cap: cap };
            gpu_geglu::geglu(g, xd.ptr(), yd.ptr(), rows, d, launch).unwrap();
            gpu_geglu::geglu_backward(g, xd.ptr(), dyd.ptr(), dxd.ptr(), rows, d, launch).unwrap();
            let y = g.download_f32(&yd).unwrap();
            let dx = g.download_f32(&dxd).unwrap();
            // erfcf/expf vs vmath's polynomials: a few f32 ulp, plus an absolute floor for
            // gelu'(g) = Φ(g) + g·φ(g) cancelling near g ≈ −0.75 (|dy·h| <= 3).
            check("geglu", dt, &y, &want_y, 1e-5, rtol(dt));
            check("geglu_backward", dt, &dx, &want_dx, 1e-5, rtol(dt));
        }
    }
}

#[test]
fn geglu_refuses_short_buffers_and_mixed_dtypes() {
    let Some(g) = gpu() else { return };
    let dt = DType::F32;
    let x = g.upload_as(&[0.0; 24], dt).unwrap();
    let y = g.poisoned_as(11, dt).unwrap();
    let err = gpu_geglu::geglu(g, x.ptr(), y.ptr(), 3, 4, GegluLaunch::default()).unwrap_err();
    assert!(err.to_string().contains("y holds 11 elements"), "{err}");
    let err = gpu_geglu::geglu(g, x.ptr(), y.ptr(), 3, 5, GegluLaunch::default()).unwrap_err();
    assert!(err.to_string().contains("x holds 24 elements"), "{err}");
    let yh = g.poisoned_as(12, DType::BF16).unwrap();
    let err = gpu_geglu::geglu(g, x.ptr(), yh.ptr(), 3, 4, GegluLaunch::default()).unwrap_err();
    assert!(err.to_string().contains("expected F32"), "{err}");
    let dy = g.poisoned_as(12, dt).unwrap();
    let dx = g.poisoned_as(23, dt).unwrap();
    let err =
        gpu_geglu::geglu_backward(g, x.ptr(), dy.ptr(), dx.ptr(), 3, 4, GegluLaunch::default())
            .unwrap_err();
    assert!(err.to_string().contains("dx holds 23 elements"), "{err}");
}
