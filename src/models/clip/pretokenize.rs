//! From text to BPE words: splitting out added tokens, CLIP's normalizer (NFC,
//! whitespace runs to one space, lowercase) and CLIP's split pattern.

use crate::error::{Error, Result};
use std::sync::OnceLock;
use tokenizers::utils::SysRegex;
use tokenizers::NormalizedString;

/// One stretch of text after splitting out added tokens.
pub(crate) enum Piece<'a> {
    Token(i64),
    Text(&'a str),
}

/// Splits `text` at occurrences of `tokens` ((content, id)), leftmost first and
/// the longest at a position (tokenizers' added-vocabulary rule).
pub(crate) fn split_added<'a>(text: &'a str, tokens: &[(String, i64)]) -> Vec<Piece<'a>> {
    let mut pieces = Vec::new();
    let (mut start, mut i) = (0, 0);
    while i < text.len() {
        let rest = &text[i..];
        let hit = tokens
            .iter()
            .filter(|(c, _)| !c.is_empty() && rest.starts_with(c.as_str()))
            .max_by_key(|(c, _)| c.len());
        match hit {
            Some((content, id)) => {
                if start < i {
                    pieces.push(Piece::Text(&text[start..i]));
                }
                pieces.push(Piece::Token(*id));
                i += content.len();
                start = i;
            }
            None => i += rest.chars().next().map_or(1, char::len_utf8),
        }
    }
    if start < text.len() {
        pieces.push(Piece::Text(&text[start..]));
    }
    pieces
}

/// transformers' CLIP normalizer: NFC, every whitespace run to one space, then
/// lowercase character by character (no final-sigma rule, as tokenizers).
pub(crate) fn normalize(text: &str) -> String {
    let mut nfc = NormalizedString::from(text);
    nfc.nfc();
    let mut out = String::with_capacity(text.len());
    let mut in_space = false;
    for c in nfc.get().chars() {
        if c.is_whitespace() {
            if !in_space {
                out.push(' ');
            }
            in_space = true;
        } else {
            out.extend(c.to_lowercase());
            in_space = false;
        }
    }
    out
}

/// CLIP's split pattern (transformers' `Split` pre-tokenizer, matches kept).
const PATTERN: &str =
    r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+";

fn pattern() -> Result<&'static SysRegex> {
    static RE: OnceLock<std::result::Result<SysRegex, String>> = OnceLock::new();
    RE.get_or_init(|| SysRegex::new(PATTERN).map_err(|e| e.to_string()))
        .as_ref()
        .map_err(|e| {
            Error::msg(format!(
                "CLIP tokenizer: cannot build the split pattern: {e}"
            ))
        })
}

/// The words of normalized text: letter runs, single digits, contractions and
/// runs of other non-space characters (whitespace is dropped). Unicode classes
/// come from the regex engine tokenizers uses: Rust's `char` predicates differ
/// from `\p{L}`. A `<|startoftext|>`/`<|endoftext|>` that reaches the pattern
/// (not split out as a special token, e.g. upper-case in the prompt) is cut into
/// `<|`, the word and `|>`, as transformers' ByteLevel pre-tokenizer does next.
pub(crate) fn words(normalized: &str) -> Result<Vec<&str>> {
    let mut out = Vec::new();
    for (s, e) in pattern()?.find_iter(normalized) {
        let w = &normalized[s..e];
        if w == "<|startoftext|>" || w == "<|endoftext|>" {
            out.extend([&w[..2], &w[2..w.len() - 2], &w[w.len() - 2..]]);
        } else {
            out.push(w);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_and_splits_like_clip() {
        assert_eq!(normalize("  A\t\nB  Σ "), " a b σ ");
        let n = normalize("It's a 12cm <|endoftext|>!!");
        assert_eq!(
            words(&n).unwrap(),
            [
                "it",
                "'s",
                "a",
                "1",
                "2",
                "cm",
                "<|",
                "endoftext",
                "|>",
                "!!"
            ]
        );
        let toks = vec![("<s>".to_string(), 7), ("<s><s>".to_string(), 9)];
        let p = split_added("a<s><s>b<s>", &toks);
        let kinds: Vec<String> = p
            .iter()
            .map(|p| match p {
                Piece::Token(i) => i.to_string(),
                Piece::Text(t) => t.to_string(),
            })
            .collect();
        assert_eq!(kinds, ["a", "9", "b", "7"]);
    }
}
