//! ResNet against torchvision: tiny variants (bottleneck, basic, grouped) in eval
//! and training mode (outputs, running stats, gradients) in f32 and bf16, f64
//! finite differences, ResNet-50's state-dict names/shapes, and bad inputs.

mod common;
use common::*;
use medsyn::io::{save_safetensors, TensorSet};
use medsyn::models::resnet::{BlockKind, ResNet, ResNetConfig};
use medsyn::models::Weights;
use medsyn::nn::Module;
use medsyn::tensor::Philox;
use medsyn::{DType, Tensor};
use std::path::PathBuf;

const CASES: [&str; 3] = ["bneck", "basic", "grouped"];

/// The layouts of scripts/fixtures/resnet.py's CASES.
fn case_cfg(case: &str) -> ResNetConfig {
    let base = ResNetConfig::resnet50();
    let (block, layers, stem, widths, classes, groups, wpg) = match case {
        "bneck" => (
            BlockKind::Bottleneck,
            [2, 1, 1, 1],
            8,
            [4, 4, 8, 8],
            5,
            1,
            64,
        ),
        "basic" => (BlockKind::Basic, [1, 2, 1, 1], 8, [8, 8, 16, 16], 3, 1, 64),
        "grouped" => (
            BlockKind::Bottleneck,
            [1, 1, 1, 1],
            8,
            [4, 4, 4, 8],
            4,
            2,
            32,
        ),
        _ => unreachable!(),
    };
    ResNetConfig {
        block,
        layers,
        stem_width: stem,
        widths,
        num_classes: Some(classes),
        groups,
        width_per_group: wpg,
        ..base
    }
}

