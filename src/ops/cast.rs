//! dtype conversion (the gradient is cast back to the input's dtype).

use crate::autograd::{op_output, Backward};
use crate::error::Result;
use crate::tensor::{CpuStorage, DType, Storage, Tensor};

struct CastBack;
impl Backward for CastBack {
    fn name(&self) -> &'static str {
        "to_dtype"
    }
    fn backward(
        &self,
        g: &Tensor,
        inputs: &[Tensor],
        _: &[bool],
        _: &Tensor,
    ) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(g.to_dtype(inputs[0].dtype())?)])
    }
}

impl Tensor {
    /// Convert to `dtype` (a no-op returning `self` when it already is).
    pub fn to_dtype(&self, dtype: DType) -> Result<Tensor> {
        if dtype == self.dtype() {
            return Ok(self.clone());
        }
        #[cfg(feature = "cuda")]
        if crate::ops::cuda::cast::kernel_float(self.dtype())
            && crate::ops::cuda::cast::kernel_float(dtype)
        {
            if let Some(cx) = crate::ops::cuda::OnCuda::of(&[self])? {
                let storage = crate::ops::cuda::cast::cast(&cx, self, dtype)?;
                return op_output(storage, self.shape(), &[self], || CastBack);
            }
        }
        let storage = if !self.dtype().is_float() || !dtype.is_float() {
            // Integer involved: go through i64 (floats truncate toward zero).
            if self.dtype().is_float() {
                CpuStorage::from_i64(
                    self.to_vec_f64().into_iter().map(|v| v as i64).collect(),
                    dtype,
                )
            } else {
                CpuStorage::from_i64(self.to_vec_i64(), dtype)
            }
        } else if dtype == DType::F64 || self.dtype() == DType::F64 {
            CpuStorage::from_real(self.to_vec::<f64>(), dtype)
        } else {
            CpuStorage::from_real(self.to_vec::<f32>(), dtype)
        };
        let inputs: &[&Tensor] = if dtype.is_float() { &[self] } else { &[] };
        // An integer result records no input, so op_output would leave it on the host: keep it
        // on this tensor's device like every other op's output.
        let storage = if inputs.is_empty() && self.device() != crate::tensor::Device::Cpu {
            crate::ops::device::place(Storage::Cpu(storage), self.device())?
        } else {
            Storage::Cpu(storage)
        };
        op_output(storage, self.shape(), inputs, || CastBack)
    }
}
