//! Vision Transformer against timm's VisionTransformer (fixtures made by
//! scripts/fixtures/vit.py): a tiny class-token model with a head (outputs in f32
//! and bf16, gradients w.r.t. the input and every parameter), the same weights on
//! other image sizes (resampled position embeddings), a mean-pooled model without
//! class token (fc_norm), ViT-B/16's names and shapes, f64 gradchecks, bad input.

mod common;
use common::*;
use medsyn::io::TensorSet;
use medsyn::models::vit::{
    aa_bicubic_weights, resample_abs_pos_embed, GlobalPool, VisionTransformer, VitConfig,
};
use medsyn::models::{Config, Weights};
use medsyn::tensor::Philox;
use medsyn::{DType, Tensor};
use std::path::PathBuf;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn weights(name: &str) -> TensorSet {
    TensorSet::open(fixtures().join(format!("{name}.safetensors"))).unwrap()
}

/// scripts/fixtures/vit.py's TINY.
fn tiny_cfg() -> VitConfig {
    VitConfig {
        img_size: 16,
        patch_size: 4,
        in_chans: 3,
        embed_dim: 24,
        depth: 2,
        num_heads: 2,
        mlp_ratio: 2.0,
        num_classes: 3,
        ..VitConfig::vit_base_patch16_224()
    }
}

/// scripts/fixtures/vit.py's AVG.
fn avg_cfg() -> VitConfig {
    VitConfig {
        depth: 1,
        qkv_bias: false,
        class_token: false,
        global_pool: GlobalPool::Avg,
        num_classes: 0,
        ..tiny_cfg()
    }
}

fn load(cfg: &VitConfig, set: &TensorSet, dtype: DType) -> VisionTransformer {
    VisionTransformer::load(cfg, &Weights::from_set(set, dtype)).unwrap()
}

/// f32: elementwise relative check; half types: error against the tensor's scale.
fn close(actual: &Tensor, expected: &Tensor, dtype: DType, what: &str) {
    assert_eq!(actual.dtype(), dtype, "{what}: dtype");
    compare(actual, expected, dtype, what);
}

/// `close` for a leaf's gradient, which half-precision leaves keep in f32.
fn close_grad(grad: &Tensor, expected: &Tensor, dtype: DType, what: &str) {
    let want = if dtype.is_half() { DType::F32 } else { dtype };
    assert_eq!(grad.dtype(), want, "{what}: gradient dtype");
    compare(grad, expected, dtype, what);
}

fn compare(actual: &Tensor, expected: &Tensor, dtype: DType, what: &str) {
    let what = format!("{what} ({dtype})");
    if dtype == DType::F32 {
        assert_close(actual, expected, tol(dtype), &what);
    } else {
        assert_scaled(actual, expected, tol(dtype), 1e-3, &what);
    }
}

fn check_tiny_outputs(dtype: DType) {
    let fx = Fixture::load("vit_tiny_io");
    let model = load(&tiny_cfg(), &weights("vit_tiny"), dtype);
    let x = fx.get("x").to_dtype(dtype).unwrap();
    let (tokens, pooled) = model.forward_tokens_and_pooled(&x).unwrap();
    assert_eq!(tokens.shape(), [2, 17, 24]);
    assert_eq!(pooled.shape(), [2, 24]);
    close(&tokens, &fx.get("tokens"), dtype, "tokens");
    close(&pooled, &fx.get("pooled"), dtype, "pooled");
    close(
        &model.forward(&x).unwrap(),
        &fx.get("logits"),
        dtype,
        "logits",
    );
    let again = model.forward_pooled(&x).unwrap();
    assert_eq!(again.to_vec_f64(), pooled.to_vec_f64());
}

#[test]
fn tiny_outputs_match_timm_f32() {
    check_tiny_outputs(DType::F32);
}

#[test]
fn tiny_outputs_match_timm_bf16() {
    check_tiny_outputs(DType::BF16);
}

