//! backend::cuda::adamw (kernels/adamw.cu) vs src/optim/ (AdamW with fp32 masters,
//! LossScaler): several steps with and without loss scaling, an overflowing step (skipped, scale
//! backed off), growth after growth_interval clean steps, with gradients in the parameter's dtype
//! and, for half parameters, in f32 as the CPU keeps them (adamw_step_g32_T, incl. unscaled f16
//! gradients in f16's subnormal range); the loss × scale kernel and the scale update on its own.

use crate::support::*;
use cudarc::driver::CudaSlice;
use medsyn::backend::cuda::adamw::{self as gpu_adamw, AdamwScalars, HYPER_BYTES};
use medsyn::cuda::gpu::{round_to, suffix, Ptr};
use medsyn::cuda::{DevBuf, Gpu};
use medsyn::optim::{AdamW, AdamWConfig, LossScaler, LossScalerConfig};
use medsyn::tensor::DType;
use medsyn::Tensor;

const LR: f64 = 1e-2;
const BETAS: (f64, f64) = (0.9, 0.999);
const EPS: f64 = 1e-8;
const WD: f64 = 0.05;
const INIT_SCALE: f64 = 1024.0;
const GROWTH: f64 = 2.0;
const BACKOFF: f64 = 0.5;
const INTERVAL: u64 = 3;
/// Parameter sizes: one element, odd, larger than a block and odd.
const SIZES: [usize; 3] = [1, 1001, 4099];
/// Steps whose gradients hold an inf (with INTERVAL 3: steps 0, 1 clean, 2 overflows and backs
/// off, 3..=5 clean so the scale grows after step 5, 6 clean again).
const INF_STEP: usize = 2;
const STEPS: usize = 7;

/// The AdamwHyper struct as the kernel stores it (7 f32 + i32 skip, 32 bytes).
#[derive(Clone, Copy, Debug, PartialEq)]
struct Hyper {
    f: [f32; 7],
    skip: i32,
}

fn parse_hyper(bytes: &[u8]) -> Hyper {
    let word = |k: usize| <[u8; 4]>::try_from(&bytes[4 * k..4 * k + 4]).unwrap();
    Hyper {
        f: std::array::from_fn(|k| f32::from_le_bytes(word(k))),
        skip: i32::from_le_bytes(word(7)),
    }
}

/// The scalars AdamW::step computes for `step` (f64, as there) rounded to f32 as `update`
/// does, in the struct's field order.
fn cpu_hyper(step: u64) -> [f32; 7] {
    let (b1, b2) = BETAS;
    let t = step as f64;
    [
        (1.0 - LR * WD) as f32,
        (1.0 - b1) as f32,
        b2 as f32,
        (1.0 - b2) as f32,
        (-(LR / (1.0 - b1.powf(t)))) as f32,
        ((1.0 - b2.powf(t)).powf(0.5)) as f32,
        EPS as f32,
    ]
}

/// One parameter's device state.
struct DevParam {
    n: usize,
    /// The f32 parameter itself (f32) or its fp32 master (f16/bf16).
    master: CudaSlice<f32>,
    /// The f16/bf16 model copy (None for f32 parameters).
    param: Option<DevBuf>,
    m: CudaSlice<f32>,
    v: CudaSlice<f32>,
}

const SCALARS: AdamwScalars = AdamwScalars {
    lr: LR,
    beta1: BETAS.0,
    beta2: BETAS.1,
    eps: EPS,
    weight_decay: WD,
};

/// Compares f32 arrays: bit for bit when `exact`, else within a few ulp. On failure records
/// `name` as failed and panics with `what`.
fn compare(name: &str, what: &str, got: &[f32], want: &[f32], exact: bool, max_err: &mut f64) {
    assert_eq!(got.len(), want.len(), "{name} {what}: length");
    for (i, (&a, &b)) in got.iter().zip(want).enumerate() {
        let e = (a as f64 - b as f64).abs();
        let ok = if exact {
            a.to_bits() == b.to_bits()
        } else {
            e <= 1e-9 + 1e-6 * (b as f64).abs()
        };
        if !ok {
            record(name, false, e);
            panic!(
                "{name} {what}: element {i} is {a:e} where the CPU twin gives {b:e} ({})",
                if exact {
                    "expected bit-identical"
                } else {
                    "tolerance 1e-9 + 1e-6·|x|"
                }
            );
        }
        if e.is_finite() {
            *max_err = max_err.max(e);
        }
    }
}

