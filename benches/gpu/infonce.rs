//! Fused InfoNCE forward + backward (kernels/infonce.cu) at B = 4k..64k, d = 512, bf16, beside
//! plain PyTorch and one B×B×d GEMM, with the kernel path's scratch memory.

use crate::common::{Limits, Row, TorchRef};
use cudarc::driver::sys::{CUdevice_attribute_enum, CUfunction_attribute_enum};
use cudarc::driver::{CudaFunction, CudaSlice, LaunchConfig, PushKernelArg};
use medsyn::cuda::{DevBuf, Gpu};
use medsyn::tensor::DType;
use medsyn::{Error, Result};

const D: usize = 512;
const TEMPERATURE: f64 = 0.07;
const BATCHES: [usize; 3] = [4096, 16384, 65536];

pub fn run(g: &Gpu, torch: &TorchRef, limits: &Limits) -> Vec<Row> {
    let mut rows = Vec::new();
    for b in BATCHES {
        match bench_one(g, torch, limits, b) {
            Ok(row) => rows.push(row),
            Err(e) => eprintln!("infonce B={b}: {e} (row skipped)"),
        }
    }
    rows
}

fn err(what: &str) -> impl Fn(cudarc::driver::DriverError) -> Error + '_ {
    move |e| Error::msg(format!("{what}: {e}"))
}

/// Entry point `name` with its dynamic shared-memory limit raised to `smem` bytes.
fn function(g: &Gpu, name: &str, smem: usize) -> Result<CudaFunction> {
    let f = g.function("infonce", name)?;
    f.set_attribute(
        CUfunction_attribute_enum::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
        smem as i32,
    )
    .map_err(err(name))?;
    Ok(f)
}

/// Roughly unit-norm rows (uniform ±√(3/d)), deterministic.
fn embeddings(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let a = (3.0 / D as f32).sqrt();
    (0..n)
        .map(|_| {
            s ^= s >> 12;
            s ^= s << 25;
            s ^= s >> 27;
            let u = (s.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40) as f32 / (1u64 << 24) as f32;
            a * (2.0 * u - 1.0)
        })
        .collect()
}

/// The kernel path's device buffers besides the inputs.
struct Bufs {
    row_part: CudaSlice<f32>,
    col_part: CudaSlice<f32>,
    row_lse: CudaSlice<f32>,
    col_lse: CudaSlice<f32>,
    partial: CudaSlice<f32>,
    loss: CudaSlice<f32>,
    dimg: DevBuf,
    dtxt: DevBuf,
}

