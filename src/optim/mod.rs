//! Optimisation: AdamW with fp32 master weights and fp32 moments, dynamic loss
//! scaling for half-precision training, gradient-norm clipping, learning-rate
//! schedules and parameter EMA.

mod adamw;
mod clip;
mod ema;
mod loss_scale;
mod schedule;

pub use adamw::{AdamW, AdamWConfig, ParamGroup};
pub use clip::{clip_grad_norm, clip_grad_norm_tensor};
pub use ema::{Ema, EmaConfig};
pub use loss_scale::{LossScaler, LossScalerConfig};
pub use schedule::WarmupCosine;
