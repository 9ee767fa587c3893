//! medsyn: a lean runtime for synthetic-data medical vision-language pre-training.
//!
//! Layers, bottom up: `tensor` (storage, layouts, dtypes) → `backend` (CPU kernels;
//! CUDA next) → `ops` (forward + backward per op) with `autograd` → `nn` layers →
//! models and pipelines. `io` reads and writes safetensors through memory maps;
//! `optim` holds AdamW, loss scaling, clipping and schedules.

pub mod autograd;
pub mod backend;
pub mod cli;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod data;
pub mod error;
pub mod eval;
pub mod imageio;
pub mod io;
pub mod models;
pub mod nn;
pub mod ops;
pub mod optim;
pub mod pipelines;
pub mod progress;
pub mod schedulers;
pub mod tensor;

pub use error::{Error, Result};
pub use tensor::{DType, Device, Tensor};
