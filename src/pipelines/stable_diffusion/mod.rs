//! Stable Diffusion text-to-image (diffusers' StableDiffusionPipeline) over a
//! diffusers-layout folder.

mod folder;
mod pipeline;

pub use folder::PipelineFolder;
pub use pipeline::{EncodedPrompts, StableDiffusion};
