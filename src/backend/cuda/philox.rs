//! Launches of kernels/philox.cu: the crate's Philox4x32-10 stream drawn on the device as
//! normals, uniforms or raw words, bit-compatible with the host generator (CPU twin:
//! tensor::random::Philox, Tensor::randn, Tensor::rand_uniform).

use super::check;
use crate::cuda::gpu::{suffix, Ptr};
use crate::cuda::Gpu;
use crate::error::Result;
use crate::tensor::{DType, Philox};
use cudarc::driver::{LaunchConfig, PushKernelArg};

/// The launch shape of a draw: every kernel is a grid-stride loop over counter blocks, so any
/// shape gives the same values. The default is the contract's: 256 threads a block and
/// ceil(blocks / 256) blocks (capped); tests pin other shapes to check that independence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PhiloxLaunch {
    /// Blocks in the grid (None: enough for one thread per counter block).
    pub grid: Option<u32>,
    /// Threads per block.
    pub block: u32,
}

impl Default for PhiloxLaunch {
    fn default() -> Self {
        PhiloxLaunch {
            grid: None,
            block: 256,
        }
    }
}

impl PhiloxLaunch {
    fn config(&self, op: &str, counter_blocks: usize) -> Result<LaunchConfig> {
        crate::ensure!(
            (1..=1024).contains(&self.block) && self.grid != Some(0),
            "{op}: launch of {:?} blocks of {} threads is not a valid shape",
            self.grid,
            self.block
        );
        let grid = self
            .grid
            .unwrap_or_else(|| check::blocks(counter_blocks, self.block as usize, 65535 * 16));
        Ok(LaunchConfig {
            grid_dim: (grid, 1, 1),
            block_dim: (self.block, 1, 1),
            shared_mem_bytes: 0,
        })
    }
}

/// The stream position for a draw of `n` values from `rng`: returns (seed, counter) before the
/// draw and advances `rng` by ceil(n/4) counter blocks, as the host's own draws do, so that
/// host and device draws interleave on one stream.
pub fn claim(rng: &mut Philox, n: usize) -> (u64, u64) {
    let (seed, counter) = (rng.seed(), rng.counter());
    *rng = Philox::from_state(seed, counter.wrapping_add(n.div_ceil(4) as u64));
    (seed, counter)
}

/// out[i] = the i-th standard normal (Box–Muller in f64) of the stream at (seed, counter), for
/// i < n, rounded to out's dtype: f32, bf16, f16 (= Tensor::randn of
/// Philox::from_state(seed, counter)) or f64 (= Philox::normal), within CUDA's few-ulp f64
/// log/sin/cos.
pub fn philox_normal(
    g: &Gpu,
    out: Ptr,
    n: usize,
    seed: u64,
    counter: u64,
    launch: PhiloxLaunch,
) -> Result<()> {
    const OP: &str = "philox_normal";
    check::need(OP, "output", out, n)?;
    let sfx = match out.dtype {
        DType::F64 => "f64",
        d => suffix(d)?,
    };
    if n == 0 {
        return Ok(());
    }
    let cfg = launch.config(OP, n.div_ceil(4))?;
    let name = format!("philox_normal_{sfx}");
    let f = g.function("philox", &name)?;
    let nn = n as i64;
    let mut b = g.stream().launch_builder(&f);
    b.arg(&nn).arg(&seed).arg(&counter).arg(&out.addr);
    // SAFETY: argument types and order follow the kernel's signature; size checked above.
    check::launched(unsafe { b.launch(cfg) }, &name)
}

/// out[i] = lo + (hi − lo)·u_i (f64, rounded to out's dtype: f32, bf16 or f16) for i < n, u_i
/// the i-th uniform in [0, 1) of the stream at (seed, counter): bit-identical to
/// Tensor::rand_uniform of Philox::from_state(seed, counter).
#[allow(clippy::too_many_arguments)]
pub fn philox_uniform(
    g: &Gpu,
    out: Ptr,
    n: usize,
    seed: u64,
    counter: u64,
    lo: f64,
    hi: f64,
    launch: PhiloxLaunch,
) -> Result<()> {
    const OP: &str = "philox_uniform";
    check::need(OP, "output", out, n)?;
    let sfx = suffix(out.dtype)?;
    crate::ensure!(
        lo.is_finite() && hi.is_finite(),
        "{OP}: range [{lo}, {hi}) must be finite"
    );
    if n == 0 {
        return Ok(());
    }
    let cfg = launch.config(OP, n.div_ceil(4))?;
    let name = format!("philox_uniform_{sfx}");
    let f = g.function("philox", &name)?;
    let nn = n as i64;
    let mut b = g.stream().launch_builder(&f);
    b.arg(&nn)
        .arg(&seed)
        .arg(&counter)
        .arg(&lo)
        .arg(&hi)
        .arg(&out.addr);
    // SAFETY: as above.
    check::launched(unsafe { b.launch(cfg) }, &name)
}

/// out[4b + j] = word j of Philox4x32-10 at counter + b under key `seed`, for b < nblocks:
/// the raw stream (u32 words, passed as I32, 4·nblocks of them).
pub fn philox_raw(
    g: &Gpu,
    out: Ptr,
    nblocks: usize,
    seed: u64,
    counter: u64,
    launch: PhiloxLaunch,
) -> Result<()> {
    const OP: &str = "philox_raw";
    check::dtype(OP, "output", out, DType::I32)?;
    check::need(OP, "output", out, 4 * nblocks)?;
    if nblocks == 0 {
        return Ok(());
    }
    let cfg = launch.config(OP, nblocks)?;
    let f = g.function("philox", OP)?;
    let nb = nblocks as i64;
    let mut b = g.stream().launch_builder(&f);
    b.arg(&nb).arg(&seed).arg(&counter).arg(&out.addr);
    // SAFETY: as above.
    check::launched(unsafe { b.launch(cfg) }, OP)
}
