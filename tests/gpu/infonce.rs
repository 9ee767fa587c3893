//! kernels/infonce.cu (fused symmetric InfoNCE: stats, finish, reduce, backward per width) vs a
//! float64 reference of src/ops/loss/info_nce.rs's definition (itself checked against the twin).

use crate::support::*;
use cudarc::driver::CudaSlice;
use medsyn::backend::cuda::infonce::{
    self as nce, backward_dp as bwd_dp, backward_smem as bwd_smem, forward_smem as fwd_smem,
    suggested_group, ForwardScratch, InfoNceLaunch, Rows,
};
use medsyn::cuda::gpu::{round_to, suffix};
use medsyn::cuda::Gpu;
use medsyn::tensor::{DType, Tensor};
use rayon::prelude::*;

/// Upstream gradient of the loss (not 1, so that a dropped factor shows).
const GOUT: f32 = 0.75;

/// One problem: batch, width, temperature, extra row-stride padding of (img, txt, dimg, dtxt),
/// rows / columns per forward group (0: the contract's suggestion).
struct Case {
    b: usize,
    d: usize,
    temp: f64,
    pads: [usize; 4],
    rpg: usize,
    cpg: usize,
}

const fn case(b: usize, d: usize, temp: f64, pads: [usize; 4], rpg: usize, cpg: usize) -> Case {
    Case {
        b,
        d,
        temp,
        pads,
        rpg,
        cpg,
    }
}

/// Widths the backward specialises (DP = d), odd batches, both temperatures, padded and
/// non-vectorizable row strides, uneven row/column groups.
const SPECIALISED: [Case; 6] = [
    case(1, 128, 0.07, [0, 0, 0, 0], 0, 0),
    case(37, 256, 1.0, [0, 0, 0, 0], 0, 0),
    case(300, 512, 0.07, [8, 0, 16, 8], 128, 256),
    case(1000, 768, 0.07, [0, 0, 0, 0], 0, 0),
    case(1000, 128, 1.0, [0, 0, 0, 0], 256, 128),
    case(300, 256, 1.0, [3, 5, 1, 0], 0, 0),
];

/// Widths padded up to the next DP (zero-filled columns in shared memory), and d > 768 where
/// the contract has no backward (forward only: the stats/finish kernels take any d).
const UNSPECIALISED: [Case; 6] = [
    case(37, 100, 0.07, [0, 0, 0, 0], 0, 0),
    case(5, 17, 1.0, [0, 0, 0, 0], 0, 0),
    case(130, 300, 0.07, [0, 0, 0, 0], 0, 0),
    case(1000, 200, 0.07, [0, 3, 0, 0], 0, 0),
    case(300, 700, 1.0, [4, 0, 0, 4], 0, 0),
    case(37, 1000, 0.07, [0, 0, 0, 0], 0, 0),
];

#[test]
fn infonce_launch_sizes_match_contract() {
    // The shared-memory table of the launch contract (CPU only: checks the launch functions'
    // formulas).
    assert_eq!(fwd_smem(4096), 113664);
    let table: [(DType, usize, usize); 3] =
        [(DType::BF16, 1, 0), (DType::BF16, 2, 1), (DType::F32, 1, 2)];
    let want = [
        [44832, 77600, 143136, 154272],
        [62240, 111392, 209696, 0],
        [38816, 71584, 137120, 202656],
    ];
    for (dt, nbuf, row) in table {
        for (c, dp) in [128, 256, 512, 768].into_iter().enumerate() {
            if want[row][c] != 0 {
                assert_eq!(
                    bwd_smem(dt, dp, nbuf),
                    want[row][c],
                    "{dt:?} DP {dp} nbuf {nbuf}"
                );
                assert_eq!(
                    bwd_smem(DType::F16, dp, nbuf),
                    bwd_smem(DType::BF16, dp, nbuf)
                );
            }
        }
    }
    for (dp, f32_nbuf2) in [(128, 55712), (256, 104864), (512, 203168)] {
        assert_eq!(bwd_smem(DType::F32, dp, 2), f32_nbuf2);
    }
    assert_eq!(suggested_group(65536), 4096);
    assert_eq!(suggested_group(4096), 256);
    assert_eq!(suggested_group(1000), 128);
    assert_eq!(bwd_dp(700), Some(768));
    assert_eq!(bwd_dp(769), None);
}

