//! The U-Net against diffusers: three tiny random UNet2DConditionModels in diffusers
//! layout (scripts/fixtures/unet_vae.py) — SD-1.x-like, SD-2.x-like (sharded) and one
//! with two layers per block, scale_shift and the rarer config keys — outputs in f32
//! and bf16 against the float64 reference, gradients, parameter names, bad input;
//! and (ignored) one step of a full-size SD-1.5 U-Net.

mod common;
use common::*;
use medsyn::autograd::no_grad;
use medsyn::io::TensorSet;
use medsyn::models::blocks::timestep_embedding;
use medsyn::models::unet::{UNet2DConditionModel, UNetConfig};
use medsyn::models::{Config, Weights};
use medsyn::tensor::Philox;
use medsyn::{DType, Tensor};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn fixture_dir(version: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/fixtures/unet_{version}"))
}

fn config(version: &str) -> UNetConfig {
    let cfg = Config::load(fixture_dir(version).join("config.json")).unwrap();
    UNetConfig::from_config(&cfg).unwrap()
}

fn load(version: &str, dtype: DType) -> UNet2DConditionModel {
    let set = TensorSet::open(fixture_dir(version)).unwrap();
    UNet2DConditionModel::load(&config(version), &Weights::from_set(&set, dtype)).unwrap()
}

