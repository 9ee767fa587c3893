//! backend::cuda::elementwise (kernels/elementwise.cu) vs src/backend/cpu/{elementwise,binary}.rs
//! and src/ops/{unary,cast}.rs: every unary op and its backward, binary ops through every Reach,
//! affine, clamp (+ backward), powf (+ backward) and the six casts (bit-exact against the `half`
//! crate). Unknown op codes (which the typed launch functions cannot pass) launch directly.

use crate::support::*;
use cudarc::driver::DeviceRepr;
use half::{bf16, f16};
use medsyn::backend::cpu::binary::{self as cpu_bin, Binary, Reach};
use medsyn::backend::cpu::elementwise::{self as cpu_ew, Unary};
use medsyn::backend::cuda::elementwise::{self as gpu_ew, Launch};
use medsyn::cuda::gpu::{round_to, suffix, Ptr};
use medsyn::cuda::{DevBuf, Gpu};
use medsyn::tensor::{DType, Tensor};

/// Elements of poison after every output (and `off` before it): a stray write shows.
const GUARD: usize = 8;
/// What fills the elements before an offset input (a misread shows).
const JUNK: f32 = 12345.0;
const NO_CAP: u32 = u32::MAX;
/// (n, offset of every pointer in elements, grid cap): odd sizes, unaligned pointers (scalar
/// path), and a capped grid that makes every thread loop.
const SHAPES: [(usize, usize, u32); 5] = [
    (1, 0, NO_CAP),
    (7, 1, NO_CAP),
    (4099, 0, NO_CAP),
    (4099, 1, NO_CAP),
    (262_147, 0, 40),
];
/// Written over the first inputs of cases with n >= 64.
const SPECIALS: [f32; 9] = [
    0.0,
    -0.0,
    f32::INFINITY,
    f32::NEG_INFINITY,
    f32::NAN,
    100.0,
    -100.0,
    1.0,
    -1.0,
];

/// Every Unary op (declaration order) with its input range.
const UNARY: [(Unary, f32, f32); 16] = [
    (Unary::Neg, -4.0, 4.0),
    (Unary::Exp, -10.0, 10.0),
    (Unary::Log, 0.01, 50.0),
    (Unary::Sqrt, 0.01, 50.0),
    (Unary::Tanh, -5.0, 5.0),
    (Unary::Sigmoid, -12.0, 12.0),
    (Unary::Relu, -3.0, 3.0),
    (Unary::Silu, -10.0, 10.0),
    (Unary::Gelu, -8.0, 8.0),
    (Unary::GeluTanh, -8.0, 8.0),
    (Unary::QuickGelu, -8.0, 8.0),
    (Unary::Abs, -3.0, 3.0),
    (Unary::Square, -20.0, 20.0),
    (Unary::Recip, -5.0, 5.0),
    (Unary::Sin, -10.0, 10.0),
    (Unary::Cos, -10.0, 10.0),
];
const BINARY: [Binary; 6] = [
    Binary::Add,
    Binary::Sub,
    Binary::Mul,
    Binary::Div,
    Binary::Maximum,
    Binary::Minimum,
];

fn esize(dt: DType) -> usize {
    if dt == DType::F32 {
        4
    } else {
        2
    }
}

/// The library's launch with the grid capped at `cap` (NO_CAP: its default grid).
fn launch(cap: u32) -> Launch {
    Launch {
        max_blocks: (cap != NO_CAP).then_some(cap),
    }
}

/// Block 256, P = 16 / sizeof(T) elements per thread-step, grid ceil(n / (256·P)) capped (the
/// direct launches of unknown op codes).
fn cfg_for(n: usize, dt: DType, cap: u32) -> LaunchConfig {
    let per_block = 256 * (16 / esize(dt));
    grid((n.div_ceil(per_block) as u32).clamp(1, cap), 256, 0)
}

/// `vals` in `dt` on the device after `off` junk elements.
fn upload_at(g: &Gpu, vals: &[f32], off: usize, dt: DType) -> DevBuf {
    let mut v = vec![JUNK; off];
    v.extend_from_slice(vals);
    g.upload_as(&v, dt).unwrap()
}

/// The buffer from element `off` on.
fn at(b: &DevBuf, off: usize) -> Ptr {
    b.ptr().offset(off).unwrap()
}

