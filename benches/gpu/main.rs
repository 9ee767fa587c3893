//! GPU benches (feature `cuda`): fused attention, InfoNCE, conv 3×3 and the card's copy/GEMM limits, each
//! beside torch's figure measured on the same card in the same gpu-check run
//! (benches/gpu_torch_reference.py writes them to the JSON file `$MEDSYN_TORCH_REF`).
//!
//!     cargo bench --features cuda --bench gpu            # on a machine with a GPU
//!
//! Prints one table row per case: medsyn's time and rate, torch's, the ratio
//! (torch time / medsyn time: > 1 means medsyn is faster) and the fraction of the card's
//! measured limit (the bf16 GEMM peak: every case here is compute-bound; the copy bandwidth is
//! printed beside it).

mod attention;
mod common;
mod conv;
mod gemm;
mod infonce;

use common::{Limits, Row, TorchRef};
use medsyn::cuda::Gpu;

fn main() {
    let g = match Gpu::open(0) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("gpu bench: {e}");
            std::process::exit(
                if std::env::var("MEDSYN_REQUIRE_GPU").as_deref() == Ok("1") {
                    1
                } else {
                    0
                },
            );
        }
    };
    let torch = TorchRef::load();
    let limits = Limits::measure(&g, &torch);
    println!("device: {}", g.name());
    println!("{}", limits.describe());
    let mut rows: Vec<Row> = Vec::new();
    let only = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let wants = |name: &str| only.as_deref().is_none_or(|o| name.contains(o));
    if wants("gemm") {
        rows.extend(gemm::run(&g, &torch, &limits));
    }
    if wants("attention") {
        rows.extend(attention::run(&g, &torch, &limits));
    }
    if wants("infonce") {
        rows.extend(infonce::run(&g, &torch, &limits));
    }
    if wants("conv") {
        rows.extend(conv::run(&g, &torch, &limits));
    }
    common::print_table(&rows);
    common::write_json(&rows, &limits);
}