fn raw_config(version: &str) -> Value {
    let text = std::fs::read_to_string(fixture_dir(version).join("config.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn timesteps(fx: &Fixture) -> Vec<f64> {
    fx.get("timesteps").to_vec_f64()
}

/// Forward in f32 against the float64 reference (per-batch and single timestep).
fn check_forward_f32(version: &str) {
    let fx = Fixture::load(&format!("unet_{version}_io"));
    let m = load(version, DType::F32);
    let _g = no_grad();
    let x = fx.get("sample").to_dtype(DType::F32).unwrap();
    let ctx = fx
        .get("encoder_hidden_states")
        .to_dtype(DType::F32)
        .unwrap();
    let y = m.forward(&x, &timesteps(&fx), &ctx).unwrap();
    assert_eq!(y.dtype(), DType::F32);
    assert_close(
        &y,
        &fx.get("out"),
        1e-5,
        &format!("unet_{version} out (f32)"),
    );
    let y = m.forward(&x, &[500.0], &ctx).unwrap();
    assert_close(
        &y,
        &fx.get("out_t500"),
        1e-5,
        &format!("unet_{version} out t=500 (f32)"),
    );
    // LCM-style timestep_cond through time_embedding.cond_proj (v3 only).
    if fx.has("timestep_cond") {
        let cond = fx.get("timestep_cond").to_dtype(DType::F32).unwrap();
        let y = m
            .forward_with_cond(&x, &timesteps(&fx), &ctx, Some(&cond))
            .unwrap();
        assert_close(
            &y,
            &fx.get("out_cond"),
            1e-5,
            &format!("unet_{version} out with timestep_cond (f32)"),
        );
    } else {
        let cond = Tensor::zeros(&[2, 6], DType::F32).unwrap();
        let e = m
            .forward_with_cond(&x, &timesteps(&fx), &ctx, Some(&cond))
            .unwrap_err()
            .to_string();
        assert!(e.contains("time_cond_proj_dim"), "{e}");
    }
}

/// Forward in bf16 (weights and inputs rounded) against the float64 reference.
fn check_forward_bf16(version: &str) {
    let fx = Fixture::load(&format!("unet_{version}_io"));
    let m = load(version, DType::BF16);
    let _g = no_grad();
    let x = fx.get("sample").to_dtype(DType::BF16).unwrap();
    let ctx = fx
        .get("encoder_hidden_states")
        .to_dtype(DType::BF16)
        .unwrap();
    let y = m.forward(&x, &timesteps(&fx), &ctx).unwrap();
    assert_eq!(y.dtype(), DType::BF16);
    assert_scaled(
        &y,
        &fx.get("out"),
        3e-2,
        0.0,
        &format!("unet_{version} out (bf16)"),
    );
}

/// Gradients of sum(out·w) for the sample, the context and the fixture's named
/// parameters, in f32, against float64 PyTorch.
fn check_gradients(version: &str) {
    let fx = Fixture::load(&format!("unet_{version}_io"));
    let m = load(version, DType::F32);
    let params = m.parameters();
    let mut checked = Vec::new();
    for (name, p) in &params {
        if fx.has(&format!("grad.{name}")) {
            p.set_requires_grad(true).unwrap();
            checked.push((name.clone(), p.clone()));
        }
    }
    assert!(
        checked.len() >= 3,
        "fixture names {} parameters",
        checked.len()
    );
    let x = fx.param("sample", DType::F32);
    let ctx = fx.param("encoder_hidden_states", DType::F32);
    let y = m.forward(&x, &timesteps(&fx), &ctx).unwrap();
    y.mul(&fx.get("w").to_dtype(DType::F32).unwrap())
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let what = |n: &str| format!("unet_{version} grad.{n} (f32)");
    assert_close(
        &x.grad().unwrap(),
        &fx.get("grad.sample"),
        3e-5,
        &what("sample"),
    );
    assert_close(
        &ctx.grad().unwrap(),
        &fx.get("grad.encoder_hidden_states"),
        3e-5,
        &what("encoder_hidden_states"),
    );
    for (name, p) in &checked {
        let g = p.grad().unwrap_or_else(|| panic!("{name}: no gradient"));
        assert_close(&g, &fx.get(&format!("grad.{name}")), 3e-5, &what(name));
    }
    // Parameters that were not asked for stay without gradients.
    let frozen = params.iter().find(|(n, _)| n == "conv_out.weight").unwrap();
    assert!(frozen.1.grad().is_none());
}

#[test]
fn sd1_like_unet_matches_diffusers_f32() {
    check_forward_f32("v1");
}

#[test]
fn sd2_like_sharded_unet_matches_diffusers_f32() {
    check_forward_f32("v2");
}

#[test]
fn two_layer_scale_shift_unet_matches_diffusers_f32() {
    check_forward_f32("v3");
}

#[test]
fn unets_match_diffusers_bf16() {
    for v in ["v1", "v2", "v3"] {
        check_forward_bf16(v);
    }
}

#[test]
fn sd1_like_unet_gradients_match_pytorch() {
    check_gradients("v1");
}

#[test]
fn two_layer_scale_shift_unet_gradients_match_pytorch() {
    check_gradients("v3");
}

#[test]
fn config_resolves_diffusers_legacy_head_rule() {
    // SD-1.x: attention_head_dim is the head count of every block.
    let c = config("v1");
    assert_eq!(c.num_attention_heads, vec![2, 2, 2]);
    assert_eq!(c.cross_attention_dim, vec![12; 3]);
    assert!(c.mid_block && !c.use_linear_projection);
    // SD-2.x: a per-block list, reversed for the up blocks.
    let c = config("v2");
    assert_eq!(c.num_attention_heads, vec![2, 4]);
    assert!(c.use_linear_projection && c.upcast_attention);
    let m = load("v2", DType::F32);
    let heads =
        |t: &medsyn::models::blocks::Transformer2DModel| t.transformer_blocks[0].attn1.heads;
    assert_eq!(heads(&m.down_blocks[0].attentions[0]), 2);
    assert_eq!(heads(&m.up_blocks[1].attentions[0]), 2);
    assert_eq!(heads(&m.mid_block.as_ref().unwrap().attentions[0]), 4);
    let c = config("v3");
    assert_eq!(c.layers_per_block, vec![2, 2]);
    assert_eq!(c.transformer_layers_per_block, vec![2, 1]);
    assert_eq!(c.only_cross_attention, vec![true, false]);
    assert_eq!(c.time_embed_dim, 24);
    assert_eq!((c.freq_shift, c.flip_sin_to_cos), (1.0, false));
}

#[test]
fn timestep_embedding_reproduces_diffusers_f32() {
    for v in ["v1", "v3"] {
        let fx = Fixture::load(&format!("unet_{v}_io"));
        let c = config(v);
        let t = timestep_embedding(
            &timesteps(&fx),
            c.block_out_channels[0],
            c.flip_sin_to_cos,
            c.freq_shift,
            DType::F32,
        )
        .unwrap();
        // PyTorch's f32 exp (MKL) may differ from the correctly rounded one by an
        // ulp, which moves t·freq by up to t·2^-24; everything else is exact f32.
        assert_scaled(&t, &fx.get("t_emb"), 1e-4, 1.0, &format!("t_emb {v}"));
    }
    // Odd widths are zero-padded; the layout is [cos | sin] with flip_sin_to_cos.
    let t = timestep_embedding(&[0.0, 2.0], 5, true, 0.0, DType::F64).unwrap();
    let v = t.to_vec_f64();
    assert_eq!(&v[..5], &[1.0, 1.0, 0.0, 0.0, 0.0]);
    assert_eq!(v[9], 0.0);
    assert!((v[5] - (2.0f64 as f32 as f64).cos()).abs() < 1e-7);
}

#[test]
fn parameter_names_equal_the_checkpoint_keys() {
    for v in ["v1", "v2", "v3"] {
        let m = load(v, DType::F32);
        let set = TensorSet::open(fixture_dir(v)).unwrap();
        let ours: Vec<String> = m.parameters().into_iter().map(|(n, _)| n).collect();
        let unique: BTreeSet<&String> = ours.iter().collect();
        assert_eq!(unique.len(), ours.len(), "{v}: duplicate names");
        let file: BTreeSet<&String> = set.names().iter().collect();
        assert_eq!(unique, file, "{v}");
    }
    // Fresh weights get the same names and PyTorch's shapes, and are trainable.
    let fresh = UNet2DConditionModel::load(&config("v1"), &Weights::random(1, DType::F32)).unwrap();
    let set = TensorSet::open(fixture_dir("v1")).unwrap();
    for (n, p) in fresh.parameters() {
        assert_eq!(p.shape(), set.info(&n).unwrap().shape.as_slice(), "{n}");
        assert!(p.requires_grad(), "{n}");
    }
}

fn config_error(edit: impl Fn(&mut serde_json::Map<String, Value>)) -> String {
    let mut v = raw_config("v1");
    edit(v.as_object_mut().unwrap());
    let cfg = Config::from_value("unet/config.json", v).unwrap();
    match UNetConfig::from_config(&cfg) {
        Ok(_) => panic!("config accepted"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn bad_configs_are_reported_with_file_and_key() {
    let e = config_error(|c| {
        c.insert(
            "down_block_types".into(),
            json!(["CrossAttnDownBlock2D", "AttnDownBlock2D", "DownBlock2D"]),
        );
    });
    assert!(
        e.contains("unet/config.json")
            && e.contains("AttnDownBlock2D")
            && e.contains("CrossAttnDownBlock2D, DownBlock2D"),
        "{e}"
    );
    let e = config_error(|c| {
        c.insert(
            "up_block_types".into(),
            json!(["UpBlock2D", "AttnUpBlock2D", "CrossAttnUpBlock2D"]),
        );
    });
    assert!(
        e.contains("up_block_types") && e.contains("AttnUpBlock2D"),
        "{e}"
    );
    let e = config_error(|c| {
        c.remove("block_out_channels");
    });
    assert!(
        e.contains("block_out_channels") && e.contains("missing"),
        "{e}"
    );
    let e = config_error(|c| {
        c.insert(
            "mid_block_type".into(),
            json!("UNetMidBlock2DSimpleCrossAttn"),
        );
    });
    assert!(
        e.contains("mid_block_type") && e.contains("UNetMidBlock2DCrossAttn, null"),
        "{e}"
    );
    let e = config_error(|c| {
        c.insert("addition_embed_type".into(), json!("text_time"));
    });
    assert!(
        e.contains("addition_embed_type") && e.contains("not supported"),
        "{e}"
    );
    for key in [
        "class_embed_type",
        "encoder_hid_dim",
        "dual_cross_attention",
    ] {
        let e = config_error(|c| {
            c.insert(
                key.into(),
                if key == "dual_cross_attention" {
                    json!(true)
                } else {
                    json!(8)
                },
            );
        });
        assert!(e.contains(key) && e.contains("not supported"), "{e}");
    }
    let e = config_error(|c| {
        c.insert("attention_head_dim".into(), json!(3));
    });
    assert!(
        e.contains("attention_head_dim") && e.contains("3 heads"),
        "{e}"
    );
    let e = config_error(|c| {
        c.insert(
            "transformer_layers_per_block".into(),
            json!([[1], [1], [1]]),
        );
    });
    assert!(
        e.contains("transformer_layers_per_block") && e.contains("nested"),
        "{e}"
    );
    let e = config_error(|c| {
        c.insert("time_embedding_type".into(), json!("fourier"));
    });
    assert!(
        e.contains("time_embedding_type") && e.contains("positional"),
        "{e}"
    );
    let e = config_error(|c| {
        c.insert("resnet_time_scale_shift".into(), json!("ada_group"));
    });
    assert!(
        e.contains("resnet_time_scale_shift") && e.contains("scale_shift"),
        "{e}"
    );
    // A null mid block builds without one.
    let mut v = raw_config("v1");
    v["mid_block_type"] = Value::Null;
    let c = UNetConfig::from_config(&Config::from_value("u.json", v).unwrap()).unwrap();
    assert!(!c.mid_block);
}

/// Writes the v1 weights minus `drop` (plus `extra`) to a temporary file.
fn edited_weights(tag: &str, drop: &str, extra: Option<&str>) -> (PathBuf, TensorSet) {
    let set = TensorSet::open(fixture_dir("v1")).unwrap();
    let mut tensors: Vec<(String, Tensor)> = set
        .names()
        .iter()
        .filter(|n| n.as_str() != drop)
        .map(|n| (n.clone(), set.load(n).unwrap()))
        .collect();
    if let Some(e) = extra {
        tensors.push((e.to_string(), Tensor::zeros(&[2], DType::F32).unwrap()));
    }
    let path = std::env::temp_dir().join(format!(
        "medsyn-unet-{tag}-{}.safetensors",
        std::process::id()
    ));
    let refs: Vec<(&str, &Tensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    medsyn::io::save_safetensors(&path, &refs, None).unwrap();
    let out = TensorSet::open(&path).unwrap();
    (path, out)
}

#[test]
fn missing_and_unused_weights_are_reported() {
    let missing = "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_v.weight";
    let (path, set) = edited_weights("missing", missing, None);
    let e = UNet2DConditionModel::load(&config("v1"), &Weights::from_set(&set, DType::F32))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains(missing), "{e}");
    std::fs::remove_file(path).unwrap();
    let (path, set) = edited_weights("extra", "", Some("mid_block.extra.weight"));
    let e = UNet2DConditionModel::load(&config("v1"), &Weights::from_set(&set, DType::F32))
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("mid_block.extra.weight") && e.contains("U-Net"),
        "{e}"
    );
    std::fs::remove_file(path).unwrap();
}

#[test]
fn bad_inputs_are_reported() {
    let m = load("v1", DType::F32);
    let _g = no_grad();
    let ctx = Tensor::zeros(&[2, 5, 12], DType::F32).unwrap();
    let x = Tensor::zeros(&[2, 4, 8, 8], DType::F32).unwrap();
    let e = m
        .forward(
            &Tensor::zeros(&[2, 3, 8, 8], DType::F32).unwrap(),
            &[1.0],
            &ctx,
        )
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("3 channels") && e.contains("in_channels = 4"),
        "{e}"
    );
    let e = m
        .forward(
            &Tensor::zeros(&[2, 4, 6, 6], DType::F32).unwrap(),
            &[1.0],
            &ctx,
        )
        .unwrap_err()
        .to_string();
    assert!(e.contains("multiple of 4"), "{e}");
    let bad_ctx = Tensor::zeros(&[2, 5, 10], DType::F32).unwrap();
    let e = m.forward(&x, &[1.0], &bad_ctx).unwrap_err().to_string();
    assert!(
        e.contains("width 10") && e.contains("cross_attention_dim is 12"),
        "{e}"
    );
    let e = m
        .forward(&x, &[1.0, 2.0, 3.0], &ctx)
        .unwrap_err()
        .to_string();
    assert!(e.contains("3 timesteps"), "{e}");
    let e = m
        .forward(&x.to_dtype(DType::BF16).unwrap(), &[1.0], &ctx)
        .unwrap_err()
        .to_string();
    assert!(e.contains("bf16") && e.contains("f32"), "{e}");
    let e = m
        .forward(&x, &[1.0], &Tensor::zeros(&[1, 5, 12], DType::F32).unwrap())
        .unwrap_err()
        .to_string();
    assert!(e.contains("encoder_hidden_states"), "{e}");
}

#[test]
fn tiny_f64_unet_gradients_match_finite_differences() {
    // A random two-level U-Net in f64: autograd through every block type against
    // central differences, for the sample and the context.
    let v = json!({
        "block_out_channels": [4, 8], "norm_num_groups": 2, "cross_attention_dim": 6,
        "attention_head_dim": 2, "layers_per_block": 1, "in_channels": 2, "out_channels": 2,
        "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
        "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
        "resnet_time_scale_shift": "scale_shift", "use_linear_projection": true
    });
    let cfg = UNetConfig::from_config(&Config::from_value("tiny.json", v).unwrap()).unwrap();
    let m = UNet2DConditionModel::load(&cfg, &Weights::random(3, DType::F64)).unwrap();
    m.parameters()
        .iter()
        .for_each(|(_, p)| p.set_requires_grad(false).unwrap());
    let mut rng = Philox::new(9);
    let x = rand_leaf(&mut rng, &[1, 2, 4, 4]);
    let ctx = rand_leaf(&mut rng, &[1, 3, 6]);
    assert_gradcheck(
        "tiny unet",
        |xs| m.forward(&xs[0], &[10.0], &xs[1]),
        &[x, ctx],
    );
}

/// Stable Diffusion 1.5's U-Net config (values as in its unet/config.json).
fn sd15_config() -> UNetConfig {
    let v = json!({
        "_class_name": "UNet2DConditionModel",
        "act_fn": "silu", "attention_head_dim": 8, "block_out_channels": [320, 640, 1280, 1280],
        "center_input_sample": false, "cross_attention_dim": 768,
        "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
        "downsample_padding": 1, "flip_sin_to_cos": true, "freq_shift": 0, "in_channels": 4,
        "layers_per_block": 2, "mid_block_scale_factor": 1, "norm_eps": 1e-05, "norm_num_groups": 32,
        "out_channels": 4, "sample_size": 64,
        "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"]
    });
    UNetConfig::from_config(&Config::from_value("sd15/unet/config.json", v).unwrap()).unwrap()
}

/// Two denoising steps of a full-size SD-1.5 U-Net (random weights, f32) at batch 2
/// (classifier-free guidance), 64×64 latents (512×512 images), 77×768 context.
/// `cargo test --release --test unet -- --ignored --nocapture sd15_full_size`
#[test]
#[ignore = "full-size SD-1.5 U-Net: ~3.4 GB of f32 weights and tens of seconds on 2 cores"]
fn sd15_full_size_unet_step_batch2_64x64() {
    let t0 = std::time::Instant::now();
    let m = UNet2DConditionModel::load(&sd15_config(), &Weights::random(0, DType::F32)).unwrap();
    let n: usize = m.parameters().iter().map(|(_, p)| p.numel()).sum();
    assert_eq!(n, 859_520_964, "SD-1.5 U-Net parameter count");
    let build = t0.elapsed();
    let mut rng = Philox::new(1);
    let x = Tensor::randn(&mut rng, &[2, 4, 64, 64], DType::F32).unwrap();
    let ctx = Tensor::randn(&mut rng, &[2, 77, 768], DType::F32).unwrap();
    let _g = no_grad();
    // The first step also transforms the conv weights (kept for later steps), so the
    // second is what a sampler pays per step.
    let mut steps = Vec::new();
    let mut y = None;
    for t in [999.0, 979.0] {
        let t1 = std::time::Instant::now();
        y = Some(m.forward(&x, &[t], &ctx).unwrap());
        steps.push(t1.elapsed().as_secs_f64());
    }
    let y = y.unwrap();
    assert_eq!(y.shape(), &[2, 4, 64, 64]);
    assert!(y.to_vec_f32().iter().all(|v| v.is_finite()));
    println!(
        "sd15_full_size_unet_step_batch2_64x64: build {:.1} s, first step {:.2} s, second step {:.2} s ({} threads)",
        build.as_secs_f64(),
        steps[0],
        steps[1],
        rayon::current_num_threads()
    );
}
