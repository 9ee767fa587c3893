//! backend::cuda::conv (kernels/conv.cu) vs src/backend/cpu/conv.rs conv2d_forward: the general
//! conv2d_fwd (all dtypes), the automatic choice (conv2d_forward) and the NHWC fast path step by
//! step (layout conversions, conv2d_fwd_nhwc[_n64] whole-depth and split-depth with
//! conv2d_splitk_finish; f16/bf16) on 3x3 / 1x1 / strided / dilated / grouped / batched /
//! non-square geometries and a U-Net-sized 3x3 conv; validation errors; the launch choice.

use crate::support::*;
use medsyn::backend::cpu::conv::{conv2d_forward, Conv2dGeom};
use medsyn::backend::cuda::conv::{self as gpu_conv, NhwcLaunch};
use medsyn::cuda::gpu::{suffix, Ptr};
use medsyn::cuda::{DevBuf, Gpu};
use medsyn::tensor::DType;

/// (name, n, c, h, w, o, (kh, kw), stride, padding, dilation, groups, bias)
type Case = (
    &'static str,
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

const CASES: [Case; 12] = [
    (
        "3x3 pad 1",
        1,
        20,
        9,
        11,
        24,
        (3, 3),
        (1, 1),
        (1, 1),
        (1, 1),
        1,
        true,
    ),
    (
        "3x3 stride 2",
        1,
        16,
        13,
        13,
        40,
        (3, 3),
        (2, 2),
        (1, 1),
        (1, 1),
        1,
        false,
    ),
    (
        "1x1 batch 2",
        2,
        24,
        10,
        10,
        136,
        (1, 1),
        (1, 1),
        (0, 0),
        (1, 1),
        1,
        true,
    ),
    (
        "3x3 dilation 2",
        1,
        12,
        12,
        12,
        20,
        (3, 3),
        (1, 1),
        (2, 2),
        (2, 2),
        1,
        true,
    ),
    (
        "groups 2 batch 2",
        2,
        20,
        7,
        9,
        24,
        (3, 3),
        (1, 1),
        (1, 1),
        (1, 1),
        2,
        true,
    ),
    (
        "groups 2 K%8",
        1,
        16,
        8,
        8,
        16,
        (3, 3),
        (1, 1),
        (1, 1),
        (1, 1),
        2,
        false,
    ),
    (
        "2x3 mixed",
        3,
        5,
        7,
        10,
        7,
        (2, 3),
        (2, 1),
        (0, 1),
        (1, 2),
        1,
        true,
    ),
    (
        "3x3 K=360 O=130",
        1,
        40,
        6,
        6,
        130,
        (3, 3),
        (1, 1),
        (1, 1),
        (1, 1),
        1,
        true,
    ),
    (
        "stride 2 odd",
        2,
        33,
        17,
        15,
        70,
        (3, 3),
        (2, 2),
        (1, 1),
        (1, 1),
        1,
        true,
    ),
    (
        "unet 2x320x32x32",
        2,
        320,
        32,
        32,
        320,
        (3, 3),
        (1, 1),
        (1, 1),
        (1, 1),
        1,
        true,
    ),
    (
        "groups 2 C=64 O=144",
        2,
        64,
        9,
        9,
        144,
        (3, 3),
        (1, 1),
        (1, 1),
        (1, 1),
        2,
        true,
    ),
    (
        "3x2 s2,1 p1,0 d2,1",
        2,
        32,
        11,
        13,
        48,
        (3, 2),
        (2, 1),
        (1, 0),
        (2, 1),
        1,
        false,
    ),
];

fn geom(c: &Case) -> Conv2dGeom {
    let &(_, n, ch, h, w, o, (kh, kw), stride, padding, dilation, groups, _) = c;
    let oh = (h + 2 * padding.0 - dilation.0 * (kh - 1) - 1) / stride.0 + 1;
    let ow = (w + 2 * padding.1 - dilation.1 * (kw - 1) - 1) / stride.1 + 1;
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
        oh,
        ow,
    }
}

