//! `VisionTransformer` (timm's): patch embedding, class token, learned position
//! embeddings, pre-LN blocks, final norm, pooling (class token or mean) and an
//! optional linear head, all under timm's state-dict names.

use super::block::{linear_mut, norm_mut, prefixed_mut, timm_linear, Block};
use super::config::{GlobalPool, VitConfig};
use super::pos_embed::resample_abs_pos_embed;
use crate::error::{Error, Result};
use crate::models::{Init, Weights};
use crate::nn::{prefixed, Conv2d, LayerNorm, Linear, Module};
use crate::tensor::{DType, Tensor};
use crate::{bail, ensure};

pub struct VisionTransformer {
    config: VitConfig,
    /// [1, 1, D] when `class_token`.
    cls_token: Option<Tensor>,
    /// [1, prefix + grid², D] (covers the class token, as timm's default).
    pos_embed: Tensor,
    /// `patch_embed.proj`: Conv2d(in_chans, D, patch, stride patch).
    patch_embed: Conv2d,
    blocks: Vec<Block>,
    /// The final LayerNorm on the tokens (`norm`), unless it sits after pooling.
    norm: Option<LayerNorm>,
    /// The final LayerNorm after pooling (`fc_norm`; timm's default for `Avg`).
    fc_norm: Option<LayerNorm>,
    head: Option<Linear>,
}

impl VisionTransformer {
    /// Builds the model from `w` with timm's names. Fresh weights follow timm's
    /// initialisation (pos_embed N(0, 0.02²), cls_token N(0, (1e-6)²), linear weights
    /// N(0, 0.02²) with zero biases, PyTorch's default for the patch convolution).
    ///
    /// From a file, every tensor under this cursor's prefix must be used, with one
    /// deliberate exception: a checkpoint's classifier `head.weight`/`head.bias` is
    /// skipped when the config has no head (`num_classes == 0`), so a full timm
    /// state dict loads as a headless encoder.
    pub fn load(cfg: &VitConfig, w: &Weights) -> Result<VisionTransformer> {
        cfg.validate()?;
        let d = cfg.embed_dim;
        let prefix = cfg.num_prefix_tokens();
        let grid = cfg.grid_size();
        let cls_token = cfg
            .class_token
            .then(|| w.get("cls_token", &[1, 1, d], Init::Normal(1e-6)))
            .transpose()?;
        let pos_embed = w.get(
            "pos_embed",
            &[1, prefix + grid * grid, d],
            Init::Normal(0.02),
        )?;
        let p = cfg.patch_size;
        let patch_embed = w
            .pp("patch_embed")
            .conv2d("proj", cfg.in_chans, d, p, p, 0)?;
        let blocks = (0..cfg.depth)
            .map(|i| Block::load(cfg, &w.pp("blocks").pp(i)))
            .collect::<Result<Vec<_>>>()?;
        let eps = cfg.layer_norm_eps;
        let (norm, fc_norm) = if cfg.use_fc_norm() {
            (None, Some(w.layer_norm("fc_norm", d, eps)?))
        } else {
            (Some(w.layer_norm("norm", d, eps)?), None)
        };
        let head = (cfg.num_classes > 0)
            .then(|| timm_linear(w, "head", d, cfg.num_classes, true))
            .transpose()?;
        Self::check_all_used(cfg, w)?;
        Ok(VisionTransformer {
            config: cfg.clone(),
            cls_token,
            pos_embed,
            patch_embed,
            blocks,
            norm,
            fc_norm,
            head,
        })
    }

    /// Fails when the file holds tensors under this model's prefix that the config
    /// did not read (other than a skipped classifier head).
    fn check_all_used(cfg: &VitConfig, w: &Weights) -> Result<()> {
        let root = w.full_name("");
        let skip = |n: &str| {
            cfg.num_classes == 0
                && n.strip_prefix(&root)
                    .is_some_and(|local| local == "head.weight" || local == "head.bias")
        };
        let unused: Vec<String> = w
            .unused()
            .into_iter()
            .filter(|n| n.starts_with(&root) && !skip(n))
            .collect();
        if unused.is_empty() {
            return Ok(());
        }
        let shown: Vec<&str> = unused.iter().take(5).map(String::as_str).collect();
        Err(Error::msg(format!(
            "{}: {} tensors are not used by the ViT built from its config (e.g. {}); the config does not describe these weights",
            w.source_name().unwrap_or_default(),
            unused.len(),
            shown.join(", ")
        )))
    }

