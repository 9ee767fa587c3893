//! The VAE against diffusers: a tiny random AutoencoderKL in diffusers layout
//! (scripts/fixtures/unet_vae.py) — encode (mean, clamped logvar, sample), decode,
//! gradients, bf16, parameter names, decoder-only loading and bad input.

mod common;
use common::*;
use medsyn::autograd::no_grad;
use medsyn::io::TensorSet;
use medsyn::models::vae::{AutoencoderKL, VaeConfig};
use medsyn::models::{Config, Weights};
use medsyn::{DType, Tensor};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/vae_kl")
}

fn raw_config() -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir().join("config.json")).unwrap()).unwrap()
}

fn config() -> VaeConfig {
    VaeConfig::from_config(&Config::load(dir().join("config.json")).unwrap()).unwrap()
}

fn load(dtype: DType) -> AutoencoderKL {
    let set = TensorSet::open(dir()).unwrap();
    AutoencoderKL::load(&config(), &Weights::from_set(&set, dtype)).unwrap()
}

#[test]
fn encode_and_decode_match_diffusers_f32() {
    let fx = Fixture::load("vae_kl_io");
    let vae = load(DType::F32);
    let _g = no_grad();
    let f32 = |k: &str| fx.get(k).to_dtype(DType::F32).unwrap();
    let dist = vae.encode(&f32("x")).unwrap();
    assert_close(&dist.mean, &fx.get("mean"), 1e-5, "mean (f32)");
    assert_close(&dist.logvar, &fx.get("logvar"), 1e-5, "logvar (f32)");
    assert_close(&dist.mode(), &fx.get("mean"), 1e-5, "mode (f32)");
    let s = dist.sample(&f32("noise")).unwrap();
    assert_close(&s, &fx.get("sampled"), 1e-5, "sample (f32)");
    let y = vae.decode(&f32("z")).unwrap();
    assert_eq!(y.shape(), &[2, 3, 16, 16]);
    assert_close(&y, &fx.get("decoded"), 1e-5, "decoded (f32)");
    assert_eq!(vae.scaling_factor(), 0.18215);
    assert_eq!(vae.shift_factor(), None);
    assert_eq!(vae.config().scale_factor(), 2);
}

#[test]
fn encode_and_decode_match_diffusers_bf16() {
    let fx = Fixture::load("vae_kl_io");
    let vae = load(DType::BF16);
    let _g = no_grad();
    let bf = |k: &str| fx.get(k).to_dtype(DType::BF16).unwrap();
    let dist = vae.encode(&bf("x")).unwrap();
    assert_eq!(dist.mean.dtype(), DType::BF16);
    assert_scaled(&dist.mean, &fx.get("mean"), 3e-2, 0.0, "mean (bf16)");
    assert_scaled(&dist.logvar, &fx.get("logvar"), 3e-2, 0.0, "logvar (bf16)");
    let y = vae.decode(&bf("z")).unwrap();
    assert_scaled(&y, &fx.get("decoded"), 3e-2, 0.0, "decoded (bf16)");
}

#[test]
fn gradients_match_pytorch() {
    let fx = Fixture::load("vae_kl_io");
    let vae = load(DType::F32);
    let pname = "decoder.mid_block.attentions.0.to_q.weight";
    let (_, p) = vae
        .parameters()
        .into_iter()
        .find(|(n, _)| n == pname)
        .unwrap();
    p.set_requires_grad(true).unwrap();
    let z = fx.param("z", DType::F32);
    let y = vae.decode(&z).unwrap();
    y.mul(&fx.get("w").to_dtype(DType::F32).unwrap())
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    assert_close(&z.grad().unwrap(), &fx.get("grad.z"), 3e-5, "grad.z");
    assert_close(
        &p.grad().unwrap(),
        &fx.get(&format!("grad.{pname}")),
        3e-5,
        pname,
    );
    // Through the encoder: mean and (clamped) logvar together.
    let x = fx.param("x", DType::F32);
    let d = vae.encode(&x).unwrap();
    let both = Tensor::cat(&[&d.mean, &d.logvar], 1).unwrap();
    both.mul(&fx.get("w_enc").to_dtype(DType::F32).unwrap())
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    assert_close(&x.grad().unwrap(), &fx.get("grad.x"), 3e-5, "grad.x");
}

#[test]
fn parameter_names_equal_the_checkpoint_keys() {
    let vae = load(DType::F32);
    let set = TensorSet::open(dir()).unwrap();
    let ours: Vec<String> = vae.parameters().into_iter().map(|(n, _)| n).collect();
    let unique: BTreeSet<&String> = ours.iter().collect();
    assert_eq!(unique.len(), ours.len(), "duplicate names");
    let file: BTreeSet<&String> = set.names().iter().collect();
    assert_eq!(unique, file);
    let fresh = AutoencoderKL::load(&config(), &Weights::random(2, DType::F32)).unwrap();
    for (n, p) in fresh.parameters() {
        assert_eq!(p.shape(), set.info(&n).unwrap().shape.as_slice(), "{n}");
    }
}

