//! backend::cuda::upsample (kernels/upsample.cu) vs src/backend/cpu/pool.rs (nearest 2-D
//! upsampling and its backward).

use crate::support::*;
use medsyn::backend::cpu::pool as cpu;
use medsyn::backend::cuda::upsample as gpu_upsample;
use medsyn::cuda::gpu::round_to;

/// (planes, h, w, s): odd sizes, a row wider than one block (w > 256), s = 1 and s = 4.
const CASES: [(usize, usize, usize, usize); 5] = [
    (6, 7, 9, 2),
    (3, 5, 300, 3),
    (2, 16, 16, 1),
    (1, 3, 5, 4),
    (33, 8, 8, 2),
];

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
            let yd = g.poisoned_as(olen, dt).unwrap();
            let dxd = g.poisoned_as(len, dt).unwrap();
            let hw = (h, w);
            gpu_upsample::upsample_nearest2d(g, xd.ptr(), yd.ptr(), planes, hw, s).unwrap();
            gpu_upsample::upsample_nearest2d_backward(g, dyd.ptr(), dxd.ptr(), planes, hw, s)
                .unwrap();

            let y = g.download_f32(&yd).unwrap();
            let dx = g.download_f32(&dxd).unwrap();
            // A copy, and the CPU's summation order: both bit-identical by contract.
            check("upsample_nearest2d", dt, &y, &want, 0.0, 0.0);
            check("upsample_nearest2d_backward", dt, &dx, &want_dx, 0.0, 0.0);
        }
    }
}

#[test]
fn upsample_refuses_short_buffers_wrong_dtypes_and_zero_scale() {
    let Some(g) = gpu() else { return };
    let dt = medsyn::DType::F32;
    let x = g.upload_as(&[0.0; 12], dt).unwrap();
    let y = g.poisoned_as(47, dt).unwrap();
    let err = gpu_upsample::upsample_nearest2d(g, x.ptr(), y.ptr(), 3, (2, 2), 2).unwrap_err();
    assert!(
        err.to_string().contains("output holds 47 elements"),
        "{err}"
    );
    let yh = g.poisoned_as(48, medsyn::DType::F16).unwrap();
    let err = gpu_upsample::upsample_nearest2d(g, x.ptr(), yh.ptr(), 3, (2, 2), 2).unwrap_err();
    assert!(err.to_string().contains("expected F16"), "{err}");
    let err = gpu_upsample::upsample_nearest2d(g, x.ptr(), x.ptr(), 3, (2, 2), 0).unwrap_err();
    assert!(err.to_string().contains("at least 1"), "{err}");
}
