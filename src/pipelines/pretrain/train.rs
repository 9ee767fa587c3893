//! `medsyn pretrain`: vision–language pre-training on a manifest of image–report
//! pairs. Per optimizer step: `grad_accum` micro-batches from the loader, both
//! encoders and the method's loss, AdamW (fp32 master weights under bf16) on a
//! warm-up + cosine schedule. Checkpoints every N steps hold the encoders, the
//! method's heads, the optimizer and the data position, so a rerun resumes exactly
//! (the loader's order and crops depend only on (seed, epoch, index)); a JSONL log
//! records step, loss, lr and images/s; the end exports the image encoder under
//! torchvision/timm names.

use super::convirt::{Convirt, ConvirtConfig};
use super::encoders::{ImageArch, ImageEncoder, TextEncoder, TextPooling};
use super::export::export_run;
use super::method::PretrainMethod;
use crate::data::loader::{Loader, LoaderConfig, OnBadImage};
use crate::data::manifest::{Manifest, ManifestOptions, TextSource};
use crate::data::reports::Section;
use crate::data::transforms::{CropMode, TransformConfig};
use crate::error::{Error, Result};
use crate::models::Weights;
use crate::nn::prefixed;
use crate::optim::{clip_grad_norm_tensor, AdamW, AdamWConfig, WarmupCosine};
use crate::pipelines::checkpoint::{self, CheckpointParts};
use crate::pipelines::run_log::{create_out, progress, MetricsLog};
use crate::tensor::{DType, Device, Tensor};
use crate::{bail, ensure};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::Instant;

/// Pre-training methods `--method` accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum MethodName {
    Convirt,
}

/// Where a report's text comes from in the manifest.
#[derive(Clone, Debug)]
pub enum ReportText {
    /// One column, optionally reduced to a section (e.g. the impression).
    Column { name: String, section: Section },
    /// Impression and findings columns, joined (the reference protocol).
    ImpressionFindings {
        impression: String,
        findings: String,
    },
}

/// Options; `Default` gives the reference protocol's settings (pipeline.md).
#[derive(Clone, Debug)]
pub struct PretrainOptions {
    pub method: MethodName,
    pub data: PathBuf,
    pub image_column: String,
    pub text: ReportText,
    /// Use only the manifest's rows of this split (all rows when None).
    pub split: Option<String>,
    pub image_encoder: String,
    pub image_init: Option<PathBuf>,
    pub text_encoder: PathBuf,
    pub out: PathBuf,
    pub epochs: usize,
    /// Stop after this many optimizer steps (before the epochs end).
    pub max_steps: Option<u64>,
    /// End this invocation (with a checkpoint) once this many optimizer steps are
    /// done in total, without changing the schedule; a rerun continues.
    pub stop_after: Option<u64>,
    pub batch_size: usize,
    pub grad_accum: usize,
    pub lr: f64,
    pub weight_decay: f64,
    /// Linear warm-up steps; None = 5% of the run (at least 1).
    pub warmup_steps: Option<u64>,
    pub max_grad_norm: f64,
    pub dtype: DType,
    /// Where the encoders train (the CLI's `--device`, resolved).
    pub device: Device,
    pub proj_dim: usize,
    pub temperature: f64,
    pub max_text_tokens: usize,
    pub text_pooling: TextPooling,
    pub resize: usize,
    pub crop: usize,
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
    pub checkpoint_every: u64,
    pub keep_checkpoints: usize,
    pub seed: u64,
    pub workers: usize,
    pub prefetch: usize,
    pub on_bad_image: OnBadImage,
    pub quiet: bool,
}

impl Default for PretrainOptions {
    fn default() -> Self {
        PretrainOptions {
            method: MethodName::Convirt,
            data: PathBuf::new(),
            image_column: "path".into(),
            text: ReportText::ImpressionFindings {
                impression: "impression".into(),
                findings: "findings".into(),
            },
            split: None,
            image_encoder: "resnet50".into(),
            image_init: None,
            text_encoder: PathBuf::new(),
            out: PathBuf::new(),
            epochs: 50,
            max_steps: None,
            stop_after: None,
            batch_size: 72,
            grad_accum: 1,
            lr: 2e-5,
            weight_decay: 0.05,
            warmup_steps: None,
            max_grad_norm: 0.0,
            dtype: DType::BF16,
            device: Device::Cpu,
            proj_dim: 128,
            temperature: 0.07,
            max_text_tokens: 112,
            text_pooling: TextPooling::Cls,
            resize: 256,
            crop: 224,
            mean: vec![0.5],
            std: vec![0.5],
            checkpoint_every: 500,
            keep_checkpoints: 2,
            seed: 0,
            workers: std::thread::available_parallelism().map_or(2, |n| n.get()),
            prefetch: 4,
            on_bad_image: OnBadImage::Fail,
            quiet: false,
        }
    }
}

