//! backend::cuda::softmax (kernels/softmax.cu) vs src/backend/cpu/softmax.rs (softmax,
//! log-softmax, backward; rows and cols).

use crate::support::*;
use medsyn::backend::cpu::softmax as cpu;
use medsyn::backend::cuda::softmax as gpu_softmax;
use medsyn::cuda::gpu::round_to;

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
            let want_dx = cpu::softmax_backward(&round_to(&want, dt), &dy, n, inner, log);

            let xd = g.upload_as(&x, dt).unwrap();
            let dyd = g.upload_as(&dy, dt).unwrap();
            let yd = g.poisoned_as(len, dt).unwrap();
            let dxd = g.poisoned_as(len, dt).unwrap();
            gpu_softmax::softmax(g, xd.ptr(), yd.ptr(), outer, n, inner, log).unwrap();
            gpu_softmax::softmax_backward(g, yd.ptr(), dyd.ptr(), dxd.ptr(), outer, n, inner, log)
                .unwrap();
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

#[test]
fn softmax_refuses_short_buffers_and_mixed_dtypes() {
    let Some(g) = gpu() else { return };
    let dt = medsyn::DType::F32;
    let x = g.upload_as(&[0.0; 10], dt).unwrap();
    let y = g.poisoned_as(9, dt).unwrap();
    let err = gpu_softmax::softmax(g, x.ptr(), y.ptr(), 2, 5, 1, false).unwrap_err();
    assert!(err.to_string().contains("output holds 9 elements"), "{err}");
    let yh = g.poisoned_as(10, medsyn::DType::BF16).unwrap();
    let err = gpu_softmax::softmax(g, x.ptr(), yh.ptr(), 2, 5, 1, false).unwrap_err();
    assert!(err.to_string().contains("expected BF16"), "{err}");
}
