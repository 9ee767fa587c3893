//! Schedulers against diffusers 0.42 (scripts/fixtures/schedulers.py): every case's
//! timesteps, init_noise_sigma, scaled model inputs and samples, step by step
//! (fed diffusers' samples) and free-running, in f32 and f64; the training noise
//! schedule against DDPMScheduler; configuration semantics and bad input.

mod common;
use common::*;
use medsyn::models::config::Config;
use medsyn::schedulers::{
    build_scheduler, NoiseSchedule, PredictionType, Scheduler, SchedulerKind, SchedulerOptions,
    TimestepSpacing,
};
use medsyn::{DType, Tensor};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::PathBuf;

/// Relative error allowed against diffusers (scale-aware, see `assert_close`).
const RTOL: f64 = 1e-6;
/// Worst error of a single f32 step fed diffusers' samples.
const STEP_RTOL_F32: f64 = 2e-7;
const SHAPE: [usize; 4] = [1, 4, 2, 2];

fn fixture_json() -> Value {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sched_cases.json");
    serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap()
}

fn options(v: &Value) -> SchedulerOptions {
    SchedulerOptions {
        eta: v["eta"].as_f64().unwrap_or(0.0),
        use_karras_sigmas: v["use_karras_sigmas"].as_bool(),
        timestep_spacing: v["timestep_spacing"].as_str().map(str::to_string),
        prediction_type: v["prediction_type"].as_str().map(str::to_string),
    }
}

fn build(case: &Value) -> Box<dyn Scheduler> {
    let name = case["name"].as_str().unwrap();
    let kind = case["kind"]
        .as_str()
        .map(|k| SchedulerKind::parse(k).unwrap());
    let cfg = Config::from_value(
        format!("{name}/scheduler_config.json"),
        case["config"].clone(),
    )
    .unwrap();
    let mut s = build_scheduler(kind, Some(&cfg), &options(&case["options"]))
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    s.set_timesteps(case["steps"].as_u64().unwrap() as usize)
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    s
}

/// The fake model of the fixture script: 0.3·x + (0.001·t)·c.
fn model(x: &Tensor, t: f64, c: &Tensor) -> Tensor {
    x.scale(0.3)
        .unwrap()
        .add(&c.scale(0.001 * t).unwrap())
        .unwrap()
}

/// Row `i` of a stacked [n, 1, 4, 2, 2] fixture tensor.
fn row(t: &Tensor, i: usize) -> Tensor {
    t.narrow(0, i, 1)
        .unwrap()
        .reshape(&SHAPE)
        .unwrap()
        .contiguous()
        .unwrap()
}

struct Files(HashMap<String, Fixture>);

impl Files {
    fn get(&mut self, file: &str) -> &Fixture {
        self.0
            .entry(file.to_string())
            .or_insert_with(|| Fixture::load(file))
    }
}

fn all_finite(t: &Tensor) -> bool {
    t.to_vec_f64().iter().all(|v| v.is_finite())
}

/// `assert_close`'s error measure: max |a − e| / (|e| + 0.1·max|e|).
fn rel_err(actual: &Tensor, expected: &Tensor) -> f64 {
    assert_eq!(actual.shape(), expected.shape());
    let (a, e) = (actual.to_vec_f64(), expected.to_vec_f64());
    let scale = e.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(1e-12);
    a.iter()
        .zip(&e)
        .map(|(x, y)| {
            let r = (x - y).abs() / (y.abs() + 0.1 * scale);
            if r.is_nan() {
                f64::INFINITY
            } else {
                r
            }
        })
        .fold(0.0, f64::max)
}

