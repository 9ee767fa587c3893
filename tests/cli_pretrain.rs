//! The `pretrain`, `finetune` and `eval` subcommands through the binary: help text,
//! a small end-to-end run (pre-train → linear probe → eval of its predictions), and
//! flag errors that exit 1 with a clear message.

use medsyn::imageio::write_png_atomic;
use medsyn::tensor::Philox;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn medsyn(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_medsyn"))
        .args(args)
        .output()
        .expect("run medsyn")
}

fn ok(args: &[&str]) -> String {
    let o = medsyn(args);
    assert!(
        o.status.success(),
        "medsyn {args:?} failed:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn fails(args: &[&str]) -> String {
    let o = medsyn(args);
    assert!(!o.status.success(), "medsyn {args:?} should fail");
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn scratch(name: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("medsyn-cli-pretrain-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// 30 images labelled `bright`, with reports and splits; a tiny ResNet config.
fn dataset(dir: &Path) -> (PathBuf, PathBuf) {
    let mut rng = Philox::new(9);
    let mut csv = String::from("path,split,bright,report\n");
    for i in 0..30 {
        let bright = i % 2 == 0;
        let noise = rng.normal(32 * 32);
        let px: Vec<u8> = noise
            .iter()
            .map(|v| ((if bright { 170.0 } else { 80.0 }) + 15.0 * v).clamp(0.0, 255.0) as u8)
            .collect();
        write_png_atomic(dir.join(format!("{i}.png")), &px, 32, 32, 1).unwrap();
        let split = ["train", "train", "train", "valid", "test"][i % 5];
        let report = if bright {
            "large heart."
        } else {
            "normal heart."
        };
        csv += &format!("{i}.png,{split},{},{report}\n", bright as u8);
    }
    std::fs::write(dir.join("data.csv"), csv).unwrap();
    let cfg = dir.join("tiny.json");
    std::fs::write(
        &cfg,
        r#"{"architecture": "resnet", "block": "basic", "layers": [1, 1, 1, 1], "stem_width": 4, "widths": [4, 8, 8, 8]}"#,
    )
    .unwrap();
    (dir.join("data.csv"), cfg)
}

#[test]
fn help_explains_the_flags() {
    let help = ok(&["pretrain", "--help"]);
    for flag in [
        "--method",
        "--image-encoder",
        "--image-init",
        "--text-encoder",
        "--grad-accum",
        "--stop-after",
        "--on-bad-image",
        "--max-text-tokens",
    ] {
        assert!(help.contains(flag), "pretrain --help lacks {flag}");
    }
    assert!(help.contains("convirt"));
    let help = ok(&["finetune", "--help"]);
    for flag in [
        "--encoder",
        "--label-fraction",
        "--linear-probe",
        "--full",
        "--labels",
        "--uncertain",
        "--patience",
    ] {
        assert!(help.contains(flag), "finetune --help lacks {flag}");
    }
}

#[test]
fn pretrain_then_probe_then_eval() {
    let dir = scratch("e2e");
    let (data, cfg) = dataset(&dir);
    let pre = dir.join("pre");
    let common = ["--resize", "36", "--crop", "32", "--quiet"];
    let mut args = vec![
        "pretrain",
        "--data",
        s(&data),
        "--text-column",
        "report",
        "--image-encoder",
        s(&cfg),
        "--text-encoder",
        "tests/fixtures/bert_tiny",
        "--out",
        s(&pre),
        "--epochs",
        "1",
        "--batch-size",
        "6",
        "--dtype",
        "f32",
        "--max-text-tokens",
        "32",
        "--lr",
        "1e-3",
    ];
    args.extend(common);
    let out = ok(&args);
    assert!(out.contains("image encoder"), "{out}");
    assert!(pre.join("image_encoder.safetensors").is_file());

    let ft = dir.join("ft");
    let mut args = vec![
        "finetune",
        "--encoder",
        s(&pre),
        "--data",
        s(&data),
        "--labels",
        "bright",
        "--epochs",
        "5",
        "--lr",
        "1e-2",
        "--out",
        s(&ft),
    ];
    args.extend(&common[4..]);
    let out = ok(&args);
    assert!(out.contains("bright") && out.contains("mean"), "{out}");

    let labels = dir.join("test_labels.csv");
    let mut l = String::from("id,bright\n");
    for i in (4..30).step_by(5) {
        l += &format!("{i}.png,{}\n", (i % 2 == 0) as u8);
    }
    std::fs::write(&labels, l).unwrap();
    let json = dir.join("auc.json");
    ok(&[
        "eval",
        "--predictions",
        s(&ft.join("predictions_test.csv")),
        "--labels",
        s(&labels),
        "--json",
        s(&json),
    ]);
    let a: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let r: serde_json::Value =
        serde_json::from_slice(&std::fs::read(ft.join("results.json")).unwrap()).unwrap();
    assert_eq!(a["mean_auc"], r["mean_auc"], "eval and finetune agree");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn flag_errors_are_clear() {
    let dir = scratch("flags");
    let (data, cfg) = dataset(&dir);
    let base = [
        "pretrain",
        "--data",
        s(&data),
        "--image-encoder",
        s(&cfg),
        "--text-encoder",
        "tests/fixtures/bert_tiny",
        "--out",
        s(&dir),
    ];
    let with = |extra: &[&str]| {
        let mut v: Vec<&str> = base.to_vec();
        v.extend(extra);
        fails(&v)
    };
    assert!(with(&["--device", "cuda:0"]).contains("no CUDA backend"));
    assert!(with(&["--mean", "0.5,x"]).contains("`x` is not a number"));
    assert!(with(&["--dtype", "f8"]).contains("expected f32, bf16 or f16"));
    assert!(with(&["--method", "simclr"]).contains("simclr"));
    assert!(fails(&[
        "finetune",
        "--encoder",
        "random",
        "--data",
        s(&data),
        "--labels",
        "bright",
        "--out",
        s(&dir)
    ])
    .contains("--image-encoder"));
    assert!(fails(&[
        "finetune",
        "--encoder",
        "random",
        "--image-encoder",
        s(&cfg),
        "--data",
        s(&data),
        "--labels",
        "bright",
        "--out",
        s(&dir),
        "--linear-probe",
        "--full"
    ])
    .contains("cannot be used with"));
    let _ = std::fs::remove_dir_all(&dir);
}