#[test]
fn decoder_only_load_decodes_and_refuses_to_encode() {
    let fx = Fixture::load("vae_kl_io");
    let set = TensorSet::open(dir()).unwrap();
    let vae =
        AutoencoderKL::load_decoder_only(&config(), &Weights::from_set(&set, DType::F32)).unwrap();
    assert!(vae
        .parameters()
        .iter()
        .all(|(n, _)| !n.starts_with("encoder.")));
    let _g = no_grad();
    let y = vae
        .decode(&fx.get("z").to_dtype(DType::F32).unwrap())
        .unwrap();
    assert_close(&y, &fx.get("decoded"), 1e-5, "decoded (decoder only)");
    let e = vae
        .encode(&fx.get("x").to_dtype(DType::F32).unwrap())
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("decoder-only"), "{e}");
}

#[test]
fn clamped_logvar_and_kl() {
    let mean = Tensor::from_vec(vec![1.0f32, 0.0], &[1, 2, 1, 1]).unwrap();
    let d = medsyn::models::vae::DiagonalGaussian {
        mean,
        logvar: Tensor::from_vec(vec![0.0f32, 0.5], &[1, 2, 1, 1]).unwrap(),
    };
    // ½·[(1 + 1 − 1 − 0) + (0 + e^0.5 − 1 − 0.5)]
    let want = 0.5 * (1.0 + 0.5f64.exp() - 1.5);
    assert!((d.kl().unwrap().to_vec_f64()[0] - want).abs() < 1e-6);
    let e = d
        .sample(&Tensor::zeros(&[1, 2, 2, 1], DType::F32).unwrap())
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("noise shape"), "{e}");
}

fn config_error(edit: impl Fn(&mut serde_json::Map<String, Value>)) -> String {
    let mut v = raw_config();
    edit(v.as_object_mut().unwrap());
    let cfg = Config::from_value("vae/config.json", v).unwrap();
    match VaeConfig::from_config(&cfg) {
        Ok(_) => panic!("config accepted"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn bad_configs_and_inputs_are_reported() {
    let e = config_error(|c| {
        c.insert(
            "down_block_types".into(),
            json!(["DownEncoderBlock2D", "AttnDownEncoderBlock2D"]),
        );
    });
    assert!(
        e.contains("vae/config.json")
            && e.contains("AttnDownEncoderBlock2D")
            && e.contains("supported: DownEncoderBlock2D"),
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
        c.insert("latents_mean".into(), json!([0.1, 0.2, 0.3, 0.4]));
    });
    assert!(e.contains("latents_mean"), "{e}");
    let e = config_error(|c| {
        c.insert("norm_num_groups".into(), json!(3));
    });
    assert!(e.contains("norm_num_groups"), "{e}");

    let vae = load(DType::F32);
    let _g = no_grad();
    let e = vae
        .encode(&Tensor::zeros(&[1, 4, 16, 16], DType::F32).unwrap())
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("[B, 3, H, W]"), "{e}");
    let e = vae
        .decode(&Tensor::zeros(&[1, 3, 8, 8], DType::F32).unwrap())
        .unwrap_err()
        .to_string();
    assert!(e.contains("[B, 4, H, W]"), "{e}");
    let e = vae
        .decode(&Tensor::zeros(&[1, 4, 8, 8], DType::BF16).unwrap())
        .unwrap_err()
        .to_string();
    assert!(e.contains("bf16"), "{e}");
    // A weight missing from the file names the tensor.
    let mut bad = raw_config();
    bad["layers_per_block"] = json!(2);
    let cfg = VaeConfig::from_config(&Config::from_value("vae/config.json", bad).unwrap()).unwrap();
    let set = TensorSet::open(dir()).unwrap();
    let e = AutoencoderKL::load(&cfg, &Weights::from_set(&set, DType::F32))
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("encoder.down_blocks.0.resnets.1.norm1.weight"),
        "{e}"
    );
}

#[test]
fn deprecated_attention_names_load() {
    // Older diffusers VAEs name the mid-block attention query/key/value/proj_attn.
    let set = TensorSet::open(dir()).unwrap();
    let renamed: Vec<(String, Tensor)> = set
        .names()
        .iter()
        .map(|n| {
            let new = n
                .replace("attentions.0.to_q.", "attentions.0.query.")
                .replace("attentions.0.to_k.", "attentions.0.key.")
                .replace("attentions.0.to_v.", "attentions.0.value.")
                .replace("attentions.0.to_out.0.", "attentions.0.proj_attn.");
            (new, set.load(n).unwrap())
        })
        .collect();
    assert!(renamed.iter().any(|(n, _)| n.contains("proj_attn")));
    let path = std::env::temp_dir().join(format!(
        "medsyn-vae-legacy-{}.safetensors",
        std::process::id()
    ));
    let refs: Vec<(&str, &Tensor)> = renamed.iter().map(|(n, t)| (n.as_str(), t)).collect();
    medsyn::io::save_safetensors(&path, &refs, None).unwrap();
    let legacy = TensorSet::open(&path).unwrap();
    let vae = AutoencoderKL::load(&config(), &Weights::from_set(&legacy, DType::F32)).unwrap();
    let fx = Fixture::load("vae_kl_io");
    let _g = no_grad();
    let y = vae
        .decode(&fx.get("z").to_dtype(DType::F32).unwrap())
        .unwrap();
    assert_close(&y, &fx.get("decoded"), 1e-5, "decoded (legacy names)");
    // Saved under the current names, as diffusers does.
    assert!(vae
        .parameters()
        .iter()
        .any(|(n, _)| n.ends_with("attentions.0.to_out.0.weight")));
    std::fs::remove_file(path).unwrap();
}
