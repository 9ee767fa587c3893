//! Parsing and validating a safetensors header (length prefix + JSON) against the file size.

use super::TensorInfo;
use crate::error::{Error, Result};
use safetensors::Dtype as FileDType;
use serde_json::Value;
use std::collections::HashMap;
use std::path::Path;

/// Headers larger than this are rejected before being read (real ones are a few MB at most).
pub const MAX_HEADER_BYTES: u64 = 100 * 1024 * 1024;

/// The validated contents of a header: tensors sorted by name (with absolute file
/// offsets) and free-form metadata.
pub(crate) struct Header {
    pub tensors: Vec<TensorInfo>,
    pub metadata: HashMap<String, String>,
}

/// Reads the 8-byte little-endian header length from the start of `bytes` and checks
/// it against the file length. Returns the header length.
pub(crate) fn header_len(path: &Path, prefix: &[u8], file_len: u64) -> Result<usize> {
    if file_len < 8 {
        return Err(Error::file(
            path,
            format!(
                "not a safetensors file: {file_len} bytes, shorter than the 8-byte header length"
            ),
        ));
    }
    let mut len_bytes = [0u8; 8];
    len_bytes.copy_from_slice(&prefix[..8]);
    let n = u64::from_le_bytes(len_bytes);
    if n > MAX_HEADER_BYTES {
        return Err(Error::file(
            path,
            format!("not a safetensors file: header length {n} bytes exceeds the {MAX_HEADER_BYTES}-byte limit"),
        ));
    }
    if n > file_len - 8 {
        return Err(Error::file(
            path,
            format!(
                "truncated or not a safetensors file: header length {n} bytes, but only {} bytes follow",
                file_len - 8
            ),
        ));
    }
    Ok(n as usize)
}

/// Parses the JSON header `json` of a file of `file_len` bytes whose header is
/// `json.len()` bytes, validating dtypes, shapes and that the tensors' byte ranges
/// exactly tile the data section.
pub(crate) fn parse(path: &Path, json: &[u8], file_len: usize) -> Result<Header> {
    let data_start = 8 + json.len();
    let data_len = file_len - data_start;
    let text = std::str::from_utf8(json)
        .map_err(|e| Error::file(path, format!("header is not UTF-8: {e}")))?;
    let value: Value = serde_json::from_str(text.trim_end())
        .map_err(|e| Error::file(path, format!("header is not valid JSON: {e}")))?;
    let Value::Object(map) = value else {
        return Err(Error::file(
            path,
            format!("header is JSON but not an object (found {})", kind(&value)),
        ));
    };
    let mut tensors = Vec::with_capacity(map.len());
    let mut metadata = HashMap::new();
    for (name, entry) in map {
        if name == "__metadata__" {
            metadata = parse_metadata(path, &entry)?;
        } else {
            tensors.push(parse_entry(path, name, &entry, data_start)?);
        }
    }
    check_tiling(path, &mut tensors, data_start, data_len)?;
    tensors.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Header { tensors, metadata })
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn parse_metadata(path: &Path, v: &Value) -> Result<HashMap<String, String>> {
    let Value::Object(m) = v else {
        return Err(Error::file(
            path,
            format!("__metadata__ must be an object, found {}", kind(v)),
        ));
    };
    m.iter()
        .map(|(k, v)| match v {
            Value::String(s) => Ok((k.clone(), s.clone())),
            other => Err(Error::file(
                path,
                format!(
                    "__metadata__ value `{k}` must be a string, found {}",
                    kind(other)
                ),
            )),
        })
        .collect()
}

