//! The optimizer stack: AdamW against torch.optim.AdamW (two groups, 5 steps, f64
//! and f32), bf16 parameters with fp32 master weights, exact resume from the state
//! dict, dynamic loss scaling, gradient clipping against torch, and the schedule.

mod common;
use common::*;
use medsyn::optim::{
    clip_grad_norm, AdamW, AdamWConfig, LossScaler, LossScalerConfig, ParamGroup, WarmupCosine,
};
use medsyn::{DType, Tensor};

const KEYS: [&str; 3] = ["w", "b", "v"];

fn config() -> AdamWConfig {
    AdamWConfig {
        lr: 0.05,
        betas: (0.9, 0.99),
        eps: 1e-8,
        weight_decay: 0.1,
    }
}

/// The fixture's grouping: w and v decay, b does not.
fn optimizer(p: &[Tensor]) -> AdamW {
    AdamW::with_groups(
        vec![
            ParamGroup {
                params: vec![p[0].clone(), p[2].clone()],
                weight_decay: 0.1,
            },
            ParamGroup {
                params: vec![p[1].clone()],
                weight_decay: 0.0,
            },
        ],
        config(),
    )
    .unwrap()
}

/// Give each parameter the gradient `g` by backpropagating sum(p * g).
fn set_grads(params: &[Tensor], grads: &[Tensor]) {
    let mut loss: Option<Tensor> = None;
    for (p, g) in params.iter().zip(grads) {
        p.clear_grad();
        let term = p.mul(g).unwrap().sum_all().unwrap();
        loss = Some(match loss {
            Some(l) => l.add(&term).unwrap(),
            None => term,
        });
    }
    loss.unwrap().backward().unwrap();
}

fn fixture_grads(fx: &Fixture, step: usize, dtype: DType) -> Vec<Tensor> {
    KEYS.iter()
        .map(|k| {
            fx.get(&format!("adamw.grad{step}.{k}"))
                .to_dtype(dtype)
                .unwrap()
        })
        .collect()
}

fn bits(t: &Tensor) -> Vec<u32> {
    t.to_vec_f32().iter().map(|v| v.to_bits()).collect()
}

#[test]
fn adamw_matches_torch_over_five_steps() {
    let fx = Fixture::load("losses_optim");
    for (dtype, tag, rtol) in [(DType::F64, "f64", 1e-12), (DType::F32, "f32", 1e-6)] {
        let params: Vec<Tensor> = KEYS
            .iter()
            .map(|k| fx.param(&format!("adamw.init.{k}"), dtype))
            .collect();
        let mut opt = optimizer(&params);
        for step in 0..5 {
            set_grads(&params, &fixture_grads(&fx, step, dtype));
            opt.step().unwrap();
            for (k, p) in KEYS.iter().zip(&params) {
                assert_eq!(p.dtype(), dtype);
                let want = fx.get(&format!("adamw.{tag}.step{step}.{k}"));
                assert_close(
                    p,
                    &want,
                    rtol,
                    &format!("AdamW {tag} step {step} param {k}"),
                );
            }
        }
        assert_eq!(opt.steps(), 5);
    }
}

/// bf16 parameters keep an fp32 master that follows the f32 trajectory, and the
/// parameter is always the master rounded to bf16.
#[test]
fn bf16_params_follow_fp32_master() {
    let fx = Fixture::load("losses_optim");
    let init: Vec<Tensor> = KEYS
        .iter()
        .map(|k| {
            fx.get(&format!("adamw.init.{k}"))
                .to_dtype(DType::BF16)
                .unwrap()
        })
        .collect();
    let reference: Vec<Tensor> = init
        .iter()
        .map(|t| t.to_dtype(DType::F32).unwrap().into_param().unwrap())
        .collect();
    let half: Vec<Tensor> = init
        .iter()
        .map(|t| t.detach().into_param().unwrap())
        .collect();
    let (mut opt_ref, mut opt_half) = (optimizer(&reference), optimizer(&half));
    let mut master_differs = false;
    for step in 0..5 {
        // bf16-representable gradients, so both runs see identical inputs.
        let grads: Vec<Tensor> = fixture_grads(&fx, step, DType::BF16)
            .iter()
            .map(|g| g.to_dtype(DType::F32).unwrap())
            .collect();
        set_grads(&reference, &grads);
        set_grads(&half, &grads);
        assert_eq!(
            half[0].grad().unwrap().dtype(),
            DType::F32,
            "half params get f32 gradients"
        );
        opt_ref.step().unwrap();
        opt_half.step().unwrap();
        let state = opt_half.state_dict().unwrap();
        // Parameter order in the optimizer: w, v (group 0), b (group 1).
        for (i, key_index) in [0usize, 2, 1].into_iter().enumerate() {
            let master = &state
                .iter()
                .find(|(k, _)| k == &format!("state.{i}.master"))
                .expect("master state")
                .1;
            assert_eq!(master.dtype(), DType::F32);
            let p = &half[key_index];
            assert_eq!(p.dtype(), DType::BF16);
            assert_close(
                master,
                &reference[key_index],
                1e-5,
                &format!("master of {} step {step}", KEYS[key_index]),
            );
            assert_eq!(
                bits(p),
                bits(&master.to_dtype(DType::BF16).unwrap()),
                "param == bf16(master)"
            );
            master_differs |= bits(master) != bits(p);
            let full = &opt_half.full_precision_params().unwrap()[i];
            assert_eq!(full.dtype(), DType::F32);
            assert_eq!(
                bits(full),
                bits(master),
                "full_precision_params is the master"
            );
        }
    }
    assert!(
        master_differs,
        "the master should hold precision that bf16 drops"
    );
}

