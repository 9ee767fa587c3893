//! conv2d, pad2d, pooling and nearest upsampling: values and gradients against PyTorch
//! fixtures (f32 and bf16), f64 finite differences, a direct-loop reference on larger
//! shapes (both threading modes, several im2col tiles), frozen inputs, and bad input.

mod common;
use common::*;
use medsyn::tensor::Philox;
use medsyn::{DType, Result, Tensor};

const CONV: [&str; 10] = [
    "conv_1x1",
    "conv_1x1_s2",
    "conv_3x3_s1",
    "conv_3x3_s2",
    "conv_7x7_s2",
    "conv_vae_down",
    "conv_dilated",
    "conv_groups",
    "conv_depthwise",
    "conv_1x1_groups",
];
const MAX: [&str; 3] = ["max_3x3_s2_p1", "max_2x2_s2", "max_3x2_s12_p11"];
const AVG: [&str; 3] = ["avg_3x3_s2_p1_incl", "avg_3x3_s2_p1_excl", "avg_2x2_s2"];
const ADAPTIVE: [&str; 3] = ["adaptive_1x1", "adaptive_3x4", "adaptive_up_5x7"];
const UPSAMPLE: [&str; 2] = ["upsample_2x", "upsample_3x"];

type Op = Box<dyn Fn(&[Tensor]) -> Result<Tensor>>;

fn cfg(fx: &Fixture, name: &str) -> Vec<usize> {
    fx.get(&format!("{name}.cfg"))
        .to_vec_i64()
        .into_iter()
        .map(|v| v as usize)
        .collect()
}

/// The op of fixture case `name` (with the keys of its inputs), built from its cfg.
fn case(fx: &Fixture, name: &str) -> (Vec<&'static str>, Op) {
    let c = cfg(fx, name);
    let one = vec!["x"];
    let op: Op = match name.split('_').next().unwrap() {
        "conv" => {
            let (s, p, d, groups, pre) = (
                (c[0], c[1]),
                (c[2], c[3]),
                (c[4], c[5]),
                c[6],
                (c[7], c[8], c[9], c[10]),
            );
            let keys = if fx.has(&format!("{name}.b")) {
                vec!["x", "w", "b"]
            } else {
                vec!["x", "w"]
            };
            let f: Op = Box::new(move |xs: &[Tensor]| {
                let x = if pre != (0, 0, 0, 0) {
                    xs[0].pad2d(pre.0, pre.1, pre.2, pre.3)?
                } else {
                    xs[0].clone()
                };
                x.conv2d(&xs[1], xs.get(2), s, p, d, groups)
            });
            return (keys, f);
        }
        "max" => Box::new(move |xs: &[Tensor]| {
            xs[0].max_pool2d((c[0], c[1]), (c[2], c[3]), (c[4], c[5]))
        }),
        "avg" => Box::new(move |xs: &[Tensor]| {
            xs[0].avg_pool2d((c[0], c[1]), (c[2], c[3]), (c[4], c[5]), c[6] == 1)
        }),
        "adaptive" => Box::new(move |xs: &[Tensor]| xs[0].adaptive_avg_pool2d(c[0], c[1])),
        "upsample" => Box::new(move |xs: &[Tensor]| xs[0].upsample_nearest2d(c[0])),
        "pad2d" => Box::new(move |xs: &[Tensor]| xs[0].pad2d(c[0], c[1], c[2], c[3])),
        other => panic!("unknown case kind {other}"),
    };
    (one, op)
}

fn all_cases() -> Vec<&'static str> {
    let mut v: Vec<&str> = CONV.to_vec();
    v.extend(MAX);
    v.extend(AVG);
    v.extend(ADAPTIVE);
    v.extend(UPSAMPLE);
    v.push("pad2d");
    v
}

/// Forward and the gradients of sum(out · gw) in `dtype` against the fixture.
fn check_against_fixture(fx: &Fixture, name: &str, dtype: DType) {
    let (keys, op) = case(fx, name);
    let inputs: Vec<Tensor> = keys
        .iter()
        .map(|k| fx.param(&format!("{name}.{k}"), dtype))
        .collect();
    let out = op(&inputs).unwrap();
    assert_eq!(out.dtype(), dtype, "{name}: output dtype");
    let check = |a: &Tensor, e: &Tensor, what: &str| match dtype {
        DType::F32 => assert_close(a, e, tol(dtype), what),
        _ => assert_scaled(a, e, tol(dtype), 1e-12, what),
    };
    check(
        &out,
        &fx.get(&format!("{name}.out")),
        &format!("{name} {dtype} forward"),
    );
    let gw = fx.get(&format!("{name}.gw")).to_dtype(DType::F32).unwrap();
    out.to_dtype(DType::F32)
        .unwrap()
        .mul(&gw)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    for (k, t) in keys.iter().zip(&inputs) {
        let g = t
            .grad()
            .unwrap_or_else(|| panic!("{name}: no gradient for {k}"));
        check(
            &g,
            &fx.get(&format!("{name}.d{k}")),
            &format!("{name} {dtype} grad {k}"),
        );
    }
}