/// A poisoned output of n elements at offset `off` with GUARD poisoned elements after it.
struct Out {
    buf: DevBuf,
    off: usize,
    n: usize,
}

impl Out {
    fn new(g: &Gpu, n: usize, off: usize, dt: DType) -> Out {
        let buf = g.poisoned_as(off + n + GUARD, dt).unwrap();
        Out { buf, off, n }
    }

    /// The output's n elements (and the GUARD after them) as a launch argument.
    fn ptr(&self) -> Ptr {
        self.buf.ptr().offset(self.off).unwrap()
    }

    /// The n outputs; panics when anything outside them was written.
    fn read(&self, g: &Gpu, what: &str) -> Vec<f32> {
        let all = g.download_f32(&self.buf).unwrap();
        let (lo, hi) = (self.off, self.off + self.n);
        let stray = all[..lo].iter().chain(&all[hi..]).any(|v| !v.is_nan());
        assert!(!stray, "{what}: wrote outside [{lo}, {hi}) of its output");
        all[lo..hi].to_vec()
    }
}

fn with_specials(mut x: Vec<f32>, dt: DType) -> Vec<f32> {
    if x.len() >= 64 {
        x[..SPECIALS.len()].copy_from_slice(&round_to(&SPECIALS, dt));
    }
    x
}

fn f32_tensor(v: &[f32]) -> Tensor {
    Tensor::from_vec(v.to_vec(), &[v.len()]).unwrap()
}

fn operand_len(r: Reach, n: usize) -> usize {
    match r {
        Reach::Full => n,
        Reach::Trailing(k) => k,
        Reach::Leading(k) => n.div_ceil(k),
    }
}

/// `NAME = k` pairs of `enum <name> { ... }` in kernels/elementwise.cu.
fn cu_enum(name: &str) -> Vec<(String, i32)> {
    let src = include_str!("../../kernels/elementwise.cu");
    let start = src
        .find(&format!("enum {name} {{"))
        .unwrap_or_else(|| panic!("enum {name} not in elementwise.cu"));
    let body = &src[start..];
    let body = &body[body.find('{').unwrap() + 1..body.find('}').unwrap()];
    body.split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| {
            let (k, v) = s.split_once('=').expect("NAME = code");
            (
                k.trim().to_string(),
                v.trim().parse().expect("integer code"),
            )
        })
        .collect()
}

/// Needs no GPU: the op codes the kernels switch on are the Rust enums' discriminants (what
/// backend::cuda::elementwise passes) and the library's Reach codes.
#[test]
fn op_codes_match_rust_enums() {
    let unary = cu_enum("UnaryOp");
    assert_eq!(unary.len(), UNARY.len(), "UnaryOp vs Unary: count");
    for &(op, _, _) in &UNARY {
        let name = op.name().to_uppercase();
        let code = unary.iter().find(|(k, _)| *k == name).map(|e| e.1);
        assert_eq!(code, Some(op as i32), "Unary::{op:?} vs UnaryOp::{name}");
    }
    let binary = cu_enum("BinaryOp");
    assert_eq!(binary.len(), BINARY.len(), "BinaryOp vs Binary: count");
    for op in BINARY {
        let name = op.name().to_uppercase();
        let code = binary.iter().find(|(k, _)| *k == name).map(|e| e.1);
        assert_eq!(code, Some(op as i32), "Binary::{op:?} vs BinaryOp::{name}");
    }
    let modes = cu_enum("ReachMode");
    let want = [
        ("FULL", Reach::Full),
        ("TRAILING", Reach::Trailing(3)),
        ("LEADING", Reach::Leading(3)),
    ];
    assert_eq!(modes.len(), want.len(), "ReachMode: count");
    for (name, r) in want {
        let code = modes.iter().find(|(k, _)| k == name).map(|e| e.1);
        assert_eq!(
            code,
            Some(gpu_ew::reach_code(r).0),
            "Reach {r:?} vs ReachMode::{name}"
        );
    }
}

#[test]
fn unary_forward_and_backward_match_cpu() {
    let Some(g) = gpu() else { return };
    let mut fails = Vec::new();
    for (k, &(op, lo, hi)) in UNARY.iter().enumerate() {
        for dt in DTYPES {
            let s = suffix(dt).unwrap();
            for (c, &(n, off, cap)) in SHAPES.iter().enumerate() {
                let what = format!("unary {} {s} n={n} off={off}", op.name());
                soft(&mut fails, what, || {
                    unary_case(
                        g,
                        op,
                        lo,
                        hi,
                        dt,
                        n,
                        off,
                        cap,
                        1000 + 10 * k as u64 + c as u64,
                    )
                });
            }
        }
    }
    finish(fails);
}

