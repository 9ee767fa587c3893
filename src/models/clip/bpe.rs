//! Byte-level BPE with CLIP's `</w>` end-of-word marker, read from `vocab.json`
//! and `merges.txt`, and the byte <-> symbol table it is built on.

use crate::error::{Error, Result};
use std::collections::HashMap;
use std::path::Path;
use std::sync::OnceLock;

/// GPT-2/CLIP's table from bytes to printable symbols: printable Latin-1 bytes
/// map to themselves, the others to U+0100 onwards in byte order.
pub(crate) fn byte_symbols() -> &'static [char; 256] {
    static TABLE: OnceLock<[char; 256]> = OnceLock::new();
    TABLE.get_or_init(|| {
        let printable =
            |b: u32| (0x21..=0x7e).contains(&b) || (0xa1..=0xac).contains(&b) || b >= 0xae;
        let mut table = ['\0'; 256];
        let mut next = 256;
        for b in 0..256u32 {
            table[b as usize] = if printable(b) {
                char::from_u32(b).unwrap()
            } else {
                next += 1;
                char::from_u32(next - 1).unwrap()
            };
        }
        table
    })
}

fn symbol_bytes() -> &'static HashMap<char, u8> {
    static TABLE: OnceLock<HashMap<char, u8>> = OnceLock::new();
    TABLE.get_or_init(|| {
        (0..=255u8)
            .map(|b| (byte_symbols()[b as usize], b))
            .collect()
    })
}

/// The bytes a token stands for: its symbols mapped back to bytes, or the token's
/// own UTF-8 when some character is not a byte symbol (as tokenizers' ByteLevel
/// decoder does for added tokens).
pub(crate) fn token_bytes(token: &str, out: &mut Vec<u8>) {
    let table = symbol_bytes();
    let start = out.len();
    for c in token.chars() {
        match table.get(&c) {
            Some(&b) => out.push(b),
            None => {
                out.truncate(start);
                out.extend_from_slice(token.as_bytes());
                return;
            }
        }
    }
}

pub(crate) struct Bpe {
    vocab: HashMap<String, u32>,
    tokens: HashMap<u32, String>,
    /// Merge priority of a symbol pair (its line in merges.txt).
    ranks: HashMap<(String, String), usize>,
}

impl Bpe {
    /// From `vocab.json` (token -> id) and `merges.txt` ("a b" per line, after an
    /// optional `#version` header).
    pub fn from_files(vocab_path: &Path, merges_path: &Path) -> Result<Bpe> {
        let read = |p: &Path| {
            std::fs::read_to_string(p).map_err(|e| Error::file(p, format!("cannot read: {e}")))
        };
        let vocab: HashMap<String, u32> =
            serde_json::from_str(&read(vocab_path)?).map_err(|e| {
                Error::file(
                    vocab_path,
                    format!("expected a JSON object of token -> id: {e}"),
                )
            })?;
        let mut merges = Vec::new();
        for (line_no, line) in read(merges_path)?.lines().enumerate() {
            if line.starts_with("#version") || line.trim().is_empty() {
                continue;
            }
            match line.split_once(' ') {
                Some((a, b)) if !a.is_empty() && !b.is_empty() && !b.contains(' ') => {
                    merges.push((a.to_string(), b.to_string()))
                }
                _ => {
                    let why = format!(
                        "line {}: expected two symbols separated by one space, got {line:?}",
                        line_no + 1
                    );
                    return Err(Error::file(merges_path, why));
                }
            }
        }
        Bpe::new(vocab, merges, vocab_path)
    }

    /// From a vocabulary and merges in priority order (`source` names them in errors).
    pub fn new(
        vocab: HashMap<String, u32>,
        merges: Vec<(String, String)>,
        source: &Path,
    ) -> Result<Bpe> {
        if vocab.is_empty() {
            return Err(Error::file(source, "the vocabulary is empty"));
        }
        let tokens = vocab.iter().map(|(t, &i)| (i, t.clone())).collect();
        let mut ranks = HashMap::with_capacity(merges.len());
        for (rank, pair) in merges.into_iter().enumerate() {
            ranks.entry(pair).or_insert(rank);
        }
        Ok(Bpe {
            vocab,
            tokens,
            ranks,
        })
    }

    pub fn id(&self, token: &str) -> Option<u32> {
        self.vocab.get(token).copied()
    }

    /// One more than the largest id.
    pub fn len(&self) -> usize {
        self.tokens.keys().max().map_or(0, |&m| m as usize + 1)
    }

    pub fn token(&self, id: u32) -> Option<&str> {
        self.tokens.get(&id).map(String::as_str)
    }

    /// Appends the ids of one pre-tokenized word: its UTF-8 bytes as symbols, the
    /// last one marked `</w>`, merged pair by pair in merges.txt order. A symbol
    /// missing from the vocabulary becomes `unk` (an error without one).
    pub fn word_ids(&self, word: &str, unk: Option<u32>, out: &mut Vec<i64>) -> Result<()> {
        let table = byte_symbols();
        let mut symbols: Vec<String> = word
            .bytes()
            .map(|b| table[b as usize].to_string())
            .collect();
        let Some(last) = symbols.last_mut() else {
            return Ok(());
        };
        last.push_str("</w>");
        while symbols.len() > 1 {
            let best = symbols
                .windows(2)
                .filter_map(|p| self.ranks.get(&(p[0].clone(), p[1].clone())))
                .min();
            let Some(&rank) = best else { break };
            symbols = self.merge_all(symbols, rank);
        }
        for s in &symbols {
            match self.vocab.get(s).copied().or(unk) {
                Some(id) => out.push(id as i64),
                None => crate::bail!(
                    "CLIP tokenizer: symbol {s:?} of {word:?} is not in vocab.json and there is no unknown token"
                ),
            }
        }
        Ok(())
    }

    /// Merges every occurrence of the pair with merge rank `rank`, left to right.
    fn merge_all(&self, symbols: Vec<String>, rank: usize) -> Vec<String> {
        let mut merged = Vec::with_capacity(symbols.len());
        let mut it = symbols.into_iter().peekable();
        while let Some(a) = it.next() {
            let pair_rank = it
                .peek()
                .and_then(|b| self.ranks.get(&(a.clone(), b.clone())));
            if pair_rank == Some(&rank) {
                let b = it.next().unwrap();
                merged.push(a + &b);
            } else {
                merged.push(a);
            }
        }
        merged
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_table_matches_gpt2() {
        let t = byte_symbols();
        assert_eq!(t[b'!' as usize], '!');
        assert_eq!(t[b' ' as usize], 'Ġ');
        assert_eq!(t[0], 'Ā');
        assert_eq!(t[0xad], 'Ń');
        let mut bytes = Vec::new();
        token_bytes("Ġa</w>", &mut bytes);
        assert_eq!(bytes, b" a</w>");
        bytes.clear();
        token_bytes("中", &mut bytes);
        assert_eq!(bytes, "中".as_bytes());
    }
}