#[test]
fn forward_and_gradients_match_pytorch_f32() {
    let fx = Fixture::load("conv_pool");
    for name in all_cases() {
        check_against_fixture(&fx, name, DType::F32);
    }
}

#[test]
fn forward_and_gradients_match_pytorch_bf16() {
    let fx = Fixture::load("conv_pool");
    for name in all_cases() {
        check_against_fixture(&fx, name, DType::BF16);
    }
}

#[test]
fn gradients_match_finite_differences() {
    let fx = Fixture::load("conv_pool");
    for name in all_cases() {
        let (keys, op) = case(&fx, name);
        let inputs: Vec<Tensor> = keys
            .iter()
            .map(|k| fx.param(&format!("{name}.{k}"), DType::F64))
            .collect();
        assert_gradcheck(name, |xs| op(xs), &inputs);
    }
}

/// Direct-loop f64 conv2d (groups, dilation, bias) and its gradients for sum(out · gw).
struct Direct {
    out: Vec<f64>,
    dx: Vec<f64>,
    dw: Vec<f64>,
    db: Vec<f64>,
}

/// Geometry of a direct-loop conv: (stride, padding, dilation, groups).
type Geo = (usize, usize, usize, usize);

#[allow(clippy::needless_range_loop)] // index loops read like the formula
fn direct_conv(
    x: &[f64],
    xs: [usize; 4],
    w: &[f64],
    ws: [usize; 4],
    b: &[f64],
    gw: &[f64],
    (s, p, d, groups): Geo,
) -> Direct {
    let ([n, c, h, wd], [o, cg, kh, kw]) = (xs, ws);
    let (oh, ow) = (
        (h + 2 * p - d * (kh - 1) - 1) / s + 1,
        (wd + 2 * p - d * (kw - 1) - 1) / s + 1,
    );
    let og = o / groups;
    let mut r = Direct {
        out: vec![0.0; n * o * oh * ow],
        dx: vec![0.0; x.len()],
        dw: vec![0.0; w.len()],
        db: vec![0.0; o],
    };
    for bi in 0..n {
        for oc in 0..o {
            let gi = oc / og;
            for oy in 0..oh {
                for ox in 0..ow {
                    let oi = ((bi * o + oc) * oh + oy) * ow + ox;
                    let gv = gw[oi];
                    r.out[oi] += b[oc];
                    r.db[oc] += gv;
                    for ci in 0..cg {
                        let ic = gi * cg + ci;
                        for ki in 0..kh {
                            for kj in 0..kw {
                                let iy = (oy * s + ki * d) as isize - p as isize;
                                let ix = (ox * s + kj * d) as isize - p as isize;
                                if iy < 0 || ix < 0 || iy >= h as isize || ix >= wd as isize {
                                    continue;
                                }
                                let xi = ((bi * c + ic) * h + iy as usize) * wd + ix as usize;
                                let wi = ((oc * cg + ci) * kh + ki) * kw + kj;
                                r.out[oi] += x[xi] * w[wi];
                                r.dx[xi] += gv * w[wi];
                                r.dw[wi] += gv * x[xi];
                            }
                        }
                    }
                }
            }
        }
    }
    r
}