/// Gradients of sum(tokens·w) + sum(logits·wl) w.r.t. the input and every
/// parameter, against PyTorch.
fn check_tiny_gradients(dtype: DType) {
    let fx = Fixture::load("vit_tiny_io");
    let model = load(&tiny_cfg(), &weights("vit_tiny"), dtype);
    let params = model.parameters();
    for (_, p) in &params {
        assert!(!p.requires_grad(), "weights from a file start frozen");
        p.set_requires_grad(true).unwrap();
    }
    let x = fx.param("x", dtype);
    // Two passes (tokens, then logits): each gradient sums both, as in PyTorch.
    let tokens = model.forward_tokens(&x).unwrap();
    let logits = model.forward(&x).unwrap();
    let wt = fx.get("w_tokens").to_dtype(dtype).unwrap();
    let wl = fx.get("w_logits").to_dtype(dtype).unwrap();
    tokens
        .mul(&wt)
        .unwrap()
        .sum_all()
        .unwrap()
        .add(&logits.mul(&wl).unwrap().sum_all().unwrap())
        .unwrap()
        .backward()
        .unwrap();
    let check = |t: &Tensor, key: &str| {
        let g = t.grad().unwrap_or_else(|| panic!("{key}: no gradient"));
        close_grad(&g, &fx.get(key), dtype, key);
    };
    check(&x, "grad.x");
    assert_eq!(params.len(), 32);
    for (name, p) in &params {
        check(p, &format!("grad.{name}"));
    }
}

#[test]
fn tiny_gradients_match_timm_f32() {
    check_tiny_gradients(DType::F32);
}

#[test]
fn tiny_gradients_match_timm_bf16() {
    check_tiny_gradients(DType::BF16);
}

/// Other image sizes with dynamic_img_size: position embeddings resampled as
/// timm's resample_abs_pos_embed (bicubic, antialiased), up (6x5 grid) and down
/// (2x3), with the gradient reaching pos_embed.
#[test]
fn dynamic_image_size_matches_timm() {
    let fx = Fixture::load("vit_tiny_io");
    let cfg = VitConfig {
        dynamic_img_size: true,
        ..tiny_cfg()
    };
    for dtype in [DType::F32, DType::BF16] {
        let model = load(&cfg, &weights("vit_tiny"), dtype);
        let pos = model
            .parameters()
            .into_iter()
            .find(|(n, _)| n == "pos_embed")
            .unwrap()
            .1;
        pos.set_requires_grad(true).unwrap();
        for (tag, len) in [("up", 31), ("down", 7)] {
            pos.clear_grad();
            let x = fx.get(&format!("{tag}.x")).to_dtype(dtype).unwrap();
            let (tokens, pooled) = model.forward_tokens_and_pooled(&x).unwrap();
            assert_eq!(tokens.shape(), [1, len, 24]);
            close(&tokens, &fx.get(&format!("{tag}.tokens")), dtype, tag);
            close(&pooled, &fx.get(&format!("{tag}.pooled")), dtype, tag);
            let w = fx.get(&format!("{tag}.w")).to_dtype(dtype).unwrap();
            tokens
                .mul(&w)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            let key = format!("{tag}.grad.pos_embed");
            close_grad(&pos.grad().unwrap(), &fx.get(&key), dtype, &key);
        }
        // The native size gives the stored embeddings back unchanged.
        let same = resample_abs_pos_embed(&pos, (4, 4), (4, 4), 1).unwrap();
        assert_eq!(same.to_vec_f64(), pos.to_vec_f64());
    }
}

