//! diffusers' `AutoencoderKL` (the Stable Diffusion VAE), built from its `config.json`
//! and loaded from a diffusers `vae/` folder.

mod config;
mod decoder;
mod encoder;
mod mid;
mod model;

pub use config::VaeConfig;
pub use decoder::{Decoder, UpDecoderBlock};
pub use encoder::{DownEncoderBlock, Encoder};
pub use mid::VaeMidBlock;
pub use model::{AutoencoderKL, DiagonalGaussian};