fn run(params: &[Tensor], opt: &mut AdamW, fx: &Fixture, steps: std::ops::Range<usize>) {
    for step in steps {
        let grads: Vec<Tensor> = fixture_grads(fx, step, DType::F32);
        set_grads(params, &grads);
        opt.step().unwrap();
    }
}

#[test]
fn state_dict_resume_is_bitwise_exact() {
    let fx = Fixture::load("losses_optim");
    for dtype in [DType::F32, DType::BF16] {
        let fresh = || -> Vec<Tensor> {
            KEYS.iter()
                .map(|k| fx.param(&format!("adamw.init.{k}"), dtype))
                .collect()
        };
        let straight = fresh();
        let mut opt = optimizer(&straight);
        run(&straight, &mut opt, &fx, 0..5);

        let first = fresh();
        let mut opt = optimizer(&first);
        run(&first, &mut opt, &fx, 0..2);
        let saved_state = opt.state_dict().unwrap();
        let saved_params: Vec<Tensor> = first
            .iter()
            .map(|p| p.detach().contiguous().unwrap())
            .collect();
        drop(opt);

        let resumed: Vec<Tensor> = saved_params
            .iter()
            .map(|p| {
                p.to_dtype(DType::F64)
                    .unwrap()
                    .to_dtype(dtype)
                    .unwrap()
                    .into_param()
                    .unwrap()
            })
            .collect();
        let mut opt = optimizer(&resumed);
        opt.load_state_dict(&saved_state).unwrap();
        assert_eq!(opt.steps(), 2);
        run(&resumed, &mut opt, &fx, 2..5);
        for (k, (a, b)) in KEYS.iter().zip(straight.iter().zip(&resumed)) {
            assert_eq!(bits(a), bits(b), "{dtype} param {k} after resume");
        }
        // Without the state the trajectory differs (the test can tell).
        let cold: Vec<Tensor> = saved_params
            .iter()
            .map(|p| p.to_dtype(dtype).unwrap().into_param().unwrap())
            .collect();
        let mut opt = optimizer(&cold);
        run(&cold, &mut opt, &fx, 2..5);
        assert_ne!(bits(&straight[0]), bits(&cold[0]));
    }
}

#[test]
fn frozen_and_gradless_params_are_skipped() {
    let a = Tensor::ones(&[3], DType::F32)
        .unwrap()
        .into_param()
        .unwrap();
    let frozen = Tensor::ones(&[3], DType::F32)
        .unwrap()
        .into_param()
        .unwrap();
    let gradless = Tensor::ones(&[3], DType::F32)
        .unwrap()
        .into_param()
        .unwrap();
    let g = Tensor::from_vec(vec![1.0f32, -2.0, 3.0], &[3]).unwrap();
    set_grads(&[a.clone(), frozen.clone()], &[g.clone(), g.clone()]);
    frozen.set_requires_grad(false).unwrap();
    let mut opt = AdamW::new(vec![a.clone(), frozen.clone(), gradless.clone()], config()).unwrap();
    opt.step().unwrap();
    assert_ne!(a.to_vec_f32(), vec![1.0; 3]);
    assert_eq!(frozen.to_vec_f32(), vec![1.0; 3]);
    assert_eq!(gradless.to_vec_f32(), vec![1.0; 3]);
    let keys: Vec<String> = opt
        .state_dict()
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert!(keys.contains(&"state.0.exp_avg".to_string()));
    assert!(
        !keys
            .iter()
            .any(|k| k.starts_with("state.1.") || k.starts_with("state.2.")),
        "{keys:?}"
    );
    opt.zero_grad();
    assert!(a.grad().is_none());
}

