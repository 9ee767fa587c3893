//! `Gpu`: one device's context, stream and kernel modules, with typed upload/download, poisoned
//! buffers and event timing — what the kernel tests, the benches and the backend launch through.

use super::allocator::CachingAllocator;
use super::modules::{driver_error, Modules};
use crate::error::{Error, Result};
use crate::tensor::DType;
use cudarc::cublas::CudaBlas;
use cudarc::driver::{
    sys, CudaContext, CudaFunction, CudaSlice, CudaStream, DeviceRepr, ValidAsZeroBits,
};
use half::{bf16, f16};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, OnceLock};

/// One CUDA device opened for work: its primary context, one stream, and the lazily loaded
/// kernel modules.
pub struct Gpu {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    modules: Modules,
    allocator: CachingAllocator,
    /// cuBLAS, created at first use (Err: why it could not be loaded).
    blas: OnceLock<std::result::Result<CudaBlas, String>>,
}

/// A device buffer of `len` elements of a floating dtype (f32, bf16 or f16), held as bytes so
/// that one type serves every kernel variant (`kernel_{suffix}` takes it as `T*`).
pub struct DevBuf {
    pub bytes: CudaSlice<u8>,
    pub dtype: DType,
    pub len: usize,
}

/// A typed device address as the launch functions of `backend::cuda` take it: `len` elements of
/// `dtype` from `addr` (0 = a null pointer, for the kernels' optional arguments). It borrows
/// nothing: the buffer it came from must outlive the work queued with it, which stream order
/// gives when the buffer is dropped after the launch (drops free in stream order).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ptr {
    pub addr: u64,
    pub dtype: DType,
    pub len: usize,
}

impl Ptr {
    /// The null pointer (an absent optional argument).
    pub fn null(dtype: DType) -> Ptr {
        Ptr {
            addr: 0,
            dtype,
            len: 0,
        }
    }

    pub fn is_null(&self) -> bool {
        self.addr == 0
    }

    /// `self` advanced by `offset` elements (error when past the end).
    pub fn offset(self, offset: usize) -> Result<Ptr> {
        if offset > self.len {
            return Err(Error::msg(format!(
                "device pointer offset {offset} past its {} elements",
                self.len
            )));
        }
        Ok(Ptr {
            addr: self.addr + (offset * self.dtype.size_in_bytes()) as u64,
            dtype: self.dtype,
            len: self.len - offset,
        })
    }
}

/// The device address of a slice (cudarc's event tracking is off: one stream).
pub fn address<T>(slice: &CudaSlice<T>, stream: &Arc<CudaStream>) -> u64 {
    let (addr, _sync) = cudarc::driver::DevicePtr::device_ptr(slice, stream);
    addr
}

impl DevBuf {
    /// The whole buffer as a launch argument.
    pub fn ptr(&self) -> Ptr {
        Ptr {
            addr: address(&self.bytes, self.bytes.stream()),
            dtype: self.dtype,
            len: self.len,
        }
    }
}

impl Gpu {
    /// Opens device `ordinal`. A missing driver, a stub libcuda or a bad ordinal is an error
    /// naming the problem (cudarc panics on a missing library; that panic is caught here).
    pub fn open(ordinal: usize) -> Result<Gpu> {
        let opened = quietly(|| CudaContext::new(ordinal)).map_err(|p| {
            Error::msg(format!(
                "cuda:{ordinal}: the CUDA driver could not be loaded ({p}); run `medsyn doctor`"
            ))
        })?;
        let ctx = opened.map_err(|e| driver_error(e, &format!("opening cuda:{ordinal}")))?;
        let stream = ctx.default_stream();
        let modules = Modules::new(ctx.clone())?;
        let allocator = CachingAllocator::new(stream.clone());
        Ok(Gpu {
            ctx,
            stream,
            modules,
            allocator,
            blas: OnceLock::new(),
        })
    }

