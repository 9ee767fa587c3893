//! `medsyn finetune`: downstream classification on a pre-trained image encoder.

use super::pretrain::parse_floats;
use crate::data::loader::OnBadImage;
use crate::error::Result;
use crate::pipelines::finetune::{finetune, FinetuneOptions, Mode, Uncertain};
use clap::{Args, ValueEnum};
use std::path::PathBuf;

/// Downstream tasks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Task {
    /// Multi-label classification, scored by ROC AUC.
    Classify,
}

/// Defaults are the reference protocol's linear classification (AdamW lr 5e-4,
/// weight decay 1e-6, batch 8, 50 epochs, early stopping on the validation mean AUC).
#[derive(Args, Debug)]
pub struct FinetuneArgs {
    /// The downstream task.
    #[arg(long, value_enum, default_value = "classify")]
    pub task: Task,
    /// The image encoder: a `medsyn pretrain` --out folder, a torchvision/timm state
    /// dict (.safetensors, with --image-encoder), or `random` (with --image-encoder).
    #[arg(long)]
    pub encoder: String,
    /// The encoder's architecture (resnet50, vit-b16, ... or a JSON config) when
    /// --encoder is a weights file or `random`.
    #[arg(long)]
    pub image_encoder: Option<String>,
    /// Labels CSV: an image path column, a `split` column (train/valid/test) and one
    /// column per class (1 positive, 0 negative, -1 uncertain, empty = not labelled).
    #[arg(long, value_name = "FILE.csv")]
    pub data: PathBuf,
    /// The label columns to learn (comma-separated).
    #[arg(long, value_delimiter = ',', required = true)]
    pub labels: Vec<String>,
    /// The column with image paths.
    #[arg(long, default_value = "path")]
    pub image_column: String,
    /// A column of sample ids for the predictions file (default: the image path).
    #[arg(long)]
    pub id_column: Option<String>,
    /// The column naming each row's split.
    #[arg(long, default_value = "split")]
    pub split_column: String,
    /// How uncertain (-1) labels are read.
    #[arg(long, value_enum, default_value = "zeros")]
    pub uncertain: Uncertain,
    /// Fraction of the training rows whose labels are used (0.01, 0.1, 1): a seeded,
    /// nested subset.
    #[arg(long, default_value_t = 1.0)]
    pub label_fraction: f64,
    /// Train a linear layer on the frozen encoder (the default).
    #[arg(long, conflicts_with = "full")]
    pub linear_probe: bool,
    /// Fine-tune the whole encoder with the linear layer.
    #[arg(long)]
    pub full: bool,
    /// Output folder: predictions_test.csv, results.json (per-class and mean test AUC),
    /// metrics.jsonl and classifier.safetensors.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Maximum epochs.
    #[arg(long, default_value_t = 50)]
    pub epochs: usize,
    /// Stop after this many epochs without a better validation mean AUC.
    #[arg(long, default_value_t = 10)]
    pub patience: usize,
    /// Images per batch.
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    /// Learning rate (AdamW).
    #[arg(long, default_value_t = 5e-4)]
    pub lr: f64,
    /// AdamW weight decay.
    #[arg(long, default_value_t = 1e-6)]
    pub weight_decay: f64,
    /// Parameter dtype: f32 or bf16.
    #[arg(long, default_value = "f32")]
    pub dtype: String,
    /// Seed of the label subset, initialisation, order and crops.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Threads decoding images (default: all cores).
    #[arg(long)]
    pub workers: Option<usize>,
    /// Shorter image side after resizing (default: the pre-training run's, else 256).
    #[arg(long)]
    pub resize: Option<usize>,
    /// Crop size (default: the pre-training run's, else 224).
    #[arg(long)]
    pub crop: Option<usize>,
    /// Normalisation mean(s), comma-separated (default: the pre-training run's, else 0.5).
    #[arg(long)]
    pub mean: Option<String>,
    /// Normalisation standard deviation(s) (default: the pre-training run's, else 0.5).
    #[arg(long)]
    pub std: Option<String>,
    /// An unreadable image in training: skip it or stop (evaluation always needs all).
    #[arg(long, value_enum, default_value = "fail")]
    pub on_bad_image: OnBadImage,
    /// Where to run: cpu, cuda, cuda:N, or auto (cuda:0 when this build has the CUDA backend
    /// (`--features cuda`) and a GPU is usable, else cpu).
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

pub fn run(args: &FinetuneArgs) -> Result<()> {
    let defaults = FinetuneOptions::default();
    let opts = FinetuneOptions {
        encoder: args.encoder.clone(),
        image_encoder: args.image_encoder.clone(),
        data: args.data.clone(),
        image_column: args.image_column.clone(),
        id_column: args.id_column.clone(),
        split_column: args.split_column.clone(),
        labels: args.labels.clone(),
        uncertain: args.uncertain,
        label_fraction: args.label_fraction,
        mode: if args.full {
            Mode::Full
        } else {
            Mode::LinearProbe
        },
        out: args.out.clone(),
        epochs: args.epochs,
        patience: args.patience,
        batch_size: args.batch_size,
        lr: args.lr,
        weight_decay: args.weight_decay,
        dtype: super::device::parse_dtype(&args.dtype)?,
        device: super::device::resolve_device(&args.device)?,
        seed: args.seed,
        workers: args.workers.unwrap_or(defaults.workers),
        resize: args.resize,
        crop: args.crop,
        mean: args
            .mean
            .as_deref()
            .map(|m| parse_floats("--mean", m))
            .transpose()?,
        std: args
            .std
            .as_deref()
            .map(|s| parse_floats("--std", s))
            .transpose()?,
        on_bad_image: args.on_bad_image,
        quiet: args.quiet,
    };
    let s = finetune(&opts)?;
    print!("{}", s.test.table());
    println!(
        "{} training rows ({}% of labels), best epoch {} of {}, validation mean AUC {}; {:.1} s; results in {}",
        s.train_rows,
        opts.label_fraction * 100.0,
        s.best_epoch,
        s.epochs_run,
        s.valid_mean_auc.map_or("undefined".into(), |v| format!("{v:.4}")),
        s.seconds,
        opts.out.display()
    );
    Ok(())
}