    pub fn config(&self) -> &VitConfig {
        &self.config
    }

    /// Width of the pooled features (and of every token): `embed_dim`.
    pub fn feature_dim(&self) -> usize {
        self.config.embed_dim
    }

    /// Class tokens in front of the patch tokens (0 or 1).
    pub fn num_prefix_tokens(&self) -> usize {
        self.config.num_prefix_tokens()
    }

    /// The dtype the model computes in (its weights'); inputs must have it.
    pub fn dtype(&self) -> DType {
        self.pos_embed.dtype()
    }

    /// The patch grid (rows, cols) an image [N, C, H, W] gives, checking it fits.
    fn grid_for(&self, x: &Tensor) -> Result<(usize, usize)> {
        let c = &self.config;
        let &[_, ch, h, w] = x.shape() else {
            bail!(
                "ViT: expected images [N, {}, H, W], got shape {:?}",
                c.in_chans,
                x.shape()
            )
        };
        ensure!(x.shape()[0] > 0, "ViT: empty batch (shape {:?})", x.shape());
        ensure!(
            ch == c.in_chans,
            "ViT: expected {} input channels, got {ch} (shape {:?})",
            c.in_chans,
            x.shape()
        );
        ensure!(
            x.dtype() == self.dtype(),
            "ViT: input dtype {} does not match the model's {}",
            x.dtype(),
            self.dtype()
        );
        let p = c.patch_size;
        if c.dynamic_img_size {
            ensure!(
                h >= p && w >= p && h % p == 0 && w % p == 0,
                "ViT: image size {h}x{w} is not a whole number of {p}x{p} patches"
            );
        } else {
            ensure!(
                h == c.img_size && w == c.img_size,
                "ViT: expected {0}x{0} images, got {h}x{w} (build the model with dynamic_img_size to resample its position embeddings)",
                c.img_size
            );
        }
        Ok((h / p, w / p))
    }

    /// The position embeddings for a `grid` of patches (resampled when it differs
    /// from the one they were trained for).
    fn pos_embed_for(&self, grid: (usize, usize)) -> Result<Tensor> {
        let g = self.config.grid_size();
        resample_abs_pos_embed(&self.pos_embed, (g, g), grid, self.num_prefix_tokens())
    }

    /// timm's `forward_features`: images [N, C, H, W] → tokens [N, prefix + L, D]
    /// (class token first, then the L patches row by row), after the final `norm`
    /// (no norm here when it sits after pooling, `fc_norm`).
    pub fn forward_tokens(&self, x: &Tensor) -> Result<Tensor> {
        let grid = self.grid_for(x)?;
        let n = x.shape()[0];
        let d = self.config.embed_dim;
        // [N, D, gh, gw] → [N, L, D]
        let patches = self
            .patch_embed
            .forward(x)?
            .flatten_from(2)?
            .transpose(1, 2)?;
        let tokens = match &self.cls_token {
            Some(cls) => Tensor::cat(&[&cls.broadcast_as(&[n, 1, d])?, &patches], 1)?,
            None => patches,
        };
        let mut h = tokens.add(&self.pos_embed_for(grid)?)?;
        for block in &self.blocks {
            h = block.forward(&h)?;
        }
        match &self.norm {
            Some(norm) => norm.forward(&h),
            None => Ok(h),
        }
    }

    /// Pools `forward_tokens`' output as timm's `pool` + `fc_norm`: [N, D].
    pub fn pool(&self, tokens: &Tensor) -> Result<Tensor> {
        let &[n, len, d] = tokens.shape() else {
            bail!(
                "ViT pool: expected tokens [N, L, D], got {:?}",
                tokens.shape()
            )
        };
        let prefix = self.num_prefix_tokens();
        ensure!(
            d == self.config.embed_dim && len > prefix,
            "ViT pool: tokens {:?} do not fit the model (D = {}, {prefix} prefix tokens)",
            tokens.shape(),
            self.config.embed_dim
        );
        let pooled = match self.config.global_pool {
            GlobalPool::Token => tokens.narrow(1, 0, 1)?.reshape(&[n, d])?,
            GlobalPool::Avg => tokens
                .narrow(1, prefix, len - prefix)?
                .mean_dims(&[1], false)?,
        };
        match &self.fc_norm {
            Some(norm) => norm.forward(&pooled),
            None => Ok(pooled),
        }
    }