    pub fn context(&self) -> &Arc<CudaContext> {
        &self.ctx
    }

    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    pub fn modules(&self) -> &Modules {
        &self.modules
    }

    /// The stream's caching allocator (what the backend's tensors are allocated from).
    pub fn allocator(&self) -> &CachingAllocator {
        &self.allocator
    }

    /// The device's multiprocessor count (sizes split and persistent grids).
    pub fn sm_count(&self) -> Result<usize> {
        use sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT as SMS;
        let n = self
            .ctx
            .attribute(SMS)
            .map_err(|e| driver_error(e, "reading the multiprocessor count"))?;
        Ok((n as usize).max(1))
    }

    /// `len` elements of `dtype` of scratch from the caching allocator, with its launch pointer.
    /// Keep the Block until the launches using the Ptr are queued (dropping it afterwards is
    /// safe: one stream orders the reuse after them).
    pub fn scratch(&self, len: usize, dtype: DType) -> Result<(super::Block, Ptr)> {
        let block = self.allocator.alloc(len * dtype.size_in_bytes())?;
        let ptr = Ptr {
            addr: address(block.slice(), &self.stream),
            dtype,
            len,
        };
        Ok((block, ptr))
    }

    /// The device's name as the driver reports it.
    pub fn name(&self) -> String {
        self.ctx
            .name()
            .unwrap_or_else(|_| "unknown GPU".to_string())
    }

    /// The stream's cuBLAS handle, created at first use; a missing or unloadable library is an
    /// error saying what to install (cudarc panics on it; that panic is caught here).
    pub fn blas(&self) -> Result<&CudaBlas> {
        let made = self
            .blas
            .get_or_init(|| match quietly(|| CudaBlas::new(self.stream.clone())) {
                Ok(Ok(b)) => Ok(b),
                Ok(Err(e)) => Err(format!("cublasCreate failed: {e}")),
                Err(p) => Err(format!("cuBLAS could not be loaded ({p})")),
            });
        made.as_ref().map_err(|e| {
            Error::msg(format!(
                "{e}; matrix multiplies on the GPU need cuBLAS 12 (see `medsyn doctor`)"
            ))
        })
    }

    /// Entry point `kernel` of `kernels/{module}.cu`.
    pub fn function(&self, module: &str, kernel: &str) -> Result<CudaFunction> {
        self.modules.function(module, kernel)
    }

    /// Entry point `kernel` of `kernels/{module}.cu`, ready to launch with `smem_bytes` of dynamic
    /// shared memory: above the default 48 KiB, the function's limit is raised to the device's
    /// opt-in maximum (always that value, so that concurrent callers never lower it for each
    /// other); a request above the maximum is an error naming the kernel.
    pub fn function_with_smem(
        &self,
        module: &str,
        kernel: &str,
        smem_bytes: usize,
    ) -> Result<CudaFunction> {
        use sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN as OPTIN;
        use sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES as MAX_DYN;
        let f = self.function(module, kernel)?;
        if smem_bytes <= 48 * 1024 {
            return Ok(f);
        }
        let optin = self
            .ctx
            .attribute(OPTIN)
            .map_err(|e| driver_error(e, "reading the shared-memory limit"))?
            as usize;
        let static_smem = f.shared_size_bytes().unwrap_or(0) as usize;
        let max = optin.saturating_sub(static_smem);
        if smem_bytes > max {
            return Err(Error::msg(format!(
                "kernel {kernel} needs {smem_bytes} bytes of shared memory; this GPU allows {max}"
            )));
        }
        f.set_attribute(MAX_DYN, max as i32)
            .map_err(|e| driver_error(e, &format!("raising {kernel}'s shared-memory limit")))?;
        Ok(f)
    }

    /// A slice of any element type as a launch argument of `dtype` (e.g. i64 ids as
    /// `DType::I64`, u32 indices as `DType::I32`).
    pub fn ptr_of<T>(&self, slice: &CudaSlice<T>, dtype: DType) -> Ptr {
        Ptr {
            addr: address(slice, &self.stream),
            dtype,
            len: slice.len() * std::mem::size_of::<T>() / dtype.size_in_bytes().max(1),
        }
    }

