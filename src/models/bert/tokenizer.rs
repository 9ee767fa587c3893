//! `BertTokenizer`: reports to BERT ids with the `tokenizers` crate's BERT
//! pipeline (BertNormalizer, BertPreTokenizer, WordPiece, `[CLS] … [SEP]`), as
//! transformers' `BertTokenizer(text, truncation=True, max_length=…)`, batched
//! and padded, with the truncated texts reported rather than cut silently.

use super::tokenizer_files::{read_tokenizer_json, read_vocab_txt, BertTokenizerSettings};
use crate::error::{Error, Result};
use crate::tensor::Tensor;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use tokenizers::decoders::wordpiece::WordPiece as WordPieceDecoder;
use tokenizers::models::wordpiece::WordPiece;
use tokenizers::normalizers::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::processors::bert::BertProcessing;
use tokenizers::{AddedToken, Encoding, Tokenizer, TruncationDirection};

/// The report length of the protocol (MGCA, GLoRIA: 112 tokens with [CLS]/[SEP]).
pub const DEFAULT_MAX_LEN: usize = 112;

/// How a batch is padded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Padding {
    /// To the longest sequence of the batch (after truncation).
    Longest,
    /// Always to `max_len` (fixed shapes).
    MaxLength,
}

pub struct BertTokenizer {
    tokenizer: Tokenizer,
    settings: BertTokenizerSettings,
    cls_id: u32,
    sep_id: u32,
    pad_id: u32,
    /// Where the vocabulary came from (for messages).
    source: PathBuf,
}

/// A tokenized batch: ids [N, L] i64, mask [N, L] i64 (1 = token, 0 = padding),
/// token types [N, L] i64 (all 0: single sentences).
#[derive(Debug)]
pub struct BertBatch {
    pub input_ids: Tensor,
    pub attention_mask: Tensor,
    pub token_type_ids: Tensor,
    /// Tokens kept per text, [CLS] and [SEP] included.
    pub lengths: Vec<usize>,
    /// Tokens per text before truncation, [CLS] and [SEP] included.
    pub full_lengths: Vec<usize>,
    /// Indices of the texts that were cut to `max_len` (callers warn about these).
    pub truncated: Vec<usize>,
}

impl BertTokenizer {
    /// Loads a tokenizer folder: `tokenizer.json` when present (its WordPiece vocab
    /// and added tokens), else `vocab.txt` (Bio_ClinicalBERT ships only that and
    /// config.json); options from `tokenizer_config.json` / `special_tokens_map.json`
    /// when present, else transformers' `BertTokenizer` defaults (lowercasing on).
    pub fn from_dir(dir: &Path) -> Result<BertTokenizer> {
        let settings = BertTokenizerSettings::read(dir)?;
        let (json, txt) = (dir.join("tokenizer.json"), dir.join("vocab.txt"));
        if json.is_file() {
            let (vocab, added) = read_tokenizer_json(&json)?;
            let mut tok = Self::build(vocab, settings, &json)?;
            let extra: Vec<AddedToken> = added
                .into_iter()
                .map(|a| {
                    AddedToken::from(a.content, a.special)
                        .normalized(a.normalized)
                        .lstrip(a.lstrip)
                        .rstrip(a.rstrip)
                        .single_word(a.single_word)
                })
                .collect();
            tok.tokenizer.add_tokens(&extra);
            Ok(tok)
        } else if txt.is_file() {
            Self::from_vocab_file(&txt, settings)
        } else {
            Err(Error::file(
                dir,
                format!(
                    "no BERT tokenizer files: expected {} or {}",
                    txt.display(),
                    json.display()
                ),
            ))
        }
    }

    /// A tokenizer from a `vocab.txt` and explicit settings.
    pub fn from_vocab_file(path: &Path, settings: BertTokenizerSettings) -> Result<BertTokenizer> {
        if !path.is_file() {
            return Err(Error::file(path, "vocabulary file not found"));
        }
        Self::build(read_vocab_txt(path)?, settings, path)
    }

    fn build(
        vocab: HashMap<String, u32>,
        settings: BertTokenizerSettings,
        source: &Path,
    ) -> Result<BertTokenizer> {
        let s = &settings;
        let id = |token: &str, role: &str| {
            vocab.get(token).copied().ok_or_else(|| {
                Error::file(
                    source,
                    format!("the {role} token {token:?} is not in the vocabulary"),
                )
            })
        };
        let (cls_id, sep_id, pad_id) = (
            id(&s.cls_token, "cls")?,
            id(&s.sep_token, "sep")?,
            id(&s.pad_token, "pad")?,
        );
        id(&s.unk_token, "unknown")?;
        // The builder wants an ahash map: go through WordPiece's own serde form.
        let spec = json!({
            "type": "WordPiece",
            "unk_token": s.unk_token,
            "continuing_subword_prefix": "##",
            "max_input_chars_per_word": 100,
            "vocab": Value::Object(vocab.into_iter().map(|(k, v)| (k, Value::from(v))).collect()),
        });
        let model: WordPiece = serde_json::from_str(&spec.to_string())
            .map_err(|e| Error::file(source, format!("cannot build the WordPiece model: {e}")))?;
        let mut tokenizer = Tokenizer::new(model);
        tokenizer
            .with_normalizer(Some(BertNormalizer::new(
                true,
                s.tokenize_chinese_chars,
                s.strip_accents,
                s.do_lower_case,
            )))
            .with_pre_tokenizer(Some(BertPreTokenizer))
            .with_post_processor(Some(BertProcessing::new(
                (s.sep_token.clone(), sep_id),
                (s.cls_token.clone(), cls_id),
            )))
            .with_decoder(Some(WordPieceDecoder::new("##".into(), true)));
        // Special tokens written in the text map to their ids (matched before
        // normalization), as transformers registers them.
        let specials: Vec<AddedToken> = [
            &s.pad_token,
            &s.unk_token,
            &s.cls_token,
            &s.sep_token,
            &s.mask_token,
        ]
        .into_iter()
        .map(|t| AddedToken::from(t.clone(), true))
        .collect();
        tokenizer.add_special_tokens(&specials);
        Ok(BertTokenizer {
            tokenizer,
            settings,
            cls_id,
            sep_id,
            pad_id,
            source: source.to_path_buf(),
        })
    }

