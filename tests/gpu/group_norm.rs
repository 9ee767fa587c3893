//! backend::cuda::group_norm (kernels/group_norm.cu) vs src/backend/cpu/norm.rs (group_norm /
//! group_norm_silu forward with saved mean/rstd over split units, and the backward: per-row
//! sums, dx, dweight/dbias), and its argument checks.

use crate::support::*;
use medsyn::backend::cpu::norm::{self as cpu, Affine, GroupShape, Needs};
use medsyn::backend::cuda::group_norm::{self as gpu_gn, GroupNormLaunch};
use medsyn::cuda::gpu::{suffix, Ptr};
use medsyn::DType;

/// One GroupNorm problem and its launch shape.
struct Case {
    batch: usize,
    channels: usize,
    spatial: usize,
    groups: usize,
    /// Slices per unit (grid.y of stats / apply / backward_dx) and the grid.x cap
    /// (units block-strided past it).
    splits: u32,
    cap: u32,
    /// 1-D blocks of stats, and of apply / backward_dx.
    block_stats: u32,
    block_apply: u32,
    silu: bool,
    /// Weight and bias present (dweight and dbias computed); else both absent and only
    /// dbias is requested (dweight = null).
    affine: bool,
    eps: f64,
}

#[allow(clippy::too_many_arguments)]
const fn case(
    (batch, channels, spatial, groups): (usize, usize, usize, usize),
    (splits, cap): (u32, u32),
    (block_stats, block_apply): (u32, u32),
    silu: bool,
    affine: bool,
    eps: f64,
) -> Case {
    Case {
        batch,
        channels,
        spatial,
        groups,
        splits,
        cap,
        block_stats,
        block_apply,
        silu,
        affine,
        eps,
    }
}

const M: u32 = u32::MAX;

/// Odd channels per group (3, 1), spatial sizes that are not multiples of either pack
/// width (25, 33, 49) or only of f32's (20), spatial == 1, units split over several blocks
/// (including empty slices: N = 10 in 4 splits of 8), capped grids (units block-strided),
/// a single group, and the Stable Diffusion U-Net case (32 groups of 10 channels, 64×64).
const CASES: [Case; 10] = [
    case((2, 6, 20, 3), (1, M), (64, 64), false, true, 1e-5),
    case((1, 4, 1000, 2), (3, M), (256, 128), true, true, 0.5),
    case((3, 15, 25, 5), (2, 4), (96, 64), false, false, 1e-5),
    case((2, 10, 1, 5), (1, M), (32, 32), true, true, 0.1),
    case((1, 2, 5, 1), (4, M), (32, 32), true, true, 1e-5),
    case((2, 32, 64, 8), (4, M), (64, 64), true, true, 1e-5),
    case((2, 8, 33, 4), (2, 3), (64, 32), true, false, 1e-3),
    case((4, 7, 49, 7), (1, 5), (256, 256), false, true, 1e-6),
    case((1, 9, 1024, 1), (2, M), (512, 256), false, true, 1e-5),
    case((2, 320, 4096, 32), (5, M), (512, 256), true, true, 1e-5),
];