    /// Copies `host` to a new device buffer.
    pub fn upload<T: DeviceRepr>(&self, host: &[T]) -> Result<CudaSlice<T>> {
        self.stream
            .clone_htod(host)
            .map_err(|e| driver_error(e, &format!("uploading {} elements", host.len())))
    }

    /// Copies a device buffer back (waits for the stream).
    pub fn download<T: DeviceRepr + Default + Clone>(&self, dev: &CudaSlice<T>) -> Result<Vec<T>> {
        self.stream
            .clone_dtoh(dev)
            .map_err(|e| driver_error(e, &format!("downloading {} elements", dev.len())))
    }

    /// A zero-filled device buffer.
    pub fn zeros<T: DeviceRepr + ValidAsZeroBits>(&self, len: usize) -> Result<CudaSlice<T>> {
        self.stream
            .alloc_zeros(len)
            .map_err(|e| driver_error(e, &format!("allocating {len} elements")))
    }

    /// A device buffer whose every byte is 0xff (NaN for f32/bf16/f16, -1 for integers), so that
    /// an element a kernel forgets to write shows up.
    pub fn poisoned<T: DeviceRepr>(&self, len: usize) -> Result<CudaSlice<T>> {
        let bytes = len * std::mem::size_of::<T>();
        let mut dst = self.uninit::<T>(len)?;
        let (ptr, _sync) = cudarc::driver::DevicePtrMut::device_ptr_mut(&mut dst, &self.stream);
        // SAFETY: `ptr` addresses `bytes` bytes owned by `dst`, on this stream.
        unsafe {
            cudarc::driver::result::memset_d8_async(ptr, 0xff, bytes, self.stream.cu_stream())
        }
        .map_err(|e| driver_error(e, "poisoning a buffer"))?;
        drop(_sync);
        Ok(dst)
    }

    fn uninit<T: DeviceRepr>(&self, len: usize) -> Result<CudaSlice<T>> {
        // SAFETY: every caller overwrites the whole buffer before it is read.
        unsafe { self.stream.alloc::<T>(len) }.map_err(|e| {
            let free = self
                .ctx
                .mem_get_info()
                .map(|(f, t)| format!("{} MiB free of {} MiB", f >> 20, t >> 20))
                .unwrap_or_default();
            Error::msg(format!(
                "out of GPU memory? allocating {} bytes failed ({e}); {free}",
                len * std::mem::size_of::<T>()
            ))
        })
    }

    /// `data` rounded to `dtype` and uploaded in it.
    pub fn upload_as(&self, data: &[f32], dtype: DType) -> Result<DevBuf> {
        let bytes: Vec<u8> = match dtype {
            DType::F32 => bytemuck::cast_slice(data).to_vec(),
            DType::BF16 => {
                let v: Vec<bf16> = data.iter().map(|&x| bf16::from_f32(x)).collect();
                bytemuck::cast_slice(&v).to_vec()
            }
            DType::F16 => {
                let v: Vec<f16> = data.iter().map(|&x| f16::from_f32(x)).collect();
                bytemuck::cast_slice(&v).to_vec()
            }
            other => return Err(unsupported(other)),
        };
        Ok(DevBuf {
            bytes: self.upload(&bytes)?,
            dtype,
            len: data.len(),
        })
    }

    /// A poisoned (all-NaN) buffer of `len` elements of `dtype`.
    pub fn poisoned_as(&self, len: usize, dtype: DType) -> Result<DevBuf> {
        let size = float_size(dtype)?;
        Ok(DevBuf {
            bytes: self.poisoned::<u8>(len * size)?,
            dtype,
            len,
        })
    }

