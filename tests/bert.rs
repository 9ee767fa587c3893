//! BERT tokenizer and model against transformers (fixtures made by
//! scripts/fixtures/bert.py): WordPiece ids for report-like texts (lower-cased
//! from vocab.txt, cased from vocab.txt and from tokenizer.json), truncation
//! reports; a tiny BertModel's outputs in f32/bf16 and gradients; the
//! `bert.`-prefixed BertForPreTraining layout (also with gamma/beta names);
//! f64 finite differences; bad files, configs and inputs.

mod common;
use common::*;
use medsyn::io::{save_safetensors, TensorSet};
use medsyn::models::bert::{
    BertActivation, BertConfig, BertForwardOptions, BertModel, BertTokenizer,
    BertTokenizerSettings, Padding, DEFAULT_MAX_LEN,
};
use medsyn::models::{Config, Weights};
use medsyn::{DType, Tensor};
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("medsyn-bert-{name}-{}", std::process::id()));
    std::fs::remove_dir_all(&dir).ok();
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn cases() -> Value {
    let text = std::fs::read_to_string(fixtures().join("bert_tokenizer_cases.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn texts() -> Vec<String> {
    cases()["texts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_string())
        .collect()
}

fn ints(v: &Value) -> Vec<i64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_i64().unwrap())
        .collect()
}

/// Every text's ids, mask, padding, lengths and truncation report at 24 and 112 tokens.
fn check_tokenizer(tok: &BertTokenizer, variant: &str) {
    let all = cases();
    let texts = texts();
    assert_eq!(tok.pad_id(), all["pad_id"].as_i64().unwrap());
    assert_eq!(
        tok.vocab_size(),
        all["vocab_size"].as_u64().unwrap() as usize
    );
    for max_len in [24usize, 112] {
        let expected = all[variant][max_len.to_string()].as_array().unwrap();
        let batch = tok.encode_batch(&texts, max_len).unwrap();
        let ids = batch.input_ids.to_vec_i64();
        let mask = batch.attention_mask.to_vec_i64();
        let width = batch.input_ids.shape()[1];
        assert_eq!(batch.input_ids.shape(), [texts.len(), width]);
        assert_eq!(batch.attention_mask.shape(), batch.input_ids.shape());
        assert_eq!(batch.token_type_ids.to_vec_i64(), vec![0; ids.len()]);
        let longest = expected.iter().map(|c| c["ids"].as_array().unwrap().len());
        assert_eq!(
            width,
            longest.max().unwrap(),
            "{variant}: padded to the longest"
        );
        let mut truncated = Vec::new();
        for (i, c) in expected.iter().enumerate() {
            let want = ints(&c["ids"]);
            let n = want.len();
            let row = &ids[i * width..(i + 1) * width];
            let what = format!("{variant} max_len {max_len}: {:?}", texts[i]);
            assert_eq!(&row[..n], &want[..], "{what}: ids");
            assert!(
                row[n..].iter().all(|&p| p == tok.pad_id()),
                "{what}: padding"
            );
            let m = &mask[i * width..(i + 1) * width];
            assert!(m[..n].iter().all(|&x| x == 1) && m[n..].iter().all(|&x| x == 0));
            assert_eq!(batch.lengths[i], n, "{what}: length");
            let full = c["full_len"].as_u64().unwrap() as usize;
            assert_eq!(batch.full_lengths[i], full, "{what}: full length");
            assert_eq!(tok.encode(&texts[i]).unwrap().len(), full, "{what}: encode");
            if c["truncated"].as_bool().unwrap() {
                truncated.push(i);
            }
        }
        assert_eq!(batch.truncated, truncated, "{variant} max_len {max_len}");
        assert!(!truncated.is_empty());
    }
}

#[test]
fn tokenizer_vocab_txt_lowercase_matches_transformers() {
    let tok = BertTokenizer::from_dir(&fixtures().join("bert_tiny")).unwrap();
    assert!(tok.settings().do_lower_case);
    assert_eq!((tok.cls_id(), tok.sep_id()), (2, 3));
    check_tokenizer(&tok, "lower");
}

#[test]
fn tokenizer_vocab_txt_cased_matches_transformers() {
    let dir = temp_dir("cased");
    std::fs::copy(
        fixtures().join("bert_tiny/vocab.txt"),
        dir.join("vocab.txt"),
    )
    .unwrap();
    std::fs::write(
        dir.join("tokenizer_config.json"),
        r#"{"do_lower_case": false}"#,
    )
    .unwrap();
    let tok = BertTokenizer::from_dir(&dir).unwrap();
    assert!(!tok.settings().do_lower_case);
    check_tokenizer(&tok, "cased");
    // The same through explicit settings.
    let settings = BertTokenizerSettings {
        do_lower_case: false,
        ..Default::default()
    };
    let tok = BertTokenizer::from_vocab_file(&dir.join("vocab.txt"), settings).unwrap();
    check_tokenizer(&tok, "cased");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn tokenizer_json_cased_matches_transformers() {
    let tok = BertTokenizer::from_dir(&fixtures().join("bert_tokenizer_json")).unwrap();
    assert!(!tok.settings().do_lower_case);
    check_tokenizer(&tok, "cased");
}

#[test]
fn tokenizer_without_config_lowercases_and_pads_to_max_length() {
    // Bio_ClinicalBERT's folder: vocab.txt and config.json only.
    let dir = temp_dir("bare");
    std::fs::copy(
        fixtures().join("bert_tiny/vocab.txt"),
        dir.join("vocab.txt"),
    )
    .unwrap();
    let tok = BertTokenizer::from_dir(&dir).unwrap();
    assert_eq!(tok.settings(), &BertTokenizerSettings::default());
    let texts = texts();
    let batch = tok
        .encode_batch_padded(&texts[..2], DEFAULT_MAX_LEN, Padding::MaxLength)
        .unwrap();
    assert_eq!(batch.input_ids.shape(), [2, DEFAULT_MAX_LEN]);
    let want = ints(&cases()["lower"]["112"][1]["ids"]);
    let row = &batch.input_ids.to_vec_i64()[DEFAULT_MAX_LEN..];
    assert_eq!(&row[..want.len()], &want[..]);
    assert!(batch.truncated.is_empty());
    let decoded = tok.decode(&want, true).unwrap();
    assert_eq!(decoded, "the heart size is normal ; lungs are clear.");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn tokenizer_errors_name_the_bad_file() {
    let dir = temp_dir("tok-errors");
    let err = |r: medsyn::Result<BertTokenizer>| r.err().expect("expected an error").to_string();
    // No vocabulary at all.
    let e = err(BertTokenizer::from_dir(&dir));
    assert!(
        e.contains("vocab.txt") && e.contains(dir.to_str().unwrap()),
        "{e}"
    );
    let e = err(BertTokenizer::from_vocab_file(
        &dir.join("vocab.txt"),
        Default::default(),
    ));
    assert!(e.contains("vocab.txt") && e.contains("not found"), "{e}");
    // Not UTF-8.
    std::fs::write(dir.join("vocab.txt"), b"[PAD]\n\xff\xfe\n").unwrap();
    let e = err(BertTokenizer::from_dir(&dir));
    assert!(e.contains("vocab.txt") && e.contains("UTF-8"), "{e}");
    // Empty.
    std::fs::write(dir.join("vocab.txt"), "").unwrap();
    let e = err(BertTokenizer::from_dir(&dir));
    assert!(e.contains("vocab.txt") && e.contains("empty"), "{e}");
    // Missing special tokens.
    std::fs::write(dir.join("vocab.txt"), "[PAD]\n[UNK]\n[SEP]\nheart\n").unwrap();
    let e = err(BertTokenizer::from_dir(&dir));
    assert!(e.contains("vocab.txt") && e.contains("[CLS]"), "{e}");
    // A broken tokenizer_config.json.
    std::fs::write(dir.join("vocab.txt"), "[PAD]\n[UNK]\n[CLS]\n[SEP]\n").unwrap();
    std::fs::write(
        dir.join("tokenizer_config.json"),
        "{\"do_lower_case\": \"yes\"}",
    )
    .unwrap();
    let e = err(BertTokenizer::from_dir(&dir));
    assert!(
        e.contains("tokenizer_config.json") && e.contains("do_lower_case"),
        "{e}"
    );
    std::fs::write(dir.join("tokenizer_config.json"), "{not json").unwrap();
    let e = err(BertTokenizer::from_dir(&dir));
    assert!(
        e.contains("tokenizer_config.json") && e.contains("JSON"),
        "{e}"
    );
    std::fs::remove_file(dir.join("tokenizer_config.json")).unwrap();
    // A tokenizer.json of another model type.
    std::fs::write(
        dir.join("tokenizer.json"),
        r#"{"model": {"type": "BPE", "vocab": {}, "merges": []}}"#,
    )
    .unwrap();
    let e = err(BertTokenizer::from_dir(&dir));
    assert!(
        e.contains("tokenizer.json") && e.contains("WordPiece"),
        "{e}"
    );
    std::fs::remove_file(dir.join("tokenizer.json")).unwrap();
    // max_len without room for [CLS]/[SEP]; an empty batch.
    let tok = BertTokenizer::from_dir(&dir).unwrap();
    let e = tok.encode_batch(&["heart"], 1).unwrap_err().to_string();
    assert!(e.contains("max_len"), "{e}");
    let none: [&str; 0] = [];
    assert!(tok.encode_batch(&none, 8).is_err());
    std::fs::remove_dir_all(&dir).ok();
}

fn tiny() -> (BertConfig, TensorSet) {
    let dir = fixtures().join("bert_tiny");
    let cfg = BertConfig::load(dir.join("config.json")).unwrap();
    (cfg, TensorSet::open(&dir).unwrap())
}

#[test]
fn config_reads_transformers_keys() {
    let (cfg, _) = tiny();
    assert_eq!(
        (cfg.vocab_size, cfg.hidden_size, cfg.num_hidden_layers),
        (166, 32, 2)
    );
    assert_eq!(
        (
            cfg.num_attention_heads,
            cfg.intermediate_size,
            cfg.head_dim()
        ),
        (2, 37, 16)
    );
    assert_eq!(cfg.hidden_act, BertActivation::Gelu);
    assert_eq!((cfg.max_position_embeddings, cfg.type_vocab_size), (40, 2));
    assert_eq!((cfg.layer_norm_eps, cfg.pad_token_id), (1e-12, Some(0)));
}

/// The tiny model's outputs for the fixture batch (which our tokenizer reproduces).
/// f32: `tol(F32)`. bf16: `tol(BF16)`, or 1.5x PyTorch's own bf16 error on this
/// model where that is larger (two post-LN layers round activations ~10 times).
fn check_outputs(dtype: DType) {
    let fx = Fixture::load("bert_tiny_io");
    let rtol = |key: &str| match dtype {
        DType::BF16 => tol(dtype).max(1.5 * fx.scalar(&format!("torch_bf16_error.{key}"))),
        _ => tol(dtype),
    };
    let (cfg, set) = tiny();
    let model = BertModel::load(&cfg, &Weights::from_set(&set, dtype)).unwrap();
    assert_eq!(model.hidden_size(), 32);
    let (ids, mask) = (fx.get("input_ids"), fx.get("attention_mask"));
    let tok = BertTokenizer::from_dir(&fixtures().join("bert_tiny")).unwrap();
    let batch = tok.encode_batch(&texts()[..6], 24).unwrap();
    assert_eq!(batch.input_ids.to_vec_i64(), ids.to_vec_i64());
    assert_eq!(batch.attention_mask.to_vec_i64(), mask.to_vec_i64());
    let out = model.forward(&ids, &mask, None).unwrap();
    assert_eq!(out.last_hidden_state.dtype(), dtype);
    assert!(out.hidden_states.is_empty());
    let what = format!("{dtype}");
    assert_close(
        &out.last_hidden_state,
        &fx.get("last_hidden_state"),
        rtol("last_hidden_state"),
        &format!("{what} last_hidden_state"),
    );
    assert_close(
        out.pooler_output.as_ref().unwrap(),
        &fx.get("pooler_output"),
        rtol("pooler_output"),
        &format!("{what} pooler_output"),
    );
    let tt = fx.get("token_type_ids");
    let out = model.forward(&ids, &mask, Some(&tt)).unwrap();
    assert_close(
        &out.last_hidden_state,
        &fx.get("last_hidden_state_tt"),
        rtol("last_hidden_state"),
        &format!("{what} last_hidden_state with token types"),
    );
    assert_close(
        out.pooler_output.as_ref().unwrap(),
        &fx.get("pooler_output_tt"),
        rtol("pooler_output"),
        &format!("{what} pooler_output with token types"),
    );
}

#[test]
fn model_matches_transformers_f32() {
    check_outputs(DType::F32);
}

#[test]
fn model_matches_transformers_bf16() {
    check_outputs(DType::BF16);
}

#[test]
fn hidden_states_and_cls_attention_match_transformers() {
    let fx = Fixture::load("bert_tiny_io");
    let (cfg, set) = tiny();
    let model = BertModel::load(&cfg, &Weights::from_set(&set, DType::F32)).unwrap();
    let (ids, mask) = (fx.get("input_ids"), fx.get("attention_mask"));
    let opts = BertForwardOptions {
        hidden_states: true,
        cls_attention: true,
    };
    let out = model.forward_with(&ids, &mask, None, opts).unwrap();
    assert_eq!(out.hidden_states.len(), 3);
    let attn = out.cls_attention.as_ref().unwrap();
    assert_eq!(attn.shape(), [6, 2, ids.shape()[1]]);
    assert_close(
        attn,
        &fx.get("cls_attention"),
        tol(DType::F32),
        "cls_attention",
    );
    let (probs, keep) = (attn.to_vec_f64(), mask.to_vec_i64());
    let l = ids.shape()[1];
    for (r, row) in probs.chunks(l).enumerate() {
        let sum: f64 = row.iter().sum();
        assert!((sum - 1.0).abs() < 1e-5, "row {r} sums to {sum}");
        let b = r / 2;
        for (j, p) in row.iter().enumerate() {
            assert!(
                keep[b * l + j] != 0 || *p == 0.0,
                "padded key {j} of row {r}: {p}"
            );
        }
    }
    assert_eq!(
        out.hidden_states[2].to_vec_f32(),
        out.last_hidden_state.to_vec_f32()
    );
    assert_close(
        &out.last_hidden_state,
        &fx.get("last_hidden_state"),
        tol(DType::F32),
        "last_hidden_state",
    );
}

#[test]
fn gradients_match_pytorch_for_every_parameter() {
    let fx = Fixture::load("bert_tiny_io");
    let (cfg, set) = tiny();
    let model = BertModel::load(&cfg, &Weights::from_set(&set, DType::F32)).unwrap();
    assert!(model.parameters().iter().all(|(_, p)| !p.requires_grad()));
    model.unfreeze().unwrap();
    let out = model
        .forward(&fx.get("input_ids"), &fx.get("attention_mask"), None)
        .unwrap();
    let w = fx.get("w").to_dtype(DType::F32).unwrap();
    out.last_hidden_state
        .mul(&w)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let mut checked = 0;
    for (name, p) in model.parameters() {
        let key = format!("grad.{name}");
        if name.starts_with("pooler.") {
            // The pooler does not feed last_hidden_state.
            assert!(!fx.has(&key));
            let g = p.grad().map(|g| g.to_vec_f64()).unwrap_or_default();
            assert!(g.iter().all(|&x| x == 0.0), "{name}");
            continue;
        }
        let g = p.grad().unwrap_or_else(|| panic!("{name}: no gradient"));
        if name.ends_with("attention.self.key.bias") {
            // Softmax ignores a shift shared by a row's scores: this gradient is
            // zero up to rounding; judge it against the key weights' gradient.
            let scale = fx.get(&key.replace(".bias", ".weight")).to_vec_f64();
            let scale = scale.iter().fold(0.0f64, |m, v| m.max(v.abs()));
            let worst = g.to_vec_f64().iter().fold(0.0f64, |m, v| m.max(v.abs()));
            assert!(
                worst <= tol(DType::F32) * scale,
                "{name}: {worst} vs scale {scale}"
            );
        } else {
            assert_close(&g, &fx.get(&key), tol(DType::F32), &format!("grad {name}"));
        }
        checked += 1;
    }
    assert_eq!(checked, 5 + 2 * 16);
}

#[test]
fn parameters_carry_the_checkpoint_names() {
    let (cfg, set) = tiny();
    let model = BertModel::load(&cfg, &Weights::from_set(&set, DType::F32)).unwrap();
    let names: BTreeSet<String> = model.parameters().into_iter().map(|(n, _)| n).collect();
    let keys: BTreeSet<String> = set.names().iter().cloned().collect();
    assert_eq!(names, keys);
    assert!(names.contains("embeddings.LayerNorm.weight"));
    assert!(names.contains("encoder.layer.1.attention.self.query.weight"));
    assert!(names.contains("pooler.dense.bias"));
    // Fresh weights: the same names, trainable.
    let fresh = BertModel::load(&cfg, &Weights::random(0, DType::F32)).unwrap();
    let fresh_names: BTreeSet<String> = fresh.parameters().into_iter().map(|(n, _)| n).collect();
    assert_eq!(fresh_names, keys);
    assert!(fresh.parameters().iter().all(|(_, p)| p.requires_grad()));
    // Without the pooler.
    let bare = BertModel::load_without_pooler(&cfg, &Weights::from_set(&set, DType::F32)).unwrap();
    assert!(!bare.has_pooler());
    assert_eq!(bare.parameters().len(), keys.len() - 2);
}

fn pretraining_dir() -> PathBuf {
    fixtures().join("bert_pretraining")
}

/// Loads a BertForPreTraining-style checkpoint and compares with the fixture.
fn check_pretraining(weights: &Path) {
    let fx = Fixture::load("bert_pretraining_io");
    let cfg = BertConfig::load(pretraining_dir().join("config.json")).unwrap();
    let set = TensorSet::open(weights).unwrap();
    let model = BertModel::load(&cfg, &Weights::from_set(&set, DType::F32)).unwrap();
    let out = model
        .forward(&fx.get("input_ids"), &fx.get("attention_mask"), None)
        .unwrap();
    assert_close(
        &out.last_hidden_state,
        &fx.get("last_hidden_state"),
        tol(DType::F32),
        "pretraining last_hidden_state",
    );
    assert_close(
        out.pooler_output.as_ref().unwrap(),
        &fx.get("pooler_output"),
        tol(DType::F32),
        "pretraining pooler_output",
    );
    // transformers' BertModel names: the file's minus `bert.` and the cls.* heads.
    let names: BTreeSet<String> = model.parameters().into_iter().map(|(n, _)| n).collect();
    let keys: BTreeSet<String> = TensorSet::open(pretraining_dir())
        .unwrap()
        .names()
        .iter()
        .filter_map(|k| k.strip_prefix("bert.").map(str::to_string))
        .collect();
    assert_eq!(names, keys);
}

#[test]
fn bert_prefixed_checkpoint_with_cls_heads_loads() {
    let set = TensorSet::open(pretraining_dir()).unwrap();
    assert!(set.names().iter().any(|n| n.starts_with("cls.")));
    assert!(set
        .names()
        .iter()
        .all(|n| n.starts_with("bert.") || n.starts_with("cls.")));
    check_pretraining(&pretraining_dir());
    let model = BertModel::from_pretrained(&pretraining_dir(), DType::F32).unwrap();
    assert!(model.has_pooler());
}

/// The same checkpoint rewritten: gamma/beta names, an old position_ids buffer.
#[test]
fn tf_era_gamma_beta_names_and_buffers_load() {
    let set = TensorSet::open(pretraining_dir()).unwrap();
    let mut tensors: Vec<(String, Tensor)> = set
        .names()
        .iter()
        .map(|n| {
            let renamed = n
                .replace("LayerNorm.weight", "LayerNorm.gamma")
                .replace("LayerNorm.bias", "LayerNorm.beta");
            (renamed, set.load(n).unwrap())
        })
        .collect();
    assert!(tensors.iter().any(|(n, _)| n.ends_with("LayerNorm.gamma")));
    let positions = Tensor::from_i64((0..16).collect(), &[1, 16]).unwrap();
    tensors.push(("bert.embeddings.position_ids".into(), positions));
    let dir = temp_dir("gamma");
    let path = dir.join("model.safetensors");
    let refs: Vec<(&str, &Tensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    save_safetensors(&path, &refs, None).unwrap();
    check_pretraining(&path);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn unknown_tensors_and_missing_weights_are_errors() {
    let set = TensorSet::open(pretraining_dir()).unwrap();
    let cfg = BertConfig::load(pretraining_dir().join("config.json")).unwrap();
    let dir = temp_dir("extra");
    let path = dir.join("model.safetensors");
    let mut tensors: Vec<(String, Tensor)> = set
        .names()
        .iter()
        .map(|n| (n.clone(), set.load(n).unwrap()))
        .collect();
    tensors.push((
        "classifier.weight".into(),
        Tensor::zeros(&[2, 8], DType::F32).unwrap(),
    ));
    let refs: Vec<(&str, &Tensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    save_safetensors(&path, &refs, None).unwrap();
    let extra = TensorSet::open(&path).unwrap();
    let e = BertModel::load(&cfg, &Weights::from_set(&extra, DType::F32))
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("classifier.weight") && e.contains("model.safetensors"),
        "{e}"
    );
    // A config with more layers than the checkpoint: the missing tensor is named.
    let deeper = BertConfig {
        num_hidden_layers: 2,
        ..cfg.clone()
    };
    let e = BertModel::load(&deeper, &Weights::from_set(&set, DType::F32))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("bert.encoder.layer.1."), "{e}");
    // Not a BERT checkpoint at all.
    let other = dir.join("other.safetensors");
    let t = Tensor::zeros(&[2], DType::F32).unwrap();
    save_safetensors(&other, &[("unet.conv.weight", &t)], None).unwrap();
    let other = TensorSet::open(&other).unwrap();
    let e = BertModel::load(&cfg, &Weights::from_set(&other, DType::F32))
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("word_embeddings") && e.contains("other.safetensors"),
        "{e}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

fn config_error(json: &str) -> String {
    let dir = temp_dir("config");
    let path = dir.join("config.json");
    std::fs::write(&path, json).unwrap();
    let e = BertConfig::from_config(&Config::load(&path).unwrap())
        .expect_err("expected a config error")
        .to_string();
    assert!(e.contains("config.json"), "{e}");
    std::fs::remove_dir_all(&dir).ok();
    e
}

#[test]
fn bad_configs_are_errors() {
    let e = config_error(r#"{"position_embedding_type": "relative_key"}"#);
    assert!(
        e.contains("position_embedding_type") && e.contains("relative_key"),
        "{e}"
    );
    let e = config_error(r#"{"hidden_size": 30, "num_attention_heads": 4}"#);
    assert!(e.contains("num_attention_heads"), "{e}");
    let e = config_error(r#"{"model_type": "roberta"}"#);
    assert!(e.contains("model_type"), "{e}");
    let e = config_error(r#"{"hidden_act": "swish"}"#);
    assert!(e.contains("hidden_act"), "{e}");
    let e = config_error(r#"{"is_decoder": true}"#);
    assert!(e.contains("is_decoder"), "{e}");
    // Bio_ClinicalBERT's config: no model_type, BERT-base sizes.
    let dir = temp_dir("bio");
    let path = dir.join("config.json");
    std::fs::write(
        &path,
        r#"{"attention_probs_dropout_prob": 0.1, "hidden_act": "gelu", "hidden_dropout_prob": 0.1,
            "hidden_size": 768, "initializer_range": 0.02, "intermediate_size": 3072,
            "max_position_embeddings": 512, "num_attention_heads": 12, "num_hidden_layers": 12,
            "type_vocab_size": 2, "vocab_size": 28996}"#,
    )
    .unwrap();
    let cfg = BertConfig::load(&path).unwrap();
    assert_eq!(
        (cfg.vocab_size, cfg.head_dim(), cfg.layer_norm_eps),
        (28996, 64, 1e-12)
    );
    std::fs::remove_dir_all(&dir).ok();
}

fn micro_config() -> BertConfig {
    BertConfig {
        vocab_size: 7,
        hidden_size: 4,
        num_hidden_layers: 1,
        num_attention_heads: 2,
        intermediate_size: 6,
        hidden_act: BertActivation::Gelu,
        max_position_embeddings: 5,
        type_vocab_size: 2,
        layer_norm_eps: 1e-12,
        initializer_range: 0.02,
        // No padding_idx: the pad row's gradient is not zeroed, so finite
        // differences see the true gradient everywhere.
        pad_token_id: None,
    }
}

#[test]
fn bad_inputs_are_errors() {
    let model = BertModel::load(&micro_config(), &Weights::random(1, DType::F32)).unwrap();
    let ids = |v: Vec<i64>, shape: &[usize]| Tensor::from_i64(v, shape).unwrap();
    let mask = ids(vec![1; 6], &[2, 3]);
    let run = |i: &Tensor, m: &Tensor, t: Option<&Tensor>| {
        model
            .forward(i, m, t)
            .err()
            .expect("expected an error")
            .to_string()
    };
    let e = run(&ids(vec![1, 2, 7, 1, 2, 3], &[2, 3]), &mask, None);
    assert!(
        e.contains("input_ids[0, 2] = 7") && e.contains("vocab_size"),
        "{e}"
    );
    let e = run(&ids(vec![1, 2, 3, 1, -1, 3], &[2, 3]), &mask, None);
    assert!(e.contains("input_ids[1, 1] = -1"), "{e}");
    let good = ids(vec![1, 2, 3, 1, 2, 3], &[2, 3]);
    let e = run(&good, &ids(vec![1; 4], &[2, 2]), None);
    assert!(e.contains("attention_mask") && e.contains("[2, 2]"), "{e}");
    let long = ids(vec![1; 12], &[2, 6]);
    let e = run(&long, &ids(vec![1; 12], &[2, 6]), None);
    assert!(
        e.contains("6") && e.contains("max_position_embeddings"),
        "{e}"
    );
    let e = run(&ids(vec![1; 3], &[3]), &mask, None);
    assert!(e.contains("[N, L]"), "{e}");
    let float_ids = Tensor::from_vec(vec![1f32; 6], &[2, 3]).unwrap();
    let e = run(&float_ids, &mask, None);
    assert!(e.contains("i64"), "{e}");
    let e = run(&good, &mask, Some(&ids(vec![0, 0, 2, 0, 0, 0], &[2, 3])));
    assert!(
        e.contains("token_type_ids") && e.contains("type_vocab_size"),
        "{e}"
    );
    let e = run(&good, &mask, Some(&ids(vec![0; 3], &[1, 3])));
    assert!(e.contains("token_type_ids"), "{e}");
    // Tokenizer/model mismatch caught before the lookup: the tiny vocab (166 ids)
    // in a model with 7.
    let tok = BertTokenizer::from_dir(&fixtures().join("bert_tiny")).unwrap();
    let batch = tok.encode_batch(&["pneumothorax"], 5).unwrap();
    let e = run(&batch.input_ids, &batch.attention_mask, None);
    assert!(e.contains("vocab_size"), "{e}");
    assert!(model.forward(&good, &mask, None).is_ok());
}

/// f64 autograd against central finite differences for every parameter of a
/// one-layer model, with padding and token types.
#[test]
fn gradcheck_every_parameter_f64() {
    let model = BertModel::load(&micro_config(), &Weights::random(7, DType::F64)).unwrap();
    let params: Vec<Tensor> = model.parameters().into_iter().map(|(_, p)| p).collect();
    assert!(params
        .iter()
        .all(|p| p.dtype() == DType::F64 && p.requires_grad()));
    let ids = Tensor::from_i64(vec![2, 5, 6, 3, 2, 4, 3, 0], &[2, 4]).unwrap();
    let mask = Tensor::from_i64(vec![1, 1, 1, 1, 1, 1, 1, 0], &[2, 4]).unwrap();
    let types = Tensor::from_i64(vec![0, 0, 1, 1, 0, 1, 1, 0], &[2, 4]).unwrap();
    let f = |xs: &[Tensor]| -> medsyn::Result<Tensor> {
        // Perturbed copies replace the model's values for this evaluation only.
        let mut saved = Vec::new();
        for (p, x) in params.iter().zip(xs) {
            if p.id() != x.id() {
                saved.push((p.clone(), Tensor::from_vec(p.to_vec_f64(), p.shape())?));
                p.set_data(x)?;
            }
        }
        let opts = BertForwardOptions {
            hidden_states: false,
            cls_attention: true,
        };
        let out = model.forward_with(&ids, &mask, Some(&types), opts);
        for (p, old) in &saved {
            p.set_data(old)?;
        }
        let out = out?;
        let last = out.last_hidden_state.reshape(&[32])?;
        let pooled = out.pooler_output.unwrap().reshape(&[8])?;
        let attn = out.cls_attention.unwrap().reshape(&[16])?;
        Tensor::cat(&[&last, &pooled, &attn], 0)
    };
    assert_gradcheck("bert", f, &params);
}

#[test]
fn new_random_initialises_as_transformers() {
    let (cfg, _) = tiny();
    let model = BertModel::new_random(&cfg, 5, DType::F32).unwrap();
    let mut weights = Vec::new();
    for (name, p) in model.parameters() {
        assert!(p.requires_grad(), "{name}");
        let v = p.to_vec_f64();
        if name.contains("LayerNorm.weight") {
            assert!(v.iter().all(|&x| x == 1.0), "{name}");
        } else if name.ends_with(".bias") {
            assert!(v.iter().all(|&x| x == 0.0), "{name}");
        } else {
            if name == "embeddings.word_embeddings.weight" {
                assert!(v[..32].iter().all(|&x| x == 0.0), "padding row");
                weights.extend_from_slice(&v[32..]);
            } else {
                weights.extend_from_slice(&v);
            }
        }
    }
    let n = weights.len() as f64;
    let mean = weights.iter().sum::<f64>() / n;
    let std = (weights.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n).sqrt();
    assert!(
        mean.abs() < 1e-3 && (std - 0.02).abs() < 1e-3,
        "mean {mean}, std {std}"
    );
    let other = BertModel::new_random(&cfg, 6, DType::F32).unwrap();
    assert_ne!(
        model.parameters()[0].1.to_vec_f32(),
        other.parameters()[0].1.to_vec_f32()
    );
}
