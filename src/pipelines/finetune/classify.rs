//! `medsyn finetune --task classify`: multi-label classification on a pre-trained
//! image encoder, as the label-efficiency protocol runs it. A linear layer on the
//! frozen encoder (`--linear-probe`, features computed once from centre crops) or
//! the whole network (`--full`, random crops, BatchNorm in training mode);
//! masked BCE-with-logits (unlabelled entries count for nothing), AdamW, early
//! stopping on the validation mean ROC AUC, then the test set's predictions and AUCs.

use super::encoder_source::EncoderSource;
use super::subset::label_subset;
use crate::autograd::no_grad;
use crate::data::loader::{Loader, LoaderConfig, OnBadImage};
use crate::data::manifest::{Manifest, ManifestOptions, Split, TextSource};
use crate::data::transforms::{CropMode, TransformConfig};
use crate::data::write_atomic;
use crate::error::{Error, Result};
use crate::eval::{roc_auc, write_predictions_csv, ClassAuc, EvalReport};
use crate::io::save_safetensors;
use crate::models::Weights;
use crate::nn::{prefixed, Module};
use crate::ops::loss::Reduction;
use crate::optim::{AdamW, AdamWConfig};
use crate::pipelines::pretrain::ImageEncoder;
use crate::pipelines::run_log::{create_out, progress, MetricsLog};
use crate::tensor::{DType, Device, Philox, Tensor};
use crate::{bail, ensure};
use serde_json::json;
use std::path::PathBuf;
use std::time::Instant;

/// What is trained.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    LinearProbe,
    Full,
}

/// How CheXpert-style uncertain labels (−1) are read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Uncertain {
    /// As negatives ("U-Zeros").
    Zeros,
    /// As positives ("U-Ones").
    Ones,
    /// As not labelled.
    Ignore,
}

/// Options; `Default` gives the reference protocol's settings (AdamW lr 5e-4,
/// weight decay 1e-6, batch 8, 50 epochs with early stopping).
#[derive(Clone, Debug)]
pub struct FinetuneOptions {
    pub encoder: String,
    pub image_encoder: Option<String>,
    pub data: PathBuf,
    pub image_column: String,
    pub id_column: Option<String>,
    pub split_column: String,
    pub labels: Vec<String>,
    pub uncertain: Uncertain,
    pub label_fraction: f64,
    pub mode: Mode,
    pub out: PathBuf,
    pub epochs: usize,
    /// Stop after this many epochs without a better validation mean AUC.
    pub patience: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub weight_decay: f64,
    pub dtype: DType,
    /// Where the encoder and head train (the CLI's `--device`, resolved).
    pub device: Device,
    pub seed: u64,
    pub workers: usize,
    pub resize: Option<usize>,
    pub crop: Option<usize>,
    pub mean: Option<Vec<f32>>,
    pub std: Option<Vec<f32>>,
    pub on_bad_image: OnBadImage,
    pub quiet: bool,
}

impl Default for FinetuneOptions {
    fn default() -> Self {
        FinetuneOptions {
            encoder: String::new(),
            image_encoder: None,
            data: PathBuf::new(),
            image_column: "path".into(),
            id_column: None,
            split_column: "split".into(),
            labels: Vec::new(),
            uncertain: Uncertain::Zeros,
            label_fraction: 1.0,
            mode: Mode::LinearProbe,
            out: PathBuf::new(),
            epochs: 50,
            patience: 10,
            batch_size: 8,
            lr: 5e-4,
            weight_decay: 1e-6,
            dtype: DType::F32,
            device: Device::Cpu,
            seed: 0,
            workers: std::thread::available_parallelism().map_or(2, |n| n.get()),
            resize: None,
            crop: None,
            mean: None,
            std: None,
            on_bad_image: OnBadImage::Fail,
            quiet: false,
        }
    }
}

