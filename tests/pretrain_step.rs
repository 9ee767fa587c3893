//! One ConVIRT training step on a tiny configuration against PyTorch
//! (scripts/fixtures/convirt_step.py: torchvision's ResNet with BatchNorm in training
//! mode, transformers' BertModel, the heads, symmetric InfoNCE, torch.optim.AdamW):
//! the loss, every parameter's gradient, the BatchNorm running statistics and the
//! parameters after the AdamW step, in f32.

mod common;
use common::*;
use medsyn::io::{save_safetensors, TensorSet};
use medsyn::models::Weights;
use medsyn::optim::{AdamW, AdamWConfig};
use medsyn::pipelines::pretrain::{
    Convirt, ConvirtConfig, ImageArch, ImageEncoder, PretrainModel, TextEncoder, TextPooling,
};
use medsyn::{DType, Tensor};

#[test]
fn one_convirt_step_matches_pytorch() {
    let fx = Fixture::load("convirt_step");
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string("tests/fixtures/convirt_step.json").unwrap())
            .unwrap();
    let dir = std::env::temp_dir().join(format!("medsyn-convirt-step-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("resnet.json");
    std::fs::write(&config, meta["image_encoder"].to_string()).unwrap();

    // The ResNet's initial state dict as a torchvision-style file.
    let set = TensorSet::open("tests/fixtures/convirt_step.safetensors").unwrap();
    let init: Vec<(String, Tensor)> = set
        .names()
        .iter()
        .filter_map(|n| {
            n.strip_prefix("init.image_encoder.")
                .map(|k| (k.to_string(), n.clone()))
        })
        .map(|(k, n)| {
            let t = set.load(&n).unwrap();
            let t = if t.dtype() == DType::F64 {
                t.to_dtype(DType::F32).unwrap()
            } else {
                t
            };
            (k, t)
        })
        .collect();
    let refs: Vec<(&str, &Tensor)> = init.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let init_file = dir.join("resnet_init.safetensors");
    save_safetensors(&init_file, &refs, None).unwrap();

    let arch = ImageArch::parse(&config.display().to_string()).unwrap();
    let image = ImageEncoder::load(&arch, Some(&init_file), DType::F32, 0).unwrap();
    image.set_training(true);
    let text = TextEncoder::load(
        "tests/fixtures/bert_tiny".as_ref(),
        DType::F32,
        32,
        TextPooling::Cls,
    )
    .unwrap();
    let heads = Weights::from_set(&set, DType::F32).pp("init").pp("method");
    let cfg = ConvirtConfig {
        proj_dim: 8,
        hidden_dim: None,
        temperature: meta["temperature"].as_f64().unwrap(),
    };
    let method = Convirt::load(cfg, image.feature_dim(), text.feature_dim(), &heads).unwrap();
    let model = PretrainModel {
        image,
        text,
        method: Box::new(method),
    };
    let named = model.named_parameters();
    for (_, p) in &named {
        p.set_requires_grad(true).unwrap();
    }
    let texts: Vec<String> = meta["texts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_string())
        .collect();
    let images = fx.get("images").to_dtype(DType::F32).unwrap();
    let out = model.loss(&images, &texts).unwrap();
    assert_eq!(out.truncated, 0);
    let loss = out.total;
    assert_close(&loss, &fx.get("loss"), 1e-5, "convirt step loss");
    loss.backward().unwrap();

    // Some gradients are mathematically zero (e.g. the attention key biases: softmax
    // ignores a shift shared by a row); they are judged against the largest gradient.
    let global = named
        .iter()
        .filter(|(n, _)| fx.has(&format!("grad.{n}")))
        .map(|(n, _)| {
            fx.get(&format!("grad.{n}"))
                .to_vec_f64()
                .iter()
                .fold(0f64, |m, v| m.max(v.abs()))
        })
        .fold(0f64, f64::max);
    let mut checked = 0;
    for (name, p) in &named {
        let key = format!("grad.{name}");
        if fx.has(&key) {
            let g = p.grad().unwrap_or_else(|| panic!("no gradient for {name}"));
            assert_scaled(&g, &fx.get(&key), 1e-4, 1e-3 * global, &format!("d {name}"));
            checked += 1;
        } else {
            assert!(
                name.contains("pooler"),
                "PyTorch has no gradient for {name}"
            );
            assert!(p.grad().is_none(), "{name} is off the loss path");
        }
    }
    assert!(checked > 60, "only {checked} gradients compared");
    for (name, t) in model.image.buffers() {
        let key = format!("after.image_encoder.{name}");
        if fx.has(&key) {
            assert_close(&t, &fx.get(&key), 1e-5, &format!("{name} after the step"));
        }
    }

    // torch.optim.AdamW's first step.
    let params: Vec<Tensor> = named.iter().map(|(_, p)| p.clone()).collect();
    let mut opt = AdamW::new(
        params,
        AdamWConfig {
            lr: meta["lr"].as_f64().unwrap(),
            weight_decay: meta["weight_decay"].as_f64().unwrap(),
            ..AdamWConfig::default()
        },
    )
    .unwrap();
    opt.step().unwrap();
    // Adam's first step is lr·g/(|g| + eps): for a gradient that is zero up to
    // rounding (the key biases) it turns rounding noise into a step, so those are
    // left out; every other parameter must match.
    for (name, p) in &named {
        let key = format!("stepped.{name}");
        let grad_max = |n: &str| {
            fx.get(&format!("grad.{n}"))
                .to_vec_f64()
                .iter()
                .fold(0f64, |m, v| m.max(v.abs()))
        };
        if fx.has(&key) && grad_max(name) > 1e-6 * global {
            assert_close(p, &fx.get(&key), 1e-5, &format!("{name} after AdamW"));
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
