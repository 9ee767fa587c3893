//! kernels/attention.cu (flash attention forward; backward pre, main and dq passes) vs
//! src/backend/cpu/attention.rs (attention_forward / attention_backward).

use crate::support::*;
use cudarc::driver::CudaSlice;
use medsyn::backend::cpu::attention::{
    attention_backward, attention_forward, AttnDims, AttnNeeds, Masks, Strided4,
};
use medsyn::backend::cuda::attention::{self as gpu_attn, AttnGrads, AttnShape, KeyKeep, View};
use medsyn::cuda::gpu::round_to;
use medsyn::cuda::{DevBuf, Gpu};
use medsyn::tensor::DType;

/// Where element (b, h, l, d) of a [B, H, L, D] operand lives.
#[derive(Clone, Copy, Debug)]
enum Layout {
    /// [B, H, L, D] contiguous.
    Bhld,
    /// A [B, L, H, D] tensor viewed as [B, H, L, D] (rows contiguous, head-interleaved).
    Blhd,
    /// A [B, H, D, L] tensor viewed as [B, H, L, D] (column stride L: the element-wise path).
    Bhdl,
}

impl Layout {
    /// Element strides (sb, sh, sl, sd) for sizes h, l, d.
    fn strides(self, h: usize, l: usize, d: usize) -> [usize; 4] {
        match self {
            Layout::Bhld => [h * l * d, l * d, d, 1],
            Layout::Blhd => [l * h * d, d, h * d, 1],
            Layout::Bhdl => [h * d * l, d * l, 1, l],
        }
    }

    /// The canonical [B,H,L,D] values `canon` stored in this layout.
    fn scatter(self, canon: &[f32], h: usize, l: usize, d: usize) -> Vec<f32> {
        let st = self.strides(h, l, d);
        let mut out = vec![f32::NAN; canon.len()];
        for (i, &x) in canon.iter().enumerate() {
            out[offset(&st, i, h, l, d)] = x;
        }
        out
    }

    /// The canonical [B,H,L,D] order of values stored in this layout.
    fn gather(self, stored: &[f32], h: usize, l: usize, d: usize) -> Vec<f32> {
        let st = self.strides(h, l, d);
        (0..stored.len())
            .map(|i| stored[offset(&st, i, h, l, d)])
            .collect()
    }
}

/// Storage offset of canonical index `i` = ((b·H + h)·L + l)·D + d.
fn offset(st: &[usize; 4], i: usize, h: usize, l: usize, d: usize) -> usize {
    let (dd, r) = (i % d, i / d);
    let (ll, r) = (r % l, r / l);
    let (hh, b) = (r % h, r / h);
    b * st[0] + hh * st[1] + ll * st[2] + dd * st[3]
}

/// Key-padding mask of a case.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Keep {
    None,
    /// About two keys in three kept, per (batch, key).
    Random,
    /// Random, and with B > 1 the last batch hides every key (fully masked rows).
    RandomLastHidden,
}

#[derive(Clone, Copy, Debug)]
struct Case {
    b: usize,
    h: usize,
    lq: usize,
    lk: usize,
    keep: Keep,
    causal: bool,
    layout: Layout,
}

/// Lengths that are not multiples of any tile (the forward's 128 query rows and 32/64 keys,
/// the backward's 64 keys and 16/32/64 query rows), self- and cross-attention, length 1,
/// B·H > 1 everywhere; with and without the key-padding mask, causal, and the three operand
/// layouts.
const CASES: [Case; 5] = [
    Case {
        b: 2,
        h: 3,
        lq: 77,
        lk: 77,
        keep: Keep::None,
        causal: false,
        layout: Layout::Bhld,
    },
    Case {
        b: 2,
        h: 2,
        lq: 200,
        lk: 77,
        keep: Keep::Random,
        causal: false,
        layout: Layout::Bhld,
    },
    Case {
        b: 3,
        h: 2,
        lq: 1,
        lk: 129,
        keep: Keep::Random,
        causal: false,
        layout: Layout::Blhd,
    },
    Case {
        b: 2,
        h: 2,
        lq: 129,
        lk: 129,
        keep: Keep::RandomLastHidden,
        causal: true,
        layout: Layout::Blhd,
    },
    Case {
        b: 1,
        h: 3,
        lq: 130,
        lk: 1,
        keep: Keep::None,
        causal: false,
        layout: Layout::Bhdl,
    },
];