/// Float64 reference of the CPU twin's definition, with per-element error scales.
struct Reference {
    row_lse: Vec<f64>,
    col_lse: Vec<f64>,
    loss: f64,
    dimg: Vec<f64>,
    dtxt: Vec<f64>,
    dscale: f64,
    /// s Σ_j c (p_ij + q_ij + 2δ_ij) |txt_jk|: the magnitude of the terms summed into dimg_ik
    /// before cancellation (an error ε relative to each term costs at most ε times this).
    mag_img: Vec<f64>,
    mag_txt: Vec<f64>,
    /// Σ_j |txt_jk| per column k (an absolute error η per G_ij costs at most η times this).
    abs_txt: Vec<f64>,
    abs_img: Vec<f64>,
    mag_dscale: f64,
}

/// z_ij = s img_i·txt_j; loss = (Σ row_lse + Σ col_lse − 2 Σ z_ii) / 2B; dz = g/2B (softmax_row
/// + softmax_col − 2δ); d img = s dz txt, d txt = s dzᵀ img, d s = Σ dz_ij img_i·txt_j.
fn reference(img: &[f32], txt: &[f32], b: usize, d: usize, s: f64, gout: f64) -> Reference {
    let sim: Vec<f64> = (0..b * b)
        .into_par_iter()
        .map(|ij| {
            let (i, j) = (ij / b, ij % b);
            (0..d)
                .map(|k| img[i * d + k] as f64 * txt[j * d + k] as f64)
                .sum()
        })
        .collect();
    let lse = |it: &mut dyn Iterator<Item = f64>| {
        let v: Vec<f64> = it.collect();
        let m = v.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        m + v.iter().map(|&x| (x - m).exp()).sum::<f64>().ln()
    };
    let row_lse: Vec<f64> = (0..b)
        .map(|i| lse(&mut (0..b).map(|j| s * sim[i * b + j])))
        .collect();
    let col_lse: Vec<f64> = (0..b)
        .map(|j| lse(&mut (0..b).map(|i| s * sim[i * b + j])))
        .collect();
    let loss = (0..b)
        .map(|i| row_lse[i] + col_lse[i] - 2.0 * s * sim[i * b + i])
        .sum::<f64>()
        / (2.0 * b as f64);
    let c = gout / (2.0 * b as f64);
    // dz and the undivided magnitude, row-major [i][j] and transposed [j][i].
    let (mut dz, mut mag) = (vec![0.0; b * b], vec![0.0; b * b]);
    for i in 0..b {
        for j in 0..b {
            let z = s * sim[i * b + j];
            let (p, q) = ((z - row_lse[i]).exp(), (z - col_lse[j]).exp());
            let diag = if i == j { 2.0 } else { 0.0 };
            dz[i * b + j] = c * (p + q - diag);
            mag[i * b + j] = c * (p + q + diag);
        }
    }
    let transpose =
        |m: &[f64]| -> Vec<f64> { (0..b * b).map(|ji| m[(ji % b) * b + ji / b]).collect() };
    let (dzt, magt) = (transpose(&dz), transpose(&mag));
    // out[r][k] = s Σ_x w[r][x] v[x][k] and its magnitude with |w|, |v|.
    let side = |w: &[f64], wm: &[f64], v: &[f32]| -> (Vec<f64>, Vec<f64>) {
        let rows: Vec<(Vec<f64>, Vec<f64>)> = (0..b)
            .into_par_iter()
            .map(|r| {
                let (mut o, mut m) = (vec![0.0; d], vec![0.0; d]);
                for x in 0..b {
                    let (a, am) = (s * w[r * b + x], s * wm[r * b + x]);
                    for k in 0..d {
                        let vv = v[x * d + k] as f64;
                        o[k] += a * vv;
                        m[k] += am * vv.abs();
                    }
                }
                (o, m)
            })
            .collect();
        (
            rows.iter().flat_map(|r| r.0.iter().cloned()).collect(),
            rows.iter().flat_map(|r| r.1.iter().cloned()).collect(),
        )
    };
    let (dimg, mag_img) = side(&dz, &mag, txt);
    let (dtxt, mag_txt) = side(&dzt, &magt, img);
    let col_abs = |v: &[f32]| -> Vec<f64> {
        (0..d)
            .map(|k| (0..b).map(|x| (v[x * d + k] as f64).abs()).sum())
            .collect()
    };
    Reference {
        row_lse,
        col_lse,
        loss,
        dimg,
        dtxt,
        dscale: dz.iter().zip(&sim).map(|(a, b)| a * b).sum(),
        mag_img,
        mag_txt,
        abs_txt: col_abs(txt),
        abs_img: col_abs(img),
        mag_dscale: mag.iter().zip(&sim).map(|(a, b)| a * b.abs()).sum(),
    }
}