    pub fn settings(&self) -> &BertTokenizerSettings {
        &self.settings
    }

    pub fn pad_id(&self) -> i64 {
        self.pad_id as i64
    }

    pub fn cls_id(&self) -> i64 {
        self.cls_id as i64
    }

    pub fn sep_id(&self) -> i64 {
        self.sep_id as i64
    }

    /// Vocabulary size including added tokens (must not exceed the model's `vocab_size`).
    pub fn vocab_size(&self) -> usize {
        self.tokenizer.get_vocab_size(true)
    }

    /// `[CLS]`, the text's tokens, `[SEP]`: no truncation, no padding.
    pub fn encode(&self, text: &str) -> Result<Vec<i64>> {
        let enc = self.tokenizer.encode(text, true).map_err(|e| self.err(e))?;
        Ok(enc.get_ids().iter().map(|&i| i as i64).collect())
    }

    /// Tokenizes `texts`, each cut to `max_len` tokens ([CLS]/[SEP] included, as
    /// transformers' `truncation=True, max_length=max_len`), padded to the longest.
    pub fn encode_batch<S: AsRef<str>>(&self, texts: &[S], max_len: usize) -> Result<BertBatch> {
        self.encode_batch_padded(texts, max_len, Padding::Longest)
    }

    /// As [`encode_batch`](Self::encode_batch) with a choice of padding.
    pub fn encode_batch_padded<S: AsRef<str>>(
        &self,
        texts: &[S],
        max_len: usize,
        padding: Padding,
    ) -> Result<BertBatch> {
        if texts.is_empty() {
            return Err(Error::msg("BERT tokenizer: empty batch"));
        }
        let specials = 2; // [CLS] and [SEP]
        if max_len < specials {
            return Err(Error::msg(format!(
                "BERT tokenizer: max_len {max_len} leaves no room for [CLS] and [SEP]"
            )));
        }
        let inputs: Vec<&str> = texts.iter().map(AsRef::as_ref).collect();
        let encodings = self
            .tokenizer
            .encode_batch(inputs, false)
            .map_err(|e| self.err(e))?;
        let mut rows = Vec::with_capacity(encodings.len());
        let (mut full_lengths, mut truncated) = (Vec::new(), Vec::new());
        for (i, mut enc) in encodings.into_iter().enumerate() {
            full_lengths.push(enc.len() + specials);
            if enc.len() + specials > max_len {
                truncated.push(i);
                enc.truncate(max_len - specials, 0, TruncationDirection::Right);
                enc.set_overflowing(Vec::<Encoding>::new());
            }
            let enc = self
                .tokenizer
                .post_process(enc, None, true)
                .map_err(|e| self.err(e))?;
            rows.push(
                enc.get_ids()
                    .iter()
                    .map(|&id| id as i64)
                    .collect::<Vec<_>>(),
            );
        }
        let lengths: Vec<usize> = rows.iter().map(Vec::len).collect();
        let width = match padding {
            Padding::Longest => *lengths.iter().max().unwrap(),
            Padding::MaxLength => max_len,
        };
        let n = rows.len();
        let (mut ids, mut mask) = (Vec::with_capacity(n * width), Vec::with_capacity(n * width));
        for row in &rows {
            ids.extend_from_slice(row);
            ids.extend(std::iter::repeat_n(self.pad_id as i64, width - row.len()));
            mask.extend((0..width).map(|j| (j < row.len()) as i64));
        }
        Ok(BertBatch {
            input_ids: Tensor::from_i64(ids, &[n, width])?,
            attention_mask: Tensor::from_i64(mask, &[n, width])?,
            token_type_ids: Tensor::from_i64(vec![0; n * width], &[n, width])?,
            lengths,
            full_lengths,
            truncated,
        })
    }

    /// Text of `ids` (WordPiece pieces joined, `##` removed); special tokens
    /// dropped when `skip_special`.
    pub fn decode(&self, ids: &[i64], skip_special: bool) -> Result<String> {
        let ids: Vec<u32> = ids.iter().filter_map(|&i| u32::try_from(i).ok()).collect();
        self.tokenizer
            .decode(&ids, skip_special)
            .map_err(|e| self.err(e))
    }

    fn err(&self, e: impl std::fmt::Display) -> Error {
        Error::msg(format!("BERT tokenizer ({}): {e}", self.source.display()))
    }
}