/// The 1-D resize weights: rows sum to one; the identity at the same size.
#[test]
fn bicubic_weights_are_normalised() {
    for (i, o) in [(4, 6), (14, 16), (14, 7), (5, 2), (3, 11)] {
        let m = aa_bicubic_weights(i, o);
        assert_eq!(m.len(), i * o);
        for r in m.chunks(i) {
            assert!((r.iter().sum::<f64>() - 1.0).abs() < 1e-12, "{i}->{o}");
        }
    }
    let m = aa_bicubic_weights(5, 5);
    for (k, v) in m.iter().enumerate() {
        assert!((v - (k / 5 == k % 5) as u8 as f64).abs() < 1e-12);
    }
}

#[test]
fn mean_pooled_model_without_class_token_matches_timm() {
    let fx = Fixture::load("vit_avg_io");
    let set = weights("vit_avg");
    for dtype in [DType::F32, DType::BF16] {
        let model = load(&avg_cfg(), &set, dtype);
        assert_eq!(model.num_prefix_tokens(), 0);
        let x = fx.param("x", dtype);
        let (tokens, pooled) = model.forward_tokens_and_pooled(&x).unwrap();
        assert_eq!(tokens.shape(), [2, 16, 24]);
        close(&tokens, &fx.get("tokens"), dtype, "avg tokens");
        close(&pooled, &fx.get("pooled"), dtype, "avg pooled");
        // No head: forward is the pooled features.
        let out = model.forward(&x).unwrap();
        assert_eq!(out.to_vec_f64(), pooled.to_vec_f64());
        let w = fx.get("w").to_dtype(dtype).unwrap();
        pooled
            .mul(&w)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        close_grad(&x.grad().unwrap(), &fx.get("grad.x"), dtype, "avg grad.x");
    }
    // Its names: fc_norm instead of norm, no cls_token, no qkv bias, no head.
    let model = load(&avg_cfg(), &set, DType::F32);
    let mut ours: Vec<String> = model.parameters().into_iter().map(|(n, _)| n).collect();
    let mut file = set.names().to_vec();
    ours.sort();
    file.sort();
    assert_eq!(ours, file);
    assert!(ours.contains(&"fc_norm.weight".to_string()));
}

#[test]
fn parameters_carry_timm_names_and_head_is_skipped_when_headless() {
    let set = weights("vit_tiny");
    let model = load(&tiny_cfg(), &set, DType::F32);
    let mut ours: Vec<String> = model.parameters().into_iter().map(|(n, _)| n).collect();
    let mut file = set.names().to_vec();
    ours.sort();
    file.sort();
    assert_eq!(ours, file);

    // The same checkpoint as a headless encoder: head.* is skipped, features agree.
    let fx = Fixture::load("vit_tiny_io");
    let headless = VitConfig {
        num_classes: 0,
        ..tiny_cfg()
    };
    let enc = load(&headless, &set, DType::F32);
    assert_eq!(enc.parameters().len(), model.parameters().len() - 2);
    assert!(enc.parameters().iter().all(|(n, _)| !n.starts_with("head")));
    assert_eq!(enc.feature_dim(), 24);
    let x = fx.get("x").to_dtype(DType::F32).unwrap();
    let out = enc.forward(&x).unwrap();
    assert_eq!(out.shape(), [2, 24]);
    assert_close(&out, &fx.get("pooled"), tol(DType::F32), "headless forward");
}

