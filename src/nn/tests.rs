//! Layer conventions: state-dict names and shapes, PyTorch's default init ranges,
//! forward equal to the underlying op, BatchNorm train/eval, freezing.

use super::*;
use crate::tensor::{DType, Philox, Tensor};

fn names(named: &[(String, Tensor)]) -> Vec<&str> {
    named.iter().map(|(n, _)| n.as_str()).collect()
}

fn max_abs(t: &Tensor) -> f64 {
    t.to_vec_f64().iter().fold(0.0, |m, v| m.max(v.abs()))
}

#[test]
fn linear_and_conv_use_pytorch_names_shapes_and_init() {
    let mut rng = Philox::new(1);
    let lin = Linear::new(64, 32, true, DType::F32, &mut rng).unwrap();
    assert_eq!(names(&lin.parameters()), ["weight", "bias"]);
    assert_eq!(lin.weight.shape(), &[32, 64]);
    // kaiming_uniform(a=√5) on fan_in 64: U(-1/8, 1/8); std = bound/√3.
    let w = lin.weight.to_vec_f64();
    assert!(max_abs(&lin.weight) <= 0.125 && max_abs(&lin.weight) > 0.12);
    let std = (w.iter().map(|v| v * v).sum::<f64>() / w.len() as f64).sqrt();
    assert!((std - 0.125 / 3f64.sqrt()).abs() < 0.005, "std {std}");
    assert!(max_abs(lin.bias.as_ref().unwrap()) <= 0.125);
    assert!(lin.weight.requires_grad());
    let x = Tensor::randn(&mut rng, &[3, 64], DType::F32).unwrap();
    let y = lin.forward(&x).unwrap();
    assert_eq!(
        y.to_vec_f32(),
        x.linear(&lin.weight, lin.bias.as_ref())
            .unwrap()
            .to_vec_f32()
    );

    let cfg = Conv2dConfig {
        stride: (2, 2),
        padding: (1, 1),
        groups: 2,
        bias: false,
        ..Default::default()
    };
    let conv = Conv2d::new(4, 6, (3, 3), cfg, DType::F32, &mut rng).unwrap();
    assert_eq!(names(&conv.parameters()), ["weight"]);
    assert_eq!(conv.weight.shape(), &[6, 2, 3, 3]);
    assert!(max_abs(&conv.weight) <= 1.0 / 18f64.sqrt());
    let x = Tensor::randn(&mut rng, &[2, 4, 9, 9], DType::F32).unwrap();
    let y = conv.forward(&x).unwrap();
    assert_eq!(y.shape(), &[2, 6, 5, 5]);
    assert_eq!(
        y.to_vec_f32(),
        x.conv2d(&conv.weight, None, (2, 2), (1, 1), (1, 1), 2)
            .unwrap()
            .to_vec_f32()
    );
    assert!(
        Conv2d::new(3, 6, (3, 3), cfg, DType::F32, &mut rng).is_err(),
        "3 channels into 2 groups"
    );
    assert!(Linear::from_weights(
        lin.weight.clone(),
        Some(Tensor::zeros(&[3], DType::F32).unwrap())
    )
    .is_err());
    assert!(Conv2d::from_weights(lin.weight.clone(), None, Conv2dConfig::default()).is_err());
}

