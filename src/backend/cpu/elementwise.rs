//! Elementwise unary kernels: the functions, their derivatives, and the maps.

use super::vmath::{self, Map};
use super::{par_fill, poisoned, PAR_CHUNK};
use crate::tensor::Real;
use rayon::prelude::*;

/// Unary functions with their derivatives, shared by forward and backward.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unary {
    Neg,
    Exp,
    Log,
    Sqrt,
    Tanh,
    Sigmoid,
    Relu,
    Silu,
    /// GELU with the exact erf form.
    Gelu,
    /// GELU with the tanh approximation.
    GeluTanh,
    /// x·sigmoid(1.702x), as in OpenAI CLIP.
    QuickGelu,
    Abs,
    Square,
    Recip,
    Sin,
    Cos,
}

fn sigmoid<T: Real>(x: T) -> T {
    T::one() / (T::one() + (-x).exp())
}

const SQRT_2_OVER_PI: f64 = 0.797_884_560_802_865_4;
const GELU_TANH_C: f64 = 0.044715;

impl Unary {
    pub fn name(self) -> &'static str {
        match self {
            Unary::Neg => "neg",
            Unary::Exp => "exp",
            Unary::Log => "log",
            Unary::Sqrt => "sqrt",
            Unary::Tanh => "tanh",
            Unary::Sigmoid => "sigmoid",
            Unary::Relu => "relu",
            Unary::Silu => "silu",
            Unary::Gelu => "gelu",
            Unary::GeluTanh => "gelu_tanh",
            Unary::QuickGelu => "quick_gelu",
            Unary::Abs => "abs",
            Unary::Square => "square",
            Unary::Recip => "recip",
            Unary::Sin => "sin",
            Unary::Cos => "cos",
        }
    }

    /// f(x)
    pub fn apply<T: Real>(self, x: T) -> T {
        let half = T::from_f64(0.5);
        match self {
            Unary::Neg => -x,
            Unary::Exp => x.exp(),
            Unary::Log => x.ln(),
            Unary::Sqrt => x.sqrt(),
            Unary::Tanh => x.tanh(),
            Unary::Sigmoid => sigmoid(x),
            Unary::Relu => x.max(T::zero()),
            Unary::Silu => x * sigmoid(x),
            Unary::Gelu => {
                half * x * (T::one() + (x * T::from_f64(std::f64::consts::FRAC_1_SQRT_2)).erf())
            }
            Unary::GeluTanh => {
                let inner =
                    T::from_f64(SQRT_2_OVER_PI) * (x + T::from_f64(GELU_TANH_C) * x * x * x);
                half * x * (T::one() + inner.tanh())
            }
            Unary::QuickGelu => x * sigmoid(T::from_f64(1.702) * x),
            Unary::Abs => x.abs(),
            Unary::Square => x * x,
            Unary::Recip => x.recip(),
            Unary::Sin => x.sin(),
            Unary::Cos => x.cos(),
        }
    }

    /// f'(x), given x and y = f(x).
    pub fn derivative<T: Real>(self, x: T, y: T) -> T {
        let one = T::one();
        let half = T::from_f64(0.5);
        match self {
            Unary::Neg => -one,
            Unary::Exp => y,
            Unary::Log => one / x,
            Unary::Sqrt => half / y,
            Unary::Tanh => one - y * y,
            Unary::Sigmoid => y * (one - y),
            Unary::Relu => {
                if x > T::zero() {
                    one
                } else {
                    T::zero()
                }
            }
            Unary::Silu => {
                let s = sigmoid(x);
                s * (one + x * (one - s))
            }
            Unary::Gelu => {
                let cdf = half * (one + (x * T::from_f64(std::f64::consts::FRAC_1_SQRT_2)).erf());
                let pdf = (-(half * x * x)).exp() * T::from_f64(0.398_942_280_401_432_7);
                cdf + x * pdf
            }
            Unary::GeluTanh => {
                let c = T::from_f64(SQRT_2_OVER_PI);
                let a = T::from_f64(GELU_TANH_C);
                let inner = c * (x + a * x * x * x);
                let t = inner.tanh();
                half * (one + t)
                    + half * x * (one - t * t) * c * (one + T::from_f64(3.0) * a * x * x)
            }
            Unary::QuickGelu => {
                let k = T::from_f64(1.702);
                let s = sigmoid(k * x);
                s + x * k * s * (one - s)
            }
            Unary::Abs => x.signum() * if x == T::zero() { T::zero() } else { one },
            Unary::Square => T::from_f64(2.0) * x,
            Unary::Recip => -y * y,
            Unary::Sin => x.cos(),
            Unary::Cos => -x.sin(),
        }
    }
}

impl Unary {
    /// The vectorised form of this function, where there is one.
    fn vector_map(self) -> Option<Map> {
        Some(match self {
            Unary::Exp => Map::Exp,
            Unary::Sigmoid => Map::Sigmoid,
            Unary::Silu => Map::Silu,
            Unary::Gelu => Map::Gelu,
            Unary::GeluTanh => Map::GeluTanh,
            Unary::QuickGelu => Map::QuickGelu,
            _ => return None,
        })
    }
}

/// y = f(x) elementwise.
pub fn unary<T: Real>(op: Unary, x: &[T]) -> Vec<T> {
    match op.vector_map() {
        Some(map) => {
            let mut y = poisoned::<T>(x.len());
            y.par_chunks_mut(PAR_CHUNK)
                .zip(x.par_chunks(PAR_CHUNK))
                .for_each(|(yc, xc)| vmath::map_into(map, xc, yc));
            y
        }
        None => par_fill(x.len(), |i| op.apply(x[i])),
    }
}

/// dx = dy · f'(x).
pub fn unary_backward<T: Real>(op: Unary, x: &[T], y: &[T], dy: &[T]) -> Vec<T> {
    par_fill(x.len(), |i| dy[i] * op.derivative(x[i], y[i]))
}