#[test]
fn infonce_reference_matches_cpu_twin() {
    // CPU only: the f64 reference above against Tensor::info_nce_with_logit_scale (f64) and its
    // backward, so the GPU tests compare against the twin's definition.
    let (b, d, s) = (37, 20, 14.0);
    let (img, txt) = embeddings(b, d, 7, DType::F32);
    let r = reference(&img, &txt, b, d, s, GOUT as f64);
    let leaf = |v: &[f32]| {
        let v: Vec<f64> = v.iter().map(|&x| x as f64).collect();
        Tensor::from_values(v, &[b, d], DType::F64)
            .unwrap()
            .into_param()
            .unwrap()
    };
    let (ti, tt) = (leaf(&img), leaf(&txt));
    let ts = Tensor::scalar(s, DType::F64).unwrap().into_param().unwrap();
    let loss = ti.info_nce_with_logit_scale(&tt, &ts).unwrap();
    loss.backward_with(&Tensor::full(GOUT as f64, loss.shape(), DType::F64).unwrap())
        .unwrap();
    let close = |a: f64, w: f64, what: &str| {
        assert!(
            (a - w).abs() <= 1e-10 * (1.0 + w.abs()),
            "{what}: twin {a} vs reference {w}"
        );
    };
    close(loss.to_scalar().unwrap(), r.loss, "loss");
    close(ts.grad().unwrap().to_scalar().unwrap(), r.dscale, "dscale");
    for (t, want, what) in [(&ti, &r.dimg, "dimg"), (&tt, &r.dtxt, "dtxt")] {
        let got = t.grad().unwrap().to_vec_f64();
        for (k, (&a, &w)) in got.iter().zip(want.iter()).enumerate() {
            close(a, w, &format!("{what}[{k}]"));
        }
    }
}

/// L2-normalised rows (CLIP-like), every fifth text a close match of its image, rounded to dt.
fn embeddings(b: usize, d: usize, seed: u64, dt: DType) -> (Vec<f32>, Vec<f32>) {
    let x = uniform(seed, b * d, -1.0, 1.0);
    let n = uniform(seed + 1, b * d, -1.0, 1.0);
    let norm = |v: &mut [f32]| {
        let l = v.iter().map(|a| a * a).sum::<f32>().sqrt().max(1e-12);
        v.iter_mut().for_each(|a| *a /= l);
    };
    let (mut img, mut txt) = (x.clone(), n.clone());
    for i in 0..b {
        if i % 5 == 0 {
            for k in 0..d {
                txt[i * d + k] = x[i * d + k] + 0.1 * n[i * d + k];
            }
        }
        norm(&mut img[i * d..(i + 1) * d]);
        norm(&mut txt[i * d..(i + 1) * d]);
    }
    (round_to(&img, dt), round_to(&txt, dt))
}

/// `v` ([b, d]) laid out with row stride ld, NaN in the padding columns.
fn padded(v: &[f32], b: usize, d: usize, ld: usize) -> Vec<f32> {
    let mut out = vec![f32::NAN; b * ld];
    for i in 0..b {
        out[i * ld..i * ld + d].copy_from_slice(&v[i * d..(i + 1) * d]);
    }
    out
}

