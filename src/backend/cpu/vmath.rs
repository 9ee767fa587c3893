//! Vectorised f32 transcendental maps (exp, sigmoid, SiLU, GELU) over slices.
//!
//! Each function is generic over the compute type: f32 slices take a polynomial
//! path that the compiler vectorises (8 lanes with AVX2+FMA, chosen at run time),
//! f64 slices keep libm's correctly rounded scalar functions (they serve the
//! finite-difference checks, where accuracy is the point).
//!
//! Accuracy of the f32 path: exp within 2 ulp on [-87.3, 88.7] (Cephes' expf
//! polynomial after a Cody–Waite reduction), 0 below, +inf above; erfc from
//! Numerical Recipes' Chebyshev fit (1.2e-7 relative in exact arithmetic), so GELU
//! keeps its relative accuracy on the negative side: within 3e-7·(1 + x²) in f32
//! (the rounding of x² in the exponent dominates far out in the tail).

use crate::tensor::{DType, Real};

const LOG2E: f32 = std::f32::consts::LOG2_E;
/// ln 2 split in a part exact in few bits and the remainder (Cody–Waite).
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
/// Below this exp underflows to 0 (the smallest normal is e^-87.34); above the
/// next it overflows to +inf.
const EXP_LO: f32 = -87.33;
const EXP_HI: f32 = 88.72;
/// 1.5·2^23: adding and subtracting it rounds to the nearest integer.
const ROUND_MAGIC: f32 = 12_582_912.0;

/// x = n·ln2 + r with |r| ≤ ln2/2: returns (t, r) where t holds n in its low
/// mantissa bits (t = n + 1.5·2^23).
#[inline(always)]
fn reduce_ln2(x: f32) -> (f32, f32) {
    let t = x.mul_add(LOG2E, ROUND_MAGIC);
    let n = t - ROUND_MAGIC;
    let r = n.mul_add(-LN2_HI, x);
    (t, n.mul_add(-LN2_LO, r))
}

/// e^r for |r| ≤ ln2/2 (Cephes' expf minimax polynomial).
#[inline(always)]
fn exp_reduced(r: f32) -> f32 {
    let p = 1.987_569_1e-4_f32;
    let p = p.mul_add(r, 1.398_199_9e-3);
    let p = p.mul_add(r, 8.333_452e-3);
    let p = p.mul_add(r, 4.166_579_6e-2);
    let p = p.mul_add(r, 1.666_666_5e-1);
    let p = p.mul_add(r, 0.5);
    (p * r).mul_add(r, r) + 1.0
}

/// e^x for f32 without a libm call, written so that loops over it vectorise.
#[inline(always)]
pub fn exp_f32(x: f32) -> f32 {
    let xc = x.clamp(EXP_LO, EXP_HI);
    let (t, r) = reduce_ln2(xc);
    let p = exp_reduced(r);
    // 2^n from the rounded integer held in t's low mantissa bits, as two normal
    // factors so that n = -126 and n = 128 stay exact.
    let k = (t.to_bits() as i32).wrapping_sub(0x4B40_0000);
    let half = k >> 1;
    let pow_a = f32::from_bits((half.wrapping_add(127) << 23) as u32);
    let pow_b = f32::from_bits(((k - half).wrapping_add(127) << 23) as u32);
    let y = p * pow_a * pow_b;
    if x < EXP_LO {
        0.0
    } else if x > EXP_HI {
        f32::INFINITY
    } else {
        y
    }
}

/// e^x for x ≤ 88.37 (softmax's x − max ≤ 0 and x − lse ≤ 0 always are): one
/// power-of-two factor and no upper clamp, about a third fewer instructions than
/// [`exp_f32`], same accuracy; NaN stays NaN, below −87.33 gives 0.
#[inline(always)]
fn exp_f32_below_88(x: f32) -> f32 {
    let xc = if x < EXP_LO { EXP_LO } else { x };
    let (t, r) = reduce_ln2(xc);
    let p = exp_reduced(r);
    let pow = f32::from_bits((t.to_bits().wrapping_sub(0x4B40_0000 - 127)) << 23);
    let y = p * pow;
    if x < EXP_LO {
        0.0
    } else {
        y
    }
}