/// The NHWC fast path step by step as the runtime launches it: x -> xt, w -> wt (3 blocks: the
/// grid-stride loop runs several passes), conv2d_fwd_nhwc[_n64] with `tbn` and `splits` (a
/// poisoned f32 workspace, which the launch zeroes, and conv2d_splitk_finish when split).
#[allow(clippy::too_many_arguments)]
fn launch_nhwc(
    g: &Gpu,
    geo: &Conv2dGeom,
    dt: DType,
    x: &DevBuf,
    w: &DevBuf,
    b: Ptr,
    y: &DevBuf,
    tbn: usize,
    splits: usize,
) {
    let xt = g.poisoned_as(geo.n * geo.c * geo.h * geo.w, dt).unwrap();
    let wt = g.poisoned_as(geo.weight_len(), dt).unwrap();
    gpu_conv::conv2d_nchw_to_nhwc(g, geo, x.ptr(), xt.ptr()).unwrap();
    gpu_conv::conv2d_weight_to_ohwi(g, geo, w.ptr(), wt.ptr(), Some(3)).unwrap();
    let total = geo.n * geo.o * geo.oh * geo.ow;
    let ws = (splits > 1).then(|| g.poisoned::<f32>(total).unwrap());
    let ws_ptr = ws
        .as_ref()
        .map_or(Ptr::null(DType::F32), |ws| g.ptr_of(ws, DType::F32));
    let launch = NhwcLaunch { tbn, splits };
    gpu_conv::conv2d_fwd_nhwc(g, geo, xt.ptr(), wt.ptr(), b, y.ptr(), ws_ptr, launch).unwrap();
    g.sync().unwrap(); // xt, wt, ws are dropped on return
}

#[test]
fn conv2d_forward_matches_cpu() {
    let Some(g) = gpu() else { return };
    for (ci, case) in CASES.iter().enumerate() {
        let geo = geom(case);
        let has_bias = case.11;
        let k = geo.kg();
        for dt in DTYPES {
            let seed = 700 + 10 * ci as u64;
            let x = uniform_as(seed, geo.n * geo.c * geo.h * geo.w, -1.0, 1.0, dt);
            let w = uniform_as(seed + 1, geo.weight_len(), -0.5, 0.5, dt);
            let bias = has_bias.then(|| uniform_as(seed + 2, geo.o, -1.0, 1.0, dt));
            let want = conv2d_forward::<f32>(&geo, &x, &w, bias.as_deref());

            let xd = g.upload_as(&x, dt).unwrap();
            let wd = g.upload_as(&w, dt).unwrap();
            let bd = bias.as_ref().map(|b| g.upload_as(b, dt).unwrap());
            let bp = bd.as_ref().map_or(Ptr::null(dt), |b| b.ptr());
            let yd = g.poisoned_as(want.len(), dt).unwrap();
            gpu_conv::conv2d_forward_general(g, &geo, xd.ptr(), wd.ptr(), bp, yd.ptr()).unwrap();
            let got = g.download_f32(&yd).unwrap();

            // Both sides see the same rounded inputs; they differ by the output's rounding to
            // dt (rtol) and f32 summation order over K terms (CPU: GEMM or Winograd for f32),
            // whose absolute size grows like sqrt(K) times the terms' scale.
            let per_term = match dt {
                DType::F32 => 1e-5,
                DType::F16 => 2e-5,
                _ => 1e-4,
            };
            let atol = per_term * (k as f64).sqrt();
            eprintln!("conv2d_fwd {} {}: K={k}", case.0, suffix(dt).unwrap());
            check("conv2d_fwd", dt, &got, &want, atol, rtol(dt));

            // The automatic choice (the fast path with the contract's tile width and split
            // count where it applies, scratch from the allocator; else conv2d_fwd).
            let yd = g.poisoned_as(want.len(), dt).unwrap();
            gpu_conv::conv2d_forward(g, &geo, xd.ptr(), wd.ptr(), bp, yd.ptr()).unwrap();
            let got = g.download_f32(&yd).unwrap();
            check("conv2d_forward", dt, &got, &want, atol, rtol(dt));

            // The NHWC fast path (f16/bf16, C/groups % 8 == 0): both tile widths, whole and
            // split depth (3 ways; the f32 partial sums differ in order only).
            if dt == DType::F32 || !geo.cg().is_multiple_of(8) {
                continue;
            }
            // The contract allows at most one split per 32-deep stage (the 1x1 case, depth 24,
            // runs whole depth only).
            for (tbn, splits) in [(128, 1), (64, 1), (128, 3), (64, 3)] {
                let splits = splits.min(k.div_ceil(32));
                let yd = g.poisoned_as(want.len(), dt).unwrap();
                launch_nhwc(g, &geo, dt, &xd, &wd, bp, &yd, tbn, splits);
                let got = g.download_f32(&yd).unwrap();
                let name = if tbn == 128 {
                    "conv2d_fwd_nhwc"
                } else {
                    "conv2d_fwd_nhwc_n64"
                };
                let name = if splits > 1 {
                    format!("{name} split")
                } else {
                    name.to_string()
                };
                check(&name, dt, &got, &want, atol, rtol(dt));
            }
        }
    }
}

