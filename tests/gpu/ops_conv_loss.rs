//! Op-level CUDA paths of the conv / pool / loss family (conv2d, pad2d, max / avg / adaptive
//! pooling, nearest upsampling, InfoNCE, l2_normalize, MSE): each op on random inputs on the
//! CPU and on cuda:0, forward values and gradients compared, the output on cuda:0, the forward
//! not on the host fallback, and the gradients handed on by the backward on the device.

use crate::op_harness::{arg, assert_native, run, Check, DEV};
use crate::support::{gpu, DTYPES};
use medsyn::ops::loss::Reduction;
use medsyn::tensor::{DType, Tensor};

/// (n, c, h, w, o, kernel, stride, padding, dilation, groups, bias)
type ConvCase = (
    usize,
    usize,
    usize,
    usize,
    usize,
    (usize, usize),
    (usize, usize),
    (usize, usize),
    (usize, usize),
    usize,
    bool,
);

/// A 3-channel stem (general kernel), the NHWC fast path (C/groups % 8 == 0) with and without
/// groups, stride 2 with asymmetric kernel and padding, dilation, 1×1, odd sizes.
const CONV: [ConvCase; 7] = [
    (2, 3, 9, 11, 5, (3, 3), (1, 1), (1, 1), (1, 1), 1, true),
    (2, 16, 10, 9, 24, (3, 3), (1, 1), (1, 1), (1, 1), 1, true),
    (1, 16, 8, 8, 8, (3, 3), (1, 1), (1, 1), (1, 1), 2, false),
    (3, 4, 13, 10, 6, (3, 2), (2, 2), (1, 0), (1, 1), 1, true),
    (1, 5, 12, 12, 7, (3, 3), (1, 1), (2, 2), (2, 2), 1, false),
    (2, 32, 5, 7, 130, (1, 1), (1, 1), (0, 0), (1, 1), 1, true),
    (1, 5, 7, 13, 3, (5, 3), (2, 3), (2, 1), (1, 1), 1, true),
];

#[test]
fn conv2d_forward_on_device() {
    let Some(_g) = gpu() else { return };
    for dtype in DTYPES {
        for (seed, &(n, c, h, w, o, k, s, p, d, groups, bias)) in CONV.iter().enumerate() {
            let mut ins = vec![
                arg(&[n, c, h, w], -1.0, 1.0),
                arg(&[o, c / groups, k.0, k.1], -0.5, 0.5),
            ];
            if bias {
                ins.push(arg(&[o], -1.0, 1.0));
            }
            let name = format!("conv2d {n}x{c}x{h}x{w} o{o} k{k:?} s{s:?} p{p:?} d{d:?} g{groups}");
            run(&name, dtype, seed as u64, &ins, Check::inputs(2.0), &|x| {
                x[0].conv2d(&x[1], x.get(2), s, p, d, groups)
            });
        }
        // A transposed (non-contiguous) input and a frozen weight.
        let ins = [
            arg(&[2, 8, 9, 6], -1.0, 1.0).transposed(),
            arg(&[4, 8, 3, 3], -0.5, 0.5).frozen(),
        ];
        run(
            "conv2d transposed frozen",
            dtype,
            99,
            &ins,
            Check::inputs(2.0),
            &|x| x[0].conv2d(&x[1], None, (1, 1), (1, 1), (1, 1), 1),
        );
    }
    assert_native(&["Conv2dBack"]);
}

#[test]
fn conv2d_bad_operands_fail_on_device() {
    let Some(_g) = gpu() else { return };
    let x = Tensor::zeros(&[1, 4, 5, 5], DType::F32)
        .and_then(|t| t.to_device(DEV))
        .unwrap();
    let w = Tensor::zeros(&[2, 3, 3, 3], DType::F32)
        .and_then(|t| t.to_device(DEV))
        .unwrap();
    let e = x.conv2d(&w, None, (1, 1), (1, 1), (1, 1), 1).unwrap_err();
    assert!(e.to_string().contains("conv2d"), "{e}");
    let wb = w.to_dtype(DType::BF16).unwrap();
    assert!(x.conv2d(&wb, None, (1, 1), (1, 1), (1, 1), 1).is_err());
}