#[allow(clippy::too_many_arguments)]
fn unary_case(
    g: &Gpu,
    op: Unary,
    lo: f32,
    hi: f32,
    dt: DType,
    n: usize,
    off: usize,
    cap: u32,
    seed: u64,
) {
    let l = launch(cap);

    let x = with_specials(uniform_as(seed, n, lo, hi, dt), dt);
    let want_y = round_to(&cpu_ew::unary(op, &x), dt);
    // Backward on finite inputs (plus ±0 where f' is finite there); y = the CPU forward in T.
    let mut xb = uniform_as(seed + 500, n, lo, hi, dt);
    if n >= 64 && !matches!(op, Unary::Log | Unary::Sqrt | Unary::Recip) {
        xb[1] = 0.0;
        xb[2] = -0.0;
    }
    let yb = round_to(&cpu_ew::unary(op, &xb), dt);
    let dy = uniform_as(seed + 900, n, -1.0, 1.0, dt);
    let want_dx = round_to(&cpu_ew::unary_backward(op, &xb, &yb, &dy), dt);
    // The contract: only these read y; the others get x passed as y (as the Rust side may).
    let reads_y = matches!(
        op,
        Unary::Exp | Unary::Sqrt | Unary::Tanh | Unary::Sigmoid | Unary::Recip
    );

    let xd = upload_at(g, &x, off, dt);
    let y = Out::new(g, n, off, dt);
    gpu_ew::unary(g, op, at(&xd, off), y.ptr(), n, l).unwrap();
    let xbd = upload_at(g, &xb, off, dt);
    let ybd = upload_at(g, &yb, off, dt);
    let dyd = upload_at(g, &dy, off, dt);
    let y_arg = if reads_y { &ybd } else { &xbd };
    let dx = Out::new(g, n, off, dt);
    let (xp, yp, dyp) = (at(&xbd, off), at(y_arg, off), at(&dyd, off));
    gpu_ew::unary_backward(g, op, xp, yp, dyp, dx.ptr(), n, l).unwrap();
    let got_y = y.read(g, "unary");
    let got_dx = dx.read(g, "unary_backward");
    // CUDA's expf/erfcf/tanhf/sinf differ from the CPU's by a few f32 ulp.
    let name = format!("unary({})", op.name());
    check(&name, dt, &got_y, &want_y, 1e-6, rtol(dt));
    let name = format!("unary_backward({})", op.name());
    check(&name, dt, &got_dx, &want_dx, 1e-5, rtol(dt));
}

#[test]
fn unknown_op_codes_write_nan() {
    let Some(g) = gpu() else { return };
    let n = 37usize;
    for dt in DTYPES {
        let s = suffix(dt).unwrap();
        let x = uniform_as(7, n, -1.0, 1.0, dt);
        let xd = g.upload_as(&x, dt).unwrap();
        let zeros = || DevBuf {
            bytes: g.zeros::<u8>(n * esize(dt)).unwrap(),
            dtype: dt,
            len: n,
        };
        let (mut y, mut dx, mut o) = (zeros(), zeros(), zeros());
        let (bad_unary, bad_binary, nn, full, inner) = (16i32, 6i32, n as i64, 0i32, 0i64);
        let cfg = cfg_for(n, dt, NO_CAP);
        let f = g.function("elementwise", &format!("unary_{s}")).unwrap();
        unsafe {
            g.stream()
                .launch_builder(&f)
                .arg(&bad_unary)
                .arg(&nn)
                .arg(&xd.bytes)
                .arg(&mut y.bytes)
                .launch(cfg)
        }
        .unwrap();
        let f = g
            .function("elementwise", &format!("unary_backward_{s}"))
            .unwrap();
        unsafe {
            g.stream()
                .launch_builder(&f)
                .arg(&bad_unary)
                .arg(&nn)
                .arg(&xd.bytes)
                .arg(&xd.bytes)
                .arg(&xd.bytes)
                .arg(&mut dx.bytes)
                .launch(cfg)
        }
        .unwrap();
        let f = g.function("elementwise", &format!("binary_{s}")).unwrap();
        unsafe {
            g.stream()
                .launch_builder(&f)
                .arg(&bad_binary)
                .arg(&nn)
                .arg(&xd.bytes)
                .arg(&full)
                .arg(&inner)
                .arg(&xd.bytes)
                .arg(&full)
                .arg(&inner)
                .arg(&mut o.bytes)
                .launch(cfg)
        }
        .unwrap();
        for (name, buf) in [("unary", &y), ("unary_backward", &dx), ("binary", &o)] {
            let got = g.download_f32(buf).unwrap();
            let nan = vec![f32::NAN; n];
            check(&format!("{name}(bad op)"), dt, &got, &nan, 0.0, 0.0);
        }
    }
}

