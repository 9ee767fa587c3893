//! A fast tokenizer's `tokenizer.json`: its BPE vocabulary, merges and added
//! tokens. Like transformers' `CLIPTokenizer`, which rebuilds CLIP's normalizer
//! and pre-tokenizer around the vocabulary it extracts, only the model part and
//! the added tokens are taken from the file.

use super::bpe::Bpe;
use super::special_tokens::AddedToken;
use crate::error::{Error, Result};
use serde_json::Value;
use std::collections::HashMap;
use std::path::Path;

pub(crate) fn read(path: &Path) -> Result<(Bpe, Vec<AddedToken>)> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::file(path, format!("cannot read: {e}")))?;
    let json: Value =
        serde_json::from_str(&text).map_err(|e| Error::file(path, format!("invalid JSON: {e}")))?;
    let bad = |why: String| Error::file(path, why);
    let model = json
        .get("model")
        .ok_or_else(|| bad("no `model` section".into()))?;
    let kind = model.get("type").and_then(Value::as_str).unwrap_or("");
    let suffix = model.get("end_of_word_suffix").and_then(Value::as_str);
    if kind != "BPE" || suffix != Some("</w>") {
        return Err(bad(format!(
            "not a CLIP tokenizer: expected a BPE model with end_of_word_suffix `</w>`, got type {kind:?}, suffix {suffix:?}"
        )));
    }
    let vocab: HashMap<String, u32> = model
        .get("vocab")
        .cloned()
        .map(serde_json::from_value)
        .transpose()
        .map_err(|e| bad(format!("model.vocab: {e}")))?
        .ok_or_else(|| bad("no model.vocab".into()))?;
    let merges = model
        .get("merges")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("no model.merges list".into()))?
        .iter()
        .map(|m| merge_pair(m).ok_or_else(|| bad(format!("model.merges: bad entry {m}"))))
        .collect::<Result<Vec<_>>>()?;
    let added = json
        .get("added_tokens")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|t| added_token(t).map_err(|why| bad(format!("added_tokens: {why} in {t}"))))
        .collect::<Result<Vec<_>>>()?;
    Ok((Bpe::new(vocab, merges, path)?, added))
}

/// A merge written as "a b" (older files) or ["a", "b"].
fn merge_pair(m: &Value) -> Option<(String, String)> {
    match m {
        Value::String(s) => {
            let (a, b) = s.split_once(' ')?;
            Some((a.to_string(), b.to_string()))
        }
        Value::Array(p) if p.len() == 2 => {
            Some((p[0].as_str()?.to_string(), p[1].as_str()?.to_string()))
        }
        _ => None,
    }
}

fn added_token(t: &Value) -> std::result::Result<AddedToken, String> {
    let flag = |k: &str| t.get(k).and_then(Value::as_bool).unwrap_or(false);
    if let Some(f) = ["lstrip", "rstrip", "single_word"]
        .into_iter()
        .find(|f| flag(f))
    {
        return Err(format!("`{f}: true` is not supported"));
    }
    let content = t.get("content").and_then(Value::as_str);
    let id = t.get("id").and_then(Value::as_i64);
    let (Some(content), Some(id)) = (content, id) else {
        return Err("expected `content` and `id`".into());
    };
    Ok(AddedToken {
        content: content.to_string(),
        id: Some(id),
        special: flag("special"),
        normalized: flag("normalized"),
    })
}
