//! backend::cuda::gemm (cuBLAS) vs a float64 reference: transposes, batches, broadcast batch
//! strides, alpha/beta, padded row strides, f32/bf16/f16.

use crate::support::*;
use medsyn::backend::cuda::gemm::{gemm, GemmShape};
use medsyn::DType;

/// C = alpha·op(A)·op(B) + beta·C per batch item, in f64, from the same row-major buffers.
fn reference(s: &GemmShape, a: &[f32], b: &[f32], c0: &[f32]) -> Vec<f32> {
    let mut c = c0.to_vec();
    for bi in 0..s.batch {
        for i in 0..s.m {
            for j in 0..s.n {
                let mut acc = 0.0f64;
                for p in 0..s.k {
                    let av = if s.trans_a {
                        a[bi * s.stride_a + p * s.lda + i]
                    } else {
                        a[bi * s.stride_a + i * s.lda + p]
                    };
                    let bv = if s.trans_b {
                        b[bi * s.stride_b + j * s.ldb + p]
                    } else {
                        b[bi * s.stride_b + p * s.ldb + j]
                    };
                    acc += av as f64 * bv as f64;
                }
                let ci = bi * s.stride_c + i * s.ldc + j;
                c[ci] = (s.alpha as f64 * acc + s.beta as f64 * c0[ci] as f64) as f32;
            }
        }
    }
    c
}

fn len(rows: usize, cols: usize, ld: usize, stride: usize, batch: usize) -> usize {
    (batch - 1) * stride + (rows - 1) * ld + cols
}

fn cases() -> Vec<(&'static str, GemmShape)> {
    let mut v = vec![
        ("dense", GemmShape::dense(37, 53, 29, false)),
        ("linear", GemmShape::dense(65, 130, 96, true)),
        ("single", GemmShape::dense(1, 1, 1, false)),
    ];
    let mut t = GemmShape::dense(33, 17, 70, false);
    t.trans_a = true;
    t.lda = 33 + 3; // A stored [k, m] with padded rows
    t.stride_a = 70 * 36;
    v.push(("trans_a padded", t));
    let mut bt = GemmShape::dense(20, 24, 16, true);
    bt.batch = 3;
    bt.stride_a = 20 * 16;
    bt.stride_b = 0; // one B for every batch item (a shared weight)
    bt.stride_c = 20 * 24 + 5;
    bt.alpha = 0.5;
    bt.beta = -1.25;
    v.push(("batched broadcast alpha beta", bt));
    v
}

#[test]
fn gemm_matches_float64_reference() {
    let Some(g) = gpu() else { return };
    for (ci, (name, s)) in cases().into_iter().enumerate() {
        for dt in DTYPES {
            let (ar, ac) = if s.trans_a { (s.k, s.m) } else { (s.m, s.k) };
            let (br, bc) = if s.trans_b { (s.n, s.k) } else { (s.k, s.n) };
            let seed = 900 + 10 * ci as u64;
            let a = uniform_as(seed, len(ar, ac, s.lda, s.stride_a, s.batch), -1.0, 1.0, dt);
            let b = uniform_as(
                seed + 1,
                len(
                    br,
                    bc,
                    s.ldb,
                    s.stride_b,
                    // A zero batch stride shares one B among all batch items.
                    if s.stride_b == 0 { 1 } else { s.batch },
                ),
                -1.0,
                1.0,
                dt,
            );
            let c0 = uniform_as(
                seed + 2,
                len(s.m, s.n, s.ldc, s.stride_c, s.batch),
                -1.0,
                1.0,
                dt,
            );
            let want = reference(&s, &a, &b, &c0);
            let (ad, bd) = (g.upload_as(&a, dt).unwrap(), g.upload_as(&b, dt).unwrap());
            let cd = if s.beta == 0.0 {
                g.poisoned_as(c0.len(), dt).unwrap()
            } else {
                g.upload_as(&c0, dt).unwrap()
            };
            gemm(g, ad.ptr(), bd.ptr(), cd.ptr(), &s).unwrap();
            let mut got = g.download_f32(&cd).unwrap();
            let mut want = want;
            // Gaps between rows/batch items are not written: compare the written elements only.
            let mut keep = vec![false; got.len()];
            for bi in 0..s.batch {
                for i in 0..s.m {
                    for j in 0..s.n {
                        keep[bi * s.stride_c + i * s.ldc + j] = true;
                    }
                }
            }
            got = got
                .iter()
                .zip(&keep)
                .filter(|(_, &k)| k)
                .map(|(v, _)| *v)
                .collect();
            want = want
                .iter()
                .zip(&keep)
                .filter(|(_, &k)| k)
                .map(|(v, _)| *v)
                .collect();
            // f32: no TF32 (sgemm-exact up to summation order); half: one output rounding.
            let atol = match dt {
                DType::F32 => 1e-5 * (s.k as f64).sqrt(),
                _ => 2e-3 * (s.k as f64).sqrt(),
            };
            check(&format!("gemm {name}"), dt, &got, &want, atol, rtol(dt));
        }
    }
}

#[test]
fn gemm_refuses_short_buffers_and_mixed_dtypes() {
    let Some(g) = gpu() else { return };
    let s = GemmShape::dense(4, 5, 6, false);
    let a = g.upload_as(&[0.0; 24], DType::F32).unwrap();
    let b = g.upload_as(&[0.0; 29], DType::F32).unwrap();
    let c = g.poisoned_as(20, DType::F32).unwrap();
    let err = gemm(g, a.ptr(), b.ptr(), c.ptr(), &s)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("B holds 29 elements, the shape needs 30"),
        "{err}"
    );
    let bh = g.upload_as(&[0.0; 30], DType::BF16).unwrap();
    let err = gemm(g, a.ptr(), bh.ptr(), c.ptr(), &s)
        .unwrap_err()
        .to_string();
    assert!(err.contains("expected F32"), "{err}");
    let mut bad = s;
    bad.ldc = 4;
    let err = gemm(g, a.ptr(), bh.ptr(), c.ptr(), &bad)
        .unwrap_err()
        .to_string();
    assert!(err.contains("row strides"), "{err}");
}
