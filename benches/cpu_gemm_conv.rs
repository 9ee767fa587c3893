//! CPU GEMM and conv2d throughput against PyTorch CPU (same run, same thread count) and
//! against the machine's measured FMA peak. `cargo bench --bench cpu_gemm_conv`.
//! Writes the table to target/bench-results/cpu_gemm_conv.json.
//!
//! medsyn and torch alternate case by case over several rounds (torch runs as a server
//! process), so both sides see the same machine load; each number is the median over
//! rounds of a per-round median. `MEDSYN_BENCH_ONLY=<case>` times one medsyn case alone.

#[path = "common/mod.rs"]
mod common;

use common::{fma_rate, fmt_opt, median, peak_line, write_report, PyServer};
use medsyn::autograd::no_grad;
use medsyn::tensor::Philox;
use medsyn::{DType, Tensor};

const ROUNDS: usize = 5;
const WARMUP: usize = 1;
const RUNS: usize = 5;

fn median_seconds(f: &mut dyn FnMut()) -> f64 {
    common::median_seconds(f, WARMUP, RUNS)
}

struct Case {
    key: &'static str,
    label: &'static str,
    flops: f64,
    run: Box<dyn FnMut()>,
}

fn leaf(rng: &mut Philox, shape: &[usize], grad: bool) -> Tensor {
    let t = Tensor::randn(rng, shape, DType::F32).unwrap();
    if grad {
        t.into_param().unwrap()
    } else {
        t
    }
}

/// A backward-only case: clear the leaves' gradients, backpropagate `dy` from `y`.
fn backward_case(y: Tensor, dy: Tensor, leaves: Vec<Tensor>) -> Box<dyn FnMut()> {
    Box::new(move || {
        leaves.iter().for_each(Tensor::clear_grad);
        y.backward_with(&dy).unwrap();
    })
}

fn medsyn_cases() -> Vec<Case> {
    let mut rng = Philox::new(0);
    let mut cases = Vec::new();

    let n = 1024;
    let gemm_flops = 2.0 * (n * n * n) as f64;
    let (a, b) = (leaf(&mut rng, &[n, n], true), leaf(&mut rng, &[n, n], true));
    let (fa, fb) = (a.clone(), b.clone());
    let fwd = Box::new(move || {
        let _g = no_grad();
        std::hint::black_box(fa.matmul(&fb).unwrap());
    });
    cases.push(Case {
        key: "gemm_fwd",
        label: "GEMM 1024^3 forward",
        flops: gemm_flops,
        run: fwd,
    });
    let c = a.matmul(&b).unwrap();
    let dc = leaf(&mut rng, &[n, n], false);
    let bwd = backward_case(c, dc, vec![a, b]);
    cases.push(Case {
        key: "gemm_bwd",
        label: "GEMM 1024^3 backward (dA, dB)",
        flops: 2.0 * gemm_flops,
        run: bwd,
    });

    let (batch, ch, hw) = (8, 64, 64);
    let conv_flops = 2.0 * (batch * ch * hw * hw * ch * 9) as f64;
    let x = leaf(&mut rng, &[batch, ch, hw, hw], true);
    let w = leaf(&mut rng, &[ch, ch, 3, 3], true);
    let conv = |x: &Tensor, w: &Tensor| x.conv2d(w, None, (1, 1), (1, 1), (1, 1), 1).unwrap();
    let (fx, fw) = (x.clone(), w.clone());
    let fwd = Box::new(move || {
        let _g = no_grad();
        std::hint::black_box(conv(&fx, &fw));
    });
    cases.push(Case {
        key: "conv_fwd",
        label: "conv 3x3 64->64 64x64 b8 forward",
        flops: conv_flops,
        run: fwd,
    });
    let y = conv(&x, &w);
    let dy = leaf(&mut rng, y.shape(), false);
    let bwd = backward_case(y, dy.clone(), vec![x.clone(), w.clone()]);
    cases.push(Case {
        key: "conv_bwd",
        label: "conv 3x3 backward (dX, dW)",
        flops: 2.0 * conv_flops,
        run: bwd,
    });

    // The two halves of the backward on their own (frozen weight / constant input).
    for (key, label, xg, wg) in [
        (
            "conv_bwd_dx",
            "  of which dX only (frozen weight)",
            true,
            false,
        ),
        (
            "conv_bwd_dw",
            "  of which dW only (constant input)",
            false,
            true,
        ),
    ] {
        let (xi, wi) = (x.detach(), w.detach());
        xi.set_requires_grad(xg).unwrap();
        wi.set_requires_grad(wg).unwrap();
        let run = backward_case(conv(&xi, &wi), dy.clone(), vec![xi, wi]);
        cases.push(Case {
            key,
            label,
            flops: conv_flops,
            run,
        });
    }
    // One image: multi-threaded GEMMs instead of images on separate threads.
    let x1 = x.narrow(0, 0, 1).unwrap().contiguous().unwrap().detach();
    let fwd1 = Box::new(move || {
        let _g = no_grad();
        std::hint::black_box(conv(&x1, &w));
    });
    cases.push(Case {
        key: "conv_fwd_b1",
        label: "conv 3x3 batch 1 forward",
        flops: conv_flops / batch as f64,
        run: fwd1,
    });
    cases
}