/// 1 / (1 + e^-x).
#[inline(always)]
pub fn sigmoid_f32(x: f32) -> f32 {
    1.0 / (1.0 + exp_f32(-x))
}

/// erfc(x) with relative error below 1.2e-7 everywhere (Numerical Recipes `erfcc`).
#[inline(always)]
pub fn erfc_f32(x: f32) -> f32 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let c = [
        0.170_872_77_f32,
        -0.822_152_23,
        1.488_515_9,
        -1.135_204,
        0.278_868_07,
        -0.186_288_06,
        0.096_784_18,
        0.374_091_96,
        1.000_023_7,
        -1.265_512_2,
    ];
    let mut p = c[0];
    for &ci in &c[1..] {
        p = p.mul_add(t, ci);
    }
    let r = t * exp_f32(-z * z + p);
    if x >= 0.0 {
        r
    } else {
        2.0 - r
    }
}

/// Φ(x), the standard normal CDF: ½·erfc(−x/√2).
#[inline(always)]
fn gelu_cdf_f32(x: f32) -> f32 {
    0.5 * erfc_f32(-x * std::f32::consts::FRAC_1_SQRT_2)
}

/// φ(x), the standard normal density.
#[inline(always)]
fn gelu_pdf_f32(x: f32) -> f32 {
    0.398_942_3 * exp_f32(-0.5 * x * x)
}

/// Exact-form GELU: x·Φ(x).
#[inline(always)]
pub fn gelu_f32(x: f32) -> f32 {
    x * gelu_cdf_f32(x)
}

/// Tanh-approximation GELU, as x·sigmoid(2·√(2/π)·(x + 0.044715·x³)), which equals
/// ½·x·(1 + tanh(·)) without its cancellation for negative x.
#[inline(always)]
pub fn gelu_tanh_f32(x: f32) -> f32 {
    let inner = 0.797_884_6 * (x + 0.044_715 * x * x * x);
    x * sigmoid_f32(2.0 * inner)
}

/// The maps with a vectorised f32 form.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Map {
    Exp,
    Sigmoid,
    Silu,
    Gelu,
    GeluTanh,
    QuickGelu,
}

impl Map {
    #[inline(always)]
    fn f32(self, x: f32) -> f32 {
        match self {
            Map::Exp => exp_f32(x),
            Map::Sigmoid => sigmoid_f32(x),
            Map::Silu => x * sigmoid_f32(x),
            Map::Gelu => gelu_f32(x),
            Map::GeluTanh => gelu_tanh_f32(x),
            Map::QuickGelu => x * sigmoid_f32(1.702 * x),
        }
    }

    fn f64(self, x: f64) -> f64 {
        let sigmoid = |z: f64| 1.0 / (1.0 + (-z).exp());
        match self {
            Map::Exp => x.exp(),
            Map::Sigmoid => sigmoid(x),
            Map::Silu => x * sigmoid(x),
            Map::Gelu => 0.5 * x * libm::erfc(-x * std::f64::consts::FRAC_1_SQRT_2),
            Map::GeluTanh => {
                let inner = 0.797_884_560_802_865_4 * (x + 0.044715 * x * x * x);
                x * sigmoid(2.0 * inner)
            }
            Map::QuickGelu => x * sigmoid(1.702 * x),
        }
    }
}

pub(crate) fn avx2_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Runs `$body` compiled with AVX2+FMA when the CPU has them, else plainly.
macro_rules! simd_dispatch {
    ($name:ident($($arg:ident: $ty:ty),*) -> $ret:ty $body:block) => {
        fn $name($($arg: $ty),*) -> $ret {
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,fma")]
            unsafe fn wide($($arg: $ty),*) -> $ret $body
            fn plain($($arg: $ty),*) -> $ret $body
            #[cfg(target_arch = "x86_64")]
            if avx2_fma() {
                // SAFETY: the CPU supports the enabled features (checked above).
                return unsafe { wide($($arg),*) };
            }
            plain($($arg),*)
        }
    };
}

