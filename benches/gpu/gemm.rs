//! bf16 GEMM through backend::cuda::gemm (cuBLAS) beside torch.matmul on the same card: the
//! Linear/attention-projection path of the runtime, and a check of the measured peak.

use crate::common::{Limits, Row, TorchRef};
use medsyn::backend::cuda::gemm::{gemm, GemmShape};
use medsyn::cuda::Gpu;
use medsyn::DType;

pub fn run(g: &Gpu, torch: &TorchRef, limits: &Limits) -> Vec<Row> {
    let n = 8192usize;
    let flops = 2.0 * (n as f64).powi(3);
    let data = vec![0.5f32; n * n];
    let bufs = (|| -> medsyn::Result<_> {
        Ok((
            g.upload_as(&data, DType::BF16)?,
            g.upload_as(&data, DType::BF16)?,
            g.poisoned_as(n * n, DType::BF16)?,
        ))
    })();
    let (a, b, c) = match bufs {
        Ok(x) => x,
        Err(e) => {
            eprintln!("gemm bench: {e}");
            return Vec::new();
        }
    };
    let shape = GemmShape::dense(n, n, n, false);
    let timed = g.time_ms(3, 20, || gemm(g, a.ptr(), b.ptr(), c.ptr(), &shape));
    let ms = match timed {
        Ok((ms, _)) => ms,
        Err(e) => {
            eprintln!("gemm bench: {e}");
            return Vec::new();
        }
    };
    let torch_ms = torch
        .get("gemm_bf16_tflops")
        .map(|t| flops / (t * 1e12) * 1e3);
    vec![Row {
        case: format!("gemm bf16 {n}^3 (cuBLAS)"),
        medsyn_ms: ms,
        medsyn_rate: format!("{:.1} TFLOP/s", flops / (ms * 1e-3) / 1e12),
        torch_ms,
        torch_rate: torch_ms
            .map(|t| format!("{:.1} TFLOP/s", flops / (t * 1e-3) / 1e12))
            .unwrap_or_else(|| "-".into()),
        limit_fraction: limits.compute_fraction(flops, ms),
        target: None,
    }]
}