#[test]
fn loss_scaler_skips_overflow_backs_off_and_grows() {
    let fx = Fixture::load("losses_optim");
    // A scaled run equals the unscaled one bitwise (power-of-two scale).
    let plain: Vec<Tensor> = KEYS
        .iter()
        .map(|k| fx.param(&format!("adamw.init.{k}"), DType::F32))
        .collect();
    let scaled: Vec<Tensor> = KEYS
        .iter()
        .map(|k| fx.param(&format!("adamw.init.{k}"), DType::F32))
        .collect();
    let (mut opt_plain, mut opt_scaled) = (optimizer(&plain), optimizer(&scaled));
    let mut scaler = LossScaler::new(LossScalerConfig {
        growth_interval: 3,
        ..Default::default()
    });
    assert_eq!(scaler.scale_value(), 65536.0);
    for step in 0..3 {
        let grads = fixture_grads(&fx, step, DType::F32);
        set_grads(&plain, &grads);
        opt_plain.step().unwrap();
        let loss = scaled
            .iter()
            .zip(&grads)
            .map(|(p, g)| p.mul(g).unwrap().sum_all().unwrap())
            .reduce(|a, b| a.add(&b).unwrap())
            .unwrap();
        opt_scaled.zero_grad();
        scaler.scale(&loss).unwrap().backward().unwrap();
        let g0 = scaled[0].grad().unwrap().to_vec_f64()[0];
        assert!(
            (g0 - grads[0].to_vec_f64()[0] * 65536.0).abs() < 1e-6 * g0.abs().max(1.0),
            "grads carry the scale"
        );
        assert!(opt_scaled.step_with_scaler(&mut scaler).unwrap());
    }
    for (a, b) in plain.iter().zip(&scaled) {
        assert_eq!(bits(a), bits(b));
    }
    assert_eq!(
        scaler.scale_value(),
        131072.0,
        "grew after growth_interval = 3 clean steps"
    );
    assert_eq!(scaler.growth_tracker(), 0);

    // An inf gradient: the step is skipped, the scale halves, the tracker resets.
    let before: Vec<Vec<u32>> = scaled.iter().map(bits).collect();
    let mut grads = fixture_grads(&fx, 3, DType::F32);
    let mut v = grads[1].to_vec_f32();
    v[0] = f32::INFINITY;
    grads[1] = Tensor::from_vec(v, grads[1].shape()).unwrap();
    set_grads(&scaled, &grads);
    assert!(scaler.unscale_and_check(&scaled).unwrap(), "inf found");
    assert!(
        scaler.unscale_and_check(&scaled).is_err(),
        "unscaling twice in a step is an error"
    );
    let stepped = opt_scaled.step_with_scaler(&mut scaler).unwrap();
    assert!(!stepped);
    assert_eq!(
        scaled.iter().map(bits).collect::<Vec<_>>(),
        before,
        "skipped step leaves params"
    );
    assert_eq!(scaler.scale_value(), 65536.0);
    assert_eq!(opt_scaled.steps(), 3);

    // A NaN gradient is caught too; then clean steps count again from zero.
    scaler.update(false);
    scaler.update(false);
    assert_eq!(scaler.growth_tracker(), 2);
    let nan = Tensor::from_vec(vec![f32::NAN; 3], &[3]).unwrap();
    set_grads(&scaled[1..2], &[nan]);
    assert!(!opt_scaled.step_with_scaler(&mut scaler).unwrap());
    assert_eq!(
        (scaler.scale_value(), scaler.growth_tracker()),
        (32768.0, 0)
    );

    // State round trip.
    let mut other = LossScaler::default();
    other
        .load_state_dict(&scaler.state_dict().unwrap())
        .unwrap();
    assert_eq!((other.scale_value(), other.growth_tracker()), (32768.0, 0));
}

