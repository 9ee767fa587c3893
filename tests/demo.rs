//! `medsyn demo` end to end on a micro preset (every stage, in minutes' fraction):
//! results.json's shape, the grid, resume of finished stages and of a removed one,
//! and the pixel-space generator folder it initialises.

use medsyn::pipelines::demo::generator_init::{write_initial_generator, GeneratorSpec};
use medsyn::pipelines::demo::text_encoder_init::TextEncoderSpec;
use medsyn::pipelines::demo::{run_demo, DemoOptions, Preset, DEMO_LABELS};
use medsyn::pipelines::stable_diffusion::StableDiffusion;
use medsyn::tensor::DType;
use serde_json::Value;
use std::path::PathBuf;

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("medsyn-demo-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn micro() -> Preset {
    Preset {
        name: "micro",
        phantom_size: 64,
        real_pairs: 24,
        downstream_images: 80,
        resolution: 32,
        generator: GeneratorSpec {
            resolution: 32,
            block_out_channels: vec![8, 16],
            attention_levels: 1,
            text_width: 16,
            text_layers: 1,
        },
        generator_steps: 2,
        generator_batch: 4,
        generator_lr: 1e-3,
        sampling_steps: 2,
        guidance: 2.0,
        text_encoder: TextEncoderSpec {
            hidden: 16,
            layers: 1,
            heads: 2,
            max_tokens: 128,
        },
        encoder_widths: [8, 8, 8, 8],
        pretrain_epochs: 1,
        pretrain_batch: 8,
        pretrain_lr: 1e-3,
        probe_epochs: 2,
        judge_epochs: 1,
    }
}

