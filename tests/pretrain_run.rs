//! `pretrain` end to end on a tiny generated dataset (gray PNGs with two-section
//! reports), a tiny ResNet config and the tiny BERT fixture: the metrics log,
//! checkpoints, exports under torchvision names, exact resume after an interruption,
//! learning on a fixed set, and bad-input errors.

use medsyn::imageio::write_png_atomic;
use medsyn::io::TensorSet;
use medsyn::pipelines::pretrain::{pretrain, ImageArch, ImageEncoder, PretrainOptions, ReportText};
use medsyn::tensor::Philox;
use medsyn::DType;
use std::path::{Path, PathBuf};

const BERT: &str = "tests/fixtures/bert_tiny";
const WORDS: [&str; 8] = [
    "no", "acute", "effusion", "left", "right", "opacity", "normal", "heart",
];

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("medsyn-pretrain-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `n` gray 40×40 PNGs whose brightness pattern depends on the report's words, and
/// a manifest with impression and findings columns; plus a tiny ResNet config.
fn dataset(dir: &Path, n: usize) -> (PathBuf, PathBuf) {
    let mut rng = Philox::new(17);
    let mut csv = String::from("path,impression,findings\n");
    for i in 0..n {
        let a = WORDS[i % WORDS.len()];
        let b = WORDS[(i * 3 + 1) % WORDS.len()];
        let noise = rng.normal(40 * 40);
        let px: Vec<u8> = (0..40 * 40)
            .map(|p| {
                let (y, x) = (p / 40, p % 40);
                let base = if (x < 20) == (i % 2 == 0) {
                    200.0
                } else {
                    60.0
                };
                let stripe = if y % (2 + i % 3) == 0 { 30.0 } else { 0.0 };
                (base + stripe + 10.0 * noise[p]).clamp(0.0, 255.0) as u8
            })
            .collect();
        let file = format!("img{i}.png");
        write_png_atomic(dir.join(&file), &px, 40, 40, 1).unwrap();
        csv += &format!("{file},\"{a} {b}.\",\"The {b} is {a}, with no {a}.\"\n");
    }
    let manifest = dir.join("pairs.csv");
    std::fs::write(&manifest, csv).unwrap();
    let config = dir.join("resnet_tiny.json");
    std::fs::write(
        &config,
        r#"{"architecture": "resnet", "block": "basic", "layers": [1, 1, 1, 1], "stem_width": 4, "widths": [4, 8, 8, 8]}"#,
    )
    .unwrap();
    (manifest, config)
}

fn options(manifest: &Path, config: &Path, out: &Path) -> PretrainOptions {
    PretrainOptions {
        data: manifest.to_path_buf(),
        image_encoder: config.display().to_string(),
        text_encoder: PathBuf::from(BERT),
        out: out.to_path_buf(),
        text: ReportText::ImpressionFindings {
            impression: "impression".into(),
            findings: "findings".into(),
        },
        epochs: 3,
        batch_size: 4,
        lr: 1e-3,
        dtype: DType::F32,
        proj_dim: 8,
        max_text_tokens: 32,
        resize: 36,
        crop: 32,
        checkpoint_every: 2,
        workers: 2,
        quiet: true,
        ..PretrainOptions::default()
    }
}

fn bytes(p: PathBuf) -> Vec<u8> {
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn pretrain_logs_checkpoints_and_exports_torchvision_names() {
    let dir = scratch("run");
    let (manifest, config) = dataset(&dir, 8);
    let out = dir.join("out");
    let s = pretrain(&options(&manifest, &config, &out)).unwrap();
    assert_eq!((s.start_step, s.end_step, s.total_steps), (0, 6, 6));
    let log = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 6);
    for (i, l) in lines.iter().enumerate() {
        assert_eq!(l["step"], i as u64 + 1);
        for key in ["loss", "lr", "images_per_s", "info_nce"] {
            assert!(l[key].as_f64().is_some_and(f64::is_finite), "{key} in {l}");
        }
    }
    // Warm-up then cosine to 0 at the last step.
    assert_eq!(lines[0]["lr"], 0.0);
    assert!(lines[1]["lr"].as_f64().unwrap() > 0.0);
    let steps: Vec<String> = std::fs::read_dir(out.join("checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let mut steps = steps;
    steps.sort();
    assert_eq!(
        steps,
        ["step-00000004", "step-00000006"],
        "two checkpoints kept"
    );

    // The image encoder export: torchvision's state-dict names and shapes, f32.
    let arch = ImageArch::parse(&config.display().to_string()).unwrap();
    let fresh = ImageEncoder::load(&arch, None, DType::F32, 0).unwrap();
    let set = TensorSet::open(out.join("image_encoder.safetensors")).unwrap();
    let want: Vec<String> = fresh.state_dict().into_iter().map(|(n, _)| n).collect();
    let mut got = set.names().to_vec();
    let mut want_sorted = want.clone();
    got.sort();
    want_sorted.sort();
    assert_eq!(got, want_sorted);
    assert!(want.iter().any(|n| n == "layer1.0.bn1.running_mean"));
    for (name, t) in fresh.state_dict() {
        let saved = set.load(&name).unwrap();
        assert_eq!(saved.shape(), t.shape(), "{name}");
    }
    // The trained encoder reloads as an init, and the text encoder folder as BERT.
    ImageEncoder::load(
        &arch,
        Some(&out.join("image_encoder.safetensors")),
        DType::F32,
        0,
    )
    .unwrap();
    medsyn::models::bert::BertModel::from_pretrained(&out.join("text_encoder"), DType::F32)
        .unwrap();
    assert!(out.join("text_encoder/vocab.txt").is_file());
    let cfg: serde_json::Value =
        serde_json::from_slice(&bytes(out.join("pretrain_config.json"))).unwrap();
    assert_eq!(cfg["method"], "convirt");
    assert_eq!(cfg["crop"], 32);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_interrupted_run_resumes_to_the_same_weights() {
    let dir = scratch("resume");
    let (manifest, config) = dataset(&dir, 8);
    let straight = dir.join("straight");
    pretrain(&options(&manifest, &config, &straight)).unwrap();

    let resumed = dir.join("resumed");
    let mut opts = options(&manifest, &config, &resumed);
    opts.checkpoint_every = 100;
    opts.stop_after = Some(3);
    let s = pretrain(&opts).unwrap();
    assert_eq!((s.end_step, s.total_steps), (3, 6));
    assert!(
        !resumed.join("image_encoder.safetensors").exists(),
        "no export before the end"
    );
    opts.stop_after = None;
    let s = pretrain(&opts).unwrap();
    assert_eq!((s.start_step, s.end_step), (3, 6));
    for file in [
        "image_encoder.safetensors",
        "method.safetensors",
        "text_encoder/model.safetensors",
    ] {
        assert!(
            bytes(straight.join(file)) == bytes(resumed.join(file)),
            "{file} differs after resuming"
        );
    }
    // A different seed must not resume from these checkpoints.
    let mut other = options(&manifest, &config, &resumed);
    other.seed = 5;
    let err = pretrain(&other).expect_err("seed mismatch").to_string();
    assert!(err.contains("seed"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_loss_falls_on_a_fixed_set() {
    let dir = scratch("learn");
    let (manifest, config) = dataset(&dir, 8);
    let out = dir.join("out");
    let mut opts = options(&manifest, &config, &out);
    opts.epochs = 12;
    opts.checkpoint_every = 1000;
    opts.warmup_steps = Some(2);
    pretrain(&opts).unwrap();
    let log = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    let losses: Vec<f64> = log
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["loss"]
                .as_f64()
                .unwrap()
        })
        .collect();
    let n = losses.len();
    let first = (losses[0] + losses[1]) / 2.0;
    let last = losses[n - 4..].iter().sum::<f64>() / 4.0;
    assert!(
        last < 0.8 * first,
        "loss {first:.3} → {last:.3} over {n} steps: {losses:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_settings_and_inputs_are_clear_errors() {
    let dir = scratch("bad");
    let (manifest, config) = dataset(&dir, 8);
    let out = dir.join("out");
    let check = |opts: PretrainOptions, needle: &str| {
        let err = pretrain(&opts).expect_err(needle).to_string();
        assert!(err.contains(needle), "expected `{needle}` in: {err}");
    };
    let base = || options(&manifest, &config, &out);
    check(
        PretrainOptions {
            batch_size: 1,
            ..base()
        },
        "at least 2",
    );
    check(
        PretrainOptions {
            image_encoder: "resnet51".into(),
            ..base()
        },
        "not a known architecture",
    );
    check(
        PretrainOptions {
            text_encoder: dir.join("no-bert"),
            ..base()
        },
        "no-bert",
    );
    check(
        PretrainOptions {
            max_text_tokens: 500,
            ..base()
        },
        "max_position_embeddings",
    );
    check(
        PretrainOptions {
            batch_size: 9,
            ..base()
        },
        "fewer than one batch",
    );
    check(
        PretrainOptions {
            dtype: DType::F16,
            ..base()
        },
        "f16",
    );
    let bad_csv = dir.join("bad.csv");
    std::fs::write(&bad_csv, "path,report\nimg0.png,x\n").unwrap();
    check(
        PretrainOptions {
            data: bad_csv,
            ..base()
        },
        "impression",
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bf16_with_gradient_accumulation_steps_per_two_micro_batches() {
    let dir = scratch("bf16");
    let (manifest, config) = dataset(&dir, 8);
    let out = dir.join("out");
    let s = pretrain(&PretrainOptions {
        dtype: DType::BF16,
        grad_accum: 2,
        epochs: 2,
        ..options(&manifest, &config, &out)
    })
    .unwrap();
    // 2 batches of 4 per epoch × 2 epochs = 4 micro-batches = 2 optimizer steps.
    assert_eq!(s.total_steps, 2);
    assert!(s.last_loss.is_finite());
    let log = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    assert_eq!(log.lines().count(), 2);
    // Exports are f32 (the fp32 master weights), whatever the training dtype.
    let set = TensorSet::open(out.join("image_encoder.safetensors")).unwrap();
    assert_eq!(set.load("conv1.weight").unwrap().dtype(), DType::F32);
    let _ = std::fs::remove_dir_all(&dir);
}
