//! Batched matrix multiply with broadcasting batch dims, and `linear`.
//! Transposed operands are read through their strides (no copy).

use crate::autograd::{op_output, Backward};
use crate::backend::cpu::{
    self,
    gemm::{matmul as gemm, MatRef},
};
use crate::bail;
use crate::error::Result;
use crate::tensor::{broadcast_shapes, Layout, Real, Tensor};
use rayon::prelude::*;

struct MatmulBack;
impl Backward for MatmulBack {
    fn name(&self) -> &'static str {
        "matmul"
    }
    fn backward(
        &self,
        g: &Tensor,
        inputs: &[Tensor],
        needs: &[bool],
        _: &Tensor,
    ) -> Result<Vec<Option<Tensor>>> {
        let (a, b) = (&inputs[0], &inputs[1]);
        let ga = if needs[0] {
            Some(g.matmul(&b.t()?)?.sum_to(a.shape())?.to_dtype(a.dtype())?)
        } else {
            None
        };
        let gb = if needs[1] {
            Some(a.t()?.matmul(g)?.sum_to(b.shape())?.to_dtype(b.dtype())?)
        } else {
            None
        };
        Ok(vec![ga, gb])
    }
}

/// Storage offsets of each batch matrix of a broadcast view, in row-major batch order.
fn batch_offsets(layout: &Layout, batch: &[usize]) -> Vec<usize> {
    let r = layout.rank();
    let lead = Layout::new(
        batch.to_vec(),
        layout.strides()[..r - 2].to_vec(),
        layout.offset(),
    );
    let mut offsets = Vec::with_capacity(batch.iter().product());
    lead.for_each_index(|o| offsets.push(o));
    offsets
}

fn matmul_cpu<T: Real>(
    a: &Tensor,
    b: &Tensor,
    batch: &[usize],
    m: usize,
    k: usize,
    n: usize,
) -> Result<Vec<T>> {
    let mut a_shape = batch.to_vec();
    a_shape.extend([m, k]);
    let mut b_shape = batch.to_vec();
    b_shape.extend([k, n]);
    let (sa, sb) = (a.storage(), b.storage());
    let (da, la) = cpu::strided::<T>(&sa, a.layout());
    let (db, lb) = cpu::strided::<T>(&sb, b.layout());
    let la = la.broadcast_to(&a_shape)?;
    let lb = lb.broadcast_to(&b_shape)?;
    let (oa, ob) = (batch_offsets(&la, batch), batch_offsets(&lb, batch));
    let r = la.rank();
    let (ars, acs, brs, bcs) = (
        la.strides()[r - 2],
        la.strides()[r - 1],
        lb.strides()[r - 2],
        lb.strides()[r - 1],
    );
    let mut out = cpu::poisoned::<T>(oa.len() * m * n);
    let run = |i: usize, dst: &mut [T], threads: bool| {
        gemm(
            m,
            n,
            k,
            MatRef {
                data: &da,
                offset: oa[i],
                rs: ars,
                cs: acs,
            },
            MatRef {
                data: &db,
                offset: ob[i],
                rs: brs,
                cs: bcs,
            },
            dst,
            n,
            false,
            threads,
        );
    };
    if m * n == 0 {
        return Ok(out);
    }
    let small = m * n * k < 64 * 64 * 64;
    if oa.len() > 1 && small {
        out.par_chunks_mut(m * n)
            .enumerate()
            .for_each(|(i, dst)| run(i, dst, false));
    } else {
        out.chunks_mut(m * n)
            .enumerate()
            .for_each(|(i, dst)| run(i, dst, true));
    }
    Ok(out)
}

impl Tensor {
    /// `self [..., m, k] @ other [..., k, n]`, batch dims broadcast.
    pub fn matmul(&self, other: &Tensor) -> Result<Tensor> {
        let (a, b) = (self, other);
        if a.rank() < 2 || b.rank() < 2 {
            bail!(
                "matmul needs rank >= 2 operands, got {:?} and {:?}",
                a.shape(),
                b.shape()
            );
        }
        if a.dtype() != b.dtype() || !a.dtype().is_float() {
            bail!(
                "matmul needs float operands of one dtype, got {} and {}",
                a.dtype(),
                b.dtype()
            );
        }
        let (ra, rb) = (a.rank(), b.rank());
        let (m, k) = (a.shape()[ra - 2], a.shape()[ra - 1]);
        let (k2, n) = (b.shape()[rb - 2], b.shape()[rb - 1]);
        if k != k2 {
            bail!(
                "matmul inner dimensions differ: {:?} @ {:?}",
                a.shape(),
                b.shape()
            );
        }
        // [..., m, k] @ [k, n]: fold the batch into rows for one large GEMM.
        if rb == 2 && ra > 2 {
            let rows: usize = a.shape()[..ra - 1].iter().product();
            let mut out_shape = a.shape()[..ra - 1].to_vec();
            out_shape.push(n);
            return a.reshape(&[rows, k])?.matmul(b)?.reshape(&out_shape);
        }
        let batch = broadcast_shapes(&a.shape()[..ra - 2], &b.shape()[..rb - 2])?;
        #[cfg(feature = "cuda")]
        if let Some(cx) = crate::ops::cuda::OnCuda::of(&[a, b])? {
            if crate::ops::cuda::matmul::supported(a.dtype()) {
                let storage = crate::ops::cuda::matmul::matmul(&cx, a, b, &batch, (m, k, n))?;
                let mut shape = batch;
                shape.extend([m, n]);
                return op_output(storage, &shape, &[a, b], || MatmulBack);
            }
        }
        let storage = crate::with_real!(a.dtype(), T => {
            cpu::storage_from(matmul_cpu::<T>(a, b, &batch, m, k, n)?, a.dtype())
        });
        let mut shape = batch;
        shape.extend([m, n]);
        op_output(storage, &shape, &[a, b], || MatmulBack)
    }

    /// `x @ weight^T + bias` with PyTorch's `nn.Linear` layout (weight [out, in]).
    pub fn linear(&self, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
        let y = self.matmul(&weight.t()?)?;
        match bias {
            Some(b) => y.add(b),
            None => Ok(y),
        }
    }
}
