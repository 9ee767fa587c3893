//! backend::cuda::conv_backward (kernels/conv_backward.cu + cuBLAS) vs src/backend/cpu/conv.rs
//! conv2d_backward: im2col_cn bit for bit, dx / dw through the launch function (both, dx only,
//! dw only) on strided / padded / dilated / grouped / 1x1 / batch-1 / odd geometries, and the
//! tensor op's gradients (conv2d on cuda:0 vs the CPU, frozen inputs) in f32, bf16, f16.

use crate::support::*;
use medsyn::backend::cpu::conv::{conv2d_backward as cpu_backward, Conv2dGeom};
use medsyn::backend::cuda::conv_backward as gpu_bwd;
use medsyn::cuda::gpu::{suffix, Ptr};
use medsyn::tensor::{DType, Device, Tensor};

const DEV: Device = Device::Cuda(0);

/// (n, c, (h, w), o, (kh, kw), stride, padding, dilation, groups)
type Case = (
    usize,
    usize,
    (usize, usize),
    usize,
    (usize, usize),
    (usize, usize),
    (usize, usize),
    (usize, usize),
    usize,
);

const CASES: [Case; 8] = [
    (2, 3, (9, 11), 5, (3, 3), (1, 1), (1, 1), (1, 1), 1),
    (3, 4, (13, 10), 6, (3, 2), (2, 2), (1, 0), (1, 1), 2),
    (2, 6, (12, 12), 9, (3, 3), (1, 2), (2, 1), (2, 2), 3),
    (1, 8, (7, 13), 16, (5, 3), (2, 3), (2, 1), (1, 1), 4),
    (2, 32, (5, 7), 40, (1, 1), (1, 1), (0, 0), (1, 1), 1),
    (3, 4, (5, 5), 4, (3, 3), (2, 2), (3, 3), (1, 1), 4),
    (2, 32, (16, 16), 48, (3, 3), (1, 1), (1, 1), (1, 1), 1),
    (1, 3, (11, 13), 5, (4, 4), (3, 2), (1, 2), (1, 3), 1),
];

fn geom(c: &Case) -> Conv2dGeom {
    let &(n, ch, (h, w), o, (kh, kw), stride, padding, dilation, groups) = c;
    Conv2dGeom {
        n,
        c: ch,
        h,
        w,
        o,
        kh,
        kw,
        stride,
        padding,
        dilation,
        groups,
        oh: (h + 2 * padding.0 - dilation.0 * (kh - 1) - 1) / stride.0 + 1,
        ow: (w + 2 * padding.1 - dilation.1 * (kw - 1) - 1) / stride.1 + 1,
    }
}

/// Tolerance relative to the output's largest magnitude: f32 summation order, and for the
/// half types the GPU's rounding of dw / dcol to the dtype (the CPU twin runs in f32 on the
/// rounded inputs without those roundings).
fn scale_tol(dt: DType) -> f64 {
    match dt {
        DType::F32 => 5e-5,
        DType::F16 => 4e-3,
        _ => 3e-2,
    }
}

fn check_scaled(name: &str, dt: DType, got: &[f32], want: &[f32]) {
    let scale = want.iter().fold(0f64, |m, v| m.max(v.abs() as f64));
    check(
        name,
        dt,
        got,
        want,
        scale_tol(dt) * scale.max(1e-3),
        rtol(dt),
    );
}

/// im2col in the col layout [C·KH·KW, N·OH·OW] (0 in the padding).
fn im2col_ref(g: &Conv2dGeom, x: &[f32]) -> Vec<f32> {
    let (p, np) = (g.oh * g.ow, g.n * g.oh * g.ow);
    let mut col = vec![0f32; g.c * g.kh * g.kw * np];
    for (i, v) in col.iter_mut().enumerate() {
        let (r, j) = (i / np, i % np);
        let (img, q) = (j / p, j % p);
        let (oy, ox) = (q / g.ow, q % g.ow);
        let (ch, ki, kj) = (r / (g.kh * g.kw), (r / g.kw) % g.kh, r % g.kw);
        let iy = (oy * g.stride.0 + ki * g.dilation.0) as i64 - g.padding.0 as i64;
        let ix = (ox * g.stride.1 + kj * g.dilation.1) as i64 - g.padding.1 as i64;
        if iy >= 0 && ix >= 0 && (iy as usize) < g.h && (ix as usize) < g.w {
            *v = x[((img * g.c + ch) * g.h + iy as usize) * g.w + ix as usize];
        }
    }
    col
}

