//! backend::cuda::batch_norm (kernels/batch_norm.cu) vs src/backend/cpu/norm.rs +
//! Tensor::batch_norm's running-stat update (training stats over split channels, eval stats,
//! apply, backward sums/finish/dx), the f32 running stats of bf16/f16 layers over several
//! training steps vs nn::BatchNorm2d, and the argument checks.

use crate::support::*;
use medsyn::backend::cpu::norm::{self as cpu, Affine, Needs};
use medsyn::backend::cuda::batch_norm::{self as gpu_bn, BatchNormLaunch};
use medsyn::cuda::gpu::{suffix, Ptr};
use medsyn::nn::{BatchNorm2d, Module};
use medsyn::{DType, Tensor};

/// One BatchNorm problem and its launch shape.
struct Case {
    batch: usize,
    channels: usize,
    spatial: usize,
    /// Slices per channel (grid.y of stats / backward_sums), grid.x cap (channels
    /// block-strided past it; also caps the apply / dx grids), stats block.
    splits: u32,
    cap: u32,
    block: u32,
    /// Batch statistics (training) or running statistics (eval).
    training: bool,
    /// Running statistics given (always in eval).
    running: bool,
    /// Weight and bias present (dweight and dbias computed); else both absent, and the
    /// backward needs only dx (eval: no sums at all).
    affine: bool,
}

#[allow(clippy::too_many_arguments)]
const fn case(
    (batch, channels, spatial): (usize, usize, usize),
    (splits, cap, block): (u32, u32, u32),
    training: bool,
    running: bool,
    affine: bool,
) -> Case {
    Case {
        batch,
        channels,
        spatial,
        splits,
        cap,
        block,
        training,
        running,
        affine,
    }
}

const M: u32 = u32::MAX;
const EPS: f64 = 1e-5;
const MOMENTUM: f64 = 0.1;

/// Odd channel counts and spatial sizes (7×7, 3×3, 1 = BatchNorm1d-like), channels split
/// into several slices (with empty trailing slices: M = 3 in 5 splits), grids capped below
/// the channel / row count, no running stats, no affine, eval mode with and without affine
/// (the latter needs no sums), and a ResNet-stem-sized channel (M = 4·56·56).
const CASES: [Case; 9] = [
    case((4, 3, 49), (1, M, 256), true, true, true),
    case((2, 5, 1000), (3, M, 512), true, true, false),
    case((8, 17, 9), (4, 5, 256), true, false, true),
    case((3, 7, 1), (5, M, 256), true, true, true),
    case((16, 300, 7), (2, 100, 256), true, true, true),
    case((4, 64, 3136), (4, M, 1024), true, true, true),
    case((2, 6, 30), (2, 4, 256), false, true, true),
    case((1, 64, 196), (1, M, 256), false, true, false),
    case((5, 33, 100), (3, M, 256), false, true, true),
];

/// What the CPU twin gives for one case.
struct Want {
    mean: Vec<f32>,
    rstd: Vec<f32>,
    running_mean: Vec<f32>,
    running_var: Vec<f32>,
    y: Vec<f32>,
    dx: Vec<f32>,
    dweight: Option<Vec<f32>>,
    dbias: Option<Vec<f32>>,
    /// Σ g / M and Σ g·x̂ / M per channel (f64 here).
    m1: Vec<f32>,
    m2: Vec<f32>,
}

