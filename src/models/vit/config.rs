//! `VitConfig`: the constructor arguments of timm's `VisionTransformer` that medsyn
//! supports, the named presets (`vit_base_patch16_224`, ...) and reading them from JSON.

use crate::error::{Error, Result};
use crate::models::Config;
use crate::{bail, ensure};

/// How `forward_pooled` reduces the tokens (timm's `global_pool`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GlobalPool {
    /// The class token (`x[:, 0]`).
    Token,
    /// The mean of the patch tokens (prefix tokens excluded).
    Avg,
}

/// timm's `VisionTransformer(...)` arguments (pre-LN blocks, learned absolute
/// position embeddings that cover the class token, exact GELU, no layer scale,
/// no register tokens; dropout and drop-path are not implemented).
#[derive(Clone, Debug, PartialEq)]
pub struct VitConfig {
    /// Square input size the position embeddings were made for.
    pub img_size: usize,
    pub patch_size: usize,
    pub in_chans: usize,
    pub embed_dim: usize,
    pub depth: usize,
    pub num_heads: usize,
    /// MLP hidden width = `int(embed_dim * mlp_ratio)`, as timm.
    pub mlp_ratio: f64,
    pub qkv_bias: bool,
    pub class_token: bool,
    pub global_pool: GlobalPool,
    /// timm's `fc_norm`: put the final LayerNorm after pooling (named `fc_norm`)
    /// instead of on the tokens (named `norm`); `None` = only for `Avg`, as timm.
    pub fc_norm: Option<bool>,
    /// LayerNorm epsilon (timm's ViTs: 1e-6).
    pub layer_norm_eps: f64,
    /// Classes of the linear head; 0 = no head (`forward` returns the pooled features).
    pub num_classes: usize,
    /// timm's `dynamic_img_size`: accept any input whose sides are multiples of
    /// `patch_size`, resampling the position embeddings (bicubic, antialiased, as
    /// `resample_abs_pos_embed`). When false, inputs must be `img_size`².
    pub dynamic_img_size: bool,
}

impl VitConfig {
    /// timm's `vit_base_patch16_224` (ViT-B/16, MGCA's image encoder) without a head.
    pub fn vit_base_patch16_224() -> VitConfig {
        VitConfig {
            img_size: 224,
            patch_size: 16,
            in_chans: 3,
            embed_dim: 768,
            depth: 12,
            num_heads: 12,
            mlp_ratio: 4.0,
            qkv_bias: true,
            class_token: true,
            global_pool: GlobalPool::Token,
            fc_norm: None,
            layer_norm_eps: 1e-6,
            num_classes: 0,
            dynamic_img_size: false,
        }
    }

    /// A timm architecture name: `vit_{tiny,small,base,large}_patch16_224` (no head).
    pub fn preset(name: &str) -> Result<VitConfig> {
        let base = Self::vit_base_patch16_224();
        let (embed_dim, depth, num_heads) = match name {
            "vit_tiny_patch16_224" => (192, 12, 3),
            "vit_small_patch16_224" => (384, 12, 6),
            "vit_base_patch16_224" => (768, 12, 12),
            "vit_large_patch16_224" => (1024, 24, 16),
            _ => bail!(
                "unknown ViT architecture `{name}` (known: vit_tiny_patch16_224, vit_small_patch16_224, vit_base_patch16_224, vit_large_patch16_224)"
            ),
        };
        Ok(VitConfig {
            embed_dim,
            depth,
            num_heads,
            ..base
        })
    }

