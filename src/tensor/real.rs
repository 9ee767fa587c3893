//! `Real`: the float types CPU kernels are written over (f32 and f64).

use super::DType;
use std::fmt::Debug;
use std::iter::Sum;
use std::ops::{AddAssign, DivAssign, MulAssign, SubAssign};

/// A float type CPU kernels compute in. f32 serves f32/f16/bf16 tensors, f64 serves
/// f64 tensors (used by finite-difference gradient checks).
pub trait Real:
    num_traits::Float
    + bytemuck::Pod
    + Default
    + Debug
    + Send
    + Sync
    + Sum
    + AddAssign
    + SubAssign
    + MulAssign
    + DivAssign
    + 'static
{
    const DTYPE: DType;
    fn from_f64(v: f64) -> Self;
    fn as_f64(self) -> f64;
    fn from_f32(v: f32) -> Self;
    fn as_f32(self) -> f32;
    fn erf(self) -> Self;
    fn from_usize(v: usize) -> Self {
        Self::from_f64(v as f64)
    }
}

impl Real for f32 {
    const DTYPE: DType = DType::F32;
    fn from_f64(v: f64) -> Self {
        v as f32
    }
    fn as_f64(self) -> f64 {
        self as f64
    }
    fn from_f32(v: f32) -> Self {
        v
    }
    fn as_f32(self) -> f32 {
        self
    }
    fn erf(self) -> Self {
        libm::erff(self)
    }
}

impl Real for f64 {
    const DTYPE: DType = DType::F64;
    fn from_f64(v: f64) -> Self {
        v
    }
    fn as_f64(self) -> f64 {
        self
    }
    fn from_f32(v: f32) -> Self {
        v as f64
    }
    fn as_f32(self) -> f32 {
        self as f32
    }
    fn erf(self) -> Self {
        libm::erf(self)
    }
}

/// Run `$body` with `$T` bound to the compute type (f32 or f64) of `$dtype`.
#[macro_export]
macro_rules! with_real {
    ($dtype:expr, $T:ident => $body:expr) => {
        match $dtype.compute() {
            $crate::tensor::DType::F64 => {
                #[allow(unused_imports)]
                use $crate::tensor::num_traits::{Float as _, One as _, Zero as _};
                #[allow(unused_imports)]
                use $crate::tensor::Real as _;
                type $T = f64;
                $body
            }
            _ => {
                #[allow(unused_imports)]
                use $crate::tensor::num_traits::{Float as _, One as _, Zero as _};
                #[allow(unused_imports)]
                use $crate::tensor::Real as _;
                type $T = f32;
                $body
            }
        }
    };
}