fn fixture_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(format!("{name}.safetensors"))
}

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("medsyn-resnet-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Pointwise tolerance against each tensor's scale. f32: 2e-5, or three times
/// PyTorch's own f32 error on the same case and mode (`<mode>.f32err`) where the
/// case is worse conditioned (training-mode BatchNorm over few values). bf16 rounds
/// every activation of a ~20-layer chain: 2e-2.
fn rtol(fx: &Fixture, mode: &str, dtype: DType) -> f64 {
    match dtype {
        DType::F32 => (3.0 * fx.scalar(&format!("{mode}.f32err"))).max(2e-5),
        _ => 2e-2,
    }
}

fn load_case(case: &str) -> (TensorSet, ResNetConfig) {
    let set = TensorSet::open(fixture_path(&format!("resnet_{case}"))).unwrap();
    (set, case_cfg(case))
}

/// `actual` against `expected` at `rtol(fx, mode, dtype)` of the reference's scale.
fn check(fx: &Fixture, mode: &str, actual: &Tensor, expected: &Tensor, dtype: DType, what: &str) {
    let rtol = rtol(fx, mode, dtype);
    let (a, e) = (actual.to_vec_f64(), expected.to_vec_f64());
    let scale = e.iter().fold(1e-6f64, |m, v| m.max(v.abs()));
    let worst = a
        .iter()
        .zip(&e)
        .fold(0f64, |m, (x, y)| m.max((x - y).abs() / scale));
    eprintln!("{what} ({dtype}): error {worst:.2e} of scale (tolerance {rtol:.1e})");
    assert_scaled(actual, expected, rtol, 1e-6, &format!("{what} ({dtype})"));
}

/// ||a - e|| / ||e|| over the concatenation of the pairs.
fn rel_norm(pairs: &[(Tensor, Tensor)]) -> f64 {
    let (mut num, mut den) = (0.0, 0.0);
    for (a, e) in pairs {
        assert_eq!(a.shape(), e.shape());
        for (x, y) in a.to_vec_f64().iter().zip(e.to_vec_f64()) {
            num += (x - y) * (x - y);
            den += y * y;
        }
    }
    (num / den.max(1e-300)).sqrt()
}

/// bf16 quantities that pass through BatchNorm's batch statistics over a handful
/// of values (training mode) or through ReLU/max-pool routing (gradients) are
/// ill-conditioned at bf16; the fixture stores PyTorch's own bf16 error for each
/// (`<mode>.bf16err.<key>`), and medsyn's must be no worse than twice that (or 2e-2).
fn check_bf16_norm(fx: &Fixture, pairs: &[(Tensor, Tensor)], key: &str, what: &str) {
    let torch_err = fx.scalar(key);
    let err = rel_norm(pairs);
    let bound = (2.0 * torch_err).max(2e-2);
    eprintln!("{what} (bf16): relative error {err:.2e} (PyTorch's bf16: {torch_err:.2e})");
    assert!(
        err <= bound,
        "{what} (bf16): relative error {err:.3e} > {bound:.3e} (PyTorch's bf16: {torch_err:.3e})"
    );
}

#[test]
fn eval_mode_matches_torchvision() {
    for case in CASES {
        let fx = Fixture::load(&format!("resnet_{case}_io"));
        for dtype in [DType::F32, DType::BF16] {
            let (set, cfg) = load_case(case);
            let model = ResNet::load(&cfg, &Weights::from_set(&set, dtype)).unwrap();
            model.set_training(false);
            assert!(!model.is_training());
            let x = fx.param("x", dtype);
            let out = model.forward(&x).unwrap();
            assert_eq!(out.dtype(), dtype);
            check(
                &fx,
                "eval",
                &out,
                &fx.get("eval.out"),
                dtype,
                &format!("{case} eval.out"),
            );
            let feats = model.forward_features(&x).unwrap();
            check(
                &fx,
                "eval",
                &feats,
                &fx.get("eval.features"),
                dtype,
                &format!("{case} features"),
            );
            let (pooled, local) = model.forward_with_local(&x).unwrap();
            check(
                &fx,
                "eval",
                &local,
                &fx.get("eval.layer3"),
                dtype,
                &format!("{case} layer3"),
            );
            assert_eq!(local.shape()[1], model.local_dim());
            let expect_pooled = fx.get("eval.features").mean_dims(&[2, 3], false).unwrap();
            check(
                &fx,
                "eval",
                &pooled,
                &expect_pooled,
                dtype,
                &format!("{case} pooled"),
            );
            assert_eq!(pooled.shape(), [2, model.feature_dim()]);
            let stages = model.forward_stages(&x).unwrap();
            check(
                &fx,
                "eval",
                &stages.layers[2],
                &fx.get("eval.layer3"),
                dtype,
                "stages[2]",
            );
            assert_eq!(stages.stem.shape()[2], x.shape()[2] / 2);
            // Eval mode leaves the running statistics alone.
            for (name, b) in model.buffers() {
                let stored = set.load(&name).unwrap();
                assert_eq!(
                    b.to_vec_f64(),
                    stored.to_vec_f64(),
                    "{case}: {name} changed"
                );
            }
            let w = fx.get("eval.w").to_dtype(dtype).unwrap();
            out.mul(&w).unwrap().sum_all().unwrap().backward().unwrap();
            let dx = x.grad().unwrap();
            let what = format!("{case} eval dx");
            match dtype {
                DType::F32 => check(&fx, "eval", &dx, &fx.get("eval.dx"), dtype, &what),
                _ => check_bf16_norm(&fx, &[(dx, fx.get("eval.dx"))], "eval.bf16err.dx", &what),
            }
            // Frozen (file) weights get no gradient.
            assert!(model.parameters().iter().all(|(_, p)| p.grad().is_none()));
        }
    }
}

#[test]
fn training_mode_matches_torchvision() {
    for case in CASES {
        let fx = Fixture::load(&format!("resnet_{case}_io"));
        for dtype in [DType::F32, DType::BF16] {
            let (set, cfg) = load_case(case);
            let model = ResNet::load(&cfg, &Weights::from_set(&set, dtype)).unwrap();
            model.unfreeze().unwrap();
            model.set_training(true);
            let x = fx.param("x", dtype);
            let out = model.forward(&x).unwrap();
            let f32 = dtype == DType::F32;
            let what = format!("{case} train.out");
            if f32 {
                check(&fx, "train", &out, &fx.get("train.out"), dtype, &what);
            } else {
                let pair = [(out.clone(), fx.get("train.out"))];
                check_bf16_norm(&fx, &pair, "train.bf16err.out", &what);
            }
            // Running statistics after one forward with batch statistics.
            let mut stats = Vec::new();
            for (name, b) in model.buffers() {
                let expected = fx.get(&format!("train.state.{name}"));
                if name.ends_with("num_batches_tracked") {
                    assert_eq!(b.to_vec_i64(), vec![4], "{case}: {name}");
                    assert_eq!(expected.to_vec_i64(), vec![4]);
                } else {
                    assert_eq!(b.dtype(), DType::F32, "{name}: running stats stay f32");
                    if f32 {
                        check(
                            &fx,
                            "train",
                            &b,
                            &expected,
                            dtype,
                            &format!("{case} {name}"),
                        );
                    }
                    stats.push((b, expected));
                }
            }
            if !f32 {
                check_bf16_norm(
                    &fx,
                    &stats,
                    "train.bf16err.state",
                    &format!("{case} running stats"),
                );
            }
            let w = fx.get("train.w").to_dtype(dtype).unwrap();
            out.mul(&w).unwrap().sum_all().unwrap().backward().unwrap();
            let dx = x.grad().unwrap();
            let what = format!("{case} train dx");
            if f32 {
                check(&fx, "train", &dx, &fx.get("train.dx"), dtype, &what);
            } else {
                check_bf16_norm(&fx, &[(dx, fx.get("train.dx"))], "train.bf16err.dx", &what);
            }
            let params = model.parameters();
            assert!(!params.is_empty());
            let mut grads = Vec::new();
            for (name, p) in params {
                let g = p
                    .grad()
                    .unwrap_or_else(|| panic!("{case}: {name} has no gradient"));
                // Half leaves keep f32 gradients (the autograd engine's master-gradient precision).
                assert_eq!(p.dtype(), dtype, "{case}: {name}");
                assert_eq!(g.dtype(), dtype.compute(), "{case}: {name}: gradient dtype");
                let expected = fx.get(&format!("train.grad.{name}"));
                if f32 {
                    check(
                        &fx,
                        "train",
                        &g,
                        &expected,
                        dtype,
                        &format!("{case} grad {name}"),
                    );
                }
                grads.push((g, expected));
            }
            if !f32 {
                check_bf16_norm(&fx, &grads, "train.bf16err.grads", &format!("{case} grads"));
            }
        }
    }
}

#[test]
fn finite_differences_in_training_mode() {
    for (block, stem, widths) in [
        (BlockKind::Basic, 3, [4, 4, 4, 4]),
        (BlockKind::Bottleneck, 4, [2, 2, 2, 2]),
    ] {
        let cfg = ResNetConfig {
            block,
            layers: [1, 1, 1, 1],
            stem_width: stem,
            widths,
            num_classes: Some(3),
            ..ResNetConfig::resnet50()
        };
        let model = ResNet::load(&cfg, &Weights::random(11, DType::F64)).unwrap();
        model.set_training(true);
        let named = model.parameters();
        let pick = |n: &str| {
            named
                .iter()
                .find(|(k, _)| k == n)
                .unwrap_or_else(|| panic!("no parameter {n}"))
                .1
                .clone()
        };
        let last_bn = if block == BlockKind::Basic {
            "bn2"
        } else {
            "bn3"
        };
        let params: Vec<Tensor> = [
            "conv1.weight".to_string(),
            "layer1.0.downsample.0.weight".to_string(),
            "layer2.0.bn1.weight".to_string(),
            format!("layer4.0.{last_bn}.bias"),
            "fc.weight".to_string(),
        ]
        .iter()
        .map(|n| pick(n))
        .collect();
        let saved: Vec<Tensor> = params
            .iter()
            .map(|p| Tensor::from_values(p.to_vec_f64(), p.shape(), DType::F64).unwrap())
            .collect();
        let mut rng = Philox::new(5);
        let mut inputs = vec![rand_leaf(&mut rng, &[2, 3, 16, 16])];
        inputs.extend(params.iter().cloned());
        // The closure gets perturbed copies of the parameters: write them into the
        // model for one forward, then restore the originals.
        assert_gradcheck(
            &format!("resnet {block:?}"),
            |xs| {
                for (p, v) in params.iter().zip(&xs[1..]) {
                    p.set_data(v)?;
                }
                let y = model.forward(&xs[0]);
                for (p, v) in params.iter().zip(&saved) {
                    p.set_data(v)?;
                }
                y
            },
            &inputs,
        );
    }
}

#[test]
fn resnet50_state_dict_matches_torchvision_names_and_shapes() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/resnet50_keys.json");
    let rows: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let expected: Vec<(String, Vec<usize>, DType, bool)> = rows
        .iter()
        .map(|r| {
            let dtype = match r["dtype"].as_str().unwrap() {
                "float32" => DType::F32,
                "int64" => DType::I64,
                d => panic!("dtype {d}"),
            };
            let shape = r["shape"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as usize)
                .collect();
            let name = r["name"].as_str().unwrap().to_string();
            (name, shape, dtype, r["param"].as_bool().unwrap())
        })
        .collect();
    for head in [Some(1000), None] {
        let cfg = ResNetConfig::resnet50().with_classes(head);
        let model = ResNet::load(&cfg, &Weights::random(0, DType::F32)).unwrap();
        let want: Vec<_> = expected
            .iter()
            .filter(|e| head.is_some() || !e.0.starts_with("fc."))
            .collect();
        let got = model.state_dict();
        assert_eq!(got.len(), want.len(), "head {head:?}: entry count");
        for ((name, t), (en, es, ed, _)) in got.iter().zip(&want) {
            assert_eq!(name, en, "state-dict order/name");
            assert_eq!(t.shape(), es.as_slice(), "{name}: shape");
            assert_eq!(t.dtype(), *ed, "{name}: dtype");
        }
        let pnames: Vec<String> = model.parameters().into_iter().map(|(n, _)| n).collect();
        let want_p: Vec<&String> = want.iter().filter(|e| e.3).map(|e| &e.0).collect();
        assert_eq!(pnames.iter().collect::<Vec<_>>(), want_p, "parameter names");
        let bnames: Vec<String> = model.buffers().into_iter().map(|(n, _)| n).collect();
        let want_b: Vec<&String> = want.iter().filter(|e| !e.3).map(|e| &e.0).collect();
        assert_eq!(bnames.iter().collect::<Vec<_>>(), want_b, "buffer names");
        let count: usize = model.parameters().iter().map(|(_, p)| p.numel()).sum();
        let expect = if head.is_some() {
            25_557_032
        } else {
            23_508_032
        };
        assert_eq!(count, expect, "parameter count");
        assert_eq!(model.feature_dim(), 2048);
        assert_eq!(model.local_dim(), 1024);
        // torchvision's init: kaiming normal (fan_out) convs, BN 1/0, trainable.
        let conv1 = &model.parameters()[0].1;
        let v = conv1.to_vec_f64();
        let std = (v.iter().map(|x| x * x).sum::<f64>() / v.len() as f64).sqrt();
        let want_std = (2.0f64 / (64.0 * 49.0)).sqrt();
        assert!(
            (std / want_std - 1.0).abs() < 0.05,
            "conv1 std {std} vs {want_std}"
        );
        assert!(conv1.requires_grad());
    }
}