/// The [b, d] part of a downloaded strided buffer; panics if a padding column was written.
fn unpad(full: &[f32], b: usize, d: usize, ld: usize, what: &str) -> Vec<f32> {
    let pad_ok = (0..b).all(|i| full[i * ld + d..i * ld + ld].iter().all(|x| x.is_nan()));
    if ld > d {
        record(&format!("{what} padding untouched"), pad_ok, 0.0);
    }
    assert!(
        pad_ok,
        "{what}: a padding column (k >= d) of the gradient was written"
    );
    (0..b)
        .flat_map(|i| full[i * ld..i * ld + d].iter().cloned())
        .collect()
}

/// |got − want| <= tol[i] elementwise (NaN fails); records the max error, panics on the first bad.
fn check_within(name: &str, got: &[f32], want: &[f64], tol: &[f64]) {
    assert_eq!(got.len(), want.len(), "{name}: length");
    let mut max_err = 0.0f64;
    let mut bad = None;
    for (i, ((&g, &w), &t)) in got.iter().zip(want).zip(tol).enumerate() {
        let e = (g as f64 - w).abs();
        if e.is_finite() {
            max_err = max_err.max(e);
        }
        let ok = e <= t; // false for NaN
        if !ok && bad.is_none() {
            bad = Some(i);
        }
    }
    record(name, bad.is_none(), max_err);
    if let Some(i) = bad {
        panic!(
            "{name}: element {i} is {} where the f64 reference gives {} (tolerance {:e}; max error {max_err:e})",
            got[i], want[i], tol[i]
        );
    }
}

fn max_smem(g: &Gpu) -> usize {
    nce::max_smem(g).unwrap()
}

/// The case's launch choice (rows / columns per group; 0 in the case: the default).
fn launch_of(c: &Case, nbuf: Option<usize>) -> InfoNceLaunch {
    InfoNceLaunch {
        rpg: (c.rpg != 0).then_some(c.rpg),
        cpg: (c.cpg != 0).then_some(c.cpg),
        nbuf,
    }
}

/// What the forward launches produce.
struct Forward {
    row_lse: Vec<f32>,
    col_lse: Vec<f32>,
    loss: f32,
    row_lse_dev: CudaSlice<f32>,
    col_lse_dev: CudaSlice<f32>,
}

/// The forward (stats, finish, reduce) with every output and the scratch poisoned.
fn forward(g: &Gpu, c: &Case, img: Rows, txt: Rows, scale: &CudaSlice<f32>) -> Forward {
    let sfx = suffix(img.ptr.dtype).unwrap();
    let b = c.b;
    let launch = launch_of(c, None);
    let (n_row, n_col, nf) = nce::forward_scratch_len(b, &launch).unwrap();
    let row_part = g.poisoned::<f32>(n_row).unwrap();
    let col_part = g.poisoned::<f32>(n_col).unwrap();
    let partial = g.poisoned::<f32>(nf).unwrap();
    let row_lse = g.poisoned::<f32>(b).unwrap();
    let col_lse = g.poisoned::<f32>(b).unwrap();
    let loss = g.poisoned::<f32>(1).unwrap();
    let f32p = |x: &CudaSlice<f32>| g.ptr_of(x, DType::F32);
    nce::info_nce_forward(
        g,
        img,
        txt,
        f32p(scale),
        b,
        c.d,
        f32p(&row_lse),
        f32p(&col_lse),
        f32p(&loss),
        &launch,
        Some(ForwardScratch {
            row_part: f32p(&row_part),
            col_part: f32p(&col_part),
            partial: f32p(&partial),
        }),
    )
    .unwrap();
    g.sync().unwrap();

    // "Scratch written in full": every (max, sum) partial finite, sums positive.
    let stats_ok = [
        g.download(&row_part).unwrap(),
        g.download(&col_part).unwrap(),
    ]
    .iter()
    .all(|p| {
        p.chunks(b)
            .enumerate()
            .all(|(k, ch)| ch.iter().all(|&x| x.is_finite() && (k % 2 == 0 || x > 0.0)))
    });
    record(
        &format!("infonce_fwd_stats partials written {sfx}"),
        stats_ok,
        0.0,
    );
    assert!(
        stats_ok,
        "infonce_fwd_stats_{sfx} B={b} d={}: a row/column partial is unwritten or not finite",
        c.d
    );
    Forward {
        row_lse: g.download(&row_lse).unwrap(),
        col_lse: g.download(&col_lse).unwrap(),
        loss: g.download(&loss).unwrap()[0],
        row_lse_dev: row_lse,
        col_lse_dev: col_lse,
    }
}

