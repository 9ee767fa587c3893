//! The demo's stages in order: phantom data sets, the generator (initialised,
//! trained with `train-generator`'s code), one synthetic image per real report
//! (`generate`'s code), ConVIRT on real and on synthetic pairs (`pretrain`'s code),
//! linear probes at 1/10/100 % labels (`finetune`'s code), the judge that checks the
//! generator follows its reports, and the report (table, results.json, grid).

use super::generator_init::write_initial_generator;
use super::preset::{Preset, DEMO_LABELS};
use super::report::{as_written, judge_agreement, write_grid, write_results, ProbeTable};
use super::sets::{read_rows, write_judge_manifest, write_prompts, write_synthetic_pairs, Row};
use super::stages::Stages;
use super::text_encoder_init::write_initial_text_encoder;
use crate::data::csv::CsvTable;
use crate::data::phantom::{write_dataset, PhantomOptions, Prevalence};
use crate::data::reports::Section;
use crate::data::OnBadImage;
use crate::error::{Error, Result};
use crate::pipelines::finetune::{finetune, FinetuneOptions, Mode};
use crate::pipelines::generate::{run_generate, GenerateOptions, PromptSource};
use crate::pipelines::pretrain::{pretrain, PretrainOptions, ReportText};
use crate::pipelines::run_log::progress;
use crate::pipelines::train_generator::{train_generator, TrainGeneratorOptions};
use crate::pipelines::work::Shard;
use crate::schedulers::SchedulerOptions;
use crate::tensor::{DType, Device};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

/// What `medsyn demo` runs.
#[derive(Clone, Debug)]
pub struct DemoOptions {
    pub out: PathBuf,
    pub preset: Preset,
    pub seed: u64,
    /// Where every stage runs.
    pub device: Device,
    pub quiet: bool,
}

/// The label fractions of the probe table.
pub const FRACTIONS: [(&str, f64); 3] = [("0.01", 0.01), ("0.1", 0.1), ("1.0", 1.0)];
/// The encoders the probes compare.
pub const ARMS: [&str; 3] = ["random", "real", "synthetic"];

