//! End to end: a small conv net + MLP learns to tell hollow squares, crosses and
//! disks apart (16×16 images drawn from a Philox stream) with cross-entropy,
//! AdamW (decay / no-decay groups), warm-up + cosine schedule, gradient clipping
//! and dynamic loss scaling — in f32, and in bf16 with fp32 master weights.

use medsyn::nn::{prefixed, Conv2d, Conv2dConfig, Linear, Module};
use medsyn::optim::{
    clip_grad_norm, AdamW, AdamWConfig, LossScaler, LossScalerConfig, ParamGroup, WarmupCosine,
};
use medsyn::tensor::Philox;
use medsyn::{DType, Result, Tensor};

const SIZE: usize = 16;
const CLASSES: usize = 3;

/// One image of class 0 (hollow square), 1 (cross) or 2 (filled disk) at a random
/// position, radius 3..=5 and brightness 0.6..1, over N(0, 0.05²) noise. The class
/// is a deterministic function of the (noise-free) drawing.
fn draw(rng: &mut Philox, class: usize) -> Vec<f32> {
    let cx = 5 + rng.below(6) as i64;
    let cy = 5 + rng.below(6) as i64;
    let r = 3 + rng.below(3) as i64;
    let bright = 0.6 + 0.4 * rng.uniform(1)[0];
    let noise = rng.normal(SIZE * SIZE);
    let mut img = vec![0f32; SIZE * SIZE];
    for y in 0..SIZE as i64 {
        for x in 0..SIZE as i64 {
            let (dx, dy) = (x - cx, y - cy);
            let on = match class {
                0 => dx.abs().max(dy.abs()) == r,
                1 => (dx == 0 && dy.abs() <= r) || (dy == 0 && dx.abs() <= r),
                _ => dx * dx + dy * dy <= r * r,
            };
            let i = (y as usize) * SIZE + x as usize;
            img[i] = (if on { bright } else { 0.0 } + 0.05 * noise[i]) as f32;
        }
    }
    img
}

/// A batch of images [n, 1, 16, 16] in `dtype` and class labels [n].
fn batch(rng: &mut Philox, n: usize, dtype: DType) -> (Tensor, Tensor) {
    let mut pixels = Vec::with_capacity(n * SIZE * SIZE);
    let mut labels = Vec::with_capacity(n);
    for _ in 0..n {
        let class = rng.below(CLASSES as u64) as usize;
        pixels.extend(draw(rng, class));
        labels.push(class as i64);
    }
    (
        Tensor::from_values(pixels, &[n, 1, SIZE, SIZE], dtype).unwrap(),
        Tensor::from_i64(labels, &[n]).unwrap(),
    )
}

/// conv 3×3 → relu → conv 3×3 stride 2 → relu → global average pool → linear →
/// relu → linear.
struct Net {
    conv1: Conv2d,
    conv2: Conv2d,
    fc1: Linear,
    fc2: Linear,
}

impl Net {
    fn new(dtype: DType, seed: u64) -> Result<Net> {
        let mut rng = Philox::new(seed);
        let pad = Conv2dConfig {
            padding: (1, 1),
            ..Default::default()
        };
        Ok(Net {
            conv1: Conv2d::new(1, 8, (3, 3), pad, dtype, &mut rng)?,
            conv2: Conv2d::new(
                8,
                16,
                (3, 3),
                Conv2dConfig {
                    stride: (2, 2),
                    ..pad
                },
                dtype,
                &mut rng,
            )?,
            fc1: Linear::new(16, 32, true, dtype, &mut rng)?,
            fc2: Linear::new(32, CLASSES, true, dtype, &mut rng)?,
        })
    }
}

impl Module for Net {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = self.conv1.forward(x)?.relu()?;
        let h = self.conv2.forward(&h)?.relu()?;
        let h = h.mean_dims(&[2, 3], false)?;
        self.fc2.forward(&self.fc1.forward(&h)?.relu()?)
    }

    fn parameters(&self) -> Vec<(String, Tensor)> {
        let mut p = prefixed("conv1", self.conv1.parameters());
        p.extend(prefixed("conv2", self.conv2.parameters()));
        p.extend(prefixed("fc1", self.fc1.parameters()));
        p.extend(prefixed("fc2", self.fc2.parameters()));
        p
    }
}

const STEPS: u64 = 600;
const BATCH: usize = 48;

