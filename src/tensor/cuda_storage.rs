//! CUDA storage (feature `cuda`): a block of device memory from the device's caching allocator,
//! holding `len` elements of one dtype, plus a host copy made the first time CPU code reads it.
//! Device storage is never written after it is wrapped (ops write fresh outputs; optimizers
//! replace a parameter's storage), so the host copy cannot go stale.

use super::{CpuStorage, DType};
use crate::cuda::gpu::{address, Ptr};
use crate::cuda::{Block, Gpu};
use crate::error::{Error, Result};
use std::sync::{Arc, OnceLock};

pub struct CudaStorage {
    block: Block,
    dtype: DType,
    len: usize,
    ordinal: usize,
    gpu: Arc<Gpu>,
    host: OnceLock<CpuStorage>,
}

impl CudaStorage {
    /// Uninitialised storage for `len` elements of `dtype`; the caller's kernel writes all of it
    /// before it is wrapped in a tensor.
    pub fn alloc(gpu: &Arc<Gpu>, ordinal: usize, len: usize, dtype: DType) -> Result<CudaStorage> {
        let block = gpu.allocator().alloc(len * dtype.size_in_bytes())?;
        Ok(CudaStorage {
            block,
            dtype,
            len,
            ordinal,
            gpu: gpu.clone(),
            host: OnceLock::new(),
        })
    }

    /// A device copy of CPU storage (same dtype and length).
    pub fn upload(gpu: &Arc<Gpu>, ordinal: usize, cpu: &CpuStorage) -> Result<CudaStorage> {
        let mut s = CudaStorage::alloc(gpu, ordinal, cpu.len(), cpu.dtype())?;
        let bytes = cpu.as_bytes();
        if !bytes.is_empty() {
            gpu.stream()
                .memcpy_htod(bytes, s.block.slice_mut())
                .map_err(|e| {
                    Error::msg(format!(
                        "cuda:{ordinal}: uploading {} bytes failed: {e}",
                        bytes.len()
                    ))
                })?;
        }
        Ok(s)
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    pub fn ordinal(&self) -> usize {
        self.ordinal
    }
    pub fn gpu(&self) -> &Arc<Gpu> {
        &self.gpu
    }

    /// The whole storage as a launch argument (element 0 at `addr`).
    pub fn ptr(&self) -> Ptr {
        Ptr {
            addr: address(self.block.slice(), self.gpu.stream()),
            dtype: self.dtype,
            len: self.len,
        }
    }

    /// The values on the host: copied back (waiting for the stream) the first time, then cached.
    pub fn host(&self) -> Result<&CpuStorage> {
        if let Some(h) = self.host.get() {
            return Ok(h);
        }
        let h = self.download()?;
        Ok(self.host.get_or_init(|| h))
    }

    fn download(&self) -> Result<CpuStorage> {
        let nbytes = self.len * self.dtype.size_in_bytes();
        let mut bytes = vec![0u8; nbytes];
        if nbytes > 0 {
            let view = self.block.slice().slice(0..nbytes);
            self.gpu
                .stream()
                .memcpy_dtoh(&view, &mut bytes[..])
                .map_err(|e| {
                    Error::msg(format!(
                        "cuda:{}: reading a {} tensor of {} elements back failed: {e} (a kernel \
                         fault earlier on this device surfaces here)",
                        self.ordinal, self.dtype, self.len
                    ))
                })?;
        }
        Ok(CpuStorage::from_le_bytes(&bytes, self.dtype))
    }
}
