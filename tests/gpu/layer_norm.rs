//! backend::cuda::layer_norm (kernels/layer_norm.cu) vs src/backend/cpu/norm.rs (layer_norm
//! forward with saved mean/rstd, backward dx, dweight/dbias directly and through the partial
//! buffer + finish kernel), and its argument checks.

use crate::support::*;
use medsyn::backend::cpu::norm::{self as cpu, Affine, Needs};
use medsyn::backend::cuda::layer_norm::{self as gpu_ln, LayerNormLaunch};
use medsyn::cuda::gpu::{suffix, Ptr};
use medsyn::DType;

/// One LayerNorm problem and its launch shape.
struct Case {
    rows: usize,
    n: usize,
    /// Forward / dx block (BX, BY) and grid cap (rows block-strided past it).
    bx: u32,
    by: u32,
    cap: u32,
    /// Row chunks of the params kernel (grid.y); > 1 goes through partial + finish.
    chunks: u32,
    /// Weight and bias present (dweight and dbias computed); else both absent and only
    /// dweight is requested (dbias = null).
    affine: bool,
    eps: f32,
}

const fn case(
    rows: usize,
    n: usize,
    (bx, by, cap): (u32, u32, u32),
    chunks: u32,
    affine: bool,
    eps: f32,
) -> Case {
    Case {
        rows,
        n,
        bx,
        by,
        cap,
        chunks,
        affine,
        eps,
    }
}

const M: u32 = u32::MAX;

/// A warp per row with a partial last row group, capped grids, n not a multiple of 32,
/// n == 1, rows wider than a block (n > 1024), BERT/CLIP widths, several chunks with
/// empty trailing chunks (rows < chunks · per).
const CASES: [Case; 8] = [
    case(37, 50, (32, 8, M), 1, true, 1e-5),
    case(19, 77, (32, 8, 2), 3, false, 1e-5),
    case(3, 1, (32, 8, M), 2, true, 1e-3),
    case(64, 33, (32, 4, 5), 32, true, 1e-5),
    case(5, 3000, (256, 1, M), 1, true, 0.25),
    case(300, 1030, (128, 1, M), 4, true, 1e-5),
    case(1000, 768, (32, 8, M), 16, true, 1e-12),
    case(10, 300, (128, 2, 3), 7, false, 1e-6),
];

