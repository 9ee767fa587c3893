//! Vision–language pre-training on image–report pairs: the method seam (what a
//! method takes from the encoders and gives back as a loss) and ConVIRT. GLoRIA and
//! MGCA plug into the same seam (see `method.rs`).

pub mod convirt;
pub mod encoders;
pub mod export;
pub mod method;
pub mod projection;
pub mod train;

pub use convirt::{Convirt, ConvirtConfig};
pub use encoders::{ImageArch, ImageEncoder, TextEncoder, TextPooling};
pub use method::{FeatureNeeds, ImageFeatures, MethodLoss, PretrainMethod, TextFeatures};
pub use projection::ProjectionHead;
pub use train::{
    pretrain, MethodName, PretrainModel, PretrainOptions, PretrainSummary, ReportText,
};
