//! End-to-end jobs built on the models: Stable Diffusion generation (with its work
//! list, seeds and shards) and generator fine-tuning, pre-training, fine-tuning and the demo.

pub mod checkpoint;
pub mod demo;
pub mod finetune;
pub mod generate;
pub mod pretrain;
pub mod run_log;
pub mod stable_diffusion;
pub mod train_generator;
pub mod work;