/// Runs (or resumes) the demo in `opts.out`; returns results.json's content.
pub fn run_demo(opts: &DemoOptions) -> Result<Value> {
    let out = absolute(&opts.out)?;
    let p = &opts.preset;
    claim_folder(&out, p, opts.seed)?;
    if p.name == "full" && !opts.quiet && opts.device == Device::Cpu {
        eprintln!(
            "note: the full preset is sized for one GPU; on the CPU it takes many hours (--preset quick: minutes; --device cuda with a `--features cuda` build)"
        );
    }
    let mut stages = Stages::new(&out, 9, opts.quiet)?;
    let (real_dir, down_dir) = (out.join("real"), out.join("downstream"));
    let seed = opts.seed;

    stages.run("data", "make the real and downstream phantom sets", || {
        // Disjoint seeds: the downstream set shares no image with the real set.
        for (dir, n, set_seed) in [
            (
                &real_dir,
                p.real_pairs,
                seed.wrapping_mul(2).wrapping_add(1),
            ),
            (
                &down_dir,
                p.downstream_images,
                seed.wrapping_mul(2).wrapping_add(2),
            ),
        ] {
            let phantom = PhantomOptions {
                n,
                size: p.phantom_size,
                seed: set_seed,
                out: dir.clone(),
                masks: false,
                prevalence: Prevalence::default(),
            };
            let mut bar = progress(opts.quiet, n, "images", 0);
            write_dataset(&phantom, &mut bar)?;
            bar.finish();
        }
        Ok(json!({"real": p.real_pairs, "downstream": p.downstream_images}))
    })?;
    let real = read_rows(&real_dir.join("labels.csv"), &DEMO_LABELS)?;
    let downstream = read_rows(&down_dir.join("labels.csv"), &DEMO_LABELS)?;
    let impressions: Vec<String> = real.iter().map(|r| r.impression.clone()).collect();
    let reports: Vec<String> = real.iter().map(|r| r.report.clone()).collect();

    let (gen_init, gen_dir) = (out.join("generator-init"), out.join("generator"));
    let (text_init, encoder_json) = (
        out.join("text-encoder-init"),
        out.join("image-encoder.json"),
    );
    stages.run("init", "initialise the generator and the encoders", || {
        write_initial_generator(&gen_init, &impressions, &p.generator, seed)?;
        write_initial_text_encoder(&text_init, &reports, &p.text_encoder, seed)?;
        let arch = json!({"architecture": "resnet", "block": "basic", "layers": [1, 1, 1, 1],
                          "widths": p.encoder_widths, "stem_width": p.encoder_widths[0]});
        let text =
            serde_json::to_string_pretty(&arch).map_err(|e| Error::file(&encoder_json, e))?;
        crate::data::atomic::write_atomic(&encoder_json, text.as_bytes())?;
        Ok(json!({"generator": gen_init, "text_encoder": text_init}))
    })?;

    let generator = stages.run("generator", "train the generator on the real pairs", || {
        let s = train_generator(&TrainGeneratorOptions {
            model: gen_init.clone(),
            data: real_dir.join("labels.csv"),
            image_column: "path".into(),
            text_column: "impression".into(),
            out: gen_dir.clone(),
            steps: p.generator_steps,
            batch_size: p.generator_batch,
            grad_accum: 1,
            lr: p.generator_lr,
            warmup_steps: (p.generator_steps / 20).max(1),
            cosine: true,
            weight_decay: 0.0,
            max_grad_norm: 1.0,
            snr_gamma: Some(5.0),
            resolution: Some(p.resolution),
            dtype: DType::F32,
            device: opts.device,
            train_text_encoder: true,
            ema: false,
            ema_decay: 0.999,
            checkpoint_every: (p.generator_steps / 4).max(1),
            keep_checkpoints: 1,
            seed,
            quiet: opts.quiet,
        })?;
        Ok(json!({"steps": s.end_step, "final_loss": s.last_loss}))
    })?;

    let syn_dir = out.join("synthetic");
    let syn_image = |r: &Row| syn_dir.join("images").join(format!("{}.png", r.id));
    stages.run("synthetic", "generate one image per real report", || {
        std::fs::create_dir_all(&syn_dir).map_err(|e| Error::file(&syn_dir, e))?;
        let prompts = syn_dir.join("prompts.csv");
        write_prompts(&prompts, &real)?;
        let s = run_generate(&GenerateOptions {
            model: gen_dir.clone(),
            prompts: PromptSource::Reports {
                path: prompts,
                id_column: "id".into(),
                text_column: "impression".into(),
                section: Section::Full,
            },
            negatives: Vec::new(),
            steps: p.sampling_steps,
            guidance: p.guidance,
            scheduler: Some("ddim".into()),
            scheduler_options: SchedulerOptions::default(),
            seed,
            height: None,
            width: None,
            batch_size: 50,
            images_per_prompt: 1,
            latents: None,
            save_tensors: None,
            out: Some(syn_dir.join("images")),
            shard: Shard::all(),
            dtype: DType::F32,
            device: opts.device,
            quiet: opts.quiet,
        })?;
        write_synthetic_pairs(&syn_dir.join("pairs.csv"), &real, syn_image, &DEMO_LABELS)?;
        Ok(json!({"images": s.total, "truncated_prompts": s.truncated_prompts}))
    })?;

    let pretrained = |name: &str| out.join(format!("pretrain-{name}"));
    for (name, data) in [
        ("real", real_dir.join("labels.csv")),
        ("synthetic", syn_dir.join("pairs.csv")),
    ] {
        let title = format!("pre-train ConVIRT on the {name} pairs");
        stages.run(&format!("pretrain-{name}"), &title, || {
            let s = pretrain(&pretrain_options(
                p,
                opts,
                data,
                &encoder_json,
                &text_init,
                pretrained(name),
            ))?;
            Ok(json!({"steps": s.end_step, "final_loss": s.last_loss}))
        })?;
    }

    let probes = stages.run(
        "probes",
        "linear probes at 1 %, 10 % and 100 % labels",
        || {
            let mut table = serde_json::Map::new();
            for arm in ARMS {
                let mut row = serde_json::Map::new();
                for (key, fraction) in FRACTIONS {
                    let encoder = if arm == "random" {
                        "random".to_string()
                    } else {
                        pretrained(arm).display().to_string()
                    };
                    let s = finetune(&FinetuneOptions {
                        encoder,
                        image_encoder: (arm == "random")
                            .then(|| encoder_json.display().to_string()),
                        data: down_dir.join("labels.csv"),
                        labels: DEMO_LABELS.iter().map(|s| s.to_string()).collect(),
                        label_fraction: fraction,
                        mode: Mode::LinearProbe,
                        out: out.join("probes").join(format!("{arm}-{key}")),
                        epochs: p.probe_epochs,
                        patience: 10,
                        batch_size: 32,
                        lr: 5e-3,
                        seed,
                        ..finetune_common(p, opts)
                    })?;
                    row.insert(key.to_string(), json!(s.test.mean_auc));
                }
                table.insert(arm.to_string(), Value::Object(row));
            }
            Ok(Value::Object(table))
        },
    )?;

    let judge_dir = out.join("judge");
    let agreement = stages.run(
        "judge",
        "check that the generator follows its reports",
        || {
            std::fs::create_dir_all(&judge_dir).map_err(|e| Error::file(&judge_dir, e))?;
            let manifest = judge_dir.join("manifest.csv");
            write_judge_manifest(&manifest, &downstream, &real, syn_image, &DEMO_LABELS)?;
            finetune(&FinetuneOptions {
                encoder: "random".into(),
                image_encoder: Some(encoder_json.display().to_string()),
                data: manifest.clone(),
                id_column: Some("id".into()),
                labels: DEMO_LABELS.iter().map(|s| s.to_string()).collect(),
                mode: Mode::Full,
                out: judge_dir.join("classifier"),
                epochs: p.judge_epochs,
                patience: 4,
                batch_size: 32,
                lr: 1e-3,
                seed,
                ..finetune_common(p, opts)
            })?;
            judge_agreement(
                &judge_dir.join("classifier").join("predictions_test.csv"),
                &CsvTable::read(&manifest)?,
                &DEMO_LABELS,
            )
        },
    )?;

    let table = ProbeTable::from_json(&probes)?;
    stages.run(
        "report",
        "write the table, results.json and the image grid",
        || {
            write_grid(&out.join("grid.png"), &real, syn_image, 8)?;
            Ok(json!({"grid": "grid.png"}))
        },
    )?;
    let results = json!({
        "preset": p.name,
        "seed": seed,
        "linear_probe": probes,
        "agreement": agreement,
        "generator": generator,
        "labels": DEMO_LABELS,
        "stage_seconds": stages.seconds.clone(),
        "seconds": stages.total_seconds(),
    });
    let results = as_written(&results);
    write_results(&out, &results, &table)?;
    Ok(results)
}

