//! kernels/conv.cu vs src/backend/cpu/conv.rs conv2d_forward: the general conv2d_fwd (all dtypes)
//! and the NHWC fast path (layout conversions, conv2d_fwd_nhwc[_n64] whole-depth and split-depth
//! with conv2d_splitk_finish; f16/bf16) on 3x3 / 1x1 / strided / dilated / grouped / batched /
//! non-square geometries and a U-Net-sized 3x3 conv.

use crate::support::*;
use cudarc::driver::sys::CUfunction_attribute_enum;
use cudarc::driver::{CudaFunction, CudaSlice};
use medsyn::backend::cpu::conv::{conv2d_forward, Conv2dGeom};
use medsyn::cuda::gpu::suffix;
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

/// The 16 geometry arguments every conv entry point takes after its pointers, in order.
fn geom_args(geo: &Conv2dGeom) -> [i32; 16] {
    let i = |v: usize| v as i32;
    [
        i(geo.n),
        i(geo.c),
        i(geo.h),
        i(geo.w),
        i(geo.o),
        i(geo.kh),
        i(geo.kw),
        i(geo.oh),
        i(geo.ow),
        i(geo.stride.0),
        i(geo.stride.1),
        i(geo.padding.0),
        i(geo.padding.1),
        i(geo.dilation.0),
        i(geo.dilation.1),
        i(geo.groups),
    ]
}

/// The function with its dynamic shared-memory limit raised to `smem` bytes.
fn kernel(g: &Gpu, name: &str, smem: u32) -> CudaFunction {
    let f = g.function("conv", name).unwrap();
    f.set_attribute(
        CUfunction_attribute_enum::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
        smem as i32,
    )
    .unwrap_or_else(|e| panic!("{name}: raising dynamic shared memory to {smem}: {e}"));
    f
}

/// The NHWC fast path as the launch contract's steps a-e: x -> xt, w -> wt, (zero ws), conv2d_fwd_nhwc
/// (tbn 128) or conv2d_fwd_nhwc_n64 (tbn 64) with `splits`, (conv2d_splitk_finish).
#[allow(clippy::too_many_arguments)]
fn launch_nhwc(
    g: &Gpu,
    geo: &Conv2dGeom,
    dt: DType,
    x: &DevBuf,
    w: &DevBuf,
    b: Option<&DevBuf>,
    y: &mut DevBuf,
    tbn: usize,
    splits: usize,
) {
    let s = suffix(dt).unwrap();
    let stream = g.stream();
    let null = 0u64;
    let mut xt = g.poisoned_as(geo.n * geo.c * geo.h * geo.w, dt).unwrap();
    let mut wt = g.poisoned_as(geo.weight_len(), dt).unwrap();
    // a. x [N,C,H,W] -> xt [N,H,W,C]
    let (c, hw) = (geo.c as i32, (geo.h * geo.w) as i64);
    let f = g
        .function("conv", &format!("conv2d_nchw_to_nhwc_{s}"))
        .unwrap();
    let cfg = LaunchConfig {
        grid_dim: (
            (geo.h * geo.w).div_ceil(32) as u32,
            geo.c.div_ceil(32) as u32,
            geo.n as u32,
        ),
        block_dim: (32, 8, 1),
        shared_mem_bytes: 33 * 32 * dt.size_in_bytes() as u32,
    };
    unsafe {
        stream
            .launch_builder(&f)
            .arg(&x.bytes)
            .arg(&mut xt.bytes)
            .arg(&c)
            .arg(&hw)
            .launch(cfg)
    }
    .unwrap();
    // b. w [O,cg,KH,KW] -> wt [O,KH,KW,cg] (3 blocks: the grid-stride loop runs several passes)
    let (o, cg, khw) = (geo.o as i32, geo.cg() as i32, (geo.kh * geo.kw) as i32);
    let f = g
        .function("conv", &format!("conv2d_weight_to_ohwi_{s}"))
        .unwrap();
    unsafe {
        stream
            .launch_builder(&f)
            .arg(&w.bytes)
            .arg(&mut wt.bytes)
            .arg(&o)
            .arg(&cg)
            .arg(&khw)
            .launch(grid(3, 256, 0))
    }
    .unwrap();
    // c. the zeroed f32 workspace (split depth only)
    let total = geo.n * geo.o * geo.oh * geo.ow;
    let ws: Option<CudaSlice<f32>> = (splits > 1).then(|| g.zeros::<f32>(total).unwrap());
    // d. the conv
    let (name, smem) = if tbn == 128 {
        (format!("conv2d_fwd_nhwc_{s}"), 81920)
    } else {
        (format!("conv2d_fwd_nhwc_n64_{s}"), 61440)
    };
    let f = kernel(g, &name, smem);
    let m = geo.n * geo.oh * geo.ow;
    let cfg = LaunchConfig {
        grid_dim: (
            m.div_ceil(128) as u32,
            geo.og().div_ceil(tbn) as u32,
            (geo.groups * splits) as u32,
        ),
        block_dim: (256, 1, 1),
        shared_mem_bytes: smem,
    };
    let ga = geom_args(geo);
    let sp = splits as i32;
    let mut lb = stream.launch_builder(&f);
    lb.arg(&xt.bytes).arg(&wt.bytes);
    match b {
        Some(b) => lb.arg(&b.bytes),
        None => lb.arg(&null),
    };
    lb.arg(&mut y.bytes);
    for v in &ga {
        lb.arg(v);
    }
    match &ws {
        Some(ws) => lb.arg(ws),
        None => lb.arg(&null),
    };
    lb.arg(&sp);
    unsafe { lb.launch(cfg) }.unwrap();
    // e. y = ws + bias
    if let Some(ws) = &ws {
        let (tot, o, p) = (total as i64, geo.o as i32, (geo.oh * geo.ow) as i64);
        let f = g
            .function("conv", &format!("conv2d_splitk_finish_{s}"))
            .unwrap();
        let mut lb = stream.launch_builder(&f);
        lb.arg(ws);
        match b {
            Some(b) => lb.arg(&b.bytes),
            None => lb.arg(&null),
        };
        lb.arg(&mut y.bytes).arg(&tot).arg(&o).arg(&p);
        unsafe { lb.launch(grid(total.div_ceil(256).min(8192) as u32, 256, 0)) }.unwrap();
    }
    g.sync().unwrap(); // xt, wt, ws are dropped on return
}

