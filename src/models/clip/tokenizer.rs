//! `ClipTokenizer`: a prompt to CLIP token ids padded to the context length, as
//! transformers' `tokenizer(text, padding="max_length", truncation=True)`, with
//! what truncation cut reported rather than dropped silently.

use super::bpe::{token_bytes, Bpe};
use super::pretokenize::{normalize, split_added, words, Piece};
use super::special_tokens::TokenizerSettings;
use super::tokenizer_json;
use crate::error::{Error, Result};
use std::collections::HashMap;
use std::path::Path;

pub struct ClipTokenizer {
    bpe: Bpe,
    /// Added tokens (content, id) matched in the raw text ...
    raw_tokens: Vec<(String, i64)>,
    /// ... and in the normalized text (content normalized too).
    normalized_tokens: Vec<(String, i64)>,
    /// id -> (content, special) of every added token, for decoding.
    added_by_id: HashMap<i64, (String, bool)>,
    bos_id: i64,
    eos_id: i64,
    pad_id: i64,
    unk_id: Option<u32>,
    max_length: usize,
}

/// One tokenized prompt.
#[derive(Clone, Debug, PartialEq)]
pub struct ClipTokens {
    /// `<|startoftext|>`, at most `max_length - 2` text tokens, `<|endoftext|>`,
    /// then the pad token up to `max_length`.
    pub ids: Vec<i64>,
    /// 1 for the start, text and end tokens, 0 for padding.
    pub attention_mask: Vec<i64>,
    /// Whether text tokens were cut to fit `max_length`.
    pub truncated: bool,
    /// The token count with start and end tokens before truncation.
    pub full_len: usize,
    /// The text of the cut tokens (empty when nothing was cut), as diffusers
    /// decodes it for its "The following part of your input was truncated" warning.
    pub dropped_text: String,
}

impl ClipTokenizer {
    /// Loads a diffusers `tokenizer/` folder: `vocab.json` + `merges.txt`, or a
    /// `tokenizer.json` when that pair is absent, plus `tokenizer_config.json`,
    /// `special_tokens_map.json` and `added_tokens.json` when present.
    pub fn from_dir(dir: &Path) -> Result<ClipTokenizer> {
        let (vocab, merges, json) = (
            dir.join("vocab.json"),
            dir.join("merges.txt"),
            dir.join("tokenizer.json"),
        );
        let pair = vocab.is_file() && merges.is_file();
        let (bpe, from_json) = if !pair && json.is_file() {
            tokenizer_json::read(&json)?
        } else if pair || vocab.is_file() || merges.is_file() {
            (Bpe::from_files(&vocab, &merges)?, Vec::new())
        } else {
            return Err(Error::file(
                dir,
                "no CLIP tokenizer files: expected vocab.json and merges.txt, or tokenizer.json",
            ));
        };
        let settings = TokenizerSettings::read(dir, &from_json)?;
        Self::build(bpe, settings, dir)
    }

    fn build(bpe: Bpe, s: TokenizerSettings, dir: &Path) -> Result<ClipTokenizer> {
        let mut tok = ClipTokenizer {
            unk_id: bpe.id(&s.unk),
            bpe,
            raw_tokens: Vec::new(),
            normalized_tokens: Vec::new(),
            added_by_id: HashMap::new(),
            bos_id: 0,
            eos_id: 0,
            pad_id: 0,
            max_length: s.max_length,
        };
        let mut by_content = HashMap::new();
        for t in &s.added {
            // The vocabulary's id wins, as in tokenizers' added vocabulary.
            let id = tok.bpe.id(&t.content).map(i64::from).or(t.id);
            let id = id.ok_or_else(|| {
                Error::file(
                    dir,
                    format!(
                        "token {:?} is neither in the vocabulary nor given an id",
                        t.content
                    ),
                )
            })?;
            match t.normalized {
                true => tok.normalized_tokens.push((normalize(&t.content), id)),
                false => tok.raw_tokens.push((t.content.clone(), id)),
            }
            tok.added_by_id.insert(id, (t.content.clone(), t.special));
            by_content.insert(t.content.clone(), id);
        }
        // Every role is an added token (TokenizerSettings lists them).
        let id_of = |content: &String| by_content[content];
        (tok.bos_id, tok.eos_id, tok.pad_id) = (id_of(&s.bos), id_of(&s.eos), id_of(&s.pad));
        Ok(tok)
    }

    /// The padded length (`model_max_length`, 77 for CLIP).
    pub fn max_length(&self) -> usize {
        self.max_length
    }

    /// The padding id (SD 1.x: `<|endoftext|>`, SD 2.x: `!` = 0).
    pub fn pad_id(&self) -> i64 {
        self.pad_id
    }

    pub fn bos_id(&self) -> i64 {
        self.bos_id
    }

    pub fn eos_id(&self) -> i64 {
        self.eos_id
    }

    /// One more than the largest id the tokenizer can produce.
    pub fn vocab_size(&self) -> usize {
        let added = self.added_by_id.keys().map(|&i| i as usize + 1).max();
        self.bpe.len().max(added.unwrap_or(0))
    }

    /// Tokenizes `text`: start token, text tokens (cut to fit), end token, padding.
    pub fn encode(&self, text: &str) -> Result<ClipTokens> {
        let content = self.text_ids(text)?;
        let kept = content.len().min(self.max_length - 2);
        let mut ids = Vec::with_capacity(self.max_length);
        ids.push(self.bos_id);
        ids.extend_from_slice(&content[..kept]);
        ids.push(self.eos_id);
        let used = ids.len();
        ids.resize(self.max_length, self.pad_id);
        Ok(ClipTokens {
            ids,
            attention_mask: (0..self.max_length).map(|i| (i < used) as i64).collect(),
            truncated: kept < content.len(),
            full_len: content.len() + 2,
            dropped_text: self.decode(&content[kept..]),
        })
    }

    /// The text's token ids without start/end tokens, padding or truncation.
    pub fn text_ids(&self, text: &str) -> Result<Vec<i64>> {
        let mut ids = Vec::new();
        for piece in split_added(text, &self.raw_tokens) {
            let raw = match piece {
                Piece::Token(id) => {
                    ids.push(id);
                    continue;
                }
                Piece::Text(raw) => raw,
            };
            let normalized = normalize(raw);
            for piece in split_added(&normalized, &self.normalized_tokens) {
                match piece {
                    Piece::Token(id) => ids.push(id),
                    Piece::Text(t) => {
                        for word in words(t)? {
                            self.bpe.word_ids(word, self.unk_id, &mut ids)?;
                        }
                    }
                }
            }
        }
        Ok(ids)
    }

    /// Text of `ids`, special tokens included (transformers' `decode`): `</w>`
    /// becomes a space; unknown ids are skipped.
    pub fn decode(&self, ids: &[i64]) -> String {
        self.decode_tokens(ids, false)
    }

    /// Text of `ids` without special tokens (`skip_special_tokens=True`).
    pub fn decode_skip_special(&self, ids: &[i64]) -> String {
        self.decode_tokens(ids, true)
    }

    fn decode_tokens(&self, ids: &[i64], skip_special: bool) -> String {
        let mut bytes = Vec::new();
        for &id in ids {
            let token = match self.added_by_id.get(&id) {
                Some((_, true)) if skip_special => continue,
                Some((content, _)) => Some(content.as_str()),
                None => u32::try_from(id).ok().and_then(|i| self.bpe.token(i)),
            };
            if let Some(t) = token {
                token_bytes(t, &mut bytes);
            }
        }
        String::from_utf8_lossy(&bytes)
            .replace("</w>", " ")
            .trim()
            .to_string()
    }
}
