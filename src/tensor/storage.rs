//! Storage: the bytes behind tensors, per backend. The CPU variant is either owned
//! typed vectors or a zero-copy window into a memory-mapped safetensors file.

use super::{DType, Layout, Real};
use half::slice::HalfFloatSliceExt;
use half::{bf16, f16};
use memmap2::Mmap;
use rayon::prelude::*;
use std::borrow::Cow;
use std::sync::Arc;

/// Backend storage: CPU, or (feature `cuda`) device memory from the device's caching allocator.
pub enum Storage {
    Cpu(CpuStorage),
    #[cfg(feature = "cuda")]
    Cuda(super::cuda_storage::CudaStorage),
}

impl Storage {
    pub fn dtype(&self) -> DType {
        match self {
            Storage::Cpu(s) => s.dtype(),
            #[cfg(feature = "cuda")]
            Storage::Cuda(s) => s.dtype(),
        }
    }
    pub fn len(&self) -> usize {
        match self {
            Storage::Cpu(s) => s.len(),
            #[cfg(feature = "cuda")]
            Storage::Cuda(s) => s.len(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Where the bytes live.
    pub fn device(&self) -> super::Device {
        match self {
            Storage::Cpu(_) => super::Device::Cpu,
            #[cfg(feature = "cuda")]
            Storage::Cuda(s) => super::Device::Cuda(s.ordinal()),
        }
    }

    /// The values on the host (device storage is copied back once and cached), or the error
    /// of reading them back.
    pub fn try_cpu(&self) -> crate::Result<&CpuStorage> {
        match self {
            Storage::Cpu(s) => Ok(s),
            #[cfg(feature = "cuda")]
            Storage::Cuda(s) => s.host(),
        }
    }

    /// The values on the host, for the infallible readers (`Tensor::to_vec`, CPU kernels). A
    /// device storage that cannot be read back means the device faulted earlier (its context is
    /// lost): that is a panic naming the device, since no result computed after it can be trusted.
    pub fn cpu(&self) -> &CpuStorage {
        match self.try_cpu() {
            Ok(s) => s,
            Err(e) => panic!("{e}"),
        }
    }
}

/// A read-only, suitably aligned byte window of a memory map.
#[derive(Clone)]
pub struct MappedBytes {
    map: Arc<Mmap>,
    start: usize,
    len_bytes: usize,
    dtype: DType,
}

impl MappedBytes {
    /// `None` when the window is out of bounds or not aligned for `dtype`
    /// (the caller then copies the bytes instead).
    pub fn new(map: Arc<Mmap>, start: usize, len_bytes: usize, dtype: DType) -> Option<Self> {
        let end = start.checked_add(len_bytes)?;
        if end > map.len() || !len_bytes.is_multiple_of(dtype.size_in_bytes()) {
            return None;
        }
        let ptr = map[start..].as_ptr() as usize;
        if !ptr.is_multiple_of(dtype.size_in_bytes()) {
            return None;
        }
        Some(MappedBytes {
            map,
            start,
            len_bytes,
            dtype,
        })
    }
    fn bytes(&self) -> &[u8] {
        &self.map[self.start..self.start + self.len_bytes]
    }
}

/// CPU storage: owned vectors, or a mapped window (zero-copy weights).
#[derive(Clone)]
pub enum CpuStorage {
    F64(Vec<f64>),
    F32(Vec<f32>),
    F16(Vec<f16>),
    BF16(Vec<bf16>),
    I64(Vec<i64>),
    I32(Vec<i32>),
    U8(Vec<u8>),
    Mapped(MappedBytes),
}

/// A borrowed, typed view of CPU storage.
pub enum CpuSlice<'a> {
    F64(&'a [f64]),
    F32(&'a [f32]),
    F16(&'a [f16]),
    BF16(&'a [bf16]),
    I64(&'a [i64]),
    I32(&'a [i32]),
    U8(&'a [u8]),
}

macro_rules! each_slice {
    ($slice:expr, $s:ident => $body:expr) => {
        match $slice {
            CpuSlice::F64($s) => $body,
            CpuSlice::F32($s) => $body,
            CpuSlice::F16($s) => $body,
            CpuSlice::BF16($s) => $body,
            CpuSlice::I64($s) => $body,
            CpuSlice::I32($s) => $body,
            CpuSlice::U8($s) => $body,
        }
    };
}

/// Element types storage can hold, converted through f64.
pub trait StorageElem: Copy + Send + Sync + 'static {
    fn as_f64(self) -> f64;
}
macro_rules! storage_elem {
    ($($t:ty => |$v:ident| $e:expr),*) => {$(
        impl StorageElem for $t { fn as_f64(self) -> f64 { let $v = self; $e } }
    )*};
}
storage_elem!(f64 => |v| v, f32 => |v| v as f64, f16 => |v| v.to_f64(), bf16 => |v| v.to_f64(),
    i64 => |v| v as f64, i32 => |v| v as f64, u8 => |v| v as f64);

fn convert_slice<S: StorageElem, T: Real>(src: &[S], layout: &Layout) -> Vec<T> {
    let mut out = Vec::with_capacity(layout.numel());
    if layout.is_contiguous() {
        let start = layout.offset();
        out.extend(
            src[start..start + layout.numel()]
                .iter()
                .map(|&v| T::from_f64(v.as_f64())),
        );
    } else {
        layout.for_each_run(|start, len, stride| {
            let conv = |&v: &S| T::from_f64(v.as_f64());
            match stride {
                1 => out.extend(src[start..start + len].iter().map(conv)),
                _ => out.extend((0..len).map(|i| conv(&src[start + i * stride]))),
            }
        });
    }
    out
}

/// Elements per parallel task in dtype conversions.
const CONVERT_CHUNK: usize = 1 << 15;

/// Half-precision slice to f32 (SIMD conversions from `half`, parallel chunks).
fn half_to_f32<H: Copy + Send + Sync>(src: &[H]) -> Vec<f32>
where
    [H]: HalfFloatSliceExt,
{
    let mut out = vec![0f32; src.len()];
    out.par_chunks_mut(CONVERT_CHUNK)
        .enumerate()
        .for_each(|(c, dst)| {
            let start = c * CONVERT_CHUNK;
            src[start..start + dst.len()].convert_to_f32_slice(dst);
        });
    out
}

/// f32 slice to a half type, rounding to nearest even (parallel chunks).
fn f32_to_half<H: Copy + Default + Send + Sync>(src: &[f32]) -> Vec<H>
where
    [H]: HalfFloatSliceExt,
{
    let mut out = vec![H::default(); src.len()];
    out.par_chunks_mut(CONVERT_CHUNK)
        .enumerate()
        .for_each(|(c, dst)| {
            let start = c * CONVERT_CHUNK;
            dst.convert_from_f32_slice(&src[start..start + dst.len()]);
        });
    out
}

fn gather_same<S: Copy>(src: &[S], layout: &Layout) -> Vec<S> {
    if layout.is_contiguous() {
        let start = layout.offset();
        return src[start..start + layout.numel()].to_vec();
    }
    let mut out = Vec::with_capacity(layout.numel());
    layout.for_each_run(|start, len, stride| match stride {
        1 => out.extend(src[start..start + len].iter().copied()),
        _ => out.extend((0..len).map(|i| src[start + i * stride])),
    });
    out
}

impl CpuStorage {
    pub fn dtype(&self) -> DType {
        match self {
            CpuStorage::F64(_) => DType::F64,
            CpuStorage::F32(_) => DType::F32,
            CpuStorage::F16(_) => DType::F16,
            CpuStorage::BF16(_) => DType::BF16,
            CpuStorage::I64(_) => DType::I64,
            CpuStorage::I32(_) => DType::I32,
            CpuStorage::U8(_) => DType::U8,
            CpuStorage::Mapped(m) => m.dtype,
        }
    }

    pub fn len(&self) -> usize {
        each_slice!(self.slice(), s => s.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// True when the bytes are borrowed from a memory map (zero-copy).
    pub fn is_mapped(&self) -> bool {
        matches!(self, CpuStorage::Mapped(_))
    }

    pub fn slice(&self) -> CpuSlice<'_> {
        match self {
            CpuStorage::F64(v) => CpuSlice::F64(v),
            CpuStorage::F32(v) => CpuSlice::F32(v),
            CpuStorage::F16(v) => CpuSlice::F16(v),
            CpuStorage::BF16(v) => CpuSlice::BF16(v),
            CpuStorage::I64(v) => CpuSlice::I64(v),
            CpuStorage::I32(v) => CpuSlice::I32(v),
            CpuStorage::U8(v) => CpuSlice::U8(v),
            // Alignment and length were checked in `MappedBytes::new`.
            CpuStorage::Mapped(m) => {
                let b = m.bytes();
                match m.dtype {
                    DType::F64 => CpuSlice::F64(bytemuck::cast_slice(b)),
                    DType::F32 => CpuSlice::F32(bytemuck::cast_slice(b)),
                    DType::F16 => CpuSlice::F16(bytemuck::cast_slice(b)),
                    DType::BF16 => CpuSlice::BF16(bytemuck::cast_slice(b)),
                    DType::I64 => CpuSlice::I64(bytemuck::cast_slice(b)),
                    DType::I32 => CpuSlice::I32(bytemuck::cast_slice(b)),
                    DType::U8 => CpuSlice::U8(b),
                }
            }
        }
    }

    /// The view's elements in row-major order as `T`: borrowed when the storage
    /// already holds `T` contiguously, converted otherwise.
    pub fn values<T: Real>(&self, layout: &Layout) -> Cow<'_, [T]> {
        let slice = self.slice();
        if layout.is_contiguous() {
            let (start, n) = (layout.offset(), layout.numel());
            let borrowed: Option<&[T]> = match slice {
                CpuSlice::F32(s) if T::DTYPE == DType::F32 => {
                    Some(bytemuck::cast_slice(&s[start..start + n]))
                }
                CpuSlice::F64(s) if T::DTYPE == DType::F64 => {
                    Some(bytemuck::cast_slice(&s[start..start + n]))
                }
                _ => None,
            };
            if let Some(b) = borrowed {
                return Cow::Borrowed(b);
            }
            if T::DTYPE == DType::F32 {
                let converted = match slice {
                    CpuSlice::F16(s) => Some(half_to_f32(&s[start..start + n])),
                    CpuSlice::BF16(s) => Some(half_to_f32(&s[start..start + n])),
                    _ => None,
                };
                if let Some(v) = converted {
                    return Cow::Owned(bytemuck::allocation::cast_vec(v));
                }
            }
        }
        Cow::Owned(each_slice!(slice, s => convert_slice::<_, T>(s, layout)))
    }

    /// The view's elements as i64 (for ids and class targets).
    pub fn values_i64(&self, layout: &Layout) -> Vec<i64> {
        match self.slice() {
            CpuSlice::I64(s) => gather_same(s, layout),
            CpuSlice::I32(s) => gather_same(s, layout).into_iter().map(i64::from).collect(),
            CpuSlice::U8(s) => gather_same(s, layout).into_iter().map(i64::from).collect(),
            other => each_slice!(other, s => convert_slice::<_, f64>(s, layout))
                .into_iter()
                .map(|v| v as i64)
                .collect(),
        }
    }

    /// Copy the view into new contiguous storage of the same dtype.
    pub fn gather(&self, layout: &Layout) -> CpuStorage {
        match self.slice() {
            CpuSlice::F64(s) => CpuStorage::F64(gather_same(s, layout)),
            CpuSlice::F32(s) => CpuStorage::F32(gather_same(s, layout)),
            CpuSlice::F16(s) => CpuStorage::F16(gather_same(s, layout)),
            CpuSlice::BF16(s) => CpuStorage::BF16(gather_same(s, layout)),
            CpuSlice::I64(s) => CpuStorage::I64(gather_same(s, layout)),
            CpuSlice::I32(s) => CpuStorage::I32(gather_same(s, layout)),
            CpuSlice::U8(s) => CpuStorage::U8(gather_same(s, layout)),
        }
    }

    /// Store computed values as `dtype` (rounding to half precision where asked).
    pub fn from_real<T: Real>(values: Vec<T>, dtype: DType) -> CpuStorage {
        if dtype == T::DTYPE {
            return match dtype {
                DType::F32 => CpuStorage::F32(bytemuck::allocation::cast_vec(values)),
                _ => CpuStorage::F64(bytemuck::allocation::cast_vec(values)),
            };
        }
        if T::DTYPE == DType::F32 && dtype.is_half() {
            let v: Vec<f32> = bytemuck::allocation::cast_vec(values);
            return match dtype {
                DType::F16 => CpuStorage::F16(f32_to_half(&v)),
                _ => CpuStorage::BF16(f32_to_half(&v)),
            };
        }
        let it = values.iter().map(|v| v.as_f64());
        match dtype {
            DType::F64 => CpuStorage::F64(it.collect()),
            DType::F32 => CpuStorage::F32(values.iter().map(|v| v.as_f32()).collect()),
            DType::F16 => {
                CpuStorage::F16(values.iter().map(|v| f16::from_f32(v.as_f32())).collect())
            }
            DType::BF16 => {
                CpuStorage::BF16(values.iter().map(|v| bf16::from_f32(v.as_f32())).collect())
            }
            DType::I64 => CpuStorage::I64(it.map(|v| v as i64).collect()),
            DType::I32 => CpuStorage::I32(it.map(|v| v as i32).collect()),
            DType::U8 => CpuStorage::U8(it.map(|v| v as u8).collect()),
        }
    }

    /// Store integer values as `dtype`.
    pub fn from_i64(values: Vec<i64>, dtype: DType) -> CpuStorage {
        match dtype {
            DType::I64 => CpuStorage::I64(values),
            DType::I32 => CpuStorage::I32(values.into_iter().map(|v| v as i32).collect()),
            DType::U8 => CpuStorage::U8(values.into_iter().map(|v| v as u8).collect()),
            _ => {
                CpuStorage::from_real::<f64>(values.into_iter().map(|v| v as f64).collect(), dtype)
            }
        }
    }

    /// Storage of `dtype` copied from little-endian bytes (a file's unaligned tensor, a device
    /// buffer read back); `bytes.len()` must be a multiple of the element size.
    pub fn from_le_bytes(bytes: &[u8], dtype: DType) -> CpuStorage {
        fn read<T: bytemuck::Pod>(bytes: &[u8]) -> Vec<T> {
            let mut v = vec![T::zeroed(); bytes.len() / std::mem::size_of::<T>()];
            bytemuck::cast_slice_mut::<T, u8>(&mut v).copy_from_slice(bytes);
            v
        }
        match dtype {
            DType::F64 => CpuStorage::F64(read(bytes)),
            DType::F32 => CpuStorage::F32(read(bytes)),
            DType::F16 => CpuStorage::F16(read(bytes)),
            DType::BF16 => CpuStorage::BF16(read(bytes)),
            DType::I64 => CpuStorage::I64(read(bytes)),
            DType::I32 => CpuStorage::I32(read(bytes)),
            DType::U8 => CpuStorage::U8(bytes.to_vec()),
        }
    }

    /// Raw little-endian bytes of the whole storage (for saving).
    pub fn as_bytes(&self) -> &[u8] {
        each_slice!(self.slice(), s => bytemuck::cast_slice(s))
    }
}