/// Mirrors Tensor::batch_norm (src/ops/norm.rs) and cpu::norm::batch_norm_backward on the
/// rounded inputs, running stats `rm`, `rv` in f32 (for every dtype, as nn::BatchNorm2d).
fn reference(
    c: &Case,
    x: &[f32],
    dy: &[f32],
    w: Option<&[f32]>,
    b: Option<&[f32]>,
    rm: &[f32],
    rv: &[f32],
) -> Want {
    let (batch, channels, spatial) = (c.batch, c.channels, c.spatial);
    let count = batch * spatial;
    let (mean, rstd, running_mean, running_var) = if c.training {
        let (mean, var) = cpu::channel_moments(x, batch, channels, spatial);
        let corr = count as f64 / (count - 1) as f64;
        let upd = |s: &[f32], v: &[f64], k: f64| -> Vec<f32> {
            s.iter()
                .zip(v)
                .map(|(&s, &v)| ((1.0 - MOMENTUM) * s as f64 + MOMENTUM * k * v) as f32)
                .collect()
        };
        let (nrm, nrv) = if c.running {
            (upd(rm, &mean, 1.0), upd(rv, &var, corr))
        } else {
            (rm.to_vec(), rv.to_vec())
        };
        (
            mean.iter().map(|&m| m as f32).collect::<Vec<_>>(),
            var.iter()
                .map(|&v| (1.0 / (v + EPS).sqrt()) as f32)
                .collect::<Vec<_>>(),
            nrm,
            nrv,
        )
    } else {
        let rstd = rv
            .iter()
            .map(|&v| (1.0 / (v as f64 + EPS).sqrt()) as f32)
            .collect();
        (rm.to_vec(), rstd, rm.to_vec(), rv.to_vec())
    };
    let affine = Affine { weight: w, bias: b };
    let y = cpu::channel_normalize(x, channels, spatial, &mean, &rstd, affine);
    let needs = Needs {
        x: true,
        weight: c.affine,
        bias: c.affine,
    };
    let grads = cpu::batch_norm_backward(
        x, dy, batch, channels, spatial, &mean, &rstd, affine, c.training, needs,
    );
    let (mut m1, mut m2) = (vec![0f32; channels], vec![0f32; channels]);
    for ch in 0..channels {
        let (mut sg, mut sgx) = (0f64, 0f64);
        for bi in 0..batch {
            let at = (bi * channels + ch) * spatial;
            for e in at..at + spatial {
                let h = (x[e] as f64 - mean[ch] as f64) * rstd[ch] as f64;
                sg += dy[e] as f64;
                sgx += dy[e] as f64 * h;
            }
        }
        m1[ch] = (sg / count as f64) as f32;
        m2[ch] = (sgx / count as f64) as f32;
    }
    Want {
        mean,
        rstd,
        running_mean,
        running_var,
        y,
        dx: grads.dx.unwrap(),
        dweight: grads.dweight,
        dbias: grads.dbias,
        m1,
        m2,
    }
}

