//! A diffusers `StableDiffusionPipeline` folder on disk: `model_index.json` and the
//! component sub-folders, checked up front so a bad checkout fails with one clear message.

use crate::error::{Error, Result};
use crate::io::{find_pickled_weights, pickle_hint};
use crate::models::Config;
use std::path::{Path, PathBuf};

/// The components medsyn reads, with the classes it supports for each.
const COMPONENTS: [(&str, &[&str]); 5] = [
    ("unet", &["UNet2DConditionModel"]),
    ("vae", &["AutoencoderKL"]),
    ("text_encoder", &["CLIPTextModel"]),
    ("tokenizer", &["CLIPTokenizer", "CLIPTokenizerFast"]),
    (
        "scheduler",
        &[
            "PNDMScheduler",
            "DDIMScheduler",
            "DPMSolverMultistepScheduler",
            "EulerDiscreteScheduler",
            "EulerAncestralDiscreteScheduler",
            "UniPCMultistepScheduler",
            "LMSDiscreteScheduler",
            "DDPMScheduler",
        ],
    ),
];

/// A checked pipeline folder.
#[derive(Debug, Clone)]
pub struct PipelineFolder {
    pub root: PathBuf,
    pub index: Config,
}

impl PipelineFolder {
    /// Opens `root`, reads `model_index.json` and checks that each component folder
    /// exists, names a supported class, and has a config and safetensors weights.
    pub fn open(root: &Path) -> Result<PipelineFolder> {
        if !root.is_dir() {
            return Err(Error::file(root, "not a folder (expected a diffusers StableDiffusionPipeline folder with model_index.json, unet/, vae/, text_encoder/, tokenizer/, scheduler/)"));
        }
        let index_path = root.join("model_index.json");
        if !index_path.is_file() {
            return Err(Error::file(root, "no model_index.json: not a diffusers pipeline folder (save one with `pipe.save_pretrained(dir, safe_serialization=True)`)"));
        }
        let index = Config::load(&index_path)?;
        let class = index.str_or("_class_name", "StableDiffusionPipeline")?;
        if !["StableDiffusionPipeline", "StableDiffusionImg2ImgPipeline"].contains(&class.as_str())
        {
            return Err(Error::file(&index_path, format!("`_class_name` is {class}: medsyn runs StableDiffusionPipeline folders (SD 1.x / 2.x, RoentGen)")));
        }
        let folder = PipelineFolder {
            root: root.to_path_buf(),
            index,
        };
        for (name, classes) in COMPONENTS {
            if name == "vae" && folder.is_pixel_space() {
                continue;
            }
            folder.check_component(name, classes)?;
        }
        Ok(folder)
    }

    /// A pixel-space pipeline (medsyn's demo generator): `model_index.json` names no
    /// `vae` (absent or null) and there is no `vae/` folder, so the U-Net denoises
    /// RGB pixels in [-1, 1] directly. diffusers' StableDiffusionPipeline needs a VAE
    /// and does not load such a folder.
    pub fn is_pixel_space(&self) -> bool {
        let named = self.index.get("vae").is_some_and(|e| {
            !e.is_null() && !e.as_array().is_some_and(|a| a.iter().all(|v| v.is_null()))
        });
        !named && !self.root.join("vae").exists()
    }

    fn check_component(&self, name: &str, classes: &[&str]) -> Result<()> {
        let dir = self.root.join(name);
        let index_path = self.index.path();
        if let Some(entry) = self.index.get(name) {
            let class = entry
                .as_array()
                .and_then(|a| a.get(1))
                .and_then(|c| c.as_str());
            match class {
                Some(c) if classes.contains(&c) => {}
                Some(c) => {
                    return Err(Error::file(index_path, format!("component `{name}` is a {c}, which medsyn does not support (supported: {})", classes.join(", "))));
                }
                None => {
                    return Err(Error::file(
                        index_path,
                        format!(
                            "component `{name}` is null or malformed: this pipeline needs a {}",
                            classes[0]
                        ),
                    ));
                }
            }
        }
        if !dir.is_dir() {
            return Err(Error::file(
                &dir,
                format!("missing: the pipeline needs its `{name}` folder"),
            ));
        }
        match name {
            "tokenizer" => {
                let has_bpe = dir.join("vocab.json").is_file() && dir.join("merges.txt").is_file();
                if !has_bpe && !dir.join("tokenizer.json").is_file() {
                    return Err(Error::file(
                        &dir,
                        "no tokenizer files: expected vocab.json + merges.txt (or tokenizer.json)",
                    ));
                }
            }
            "scheduler" => {
                let cfg = dir.join("scheduler_config.json");
                if !cfg.is_file() {
                    return Err(Error::file(&cfg, "missing"));
                }
            }
            _ => {
                let cfg = dir.join("config.json");
                if !cfg.is_file() {
                    return Err(Error::file(&cfg, "missing"));
                }
                let has_safetensors = std::fs::read_dir(&dir)
                    .map_err(|e| Error::file(&dir, e))?
                    .flatten()
                    .any(|e| {
                        let n = e.file_name();
                        let n = n.to_string_lossy();
                        n.ends_with(".safetensors") || n.ends_with(".safetensors.index.json")
                    });
                if !has_safetensors {
                    let pickles = find_pickled_weights(&dir);
                    return Err(match pickles.first() {
                        Some(p) => Error::file(p, format!("medsyn reads safetensors only. {}", pickle_hint(p))),
                        None => Error::file(&dir, "no weights: expected a .safetensors file (or a sharded *.safetensors.index.json)"),
                    });
                }
            }
        }
        Ok(())
    }

    pub fn component(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    pub fn config(&self, name: &str) -> Result<Config> {
        let file = if name == "scheduler" {
            "scheduler_config.json"
        } else {
            "config.json"
        };
        Config::load(self.component(name).join(file))
    }
}