/// (n, reach of a, reach of b, offset, grid cap).
fn binary_cases() -> Vec<(usize, Reach, Reach, usize, u32)> {
    use Reach::*;
    vec![
        (455, Full, Full, 0, NO_CAP),
        (4099, Full, Full, 1, NO_CAP),
        (262_147, Full, Full, 0, 40),
        (1, Full, Full, 0, NO_CAP),
        (455, Full, Trailing(13), 0, NO_CAP),
        (455, Trailing(13), Full, 1, NO_CAP),
        (455, Full, Trailing(91), 0, NO_CAP),
        (455, Full, Leading(13), 0, NO_CAP),
        (455, Leading(91), Full, 1, NO_CAP),
        (455, Trailing(13), Leading(13), 0, NO_CAP),
        (455, Leading(7), Trailing(35), 0, NO_CAP),
        (455, Trailing(1), Full, 0, NO_CAP),
        (455, Full, Leading(455), 0, NO_CAP),
        (455, Leading(5), Leading(91), 0, NO_CAP),
        (262_144, Leading(64), Trailing(1000), 0, 40),
        (262_147, Full, Trailing(77), 0, 40),
    ]
}

/// Exact: f32 arithmetic on both sides (no contraction), rounded once to T.
#[test]
fn binary_matches_cpu_through_every_reach() {
    let Some(g) = gpu() else { return };
    let mut fails = Vec::new();
    for (c, (n, ra, rb, off, cap)) in binary_cases().into_iter().enumerate() {
        for dt in DTYPES {
            for op in BINARY {
                let what = format!(
                    "binary {} {} n={n} a={ra:?} b={rb:?} off={off}",
                    op.name(),
                    suffix(dt).unwrap()
                );
                soft(&mut fails, what, || {
                    binary_case(g, op, dt, n, ra, rb, off, cap, 2000 + 10 * c as u64)
                });
            }
        }
    }
    finish(fails);
}

#[allow(clippy::too_many_arguments)]
fn binary_case(
    g: &Gpu,
    op: Binary,
    dt: DType,
    n: usize,
    ra: Reach,
    rb: Reach,
    off: usize,
    cap: u32,
    seed: u64,
) {
    let mut a = uniform_as(seed, operand_len(ra, n), -4.0, 4.0, dt);
    let mut b = uniform_as(seed + 1, operand_len(rb, n), -4.0, 4.0, dt);
    if a.len() >= 16 {
        a[3] = f32::NAN;
        a[5] = f32::INFINITY;
        a[6] = f32::NEG_INFINITY;
        a[7] = 0.0;
        a[9] = -0.0;
    }
    if b.len() >= 16 {
        b[4] = f32::NAN;
        b[5] = f32::INFINITY;
        b[8] = -0.0;
        b[9] = 0.0;
        b[10] = f32::NEG_INFINITY;
    }
    let want = round_to(&cpu_bin::binary(op, &a, ra, &b, rb, n), dt);
    let ad = upload_at(g, &a, off, dt);
    let bd = upload_at(g, &b, off, dt);
    let o = Out::new(g, n, off, dt);
    let (ap, bp) = (at(&ad, off), at(&bd, off));
    gpu_ew::binary(g, op, ap, ra, bp, rb, o.ptr(), n, launch(cap)).unwrap();
    let got = o.read(g, "binary");
    check(&format!("binary({})", op.name()), dt, &got, &want, 0.0, 0.0);
}