/// The gradients a run feeds: in the parameter's dtype, or f32 for a half parameter (the CPU's
/// convention: backward leaves a half leaf's gradient in f32).
#[derive(Clone, Copy, Debug, PartialEq)]
enum Grads {
    /// Rounded to the parameter's dtype, magnitudes [0.01, 1) after unscaling (so that an
    /// unscaled f16 gradient stays out of f16's subnormal range: adamw_step_f16 rounds it to
    /// f16 where the CPU keeps f32).
    Param,
    /// f32 values off the half grid, magnitudes [0.01, 1) after unscaling (adamw_step_g32_T).
    F32,
    /// f32 values whose unscaled magnitudes lie in [2e-7, 5.9e-5): subnormal in f16.
    F32Tiny,
}

impl Grads {
    fn dtype(self, dt: DType) -> DType {
        if self == Grads::Param {
            dt
        } else {
            DType::F32
        }
    }
    fn tag(self) -> &'static str {
        match self {
            Grads::Param => "",
            Grads::F32 => "_g32",
            Grads::F32Tiny => "_g32/subnormal",
        }
    }
}

/// Gradient values for step `s` of parameter `j` (magnitudes as `kind` says) times `scale`,
/// rounded to the gradient's dtype.
fn grad_values(s: usize, j: usize, n: usize, scale: f64, dt: DType, kind: Grads) -> Vec<f32> {
    let u = uniform(1000 + 10 * s as u64 + j as u64, n, -1.0, 1.0);
    let (lo, span) = match kind {
        Grads::Param | Grads::F32 => (0.01, 0.99),
        Grads::F32Tiny => (2e-7, 5.88e-5),
    };
    let v: Vec<f32> = u
        .iter()
        .map(|&x| (x.signum() * (lo + span * x.abs())) * scale as f32)
        .collect();
    round_to(&v, kind.dtype(dt))
}

/// The CPU twin's parameters (one group), optimizer and scaler.
fn cpu_setup(dt: DType) -> (Vec<Tensor>, AdamW, LossScaler) {
    let params: Vec<Tensor> = SIZES
        .iter()
        .enumerate()
        .map(|(j, &n)| {
            let p0 = uniform_as(900 + j as u64, n, -1.0, 1.0, dt);
            Tensor::from_values(p0, &[n], dt)
                .unwrap()
                .into_param()
                .unwrap()
        })
        .collect();
    let config = AdamWConfig {
        lr: LR,
        betas: BETAS,
        eps: EPS,
        weight_decay: WD,
    };
    let opt = AdamW::new(params.clone(), config).unwrap();
    let scaler = LossScaler::new(LossScalerConfig {
        init_scale: INIT_SCALE,
        growth_factor: GROWTH,
        backoff_factor: BACKOFF,
        growth_interval: INTERVAL,
        enabled: true,
    });
    (params, opt, scaler)
}

/// Step `s`'s gradients (an inf in parameter 1 at INF_STEP when scaled).
fn step_grads(s: usize, scale: f64, dt: DType, scaled: bool, kind: Grads) -> Vec<Vec<f32>> {
    SIZES
        .iter()
        .enumerate()
        .map(|(j, &n)| {
            let mut v = grad_values(s, j, n, scale, dt, kind);
            if scaled && s == INF_STEP && j == 1 {
                v[n / 2] = f32::INFINITY;
            }
            v
        })
        .collect()
}

/// One CPU step from `grads`, backpropagated as `gdt` tensors (a half parameter's leaf gradient
/// is f32 either way, as backward leaves it); returns whether it overflowed (was skipped).
fn cpu_step(
    params: &[Tensor],
    opt: &mut AdamW,
    scaler: &mut LossScaler,
    grads: &[Vec<f32>],
    gdt: DType,
    scaled: bool,
) -> bool {
    opt.zero_grad();
    for (p, gv) in params.iter().zip(grads) {
        let gt = Tensor::from_values(gv.clone(), &[gv.len()], gdt).unwrap();
        p.backward_with(&gt).unwrap();
    }
    if scaled {
        !opt.step_with_scaler(scaler).unwrap()
    } else {
        opt.step().unwrap();
        false
    }
}