#[test]
fn larger_convs_match_direct_loops_in_both_threading_modes() {
    let mut rng = Philox::new(11);
    // (n, c, o, size, kernel, (stride, pad, dilation, groups)). Stride 1 with >= 16
    // channels per group takes the shifted-GEMM forward (and transposed-conv input
    // gradient); fewer channels or stride 2 take im2col, stride 2 and the padded 1x1
    // take col2im; the 64x64 and 129x129 images need several tiles; batch 3 vs 4 and
    // 1, 2, 3 threads flip the threading modes.
    let cases = [
        (3, 16, 8, 64, 3, (1, 1, 1, 1)),
        (4, 16, 8, 64, 3, (1, 1, 1, 2)),
        (2, 32, 32, 20, 3, (1, 2, 2, 2)),
        (1, 16, 16, 12, 5, (1, 0, 1, 1)),
        (3, 32, 4, 129, 3, (2, 1, 1, 1)),
        (2, 8, 4, 20, 1, (1, 0, 1, 1)),
        (2, 4, 4, 9, 1, (1, 1, 1, 1)),
    ];
    for (n, c, o, hw, k, geo) in cases {
        let (s, p, d, groups) = geo;
        let x = Tensor::randn(&mut rng, &[n, c, hw, hw], DType::F64)
            .unwrap()
            .into_param()
            .unwrap();
        let w = Tensor::randn(&mut rng, &[o, c / groups, k, k], DType::F64)
            .unwrap()
            .into_param()
            .unwrap();
        let b = Tensor::randn(&mut rng, &[o], DType::F64)
            .unwrap()
            .into_param()
            .unwrap();
        let conv = || {
            x.conv2d(&w, Some(&b), (s, s), (p, p), (d, d), groups)
                .unwrap()
        };
        let gw = Tensor::randn(&mut rng, conv().shape(), DType::F64).unwrap();
        let xs: [usize; 4] = x.shape().try_into().unwrap();
        let ws: [usize; 4] = w.shape().try_into().unwrap();
        let r = direct_conv(
            &x.to_vec_f64(),
            xs,
            &w.to_vec_f64(),
            ws,
            &b.to_vec_f64(),
            &gw.to_vec_f64(),
            geo,
        );
        let what = format!("n={n} c={c} o={o} {hw}x{hw} k={k} (stride, pad, dil, groups)={geo:?}");
        let e = |v: &[f64], shape: &[usize]| Tensor::from_vec(v.to_vec(), shape).unwrap();
        for threads in [1, 2, 3] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| {
                [&x, &w, &b].iter().for_each(|t| t.clear_grad());
                let out = conv();
                assert_close(
                    &out,
                    &e(&r.out, out.shape()),
                    1e-10,
                    &format!("{what} forward, {threads} threads"),
                );
                out.mul(&gw).unwrap().sum_all().unwrap().backward().unwrap();
                assert_close(
                    &x.grad().unwrap(),
                    &e(&r.dx, x.shape()),
                    1e-10,
                    &format!("{what} dx, {threads} threads"),
                );
                assert_close(
                    &w.grad().unwrap(),
                    &e(&r.dw, w.shape()),
                    1e-10,
                    &format!("{what} dw, {threads} threads"),
                );
                assert_close(
                    &b.grad().unwrap(),
                    &e(&r.db, b.shape()),
                    1e-10,
                    &format!("{what} db, {threads} threads"),
                );
            });
        }
    }
}

/// Forward-only direct loops with per-axis (stride, padding, dilation), groups 1.
#[allow(clippy::too_many_arguments)]
fn direct_forward(
    x: &[f64],
    [n, c, h, wd]: [usize; 4],
    w: &[f64],
    [o, kh, kw]: [usize; 3],
    b: Option<&[f64]>,
    (sh, sw): (usize, usize),
    (ph, pw): (usize, usize),
    (dh, dw): (usize, usize),
) -> (Vec<f64>, [usize; 4]) {
    let oh = (h + 2 * ph - dh * (kh - 1) - 1) / sh + 1;
    let ow = (wd + 2 * pw - dw * (kw - 1) - 1) / sw + 1;
    let mut out = vec![0.0; n * o * oh * ow];
    for bi in 0..n {
        for oc in 0..o {
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut acc = b.map_or(0.0, |b| b[oc]);
                    for ci in 0..c {
                        for ki in 0..kh {
                            for kj in 0..kw {
                                let iy = (oy * sh + ki * dh) as isize - ph as isize;
                                let ix = (ox * sw + kj * dw) as isize - pw as isize;
                                if iy < 0 || ix < 0 || iy >= h as isize || ix >= wd as isize {
                                    continue;
                                }
                                let xi = ((bi * c + ci) * h + iy as usize) * wd + ix as usize;
                                acc += x[xi] * w[((oc * c + ci) * kh + ki) * kw + kj];
                            }
                        }
                    }
                    out[((bi * o + oc) * oh + oy) * ow + ox] = acc;
                }
            }
        }
    }
    (out, [n, o, oh, ow])
}

