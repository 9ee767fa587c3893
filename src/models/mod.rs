//! Models built from configs and weights: CLIP text encoder, the Stable Diffusion
//! U-Net and VAE, and the shared blocks they are made of.

pub mod bert;
pub mod blocks;
pub mod clip;
pub mod config;
pub mod resnet;
pub mod unet;
pub mod vae;
pub mod vit;
pub mod weights;

pub use config::Config;
pub use weights::{Init, Weights};
