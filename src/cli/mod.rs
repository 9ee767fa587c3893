//! The `medsyn` command line: clap definitions and dispatch; each subcommand lives in its own file.

pub mod inspect;

use crate::error::Result;
use clap::{Parser, Subcommand};

/// Top-level arguments. New subcommands are variants of [`Command`] with their
/// own `Args` struct and `run` function in a sibling module.
#[derive(Parser, Debug)]
#[command(
    name = "medsyn",
    version = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("MEDSYN_GIT_COMMIT"), ")"),
    about = "A lean Rust runtime for synthetic chest X-ray vision-language pre-training",
    long_about = "medsyn runs the pipeline behind synthetic-data medical vision-language \
                  pre-training: Stable Diffusion (U-Net, VAE, CLIP text encoder) generates \
                  chest X-rays from reports, and image/text encoders (ResNet-50, ViT-B/16, \
                  BERT) are pre-trained and evaluated on them. Weights are read from \
                  safetensors files through memory maps.",
    propagate_version = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Show the tensors, parameter counts and sizes of weight files or model folders
    ///
    /// Lists each tensor's name, dtype and shape (sorted by name) in a .safetensors
    /// file, a sharded *.safetensors.index.json, or a diffusers/transformers model
    /// folder, then parameter counts and bytes per component and in total. Only
    /// headers are read, so this is instant even for multi-GB checkpoints.
    Inspect(inspect::InspectArgs),
}

/// Runs the parsed command.
pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Inspect(args) => inspect::run(&args),
    }
}