/// What a run did.
#[derive(Clone, Debug)]
pub struct PretrainSummary {
    pub start_step: u64,
    pub end_step: u64,
    /// Steps of the whole run; the exports are written when `end_step` reaches it.
    pub total_steps: u64,
    pub last_loss: f64,
    pub seconds: f64,
    /// Reports cut at `max_text_tokens` (counted once per use).
    pub truncated_reports: usize,
    /// Images skipped as unreadable.
    pub skipped_images: Vec<PathBuf>,
}

/// Everything trained: the encoders, the method, and their named parameters in
/// optimizer order (image encoder, text encoder, method).
pub struct PretrainModel {
    pub image: ImageEncoder,
    pub text: TextEncoder,
    pub method: Box<dyn PretrainMethod>,
}

impl PretrainModel {
    /// Builds the encoders and the method for `opts`.
    pub fn build(opts: &PretrainOptions) -> Result<PretrainModel> {
        let arch = ImageArch::parse(&opts.image_encoder)?;
        ensure!(
            arch.in_channels() == 3 || arch.in_channels() == 1,
            "--image-encoder: {} input channels are not supported (1 or 3)",
            arch.in_channels()
        );
        let image = ImageEncoder::load(&arch, opts.image_init.as_deref(), opts.dtype, opts.seed)?;
        let text = TextEncoder::load(
            &opts.text_encoder,
            opts.dtype,
            opts.max_text_tokens,
            opts.text_pooling,
        )?;
        let heads = Weights::random(opts.seed ^ 0x4845_4144, opts.dtype);
        let method: Box<dyn PretrainMethod> = match opts.method {
            MethodName::Convirt => Box::new(Convirt::load(
                ConvirtConfig {
                    proj_dim: opts.proj_dim,
                    hidden_dim: None,
                    temperature: opts.temperature,
                },
                image.feature_dim(),
                text.feature_dim(),
                &heads,
            )?),
        };
        let model = PretrainModel {
            image,
            text,
            method,
        };
        crate::nn::move_to(&model.named_parameters(), opts.device)?;
        crate::nn::move_buffers_to(&model.image.buffers(), opts.device)?;
        Ok(model)
    }

    /// Trained parameters with checkpoint names, in optimizer order.
    pub fn named_parameters(&self) -> Vec<(String, Tensor)> {
        let mut all = prefixed("image_encoder", self.image.parameters());
        all.extend(prefixed("text_encoder", self.text.parameters()));
        all.extend(prefixed("method", self.method.parameters()));
        all
    }

    /// The loss of one micro-batch.
    pub fn loss(&self, images: &Tensor, texts: &[String]) -> Result<BatchLoss> {
        let needs = self.method.needs();
        let img = self.image.encode(images, needs.image_local)?;
        let txt = self.text.encode(texts, needs.text_tokens)?;
        let loss = self.method.loss(&img, &txt.features)?;
        Ok(BatchLoss {
            total: loss.total,
            parts: loss.parts,
            truncated: txt.truncated.len(),
        })
    }
}