/// medsyn's ViT-B/16 (fresh, no file) has exactly the names, order and shapes of
/// timm.create_model('vit_base_patch16_224', pretrained=False, num_classes=0).
#[test]
fn vit_base_patch16_224_matches_timm_state_dict() {
    let text = std::fs::read_to_string(fixtures().join("vit_base_keys.json")).unwrap();
    let expected: Vec<(String, Vec<usize>)> = serde_json::from_str(&text).unwrap();
    let cfg = VitConfig::vit_base_patch16_224();
    let model = VisionTransformer::load(&cfg, &Weights::random(0, DType::BF16)).unwrap();
    let ours: Vec<(String, Vec<usize>)> = model
        .parameters()
        .into_iter()
        .map(|(n, t)| (n, t.shape().to_vec()))
        .collect();
    assert_eq!(ours, expected);
    let count: usize = model.parameters().iter().map(|(_, t)| t.numel()).sum();
    assert_eq!(count, 85_798_656, "ViT-B/16 without head");
    assert!(model.parameters().iter().all(|(_, t)| t.requires_grad()));
    // timm's initialisation: linear weights N(0, 0.02²), zero biases, tiny cls token.
    let get = |name: &str| {
        model
            .parameters()
            .into_iter()
            .find(|(n, _)| n == name)
            .unwrap()
            .1
            .to_vec_f64()
    };
    let w = get("blocks.0.attn.qkv.weight");
    let std = (w.iter().map(|v| v * v).sum::<f64>() / w.len() as f64).sqrt();
    assert!((std - 0.02).abs() < 0.001, "qkv weight std {std}");
    assert!(get("blocks.0.attn.qkv.bias").iter().all(|&v| v == 0.0));
    assert!(get("cls_token").iter().all(|v| v.abs() < 1e-4));
    assert!(get("norm.weight").iter().all(|&v| v == 1.0));
}

/// A model whose every parameter is `params` (leaves for gradcheck).
fn with_params(cfg: &VitConfig, names: &[String], params: &[Tensor]) -> VisionTransformer {
    let mut model = VisionTransformer::load(cfg, &Weights::random(1, DType::F64)).unwrap();
    let named: Vec<(String, Tensor)> = names.iter().cloned().zip(params.iter().cloned()).collect();
    model.set_parameters(&named).unwrap();
    model
}

/// Random f64 leaves shaped like every parameter of `cfg`'s model.
fn random_params(cfg: &VitConfig, rng: &mut Philox) -> (Vec<String>, Vec<Tensor>) {
    let fresh = VisionTransformer::load(cfg, &Weights::random(1, DType::F64)).unwrap();
    fresh
        .parameters()
        .into_iter()
        .map(|(n, t)| (n, rand_leaf(rng, t.shape())))
        .unzip()
}

#[test]
fn gradcheck_f64_class_token_with_head() {
    let cfg = VitConfig {
        img_size: 8,
        patch_size: 4,
        in_chans: 2,
        embed_dim: 4,
        depth: 1,
        num_heads: 2,
        mlp_ratio: 2.0,
        num_classes: 2,
        ..VitConfig::vit_base_patch16_224()
    };
    let mut rng = Philox::new(5);
    let (names, params) = random_params(&cfg, &mut rng);
    let mut inputs = vec![rand_leaf(&mut rng, &[1, 2, 8, 8])];
    inputs.extend(params);
    assert_gradcheck(
        "vit class token + head",
        |xs| {
            let model = with_params(&cfg, &names, &xs[1..]);
            let tokens = model.forward_tokens(&xs[0])?.reshape(&[20])?;
            let logits = model.forward(&xs[0])?.reshape(&[2])?;
            Tensor::cat(&[&tokens, &logits], 0)
        },
        &inputs,
    );
}

#[test]
fn gradcheck_f64_mean_pool_on_a_resampled_grid() {
    let cfg = VitConfig {
        img_size: 8,
        patch_size: 4,
        in_chans: 1,
        embed_dim: 4,
        depth: 1,
        num_heads: 1,
        mlp_ratio: 1.0,
        qkv_bias: false,
        class_token: false,
        global_pool: GlobalPool::Avg,
        num_classes: 0,
        dynamic_img_size: true,
        ..VitConfig::vit_base_patch16_224()
    };
    let mut rng = Philox::new(6);
    let (names, params) = random_params(&cfg, &mut rng);
    // 12x8 → a 3x2 grid from the 2x2 the embeddings were made for.
    let mut inputs = vec![rand_leaf(&mut rng, &[1, 1, 12, 8])];
    inputs.extend(params);
    assert_gradcheck(
        "vit mean pool, resampled",
        |xs| {
            let model = with_params(&cfg, &names, &xs[1..]);
            let (tokens, pooled) = model.forward_tokens_and_pooled(&xs[0])?;
            Tensor::cat(&[&tokens.reshape(&[24])?, &pooled.reshape(&[4])?], 0)
        },
        &inputs,
    );
}

