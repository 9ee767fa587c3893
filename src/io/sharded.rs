//! `TensorSet`: one safetensors file, a sharded set (`*.safetensors.index.json`), or a model folder.

use super::safetensors_read::suggest;
use super::{TensorFile, TensorInfo};
use crate::error::{Error, Result};
use crate::tensor::{DType, Tensor};
use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// File names looked for, in order, when a folder is opened.
const DIR_CANDIDATES: [&str; 4] = [
    "model.safetensors",
    "diffusion_pytorch_model.safetensors",
    "model.safetensors.index.json",
    "diffusion_pytorch_model.safetensors.index.json",
];

/// Extensions of pickled (torch.save) checkpoints, which medsyn does not read.
const PICKLE_EXTS: [&str; 4] = ["bin", "ckpt", "pt", "pth"];

/// Tensors from a single file or from shards listed in an index; shards are opened
/// (header only) the first time one of their tensors is asked for.
pub struct TensorSet {
    path: PathBuf,
    kind: Kind,
}

enum Kind {
    Single(TensorFile),
    Sharded {
        /// Tensor name -> shard number.
        weight_map: HashMap<String, usize>,
        names: Vec<String>,
        shards: Vec<Shard>,
        metadata: Value,
    },
}

struct Shard {
    path: PathBuf,
    file: OnceLock<TensorFile>,
}

impl TensorSet {
    /// Opens a `.safetensors` file, a `*.safetensors.index.json`, or a folder holding
    /// `model.safetensors`, `diffusion_pytorch_model.safetensors`, an index of either,
    /// or exactly one other `.safetensors` file / index.
    pub fn open(path: impl AsRef<Path>) -> Result<TensorSet> {
        let path = path.as_ref();
        let meta =
            std::fs::metadata(path).map_err(|e| Error::file(path, format!("cannot open: {e}")))?;
        if meta.is_dir() {
            let resolved = resolve_dir(path)?;
            return TensorSet::open(resolved);
        }
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.ends_with(".json") {
            return open_index(path);
        }
        if is_pickle(path) {
            return Err(Error::file(
                path,
                format!("pickled weights are not supported. {}", pickle_hint(path)),
            ));
        }
        Ok(TensorSet {
            path: path.to_path_buf(),
            kind: Kind::Single(TensorFile::open(path)?),
        })
    }

    /// The resolved file: the `.safetensors` file or the index json.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// True for a set read through an index json.
    pub fn is_sharded(&self) -> bool {
        matches!(self.kind, Kind::Sharded { .. })
    }

    /// The weight files: the single file, or every shard (sorted by file name).
    pub fn files(&self) -> Vec<&Path> {
        match &self.kind {
            Kind::Single(f) => vec![f.path()],
            Kind::Sharded { shards, .. } => shards.iter().map(|s| s.path.as_path()).collect(),
        }
    }

    /// Tensor names, sorted.
    pub fn names(&self) -> &[String] {
        match &self.kind {
            Kind::Single(f) => f.names(),
            Kind::Sharded { names, .. } => names,
        }
    }

    pub fn len(&self) -> usize {
        self.names().len()
    }

    pub fn is_empty(&self) -> bool {
        self.names().is_empty()
    }

    pub fn contains(&self, name: &str) -> bool {
        match &self.kind {
            Kind::Single(f) => f.contains(name),
            Kind::Sharded { weight_map, .. } => weight_map.contains_key(name),
        }
    }

    /// For an index, its `metadata` object (null when absent); for a single file, its
    /// `__metadata__` as a JSON object of strings.
    pub fn metadata(&self) -> Value {
        match &self.kind {
            Kind::Single(f) => Value::Object(
                f.metadata()
                    .iter()
                    .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                    .collect(),
            ),
            Kind::Sharded { metadata, .. } => metadata.clone(),
        }
    }

    /// The file holding `name` (opening its shard's header if needed).
    pub fn file_for(&self, name: &str) -> Result<&TensorFile> {
        match &self.kind {
            Kind::Single(f) => {
                f.info(name)?;
                Ok(f)
            }
            Kind::Sharded {
                weight_map,
                names,
                shards,
                ..
            } => {
                let Some(&i) = weight_map.get(name) else {
                    let files: Vec<String> = shards.iter().map(|s| file_name(&s.path)).collect();
                    return Err(Error::file(
                        &self.path,
                        format!(
                            "no tensor `{name}` in the weight_map of {} tensors (shards: {}){}",
                            names.len(),
                            files.join(", "),
                            suggest(name, names)
                        ),
                    ));
                };
                let shard = &shards[i];
                let file = match shard.file.get() {
                    Some(f) => f,
                    None => {
                        let f = TensorFile::open(&shard.path).map_err(|e| {
                            e.context(format!("shard listed in {}", self.path.display()))
                        })?;
                        shard.file.get_or_init(|| f)
                    }
                };
                if !file.contains(name) {
                    return Err(Error::file(
                        file.path(),
                        format!(
                            "no tensor `{name}`, although {} maps it to this shard",
                            self.path.display()
                        ),
                    ));
                }
                Ok(file)
            }
        }
    }

    /// The header entry of `name` (dtype, shape, byte size).
    pub fn info(&self, name: &str) -> Result<&TensorInfo> {
        self.file_for(name)?.info(name)
    }

    /// Loads `name` in its stored dtype (zero-copy when aligned).
    pub fn load(&self, name: &str) -> Result<Tensor> {
        self.file_for(name)?.load(name)
    }