fn read_json(path: &std::path::Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn micro_demo_runs_every_stage_and_resumes() {
    let out = tmp("micro");
    let opts = DemoOptions {
        out: out.clone(),
        preset: micro(),
        seed: 3,
        device: medsyn::Device::Cpu,
        quiet: true,
    };
    let results = run_demo(&opts).unwrap();
    let on_disk = read_json(&out.join("results.json"));
    assert_eq!(results, on_disk);
    for arm in ["random", "real", "synthetic"] {
        for frac in ["0.01", "0.1", "1.0"] {
            let v = &results["linear_probe"][arm][frac];
            // A mean AUC, or null where the tiny test split had one label value only.
            assert!(
                v.is_null() || v.as_f64().is_some_and(|a| (0.0..=1.0).contains(&a)),
                "{arm} {frac}: {v}"
            );
            assert!(out
                .join("probes")
                .join(format!("{arm}-{frac}"))
                .join("results.json")
                .is_file());
        }
    }
    for subset in ["synthetic", "real"] {
        let per = results["agreement"][subset]["per_class"]
            .as_object()
            .unwrap();
        assert_eq!(per.len(), DEMO_LABELS.len());
    }
    assert_eq!(results["agreement"]["chance"], 0.5);
    assert!(results["seconds"].as_f64().unwrap() > 0.0);
    assert_eq!(results["preset"], "micro");
    // One synthetic image per real report, and the pairs file that pre-training read.
    let images = std::fs::read_dir(out.join("synthetic/images"))
        .unwrap()
        .count();
    assert!(images >= 24, "{images} synthetic images");
    let pairs = std::fs::read_to_string(out.join("synthetic/pairs.csv")).unwrap();
    assert!(pairs.starts_with("id,path,split,report,findings,impression,Cardiomegaly"));
    // The grid: two rows of 96-px cells (real above synthetic).
    let grid = medsyn::imageio::read_png(out.join("grid.png")).unwrap();
    assert_eq!(grid.height, 2 * 96 + 4);
    assert_eq!((grid.width + 4) % 100, 0);
    assert!(std::fs::read_to_string(out.join("table.txt"))
        .unwrap()
        .contains("ConVIRT, synthetic pairs"));

    // A rerun skips every finished stage and reports the same numbers.
    let again = run_demo(&opts).unwrap();
    assert_eq!(again["linear_probe"], results["linear_probe"]);
    assert_eq!(again["agreement"], results["agreement"]);
    assert_eq!(again["seconds"], results["seconds"]);

    // A removed stage reruns (its own outputs resume too) and gives the same numbers.
    std::fs::remove_file(out.join("stages/probes.json")).unwrap();
    std::fs::remove_dir_all(out.join("probes/synthetic-1.0")).unwrap();
    let redone = run_demo(&opts).unwrap();
    assert_eq!(redone["linear_probe"], results["linear_probe"]);

    // Resuming with another seed or preset is refused (the stages hold the old results).
    let other = DemoOptions {
        seed: 4,
        ..opts.clone()
    };
    let err = run_demo(&other).err().unwrap().to_string();
    assert!(
        err.contains("demo.json") && err.contains("--seed 3"),
        "{err}"
    );
    std::fs::remove_dir_all(&out).unwrap();
}

/// The quick preset end to end (about 8 minutes on 2 cores; run with
/// `cargo test --release --test demo -- --ignored`): the learning the README claims.
#[test]
#[ignore]
fn quick_demo_shows_learning() {
    let out = tmp("quick");
    let results = run_demo(&DemoOptions {
        out: out.clone(),
        preset: Preset::quick(),
        seed: 0,
        device: medsyn::Device::Cpu,
        quiet: true,
    })
    .unwrap();
    let probe = |arm: &str, frac: &str| results["linear_probe"][arm][frac].as_f64().unwrap();
    let random = probe("random", "0.01");
    for arm in ["real", "synthetic"] {
        assert!(
            probe(arm, "0.01") > random + 0.02,
            "{arm}-pre-trained encoder at 1 % labels: {} vs random {random}",
            probe(arm, "0.01")
        );
    }
    let agreement = results["agreement"]["synthetic"]["mean_auc"]
        .as_f64()
        .unwrap();
    assert!(agreement > 0.6, "judge AUC on synthetic images {agreement}");
    // Time is reported, not asserted (timing belongs in benches, not tests).
    eprintln!("quick preset: {} s", results["seconds"]);
    std::fs::remove_dir_all(&out).unwrap();
}

#[test]
fn initial_generator_is_a_loadable_pixel_space_pipeline() {
    let dir = tmp("gen-init");
    let reports: Vec<String> = [
        "Cardiomegaly. No pneumothorax.",
        "Small left pleural effusion.",
        "No acute cardiopulmonary process.",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let spec = GeneratorSpec {
        resolution: 32,
        block_out_channels: vec![8, 16],
        attention_levels: 1,
        text_width: 16,
        text_layers: 1,
    };
    write_initial_generator(&dir, &reports, &spec, 0).unwrap();
    let pipe = StableDiffusion::load(&dir, DType::F32).unwrap();
    assert!(pipe.vae.is_none());
    assert_eq!(pipe.vae_scale_factor(), 1);
    assert_eq!(pipe.default_size(), (32, 32));
    let (ids, cut) = pipe.tokenize(&reports).unwrap();
    assert!(cut.is_empty());
    assert_eq!(ids.shape(), [3, 77]);

    // A pixel-space folder needs an RGB U-Net.
    let cfg_path = dir.join("unet/config.json");
    let mut cfg = read_json(&cfg_path);
    cfg["in_channels"] = 4.into();
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    let err = StableDiffusion::load(&dir, DType::F32)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("pixel-space") && err.contains("3 input"),
        "{err}"
    );

    // Bad sizes are refused before anything is written.
    let bad = GeneratorSpec {
        attention_levels: 3,
        ..spec
    };
    assert!(write_initial_generator(&tmp("gen-bad"), &reports, &bad, 0).is_err());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn unknown_preset_is_an_error() {
    let err = Preset::named("huge").err().unwrap().to_string();
    assert!(err.contains("quick or full"), "{err}");
}
