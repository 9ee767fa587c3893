//! The files of a BERT tokenizer folder: `vocab.txt` or `tokenizer.json` (its
//! WordPiece vocabulary and added tokens), and the settings of
//! `tokenizer_config.json` / `special_tokens_map.json` (transformers' defaults when absent).

use crate::error::{Error, Result};
use serde_json::Value;
use std::collections::HashMap;
use std::path::Path;

/// The options transformers' `BertTokenizer` takes from `tokenizer_config.json`.
#[derive(Clone, Debug, PartialEq)]
pub struct BertTokenizerSettings {
    /// Lowercase (and, unless `strip_accents` says otherwise, strip accents). Default true.
    pub do_lower_case: bool,
    /// `None`: follow `do_lower_case` (original BERT).
    pub strip_accents: Option<bool>,
    /// Put spaces around CJK ideographs. Default true.
    pub tokenize_chinese_chars: bool,
    pub unk_token: String,
    pub sep_token: String,
    pub pad_token: String,
    pub cls_token: String,
    pub mask_token: String,
}

impl Default for BertTokenizerSettings {
    fn default() -> Self {
        BertTokenizerSettings {
            do_lower_case: true,
            strip_accents: None,
            tokenize_chinese_chars: true,
            unk_token: "[UNK]".into(),
            sep_token: "[SEP]".into(),
            pad_token: "[PAD]".into(),
            cls_token: "[CLS]".into(),
            mask_token: "[MASK]".into(),
        }
    }
}

impl BertTokenizerSettings {
    /// Defaults, overridden by `dir/tokenizer_config.json` then
    /// `dir/special_tokens_map.json` where present.
    pub fn read(dir: &Path) -> Result<BertTokenizerSettings> {
        let mut s = BertTokenizerSettings::default();
        for name in ["tokenizer_config.json", "special_tokens_map.json"] {
            let path = dir.join(name);
            if path.is_file() {
                s.apply(&path, &read_json(&path)?)?;
            }
        }
        Ok(s)
    }

    fn apply(&mut self, path: &Path, json: &Value) -> Result<()> {
        let bad = |key: &str, v: &Value, want: &str| {
            Error::file(path, format!("key `{key}`: expected {want}, got {v}"))
        };
        let flag = |key: &str| -> Result<Option<bool>> {
            match json.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(v) => v
                    .as_bool()
                    .map(Some)
                    .ok_or_else(|| bad(key, v, "true or false")),
            }
        };
        if let Some(b) = flag("do_lower_case")? {
            self.do_lower_case = b;
        }
        if json.get("strip_accents").is_some() {
            self.strip_accents = flag("strip_accents")?;
        }
        if let Some(b) = flag("tokenize_chinese_chars")? {
            self.tokenize_chinese_chars = b;
        }
        for (key, slot) in [
            ("unk_token", &mut self.unk_token),
            ("sep_token", &mut self.sep_token),
            ("pad_token", &mut self.pad_token),
            ("cls_token", &mut self.cls_token),
            ("mask_token", &mut self.mask_token),
        ] {
            match json.get(key) {
                None | Some(Value::Null) => {}
                // A plain string, or an AddedToken dict {"content": ...}.
                Some(v) => {
                    let content = v
                        .as_str()
                        .or_else(|| v.get("content").and_then(Value::as_str));
                    *slot = content
                        .ok_or_else(|| bad(key, v, "a string or {\"content\": ...}"))?
                        .to_string();
                }
            }
        }
        Ok(())
    }
}

/// An added token of a `tokenizer.json`.
#[derive(Clone, Debug)]
pub(crate) struct AddedTokenSpec {
    pub content: String,
    pub special: bool,
    pub normalized: bool,
    pub lstrip: bool,
    pub rstrip: bool,
    pub single_word: bool,
}

fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::file(path, format!("cannot read: {e}")))?;
    serde_json::from_str(&text).map_err(|e| Error::file(path, format!("invalid JSON: {e}")))
}

/// `vocab.txt`: one token per line, the line number is the id (a repeated token
/// keeps its last line, as transformers' `load_vocab`).
pub(crate) fn read_vocab_txt(path: &Path) -> Result<HashMap<String, u32>> {
    let bytes = std::fs::read(path).map_err(|e| Error::file(path, format!("cannot read: {e}")))?;
    let text = String::from_utf8(bytes).map_err(|e| {
        Error::file(
            path,
            format!(
                "not UTF-8 text (byte {}): not a WordPiece vocab.txt",
                e.utf8_error().valid_up_to()
            ),
        )
    })?;
    let mut vocab = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        vocab.insert(line.to_string(), i as u32);
    }
    if vocab.is_empty() {
        return Err(Error::file(path, "empty vocabulary"));
    }
    Ok(vocab)
}

/// `tokenizer.json`: the WordPiece model's vocabulary and the added tokens (as
/// transformers' `BertTokenizer`, the normalizer and processors are rebuilt from
/// the settings rather than read from the file).
pub(crate) fn read_tokenizer_json(
    path: &Path,
) -> Result<(HashMap<String, u32>, Vec<AddedTokenSpec>)> {
    let json = read_json(path)?;
    let bad = |why: String| Error::file(path, why);
    let model = json
        .get("model")
        .ok_or_else(|| bad("no `model` section".into()))?;
    let kind = model.get("type").and_then(Value::as_str).unwrap_or("");
    if kind != "WordPiece" {
        return Err(bad(format!(
            "not a BERT tokenizer: expected a WordPiece model, got type {kind:?}"
        )));
    }
    let vocab: HashMap<String, u32> = model
        .get("vocab")
        .cloned()
        .map(serde_json::from_value)
        .transpose()
        .map_err(|e| bad(format!("model.vocab: {e}")))?
        .ok_or_else(|| bad("no model.vocab".into()))?;
    if vocab.is_empty() {
        return Err(bad("model.vocab is empty".into()));
    }
    let added = json
        .get("added_tokens")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|t| {
            let flag = |k: &str| t.get(k).and_then(Value::as_bool).unwrap_or(false);
            let content = t
                .get("content")
                .and_then(Value::as_str)
                .ok_or_else(|| bad(format!("added_tokens: entry without `content`: {t}")))?;
            Ok(AddedTokenSpec {
                content: content.to_string(),
                special: flag("special"),
                normalized: flag("normalized"),
                lstrip: flag("lstrip"),
                rstrip: flag("rstrip"),
                single_word: flag("single_word"),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((vocab, added))
}
