//! Binary elementwise kernels (add, sub, mul, div, max, min) over operands that
//! are full-size or broadcast bias-like, read in place without expanding.

use super::{poisoned, PAR_CHUNK};
use crate::tensor::Real;
use rayon::prelude::*;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Binary {
    Add,
    Sub,
    Mul,
    Div,
    Maximum,
    Minimum,
}

impl Binary {
    pub fn name(self) -> &'static str {
        match self {
            Binary::Add => "add",
            Binary::Sub => "sub",
            Binary::Mul => "mul",
            Binary::Div => "div",
            Binary::Maximum => "maximum",
            Binary::Minimum => "minimum",
        }
    }

    pub fn apply<T: Real>(self, a: T, b: T) -> T {
        match self {
            Binary::Add => a + b,
            Binary::Sub => a - b,
            Binary::Mul => a * b,
            Binary::Div => a / b,
            Binary::Maximum => a.max(b),
            Binary::Minimum => a.min(b),
        }
    }
}

/// How an operand's values map onto the output's flat index `i`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reach {
    /// Same shape: value `i`.
    Full,
    /// Repeats over leading dims (a bias [C] on [N, L, C]): value `i % inner`.
    Trailing(usize),
    /// Repeats over trailing dims (a [N, C, 1, 1] on [N, C, H, W]): value `i / inner`.
    Leading(usize),
}

impl Reach {
    /// The first index after `s` (capped at `hi`) where the operand stops being one
    /// contiguous slice or one repeated value.
    fn segment_end(self, s: usize, hi: usize) -> usize {
        match self {
            Reach::Full => hi,
            Reach::Trailing(inner) | Reach::Leading(inner) => ((s / inner + 1) * inner).min(hi),
        }
    }

    /// The operand's values over output indices [s, e) (within one segment).
    fn segment<T: Copy>(self, v: &[T], s: usize, e: usize) -> Operand<'_, T> {
        match self {
            Reach::Full => Operand::Slice(&v[s..e]),
            Reach::Trailing(inner) => Operand::Slice(&v[s % inner..s % inner + (e - s)]),
            Reach::Leading(inner) => Operand::Scalar(v[s / inner]),
        }
    }
}

enum Operand<'a, T> {
    Slice(&'a [T]),
    Scalar(T),
}

/// o = f(a, b) over one segment, with the loop shape chosen once.
#[inline(always)]
fn apply<T: Copy>(o: &mut [T], a: Operand<'_, T>, b: Operand<'_, T>, f: impl Fn(T, T) -> T) {
    match (a, b) {
        (Operand::Slice(a), Operand::Slice(b)) => {
            for ((o, &x), &y) in o.iter_mut().zip(a).zip(b) {
                *o = f(x, y);
            }
        }
        (Operand::Slice(a), Operand::Scalar(y)) => {
            o.iter_mut().zip(a).for_each(|(o, &x)| *o = f(x, y))
        }
        (Operand::Scalar(x), Operand::Slice(b)) => {
            o.iter_mut().zip(b).for_each(|(o, &y)| *o = f(x, y))
        }
        (Operand::Scalar(x), Operand::Scalar(y)) => o.fill(f(x, y)),
    }
}

/// out[i] = op(a at i, b at i) for i < n, each operand read through its `Reach`.
pub fn binary<T: Real>(op: Binary, a: &[T], ra: Reach, b: &[T], rb: Reach, n: usize) -> Vec<T> {
    let mut out = poisoned::<T>(n);
    out.par_chunks_mut(PAR_CHUNK)
        .enumerate()
        .for_each(|(c, chunk)| {
            let (base, hi) = (c * PAR_CHUNK, c * PAR_CHUNK + chunk.len());
            let mut s = base;
            while s < hi {
                let e = ra.segment_end(s, hi).min(rb.segment_end(s, hi));
                let o = &mut chunk[s - base..e - base];
                let (x, y) = (ra.segment(a, s, e), rb.segment(b, s, e));
                match op {
                    Binary::Add => apply(o, x, y, |p, q| p + q),
                    Binary::Sub => apply(o, x, y, |p, q| p - q),
                    Binary::Mul => apply(o, x, y, |p, q| p * q),
                    Binary::Div => apply(o, x, y, |p, q| p / q),
                    Binary::Maximum => apply(o, x, y, |p: T, q| p.max(q)),
                    Binary::Minimum => apply(o, x, y, |p: T, q| p.min(q)),
                }
                s = e;
            }
        });
    out
}
