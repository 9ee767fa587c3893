//! What a pre-training run leaves in `--out` besides checkpoints:
//! `image_encoder.safetensors` (torchvision / timm state-dict names, f32, BatchNorm
//! buffers included: `model.load_state_dict(safetensors.torch.load_file(...))`),
//! `text_encoder/` (a transformers BERT folder: model.safetensors, config.json and
//! the tokenizer files), `method.safetensors` (projection heads) and
//! `pretrain_config.json` (what `finetune` needs to rebuild the image encoder and its
//! preprocessing). Every file is written atomically.

use super::train::{full_precision, PretrainModel, PretrainOptions};
use crate::data::write_atomic;
use crate::error::{Error, Result};
use crate::io::save_safetensors;
use crate::optim::AdamW;
use crate::tensor::{DType, Tensor};
use serde_json::json;
use std::path::Path;

/// Files copied from the text encoder's folder next to the trained weights.
const TOKENIZER_FILES: [&str; 5] = [
    "config.json",
    "vocab.txt",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
];

/// Tensors under `prefix.` with the prefix removed.
fn under(named: &[(String, Tensor)], prefix: &str) -> Vec<(String, Tensor)> {
    let p = format!("{prefix}.");
    named
        .iter()
        .filter_map(|(n, t)| Some((n.strip_prefix(&p)?.to_string(), t.clone())))
        .collect()
}

/// Floating tensors as f32 (integer buffers such as num_batches_tracked unchanged).
fn as_f32(t: &Tensor) -> Result<Tensor> {
    match t.dtype() {
        DType::F64 | DType::F16 | DType::BF16 => t.to_dtype(DType::F32),
        _ => Ok(t.clone()),
    }
}

fn save(path: &Path, entries: &[(String, Tensor)]) -> Result<()> {
    let f32s: Vec<(String, Tensor)> = entries
        .iter()
        .map(|(n, t)| Ok((n.clone(), as_f32(t)?)))
        .collect::<Result<_>>()?;
    let refs: Vec<(&str, &Tensor)> = f32s.iter().map(|(n, t)| (n.as_str(), t)).collect();
    save_safetensors(path, &refs, None)
}

/// The image encoder's state dict with the trained (fp32 master) parameters.
pub fn image_state_dict(
    model: &PretrainModel,
    trained: &[(String, Tensor)],
) -> Vec<(String, Tensor)> {
    let params = under(trained, "image_encoder");
    model
        .image
        .state_dict()
        .into_iter()
        .map(|(n, t)| match params.iter().find(|(p, _)| *p == n) {
            Some((_, master)) => (n, master.clone()),
            None => (n, t),
        })
        .collect()
}

pub(super) fn export_run(
    opts: &PretrainOptions,
    model: &PretrainModel,
    named: &[(String, Tensor)],
    opt: &AdamW,
) -> Result<()> {
    let trained = full_precision(named, opt)?;
    save(
        &opts.out.join("image_encoder.safetensors"),
        &image_state_dict(model, &trained),
    )?;
    save(
        &opts.out.join("method.safetensors"),
        &under(&trained, "method"),
    )?;
    let text_dir = opts.out.join("text_encoder");
    std::fs::create_dir_all(&text_dir)
        .map_err(|e| Error::file(&text_dir, format!("cannot create: {e}")))?;
    save(
        &text_dir.join("model.safetensors"),
        &under(&trained, "text_encoder"),
    )?;
    for name in TOKENIZER_FILES {
        let src = opts.text_encoder.join(name);
        if src.is_file() {
            let bytes = std::fs::read(&src).map_err(|e| Error::file(&src, e))?;
            write_atomic(text_dir.join(name), &bytes)?;
        }
    }
    let config = json!({
        "method": format!("{:?}", opts.method).to_lowercase(),
        "image_encoder": opts.image_encoder,
        "image_init": opts.image_init,
        "proj_dim": opts.proj_dim,
        "temperature": opts.temperature,
        "text_pooling": format!("{:?}", opts.text_pooling).to_lowercase(),
        "max_text_tokens": opts.max_text_tokens,
        "resize": opts.resize,
        "crop": opts.crop,
        "mean": opts.mean,
        "std": opts.std,
        "image_feature_dim": model.image.feature_dim(),
        "text_feature_dim": model.text.feature_dim(),
    });
    let text = serde_json::to_string_pretty(&config).map_err(|e| Error::msg(e.to_string()))?;
    write_atomic(opts.out.join("pretrain_config.json"), text.as_bytes())
}