#[test]
fn batch_norm_forward_and_backward_match_cpu() {
    for (ci, c) in CASES.iter().enumerate() {
        for dt in DTYPES {
            let (batch, channels, spatial) = (c.batch, c.channels, c.spatial);
            let len = batch * channels * spatial;
            let count = batch * spatial;
            let seed = 900 + ci as u64;
            let x = uniform_as(seed, len, -1.0, 3.0, dt);
            let dy = uniform_as(seed + 1, len, -1.0, 1.0, dt);
            let w = c
                .affine
                .then(|| uniform_as(seed + 2, channels, 0.5, 1.5, dt));
            let b = c
                .affine
                .then(|| uniform_as(seed + 3, channels, -0.5, 0.5, dt));
            // Running stats are f32 for every dtype (the contract, as nn::BatchNorm2d).
            let rm = uniform(seed + 4, channels, 0.0, 2.0);
            let rv = uniform(seed + 5, channels, 0.5, 2.0);
            let want = reference(c, &x, &dy, w.as_deref(), b.as_deref(), &rm, &rv);
            assert_eq!(want.dx.len(), len);
            let Some(g) = gpu() else { continue };

            let s = suffix(dt).unwrap();
            let xd = g.upload_as(&x, dt).unwrap();
            let dyd = g.upload_as(&dy, dt).unwrap();
            let wd = w.as_ref().map(|v| g.upload_as(v, dt).unwrap());
            let bd = b.as_ref().map(|v| g.upload_as(v, dt).unwrap());
            let wp = wd.as_ref().map_or(Ptr::null(dt), |d| d.ptr());
            let bp = bd.as_ref().map_or(Ptr::null(dt), |d| d.ptr());
            let rmd = g.upload_as(&rm, DType::F32).unwrap();
            let rvd = g.upload_as(&rv, DType::F32).unwrap();
            let yd = g.poisoned_as(len, dt).unwrap();
            let dxd = g.poisoned_as(len, dt).unwrap();
            let dwd = g.poisoned_as(channels, dt).unwrap();
            let dbd = g.poisoned_as(channels, dt).unwrap();
            let mean = g.poisoned::<f32>(channels).unwrap();
            let rstd = g.poisoned::<f32>(channels).unwrap();
            let m1 = g.poisoned::<f32>(channels).unwrap();
            let m2 = g.poisoned::<f32>(channels).unwrap();
            let f32p = |b| g.ptr_of(b, DType::F32);
            let (mp, rp) = (f32p(&mean), f32p(&rstd));
            let launch = BatchNormLaunch {
                splits: Some(c.splits),
                grid_cap: Some(c.cap),
                block: Some(c.block),
            };
            let shape = (batch, channels, spatial);

            // Statistics, then the normalisation.
            if c.training {
                let null = Ptr::null(DType::F32);
                let (rmp, rvp) = if c.running {
                    (rmd.ptr(), rvd.ptr())
                } else {
                    (null, null)
                };
                gpu_bn::batch_norm_stats(
                    g,
                    xd.ptr(),
                    mp,
                    rp,
                    rmp,
                    rvp,
                    shape,
                    EPS,
                    MOMENTUM,
                    launch,
                )
                .unwrap();
            } else {
                gpu_bn::batch_norm_eval_stats(g, rmd.ptr(), rvd.ptr(), mp, rp, channels, EPS)
                    .unwrap();
            }
            gpu_bn::batch_norm_apply(g, xd.ptr(), mp, rp, wp, bp, yd.ptr(), shape, launch).unwrap();

            // Backward: dweight / dbias only with affine (else null: must stay untouched);
            // m1 / m2 in training.
            let (dwp, dbp) = if c.affine {
                (dwd.ptr(), dbd.ptr())
            } else {
                (Ptr::null(dt), Ptr::null(dt))
            };
            gpu_bn::batch_norm_backward(
                g,
                xd.ptr(),
                dyd.ptr(),
                wp,
                mp,
                rp,
                f32p(&m1),
                f32p(&m2),
                dxd.ptr(),
                dwp,
                dbp,
                shape,
                c.training,
                launch,
            )
            .unwrap();

            let got_mean = g.download(&mean).unwrap();
            let got_rstd = g.download(&rstd).unwrap();
            let got_rm = g.download_f32(&rmd).unwrap();
            let got_rv = g.download_f32(&rvd).unwrap();
            let got_y = g.download_f32(&yd).unwrap();
            let got_dx = g.download_f32(&dxd).unwrap();
            let stats = if c.training {
                "batch_norm_stats_finish"
            } else {
                "batch_norm_eval_stats"
            };
            // f32 slice sums vs the CPU's f64 over M elements (eval: exact copies / f64 rstd).
            let stat_tol = 1e-6 * (count as f64).sqrt();
            check(
                &format!("{stats} mean"),
                dt,
                &got_mean,
                &want.mean,
                stat_tol,
                2e-5,
            );
            check(
                &format!("{stats} rstd"),
                dt,
                &got_rstd,
                &want.rstd,
                0.0,
                2e-5 + stat_tol,
            );
            // Running stats: the f64 update rounded to f32 (unchanged when not given / eval).
            let rt = 2e-5 + stat_tol;
            check(
                &format!("{stats} running_mean"),
                dt,
                &got_rm,
                &want.running_mean,
                stat_tol,
                rt,
            );
            check(
                &format!("{stats} running_var"),
                dt,
                &got_rv,
                &want.running_var,
                stat_tol,
                rt,
            );
            check(
                "batch_norm_apply",
                dt,
                &got_y,
                &want.y,
                2e-5 + stat_tol,
                rtol(dt),
            );
            let rs_max = want.rstd.iter().fold(0f32, |a, &v| a.max(v)) as f64;
            let dx_tol = (2e-5 + stat_tol) * rs_max * 1.5;
            check(
                "batch_norm_backward_dx",
                dt,
                &got_dx,
                &want.dx,
                dx_tol,
                rtol(dt),
            );
            // Channel sums over M terms of size <= ~3.
            let sum_tol = 3e-6 * count as f64;
            if c.training {
                let got_m1 = g.download(&m1).unwrap();
                let got_m2 = g.download(&m2).unwrap();
                let mt = sum_tol / count as f64;
                check(
                    "batch_norm_backward_finish m1",
                    dt,
                    &got_m1,
                    &want.m1,
                    mt,
                    1e-4,
                );
                check(
                    "batch_norm_backward_finish m2",
                    dt,
                    &got_m2,
                    &want.m2,
                    mt,
                    1e-4,
                );
            }
            match (want.dweight, want.dbias) {
                (Some(want_dw), Some(want_db)) => {
                    let got_dw = g.download_f32(&dwd).unwrap();
                    let got_db = g.download_f32(&dbd).unwrap();
                    check(
                        "batch_norm_backward_finish dweight",
                        dt,
                        &got_dw,
                        &want_dw,
                        sum_tol,
                        rtol(dt),
                    );
                    check(
                        "batch_norm_backward_finish dbias",
                        dt,
                        &got_db,
                        &want_db,
                        sum_tol,
                        rtol(dt),
                    );
                }
                _ => {
                    // Null outputs: the buffers must be untouched (still all 0xff bytes).
                    for (what, buf) in [("dweight", &dwd), ("dbias", &dbd)] {
                        let raw = g.download(&buf.bytes).unwrap();
                        let name = format!("batch_norm_backward_finish {what} untouched {s}");
                        check_exact(&name, &raw, &vec![0xffu8; raw.len()]);
                    }
                }
            }
        }
    }
}

