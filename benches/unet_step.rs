//! One Stable Diffusion U-Net step on the CPU against diffusers on the CPU (same run,
//! same thread count) and against the machine's measured FMA peak.
//! `cargo bench --bench unet_step`; writes target/bench-results/unet_step.json.
//!
//! Each case is a `UNet2DConditionModel` config with random weights (the values do not
//! matter for speed, the shapes do), run in f32 without gradients on a batch of 2 (as
//! with classifier-free guidance), a 77-token context and one timestep. The configs
//! live here only: benches/diffusers_unet_reference.py receives them as JSON, builds
//! the same models, counts their forward's FLOPs (torch's FlopCounterMode) and times
//! them as a server process. medsyn and diffusers alternate case by case over several
//! rounds, so both see the same machine load; each number is the median over rounds of
//! a per-round median.
//!
//! The thread count is rayon's (`RAYON_NUM_THREADS=1 cargo bench --bench unet_step`
//! compares single-threaded, which is far less sensitive to other work on the machine).
//! `MEDSYN_BENCH_ONLY=<case>` times one medsyn case alone (for profilers);
//! `MEDSYN_BENCH_PRINT_CASES=1` prints the cases' JSON (for running the script alone).

#[path = "common/mod.rs"]
mod common;

use common::{
    fma_rate, fmt_opt, load_average, load_line, median, median_seconds, peak_line, write_report,
    PyServer,
};
use medsyn::autograd::no_grad;
use medsyn::models::unet::{UNet2DConditionModel, UNetConfig};
use medsyn::models::{Config, Weights};
use medsyn::tensor::Philox;
use medsyn::{DType, Tensor};
use serde_json::{json, Value};

const ROUNDS: usize = 5;
const WARMUP: usize = 1;
const RUNS: usize = 3;
const BATCH: usize = 2;
const CONTEXT_LEN: usize = 77;
const TIMESTEP: f64 = 500.0;

/// One benchmark configuration: a diffusers U-Net config and the latent size.
struct Spec {
    key: &'static str,
    label: &'static str,
    config: Value,
    latent: usize,
}

impl Spec {
    fn in_channels(&self) -> usize {
        self.config["in_channels"].as_u64().expect("in_channels") as usize
    }

    fn cross_attention_dim(&self) -> usize {
        self.config["cross_attention_dim"]
            .as_u64()
            .expect("cross_attention_dim") as usize
    }

    fn sample_shape(&self) -> [usize; 4] {
        [BATCH, self.in_channels(), self.latent, self.latent]
    }

    fn context_shape(&self) -> [usize; 3] {
        [BATCH, CONTEXT_LEN, self.cross_attention_dim()]
    }

    /// What benches/diffusers_unet_reference.py needs to build and run the case.
    fn to_json(&self) -> Value {
        json!({
            "config": self.config,
            "sample": self.sample_shape(),
            "context": self.context_shape(),
            "timestep": TIMESTEP,
        })
    }
}

fn specs() -> Vec<Spec> {
    vec![
        Spec {
            key: "tiny",
            label: "tiny (32,64) 16x16",
            config: json!({
                "sample_size": 16,
                "in_channels": 4,
                "out_channels": 4,
                "block_out_channels": [32, 64],
                "layers_per_block": 1,
                "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
                "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
                "cross_attention_dim": 32,
                "attention_head_dim": 4,
                "norm_num_groups": 8,
            }),
            latent: 16,
        },
        Spec {
            key: "mid",
            label: "mid (128,256,512) 32x32",
            config: json!({
                "sample_size": 32,
                "in_channels": 4,
                "out_channels": 4,
                "block_out_channels": [128, 256, 512],
                "layers_per_block": 2,
                "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
                "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
                "cross_attention_dim": 768,
                "attention_head_dim": 8,
                "norm_num_groups": 32,
            }),
            latent: 32,
        },
    ]
}

fn cases_json(specs: &[Spec]) -> Value {
    Value::Object(
        specs
            .iter()
            .map(|s| (s.key.to_string(), s.to_json()))
            .collect(),
    )
}

/// A built medsyn case: its parameter count and one timed U-Net step.
struct Case {
    parameters: usize,
    run: Box<dyn FnMut()>,
}