/// Launches conv2d_fwd_{suffix} as its launch contract says: tiles 128x128 (f16/bf16, 40960
/// bytes of shared memory) or 64x64 (f32, 8192 bytes), block 256, grid.z = groups.
fn launch(
    g: &Gpu,
    geo: &Conv2dGeom,
    dt: DType,
    x: &DevBuf,
    w: &DevBuf,
    b: Option<&DevBuf>,
    y: &mut DevBuf,
) {
    let s = suffix(dt).unwrap();
    let f = g.function("conv", &format!("conv2d_fwd_{s}")).unwrap();
    let (tile, smem) = if dt == DType::F32 {
        (64, 8192)
    } else {
        (128, 40960)
    };
    let m = geo.n * geo.oh * geo.ow;
    let cfg = LaunchConfig {
        grid_dim: (
            m.div_ceil(tile) as u32,
            geo.og().div_ceil(tile) as u32,
            geo.groups as u32,
        ),
        block_dim: (256, 1, 1),
        shared_mem_bytes: smem,
    };
    let ga = geom_args(geo);
    let null = 0u64;
    let stream = g.stream();
    let mut lb = stream.launch_builder(&f);
    lb.arg(&x.bytes).arg(&w.bytes);
    match b {
        Some(b) => lb.arg(&b.bytes),
        None => lb.arg(&null),
    };
    lb.arg(&mut y.bytes);
    for v in &ga {
        lb.arg(v);
    }
    unsafe { lb.launch(cfg) }.unwrap();
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
            let mut yd = g.poisoned_as(want.len(), dt).unwrap();
            launch(g, &geo, dt, &xd, &wd, bd.as_ref(), &mut yd);
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

            // The NHWC fast path (f16/bf16, C/groups % 8 == 0): both tile widths, whole and
            // split depth (3 ways; the f32 partial sums differ in order only).
            if dt == DType::F32 || !geo.cg().is_multiple_of(8) {
                continue;
            }
            for (tbn, splits) in [(128, 1), (64, 1), (128, 3), (64, 3)] {
                let mut yd = g.poisoned_as(want.len(), dt).unwrap();
                launch_nhwc(g, &geo, dt, &xd, &wd, bd.as_ref(), &mut yd, tbn, splits);
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
