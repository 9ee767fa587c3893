//! Tensors: a shared storage cell viewed through a layout, with an optional
//! autograd node. Cloning a `Tensor` is cheap (an `Arc`).

mod create;
#[cfg(feature = "cuda")]
mod cuda_storage;
mod device;
mod dtype;
mod layout;
mod random;
mod real;
mod storage;

#[cfg(feature = "cuda")]
pub use cuda_storage::CudaStorage;
pub use device::Device;
pub use dtype::DType;
pub use layout::{broadcast_shapes, contiguous_strides, resolve_dim, scatter_into, Layout};
pub use num_traits;
pub use random::Philox;
pub use real::Real;
pub use storage::{CpuSlice, CpuStorage, MappedBytes, Storage};

use crate::autograd::Node;
use crate::bail;
use crate::error::Result;
use std::borrow::Cow;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

/// Unique identity of a tensor (not of its storage).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TensorId(u64);

impl TensorId {
    fn fresh() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        TensorId(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

/// Storage shared between a tensor and its views. The optimizer swaps the inner
/// `Arc` to update a parameter in place; readers take a cheap snapshot.
pub struct StorageCell(RwLock<Arc<Storage>>);

impl StorageCell {
    fn new(storage: Storage) -> Arc<Self> {
        Arc::new(StorageCell(RwLock::new(Arc::new(storage))))
    }
    fn snapshot(&self) -> Arc<Storage> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
    fn device(&self) -> Device {
        self.0.read().unwrap_or_else(|e| e.into_inner()).device()
    }
    fn replace(&self, storage: Storage) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(storage);
    }
}

pub(crate) struct TensorImpl {
    id: TensorId,
    storage: Arc<StorageCell>,
    layout: Layout,
    dtype: DType,
    /// How this tensor was computed, when gradients flow through it.
    node: Option<Node>,
    /// For leaves: whether gradients are computed and accumulated into `grad`.
    requires_grad: AtomicBool,
    grad: Mutex<Option<Tensor>>,
}

#[derive(Clone)]
pub struct Tensor(Arc<TensorImpl>);

impl Tensor {
    /// A new leaf tensor (no autograd history) owning `storage`.
    pub fn from_storage(storage: Storage, layout: Layout) -> Result<Tensor> {
        if layout.storage_extent() > storage.len() {
            bail!(
                "layout {:?} (strides {:?}, offset {}) reaches past storage of {} elements",
                layout.shape(),
                layout.strides(),
                layout.offset(),
                storage.len()
            );
        }
        let dtype = storage.dtype();
        Ok(Tensor::from_parts(
            StorageCell::new(storage),
            layout,
            dtype,
            None,
        ))
    }

    pub(crate) fn from_parts(
        storage: Arc<StorageCell>,
        layout: Layout,
        dtype: DType,
        node: Option<Node>,
    ) -> Tensor {
        let requires_grad = node.is_some();
        Tensor(Arc::new(TensorImpl {
            id: TensorId::fresh(),
            storage,
            layout,
            dtype,
            node,
            requires_grad: AtomicBool::new(requires_grad),
            grad: Mutex::new(None),
        }))
    }

    /// A tensor sharing this one's storage with a different layout (a view).
    pub(crate) fn view_with(&self, layout: Layout, node: Option<Node>) -> Tensor {
        Tensor::from_parts(self.0.storage.clone(), layout, self.0.dtype, node)
    }

    pub fn id(&self) -> TensorId {
        self.0.id
    }
    pub fn shape(&self) -> &[usize] {
        self.0.layout.shape()
    }
    pub fn dims(&self) -> &[usize] {
        self.shape()
    }
    pub fn rank(&self) -> usize {
        self.0.layout.rank()
    }
    pub fn numel(&self) -> usize {
        self.0.layout.numel()
    }
    pub fn layout(&self) -> &Layout {
        &self.0.layout
    }
    pub fn dtype(&self) -> DType {
        self.0.dtype
    }
    /// Where the storage lives (a parameter moved with `move_to` reports its new device).
    pub fn device(&self) -> Device {
        self.0.storage.device()
    }
    pub fn is_contiguous(&self) -> bool {
        self.0.layout.is_contiguous()
    }

    /// Size of dimension `dim` (negative counts from the end).
    pub fn dim(&self, dim: isize) -> Result<usize> {
        Ok(self.shape()[resolve_dim(dim, self.rank())?])
    }

    /// A snapshot of the storage (cheap; later parameter updates do not affect it).
    pub fn storage(&self) -> Arc<Storage> {
        self.0.storage.snapshot()
    }

    /// True when this tensor shares storage with `other`.
    pub fn same_storage(&self, other: &Tensor) -> bool {
        Arc::ptr_eq(&self.0.storage, &other.0.storage)
    }

    /// True when the CPU bytes are a zero-copy window of a memory-mapped file.
    pub fn is_mapped(&self) -> bool {
        match &*self.storage() {
            Storage::Cpu(s) => s.is_mapped(),
            #[cfg(feature = "cuda")]
            Storage::Cuda(_) => false,
        }
    }

    /// Elements in row-major order as the compute type `T` (a copy).
    pub fn to_vec<T: Real>(&self) -> Vec<T> {
        self.with_values::<T, _>(|v| v.to_vec())
    }

    pub fn to_vec_f32(&self) -> Vec<f32> {
        self.to_vec::<f32>()
    }

    pub fn to_vec_f64(&self) -> Vec<f64> {
        self.to_vec::<f64>()
    }