/// The premise of the device test, on the CPU alone (runs without a GPU): exactly INF_STEP is
/// skipped, the scale backs off and grows back, every parameter has state (and a master when
/// half).
#[test]
fn loss_scaling_schedule_skips_one_step_then_grows() {
    let half_kinds = [Grads::Param, Grads::F32, Grads::F32Tiny];
    for (dt, kind) in DTYPES
        .into_iter()
        .flat_map(|dt| half_kinds.map(|k| (dt, k)))
        .filter(|&(dt, k)| dt != DType::F32 || k == Grads::Param)
    {
        let (params, mut opt, mut scaler) = cpu_setup(dt);
        for s in 0..STEPS {
            let grads = step_grads(s, scaler.scale_value(), dt, true, kind);
            let overflow = cpu_step(&params, &mut opt, &mut scaler, &grads, kind.dtype(dt), true);
            assert_eq!(overflow, s == INF_STEP, "{dt:?} {kind:?} step {s}");
            for (p, gv) in params.iter().zip(&grads) {
                // A half leaf's gradient is f32 (the convention adamw_step_g32_T serves).
                if let Some(gr) = p.grad() {
                    assert_eq!(gr.dtype(), DType::F32, "{dt:?}");
                    assert_eq!(gr.numel(), gv.len());
                }
            }
            assert!(params
                .iter()
                .all(|p| p.to_vec_f32().iter().all(|v| v.is_finite())));
        }
        assert_eq!(scaler.scale_value(), INIT_SCALE * BACKOFF * GROWTH);
        assert_eq!(opt.steps(), STEPS as u64 - 1);
        let state = opt.state_dict().unwrap();
        for j in 0..SIZES.len() {
            for field in ["step", "exp_avg", "exp_avg_sq"] {
                let key = format!("state.{j}.{field}");
                assert!(state.iter().any(|(k, _)| *k == key), "{dt:?}: no {key}");
            }
            let key = format!("state.{j}.master");
            assert_eq!(state.iter().any(|(k, _)| *k == key), dt != DType::F32);
        }
    }
}

