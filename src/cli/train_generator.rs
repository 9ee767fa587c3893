//! `medsyn train-generator`: fine-tune a Stable Diffusion folder on image–prompt pairs.

use crate::error::Result;
use crate::pipelines::train_generator::{train_generator, TrainGeneratorOptions};
use clap::Args;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct TrainGeneratorArgs {
    /// The diffusers StableDiffusionPipeline folder to start from.
    #[arg(long)]
    pub model: PathBuf,
    /// CSV of training pairs: an image path column (PNG; relative to the CSV's folder)
    /// and a prompt column. `generate`'s manifest.csv works as is.
    #[arg(long, value_name = "FILE.csv")]
    pub data: PathBuf,
    /// The CSV column with image paths.
    #[arg(long, default_value = "file")]
    pub image_column: String,
    /// The CSV column with prompts (e.g. report impressions).
    #[arg(long, default_value = "prompt")]
    pub text_column: String,
    /// Output folder: a diffusers pipeline folder (loadable by `generate` and
    /// diffusers) plus checkpoints/ and metrics.jsonl. A rerun resumes from the
    /// newest checkpoint in it.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Total optimizer steps.
    #[arg(long, default_value_t = 1000)]
    pub steps: u64,
    /// Images per micro-batch.
    #[arg(long, default_value_t = 1)]
    pub batch_size: usize,
    /// Micro-batches accumulated per optimizer step.
    #[arg(long, default_value_t = 1)]
    pub grad_accum: usize,
    /// Peak learning rate (diffusers' text-to-image example: 1e-5).
    #[arg(long, default_value_t = 1e-5)]
    pub lr: f64,
    /// Linear warm-up steps.
    #[arg(long, default_value_t = 0)]
    pub warmup_steps: u64,
    /// Decay the learning rate with a cosine to 0 at --steps (default: constant).
    #[arg(long)]
    pub cosine: bool,
    /// AdamW weight decay (diffusers' default 1e-2).
    #[arg(long, default_value_t = 1e-2)]
    pub weight_decay: f64,
    /// Clip the gradient norm to this (0 = off).
    #[arg(long, default_value_t = 1.0)]
    pub max_grad_norm: f64,
    /// Min-SNR loss weighting (diffusers' --snr_gamma; 5.0 is the paper's value): each
    /// sample's loss is weighted by min(SNR, γ)/SNR (epsilon) or min(SNR, γ)/(SNR+1) (v).
    /// Off when not given.
    #[arg(long)]
    pub snr_gamma: Option<f64>,
    /// Training resolution in pixels (default: the model's native size). Images are
    /// resized on the shorter side and centre-cropped.
    #[arg(long)]
    pub resolution: Option<usize>,
    /// Parameter dtype: f32, or bf16 (bf16 compute with fp32 master weights and moments).
    #[arg(long, default_value = "f32")]
    pub dtype: String,
    /// Also train the CLIP text encoder (RoentGen did).
    #[arg(long)]
    pub train_text_encoder: bool,
    /// Keep an EMA of the trained weights and export it.
    #[arg(long)]
    pub ema: bool,
    /// EMA decay ceiling (diffusers' EMAModel schedule (1+n)/(10+n) up to this).
    #[arg(long, default_value_t = 0.9999)]
    pub ema_decay: f64,
    /// Save a checkpoint every N steps (and at the end).
    #[arg(long, default_value_t = 500)]
    pub checkpoint_every: u64,
    /// Checkpoints kept (older ones are deleted).
    #[arg(long, default_value_t = 2)]
    pub keep_checkpoints: usize,
    /// Seed for data order, noise and timesteps.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Where to run: cpu, cuda, cuda:N, or auto (cuda:0 when this build has the CUDA backend
    /// (`--features cuda`) and a GPU is usable, else cpu).
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

pub fn run(args: &TrainGeneratorArgs) -> Result<()> {
    let opts = TrainGeneratorOptions {
        model: args.model.clone(),
        data: args.data.clone(),
        image_column: args.image_column.clone(),
        text_column: args.text_column.clone(),
        out: args.out.clone(),
        steps: args.steps,
        batch_size: args.batch_size,
        grad_accum: args.grad_accum,
        lr: args.lr,
        warmup_steps: args.warmup_steps,
        cosine: args.cosine,
        weight_decay: args.weight_decay,
        max_grad_norm: args.max_grad_norm,
        snr_gamma: args.snr_gamma,
        resolution: args.resolution,
        dtype: super::device::parse_dtype(&args.dtype)?,
        device: super::device::resolve_device(&args.device)?,
        train_text_encoder: args.train_text_encoder,
        ema: args.ema,
        ema_decay: args.ema_decay,
        checkpoint_every: args.checkpoint_every,
        keep_checkpoints: args.keep_checkpoints,
        seed: args.seed,
        quiet: args.quiet,
    };
    let s = train_generator(&opts)?;
    println!(
        "trained steps {}..{} in {:.1} s, last loss {:.5}; diffusers folder: {}",
        s.start_step,
        s.end_step,
        s.seconds,
        s.last_loss,
        opts.out.display()
    );
    Ok(())
}