/// Tolerance relative to the output's scale (max |want|), also used as rtol. The CPU twin runs
/// in f32 on the rounded inputs; the GPU rounds P (forward, and for dV) and dS (for dQ, dK) to
/// T before the tensor-core products and rounds its outputs to T, so bf16 (8 bits) errors
/// are a few 1e-3 of the scale and f16 (11 bits) a few 1e-4 (the emulator measured 2–5e-3
/// and 2–5e-4 against f64): 2e-2 and 3e-3 leave ~5x margin, and 1.5x that for dQ, dK whose
/// dS = P∘(dP − Δ) carries an extra rounding and cancellation. f32 (CUDA cores, ex2.approx,
/// other summation orders): 1e-4.
fn tol(dt: DType) -> f64 {
    match dt {
        DType::BF16 => 2e-2,
        DType::F16 => 3e-3,
        _ => 1e-4,
    }
}

/// One case's host data (canonical [B,H,L,D] order, rounded to the dtype) and the CPU twin's
/// forward results.
struct Inputs {
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    dout: Vec<f32>,
    keep: Option<Vec<bool>>,
    out: Vec<f32>,
    lse: Vec<f32>,
}

fn inputs(c: &Case, d: usize, dt: DType, seed: u64) -> Inputs {
    let (nq, nk) = (c.b * c.h * c.lq * d, c.b * c.h * c.lk * d);
    // q, k in [-2, 2): scores of std ~1.3 after the 1/sqrt(D) scale, so rows are peaked.
    let q = uniform_as(seed, nq, -2.0, 2.0, dt);
    let k = uniform_as(seed + 1, nk, -2.0, 2.0, dt);
    let v = uniform_as(seed + 2, nk, -1.0, 1.0, dt);
    let dout = uniform_as(seed + 3, nq, -1.0, 1.0, dt);
    let keep = (c.keep != Keep::None).then(|| {
        let r = uniform(seed + 4, c.b * c.lk, 0.0, 3.0);
        (0..c.b * c.lk)
            .map(|i| {
                let hidden_batch =
                    c.keep == Keep::RandomLastHidden && c.b > 1 && i / c.lk == c.b - 1;
                !hidden_batch && r[i] >= 1.0
            })
            .collect::<Vec<bool>>()
    });
    let (out, lse) = attention_forward(
        canon(&q, c.h, c.lq, d),
        canon(&k, c.h, c.lk, d),
        canon(&v, c.h, c.lk, d),
        dims(c, d),
        &masks(c, keep.as_deref()),
        scale(d),
    );
    Inputs {
        q,
        k,
        v,
        dout,
        keep,
        out,
        lse,
    }
}

fn canon(data: &[f32], h: usize, l: usize, d: usize) -> Strided4<'_, f32> {
    Strided4 {
        data,
        offset: 0,
        strides: [h * l * d, l * d, d, 1],
    }
}

fn dims(c: &Case, d: usize) -> AttnDims {
    AttnDims {
        batch: c.b,
        heads: c.h,
        lq: c.lq,
        lk: c.lk,
        d,
        dv: d,
    }
}

fn masks<'a>(c: &Case, keep: Option<&'a [bool]>) -> Masks<'a, f32> {
    Masks {
        causal: c.causal,
        key_keep: keep,
        bias: None,
    }
}

fn scale(d: usize) -> f64 {
    1.0 / (d as f64).sqrt()
}

/// `x` uploaded in `dt`, stored in the case's layout.
fn upload(g: &Gpu, x: &[f32], c: &Case, l: usize, d: usize, dt: DType) -> DevBuf {
    g.upload_as(&c.layout.scatter(x, c.h, l, d), dt).unwrap()
}

/// `buf` as a [B, H, l, d] view in the case's layout.
fn view(buf: &DevBuf, c: &Case, l: usize, d: usize) -> View {
    View {
        ptr: buf.ptr(),
        strides: c.layout.strides(c.h, l, d),
    }
}

/// The case's sizes, scale and causal flag.
fn shape(c: &Case, d: usize) -> AttnShape {
    AttnShape {
        batch: c.b,
        heads: c.h,
        lq: c.lq,
        lk: c.lk,
        d,
        scale: scale(d) as f32,
        causal: c.causal,
    }
}

