//! Weights on disk: safetensors files read lazily through memory maps, sharded sets, and saving.
//!
//! - [`TensorFile`]: one `.safetensors` file; tensors load zero-copy when aligned.
//! - [`TensorSet`]: a single file, a `*.safetensors.index.json` sharded set, or a model folder.
//! - [`save_safetensors`]: atomic write in the standard format.
//!
//! Dtype rules for [`TensorFile::load_as`] / [`TensorFile::load_expect`]: floats convert
//! to floats and integers to integers (checking the values fit); crossing between the
//! two is refused, since it almost always means the wrong tensor was asked for.

mod header;
mod safetensors_read;
mod safetensors_write;
mod sharded;

pub use header::MAX_HEADER_BYTES;
pub use safetensors::Dtype as FileDType;
pub use safetensors_read::TensorFile;
pub use safetensors_write::{save_pretrained_weights, save_safetensors};
pub use sharded::{find_pickled_weights, pickle_hint, TensorSet};

use crate::error::{Error, Result};
use crate::tensor::{DType, Tensor};
use std::path::Path;

/// What the header says about one tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    /// The dtype as stored in the file (may be one medsyn cannot load, e.g. F8_E4M3).
    pub file_dtype: FileDType,
    pub shape: Vec<usize>,
    /// Size of the tensor's data in bytes.
    pub byte_len: usize,
    /// Offset of the data within the data section.
    pub(crate) begin: usize,
    /// Absolute offset of the data within the file.
    pub(crate) start: usize,
}

impl TensorInfo {
    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// The medsyn dtype this tensor loads as (BOOL loads as U8), or `None` when the
    /// file dtype is not supported.
    pub fn dtype(&self) -> Option<DType> {
        Some(match self.file_dtype {
            FileDType::F64 => DType::F64,
            FileDType::F32 => DType::F32,
            FileDType::F16 => DType::F16,
            FileDType::BF16 => DType::BF16,
            FileDType::I64 => DType::I64,
            FileDType::I32 => DType::I32,
            FileDType::U8 | FileDType::BOOL => DType::U8,
            _ => return None,
        })
    }

    /// The file dtype's name as written in the header ("F32", "BF16", "F8_E4M3", ...).
    pub fn file_dtype_name(&self) -> String {
        format!("{:?}", self.file_dtype)
    }
}

/// Converts a freshly loaded `t` (tensor `name` of file `path`) to `dtype`, following
/// the module's dtype rules.
pub(crate) fn convert(path: &Path, name: &str, t: Tensor, dtype: DType) -> Result<Tensor> {
    let from = t.dtype();
    if from == dtype {
        return Ok(t);
    }
    if from.is_float() != dtype.is_float() {
        return Err(Error::file(
            path,
            format!(
                "tensor `{name}` is {} in the file and cannot be loaded as {dtype} (float and integer tensors do not convert)",
                from
            ),
        ));
    }
    if !dtype.is_float() && dtype.size_in_bytes() < from.size_in_bytes() {
        let (lo, hi) = match dtype {
            DType::I32 => (i32::MIN as i64, i32::MAX as i64),
            _ => (u8::MIN as i64, u8::MAX as i64),
        };
        if let Some(v) = t.to_vec_i64().into_iter().find(|v| *v < lo || *v > hi) {
            return Err(Error::file(
                path,
                format!("tensor `{name}` holds the value {v}, which does not fit in {dtype}"),
            ));
        }
    }
    t.to_dtype(dtype)
        .map_err(|e| e.context(format!("{}: tensor `{name}`", path.display())))
}