/// affine / clamp are exact (the same f32 operations as ops::unary, rounded once to T);
/// clamp_backward is exact (dy or 0).
#[test]
fn affine_clamp_and_clamp_backward_match_cpu() {
    let Some(g) = gpu() else { return };
    let mut fails = Vec::new();
    for dt in DTYPES {
        let s = suffix(dt).unwrap();
        for (c, &(n, off, cap)) in SHAPES.iter().enumerate() {
            let seed = 3000 + 10 * c as u64;
            let what = format!("affine/clamp {s} n={n} off={off}");
            soft(&mut fails, what, || {
                affine_clamp_case(g, dt, n, off, cap, seed)
            });
        }
    }
    finish(fails);
}

fn affine_clamp_case(g: &Gpu, dt: DType, n: usize, off: usize, cap: u32, seed: u64) {
    let l = launch(cap);
    let x = with_specials(uniform_as(seed, n, -3.0, 3.0, dt), dt);
    let xd = upload_at(g, &x, off, dt);
    let xt = f32_tensor(&x);

    for (mul, add) in [(1.7f64, -0.3f64), (-3.0, 0.0), (0.5, 1e-3)] {
        let want = round_to(&xt.affine(mul, add).unwrap().to_vec_f32(), dt);
        let y = Out::new(g, n, off, dt);
        gpu_ew::affine(g, at(&xd, off), y.ptr(), n, mul, add, l).unwrap();
        check("affine", dt, &y.read(g, "affine"), &want, 0.0, 0.0);
    }

    for (lo, hi) in [(-0.3f64, 0.75f64), (-1.0, -1.0), (f64::NEG_INFINITY, 0.5)] {
        let want = round_to(&xt.clamp(lo, hi).unwrap().to_vec_f32(), dt);
        let y = Out::new(g, n, off, dt);
        gpu_ew::clamp(g, at(&xd, off), y.ptr(), n, lo, hi, l).unwrap();
        check("clamp", dt, &y.read(g, "clamp"), &want, 0.0, 0.0);
    }

    // Inputs on and just off the bounds (0.3 is not representable: x = (T)0.3 vs the f64 bound).
    let mut xb = uniform_as(seed + 1, n, -1.0, 1.0, dt);
    let edges = round_to(&[-0.5, 0.75, -0.3, 0.3, -1.0, f32::NAN, 0.0, 1.0], dt);
    let k = edges.len().min(n);
    xb[..k].copy_from_slice(&edges[..k]);
    let dy = uniform_as(seed + 2, n, 0.5, 1.5, dt);
    let xbd = upload_at(g, &xb, off, dt);
    let dyd = upload_at(g, &dy, off, dt);
    for (lo, hi) in [(-0.5f64, 0.75f64), (-0.3, 0.3), (-1.0, -1.0)] {
        // ClampBack: dy where lo <= x <= hi compared in f64, else 0.
        let want: Vec<f32> = xb
            .iter()
            .zip(&dy)
            .map(|(&v, &d)| {
                let v = v as f64;
                if v >= lo && v <= hi {
                    d
                } else {
                    0.0
                }
            })
            .collect();
        let dx = Out::new(g, n, off, dt);
        let (xp, dyp) = (at(&xbd, off), at(&dyd, off));
        gpu_ew::clamp_backward(g, xp, dyp, dx.ptr(), n, lo, hi, l).unwrap();
        check(
            "clamp_backward",
            dt,
            &dx.read(g, "clamp_backward"),
            &want,
            0.0,
            0.0,
        );
    }
}

/// powf vs Tensor::powf; powf_backward vs PowBack's composition g·(x^(p−1)·p) computed in
/// f32 (the kernel keeps the intermediates in f32; the CPU rounds them to T for half types).
#[test]
fn powf_and_backward_match_cpu() {
    let Some(g) = gpu() else { return };
    let mut fails = Vec::new();
    for dt in DTYPES {
        let s = suffix(dt).unwrap();
        for (c, &(n, off, cap)) in SHAPES.iter().enumerate() {
            for (k, p) in [2.0f64, 0.5, -1.5, 3.3, 0.0].into_iter().enumerate() {
                let seed = 4000 + 10 * c as u64 + k as u64;
                let what = format!("powf {s} n={n} off={off} p={p}");
                soft(&mut fails, what, || powf_case(g, dt, n, off, cap, p, seed));
            }
        }
    }
    finish(fails);
}