#[test]
fn layer_norm_forward_and_backward_match_cpu() {
    for (ci, c) in CASES.iter().enumerate() {
        for dt in DTYPES {
            let (rows, n) = (c.rows, c.n);
            let len = rows * n;
            let seed = 500 + ci as u64;
            let x = uniform_as(seed, len, -2.0, 3.0, dt);
            let dy = uniform_as(seed + 1, len, -1.0, 1.0, dt);
            let w = c.affine.then(|| uniform_as(seed + 2, n, 0.5, 1.5, dt));
            let b = c.affine.then(|| uniform_as(seed + 3, n, -0.5, 0.5, dt));
            let affine = Affine {
                weight: w.as_deref(),
                bias: b.as_deref(),
            };
            let (want_y, want_mean, want_rstd) = cpu::layer_norm(&x, n, affine, c.eps as f64);
            let needs = Needs {
                x: true,
                weight: true,
                bias: c.affine,
            };
            let want = cpu::layer_norm_backward(&x, &dy, n, &want_mean, &want_rstd, affine, needs);
            let (want_dx, want_dw) = (want.dx.unwrap(), want.dweight.unwrap());
            let want_db = want.dbias;
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
            let dwd = g.poisoned_as(n, dt).unwrap();
            let dbd = g.poisoned_as(n, dt).unwrap();
            let mean = g.poisoned::<f32>(rows).unwrap();
            let rstd = g.poisoned::<f32>(rows).unwrap();
            let (mp, rp) = (g.ptr_of(&mean, DType::F32), g.ptr_of(&rstd, DType::F32));
            let launch = LayerNormLaunch {
                block: Some((c.bx, c.by)),
                grid_cap: c.cap,
                chunks: Some(c.chunks),
            };
            gpu_ln::layer_norm(
                g,
                xd.ptr(),
                wp,
                bp,
                yd.ptr(),
                mp,
                rp,
                rows,
                n,
                c.eps,
                launch,
            )
            .unwrap();
            // dweight always, dbias only with affine (else null: must stay untouched).
            let dbp = if c.affine { dbd.ptr() } else { Ptr::null(dt) };
            gpu_ln::layer_norm_backward(
                g,
                xd.ptr(),
                dyd.ptr(),
                wp,
                mp,
                rp,
                dxd.ptr(),
                dwd.ptr(),
                dbp,
                rows,
                n,
                launch,
            )
            .unwrap();
            let direct = c.chunks == 1;

            let got_y = g.download_f32(&yd).unwrap();
            let got_mean = g.download(&mean).unwrap();
            let got_rstd = g.download(&rstd).unwrap();
            let got_dx = g.download_f32(&dxd).unwrap();
            let got_dw = g.download_f32(&dwd).unwrap();
            // Statistics are f32 in both dtypes (inputs identical after rounding): f32
            // accumulation vs the CPU's f64, over n elements.
            let stat_tol = 1e-6 * (n as f64).sqrt();
            check("layer_norm mean", dt, &got_mean, &want_mean, stat_tol, 2e-5);
            check(
                "layer_norm rstd",
                dt,
                &got_rstd,
                &want_rstd,
                0.0,
                2e-5 + stat_tol,
            );
            check("layer_norm", dt, &got_y, &want_y, 2e-5 + stat_tol, rtol(dt));
            let rs_max = want_rstd.iter().fold(0f32, |a, &v| a.max(v)) as f64;
            check(
                "layer_norm_backward_dx",
                dt,
                &got_dx,
                &want_dx,
                (2e-5 + stat_tol) * rs_max,
                rtol(dt),
            );
            // Column sums over `rows` terms of size <= ~3.
            let sum_tol = 3e-6 * rows as f64;
            let pname = if direct {
                "layer_norm_backward_params"
            } else {
                "layer_norm_backward_params_finish"
            };
            check(
                &format!("{pname} dweight"),
                dt,
                &got_dw,
                &want_dw,
                sum_tol,
                rtol(dt),
            );
            match want_db {
                Some(want_db) => {
                    let got_db = g.download_f32(&dbd).unwrap();
                    check(
                        &format!("{pname} dbias"),
                        dt,
                        &got_db,
                        &want_db,
                        sum_tol,
                        rtol(dt),
                    );
                }
                None => {
                    // dbias was null: the buffer must be untouched (still all 0xff bytes).
                    let raw = g.download(&dbd.bytes).unwrap();
                    let name = format!("{pname} dbias untouched {s}");
                    check_exact(&name, &raw, &vec![0xffu8; raw.len()]);
                }
            }
        }
    }
}

#[test]
fn layer_norm_refuses_short_buffers_and_mixed_dtypes() {
    let Some(g) = gpu() else { return };
    let dt = DType::F32;
    let null = Ptr::null(dt);
    let x = g.upload_as(&[0.0; 12], dt).unwrap();
    let y = g.poisoned_as(11, dt).unwrap();
    let d = LayerNormLaunch::default();
    let err =
        gpu_ln::layer_norm(g, x.ptr(), null, null, y.ptr(), null, null, 3, 4, 1e-5, d).unwrap_err();
    assert!(err.to_string().contains("y holds 11 elements"), "{err}");
    let y = g.poisoned_as(12, dt).unwrap();
    let wh = g.poisoned_as(4, DType::BF16).unwrap();
    let err = gpu_ln::layer_norm(
        g,
        x.ptr(),
        wh.ptr(),
        null,
        y.ptr(),
        null,
        null,
        3,
        4,
        1e-5,
        d,
    )
    .unwrap_err();
    assert!(err.to_string().contains("expected F32"), "{err}");
    // mean / rstd are f32 even for bf16 data, and [rows] long.
    let mean = g.poisoned::<f32>(2).unwrap();
    let mp = g.ptr_of(&mean, DType::F32);
    let err =
        gpu_ln::layer_norm(g, x.ptr(), null, null, y.ptr(), mp, null, 3, 4, 1e-5, d).unwrap_err();
    assert!(err.to_string().contains("mean holds 2 elements"), "{err}");
    let bad = LayerNormLaunch {
        block: Some((48, 1)),
        ..d
    };
    let err = gpu_ln::layer_norm(g, x.ptr(), null, null, y.ptr(), null, null, 3, 4, 1e-5, bad)
        .unwrap_err();
    assert!(err.to_string().contains("multiple of 32"), "{err}");
}
