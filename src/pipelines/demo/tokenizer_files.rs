//! Tokenizer folders trained on the demo's own report corpus: a CLIP byte-level BPE
//! (vocab.json + merges.txt, SD 1.x layout) and a BERT WordPiece `vocab.txt`.
//!
//! No tokenizer can be downloaded in the demo, so both are built from the reports.
//! The CLIP side splits text exactly as `crate::models::clip::ClipTokenizer` does
//! (NFC, whitespace runs to one space, lowercase, CLIP's split pattern, UTF-8 bytes as
//! GPT-2 byte symbols, `</w>` on the last symbol), then learns merges by the usual
//! BPE rule on the table of distinct words. The BERT side splits with the same
//! `tokenizers` BERT normalizer and pre-tokenizer as `crate::models::bert::BertTokenizer`.

use crate::data::write_atomic;
use crate::error::{Error, Result};
use crate::models::clip::bpe::byte_symbols;
use crate::models::clip::pretokenize::{normalize, words};
use std::cmp::Reverse;
use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use tokenizers::normalizers::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::{
    NormalizedString, Normalizer, OffsetReferential, OffsetType, PreTokenizedString, PreTokenizer,
};

const BOS: &str = "<|startoftext|>";
const EOS: &str = "<|endoftext|>";
/// CLIP's context length (`model_max_length`).
const CLIP_MAX_LENGTH: usize = 77;
/// BERT's special tokens, written first in vocab.txt (ids 0..5).
const BERT_SPECIALS: [&str; 5] = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"];

/// What [`write_clip_tokenizer`] produced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClipVocabSummary {
    /// Entries of vocab.json: 512 byte symbols, the merge results, the two special tokens.
    pub vocab_size: usize,
    /// Lines of merges.txt after the `#version` header.
    pub merges: usize,
}

// ---------------------------------------------------------------------------
// CLIP: pre-tokenization (the tokenizer's own, src/models/clip/pretokenize.rs).
// ---------------------------------------------------------------------------

/// GPT-2/CLIP's byte -> symbol table (the tokenizer's own).
fn byte_symbol(b: u8) -> char {
    byte_symbols()[usize::from(b)]
}

/// The bytes in CLIP's vocabulary order (`bytes_to_unicode().values()`): the
/// printable ones first, then the others, each in byte order.
fn clip_byte_order() -> Vec<u8> {
    let printable = |b: u8| byte_symbol(b) as u32 == u32::from(b);
    let mut order: Vec<u8> = (0..=255u8).filter(|&b| printable(b)).collect();
    order.extend((0..=255u8).filter(|&b| !printable(b)));
    order
}