/// `STEPS` steps of the CPU twin and the device on parameters of dtype `dt` with gradients of
/// `kind` (f32 gradients only for half parameters), with or without the loss scaler.
fn run_adamw(g: &Gpu, dt: DType, scaled: bool, kind: Grads) {
    let sfx = suffix(dt).unwrap();
    let half = dt != DType::F32;
    assert!(
        half || kind == Grads::Param,
        "f32 gradients are for half parameters"
    );
    let gdt = kind.dtype(dt);
    let (params, mut opt, mut scaler) = cpu_setup(dt);

    // Device state (the contract's list).
    let dev: Vec<DevParam> = params
        .iter()
        .map(|p| {
            let v = p.to_vec_f32();
            DevParam {
                n: v.len(),
                master: g.upload(&v).unwrap(),
                param: half.then(|| g.upload_as(&v, dt).unwrap()),
                m: g.zeros::<f32>(v.len()).unwrap(),
                v: g.zeros::<f32>(v.len()).unwrap(),
            }
        })
        .collect();
    let np = dev.len();
    let steps = g.zeros::<i64>(np).unwrap();
    let hyper = g.zeros::<u8>(HYPER_BYTES * np).unwrap();
    let found_inf = g.zeros::<i32>(1).unwrap();
    let scale = g.upload(&[INIT_SCALE]).unwrap();
    let tracker = g.zeros::<i64>(1).unwrap();
    let inv_scale = g.upload(&[(1.0 / INIT_SCALE) as f32]).unwrap();
    let steps_p = g.ptr_of(&steps, DType::I64);
    let hyper_p = g.ptr_of(&hyper, DType::U8);
    let found_p = g.ptr_of(&found_inf, DType::I32);
    let scale_p = g.ptr_of(&scale, DType::F64);
    let tracker_p = g.ptr_of(&tracker, DType::I64);
    let inv_p = g.ptr_of(&inv_scale, DType::F32);
    let nil32 = Ptr::null(DType::F32);
    let tag = format!("{}{}", kind.tag(), if scaled { "" } else { "/no_scaler" });
    let mut err = 0.0f64;
    let (mut found_got, mut found_want) = (Vec::new(), Vec::new());
    let (mut sched_got, mut sched_want) = (Vec::new(), Vec::new());
    let (mut hyper_got, mut hyper_want) = (Vec::new(), Vec::new());
    let mut hyper_exact = true;

    for s in 0..STEPS {
        let cur_scale = if scaled { scaler.scale_value() } else { 1.0 };
        let grads = step_grads(s, cur_scale, dt, scaled, kind);
        let overflow = cpu_step(&params, &mut opt, &mut scaler, &grads, gdt, scaled);

        // GPU: check/unscale, hyper, step, scale update.
        let gbufs: Vec<DevBuf> = grads
            .iter()
            .map(|gv| g.upload_as(gv, gdt).unwrap())
            .collect();
        if scaled {
            for (j, gb) in gbufs.iter().enumerate() {
                // Parameter 1 is only checked here and unscaled inside adamw_step.
                let inv = if j == 1 { nil32 } else { inv_p };
                gpu_adamw::grad_unscale_check(g, gb.ptr(), inv, found_p, gb.len).unwrap();
            }
            found_got.push(g.download(&found_inf).unwrap()[0]);
            found_want.push(overflow as i32);
        }
        let flag = if scaled {
            found_p
        } else {
            Ptr::null(DType::I32)
        };
        gpu_adamw::adamw_hyper(g, flag, steps_p, hyper_p, np, &SCALARS).unwrap();

        for (j, (d, gb)) in dev.iter().zip(&gbufs).enumerate() {
            let h = hyper_p.offset(HYPER_BYTES * j).unwrap();
            let master = g.ptr_of(&d.master, DType::F32);
            let param = d.param.as_ref().map_or(Ptr::null(dt), |p| p.ptr());
            let (m, v) = (g.ptr_of(&d.m, DType::F32), g.ptr_of(&d.v, DType::F32));
            let inv = if scaled && j == 1 { inv_p } else { nil32 };
            gpu_adamw::adamw_step(g, h, master, param, gb.ptr(), m, v, inv, d.n).unwrap();
        }

        // The hyper scalars and step counts against the CPU's.
        let hb = g.download(&hyper).unwrap();
        let gsteps = g.download(&steps).unwrap();
        let state = opt.state_dict().unwrap();
        let get = |key: String| {
            state
                .iter()
                .find(|(k, _)| *k == key)
                .unwrap_or_else(|| panic!("AdamW state has no {key}"))
                .1
                .clone()
        };
        for j in 0..np {
            let h = parse_hyper(&hb[HYPER_BYTES * j..HYPER_BYTES * (j + 1)]);
            let cpu_step = get(format!("state.{j}.step")).to_vec_i64()[0];
            sched_got.push(gsteps[j]);
            sched_want.push(cpu_step);
            hyper_got.push(h.skip as i64);
            hyper_want.push(overflow as i64);
            if !overflow {
                let want = cpu_hyper(cpu_step as u64);
                // β^step: CUDA's pow vs libm's may differ in the last bit (contract).
                compare(
                    "adamw_hyper",
                    &format!("step {s} parameter {j} scalars"),
                    &h.f,
                    &want,
                    false,
                    &mut 0.0,
                );
                hyper_exact &=
                    h.f.iter()
                        .zip(&want)
                        .all(|(a, b)| a.to_bits() == b.to_bits());
            }
        }

        // Masters, moments and model copies: bit-identical given equal scalars.
        let name = format!("adamw_step{tag} {sfx}");
        for (j, (d, p)) in dev.iter().zip(&params).enumerate() {
            let want_master = if half {
                get(format!("state.{j}.master")).to_vec_f32()
            } else {
                p.to_vec_f32()
            };
            let at = |what: &str| format!("step {s} parameter {j} {what}");
            let master = g.download(&d.master).unwrap();
            compare(
                &name,
                &at("master"),
                &master,
                &want_master,
                hyper_exact,
                &mut err,
            );
            let m = g.download(&d.m).unwrap();
            let want_m = get(format!("state.{j}.exp_avg")).to_vec_f32();
            compare(&name, &at("exp_avg"), &m, &want_m, hyper_exact, &mut err);
            let v = g.download(&d.v).unwrap();
            let want_v = get(format!("state.{j}.exp_avg_sq")).to_vec_f32();
            compare(&name, &at("exp_avg_sq"), &v, &want_v, hyper_exact, &mut err);
            if let Some(pb) = &d.param {
                let got = g.download_f32(pb).unwrap();
                compare(
                    &name,
                    &at("param"),
                    &got,
                    &p.to_vec_f32(),
                    hyper_exact,
                    &mut err,
                );
            }
        }

        if scaled {
            gpu_adamw::loss_scale_update(
                g, found_p, scale_p, tracker_p, inv_p, GROWTH, BACKOFF, INTERVAL,
            )
            .unwrap();
            let sc = g.download(&scale).unwrap()[0];
            let tr = g.download(&tracker).unwrap()[0];
            let inv = g.download(&inv_scale).unwrap()[0];
            let fl = g.download(&found_inf).unwrap()[0];
            sched_got.extend([sc.to_bits() as i64, tr, inv.to_bits() as i64, fl as i64]);
            sched_want.extend([
                scaler.scale_value().to_bits() as i64,
                scaler.growth_tracker() as i64,
                ((1.0 / scaler.scale_value()) as f32).to_bits() as i64,
                0,
            ]);
        }
    }
    if scaled {
        // The schedule did what it is meant to test: one skipped step, then a growth.
        assert_eq!(scaler.scale_value(), INIT_SCALE * BACKOFF * GROWTH);
        assert_eq!(opt.steps(), STEPS as u64 - 1);
        check_exact(
            &format!("grad_unscale_check found_inf{tag} {sfx}"),
            &found_got,
            &found_want,
        );
        check_exact(
            &format!("loss_scale_update + steps{tag} {sfx}"),
            &sched_got,
            &sched_want,
        );
    } else {
        check_exact(
            &format!("adamw_hyper steps{tag} {sfx}"),
            &sched_got,
            &sched_want,
        );
    }
    check_exact(
        &format!("adamw_hyper skip{tag} {sfx}"),
        &hyper_got,
        &hyper_want,
    );
    if !hyper_exact {
        eprintln!("adamw{tag} {sfx}: the device's β^step scalars differ from the CPU's in the last bit; states compared within 1e-6");
    }
    record(&format!("adamw_step{tag} {sfx}"), true, err);
}