#[test]
fn pad2d_on_device() {
    let Some(_g) = gpu() else { return };
    for dtype in DTYPES {
        type Pads = (usize, usize, usize, usize);
        let cases: [(&[usize], Pads); 3] = [
            (&[2, 3, 5, 7], (0, 1, 0, 1)),
            (&[4, 9, 6], (2, 3, 1, 0)),
            (&[3, 4], (0, 0, 0, 0)),
        ];
        for (seed, (shape, (l, r, t, b))) in cases.into_iter().enumerate() {
            run(
                &format!("pad2d {shape:?} {l},{r},{t},{b}"),
                dtype,
                seed as u64,
                &[arg(shape, -1.0, 1.0)],
                Check::inputs(1.0),
                &|x| x[0].pad2d(l, r, t, b),
            );
        }
        run(
            "pad2d transposed",
            dtype,
            5,
            &[arg(&[2, 5, 3], -1.0, 1.0).transposed()],
            Check::inputs(1.0),
            &|x| x[0].pad2d(1, 2, 3, 0),
        );
    }
    assert_native(&["Pad2dBack"]);
}

#[test]
fn pooling_and_upsample_on_device() {
    let Some(_g) = gpu() else { return };
    type Pool = ((usize, usize), (usize, usize), (usize, usize));
    let pools: [(&[usize], Pool); 4] = [
        (&[2, 3, 17, 23], ((3, 3), (2, 2), (1, 1))),
        (&[1, 4, 8, 8], ((2, 2), (2, 2), (0, 0))),
        (&[2, 2, 9, 150], ((3, 2), (1, 3), (1, 1))),
        (&[1, 3, 7, 5], ((4, 5), (3, 2), (2, 2))),
    ];
    for dtype in DTYPES {
        for (seed, (shape, (k, s, p))) in pools.iter().enumerate() {
            let seed = seed as u64;
            let x = [arg(shape, -2.0, 2.0)];
            run(
                &format!("max_pool2d {shape:?} {k:?}"),
                dtype,
                seed,
                &x,
                Check::inputs(1.0),
                &|x| x[0].max_pool2d(*k, *s, *p),
            );
            for cip in [true, false] {
                run(
                    &format!("avg_pool2d {shape:?} {k:?} {cip}"),
                    dtype,
                    seed,
                    &x,
                    Check::inputs(1.0),
                    &|x| x[0].avg_pool2d(*k, *s, *p, cip),
                );
            }
        }
        let adaptive: [(&[usize], (usize, usize)); 4] = [
            (&[2, 6, 7, 7], (1, 1)),
            (&[1, 3, 10, 13], (4, 5)),
            (&[2, 2, 5, 3], (7, 6)),
            (&[1, 5, 33, 150], (7, 7)),
        ];
        for (seed, (shape, (oh, ow))) in adaptive.into_iter().enumerate() {
            run(
                &format!("adaptive_avg_pool2d {shape:?} -> {oh}x{ow}"),
                dtype,
                seed as u64,
                &[arg(shape, -2.0, 2.0)],
                Check::inputs(1.0),
                &|x| x[0].adaptive_avg_pool2d(oh, ow),
            );
        }
        let ups: [(&[usize], usize); 3] =
            [(&[2, 3, 5, 7], 2), (&[1, 4, 3, 130], 3), (&[1, 1, 1, 1], 1)];
        for (seed, (shape, scale)) in ups.into_iter().enumerate() {
            run(
                &format!("upsample_nearest2d {shape:?} x{scale}"),
                dtype,
                seed as u64,
                &[arg(shape, -2.0, 2.0)],
                Check::inputs(1.0),
                &|x| x[0].upsample_nearest2d(scale),
            );
        }
        run(
            "max_pool2d transposed",
            dtype,
            9,
            &[arg(&[1, 2, 6, 9], -2.0, 2.0).transposed()],
            Check::inputs(1.0),
            &|x| x[0].max_pool2d((2, 2), (2, 2), (0, 0)),
        );
    }
    assert_native(&["MaxPoolBack", "AvgPoolBack", "ResizeBack"]);
}