#[test]
fn clip_grad_norm_matches_torch() {
    let fx = Fixture::load("losses_optim");
    for name in ["clip", "noclip"] {
        let grads: Vec<Tensor> = (0..3)
            .map(|i| {
                fx.get(&format!("clip.grad{i}"))
                    .to_dtype(DType::F32)
                    .unwrap()
            })
            .collect();
        let params: Vec<Tensor> = grads
            .iter()
            .map(|g| {
                Tensor::zeros(g.shape(), DType::F32)
                    .unwrap()
                    .into_param()
                    .unwrap()
            })
            .collect();
        set_grads(&params, &grads);
        let max_norm = if name == "clip" { 1.0 } else { 100.0 };
        let total = clip_grad_norm(&params, max_norm).unwrap();
        let want = fx.scalar(&format!("clip.{name}.total"));
        assert!(
            (total - want).abs() <= 1e-6 * want,
            "{name}: total norm {total} vs {want}"
        );
        for (i, p) in params.iter().enumerate() {
            assert_close(
                &p.grad().unwrap(),
                &fx.get(&format!("clip.{name}.grad{i}")),
                1e-6,
                &format!("{name} grad {i}"),
            );
        }
        if name == "noclip" {
            assert_eq!(
                bits(&params[0].grad().unwrap()),
                bits(&grads[0]),
                "no clipping below max_norm"
            );
        }
    }
    // An inf gradient reports an infinite norm and leaves the gradients alone.
    let p = Tensor::zeros(&[2], DType::F32)
        .unwrap()
        .into_param()
        .unwrap();
    set_grads(
        std::slice::from_ref(&p),
        &[Tensor::from_vec(vec![f32::INFINITY, 1.0], &[2]).unwrap()],
    );
    assert_eq!(
        clip_grad_norm(std::slice::from_ref(&p), 1.0).unwrap(),
        f64::INFINITY
    );
    assert_eq!(p.grad().unwrap().to_vec_f32()[1], 1.0);
}

#[test]
fn warmup_cosine_schedule_values() {
    let s = WarmupCosine {
        base_lr: 1e-3,
        warmup_steps: 10,
        total_steps: 110,
        min_lr: 1e-5,
    };
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-15 + 1e-12 * b.abs();
    assert_eq!(s.lr_at(0), 0.0);
    assert!(close(s.lr_at(5), 5e-4));
    assert!(close(s.lr_at(10), 1e-3));
    assert!(close(
        s.lr_at(35),
        1e-5 + (1e-3 - 1e-5) * 0.5 * (1.0 + (std::f64::consts::PI * 0.25).cos())
    ));
    assert!(close(s.lr_at(60), 1e-5 + (1e-3 - 1e-5) * 0.5));
    assert!(close(s.lr_at(110), 1e-5));
    assert!(close(s.lr_at(10_000), 1e-5));
    assert!(
        (10..110).all(|t| s.lr_at(t + 1) <= s.lr_at(t)),
        "monotone after warm-up"
    );
    let no_warmup = WarmupCosine {
        base_lr: 1.0,
        warmup_steps: 0,
        total_steps: 4,
        min_lr: 0.0,
    };
    assert_eq!(no_warmup.lr_at(0), 1.0);
    assert!(close(no_warmup.lr_at(2), 0.5));
}

#[test]
fn optimizer_rejects_bad_config_and_state() {
    let p = Tensor::ones(&[2], DType::F32)
        .unwrap()
        .into_param()
        .unwrap();
    assert!(AdamW::new(
        vec![p.clone()],
        AdamWConfig {
            betas: (1.0, 0.999),
            ..Default::default()
        }
    )
    .is_err());
    assert!(AdamW::new(
        vec![p.clone()],
        AdamWConfig {
            lr: -1.0,
            ..Default::default()
        }
    )
    .is_err());
    assert!(AdamW::with_groups(
        vec![ParamGroup {
            params: vec![p.clone()],
            weight_decay: -0.1
        }],
        Default::default()
    )
    .is_err());
    assert!(
        AdamW::new(vec![p.scale(2.0).unwrap()], Default::default()).is_err(),
        "non-leaf"
    );
    assert!(AdamW::new(
        vec![Tensor::zeros(&[2], DType::I64).unwrap()],
        Default::default()
    )
    .is_err());
    let mut opt = AdamW::new(vec![p.clone()], Default::default()).unwrap();
    let bad_shape = vec![
        (
            "state.0.step".to_string(),
            Tensor::from_i64(vec![1], &[]).unwrap(),
        ),
        (
            "state.0.exp_avg".to_string(),
            Tensor::zeros(&[3], DType::F32).unwrap(),
        ),
        (
            "state.0.exp_avg_sq".to_string(),
            Tensor::zeros(&[2], DType::F32).unwrap(),
        ),
    ];
    let e = opt.load_state_dict(&bad_shape).unwrap_err().to_string();
    assert!(e.contains("state.0.exp_avg"), "{e}");
    let e = opt
        .load_state_dict(&[(
            "state.5.exp_avg".to_string(),
            Tensor::zeros(&[2], DType::F32).unwrap(),
        )])
        .unwrap_err()
        .to_string();
    assert!(e.contains("parameter 5"), "{e}");
    assert!(opt
        .load_state_dict(&[("lr".to_string(), Tensor::zeros(&[], DType::F32).unwrap())])
        .is_err());
    let master = vec![(
        "state.0.master".to_string(),
        Tensor::zeros(&[2], DType::F32).unwrap(),
    )];
    assert!(
        opt.load_state_dict(&master).is_err(),
        "master for an f32 param"
    );
}