/// What a run measured.
#[derive(Clone, Debug)]
pub struct FinetuneSummary {
    pub test: EvalReport,
    pub valid_mean_auc: Option<f64>,
    pub best_epoch: usize,
    pub epochs_run: usize,
    pub train_rows: usize,
    pub seconds: f64,
}

/// One split's rows: ids, label values and mask (row-major [n, classes]).
struct Rows {
    ids: Vec<String>,
    values: Vec<f32>,
    mask: Vec<f32>,
}

/// Reads the manifest with `labels`, maps uncertain labels and checks every value.
fn read_manifest(opts: &FinetuneOptions) -> Result<Manifest> {
    ensure!(
        !opts.labels.is_empty(),
        "--labels: name at least one label column"
    );
    let mopts = ManifestOptions {
        image_column: opts.image_column.clone(),
        id_column: opts.id_column.clone(),
        text: TextSource::None,
        split_column: opts.split_column.clone(),
        split: None,
        label_columns: opts.labels.clone(),
        skip_empty_text: false,
    };
    let mut m = Manifest::read(&opts.data, &mopts)?;
    for s in &mut m.samples {
        for (c, v) in s.labels.iter_mut().enumerate() {
            *v = match *v {
                Some(-1.0) => match opts.uncertain {
                    Uncertain::Zeros => Some(0.0),
                    Uncertain::Ones => Some(1.0),
                    Uncertain::Ignore => None,
                },
                Some(x) if x == 0.0 || x == 1.0 => Some(x),
                None => None,
                Some(x) => {
                    return Err(Error::file(
                        &opts.data,
                        format!(
                            "line {}: label `{}` is {x}; expected 1, 0, -1 (uncertain) or empty",
                            s.line, opts.labels[c]
                        ),
                    ))
                }
            };
        }
    }
    Ok(m)
}

fn split_of(m: &Manifest, split: Split, opts: &FinetuneOptions) -> Result<Manifest> {
    let part = m.split(split);
    ensure!(
        !part.is_empty(),
        "{}: no `{}` rows in column `{}` (the protocol needs train, valid and test)",
        opts.data.display(),
        split.name(),
        opts.split_column
    );
    Ok(part)
}

fn rows(m: &Manifest) -> Rows {
    let mut r = Rows {
        ids: Vec::new(),
        values: Vec::new(),
        mask: Vec::new(),
    };
    for s in &m.samples {
        r.ids.push(s.id.clone());
        for v in &s.labels {
            r.values.push(v.unwrap_or(0.0));
            r.mask.push(if v.is_some() { 1.0 } else { 0.0 });
        }
    }
    r
}

/// Per-class ROC AUC over the labelled rows of `scores` ([n, classes]).
fn report(classes: &[String], scores: &[f64], rows: &Rows) -> EvalReport {
    let nc = classes.len();
    let per: Vec<ClassAuc> = classes
        .iter()
        .enumerate()
        .map(|(c, name)| {
            let (mut s, mut l) = (Vec::new(), Vec::new());
            for i in 0..rows.ids.len() {
                if rows.mask[i * nc + c] > 0.0 {
                    s.push(scores[i * nc + c]);
                    l.push(rows.values[i * nc + c] > 0.5);
                }
            }
            let positives = l.iter().filter(|&&b| b).count();
            ClassAuc {
                name: name.clone(),
                auc: roc_auc(&s, &l),
                positives,
                negatives: l.len() - positives,
            }
        })
        .collect();
    let defined: Vec<f64> = per.iter().filter_map(|c| c.auc).collect();
    EvalReport {
        mean_auc: (!defined.is_empty()).then(|| defined.iter().sum::<f64>() / defined.len() as f64),
        classes: per,
        unused_prediction_columns: Vec::new(),
    }
}

