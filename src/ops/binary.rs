//! Broadcasting binary ops (add, sub, mul, div, maximum, minimum) and scalar ops.

use crate::autograd::{op_output, Backward};
use crate::backend::cpu::{
    self,
    binary::{Binary, Reach},
};
use crate::bail;
use crate::error::Result;
use crate::tensor::{broadcast_shapes, DType, Tensor};

struct BinaryBack(Binary);

impl Backward for BinaryBack {
    fn name(&self) -> &'static str {
        self.0.name()
    }
    fn backward(
        &self,
        g: &Tensor,
        inputs: &[Tensor],
        needs: &[bool],
        out: &Tensor,
    ) -> Result<Vec<Option<Tensor>>> {
        let (a, b) = (&inputs[0], &inputs[1]);
        let (ga, gb) = match self.0 {
            Binary::Add => (g.clone(), g.clone()),
            Binary::Sub => (g.clone(), if needs[1] { g.neg()? } else { g.clone() }),
            Binary::Mul => (
                if needs[0] { g.mul(b)? } else { g.clone() },
                if needs[1] { g.mul(a)? } else { g.clone() },
            ),
            Binary::Div => (
                if needs[0] { g.div(b)? } else { g.clone() },
                // d(a/b)/db = -out/b
                if needs[1] {
                    g.mul(out)?.div(b)?.neg()?
                } else {
                    g.clone()
                },
            ),
            Binary::Maximum | Binary::Minimum => {
                // The gradient goes to the input that was selected (a on ties).
                let a_won = a.broadcast_as(out.shape())?.eq_mask(out)?;
                let ga = g.mul(&a_won)?;
                let gb = if needs[1] { g.sub(&ga)? } else { g.clone() };
                (ga, gb)
            }
        };
        Ok(vec![
            if needs[0] {
                Some(ga.sum_to(a.shape())?.to_dtype(a.dtype())?)
            } else {
                None
            },
            if needs[1] {
                Some(gb.sum_to(b.shape())?.to_dtype(b.dtype())?)
            } else {
                None
            },
        ])
    }
}

/// The result dtype of mixing two float dtypes (the wider one; equal stays).
fn promote(a: DType, b: DType) -> Result<DType> {
    if !a.is_float() || !b.is_float() {
        bail!("binary ops need float tensors, got {a} and {b}");
    }
    Ok(match (a, b) {
        (x, y) if x == y => x,
        (DType::F64, _) | (_, DType::F64) => DType::F64,
        _ => DType::F32,
    })
}

/// The broadcast patterns read in place (no expanded copy): `shape` padded with
/// leading 1s must be a suffix or a prefix (followed by 1s) of `out`.
pub(crate) fn reach(shape: &[usize], out: &[usize]) -> Option<Reach> {
    if shape == out {
        return Some(Reach::Full);
    }
    let mut padded = vec![1; out.len().saturating_sub(shape.len())];
    padded.extend_from_slice(shape);
    if padded.len() != out.len() {
        return None;
    }
    // First dim (from the left) where the operand is not broadcast.
    let first = padded
        .iter()
        .zip(out)
        .position(|(p, o)| p == o && *o != 1)
        .unwrap_or(out.len());
    if padded[first..] == out[first..] && padded[..first].iter().all(|&p| p == 1) {
        return Some(Reach::Trailing(out[first..].iter().product()));
    }
    let last = padded
        .iter()
        .zip(out)
        .rposition(|(p, o)| p == o && *o != 1)
        .map_or(0, |k| k + 1);
    if padded[..last] == out[..last] && padded[last..].iter().all(|&p| p == 1) {
        return Some(Reach::Leading(out[last..].iter().product()));
    }
    None
}

fn binary(op: Binary, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let shape = broadcast_shapes(a.shape(), b.shape()).map_err(|e| e.context(op.name()))?;
    let dtype = promote(a.dtype(), b.dtype())?;
    #[cfg(feature = "cuda")]
    if let Some(cx) = crate::ops::cuda::OnCuda::of(&[a, b])? {
        if crate::ops::cuda::cast::kernel_float(dtype) {
            let storage = crate::ops::cuda::binary::binary(&cx, op, a, b, &shape, dtype, reach)?;
            return op_output(storage, &shape, &[a, b], || BinaryBack(op));
        }
    }
    let n: usize = shape.iter().product();
    let storage = crate::with_real!(dtype, T => {
        // Operands of the output's shape, and bias-like broadcasts, are read in
        // place (no copy when contiguous and of the compute dtype); other
        // broadcasts are expanded first.
        let operand = |t: &Tensor| -> Result<(Tensor, Reach)> {
            match reach(t.shape(), &shape) {
                Some(r) if t.is_contiguous() || matches!(r, Reach::Full) => Ok((t.detach(), r)),
                _ => Ok((t.broadcast_as(&shape)?.detach(), Reach::Full)),
            }
        };
        let ((ea, ra), (eb, rb)) = (operand(a)?, operand(b)?);
        let out = ea.with_values::<T, _>(|av| {
            eb.with_values::<T, _>(|bv| cpu::binary::binary(op, av, ra, bv, rb, n))
        });
        cpu::storage_from(out, dtype)
    });
    op_output(storage, &shape, &[a, b], || BinaryBack(op))
}

impl Tensor {
    pub fn add(&self, other: &Tensor) -> Result<Tensor> {
        binary(Binary::Add, self, other)
    }
    pub fn sub(&self, other: &Tensor) -> Result<Tensor> {
        binary(Binary::Sub, self, other)
    }
    pub fn mul(&self, other: &Tensor) -> Result<Tensor> {
        binary(Binary::Mul, self, other)
    }
    pub fn div(&self, other: &Tensor) -> Result<Tensor> {
        binary(Binary::Div, self, other)
    }
    pub fn maximum(&self, other: &Tensor) -> Result<Tensor> {
        binary(Binary::Maximum, self, other)
    }
    pub fn minimum(&self, other: &Tensor) -> Result<Tensor> {
        binary(Binary::Minimum, self, other)
    }

    /// 1 where self == other, else 0 (same dtype; not differentiable).
    pub fn eq_mask(&self, other: &Tensor) -> Result<Tensor> {
        let shape = broadcast_shapes(self.shape(), other.shape())?;
        crate::with_real!(self.dtype(), T => {
            let a = self.broadcast_as(&shape)?.detach().to_vec::<T>();
            let b = other.broadcast_as(&shape)?.detach().to_vec::<T>();
            let m = a.iter().zip(&b).map(|(x, y)| if x == y { T::one() } else { T::zero() }).collect();
            Tensor::from_values(m, &shape, self.dtype())
        })
    }

    /// self * mul + add, elementwise with scalars.
    pub fn affine(&self, mul: f64, add: f64) -> Result<Tensor> {
        crate::ops::unary::affine(self, mul, add)
    }
    pub fn scale(&self, s: f64) -> Result<Tensor> {
        self.affine(s, 0.0)
    }
    pub fn add_scalar(&self, s: f64) -> Result<Tensor> {
        self.affine(1.0, s)
    }
}
