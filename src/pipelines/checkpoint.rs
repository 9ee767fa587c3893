//! Training checkpoints (generator fine-tuning, pre-training, fine-tuning):
//! `checkpoints/step-NNNNNNNN/` holding named tensor groups (trained weights by their
//! PyTorch names, optimizer and EMA state) and `trainer_state.json`; written into a
//! temporary folder and renamed when complete.

use crate::error::{Error, Result};
use crate::io::{save_safetensors, TensorSet};
use crate::tensor::Tensor;
use serde_json::Value;
use std::path::{Path, PathBuf};

pub fn checkpoints_dir(out: &Path) -> PathBuf {
    out.join("checkpoints")
}

/// `(step, folder)` of every `step-N` folder under `dir` (complete or not).
fn step_dirs(dir: &Path) -> Vec<(u64, PathBuf)> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            Some((name.strip_prefix("step-")?.parse::<u64>().ok()?, e.path()))
        })
        .collect()
}

/// The newest complete checkpoint folder under `out/checkpoints`, with its step.
pub fn latest(out: &Path) -> Option<(u64, PathBuf)> {
    step_dirs(&checkpoints_dir(out))
        .into_iter()
        .filter(|(_, p)| p.join("trainer_state.json").is_file())
        .max_by_key(|(s, _)| *s)
}

/// Named tensor groups to write, each into `<group>.safetensors`.
pub struct CheckpointParts {
    pub groups: Vec<(String, Vec<(String, Tensor)>)>,
    pub state: Value,
}

/// Writes a checkpoint atomically (folder `step-N.tmp` renamed to `step-N`) and
/// keeps at most `keep` of them (oldest removed).
pub fn save(out: &Path, step: u64, parts: &CheckpointParts, keep: usize) -> Result<PathBuf> {
    let dir = checkpoints_dir(out);
    let final_dir = dir.join(format!("step-{step:08}"));
    let tmp = dir.join(format!("step-{step:08}.tmp"));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| Error::file(&tmp, format!("cannot create: {e}")))?;
    for (name, tensors) in &parts.groups {
        let refs: Vec<(&str, &Tensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
        save_safetensors(tmp.join(format!("{name}.safetensors")), &refs, None)?;
    }
    let state =
        serde_json::to_string_pretty(&parts.state).map_err(|e| Error::msg(e.to_string()))?;
    std::fs::write(tmp.join("trainer_state.json"), state)
        .map_err(|e| Error::file(&tmp, format!("cannot write trainer_state.json: {e}")))?;
    let _ = std::fs::remove_dir_all(&final_dir);
    std::fs::rename(&tmp, &final_dir)
        .map_err(|e| Error::file(&final_dir, format!("cannot rename checkpoint: {e}")))?;
    prune(&dir, keep);
    Ok(final_dir)
}

fn prune(dir: &Path, keep: usize) {
    let mut steps = step_dirs(dir);
    steps.sort();
    let n = steps.len();
    for (_, p) in steps.into_iter().take(n.saturating_sub(keep.max(1))) {
        let _ = std::fs::remove_dir_all(p);
    }
}

/// All tensors of `<dir>/<group>.safetensors`, in file order.
pub fn load_group(dir: &Path, group: &str) -> Result<Vec<(String, Tensor)>> {
    let set = TensorSet::open(dir.join(format!("{group}.safetensors")))?;
    set.names()
        .iter()
        .map(|n| Ok((n.clone(), set.load(n)?)))
        .collect()
}

/// `trainer_state.json` of a checkpoint.
pub fn load_state(dir: &Path) -> Result<Value> {
    let path = dir.join("trainer_state.json");
    let text = std::fs::read_to_string(&path).map_err(|e| Error::file(&path, e))?;
    serde_json::from_str(&text).map_err(|e| Error::file(&path, format!("invalid JSON: {e}")))
}
