//! The seam between the encoders and a pre-training method.
//!
//! A method declares which encoder outputs it needs ([`FeatureNeeds`]); the trainer
//! runs the image and text encoders once per batch, hands over [`ImageFeatures`] and
//! [`TextFeatures`], and back-propagates the method's [`MethodLoss`] through the
//! method's own modules and both encoders. What the planned methods use:
//! - ConVIRT: the global features only (projection heads + symmetric InfoNCE).
//! - GLoRIA: also `ImageFeatures::local` (a ResNet's layer-3 map as [N, R, C] region
//!   features) and `TextFeatures::tokens` with `mask` (word features), for the
//!   attention-weighted word–region loss.
//! - MGCA: also the token features of both sides (ViT patch tokens, BERT word
//!   tokens) for token-level alignment, plus its own prototype layer (Sinkhorn–Knopp
//!   assignments), which lives in the method like ConVIRT's heads do.

use crate::error::Result;
use crate::tensor::Tensor;

/// Which encoder outputs a method reads beyond the global ones.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FeatureNeeds {
    /// Image region/patch features.
    pub image_local: bool,
    /// Text token features (and their mask).
    pub text_tokens: bool,
}

/// Image encoder outputs for a batch of N images.
#[derive(Clone, Debug)]
pub struct ImageFeatures {
    /// [N, Dv]: pooled features (ResNet global average pool, ViT class token).
    pub global: Tensor,
    /// [N, R, Dl]: region or patch features, when the method asked for them.
    pub local: Option<Tensor>,
}

/// Text encoder outputs for a batch of N reports.
#[derive(Clone, Debug)]
pub struct TextFeatures {
    /// [N, Dt]: the report embedding (BERT's [CLS] state, or a pooling of tokens).
    pub global: Tensor,
    /// [N, L, Dt]: token features, when the method asked for them.
    pub tokens: Option<Tensor>,
    /// [N, L]: 1 for real tokens, 0 for padding (with `tokens`).
    pub mask: Option<Tensor>,
}

/// A method's loss for one batch: the tensor to back-propagate and named scalar
/// parts for the metrics log (e.g. ConVIRT: "image_to_text" and "text_to_image").
pub struct MethodLoss {
    pub total: Tensor,
    pub parts: Vec<(&'static str, f64)>,
}

/// A vision–language pre-training objective with its own trainable modules.
pub trait PretrainMethod: Send + Sync {
    /// The CLI name (`--method`).
    fn name(&self) -> &'static str;
    /// Encoder outputs the method needs beyond the global features.
    fn needs(&self) -> FeatureNeeds;
    /// The method's own parameters (projection heads, prototypes) under the names
    /// its checkpoints use.
    fn parameters(&self) -> Vec<(String, Tensor)>;
    /// The loss of a batch of matched pairs (row i of both sides is one pair).
    fn loss(&self, image: &ImageFeatures, text: &TextFeatures) -> Result<MethodLoss>;
}