/// Per-dtype error model of the gradients on top of the f32 logit/exp errors: (relative to each
/// term of the G·B sum before cancellation (G = s·dz stored as T), absolute per G element (f16
/// subnormals), floor for the stored output (f16 subnormals)). `sc` = s·g/(2B), the scale of
/// G: f16 stores G·2^k with |sc|·2^k in [2^13, 2^14) (GScale in the kernel), so only entries
/// below 2^-14 of the scaled range are subnormal, off by at most 2^-25·2^-k <= |sc|·2^-38.
fn grad_error_model(dt: DType, sc: f64) -> (f64, f64, f64) {
    match dt {
        DType::BF16 => (2f64.powi(-8), 0.0, 0.0),
        DType::F16 => (2f64.powi(-10), sc.abs() * 2f64.powi(-38), 2f64.powi(-24)),
        _ => (0.0, 0.0, 0.0),
    }
}

fn run_case(g: &Gpu, c: &Case, dt: DType, seed: u64) {
    let sfx = suffix(dt).unwrap();
    let (b, d) = (c.b, c.d);
    let [pi, pt, pgi, pgt] = c.pads;
    let (ld_img, ld_txt, ld_dimg, ld_dtxt) = (d + pi, d + pt, d + pgi, d + pgt);
    let (img, txt) = embeddings(b, d, seed, dt);
    let s = (1.0 / c.temp) as f32;
    let r = reference(&img, &txt, b, d, s as f64, GOUT as f64);
    let what = format!("B={b} d={d} T={} {sfx}", c.temp);
    eprintln!("infonce {what} ld=({ld_img},{ld_txt},{ld_dimg},{ld_dtxt})");

    let img_d = g.upload_as(&padded(&img, b, d, ld_img), dt).unwrap();
    let txt_d = g.upload_as(&padded(&txt, b, d, ld_txt), dt).unwrap();
    let scale = g.upload(&[s]).unwrap();
    let gout = g.upload(&[GOUT]).unwrap();

    // Forward: lse of rows and columns and the loss. The logits are f32 dots of the same
    // (rounded) inputs the reference uses, so the error is f32-sized in every dtype:
    // |Δz| <~ 16 s √d u32 |img_i||txt_j| (random-walk f32 accumulation with margin for the
    // tensor cores' accumulation; exp2/log2 approximations are far smaller).
    let img_rows = Rows {
        ptr: img_d.ptr(),
        ld: ld_img,
    };
    let txt_rows = Rows {
        ptr: txt_d.ptr(),
        ld: ld_txt,
    };
    let fw = forward(g, c, img_rows, txt_rows, &scale);
    let norms = |v: &[f32]| {
        (0..b)
            .map(|i| {
                v[i * d..(i + 1) * d]
                    .iter()
                    .map(|&x| (x as f64).powi(2))
                    .sum::<f64>()
                    .sqrt()
            })
            .fold(0.0, f64::max)
    };
    let zmax = s as f64 * norms(&img) * norms(&txt);
    let atol_z = 16.0 * (d as f64).sqrt() * f32::EPSILON as f64 / 2.0 * zmax + 1e-5;
    let lse_tol = |w: &[f64]| -> Vec<f64> { w.iter().map(|x| atol_z + 1e-6 * x.abs()).collect() };
    check_within(
        &format!("infonce_fwd_finish row_lse {sfx}"),
        &fw.row_lse,
        &r.row_lse,
        &lse_tol(&r.row_lse),
    );
    check_within(
        &format!("infonce_fwd_finish col_lse {sfx}"),
        &fw.col_lse,
        &r.col_lse,
        &lse_tol(&r.col_lse),
    );
    check_within(
        &format!("infonce_reduce loss {sfx}"),
        &[fw.loss],
        &[r.loss],
        &[2.0 * atol_z + 1e-6 * r.loss.abs()],
    );

    let Some(dp) = bwd_dp(d) else {
        eprintln!("  d = {d} > 768: no backward kernel (contract), forward checked only");
        return;
    };

    // Backward with nbuf = 1 and, where it fits, nbuf = 2 (same math: bit-identical results).
    let sc = s as f64 * GOUT as f64 / (2.0 * b as f64);
    let (rel_t, abs_g, floor) = grad_error_model(dt, sc);
    // p_ij = exp(z_ij − lse_i) is off by at most |Δz| + |Δlse| relative: 2 atol_z per term.
    let rel = rel_t + 2.0 * atol_z;
    let mut first: Option<(Vec<f32>, Vec<f32>, f32)> = None;
    for nbuf in [1, 2] {
        if bwd_smem(dt, dp, nbuf) > max_smem(g) {
            eprintln!(
                "  nbuf={nbuf}: {} bytes of shared memory do not fit, skipped",
                bwd_smem(dt, dp, nbuf)
            );
            continue;
        }
        let dscale = g.poisoned::<f32>(1).unwrap();
        let dimg_d = g.poisoned_as(b * ld_dimg, dt).unwrap();
        let dtxt_d = g.poisoned_as(b * ld_dtxt, dt).unwrap();
        let f32p = |x: &CudaSlice<f32>| g.ptr_of(x, DType::F32);
        nce::info_nce_backward(
            g,
            img_rows,
            txt_rows,
            f32p(&fw.row_lse_dev),
            f32p(&fw.col_lse_dev),
            f32p(&scale),
            f32p(&gout),
            b,
            d,
            Some(Rows {
                ptr: dimg_d.ptr(),
                ld: ld_dimg,
            }),
            Some(Rows {
                ptr: dtxt_d.ptr(),
                ld: ld_dtxt,
            }),
            Some(f32p(&dscale)),
            &launch_of(c, Some(nbuf)),
        )
        .unwrap();
        g.sync().unwrap();
        let name = format!("infonce_bwd_d{dp}");
        let dimg = unpad(
            &g.download_f32(&dimg_d).unwrap(),
            b,
            d,
            ld_dimg,
            &format!("{name} dimg {sfx}"),
        );
        let dtxt = unpad(
            &g.download_f32(&dtxt_d).unwrap(),
            b,
            d,
            ld_dtxt,
            &format!("{name} dtxt {sfx}"),
        );
        let ds = g.download(&dscale).unwrap()[0];

        let max_img = r.dimg.iter().fold(0.0f64, |m, x| m.max(x.abs()));
        let max_txt = r.dtxt.iter().fold(0.0f64, |m, x| m.max(x.abs()));
        let tol = |want: &[f64], mag: &[f64], col_abs: &[f64], maxw: f64| -> Vec<f64> {
            (0..b * d)
                .map(|ik| {
                    rtol(dt) * want[ik].abs()
                        + rel * mag[ik]
                        + abs_g * col_abs[ik % d]
                        + floor
                        + 1e-6 * maxw
                })
                .collect()
        };
        check_within(
            &format!("{name} dimg nbuf{nbuf} {sfx}"),
            &dimg,
            &r.dimg,
            &tol(&r.dimg, &r.mag_img, &r.abs_txt, max_img),
        );
        check_within(
            &format!("{name} dtxt nbuf{nbuf} {sfx}"),
            &dtxt,
            &r.dtxt,
            &tol(&r.dtxt, &r.mag_txt, &r.abs_img, max_txt),
        );
        // d s = Σ dz_ij S_ij, f32 dz times the f32 dot in every dtype: dz off by 2 atol_z of its
        // magnitude, S by atol_z / s with Σ|dz| <= 4 c B = 2 g.
        let ds_tol = 2.0 * atol_z * r.mag_dscale + atol_z / s as f64 * 2.0 * GOUT as f64 + 1e-6;
        check_within(
            &format!("infonce_reduce dscale {sfx}"),
            &[ds],
            &[r.dscale],
            &[ds_tol],
        );
        match &first {
            None => first = Some((dimg, dtxt, ds)),
            Some((i1, t1, s1)) => {
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<u32>>();
                check_exact(
                    &format!("{name} nbuf1 == nbuf2 dimg {sfx}"),
                    &bits(&dimg),
                    &bits(i1),
                );
                check_exact(
                    &format!("{name} nbuf1 == nbuf2 dtxt {sfx}"),
                    &bits(&dtxt),
                    &bits(t1),
                );
                check_exact(
                    &format!("{name} nbuf1 == nbuf2 dscale {sfx}"),
                    &[ds.to_bits()],
                    &[s1.to_bits()],
                );
            }
        }
    }
    assert!(
        first.is_some(),
        "{what}: no backward launch fits this device's shared memory"
    );
}

