//! Fused flash attention (kernels/attention.cu) forward and backward, bf16, [B, 16, S, D] for
//! D in {40, 64, 80, 128, 160} and S in {1024, 4096}, beside torch's scaled_dot_product_attention.

use crate::common::{Limits, Row, TorchRef};
use cudarc::driver::sys::CUfunction_attribute_enum;
use cudarc::driver::{CudaFunction, CudaSlice, LaunchConfig, PushKernelArg};
use medsyn::cuda::{DevBuf, Gpu};
use medsyn::tensor::DType;
use medsyn::{Error, Result};

const WIDTHS: [usize; 5] = [40, 64, 80, 128, 160];
const LENGTHS: [usize; 2] = [1024, 4096];
const HEADS: usize = 16;
/// Query rows per forward block (64·MT, MT = 2 for every width).
const FWD_ROWS: usize = 128;
/// Keys per backward block.
const BWD_KEYS: usize = 64;

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

fn err(what: &str) -> impl Fn(cudarc::driver::DriverError) -> Error + '_ {
    move |e| Error::msg(format!("{what}: {e}"))
}

/// Entry point `name` of kernels/attention.cu with its dynamic shared-memory limit raised to
/// `smem` bytes (needed above 48 KiB).
fn function(g: &Gpu, name: &str, smem: u32) -> Result<CudaFunction> {
    let f = g.function("attention", name)?;
    if smem > 0 {
        f.set_attribute(
            CUfunction_attribute_enum::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
            smem as i32,
        )
        .map_err(err(name))?;
    }
    Ok(f)
}

/// Dynamic shared bytes of flash_attn_fwd_d{d}_bf16 and flash_attn_bwd_d{d}_bf16 (the launch
/// contract's tables).
fn smem_bf16(d: usize) -> (u32, u32) {
    match d {
        40 => (29184, 53248),
        64 => (37376, 65536),
        80 => (45568, 77824),
        128 => (52480, 75264),
        160 => (64768, 67840),
        _ => unreachable!("head widths are WIDTHS"),
    }
}

