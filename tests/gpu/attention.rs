//! kernels/attention.cu (flash attention forward; backward pre, main and dq passes) vs
//! src/backend/cpu/attention.rs (attention_forward / attention_backward).

use crate::support::*;
use cudarc::driver::sys::CUfunction_attribute_enum;
use cudarc::driver::{CudaFunction, CudaSlice};
use medsyn::backend::cpu::attention::{
    attention_backward, attention_forward, AttnDims, AttnNeeds, Masks, Strided4,
};
use medsyn::cuda::gpu::{round_to, suffix};
use medsyn::cuda::{DevBuf, Gpu};
use medsyn::tensor::DType;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// Query rows per forward block (64·MT with MT = 2 for every head width).
const FWD_ROWS: usize = 128;
/// Keys per backward block.
const BWD_KEYS: usize = 64;

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
    fn strides(self, h: usize, l: usize, d: usize) -> [i64; 4] {
        let s = match self {
            Layout::Bhld => [h * l * d, l * d, d, 1],
            Layout::Blhd => [l * h * d, d, h * d, 1],
            Layout::Bhdl => [h * d * l, d * l, 1, l],
        };
        s.map(|x| x as i64)
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
fn offset(st: &[i64; 4], i: usize, h: usize, l: usize, d: usize) -> usize {
    let (dd, r) = (i % d, i / d);
    let (ll, r) = (r % l, r / l);
    let (hh, b) = (r % h, r / h);
    (b as i64 * st[0] + hh as i64 * st[1] + ll as i64 * st[2] + dd as i64 * st[3]) as usize
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

/// Dynamic shared bytes of flash_attn_fwd_d{d} (the launch contract's table).
fn fwd_smem(d: usize, dt: DType) -> u32 {
    let half = dt != DType::F32;
    match (d, half) {
        (40, true) => 29184,
        (64, true) => 37376,
        (80, true) => 45568,
        (128, true) => 52480,
        (160, true) => 64768,
        (40, false) => 88576,
        (64, false) => 104960,
        (80, false) => 121344,
        (128, false) => 120064,
        (160, false) => 144640,
        _ => panic!("no attention kernel for head width {d}"),
    }
}

/// Dynamic shared bytes of flash_attn_bwd_d{d} (the launch contract's table).
fn bwd_smem(d: usize, dt: DType) -> u32 {
    let half = dt != DType::F32;
    match (d, half) {
        (40, true) => 53248,
        (64, true) => 65536,
        (80, true) => 77824,
        (128, true) => 75264,
        (160, true) => 67840,
        (40, false) => 98304,
        (64, false) => 122880,
        (80, false) => 147456,
        (128, false) => 144896,
        (160, false) => 131328,
        _ => panic!("no attention kernel for head width {d}"),
    }
}

/// The entry point with its dynamic shared-memory limit raised to `smem` (needed above 48 KiB).
fn kernel(g: &Gpu, name: &str, smem: u32) -> CudaFunction {
    let f = g.function("attention", name).unwrap();
    if smem > 0 {
        f.set_attribute(
            CUfunction_attribute_enum::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
            smem as i32,
        )
        .unwrap_or_else(|e| panic!("{name}: raising dynamic shared memory to {smem}: {e}"));
    }
    f
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

/// The 0/1 byte mask [B, Lk] (keep_sb = Lk).
fn upload_keep(g: &Gpu, keep: &Option<Vec<bool>>) -> Option<CudaSlice<u8>> {
    keep.as_ref().map(|k| {
        g.upload(&k.iter().map(|&x| x as u8).collect::<Vec<u8>>())
            .unwrap()
    })
}

/// Runs `f`, returning its panic message instead of unwinding (so that one run reports every
/// mismatch of a test, not just the first).
fn collect(fails: &mut Vec<String>, what: String, f: impl FnOnce()) {
    if let Err(p) = catch_unwind(AssertUnwindSafe(f)) {
        let msg = p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        fails.push(format!("{what}: {msg}"));
    }
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
            collect(&mut fails, what, || forward_case(g, c, d, dt, ci as u64));
        }
    }
    assert!(
        fails.is_empty(),
        "{} failure(s):\n{}",
        fails.len(),
        fails.join("\n")
    );
}

fn forward_case(g: &Gpu, c: &Case, d: usize, dt: DType, ci: u64) {
    let s = suffix(dt).unwrap();
    let x = inputs(c, d, dt, 7000 + 100 * d as u64 + 10 * ci);
    let (bh, lq, lk) = (c.b * c.h, c.lq, c.lk);
    let qd = upload(g, &x.q, c, lq, d, dt);
    let kd = upload(g, &x.k, c, lk, d, dt);
    let vd = upload(g, &x.v, c, lk, d, dt);
    let keep = upload_keep(g, &x.keep);
    let mut od = g.poisoned_as(bh * lq * d, dt).unwrap();
    let mut lse = g.poisoned::<f32>(bh * lq).unwrap();

    let smem = fwd_smem(d, dt);
    let f = kernel(g, &format!("flash_attn_fwd_d{d}_{s}"), smem);
    let cfg = LaunchConfig {
        grid_dim: (lq.div_ceil(FWD_ROWS) as u32, bh as u32, 1),
        block_dim: (128, 1, 1),
        shared_mem_bytes: smem,
    };
    let null = 0u64;
    let keep_sb = lk as i64;
    let (h, lq_i, lk_i) = (c.h as i32, lq as i32, lk as i32);
    let sc = scale(d) as f32;
    let causal = c.causal as i32;
    let [q_sb, q_sh, q_sl, q_sd] = c.layout.strides(c.h, lq, d);
    let [k_sb, k_sh, k_sl, k_sd] = c.layout.strides(c.h, lk, d);
    let [v_sb, v_sh, v_sl, v_sd] = c.layout.strides(c.h, lk, d);
    let [o_sb, o_sh, o_sl, o_sd] = c.layout.strides(c.h, lq, d);
    let stream = g.stream();
    let mut lb = stream.launch_builder(&f);
    lb.arg(&qd.bytes)
        .arg(&kd.bytes)
        .arg(&vd.bytes)
        .arg(&mut od.bytes)
        .arg(&mut lse);
    match &keep {
        Some(kp) => lb.arg(kp),
        None => lb.arg(&null),
    };
    lb.arg(&keep_sb)
        .arg(&h)
        .arg(&lq_i)
        .arg(&lk_i)
        .arg(&sc)
        .arg(&causal)
        .arg(&q_sb)
        .arg(&q_sh)
        .arg(&q_sl)
        .arg(&q_sd)
        .arg(&k_sb)
        .arg(&k_sh)
        .arg(&k_sl)
        .arg(&k_sd)
        .arg(&v_sb)
        .arg(&v_sh)
        .arg(&v_sl)
        .arg(&v_sd)
        .arg(&o_sb)
        .arg(&o_sh)
        .arg(&o_sl)
        .arg(&o_sd);
    unsafe { lb.launch(cfg) }.unwrap();

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
            collect(&mut fails, what, || {
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
            collect(&mut fails, what, || {
                backward_case(g, &CASES[1], d, dt, 1, wants)
            });
        }
    }
    assert!(
        fails.is_empty(),
        "{} failure(s):\n{}",
        fails.len(),
        fails.join("\n")
    );
}

/// The backward from the CPU twin's forward (its output rounded to T, as the GPU's forward
/// stores it, and its f32 lse), so that this checks the three backward kernels alone.
fn backward_case(g: &Gpu, c: &Case, d: usize, dt: DType, ci: u64, wants: Wants) {
    let s = suffix(dt).unwrap();
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

    let (b, bh, lq, lk) = (c.b, c.b * c.h, c.lq, c.lk);
    let qd = upload(g, &x.q, c, lq, d, dt);
    let kd = upload(g, &x.k, c, lk, d, dt);
    let vd = upload(g, &x.v, c, lk, d, dt);
    let od = upload(g, &out_t, c, lq, d, dt);
    let dod = upload(g, &x.dout, c, lq, d, dt);
    let lse = g.upload(&x.lse).unwrap();
    let keep = upload_keep(g, &x.keep);
    let mut dsum = g.poisoned::<f32>(bh * lq).unwrap();
    let mut dq_acc = g.poisoned::<f32>(bh * lq * d).unwrap();
    let mut dqd = g.poisoned_as(bh * lq * d, dt).unwrap();
    let mut dkd = g.poisoned_as(bh * lk * d, dt).unwrap();
    let mut dvd = g.poisoned_as(bh * lk * d, dt).unwrap();

    let null = 0u64;
    let stream = g.stream();
    let (b_i, h_i, lq_i, lk_i, d_i) = (b as i32, c.h as i32, lq as i32, lk as i32, d as i32);
    let sc = scale(d) as f32;
    let causal = c.causal as i32;
    let keep_sb = lk as i64;
    let [q_sb, q_sh, q_sl, q_sd] = c.layout.strides(c.h, lq, d);
    let [k_sb, k_sh, k_sl, k_sd] = c.layout.strides(c.h, lk, d);
    // v, dk, dv share k's strides; o, dout, dq share q's.
    let rows = bh * lq;

    // 1. dsum = rowsum(dout ∘ o); zero dq_acc when dq is wanted.
    let f = kernel(g, &format!("flash_attn_bwd_pre_{s}"), 0);
    let mut lb = stream.launch_builder(&f);
    lb.arg(&od.bytes).arg(&dod.bytes).arg(&mut dsum);
    if wants.dq {
        lb.arg(&mut dq_acc);
    } else {
        lb.arg(&null);
    }
    lb.arg(&b_i)
        .arg(&h_i)
        .arg(&lq_i)
        .arg(&d_i)
        .arg(&q_sb)
        .arg(&q_sh)
        .arg(&q_sl)
        .arg(&q_sd)
        .arg(&q_sb)
        .arg(&q_sh)
        .arg(&q_sl)
        .arg(&q_sd);
    unsafe { lb.launch(grid(rows.div_ceil(8) as u32, 256, 0)) }.unwrap();

    // 2. dk, dv and the dq accumulation.
    let smem = bwd_smem(d, dt);
    let f = kernel(g, &format!("flash_attn_bwd_d{d}_{s}"), smem);
    let cfg = LaunchConfig {
        grid_dim: (lk.div_ceil(BWD_KEYS) as u32, bh as u32, 1),
        block_dim: (128, 1, 1),
        shared_mem_bytes: smem,
    };
    // Strides of q, k, v, dout, dk, dv.
    let bwd_strides = [
        [q_sb, q_sh, q_sl, q_sd], // q
        [k_sb, k_sh, k_sl, k_sd], // k
        [k_sb, k_sh, k_sl, k_sd], // v
        [q_sb, q_sh, q_sl, q_sd], // dout
        [k_sb, k_sh, k_sl, k_sd], // dk
        [k_sb, k_sh, k_sl, k_sd], // dv
    ];
    let mut lb = stream.launch_builder(&f);
    lb.arg(&qd.bytes)
        .arg(&kd.bytes)
        .arg(&vd.bytes)
        .arg(&dod.bytes)
        .arg(&lse)
        .arg(&dsum);
    if wants.dq {
        lb.arg(&mut dq_acc);
    } else {
        lb.arg(&null);
    }
    if wants.dk {
        lb.arg(&mut dkd.bytes);
    } else {
        lb.arg(&null);
    }
    if wants.dv {
        lb.arg(&mut dvd.bytes);
    } else {
        lb.arg(&null);
    }
    match &keep {
        Some(kp) => lb.arg(kp),
        None => lb.arg(&null),
    };
    lb.arg(&keep_sb)
        .arg(&h_i)
        .arg(&lq_i)
        .arg(&lk_i)
        .arg(&sc)
        .arg(&causal);
    for st in &bwd_strides {
        lb.arg(&st[0]).arg(&st[1]).arg(&st[2]).arg(&st[3]);
    }
    unsafe { lb.launch(cfg) }.unwrap();

    // 3. dq = dq_acc as T.
    if wants.dq {
        let f = kernel(g, &format!("flash_attn_bwd_dq_{s}"), 0);
        let n = bh * lq * d;
        let blocks = n.div_ceil(256).min(65535) as u32;
        let mut lb = stream.launch_builder(&f);
        lb.arg(&dq_acc)
            .arg(&mut dqd.bytes)
            .arg(&b_i)
            .arg(&h_i)
            .arg(&lq_i)
            .arg(&d_i)
            .arg(&q_sb)
            .arg(&q_sh)
            .arg(&q_sl)
            .arg(&q_sd);
        unsafe { lb.launch(grid(blocks, 256, 0)) }.unwrap();
    }

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
