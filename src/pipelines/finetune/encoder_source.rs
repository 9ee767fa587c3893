//! Where `finetune` takes its image encoder from: a `pretrain` output folder (its
//! architecture and preprocessing come along from pretrain_config.json), a
//! torchvision/timm state dict with `--image-encoder`, or `random` initialisation
//! (the baseline of the label-efficiency table).

use crate::error::{Error, Result};
use crate::pipelines::pretrain::{ImageArch, ImageEncoder};
use crate::tensor::DType;
use crate::{bail, ensure};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// The encoder and the image preprocessing it was trained with.
pub struct EncoderSource {
    pub arch_spec: String,
    pub weights: Option<PathBuf>,
    pub resize: usize,
    pub crop: usize,
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

fn floats(cfg: &Value, key: &str, path: &Path) -> Result<Vec<f32>> {
    cfg[key]
        .as_array()
        .and_then(|a| a.iter().map(|v| v.as_f64().map(|x| x as f32)).collect())
        .ok_or_else(|| Error::file(path, format!("key `{key}`: expected a list of numbers")))
}

impl EncoderSource {
    /// `encoder` is a pretrain folder, a .safetensors file or `random`; `arch` is
    /// required for the latter two and must agree with a folder's when given.
    pub fn resolve(encoder: &str, arch: Option<&str>) -> Result<EncoderSource> {
        let defaults = |spec: &str, weights| EncoderSource {
            arch_spec: spec.to_string(),
            weights,
            resize: 256,
            crop: 224,
            mean: vec![0.5],
            std: vec![0.5],
        };
        if encoder == "random" {
            let Some(spec) = arch else {
                bail!("--encoder random needs --image-encoder (e.g. resnet50)");
            };
            return Ok(defaults(spec, None));
        }
        let path = Path::new(encoder);
        if path.is_dir() {
            let cfg_path = path.join("pretrain_config.json");
            let text = std::fs::read_to_string(&cfg_path).map_err(|e| {
                Error::file(
                    &cfg_path,
                    format!(
                        "{e} (is {} a `medsyn pretrain` --out folder?)",
                        path.display()
                    ),
                )
            })?;
            let cfg: Value = serde_json::from_str(&text)
                .map_err(|e| Error::file(&cfg_path, format!("invalid JSON: {e}")))?;
            let spec = cfg["image_encoder"]
                .as_str()
                .ok_or_else(|| Error::file(&cfg_path, "key `image_encoder` is missing"))?;
            if let Some(a) = arch {
                ensure!(
                    a == spec,
                    "--image-encoder {a} disagrees with {} ({spec})",
                    cfg_path.display()
                );
            }
            let int = |k: &str| {
                cfg[k]
                    .as_u64()
                    .map(|v| v as usize)
                    .ok_or_else(|| Error::file(&cfg_path, format!("key `{k}` is missing")))
            };
            return Ok(EncoderSource {
                arch_spec: spec.to_string(),
                weights: Some(path.join("image_encoder.safetensors")),
                resize: int("resize")?,
                crop: int("crop")?,
                mean: floats(&cfg, "mean", &cfg_path)?,
                std: floats(&cfg, "std", &cfg_path)?,
            });
        }
        if path.is_file() {
            let Some(spec) = arch else {
                bail!("--encoder {encoder} is a weights file: say its architecture with --image-encoder");
            };
            return Ok(defaults(spec, Some(path.to_path_buf())));
        }
        bail!("--encoder {encoder}: no such folder or file (expected a pretrain --out folder, a .safetensors state dict, or `random`)")
    }

    /// Builds the (headless) encoder in `dtype`.
    pub fn load(&self, dtype: DType, seed: u64) -> Result<(ImageArch, ImageEncoder)> {
        let arch = ImageArch::parse(&self.arch_spec)?;
        let enc = ImageEncoder::load(&arch, self.weights.as_deref(), dtype, seed)?;
        Ok((arch, enc))
    }
}
