//! The encoders a pre-training run trains, behind one interface each: the image
//! encoder (ResNet with torchvision names, or ViT with timm names) and the report
//! encoder (BERT with its WordPiece tokenizer). They produce the [`ImageFeatures`] /
//! [`TextFeatures`] a [`PretrainMethod`](super::PretrainMethod) consumes.

use super::method::{ImageFeatures, TextFeatures};
use crate::error::{Error, Result};
use crate::io::TensorSet;
use crate::models::bert::{BertModel, BertTokenizer};
use crate::models::resnet::{ResNet, ResNetConfig};
use crate::models::vit::{VisionTransformer, VitConfig};
use crate::models::{Config, Weights};
use crate::tensor::{DType, Tensor};
use crate::{bail, ensure};
use std::path::Path;

/// An image encoder architecture: a name on the command line or a JSON config.
#[derive(Clone, Debug)]
pub enum ImageArch {
    Resnet(ResNetConfig),
    Vit(VitConfig),
}

/// Names `--image-encoder` accepts.
pub const IMAGE_ENCODERS: &str =
    "resnet18, resnet34, resnet50, resnet101, resnet152, vit-t16, vit-s16, vit-b16, vit-l16 (or a JSON config file)";

impl ImageArch {
    /// `resnet50`, `vit-b16` (also timm's `vit_base_patch16_224`), ... or the path of a
    /// JSON config: ResNet keys of `ResNetConfig::from_config` with `"architecture":
    /// "resnet"`, or a timm ViT config (`"architecture": "vit_..."`).
    pub fn parse(spec: &str) -> Result<ImageArch> {
        let vit = |name: &str| Ok(ImageArch::Vit(VitConfig::preset(name)?));
        match spec.to_ascii_lowercase().replace('_', "-").as_str() {
            "resnet18" | "resnet34" | "resnet50" | "resnet101" | "resnet152" => {
                let depth: usize = spec[6..].parse().map_err(|_| Error::msg("resnet depth"))?;
                return Ok(ImageArch::Resnet(ResNetConfig::for_depth(depth)?));
            }
            "vit-t16" | "vit-tiny-patch16-224" => return vit("vit_tiny_patch16_224"),
            "vit-s16" | "vit-small-patch16-224" => return vit("vit_small_patch16_224"),
            "vit-b16" | "vit-base-patch16-224" => return vit("vit_base_patch16_224"),
            "vit-l16" | "vit-large-patch16-224" => return vit("vit_large_patch16_224"),
            _ => {}
        }
        let path = Path::new(spec);
        if !path.is_file() {
            bail!("--image-encoder {spec}: not a known architecture ({IMAGE_ENCODERS})");
        }
        let cfg = Config::load(path)?;
        let arch = cfg.str_or("architecture", "resnet")?;
        if arch.starts_with("vit") {
            Ok(ImageArch::Vit(VitConfig::from_config(&cfg)?))
        } else if arch == "resnet" {
            Ok(ImageArch::Resnet(ResNetConfig::from_config(&cfg)?))
        } else {
            Err(Error::file(
                path,
                format!("key `architecture`: `{arch}` is neither \"resnet\" nor a timm ViT name"),
            ))
        }
    }

    /// The same architecture without a classification head (an encoder).
    pub fn headless(self) -> ImageArch {
        match self {
            ImageArch::Resnet(c) => ImageArch::Resnet(c.with_classes(None)),
            ImageArch::Vit(c) => ImageArch::Vit(VitConfig {
                num_classes: 0,
                ..c
            }),
        }
    }

    /// Input channels the encoder expects.
    pub fn in_channels(&self) -> usize {
        match self {
            ImageArch::Resnet(c) => c.in_channels,
            ImageArch::Vit(c) => c.in_chans,
        }
    }
}

/// A headless image encoder.
pub enum ImageEncoder {
    Resnet(ResNet),
    Vit(VisionTransformer),
}

impl ImageEncoder {
    /// Builds `arch` (made headless) in `dtype`: from `init` (a torchvision/timm state
    /// dict as .safetensors; an ImageNet head in it is skipped) or freshly initialised
    /// from `seed`.
    pub fn load(arch: &ImageArch, init: Option<&Path>, dtype: DType, seed: u64) -> Result<Self> {
        let set = init.map(TensorSet::open).transpose()?;
        let w = match &set {
            Some(s) => Weights::from_set(s, dtype),
            None => Weights::random(seed, dtype),
        };
        let enc = match arch.clone().headless() {
            ImageArch::Resnet(c) => ImageEncoder::Resnet(ResNet::load(&c, &w)?),
            ImageArch::Vit(c) => ImageEncoder::Vit(VisionTransformer::load(&c, &w)?),
        };
        if set.is_some() {
            // Weights from a file are loaded as frozen tensors: train them.
            for (_, p) in enc.parameters() {
                p.set_requires_grad(true)?;
            }
        }
        Ok(enc)
    }

    /// Width of the global features.
    pub fn feature_dim(&self) -> usize {
        match self {
            ImageEncoder::Resnet(m) => m.feature_dim(),
            ImageEncoder::Vit(m) => m.feature_dim(),
        }
    }

