//! Vision Transformer (timm layout and parameter names): ViT-B/16 image encoder.

mod block;
pub mod config;
pub mod model;
pub mod pos_embed;

pub use config::{GlobalPool, VitConfig};
pub use model::VisionTransformer;
pub use pos_embed::{aa_bicubic_weights, resample_abs_pos_embed};