#[test]
fn conv_backward_launch_matches_cpu() {
    let Some(g) = gpu() else { return };
    let mut fails = Vec::new();
    for (ci, case) in CASES.iter().enumerate() {
        let geo = geom(case);
        for dt in DTYPES {
            let seed = 900 + 10 * ci as u64;
            let in_len = geo.n * geo.c * geo.h * geo.w;
            let x = uniform_as(seed, in_len, -1.0, 1.0, dt);
            let w = uniform_as(seed + 1, geo.weight_len(), -0.5, 0.5, dt);
            let dy = uniform_as(seed + 2, geo.n * geo.o * geo.oh * geo.ow, -1.0, 1.0, dt);
            let (want_dx, want_dw) = cpu_backward::<f32>(&geo, Some(&x), Some(&w), &dy);
            let (want_dx, want_dw) = (want_dx.unwrap(), want_dw.unwrap());
            let what = format!("{case:?} {}", suffix(dt).unwrap());
            eprintln!("conv2d backward {what}");
            soft(&mut fails, what, || {
                let xd = g.upload_as(&x, dt).unwrap();
                let wd = g.upload_as(&w, dt).unwrap();
                let dyd = g.upload_as(&dy, dt).unwrap();

                // im2col alone: a copy, bit for bit.
                let col = g.poisoned_as(gpu_bwd::col_len(&geo), dt).unwrap();
                gpu_bwd::im2col(g, &geo, xd.ptr(), col.ptr()).unwrap();
                let got = g.download_f32(&col).unwrap();
                let want = im2col_ref(&geo, &x);
                let same = got
                    .iter()
                    .zip(&want)
                    .all(|(a, b)| a.to_bits() == b.to_bits());
                check_exact(
                    &format!("im2col_cn {}", suffix(dt).unwrap()),
                    &[same],
                    &[true],
                );

                // Both gradients.
                let dx = g.poisoned_as(in_len, dt).unwrap();
                let dw = g.poisoned_as(geo.weight_len(), dt).unwrap();
                gpu_bwd::conv2d_backward(
                    g,
                    &geo,
                    xd.ptr(),
                    wd.ptr(),
                    dyd.ptr(),
                    dx.ptr(),
                    dw.ptr(),
                )
                .unwrap();
                check_scaled(
                    "conv2d_backward dx",
                    dt,
                    &g.download_f32(&dx).unwrap(),
                    &want_dx,
                );
                check_scaled(
                    "conv2d_backward dw",
                    dt,
                    &g.download_f32(&dw).unwrap(),
                    &want_dw,
                );

                // dx only (no x), dw only (no w).
                let null = Ptr::null(dt);
                let dx = g.poisoned_as(in_len, dt).unwrap();
                gpu_bwd::conv2d_backward(g, &geo, null, wd.ptr(), dyd.ptr(), dx.ptr(), null)
                    .unwrap();
                check_scaled(
                    "conv2d_backward dx only",
                    dt,
                    &g.download_f32(&dx).unwrap(),
                    &want_dx,
                );
                let dw = g.poisoned_as(geo.weight_len(), dt).unwrap();
                gpu_bwd::conv2d_backward(g, &geo, xd.ptr(), null, dyd.ptr(), null, dw.ptr())
                    .unwrap();
                check_scaled(
                    "conv2d_backward dw only",
                    dt,
                    &g.download_f32(&dw).unwrap(),
                    &want_dw,
                );
                g.sync().unwrap();
            });
        }
    }
    finish(fails);
}

