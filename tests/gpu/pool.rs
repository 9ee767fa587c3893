//! backend::cuda::pool (kernels/pool.cu) vs src/backend/cpu/pool.rs (max pool with its argmax,
//! average pool with and without count_include_pad, adaptive average pool; each with its
//! backward).

use crate::support::*;
use medsyn::backend::cpu::pool::{self as cpu, Pool2dGeom};
use medsyn::backend::cuda::pool as gpu_pool;
use medsyn::cuda::gpu::{round_to, suffix};
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
            let yd = g.poisoned_as(olen, dt).unwrap();
            let idx = g.poisoned::<u32>(olen).unwrap();
            let dxd = g.poisoned_as(len, dt).unwrap();
            let idx_p = g.ptr_of(&idx, DType::I32);
            gpu_pool::max_pool2d(g, &geo, xd.ptr(), yd.ptr(), idx_p).unwrap();
            gpu_pool::max_pool2d_backward(g, &geo, dyd.ptr(), idx_p, dxd.ptr()).unwrap();

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
                let yd = g.poisoned_as(olen, dt).unwrap();
                let dxd = g.poisoned_as(len, dt).unwrap();
                gpu_pool::avg_pool2d(g, &geo, include_pad, xd.ptr(), yd.ptr()).unwrap();
                gpu_pool::avg_pool2d_backward(g, &geo, include_pad, dyd.ptr(), dxd.ptr()).unwrap();

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
            let yd = g.poisoned_as(olen, dt).unwrap();
            let dxd = g.poisoned_as(len, dt).unwrap();
            let (hw, ohw) = ((h, w), (oh, ow));
            gpu_pool::adaptive_avg_pool2d(g, xd.ptr(), yd.ptr(), planes, hw, ohw).unwrap();
            gpu_pool::adaptive_avg_pool2d_backward(g, dyd.ptr(), dxd.ptr(), planes, hw, ohw)
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

#[test]
fn pool_refuses_short_buffers_wrong_dtypes_and_bad_geometry() {
    let Some(g) = gpu() else { return };
    let dt = DType::F32;
    let geo = geom(2, 4, 4, (2, 2), (2, 2), (0, 0));
    let x = g.upload_as(&[0.0; 32], dt).unwrap();
    let y = g.poisoned_as(7, dt).unwrap();
    let err = gpu_pool::avg_pool2d(g, &geo, true, x.ptr(), y.ptr()).unwrap_err();
    assert!(err.to_string().contains("output holds 7 elements"), "{err}");
    let y = g.poisoned_as(8, DType::BF16).unwrap();
    let err = gpu_pool::avg_pool2d(g, &geo, true, x.ptr(), y.ptr()).unwrap_err();
    assert!(err.to_string().contains("expected BF16"), "{err}");
    let y = g.poisoned_as(8, dt).unwrap();
    let idx = g.poisoned::<u32>(8).unwrap();
    let err =
        gpu_pool::max_pool2d(g, &geo, x.ptr(), y.ptr(), g.ptr_of(&idx, DType::I64)).unwrap_err();
    assert!(err.to_string().contains("expected I32"), "{err}");
    let bad = Pool2dGeom { oh: 3, ..geo };
    let err =
        gpu_pool::max_pool2d(g, &bad, x.ptr(), y.ptr(), g.ptr_of(&idx, DType::I32)).unwrap_err();
    assert!(err.to_string().contains("does not match"), "{err}");
    let err = gpu_pool::adaptive_avg_pool2d(g, x.ptr(), y.ptr(), 2, (4, 4), (0, 2)).unwrap_err();
    assert!(err.to_string().contains("non-empty"), "{err}");
}