#[test]
fn bad_inputs_are_errors() {
    let set = weights("vit_tiny");
    let model = load(&tiny_cfg(), &set, DType::F32);
    let err = |x: &Tensor| model.forward(x).err().unwrap().to_string();
    let e = err(&Tensor::zeros(&[1, 3, 20, 20], DType::F32).unwrap());
    assert!(e.contains("16x16") && e.contains("20x20"), "{e}");
    let e = err(&Tensor::zeros(&[1, 1, 16, 16], DType::F32).unwrap());
    assert!(e.contains("3 input channels") && e.contains("got 1"), "{e}");
    let e = err(&Tensor::zeros(&[3, 16, 16], DType::F32).unwrap());
    assert!(e.contains("[N, 3, H, W]"), "{e}");
    let e = err(&Tensor::zeros(&[1, 3, 16, 16], DType::F64).unwrap());
    assert!(e.contains("dtype"), "{e}");
    let dynamic = load(
        &VitConfig {
            dynamic_img_size: true,
            ..tiny_cfg()
        },
        &set,
        DType::F32,
    );
    let e = dynamic
        .forward(&Tensor::zeros(&[1, 3, 16, 18], DType::F32).unwrap())
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("16x18") && e.contains("4x4 patches"), "{e}");

    // A file missing a tensor names the tensor and the file.
    let dir = std::env::temp_dir().join(format!("medsyn-vit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("partial.safetensors");
    let missing = "blocks.1.mlp.fc2.bias";
    let kept: Vec<(String, Tensor)> = set
        .names()
        .iter()
        .filter(|n| n.as_str() != missing)
        .map(|n| (n.clone(), set.load(n).unwrap()))
        .collect();
    let refs: Vec<(&str, &Tensor)> = kept.iter().map(|(n, t)| (n.as_str(), t)).collect();
    medsyn::io::save_safetensors(&path, &refs, None).unwrap();
    let partial = TensorSet::open(&path).unwrap();
    let e = VisionTransformer::load(&tiny_cfg(), &Weights::from_set(&partial, DType::F32))
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains(missing) && e.contains("partial.safetensors"),
        "{e}"
    );
    std::fs::remove_dir_all(&dir).ok();

    // A config that does not describe the file: fewer blocks, another width.
    let shallow = VitConfig {
        depth: 1,
        ..tiny_cfg()
    };
    let e = VisionTransformer::load(&shallow, &Weights::from_set(&set, DType::F32))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("not used") && e.contains("blocks.1"), "{e}");
    let wide = VitConfig {
        embed_dim: 32,
        ..tiny_cfg()
    };
    let e = VisionTransformer::load(&wide, &Weights::from_set(&set, DType::F32))
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("cls_token") && e.contains("vit_tiny.safetensors"),
        "{e}"
    );
    let bad_heads = VitConfig {
        num_heads: 5,
        ..tiny_cfg()
    };
    let e = VisionTransformer::load(&bad_heads, &Weights::random(0, DType::F32))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("num_heads"), "{e}");
    let no_cls = VitConfig {
        class_token: false,
        ..tiny_cfg()
    };
    assert!(no_cls.validate().is_err());

    // set_parameters: unknown names and wrong shapes.
    let mut m = load(&tiny_cfg(), &set, DType::F32);
    let t = Tensor::zeros(&[24], DType::F32).unwrap();
    let e = m
        .set_parameters(&[("blocks.9.norm1.weight".into(), t.clone())])
        .unwrap_err()
        .to_string();
    assert!(e.contains("blocks.9.norm1.weight"), "{e}");
    let e = m
        .set_parameters(&[("pos_embed".into(), t)])
        .unwrap_err()
        .to_string();
    assert!(e.contains("pos_embed"), "{e}");
}

