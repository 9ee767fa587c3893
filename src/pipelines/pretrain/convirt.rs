//! ConVIRT (Zhang et al. 2020) as the synthetic-data paper's protocol runs it: the
//! pooled image and report features go through one projection head each, are
//! L2-normalised, and the loss is the symmetric InfoNCE over the batch,
//! (CE(v·uᵀ/τ, diag) + CE(u·vᵀ/τ, diag)) / 2 with τ = 0.07 (the fused, tiled
//! `Tensor::info_nce`: memory O(B·d), never the B×B logits).

use super::method::{FeatureNeeds, ImageFeatures, MethodLoss, PretrainMethod, TextFeatures};
use super::projection::ProjectionHead;
use crate::error::Result;
use crate::models::Weights;
use crate::nn::{prefixed, Module};
use crate::tensor::Tensor;
use crate::{bail, ensure};

/// Defaults of the reference protocol: 128-d shared space (MGCA's), τ 0.07, a hidden
/// layer as wide as the encoder's features (ConVIRT's heads).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ConvirtConfig {
    pub proj_dim: usize,
    /// Hidden width of both heads; None = each head's input width.
    pub hidden_dim: Option<usize>,
    pub temperature: f64,
}

impl Default for ConvirtConfig {
    fn default() -> Self {
        ConvirtConfig {
            proj_dim: 128,
            hidden_dim: None,
            temperature: 0.07,
        }
    }
}

pub struct Convirt {
    pub config: ConvirtConfig,
    pub image_projection: ProjectionHead,
    pub text_projection: ProjectionHead,
}

/// Norms below this count as zero in the L2 normalisation (F.normalize's eps).
const NORM_EPS: f64 = 1e-12;

impl Convirt {
    /// Heads for `image_dim`- and `text_dim`-wide encoder features, weights under
    /// `w` as "image_projection.*" and "text_projection.*".
    pub fn load(
        config: ConvirtConfig,
        image_dim: usize,
        text_dim: usize,
        w: &Weights,
    ) -> Result<Self> {
        if !(config.temperature.is_finite() && config.temperature > 0.0) {
            bail!(
                "convirt: the temperature must be positive, got {}",
                config.temperature
            );
        }
        let hidden = |input: usize| config.hidden_dim.unwrap_or(input);
        Ok(Convirt {
            config,
            image_projection: ProjectionHead::load(
                &w.pp("image_projection"),
                image_dim,
                hidden(image_dim),
                config.proj_dim,
            )?,
            text_projection: ProjectionHead::load(
                &w.pp("text_projection"),
                text_dim,
                hidden(text_dim),
                config.proj_dim,
            )?,
        })
    }

    /// The normalised embeddings (v, u), each [N, proj_dim].
    pub fn embed(&self, image: &Tensor, text: &Tensor) -> Result<(Tensor, Tensor)> {
        let v = self
            .image_projection
            .forward(image)?
            .l2_normalize(-1, NORM_EPS)?;
        let u = self
            .text_projection
            .forward(text)?
            .l2_normalize(-1, NORM_EPS)?;
        Ok((v, u))
    }
}

impl PretrainMethod for Convirt {
    fn name(&self) -> &'static str {
        "convirt"
    }

    fn needs(&self) -> FeatureNeeds {
        FeatureNeeds::default()
    }

    fn parameters(&self) -> Vec<(String, Tensor)> {
        let mut all = prefixed("image_projection", self.image_projection.parameters());
        all.extend(prefixed(
            "text_projection",
            self.text_projection.parameters(),
        ));
        all
    }

    fn loss(&self, image: &ImageFeatures, text: &TextFeatures) -> Result<MethodLoss> {
        let (ni, nt) = (image.global.shape()[0], text.global.shape()[0]);
        ensure!(
            ni == nt,
            "convirt: {ni} images but {nt} reports in the batch (pairs must match)"
        );
        ensure!(
            ni >= 2,
            "convirt: a contrastive batch needs at least 2 pairs, got {ni}"
        );
        let (v, u) = self.embed(&image.global, &text.global)?;
        let total = v.info_nce(&u, self.config.temperature)?;
        let value = total.to_scalar()?;
        Ok(MethodLoss {
            total,
            parts: vec![("info_nce", value)],
        })
    }
}
