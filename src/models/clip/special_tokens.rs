//! The special and added tokens of a tokenizer folder and its length limit, from
//! tokenizer_config.json, special_tokens_map.json and added_tokens.json with
//! transformers' precedence.

use crate::error::{Error, Result};
use crate::models::Config;
use serde_json::Value;
use std::path::Path;

/// A token matched in the text before BPE (transformers' `AddedToken`).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct AddedToken {
    pub content: String,
    /// The id the file gives it (the vocabulary's id wins when it has one).
    pub id: Option<i64>,
    pub special: bool,
    /// Matched in the normalized (lower-cased) text rather than the raw text.
    pub normalized: bool,
}

/// What a tokenizer folder says beyond the vocabulary.
pub(crate) struct TokenizerSettings {
    pub bos: String,
    pub eos: String,
    pub unk: String,
    pub pad: String,
    pub max_length: usize,
    /// Every added token once, with the flags of its last mention.
    pub added: Vec<AddedToken>,
}

/// The roles transformers registers, in its order (a later role's flags win
/// when two share a token: SD 1.x's plain-string pad un-normalizes eos).
const ROLES: [(&str, &str); 4] = [
    ("bos_token", "<|startoftext|>"),
    ("eos_token", "<|endoftext|>"),
    ("unk_token", "<|endoftext|>"),
    ("pad_token", "<|endoftext|>"),
];

/// CLIP's context length, used when tokenizer_config.json does not say.
const DEFAULT_MAX_LENGTH: usize = 77;

fn optional_config(path: &Path) -> Result<Option<Config>> {
    path.is_file().then(|| Config::load(path)).transpose()
}

/// An `AddedToken` written as a string or as a dict (`content`, `normalized`, ...).
fn parse_token(file: &Path, key: &str, v: &Value, special: bool) -> Result<AddedToken> {
    let bad = |why: &str| Error::file(file, format!("key `{key}`: {why}, got {v}"));
    match v {
        Value::String(s) => Ok(AddedToken {
            content: s.clone(),
            id: None,
            special,
            normalized: !special,
        }),
        Value::Object(o) => {
            let content = o
                .get("content")
                .and_then(Value::as_str)
                .ok_or_else(|| bad("expected a token with a string `content`"))?;
            for flag in ["lstrip", "rstrip", "single_word"] {
                if o.get(flag).and_then(Value::as_bool) == Some(true) {
                    return Err(bad(&format!("`{flag}: true` is not supported")));
                }
            }
            let special = special || o.get("special").and_then(Value::as_bool) == Some(true);
            let normalized = o.get("normalized").and_then(Value::as_bool);
            Ok(AddedToken {
                content: content.to_string(),
                id: None,
                special,
                normalized: normalized.unwrap_or(!special),
            })
        }
        _ => Err(bad("expected a string or a token object")),
    }
}

/// Adds `t`, or updates the flags of the token with the same content.
fn upsert(all: &mut Vec<AddedToken>, t: AddedToken) {
    match all.iter_mut().find(|a| a.content == t.content) {
        Some(a) => {
            a.special = t.special;
            a.normalized = t.normalized;
            a.id = t.id.or(a.id);
        }
        None => all.push(t),
    }
}

/// Added tokens listed with ids: `added_tokens_decoder` of tokenizer_config.json
/// (which makes transformers ignore the others), else added_tokens.json and the
/// `added_tokens` of tokenizer.json (`from_json`), ordered by id.
fn listed_tokens(
    dir: &Path,
    config: Option<&Config>,
    roles: &[String],
    from_json: &[AddedToken],
) -> Result<Vec<AddedToken>> {
    let mut listed: Vec<AddedToken> = Vec::new();
    if let Some(decoder) = config.and_then(|c| c.get("added_tokens_decoder")) {
        let file = config.unwrap().path();
        let map = decoder.as_object().ok_or_else(|| {
            Error::file(
                file,
                "key `added_tokens_decoder`: expected an object of id -> token",
            )
        })?;
        for (id, v) in map {
            let mut t = parse_token(file, "added_tokens_decoder", v, false)?;
            t.id = Some(id.parse().map_err(|_| {
                Error::file(
                    file,
                    format!("key `added_tokens_decoder`: `{id}` is not an id"),
                )
            })?);
            listed.push(t);
        }
    } else {
        let path = dir.join("added_tokens.json");
        if let Some(c) = optional_config(&path)? {
            for (content, id) in c.value().as_object().into_iter().flatten() {
                let special = roles.contains(content);
                listed.push(AddedToken {
                    content: content.clone(),
                    id: Some(id.as_i64().ok_or_else(|| {
                        Error::file(
                            &path,
                            format!("`{content}`: expected an integer id, got {id}"),
                        )
                    })?),
                    special,
                    normalized: !special,
                });
            }
        }
        listed.extend(from_json.iter().cloned());
    }
    listed.sort_by_key(|t| t.id);
    Ok(listed)
}

impl TokenizerSettings {
    /// Reads the folder's settings; `from_json` are tokenizer.json's added tokens.
    pub fn read(dir: &Path, from_json: &[AddedToken]) -> Result<TokenizerSettings> {
        let config = optional_config(&dir.join("tokenizer_config.json"))?;
        // transformers reads special_tokens_map.json (and lets it override the
        // config) only for configs without `added_tokens_decoder`.
        let map = match config
            .as_ref()
            .is_some_and(|c| c.has("added_tokens_decoder"))
        {
            true => None,
            false => optional_config(&dir.join("special_tokens_map.json"))?,
        };
        let mut roles = Vec::new();
        for (key, default) in ROLES {
            let source = [map.as_ref(), config.as_ref()]
                .into_iter()
                .flatten()
                .find_map(|c| c.get(key).map(|v| (c.path(), v)));
            roles.push(match source {
                Some((file, v)) => parse_token(file, key, v, true)?,
                None => parse_token(Path::new(""), key, &Value::from(default), true)?,
            });
        }
        let names: Vec<String> = roles.iter().map(|r| r.content.clone()).collect();
        let listed = listed_tokens(dir, config.as_ref(), &names, from_json)?;
        let mut added = Vec::new();
        for t in &listed {
            upsert(&mut added, t.clone());
        }
        for mut role in roles {
            // A role naming a listed token takes that token's flags.
            if let Some(l) = listed.iter().rev().find(|l| l.content == role.content) {
                role.normalized = l.normalized;
            }
            upsert(&mut added, role);
        }
        let max_length = match &config {
            Some(c) => c.usize_or("model_max_length", DEFAULT_MAX_LENGTH)?,
            None => DEFAULT_MAX_LENGTH,
        };
        if max_length < 2 {
            let file = config.as_ref().map_or(dir, |c| c.path());
            return Err(Error::file(
                file,
                format!("key `model_max_length`: {max_length} leaves no room for the start and end tokens"),
            ));
        }
        Ok(TokenizerSettings {
            bos: names[0].clone(),
            eos: names[1].clone(),
            unk: names[2].clone(),
            pad: names[3].clone(),
            max_length,
            added,
        })
    }
}
