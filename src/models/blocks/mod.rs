//! Building blocks shared by the Stable Diffusion U-Net and VAE, with diffusers'
//! semantics and parameter names: ResNet blocks, down/up-sampling, attention,
//! transformer blocks and the timestep embedding.

mod activation;
mod attention;
mod embeddings;
mod resnet;
mod sampling;
mod transformer;

pub use activation::Activation;
pub use attention::{Attention, AttentionConfig};
pub use embeddings::{timestep_embedding, TimestepEmbedding};
pub use resnet::{ResnetBlock2D, ResnetConfig, TimeEmbeddingNorm};
pub use sampling::{Downsample2D, Upsample2D};
pub use transformer::{
    BasicTransformerBlock, FeedForward, FeedForwardKind, Transformer2DConfig, Transformer2DModel,
};

use crate::nn::{prefixed, Module};
use crate::tensor::Tensor;

/// Appends `module`'s parameters to `out` under `prefix.`.
pub(crate) fn push_params(out: &mut Vec<(String, Tensor)>, prefix: &str, module: &dyn Module) {
    out.extend(prefixed(prefix, module.parameters()));
}

/// Appends already-named parameters to `out` under `prefix.`.
pub(crate) fn push_named(
    out: &mut Vec<(String, Tensor)>,
    prefix: &str,
    named: Vec<(String, Tensor)>,
) {
    out.extend(prefixed(prefix, named));
}
