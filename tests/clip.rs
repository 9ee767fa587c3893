//! CLIP tokenizer and text encoder against transformers (fixtures made by
//! scripts/fixtures/clip.py): token ids for tricky prompts from a small trained
//! BPE in SD 1.x / SD 2.x / tokenizer.json layouts; a tiny CLIPTextModel with
//! quick_gelu (SD 1.x-style names) and gelu (transformers 5 names, legacy eos
//! pooling): outputs in f32/bf16 and gradients; bad files and configs.

mod common;
use common::*;
use medsyn::io::TensorSet;
use medsyn::models::clip::{ClipActivation, ClipTextConfig, ClipTextModel, ClipTokenizer};
use medsyn::models::{Config, Weights};
use medsyn::{DType, Tensor};
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn cases(layout: &str) -> (i64, Vec<Value>) {
    let text = std::fs::read_to_string(fixtures().join("clip_tokenizer_cases.json")).unwrap();
    let all: Value = serde_json::from_str(&text).unwrap();
    let c = &all[layout];
    (
        c["pad_id"].as_i64().unwrap(),
        c["cases"].as_array().unwrap().clone(),
    )
}

fn ints(v: &Value) -> Vec<i64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_i64().unwrap())
        .collect()
}

/// Every case's padded ids, mask, lengths, truncation report and decoding.
fn check_tokenizer(folder: &str, layout: &str) {
    let tok = ClipTokenizer::from_dir(&fixtures().join(folder)).unwrap();
    let (pad, cases) = cases(layout);
    assert_eq!(tok.max_length(), 77);
    assert_eq!(tok.pad_id(), pad, "{layout}: pad id");
    let mut truncated = 0;
    for c in &cases {
        let text = c["text"].as_str().unwrap();
        let enc = tok.encode(text).unwrap();
        assert_eq!(enc.ids, ints(&c["ids"]), "{layout}: ids of {text:?}");
        let Some(full_len) = c.get("full_len") else {
            continue;
        };
        let full_len = full_len.as_u64().unwrap() as usize;
        assert_eq!(
            enc.attention_mask,
            ints(&c["attention_mask"]),
            "{layout}: mask of {text:?}"
        );
        assert_eq!(enc.full_len, full_len, "{layout}: length of {text:?}");
        assert_eq!(
            enc.truncated,
            full_len > 77,
            "{layout}: truncation of {text:?}"
        );
        assert_eq!(
            enc.dropped_text,
            c["dropped_text"].as_str().unwrap(),
            "{text:?}"
        );
        truncated += enc.truncated as usize;
        let mut full = vec![tok.bos_id()];
        full.extend(tok.text_ids(text).unwrap());
        full.push(tok.eos_id());
        assert_eq!(full.len(), full_len);
        let skip = tok.decode_skip_special(&full);
        assert_eq!(
            skip,
            c["decoded"].as_str().unwrap(),
            "{layout}: decode of {text:?}"
        );
        assert_eq!(
            tok.decode(&full),
            c["decoded_all"].as_str().unwrap(),
            "{text:?}"
        );
    }
    if layout != "tokenizer_json" {
        assert_eq!(
            truncated, 1,
            "{layout}: the long prompt is reported as truncated"
        );
    }
}

#[test]
fn tokenizer_sd1_folder_matches_transformers() {
    check_tokenizer("clip_tokenizer", "sd1");
}

#[test]
fn tokenizer_sd2_folder_pads_with_bang_and_knows_added_tokens() {
    check_tokenizer("clip_tokenizer_sd2", "sd2");
}

#[test]
fn tokenizer_json_matches_transformers() {
    check_tokenizer("clip_tokenizer_json", "tokenizer_json");
}