/// Adds the BPE words of `text` to `counts`, as the tokenizer written here splits
/// them: `<|startoftext|>`/`<|endoftext|>` in the raw text are special tokens (and
/// so is a normalized `<|startoftext|>`, whose token is `normalized: true`); an
/// upper-case `<|ENDOFTEXT|>` reaches the pattern and is cut into `<|`, word, `|>`.
fn count_clip_words(text: &str, counts: &mut HashMap<String, u64>) -> Result<()> {
    for piece in text.split(BOS).flat_map(|p| p.split(EOS)) {
        let normalized = normalize(piece);
        for part in normalized.split(BOS) {
            for w in words(part)? {
                *counts.entry(w.to_string()).or_insert(0) += 1;
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// CLIP: BPE training.
// ---------------------------------------------------------------------------

type Pair = (u32, u32);

/// BPE training state. Symbols are vocabulary ids; every word is kept equal to
/// what encoding it with the merges learned so far gives (merges applied by rank),
/// so that the written tokenizer reproduces the training segmentation exactly.
struct BpeTrainer {
    /// id -> token string (the 512 byte symbols first, in CLIP's order).
    tokens: Vec<String>,
    ids: HashMap<String, u32>,
    merges: Vec<Pair>,
    ranks: HashMap<Pair, usize>,
    /// Distinct words (sorted by text) as symbol ids, with their corpus counts.
    words: Vec<(Vec<u32>, u64)>,
    /// Weighted occurrences of each adjacent pair (zero counts removed).
    pair_counts: HashMap<Pair, u64>,
    /// Words that contained each pair when it was counted (may be stale).
    pair_words: HashMap<Pair, Vec<usize>>,
}

impl BpeTrainer {
    fn new(word_counts: HashMap<String, u64>) -> BpeTrainer {
        let mut tokens: Vec<String> = clip_byte_order()
            .into_iter()
            .map(|b| byte_symbol(b).to_string())
            .collect();
        let suffixed: Vec<String> = tokens.iter().map(|t| format!("{t}</w>")).collect();
        tokens.extend(suffixed);
        let ids: HashMap<String, u32> = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as u32))
            .collect();
        let mut sorted: Vec<(String, u64)> = word_counts.into_iter().collect();
        sorted.sort();
        let words = sorted
            .into_iter()
            .map(|(w, c)| {
                let mut syms: Vec<u32> = w
                    .bytes()
                    .map(|b| ids[&byte_symbol(b).to_string()])
                    .collect();
                if let Some(last) = syms.last_mut() {
                    *last += 256; // the `</w>` variant sits 256 entries later
                }
                (syms, c)
            })
            .collect();
        let mut t = BpeTrainer {
            tokens,
            ids,
            merges: Vec::new(),
            ranks: HashMap::new(),
            words,
            pair_counts: HashMap::new(),
            pair_words: HashMap::new(),
        };
        for i in 0..t.words.len() {
            t.count_pairs(i, true);
        }
        t
    }

    /// Adds (or removes) word `i`'s adjacent pairs to the pair counts.
    fn count_pairs(&mut self, i: usize, add: bool) {
        let (syms, count) = &self.words[i];
        for p in syms.windows(2) {
            let pair = (p[0], p[1]);
            if add {
                *self.pair_counts.entry(pair).or_insert(0) += count;
                self.pair_words.entry(pair).or_default().push(i);
            } else if let Some(c) = self.pair_counts.get_mut(&pair) {
                *c -= count;
                if *c == 0 {
                    self.pair_counts.remove(&pair);
                }
            }
        }
    }

    /// The most frequent pair; ties go to the lexicographically smallest (a, b).
    fn best_pair(&self) -> Option<Pair> {
        self.pair_counts
            .iter()
            .max_by_key(|(&(a, b), &c)| {
                (
                    c,
                    Reverse((
                        self.tokens[a as usize].as_str(),
                        self.tokens[b as usize].as_str(),
                    )),
                )
            })
            .map(|(&p, _)| p)
    }

    /// Records the merge of `pair` and re-encodes the words that contain it.
    fn merge(&mut self, pair: Pair) {
        let text = format!(
            "{}{}",
            self.tokens[pair.0 as usize], self.tokens[pair.1 as usize]
        );
        // Two pairs may spell the same token ("ab c", "a bc"): it keeps its first id.
        if !self.ids.contains_key(&text) {
            self.ids.insert(text.clone(), self.tokens.len() as u32);
            self.tokens.push(text);
        }
        self.ranks.insert(pair, self.merges.len());
        self.merges.push(pair);
        let mut affected = self.pair_words.remove(&pair).unwrap_or_default();
        affected.sort_unstable();
        affected.dedup();
        for i in affected {
            if !self.words[i].0.windows(2).any(|p| (p[0], p[1]) == pair) {
                continue; // stale entry
            }
            self.count_pairs(i, false);
            let syms = std::mem::take(&mut self.words[i].0);
            self.words[i].0 = self.encode(syms);
            self.count_pairs(i, true);
        }
    }

    /// Applies merges to `syms` lowest rank first, every occurrence left to right,
    /// until none applies (as `Bpe::word_ids` encodes). Continuing from a word that
    /// no earlier merge applied to gives the same result as encoding it afresh.
    fn encode(&self, mut syms: Vec<u32>) -> Vec<u32> {
        while syms.len() > 1 {
            let best = syms
                .windows(2)
                .filter_map(|p| self.ranks.get(&(p[0], p[1])))
                .min();
            let Some(&rank) = best else { break };
            let (a, b) = self.merges[rank];
            let joined =
                self.ids[&format!("{}{}", self.tokens[a as usize], self.tokens[b as usize])];
            let mut out = Vec::with_capacity(syms.len());
            let mut i = 0;
            while i < syms.len() {
                if i + 1 < syms.len() && (syms[i], syms[i + 1]) == (a, b) {
                    out.push(joined);
                    i += 2;
                } else {
                    out.push(syms[i]);
                    i += 1;
                }
            }
            syms = out;
        }
        syms
    }
}

/// Writes `bytes` to `dir/name` atomically.
fn write_file(dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    write_atomic(dir.join(name), bytes)
}

fn create_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::file(dir, format!("cannot create the tokenizer folder: {e}")))
}

