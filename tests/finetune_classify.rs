//! `finetune --task classify` end to end on generated images with two learnable
//! labels: a linear probe on a random tiny ResNet and on a `pretrain` output folder,
//! full fine-tuning, label fractions, uncertain labels, the predictions file agreeing
//! with `eval`, and bad-input errors.

use medsyn::eval::{evaluate, ScoreTable};
use medsyn::imageio::write_png_atomic;
use medsyn::pipelines::finetune::{finetune, FinetuneOptions, Mode, Uncertain};
use medsyn::pipelines::pretrain::{pretrain, PretrainOptions, ReportText};
use medsyn::tensor::Philox;
use medsyn::DType;
use std::path::{Path, PathBuf};

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("medsyn-finetune-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// 60 gray images: `bright` (overall level) and `striped` (horizontal bands), both
/// random per image; splits 36/12/12; a report column for pre-training; `extra`
/// rows let a test append labels.
fn dataset(dir: &Path, extra: &str) -> PathBuf {
    let mut rng = Philox::new(3);
    let mut csv = String::from("path,split,bright,striped,report\n");
    for i in 0..60 {
        let bright = rng.below(2) == 1;
        let striped = rng.below(2) == 1;
        let noise = rng.normal(40 * 40);
        let px: Vec<u8> = (0..40 * 40)
            .map(|p| {
                let base = if bright { 170.0 } else { 80.0 };
                let band = if striped && (p / 40) % 6 < 3 {
                    60.0
                } else {
                    0.0
                };
                (base + band + 15.0 * noise[p]).clamp(0.0, 255.0) as u8
            })
            .collect();
        let file = format!("img{i}.png");
        write_png_atomic(dir.join(&file), &px, 40, 40, 1).unwrap();
        let split = match i % 5 {
            0 => "valid",
            1 => "test",
            _ => "train",
        };
        let report = format!(
            "{} heart. {} effusion.",
            if bright { "large" } else { "normal" },
            if striped { "left" } else { "no" }
        );
        csv += &format!(
            "{file},{split},{},{},{report}\n",
            bright as u8, striped as u8
        );
    }
    csv += extra;
    let path = dir.join("labels.csv");
    std::fs::write(&path, csv).unwrap();
    std::fs::write(
        dir.join("resnet_tiny.json"),
        r#"{"architecture": "resnet", "block": "basic", "layers": [1, 1, 1, 1], "stem_width": 8, "widths": [8, 16, 16, 16]}"#,
    )
    .unwrap();
    path
}

fn options(dir: &Path, data: &Path, out: &str) -> FinetuneOptions {
    FinetuneOptions {
        encoder: "random".into(),
        image_encoder: Some(dir.join("resnet_tiny.json").display().to_string()),
        data: data.to_path_buf(),
        labels: vec!["bright".into(), "striped".into()],
        out: dir.join(out),
        epochs: 30,
        patience: 30,
        batch_size: 8,
        lr: 1e-2,
        resize: Some(36),
        crop: Some(32),
        workers: 2,
        quiet: true,
        ..FinetuneOptions::default()
    }
}

#[test]
fn linear_probe_learns_and_its_predictions_agree_with_eval() {
    let dir = scratch("probe");
    let data = dataset(&dir, "");
    let opts = options(&dir, &data, "probe");
    let s = finetune(&opts).unwrap();
    assert_eq!(s.train_rows, 36);
    let mean = s.test.mean_auc.expect("defined");
    assert!(mean > 0.8, "test mean AUC {mean:.3}: {:?}", s.test.classes);
    // The predictions file scored by `eval` gives the same numbers.
    let out = &opts.out;
    let labels = dir.join("test_labels.csv");
    let text = std::fs::read_to_string(&data).unwrap();
    let mut l = String::from("id,bright,striped\n");
    for row in text.lines().skip(1).filter(|r| r.contains(",test,")) {
        let f: Vec<&str> = row.split(',').collect();
        l += &format!("{},{},{}\n", f[0], f[2], f[3]);
    }
    std::fs::write(&labels, l).unwrap();
    let preds = ScoreTable::read_predictions(out.join("predictions_test.csv")).unwrap();
    let report = evaluate(&preds, &ScoreTable::read_labels(&labels).unwrap()).unwrap();
    assert_eq!(report.mean_auc, s.test.mean_auc);
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("results.json")).unwrap()).unwrap();
    assert_eq!(json["mean_auc"].as_f64(), s.test.mean_auc);
    assert_eq!(json["mode"], "linear_probe");
    assert_eq!(json["train_rows"], 36);
    let epochs = std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .count();
    assert_eq!(epochs, s.epochs_run);
    let cls = medsyn::io::TensorSet::open(out.join("classifier.safetensors")).unwrap();
    let mut names = cls.names().to_vec();
    names.sort();
    assert_eq!(names, ["fc.bias", "fc.weight"]);
    // Same seed, same result.
    let again = finetune(&FinetuneOptions {
        out: dir.join("probe2"),
        ..opts.clone()
    })
    .unwrap();
    assert_eq!(again.test.mean_auc, s.test.mean_auc);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn fractions_uncertain_labels_and_full_fine_tuning() {
    let dir = scratch("modes");
    // Two extra training rows with an uncertain and a missing label.
    let data = dataset(&dir, "img0.png,train,-1,1,x\nimg1.png,train,,0,x\n");
    let base = options(&dir, &data, "x");
    let s = finetune(&FinetuneOptions {
        label_fraction: 0.1,
        epochs: 2,
        out: dir.join("tenth"),
        ..base.clone()
    })
    .unwrap();
    assert_eq!(s.train_rows, 4, "10% of 38 training rows");
    let s = finetune(&FinetuneOptions {
        mode: Mode::Full,
        uncertain: Uncertain::Ignore,
        epochs: 2,
        lr: 1e-3,
        dtype: DType::BF16,
        out: dir.join("full"),
        ..base.clone()
    })
    .unwrap();
    assert_eq!(s.train_rows, 38);
    assert!(s.test.mean_auc.is_some());
    let cls = medsyn::io::TensorSet::open(dir.join("full/classifier.safetensors")).unwrap();
    assert!(cls
        .names()
        .iter()
        .any(|n| n == "encoder.layer1.0.bn1.running_mean"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_pretrain_folder_is_an_encoder() {
    let dir = scratch("from-pretrain");
    let data = dataset(&dir, "");
    let pre = dir.join("pre");
    pretrain(&PretrainOptions {
        data: data.clone(),
        text: ReportText::Column {
            name: "report".into(),
            section: medsyn::data::Section::Full,
        },
        image_encoder: dir.join("resnet_tiny.json").display().to_string(),
        text_encoder: "tests/fixtures/bert_tiny".into(),
        out: pre.clone(),
        epochs: 1,
        batch_size: 8,
        lr: 1e-3,
        dtype: DType::F32,
        proj_dim: 8,
        max_text_tokens: 32,
        resize: 36,
        crop: 32,
        workers: 2,
        quiet: true,
        ..PretrainOptions::default()
    })
    .unwrap();
    let s = finetune(&FinetuneOptions {
        encoder: pre.display().to_string(),
        image_encoder: None,
        resize: None,
        crop: None,
        epochs: 3,
        out: dir.join("ft"),
        ..options(&dir, &data, "ft")
    })
    .unwrap();
    assert!(s.test.mean_auc.is_some());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_inputs_are_clear_errors() {
    let dir = scratch("bad");
    let data = dataset(&dir, "img0.png,train,2,1,x\n");
    let check = |opts: FinetuneOptions, needle: &str| {
        let err = finetune(&opts).expect_err(needle).to_string();
        assert!(err.contains(needle), "expected `{needle}` in: {err}");
    };
    let base = || options(&dir, &data, "out");
    check(base(), "line 62");
    check(
        FinetuneOptions {
            encoder: "nowhere".into(),
            ..base()
        },
        "no such folder",
    );
    check(
        FinetuneOptions {
            image_encoder: None,
            ..base()
        },
        "--image-encoder",
    );
    check(
        FinetuneOptions {
            labels: vec!["nope".into()],
            ..base()
        },
        "nope",
    );
    check(
        FinetuneOptions {
            label_fraction: 0.0,
            labels: vec!["striped".into()],
            ..base()
        },
        "label-fraction",
    );
    let no_valid = dir.join("novalid.csv");
    std::fs::write(
        &no_valid,
        "path,split,bright\nimg0.png,train,1\nimg1.png,test,0\n",
    )
    .unwrap();
    check(
        FinetuneOptions {
            data: no_valid,
            labels: vec!["bright".into()],
            ..base()
        },
        "valid",
    );
    let _ = std::fs::remove_dir_all(&dir);
}