pub(crate) use simd_dispatch;

simd_dispatch!(map_f32(map: Map, x: &[f32], y: &mut [f32]) -> () {
    match map {
        Map::Exp => y.iter_mut().zip(x).for_each(|(o, &v)| *o = Map::Exp.f32(v)),
        Map::Sigmoid => y.iter_mut().zip(x).for_each(|(o, &v)| *o = Map::Sigmoid.f32(v)),
        Map::Silu => y.iter_mut().zip(x).for_each(|(o, &v)| *o = Map::Silu.f32(v)),
        Map::Gelu => y.iter_mut().zip(x).for_each(|(o, &v)| *o = Map::Gelu.f32(v)),
        Map::GeluTanh => y.iter_mut().zip(x).for_each(|(o, &v)| *o = Map::GeluTanh.f32(v)),
        Map::QuickGelu => y.iter_mut().zip(x).for_each(|(o, &v)| *o = Map::QuickGelu.f32(v)),
    }
});

simd_dispatch!(map_in_place_f32(map: Map, x: &mut [f32]) -> () {
    match map {
        Map::Exp => x.iter_mut().for_each(|v| *v = Map::Exp.f32(*v)),
        Map::Sigmoid => x.iter_mut().for_each(|v| *v = Map::Sigmoid.f32(*v)),
        Map::Silu => x.iter_mut().for_each(|v| *v = Map::Silu.f32(*v)),
        Map::Gelu => x.iter_mut().for_each(|v| *v = Map::Gelu.f32(*v)),
        Map::GeluTanh => x.iter_mut().for_each(|v| *v = Map::GeluTanh.f32(*v)),
        Map::QuickGelu => x.iter_mut().for_each(|v| *v = Map::QuickGelu.f32(*v)),
    }
});

simd_dispatch!(exp_sub_sum_f32(x: &mut [f32], m: f32) -> f32 {
    // Two passes: the map vectorises on its own; the sum keeps eight partial
    // sums (a single running sum would serialise on the add latency).
    x.iter_mut().for_each(|v| *v = exp_f32_below_88(*v - m));
    let mut acc = [0f32; 8];
    let chunks = x.chunks_exact(8);
    let tail: f32 = chunks.remainder().iter().sum();
    for c in chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += v;
        }
    }
    tail + acc.iter().sum::<f32>()
});

simd_dispatch!(geglu_f32(h: &[f32], gate: &[f32], y: &mut [f32]) -> () {
    for ((o, &a), &g) in y.iter_mut().zip(h).zip(gate) {
        *o = a * gelu_f32(g);
    }
});

simd_dispatch!(geglu_backward_f32(h: &[f32], gate: &[f32], dy: &[f32], dh: &mut [f32], dgate: &mut [f32]) -> () {
    for i in 0..dy.len() {
        let (g, cdf, pdf) = (gate[i], gelu_cdf_f32(gate[i]), gelu_pdf_f32(gate[i]));
        dh[i] = dy[i] * g * cdf;
        dgate[i] = dy[i] * h[i] * (cdf + g * pdf);
    }
});

simd_dispatch!(max_of_f32(x: &[f32], init: f32) -> f32 {
    // Eight running maxima (the compare-select form vectorises; f32::max's NaN
    // rules do not).
    let mut acc = [init; 8];
    let chunks = x.chunks_exact(8);
    let tail = chunks.remainder().iter().fold(init, |a, &v| if v > a { v } else { a });
    for c in chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a = if v > *a { v } else { *a };
        }
    }
    acc.iter().fold(tail, |a, &v| if v > a { v } else { a })
});

simd_dispatch!(sum_f64_f32(x: &[f32], shift: f64, square: bool) -> f64 {
    let mut acc = [0f64; 8];
    let chunks = x.chunks_exact(8);
    let f = |v: f32| {
        let d = v as f64 - shift;
        if square { d * d } else { d }
    };
    let tail: f64 = chunks.remainder().iter().map(|&v| f(v)).sum();
    for c in chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += f(v);
        }
    }
    tail + acc.iter().sum::<f64>()
});

