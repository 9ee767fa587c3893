//! Shared pieces of the GPU kernel tests: the device (opened once), random inputs, tolerances per
//! dtype, comparisons that report the max error, and the report file gpu-check.sh tabulates.

use medsyn::cuda::gpu::{round_to, suffix};
use medsyn::cuda::Gpu;
use medsyn::tensor::DType;
use std::io::Write;
use std::sync::OnceLock;

pub use cudarc::driver::{LaunchConfig, PushKernelArg};

/// The dtypes every kernel is checked in.
pub const DTYPES: [DType; 3] = [DType::F32, DType::BF16, DType::F16];

/// Device 0, or None (test skipped) when no usable GPU is present. With `MEDSYN_REQUIRE_GPU=1`
/// (scripts/gpu-check.sh sets it) a missing GPU fails the test instead.
pub fn gpu() -> Option<&'static Gpu> {
    static GPU: OnceLock<Option<Gpu>> = OnceLock::new();
    let g = GPU.get_or_init(|| match Gpu::open(0) {
        Ok(g) => Some(g),
        Err(e) => {
            if std::env::var("MEDSYN_REQUIRE_GPU").as_deref() == Ok("1") {
                panic!("MEDSYN_REQUIRE_GPU=1 but no GPU: {e}");
            }
            eprintln!("GPU tests skipped: {e}");
            None
        }
    });
    g.as_ref()
}

/// `n` values uniform in [lo, hi), deterministic in `seed` (xorshift64*; independent of the
/// crate's Philox so the inputs are not the kernels' own numbers).
pub fn uniform(seed: u64, n: usize, lo: f32, hi: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s >> 12;
            s ^= s << 25;
            s ^= s >> 27;
            let u = (s.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40) as f32 / (1u64 << 24) as f32;
            lo + (hi - lo) * u
        })
        .collect()
}

/// `n` values uniform in [lo, hi) rounded to `dtype` (the host copy of what the GPU holds).
pub fn uniform_as(seed: u64, n: usize, lo: f32, hi: f32, dtype: DType) -> Vec<f32> {
    round_to(&uniform(seed, n, lo, hi), dtype)
}

/// Relative tolerance for an output stored in `dtype` (one or two roundings of the result plus
/// f32 accumulation differences).
pub fn rtol(dtype: DType) -> f64 {
    match dtype {
        DType::F32 => 2e-5,
        DType::BF16 => 1.6e-2,
        DType::F16 => 2e-3,
        _ => 0.0,
    }
}

/// Checks `got` against `want` elementwise: |got − want| <= atol + rtol·|want|, NaN never
/// passes unless both are NaN. Records the max abs error in the report, panics naming the
/// first bad index.
pub fn check(kernel: &str, dtype: DType, got: &[f32], want: &[f32], atol: f64, rtol: f64) {
    assert_eq!(got.len(), want.len(), "{kernel} {dtype:?}: length");
    let mut max_err = 0.0f64;
    let mut first_bad: Option<usize> = None;
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let (g, w) = (g as f64, w as f64);
        let ok = if w.is_nan() {
            g.is_nan()
        } else if w.is_infinite() {
            g == w
        } else {
            let e = (g - w).abs();
            if e.is_finite() {
                max_err = max_err.max(e);
            }
            e <= atol + rtol * w.abs()
        };
        if !ok && first_bad.is_none() {
            first_bad = Some(i);
        }
    }
    let name = format!("{kernel} {}", suffix(dtype).unwrap_or("?"));
    record(&name, first_bad.is_none(), max_err);
    if let Some(i) = first_bad {
        panic!(
            "{name}: element {i} is {} where the CPU twin gives {} (atol {atol:e}, rtol {rtol:e}; max error {max_err:e})",
            got[i], want[i]
        );
    }
}

/// Checks exact equality (integer outputs, bit-exact kernels).
pub fn check_exact<T: PartialEq + std::fmt::Debug>(name: &str, got: &[T], want: &[T]) {
    assert_eq!(got.len(), want.len(), "{name}: length");
    let bad = got.iter().zip(want).position(|(g, w)| g != w);
    record(name, bad.is_none(), 0.0);
    if let Some(i) = bad {
        panic!(
            "{name}: element {i} is {:?}, expected {:?}",
            got[i], want[i]
        );
    }
}

/// Appends "name<TAB>pass|FAIL<TAB>max_error" to `$MEDSYN_GPU_REPORT` when set.
pub fn record(name: &str, pass: bool, max_err: f64) {
    if let Ok(path) = std::env::var("MEDSYN_GPU_REPORT") {
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            let _ = writeln!(
                f,
                "{name}\t{}\t{max_err:.3e}",
                if pass { "pass" } else { "FAIL" }
            );
        }
    }
}

/// A 1-D launch of `blocks` × `threads` with `smem` bytes of dynamic shared memory.
pub fn grid(blocks: u32, threads: u32, smem: u32) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (blocks, 1, 1),
        block_dim: (threads, 1, 1),
        shared_mem_bytes: smem,
    }
}

/// Runs `f`, turning a panic into a recorded failure, so that one GPU run reports every failing
/// case of a test instead of only the first.
pub fn soft(fails: &mut Vec<String>, what: String, f: impl FnOnce()) {
    if let Err(p) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        let msg = p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        fails.push(format!("{what}: {msg}"));
    }
}

/// Fails the test listing every case [`soft`] recorded.
pub fn finish(fails: Vec<String>) {
    assert!(
        fails.is_empty(),
        "{} failing cases:\n{}",
        fails.len(),
        fails.join("\n")
    );
}
