//! The optimizers on device parameters (src/optim on cuda:0) against the same runs on the CPU,
//! in f32, bf16 and f16: AdamW over several steps with two groups and a skipped parameter, the
//! loss scaler with an overflowing step, gradient clipping (clipping, not clipping, a non-finite
//! norm), EMA with a frozen parameter, and state dicts moved between a device run and a CPU run
//! in both directions.

use crate::support::*;
use medsyn::optim::{
    clip_grad_norm, clip_grad_norm_tensor, AdamW, AdamWConfig, Ema, EmaConfig, LossScaler,
    LossScalerConfig, ParamGroup,
};
use medsyn::tensor::DType;
use medsyn::{Device, Tensor};

const CUDA: Device = Device::Cuda(0);
/// Parameter shapes: a matrix of odd sizes, one element, a vector longer than a block.
const SHAPES: [&[usize]; 3] = [&[7, 13], &[1], &[300]];
const STEPS: usize = 6;

fn config() -> AdamWConfig {
    AdamWConfig {
        lr: 1e-2,
        betas: (0.9, 0.99),
        eps: 1e-8,
        weight_decay: 0.1,
    }
}

fn values(seed: u64, shape: &[usize], dtype: DType, device: Device) -> Tensor {
    let n = shape.iter().product();
    Tensor::from_values(uniform(seed, n, -1.0, 1.0), shape, dtype)
        .unwrap()
        .to_device(device)
        .unwrap()
}

/// The same initial parameters on `device`.
fn params(dtype: DType, device: Device) -> Vec<Tensor> {
    SHAPES
        .iter()
        .enumerate()
        .map(|(i, s)| {
            values(100 + i as u64, s, dtype, device)
                .into_param()
                .unwrap()
        })
        .collect()
}

/// Parameter 0 and 2 decay, parameter 1 does not.
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

/// Gradients of step `step`: g_i = w_i · scale through backward of scale · Σ sum(p_i · w_i);
/// parameter 1 gets none on step 3; `inf` puts an inf into parameter 2's.
fn set_grads(p: &[Tensor], step: usize, scale: f64, inf: bool) {
    let mut loss: Option<Tensor> = None;
    for (i, t) in p.iter().enumerate() {
        t.clear_grad();
        if i == 1 && step == 3 {
            continue;
        }
        let mut w = values(
            1000 + 10 * step as u64 + i as u64,
            t.shape(),
            t.dtype(),
            Device::Cpu,
        );
        if inf && i == 2 {
            let mut v = w.to_vec_f32();
            v[17] = f32::INFINITY;
            w = Tensor::from_values(v, t.shape(), t.dtype()).unwrap();
        }
        let term = t
            .mul(&w.to_device(t.device()).unwrap())
            .unwrap()
            .sum_all()
            .unwrap();
        loss = Some(match loss {
            Some(l) => l.add(&term).unwrap(),
            None => term,
        });
    }
    loss.unwrap().scale(scale).unwrap().backward().unwrap();
}

/// Runs `f` for every dtype when a GPU is present; the failing dtypes are reported together.
fn each_dtype(f: impl Fn(DType)) {
    let Some(_g) = gpu() else { return };
    let mut fails = Vec::new();
    for dtype in DTYPES {
        soft(&mut fails, format!("{dtype:?}"), || f(dtype));
    }
    finish(fails);
}

/// A device tensor of `dtype` values against its CPU twin at the dtype's tolerance.
fn close(name: &str, dtype: DType, d: &Tensor, c: &Tensor) {
    check(
        name,
        dtype,
        &d.to_vec_f32(),
        &c.to_vec_f32(),
        1e-6,
        rtol(dtype),
    );
}

fn compare_params(what: &str, dtype: DType, dev: &[Tensor], cpu: &[Tensor]) {
    for (i, (d, c)) in dev.iter().zip(cpu).enumerate() {
        assert_eq!(d.device(), CUDA, "{what}: parameter {i} left the device");
        close(&format!("{what} param{i}"), dtype, d, c);
    }
}

/// The parameters and the optimizers' state dicts of a device run and a CPU run.
fn compare_runs(
    what: &str,
    dtype: DType,
    (dev, od): (&[Tensor], &AdamW),
    (cpu, oc): (&[Tensor], &AdamW),
) {
    compare_params(what, dtype, dev, cpu);
    compare_state(
        what,
        dtype,
        &od.state_dict().unwrap(),
        &oc.state_dict().unwrap(),
    );
}

/// Steps `steps` of the device run and the CPU run (unscaled gradients).
fn step_both(
    steps: std::ops::Range<usize>,
    (dev, od): (&[Tensor], &mut AdamW),
    (cpu, oc): (&[Tensor], &mut AdamW),
) {
    for step in steps {
        set_grads(dev, step, 1.0, false);
        set_grads(cpu, step, 1.0, false);
        od.step().unwrap();
        oc.step().unwrap();
    }
}