    /// Loads `name` converted to `dtype` (float↔float, int↔int).
    pub fn load_as(&self, name: &str, dtype: DType) -> Result<Tensor> {
        self.file_for(name)?.load_as(name, dtype)
    }

    /// Loads `name` as `dtype`, failing unless its shape is exactly `shape`.
    pub fn load_expect(&self, name: &str, shape: &[usize], dtype: DType) -> Result<Tensor> {
        self.file_for(name)?.load_expect(name, shape, dtype)
    }
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| p.display().to_string())
}

fn is_pickle(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| PICKLE_EXTS.contains(&e.to_ascii_lowercase().as_str()))
}

/// The pickled checkpoints (`.bin`, `.ckpt`, `.pt`, `.pth`) directly inside `dir`, sorted.
pub fn find_pickled_weights(dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file() && is_pickle(p))
        .collect();
    found.sort();
    found
}

/// How to convert a pickled checkpoint to safetensors, as one line of Python.
pub fn pickle_hint(file: &Path) -> String {
    let src = file.display().to_string();
    let dst = file.with_extension("safetensors").display().to_string();
    format!(
        "Convert it to safetensors first (loading a pickle runs arbitrary code; only do this for files you trust):\n  \
         python -c \"import torch; from safetensors.torch import save_file; \
         sd = torch.load('{src}', map_location='cpu'); sd = sd.get('state_dict', sd); \
         save_file({{k: v.contiguous() for k, v in sd.items()}}, '{dst}')\""
    )
}

/// Picks the weight file of a model folder.
fn resolve_dir(dir: &Path) -> Result<PathBuf> {
    for name in DIR_CANDIDATES {
        let p = dir.join(name);
        if p.is_file() {
            return Ok(p);
        }
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::file(dir, format!("cannot list folder: {e}")))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    entries.sort();
    let named = |suffix: &str| -> Vec<&PathBuf> {
        entries
            .iter()
            .filter(|p| file_name(p).ends_with(suffix))
            .collect()
    };
    for suffix in [".safetensors.index.json", ".safetensors"] {
        let found = named(suffix);
        match found.len() {
            0 => continue,
            1 => return Ok(found[0].clone()),
            _ => {
                let list: Vec<String> = found.iter().map(|p| file_name(p)).collect();
                return Err(Error::file(
                    dir,
                    format!(
                        "holds several weight files ({}); pass the one to use",
                        list.join(", ")
                    ),
                ));
            }
        }
    }
    let pickles = find_pickled_weights(dir);
    if let Some(first) = pickles.first() {
        let list: Vec<String> = pickles.iter().map(|p| file_name(p)).collect();
        return Err(Error::file(
            dir,
            format!(
                "holds only pickled weights ({}), which are not supported. {}",
                list.join(", "),
                pickle_hint(first)
            ),
        ));
    }
    Err(Error::file(
        dir,
        "no .safetensors weights (or *.safetensors.index.json) in this folder",
    ))
}

/// Reads an index json: `{"metadata": {...}, "weight_map": {tensor: shard file}}`.
fn open_index(path: &Path) -> Result<TensorSet> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::file(path, format!("cannot read: {e}")))?;
    let value: Value = serde_json::from_str(&text)
        .map_err(|e| Error::file(path, format!("index is not valid JSON: {e}")))?;
    let Value::Object(mut root) = value else {
        return Err(Error::file(
            path,
            "index must be a JSON object with a `weight_map`",
        ));
    };
    let metadata = root.remove("metadata").unwrap_or(Value::Null);
    let Some(Value::Object(map)) = root.remove("weight_map") else {
        return Err(Error::file(
            path,
            "index has no `weight_map` object (tensor name -> shard file)",
        ));
    };
    let dir = path.parent().unwrap_or(Path::new(""));
    let mut pairs = Vec::with_capacity(map.len());
    for (tensor, shard) in map {
        let Value::String(shard) = shard else {
            return Err(Error::file(
                path,
                format!("weight_map entry `{tensor}` must name a shard file, found {shard}"),
            ));
        };
        pairs.push((tensor, shard));
    }
    let mut shard_names: Vec<&String> = pairs.iter().map(|(_, s)| s).collect();
    shard_names.sort();
    shard_names.dedup();
    let mut shards = Vec::with_capacity(shard_names.len());
    for shard in &shard_names {
        let shard_path = dir.join(shard);
        if !shard_path.is_file() {
            let tensor = pairs
                .iter()
                .find(|(_, s)| s == *shard)
                .map_or("?", |(t, _)| t.as_str());
            return Err(Error::file(
                path,
                format!(
                    "shard `{shard}` (holding `{tensor}`) not found at {}",
                    shard_path.display()
                ),
            ));
        }
        shards.push(Shard {
            path: shard_path,
            file: OnceLock::new(),
        });
    }
    let shard_index: HashMap<&String, usize> = shard_names
        .iter()
        .enumerate()
        .map(|(i, s)| (*s, i))
        .collect();
    let weight_map: HashMap<String, usize> = pairs
        .iter()
        .map(|(t, s)| (t.clone(), shard_index[s]))
        .collect();
    let mut names: Vec<String> = weight_map.keys().cloned().collect();
    names.sort();
    Ok(TensorSet {
        path: path.to_path_buf(),
        kind: Kind::Sharded {
            weight_map,
            names,
            shards,
            metadata,
        },
    })
}