/// Runs one case in `dtype`; returns the worst relative error of the steps fed
/// diffusers' samples and of the free run (timesteps and sigmas assert directly).
fn check_case(case: &Value, fx: &Fixture, dtype: DType) -> (f64, f64) {
    let name = case["name"].as_str().unwrap();
    let dn = if dtype == DType::F32 { "f32" } else { "f64" };
    let what = format!("{name} ({dn})");
    let stochastic = case["stochastic"].as_bool().unwrap();
    let c = fx.get("c").to_dtype(dtype).unwrap();
    let samples = fx.get(&format!("{name}.{dn}.samples"));
    let scaled_key = format!("{name}.{dn}.scaled");
    let scaled = fx.has(&scaled_key).then(|| fx.get(&scaled_key));
    let noise = stochastic.then(|| fx.get(&format!("{name}.{dn}.noise")));
    let nonfinite: Vec<usize> = case["nonfinite_steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect();

    // Timesteps exactly, except Euler's fractional Karras timesteps: numpy takes
    // the log of the training sigmas in float32 with its own SIMD log.
    let mut s = build(case);
    let expected_t = fx.get(&format!("{name}.timesteps")).to_vec_f64();
    let karras_float = s.name() == "EulerDiscreteScheduler" && s.config().use_karras_sigmas;
    assert_eq!(
        s.timesteps().len(),
        expected_t.len(),
        "{what}: timestep count"
    );
    for (i, (a, e)) in s.timesteps().iter().zip(&expected_t).enumerate() {
        let ok = if karras_float {
            (a - e).abs() <= 1e-3
        } else {
            a == e
        };
        assert!(ok, "{what}: timestep {i}: {a} vs {e}");
    }
    // (float32 sigmas: torch's vectorised sqrt is not always correctly rounded)
    let (a, e) = (
        s.init_noise_sigma(),
        fx.scalar(&format!("{name}.init_sigma")),
    );
    assert!(
        (a - e).abs() <= 1e-6 * e,
        "{what}: init_noise_sigma {a} vs {e}"
    );
    assert_eq!(s.needs_noise(), stochastic, "{what}: needs_noise");

    // Step by step from diffusers' own samples.
    let n = expected_t.len();
    let mut worst = (0.0f64, 0.0f64);
    for i in 0..n {
        let x = row(&samples, i);
        let xin = s.scale_model_input(&x, i).unwrap();
        assert_eq!(xin.dtype(), dtype);
        match &scaled {
            Some(sc) => assert_close(&xin, &row(sc, i), RTOL, &format!("{what}: scaled {i}")),
            None => assert_eq!(xin.to_vec_f64(), x.to_vec_f64(), "{what}: scaled {i}"),
        }
        let xin = scaled.as_ref().map_or(x.clone(), |sc| row(sc, i));
        let mo = model(&xin, s.timesteps()[i], &c);
        let nz = noise.as_ref().map(|nz| row(nz, i));
        let out = s
            .step(&mo, i, &x, nz.as_ref())
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(out.dtype(), dtype, "{what}: step {i} dtype");
        if nonfinite.contains(&i) {
            // diffusers computes 0·∞ here (UniPC bh1 or noise prediction ending on
            // sigma 0); medsyn returns the limit, the data prediction
            assert!(all_finite(&out), "{what}: step {i} is not finite");
            continue;
        }
        worst.0 = worst.0.max(rel_err(&out, &row(&samples, i + 1)));
    }

    // Free-running from the initial sample.
    let mut s = build(case);
    let mut x = row(&samples, 0);
    for i in 0..n {
        let xin = s.scale_model_input(&x, i).unwrap();
        let mo = model(&xin, s.timesteps()[i], &c);
        let nz = noise.as_ref().map(|nz| row(nz, i));
        x = s.step(&mo, i, &x, nz.as_ref()).unwrap();
        if !nonfinite.contains(&i) {
            worst.1 = worst.1.max(rel_err(&x, &row(&samples, i + 1)));
        }
    }
    worst
}

#[test]
fn every_scheduler_case_matches_diffusers_in_f32_and_f64() {
    let all = fixture_json();
    let mut files = Files(HashMap::new());
    let cases = all["cases"].as_array().unwrap();
    assert!(cases.len() >= 80);
    let mut report = vec![];
    for case in cases {
        let fx = files.get(case["file"].as_str().unwrap());
        for dtype in [DType::F32, DType::F64] {
            let (stepped, free) = check_case(case, fx, dtype);
            report.push((
                stepped.max(free),
                stepped,
                free,
                case["name"].as_str().unwrap(),
                dtype,
            ));
        }
    }
    report.sort_by(|a, b| b.0.total_cmp(&a.0));
    for r in report.iter().take(12) {
        eprintln!(
            "{:>24} {}: stepped {:.2e}, free-running {:.2e}",
            r.3, r.4, r.1, r.2
        );
    }
    let bad: Vec<_> = report
        .iter()
        .filter(|r| r.0.is_nan() || r.0 > RTOL)
        .collect();
    assert!(
        bad.is_empty(),
        "{} runs exceed {RTOL:e}: {bad:?}",
        bad.len()
    );
    // In f32 each step reproduces diffusers' arithmetic to the bit, except where
    // Euler's Karras timesteps come from numpy's float32 log and for UniPC's
    // order-3 einsum; diffusers' f64 runs are partly float32 (Euler and DPM-Solver
    // upcast to float32, not float64), hence the looser overall bound.
    let f32_worst = report
        .iter()
        .filter(|r| r.4 == DType::F32)
        .fold(0.0f64, |m, r| m.max(r.1));
    assert!(
        f32_worst <= STEP_RTOL_F32,
        "f32 single steps: {f32_worst:.2e}"
    );
}

#[test]
fn half_samples_are_computed_in_f32_and_returned_in_their_dtype() {
    let cfg = Config::from_value("sd/scheduler_config.json", sd1()).unwrap();
    for name in ["pndm", "ddim", "dpmpp-2m", "euler", "euler-a", "unipc"] {
        let kind = SchedulerKind::parse(name).unwrap();
        let mut s32 = build_scheduler(Some(kind), Some(&cfg), &Default::default()).unwrap();
        let mut s16 = build_scheduler(Some(kind), Some(&cfg), &Default::default()).unwrap();
        s32.set_timesteps(4).unwrap();
        s16.set_timesteps(4).unwrap();
        let x = Tensor::full(0.75, &SHAPE, DType::BF16).unwrap();
        let mo = Tensor::full(-0.5, &SHAPE, DType::BF16).unwrap();
        let nz = Tensor::full(0.25, &SHAPE, DType::BF16).unwrap();
        let noise = s16.needs_noise().then_some(&nz);
        let a = s16.step(&mo, 0, &x, noise).unwrap();
        assert_eq!(a.dtype(), DType::BF16, "{name}");
        let f = |t: &Tensor| t.to_dtype(DType::F32).unwrap();
        let nz32 = f(&nz);
        let b = s32.step(&f(&mo), 0, &f(&x), noise.map(|_| &nz32)).unwrap();
        assert_close(&a, &b.to_dtype(DType::BF16).unwrap(), 0.0, name);
    }
}

#[test]
fn training_noise_schedule_matches_ddpm_scheduler() {
    let all = fixture_json();
    let fx = Fixture::load("sched_noise");
    let (x0, eps) = (fx.get("x0"), fx.get("noise"));
    for nc in all["noise"].as_array().unwrap() {
        let name = nc["name"].as_str().unwrap();
        let cfg = Config::from_value(name, nc["config"].clone()).unwrap();
        let ns = NoiseSchedule::from_config(Some(&cfg), None).unwrap();
        let ts: Vec<usize> = nc["timesteps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_u64().unwrap() as usize)
            .collect();
        let ac = fx.get(&format!("{name}.alphas_cumprod")).to_vec_f32();
        assert_eq!(
            ns.alphas_cumprod(),
            &ac[..],
            "{name}: alphas_cumprod (bitwise)"
        );
        let snr = ns.snr(&ts).unwrap();
        assert_eq!(
            snr,
            fx.get(&format!("{name}.snr")).to_vec_f64(),
            "{name}: snr"
        );
        for (dtype, dn) in [
            (DType::F32, "f32"),
            (DType::F64, "f64"),
            (DType::BF16, "bf16"),
        ] {
            let (a, n) = (x0.to_dtype(dtype).unwrap(), eps.to_dtype(dtype).unwrap());
            let noisy = ns.add_noise(&a, &n, &ts).unwrap();
            let vel = ns.velocity(&a, &n, &ts).unwrap();
            assert_eq!(noisy.dtype(), dtype);
            let rtol = if dtype == DType::F64 { 1e-12 } else { 1e-6 };
            let what = format!("{name} ({dn})");
            assert_close(
                &noisy,
                &fx.get(&format!("{name}.{dn}.add_noise")),
                rtol,
                &what,
            );
            assert_close(&vel, &fx.get(&format!("{name}.{dn}.velocity")), rtol, &what);
        }
    }
}

fn sd1() -> Value {
    json!({
        "_class_name": "PNDMScheduler",
        "beta_end": 0.012,
        "beta_schedule": "scaled_linear",
        "beta_start": 0.00085,
        "num_train_timesteps": 1000,
        "set_alpha_to_one": false,
        "skip_prk_steps": true,
        "steps_offset": 1,
        "trained_betas": null,
        "clip_sample": false
    })
}

#[test]
fn loss_target_follows_the_prediction_type() {
    let x0 = Tensor::from_vec(vec![1.0f32, -2.0, 0.5, 3.0], &[2, 2]).unwrap();
    let eps = Tensor::from_vec(vec![0.1f32, 0.2, -0.3, 0.4], &[2, 2]).unwrap();
    let ts = [10, 900];
    let cfg = Config::from_value("sd", sd1()).unwrap();
    let e = NoiseSchedule::from_config(Some(&cfg), None).unwrap();
    assert_eq!(e.prediction_type(), PredictionType::Epsilon);
    assert_eq!(
        e.target(&x0, &eps, &ts).unwrap().to_vec_f32(),
        eps.to_vec_f32()
    );
    let v = NoiseSchedule::from_config(Some(&cfg), Some("v_prediction")).unwrap();
    assert_eq!(
        v.target(&x0, &eps, &ts).unwrap().to_vec_f32(),
        v.velocity(&x0, &eps, &ts).unwrap().to_vec_f32()
    );
    let s = NoiseSchedule::from_config(Some(&cfg), Some("sample")).unwrap();
    assert_eq!(
        s.target(&x0, &eps, &ts).unwrap().to_vec_f32(),
        x0.to_vec_f32()
    );
    // v = sqrt(a)·eps − sqrt(1−a)·x0 by hand at t = 10
    let a = v.alphas_cumprod()[10];
    let want = a.sqrt() * 0.1 - (1.0 - a).sqrt() * 1.0;
    assert_eq!(v.velocity(&x0, &eps, &ts).unwrap().to_vec_f32()[0], want);
    assert_eq!(e.num_train_timesteps(), 1000);

    let err = |r: medsyn::Result<Tensor>| r.unwrap_err().to_string();
    let m = err(e.add_noise(&x0, &eps, &[1]));
    assert!(m.contains("1 timesteps") && m.contains("[2, 2]"), "{m}");
    let m = err(e.add_noise(&x0, &eps, &[1, 1000]));
    assert!(m.contains("timestep 1000") && m.contains("0..1000"), "{m}");
    let m = err(e.velocity(&x0, &eps.to_dtype(DType::F64).unwrap(), &ts));
    assert!(m.contains("must match"), "{m}");
    let m = NoiseSchedule::from_config(None, Some("flow"))
        .unwrap_err()
        .to_string();
    assert!(m.contains("prediction_type `flow`"), "{m}");
    let bad = Config::from_value("x.json", json!({"beta_schedule": "sigmoid"})).unwrap();
    let m = NoiseSchedule::from_config(Some(&bad), None)
        .unwrap_err()
        .to_string();
    assert!(
        m.contains("`sigmoid` is not supported") && m.contains("scaled_linear"),
        "{m}"
    );
}

#[test]
fn from_config_uses_known_keys_and_each_classs_defaults() {
    let cfg = Config::from_value("sd/scheduler_config.json", sd1()).unwrap();
    let none = SchedulerOptions::default();
    let get = |name: &str| {
        build_scheduler(Some(SchedulerKind::parse(name).unwrap()), Some(&cfg), &none).unwrap()
    };
    // timestep_spacing absent: each class's own default
    assert_eq!(
        get("pndm").config().timestep_spacing,
        TimestepSpacing::Leading
    );
    assert_eq!(
        get("ddim").config().timestep_spacing,
        TimestepSpacing::Leading
    );
    for n in ["dpmpp-2m", "euler", "euler-a", "unipc"] {
        assert_eq!(
            get(n).config().timestep_spacing,
            TimestepSpacing::Linspace,
            "{n}"
        );
    }
    // DDIM takes clip_sample/set_alpha_to_one from the file; PNDM knows no clip_sample
    let ddim = get("ddim");
    assert!(!ddim.config().clip_sample && !ddim.config().set_alpha_to_one);
    assert!(get("pndm").config().skip_prk_steps);
    // ... and its own defaults without a file
    let d = build_scheduler(Some(SchedulerKind::Ddim), None, &none).unwrap();
    assert!(d.config().clip_sample && d.config().set_alpha_to_one);
    assert_eq!(d.config().betas.beta_end, 0.02);
    // _class_name picks the scheduler when none is named; class names parse too
    assert_eq!(
        build_scheduler(None, Some(&cfg), &none).unwrap().name(),
        "PNDMScheduler"
    );
    assert_eq!(
        SchedulerKind::parse("UniPCMultistepScheduler").unwrap(),
        SchedulerKind::UniPC
    );
    assert_eq!(
        SchedulerKind::parse("Euler-A").unwrap(),
        SchedulerKind::EulerAncestral
    );
    // overrides apply over the file
    let o = SchedulerOptions {
        use_karras_sigmas: Some(true),
        timestep_spacing: Some("trailing".into()),
        prediction_type: Some("v_prediction".into()),
        ..Default::default()
    };
    let s = build_scheduler(Some(SchedulerKind::DpmSolverPP2M), Some(&cfg), &o).unwrap();
    assert!(s.config().use_karras_sigmas);
    assert_eq!(s.config().timestep_spacing, TimestepSpacing::Trailing);
    assert_eq!(s.config().prediction_type, PredictionType::VPrediction);
    // configs as diffusers 0.42 saves them (timestep_spacing written out), read
    // from files
    let dir = std::env::temp_dir().join(format!("medsyn-sched-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut v1 = sd1();
    v1["_diffusers_version"] = json!("0.42.1");
    v1["prediction_type"] = json!("epsilon");
    v1["timestep_spacing"] = json!("leading");
    let p1 = dir.join("v1.json");
    std::fs::write(&p1, v1.to_string()).unwrap();
    let v1 = Config::load(&p1).unwrap();
    assert_eq!(
        build_scheduler(None, Some(&v1), &none).unwrap().name(),
        "PNDMScheduler"
    );
    let e = build_scheduler(Some(SchedulerKind::Euler), Some(&v1), &none).unwrap();
    assert_eq!(e.config().timestep_spacing, TimestepSpacing::Leading);
    let v2 = json!({
        "_class_name": "DDIMScheduler", "_diffusers_version": "0.42.1",
        "beta_end": 0.012, "beta_schedule": "scaled_linear", "beta_start": 0.00085,
        "clip_sample": false, "clip_sample_range": 1.0, "dynamic_thresholding_ratio": 0.995,
        "num_train_timesteps": 1000, "prediction_type": "v_prediction",
        "rescale_betas_zero_snr": false, "sample_max_value": 1.0, "set_alpha_to_one": false,
        "steps_offset": 1, "thresholding": false, "timestep_spacing": "leading",
        "trained_betas": null
    });
    let p2 = dir.join("v2.json");
    std::fs::write(&p2, v2.to_string()).unwrap();
    let v2 = Config::load(&p2).unwrap();
    let s = build_scheduler(None, Some(&v2), &none).unwrap();
    assert_eq!(s.name(), "DDIMScheduler");
    assert_eq!(s.config().prediction_type, PredictionType::VPrediction);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn bad_input_gives_clear_errors() {
    let none = SchedulerOptions::default();
    let cfg = Config::from_value("sd/scheduler_config.json", sd1()).unwrap();
    let build = |kind: Option<SchedulerKind>, c: &Config, o: &SchedulerOptions| {
        build_scheduler(kind, Some(c), o)
            .map(|_| ())
            .unwrap_err()
            .to_string()
    };

    let m = SchedulerKind::parse("lms-magic").unwrap_err().to_string();
    assert!(
        m.contains("lms-magic") && m.contains("pndm, ddim, dpmpp-2m, euler, euler-a, unipc"),
        "{m}"
    );

    let mut v = sd1();
    v["thresholding"] = json!(true);
    let t = Config::from_value("t.json", v).unwrap();
    let m = build(Some(SchedulerKind::Ddim), &t, &none);
    assert!(
        m.contains("thresholding") && m.contains("not supported") && m.contains("t.json"),
        "{m}"
    );
    // Euler does not know the key, so it is ignored (as diffusers' from_config does)
    assert!(build_scheduler(Some(SchedulerKind::Euler), Some(&t), &none).is_ok());

    let mut v = sd1();
    v["_class_name"] = json!("LMSDiscreteScheduler");
    let lms = Config::from_value("lms.json", v).unwrap();
    let m = build(None, &lms, &none);
    assert!(
        m.contains("LMSDiscreteScheduler") && m.contains("euler-a"),
        "{m}"
    );
    assert!(build_scheduler(None, None, &none).is_err());

    let mut v = sd1();
    v["algorithm_type"] = json!("sde-dpmsolver++");
    let sde = Config::from_value("sde.json", v).unwrap();
    let m = build(Some(SchedulerKind::DpmSolverPP2M), &sde, &none);
    assert!(
        m.contains("sde-dpmsolver++") && m.contains("dpmsolver++"),
        "{m}"
    );

    let karras = SchedulerOptions {
        use_karras_sigmas: Some(true),
        ..Default::default()
    };
    let m = build(Some(SchedulerKind::Pndm), &cfg, &karras);
    assert!(m.contains("Karras"), "{m}");
    let eta = SchedulerOptions {
        eta: 0.5,
        ..Default::default()
    };
    let m = build(Some(SchedulerKind::Euler), &cfg, &eta);
    assert!(m.contains("eta") && m.contains("DDIM"), "{m}");
    let sample = SchedulerOptions {
        prediction_type: Some("sample".into()),
        ..Default::default()
    };
    let m = build(Some(SchedulerKind::Pndm), &cfg, &sample);
    assert!(
        m.contains("`sample` is not supported") && m.contains("PNDMScheduler"),
        "{m}"
    );
    let spacing = SchedulerOptions {
        timestep_spacing: Some("log".into()),
        ..Default::default()
    };
    let m = build(Some(SchedulerKind::Ddim), &cfg, &spacing);
    assert!(m.contains("`log`") && m.contains("trailing"), "{m}");

    // step counts
    for name in ["pndm", "ddim", "dpmpp-2m", "euler", "euler-a", "unipc"] {
        let kind = SchedulerKind::parse(name).unwrap();
        let mut s = build_scheduler(Some(kind), Some(&cfg), &none).unwrap();
        let x = Tensor::zeros(&SHAPE, DType::F32).unwrap();
        let m = s.step(&x, 0, &x, None).unwrap_err().to_string();
        assert!(m.contains("set_timesteps"), "{name}: {m}");
        let m = s.set_timesteps(0).unwrap_err().to_string();
        assert!(m.contains("at least 1"), "{name}: {m}");
        let m = s.set_timesteps(1001).unwrap_err().to_string();
        assert!(
            m.contains("1001") && m.contains("1000 training timesteps"),
            "{name}: {m}"
        );
        s.set_timesteps(5).unwrap();
        let m = s.scale_model_input(&x, 99).unwrap_err().to_string();
        assert!(m.contains("step index 99"), "{name}: {m}");
    }

    // noise: required by euler-a, refused by deterministic schedulers
    let x = Tensor::zeros(&SHAPE, DType::F32).unwrap();
    let mut ea = build_scheduler(Some(SchedulerKind::EulerAncestral), Some(&cfg), &none).unwrap();
    ea.set_timesteps(5).unwrap();
    let m = ea.step(&x, 0, &x, None).unwrap_err().to_string();
    assert!(m.contains("needs noise"), "{m}");
    let small = Tensor::zeros(&[1, 4, 2], DType::F32).unwrap();
    let m = ea.step(&x, 0, &x, Some(&small)).unwrap_err().to_string();
    assert!(m.contains("noise shape"), "{m}");
    let mut pndm = build_scheduler(Some(SchedulerKind::Pndm), Some(&cfg), &none).unwrap();
    pndm.set_timesteps(5).unwrap();
    let m = pndm.step(&x, 0, &x, Some(&x)).unwrap_err().to_string();
    assert!(m.contains("takes no noise"), "{m}");
    let mut ddim = build_scheduler(Some(SchedulerKind::Ddim), Some(&cfg), &eta).unwrap();
    ddim.set_timesteps(5).unwrap();
    assert!(ddim.needs_noise());
    assert!(ddim
        .step(&x, 0, &x, None)
        .unwrap_err()
        .to_string()
        .contains("needs noise"));

    // order of steps, shapes, dtypes
    let mut dpm = build_scheduler(Some(SchedulerKind::DpmSolverPP2M), Some(&cfg), &none).unwrap();
    dpm.set_timesteps(5).unwrap();
    dpm.step(&x, 0, &x, None).unwrap();
    let m = dpm.step(&x, 2, &x, None).unwrap_err().to_string();
    assert!(
        m.contains("step 2") && m.contains("step 1 was expected"),
        "{m}"
    );
    let m = dpm.step(&small, 1, &x, None).unwrap_err().to_string();
    assert!(m.contains("differ in shape"), "{m}");
    let ids = Tensor::from_i64(vec![0; 16], &SHAPE).unwrap();
    assert!(dpm.step(&ids, 1, &ids, None).is_err());

    // PRK warm-up needs at least 4 steps
    let mut v = sd1();
    v["skip_prk_steps"] = json!(false);
    let prk = Config::from_value("prk.json", v).unwrap();
    let mut p = build_scheduler(Some(SchedulerKind::Pndm), Some(&prk), &none).unwrap();
    let m = p.set_timesteps(3).unwrap_err().to_string();
    assert!(m.contains("at least 4"), "{m}");
    // config values of the wrong type name the file and key
    let mut v = sd1();
    v["steps_offset"] = json!("one");
    let bad = Config::from_value("bad.json", v).unwrap();
    let m = build(Some(SchedulerKind::Euler), &bad, &none);
    assert!(m.contains("bad.json") && m.contains("steps_offset"), "{m}");
    let mut v = sd1();
    v["solver_order"] = json!(4);
    let bad = Config::from_value("bad.json", v).unwrap();
    let m = build(Some(SchedulerKind::UniPC), &bad, &none);
    assert!(m.contains("solver_order") && m.contains("1, 2, 3"), "{m}");
}

#[test]
fn img2img_may_start_mid_schedule() {
    // diffusers' set_begin_index: the first step may be at any index, then in order.
    let cfg = Config::from_value("sd/scheduler_config.json", sd1()).unwrap();
    let none = SchedulerOptions::default();
    let x = Tensor::full(0.5, &SHAPE, DType::F32).unwrap();
    for name in ["ddim", "dpmpp-2m", "euler", "unipc"] {
        let kind = SchedulerKind::parse(name).unwrap();
        let mut s = build_scheduler(Some(kind), Some(&cfg), &none).unwrap();
        s.set_timesteps(10).unwrap();
        for i in 4..10 {
            let xin = s.scale_model_input(&x, i).unwrap();
            s.step(&xin, i, &x, None)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }
}
