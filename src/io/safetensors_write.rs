//! `save_safetensors`: write tensors in the standard format, atomically (temp file + rename).

use crate::error::{Error, Result};
use crate::tensor::Tensor;
use serde_json::{Map, Value};
use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// Writes `tensors` to `path` as safetensors: an 8-byte little-endian header length,
/// a JSON header (`__metadata__` first, then tensors by name) padded with spaces to a
/// multiple of 8, then the data. Data are ordered by dtype size (largest first), then
/// name, so every tensor starts aligned for its dtype and loads back zero-copy.
///
/// Tensors may be non-contiguous views of any dtype. The file is written to
/// `<path>.tmp-<pid>` and renamed over `path`, so readers never see a partial file
/// and existing memory maps of an old `path` stay valid.
pub fn save_safetensors<N: AsRef<str>>(
    path: impl AsRef<Path>,
    tensors: &[(N, &Tensor)],
    metadata: Option<HashMap<String, String>>,
) -> Result<()> {
    let path = path.as_ref();
    let mut seen = HashSet::new();
    for (name, _) in tensors {
        let name = name.as_ref();
        if name == "__metadata__" {
            return Err(Error::file(
                path,
                "cannot save a tensor named `__metadata__` (reserved by the format)",
            ));
        }
        if !seen.insert(name) {
            return Err(Error::file(path, format!("tensor `{name}` is given twice")));
        }
    }

    // Data order: widest dtype first so each tensor's offset is a multiple of its size.
    let mut order: Vec<usize> = (0..tensors.len()).collect();
    order.sort_by(|&a, &b| {
        let (na, ta) = (tensors[a].0.as_ref(), tensors[a].1);
        let (nb, tb) = (tensors[b].0.as_ref(), tensors[b].1);
        tb.dtype()
            .size_in_bytes()
            .cmp(&ta.dtype().size_in_bytes())
            .then(na.cmp(nb))
    });
    let mut offsets = vec![(0usize, 0usize); tensors.len()];
    let mut pos = 0usize;
    for &i in &order {
        let t = tensors[i].1;
        let len = t.numel() * t.dtype().size_in_bytes();
        offsets[i] = (pos, pos + len);
        pos += len;
    }

    let header = header_bytes(tensors, &offsets, metadata)?;
    let tmp = tmp_path(path);
    let written = write_file(&tmp, &header, tensors, &order);
    let result = written.and_then(|()| {
        fs::rename(&tmp, path).map_err(|e| {
            Error::file(
                path,
                format!("cannot move {} into place: {e}", tmp.display()),
            )
        })
    });
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Named tensors as a checkpoint file the way transformers' and diffusers'
/// `save_pretrained` writes one (metadata `{"format": "pt"}`), atomically.
pub fn save_pretrained_weights(path: impl AsRef<Path>, named: &[(String, Tensor)]) -> Result<()> {
    let refs: Vec<(&str, &Tensor)> = named.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let meta = [("format".to_string(), "pt".to_string())]
        .into_iter()
        .collect();
    save_safetensors(path, &refs, Some(meta))
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(format!(".tmp-{}", std::process::id()));
    path.with_file_name(name)
}

/// The JSON header, space-padded to a multiple of 8 bytes.
fn header_bytes<N: AsRef<str>>(
    tensors: &[(N, &Tensor)],
    offsets: &[(usize, usize)],
    metadata: Option<HashMap<String, String>>,
) -> Result<Vec<u8>> {
    let mut map = Map::new();
    if let Some(meta) = metadata {
        let mut entries: Vec<(String, String)> = meta.into_iter().collect();
        entries.sort();
        let meta: Map<String, Value> = entries
            .into_iter()
            .map(|(k, v)| (k, Value::String(v)))
            .collect();
        map.insert("__metadata__".to_string(), Value::Object(meta));
    }
    let mut by_name: Vec<usize> = (0..tensors.len()).collect();
    by_name.sort_by(|&a, &b| tensors[a].0.as_ref().cmp(tensors[b].0.as_ref()));
    for i in by_name {
        let (name, t) = (&tensors[i].0, tensors[i].1);
        let mut entry = Map::new();
        entry.insert("dtype".into(), Value::from(t.dtype().safetensors_name()));
        entry.insert("shape".into(), Value::from(t.shape().to_vec()));
        entry.insert(
            "data_offsets".into(),
            Value::from(vec![offsets[i].0, offsets[i].1]),
        );
        map.insert(name.as_ref().to_string(), Value::Object(entry));
    }
    let mut bytes = serde_json::to_vec(&Value::Object(map))
        .map_err(|e| Error::msg(format!("cannot encode header: {e}")))?;
    bytes.resize(bytes.len().div_ceil(8) * 8, b' ');
    Ok(bytes)
}

fn write_file<N: AsRef<str>>(
    tmp: &Path,
    header: &[u8],
    tensors: &[(N, &Tensor)],
    order: &[usize],
) -> Result<()> {
    let io_err = |e: std::io::Error| Error::file(tmp, format!("cannot write: {e}"));
    let file = File::create(tmp).map_err(|e| Error::file(tmp, format!("cannot create: {e}")))?;
    let mut w = BufWriter::with_capacity(1 << 20, file);
    w.write_all(&(header.len() as u64).to_le_bytes())
        .map_err(io_err)?;
    w.write_all(header).map_err(io_err)?;
    for &i in order {
        let t = tensors[i].1;
        let storage = t.storage();
        let cpu = storage.cpu();
        let size = t.dtype().size_in_bytes();
        if t.is_contiguous() {
            let start = t.layout().offset() * size;
            w.write_all(&cpu.as_bytes()[start..start + t.numel() * size])
                .map_err(io_err)?;
        } else {
            w.write_all(cpu.gather(t.layout()).as_bytes())
                .map_err(io_err)?;
        }
    }
    let file = w.into_inner().map_err(|e| io_err(e.into_error()))?;
    file.sync_all().map_err(io_err)?;
    Ok(())
}