#[test]
fn adamw_with_loss_scaling_matches_cpu() {
    let Some(g) = gpu() else { return };
    for dt in DTYPES {
        run_adamw(g, dt, true, Grads::Param);
    }
}

#[test]
fn adamw_without_scaler_matches_cpu() {
    let Some(g) = gpu() else { return };
    for dt in DTYPES {
        run_adamw(g, dt, false, Grads::Param);
    }
}

/// Half parameters with f32 gradients (adamw_step_g32_T, f32 buffers checked and unscaled by
/// grad_unscale_check_f32), bit-identical to AdamW::step / step_with_scaler given equal scalars;
/// including f16 with unscaled gradients that are subnormal in f16.
#[test]
fn adamw_half_params_with_f32_grads_match_cpu() {
    let Some(g) = gpu() else { return };
    for dt in [DType::BF16, DType::F16] {
        run_adamw(g, dt, true, Grads::F32);
        run_adamw(g, dt, false, Grads::F32);
        run_adamw(g, dt, true, Grads::F32Tiny);
    }
}

/// The premise of the f32-gradient device cases, on the CPU alone (runs without a GPU): the
/// gradients are off the half grid (F32Tiny: subnormal in f16 after unscaling), so a kernel that
/// rounded the unscaled gradient to the parameter's dtype would give other masters than the CPU.
#[test]
fn f32_gradient_cases_differ_from_rounded_gradients() {
    for (dt, kind) in [
        (DType::BF16, Grads::F32),
        (DType::F16, Grads::F32),
        (DType::F16, Grads::F32Tiny),
    ] {
        let unscaled = grad_values(0, 2, SIZES[2], 1.0, dt, kind);
        let rounded = round_to(&unscaled, dt);
        let off = unscaled
            .iter()
            .zip(&rounded)
            .filter(|(a, b)| a != b)
            .count();
        assert!(
            off > unscaled.len() / 2,
            "{dt:?} {kind:?}: only {off} gradients off the grid"
        );
        if kind == Grads::F32Tiny {
            // Below f16's smallest normal 2^-14, above its smallest subnormal 2^-24.
            let (min_normal, min_sub) = (2f32.powi(-14), 2f32.powi(-24));
            assert!(unscaled
                .iter()
                .all(|x| x.abs() < min_normal && x.abs() > min_sub));
        }
        // Two CPU runs, f32 gradients vs the same rounded to dt: the masters differ.
        let mut masters = Vec::new();
        for round in [false, true] {
            let (params, mut opt, mut scaler) = cpu_setup(dt);
            for s in 0..2 {
                let mut grads = step_grads(s, scaler.scale_value(), dt, true, kind);
                if round {
                    let inv = (1.0 / scaler.scale_value()) as f32;
                    // What a T-rounding unscale would feed the update, scaled back exactly
                    // (the scale is a power of two).
                    for gv in &mut grads {
                        let r: Vec<f32> = gv.iter().map(|&x| x * inv).collect();
                        *gv = round_to(&r, dt).iter().map(|&x| x / inv).collect();
                    }
                }
                cpu_step(&params, &mut opt, &mut scaler, &grads, DType::F32, true);
            }
            masters.push(opt.full_precision_params().unwrap()[2].to_vec_f32());
        }
        assert_ne!(masters[0], masters[1], "{dt:?} {kind:?}");
    }
}