#[test]
fn config_from_json() {
    let path = PathBuf::from("vit/config.json");
    let cfg = |v: serde_json::Value| VitConfig::from_config(&Config::from_value(&path, v).unwrap());
    let c = cfg(serde_json::json!({})).unwrap();
    assert_eq!(c, VitConfig::vit_base_patch16_224());
    let c = cfg(serde_json::json!({
        "architecture": "vit_small_patch16_224",
        "num_classes": 10,
        "global_pool": "avg",
        "reg_tokens": 0,
        "init_values": null,
        "pretrained_cfg": {"input_size": [3, 384, 384]}
    }))
    .unwrap();
    assert_eq!(
        (c.embed_dim, c.num_heads, c.img_size, c.num_classes),
        (384, 6, 384, 10)
    );
    assert!(c.use_fc_norm());
    let c = cfg(
        serde_json::json!({"img_size": [32, 32], "patch_size": 8, "embed_dim": 64,
        "num_heads": 4, "depth": 2, "dynamic_img_size": true}),
    )
    .unwrap();
    assert_eq!((c.img_size, c.grid_size(), c.depth), (32, 4, 2));
    for (bad, key) in [
        (serde_json::json!({"reg_tokens": 4}), "reg_tokens"),
        (
            serde_json::json!({"architecture": "vit_huge"}),
            "architecture",
        ),
        (serde_json::json!({"global_pool": "map"}), "global_pool"),
        (serde_json::json!({"img_size": [32, 48]}), "img_size"),
        (serde_json::json!({"num_heads": 7}), "num_heads"),
    ] {
        let e = cfg(bad).unwrap_err().to_string();
        assert!(e.contains(key) && e.contains("config.json"), "{e}");
    }
}

/// ViT-B/16 forward, batch 2 at 224², f32 on the CPU, with PyTorch (timm) timed
/// in the same run when it is installed.
#[test]
#[ignore]
fn vit_base_forward_timing() {
    let cfg = VitConfig::vit_base_patch16_224();
    let model = VisionTransformer::load(&cfg, &Weights::random(0, DType::F32)).unwrap();
    let x = Tensor::randn(&mut Philox::new(1), &[2, 3, 224, 224], DType::F32).unwrap();
    let _g = medsyn::autograd::no_grad();
    model.forward(&x).unwrap();
    let runs = 3;
    let t0 = std::time::Instant::now();
    for _ in 0..runs {
        let y = model.forward(&x).unwrap();
        assert_eq!(y.shape(), [2, 768]);
    }
    let ours = t0.elapsed().as_secs_f64() / runs as f64;
    // ~17.6 GFLOP per image (2·MACs).
    let gflops = 2.0 * 17.56 / ours;
    println!("medsyn ViT-B/16 forward, batch 2, f32: {ours:.3} s ({gflops:.1} GFLOP/s)");
    let threads = rayon::current_num_threads();
    let script = format!(
        "import time, torch, timm\ntorch.set_num_threads({threads})\n\
         m = timm.create_model('vit_base_patch16_224', pretrained=False, num_classes=0).eval()\n\
         x = torch.randn(2, 3, 224, 224)\n\
         with torch.no_grad():\n    m(x)\n    t = time.time()\n    [m(x) for _ in range({runs})]\n\
         print((time.time() - t) / {runs})\n"
    );
    match std::process::Command::new("python3")
        .args(["-c", &script])
        .output()
    {
        Ok(out) if out.status.success() => {
            let torch: f64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
            println!(
                "PyTorch (timm) same shape, {threads} threads: {torch:.3} s; medsyn/PyTorch time ratio {:.2}",
                ours / torch
            );
        }
        _ => println!("PyTorch/timm not available: no reference timing"),
    }
}
