//! BERT (transformers `BertModel` names) and its WordPiece tokenizer: the report encoder.
//!
//! Stage 2 of the pipeline encodes reports with Bio_ClinicalBERT (BERT-base,
//! WordPiece, 112 tokens). `BertModel` loads its config.json and weights (bare
//! `BertModel` names or the `bert.`-prefixed `BertForPreTraining` layout);
//! `BertTokenizer` reads its vocab.txt (or a tokenizer.json) and batches reports
//! with truncation reported. `BertModel::new_random` initialises fresh weights
//! as transformers does; `forward_with` can also return every layer's output and
//! the last layer's [CLS] attention row (MGCA's word weights). Dropout is not
//! implemented (eval-mode semantics).

mod config;
mod embeddings;
mod layer;
mod model;
mod tokenizer;
mod tokenizer_files;

pub use config::{BertActivation, BertConfig};
pub use model::{BertForwardOptions, BertModel, BertOutput};
pub use tokenizer::{BertBatch, BertTokenizer, Padding, DEFAULT_MAX_LEN};
pub use tokenizer_files::BertTokenizerSettings;
