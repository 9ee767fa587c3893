//! ConVIRT's heads and loss against an independent PyTorch float64 reference
//! (scripts/fixtures/convirt.py): the loss and the gradient of every head parameter
//! and of both feature inputs, in f32 and bf16; float64 finite differences; bad input.

mod common;
use common::*;
use medsyn::io::TensorSet;
use medsyn::models::Weights;
use medsyn::nn::Linear;
use medsyn::pipelines::pretrain::{
    Convirt, ConvirtConfig, ImageFeatures, PretrainMethod, ProjectionHead, TextFeatures,
};
use medsyn::tensor::Philox;
use medsyn::{DType, Tensor};

const FIXTURE: &str = "tests/fixtures/convirt.safetensors";

fn config() -> ConvirtConfig {
    ConvirtConfig {
        proj_dim: 8,
        hidden_dim: None,
        temperature: 0.07,
    }
}

fn trainable(c: &Convirt) {
    for (_, p) in c.parameters() {
        p.set_requires_grad(true).unwrap();
    }
}

fn features(img: &Tensor, txt: &Tensor) -> (ImageFeatures, TextFeatures) {
    (
        ImageFeatures {
            global: img.clone(),
            local: None,
        },
        TextFeatures {
            global: txt.clone(),
            tokens: None,
            mask: None,
        },
    )
}

#[test]
fn convirt_loss_and_gradients_match_pytorch() {
    let fx = Fixture::load("convirt");
    let set = TensorSet::open(FIXTURE).unwrap();
    for dtype in [DType::F32, DType::BF16] {
        let c = Convirt::load(config(), 24, 20, &Weights::from_set(&set, dtype)).unwrap();
        trainable(&c);
        let img = fx.param("image_features", dtype);
        let txt = fx.param("text_features", dtype);
        let (fi, ft) = features(&img, &txt);
        let loss = c.loss(&fi, &ft).unwrap();
        let what = format!("convirt {dtype}");
        assert_close(&loss.total, &fx.get("loss"), tol(dtype), &what);
        assert_eq!(loss.parts.len(), 1);
        loss.total.backward().unwrap();
        // bf16 gradients pass through two bf16 GEMMs and a normalisation: 4x its tolerance.
        let gtol = if dtype == DType::BF16 {
            4.0 * tol(dtype)
        } else {
            tol(dtype)
        };
        assert_close(
            &img.grad().unwrap(),
            &fx.get("grad.image_features"),
            gtol,
            &format!("{what} d image"),
        );
        assert_close(
            &txt.grad().unwrap(),
            &fx.get("grad.text_features"),
            gtol,
            &format!("{what} d text"),
        );
        let names: Vec<String> = c.parameters().into_iter().map(|(n, _)| n).collect();
        assert_eq!(
            names,
            [
                "image_projection.0.weight",
                "image_projection.0.bias",
                "image_projection.2.weight",
                "image_projection.2.bias",
                "text_projection.0.weight",
                "text_projection.0.bias",
                "text_projection.2.weight",
                "text_projection.2.bias",
            ]
        );
        for (name, p) in c.parameters() {
            let g = p
                .grad()
                .unwrap_or_else(|| panic!("{what}: no gradient for {name}"));
            assert_close(
                &g,
                &fx.get(&format!("grad.{name}")),
                gtol,
                &format!("{what} d {name}"),
            );
        }
    }
}

/// A head from explicit tensors (0.weight, 0.bias, 2.weight, 2.bias).
fn head(t: &[Tensor]) -> ProjectionHead {
    ProjectionHead {
        hidden: Linear::from_weights(t[0].clone(), Some(t[1].clone())).unwrap(),
        out: Linear::from_weights(t[2].clone(), Some(t[3].clone())).unwrap(),
    }
}

#[test]
fn convirt_gradients_match_finite_differences() {
    let mut rng = Philox::new(5);
    let config = ConvirtConfig {
        proj_dim: 3,
        hidden_dim: Some(5),
        temperature: 0.5,
    };
    let shapes: [&[usize]; 10] = [
        &[4, 4],
        &[4, 6],
        &[5, 4],
        &[5],
        &[3, 5],
        &[3],
        &[5, 6],
        &[5],
        &[3, 5],
        &[3],
    ];
    let inputs: Vec<Tensor> = shapes.iter().map(|s| rand_leaf(&mut rng, s)).collect();
    assert_gradcheck(
        "convirt",
        |xs| {
            let c = Convirt {
                config,
                image_projection: head(&xs[2..6]),
                text_projection: head(&xs[6..10]),
            };
            let (fi, ft) = features(&xs[0], &xs[1]);
            Ok(c.loss(&fi, &ft)?.total)
        },
        &inputs,
    );
}

#[test]
fn convirt_rejects_bad_batches_and_settings() {
    let c = Convirt::load(config(), 24, 20, &Weights::random(1, DType::F32)).unwrap();
    let mut rng = Philox::new(2);
    let img = Tensor::randn(&mut rng, &[4, 24], DType::F32).unwrap();
    let txt = Tensor::randn(&mut rng, &[3, 20], DType::F32).unwrap();
    let (fi, ft) = features(&img, &txt);
    let err = c
        .loss(&fi, &ft)
        .err()
        .expect("mismatched batch")
        .to_string();
    assert!(err.contains("4 images but 3 reports"), "{err}");
    let txt = Tensor::randn(&mut rng, &[4, 21], DType::F32).unwrap();
    let (fi, ft) = features(&img, &txt);
    let err = c.loss(&fi, &ft).err().expect("wrong width").to_string();
    assert!(err.contains("expected features [N, 20]"), "{err}");
    let one = Tensor::randn(&mut rng, &[1, 24], DType::F32).unwrap();
    let one_t = Tensor::randn(&mut rng, &[1, 20], DType::F32).unwrap();
    let (fi, ft) = features(&one, &one_t);
    assert!(c.loss(&fi, &ft).is_err(), "a batch of one has no negatives");
    let bad = ConvirtConfig {
        temperature: 0.0,
        ..config()
    };
    assert!(Convirt::load(bad, 24, 20, &Weights::random(1, DType::F32)).is_err());
}