/// Each parameter's gradient on the device against the CPU's, as f32 values.
fn compare_grads(what: &str, dtype: DType, dev: &[Tensor], cpu: &[Tensor], atol: f64, rel: f64) {
    for (i, (d, c)) in dev.iter().zip(cpu).enumerate() {
        let (gd, gc) = (d.grad().unwrap(), c.grad().unwrap());
        assert_eq!(gd.device(), CUDA);
        let name = format!("{what} grad{i} ({dtype:?} params)");
        check(
            &name,
            DType::F32,
            &gd.to_vec_f32(),
            &gc.to_vec_f32(),
            atol,
            rel,
        );
    }
}

/// Every entry of two state dicts: same keys in the same order, values close (moments and
/// masters f32; step counts exact).
fn compare_state(what: &str, dtype: DType, dev: &[(String, Tensor)], cpu: &[(String, Tensor)]) {
    let keys = |s: &[(String, Tensor)]| s.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>();
    assert_eq!(keys(dev), keys(cpu), "{what}: state keys");
    for ((k, d), (_, c)) in dev.iter().zip(cpu) {
        assert_eq!(d.shape(), c.shape(), "{what} {k}: shape");
        if k.ends_with("step") {
            assert_eq!(d.to_vec_i64(), c.to_vec_i64(), "{what} {k}");
        } else {
            assert_eq!(d.dtype(), c.dtype(), "{what} {k}: dtype");
            let name = format!("{what} {k} ({dtype:?} params)");
            check(
                &name,
                DType::F32,
                &d.to_vec_f32(),
                &c.to_vec_f32(),
                1e-7,
                2e-5,
            );
        }
    }
}

#[test]
fn adamw_on_device_matches_cpu() {
    each_dtype(|dtype| {
        let (dev, cpu) = (params(dtype, CUDA), params(dtype, Device::Cpu));
        let (mut od, mut oc) = (optimizer(&dev), optimizer(&cpu));
        step_both(0..STEPS, (&dev, &mut od), (&cpu, &mut oc));
        compare_runs("adamw", dtype, (&dev, &od), (&cpu, &oc));
        let (fd, fc) = (
            od.full_precision_params().unwrap(),
            oc.full_precision_params().unwrap(),
        );
        for (i, (d, c)) in fd.iter().zip(&fc).enumerate() {
            let name = format!("adamw full-precision {i}");
            check(&name, dtype, &d.to_vec_f32(), &c.to_vec_f32(), 1e-6, 2e-5);
        }
        assert_eq!(od.steps(), oc.steps());
    });
}

fn scaler() -> LossScaler {
    LossScaler::new(LossScalerConfig {
        init_scale: 1024.0,
        growth_factor: 2.0,
        backoff_factor: 0.5,
        growth_interval: 2,
        enabled: true,
    })
}

/// Mixed-precision steps with an overflow on step 2 (skipped, scale backed off) and growth
/// after two clean steps; on step 4 the gradients are unscaled and clipped before the step.
#[test]
fn loss_scaler_and_clip_on_device_match_cpu() {
    each_dtype(|dtype| {
        let (dev, cpu) = (params(dtype, CUDA), params(dtype, Device::Cpu));
        let (mut od, mut oc) = (optimizer(&dev), optimizer(&cpu));
        let (mut sd, mut sc) = (scaler(), scaler());
        for step in 0..STEPS {
            let inf = step == 2;
            set_grads(&dev, step, sd.scale_value(), inf);
            set_grads(&cpu, step, sc.scale_value(), inf);
            if step == 4 {
                let fd = sd.unscale_and_check(&dev).unwrap();
                let fc = sc.unscale_and_check(&cpu).unwrap();
                assert_eq!(fd, fc, "step {step}: found_inf");
                compare_grads("unscaled", dtype, &dev, &cpu, 0.0, 0.0);
                let nd = clip_grad_norm(&dev, 0.5).unwrap();
                let nc = clip_grad_norm(&cpu, 0.5).unwrap();
                let name = format!("clip norm ({dtype:?} params)");
                check(&name, DType::F32, &[nd as f32], &[nc as f32], 0.0, 1e-5);
            }
            let stepped_d = od.step_with_scaler(&mut sd).unwrap();
            let stepped_c = oc.step_with_scaler(&mut sc).unwrap();
            assert_eq!(stepped_d, stepped_c, "step {step}: stepped");
            assert_eq!(stepped_d, !inf, "step {step}: stepped");
            assert_eq!(sd.scale_value(), sc.scale_value(), "step {step}: scale");
            assert_eq!(sd.growth_tracker(), sc.growth_tracker(), "step {step}");
            let mirror = sd.device_state().unwrap().expect("device scaler state");
            assert_eq!(
                mirror,
                (sc.scale_value(), sc.growth_tracker()),
                "step {step}"
            );
        }
        assert_eq!(sc.scale_value(), 1024.0, "backed off once, grown once");
        compare_runs("scaled adamw", dtype, (&dev, &od), (&cpu, &oc));
    });
}

