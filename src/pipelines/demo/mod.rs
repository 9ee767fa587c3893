//! `medsyn demo`: the paper's experiment in miniature on phantom data medsyn makes
//! itself — generator trained on "real" phantom pairs, one synthetic image per real
//! report, ConVIRT on real vs synthetic pairs, linear probes at 1/10/100 % labels.

pub mod generator_init;
pub mod preset;
pub mod report;
pub mod run;
pub mod sets;
pub mod stages;
pub mod text_encoder_init;
pub mod tokenizer_files;

pub use preset::{Preset, DEMO_LABELS};
pub use run::{run_demo, DemoOptions};