    /// Elements as i64 (ids, class targets).
    pub fn to_vec_i64(&self) -> Vec<i64> {
        self.storage().cpu().values_i64(self.layout())
    }

    /// The single element of a one-element tensor, as f64.
    pub fn to_scalar(&self) -> Result<f64> {
        if self.numel() != 1 {
            bail!("to_scalar on a tensor of shape {:?}", self.shape());
        }
        Ok(self.to_vec_f64()[0])
    }

    /// Run `f` on the elements as `T`, borrowing the storage where possible.
    pub fn with_values<T: Real, R>(&self, f: impl FnOnce(&[T]) -> R) -> R {
        let storage = self.storage();
        let values: Cow<[T]> = storage.cpu().values::<T>(self.layout());
        f(&values)
    }

    // ----- autograd -----

    pub fn requires_grad(&self) -> bool {
        self.0.requires_grad.load(Ordering::Relaxed)
    }

    pub fn is_leaf(&self) -> bool {
        self.0.node.is_none()
    }

    pub(crate) fn node(&self) -> Option<&Node> {
        self.0.node.as_ref()
    }

    /// Mark a leaf as trainable (`true`) or frozen (`false`). Frozen leaves get no
    /// gradient computed or stored. Errors on non-leaf tensors.
    pub fn set_requires_grad(&self, on: bool) -> Result<()> {
        if !self.is_leaf() {
            bail!("set_requires_grad on a non-leaf tensor (use detach() first)");
        }
        if on && !self.dtype().is_float() {
            bail!(
                "only float tensors can require gradients, not {}",
                self.dtype()
            );
        }
        self.0.requires_grad.store(on, Ordering::Relaxed);
        if !on {
            self.clear_grad();
        }
        Ok(())
    }

    /// A leaf that requires grad, sharing this tensor's storage (a trainable parameter).
    pub fn into_param(self) -> Result<Tensor> {
        let t = if self.is_leaf() { self } else { self.detach() };
        t.set_requires_grad(true)?;
        Ok(t)
    }

    /// The accumulated gradient of a leaf (f32 for half leaves, else the leaf's dtype).
    pub fn grad(&self) -> Option<Tensor> {
        self.0
            .grad
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn clear_grad(&self) {
        *self.0.grad.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    pub(crate) fn set_grad(&self, g: Option<Tensor>) {
        *self.0.grad.lock().unwrap_or_else(|e| e.into_inner()) = g;
    }

    /// Same storage and layout, cut from the graph (a leaf that does not require grad).
    pub fn detach(&self) -> Tensor {
        self.view_with(self.0.layout.clone(), None)
    }

    /// Replace this tensor's values in place (same shape; converted to its dtype).
    /// Used by optimizers; views of this tensor see the new values.
    pub fn set_data(&self, values: &Tensor) -> Result<()> {
        if values.shape() != self.shape() {
            bail!(
                "set_data: shape {:?} does not match {:?}",
                values.shape(),
                self.shape()
            );
        }
        if !self.is_contiguous()
            || self.layout().offset() != 0
            || self.storage().len() != self.numel()
        {
            bail!("set_data needs a tensor that owns its whole storage contiguously");
        }
        let storage = crate::with_real!(self.dtype(), T => {
            if self.dtype().is_float() {
                CpuStorage::from_real::<T>(values.to_vec::<T>(), self.dtype())
            } else {
                CpuStorage::from_i64(values.to_vec_i64(), self.dtype())
            }
        });
        let storage = crate::ops::device::place(Storage::Cpu(storage), self.device())?;
        self.0.storage.replace(storage);
        Ok(())
    }
}

impl Tensor {
    /// Moves this tensor's storage to `device` in place (as PyTorch's `module.to(device)` does
    /// for parameters): the tensor and every view of it then live there. Needs a tensor that
    /// owns its whole storage contiguously (parameters do).
    pub fn move_to(&self, device: Device) -> Result<()> {
        if self.device() == device {
            return Ok(());
        }
        if !self.is_contiguous()
            || self.layout().offset() != 0
            || self.storage().len() != self.numel()
        {
            bail!("move_to needs a tensor that owns its whole storage contiguously");
        }
        let storage = crate::ops::device::place_copy(&self.storage(), device)?;
        self.0.storage.replace(storage);
        Ok(())
    }

    /// Replace this tensor's storage with `storage` (same dtype, exactly its element count,
    /// any device): how a device optimizer installs updated values it computed into fresh
    /// memory. Views of this tensor see the new values. Same conditions as `set_data`.
    pub fn replace_storage(&self, storage: Storage) -> Result<()> {
        if !self.is_contiguous()
            || self.layout().offset() != 0
            || self.storage().len() != self.numel()
        {
            bail!("replace_storage needs a tensor that owns its whole storage contiguously");
        }
        if storage.len() != self.numel() || storage.dtype() != self.dtype() {
            bail!(
                "replace_storage: {} elements of {} for a {} tensor of {} elements",
                storage.len(),
                storage.dtype(),
                self.dtype(),
                self.numel()
            );
        }
        if storage.device() != self.device() {
            bail!(
                "replace_storage: storage on {} for a tensor on {}",
                storage.device(),
                self.device()
            );
        }
        self.0.storage.replace(storage);
        Ok(())
    }
}

impl fmt::Debug for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Tensor(shape={:?}, dtype={}, device={}",
            self.shape(),
            self.dtype(),
            self.device()
        )?;
        if self.numel() <= 16 {
            write!(f, ", values={:?}", self.to_vec_f64())?;
        }
        if self.requires_grad() {
            write!(f, ", requires_grad")?;
        }
        write!(f, ")")
    }
}