#[test]
fn infonce_specialised_widths_match_reference() {
    let Some(g) = gpu() else { return };
    for (k, c) in SPECIALISED.iter().enumerate() {
        for dt in DTYPES {
            run_case(g, c, dt, 900 + k as u64);
        }
    }
}

#[test]
fn infonce_unspecialised_widths_match_reference() {
    let Some(g) = gpu() else { return };
    for (k, c) in UNSPECIALISED.iter().enumerate() {
        for dt in DTYPES {
            run_case(g, c, dt, 950 + k as u64);
        }
    }
}

/// A real batch size in f16: G = s·dz ~ s·g/(2B)·p_ij is ~1e-7 here (CLIP-like temperature,
/// near-uniform softmax), deep in f16's subnormal range, so the kernel must rescale G before
/// storing it as f16 (an unscaled G loses the off-diagonal terms; the per-G-element absolute
/// error the model allows is now ~1e-17, far below that loss). bf16 for comparison.
const LARGE_BATCH: Case = case(8192, 128, 0.07, [0, 0, 0, 0], 0, 0);

#[test]
fn infonce_large_batch_f16_keeps_off_diagonal_gradients() {
    let Some(g) = gpu() else { return };
    for dt in [DType::F16, DType::BF16] {
        run_case(g, &LARGE_BATCH, dt, 990);
    }
}