#[test]
fn presets_and_zero_init_residual() {
    for (depth, block, layers, dim) in [
        (18, BlockKind::Basic, [2, 2, 2, 2], 512),
        (34, BlockKind::Basic, [3, 4, 6, 3], 512),
        (50, BlockKind::Bottleneck, [3, 4, 6, 3], 2048),
        (101, BlockKind::Bottleneck, [3, 4, 23, 3], 2048),
        (152, BlockKind::Bottleneck, [3, 8, 36, 3], 2048),
    ] {
        let c = ResNetConfig::for_depth(depth).unwrap();
        assert_eq!((c.block, c.layers, c.feature_dim()), (block, layers, dim));
    }
    assert!(ResNetConfig::for_depth(42).is_err());
    let cfg = ResNetConfig {
        zero_init_residual: true,
        ..case_cfg("bneck")
    };
    let model = ResNet::load(&cfg, &Weights::random(1, DType::F32)).unwrap();
    for (name, p) in model.parameters() {
        if name.ends_with("bn3.weight") {
            assert!(p.to_vec_f32().iter().all(|&v| v == 0.0), "{name}");
            assert!(p.requires_grad());
        } else if name.ends_with("bn1.weight") {
            assert!(p.to_vec_f32().iter().all(|&v| v == 1.0), "{name}");
            assert!(p.requires_grad());
        }
    }
    // Fresh BatchNorm buffers: PyTorch's defaults, not trainable.
    for (name, b) in model.buffers() {
        assert!(!b.requires_grad(), "{name}");
        let want = if name.ends_with("running_var") {
            1.0
        } else {
            0.0
        };
        assert!(b.to_vec_f64().iter().all(|&v| v == want), "{name}");
    }
    assert!(model.is_training());
    model.set_training(false);
    assert!(!model.is_training());
    let json = serde_json::json!({"block": "basic", "layers": [1, 1, 1, 1], "stem_width": 8,
        "widths": [8, 8, 8, 8], "num_classes": 2});
    let c = ResNetConfig::from_config(&medsyn::models::Config::from_value("r.json", json).unwrap())
        .unwrap();
    assert_eq!(
        (c.block, c.layers, c.num_classes),
        (BlockKind::Basic, [1, 1, 1, 1], Some(2))
    );
    let json = serde_json::json!({"depth": 50, "layers": [1, 2, 3]});
    let e = ResNetConfig::from_config(&medsyn::models::Config::from_value("r.json", json).unwrap())
        .unwrap_err()
        .to_string();
    assert!(e.contains("r.json") && e.contains("layers"), "{e}");
    let bad = ResNetConfig {
        groups: 2,
        ..ResNetConfig::resnet18()
    };
    assert!(ResNet::load(&bad, &Weights::random(0, DType::F32)).is_err());
}