/// Train for STEPS steps; return the per-step losses and held-out accuracy.
fn train(dtype: DType) -> (Vec<f64>, f64, u64) {
    let net = Net::new(dtype, 7).unwrap();
    assert!(net.parameters().iter().all(|(_, p)| p.dtype() == dtype));
    // Matrices and kernels decay; biases do not.
    let (decay, no_decay): (Vec<_>, Vec<_>) = net
        .parameters()
        .into_iter()
        .map(|(_, p)| p)
        .partition(|p| p.rank() >= 2);
    let mut opt = AdamW::with_groups(
        vec![
            ParamGroup {
                params: decay,
                weight_decay: 0.01,
            },
            ParamGroup {
                params: no_decay,
                weight_decay: 0.0,
            },
        ],
        AdamWConfig {
            lr: 0.0,
            ..Default::default()
        },
    )
    .unwrap();
    let schedule = WarmupCosine {
        base_lr: 1e-2,
        warmup_steps: 20,
        total_steps: STEPS,
        min_lr: 5e-4,
    };
    // Loss scaling is what half-precision training uses; f32 runs with it disabled.
    let mut scaler = LossScaler::new(LossScalerConfig {
        enabled: dtype.is_half(),
        ..Default::default()
    });
    let params = opt.params();
    let mut rng = Philox::new(1234);
    let mut losses = Vec::new();
    let mut skipped = 0;
    for step in 0..STEPS {
        opt.set_lr(schedule.lr_at(step));
        let (x, y) = batch(&mut rng, BATCH, dtype);
        let loss = net
            .forward(&x)
            .unwrap()
            .cross_entropy(&y, None, 0.0)
            .unwrap();
        losses.push(loss.to_scalar().unwrap());
        opt.zero_grad();
        scaler.scale(&loss).unwrap().backward().unwrap();
        if !scaler.unscale_and_check(&params).unwrap() {
            clip_grad_norm(&params, 1.0).unwrap();
        }
        if !opt.step_with_scaler(&mut scaler).unwrap() {
            skipped += 1;
        }
    }
    let (x, y) = batch(&mut Philox::new(99), 300, dtype);
    let pred = {
        let _g = medsyn::autograd::no_grad();
        net.forward(&x).unwrap().argmax(-1).unwrap().to_vec_i64()
    };
    let correct = pred
        .iter()
        .zip(y.to_vec_i64())
        .filter(|(p, t)| **p == *t)
        .count();
    (losses, correct as f64 / 300.0, skipped)
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

/// Chance level is ln 3 ≈ 1.10 (the first steps must sit there). The bar for the mean
/// loss of the last 20 steps is 0.05: a net that cannot tell two of the classes apart
/// stays at (2/3)·ln 2 ≈ 0.46 or above, so passing means all three shapes are separated
/// confidently. Measured at 600 steps (batch 48): 0.0057 in f32 and 0.0078 in bf16,
/// a margin of ~6×; held-out accuracy 100% against the 98% asked. About 5 s (f32) and
/// 11 s (bf16) on 2 cores in the test profile.
fn check(dtype: DType) {
    let start = std::time::Instant::now();
    let (losses, accuracy, skipped) = train(dtype);
    let curve: Vec<String> = losses
        .chunks(50)
        .map(|c| format!("{:.3}", mean(c)))
        .collect();
    eprintln!("{dtype}: mean loss per 50 steps: {}", curve.join(" "));
    let first = mean(&losses[..5]);
    let last = mean(&losses[losses.len() - 20..]);
    eprintln!("{dtype}: loss {first:.3} -> {last:.4}, held-out accuracy {accuracy:.3}, skipped {skipped}, {:.1} s", start.elapsed().as_secs_f64());
    assert!(
        losses.iter().all(|l| l.is_finite()),
        "{dtype}: non-finite loss"
    );
    assert!(
        (first - 3f64.ln()).abs() < 0.2,
        "{dtype}: starts near chance, got {first}"
    );
    assert!(
        last < 0.05,
        "{dtype}: loss should fall below 0.05, got {last}"
    );
    assert!(accuracy >= 0.98, "{dtype}: held-out accuracy {accuracy}");
    assert!(
        skipped <= 2,
        "{dtype}: {skipped} steps skipped by the loss scaler"
    );
}

#[test]
fn conv_net_learns_shapes_f32() {
    check(DType::F32);
}

#[test]
fn conv_net_learns_shapes_bf16_with_fp32_master() {
    check(DType::BF16);
}