/// The tokenizers crate running the saved tokenizer.json (its own normalizer and
/// pre-tokenizer) agrees with ours on every prompt, before padding.
#[test]
fn tokenizer_json_agrees_with_the_tokenizers_crate() {
    let dir = fixtures().join("clip_tokenizer_json");
    let reference = tokenizers::Tokenizer::from_file(dir.join("tokenizer.json")).unwrap();
    let tok = ClipTokenizer::from_dir(&dir).unwrap();
    for c in cases("tokenizer_json").1 {
        let text = c["text"].as_str().unwrap();
        let expected: Vec<i64> = reference
            .encode(text, true)
            .unwrap()
            .get_ids()
            .iter()
            .map(|&i| i as i64)
            .collect();
        let mut ours = vec![tok.bos_id()];
        ours.extend(tok.text_ids(text).unwrap());
        ours.push(tok.eos_id());
        assert_eq!(ours, expected, "{text:?}");
    }
}

#[test]
fn long_prompt_is_reported_truncated() {
    let tok = ClipTokenizer::from_dir(&fixtures().join("clip_tokenizer")).unwrap();
    let prompt = "a chest x-ray showing ".repeat(30);
    let enc = tok.encode(&prompt).unwrap();
    assert!(enc.truncated);
    assert_eq!(enc.ids.len(), 77);
    assert_eq!(enc.ids[76], tok.eos_id());
    assert!(enc.full_len > 77);
    let text_ids = tok.text_ids(&prompt).unwrap();
    assert_eq!(enc.full_len, text_ids.len() + 2);
    assert_eq!(enc.ids[1..76], text_ids[..75]);
    assert!(!enc.dropped_text.is_empty());
    assert_eq!(enc.dropped_text, tok.decode(&text_ids[75..]));
    let short = tok.encode("a chest x-ray").unwrap();
    assert!(!short.truncated && short.dropped_text.is_empty());
}

/// A copy of the SD 1.x tokenizer folder with `edit` applied.
fn broken_folder(name: &str, edit: impl Fn(&Path)) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("medsyn-clip-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for f in std::fs::read_dir(fixtures().join("clip_tokenizer")).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, dir.join(f.file_name().unwrap())).unwrap();
    }
    edit(&dir);
    dir
}

#[test]
fn tokenizer_errors_name_the_bad_file() {
    let check = |name: &str, edit: &dyn Fn(&Path), expect: &[&str]| {
        let dir = broken_folder(name, edit);
        let e = ClipTokenizer::from_dir(&dir).err().unwrap().to_string();
        for x in expect {
            assert!(e.contains(x), "{name}: {e}");
        }
        std::fs::remove_dir_all(&dir).ok();
    };
    check(
        "nomerges",
        &|d| std::fs::remove_file(d.join("merges.txt")).unwrap(),
        &["merges.txt"],
    );
    check(
        "badvocab",
        &|d| std::fs::write(d.join("vocab.json"), "{\"a\": 1,").unwrap(),
        &["vocab.json"],
    );
    check(
        "badmerges",
        &|d| std::fs::write(d.join("merges.txt"), "#version: 0.2\na b\nabc\n").unwrap(),
        &["merges.txt", "line 3"],
    );
    check(
        "badconfig",
        &|d| {
            std::fs::write(
                d.join("tokenizer_config.json"),
                "{\"model_max_length\": \"x\"}",
            )
            .unwrap()
        },
        &["tokenizer_config.json", "model_max_length"],
    );
    let empty = std::env::temp_dir().join(format!("medsyn-clip-empty-{}", std::process::id()));
    std::fs::create_dir_all(&empty).unwrap();
    let e = ClipTokenizer::from_dir(&empty).err().unwrap().to_string();
    assert!(
        e.contains("vocab.json") && e.contains("tokenizer.json"),
        "{e}"
    );
    std::fs::remove_dir_all(&empty).ok();
}

fn text_config(name: &str) -> ClipTextConfig {
    let cfg = Config::load(fixtures().join(format!("clip_text_{name}/config.json"))).unwrap();
    ClipTextConfig::from_config(&cfg).unwrap()
}

