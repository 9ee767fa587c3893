//! The demo's untrained report encoder: a small BERT (transformers' `BertModel`
//! folder: config.json, model.safetensors, vocab.txt and tokenizer_config.json from the corpus)
//! with transformers' initialisation, for ConVIRT pre-training from scratch.

use super::tokenizer_files::write_bert_tokenizer_folder;
use crate::data::atomic::write_atomic;
use crate::error::{Error, Result};
use crate::io::save_pretrained_weights;
use crate::models::bert::{BertConfig, BertModel};
use crate::models::Config;
use crate::tensor::DType;
use serde_json::json;
use std::path::Path;

/// The report encoder's size.
#[derive(Clone, Debug)]
pub struct TextEncoderSpec {
    pub hidden: usize,
    pub layers: usize,
    pub heads: usize,
    pub max_tokens: usize,
}

/// Writes an untrained BERT folder for `reports` into `dir`.
pub fn write_initial_text_encoder(
    dir: &Path,
    reports: &[String],
    spec: &TextEncoderSpec,
    seed: u64,
) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::file(dir, e))?;
    let vocab_size = write_bert_tokenizer_folder(reports, dir, 2)?;
    let config = json!({
        "architectures": ["BertModel"],
        "model_type": "bert",
        "vocab_size": vocab_size,
        "hidden_size": spec.hidden,
        "num_hidden_layers": spec.layers,
        "num_attention_heads": spec.heads,
        "intermediate_size": 4 * spec.hidden,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0,
        "max_position_embeddings": spec.max_tokens,
        "type_vocab_size": 2,
        "initializer_range": 0.02,
        "layer_norm_eps": 1e-12,
        "pad_token_id": 0,
    });
    let config_path = dir.join("config.json");
    let cfg = BertConfig::from_config(&Config::from_value(&config_path, config.clone())?)?;
    let model = BertModel::new_random(&cfg, seed, DType::F32)?;
    save_pretrained_weights(dir.join("model.safetensors"), &model.parameters())?;
    let text = serde_json::to_string_pretty(&config).map_err(|e| Error::file(&config_path, e))?;
    // The config last: its presence marks a complete folder.
    write_atomic(&config_path, text.as_bytes())
}
