//! Shared bench helpers: median timing, the measured FMA peak, a Python reference
//! server process (torch/diffusers), and writing target/bench-results/<name>.json.
#![allow(dead_code)] // each bench uses its own subset

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Instant;

/// The middle value (upper middle for even lengths). `v` must not be empty.
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Runs `f` `warmup` times, then returns the median of `runs` timed runs, in seconds.
pub fn median_seconds(f: &mut dyn FnMut(), warmup: usize, runs: usize) -> f64 {
    for _ in 0..warmup {
        f();
    }
    median(
        (0..runs)
            .map(|_| {
                let t0 = Instant::now();
                f();
                t0.elapsed().as_secs_f64()
            })
            .collect(),
    )
}

/// FMA throughput of one thread: 12 independent 8-wide f32 FMA chains (enough to
/// cover the FMA latency on two pipes). Returns FLOPs done.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn fma_chains(iters: usize) -> f64 {
    use std::arch::x86_64::*;
    let a = _mm256_set1_ps(std::hint::black_box(0.999_999));
    let b = _mm256_set1_ps(std::hint::black_box(1e-7));
    let mut acc = [_mm256_set1_ps(1.0); 12];
    for _ in 0..iters {
        for v in acc.iter_mut() {
            *v = _mm256_fmadd_ps(*v, a, b);
        }
    }
    let mut sum = _mm256_setzero_ps();
    for v in acc {
        sum = _mm256_add_ps(sum, v);
    }
    std::hint::black_box(sum);
    (iters * 12 * 8 * 2) as f64
}

/// Measured f32 FLOP/s of the FMA microbenchmark on every rayon thread at once
/// (best of three short runs), or None without AVX2+FMA.
pub fn fma_rate() -> Option<f64> {
    #[cfg(target_arch = "x86_64")]
    {
        if !(is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")) {
            return None;
        }
        let run = || {
            let t0 = Instant::now();
            // SAFETY: avx2 and fma were detected above.
            let flops: f64 = rayon::broadcast(|_| unsafe { fma_chains(10_000_000) })
                .iter()
                .sum();
            flops / t0.elapsed().as_secs_f64()
        };
        Some((0..3).map(|_| run()).fold(0.0, f64::max))
    }
    #[cfg(not(target_arch = "x86_64"))]
    None
}

/// A line describing the measured FMA peak (`peak` in FLOP/s).
pub fn peak_line(peak: Option<f64>, threads: usize) -> String {
    match peak {
        Some(p) => format!(
            "measured FMA peak: {:.1} GFLOP/s ({threads} threads x 12 AVX2 FMA chains)",
            p / 1e9
        ),
        None => "measured FMA peak: unavailable (needs x86_64 with AVX2+FMA)".to_string(),
    }
}

/// The 1-minute load average (Linux /proc/loadavg), or None where unavailable.
pub fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// A line on the machine's load: the 1-minute load averages sampled before and after
/// timing; `threads` is what the bench itself keeps busy. Warns when other work shared
/// the cores: multi-threaded timings then measure scheduling more than kernels (torch's
/// OpenMP barriers suffer most).
pub fn load_line(before: Option<f64>, after: Option<f64>, threads: usize) -> String {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let (Some(b), Some(a)) = (before, after) else {
        return format!("machine load: unknown ({cores} cores)");
    };
    let others = b.max(a - threads as f64);
    let mut line = format!(
        "machine load average: {b:.2} before, {a:.2} after, on {cores} cores (other work: up to about {:.1} cores)",
        others.max(0.0)
    );
    if others > 0.5 {
        line += "\nWARNING: other work shared the cores; multi-threaded times (torch's most) are inflated and noisy";
    }
    line
}

/// `v` with `prec` decimals, or "-" when missing.
pub fn fmt_opt(v: Option<f64>, prec: usize) -> String {
    v.map_or("-".to_string(), |v| format!("{v:.prec$}"))
}

/// A Python reference script in `--serve` mode (benches/*_reference.py): it prints one
/// JSON info line at start, then answers each case name on stdin with one JSON line
/// `{"seconds": ..}`. The process is killed on drop.
pub struct PyServer {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    /// The script's first line.
    pub info: serde_json::Value,
}

impl PyServer {
    /// Starts `python3 benches/<script> <args..> --serve` and reads its info line.
    pub fn start(script: &str, args: &[String]) -> Result<PyServer, String> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("benches")
            .join(script);
        let mut child = Command::new("python3")
            .arg(&path)
            .args(args)
            .arg("--serve")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("could not run python3: {e}"))?;
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut server = PyServer {
            child,
            stdin,
            stdout,
            info: serde_json::Value::Null,
        };
        server.info = server
            .read()
            .map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(server)
    }

    fn read(&mut self) -> Result<serde_json::Value, String> {
        let mut line = String::new();
        self.stdout
            .read_line(&mut line)
            .map_err(|e| e.to_string())?;
        if line.is_empty() {
            let mut err = String::new();
            if let Some(mut e) = self.child.stderr.take() {
                std::io::Read::read_to_string(&mut e, &mut err).ok();
            }
            return Err(format!(
                "exited: {}",
                err.lines().last().unwrap_or("no output")
            ));
        }
        serde_json::from_str(&line).map_err(|e| format!("unreadable reply `{}`: {e}", line.trim()))
    }

    /// The reference's time for case `key`, in seconds.
    pub fn time(&mut self, key: &str) -> Result<f64, String> {
        writeln!(self.stdin, "{key}").map_err(|e| e.to_string())?;
        self.stdin.flush().map_err(|e| e.to_string())?;
        let reply = self.read()?;
        reply["seconds"]
            .as_f64()
            .ok_or_else(|| format!("no timing for {key}: {reply}"))
    }
}

impl Drop for PyServer {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

/// Writes `report` to target/bench-results/<name>.json and says where (or why not).
pub fn write_report(name: &str, report: &serde_json::Value) {
    let dir: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-results");
    let path = dir.join(format!("{name}.json"));
    match std::fs::create_dir_all(&dir)
        .and_then(|_| std::fs::write(&path, serde_json::to_string_pretty(report).unwrap()))
    {
        Ok(()) => println!("wrote {}", path.display()),
        Err(e) => println!("could not write {}: {e}", path.display()),
    }
}