#[allow(clippy::too_many_arguments)]
fn powf_case(g: &Gpu, dt: DType, n: usize, off: usize, cap: u32, p: f64, seed: u64) {
    let l = launch(cap);
    let mut x = uniform_as(seed, n, 0.05, 4.0, dt);
    if n >= 64 {
        let sp = [
            0.0,
            -0.0,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            -2.0,
            1.0,
            -3.0,
        ];
        x[..sp.len()].copy_from_slice(&sp);
    }
    let want = round_to(&f32_tensor(&x).powf(p).unwrap().to_vec_f32(), dt);
    let xd = upload_at(g, &x, off, dt);
    let y = Out::new(g, n, off, dt);
    gpu_ew::powf(g, at(&xd, off), y.ptr(), n, p, l).unwrap();
    check("powf", dt, &y.read(g, "powf"), &want, 1e-6, rtol(dt));

    if p == 0.0 {
        return;
    }
    let xb = uniform_as(seed + 1, n, 0.1, 4.0, dt);
    let dy = uniform_as(seed + 2, n, -1.0, 1.0, dt);
    let (xt, dyt) = (f32_tensor(&xb), f32_tensor(&dy));
    let want = dyt
        .mul(&xt.powf(p - 1.0).unwrap().scale(p).unwrap())
        .unwrap()
        .to_vec_f32();
    let want = round_to(&want, dt);
    let xbd = upload_at(g, &xb, off, dt);
    let dyd = upload_at(g, &dy, off, dt);
    let dx = Out::new(g, n, off, dt);
    let (xp, dyp) = (at(&xbd, off), at(&dyd, off));
    gpu_ew::powf_backward(g, xp, dyp, dx.ptr(), n, p, l).unwrap();
    check(
        "powf_backward",
        dt,
        &dx.read(g, "powf_backward"),
        &want,
        1e-6,
        rtol(dt),
    );
}

// ---- casts ---------------------------------------------------------------------------------

fn splitmix(seed: u64, n: usize) -> Vec<u64> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = s;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        })
        .collect()
}

/// f32 bit patterns: specials, overflow and rounding-tie edges of f16 and bf16, f16-subnormal
/// ties, exact ties with random high bits, then random patterns (NaNs and subnormals included).
fn f32_cast_inputs() -> Vec<u32> {
    let mut v: Vec<u32> = vec![
        0x0000_0000,
        0x8000_0000,
        0x7f80_0000,
        0xff80_0000, // ±0, ±inf
        0x7fc0_0000,
        0x7f80_0001,
        0xffc0_0001,
        0x7fff_ffff, // NaNs (quiet, signalling, negative)
        0x7f7f_ffff,
        0xff7f_ffff,
        0x0080_0000,
        0x0000_0001,
        0x007f_ffff,
        0x8000_0001, // max, min normal, subnormals
        0x477f_e000, // 65504 (f16 max)
        0x477f_efff, // just below the f16 overflow tie
        0x477f_f000, // 65520: tie at f16 max -> inf
        0x3880_0000, // 2^-14 f16 min normal
        0x3380_0000, // 2^-24 f16 min subnormal
        0x3300_0000, // 2^-25: tie -> 0
        0x3300_0001, // just above -> min subnormal
        0x33c0_0000, // 3·2^-25: tie -> 2·2^-24 (even)
        0x3f80_1000, // 1 + 2^-11: f16 tie -> 1
        0x3f80_3000, // 1 + 3·2^-11: f16 tie -> up (even)
        0x3f80_1001, // just above the f16 tie
        0x3f80_8000, // 1 + 2^-8: bf16 tie -> 1
        0x3f81_8000, // 1 + 3·2^-8: bf16 tie -> up (even)
        0x3f80_8001, // just above the bf16 tie
        0x3f80_7fff, // just below
        0x7f7f_8000, // bf16 max tie -> inf
        0x7f7f_7fff, // -> bf16 max
        0x0000_8000, // bf16 subnormal tie -> 0
        0x0001_8000, // -> 2 (even)
        0x807f_8000, // negative subnormal tie
        0xbf80_8000, // -1 - 2^-8 (negative tie)
    ];
    // f16-subnormal-range ties m·2^-25 (m odd), and their negatives.
    for m in (1..200u32).step_by(2) {
        let b = (m as f32 * 2f32.powi(-25)).to_bits();
        v.push(b);
        v.push(b | 0x8000_0000);
    }
    for r in splitmix(11, 4096) {
        let r = r as u32;
        v.push((r & 0xffff_0000) | 0x8000); // bf16 tie
        v.push((r & 0xffff_e000) | 0x1000); // f16 tie (normal range)
    }
    v.extend(splitmix(12, 1 << 18).into_iter().map(|r| (r >> 17) as u32));
    v.extend([0x4049_0fdbu32, 0x3eaa_aaab, 0xc2f6_e979]); // odd tail
    v
}

