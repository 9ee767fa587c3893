//! The demo's untrained text-to-image generator: a pixel-space Stable Diffusion
//! folder (CLIP tokenizer built from the report corpus, a small CLIP text encoder
//! and conditional U-Net with PyTorch-default random weights, a DDIM scheduler with
//! DDPM's linear betas and the v target) that `train-generator` then trains.

use super::tokenizer_files::write_clip_tokenizer;
use crate::data::atomic::write_atomic;
use crate::error::{Error, Result};
use crate::io::save_pretrained_weights;
use crate::models::clip::{ClipTextConfig, ClipTextModel};
use crate::models::unet::{UNet2DConditionModel, UNetConfig};
use crate::models::{Config, Weights};
use crate::tensor::{DType, Tensor};
use serde_json::{json, Value};
use std::path::Path;

/// The generator's size.
#[derive(Clone, Debug)]
pub struct GeneratorSpec {
    /// Image width and height in pixels (the U-Net's `sample_size`).
    pub resolution: usize,
    pub block_out_channels: Vec<usize>,
    /// How many of the lowest-resolution levels have cross-attention.
    pub attention_levels: usize,
    /// Width of the CLIP text encoder (and the U-Net's `cross_attention_dim`).
    pub text_width: usize,
    pub text_layers: usize,
}

/// Writes an untrained pixel-space pipeline for `reports` into `dir` (replacing it).
pub fn write_initial_generator(
    dir: &Path,
    reports: &[String],
    spec: &GeneratorSpec,
    seed: u64,
) -> Result<()> {
    let levels = spec.block_out_channels.len();
    if levels == 0 || spec.attention_levels > levels || !spec.text_width.is_multiple_of(16) {
        return Err(Error::msg(format!(
            "demo generator: bad size {spec:?} (need ≥ 1 level, attention levels ≤ levels, text width a multiple of 16)"
        )));
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::file(dir, e))?;
    let vocab = write_clip_tokenizer(reports, &dir.join("tokenizer"), 20_000)?;

    let text_config = json!({
        "architectures": ["CLIPTextModel"],
        "model_type": "clip_text_model",
        "hidden_act": "quick_gelu",
        "hidden_size": spec.text_width,
        "intermediate_size": 4 * spec.text_width,
        "num_attention_heads": spec.text_width / 16,
        "num_hidden_layers": spec.text_layers,
        "max_position_embeddings": 77,
        "vocab_size": vocab.vocab_size,
        "bos_token_id": vocab.vocab_size - 2,
        "eos_token_id": vocab.vocab_size - 1,
        "pad_token_id": vocab.vocab_size - 1,
        "layer_norm_eps": 1e-5,
        "projection_dim": spec.text_width,
        "attention_dropout": 0.0,
        "initializer_range": 0.02,
        "initializer_factor": 1.0,
    });
    let plain = levels - spec.attention_levels;
    let down: Vec<&str> = (0..levels)
        .map(|i| {
            if i < plain {
                "DownBlock2D"
            } else {
                "CrossAttnDownBlock2D"
            }
        })
        .collect();
    let up: Vec<&str> = (0..levels)
        .map(|i| {
            if i < spec.attention_levels {
                "CrossAttnUpBlock2D"
            } else {
                "UpBlock2D"
            }
        })
        .collect();
    let unet_config = json!({
        "_class_name": "UNet2DConditionModel",
        "sample_size": spec.resolution,
        "in_channels": 3,
        "out_channels": 3,
        "block_out_channels": spec.block_out_channels,
        "down_block_types": down,
        "up_block_types": up,
        "mid_block_type": "UNetMidBlock2DCrossAttn",
        "layers_per_block": 1,
        "cross_attention_dim": spec.text_width,
        "attention_head_dim": 4,
        "norm_num_groups": 8,
        "norm_eps": 1e-5,
        "flip_sin_to_cos": true,
        "freq_shift": 0,
        "act_fn": "silu",
    });
    // DDPM's pixel-space betas; DDIM clips the predicted image to [-1, 1]. The v target
    // makes the high-noise steps predict the image itself, which a briefly trained
    // model gets right first (the layout a report describes).
    let scheduler_config = json!({
        "_class_name": "DDIMScheduler",
        "num_train_timesteps": 1000,
        "beta_schedule": "linear",
        "beta_start": 0.0001,
        "beta_end": 0.02,
        "clip_sample": true,
        "clip_sample_range": 1.0,
        "set_alpha_to_one": false,
        "steps_offset": 0,
        "timestep_spacing": "trailing",
        "prediction_type": "v_prediction",
    });
    // No `vae`: a pixel-space pipeline (see PipelineFolder::is_pixel_space).
    let index = json!({
        "_class_name": "StableDiffusionPipeline",
        "scheduler": ["diffusers", "DDIMScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
    });

    let text_path = dir.join("text_encoder").join("config.json");
    let cfg = ClipTextConfig::from_config(&Config::from_value(&text_path, text_config.clone())?)?;
    let text = ClipTextModel::load(&cfg, &Weights::random(seed, DType::F32))?;
    write_component(
        dir,
        "text_encoder",
        "model.safetensors",
        &text_config,
        &text.parameters(),
    )?;

    let unet_path = dir.join("unet").join("config.json");
    let cfg = UNetConfig::from_config(&Config::from_value(&unet_path, unet_config.clone())?)?;
    let unet = UNet2DConditionModel::load(&cfg, &Weights::random(seed ^ 0x5eed, DType::F32))?;
    write_component(
        dir,
        "unet",
        "diffusion_pytorch_model.safetensors",
        &unet_config,
        &unet.parameters(),
    )?;

    write_json(
        &dir.join("scheduler").join("scheduler_config.json"),
        &scheduler_config,
    )?;
    // The index last: its presence marks a complete folder.
    write_json(&dir.join("model_index.json"), &index)
}

fn write_component(
    dir: &Path,
    name: &str,
    file: &str,
    config: &Value,
    params: &[(String, Tensor)],
) -> Result<()> {
    let sub = dir.join(name);
    write_json(&sub.join("config.json"), config)?;
    save_pretrained_weights(sub.join(file), params)
}

fn write_json(path: &Path, value: &Value) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| Error::file(parent, e))?;
    }
    let text = serde_json::to_string_pretty(value).map_err(|e| Error::file(path, e))?;
    write_atomic(path, text.as_bytes())
}
