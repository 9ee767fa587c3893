//! CLIP's text side as Stable Diffusion 1.x/2.x uses it: the byte-level BPE
//! tokenizer (diffusers' `tokenizer/` folder) and the text encoder
//! (`text_encoder/`, transformers' `CLIPTextModel`).
//!
//! Tokenization follows the transformers installed as the reference (5.x, whose
//! `CLIPTokenizer` is the `tokenizers`-backed one): NFC, whitespace runs to one
//! space, lowercase, CLIP's split pattern, byte-level symbols, BPE with `</w>`.
//! transformers 4's slow tokenizer without ftfy differed only in corner cases
//! (it put spaces around CJK ideographs and dropped control characters).

pub(crate) mod bpe;
mod config;
mod encoder;
pub(crate) mod pretokenize;
mod special_tokens;
mod text_model;
mod tokenizer;
mod tokenizer_json;

pub use config::{ClipActivation, ClipTextConfig};
pub use text_model::{ClipTextModel, ClipTextOutput};
pub use tokenizer::{ClipTokenizer, ClipTokens};