#[test]
fn f32_implicit_gemm_forward_matches_direct_loops() {
    let mut rng = Philox::new(23);
    // f32, groups 1 takes the implicit GEMM (B packed straight from the image) on AVX2
    // machines. Cases: panels that straddle output rows (ow not a multiple of 16), edge
    // rows of M (o not a multiple of 6), C·kh·kw > 256 (several KC blocks), > 512 output
    // pixels (several B blocks), padding, stride 2, dilation, unequal per-axis
    // parameters, with and without bias, batch 1 (threaded shared-B GEMM) and batches
    // that flip the threading mode with 1, 2, 3 threads.
    // (n, c, o, h, w, kh, kw, stride, padding, dilation, bias)
    type Case = (
        usize,
        usize,
        usize,
        usize,
        usize,
        usize,
        usize,
        (usize, usize),
        (usize, usize),
        (usize, usize),
        bool,
    );
    let cases: [Case; 8] = [
        (3, 32, 10, 13, 19, 3, 3, (1, 1), (1, 1), (1, 1), true),
        (2, 30, 7, 17, 23, 3, 3, (2, 2), (1, 1), (1, 1), false),
        (2, 16, 9, 20, 20, 3, 3, (1, 1), (2, 2), (2, 2), true),
        (1, 40, 13, 40, 36, 3, 3, (1, 1), (1, 1), (1, 1), true),
        (4, 3, 8, 33, 31, 7, 7, (2, 2), (3, 3), (1, 1), true),
        (2, 20, 11, 15, 40, 3, 5, (2, 1), (0, 2), (1, 2), true),
        (4, 12, 6, 9, 9, 2, 2, (1, 1), (0, 0), (1, 1), false),
        (1, 64, 64, 64, 64, 3, 3, (1, 1), (1, 1), (1, 1), true),
    ];
    for (n, c, o, h, wd, kh, kw, s, p, d, with_bias) in cases {
        let x = Tensor::randn(&mut rng, &[n, c, h, wd], DType::F32).unwrap();
        let w = Tensor::randn(&mut rng, &[o, c, kh, kw], DType::F32).unwrap();
        let b = Tensor::randn(&mut rng, &[o], DType::F32).unwrap();
        let bv = b.to_vec_f64();
        let (r, shape) = direct_forward(
            &x.to_vec_f64(),
            [n, c, h, wd],
            &w.to_vec_f64(),
            [o, kh, kw],
            with_bias.then_some(&bv[..]),
            s,
            p,
            d,
        );
        let expected = Tensor::from_vec(r, &shape).unwrap();
        let what = format!("n={n} c={c} o={o} {h}x{wd} k={kh}x{kw} s={s:?} p={p:?} d={d:?}");
        for threads in [1, 2, 3] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| {
                let out = x.conv2d(&w, with_bias.then_some(&b), s, p, d, 1).unwrap();
                assert_eq!(out.dtype(), DType::F32);
                assert_close(&out, &expected, 1e-5, &format!("{what}, {threads} threads"));
            });
        }
    }
}

#[test]
fn frozen_weight_or_input_gets_no_gradient() {
    let fx = Fixture::load("conv_pool");
    let name = "conv_3x3_s2";
    let (keys, op) = case(&fx, name);
    assert_eq!(keys, ["x", "w", "b"]);
    let get = |k: &str| fx.param(&format!("{name}.{k}"), DType::F32);
    let gw = fx.get(&format!("{name}.gw")).to_dtype(DType::F32).unwrap();
    let expect = |k: &str| fx.get(&format!("{name}.d{k}"));

    // Frozen weight: input and bias gradients still right, no weight gradient.
    let (x, w, b) = (get("x"), get("w"), get("b"));
    w.set_requires_grad(false).unwrap();
    op(&[x.clone(), w.clone(), b.clone()])
        .unwrap()
        .mul(&gw)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    assert!(w.grad().is_none());
    assert_close(
        &x.grad().unwrap(),
        &expect("x"),
        tol(DType::F32),
        "dx with frozen weight",
    );
    assert_close(
        &b.grad().unwrap(),
        &expect("b"),
        tol(DType::F32),
        "db with frozen weight",
    );

    // Input that does not require grad (e.g. an image batch): only the parameters get one.
    let (x, w, b) = (get("x"), get("w"), get("b"));
    x.set_requires_grad(false).unwrap();
    op(&[x.clone(), w.clone(), b.clone()])
        .unwrap()
        .mul(&gw)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    assert!(x.grad().is_none());
    assert_close(
        &w.grad().unwrap(),
        &expect("w"),
        tol(DType::F32),
        "dw with constant input",
    );
    assert_close(
        &b.grad().unwrap(),
        &expect("b"),
        tol(DType::F32),
        "db with constant input",
    );

    // Nothing trainable: no graph at all.
    w.set_requires_grad(false).unwrap();
    b.set_requires_grad(false).unwrap();
    assert!(!op(&[x, w, b]).unwrap().requires_grad());
}

fn err_contains<T: std::fmt::Debug>(r: Result<T>, needle: &str) {
    let e = r.expect_err(&format!("expected an error mentioning `{needle}`"));
    assert!(
        e.to_string().contains(needle),
        "error `{e}` does not mention `{needle}`"
    );
}