#[test]
fn infonce_refuses_bad_buffers_groups_and_widths() {
    let Some(g) = gpu() else { return };
    let dt = DType::BF16;
    let (b, d) = (4, 8);
    let img = g.upload_as(&[0.5; 32], dt).unwrap();
    let short = g.upload_as(&[0.5; 31], dt).unwrap();
    let wrong = g.upload_as(&[0.5; 32], DType::F32).unwrap();
    let one = g.upload(&[1.0f32]).unwrap();
    let vec4 = g.poisoned::<f32>(b).unwrap();
    let f32p = |x: &CudaSlice<f32>| g.ptr_of(x, DType::F32);
    let rows = |p: &medsyn::cuda::DevBuf| Rows::contiguous(p.ptr(), d);
    let fwd = |img: Rows, txt: Rows, launch: InfoNceLaunch| {
        nce::info_nce_forward(
            g,
            img,
            txt,
            f32p(&one),
            b,
            d,
            f32p(&vec4),
            f32p(&vec4),
            f32p(&one),
            &launch,
            None,
        )
        .unwrap_err()
        .to_string()
    };
    let err = fwd(rows(&img), rows(&short), InfoNceLaunch::default());
    assert!(err.contains("txt holds 31 elements"), "{err}");
    let err = fwd(rows(&img), rows(&wrong), InfoNceLaunch::default());
    assert!(err.contains("expected BF16"), "{err}");
    let err = fwd(
        rows(&img),
        rows(&img),
        InfoNceLaunch {
            rpg: Some(100),
            ..Default::default()
        },
    );
    assert!(err.contains("multiple of 128"), "{err}");
    // d > 768 has no backward kernel.
    let wide = g.upload_as(&vec![0.5; b * 800], dt).unwrap();
    let err = nce::info_nce_backward(
        g,
        Rows::contiguous(wide.ptr(), 800),
        Rows::contiguous(wide.ptr(), 800),
        f32p(&vec4),
        f32p(&vec4),
        f32p(&one),
        f32p(&one),
        b,
        800,
        Some(Rows::contiguous(wide.ptr(), 800)),
        None,
        None,
        &InfoNceLaunch::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("d <= 768"), "{err}");
}
