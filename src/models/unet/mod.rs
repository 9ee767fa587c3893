//! diffusers' `UNet2DConditionModel` (Stable Diffusion 1.x/2.x), built from its
//! `config.json` and loaded from a diffusers `unet/` folder.

mod config;
mod down;
mod mid;
mod model;
mod up;

pub use config::{DownBlockType, UNetConfig, UpBlockType};
pub use down::DownBlock;
pub use mid::MidBlock;
pub use model::UNet2DConditionModel;
pub use up::UpBlock;