fn parse_entry(path: &Path, name: String, v: &Value, data_start: usize) -> Result<TensorInfo> {
    let bad = |msg: String| Error::file(path, format!("tensor `{name}`: {msg}"));
    let Value::Object(m) = v else {
        return Err(bad(format!(
            "header entry must be an object, found {}",
            kind(v)
        )));
    };
    let dtype_name = match m.get("dtype") {
        Some(Value::String(s)) => s.clone(),
        Some(other) => {
            return Err(bad(format!(
                "`dtype` must be a string, found {}",
                kind(other)
            )))
        }
        None => return Err(bad("missing `dtype`".into())),
    };
    let file_dtype: FileDType = serde_json::from_value(Value::String(dtype_name.clone()))
        .map_err(|_| bad(format!("unknown dtype `{dtype_name}`")))?;
    let shape = match m.get("shape") {
        Some(Value::Array(dims)) => dims
            .iter()
            .map(|d| d.as_u64().and_then(|d| usize::try_from(d).ok()))
            .collect::<Option<Vec<usize>>>()
            .ok_or_else(|| {
                bad(format!(
                    "`shape` must hold non-negative integers, found {}",
                    Value::Array(dims.clone())
                ))
            })?,
        Some(other) => {
            return Err(bad(format!(
                "`shape` must be an array, found {}",
                kind(other)
            )))
        }
        None => return Err(bad("missing `shape`".into())),
    };
    let offsets = match m.get("data_offsets") {
        Some(Value::Array(o)) if o.len() == 2 => {
            let a = o[0].as_u64().and_then(|x| usize::try_from(x).ok());
            let b = o[1].as_u64().and_then(|x| usize::try_from(x).ok());
            match (a, b) {
                (Some(a), Some(b)) if a <= b => (a, b),
                _ => {
                    return Err(bad(format!(
                        "`data_offsets` must be [begin, end] with begin <= end, found {}",
                        m["data_offsets"]
                    )))
                }
            }
        }
        Some(other) => {
            return Err(bad(format!(
                "`data_offsets` must be [begin, end], found {other}"
            )))
        }
        None => return Err(bad("missing `data_offsets`".into())),
    };
    let numel = shape
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .ok_or_else(|| bad(format!("shape {shape:?} overflows")))?;
    let bits = numel
        .checked_mul(file_dtype.bitsize())
        .ok_or_else(|| bad(format!("shape {shape:?} overflows")))?;
    let byte_len = offsets.1 - offsets.0;
    if bits % 8 != 0 || bits / 8 != byte_len {
        return Err(bad(format!(
            "shape {shape:?} of {file_dtype:?} needs {} bytes but data_offsets {:?} span {byte_len}",
            bits as f64 / 8.0,
            [offsets.0, offsets.1]
        )));
    }
    Ok(TensorInfo {
        name,
        file_dtype,
        shape,
        byte_len,
        begin: offsets.0,
        start: data_start + offsets.0,
    })
}

/// The byte ranges, ordered by start, must follow each other without gaps or
/// overlaps from 0 to the end of the file.
fn check_tiling(
    path: &Path,
    tensors: &mut [TensorInfo],
    data_start: usize,
    data_len: usize,
) -> Result<()> {
    tensors.sort_by_key(|t| (t.begin, t.begin + t.byte_len));
    let mut pos = 0usize;
    let mut prev: Option<&str> = None;
    for t in tensors.iter() {
        let (begin, end) = (t.begin, t.begin + t.byte_len);
        if end > data_len {
            return Err(Error::file(
                path,
                format!(
                    "tensor `{}`: data_offsets [{begin}, {end}] reach past the data section of {data_len} bytes (file truncated?)",
                    t.name
                ),
            ));
        }
        if begin < pos {
            return Err(Error::file(
                path,
                format!(
                    "tensor `{}`: data_offsets [{begin}, {end}] overlap tensor `{}` (which ends at {pos})",
                    t.name,
                    prev.unwrap_or("?")
                ),
            ));
        }
        if begin > pos {
            return Err(Error::file(
                path,
                format!("tensor `{}`: data_offsets [{begin}, {end}] leave a gap of unused bytes [{pos}, {begin})", t.name),
            ));
        }
        pos = end;
        prev = Some(&t.name);
    }
    if pos != data_len {
        return Err(Error::file(
            path,
            format!(
                "tensors cover {pos} bytes of the {data_len}-byte data section (starting at byte {data_start}): {} trailing bytes unaccounted for",
                data_len - pos
            ),
        ));
    }
    Ok(())
}