/// The uploaded mask as the launch argument (batch stride Lk).
fn key_keep(g: &Gpu, c: &Case, keep: &Option<CudaSlice<u8>>) -> Option<KeyKeep> {
    keep.as_ref().map(|k| KeyKeep {
        ptr: g.ptr_of(k, DType::U8),
        batch_stride: c.lk,
    })
}

/// The 0/1 byte mask [B, Lk] (keep_sb = Lk).
fn upload_keep(g: &Gpu, keep: &Option<Vec<bool>>) -> Option<CudaSlice<u8>> {
    keep.as_ref().map(|k| {
        g.upload(&k.iter().map(|&x| x as u8).collect::<Vec<u8>>())
            .unwrap()
    })
}

/// `got` vs `want` with atol = tol·max|want| and rtol = tol.
fn check_scaled(name: &str, dt: DType, got: &[f32], want: &[f32], tol: f64) {
    let scale = want
        .iter()
        .filter(|x| x.is_finite())
        .fold(0.0f64, |m, &x| m.max(x.abs() as f64))
        .max(1e-6);
    check(name, dt, got, want, tol * scale, tol);
}

fn forward_width(d: usize) {
    let Some(g) = gpu() else { return };
    let mut fails = Vec::new();
    for dt in DTYPES {
        for (ci, c) in CASES.iter().enumerate() {
            let what = format!("d{d} {dt:?} case {ci} {c:?}");
            soft(&mut fails, what, || forward_case(g, c, d, dt, ci as u64));
        }
    }
    finish(fails);
}

fn forward_case(g: &Gpu, c: &Case, d: usize, dt: DType, ci: u64) {
    let x = inputs(c, d, dt, 7000 + 100 * d as u64 + 10 * ci);
    let (bh, lq, lk) = (c.b * c.h, c.lq, c.lk);
    let qd = upload(g, &x.q, c, lq, d, dt);
    let kd = upload(g, &x.k, c, lk, d, dt);
    let vd = upload(g, &x.v, c, lk, d, dt);
    let keep = upload_keep(g, &x.keep);
    let od = g.poisoned_as(bh * lq * d, dt).unwrap();
    let lse = g.poisoned::<f32>(bh * lq).unwrap();
    gpu_attn::attention_forward(
        g,
        view(&qd, c, lq, d),
        view(&kd, c, lk, d),
        view(&vd, c, lk, d),
        view(&od, c, lq, d),
        g.ptr_of(&lse, DType::F32),
        key_keep(g, c, &keep),
        &shape(c, d),
    )
    .unwrap();

    let out = c.layout.gather(&g.download_f32(&od).unwrap(), c.h, lq, d);
    let got_lse = g.download(&lse).unwrap();
    check_scaled(&format!("flash_attn_fwd_d{d}"), dt, &out, &x.out, tol(dt));
    // lse is f32 from f32 scores of the same rounded inputs in every dtype: only summation
    // order and ex2.approx differ. Fully masked rows must be exactly -inf.
    let lse_scale = x
        .lse
        .iter()
        .filter(|v| v.is_finite())
        .fold(1.0f64, |m, &v| m.max(v.abs() as f64));
    check(
        &format!("flash_attn_fwd_d{d} lse"),
        dt,
        &got_lse,
        &x.lse,
        1e-4 * lse_scale,
        0.0,
    );
}

/// Which gradients a backward run asks for (a null pointer skips the others).
#[derive(Clone, Copy, Debug)]
struct Wants {
    dq: bool,
    dk: bool,
    dv: bool,
}

const ALL: Wants = Wants {
    dq: true,
    dk: true,
    dv: true,
};

fn backward_width(d: usize) {
    let Some(g) = gpu() else { return };
    let mut fails = Vec::new();
    for dt in DTYPES {
        for (ci, c) in CASES.iter().enumerate() {
            let what = format!("d{d} {dt:?} case {ci} {c:?}");
            soft(&mut fails, what, || {
                backward_case(g, c, d, dt, ci as u64, ALL)
            });
        }
        // The null-pointer skips: dq only, then dk and dv only (case 1: cross attention, mask).
        for wants in [
            Wants {
                dq: true,
                dk: false,
                dv: false,
            },
            Wants {
                dq: false,
                dk: true,
                dv: true,
            },
        ] {
            let what = format!("d{d} {dt:?} case 1 {wants:?}");
            soft(&mut fails, what, || {
                backward_case(g, &CASES[1], d, dt, 1, wants)
            });
        }
    }
    finish(fails);
}

