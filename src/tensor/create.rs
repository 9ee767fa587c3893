//! Tensor constructors: from values, filled, random, ranges.

use super::{CpuStorage, DType, Layout, Philox, Real, Storage, Tensor};
use crate::bail;
use crate::error::Result;

fn check_len(len: usize, shape: &[usize]) -> Result<()> {
    let n: usize = shape.iter().product();
    if n != len {
        bail!("{len} values do not fill shape {shape:?} ({n} elements)");
    }
    Ok(())
}

impl Tensor {
    /// A tensor of `T`'s dtype from row-major values.
    pub fn from_vec<T: Real>(values: Vec<T>, shape: &[usize]) -> Result<Tensor> {
        Tensor::from_values(values, shape, T::DTYPE)
    }

    /// A tensor of `dtype` from values computed as `T` (rounded for half dtypes).
    pub fn from_values<T: Real>(values: Vec<T>, shape: &[usize], dtype: DType) -> Result<Tensor> {
        check_len(values.len(), shape)?;
        Tensor::from_storage(
            Storage::Cpu(CpuStorage::from_real(values, dtype)),
            Layout::contiguous(shape),
        )
    }

    /// An f32 tensor from a slice.
    pub fn from_slice(values: &[f32], shape: &[usize]) -> Result<Tensor> {
        Tensor::from_vec(values.to_vec(), shape)
    }

    /// An integer tensor (i64) of ids or class indices.
    pub fn from_i64(values: Vec<i64>, shape: &[usize]) -> Result<Tensor> {
        check_len(values.len(), shape)?;
        Tensor::from_storage(
            Storage::Cpu(CpuStorage::I64(values)),
            Layout::contiguous(shape),
        )
    }

    pub fn full(value: f64, shape: &[usize], dtype: DType) -> Result<Tensor> {
        let n = shape.iter().product();
        if dtype.is_float() {
            crate::with_real!(dtype, T => Tensor::from_values(vec![T::from_f64(value); n], shape, dtype))
        } else {
            Tensor::from_storage(
                Storage::Cpu(CpuStorage::from_i64(vec![value as i64; n], dtype)),
                Layout::contiguous(shape),
            )
        }
    }

    pub fn zeros(shape: &[usize], dtype: DType) -> Result<Tensor> {
        Tensor::full(0.0, shape, dtype)
    }

    pub fn ones(shape: &[usize], dtype: DType) -> Result<Tensor> {
        Tensor::full(1.0, shape, dtype)
    }

    pub fn scalar(value: f64, dtype: DType) -> Result<Tensor> {
        Tensor::full(value, &[], dtype)
    }

    pub fn zeros_like(&self) -> Result<Tensor> {
        Tensor::zeros(self.shape(), self.dtype())
    }

    pub fn ones_like(&self) -> Result<Tensor> {
        Tensor::ones(self.shape(), self.dtype())
    }

    /// Standard normal samples from a Philox stream.
    pub fn randn(rng: &mut Philox, shape: &[usize], dtype: DType) -> Result<Tensor> {
        let n = shape.iter().product();
        Tensor::from_values(rng.normal(n), shape, dtype)
    }

    /// Uniform samples in [lo, hi).
    pub fn rand_uniform(
        rng: &mut Philox,
        lo: f64,
        hi: f64,
        shape: &[usize],
        dtype: DType,
    ) -> Result<Tensor> {
        let n = shape.iter().product();
        let v = rng
            .uniform(n)
            .into_iter()
            .map(|u| lo + (hi - lo) * u)
            .collect();
        Tensor::from_values::<f64>(v, shape, dtype)
    }

    /// 0, 1, ..., n-1 as `dtype`.
    pub fn arange(n: usize, dtype: DType) -> Result<Tensor> {
        if dtype.is_float() {
            Tensor::from_values::<f64>((0..n).map(|i| i as f64).collect(), &[n], dtype)
        } else {
            Tensor::from_storage(
                Storage::Cpu(CpuStorage::from_i64((0..n as i64).collect(), dtype)),
                Layout::contiguous(&[n]),
            )
        }
    }
}