#[test]
fn conv_backward_validation_refuses_bad_buffers() {
    let Some(g) = gpu() else { return };
    let geo = geom(&CASES[1]);
    let dt = DType::F32;
    let in_len = geo.n * geo.c * geo.h * geo.w;
    let x = g.poisoned_as(in_len, dt).unwrap();
    let w = g.poisoned_as(geo.weight_len(), dt).unwrap();
    let dy = g.poisoned_as(geo.n * geo.o * geo.oh * geo.ow, dt).unwrap();
    let dx = g.poisoned_as(in_len, dt).unwrap();
    let short = g.poisoned_as(geo.weight_len() - 1, dt).unwrap();
    let e = gpu_bwd::conv2d_backward(g, &geo, x.ptr(), w.ptr(), dy.ptr(), dx.ptr(), short.ptr())
        .unwrap_err();
    assert!(
        e.to_string().contains("conv2d backward") && e.to_string().contains("dw"),
        "{e}"
    );
    let half = g.poisoned_as(geo.weight_len(), DType::BF16).unwrap();
    let e = gpu_bwd::conv2d_backward(g, &geo, x.ptr(), w.ptr(), dy.ptr(), dx.ptr(), half.ptr())
        .unwrap_err();
    assert!(e.to_string().contains("dw"), "{e}");
    let e = gpu_bwd::col2im(g, &geo, short.ptr(), dx.ptr()).unwrap_err();
    assert!(e.to_string().contains("dcol"), "{e}");
    let bad = Conv2dGeom {
        oh: geo.oh + 1,
        ..geo
    };
    assert!(gpu_bwd::im2col(g, &bad, x.ptr(), dx.ptr()).is_err());
}

/// conv2d on cuda:0 vs the CPU: the gradients of sum(y·r) (r a fixed weighting) for x, w and
/// bias (those not frozen) are on cuda:0 and match.
fn op_case(case: &Case, dt: DType, seed: u64, bias: bool, frozen: [bool; 2]) {
    let geo = geom(case);
    let &(n, c, (h, w), o, (kh, kw), s, p, d, groups) = case;
    let shapes = [vec![n, c, h, w], vec![o, c / groups, kh, kw], vec![o]];
    let ranges = [(-1.0, 1.0), (-0.5, 0.5), (-1.0, 1.0)];
    let count = if bias { 3 } else { 2 };
    let r = uniform(seed + 9, n * o * geo.oh * geo.ow, -1.0, 1.0);
    let mut grads: Vec<Vec<Option<Tensor>>> = Vec::new();
    for device in [Device::Cpu, DEV] {
        let leaves: Vec<Tensor> = (0..count)
            .map(|i| {
                let len = shapes[i].iter().product();
                let vals = uniform(seed + i as u64, len, ranges[i].0, ranges[i].1);
                let t = Tensor::from_values(vals, &shapes[i], dt)
                    .and_then(|t| t.to_device(device))
                    .unwrap();
                if i < 2 && frozen[i] {
                    t
                } else {
                    t.into_param().unwrap()
                }
            })
            .collect();
        let y = leaves[0]
            .conv2d(&leaves[1], leaves.get(2), s, p, d, groups)
            .unwrap();
        assert_eq!(y.device(), device);
        let rw = Tensor::from_values(r.clone(), y.shape(), dt)
            .and_then(|t| t.to_device(device))
            .unwrap();
        y.mul(&rw)
            .and_then(|l| l.sum_all())
            .and_then(|l| l.backward())
            .unwrap();
        grads.push(leaves.iter().map(|l| l.grad()).collect());
    }
    for (i, (want, got)) in grads[0].iter().zip(&grads[1]).enumerate() {
        let name = format!("conv2d op d{i} {case:?}");
        match (want, got) {
            (Some(want), Some(got)) => {
                assert_eq!(got.device(), DEV, "{name}: gradient device");
                assert_eq!(got.shape(), want.shape(), "{name}: shape");
                assert_eq!(got.dtype(), dt, "{name}: dtype");
                check_scaled("conv2d op grad", dt, &got.to_vec_f32(), &want.to_vec_f32());
            }
            (None, None) => assert!(i < 2 && frozen[i], "{name}: no gradient"),
            _ => panic!("{name}: a gradient on one device only"),
        }
    }
}

#[test]
fn conv2d_op_gradients_on_device() {
    let Some(_g) = gpu() else { return };
    let mut fails = Vec::new();
    for dt in DTYPES {
        for (ci, case) in CASES.iter().enumerate() {
            let what = format!("{case:?} {dt:?}");
            soft(&mut fails, what, || {
                op_case(case, dt, 40 + ci as u64, ci % 2 == 0, [false, false])
            });
        }
        soft(&mut fails, format!("frozen weight {dt:?}"), || {
            op_case(&CASES[1], dt, 77, true, [false, true])
        });
        soft(&mut fails, format!("frozen input {dt:?}"), || {
            op_case(&CASES[2], dt, 78, false, [true, false])
        });
    }
    finish(fails);
}