/// The backward from the CPU twin's forward (its output rounded to T, as the GPU's forward
/// stores it, and its f32 lse), so that this checks the three backward kernels alone.
fn backward_case(g: &Gpu, c: &Case, d: usize, dt: DType, ci: u64, wants: Wants) {
    let x = inputs(c, d, dt, 9000 + 100 * d as u64 + 10 * ci);
    let out_t = round_to(&x.out, dt);
    let grads = attention_backward(
        canon(&x.q, c.h, c.lq, d),
        canon(&x.k, c.h, c.lk, d),
        canon(&x.v, c.h, c.lk, d),
        &out_t,
        &x.dout,
        &x.lse,
        dims(c, d),
        &masks(c, x.keep.as_deref()),
        scale(d),
        AttnNeeds {
            q: wants.dq,
            k: wants.dk,
            v: wants.dv,
            bias: false,
        },
    );

    let (bh, lq, lk) = (c.b * c.h, c.lq, c.lk);
    let qd = upload(g, &x.q, c, lq, d, dt);
    let kd = upload(g, &x.k, c, lk, d, dt);
    let vd = upload(g, &x.v, c, lk, d, dt);
    let od = upload(g, &out_t, c, lq, d, dt);
    let dod = upload(g, &x.dout, c, lq, d, dt);
    let lse = g.upload(&x.lse).unwrap();
    let keep = upload_keep(g, &x.keep);
    let dqd = g.poisoned_as(bh * lq * d, dt).unwrap();
    let dkd = g.poisoned_as(bh * lk * d, dt).unwrap();
    let dvd = g.poisoned_as(bh * lk * d, dt).unwrap();
    // dq, dk, dv share the layout of q, k, v; a gradient not wanted is passed as None.
    let out_grads = AttnGrads {
        dq: wants.dq.then(|| view(&dqd, c, lq, d)),
        dk: wants.dk.then(|| view(&dkd, c, lk, d)),
        dv: wants.dv.then(|| view(&dvd, c, lk, d)),
    };
    gpu_attn::attention_backward(
        g,
        view(&qd, c, lq, d),
        view(&kd, c, lk, d),
        view(&vd, c, lk, d),
        view(&od, c, lq, d),
        view(&dod, c, lq, d),
        g.ptr_of(&lse, DType::F32),
        key_keep(g, c, &keep),
        out_grads,
        &shape(c, d),
    )
    .unwrap();

    let t = tol(dt);
    if let Some(want) = &grads.dq {
        let got = c.layout.gather(&g.download_f32(&dqd).unwrap(), c.h, lq, d);
        check_scaled(&format!("flash_attn_bwd_d{d} dq"), dt, &got, want, 1.5 * t);
    }
    if let Some(want) = &grads.dk {
        let got = c.layout.gather(&g.download_f32(&dkd).unwrap(), c.h, lk, d);
        check_scaled(&format!("flash_attn_bwd_d{d} dk"), dt, &got, want, 1.5 * t);
    }
    if let Some(want) = &grads.dv {
        let got = c.layout.gather(&g.download_f32(&dvd).unwrap(), c.h, lk, d);
        check_scaled(&format!("flash_attn_bwd_d{d} dv"), dt, &got, want, t);
    }
}

#[test]
fn flash_attn_fwd_d40_matches_cpu() {
    forward_width(40);
}

#[test]
fn flash_attn_fwd_d64_matches_cpu() {
    forward_width(64);
}

#[test]
fn flash_attn_fwd_d80_matches_cpu() {
    forward_width(80);
}

#[test]
fn flash_attn_fwd_d128_matches_cpu() {
    forward_width(128);
}

#[test]
fn flash_attn_fwd_d160_matches_cpu() {
    forward_width(160);
}

#[test]
fn flash_attn_bwd_d40_matches_cpu() {
    backward_width(40);
}

#[test]
fn flash_attn_bwd_d64_matches_cpu() {
    backward_width(64);
}