/// One micro-batch's loss, its named parts, and how many reports were cut.
pub struct BatchLoss {
    pub total: Tensor,
    pub parts: Vec<(&'static str, f64)>,
    pub truncated: usize,
}

fn loader_for(opts: &PretrainOptions, channels: usize) -> Result<Loader> {
    let text = match &opts.text {
        ReportText::Column { name, section } => TextSource::Column {
            name: name.clone(),
            section: *section,
        },
        ReportText::ImpressionFindings {
            impression,
            findings,
        } => TextSource::ImpressionFindings {
            impression: impression.clone(),
            findings: findings.clone(),
        },
    };
    let split = match &opts.split {
        Some(s) => Some(
            crate::data::manifest::Split::parse(s)
                .ok_or_else(|| Error::msg(format!("--split {s}: expected train, valid or test")))?,
        ),
        None => None,
    };
    let mopts = ManifestOptions {
        image_column: opts.image_column.clone(),
        text,
        split,
        ..ManifestOptions::default()
    };
    let manifest = Manifest::read(&opts.data, &mopts)?;
    ensure!(
        manifest.len() >= opts.batch_size,
        "{}: {} usable pairs, fewer than one batch of {}",
        opts.data.display(),
        manifest.len(),
        opts.batch_size
    );
    Loader::new(
        manifest,
        LoaderConfig {
            batch_size: opts.batch_size,
            shuffle: true,
            drop_last: true,
            seed: opts.seed,
            threads: opts.workers.max(1),
            prefetch: opts.prefetch.max(1),
            dtype: opts.dtype,
            crop: CropMode::Random,
            transform: TransformConfig {
                resize: opts.resize,
                crop: opts.crop,
                channels,
                mean: opts.mean.clone(),
                std: opts.std.clone(),
            },
            on_bad_image: opts.on_bad_image,
        },
    )
}

/// Checks that a checkpoint was written by a run with the same data order.
fn check_compatible(state: &Value, opts: &PretrainOptions, dir: &std::path::Path) -> Result<()> {
    for (key, want) in [
        ("seed", json!(opts.seed)),
        ("batch_size", json!(opts.batch_size)),
        ("grad_accum", json!(opts.grad_accum)),
        ("method", json!(format!("{:?}", opts.method).to_lowercase())),
        ("image_encoder", json!(opts.image_encoder)),
    ] {
        if state.get(key) != Some(&want) {
            bail!(
                "{}: checkpoint has {key} = {}, this run {want}; use another --out or the same settings to resume",
                dir.display(),
                state.get(key).cloned().unwrap_or(Value::Null)
            );
        }
    }
    Ok(())
}

/// Trains, checkpointing and resuming from `out`, and exports at the end.
pub fn pretrain(opts: &PretrainOptions) -> Result<PretrainSummary> {
    let started = Instant::now();
    ensure!(
        opts.batch_size >= 2,
        "--batch-size must be at least 2 (a contrastive batch needs negatives)"
    );
    ensure!(opts.grad_accum >= 1, "--grad-accum must be at least 1");
    ensure!(opts.epochs >= 1, "--epochs must be at least 1");
    if opts.dtype == DType::F16 {
        bail!(
            "--dtype f16 is not supported for pre-training (no loss scaling here): use bf16 or f32"
        );
    }
    let model = PretrainModel::build(opts)?;
    let channels = ImageArch::parse(&opts.image_encoder)?.in_channels();
    let loader = loader_for(opts, channels)?;
    let per_epoch = loader.batches_per_epoch() as u64;
    let micro_total = per_epoch * opts.epochs as u64;
    let mut total_steps = micro_total / opts.grad_accum as u64;
    if let Some(m) = opts.max_steps {
        total_steps = total_steps.min(m);
    }
    ensure!(
        total_steps >= 1,
        "{} batches per epoch × {} epochs make no optimizer step of {} micro-batches",
        per_epoch,
        opts.epochs,
        opts.grad_accum
    );
    let schedule = WarmupCosine {
        base_lr: opts.lr,
        warmup_steps: opts.warmup_steps.unwrap_or((total_steps / 20).max(1)),
        total_steps,
        min_lr: 0.0,
    };
    let named = model.named_parameters();
    let params: Vec<Tensor> = named.iter().map(|(_, p)| p.clone()).collect();
    let mut opt = AdamW::new(
        params.clone(),
        AdamWConfig {
            lr: opts.lr,
            weight_decay: opts.weight_decay,
            ..AdamWConfig::default()
        },
    )?;

    create_out(&opts.out)?;
    let mut start_step = 0;
    if let Some((step, dir)) = checkpoint::latest(&opts.out) {
        check_compatible(&checkpoint::load_state(&dir)?, opts, &dir)?;
        resume(&dir, &model, &named, &mut opt)?;
        start_step = step;
        if !opts.quiet {
            eprintln!("resuming from {} (step {step})", dir.display());
        }
    }
    let mut metrics = MetricsLog::append(&opts.out)?;
    let mut progress = progress(
        opts.quiet,
        total_steps as usize,
        "steps",
        start_step as usize,
    );

    model.image.set_training(true);
    let accum = opts.grad_accum as u64;
    let mut position = start_step * accum;
    let mut batches = loader.start_at(
        (position / per_epoch) as usize,
        (position % per_epoch) as usize,
    )?;
    let mut last_loss = f64::NAN;
    let mut truncated = 0;
    let end_step = opts
        .stop_after
        .map_or(total_steps, |s| s.clamp(start_step, total_steps));
    for step in start_step..end_step {
        let t0 = Instant::now();
        let (mut step_loss, mut images) = (0.0, 0usize);
        let mut parts_sum: Vec<(&'static str, f64)> = Vec::new();
        for micro in 0..accum {
            let batch = loop {
                match batches.next() {
                    Some(b) => break b?,
                    None => {
                        // The epoch ended: continue with the next one.
                        let epoch = (position / per_epoch) as usize;
                        batches = loader.start_at(epoch, (position % per_epoch) as usize)?;
                    }
                }
            };
            position += 1;
            if batch.len() < 2 {
                // Every other image of this batch was unreadable and skipped.
                eprintln!(
                    "warning: batch {} of epoch {} has {} readable image(s); left out",
                    batch.batch,
                    batch.epoch,
                    batch.len()
                );
                continue;
            }
            let BatchLoss {
                total: loss,
                parts,
                truncated: cut,
            } = model.loss(&batch.images, &batch.texts)?;
            truncated += cut;
            let value = loss.to_scalar()?;
            if !value.is_finite() {
                bail!(
                    "the loss is {value} at step {step} (micro-batch {micro}, epoch {}, batch {}); lower --lr or use --dtype f32",
                    batch.epoch,
                    batch.batch
                );
            }
            step_loss += value / accum as f64;
            for (name, v) in parts {
                match parts_sum.iter_mut().find(|(n, _)| *n == name) {
                    Some((_, s)) => *s += v / accum as f64,
                    None => parts_sum.push((name, v / accum as f64)),
                }
            }
            images += batch.len();
            loss.scale(1.0 / accum as f64)?.backward()?;
        }
        if opts.max_grad_norm > 0.0 {
            // The norm stays on the device (no read-back inside the step).
            clip_grad_norm_tensor(&params, opts.max_grad_norm)?;
        }
        let lr = schedule.lr_at(step);
        opt.set_lr(lr);
        opt.step()?;
        opt.zero_grad();
        last_loss = step_loss;
        let seconds = t0.elapsed().as_secs_f64();
        let mut record = json!({"step": step + 1, "epoch": (position - 1) / per_epoch, "loss": step_loss, "lr": lr,
                                "images_per_s": images as f64 / seconds, "seconds": seconds});
        for (name, v) in &parts_sum {
            record[*name] = json!(v);
        }
        metrics.write(&record)?;
        progress.inc(1);
        let done = step + 1;
        if done % opts.checkpoint_every.max(1) == 0 || done == end_step {
            save_checkpoint(opts, done, &model, &named, &opt)?;
        }
    }
    progress.finish();
    drop(batches);
    if end_step == total_steps {
        export_run(opts, &model, &named, &opt)?;
    }
    Ok(PretrainSummary {
        start_step,
        end_step,
        total_steps,
        last_loss,
        seconds: started.elapsed().as_secs_f64(),
        truncated_reports: truncated,
        skipped_images: loader.skipped(),
    })
}

/// `named`'s tensors at full precision (the optimizer's fp32 masters under bf16).
pub(super) fn full_precision(
    named: &[(String, Tensor)],
    opt: &AdamW,
) -> Result<Vec<(String, Tensor)>> {
    Ok(named
        .iter()
        .zip(opt.full_precision_params()?)
        .map(|((n, _), t)| (n.clone(), t))
        .collect())
}

fn save_checkpoint(
    opts: &PretrainOptions,
    step: u64,
    model: &PretrainModel,
    named: &[(String, Tensor)],
    opt: &AdamW,
) -> Result<()> {
    let groups = vec![
        ("weights".to_string(), full_precision(named, opt)?),
        (
            "buffers".to_string(),
            prefixed("image_encoder", model.image.buffers()),
        ),
        ("optimizer".to_string(), opt.state_dict()?),
    ];
    let state = json!({"step": step, "seed": opts.seed, "batch_size": opts.batch_size, "grad_accum": opts.grad_accum,
                       "method": format!("{:?}", opts.method).to_lowercase(), "image_encoder": opts.image_encoder});
    checkpoint::save(
        &opts.out,
        step,
        &CheckpointParts { groups, state },
        opts.keep_checkpoints,
    )?;
    Ok(())
}

fn resume(
    dir: &std::path::Path,
    model: &PretrainModel,
    named: &[(String, Tensor)],
    opt: &mut AdamW,
) -> Result<()> {
    let restore = |group: &str, targets: &[(String, Tensor)]| -> Result<()> {
        let saved = checkpoint::load_group(dir, group)?;
        ensure!(
            saved.len() == targets.len(),
            "{}: the checkpoint's {group} hold {} tensors, this run has {}",
            dir.display(),
            saved.len(),
            targets.len()
        );
        for (name, t) in targets {
            let Some((_, v)) = saved.iter().find(|(n, _)| n == name) else {
                return Err(Error::file(dir, format!("checkpoint lacks `{name}`")));
            };
            t.set_data(v)?;
        }
        Ok(())
    };
    restore("weights", named)?;
    restore("buffers", &prefixed("image_encoder", model.image.buffers()))?;
    opt.load_state_dict(&checkpoint::load_group(dir, "optimizer")?)?;
    Ok(())
}
