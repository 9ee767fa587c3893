//! ResNet (torchvision layout and parameter names): ResNet-50 image encoder.

mod block;
mod config;
mod model;

pub use block::{Block, Downsample};
pub use config::{BlockKind, ResNetConfig};
pub use model::{ResNet, ResNetStages};
