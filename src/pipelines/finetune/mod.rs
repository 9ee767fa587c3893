//! Downstream fine-tuning and evaluation of a pre-trained image encoder: multi-label
//! classification with a fraction of the labels (the label-efficiency protocol).

pub mod classify;
pub mod encoder_source;
pub mod subset;

pub use classify::{finetune, FinetuneOptions, FinetuneSummary, Mode, Uncertain};
pub use encoder_source::EncoderSource;
pub use subset::label_subset;