#[test]
fn clip_grad_norm_on_device_matches_cpu() {
    each_dtype(|dtype| {
        // max_norm below the norm (clips), above it (leaves), and a non-finite norm.
        for (case, max_norm, inf) in [
            ("clips", 0.3, false),
            ("keeps", 1e3, false),
            ("inf", 0.3, true),
        ] {
            let (dev, cpu) = (params(dtype, CUDA), params(dtype, Device::Cpu));
            set_grads(&dev, 0, 1.0, inf);
            set_grads(&cpu, 0, 1.0, inf);
            let before: Vec<Vec<f32>> =
                cpu.iter().map(|p| p.grad().unwrap().to_vec_f32()).collect();
            let nd = clip_grad_norm_tensor(&dev, max_norm).unwrap();
            assert_eq!(nd.device(), CUDA, "{case}: the norm stays on the device");
            assert_eq!(nd.dtype(), DType::F32);
            let nc = clip_grad_norm(&cpu, max_norm).unwrap();
            let name = format!("clip {case} norm ({dtype:?} params)");
            check(
                &name,
                DType::F32,
                &[nd.to_scalar().unwrap() as f32],
                &[nc as f32],
                0.0,
                1e-5,
            );
            compare_grads(&format!("clip {case}"), dtype, &dev, &cpu, 1e-9, 2e-5);
            if case != "clips" {
                for (i, d) in dev.iter().enumerate() {
                    let gd = d.grad().unwrap().to_vec_f32();
                    let name = format!("clip {case} grad{i} untouched ({dtype:?} params)");
                    check(&name, DType::F32, &gd, &before[i], 0.0, 0.0);
                }
            }
        }
    });
}

#[test]
fn ema_on_device_matches_cpu() {
    each_dtype(|dtype| {
        let (dev, cpu) = (params(dtype, CUDA), params(dtype, Device::Cpu));
        // A frozen fourth parameter, copied rather than averaged.
        let frozen = |d| values(7, &[5, 3], dtype, d);
        let (fd, fc) = (frozen(CUDA), frozen(Device::Cpu));
        let all_d: Vec<Tensor> = dev.iter().cloned().chain([fd]).collect();
        let all_c: Vec<Tensor> = cpu.iter().cloned().chain([fc]).collect();
        let (mut od, mut oc) = (optimizer(&dev), optimizer(&cpu));
        let cfg = EmaConfig {
            decay: 0.9,
            ..EmaConfig::default()
        };
        let (mut ed, mut ec) = (Ema::new(&all_d, cfg), Ema::new(&all_c, cfg));
        for step in 0..STEPS {
            step_both(step..step + 1, (&dev, &mut od), (&cpu, &mut oc));
            ed.update(&all_d).unwrap();
            ec.update(&all_c).unwrap();
        }
        let (sd, sc) = (ed.shadow().unwrap(), ec.shadow().unwrap());
        for (i, (d, c)) in sd.iter().zip(&sc).enumerate() {
            assert_eq!(d.device(), CUDA, "shadow {i} on the device");
            close(&format!("ema shadow{i}"), dtype, d, c);
        }
        // The device EMA's checkpoint continues on the CPU.
        let state = ed.state_dict().unwrap();
        let mut resumed = Ema::new(&all_c, cfg);
        resumed.load_state_dict(&state).unwrap();
        assert_eq!(resumed.optimization_step(), STEPS as u64);
        ec.update(&all_c).unwrap();
        resumed.update(&all_c).unwrap();
        for (i, (r, c)) in resumed
            .shadow()
            .unwrap()
            .iter()
            .zip(&ec.shadow().unwrap())
            .enumerate()
        {
            close(&format!("ema resumed shadow{i}"), dtype, r, c);
        }
    });
}

/// Copies of `p`'s current values as fresh parameters on `device`.
fn moved(p: &[Tensor], device: Device) -> Vec<Tensor> {
    p.iter()
        .map(|t| {
            t.detach()
                .to_device(device)
                .unwrap()
                .detach()
                .into_param()
                .unwrap()
        })
        .collect()
}

/// Three steps on `first`, its state dict loaded into an optimizer of copies of the parameters
/// on the other device, then both runs continue to STEPS and must agree.
fn resume_across(what: &str, dtype: DType, first: Device) {
    let p = params(dtype, first);
    let mut op = optimizer(&p);
    for step in 0..3 {
        set_grads(&p, step, 1.0, false);
        op.step().unwrap();
    }
    let other = if first == CUDA { Device::Cpu } else { CUDA };
    let q = moved(&p, other);
    let mut oq = optimizer(&q);
    oq.load_state_dict(&op.state_dict().unwrap()).unwrap();
    let ((dev, od), (cpu, oc)) = if first == CUDA {
        ((&p, &mut op), (&q, &mut oq))
    } else {
        ((&q, &mut oq), (&p, &mut op))
    };
    step_both(3..STEPS, (dev, &mut *od), (cpu, &mut *oc));
    compare_runs(what, dtype, (dev, od), (cpu, oc));
}

/// A device run's state dict loaded into a CPU optimizer continues as the device run does, and
/// a CPU run's state dict loaded into a device optimizer continues as the CPU run does.
#[test]
fn state_dict_moves_between_device_and_cpu() {
    each_dtype(|dtype| {
        resume_across("resumed on cpu", dtype, CUDA);
        resume_across("resumed on device", dtype, Device::Cpu);
    });
}
