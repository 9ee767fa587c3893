//! Embedding lookup (a row gather in the table's own dtype) and its backward
//! (scatter-add of output gradients into the table's gradient rows).

use crate::autograd::{op_output, Backward};
use crate::error::Result;
use crate::tensor::{CpuSlice, CpuStorage, DType, Layout, Storage, Tensor};
use crate::{bail, ensure};

struct EmbeddingBack {
    ids: Vec<usize>,
}

impl Backward for EmbeddingBack {
    fn name(&self) -> &'static str {
        "embedding"
    }
    fn backward(
        &self,
        g: &Tensor,
        inputs: &[Tensor],
        _: &[bool],
        _: &Tensor,
    ) -> Result<Vec<Option<Tensor>>> {
        let w = &inputs[0];
        let (vocab, dim) = (w.shape()[0], w.shape()[1]);
        let dw = crate::with_real!(w.dtype(), T => {
            let mut dw = vec![T::zero(); vocab * dim];
            g.with_values::<T, _>(|gv| {
                for (&id, row) in self.ids.iter().zip(gv.chunks(dim.max(1))) {
                    dw[id * dim..(id + 1) * dim].iter_mut().zip(row).for_each(|(a, &b)| *a += b);
                }
            });
            Tensor::from_values(dw, w.shape(), w.dtype())?
        });
        Ok(vec![Some(dw)])
    }
}

/// Rows `ids` of the [V, D] matrix `src` viewed through `layout`, concatenated.
fn gather_rows<S: Copy>(src: &[S], layout: &Layout, ids: &[usize]) -> Vec<S> {
    let (rs, cs) = (layout.strides()[0], layout.strides()[1]);
    let dim = layout.shape()[1];
    let mut out = Vec::with_capacity(ids.len() * dim);
    for &id in ids {
        let base = layout.offset() + id * rs;
        out.extend((0..dim).map(|j| src[base + j * cs]));
    }
    out
}

/// Look up rows of `weight` [V, D] for integer `ids` of any shape → ids.shape + [D],
/// in the weight's dtype. An id outside 0..V is an error naming the id and V.
/// Only the weight gets a gradient (dense [V, D], rows of repeated ids add up).
pub fn embedding(ids: &Tensor, weight: &Tensor) -> Result<Tensor> {
    ensure!(
        matches!(ids.dtype(), DType::I64 | DType::I32 | DType::U8),
        "embedding: ids must be an integer tensor, got {}",
        ids.dtype()
    );
    ensure!(
        weight.rank() == 2 && weight.dtype().is_float(),
        "embedding: weight must be a float [vocab, dim] matrix, got {} {:?}",
        weight.dtype(),
        weight.shape()
    );
    let (vocab, dim) = (weight.shape()[0], weight.shape()[1]);
    #[cfg(feature = "cuda")]
    if let Some(cx) = crate::ops::cuda::OnCuda::of(&[weight])? {
        if crate::ops::cuda::embedding::supported(weight) {
            if ids.device() == crate::tensor::Device::Cpu {
                // Host ids are checked here as on the CPU (device ids are not read back).
                if let Some(&id) = ids
                    .to_vec_i64()
                    .iter()
                    .find(|&&id| usize::try_from(id).map_or(true, |i| i >= vocab))
                {
                    bail!("embedding: id {id} is out of range for a vocabulary of {vocab}");
                }
            }
            return crate::ops::cuda::embedding::embedding(&cx, ids, weight);
        }
    }
    let ids_v: Vec<usize> = ids
        .to_vec_i64()
        .into_iter()
        .map(|id| match usize::try_from(id) {
            Ok(i) if i < vocab => Ok(i),
            _ => bail!("embedding: id {id} is out of range for a vocabulary of {vocab}"),
        })
        .collect::<Result<_>>()?;
    let storage = weight.storage();
    let layout = weight.layout();
    let gathered = match storage.cpu().slice() {
        CpuSlice::F64(s) => CpuStorage::F64(gather_rows(s, layout, &ids_v)),
        CpuSlice::F32(s) => CpuStorage::F32(gather_rows(s, layout, &ids_v)),
        CpuSlice::F16(s) => CpuStorage::F16(gather_rows(s, layout, &ids_v)),
        CpuSlice::BF16(s) => CpuStorage::BF16(gather_rows(s, layout, &ids_v)),
        _ => unreachable!("weight dtype checked to be float"),
    };
    let mut shape = ids.shape().to_vec();
    shape.push(dim);
    op_output(Storage::Cpu(gathered), &shape, &[weight], || {
        EmbeddingBack { ids: ids_v }
    })
}

impl Tensor {
    /// `embedding(ids, weight)`: rows of `weight` [V, D] for the integer `ids`.
    pub fn embedding(ids: &Tensor, weight: &Tensor) -> Result<Tensor> {
        embedding(ids, weight)
    }
}
