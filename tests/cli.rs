//! The `medsyn` binary: help and version, `inspect` on files, sharded sets and model
//! folders (text and JSON), and clean exit-code-1 errors for bad inputs.

use medsyn::io::save_safetensors;
use medsyn::{DType, Tensor};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn medsyn(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_medsyn"))
        .args(args)
        .output()
        .expect("run medsyn")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs `medsyn args`, asserting success; returns stdout.
fn ok(args: &[&str]) -> String {
    let o = medsyn(args);
    assert!(
        o.status.success(),
        "medsyn {args:?} failed:\n{}",
        stderr(&o)
    );
    stdout(&o)
}

/// Runs `medsyn args`, asserting exit code 1 and a one-line-style `error:` on stderr
/// without a panic; returns stderr.
fn fails(args: &[&str]) -> String {
    let o = medsyn(args);
    let err = stderr(&o);
    assert_eq!(
        o.status.code(),
        Some(1),
        "medsyn {args:?} should exit 1; stderr:\n{err}"
    );
    assert!(err.starts_with("error: "), "{err}");
    assert!(
        !err.contains("panicked") && !err.contains("RUST_BACKTRACE"),
        "{err}"
    );
    assert!(
        o.stdout.is_empty(),
        "nothing on stdout for a failed inspect"
    );
    err
}

fn scratch(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("medsyn_cli_{}_{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn fixture(rel: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(rel)
        .display()
        .to_string()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A small diffusers-style folder: unet/ and text_encoder/ with weights, plus
/// tokenizer/ and scheduler/ without, and a model_index.json.
fn fake_diffusers(dir: &Path) {
    for sub in ["unet", "text_encoder", "tokenizer", "scheduler"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
    std::fs::write(
        dir.join("model_index.json"),
        r#"{"_class_name": "StableDiffusionPipeline"}"#,
    )
    .unwrap();
    std::fs::write(dir.join("tokenizer/vocab.json"), "{}").unwrap();
    std::fs::write(dir.join("scheduler/scheduler_config.json"), "{}").unwrap();
    let conv_w = Tensor::zeros(&[32, 4, 3, 3], DType::F32).unwrap(); // 1152 params, 4608 B
    let conv_b = Tensor::zeros(&[32], DType::F32).unwrap(); // 32, 128 B
    let out_w = Tensor::zeros(&[4, 32, 3, 3], DType::BF16).unwrap(); // 1152, 2304 B
    save_safetensors(
        dir.join("unet/diffusion_pytorch_model.safetensors"),
        &[
            ("conv_in.weight", &conv_w),
            ("conv_in.bias", &conv_b),
            ("conv_out.weight", &out_w),
        ],
        None,
    )
    .unwrap();
    let emb = Tensor::zeros(&[100, 16], DType::F16).unwrap(); // 1600, 3200 B
    let pos = Tensor::from_i64((0..77).collect(), &[1, 77]).unwrap(); // 77, 616 B
    save_safetensors(
        dir.join("text_encoder/model.safetensors"),
        &[
            ("text_model.embeddings.token_embedding.weight", &emb),
            ("text_model.embeddings.position_ids", &pos),
        ],
        None,
    )
    .unwrap();
}

#[test]
fn help_describes_program_and_inspect() {
    let help = ok(&["--help"]);
    assert!(help.contains("chest X-ray"), "{help}");
    assert!(help.contains("inspect"), "{help}");
    assert!(help.contains("Usage: medsyn"), "{help}");
    let sub = ok(&["inspect", "--help"]);
    assert!(
        sub.contains("--json") && sub.contains("index.json") && sub.contains("<PATH>"),
        "{sub}"
    );
    // A missing subcommand is a usage error from clap (exit code 2), not a panic.
    let o = medsyn(&[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("Usage"));
}

#[test]
fn version_prints_crate_version() {
    let v = ok(&["--version"]);
    let expected = format!("medsyn {} (commit ", env!("CARGO_PKG_VERSION"));
    assert!(
        v.starts_with(&expected) && v.trim_end().ends_with(')'),
        "{v}"
    );
}

#[test]
fn inspect_file_lists_sorted_tensors_and_totals() {
    let out = ok(&["inspect", &fixture("io_python_written.safetensors")]);
    let names = ["bf16", "f16", "f32", "i64", "i8", "mask", "scalar"];
    let pos: Vec<usize> = names
        .iter()
        .map(|n| {
            out.find(&format!("\n  {n} "))
                .unwrap_or_else(|| panic!("{n} missing:\n{out}"))
        })
        .collect();
    assert!(
        pos.windows(2).all(|w| w[0] < w[1]),
        "tensors sorted by name:\n{out}"
    );
    assert!(out.contains("  f32     F32     [2, 3, 4]\n"), "{out}");
    assert!(out.contains("  mask    BOOL    [3]\n"), "{out}");
    assert!(out.contains("  scalar  F32     []\n"), "{out}");
    // 24 + 6 + 8 + 4 + 3 + 2 + 1 elements; 96 + 12 + 16 + 32 + 3 + 2 + 4 bytes.
    assert!(
        out.contains("total: 7 tensors, 48 params, 165 B (48 parameters, 165 bytes)"),
        "{out}"
    );
}

#[test]
fn inspect_json_matches_text_content() {
    let out = ok(&[
        "inspect",
        "--json",
        &fixture("io_python_written.safetensors"),
    ]);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["total"]["params"], 48);
    assert_eq!(v["total"]["bytes"], 165);
    assert_eq!(v["total"]["tensor_count"], 7);
    let c = &v["components"][0];
    assert_eq!(c["name"], "io_python_written.safetensors");
    let t = &c["tensors"][2];
    assert_eq!(
        (t["name"].as_str(), t["dtype"].as_str()),
        (Some("f32"), Some("F32"))
    );
    assert_eq!(t["shape"], serde_json::json!([2, 3, 4]));
    assert_eq!(
        (t["params"].as_u64(), t["bytes"].as_u64()),
        (Some(24), Some(96))
    );
}

#[test]
fn inspect_diffusers_folder_counts_per_component_and_total() {
    let dir = scratch("diffusers");
    fake_diffusers(&dir);
    let out = ok(&["inspect", s(&dir)]);
    let te = out
        .find("== text_encoder (text_encoder/model.safetensors)")
        .expect(&out);
    let unet = out
        .find("== unet (unet/diffusion_pytorch_model.safetensors)")
        .expect(&out);
    assert!(te < unet, "components sorted:\n{out}");
    assert!(
        out.contains("conv_out.weight  BF16    [4, 32, 3, 3]"),
        "{out}"
    );
    assert!(
        out.contains("text_model.embeddings.position_ids            I64     [1, 77]"),
        "{out}"
    );
    assert!(
        !out.contains("tokenizer") && !out.contains("scheduler"),
        "{out}"
    );
    let row = |name: &str| {
        out.lines()
            .find(|l| l.starts_with(name) && !l.starts_with("=="))
            .unwrap()
            .to_string()
    };
    let words = |l: String| l.split_whitespace().map(String::from).collect::<Vec<_>>();
    // unet: 1152 + 32 + 1152 = 2336 params, 4608 + 128 + 2304 = 7040 bytes.
    assert_eq!(
        words(row("unet")),
        ["unet", "3", "2.3", "K", "params", "7.04", "KB"]
    );
    // text_encoder: 1600 + 77 = 1677 params, 3200 + 616 = 3816 bytes.
    assert_eq!(
        words(row("text_encoder")),
        ["text_encoder", "2", "1.7", "K", "params", "3.82", "KB"]
    );
    assert!(
        out.contains("total: 5 tensors, 4.0 K params, 10.86 KB (4013 parameters, 10856 bytes)"),
        "{out}"
    );

    let v: Value = serde_json::from_str(&ok(&["inspect", s(&dir), "--json"])).unwrap();
    let comps = v["components"].as_array().unwrap();
    let names: Vec<&str> = comps.iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["text_encoder", "unet"]);
    assert_eq!(
        (comps[0]["params"].as_u64(), comps[0]["bytes"].as_u64()),
        (Some(1677), Some(3816))
    );
    assert_eq!(
        (comps[1]["params"].as_u64(), comps[1]["bytes"].as_u64()),
        (Some(2336), Some(7040))
    );
    assert_eq!(comps[1]["tensor_count"], 3);
    assert_eq!(
        (v["total"]["params"].as_u64(), v["total"]["bytes"].as_u64()),
        (Some(4013), Some(10856))
    );
    assert_eq!(v["total"]["bytes_human"], "10.86 KB");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn inspect_sharded_index_and_transformers_folder() {
    for path in [
        fixture("io_sharded"),
        fixture("io_sharded/model.safetensors.index.json"),
    ] {
        let out = ok(&["inspect", &path]);
        assert!(out.contains("model.safetensors.index.json, model-00001-of-00002.safetensors, model-00002-of-00002.safetensors"), "{out}");
        assert!(out.contains("  b.weight  BF16    [2, 2]"), "{out}");
        assert!(out.contains("total: 4 tensors, 16 params, 68 B"), "{out}");
    }
}

#[test]
fn inspect_bad_file_and_missing_path_exit_1_naming_the_file() {
    let dir = scratch("bad");
    let bad = dir.join("broken.safetensors");
    std::fs::write(&bad, b"\x05\x00\x00\x00\x00\x00\x00\x00{oops").unwrap();
    let err = fails(&["inspect", s(&bad)]);
    assert!(
        err.contains("broken.safetensors") && err.contains("JSON"),
        "{err}"
    );
    let err = fails(&["inspect", "--json", s(&bad)]);
    assert!(err.contains("broken.safetensors"), "{err}");
    let missing = dir.join("nowhere.safetensors");
    let err = fails(&["inspect", s(&missing)]);
    assert!(err.contains("nowhere.safetensors"), "{err}");
    // A broken component inside a model folder names that file.
    fake_diffusers(&dir.join("model"));
    std::fs::write(
        dir.join("model/unet/diffusion_pytorch_model.safetensors"),
        b"short",
    )
    .unwrap();
    let err = fails(&["inspect", s(&dir.join("model"))]);
    assert!(
        err.contains("unet/diffusion_pytorch_model.safetensors") && err.contains("5 bytes"),
        "{err}"
    );
    let empty = dir.join("empty");
    std::fs::create_dir(&empty).unwrap();
    let err = fails(&["inspect", s(&empty)]);
    assert!(
        err.contains("empty") && err.contains("no .safetensors"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn pickle_only_folder_gets_conversion_hint() {
    let dir = scratch("pickles");
    std::fs::create_dir_all(dir.join("unet")).unwrap();
    std::fs::write(dir.join("unet/diffusion_pytorch_model.bin"), b"pickle").unwrap();
    let err = fails(&["inspect", s(&dir)]);
    assert!(err.contains("unet/diffusion_pytorch_model.bin"), "{err}");
    assert!(
        err.contains("pickled weights") && err.contains("not supported"),
        "{err}"
    );
    assert!(
        err.contains("python -c") && err.contains("save_file(") && err.contains("torch.load("),
        "{err}"
    );
    assert!(
        err.contains("diffusion_pytorch_model.safetensors"),
        "the hint names the output file: {err}"
    );
    let err = fails(&["inspect", s(&dir.join("unet/diffusion_pytorch_model.bin"))]);
    assert!(err.contains("python -c"), "{err}");
    // With safetensors elsewhere, pickle-only components are skipped with a note.
    fake_diffusers(&dir.join("mixed"));
    std::fs::create_dir_all(dir.join("mixed/safety_checker")).unwrap();
    std::fs::write(
        dir.join("mixed/safety_checker/pytorch_model.bin"),
        b"pickle",
    )
    .unwrap();
    let o = medsyn(&["inspect", s(&dir.join("mixed"))]);
    assert!(o.status.success());
    assert!(
        stderr(&o).contains("skipped safety_checker/"),
        "{}",
        stderr(&o)
    );
    assert!(stdout(&o).contains("total: 5 tensors"));
    let _ = std::fs::remove_dir_all(&dir);
}
