//! Launches of kernels/embedding.cu: the row gather of an embedding table (out-of-range ids give
//! zero rows and raise a device flag) and its scatter-add backward into an f32 table gradient
//! (CPU twin: ops::embedding).

use super::check;
use crate::cuda::gpu::{suffix, Ptr};
use crate::cuda::Gpu;
use crate::error::Result;
use crate::tensor::DType;
use cudarc::driver::{LaunchConfig, PushKernelArg};

const OP: &str = "embedding";
const OP_BACK: &str = "embedding_backward";

/// The contract's launch for `n_ids` rows of `dim` elements at `p` elements per thread access:
/// BX = min(256, roundup32(ceil(dim / p))), BY = max(1, 256 / BX), grid ceil(n_ids / BY)
/// (rows are block-strided, so the cap only bounds the grid).
fn config(n_ids: usize, dim: usize, p: usize) -> LaunchConfig {
    let bx = (dim.div_ceil(p).div_ceil(32) * 32).clamp(32, 256);
    let by = (256 / bx).max(1);
    LaunchConfig {
        grid_dim: (check::blocks(n_ids, by, 65535 * 16), 1, 1),
        block_dim: (bx as u32, by as u32, 1),
        shared_mem_bytes: 0,
    }
}

/// Elements per 16-byte access of `dtype` when `dim` and `ld` allow it, else 1.
fn pack(dtype: DType, dim: usize, ld: usize) -> usize {
    let p = 16 / dtype.size_in_bytes().max(1);
    if dim.is_multiple_of(p) && ld.is_multiple_of(p) {
        p
    } else {
        1
    }
}

/// out[k, :] = weight[ids[k], :dim] for k < n_ids: `ids` i64 [n_ids]; `weight` [vocab, dim]
/// with row stride `ld` (>= dim) and unit column stride; `out` contiguous [n_ids, dim] of
/// weight's dtype (f32, bf16, f16). An id outside [0, vocab) writes a row of zeros and sets
/// `bad_id` (i32 [1], nullable) to 1; the flag is only ever set, so the caller zeroes it
/// before the launch (one flag may collect several launches).
#[allow(clippy::too_many_arguments)]
pub fn embedding(
    g: &Gpu,
    ids: Ptr,
    weight: Ptr,
    out: Ptr,
    bad_id: Ptr,
    n_ids: usize,
    vocab: usize,
    dim: usize,
    ld: usize,
) -> Result<()> {
    crate::ensure!(ld >= dim, "{OP}: row stride ld = {ld} is below dim = {dim}");
    check::dtype(OP, "ids", ids, DType::I64)?;
    check::need(OP, "ids", ids, n_ids)?;
    check::dtype(OP, "weight", weight, out.dtype)?;
    let table = if vocab == 0 {
        0
    } else {
        (vocab - 1) * ld + dim
    };
    check::need(OP, "weight", weight, table)?;
    check::need(OP, "output", out, n_ids * dim)?;
    check::dtype(OP, "bad_id", bad_id, DType::I32)?;
    check::need_opt(OP, "bad_id", bad_id, 1)?;
    if n_ids == 0 || dim == 0 {
        return Ok(());
    }
    let s = suffix(out.dtype)?;
    let (n, v, d, l) = (n_ids as i64, vocab as i64, dim as i64, ld as i64);
    let f = g.function("embedding", &format!("embedding_{s}"))?;
    let mut b = g.stream().launch_builder(&f);
    b.arg(&n).arg(&v).arg(&d).arg(&l);
    b.arg(&ids.addr)
        .arg(&weight.addr)
        .arg(&out.addr)
        .arg(&bad_id.addr);
    let cfg = config(n_ids, dim, pack(out.dtype, dim, ld));
    // SAFETY: argument types and order follow the kernel's signature; sizes checked above.
    check::launched(unsafe { b.launch(cfg) }, "embedding")
}

/// dweight = Σ_k one_hot(ids[k]) ⊗ grad[k, :]: `ids` i64 [n_ids]; `grad` contiguous
/// [n_ids, dim] (f32, bf16 or f16); `dweight` f32 [vocab, dim] contiguous, overwritten (zeroed
/// here, then accumulated with atomics; cast it to the table's dtype afterwards). Ids outside
/// [0, vocab) are skipped. Repeated ids sum in a varying order (last-bit differences run to run).
pub fn embedding_backward(
    g: &Gpu,
    ids: Ptr,
    grad: Ptr,
    dweight: Ptr,
    n_ids: usize,
    vocab: usize,
    dim: usize,
) -> Result<()> {
    check::dtype(OP_BACK, "ids", ids, DType::I64)?;
    check::need(OP_BACK, "ids", ids, n_ids)?;
    check::need(OP_BACK, "grad", grad, n_ids * dim)?;
    check::dtype(OP_BACK, "dweight", dweight, DType::F32)?;
    check::need(OP_BACK, "dweight", dweight, vocab * dim)?;
    let s = suffix(grad.dtype)?;
    if vocab * dim == 0 {
        return Ok(());
    }
    let bytes = vocab * dim * 4;
    // SAFETY: `dweight` holds at least `bytes` bytes (checked above); queued on the stream.
    unsafe {
        cudarc::driver::result::memset_d8_async(dweight.addr, 0, bytes, g.stream().cu_stream())
    }
    .map_err(|e| crate::cuda::modules::driver_error(e, "zeroing the embedding gradient"))?;
    if n_ids == 0 {
        return Ok(());
    }
    let (n, v, d) = (n_ids as i64, vocab as i64, dim as i64);
    let f = g.function("embedding", &format!("embedding_backward_{s}"))?;
    let mut b = g.stream().launch_builder(&f);
    b.arg(&n).arg(&v).arg(&d);
    b.arg(&ids.addr).arg(&grad.addr).arg(&dweight.addr);
    // SAFETY: as above.
    check::launched(
        unsafe { b.launch(config(n_ids, dim, 1)) },
        "embedding_backward",
    )
}
