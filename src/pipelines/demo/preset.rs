//! The demo's two sizes: `quick` (a 2-core CPU in under 10 minutes) and `full`
//! (larger images, sets and schedules, sized for one GPU).

use super::generator_init::GeneratorSpec;
use super::text_encoder_init::TextEncoderSpec;
use crate::error::{Error, Result};

/// Every size and schedule of one demo run.
#[derive(Clone, Debug)]
pub struct Preset {
    pub name: &'static str,
    /// Phantom render size (pixels) of both data sets.
    pub phantom_size: usize,
    /// Image–report pairs of the "real" set (the MIMIC-CXR stand-in).
    pub real_pairs: usize,
    /// Labelled images of the downstream set (the CheXpert stand-in).
    pub downstream_images: usize,
    /// The resolution every model works at (images are resized to it).
    pub resolution: usize,
    pub generator: GeneratorSpec,
    pub generator_steps: u64,
    pub generator_batch: usize,
    pub generator_lr: f64,
    pub sampling_steps: usize,
    pub guidance: f64,
    pub text_encoder: TextEncoderSpec,
    /// ResNet (basic blocks) widths of the image encoder, one block per stage.
    pub encoder_widths: [usize; 4],
    pub pretrain_epochs: usize,
    pub pretrain_batch: usize,
    pub pretrain_lr: f64,
    pub probe_epochs: usize,
    pub judge_epochs: usize,
}

/// The finding columns the probes and the judge are scored on.
pub const DEMO_LABELS: [&str; 5] = [
    "Cardiomegaly",
    "Pleural Effusion",
    "Pneumothorax",
    "Consolidation",
    "Edema",
];

impl Preset {
    pub fn named(name: &str) -> Result<Preset> {
        match name {
            "quick" => Ok(Preset::quick()),
            "full" => Ok(Preset::full()),
            other => Err(Error::msg(format!(
                "--preset {other}: unknown (quick or full)"
            ))),
        }
    }

    /// Sized to finish in under 10 minutes on a 2-core CPU (481 s measured, README).
    pub fn quick() -> Preset {
        Preset {
            name: "quick",
            phantom_size: 64,
            real_pairs: 600,
            downstream_images: 2000,
            resolution: 32,
            generator: GeneratorSpec {
                resolution: 32,
                block_out_channels: vec![16, 32, 64],
                attention_levels: 1,
                text_width: 64,
                text_layers: 2,
            },
            generator_steps: 400,
            generator_batch: 16,
            generator_lr: 2e-3,
            sampling_steps: 10,
            guidance: 3.0,
            text_encoder: TextEncoderSpec {
                hidden: 64,
                layers: 2,
                heads: 4,
                max_tokens: 128,
            },
            encoder_widths: [16, 32, 64, 128],
            pretrain_epochs: 12,
            pretrain_batch: 32,
            pretrain_lr: 1e-3,
            probe_epochs: 60,
            judge_epochs: 8,
        }
    }

    /// Larger images, sets and schedules: sized for one GPU (hours on a CPU).
    pub fn full() -> Preset {
        Preset {
            name: "full",
            phantom_size: 128,
            real_pairs: 20_000,
            downstream_images: 10_000,
            resolution: 64,
            generator: GeneratorSpec {
                resolution: 64,
                block_out_channels: vec![64, 128, 256, 256],
                attention_levels: 2,
                text_width: 256,
                text_layers: 4,
            },
            generator_steps: 20_000,
            generator_batch: 64,
            generator_lr: 2e-4,
            sampling_steps: 50,
            guidance: 4.0,
            text_encoder: TextEncoderSpec {
                hidden: 256,
                layers: 4,
                heads: 4,
                max_tokens: 128,
            },
            encoder_widths: [64, 128, 256, 512],
            pretrain_epochs: 30,
            pretrain_batch: 128,
            pretrain_lr: 3e-4,
            probe_epochs: 100,
            judge_epochs: 30,
        }
    }
}