#[test]
fn classifier_checkpoint_loads_as_headless_encoder() {
    let fx = Fixture::load("resnet_bneck_io");
    let set = TensorSet::open(fixture_path("resnet_bneck")).unwrap();
    let cfg = case_cfg("bneck").with_classes(None);
    let model = ResNet::load(&cfg, &Weights::from_set(&set, DType::F32)).unwrap();
    assert!(model.fc.is_none());
    assert!(model
        .state_dict()
        .iter()
        .all(|(n, _)| !n.starts_with("fc.")));
    model.set_training(false);
    let x = fx.get("x").to_dtype(DType::F32).unwrap();
    let pooled = model.forward(&x).unwrap();
    let expect = fx.get("eval.features").mean_dims(&[2, 3], false).unwrap();
    check(
        &fx,
        "eval",
        &pooled,
        &expect,
        DType::F32,
        "headless forward",
    );
    // A head of the wrong size is a shape error naming fc.weight.
    let e = ResNet::load(
        &case_cfg("bneck").with_classes(Some(7)),
        &Weights::from_set(&set, DType::F32),
    )
    .err()
    .unwrap()
    .to_string();
    assert!(e.contains("fc.weight") && e.contains("resnet_bneck"), "{e}");
    // A ResNet nested under a prefix loads from a file holding other models too.
    let dir = temp_dir("prefixed");
    let path = dir.join("both.safetensors");
    let mut named: Vec<(String, Tensor)> = set
        .names()
        .iter()
        .map(|n| (format!("image_encoder.{n}"), set.load(n).unwrap()))
        .collect();
    named.push((
        "text_encoder.w".into(),
        Tensor::zeros(&[2], DType::F32).unwrap(),
    ));
    let refs: Vec<(&str, &Tensor)> = named.iter().map(|(n, t)| (n.as_str(), t)).collect();
    save_safetensors(&path, &refs, None).unwrap();
    let both = TensorSet::open(&path).unwrap();
    let w = Weights::from_set(&both, DType::F32);
    let nested = ResNet::load(&case_cfg("bneck"), &w.pp("image_encoder")).unwrap();
    nested.set_training(false);
    check(
        &fx,
        "eval",
        &nested.forward(&x).unwrap(),
        &fx.get("eval.out"),
        DType::F32,
        "prefixed",
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn state_dict_round_trips_through_safetensors() {
    let fx = Fixture::load("resnet_basic_io");
    let set = TensorSet::open(fixture_path("resnet_basic")).unwrap();
    let cfg = case_cfg("basic");
    let model = ResNet::load(&cfg, &Weights::from_set(&set, DType::F32)).unwrap();
    model.set_training(true);
    let x = fx.get("x").to_dtype(DType::F32).unwrap();
    model.forward(&x).unwrap(); // update the running stats
    let dir = temp_dir("roundtrip");
    let path = dir.join("resnet.safetensors");
    let sd = model.state_dict();
    let refs: Vec<(&str, &Tensor)> = sd.iter().map(|(n, t)| (n.as_str(), t)).collect();
    save_safetensors(&path, &refs, None).unwrap();
    let saved = TensorSet::open(&path).unwrap();
    assert_eq!(saved.len(), set.len());
    let again = ResNet::load(&cfg, &Weights::from_set(&saved, DType::F32)).unwrap();
    for ((n, a), (_, b)) in model.buffers().iter().zip(again.buffers()) {
        assert_eq!(a.to_vec_f64(), b.to_vec_f64(), "{n}");
    }
    let nbt = again
        .buffers()
        .into_iter()
        .find(|(n, _)| n == "bn1.num_batches_tracked");
    assert_eq!(nbt.unwrap().1.to_vec_i64(), vec![4]);
    model.set_training(false);
    again.set_training(false);
    assert_eq!(
        model.forward(&x).unwrap().to_vec_f32(),
        again.forward(&x).unwrap().to_vec_f32()
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// Writes the fixture's state dict without `drop` (and with `replace` swapped in).
fn edited_copy(tag: &str, drop: &str, replace: Option<(&str, Tensor)>) -> (PathBuf, PathBuf) {
    let set = TensorSet::open(fixture_path("resnet_bneck")).unwrap();
    let dir = temp_dir(tag);
    let path = dir.join("edited.safetensors");
    let mut named: Vec<(String, Tensor)> = Vec::new();
    for n in set.names() {
        if n == drop {
            continue;
        }
        let t = match &replace {
            Some((r, t)) if r == n => t.clone(),
            _ => set.load(n).unwrap(),
        };
        named.push((n.clone(), t));
    }
    let refs: Vec<(&str, &Tensor)> = named.iter().map(|(n, t)| (n.as_str(), t)).collect();
    save_safetensors(&path, &refs, None).unwrap();
    (dir, path)
}

#[test]
fn bad_inputs_and_weights_are_clear_errors() {
    let set = TensorSet::open(fixture_path("resnet_bneck")).unwrap();
    let cfg = case_cfg("bneck");
    let model = ResNet::load(&cfg, &Weights::from_set(&set, DType::F32)).unwrap();
    model.set_training(false);
    let e = model
        .forward(&Tensor::zeros(&[1, 4, 32, 32], DType::F32).unwrap())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("[N, 3, H, W]") && e.contains("[1, 4, 32, 32]"),
        "{e}"
    );
    let e = model
        .forward(&Tensor::zeros(&[3, 32, 32], DType::F32).unwrap())
        .unwrap_err()
        .to_string();
    assert!(e.contains("[3, 32, 32]"), "{e}");
    let e = model
        .forward(&Tensor::zeros(&[1, 3, 32, 32], DType::BF16).unwrap())
        .unwrap_err()
        .to_string();
    assert!(e.contains("dtype"), "{e}");

    // A missing tensor names the key and the file.
    let key = "layer2.0.bn2.running_var";
    let (dir, path) = edited_copy("missing", key, None);
    let edited = TensorSet::open(&path).unwrap();
    let e = ResNet::load(&cfg, &Weights::from_set(&edited, DType::F32))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains(key) && e.contains("edited.safetensors"), "{e}");
    std::fs::remove_dir_all(&dir).ok();

    // A mis-shaped tensor names the key and both shapes.
    let key = "layer1.0.conv2.weight";
    let wrong = Tensor::zeros(&[4, 4, 1, 1], DType::F32).unwrap();
    let (dir, path) = edited_copy("shape", "", Some((key, wrong)));
    let edited = TensorSet::open(&path).unwrap();
    let e = ResNet::load(&cfg, &Weights::from_set(&edited, DType::F32))
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains(key) && e.contains("[4, 4, 1, 1]") && e.contains("[4, 4, 3, 3]"),
        "{e}"
    );
    std::fs::remove_dir_all(&dir).ok();

    // A file without num_batches_tracked (old PyTorch) loads with a count of 0.
    let (dir, path) = edited_copy("nbt", "bn1.num_batches_tracked", None);
    let edited = TensorSet::open(&path).unwrap();
    let m = ResNet::load(&cfg, &Weights::from_set(&edited, DType::F32)).unwrap();
    let nbt = m
        .buffers()
        .into_iter()
        .find(|(n, _)| n == "bn1.num_batches_tracked");
    assert_eq!(nbt.unwrap().1.to_vec_i64(), vec![0]);
    std::fs::remove_dir_all(&dir).ok();

    // A config with fewer blocks than the file: the unused tensors are named.
    let short = ResNetConfig {
        layers: [1, 1, 1, 1],
        ..cfg.clone()
    };
    let e = ResNet::load(&short, &Weights::from_set(&set, DType::F32))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("layer1.1.") && e.contains("resnet_bneck"), "{e}");
}