#[test]
fn norms_and_embedding() {
    let mut rng = Philox::new(2);
    let ln = LayerNorm::new(&[8], 1e-5, DType::F32).unwrap();
    assert_eq!(names(&ln.parameters()), ["weight", "bias"]);
    let x = Tensor::randn(&mut rng, &[4, 8], DType::F32).unwrap();
    let y = ln.forward(&x).unwrap().to_vec_f64();
    let mean: f64 = y[..8].iter().sum::<f64>() / 8.0;
    assert!(mean.abs() < 1e-6);
    assert!(ln
        .forward(&Tensor::zeros(&[4, 7], DType::F32).unwrap())
        .is_err());

    let gn = GroupNorm::new(2, 4, 1e-5, DType::F32).unwrap();
    assert_eq!(names(&gn.parameters()), ["weight", "bias"]);
    let x = Tensor::randn(&mut rng, &[2, 4, 3, 3], DType::F32).unwrap();
    let silu = gn.forward_silu(&x).unwrap().to_vec_f64();
    let plain = gn.forward(&x).unwrap().silu().unwrap().to_vec_f64();
    assert!(silu.iter().zip(&plain).all(|(a, b)| (a - b).abs() < 1e-5));
    assert!(GroupNorm::new(3, 4, 1e-5, DType::F32).is_err());

    let emb = Embedding::new(10, 4, DType::F32, &mut rng).unwrap();
    assert_eq!(names(&emb.parameters()), ["weight"]);
    let ids = Tensor::from_i64(vec![1, 9, 1], &[3]).unwrap();
    let e = emb.forward(&ids).unwrap();
    assert_eq!(e.shape(), &[3, 4]);
    let v = e.to_vec_f32();
    assert_eq!(v[..4], v[8..]);
    let big = Embedding::new(1000, 50, DType::F32, &mut rng)
        .unwrap()
        .weight
        .to_vec_f64();
    let var = big.iter().map(|x| x * x).sum::<f64>() / big.len() as f64;
    assert!((var - 1.0).abs() < 0.03, "N(0,1) init, var {var}");
    assert!(emb
        .forward(&Tensor::from_i64(vec![10], &[1]).unwrap())
        .is_err());
}

#[test]
fn batch_norm_tracks_statistics_in_training_and_uses_them_in_eval() {
    let bn = BatchNorm2d::new(2, 1e-5, 0.1, DType::F32).unwrap();
    assert_eq!(
        names(&bn.state_dict()),
        [
            "weight",
            "bias",
            "running_mean",
            "running_var",
            "num_batches_tracked"
        ]
    );
    assert_eq!(names(&bn.parameters()), ["weight", "bias"]);
    // Channel 0 holds 1..=4 (mean 2.5, unbiased var 5/3); channel 1 holds 10.
    let x = Tensor::from_vec(
        vec![1.0f32, 2.0, 3.0, 4.0, 10.0, 10.0, 10.0, 10.0],
        &[1, 2, 2, 2],
    )
    .unwrap();
    assert!(bn.is_training());
    let y = bn.forward(&x).unwrap().to_vec_f64();
    assert!(
        y[4..].iter().all(|v| v.abs() < 1e-6),
        "constant channel normalises to 0"
    );
    let rm = bn.running_mean.to_vec_f64();
    let rv = bn.running_var.to_vec_f64();
    assert!(
        (rm[0] - 0.25).abs() < 1e-6 && (rm[1] - 1.0).abs() < 1e-6,
        "{rm:?}"
    );
    assert!(
        (rv[0] - (0.9 + 0.1 * 5.0 / 3.0)).abs() < 1e-6 && (rv[1] - 0.9).abs() < 1e-6,
        "{rv:?}"
    );
    assert_eq!(bn.num_batches_tracked.to_vec_i64(), vec![1]);
    bn.set_training(false);
    let y = bn.forward(&x).unwrap().to_vec_f64();
    assert!((y[0] - (1.0 - 0.25) / (rv[0] + 1e-5).sqrt()).abs() < 1e-5);
    assert_eq!(
        bn.num_batches_tracked.to_vec_i64(),
        vec![1],
        "eval does not count batches"
    );
    assert_eq!(
        bn.running_mean.to_vec_f64(),
        rm,
        "eval leaves running stats"
    );
}

#[test]
fn frozen_modules_get_no_gradients() {
    let mut rng = Philox::new(3);
    let a = Linear::new(4, 3, true, DType::F32, &mut rng).unwrap();
    let b = Linear::new(3, 2, true, DType::F32, &mut rng).unwrap();
    a.freeze().unwrap();
    assert!(a.trainable_parameters().is_empty());
    assert_eq!(b.trainable_parameters().len(), 2);
    let x = Tensor::randn(&mut rng, &[5, 4], DType::F32).unwrap();
    b.forward(&a.forward(&x).unwrap())
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    assert!(a.weight.grad().is_none() && a.bias.as_ref().unwrap().grad().is_none());
    assert!(b.weight.grad().is_some());
    a.unfreeze().unwrap();
    assert_eq!(a.trainable_parameters().len(), 2);
    let named = prefixed("fc1", a.parameters());
    assert_eq!(names(&named), ["fc1.weight", "fc1.bias"]);
}