    /// A buffer's values widened to f32.
    pub fn download_f32(&self, buf: &DevBuf) -> Result<Vec<f32>> {
        let bytes = self.download(&buf.bytes)?;
        Ok(widen(&bytes, buf.dtype)?
            .into_iter()
            .take(buf.len)
            .collect())
    }

    /// Waits for all work queued on the stream; a kernel fault surfaces here.
    pub fn sync(&self) -> Result<()> {
        self.stream
            .synchronize()
            .map_err(|e| driver_error(e, "waiting for the GPU"))
    }

    /// Median milliseconds of `iters` runs of `f` (after `warmup` runs), timed with CUDA events
    /// on the stream; also returns every sample.
    pub fn time_ms(
        &self,
        warmup: usize,
        iters: usize,
        mut f: impl FnMut() -> Result<()>,
    ) -> Result<(f64, Vec<f64>)> {
        for _ in 0..warmup {
            f()?;
        }
        self.sync()?;
        let flags = Some(sys::CUevent_flags::CU_EVENT_DEFAULT);
        let mut samples = Vec::with_capacity(iters);
        for _ in 0..iters.max(1) {
            let start = self
                .ctx
                .new_event(flags)
                .map_err(|e| driver_error(e, "creating a timing event"))?;
            let end = self
                .ctx
                .new_event(flags)
                .map_err(|e| driver_error(e, "creating a timing event"))?;
            start
                .record(&self.stream)
                .map_err(|e| driver_error(e, "recording an event"))?;
            f()?;
            end.record(&self.stream)
                .map_err(|e| driver_error(e, "recording an event"))?;
            end.synchronize()
                .map_err(|e| driver_error(e, "waiting for an event"))?;
            let ms = start
                .elapsed_ms(&end)
                .map_err(|e| driver_error(e, "reading an event"))?;
            samples.push(ms as f64);
        }
        let mut sorted = samples.clone();
        sorted.sort_by(|a, b| a.total_cmp(b));
        Ok((sorted[sorted.len() / 2], samples))
    }
}

/// The kernel-name suffix of a dtype: `f32`, `bf16`, `f16`.
pub fn suffix(dtype: DType) -> Result<&'static str> {
    Ok(match dtype {
        DType::F32 => "f32",
        DType::BF16 => "bf16",
        DType::F16 => "f16",
        other => return Err(unsupported(other)),
    })
}

/// `data` rounded through `dtype` (what the GPU sees after [`Gpu::upload_as`]).
pub fn round_to(data: &[f32], dtype: DType) -> Vec<f32> {
    match dtype {
        DType::BF16 => data.iter().map(|&x| bf16::from_f32(x).to_f32()).collect(),
        DType::F16 => data.iter().map(|&x| f16::from_f32(x).to_f32()).collect(),
        _ => data.to_vec(),
    }
}

fn float_size(dtype: DType) -> Result<usize> {
    match dtype {
        DType::F32 => Ok(4),
        DType::BF16 | DType::F16 => Ok(2),
        other => Err(unsupported(other)),
    }
}

fn widen(bytes: &[u8], dtype: DType) -> Result<Vec<f32>> {
    Ok(match dtype {
        DType::F32 => bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        DType::BF16 => bytes
            .chunks_exact(2)
            .map(|c| bf16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32())
            .collect(),
        DType::F16 => bytes
            .chunks_exact(2)
            .map(|c| f16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32())
            .collect(),
        other => return Err(unsupported(other)),
    })
}

fn unsupported(dtype: DType) -> Error {
    Error::msg(format!(
        "dtype {dtype:?}: the CUDA kernels take f32, bf16 or f16"
    ))
}

/// Runs `f`, turning a panic (cudarc's on a missing library) into Err(message) without printing it.
pub(crate) fn quietly<T>(f: impl FnOnce() -> T) -> std::result::Result<T, String> {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let out = catch_unwind(AssertUnwindSafe(f));
    std::panic::set_hook(hook);
    out.map_err(|p| {
        p.downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "panic".to_string())
    })
}