#[test]
fn scale_by_device_matches_loss_scaler_scale() {
    let Some(g) = gpu() else { return };
    let n = 10_007;
    for dt in DTYPES {
        let x = uniform_as(1100, n, -3.0, 3.0, dt);
        // Powers of two, a scale f32 cannot hold exactly, one that overflows f16 and f32.
        for s in [65536.0, 0.5, 1e4 / 3.0, 3.0e38] {
            let scaler = LossScaler::new(LossScalerConfig {
                init_scale: s,
                ..LossScalerConfig::default()
            });
            let xt = Tensor::from_values(x.clone(), &[n], dt).unwrap();
            let want = scaler.scale(&xt).unwrap().to_vec_f32();
            let xd = g.upload_as(&x, dt).unwrap();
            let sd = g.upload(&[s]).unwrap();
            let yd = g.poisoned_as(n, dt).unwrap();
            let sp = g.ptr_of(&sd, DType::F64);
            gpu_adamw::scale_by_device(g, xd.ptr(), sp, yd.ptr(), n).unwrap();
            let y = g.download_f32(&yd).unwrap();
            check("scale_by_device", dt, &y, &want, 0.0, 0.0);
        }
    }
}

/// The scale update alone over a flag sequence: backoff, growth after `interval` clean steps,
/// and a growth that would overflow f64 (kept at the old scale).
#[test]
fn loss_scale_update_matches_loss_scaler() {
    let Some(g) = gpu() else { return };
    for (init, interval) in [(65536.0, 2u64), (f64::MAX / 1.5, 1)] {
        let mut cpu = LossScaler::new(LossScalerConfig {
            init_scale: init,
            growth_factor: GROWTH,
            backoff_factor: BACKOFF,
            growth_interval: interval,
            enabled: true,
        });
        let scale = g.upload(&[init]).unwrap();
        let tracker = g.zeros::<i64>(1).unwrap();
        let inv = g.upload(&[(1.0 / init) as f32]).unwrap();
        let scale_p = g.ptr_of(&scale, DType::F64);
        let tracker_p = g.ptr_of(&tracker, DType::I64);
        let inv_p = g.ptr_of(&inv, DType::F32);
        let (mut got, mut want) = (Vec::new(), Vec::new());
        for flag in [0, 0, 0, 1, 0, 1, 1, 0, 0, 0, 0] {
            let found = g.upload::<i32>(&[flag]).unwrap();
            let found_p = g.ptr_of(&found, DType::I32);
            gpu_adamw::loss_scale_update(
                g, found_p, scale_p, tracker_p, inv_p, GROWTH, BACKOFF, interval,
            )
            .unwrap();
            cpu.update(flag != 0);
            got.extend([
                g.download(&scale).unwrap()[0].to_bits(),
                g.download(&tracker).unwrap()[0] as u64,
                g.download(&inv).unwrap()[0].to_bits() as u64,
                g.download(&found).unwrap()[0] as u64,
            ]);
            want.extend([
                cpu.scale_value().to_bits(),
                cpu.growth_tracker(),
                ((1.0 / cpu.scale_value()) as f32).to_bits() as u64,
                0,
            ]);
        }
        check_exact("loss_scale_update", &got, &want);
    }
}