/// Uniform values in [-1, 1), deterministic.
fn values(n: usize, seed: u64) -> Vec<f32> {
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

/// One shape's buffers: q, k, v, dout, the forward's o and lse, the backward's scratch (dsum,
/// dq_acc) and gradients, all bf16 [B, H, S, D] contiguous (torch's layout), lse/dsum f32
/// [B, H, S], dq_acc f32 [B, H, S, D].
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
    dsum: CudaSlice<f32>,
    dq_acc: CudaSlice<f32>,
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
            q: g.upload_as(&values(n, 1), dt)?,
            k: g.upload_as(&values(n, 2), dt)?,
            v: g.upload_as(&values(n, 3), dt)?,
            dout: g.upload_as(&values(n, 4), dt)?,
            o: g.poisoned_as(n, dt)?,
            lse: g.poisoned::<f32>(rows)?,
            dsum: g.poisoned::<f32>(rows)?,
            dq_acc: g.poisoned::<f32>(n)?,
            dq: g.poisoned_as(n, dt)?,
            dk: g.poisoned_as(n, dt)?,
            dv: g.poisoned_as(n, dt)?,
        })
    }

    /// Contiguous [B, H, S, D] element strides (sb, sh, sl, sd).
    fn strides(&self) -> [i64; 4] {
        let (s, d) = (self.s as i64, self.d as i64);
        [HEADS as i64 * s * d, s * d, d, 1]
    }

    fn scale(&self) -> f32 {
        (1.0 / (self.d as f64).sqrt()) as f32
    }

    /// Median ms of the forward kernel (writes o and lse).
    fn time_forward(&mut self, g: &Gpu) -> Result<f64> {
        let (smem, _) = smem_bf16(self.d);
        let name = format!("flash_attn_fwd_d{}_bf16", self.d);
        let f = function(g, &name, smem)?;
        let cfg = LaunchConfig {
            grid_dim: (self.s.div_ceil(FWD_ROWS) as u32, (self.b * HEADS) as u32, 1),
            block_dim: (128, 1, 1),
            shared_mem_bytes: smem,
        };
        let [sb, sh, sl, sd] = self.strides();
        let (h, l) = (HEADS as i32, self.s as i32);
        let (scale, causal, null, keep_sb) = (self.scale(), 0i32, 0u64, 0i64);
        let mut launch = || -> Result<()> {
            let mut lb = g.stream().launch_builder(&f);
            lb.arg(&self.q.bytes)
                .arg(&self.k.bytes)
                .arg(&self.v.bytes)
                .arg(&mut self.o.bytes)
                .arg(&mut self.lse)
                .arg(&null)
                .arg(&keep_sb)
                .arg(&h)
                .arg(&l)
                .arg(&l)
                .arg(&scale)
                .arg(&causal);
            for _ in 0..4 {
                lb.arg(&sb).arg(&sh).arg(&sl).arg(&sd);
            }
            unsafe { lb.launch(cfg) }.map(|_| ()).map_err(err(&name))
        };
        launch()?;
        g.sync()?;
        let (ms, _) = g.time_ms(3, 20, &mut launch)?;
        Ok(ms)
    }

    /// Median ms of the whole backward: bwd_pre (dsum, zero dq_acc), bwd_d{D} (dk, dv,
    /// dq_acc), bwd_dq (dq as bf16). Needs o and lse from a forward run.
    fn time_backward(&mut self, g: &Gpu) -> Result<f64> {
        let (_, smem) = smem_bf16(self.d);
        let pre_name = "flash_attn_bwd_pre_bf16".to_string();
        let main_name = format!("flash_attn_bwd_d{}_bf16", self.d);
        let dq_name = "flash_attn_bwd_dq_bf16".to_string();
        let pre = function(g, &pre_name, 0)?;
        let main = function(g, &main_name, smem)?;
        let conv = function(g, &dq_name, 0)?;
        let bh = self.b * HEADS;
        let rows = bh * self.s;
        let n = rows * self.d;
        let pre_cfg = LaunchConfig {
            grid_dim: (rows.div_ceil(8) as u32, 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        let main_cfg = LaunchConfig {
            grid_dim: (self.s.div_ceil(BWD_KEYS) as u32, bh as u32, 1),
            block_dim: (128, 1, 1),
            shared_mem_bytes: smem,
        };
        let dq_cfg = LaunchConfig {
            grid_dim: (n.div_ceil(256).min(65535) as u32, 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        let [sb, sh, sl, sd] = self.strides();
        let (b, h, l, d) = (self.b as i32, HEADS as i32, self.s as i32, self.d as i32);
        let (scale, causal, null, keep_sb) = (self.scale(), 0i32, 0u64, 0i64);
        let mut launch = || -> Result<()> {
            let s = g.stream();
            let mut lb = s.launch_builder(&pre);
            lb.arg(&self.o.bytes)
                .arg(&self.dout.bytes)
                .arg(&mut self.dsum)
                .arg(&mut self.dq_acc)
                .arg(&b)
                .arg(&h)
                .arg(&l)
                .arg(&d);
            for _ in 0..2 {
                lb.arg(&sb).arg(&sh).arg(&sl).arg(&sd);
            }
            unsafe { lb.launch(pre_cfg) }.map_err(err(&pre_name))?;

            let mut lb = s.launch_builder(&main);
            lb.arg(&self.q.bytes)
                .arg(&self.k.bytes)
                .arg(&self.v.bytes)
                .arg(&self.dout.bytes)
                .arg(&self.lse)
                .arg(&self.dsum)
                .arg(&mut self.dq_acc)
                .arg(&mut self.dk.bytes)
                .arg(&mut self.dv.bytes)
                .arg(&null)
                .arg(&keep_sb)
                .arg(&h)
                .arg(&l)
                .arg(&l)
                .arg(&scale)
                .arg(&causal);
            // q, k, v, dout, dk, dv
            for _ in 0..6 {
                lb.arg(&sb).arg(&sh).arg(&sl).arg(&sd);
            }
            unsafe { lb.launch(main_cfg) }.map_err(err(&main_name))?;

            let mut lb = s.launch_builder(&conv);
            lb.arg(&self.dq_acc)
                .arg(&mut self.dq.bytes)
                .arg(&b)
                .arg(&h)
                .arg(&l)
                .arg(&d)
                .arg(&sb)
                .arg(&sh)
                .arg(&sl)
                .arg(&sd);
            unsafe { lb.launch(dq_cfg) }.map_err(err(&dq_name))?;
            Ok(())
        };
        launch()?;
        g.sync()?;
        let (ms, _) = g.time_ms(3, 20, &mut launch)?;
        Ok(ms)
    }
}