    /// Tokens and pooled features from one pass: ([N, prefix + L, D], [N, D]).
    pub fn forward_tokens_and_pooled(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let tokens = self.forward_tokens(x)?;
        let pooled = self.pool(&tokens)?;
        Ok((tokens, pooled))
    }

    /// timm's `forward_head(pre_logits=True)` after `forward_features`: [N, D].
    pub fn forward_pooled(&self, x: &Tensor) -> Result<Tensor> {
        self.pool(&self.forward_tokens(x)?)
    }

    /// timm's `forward`: pooled features through the head ([N, num_classes]), or
    /// the pooled features themselves ([N, D]) when there is no head.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let pooled = self.forward_pooled(x)?;
        match &self.head {
            Some(head) => head.forward(&pooled),
            None => Ok(pooled),
        }
    }

    /// Every parameter under timm's state-dict names, in timm's order.
    pub fn parameters(&self) -> Vec<(String, Tensor)> {
        let mut p = Vec::new();
        if let Some(cls) = &self.cls_token {
            p.push(("cls_token".to_string(), cls.clone()));
        }
        p.push(("pos_embed".to_string(), self.pos_embed.clone()));
        p.extend(prefixed("patch_embed.proj", self.patch_embed.parameters()));
        for (i, block) in self.blocks.iter().enumerate() {
            p.extend(prefixed(&format!("blocks.{i}"), block.parameters()));
        }
        if let Some(norm) = &self.norm {
            p.extend(prefixed("norm", norm.parameters()));
        }
        if let Some(norm) = &self.fc_norm {
            p.extend(prefixed("fc_norm", norm.parameters()));
        }
        if let Some(head) = &self.head {
            p.extend(prefixed("head", head.parameters()));
        }
        p
    }

    fn params_mut(&mut self) -> Vec<(String, &mut Tensor)> {
        let mut p = Vec::new();
        if let Some(cls) = &mut self.cls_token {
            p.push(("cls_token".to_string(), cls));
        }
        p.push(("pos_embed".to_string(), &mut self.pos_embed));
        p.push((
            "patch_embed.proj.weight".to_string(),
            &mut self.patch_embed.weight,
        ));
        if let Some(b) = &mut self.patch_embed.bias {
            p.push(("patch_embed.proj.bias".to_string(), b));
        }
        for (i, block) in self.blocks.iter_mut().enumerate() {
            p.extend(prefixed_mut(&format!("blocks.{i}"), block.params_mut()));
        }
        if let Some(norm) = &mut self.norm {
            p.extend(norm_mut("norm", norm));
        }
        if let Some(norm) = &mut self.fc_norm {
            p.extend(norm_mut("fc_norm", norm));
        }
        if let Some(head) = &mut self.head {
            p.extend(linear_mut("head", head));
        }
        p
    }

    /// Replaces parameters by timm name (e.g. to restore trained weights or to
    /// differentiate with respect to given tensors). Each tensor must have the
    /// shape and dtype of the one it replaces; unknown names are errors; names not
    /// given keep their tensors.
    pub fn set_parameters(&mut self, named: &[(String, Tensor)]) -> Result<()> {
        let mut slots = self.params_mut();
        for (name, t) in named {
            let Some((_, slot)) = slots.iter_mut().find(|(n, _)| n == name) else {
                bail!("ViT: no parameter named `{name}`")
            };
            ensure!(
                t.shape() == slot.shape() && t.dtype() == slot.dtype(),
                "ViT: parameter `{name}` is {:?} {}, got {:?} {}",
                slot.shape(),
                slot.dtype(),
                t.shape(),
                t.dtype()
            );
            **slot = t.clone();
        }
        Ok(())
    }
}
