//! `medsyn pretrain`: vision–language pre-training (ConVIRT) on image–report pairs.

use crate::data::loader::OnBadImage;
use crate::data::reports::Section;
use crate::error::Result;
use crate::pipelines::pretrain::{pretrain, MethodName, PretrainOptions, ReportText, TextPooling};
use clap::Args;
use std::path::PathBuf;

/// Defaults are the reference protocol's (../shared/reference/pipeline.md: MGCA's
/// settings): ResNet-50, 112 report tokens, resize 256 → random crop 224, mean = std =
/// 0.5, 128-d projections, τ 0.07, AdamW lr 2e-5, weight decay 0.05, 50 epochs,
/// batch 72, bf16 with fp32 master weights.
#[derive(Args, Debug)]
pub struct PretrainArgs {
    /// Pre-training method.
    #[arg(long, value_enum, default_value = "convirt")]
    pub method: MethodName,
    /// Manifest CSV of image–report pairs: an image path column (PNG or JPEG, relative
    /// to the CSV's folder) and the report's text (see --text-column, or --impression-column
    /// and --findings-column). An optional `split` column selects rows with --split.
    #[arg(long, value_name = "FILE.csv")]
    pub data: PathBuf,
    /// The column with image paths.
    #[arg(long, default_value = "path")]
    pub image_column: String,
    /// Take the report from this one column (instead of impression + findings).
    #[arg(long)]
    pub text_column: Option<String>,
    /// With --text-column: keep only this section of the report (full, impression,
    /// findings, impression-or-findings).
    #[arg(long, default_value = "full")]
    pub text_section: String,
    /// The impression column (joined with --findings-column; the protocol's default).
    #[arg(long, default_value = "impression")]
    pub impression_column: String,
    /// The findings column.
    #[arg(long, default_value = "findings")]
    pub findings_column: String,
    /// Use only the rows whose `split` column is this (train, valid, test).
    #[arg(long)]
    pub split: Option<String>,
    /// Image encoder: resnet18/34/50/101/152, vit-t16/s16/b16/l16, or a JSON config file
    /// (torchvision ResNet keys with "architecture": "resnet", or a timm ViT config).
    #[arg(long, default_value = "resnet50")]
    pub image_encoder: String,
    /// Initial image-encoder weights: a torchvision/timm state dict as .safetensors
    /// (an ImageNet head in it is skipped). Default: random initialisation.
    #[arg(long, value_name = "FILE")]
    pub image_init: Option<PathBuf>,
    /// The text encoder: a transformers BERT folder (config.json, model.safetensors,
    /// vocab.txt or tokenizer.json), e.g. Bio_ClinicalBERT converted to safetensors.
    #[arg(long, value_name = "DIR")]
    pub text_encoder: PathBuf,
    /// Output folder: image_encoder.safetensors (torchvision/timm names), text_encoder/,
    /// method.safetensors, pretrain_config.json, checkpoints/ and metrics.jsonl. A rerun
    /// resumes from the newest checkpoint in it.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Passes over the data.
    #[arg(long, default_value_t = 50)]
    pub epochs: usize,
    /// Stop after this many optimizer steps.
    #[arg(long)]
    pub max_steps: Option<u64>,
    /// End this invocation with a checkpoint once N optimizer steps are done in total
    /// (the schedule is unchanged); rerun the same command to continue, e.g. within a
    /// cluster's time limit.
    #[arg(long)]
    pub stop_after: Option<u64>,
    /// Pairs per micro-batch (the contrastive batch).
    #[arg(long, default_value_t = 72)]
    pub batch_size: usize,
    /// Micro-batches whose gradients are summed per optimizer step (each micro-batch is
    /// its own contrastive batch).
    #[arg(long, default_value_t = 1)]
    pub grad_accum: usize,
    /// Peak learning rate (AdamW).
    #[arg(long, default_value_t = 2e-5)]
    pub lr: f64,
    /// AdamW weight decay.
    #[arg(long, default_value_t = 0.05)]
    pub weight_decay: f64,
    /// Linear warm-up steps before the cosine decay (default: 5% of the run).
    #[arg(long)]
    pub warmup_steps: Option<u64>,
    /// Clip the gradient norm to this (0 = off).
    #[arg(long, default_value_t = 0.0)]
    pub max_grad_norm: f64,
    /// Parameter dtype: bf16 (bf16 compute, fp32 master weights and moments) or f32.
    #[arg(long, default_value = "bf16")]
    pub dtype: String,
    /// Width of the shared embedding space.
    #[arg(long, default_value_t = 128)]
    pub proj_dim: usize,
    /// InfoNCE temperature.
    #[arg(long, default_value_t = 0.07)]
    pub temperature: f64,
    /// Report tokens kept ([CLS] and [SEP] included); longer reports are cut and counted.
    #[arg(long, default_value_t = 112)]
    pub max_text_tokens: usize,
    /// How the report embedding is taken from BERT's token states.
    #[arg(long, value_enum, default_value = "cls")]
    pub text_pooling: TextPooling,
    /// Shorter image side after resizing.
    #[arg(long, default_value_t = 256)]
    pub resize: usize,
    /// Square crop fed to the encoder (random while training).
    #[arg(long, default_value_t = 224)]
    pub crop: usize,
    /// Normalisation mean, one value or one per channel (comma-separated).
    #[arg(long, default_value = "0.5")]
    pub mean: String,
    /// Normalisation standard deviation, one value or one per channel.
    #[arg(long, default_value = "0.5")]
    pub std: String,
    /// Save a checkpoint every N optimizer steps (and at the end).
    #[arg(long, default_value_t = 500)]
    pub checkpoint_every: u64,
    /// Checkpoints kept (older ones are deleted).
    #[arg(long, default_value_t = 2)]
    pub keep_checkpoints: usize,
    /// Seed of the initialisation, data order and crops.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Threads decoding and transforming images (default: all cores).
    #[arg(long)]
    pub workers: Option<usize>,
    /// Batches prepared ahead of the trainer.
    #[arg(long, default_value_t = 4)]
    pub prefetch: usize,
    /// An unreadable or corrupt image: skip it (reported once) or stop with an error.
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

/// "0.5" or "0.485,0.456,0.406" → values.
pub fn parse_floats(flag: &str, s: &str) -> Result<Vec<f32>> {
    s.split(',')
        .map(|v| {
            v.trim()
                .parse::<f32>()
                .map_err(|_| crate::error::Error::msg(format!("{flag} {s}: `{v}` is not a number")))
        })
        .collect()
}

pub fn options(args: &PretrainArgs) -> Result<PretrainOptions> {
    let text = match &args.text_column {
        Some(name) => ReportText::Column {
            name: name.clone(),
            section: Section::parse(&args.text_section)?,
        },
        None => ReportText::ImpressionFindings {
            impression: args.impression_column.clone(),
            findings: args.findings_column.clone(),
        },
    };
    let defaults = PretrainOptions::default();
    Ok(PretrainOptions {
        method: args.method,
        data: args.data.clone(),
        image_column: args.image_column.clone(),
        text,
        split: args.split.clone(),
        image_encoder: args.image_encoder.clone(),
        image_init: args.image_init.clone(),
        text_encoder: args.text_encoder.clone(),
        out: args.out.clone(),
        epochs: args.epochs,
        max_steps: args.max_steps,
        stop_after: args.stop_after,
        batch_size: args.batch_size,
        grad_accum: args.grad_accum,
        lr: args.lr,
        weight_decay: args.weight_decay,
        warmup_steps: args.warmup_steps,
        max_grad_norm: args.max_grad_norm,
        dtype: super::device::parse_dtype(&args.dtype)?,
        device: super::device::resolve_device(&args.device)?,
        proj_dim: args.proj_dim,
        temperature: args.temperature,
        max_text_tokens: args.max_text_tokens,
        text_pooling: args.text_pooling,
        resize: args.resize,
        crop: args.crop,
        mean: parse_floats("--mean", &args.mean)?,
        std: parse_floats("--std", &args.std)?,
        checkpoint_every: args.checkpoint_every,
        keep_checkpoints: args.keep_checkpoints,
        seed: args.seed,
        workers: args.workers.unwrap_or(defaults.workers),
        prefetch: args.prefetch,
        on_bad_image: args.on_bad_image,
        quiet: args.quiet,
    })
}

pub fn run(args: &PretrainArgs) -> Result<()> {
    let opts = options(args)?;
    let s = pretrain(&opts)?;
    if s.truncated_reports > 0 {
        eprintln!(
            "note: {} report(s) were longer than --max-text-tokens {} and were cut",
            s.truncated_reports, opts.max_text_tokens
        );
    }
    if !s.skipped_images.is_empty() {
        eprintln!(
            "note: {} unreadable image(s) were skipped",
            s.skipped_images.len()
        );
    }
    if s.end_step < s.total_steps {
        println!(
            "pre-trained steps {}..{} of {} in {:.1} s, last loss {:.5}; rerun to continue from {}",
            s.start_step,
            s.end_step,
            s.total_steps,
            s.seconds,
            s.last_loss,
            opts.out.display()
        );
        return Ok(());
    }
    println!(
        "pre-trained steps {}..{} in {:.1} s, last loss {:.5}; image encoder: {}",
        s.start_step,
        s.end_step,
        s.seconds,
        s.last_loss,
        opts.out.join("image_encoder.safetensors").display()
    );
    Ok(())
}