fn build(spec: &Spec, seed: u64) -> medsyn::Result<Case> {
    let path = format!("benches/unet_step.rs ({} config)", spec.key);
    let cfg = UNetConfig::from_config(&Config::from_value(path, spec.config.clone())?)?;
    let unet = UNet2DConditionModel::load(&cfg, &Weights::random(seed, DType::F32))?;
    let parameters = unet.parameters().iter().map(|(_, p)| p.numel()).sum();
    let mut rng = Philox::new(seed + 1000);
    let sample = Tensor::randn(&mut rng, &spec.sample_shape(), DType::F32)?;
    let context = Tensor::randn(&mut rng, &spec.context_shape(), DType::F32)?;
    // One step up front: a failing forward is reported here, not inside the timing.
    {
        let _g = no_grad();
        let out = unet.forward(&sample, &[TIMESTEP], &context)?;
        medsyn::ensure!(
            out.shape() == sample.shape(),
            "U-Net output shape {:?} differs from the sample's {:?}",
            out.shape(),
            sample.shape()
        );
    }
    let run = Box::new(move || {
        let _g = no_grad();
        std::hint::black_box(unet.forward(&sample, &[TIMESTEP], &context).unwrap());
    });
    Ok(Case { parameters, run })
}

fn build_all(specs: &[Spec]) -> Vec<Case> {
    specs
        .iter()
        .enumerate()
        .map(|(i, s)| build(s, i as u64).unwrap_or_else(|e| panic!("building case {}: {e}", s.key)))
        .collect()
}

/// Time one medsyn case over many rounds; print its best and median.
fn only(key: &str) {
    let specs = specs();
    let Some(i) = specs.iter().position(|s| s.key == key) else {
        let keys: Vec<_> = specs.iter().map(|s| s.key).collect();
        return println!("unknown case {key}; cases: {keys:?}");
    };
    let mut case =
        build(&specs[i], i as u64).unwrap_or_else(|e| panic!("building case {key}: {e}"));
    let t: Vec<f64> = (0..2 * ROUNDS)
        .map(|_| median_seconds(&mut case.run, WARMUP, RUNS))
        .collect();
    let best = t.iter().copied().fold(f64::INFINITY, f64::min);
    println!(
        "{key}: best {:.1} ms, median {:.1} ms",
        best * 1e3,
        median(t) * 1e3
    );
}

fn start_diffusers(threads: usize, specs: &[Spec]) -> Result<PyServer, String> {
    let args = [
        "--threads".to_string(),
        threads.to_string(),
        "--warmup".to_string(),
        WARMUP.to_string(),
        "--runs".to_string(),
        RUNS.to_string(),
        "--cases".to_string(),
        cases_json(specs).to_string(),
    ];
    PyServer::start("diffusers_unet_reference.py", &args)
}