fn as_f32<T: Real>(x: &[T]) -> Option<&[f32]> {
    (T::DTYPE == DType::F32).then(|| bytemuck::cast_slice(x))
}

fn as_f32_mut<T: Real>(x: &mut [T]) -> Option<&mut [f32]> {
    (T::DTYPE == DType::F32).then(|| bytemuck::cast_slice_mut(x))
}

/// y[i] = map(x[i]) (equal lengths).
pub fn map_into<T: Real>(map: Map, x: &[T], y: &mut [T]) {
    assert_eq!(x.len(), y.len(), "map_into: length mismatch");
    match (as_f32(x), T::DTYPE == DType::F32) {
        (Some(x32), true) => map_f32(map, x32, as_f32_mut(y).expect("f32 output")),
        _ => y
            .iter_mut()
            .zip(x)
            .for_each(|(o, &v)| *o = T::from_f64(map.f64(v.as_f64()))),
    }
}

/// x[i] = map(x[i]).
pub fn map_in_place<T: Real>(map: Map, x: &mut [T]) {
    match as_f32_mut(x) {
        Some(x32) => map_in_place_f32(map, x32),
        None => x
            .iter_mut()
            .for_each(|v| *v = T::from_f64(map.f64(v.as_f64()))),
    }
}

/// Σ (x[i] − shift) (or Σ (x[i] − shift)² when `square`), accumulated in f64.
pub fn sum_f64<T: Real>(x: &[T], shift: f64, square: bool) -> f64 {
    match as_f32(x) {
        Some(x32) => sum_f64_f32(x32, shift, square),
        None => x
            .iter()
            .map(|v| {
                let d = v.as_f64() - shift;
                if square {
                    d * d
                } else {
                    d
                }
            })
            .sum(),
    }
}

/// max(init, max_i x[i]) (NaNs in x are skipped; softmax's exp turns them into
/// NaN outputs anyway).
pub fn max_of<T: Real>(x: &[T], init: T) -> T {
    match as_f32(x) {
        Some(x32) => T::from_f32(max_of_f32(x32, init.as_f32())),
        None => x.iter().fold(init, |a, &v| a.max(v)),
    }
}

/// x[i] = e^(x[i] − m); returns Σ x[i] (softmax's numerator and denominator).
pub fn exp_sub_sum<T: Real>(x: &mut [T], m: T) -> T {
    match as_f32_mut(x) {
        Some(x32) => T::from_f32(exp_sub_sum_f32(x32, m.as_f32())),
        None => {
            let mut sum = T::zero();
            for v in x.iter_mut() {
                *v = (*v - m).exp();
                sum += *v;
            }
            sum
        }
    }
}

/// y[i] = h[i] · gelu(gate[i]) (GEGLU's product, exact-form GELU).
pub fn geglu_into<T: Real>(h: &[T], gate: &[T], y: &mut [T]) {
    assert!(
        h.len() == y.len() && gate.len() == y.len(),
        "geglu_into: length mismatch"
    );
    match (as_f32(h), as_f32(gate)) {
        (Some(h32), Some(g32)) => geglu_f32(h32, g32, as_f32_mut(y).expect("f32 output")),
        _ => {
            for ((o, &a), &g) in y.iter_mut().zip(h).zip(gate) {
                *o = a * T::from_f64(Map::Gelu.f64(g.as_f64()));
            }
        }
    }
}