#[test]
fn bad_input_is_a_clear_error() {
    let t = |shape: &[usize]| Tensor::zeros(shape, DType::F32).unwrap();
    let x = t(&[1, 4, 5, 5]);
    let w3 = t(&[2, 4, 3, 3]);
    let conv = |x: &Tensor, w: &Tensor| x.conv2d(w, None, (1, 1), (1, 1), (1, 1), 1);
    err_contains(conv(&t(&[4, 5, 5]), &w3), "[N, C, H, W]");
    err_contains(conv(&x, &t(&[2, 4, 3])), "weight must be");
    err_contains(conv(&x, &t(&[2, 3, 3, 3])), "input channels");
    err_contains(
        t(&[1, 3, 5, 5]).conv2d(&t(&[2, 1, 3, 3]), None, (1, 1), (0, 0), (1, 1), 2),
        "groups=2",
    );
    err_contains(
        x.conv2d(&t(&[3, 2, 3, 3]), None, (1, 1), (0, 0), (1, 1), 2),
        "groups=2",
    );
    err_contains(x.conv2d(&w3, None, (1, 1), (0, 0), (1, 1), 0), "groups=0");
    err_contains(
        x.conv2d(&t(&[2, 4, 7, 7]), None, (1, 1), (0, 0), (1, 1), 1),
        "larger than the padded input",
    );
    assert!(x
        .conv2d(&t(&[2, 4, 7, 7]), None, (1, 1), (1, 1), (1, 1), 1)
        .is_ok());
    err_contains(
        x.conv2d(&w3, None, (1, 1), (0, 0), (3, 3), 1),
        "dilated extent 7x7",
    );
    err_contains(
        conv(&x, &Tensor::zeros(&[2, 4, 3, 3], DType::F64).unwrap()),
        "dtype",
    );
    err_contains(
        x.conv2d(&w3, Some(&t(&[3])), (1, 1), (1, 1), (1, 1), 1),
        "bias",
    );
    err_contains(x.conv2d(&w3, None, (0, 1), (1, 1), (1, 1), 1), "stride");
    err_contains(
        Tensor::from_i64(vec![0; 100], &[1, 4, 5, 5])
            .unwrap()
            .conv2d(&w3, None, (1, 1), (1, 1), (1, 1), 1),
        "dtype",
    );
    err_contains(t(&[5]).pad2d(1, 1, 1, 1), "rank >= 2");

    err_contains(x.max_pool2d((3, 3), (2, 2), (2, 2)), "at most half");
    err_contains(
        x.max_pool2d((7, 7), (1, 1), (0, 0)),
        "larger than the padded input",
    );
    err_contains(x.avg_pool2d((2, 2), (0, 2), (0, 0), true), "positive");
    err_contains(
        t(&[4, 5, 5]).avg_pool2d((2, 2), (2, 2), (0, 0), true),
        "[N, C, H, W]",
    );
    err_contains(x.adaptive_avg_pool2d(0, 1), "non-empty");
    err_contains(x.upsample_nearest2d(0), "scale");
    err_contains(t(&[2, 5, 5]).upsample_nearest2d(2), "[N, C, H, W]");
}

#[test]
fn output_shapes_follow_pytorch() {
    let mut rng = Philox::new(5);
    let x = Tensor::randn(&mut rng, &[1, 3, 224, 224], DType::F32).unwrap();
    let w = Tensor::randn(&mut rng, &[8, 3, 7, 7], DType::F32).unwrap();
    let stem = x.conv2d(&w, None, (2, 2), (3, 3), (1, 1), 1).unwrap();
    assert_eq!(stem.shape(), &[1, 8, 112, 112]);
    assert_eq!(
        stem.max_pool2d((3, 3), (2, 2), (1, 1)).unwrap().shape(),
        &[1, 8, 56, 56]
    );
    assert_eq!(
        stem.adaptive_avg_pool2d(1, 1).unwrap().shape(),
        &[1, 8, 1, 1]
    );
    let z = Tensor::randn(&mut rng, &[1, 4, 9, 9], DType::F32).unwrap();
    let down = z
        .pad2d(0, 1, 0, 1)
        .unwrap()
        .conv2d(
            &Tensor::zeros(&[4, 4, 3, 3], DType::F32).unwrap(),
            None,
            (2, 2),
            (0, 0),
            (1, 1),
            1,
        )
        .unwrap();
    assert_eq!(down.shape(), &[1, 4, 4, 4]);
    assert_eq!(z.upsample_nearest2d(2).unwrap().shape(), &[1, 4, 18, 18]);
}