/// ResNet-50 forward at batch 2, 224x224, f32 on the CPU (timing only):
/// `cargo test --release --test resnet -- --ignored --nocapture`.
/// With MEDSYN_SAVE_RESNET50=<path>, also writes the state dict there (to check
/// with torchvision's `load_state_dict(strict=True)`).
#[test]
#[ignore]
fn resnet50_forward_timing() {
    let cfg = ResNetConfig::resnet50();
    let model = ResNet::load(&cfg, &Weights::random(0, DType::F32)).unwrap();
    model.set_training(false);
    let mut rng = Philox::new(1);
    let x = Tensor::randn(&mut rng, &[2, 3, 224, 224], DType::F32).unwrap();
    let _g = medsyn::autograd::no_grad();
    for run in 0..3 {
        let t = std::time::Instant::now();
        let y = model.forward_pooled(&x).unwrap();
        let dt = t.elapsed().as_secs_f64();
        assert_eq!(y.shape(), [2, 2048]);
        assert!(y.to_vec_f32().iter().all(|v| v.is_finite()));
        // ~4.1 GFLOP multiply-adds per image.
        println!(
            "resnet50 forward, batch 2, 224x224, f32: run {run}: {dt:.3} s ({:.1} GFLOP/s)",
            2.0 * 2.0 * 4.1e9 / dt / 1e9
        );
    }
    if let Ok(path) = std::env::var("MEDSYN_SAVE_RESNET50") {
        let sd = ResNet::load(
            &cfg.with_classes(Some(1000)),
            &Weights::random(0, DType::F32),
        )
        .unwrap()
        .state_dict();
        let refs: Vec<(&str, &Tensor)> = sd.iter().map(|(n, t)| (n.as_str(), t)).collect();
        save_safetensors(&path, &refs, None).unwrap();
        println!("wrote {path}");
    }
}