#[test]
fn info_nce_on_device() {
    let Some(_g) = gpu() else { return };
    // (B, d): one tile, several tiles with ragged edges, the widest fused backward, and a
    // width past it (fused forward, host backward).
    let cases = [(5, 7), (130, 64), (33, 300), (9, 768), (6, 800)];
    for dtype in DTYPES {
        for (seed, (b, d)) in cases.into_iter().enumerate() {
            let r = 1.5 / (d as f32).sqrt();
            let emb = [arg(&[b, d], -r, r), arg(&[b, d], -r, r)];
            run(
                &format!("info_nce B{b} d{d}"),
                dtype,
                seed as u64,
                &emb,
                Check::inputs(2.0),
                &|x| x[0].info_nce(&x[1], 0.07),
            );
            // A trainable f32 logit scale; the text side frozen.
            let ins = [
                arg(&[b, d], -r, r),
                arg(&[b, d], -r, r).frozen(),
                arg(&[1], 5.0, 20.0).of(DType::F32),
            ];
            run(
                &format!("info_nce scale B{b} d{d}"),
                dtype,
                seed as u64 + 20,
                &ins,
                Check::inputs(2.0),
                &|x| x[0].info_nce_with_logit_scale(&x[1], &x[2]),
            );
        }
        // The scale in the embeddings' dtype (cast to f32 on the device) and a transposed view.
        let ins = [
            arg(&[40, 24], -0.3, 0.3).transposed(),
            arg(&[24, 40], -0.3, 0.3),
            arg(&[], 5.0, 20.0),
        ];
        run(
            "info_nce scale in dtype",
            dtype,
            77,
            &ins,
            Check::inputs(2.0),
            &|x| x[0].info_nce_with_logit_scale(&x[1], &x[2]),
        );
        // CLIP / ConVIRT: normalised embeddings.
        let emb = [arg(&[17, 33], -1.0, 1.0), arg(&[17, 33], -1.0, 1.0)];
        run(
            "info_nce normalised",
            dtype,
            88,
            &emb,
            Check::inputs(2.0),
            &|x| {
                let (a, b) = (x[0].l2_normalize(-1, 1e-12)?, x[1].l2_normalize(-1, 1e-12)?);
                a.info_nce(&b, 0.1)
            },
        );
    }
    assert_native(&["InfoNceBack", "L2NormalizeBack"]);
}

#[test]
fn l2_normalize_on_device() {
    let Some(_g) = gpu() else { return };
    for dtype in DTYPES {
        // Last dim (inner 1), first dim (outer 1), a 1-wide fibre, tiny rows clamped by eps.
        let cases: [(&[usize], isize, f64, f32); 5] = [
            (&[7, 33], -1, 1e-12, 1.0),
            (&[5, 3, 130], 2, 1e-12, 1.0),
            (&[9, 4, 3], 0, 1e-12, 1.0),
            (&[6, 1], 1, 1e-12, 1.0),
            (&[8, 5], -1, 0.5, 0.1),
        ];
        for (seed, (shape, dim, eps, r)) in cases.into_iter().enumerate() {
            run(
                &format!("l2_normalize {shape:?} dim {dim} eps {eps}"),
                dtype,
                seed as u64,
                &[arg(shape, -r, r)],
                Check::inputs(2.0),
                &|x| x[0].l2_normalize(dim, eps),
            );
        }
        run(
            "l2_normalize transposed",
            dtype,
            50,
            &[arg(&[6, 11], -1.0, 1.0).transposed()],
            Check::inputs(2.0),
            &|x| x[0].l2_normalize(-1, 1e-12),
        );
    }
    assert_native(&["L2NormalizeBack"]);
}

#[test]
fn mse_on_device() {
    let Some(_g) = gpu() else { return };
    for dtype in DTYPES {
        for (seed, red) in [Reduction::Mean, Reduction::Sum, Reduction::None]
            .into_iter()
            .enumerate()
        {
            let ins = [arg(&[3, 5, 7], -1.0, 1.0), arg(&[3, 5, 7], -1.0, 1.0)];
            run(
                &format!("mse {red:?}"),
                dtype,
                seed as u64,
                &ins,
                Check::inputs(2.0),
                &|x| x[0].mse_loss_with(&x[1], red),
            );
            // Mixed dtypes, a frozen target.
            let ins = [
                arg(&[1001], -1.0, 1.0),
                arg(&[1001], -1.0, 1.0).of(DType::F32).frozen(),
            ];
            run(
                &format!("mse mixed {red:?}"),
                dtype,
                seed as u64 + 9,
                &ins,
                Check::inputs(2.0),
                &|x| x[0].mse_loss_with(&x[1], red),
            );
        }
    }
    assert_native(&["MseBack"]);
}