/// Every 16-bit pattern plus three (an odd length).
fn all_u16() -> Vec<u16> {
    (0..=u16::MAX).chain([0x3c01, 0x7bff, 0x0001]).collect()
}

fn nan32(b: u64) -> bool {
    (b & 0x7fff_ffff) > 0x7f80_0000
}
fn nan16(b: u64) -> bool {
    (b & 0x7fff) > 0x7c00
}
fn nanbf(b: u64) -> bool {
    (b & 0x7fff) > 0x7f80
}

/// The dtypes of cast kernel `cast_S_D`.
fn cast_dtypes(name: &str) -> (DType, DType) {
    let dt = |s: &str| match s {
        "f32" => DType::F32,
        "f16" => DType::F16,
        "bf16" => DType::BF16,
        other => panic!("{name}: dtype {other}"),
    };
    let mut parts = name.strip_prefix("cast_").unwrap().split('_');
    (dt(parts.next().unwrap()), dt(parts.next().unwrap()))
}

/// Runs cast kernel `name` (through gpu_ew::cast) over `src` placed at element offset `off`;
/// returns the outputs (checking the poisoned guard around them).
fn run_cast<S, D>(g: &Gpu, name: &str, src: &[S], off: usize, cap: u32) -> Vec<D>
where
    S: DeviceRepr + Copy + Default,
    D: DeviceRepr + Copy + Default + Into<u64>,
{
    let n = src.len();
    let (sdt, ddt) = cast_dtypes(name);
    let mut host = vec![S::default(); off];
    host.extend_from_slice(src);
    let sd = g.upload(&host).unwrap();
    let dd = g.poisoned::<D>(off + n + GUARD).unwrap();
    let sp = g.ptr_of(&sd, sdt).offset(off).unwrap();
    let dp = g.ptr_of(&dd, ddt).offset(off).unwrap();
    gpu_ew::cast(g, sp, dp, n, launch(cap)).unwrap();
    let all = g.download(&dd).unwrap();
    let ones = u64::MAX >> (64 - 8 * std::mem::size_of::<D>());
    let stray = all[..off]
        .iter()
        .chain(&all[off + n..])
        .any(|&d| d.into() != ones);
    assert!(!stray, "{name}: wrote outside its output");
    all[off..off + n].to_vec()
}

/// Bit-exact except that any NaN matches any NaN (CUDA gives the canonical NaN).
fn check_bits(name: &str, src: &[u64], got: &[u64], want: &[u64], is_nan: fn(u64) -> bool) {
    let bad = (0..want.len()).find(|&i| got[i] != want[i] && !(is_nan(want[i]) && is_nan(got[i])));
    let mismatches = (0..want.len())
        .filter(|&i| got[i] != want[i] && !(is_nan(want[i]) && is_nan(got[i])))
        .count();
    record(name, bad.is_none(), 0.0);
    if let Some(i) = bad {
        panic!(
            "{name}: {mismatches} mismatches; first: src {:#x} -> {:#x}, half gives {:#x}",
            src[i], got[i], want[i]
        );
    }
}

