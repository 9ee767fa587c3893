//! Loading and saving a module's state dict by PyTorch names (safetensors).

use super::Module;
use crate::error::{Context, Result};
use crate::io::{save_safetensors, TensorSet};
use std::path::Path;

/// Copy `prefix + name` from `source` into every parameter and buffer of
/// `module` (shapes must match; values convert to each entry's dtype). A
/// missing or mis-shaped tensor is an error naming the file and the tensor.
pub fn load_state_dict(module: &dyn Module, source: &TensorSet, prefix: &str) -> Result<()> {
    for (name, target) in module.state_dict() {
        let full = format!("{prefix}{name}");
        let value = source.load_expect(&full, target.shape(), target.dtype())?;
        target
            .set_data(&value)
            .with_context(|| format!("{}: {full}", source.path().display()))?;
    }
    Ok(())
}

/// Write `module`'s state dict (parameters and buffers) to a safetensors file,
/// atomically, under `prefix + name`.
pub fn save_state_dict(module: &dyn Module, path: &Path, prefix: &str) -> Result<()> {
    let named: Vec<(String, crate::Tensor)> = module
        .state_dict()
        .into_iter()
        .map(|(n, t)| (format!("{prefix}{n}"), t))
        .collect();
    let refs: Vec<(&str, &crate::Tensor)> = named.iter().map(|(n, t)| (n.as_str(), t)).collect();
    save_safetensors(path, &refs, None)
}