    /// Global features, and the local ones when asked: a ResNet's layer-3 map as
    /// [N, H·W, C] regions, or a ViT's patch tokens [N, L, D].
    pub fn encode(&self, images: &Tensor, local: bool) -> Result<ImageFeatures> {
        match (self, local) {
            (ImageEncoder::Resnet(m), false) => Ok(ImageFeatures {
                global: m.forward_pooled(images)?,
                local: None,
            }),
            (ImageEncoder::Resnet(m), true) => {
                let (global, map) = m.forward_with_local(images)?;
                let (n, c) = (map.shape()[0], map.shape()[1]);
                let regions = map
                    .reshape(&[n, c, map.numel() / (n * c)])?
                    .transpose(1, 2)?;
                Ok(ImageFeatures {
                    global,
                    local: Some(regions),
                })
            }
            (ImageEncoder::Vit(m), false) => Ok(ImageFeatures {
                global: m.forward_pooled(images)?,
                local: None,
            }),
            (ImageEncoder::Vit(m), true) => {
                let (tokens, global) = m.forward_tokens_and_pooled(images)?;
                let prefix = m.num_prefix_tokens();
                let l = tokens.shape()[1] - prefix;
                Ok(ImageFeatures {
                    global,
                    local: Some(tokens.narrow(1, prefix, l)?),
                })
            }
        }
    }

    /// Learnable tensors under torchvision's / timm's names.
    pub fn parameters(&self) -> Vec<(String, Tensor)> {
        match self {
            ImageEncoder::Resnet(m) => m.parameters(),
            ImageEncoder::Vit(m) => m.parameters(),
        }
    }

    /// Everything a PyTorch `load_state_dict` expects (with BatchNorm buffers).
    pub fn state_dict(&self) -> Vec<(String, Tensor)> {
        match self {
            ImageEncoder::Resnet(m) => m.state_dict(),
            ImageEncoder::Vit(m) => m.parameters(),
        }
    }

    /// Non-learnable state that a checkpoint must also restore (BatchNorm statistics).
    pub fn buffers(&self) -> Vec<(String, Tensor)> {
        match self {
            ImageEncoder::Resnet(m) => m.buffers(),
            ImageEncoder::Vit(_) => Vec::new(),
        }
    }

    /// Training (batch statistics) or evaluation behaviour.
    pub fn set_training(&self, on: bool) {
        if let ImageEncoder::Resnet(m) = self {
            m.set_training(on);
        }
    }
}

/// How a report's token states become one vector.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum TextPooling {
    /// The [CLS] token's final state (MGCA's choice).
    Cls,
    /// The mean over real (unpadded) tokens.
    Mean,
}

/// BERT and its tokenizer.
pub struct TextEncoder {
    pub model: BertModel,
    pub tokenizer: BertTokenizer,
    pub max_len: usize,
    pub pooling: TextPooling,
}

/// A tokenized and encoded batch of reports.
pub struct EncodedText {
    pub features: TextFeatures,
    /// Indices of reports cut at `max_len` tokens.
    pub truncated: Vec<usize>,
}

impl TextEncoder {
    /// A transformers BERT folder (config.json, model.safetensors, vocab.txt or
    /// tokenizer.json), weights in `dtype` and trainable.
    pub fn load(dir: &Path, dtype: DType, max_len: usize, pooling: TextPooling) -> Result<Self> {
        ensure!(
            max_len >= 2,
            "--max-text-tokens must be at least 2, got {max_len}"
        );
        let model = BertModel::from_pretrained(dir, dtype)?;
        ensure!(
            max_len <= model.config().max_position_embeddings,
            "--max-text-tokens {max_len} exceeds {}'s max_position_embeddings {}",
            dir.display(),
            model.config().max_position_embeddings
        );
        for (_, p) in model.parameters() {
            p.set_requires_grad(true)?;
        }
        Ok(TextEncoder {
            tokenizer: BertTokenizer::from_dir(dir)?,
            model,
            max_len,
            pooling,
        })
    }

    pub fn feature_dim(&self) -> usize {
        self.model.hidden_size()
    }

    /// Encodes `texts`; token states and the mask are kept when `tokens` is set.
    pub fn encode<S: AsRef<str>>(&self, texts: &[S], tokens: bool) -> Result<EncodedText> {
        let batch = self.tokenizer.encode_batch(texts, self.max_len)?;
        let out = self.model.forward(
            &batch.input_ids,
            &batch.attention_mask,
            Some(&batch.token_type_ids),
        )?;
        let states = out.last_hidden_state;
        let dtype = states.dtype();
        let global = match self.pooling {
            TextPooling::Cls => {
                let h = states.shape()[2];
                states.narrow(1, 0, 1)?.reshape(&[states.shape()[0], h])?
            }
            TextPooling::Mean => {
                let mask = batch.attention_mask.to_dtype(dtype)?.unsqueeze(2)?;
                let counts = mask.sum_dims(&[1], false)?;
                states.mul(&mask)?.sum_dims(&[1], false)?.div(&counts)?
            }
        };
        let mask = tokens
            .then(|| batch.attention_mask.to_dtype(dtype))
            .transpose()?;
        Ok(EncodedText {
            features: TextFeatures {
                global,
                tokens: tokens.then_some(states),
                mask,
            },
            truncated: batch.truncated,
        })
    }

    /// Learnable tensors under transformers' `BertModel` names.
    pub fn parameters(&self) -> Vec<(String, Tensor)> {
        self.model.parameters()
    }
}