#[test]
fn casts_are_bit_exact_against_half() {
    let Some(g) = gpu() else { return };
    let mut fails = Vec::new();
    let f32_src = f32_cast_inputs();
    let u16_src = all_u16();
    let wide = |v: &[u16]| v.iter().map(|&b| b as u64).collect::<Vec<u64>>();
    let wide32 = |v: &[u32]| v.iter().map(|&b| b as u64).collect::<Vec<u64>>();
    for (off, cap) in [(0usize, NO_CAP), (1, NO_CAP), (0, 8)] {
        let tag = format!("off={off} cap={cap}");
        soft(&mut fails, format!("cast_f32_f16 {tag}"), || {
            let got: Vec<u16> = run_cast(g, "cast_f32_f16", &f32_src, off, cap);
            let want: Vec<u16> = f32_src
                .iter()
                .map(|&b| f16::from_f32(f32::from_bits(b)).to_bits())
                .collect();
            check_bits(
                "cast_f32_f16",
                &wide32(&f32_src),
                &wide(&got),
                &wide(&want),
                nan16,
            );
        });
        soft(&mut fails, format!("cast_f32_bf16 {tag}"), || {
            let got: Vec<u16> = run_cast(g, "cast_f32_bf16", &f32_src, off, cap);
            let want: Vec<u16> = f32_src
                .iter()
                .map(|&b| bf16::from_f32(f32::from_bits(b)).to_bits())
                .collect();
            check_bits(
                "cast_f32_bf16",
                &wide32(&f32_src),
                &wide(&got),
                &wide(&want),
                nanbf,
            );
        });
        soft(&mut fails, format!("cast_f16_f32 {tag}"), || {
            let got: Vec<u32> = run_cast(g, "cast_f16_f32", &u16_src, off, cap);
            let want: Vec<u32> = u16_src
                .iter()
                .map(|&b| f16::from_bits(b).to_f32().to_bits())
                .collect();
            check_bits(
                "cast_f16_f32",
                &wide(&u16_src),
                &wide32(&got),
                &wide32(&want),
                nan32,
            );
        });
        soft(&mut fails, format!("cast_bf16_f32 {tag}"), || {
            let got: Vec<u32> = run_cast(g, "cast_bf16_f32", &u16_src, off, cap);
            let want: Vec<u32> = u16_src
                .iter()
                .map(|&b| bf16::from_bits(b).to_f32().to_bits())
                .collect();
            check_bits(
                "cast_bf16_f32",
                &wide(&u16_src),
                &wide32(&got),
                &wide32(&want),
                nan32,
            );
        });
        soft(&mut fails, format!("cast_f16_bf16 {tag}"), || {
            let got: Vec<u16> = run_cast(g, "cast_f16_bf16", &u16_src, off, cap);
            let want: Vec<u16> = u16_src
                .iter()
                .map(|&b| bf16::from_f32(f16::from_bits(b).to_f32()).to_bits())
                .collect();
            check_bits(
                "cast_f16_bf16",
                &wide(&u16_src),
                &wide(&got),
                &wide(&want),
                nanbf,
            );
        });
        soft(&mut fails, format!("cast_bf16_f16 {tag}"), || {
            let got: Vec<u16> = run_cast(g, "cast_bf16_f16", &u16_src, off, cap);
            let want: Vec<u16> = u16_src
                .iter()
                .map(|&b| f16::from_f32(bf16::from_bits(b).to_f32()).to_bits())
                .collect();
            check_bits(
                "cast_bf16_f16",
                &wide(&u16_src),
                &wide(&got),
                &wide(&want),
                nan16,
            );
        });
    }
    finish(fails);
}

#[test]
fn elementwise_refuses_bad_buffers() {
    let Some(g) = gpu() else { return };
    let dt = DType::F32;
    let l = Launch::default();
    let x = g.upload_as(&[0.5; 10], dt).unwrap();
    let y = g.poisoned_as(9, dt).unwrap();
    let err = gpu_ew::unary(g, Unary::Exp, x.ptr(), y.ptr(), 10, l).unwrap_err();
    assert!(err.to_string().contains("output holds 9 elements"), "{err}");
    let bh = g.upload_as(&[0.5; 10], DType::BF16).unwrap();
    let out = g.poisoned_as(10, dt).unwrap();
    let (xp, bp, op) = (x.ptr(), bh.ptr(), out.ptr());
    let err = gpu_ew::binary(g, Binary::Add, xp, Reach::Full, bp, Reach::Full, op, 10, l);
    let err = err.unwrap_err();
    assert!(err.to_string().contains("expected F32"), "{err}");
    // A Leading(3) operand over 10 outputs needs 4 elements.
    let short = g.upload_as(&[0.5; 3], dt).unwrap();
    let sp = short.ptr();
    let err = gpu_ew::binary(
        g,
        Binary::Mul,
        xp,
        Reach::Full,
        sp,
        Reach::Leading(3),
        op,
        10,
        l,
    );
    let err = err.unwrap_err();
    assert!(err.to_string().contains("b holds 3 elements"), "{err}");
    let err = gpu_ew::affine(g, xp, xp, 10, 2.0, 0.0, l).unwrap_err();
    assert!(err.to_string().contains("overlaps"), "{err}");
    let err = gpu_ew::cast(g, xp, op, 10, l).unwrap_err();
    assert!(err.to_string().contains("identity"), "{err}");
}