    /// From a JSON config: `architecture` picks a preset (default
    /// `vit_base_patch16_224`), then timm's argument names override it (`img_size`,
    /// `patch_size`, `in_chans`, `embed_dim`, `depth`, `num_heads`, `mlp_ratio`,
    /// `qkv_bias`, `class_token`, `global_pool`, `fc_norm`, `num_classes`,
    /// `dynamic_img_size`); a timm hub `pretrained_cfg.input_size` sets the image
    /// size and channels. Features medsyn lacks (register tokens, layer scale, ...)
    /// are errors naming the file and key.
    pub fn from_config(cfg: &Config) -> Result<VitConfig> {
        let err = |key: &str, msg: String| Error::file(cfg.path(), format!("key `{key}`: {msg}"));
        let arch = cfg.str_or("architecture", "vit_base_patch16_224")?;
        let mut c = Self::preset(&arch).map_err(|e| err("architecture", e.to_string()))?;
        for (key, why) in [
            ("reg_tokens", "register tokens are not implemented"),
            (
                "no_embed_class",
                "position embeddings must cover the class token",
            ),
            (
                "pre_norm",
                "a LayerNorm before the blocks is not implemented",
            ),
            ("init_values", "layer scale is not implemented"),
            ("qk_norm", "q/k normalisation is not implemented"),
            (
                "dynamic_img_pad",
                "padding inputs to whole patches is not implemented",
            ),
        ] {
            match cfg.get(key) {
                None | Some(serde_json::Value::Null) => {}
                Some(serde_json::Value::Number(n)) if n.as_f64() == Some(0.0) => {}
                Some(_) => cfg.reject(key, why)?,
            }
        }
        if let Some(input) = cfg.get("pretrained_cfg").and_then(|p| p.get("input_size")) {
            match input
                .as_array()
                .map(|a| a.iter().map(|v| v.as_u64()).collect::<Vec<_>>())
            {
                Some(v) if v.len() == 3 && v[1].is_some() && v[1] == v[2] && v[0].is_some() => {
                    c.in_chans = v[0].unwrap() as usize;
                    c.img_size = v[1].unwrap() as usize;
                }
                _ => {
                    return Err(err(
                        "pretrained_cfg.input_size",
                        format!("expected [channels, size, size], got {input}"),
                    ))
                }
            }
        }
        if let Some(v) = cfg.get("img_size") {
            let size = match v.as_array() {
                Some(a) if a.len() == 2 && a[0] == a[1] => a[0].as_u64(),
                Some(_) => None,
                None => v.as_u64(),
            };
            c.img_size = size.ok_or_else(|| {
                err(
                    "img_size",
                    format!("expected a size or [size, size] (square images), got {v}"),
                )
            })? as usize;
        }
        c.patch_size = cfg.usize_or("patch_size", c.patch_size)?;
        c.in_chans = cfg.usize_or("in_chans", c.in_chans)?;
        c.embed_dim = cfg.usize_or("embed_dim", c.embed_dim)?;
        c.depth = cfg.usize_or("depth", c.depth)?;
        c.num_heads = cfg.usize_or("num_heads", c.num_heads)?;
        c.mlp_ratio = cfg.f64_or("mlp_ratio", c.mlp_ratio)?;
        c.qkv_bias = cfg.bool_or("qkv_bias", c.qkv_bias)?;
        c.class_token = cfg.bool_or("class_token", c.class_token)?;
        c.global_pool = match cfg
            .choice("global_pool", "token", &["token", "avg"])?
            .as_str()
        {
            "token" => GlobalPool::Token,
            _ => GlobalPool::Avg,
        };
        if cfg.get("fc_norm").is_some_and(|v| !v.is_null()) {
            c.fc_norm = Some(cfg.bool_or("fc_norm", false)?);
        }
        c.num_classes = cfg.usize_or("num_classes", c.num_classes)?;
        c.dynamic_img_size = cfg.bool_or("dynamic_img_size", c.dynamic_img_size)?;
        c.validate()
            .map_err(|e| Error::file(cfg.path(), e.to_string()))?;
        Ok(c)
    }

    /// Checks the sizes fit together.
    pub fn validate(&self) -> Result<()> {
        ensure!(
            self.patch_size > 0 && self.img_size >= self.patch_size,
            "ViT config: img_size {} must be at least one patch of {}",
            self.img_size,
            self.patch_size
        );
        ensure!(
            self.in_chans > 0 && self.embed_dim > 0,
            "ViT config: in_chans and embed_dim must be positive"
        );
        ensure!(
            self.num_heads > 0 && self.embed_dim.is_multiple_of(self.num_heads),
            "ViT config: embed_dim {} is not divisible by num_heads {}",
            self.embed_dim,
            self.num_heads
        );
        ensure!(
            self.mlp_hidden() > 0,
            "ViT config: mlp_ratio {} gives an empty MLP",
            self.mlp_ratio
        );
        ensure!(
            self.class_token || self.global_pool != GlobalPool::Token,
            "ViT config: global_pool \"token\" needs class_token"
        );
        ensure!(
            self.layer_norm_eps > 0.0,
            "ViT config: layer_norm_eps must be positive"
        );
        Ok(())
    }

    /// Patches per side at `img_size`.
    pub fn grid_size(&self) -> usize {
        self.img_size / self.patch_size
    }

    /// Class token (0 or 1).
    pub fn num_prefix_tokens(&self) -> usize {
        self.class_token as usize
    }

    /// MLP hidden width (`int(embed_dim * mlp_ratio)`).
    pub fn mlp_hidden(&self) -> usize {
        (self.embed_dim as f64 * self.mlp_ratio) as usize
    }

    /// Whether the final LayerNorm sits after pooling (`fc_norm`) rather than on
    /// the tokens (`norm`).
    pub fn use_fc_norm(&self) -> bool {
        self.fc_norm.unwrap_or(self.global_pool == GlobalPool::Avg)
    }
}