fn pretrain_options(
    p: &Preset,
    opts: &DemoOptions,
    data: PathBuf,
    encoder_json: &Path,
    text_init: &Path,
    out: PathBuf,
) -> PretrainOptions {
    PretrainOptions {
        data,
        image_column: "path".into(),
        text: ReportText::ImpressionFindings {
            impression: "impression".into(),
            findings: "findings".into(),
        },
        image_encoder: encoder_json.display().to_string(),
        text_encoder: text_init.to_path_buf(),
        out,
        epochs: p.pretrain_epochs,
        batch_size: p.pretrain_batch,
        lr: p.pretrain_lr,
        weight_decay: 1e-4,
        dtype: DType::F32,
        device: opts.device,
        max_text_tokens: p.text_encoder.max_tokens,
        resize: p.resolution,
        crop: p.resolution,
        checkpoint_every: 100,
        keep_checkpoints: 1,
        seed: opts.seed,
        quiet: opts.quiet,
        ..PretrainOptions::default()
    }
}

/// What every fine-tuning run of the demo shares.
fn finetune_common(p: &Preset, opts: &DemoOptions) -> FinetuneOptions {
    FinetuneOptions {
        resize: Some(p.resolution),
        crop: Some(p.resolution),
        dtype: DType::F32,
        device: opts.device,
        on_bad_image: OnBadImage::Fail,
        quiet: opts.quiet,
        ..FinetuneOptions::default()
    }
}

/// Records the preset and seed in `out/demo.json`, or checks that a folder being
/// resumed was started with the same ones (its finished stages hold their results).
fn claim_folder(out: &Path, p: &Preset, seed: u64) -> Result<()> {
    let path = out.join("demo.json");
    let want = json!({"preset": p.name, "seed": seed});
    if path.is_file() {
        let text = std::fs::read_to_string(&path).map_err(|e| Error::file(&path, e))?;
        let had: Value = serde_json::from_str(&text).map_err(|e| Error::file(&path, e))?;
        if had != want {
            return Err(Error::file(
                &path,
                format!(
                    "this folder holds a demo run with --preset {} --seed {}; rerun with those flags to resume, or give a new --out",
                    had["preset"].as_str().unwrap_or("?"),
                    had["seed"]
                ),
            ));
        }
        return Ok(());
    }
    let text = serde_json::to_string_pretty(&want).map_err(|e| Error::file(&path, e))?;
    crate::data::atomic::write_atomic(&path, text.as_bytes())
}

fn absolute(out: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(out).map_err(|e| Error::file(out, format!("cannot create: {e}")))?;
    out.canonicalize().map_err(|e| Error::file(out, e))
}