fn main() {
    if std::env::var_os("MEDSYN_BENCH_PRINT_CASES").is_some() {
        return println!("{}", cases_json(&specs()));
    }
    if let Ok(key) = std::env::var("MEDSYN_BENCH_ONLY") {
        return only(&key);
    }
    let threads = rayon::current_num_threads();
    let specs = specs();
    let load_before = load_average();
    let mut peak = fma_rate();
    let mut reference = start_diffusers(threads, &specs);
    let mut cases = build_all(&specs);
    let mut rows = Vec::new();
    for (spec, case) in specs.iter().zip(&mut cases) {
        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
        for _ in 0..ROUNDS {
            ours.push(median_seconds(&mut case.run, WARMUP, RUNS));
            if let Ok(r) = reference.as_mut() {
                match r.time(spec.key) {
                    Ok(s) => theirs.push(s),
                    Err(e) => reference = Err(format!("diffusers failed on {}: {e}", spec.key)),
                }
            }
        }
        let t = (reference.is_ok() && theirs.len() == ROUNDS).then(|| median(theirs));
        rows.push((median(ours), t));
        // The peak is the best the FMA loop reaches, sampled between cases (other
        // processes on the machine make any single sample low).
        peak = peak.zip(fma_rate()).map(|(a, b)| a.max(b));
    }

    let load_after = load_average();
    let ref_case = |key: &str| {
        reference
            .as_ref()
            .ok()
            .map(|r| r.info["cases"][key].clone())
    };
    println!(
        "unet_step: one UNet2DConditionModel forward, f32, batch {BATCH}, {CONTEXT_LEN}-token context, \
         timestep {TIMESTEP}, no grad, {threads} rayon threads"
    );
    println!("ratio = medsyn time / diffusers time (< 1: medsyn faster; target <= 1.0 at mid)");
    println!("each time: median over {ROUNDS} rounds (medsyn and diffusers alternating) of the median of {RUNS} runs");
    println!("{}", peak_line(peak, threads));
    println!("{}", load_line(load_before, load_after, threads));
    match &reference {
        Ok(r) => println!(
            "diffusers {} on torch {} with {} threads (mkldnn: {}); FLOPs from torch's FlopCounterMode",
            r.info["diffusers"], r.info["torch"], r.info["threads"], r.info["mkldnn"]
        ),
        Err(e) => println!("diffusers column and FLOP counts missing: {e}"),
    }
    println!(
        "{:<24} {:>10} {:>7} {:>9} {:>10} {:>12} {:>6} {:>8} {:>8} {:>14}",
        "case",
        "parameters",
        "GFLOP",
        "medsyn ms",
        "GFLOP/s",
        "diffusers ms",
        "ratio",
        "GFLOP/s",
        "medsyn",
        "diffusers"
    );
    println!("{:>102}", "(% of measured FMA peak)");
    let mut json_rows = Vec::new();
    for ((spec, case), &(secs, t)) in specs.iter().zip(&cases).zip(&rows) {
        let info = ref_case(spec.key);
        let flops = info.as_ref().and_then(|i| i["flops"].as_f64());
        let ref_params = info.as_ref().and_then(|i| i["parameters"].as_u64());
        let ours_rate = flops.map(|f| f / secs);
        let theirs_rate = flops.zip(t).map(|(f, t)| f / t);
        let frac = |rate: Option<f64>| rate.zip(peak).map(|(r, p)| r / p);
        let pct =
            |f: Option<f64>| fmt_opt(f.map(|f| f * 100.0), 1) + if f.is_some() { "%" } else { "" };
        let ratio = t.map(|t| secs / t);
        println!(
            "{:<24} {:>9.1}M {:>7} {:>9.1} {:>10} {:>12} {:>6} {:>8} {:>8} {:>14}",
            spec.label,
            case.parameters as f64 / 1e6,
            fmt_opt(flops.map(|f| f / 1e9), 2),
            secs * 1e3,
            fmt_opt(ours_rate.map(|r| r / 1e9), 1),
            fmt_opt(t.map(|t| t * 1e3), 1),
            fmt_opt(ratio, 2),
            fmt_opt(theirs_rate.map(|r| r / 1e9), 1),
            pct(frac(ours_rate)),
            pct(frac(theirs_rate)),
        );
        if let Some(p) = ref_params.filter(|&p| p as usize != case.parameters) {
            println!(
                "  WARNING: diffusers' model has {p} parameters, medsyn's {}: the architectures differ",
                case.parameters
            );
        }
        json_rows.push(json!({
            "case": spec.key,
            "label": spec.label,
            "spec": spec.to_json(),
            "parameters": case.parameters,
            "diffusers_parameters": ref_params,
            "flops": flops,
            "medsyn_seconds": secs,
            "medsyn_gflops": ours_rate.map(|r| r / 1e9),
            "diffusers_seconds": t,
            "diffusers_gflops": theirs_rate.map(|r| r / 1e9),
            "ratio_medsyn_over_diffusers_time": ratio,
            "medsyn_fraction_of_measured_fma_peak": frac(ours_rate),
            "diffusers_fraction_of_measured_fma_peak": frac(theirs_rate),
        }));
    }
    let report = json!({
        "threads": threads,
        "rounds": ROUNDS,
        "runs_per_round": RUNS,
        "fma_peak_gflops": peak.map(|p| p / 1e9),
        "load_average_before": load_before,
        "load_average_after": load_after,
        "reference": reference.as_ref().ok().map(|r| r.info.clone()),
        "reference_missing": reference.as_ref().err(),
        "cases": json_rows,
    });
    write_report("unet_step", &report);
}