/// bf16 / f16 layers keep f32 running stats (nn::BatchNorm2d, PyTorch's buffers): starting
/// from mean 0, var 1 as the layer does, a few training steps on the GPU (stats + apply)
/// must track nn::BatchNorm2d's f32 running stats, and the eval forward from them must match
/// the layer's eval output.
#[test]
fn batch_norm_running_stats_stay_f32_for_half_layers() {
    const STEPS: u64 = 4;
    let (batch, channels, spatial) = (3, 5, 37);
    let shape = (batch, channels, spatial);
    let len = batch * channels * spatial;
    let count = batch * spatial;
    for dt in [DType::BF16, DType::F16] {
        let layer = BatchNorm2d::new(channels, EPS, MOMENTUM, dt).unwrap();
        assert_eq!(layer.running_mean.dtype(), DType::F32);
        // Steps on inputs of a shifting mean (per step) and scale, so the stats move.
        let xs: Vec<Vec<f32>> = (0..STEPS)
            .map(|k| {
                let lo = 0.5 * k as f32 - 1.0;
                uniform_as(7000 + k, len, lo, lo + 2.0 + k as f32, dt)
            })
            .collect();
        let tensor =
            |v: &[f32]| Tensor::from_values(v.to_vec(), &[batch, channels, spatial], dt).unwrap();
        for x in &xs {
            layer.forward(&tensor(x)).unwrap();
        }
        let want_rm = layer.running_mean.to_vec_f32();
        let want_rv = layer.running_var.to_vec_f32();
        layer.set_training(false);
        let want_y = layer.forward(&tensor(&xs[0])).unwrap().to_vec_f32();
        // The running stats moved well away from their start (~0.6): stats stored in T would
        // be off by about a bf16 / f16 ulp there, far beyond the f32 tolerance below.
        assert!(want_rm.iter().all(|&m| m.abs() > 0.05), "{want_rm:?}");
        let Some(g) = gpu() else { continue };

        let rm = g.upload_as(&vec![0.0; channels], DType::F32).unwrap();
        let rv = g.upload_as(&vec![1.0; channels], DType::F32).unwrap();
        let mean = g.poisoned::<f32>(channels).unwrap();
        let rstd = g.poisoned::<f32>(channels).unwrap();
        let (mp, rp) = (g.ptr_of(&mean, DType::F32), g.ptr_of(&rstd, DType::F32));
        let launch = BatchNormLaunch::default();
        let y = g.poisoned_as(len, dt).unwrap();
        for x in &xs {
            let xd = g.upload_as(x, dt).unwrap();
            gpu_bn::batch_norm_stats(
                g,
                xd.ptr(),
                mp,
                rp,
                rm.ptr(),
                rv.ptr(),
                shape,
                EPS,
                MOMENTUM,
                launch,
            )
            .unwrap();
            gpu_bn::batch_norm_apply(
                g,
                xd.ptr(),
                mp,
                rp,
                Ptr::null(dt),
                Ptr::null(dt),
                y.ptr(),
                shape,
                launch,
            )
            .unwrap();
        }
        let stat_tol = 1e-6 * (count as f64).sqrt();
        let got_rm = g.download_f32(&rm).unwrap();
        let got_rv = g.download_f32(&rv).unwrap();
        check(
            "batch_norm_stats_finish running_mean (steps)",
            dt,
            &got_rm,
            &want_rm,
            stat_tol,
            2e-5 + stat_tol,
        );
        check(
            "batch_norm_stats_finish running_var (steps)",
            dt,
            &got_rv,
            &want_rv,
            stat_tol,
            2e-5 + stat_tol,
        );
        // Eval forward from the f32 running stats (weight 1, bias 0 as the fresh layer).
        gpu_bn::batch_norm_eval_stats(g, rm.ptr(), rv.ptr(), mp, rp, channels, EPS).unwrap();
        let xd = g.upload_as(&xs[0], dt).unwrap();
        gpu_bn::batch_norm_apply(
            g,
            xd.ptr(),
            mp,
            rp,
            Ptr::null(dt),
            Ptr::null(dt),
            y.ptr(),
            shape,
            launch,
        )
        .unwrap();
        let got_y = g.download_f32(&y).unwrap();
        check(
            "batch_norm_apply eval after steps",
            dt,
            &got_y,
            &want_y,
            1e-4,
            rtol(dt),
        );
    }
}

