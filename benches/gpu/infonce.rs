//! Fused InfoNCE forward + backward (kernels/infonce.cu) at B = 4k..64k, d = 512, bf16, beside
//! plain PyTorch and one B×B×d GEMM, with the kernel path's scratch memory.

use crate::common::{values, Limits, Row, TorchRef};
use cudarc::driver::CudaSlice;
use medsyn::backend::cuda::infonce::{
    forward_scratch_len, info_nce_backward, info_nce_forward, ForwardScratch, InfoNceLaunch, Rows,
};
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

/// Roughly unit-norm rows (uniform ±√(3/d)), deterministic.
fn embeddings(n: usize, seed: u64) -> Vec<f32> {
    let a = (3.0 / D as f32).sqrt();
    values(seed, n).into_iter().map(|v| a * v).collect()
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
    // Launch shapes: the contract's defaults (groups of 128·ceil(ceil(B/128)/16), nbuf = 2 when
    // it fits the device).
    let launch = InfoNceLaunch::default();
    let (n_row, n_col, nf) = forward_scratch_len(b, &launch)?;

    let img = g.upload_as(&embeddings(b * D, 1), dt)?;
    let txt = g.upload_as(&embeddings(b * D, 2), dt)?;
    let scale = g.upload(&[(1.0 / TEMPERATURE) as f32])?;
    let gout = g.upload(&[1.0f32])?;
    // Scratch: everything the kernel path allocates beyond the inputs (embeddings, scale,
    // upstream gradient) and the two output gradients. The scale needs no gradient here, so
    // there are no d-scale partials.
    let bufs = Bufs {
        row_part: g.zeros::<f32>(n_row)?,
        col_part: g.zeros::<f32>(n_col)?,
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

    let f32p = |x: &CudaSlice<f32>| g.ptr_of(x, DType::F32);
    let (img_r, txt_r) = (
        Rows::contiguous(img.ptr(), D),
        Rows::contiguous(txt.ptr(), D),
    );
    let scratch = ForwardScratch {
        row_part: f32p(&bufs.row_part),
        col_part: f32p(&bufs.col_part),
        partial: f32p(&bufs.partial),
    };
    let step = || -> Result<()> {
        info_nce_forward(
            g,
            img_r,
            txt_r,
            f32p(&scale),
            b,
            D,
            f32p(&bufs.row_lse),
            f32p(&bufs.col_lse),
            f32p(&bufs.loss),
            &launch,
            Some(scratch),
        )?;
        info_nce_backward(
            g,
            img_r,
            txt_r,
            f32p(&bufs.row_lse),
            f32p(&bufs.col_lse),
            f32p(&scale),
            f32p(&gout),
            b,
            D,
            Some(Rows::contiguous(bufs.dimg.ptr(), D)),
            Some(Rows::contiguous(bufs.dtxt.ptr(), D)),
            None,
            &launch,
        )
    };

    // One checked run first: a fault or a non-finite loss skips the row.
    step()?;
    g.sync()?;
    let l = g.download(&bufs.loss)?[0];
    if !l.is_finite() {
        return Err(Error::msg(format!("loss is {l}")));
    }
    let (ms, _) = g.time_ms(2, 10, step)?;

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
