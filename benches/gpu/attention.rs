//! Fused flash attention (kernels/attention.cu) forward and backward, bf16, [B, 16, S, D] for
//! D in {40, 64, 80, 128, 160} and S in {1024, 4096}, beside torch's scaled_dot_product_attention.

use crate::common::{values, Limits, Row, TorchRef};
use cudarc::driver::CudaSlice;
use medsyn::backend::cuda::attention::{
    attention_backward, attention_forward, AttnGrads, AttnShape, View,
};
use medsyn::cuda::{DevBuf, Gpu};
use medsyn::tensor::DType;
use medsyn::Result;

const WIDTHS: [usize; 5] = [40, 64, 80, 128, 160];
const LENGTHS: [usize; 2] = [1024, 4096];
const HEADS: usize = 16;

pub fn run(g: &Gpu, torch: &TorchRef, limits: &Limits) -> Vec<Row> {
    let mut rows = Vec::new();
    for d in WIDTHS {
        for s in LENGTHS {
            let b = if s == 1024 { 8 } else { 2 };
            let mut case = match Case::new(g, b, s, d) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("attention d{d} s{s}: {e} (rows skipped)");
                    continue;
                }
            };
            // Forward: 4 B H S² D (Q Kᵀ and P V); backward: 10 B H S² D (S and dP recomputed,
            // dV, dK, dQ).
            let work = (b * HEADS) as f64 * (s * s * d) as f64;
            let fwd = case.time_forward(g);
            match &fwd {
                Ok(ms) => rows.push(row(
                    format!("attention fwd d{d} s{s}"),
                    *ms,
                    4.0 * work,
                    torch.get(&format!("sdpa_fwd_ms/d{d}/s{s}")),
                    limits,
                    true,
                    d,
                )),
                Err(e) => eprintln!("attention fwd d{d} s{s}: {e} (row skipped)"),
            }
            if fwd.is_err() {
                eprintln!("attention bwd d{d} s{s}: no forward output (row skipped)");
                continue;
            }
            match case.time_backward(g) {
                Ok(ms) => rows.push(row(
                    format!("attention bwd d{d} s{s}"),
                    ms,
                    10.0 * work,
                    torch.get(&format!("sdpa_bwd_ms/d{d}/s{s}")),
                    limits,
                    false,
                    d,
                )),
                Err(e) => eprintln!("attention bwd d{d} s{s}: {e} (row skipped)"),
            }
        }
    }
    rows
}

fn row(
    case: String,
    ms: f64,
    flops: f64,
    torch_ms: Option<f64>,
    limits: &Limits,
    forward: bool,
    d: usize,
) -> Row {
    let tflops = |ms: f64| flops / (ms * 1e-3) / 1e12;
    let rate = tflops(ms);
    let target = forward.then(|| {
        if d == 64 || d == 128 {
            (rate >= 300.0, "≥ 300 TFLOP/s".to_string())
        } else {
            (
                torch_ms.is_some_and(|t| ms <= t),
                "no slower than torch SDPA".to_string(),
            )
        }
    });
    Row {
        case,
        medsyn_ms: ms,
        medsyn_rate: format!("{rate:.1} TFLOP/s"),
        torch_ms,
        torch_rate: torch_ms
            .map(|t| format!("{:.1} TFLOP/s", tflops(t)))
            .unwrap_or_else(|| "-".into()),
        limit_fraction: limits.compute_fraction(flops, ms),
        target,
    }
}

/// One shape's buffers: q, k, v, dout, the forward's o and lse and the gradients, all bf16
/// [B, H, S, D] contiguous (torch's layout), lse f32 [B, H, S]. The backward's scratch (dsum,
/// dq_acc) comes from the device's caching allocator inside `attention_backward`.
struct Case {
    b: usize,
    s: usize,
    d: usize,
    q: DevBuf,
    k: DevBuf,
    v: DevBuf,
    dout: DevBuf,
    o: DevBuf,
    lse: CudaSlice<f32>,
    dq: DevBuf,
    dk: DevBuf,
    dv: DevBuf,
}

impl Case {
    fn new(g: &Gpu, b: usize, s: usize, d: usize) -> Result<Case> {
        let dt = DType::BF16;
        let n = b * HEADS * s * d;
        let rows = b * HEADS * s;
        Ok(Case {
            b,
            s,
            d,
            q: g.upload_as(&values(1, n), dt)?,
            k: g.upload_as(&values(2, n), dt)?,
            v: g.upload_as(&values(3, n), dt)?,
            dout: g.upload_as(&values(4, n), dt)?,
            o: g.poisoned_as(n, dt)?,
            lse: g.poisoned::<f32>(rows)?,
            dq: g.poisoned_as(n, dt)?,
            dk: g.poisoned_as(n, dt)?,
            dv: g.poisoned_as(n, dt)?,
        })
    }

    /// `buf` as a contiguous [B, H, S, D] view.
    fn view(&self, buf: &DevBuf) -> View {
        View::contiguous(buf.ptr(), HEADS, self.s, self.d)
    }

    /// Self-attention, no mask, not causal, scale 1/sqrt(D).
    fn shape(&self) -> AttnShape {
        AttnShape {
            batch: self.b,
            heads: HEADS,
            lq: self.s,
            lk: self.s,
            d: self.d,
            scale: (1.0 / (self.d as f64).sqrt()) as f32,
            causal: false,
        }
    }

    /// Median ms of the forward kernel (writes o and lse).
    fn time_forward(&mut self, g: &Gpu) -> Result<f64> {
        let shape = self.shape();
        let lse = g.ptr_of(&self.lse, DType::F32);
        let (q, k, v, o) = (
            self.view(&self.q),
            self.view(&self.k),
            self.view(&self.v),
            self.view(&self.o),
        );
        let launch = || attention_forward(g, q, k, v, o, lse, None, &shape);
        launch()?;
        g.sync()?;
        let (ms, _) = g.time_ms(3, 20, launch)?;
        Ok(ms)
    }

    /// Median ms of the whole backward: bwd_pre (dsum, zero dq_acc), bwd_d{D} (dk, dv,
    /// dq_acc), bwd_dq (dq as bf16). Needs o and lse from a forward run.
    fn time_backward(&mut self, g: &Gpu) -> Result<f64> {
        let shape = self.shape();
        let lse = g.ptr_of(&self.lse, DType::F32);
        let (q, k, v, o, dout) = (
            self.view(&self.q),
            self.view(&self.k),
            self.view(&self.v),
            self.view(&self.o),
            self.view(&self.dout),
        );
        let grads = AttnGrads {
            dq: Some(self.view(&self.dq)),
            dk: Some(self.view(&self.dk)),
            dv: Some(self.view(&self.dv)),
        };
        let launch = || attention_backward(g, q, k, v, o, dout, lse, None, grads, &shape);
        launch()?;
        g.sync()?;
        let (ms, _) = g.time_ms(3, 20, launch)?;
        Ok(ms)
    }
}
