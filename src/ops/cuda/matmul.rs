//! Matmul's CUDA path: broadcasting batched GEMMs through cuBLAS, each operand read in place
//! through its strides (a transposed view maps onto cuBLAS's transpose flag, broadcast batch
//! dims onto a zero batch stride); operands that no GEMM layout describes are made contiguous.

use super::{DevIn, OnCuda};
use crate::backend::cuda::gemm::{gemm, GemmShape};
use crate::error::Result;
use crate::tensor::{DType, Layout, Storage, Tensor};

/// The dtypes cuBLAS multiplies here (f64 stays on the host).
pub fn supported(dtype: DType) -> bool {
    matches!(dtype, DType::F32 | DType::BF16 | DType::F16)
}

/// How a GEMM reads a strided [rows, cols] matrix: (transposed, leading dimension), or None
/// when neither row-major (unit column stride) nor column-major (unit row stride) fits.
fn mat_layout(rows: usize, cols: usize, rs: usize, cs: usize) -> Option<(bool, usize)> {
    if cols <= 1 || cs == 1 {
        let ld = if rows <= 1 { cols.max(1) } else { rs };
        if ld >= cols.max(1) {
            return Some((false, ld));
        }
    }
    if rows <= 1 || rs == 1 {
        let ld = if cols <= 1 { rows.max(1) } else { cs };
        if ld >= rows.max(1) {
            return Some((true, ld));
        }
    }
    None
}

/// The single stride that walks dims `shape` (row-major) of a strided layout, or None when the
/// dims do not collapse into one (size-1 dims are free; all-broadcast dims give stride 0).
fn collapse(shape: &[usize], strides: &[usize]) -> Option<usize> {
    let mut stride = None;
    let mut inner = 1usize;
    for (&n, &s) in shape.iter().zip(strides).rev() {
        if n == 1 {
            continue;
        }
        match stride {
            None => stride = Some(s),
            Some(s0) if s != s0 * inner => return None,
            Some(_) => {}
        }
        inner *= n;
    }
    Some(stride.unwrap_or(0))
}

/// An operand on the device, broadcast to `batch + [rows, cols]`, with its GEMM layout.
struct Operand {
    dev: DevIn,
    trans: bool,
    ld: usize,
    /// Strides of the broadcast batch dims.
    batch_strides: Vec<usize>,
}

fn operand(cx: &OnCuda, t: &Tensor, batch: &[usize], rows: usize, cols: usize) -> Result<Operand> {
    let mut full = batch.to_vec();
    full.extend([rows, cols]);
    let t = t.detach().to_device(cx.device())?;
    let place = |t: &Tensor| -> Result<Option<(Layout, bool, usize)>> {
        let l = t.layout().broadcast_to(&full)?;
        let r = l.rank();
        let (rs, cs) = (l.strides()[r - 2], l.strides()[r - 1]);
        Ok(mat_layout(rows, cols, rs, cs).map(|(trans, ld)| (l, trans, ld)))
    };
    let (t, (l, trans, ld)) = match place(&t)? {
        Some(p) => (t, p),
        None => {
            let c = t.contiguous()?;
            let p = place(&c)?.ok_or_else(|| {
                crate::error::Error::msg("internal: a contiguous matrix has no GEMM layout")
            })?;
            (c, p)
        }
    };
    Ok(Operand {
        dev: cx.view(&t)?,
        trans,
        ld,
        batch_strides: l.strides()[..batch.len()].to_vec(),
    })
}

/// Storage offsets of each matrix of the leading `outer` batch dims, row-major.
fn outer_offsets(outer: &[usize], strides: &[usize]) -> Vec<usize> {
    let mut offsets = Vec::with_capacity(outer.iter().product());
    Layout::new(outer.to_vec(), strides.to_vec(), 0).for_each_index(|o| offsets.push(o));
    offsets
}

/// `a [.., m, k] @ b [.., k, n]` with the batch dims broadcast to `batch`, into a fresh
/// contiguous [batch.., m, n] on the device: one strided-batched GEMM over the trailing batch
/// dims that both operands walk with a single stride, one per index of the rest.
pub fn matmul(
    cx: &OnCuda,
    a: &Tensor,
    b: &Tensor,
    batch: &[usize],
    (m, k, n): (usize, usize, usize),
) -> Result<Storage> {
    let count: usize = batch.iter().product();
    let dtype = a.dtype();
    let len = count * m * n;
    if len == 0 {
        return Ok(cx.output(0, dtype)?.0);
    }
    if k == 0 {
        return Ok(cx.zeros(len, dtype)?.0);
    }
    let oa = operand(cx, a, batch, m, k)?;
    let ob = operand(cx, b, batch, k, n)?;
    let c_strides = Layout::contiguous(batch).strides().to_vec();
    // The first batch dim from which both operands collapse into one stride each.
    let split = (0..=batch.len())
        .find(|&p| {
            collapse(&batch[p..], &oa.batch_strides[p..]).is_some()
                && collapse(&batch[p..], &ob.batch_strides[p..]).is_some()
        })
        .unwrap_or(batch.len());
    let inner = &batch[split..];
    let stride = |o: &Operand| collapse(inner, &o.batch_strides[split..]).unwrap_or(0);
    let shape = GemmShape {
        m,
        n,
        k,
        trans_a: oa.trans,
        trans_b: ob.trans,
        lda: oa.ld,
        ldb: ob.ld,
        ldc: n,
        batch: inner.iter().product(),
        stride_a: stride(&oa),
        stride_b: stride(&ob),
        stride_c: m * n,
        alpha: 1.0,
        beta: 0.0,
    };
    let (out, c) = cx.output(len, dtype)?;
    let outer = &batch[..split];
    let offs_a = outer_offsets(outer, &oa.batch_strides[..split]);
    let offs_b = outer_offsets(outer, &ob.batch_strides[..split]);
    let offs_c = outer_offsets(outer, &c_strides[..split]);
    for ((&pa, &pb), &pc) in offs_a.iter().zip(&offs_b).zip(&offs_c) {
        gemm(
            &cx.gpu,
            oa.dev.ptr.offset(pa)?,
            ob.dev.ptr.offset(pb)?,
            c.offset(pc * m * n)?,
            &shape,
        )?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gemm_layouts() {
        assert_eq!(mat_layout(3, 4, 4, 1), Some((false, 4)));
        assert_eq!(mat_layout(3, 4, 1, 3), Some((true, 3)));
        assert_eq!(mat_layout(3, 4, 1, 5), Some((true, 5)));
        assert_eq!(mat_layout(3, 4, 0, 1), None);
        assert_eq!(mat_layout(3, 4, 8, 2), None);
        assert_eq!(mat_layout(1, 4, 0, 1), Some((false, 4)));
        assert_eq!(mat_layout(3, 1, 0, 0), None);
        assert_eq!(mat_layout(3, 1, 1, 0), Some((false, 1)));
    }

    #[test]
    fn batch_collapse() {
        assert_eq!(collapse(&[2, 3], &[12, 4]), Some(4));
        assert_eq!(collapse(&[2, 3], &[0, 0]), Some(0));
        assert_eq!(collapse(&[2, 3], &[4, 0]), None);
        assert_eq!(collapse(&[2, 1, 3], &[12, 99, 4]), Some(4));
        assert_eq!(collapse(&[1, 1], &[5, 7]), Some(0));
        assert_eq!(collapse(&[], &[]), Some(0));
    }
}