#[test]
fn group_norm_forward_and_backward_match_cpu() {
    for (ci, c) in CASES.iter().enumerate() {
        for dt in DTYPES {
            let (batch, channels, spatial, groups) = (c.batch, c.channels, c.spatial, c.groups);
            let len = batch * channels * spatial;
            let units = batch * groups;
            let unit = channels / groups * spatial;
            let seed = 700 + ci as u64;
            let x = uniform_as(seed, len, -1.0, 3.0, dt);
            let dy = uniform_as(seed + 1, len, -1.0, 1.0, dt);
            let w = c
                .affine
                .then(|| uniform_as(seed + 2, channels, 0.5, 1.5, dt));
            let b = c
                .affine
                .then(|| uniform_as(seed + 3, channels, -0.5, 0.5, dt));
            let affine = Affine {
                weight: w.as_deref(),
                bias: b.as_deref(),
            };
            let shape = GroupShape {
                channels,
                spatial,
                groups,
            };
            let (want_y, want_mean, want_rstd) = cpu::group_norm(&x, shape, affine, c.eps, c.silu);
            let needs = Needs {
                x: true,
                weight: c.affine,
                bias: true,
            };
            let want = cpu::group_norm_backward(
                &x, &dy, shape, &want_mean, &want_rstd, affine, c.silu, needs,
            );
            let (want_dx, want_db) = (want.dx.unwrap(), want.dbias.unwrap());
            let want_dw = want.dweight;
            assert_eq!((want_mean.len(), want_db.len()), (units, channels));
            let Some(g) = gpu() else { continue };

            let s = suffix(dt).unwrap();
            let xd = g.upload_as(&x, dt).unwrap();
            let dyd = g.upload_as(&dy, dt).unwrap();
            let wd = w.as_ref().map(|v| g.upload_as(v, dt).unwrap());
            let bd = b.as_ref().map(|v| g.upload_as(v, dt).unwrap());
            let wp = wd.as_ref().map_or(Ptr::null(dt), |d| d.ptr());
            let bp = bd.as_ref().map_or(Ptr::null(dt), |d| d.ptr());
            let yd = g.poisoned_as(len, dt).unwrap();
            let dxd = g.poisoned_as(len, dt).unwrap();
            let dwd = g.poisoned_as(channels, dt).unwrap();
            let dbd = g.poisoned_as(channels, dt).unwrap();
            let mean = g.poisoned::<f32>(units).unwrap();
            let rstd = g.poisoned::<f32>(units).unwrap();
            let sums = g.poisoned::<f32>(2 * batch * channels).unwrap();
            let f32p = |b| g.ptr_of(b, DType::F32);
            let (mp, rp, sp) = (f32p(&mean), f32p(&rstd), f32p(&sums));
            let launch = GroupNormLaunch {
                splits: Some(c.splits),
                grid_cap: Some(c.cap),
                block_stats: Some(c.block_stats),
                block_apply: Some(c.block_apply),
            };
            let shape4 = (batch, channels, spatial, groups);
            gpu_gn::group_norm(
                g,
                xd.ptr(),
                wp,
                bp,
                yd.ptr(),
                mp,
                rp,
                shape4,
                c.eps,
                c.silu,
                launch,
            )
            .unwrap();
            // dbias always, dweight only with affine (else null: must stay untouched).
            let dwp = if c.affine { dwd.ptr() } else { Ptr::null(dt) };
            gpu_gn::group_norm_backward(
                g,
                xd.ptr(),
                dyd.ptr(),
                wp,
                bp,
                mp,
                rp,
                sp,
                dxd.ptr(),
                dwp,
                dbd.ptr(),
                shape4,
                c.silu,
                launch,
            )
            .unwrap();

            let got_y = g.download_f32(&yd).unwrap();
            let got_mean = g.download(&mean).unwrap();
            let got_rstd = g.download(&rstd).unwrap();
            let got_sums = g.download(&sums).unwrap();
            let got_dx = g.download_f32(&dxd).unwrap();
            let got_db = g.download_f32(&dbd).unwrap();
            // f32 slice sums vs the CPU's f64 over N elements.
            let stat_tol = 1e-6 * (unit as f64).sqrt();
            check(
                "group_norm_apply mean",
                dt,
                &got_mean,
                &want_mean,
                stat_tol,
                2e-5,
            );
            check(
                "group_norm_apply rstd",
                dt,
                &got_rstd,
                &want_rstd,
                0.0,
                2e-5 + stat_tol,
            );
            let name = if c.silu {
                "group_norm_apply silu"
            } else {
                "group_norm_apply"
            };
            check(name, dt, &got_y, &want_y, 2e-5 + stat_tol, rtol(dt));

            // The per-row sums (f32 scratch) against an f64 reference from the CPU's mean/rstd.
            let want_sums = row_sums(
                &x,
                &dy,
                c,
                w.as_deref(),
                b.as_deref(),
                &want_mean,
                &want_rstd,
            );
            let row_tol = 3e-6 * spatial as f64;
            check(
                "group_norm_backward_sums",
                dt,
                &got_sums,
                &want_sums,
                row_tol,
                1e-4,
            );

            let rs_max = want_rstd.iter().fold(0f32, |a, &v| a.max(v)) as f64;
            let dx_tol = (2e-5 + stat_tol) * rs_max * w.as_ref().map_or(1.0, |_| 1.5);
            check(
                "group_norm_backward_dx",
                dt,
                &got_dx,
                &want_dx,
                dx_tol,
                rtol(dt),
            );
            // Channel sums over batch·spatial terms of size <= ~3.
            let sum_tol = 3e-6 * (batch * spatial) as f64;
            check(
                "group_norm_backward_params dbias",
                dt,
                &got_db,
                &want_db,
                sum_tol,
                rtol(dt),
            );
            match want_dw {
                Some(want_dw) => {
                    let got_dw = g.download_f32(&dwd).unwrap();
                    check(
                        "group_norm_backward_params dweight",
                        dt,
                        &got_dw,
                        &want_dw,
                        sum_tol,
                        rtol(dt),
                    );
                }
                None => {
                    // dweight was null: the buffer must be untouched (still all 0xff bytes).
                    let raw = g.download(&dwd.bytes).unwrap();
                    let name = format!("group_norm_backward_params dweight untouched {s}");
                    check_exact(&name, &raw, &vec![0xffu8; raw.len()]);
                }
            }
        }
    }
}