#[test]
fn conv2d_refuses_bad_buffers_and_launches() {
    let Some(g) = gpu() else { return };
    let geo = geom(&CASES[0]); // 1x20x9x11 -> 24 channels, 3x3 pad 1
    let dt = DType::BF16;
    let x = g.poisoned_as(geo.n * geo.c * geo.h * geo.w, dt).unwrap();
    let w = g.poisoned_as(geo.weight_len(), dt).unwrap();
    let y = g.poisoned_as(geo.n * geo.o * geo.oh * geo.ow, dt).unwrap();
    let none = Ptr::null(dt);
    let short = g.poisoned_as(geo.o - 1, dt).unwrap();
    let err =
        gpu_conv::conv2d_forward(g, &geo, x.ptr(), w.ptr(), short.ptr(), y.ptr()).unwrap_err();
    assert!(err.to_string().contains("bias holds 23 elements"), "{err}");
    let wf = g.poisoned_as(geo.weight_len(), DType::F32).unwrap();
    let err = gpu_conv::conv2d_forward(g, &geo, x.ptr(), wf.ptr(), none, y.ptr()).unwrap_err();
    assert!(err.to_string().contains("expected BF16"), "{err}");
    let mut bad = geo;
    bad.oh += 1;
    let err = gpu_conv::conv2d_forward(g, &bad, x.ptr(), w.ptr(), none, y.ptr()).unwrap_err();
    assert!(err.to_string().contains("does not match"), "{err}");
    // C/groups = 20 is no multiple of 8: the NHWC kernels refuse it.
    let err = gpu_conv::conv2d_fwd_nhwc(
        g,
        &geo,
        x.ptr(),
        w.ptr(),
        none,
        y.ptr(),
        Ptr::null(DType::F32),
        NhwcLaunch { tbn: 64, splits: 1 },
    )
    .unwrap_err();
    assert!(err.to_string().contains("C/groups % 8"), "{err}");
    // A split launch without its workspace.
    let geo = geom(&CASES[9]); // 320 -> 320 channels, depth 2880
    let x = g.poisoned_as(geo.n * geo.c * geo.h * geo.w, dt).unwrap();
    let w = g.poisoned_as(geo.weight_len(), dt).unwrap();
    let y = g.poisoned_as(geo.n * geo.o * geo.oh * geo.ow, dt).unwrap();
    let launch = NhwcLaunch {
        tbn: 128,
        splits: 2,
    };
    let (xp, wp, yp, ws) = (x.ptr(), w.ptr(), y.ptr(), Ptr::null(DType::F32));
    let err = gpu_conv::conv2d_fwd_nhwc(g, &geo, xp, wp, none, yp, ws, launch).unwrap_err();
    assert!(
        err.to_string()
            .contains("ws (f32 workspace) is a null pointer"),
        "{err}"
    );
    let launch = NhwcLaunch { tbn: 96, splits: 1 };
    let err = gpu_conv::conv2d_fwd_nhwc(g, &geo, xp, wp, none, yp, ws, launch).unwrap_err();
    assert!(err.to_string().contains("tile width 96"), "{err}");
}

#[test]
fn nhwc_launch_choice_follows_the_contract() {
    // Host-only: the contract's "Choice" on an H200 (132 SMs).
    let geo = |n: usize, c: usize, o: usize, hw: usize| Conv2dGeom {
        n,
        c,
        h: hw,
        w: hw,
        o,
        kh: 3,
        kw: 3,
        stride: (1, 1),
        padding: (1, 1),
        dilation: (1, 1),
        groups: 1,
        oh: hw,
        ow: hw,
    };
    // 2x1280x16x16: 4 pixel blocks x 10 channel blocks = 40 blocks -> 6 splits (kt 360 / 4 > 8).
    let l = NhwcLaunch::choose(&geo(2, 1280, 1280, 16), 132);
    assert_eq!(
        l,
        NhwcLaunch {
            tbn: 128,
            splits: 6
        }
    );
    // 32x64x56x56: O <= 64 -> tbn 64; 784 blocks -> no split.
    let l = NhwcLaunch::choose(&geo(32, 64, 64, 56), 132);
    assert_eq!(l, NhwcLaunch { tbn: 64, splits: 1 });
    // 1x8x4x4 with 200 outputs: 1 x 2 blocks, depth 72 (3 stages) -> split cap 1.
    let l = NhwcLaunch::choose(&geo(1, 8, 200, 4), 132);
    assert_eq!(
        l,
        NhwcLaunch {
            tbn: 128,
            splits: 1
        }
    );
}
