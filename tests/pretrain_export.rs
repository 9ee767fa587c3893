//! A pre-training run's exported image encoder loads into PyTorch by the usual names:
//! ResNet-50 into torchvision's `resnet50` and ViT-B/16 into timm's
//! `vit_base_patch16_224`, with `load_state_dict(strict=True)`, reproducing medsyn's
//! features (scripts/fixtures/check_encoder_export.py, run when torch, torchvision
//! and timm are installed). The names and shapes are checked in Rust always.

use medsyn::autograd::no_grad;
use medsyn::imageio::write_png_atomic;
use medsyn::io::{save_safetensors, TensorSet};
use medsyn::pipelines::pretrain::{pretrain, ImageArch, ImageEncoder, PretrainOptions, ReportText};
use medsyn::tensor::Philox;
use medsyn::{DType, Tensor};
use std::path::{Path, PathBuf};

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("medsyn-export-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn python_has(modules: &str) -> bool {
    std::process::Command::new("python3")
        .args(["-c", &format!("import {modules}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Pre-trains `arch` for one step on 4 generated pairs at `size` pixels and checks
/// the export.
fn export_and_check(arch: &str, size: usize) {
    let dir = scratch(arch);
    let mut rng = Philox::new(1);
    let mut csv = String::from("path,report\n");
    for i in 0..4 {
        let px: Vec<u8> = rng
            .normal(size * size)
            .iter()
            .map(|v| (128.0 + 40.0 * v).clamp(0.0, 255.0) as u8)
            .collect();
        write_png_atomic(dir.join(format!("{i}.png")), &px, size, size, 1).unwrap();
        csv += &format!("{i}.png,report number {i} no effusion\n");
    }
    std::fs::write(dir.join("pairs.csv"), csv).unwrap();
    let out = dir.join("out");
    pretrain(&PretrainOptions {
        data: dir.join("pairs.csv"),
        text: ReportText::Column {
            name: "report".into(),
            section: medsyn::data::Section::Full,
        },
        image_encoder: arch.into(),
        text_encoder: "tests/fixtures/bert_tiny".into(),
        out: out.clone(),
        epochs: 1,
        batch_size: 2,
        max_steps: Some(1),
        dtype: DType::F32,
        max_text_tokens: 32,
        resize: size,
        crop: size,
        workers: 2,
        quiet: true,
        ..PretrainOptions::default()
    })
    .unwrap();
    let file = out.join("image_encoder.safetensors");
    let parsed = ImageArch::parse(arch).unwrap();
    let fresh = ImageEncoder::load(&parsed, None, DType::F32, 0).unwrap();
    let set = TensorSet::open(&file).unwrap();
    assert_eq!(set.names().len(), fresh.state_dict().len());
    for (name, t) in fresh.state_dict() {
        assert_eq!(
            set.load(&name).unwrap().shape(),
            t.shape(),
            "{arch}: {name}"
        );
    }
    if !python_has("torch, torchvision, timm, safetensors") {
        eprintln!(
            "python3 with torch + torchvision + timm not found: skipping the PyTorch load check"
        );
        return;
    }
    let trained = ImageEncoder::load(&parsed, Some(&file), DType::F32, 0).unwrap();
    trained.set_training(false);
    let input = Tensor::randn(&mut rng, &[1, 3, size, size], DType::F32).unwrap();
    let features = {
        let _g = no_grad();
        trained.encode(&input, false).unwrap().global
    };
    let probe = dir.join("probe.safetensors");
    save_safetensors(&probe, &[("input", &input), ("features", &features)], None).unwrap();
    run_check(arch, &file, &probe);
    let _ = std::fs::remove_dir_all(&dir);
}

fn run_check(arch: &str, file: &Path, probe: &Path) {
    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/fixtures/check_encoder_export.py");
    let out = std::process::Command::new("python3")
        .arg(&script)
        .arg(arch)
        .arg(file)
        .arg(probe)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "PyTorch could not load the {arch} export:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn resnet50_export_loads_in_torchvision() {
    export_and_check("resnet50", 64);
}

#[test]
fn vit_b16_export_loads_in_timm() {
    export_and_check("vit-b16", 224);
}