/// GEGLU's backward: dh = dy·gelu(gate), dgate = dy·h·(Φ(gate) + gate·φ(gate)).
pub fn geglu_backward_into<T: Real>(h: &[T], gate: &[T], dy: &[T], dh: &mut [T], dgate: &mut [T]) {
    let n = dy.len();
    assert!(
        h.len() == n && gate.len() == n && dh.len() == n && dgate.len() == n,
        "geglu_backward_into: length mismatch"
    );
    if let (Some(h32), Some(g32), Some(dy32)) = (as_f32(h), as_f32(gate), as_f32(dy)) {
        let dh32 = as_f32_mut(dh).expect("f32 output");
        return geglu_backward_f32(h32, g32, dy32, dh32, as_f32_mut(dgate).expect("f32 output"));
    }
    for i in 0..n {
        let g = gate[i].as_f64();
        let cdf = 0.5 * libm::erfc(-g * std::f64::consts::FRAC_1_SQRT_2);
        let pdf = 0.398_942_280_401_432_7 * (-0.5 * g * g).exp();
        dh[i] = T::from_f64(dy[i].as_f64() * g * cdf);
        dgate[i] = T::from_f64(dy[i].as_f64() * h[i].as_f64() * (cdf + g * pdf));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ulps(a: f32, b: f32) -> f64 {
        ((a - b).abs() / b.abs().max(f32::MIN_POSITIVE) / f32::EPSILON) as f64
    }

    #[test]
    fn exp_matches_f64_within_two_ulp() {
        let mut worst = 0f64;
        let mut x = -87.3f32;
        while x < 88.7 {
            let exact = (x as f64).exp() as f32;
            worst = worst.max(ulps(exp_f32(x), exact));
            x += 0.0137;
        }
        assert!(worst <= 2.0, "exp error {worst} ulp");
        let mut worst = 0f64;
        let mut x = -87.3f32;
        while x < 88.3 {
            worst = worst.max(ulps(exp_f32_below_88(x), (x as f64).exp() as f32));
            x += 0.0137;
        }
        assert!(worst <= 2.0, "exp (below 88) error {worst} ulp");
        assert_eq!(exp_f32_below_88(f32::NEG_INFINITY), 0.0);
        assert!(exp_f32_below_88(f32::NAN).is_nan());
        assert_eq!(exp_f32(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp_f32(-100.0), 0.0);
        assert_eq!(exp_f32(100.0), f32::INFINITY);
        assert!(exp_f32(f32::NAN).is_nan());
        assert_eq!(exp_f32(0.0), 1.0);
    }

    #[test]
    fn gelu_and_erfc_keep_relative_accuracy() {
        let mut x = -9.0f32;
        while x < 9.0 {
            let xd = x as f64;
            let exact = 0.5 * xd * libm::erfc(-xd * std::f64::consts::FRAC_1_SQRT_2);
            let got = gelu_f32(x) as f64;
            let bound = 3e-7 * (1.0 + xd * xd);
            if exact != 0.0 {
                let err = ((got - exact) / exact).abs();
                assert!(err < bound, "gelu({x}) = {got}, want {exact}");
            }
            x += 0.0311;
        }
    }

    #[test]
    fn slice_paths_agree_with_the_scalar_forms() {
        let x: Vec<f32> = (0..1003).map(|i| (i as f32 * 0.37).sin() * 12.0).collect();
        for map in [
            Map::Exp,
            Map::Sigmoid,
            Map::Silu,
            Map::Gelu,
            Map::GeluTanh,
            Map::QuickGelu,
        ] {
            let mut y = vec![f32::NAN; x.len()];
            map_into(map, &x, &mut y);
            for (&v, &o) in x.iter().zip(&y) {
                let want = map.f64(v as f64);
                let err = (o as f64 - want).abs() / want.abs().max(1e-30);
                let bound = 3e-7 * (1.0 + (v as f64).powi(2)).max(10.0);
                assert!(
                    err < bound || (o as f64 - want).abs() < 1e-37,
                    "{map:?}({v}) = {o}, want {want}"
                );
            }
        }
        let mut row = x.clone();
        let m = 12.0f32;
        let sum = exp_sub_sum(&mut row, m);
        let want: f64 = x.iter().map(|&v| ((v - m) as f64).exp()).sum();
        assert!(((sum as f64 - want) / want).abs() < 1e-5);
        let mut y = vec![f32::NAN; 1003];
        geglu_into(&x, &row, &mut y);
        for ((&a, &g), &o) in x.iter().zip(&row).zip(&y) {
            let want = a as f64 * Map::Gelu.f64(g as f64);
            assert!((o as f64 - want).abs() <= 2e-6 * want.abs() + 1e-30);
        }
    }
}