#[test]
fn adamw_refuses_short_buffers_wrong_dtypes_and_misplaced_params() {
    let Some(g) = gpu() else { return };
    let hyper = g.zeros::<u8>(HYPER_BYTES).unwrap();
    let hyper_p = g.ptr_of(&hyper, DType::U8);
    let steps = g.zeros::<i64>(2).unwrap();
    let nil = Ptr::null(DType::I32);
    // Two parameters need two hyper records.
    let err = gpu_adamw::adamw_hyper(g, nil, g.ptr_of(&steps, DType::I64), hyper_p, 2, &SCALARS)
        .unwrap_err();
    assert!(err.to_string().contains("hyper holds 32 elements"), "{err}");
    let err = gpu_adamw::adamw_hyper(g, nil, g.ptr_of(&steps, DType::I32), hyper_p, 1, &SCALARS)
        .unwrap_err();
    assert!(err.to_string().contains("expected I64"), "{err}");
    let f = g.zeros::<f32>(10).unwrap();
    let fp = g.ptr_of(&f, DType::F32);
    let short = g.zeros::<f32>(9).unwrap();
    let sp = g.ptr_of(&short, DType::F32);
    let grad = g.upload_as(&[0.0; 10], DType::F32).unwrap();
    let nil32 = Ptr::null(DType::F32);
    let err =
        gpu_adamw::adamw_step(g, hyper_p, fp, nil32, grad.ptr(), fp, sp, nil32, 10).unwrap_err();
    assert!(err.to_string().contains("v holds 9 elements"), "{err}");
    // An f32 parameter lives in `master`; a half one needs its model copy.
    let err = gpu_adamw::adamw_step(g, hyper_p, fp, fp, grad.ptr(), fp, fp, nil32, 10).unwrap_err();
    assert!(err.to_string().contains("must be null"), "{err}");
    let gh = g.upload_as(&[0.0; 10], DType::BF16).unwrap();
    let nilh = Ptr::null(DType::BF16);
    let err = gpu_adamw::adamw_step(g, hyper_p, fp, nilh, gh.ptr(), fp, fp, nil32, 10).unwrap_err();
    assert!(err.to_string().contains("param is a null pointer"), "{err}");
    // f32 gradients with a half parameter (adamw_step_g32_T): the parameter is still needed
    // in full, and no kernel takes other pairs.
    let short_h = g.upload_as(&[0.0; 9], DType::F16).unwrap();
    let err = gpu_adamw::adamw_step(g, hyper_p, fp, short_h.ptr(), grad.ptr(), fp, fp, nil32, 10)
        .unwrap_err();
    assert!(err.to_string().contains("param holds 9 elements"), "{err}");
    let gf16 = g.upload_as(&[0.0; 10], DType::F16).unwrap();
    let pbf16 = g.upload_as(&[0.0; 10], DType::BF16).unwrap();
    let err = gpu_adamw::adamw_step(g, hyper_p, fp, pbf16.ptr(), gf16.ptr(), fp, fp, nil32, 10)
        .unwrap_err();
    assert!(
        err.to_string().contains("param is BF16, expected F16"),
        "{err}"
    );
    let err = gpu_adamw::adamw_step(g, hyper_p, fp, fp, gh.ptr(), fp, fp, nil32, 10).unwrap_err();
    assert!(
        err.to_string().contains("param is F32, expected BF16"),
        "{err}"
    );
    let d64 = g.zeros::<f64>(10).unwrap();
    let err = gpu_adamw::adamw_step(
        g,
        hyper_p,
        fp,
        nil32,
        g.ptr_of(&d64, DType::F64),
        fp,
        fp,
        nil32,
        10,
    )
    .unwrap_err();
    assert!(err.to_string().to_lowercase().contains("f64"), "{err}");
    let scale = g.upload(&[1.0f32]).unwrap();
    let err = gpu_adamw::scale_by_device(g, grad.ptr(), g.ptr_of(&scale, DType::F32), fp, 10)
        .unwrap_err();
    assert!(err.to_string().contains("expected F64"), "{err}");
}