/// Masked BCE-with-logits: the mean over labelled entries.
fn masked_bce(logits: &Tensor, values: &Tensor, mask: &Tensor) -> Result<Tensor> {
    let per = logits.bce_with_logits_with(values, None, Reduction::None)?;
    let count = mask.to_vec_f64().iter().sum::<f64>().max(1.0);
    per.mul(mask)?.sum_all()?.scale(1.0 / count)
}

/// A deep copy of the values (parameters are updated by swapping storage).
fn snapshot(params: &[Tensor]) -> Result<Vec<Tensor>> {
    params
        .iter()
        .map(|p| Tensor::from_vec(p.to_vec_f32(), p.shape())?.to_dtype(p.dtype()))
        .collect()
}

/// Runs the fine-tuning and writes predictions_test.csv, results.json,
/// metrics.jsonl and classifier.safetensors into `out`.
pub fn finetune(opts: &FinetuneOptions) -> Result<FinetuneSummary> {
    let started = Instant::now();
    ensure!(opts.batch_size >= 1, "--batch-size must be at least 1");
    ensure!(opts.epochs >= 1, "--epochs must be at least 1");
    if opts.dtype == DType::F16 {
        bail!("--dtype f16 is not supported for fine-tuning: use bf16 or f32");
    }
    let source = EncoderSource::resolve(&opts.encoder, opts.image_encoder.as_deref())?;
    let manifest = read_manifest(opts)?;
    let classes = manifest.label_names.clone();
    let mut train = split_of(&manifest, Split::Train, opts)?;
    let valid = split_of(&manifest, Split::Valid, opts)?;
    let test = split_of(&manifest, Split::Test, opts)?;
    let keep = label_subset(train.len(), opts.label_fraction, opts.seed)?;
    train.samples = keep.iter().map(|&i| train.samples[i].clone()).collect();
    let (arch, encoder) = source.load(opts.dtype, opts.seed)?;
    let transform = TransformConfig {
        resize: opts.resize.unwrap_or(source.resize),
        crop: opts.crop.unwrap_or(source.crop),
        channels: arch.in_channels(),
        mean: opts.mean.clone().unwrap_or_else(|| source.mean.clone()),
        std: opts.std.clone().unwrap_or_else(|| source.std.clone()),
    };
    let loader = |m: &Manifest, crop: CropMode, batch: usize| {
        Loader::new(
            m.clone(),
            LoaderConfig {
                batch_size: batch,
                shuffle: crop == CropMode::Random,
                drop_last: false,
                seed: opts.seed,
                threads: opts.workers.max(1),
                prefetch: 4,
                dtype: opts.dtype,
                crop,
                transform: transform.clone(),
                on_bad_image: opts.on_bad_image,
            },
        )
    };
    let head = Weights::random(opts.seed ^ 0x4845_4144, opts.dtype).linear(
        "fc",
        encoder.feature_dim(),
        classes.len(),
        true,
    )?;
    crate::nn::move_to(&encoder.parameters(), opts.device)?;
    crate::nn::move_buffers_to(&encoder.buffers(), opts.device)?;
    crate::nn::move_to(&head.parameters(), opts.device)?;
    create_out(&opts.out)?;
    let mut metrics = MetricsLog::create(&opts.out)?;

    let trainable: Vec<Tensor> = match opts.mode {
        Mode::LinearProbe => {
            encoder.freeze_all()?;
            head.parameters().into_iter().map(|(_, p)| p).collect()
        }
        Mode::Full => {
            let mut all: Vec<Tensor> = encoder.parameters().into_iter().map(|(_, p)| p).collect();
            for p in &all {
                p.set_requires_grad(true)?;
            }
            all.extend(head.parameters().into_iter().map(|(_, p)| p));
            all
        }
    };
    let mut opt = AdamW::new(
        trainable.clone(),
        AdamWConfig {
            lr: opts.lr,
            weight_decay: opts.weight_decay,
            ..AdamWConfig::default()
        },
    )?;
    let eval_batch = opts.batch_size.max(32);
    let (valid_rows, test_rows) = (rows(&valid), rows(&test));
    // Linear probe: every split's features once, from centre crops of the frozen encoder.
    let frozen = match opts.mode {
        Mode::LinearProbe => Some((
            features(&encoder, &loader(&train, CropMode::Center, eval_batch)?)?,
            features(&encoder, &loader(&valid, CropMode::Center, eval_batch)?)?,
        )),
        Mode::Full => None,
    };
    let train_rows = rows(&train);
    let predict = |m: &Manifest, feats: Option<&Tensor>| -> Result<Vec<f64>> {
        let _g = no_grad();
        encoder.set_training(false);
        let feats = match feats {
            Some(f) => f.clone(),
            None => features(&encoder, &loader(m, CropMode::Center, eval_batch)?)?,
        };
        let logits = head.forward(&feats.to_dtype(opts.dtype)?)?;
        Ok(logits.sigmoid()?.to_vec_f64())
    };

    let mut progress = progress(opts.quiet, opts.epochs, "epochs", 0);
    let (mut best, mut best_epoch, mut best_auc, mut epochs_run) =
        (snapshot(&trainable)?, 0, None::<f64>, 0);
    let train_loader = loader(&train, CropMode::Random, opts.batch_size)?;
    let nc = classes.len();
    for epoch in 0..opts.epochs {
        let t0 = Instant::now();
        let (mut loss_sum, mut batches) = (0.0, 0usize);
        match &frozen {
            Some((train_feats, _)) => {
                let n = train_rows.ids.len();
                let order =
                    Philox::new(opts.seed ^ (epoch as u64).wrapping_mul(0x9E37)).permutation(n);
                let d = train_feats.shape()[1];
                let all = train_feats.to_vec_f32();
                for chunk in order.chunks(opts.batch_size) {
                    let mut x = Vec::with_capacity(chunk.len() * d);
                    let (mut y, mut m) = (Vec::new(), Vec::new());
                    for &i in chunk {
                        x.extend_from_slice(&all[i * d..(i + 1) * d]);
                        y.extend_from_slice(&train_rows.values[i * nc..(i + 1) * nc]);
                        m.extend_from_slice(&train_rows.mask[i * nc..(i + 1) * nc]);
                    }
                    let b = chunk.len();
                    let x = Tensor::from_vec(x, &[b, d])?.to_dtype(opts.dtype)?;
                    let loss = masked_bce(
                        &head.forward(&x)?,
                        &Tensor::from_vec(y, &[b, nc])?,
                        &Tensor::from_vec(m, &[b, nc])?,
                    )?;
                    loss_sum += step(&loss, &mut opt, epoch)?;
                    batches += 1;
                }
            }
            None => {
                encoder.set_training(true);
                for batch in train_loader.epoch(epoch)? {
                    let batch = batch?;
                    if batch.is_empty() {
                        continue;
                    }
                    let labels = batch
                        .labels
                        .as_ref()
                        .ok_or_else(|| Error::msg("loader returned no labels"))?;
                    let logits = head.forward(&encoder.encode(&batch.images, false)?.global)?;
                    let loss = masked_bce(&logits, &labels.values, &labels.mask)?;
                    loss_sum += step(&loss, &mut opt, epoch)?;
                    batches += 1;
                }
            }
        }
        let scores = predict(&valid, frozen.as_ref().map(|(_, v)| v))?;
        let auc = report(&classes, &scores, &valid_rows).mean_auc;
        epochs_run = epoch + 1;
        let better = match (auc, best_auc) {
            (Some(a), Some(b)) => a > b,
            (Some(_), None) => true,
            _ => best_auc.is_none() && epoch == 0,
        };
        if better {
            (best, best_epoch, best_auc) = (snapshot(&trainable)?, epoch + 1, auc);
        }
        let record = json!({"epoch": epoch + 1, "loss": loss_sum / batches.max(1) as f64, "valid_mean_auc": auc,
                            "lr": opts.lr, "seconds": t0.elapsed().as_secs_f64()});
        metrics.write(&record)?;
        progress.inc(1);
        if epoch + 1 - best_epoch >= opts.patience.max(1) {
            break;
        }
    }
    progress.finish();
    for (p, b) in trainable.iter().zip(&best) {
        p.set_data(b)?;
    }
    let test_feats = match &frozen {
        Some(_) => Some(features(
            &encoder,
            &loader(&test, CropMode::Center, eval_batch)?,
        )?),
        None => None,
    };
    let scores = predict(&test, test_feats.as_ref())?;
    let test_report = report(&classes, &scores, &test_rows);
    write_predictions_csv(
        opts.out.join("predictions_test.csv"),
        &classes,
        &test_rows.ids,
        &scores,
    )?;
    let mut results = test_report.to_json();
    results["valid_mean_auc"] = json!(best_auc);
    results["best_epoch"] = json!(best_epoch);
    results["epochs_run"] = json!(epochs_run);
    results["label_fraction"] = json!(opts.label_fraction);
    results["train_rows"] = json!(train.len());
    results["mode"] = json!(match opts.mode {
        Mode::LinearProbe => "linear_probe",
        Mode::Full => "full",
    });
    results["encoder"] = json!(opts.encoder);
    let text = serde_json::to_string_pretty(&results).map_err(|e| Error::msg(e.to_string()))?;
    write_atomic(opts.out.join("results.json"), text.as_bytes())?;
    let mut saved = prefixed("fc", head.parameters());
    if opts.mode == Mode::Full {
        saved.extend(prefixed("encoder", encoder.state_dict()));
    }
    let f32s: Vec<(String, Tensor)> = saved
        .into_iter()
        .map(|(n, t)| {
            Ok((
                n,
                if t.dtype() == DType::BF16 {
                    t.to_dtype(DType::F32)?
                } else {
                    t
                },
            ))
        })
        .collect::<Result<_>>()?;
    let refs: Vec<(&str, &Tensor)> = f32s.iter().map(|(n, t)| (n.as_str(), t)).collect();
    save_safetensors(opts.out.join("classifier.safetensors"), &refs, None)?;
    Ok(FinetuneSummary {
        test: test_report,
        valid_mean_auc: best_auc,
        best_epoch,
        epochs_run,
        train_rows: train.len(),
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Backward and one optimizer step; the loss value. A non-finite loss stops the run.
fn step(loss: &Tensor, opt: &mut AdamW, epoch: usize) -> Result<f64> {
    let value = loss.to_scalar()?;
    if !value.is_finite() {
        bail!("the loss is {value} in epoch {}; lower --lr", epoch + 1);
    }
    loss.backward()?;
    opt.step()?;
    opt.zero_grad();
    Ok(value)
}

/// Global features [n, D] (f32) of every image the loader yields, in manifest order,
/// with the encoder in evaluation mode and no gradients.
fn features(encoder: &ImageEncoder, loader: &Loader) -> Result<Tensor> {
    let _g = no_grad();
    encoder.set_training(false);
    let mut parts = Vec::new();
    for batch in loader.epoch(0)? {
        let batch = batch?;
        ensure!(
            batch.len() == loader.config().batch_size || batch.batch + 1 == loader.batches_per_epoch(),
            "an unreadable image was skipped while computing features; evaluation needs every image (use --on-bad-image fail to see which)"
        );
        parts.push(
            encoder
                .encode(&batch.images, false)?
                .global
                .to_dtype(DType::F32)?,
        );
    }
    let refs: Vec<&Tensor> = parts.iter().collect();
    Tensor::cat(&refs, 0)
}

impl ImageEncoder {
    /// Freeze every parameter (linear probing).
    fn freeze_all(&self) -> Result<()> {
        self.parameters()
            .iter()
            .try_for_each(|(_, p)| p.set_requires_grad(false))
    }
}
