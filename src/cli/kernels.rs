//! `medsyn kernels [--json] [--arch A]`: the embedded CUDA kernels with ptxas's registers, shared memory and spills.

use crate::error::{Error, Result};
use clap::Args;
use serde_json::{json, Value};
use std::io::Write;

#[derive(Args, Debug)]
pub struct KernelsArgs {
    /// Print JSON: {"cuda": bool, "nvrtc", "ptxas", "modules": [...], "kernels": [{module,
    /// kernel, arch, registers, shared_bytes, spill_bytes}]} ({"cuda": false, "kernels": []}
    /// without CUDA).
    #[arg(long)]
    pub json: bool,
    /// Only list this architecture: sm_80 or sm_90a.
    #[arg(long)]
    pub arch: Option<String>,
}

/// One row of the listing.
pub struct Row {
    pub module: String,
    pub kernel: String,
    pub arch: String,
    pub registers: u32,
    pub shared_bytes: u32,
    pub spill_bytes: u32,
}

pub fn run(args: &KernelsArgs) -> Result<()> {
    let text = match listing(args.arch.as_deref())? {
        None if args.json => format!("{}\n", json!({ "cuda": false, "kernels": [] })),
        None => format!("{NO_CUDA}\n"),
        Some((rows, meta)) if args.json => {
            let mut v = meta;
            v["kernels"] = Value::Array(
                rows.iter()
                    .map(|r| {
                        json!({
                            "module": r.module, "kernel": r.kernel, "arch": r.arch,
                            "registers": r.registers, "shared_bytes": r.shared_bytes,
                            "spill_bytes": r.spill_bytes,
                        })
                    })
                    .collect(),
            );
            let mut s = serde_json::to_string_pretty(&v).map_err(|e| Error::msg(e.to_string()))?;
            s.push('\n');
            s
        }
        Some((rows, _)) => render(&rows),
    };
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(Error::msg(format!("cannot write to stdout: {e}"))),
    }
}

/// What `medsyn kernels` prints when the binary has no CUDA backend.
pub const NO_CUDA: &str =
    "this medsyn binary was built without CUDA (no `cuda` feature): no kernels are \
embedded. Rebuild with `cargo build --release --features cuda` (README: CUDA build).";

/// Aligned columns `kernel arch registers shared_bytes spill_bytes` under a header line.
pub fn render(rows: &[Row]) -> String {
    let header = ["kernel", "arch", "registers", "shared_bytes", "spill_bytes"];
    let cells: Vec<[String; 5]> = rows
        .iter()
        .map(|r| {
            [
                r.kernel.clone(),
                r.arch.clone(),
                r.registers.to_string(),
                r.shared_bytes.to_string(),
                r.spill_bytes.to_string(),
            ]
        })
        .collect();
    let mut width = header.map(str::len);
    for row in &cells {
        for (w, c) in width.iter_mut().zip(row) {
            *w = (*w).max(c.len());
        }
    }
    let mut s = String::new();
    let line = |s: &mut String, row: [&str; 5]| {
        s.push_str(&format!(
            "{:<w0$}  {:<w1$}  {:>w2$}  {:>w3$}  {:>w4$}\n",
            row[0],
            row[1],
            row[2],
            row[3],
            row[4],
            w0 = width[0],
            w1 = width[1],
            w2 = width[2],
            w3 = width[3],
            w4 = width[4],
        ))
    };
    line(&mut s, header);
    for row in &cells {
        line(&mut s, [&row[0], &row[1], &row[2], &row[3], &row[4]]);
    }
    s
}

/// The rows (sorted by module, kernel, arch) and JSON metadata, or None without CUDA.
#[cfg(feature = "cuda")]
fn listing(arch: Option<&str>) -> Result<Option<(Vec<Row>, Value)>> {
    use crate::cuda::registry::{self, Arch};
    let only = match arch {
        None => None,
        Some(a) => Some(
            Arch::parse(a)
                .ok_or_else(|| Error::msg(format!("--arch {a}: expected sm_80 or sm_90a")))?,
        ),
    };
    let mut kernels: Vec<_> = registry::kernels()
        .iter()
        .filter(|k| only.is_none_or(|a| k.arch == a))
        .collect();
    kernels.sort_by_key(|k| (k.module, k.kernel, k.arch));
    let rows = kernels
        .into_iter()
        .map(|k| Row {
            module: k.module.to_string(),
            kernel: k.kernel.to_string(),
            arch: k.arch.name().to_string(),
            registers: k.registers,
            shared_bytes: k.shared_bytes,
            spill_bytes: k.spill_bytes,
        })
        .collect();
    let (major, minor) = registry::nvrtc_version();
    let meta = json!({
        "cuda": true,
        "nvrtc": format!("{major}.{minor}"),
        "ptxas": registry::ptxas_version(),
        "modules": registry::modules().iter().map(|m| m.module).collect::<Vec<_>>(),
    });
    Ok(Some((rows, meta)))
}

#[cfg(not(feature = "cuda"))]
fn listing(arch: Option<&str>) -> Result<Option<(Vec<Row>, Value)>> {
    if let Some(a) = arch {
        if !matches!(
            a,
            "sm_80" | "sm_90a" | "80" | "90a" | "compute_80" | "compute_90a"
        ) {
            return Err(Error::msg(format!("--arch {a}: expected sm_80 or sm_90a")));
        }
    }
    Ok(None)
}