/// benches/torch_cpu_reference.py in `--serve` mode: times one case per request.
fn start_torch(threads: usize) -> Result<PyServer, String> {
    let args = [
        "--threads".to_string(),
        threads.to_string(),
        "--warmup".to_string(),
        WARMUP.to_string(),
        "--runs".to_string(),
        RUNS.to_string(),
    ];
    PyServer::start("torch_cpu_reference.py", &args)
}

/// Time one medsyn case over many rounds; print its best and median.
fn only(key: &str) {
    let mut cases = medsyn_cases();
    let Some(case) = cases.iter_mut().find(|c| c.key == key) else {
        let keys: Vec<_> = cases.iter().map(|c| c.key).collect();
        return println!("unknown case {key}; cases: {keys:?}");
    };
    let t: Vec<f64> = (0..8 * ROUNDS)
        .map(|_| median_seconds(&mut case.run))
        .collect();
    let best = t.iter().copied().fold(f64::INFINITY, f64::min);
    println!(
        "{key}: best {:.3} ms, median {:.3} ms",
        best * 1e3,
        median(t) * 1e3
    );
}

fn main() {
    // MEDSYN_BENCH_ONLY=<case key>: time one medsyn case alone (for profilers).
    if let Ok(key) = std::env::var("MEDSYN_BENCH_ONLY") {
        return only(&key);
    }
    let threads = rayon::current_num_threads();
    let mut peak = fma_rate();
    let mut torch = start_torch(threads);
    let mut cases = medsyn_cases();
    let mut rows = Vec::new();
    for case in &mut cases {
        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
        for _ in 0..ROUNDS {
            ours.push(median_seconds(&mut case.run));
            if let Ok(t) = torch.as_mut() {
                match t.time(case.key) {
                    Ok(s) => theirs.push(s),
                    Err(e) => torch = Err(format!("torch failed on {}: {e}", case.key)),
                }
            }
        }
        let t = (torch.is_ok() && theirs.len() == ROUNDS).then(|| median(theirs));
        rows.push((case.key, case.label, case.flops, median(ours), t));
        // The peak is the best the FMA loop reaches, sampled between cases (other
        // processes on the machine make any single sample low).
        peak = peak.zip(fma_rate()).map(|(a, b)| a.max(b));
    }

    println!("cpu_gemm_conv: f32, {threads} rayon threads; ratio = medsyn time / torch time (target <= 1.0)");
    println!("each time: median over {ROUNDS} rounds (medsyn and torch alternating) of the median of {RUNS} runs");
    println!("{}", peak_line(peak, threads));
    match &torch {
        Ok(t) => println!(
            "torch {} with {} threads (mkldnn: {})",
            t.info["torch"], t.info["threads"], t.info["mkldnn"]
        ),
        Err(e) => println!("torch column missing: {e}"),
    }
    println!(
        "{:<36} {:>9} {:>8} {:>9} {:>8} {:>6} {:>19}",
        "case", "medsyn ms", "GFLOP/s", "torch ms", "GFLOP/s", "ratio", "of measured FMA peak"
    );
    let mut json_rows = Vec::new();
    for &(key, label, flops, secs, t) in &rows {
        let rate = flops / secs;
        let ratio = t.map(|t| secs / t);
        let frac = peak.map(|p| rate / p);
        println!(
            "{label:<36} {:>9.2} {:>8.1} {:>9} {:>8} {:>6} {:>19}",
            secs * 1e3,
            rate / 1e9,
            fmt_opt(t.map(|t| t * 1e3), 2),
            fmt_opt(t.map(|t| flops / t / 1e9), 1),
            fmt_opt(ratio, 2),
            fmt_opt(frac.map(|f| f * 100.0), 1) + if frac.is_some() { "%" } else { "" },
        );
        json_rows.push(serde_json::json!({
            "case": key,
            "label": label.trim(),
            "flops": flops,
            "medsyn_seconds": secs,
            "medsyn_gflops": rate / 1e9,
            "torch_seconds": t,
            "torch_gflops": t.map(|t| flops / t / 1e9),
            "ratio_medsyn_over_torch_time": ratio,
            "fraction_of_measured_fma_peak": frac,
        }));
    }
    let report = serde_json::json!({
        "threads": threads,
        "rounds": ROUNDS,
        "runs_per_round": RUNS,
        "fma_peak_gflops": peak.map(|p| p / 1e9),
        "torch": torch.as_ref().ok().map(|t| t.info.clone()),
        "torch_missing": torch.as_ref().err(),
        "cases": json_rows,
    });
    write_report("cpu_gemm_conv", &report);
}