#[test]
fn batch_norm_refuses_short_buffers_and_mixed_dtypes() {
    let Some(g) = gpu() else { return };
    let dt = DType::F32;
    let null = Ptr::null(dt);
    let d = BatchNormLaunch::default();
    let x = g.upload_as(&[0.0; 24], dt).unwrap();
    let stats = g.poisoned::<f32>(3).unwrap();
    let sp = g.ptr_of(&stats, DType::F32);
    let short = g.poisoned::<f32>(2).unwrap();
    let shp = g.ptr_of(&short, DType::F32);
    let shape = (2, 3, 4);
    let err =
        gpu_bn::batch_norm_stats(g, x.ptr(), shp, sp, null, null, shape, 1e-5, 0.1, d).unwrap_err();
    assert!(err.to_string().contains("mean holds 2 elements"), "{err}");
    let rm = g.poisoned_as(3, dt).unwrap();
    let err = gpu_bn::batch_norm_stats(g, x.ptr(), sp, sp, rm.ptr(), null, shape, 1e-5, 0.1, d)
        .unwrap_err();
    assert!(err.to_string().contains("given together"), "{err}");
    // Running stats are f32 for every dtype of x (here bf16 x with bf16 stats: refused).
    let xb = g.upload_as(&[0.0; 24], DType::BF16).unwrap();
    let rmb = g.poisoned_as(3, DType::BF16).unwrap();
    let err = gpu_bn::batch_norm_stats(
        g,
        xb.ptr(),
        sp,
        sp,
        rmb.ptr(),
        rmb.ptr(),
        shape,
        1e-5,
        0.1,
        d,
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("running_mean is BF16, expected F32"),
        "{err}"
    );
    let err = gpu_bn::batch_norm_eval_stats(g, rmb.ptr(), rmb.ptr(), sp, sp, 3, 1e-5).unwrap_err();
    assert!(
        err.to_string()
            .contains("running_mean is BF16, expected F32"),
        "{err}"
    );
    let y = g.poisoned_as(24, DType::BF16).unwrap();
    let err =
        gpu_bn::batch_norm_apply(g, x.ptr(), sp, sp, null, null, y.ptr(), shape, d).unwrap_err();
    assert!(err.to_string().contains("expected F32"), "{err}");
    // Training dx needs the m1 / m2 scratch.
    let dx = g.poisoned_as(24, dt).unwrap();
    let err = gpu_bn::batch_norm_backward(
        g,
        x.ptr(),
        x.ptr(),
        null,
        sp,
        sp,
        shp,
        sp,
        dx.ptr(),
        null,
        null,
        shape,
        true,
        d,
    )
    .unwrap_err();
    assert!(err.to_string().contains("m1 holds 2 elements"), "{err}");
}