#[test]
fn flash_attn_bwd_d80_matches_cpu() {
    backward_width(80);
}

#[test]
fn flash_attn_bwd_d128_matches_cpu() {
    backward_width(128);
}

#[test]
fn flash_attn_bwd_d160_matches_cpu() {
    backward_width(160);
}

/// Host side of the cases (runs without a GPU): the layout scatter/gather pair is a
/// bijection, every case's inputs and CPU reference build, and the fully masked batch gives
/// lse = -inf and zero output rows as the kernels are checked against.
#[test]
fn attention_cases_host_side() {
    for c in &CASES {
        let d = 40;
        for layout in [Layout::Bhld, Layout::Blhd, Layout::Bhdl] {
            let n = c.b * c.h * c.lq * d;
            let x: Vec<f32> = (0..n).map(|i| i as f32).collect();
            let stored = layout.scatter(&x, c.h, c.lq, d);
            assert!(
                stored.iter().all(|v| !v.is_nan()),
                "{layout:?} {c:?}: not a bijection"
            );
            assert_eq!(layout.gather(&stored, c.h, c.lq, d), x, "{layout:?} {c:?}");
        }
        let x = inputs(c, d, DType::BF16, 1);
        assert_eq!(x.out.len(), c.b * c.h * c.lq * d);
        assert_eq!(x.lse.len(), c.b * c.h * c.lq);
        if c.keep == Keep::RandomLastHidden {
            let per_batch = c.h * c.lq;
            assert!(x.lse[(c.b - 1) * per_batch..]
                .iter()
                .all(|&l| l == f32::NEG_INFINITY));
            assert!(x.out[(c.b - 1) * per_batch * d..].iter().all(|&o| o == 0.0));
        }
        assert!(x.out.iter().all(|v| v.is_finite()), "{c:?}");
    }
}

#[test]
fn attention_refuses_bad_buffers_widths_and_dtypes() {
    let Some(g) = gpu() else { return };
    let dt = DType::BF16;
    let (h, l, d) = (2, 5, 64);
    let n = h * l * d;
    let x = g.upload_as(&vec![0.0; n], dt).unwrap();
    let short = g.poisoned_as(n - 1, dt).unwrap();
    let wrong = g.poisoned_as(n, DType::F32).unwrap();
    let lse = g.poisoned::<f32>(h * l).unwrap();
    let lse = g.ptr_of(&lse, DType::F32);
    let v = |b: &DevBuf| View::contiguous(b.ptr(), h, l, d);
    let mut sh = AttnShape {
        batch: 1,
        heads: h,
        lq: l,
        lk: l,
        d,
        scale: 0.125,
        causal: false,
    };
    let fwd = |o: &DevBuf, sh: &AttnShape| {
        gpu_attn::attention_forward(g, v(&x), v(&x), v(&x), v(o), lse, None, sh).unwrap_err()
    };
    let err = fwd(&short, &sh);
    assert!(err.to_string().contains("o holds"), "{err}");
    let err = fwd(&wrong, &sh);
    assert!(err.to_string().contains("expected BF16"), "{err}");
    sh.d = 32;
    let err = fwd(&x, &sh);
    assert!(err.to_string().contains("head width 32"), "{err}");
    sh.d = d;
    sh.scale = -1.0;
    let err = fwd(&x, &sh);
    assert!(err.to_string().contains("scale"), "{err}");
    sh.scale = 0.125;
    // A mask shorter than [B, Lk] and a dq gradient of the wrong dtype.
    let mask = g.upload(&[1u8; 4]).unwrap();
    let keep = KeyKeep {
        ptr: g.ptr_of(&mask, DType::U8),
        batch_stride: l,
    };
    let err = gpu_attn::attention_forward(g, v(&x), v(&x), v(&x), v(&x), lse, Some(keep), &sh)
        .unwrap_err();
    assert!(err.to_string().contains("key mask holds 4"), "{err}");
    let grads = AttnGrads {
        dq: Some(v(&wrong)),
        ..AttnGrads::default()
    };
    let err =
        gpu_attn::attention_backward(g, v(&x), v(&x), v(&x), v(&x), v(&x), lse, None, grads, &sh)
            .unwrap_err();
    assert!(err.to_string().contains("dq is F32"), "{err}");
}