/// sums[2r] = Σ gz·x̂, sums[2r + 1] = Σ gz per (batch, channel) row r (f64, from the
/// rounded inputs and the CPU's f32 mean/rstd), gz = g·silu'(x̂·w + b) when fused.
fn row_sums(
    x: &[f32],
    dy: &[f32],
    c: &Case,
    w: Option<&[f32]>,
    b: Option<&[f32]>,
    mean: &[f32],
    rstd: &[f32],
) -> Vec<f32> {
    let cpg = c.channels / c.groups;
    let mut out = Vec::with_capacity(2 * c.batch * c.channels);
    for r in 0..c.batch * c.channels {
        let (bi, ch) = (r / c.channels, r % c.channels);
        let u = bi * c.groups + ch / cpg;
        let (mu, rs) = (mean[u] as f64, rstd[u] as f64);
        let wc = w.map_or(1.0, |w| w[ch] as f64);
        let bc = b.map_or(0.0, |b| b[ch] as f64);
        let (mut sgx, mut sg) = (0f64, 0f64);
        for e in r * c.spatial..(r + 1) * c.spatial {
            let h = (x[e] as f64 - mu) * rs;
            let mut gz = dy[e] as f64;
            if c.silu {
                let z = h * wc + bc;
                let sig = 1.0 / (1.0 + (-z).exp());
                gz *= sig * (1.0 + z * (1.0 - sig));
            }
            sgx += gz * h;
            sg += gz;
        }
        out.push(sgx as f32);
        out.push(sg as f32);
    }
    out
}

#[test]
fn group_norm_refuses_short_buffers_and_bad_shapes() {
    let Some(g) = gpu() else { return };
    let dt = DType::F32;
    let null = Ptr::null(dt);
    let d = GroupNormLaunch::default();
    let x = g.upload_as(&[0.0; 24], dt).unwrap();
    let y = g.poisoned_as(23, dt).unwrap();
    let shape = (2, 4, 3, 2);
    let err = gpu_gn::group_norm(
        g,
        x.ptr(),
        null,
        null,
        y.ptr(),
        null,
        null,
        shape,
        1e-5,
        false,
        d,
    )
    .unwrap_err();
    assert!(err.to_string().contains("y holds 23 elements"), "{err}");
    let y = g.poisoned_as(24, dt).unwrap();
    let err = gpu_gn::group_norm(
        g,
        x.ptr(),
        null,
        null,
        y.ptr(),
        null,
        null,
        (2, 4, 3, 3),
        1e-5,
        false,
        d,
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("not a multiple of groups"),
        "{err}"
    );
    let wh = g.poisoned_as(4, DType::F16).unwrap();
    let err = gpu_gn::group_norm(
        g,
        x.ptr(),
        wh.ptr(),
        null,
        y.ptr(),
        null,
        null,
        shape,
        1e-5,
        false,
        d,
    )
    .unwrap_err();
    assert!(err.to_string().contains("expected F32"), "{err}");
    // The backward's sums scratch must hold 2·batch·channels floats.
    let stats = g.poisoned::<f32>(4).unwrap();
    let sums = g.poisoned::<f32>(15).unwrap();
    let (sp, sums_p) = (g.ptr_of(&stats, DType::F32), g.ptr_of(&sums, DType::F32));
    let err = gpu_gn::group_norm_backward(
        g,
        x.ptr(),
        x.ptr(),
        null,
        null,
        sp,
        sp,
        sums_p,
        y.ptr(),
        null,
        null,
        shape,
        false,
        d,
    )
    .unwrap_err();
    assert!(err.to_string().contains("sums holds 15 elements"), "{err}");
}