/// vocab.json as CLIP ships it: one JSON object, tokens in id order.
fn vocab_json(tokens: &[String]) -> Result<String> {
    let mut out = String::from("{");
    for (i, t) in tokens.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        let key = serde_json::to_string(t).map_err(|e| Error::msg(e.to_string()))?;
        out.push_str(&format!("{key}: {i}"));
    }
    out.push('}');
    Ok(out)
}

/// The special-token entry of an SD 1.x tokenizer folder.
fn added_token(content: &str, legacy_type: bool) -> serde_json::Value {
    let mut v = serde_json::json!({
        "content": content,
        "lstrip": false,
        "normalized": true,
        "rstrip": false,
        "single_word": false,
    });
    if legacy_type {
        v["__type"] = "AddedToken".into();
    }
    v
}

fn pretty(v: &serde_json::Value) -> Result<String> {
    serde_json::to_string_pretty(v)
        .map(|s| s + "\n")
        .map_err(|e| Error::msg(e.to_string()))
}

/// Trains a CLIP byte-level BPE on `texts` and writes a diffusers SD 1.x
/// `tokenizer/` folder to `dir` (created if missing): `vocab.json`, `merges.txt`,
/// `tokenizer_config.json` and `special_tokens_map.json`.
///
/// Merges follow the usual rule on the corpus's distinct words (split as CLIP's
/// pre-tokenizer does, the last symbol marked `</w>`): the most frequent adjacent
/// pair is merged (ties: lexicographically smallest pair), until every word is one
/// token or `max_merges` merges are learned. The vocabulary is CLIP's 256 byte
/// symbols and their `</w>` forms, one entry per new merge result, then
/// `<|startoftext|>` and `<|endoftext|>`. Same corpus, same bytes.
pub fn write_clip_tokenizer(
    texts: &[String],
    dir: &Path,
    max_merges: usize,
) -> Result<ClipVocabSummary> {
    let mut counts = HashMap::new();
    for t in texts {
        count_clip_words(t, &mut counts)?;
    }
    if counts.is_empty() {
        return Err(Error::file(
            dir,
            format!(
                "cannot train a CLIP tokenizer: the corpus ({} texts) has no words",
                texts.len()
            ),
        ));
    }
    let mut trainer = BpeTrainer::new(counts);
    while trainer.merges.len() < max_merges {
        let Some(pair) = trainer.best_pair() else {
            break; // every word is a single token
        };
        trainer.merge(pair);
    }
    let mut tokens = trainer.tokens;
    let merges: String = trainer
        .merges
        .iter()
        .map(|&(a, b)| format!("{} {}\n", tokens[a as usize], tokens[b as usize]))
        .collect();
    tokens.extend([BOS.to_string(), EOS.to_string()]);

    let special_map = serde_json::json!({
        "bos_token": added_token(BOS, false),
        "eos_token": added_token(EOS, false),
        "unk_token": added_token(EOS, false),
        "pad_token": EOS,
    });
    let config = serde_json::json!({
        "bos_token": added_token(BOS, true),
        "eos_token": added_token(EOS, true),
        "unk_token": added_token(EOS, true),
        "pad_token": EOS,
        "model_max_length": CLIP_MAX_LENGTH,
        "do_lower_case": true,
        "errors": "replace",
        "tokenizer_class": "CLIPTokenizer",
    });
    create_dir(dir)?;
    write_file(dir, "vocab.json", vocab_json(&tokens)?.as_bytes())?;
    write_file(
        dir,
        "merges.txt",
        format!("#version: 0.2\n{merges}").as_bytes(),
    )?;
    write_file(dir, "tokenizer_config.json", pretty(&config)?.as_bytes())?;
    write_file(
        dir,
        "special_tokens_map.json",
        pretty(&special_map)?.as_bytes(),
    )?;
    Ok(ClipVocabSummary {
        vocab_size: tokens.len(),
        merges: trainer.merges.len(),
    })
}