fn weights(name: &str) -> TensorSet {
    TensorSet::open(fixtures().join(format!("clip_text_{name}"))).unwrap()
}

/// Outputs with and without the attention mask against transformers (float64).
fn check_outputs(name: &str, dtype: DType, rtol: f64) {
    let fx = Fixture::load(&format!("clip_text_{name}"));
    let set = weights(name);
    let model = ClipTextModel::load(&text_config(name), &Weights::from_set(&set, dtype)).unwrap();
    let ids = fx.get("input_ids");
    let mask = fx.get("attention_mask");
    for (tag, m) in [("nomask", None), ("mask", Some(&mask))] {
        let out = model.forward(&ids, m).unwrap();
        for (key, t) in [
            ("last_hidden_state", &out.last_hidden_state),
            ("pooled", &out.pooled),
            ("penultimate", &out.penultimate),
        ] {
            assert_eq!(t.dtype(), dtype);
            let what = format!("{name} {tag}.{key} ({dtype})");
            if dtype == DType::F32 {
                assert_close(t, &fx.get(&format!("{tag}.{key}")), rtol, &what);
            } else {
                assert_scaled(t, &fx.get(&format!("{tag}.{key}")), rtol, 1e-3, &what);
            }
        }
        let skip0 = model.clip_skip(&out, 0).unwrap();
        assert_eq!(skip0.to_vec_f64(), out.last_hidden_state.to_vec_f64());
        assert!(model.clip_skip(&out, 1).is_ok());
        assert!(model.clip_skip(&out, 99).is_err());
    }
}

#[test]
fn text_model_quick_gelu_matches_transformers_f32() {
    check_outputs("quick", DType::F32, tol(DType::F32));
}

#[test]
fn text_model_gelu_matches_transformers_f32() {
    check_outputs("gelu", DType::F32, tol(DType::F32));
}

#[test]
fn text_model_matches_transformers_bf16() {
    check_outputs("quick", DType::BF16, 3e-2);
    check_outputs("gelu", DType::BF16, 3e-2);
}

/// Gradients of sum(last_hidden_state · w) with the mask, against PyTorch.
fn check_grads(name: &str) {
    let fx = Fixture::load(&format!("clip_text_{name}"));
    let set = weights(name);
    let model =
        ClipTextModel::load(&text_config(name), &Weights::from_set(&set, DType::F32)).unwrap();
    let params = model.parameters();
    let keys = [
        "text_model.embeddings.token_embedding.weight",
        "text_model.encoder.layers.0.self_attn.q_proj.weight",
        "text_model.final_layer_norm.weight",
    ];
    let find = |key: &str| {
        let bare = key.trim_start_matches("text_model.");
        let (_, p) = params.iter().find(|(n, _)| n == key || n == bare).unwrap();
        p.set_requires_grad(true).unwrap();
        p.clone()
    };
    let leaves: Vec<Tensor> = keys.iter().map(|k| find(k)).collect();
    let out = model
        .forward(&fx.get("input_ids"), Some(&fx.get("attention_mask")))
        .unwrap();
    let w = fx.get("w").to_dtype(DType::F32).unwrap();
    out.last_hidden_state
        .mul(&w)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    for (key, leaf) in keys.iter().zip(&leaves) {
        let g = leaf.grad().unwrap_or_else(|| panic!("{key}: no gradient"));
        assert_close(
            &g,
            &fx.get(&format!("grad.{key}")),
            tol(DType::F32),
            &format!("{name} grad {key}"),
        );
    }
}

#[test]
fn text_model_gradients_match_pytorch() {
    check_grads("quick");
    check_grads("gelu");
}