fn bench_one(g: &Gpu, torch: &TorchRef, limits: &Limits, b: usize) -> Result<Row> {
    let dt = DType::BF16;
    // Launch shapes per the contract at the end of kernels/infonce.cu.
    let group = 128 * b.div_ceil(128).div_ceil(16); // rpg = cpg
    let (nrg, ncg) = (b.div_ceil(group), b.div_ceil(group));
    let nf = b.div_ceil(8);
    let fwd_smem = 80896 + 8 * group;
    // Backward: DP = 512, 16-bit: BM = BN = 64; nbuf = 2 when it fits the device.
    let bm = 64;
    let nb = b.div_ceil(bm);
    let smem_of = |nbuf: usize| {
        let (ld, ldg) = (D + 8, bm + 8);
        (bm * ld + bm * ldg) * 2 + (bm + 2 * bm + 8) * 4 + nbuf * bm * ld * 2
    };
    let optin = g
        .context()
        .attribute(CUdevice_attribute_enum::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN)
        .map_err(err("reading the shared-memory limit"))? as usize;
    let nbuf = if smem_of(2) <= optin { 2 } else { 1 };
    let bwd_smem = smem_of(nbuf);

    let img = g.upload_as(&embeddings(b * D, 1), dt)?;
    let txt = g.upload_as(&embeddings(b * D, 2), dt)?;
    let scale = g.upload(&[(1.0 / TEMPERATURE) as f32])?;
    let gout = g.upload(&[1.0f32])?;
    // Scratch: everything the kernel path allocates beyond the inputs (embeddings, scale,
    // upstream gradient) and the two output gradients. The scale needs no gradient here, so
    // there are no d-scale partials (dscale_part = nullptr).
    let mut bufs = Bufs {
        row_part: g.zeros::<f32>(2 * ncg * b)?,
        col_part: g.zeros::<f32>(2 * nrg * b)?,
        row_lse: g.zeros::<f32>(b)?,
        col_lse: g.zeros::<f32>(b)?,
        partial: g.zeros::<f32>(nf)?,
        loss: g.zeros::<f32>(1)?,
        dimg: g.poisoned_as(b * D, dt)?,
        dtxt: g.poisoned_as(b * D, dt)?,
    };
    let scratch_bytes = 4
        * (bufs.row_part.len()
            + bufs.col_part.len()
            + bufs.row_lse.len()
            + bufs.col_lse.len()
            + bufs.partial.len()
            + bufs.loss.len());

    let stats = function(g, "infonce_fwd_stats_bf16", fwd_smem)?;
    let finish = g.function("infonce", "infonce_fwd_finish_bf16")?;
    let reduce = g.function("infonce", "infonce_reduce")?;
    let bwd = function(g, "infonce_bwd_d512_bf16", bwd_smem)?;

    let (bb, dd, gg) = (b as i32, D as i32, group as i32);
    let (nr, nc, nfi) = (nrg as i32, ncg as i32, nf as i32);
    let (ld, nbuf_i) = (D as i64, nbuf as i32);
    let factor = 1.0f32 / (2.0 * b as f32);
    let null: u64 = 0;
    let stats_cfg = LaunchConfig {
        grid_dim: (nrg as u32, ncg as u32, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: fwd_smem as u32,
    };
    let cfg = |blocks: usize, smem: usize| LaunchConfig {
        grid_dim: (blocks as u32, 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: smem as u32,
    };

    let step = |x: &mut Bufs| -> Result<()> {
        let s = g.stream();
        unsafe {
            s.launch_builder(&stats)
                .arg(&img.bytes)
                .arg(&ld)
                .arg(&txt.bytes)
                .arg(&ld)
                .arg(&scale)
                .arg(&bb)
                .arg(&dd)
                .arg(&gg)
                .arg(&gg)
                .arg(&mut x.row_part)
                .arg(&mut x.col_part)
                .launch(stats_cfg)
        }
        .map_err(err("infonce_fwd_stats_bf16"))?;
        unsafe {
            s.launch_builder(&finish)
                .arg(&x.row_part)
                .arg(&nc)
                .arg(&x.col_part)
                .arg(&nr)
                .arg(&img.bytes)
                .arg(&ld)
                .arg(&txt.bytes)
                .arg(&ld)
                .arg(&scale)
                .arg(&bb)
                .arg(&dd)
                .arg(&mut x.row_lse)
                .arg(&mut x.col_lse)
                .arg(&mut x.partial)
                .launch(cfg(nf, 0))
        }
        .map_err(err("infonce_fwd_finish_bf16"))?;
        unsafe {
            s.launch_builder(&reduce)
                .arg(&x.partial)
                .arg(&nfi)
                .arg(&factor)
                .arg(&mut x.loss)
                .launch(cfg(1, 0))
        }
        .map_err(err("infonce_reduce"))?;
        bwd_side(
            g,
            &bwd,
            (&img, &txt),
            (&x.row_lse, &x.col_lse),
            (&scale, &gout),
            &mut x.dimg,
            (bb, dd, ld, nbuf_i, &null),
            cfg(nb, bwd_smem),
        )?;
        bwd_side(
            g,
            &bwd,
            (&txt, &img),
            (&x.col_lse, &x.row_lse),
            (&scale, &gout),
            &mut x.dtxt,
            (bb, dd, ld, nbuf_i, &null),
            cfg(nb, bwd_smem),
        )?;
        Ok(())
    };

    // One checked run first: a fault or a non-finite loss skips the row.
    step(&mut bufs)?;
    g.sync()?;
    let l = g.download(&bufs.loss)?[0];
    if !l.is_finite() {
        return Err(Error::msg(format!("loss is {l}")));
    }
    let (ms, _) = g.time_ms(2, 10, || step(&mut bufs))?;

    // FLOPs the kernels execute (B is a multiple of every tile, d = DP = 512: no padding):
    // forward stats 2 B² d (each 128×128 logit tile once); per backward side the logit
    // recompute Z = A B_jᵀ (2 B² d) and dA += G B_j (2 B² d), two sides: 8 B² d. Total 10 B² d
    // (the finish kernel's 2 B d diagonal dots are negligible and not counted).
    let bf = b as f64;
    let flops = 10.0 * bf * bf * D as f64;
    let gemm_ms = torch.get(&format!("gemm_ms/B{b}"));
    let torch_peak = torch.get(&format!("infonce_peak_bytes/B{b}"));
    let target = if b == 65536 {
        match gemm_ms {
            Some(gm) => Some((
                ms < 4.0 * gm && (scratch_bytes as f64) < 1e9,
                format!("< 4x one BxBxd GEMM ({gm:.3} ms), < 1 GB"),
            )),
            None => {
                eprintln!("infonce B={b}: no torch gemm_ms figure, target not judged");
                None
            }
        }
    } else {
        None
    };
    Ok(Row {
        case: format!("infonce fwd+bwd B{b} d{D} bf16"),
        medsyn_ms: ms,
        medsyn_rate: format!("{:.3} GB scratch", scratch_bytes as f64 / 1e9),
        torch_ms: torch.get(&format!("infonce_ms/B{b}")),
        torch_rate: torch_peak
            .map(|p| format!("{:.3} GB peak", p / 1e9))
            .unwrap_or_else(|| "-".into()),
        limit_fraction: limits.compute_fraction(flops, ms),
        target,
    })
}

/// One backward launch (contract steps 4/5): d a = s Σ_j dz_ij b_j, no d-scale partials.
#[allow(clippy::type_complexity, clippy::too_many_arguments)]
fn bwd_side(
    g: &Gpu,
    f: &CudaFunction,
    (a, bm): (&DevBuf, &DevBuf),
    (lse_a, lse_b): (&CudaSlice<f32>, &CudaSlice<f32>),
    (scale, gout): (&CudaSlice<f32>, &CudaSlice<f32>),
    da: &mut DevBuf,
    (b, d, ld, nbuf, null): (i32, i32, i64, i32, &u64),
    cfg: LaunchConfig,
) -> Result<()> {
    unsafe {
        g.stream()
            .launch_builder(f)
            .arg(&a.bytes)
            .arg(&ld)
            .arg(&bm.bytes)
            .arg(&ld)
            .arg(lse_a)
            .arg(lse_b)
            .arg(scale)
            .arg(gout)
            .arg(&b)
            .arg(&d)
            .arg(&mut da.bytes)
            .arg(&ld)
            .arg(null)
            .arg(&nbuf)
            .launch(cfg)
    }
    .map(|_| ())
    .map_err(err("infonce_bwd_d512_bf16"))
}
