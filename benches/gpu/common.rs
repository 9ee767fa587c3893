//! The GPU bench's shared pieces: torch's reference figures, the card's measured limits, table rows.

use medsyn::cuda::Gpu;
use std::collections::BTreeMap;

/// torch's figures from `$MEDSYN_TORCH_REF` (a flat JSON object of numbers written by
/// benches/gpu_torch_reference.py); empty when unset or unreadable.
pub struct TorchRef {
    values: BTreeMap<String, f64>,
}

impl TorchRef {
    pub fn load() -> TorchRef {
        let mut values = BTreeMap::new();
        if let Ok(path) = std::env::var("MEDSYN_TORCH_REF") {
            match std::fs::read_to_string(&path)
                .map_err(|e| e.to_string())
                .and_then(|t| {
                    serde_json::from_str::<serde_json::Value>(&t).map_err(|e| e.to_string())
                }) {
                Ok(serde_json::Value::Object(m)) => {
                    for (k, v) in m {
                        if let Some(x) = v.as_f64() {
                            values.insert(k, x);
                        }
                    }
                }
                Ok(_) => eprintln!("{path}: not a JSON object"),
                Err(e) => eprintln!("{path}: {e}"),
            }
        }
        TorchRef { values }
    }

    /// The figure under `key` (see benches/gpu_torch_reference.py for the keys).
    pub fn get(&self, key: &str) -> Option<f64> {
        self.values.get(key).copied()
    }
}

/// `n` deterministic values uniform in [-1, 1) (xorshift64*; timing inputs, not checked).
pub fn values(seed: u64, n: usize) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s >> 12;
            s ^= s << 25;
            s ^= s >> 27;
            let u = (s.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40) as f32 / (1u64 << 24) as f32;
            2.0 * u - 1.0
        })
        .collect()
}

/// The card's limits: device-to-device copy bandwidth (measured here) and the bf16 GEMM peak
/// (torch's cuBLAS figure from the same run).
pub struct Limits {
    /// Bytes read + written per second.
    pub copy_bytes_per_s: f64,
    /// bf16 dense GEMM FLOP/s (None when torch's figure is missing).
    pub gemm_flops_per_s: Option<f64>,
}

impl Limits {
    pub fn measure(g: &Gpu, torch: &TorchRef) -> Limits {
        let n: usize = 1 << 28; // 1 GiB of f32
        let src = g.zeros::<f32>(n).expect("allocating the copy source");
        let mut dst = g.zeros::<f32>(n).expect("allocating the copy destination");
        let (ms, _) = g
            .time_ms(2, 10, || {
                g.stream()
                    .memcpy_dtod(&src, &mut dst)
                    .map_err(|e| medsyn::Error::msg(e.to_string()))
            })
            .expect("timing the copy");
        Limits {
            copy_bytes_per_s: 2.0 * (n * 4) as f64 / (ms * 1e-3),
            gemm_flops_per_s: torch.get("gemm_bf16_tflops").map(|t| t * 1e12),
        }
    }

    pub fn describe(&self) -> String {
        format!(
            "limits: copy {:.0} GB/s (cuMemcpyDtoD, read+write), bf16 GEMM peak {}",
            self.copy_bytes_per_s / 1e9,
            self.gemm_flops_per_s
                .map(|f| format!("{:.0} TFLOP/s (torch.matmul 8192^3)", f / 1e12))
                .unwrap_or_else(|| "unknown (no torch figure)".into())
        )
    }

    /// `flops / seconds` as a fraction of the GEMM peak.
    pub fn compute_fraction(&self, flops: f64, ms: f64) -> Option<f64> {
        self.gemm_flops_per_s.map(|p| flops / (ms * 1e-3) / p)
    }
}

/// One measured case.
pub struct Row {
    /// e.g. "attention fwd d64 s1024 bf16".
    pub case: String,
    pub medsyn_ms: f64,
    /// medsyn's rate, e.g. "412.3 TFLOP/s" or "0.61 GB peak".
    pub medsyn_rate: String,
    /// torch's time for the same work, when measured.
    pub torch_ms: Option<f64>,
    pub torch_rate: String,
    /// Fraction of the card's limit medsyn reached (compute or memory, whichever bounds it).
    pub limit_fraction: Option<f64>,
    /// Pass/fail of the target for this case, with the target in words.
    pub target: Option<(bool, String)>,
}

pub fn print_table(rows: &[Row]) {
    println!(
        "{:<34} {:>10} {:>16} {:>10} {:>16} {:>8} {:>7}  target",
        "case", "medsyn ms", "medsyn", "torch ms", "torch", "speedup", "limit"
    );
    for r in rows {
        println!(
            "{:<34} {:>10.3} {:>16} {:>10} {:>16} {:>8} {:>7}  {}",
            r.case,
            r.medsyn_ms,
            r.medsyn_rate,
            r.torch_ms
                .map(|t| format!("{t:.3}"))
                .unwrap_or_else(|| "-".into()),
            r.torch_rate,
            r.torch_ms
                .map(|t| format!("{:.2}x", t / r.medsyn_ms))
                .unwrap_or_else(|| "-".into()),
            r.limit_fraction
                .map(|f| format!("{:.0}%", 100.0 * f))
                .unwrap_or_else(|| "-".into()),
            r.target
                .as_ref()
                .map(|(ok, t)| format!("{} {t}", if *ok { "MET" } else { "MISSED" }))
                .unwrap_or_default()
        );
    }
}

/// Writes the rows to `$MEDSYN_BENCH_JSON` when set.
pub fn write_json(rows: &[Row], limits: &Limits) {
    let Ok(path) = std::env::var("MEDSYN_BENCH_JSON") else {
        return;
    };
    let rows: Vec<serde_json::Value> = rows
        .iter()
        .map(|r| {
            serde_json::json!({
                "case": r.case, "medsyn_ms": r.medsyn_ms, "medsyn_rate": r.medsyn_rate,
                "torch_ms": r.torch_ms, "torch_rate": r.torch_rate,
                "limit_fraction": r.limit_fraction,
                "target_met": r.target.as_ref().map(|t| t.0),
                "target": r.target.as_ref().map(|t| t.1.clone()),
            })
        })
        .collect();
    let v = serde_json::json!({
        "copy_gbps": limits.copy_bytes_per_s / 1e9,
        "gemm_bf16_tflops": limits.gemm_flops_per_s.map(|f| f / 1e12),
        "rows": rows,
    });
    if let Err(e) = std::fs::write(&path, serde_json::to_string_pretty(&v).unwrap_or_default()) {
        eprintln!("{path}: {e}");
    }
}
