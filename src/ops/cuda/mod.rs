//! The ops' CUDA paths (feature `cuda`): one file per op family, each taking tensors on one
//! device, queuing the kernels of `backend::cuda` on that device's stream (no host sync) and
//! returning device storage for the op's `op_output`. An op dispatches here when
//! [`OnCuda::of`] finds a CUDA input; CPU inputs of such an op are uploaded first.

pub mod attention;
pub mod binary;
pub mod cast;
pub mod conv;
pub mod copy;
pub mod embedding;
pub mod loss;
pub mod matmul;
pub mod norm;
pub mod optim;
pub mod pool;
pub mod reduce;
pub mod softmax;
pub mod unary;

use crate::cuda::gpu::Ptr;
use crate::cuda::Gpu;
use crate::error::{Error, Result};
use crate::ops::device::op_device;
use crate::tensor::{CudaStorage, DType, Device, Storage, Tensor};
use std::sync::Arc;

/// The device an op runs on, when it is a GPU.
pub struct OnCuda {
    pub gpu: Arc<Gpu>,
    pub ordinal: usize,
}

/// An input on the op's device: its storage (kept alive until the op's kernels are queued;
/// frees are stream-ordered) and the address of its first element.
pub struct DevIn {
    _storage: Arc<Storage>,
    pub ptr: Ptr,
    pub tensor: Tensor,
}

impl OnCuda {
    /// `Some` when an op on `inputs` runs on a GPU (some input lives there).
    pub fn of(inputs: &[&Tensor]) -> Result<Option<OnCuda>> {
        match op_device(inputs) {
            Device::Cpu => Ok(None),
            Device::Cuda(ordinal) => Ok(Some(OnCuda {
                gpu: crate::cuda::gpu(ordinal)?,
                ordinal,
            })),
        }
    }

    pub fn device(&self) -> Device {
        Device::Cuda(self.ordinal)
    }

    /// `t` on this device and contiguous (uploaded / copied when needed; no copy otherwise).
    pub fn input(&self, t: &Tensor) -> Result<DevIn> {
        let t = t.to_device(self.device())?.contiguous()?;
        self.view(&t)
    }

    /// `t` (on this device) as it is: its storage's address plus the layout's offset. The
    /// caller reads it through `t.layout()`'s strides.
    pub fn view(&self, t: &Tensor) -> Result<DevIn> {
        let storage = t.storage();
        let ptr = match &*storage {
            Storage::Cuda(s) if s.ordinal() == self.ordinal => {
                s.ptr().offset(t.layout().offset())?
            }
            _ => {
                return Err(Error::msg(format!(
                    "internal: a {} tensor where cuda:{} was expected",
                    t.device(),
                    self.ordinal
                )))
            }
        };
        Ok(DevIn {
            _storage: storage,
            ptr,
            tensor: t.clone(),
        })
    }

    /// A new, uninitialised output of `len` elements of `dtype` (the kernel writes all of it).
    pub fn output(&self, len: usize, dtype: DType) -> Result<(Storage, Ptr)> {
        let s = CudaStorage::alloc(&self.gpu, self.ordinal, len, dtype)?;
        let ptr = s.ptr();
        Ok((Storage::Cuda(s), ptr))
    }

    /// A zero-filled output (for kernels that accumulate or write a subset).
    pub fn zeros(&self, len: usize, dtype: DType) -> Result<(Storage, Ptr)> {
        let (s, ptr) = self.output(len, dtype)?;
        let bytes = len * dtype.size_in_bytes();
        if bytes > 0 {
            // A raw driver call on the legacy default stream: the context must be current.
            crate::cuda::devices::bind(&self.gpu, self.ordinal)?;
            // SAFETY: `ptr` addresses at least `bytes` bytes of the block just allocated.
            unsafe {
                cudarc::driver::result::memset_d8_async(
                    ptr.addr,
                    0,
                    bytes,
                    self.gpu.stream().cu_stream(),
                )
            }
            .map_err(|e| {
                Error::msg(format!(
                    "cuda:{}: zero-filling {bytes} bytes: {e}",
                    self.ordinal
                ))
            })?;
        }
        Ok((s, ptr))
    }
}

/// A tensor of `shape` on the device from `storage` (an op output without autograd history:
/// for values inside backward rules, which run without recording).
pub fn tensor(storage: Storage, shape: &[usize]) -> Result<Tensor> {
    Tensor::from_storage(storage, crate::tensor::Layout::contiguous(shape))
}