// ---------------------------------------------------------------------------
// BERT: WordPiece vocabulary.
// ---------------------------------------------------------------------------

/// BERT's basic tokenization of `text` (clean-up, CJK spacing, lowercase, accent
/// stripping, split on whitespace and punctuation), as `BertTokenizer` with
/// `do_lower_case=True`.
fn bert_words(text: &str) -> Result<Vec<String>> {
    let err = |e: Box<dyn std::error::Error + Send + Sync>| {
        Error::msg(format!("BERT pre-tokenization failed: {e}"))
    };
    let mut normalized = NormalizedString::from(text);
    BertNormalizer::new(true, true, None, true)
        .normalize(&mut normalized)
        .map_err(err)?;
    let mut pre = PreTokenizedString::from(normalized);
    BertPreTokenizer.pre_tokenize(&mut pre).map_err(err)?;
    Ok(pre
        .get_splits(OffsetReferential::Original, OffsetType::Byte)
        .into_iter()
        .map(|(s, _, _)| s.to_string())
        .filter(|s| !s.is_empty())
        .collect())
}

/// The vocabulary lines: specials, every character as a word start then every
/// character as a `##` continuation (by code point), then the words seen at least
/// `min_count` times (by descending count, then alphabetically).
fn bert_vocab(texts: &[String], min_count: usize) -> Result<Vec<String>> {
    let mut counts: HashMap<String, u64> = HashMap::new();
    for t in texts {
        for w in bert_words(t)? {
            *counts.entry(w).or_insert(0) += 1;
        }
    }
    let chars: BTreeSet<char> = counts.keys().flat_map(|w| w.chars()).collect();
    let mut lines: Vec<String> = BERT_SPECIALS.iter().map(|s| s.to_string()).collect();
    lines.extend(chars.iter().map(|c| c.to_string()));
    lines.extend(chars.iter().map(|c| format!("##{c}")));
    let mut words: Vec<(&String, u64)> = counts
        .iter()
        .filter(|(w, &c)| c >= min_count.max(1) as u64 && w.chars().count() > 1)
        .map(|(w, &c)| (w, c))
        .collect();
    words.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
    lines.extend(
        words
            .into_iter()
            .map(|(w, _)| w.clone())
            .filter(|w| !BERT_SPECIALS.contains(&w.as_str())),
    );
    Ok(lines)
}

/// Writes a BERT `vocab.txt` (one token per line, the line number is the id) for a
/// lower-casing WordPiece tokenizer trained on `texts`: `[PAD]`, `[UNK]`, `[CLS]`,
/// `[SEP]`, `[MASK]`, every character of the normalized corpus as a word start and
/// as a `##` continuation, then every word occurring at least `min_count` times
/// (most frequent first, ties alphabetical). Every corpus word then tokenizes to
/// itself or to known pieces, never to `[UNK]`. Returns the vocabulary size.
pub fn write_bert_vocab(texts: &[String], path: &Path, min_count: usize) -> Result<usize> {
    let lines = bert_vocab(texts, min_count)?;
    if lines.len() == BERT_SPECIALS.len() {
        return Err(Error::file(
            path,
            format!(
                "cannot build a BERT vocabulary: the corpus ({} texts) has no words",
                texts.len()
            ),
        ));
    }
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        create_dir(parent)?;
    }
    let mut text = lines.join("\n");
    text.push('\n');
    write_atomic(path, text.as_bytes())?;
    Ok(lines.len())
}

/// Writes a BERT tokenizer folder: `dir/vocab.txt` (as [`write_bert_vocab`]) and a
/// `tokenizer_config.json` naming `BertTokenizer` with `do_lower_case: true`, so
/// that transformers' `AutoTokenizer` loads the folder too. Returns the vocabulary size.
pub fn write_bert_tokenizer_folder(
    texts: &[String],
    dir: &Path,
    min_count: usize,
) -> Result<usize> {
    let n = write_bert_vocab(texts, &dir.join("vocab.txt"), min_count)?;
    let config = serde_json::json!({
        "do_lower_case": true,
        "tokenizer_class": "BertTokenizer",
    });
    write_file(dir, "tokenizer_config.json", pretty(&config)?.as_bytes())?;
    Ok(n)
}
