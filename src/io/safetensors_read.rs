//! `TensorFile`: one memory-mapped `.safetensors` file with lazy, zero-copy tensor loading.

use super::{convert, header, TensorInfo};
use crate::error::{Error, Result};
use crate::tensor::{CpuStorage, DType, Layout, MappedBytes, Storage, Tensor};
use memmap2::Mmap;
use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// An open safetensors file. Only the header is parsed on open; each `load` builds a
/// tensor over the mapped bytes (no copy when the data is aligned for its dtype).
///
/// The file must not be modified in place while mapped; [`super::save_safetensors`]
/// replaces files by renaming, which leaves existing maps valid.
pub struct TensorFile {
    path: PathBuf,
    map: Arc<Mmap>,
    tensors: Vec<TensorInfo>,
    names: Vec<String>,
    index: HashMap<String, usize>,
    metadata: HashMap<String, String>,
}

impl TensorFile {
    /// Maps `path` and validates its header (lengths, dtypes, shapes, offsets).
    pub fn open(path: impl AsRef<Path>) -> Result<TensorFile> {
        let path = path.as_ref();
        let file = File::open(path).map_err(|e| Error::file(path, format!("cannot open: {e}")))?;
        let meta = file
            .metadata()
            .map_err(|e| Error::file(path, format!("cannot stat: {e}")))?;
        if meta.is_dir() {
            return Err(Error::file(path, "is a directory, not a .safetensors file"));
        }
        if meta.len() < 8 {
            // Reject before mapping (an empty file cannot be mapped on every platform).
            header::header_len(path, &[], meta.len())?;
        }
        // SAFETY: the map is read-only and the file is not modified while mapped
        // (medsyn replaces files by atomic rename; see the type's docs).
        let map = unsafe { Mmap::map(&file) }
            .map_err(|e| Error::file(path, format!("cannot memory-map: {e}")))?;
        let n = header::header_len(path, &map, map.len() as u64)?;
        let header = header::parse(path, &map[8..8 + n], map.len())?;
        let names: Vec<String> = header.tensors.iter().map(|t| t.name.clone()).collect();
        let index = names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.clone(), i))
            .collect();
        Ok(TensorFile {
            path: path.to_path_buf(),
            map: Arc::new(map),
            tensors: header.tensors,
            names,
            index,
            metadata: header.metadata,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Tensor names, sorted.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Every tensor's header entry, sorted by name.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    pub fn contains(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    /// The `__metadata__` entries of the header (empty when absent).
    pub fn metadata(&self) -> &HashMap<String, String> {
        &self.metadata
    }

    /// The header entry of `name` (dtype, shape, byte size).
    pub fn info(&self, name: &str) -> Result<&TensorInfo> {
        match self.index.get(name) {
            Some(&i) => Ok(&self.tensors[i]),
            None => Err(Error::file(
                &self.path,
                format!(
                    "no tensor `{name}` among its {} tensors{}",
                    self.len(),
                    suggest(name, &self.names)
                ),
            )),
        }
    }

    /// Loads `name` in its stored dtype (BOOL as U8): zero-copy over the map when the
    /// data is aligned for the dtype, copied otherwise.
    pub fn load(&self, name: &str) -> Result<Tensor> {
        let info = self.info(name)?;
        let dtype = info.dtype().ok_or_else(|| {
            Error::file(
                &self.path,
                format!(
                    "tensor `{name}` has dtype {}, which medsyn cannot load (supported: F64, F32, F16, BF16, I64, I32, U8, BOOL)",
                    info.file_dtype_name()
                ),
            )
        })?;
        let storage = match MappedBytes::new(self.map.clone(), info.start, info.byte_len, dtype) {
            Some(m) => CpuStorage::Mapped(m),
            None => {
                CpuStorage::from_le_bytes(&self.map[info.start..info.start + info.byte_len], dtype)
            }
        };
        Tensor::from_storage(Storage::Cpu(storage), Layout::contiguous(&info.shape))
            .map_err(|e| e.context(format!("{}: tensor `{name}`", self.path.display())))
    }

    /// Loads `name` converted to `dtype` (float↔float, int↔int; see the module docs).
    pub fn load_as(&self, name: &str, dtype: DType) -> Result<Tensor> {
        convert(&self.path, name, self.load(name)?, dtype)
    }

    /// Loads `name` as `dtype`, failing unless its shape is exactly `shape`.
    pub fn load_expect(&self, name: &str, shape: &[usize], dtype: DType) -> Result<Tensor> {
        let info = self.info(name)?;
        if info.shape != shape {
            return Err(Error::file(
                &self.path,
                format!(
                    "tensor `{name}` has shape {:?}, expected {shape:?}",
                    info.shape
                ),
            ));
        }
        self.load_as(name, dtype)
    }
}

/// " (closest: `a`, `b`)": up to three names sharing the longest prefix or suffix
/// with `name`, to help spot a prefix mismatch.
pub(crate) fn suggest(name: &str, names: &[String]) -> String {
    let common = |a: &str, b: &str| {
        let p = a.bytes().zip(b.bytes()).take_while(|(x, y)| x == y).count();
        let s = a
            .bytes()
            .rev()
            .zip(b.bytes().rev())
            .take_while(|(x, y)| x == y)
            .count();
        p.max(s)
    };
    let mut scored: Vec<(usize, &String)> = names
        .iter()
        .map(|n| (common(name, n), n))
        .filter(|(s, _)| *s > 0)
        .collect();
    scored.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(b.1)));
    if scored.is_empty() {
        return String::new();
    }
    let list: Vec<String> = scored
        .iter()
        .take(3)
        .map(|(_, n)| format!("`{n}`"))
        .collect();
    format!(" (closest: {})", list.join(", "))
}