#[test]
fn parameters_carry_the_checkpoint_names() {
    for name in ["quick", "gelu"] {
        let set = weights(name);
        let model =
            ClipTextModel::load(&text_config(name), &Weights::from_set(&set, DType::F32)).unwrap();
        let ours: BTreeSet<String> = model.parameters().into_iter().map(|(n, _)| n).collect();
        let file: BTreeSet<String> = set
            .names()
            .iter()
            .filter(|n| !n.ends_with("position_ids"))
            .cloned()
            .collect();
        assert_eq!(ours, file, "{name}");
        assert_eq!(
            name == "quick",
            set.contains("text_model.embeddings.position_ids")
        );
    }
    let cfg = text_config("quick");
    assert_eq!(cfg.hidden_act, ClipActivation::QuickGelu);
    let fresh = ClipTextModel::load(&cfg, &Weights::random(0, DType::F32)).unwrap();
    let params = fresh.parameters();
    assert_eq!(params.len(), 4 + cfg.num_hidden_layers * 16);
    assert!(params
        .iter()
        .all(|(n, p)| n.starts_with("text_model.") && p.requires_grad()));
}

#[test]
fn bad_configs_and_weights_are_errors() {
    let path = fixtures().join("clip_text_quick/config.json");
    let mut json: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    json["hidden_act"] = "swish".into();
    let e = ClipTextConfig::from_config(&Config::from_value(&path, json.clone()).unwrap())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("config.json") && e.contains("hidden_act") && e.contains("swish"),
        "{e}"
    );
    json["hidden_act"] = "quick_gelu".into();
    json["num_attention_heads"] = 5.into();
    let e = ClipTextConfig::from_config(&Config::from_value(&path, json.clone()).unwrap())
        .unwrap_err()
        .to_string();
    assert!(e.contains("num_attention_heads"), "{e}");

    // A file missing a tensor, and a config with fewer layers than the file.
    let set = weights("quick");
    let dir = std::env::temp_dir().join(format!("medsyn-clip-w-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("model.safetensors");
    let missing = "text_model.encoder.layers.1.mlp.fc2.bias";
    let kept: Vec<(String, Tensor)> = set
        .names()
        .iter()
        .filter(|n| n.as_str() != missing)
        .map(|n| (n.clone(), set.load(n).unwrap()))
        .collect();
    let refs: Vec<(&str, &Tensor)> = kept.iter().map(|(n, t)| (n.as_str(), t)).collect();
    medsyn::io::save_safetensors(&file, &refs, None).unwrap();
    let partial = TensorSet::open(&file).unwrap();
    let cfg = text_config("quick");
    let e = ClipTextModel::load(&cfg, &Weights::from_set(&partial, DType::F32))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains(missing), "{e}");
    let fewer = ClipTextConfig {
        num_hidden_layers: 2,
        ..cfg.clone()
    };
    let e = ClipTextModel::load(&fewer, &Weights::from_set(&set, DType::F32))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("not used") && e.contains("layers.2"), "{e}");
    std::fs::remove_dir_all(&dir).ok();

    // Inputs: too long, wrong rank, mismatched mask.
    let model = ClipTextModel::load(&cfg, &Weights::from_set(&set, DType::F32)).unwrap();
    let long = Tensor::from_i64(vec![1; 78], &[1, 78]).unwrap();
    let e = model.forward(&long, None).err().unwrap().to_string();
    assert!(
        e.contains("78") && e.contains("max_position_embeddings"),
        "{e}"
    );
    let flat = Tensor::from_i64(vec![1; 5], &[5]).unwrap();
    assert!(model.forward(&flat, None).is_err());
    let ids = Tensor::from_i64(vec![1; 10], &[2, 5]).unwrap();
    let mask = Tensor::from_i64(vec![1; 8], &[2, 4]).unwrap();
    let e = model.forward(&ids, Some(&mask)).err().unwrap().to_string();
    assert!(e.contains("attention_mask"), "{e}");
    let out_of_vocab = Tensor::from_i64(vec![100; 5], &[1, 5]).unwrap();
    assert!(model.forward(&out_of_vocab, None).is_err());
}
