//! Reductions: sum/mean over dimensions, max over a dimension, sum_to (the
//! adjoint of broadcasting), argmax.

use crate::autograd::{op_output, Backward};
use crate::backend::cpu::{self, reduce};
use crate::bail;
use crate::error::Result;
use crate::tensor::{resolve_dim, Tensor};

/// The device a reduction of `x` runs on when it is a GPU and `x` is of a kernel dtype (f32,
/// bf16, f16); None sends it down the CPU path (the host fallback for device inputs).
#[cfg(feature = "cuda")]
fn on_cuda(x: &Tensor) -> Result<Option<crate::ops::cuda::OnCuda>> {
    if !crate::ops::cuda::cast::kernel_float(x.dtype()) {
        return Ok(None);
    }
    crate::ops::cuda::OnCuda::of(&[x])
}

/// Move the reduced dims last; return (permuted input, kept shape, outer, inner).
fn split_reduced(x: &Tensor, dims: &[usize]) -> Result<(Tensor, Vec<usize>, usize, usize)> {
    let kept: Vec<usize> = (0..x.rank()).filter(|d| !dims.contains(d)).collect();
    let perm: Vec<usize> = kept.iter().chain(dims.iter()).copied().collect();
    let outer: usize = kept.iter().map(|&d| x.shape()[d]).product();
    let inner: usize = dims.iter().map(|&d| x.shape()[d]).product();
    let kept_shape = kept.iter().map(|&d| x.shape()[d]).collect();
    Ok((x.detach().permute(&perm)?, kept_shape, outer, inner))
}

fn normalize_dims(dims: &[isize], rank: usize) -> Result<Vec<usize>> {
    let mut out = Vec::with_capacity(dims.len());
    for &d in dims {
        let d = resolve_dim(d, rank)?;
        if out.contains(&d) {
            bail!("dimension {d} listed twice in a reduction");
        }
        out.push(d);
    }
    out.sort_unstable();
    Ok(out)
}

/// The output shape with reduced dims kept as 1 or removed.
fn reduced_shape(shape: &[usize], dims: &[usize], keepdim: bool) -> Vec<usize> {
    shape
        .iter()
        .enumerate()
        .filter_map(|(i, &s)| match (dims.contains(&i), keepdim) {
            (true, true) => Some(1),
            (true, false) => None,
            (false, _) => Some(s),
        })
        .collect()
}

struct SumBack {
    dims: Vec<usize>,
    scale: f64,
}
impl Backward for SumBack {
    fn name(&self) -> &'static str {
        "sum"
    }
    fn backward(
        &self,
        g: &Tensor,
        inputs: &[Tensor],
        _: &[bool],
        _: &Tensor,
    ) -> Result<Vec<Option<Tensor>>> {
        let x = &inputs[0];
        let keep = reduced_shape(x.shape(), &self.dims, true);
        let g = g.reshape(&keep)?.broadcast_as(x.shape())?.contiguous()?;
        let g = if self.scale != 1.0 {
            g.scale(self.scale)?
        } else {
            g
        };
        Ok(vec![Some(g)])
    }
}

fn sum_impl(x: &Tensor, dims: &[isize], keepdim: bool, mean: bool) -> Result<Tensor> {
    if !x.dtype().is_float() {
        bail!("sum/mean need a float tensor, got {}", x.dtype());
    }
    let dims = normalize_dims(dims, x.rank())?;
    #[cfg(feature = "cuda")]
    if let Some(cx) = on_cuda(x)? {
        let storage = crate::ops::cuda::reduce::sum(&cx, x, &dims, mean)?;
        let count: usize = dims.iter().map(|&d| x.shape()[d]).product();
        let scale = if mean { 1.0 / count.max(1) as f64 } else { 1.0 };
        let shape = reduced_shape(x.shape(), &dims, keepdim);
        return op_output(storage, &shape, &[x], || SumBack { dims, scale });
    }
    let (p, _, outer, inner) = split_reduced(x, &dims)?;
    let scale = if mean { 1.0 / inner.max(1) as f64 } else { 1.0 };
    let storage = crate::with_real!(x.dtype(), T => {
        let mut s = reduce::sum_rows(&p.to_vec::<T>(), outer, inner);
        if mean {
            let k = T::from_f64(scale);
            s.iter_mut().for_each(|v| *v *= k);
        }
        cpu::storage_from(s, x.dtype())
    });
    let shape = reduced_shape(x.shape(), &dims, keepdim);
    op_output(storage, &shape, &[x], || SumBack { dims, scale })
}

struct MaxBack {
    dim: usize,
    argmax: Vec<usize>,
}
impl Backward for MaxBack {
    fn name(&self) -> &'static str {
        "max"
    }
    fn backward(
        &self,
        g: &Tensor,
        inputs: &[Tensor],
        _: &[bool],
        _: &Tensor,
    ) -> Result<Vec<Option<Tensor>>> {
        let x = &inputs[0];
        let (_, _, outer, inner) = split_reduced(x, &[self.dim])?;
        crate::with_real!(x.dtype(), T => {
            let gv = g.to_vec::<T>();
            // Build the gradient in the permuted (dim-last) order, then permute back.
            let mut d = vec![T::zero(); outer * inner];
            for (row, &a) in self.argmax.iter().enumerate() {
                d[row * inner + a] = gv[row];
            }
            let mut pshape: Vec<usize> = (0..x.rank()).filter(|&i| i != self.dim).map(|i| x.shape()[i]).collect();
            pshape.push(inner);
            let mut inverse: Vec<usize> = (0..x.rank() - 1).collect();
            inverse.insert(self.dim, x.rank() - 1);
            let dx = Tensor::from_values(d, &pshape, x.dtype())?.permute(&inverse)?.contiguous()?;
            Ok(vec![Some(dx)])
        })
    }
}

/// MaxBack for a maximum computed on a GPU: the indices stay on the device until a backward
/// needs them (read back then; the gradient's scatter runs on the host).
#[cfg(feature = "cuda")]
struct MaxIdxBack {
    dim: usize,
    idx: Tensor,
}
#[cfg(feature = "cuda")]
impl Backward for MaxIdxBack {
    fn name(&self) -> &'static str {
        "max"
    }
    fn backward(
        &self,
        g: &Tensor,
        inputs: &[Tensor],
        needs: &[bool],
        out: &Tensor,
    ) -> Result<Vec<Option<Tensor>>> {
        let idx = self.idx.storage().try_cpu()?.values_i64(self.idx.layout());
        let argmax = idx.into_iter().map(|i| i as usize).collect();
        let grads = MaxBack {
            dim: self.dim,
            argmax,
        }
        .backward(g, inputs, needs, out)?;
        // Computed on the host: hand the gradient on on the input's device.
        grads
            .into_iter()
            .map(|o| o.map(|t| t.to_device(inputs[0].device())).transpose())
            .collect()
    }
}

impl Tensor {
    /// Sum over `dims`.
    pub fn sum_dims(&self, dims: &[isize], keepdim: bool) -> Result<Tensor> {
        sum_impl(self, dims, keepdim, false)
    }
    /// Mean over `dims`.
    pub fn mean_dims(&self, dims: &[isize], keepdim: bool) -> Result<Tensor> {
        sum_impl(self, dims, keepdim, true)
    }
    /// Sum of all elements (shape []).
    pub fn sum_all(&self) -> Result<Tensor> {
        let dims: Vec<isize> = (0..self.rank() as isize).collect();
        sum_impl(self, &dims, false, false)
    }
    /// Mean of all elements (shape []).
    pub fn mean_all(&self) -> Result<Tensor> {
        let dims: Vec<isize> = (0..self.rank() as isize).collect();
        sum_impl(self, &dims, false, true)
    }

    /// Maximum along `dim` (gradient flows to the first maximal entry).
    pub fn max_dim(&self, dim: isize, keepdim: bool) -> Result<Tensor> {
        let dim = resolve_dim(dim, self.rank())?;
        if self.shape()[dim] == 0 {
            bail!("max over an empty dimension");
        }
        #[cfg(feature = "cuda")]
        if let Some(cx) = on_cuda(self)? {
            let (values, idx) = crate::ops::cuda::reduce::max(&cx, self, dim)?;
            let idx = crate::ops::cuda::tensor(idx, &reduced_shape(self.shape(), &[dim], false))?;
            let shape = reduced_shape(self.shape(), &[dim], keepdim);
            return op_output(values, &shape, &[self], || MaxIdxBack { dim, idx });
        }
        let (p, _, outer, inner) = split_reduced(self, &[dim])?;
        let (storage, argmax) = crate::with_real!(self.dtype(), T => {
            let (m, a) = reduce::max_rows(&p.to_vec::<T>(), inner);
            debug_assert_eq!(m.len(), outer);
            (cpu::storage_from(m, self.dtype()), a)
        });
        let shape = reduced_shape(self.shape(), &[dim], keepdim);
        op_output(storage, &shape, &[self], || MaxBack { dim, argmax })
    }

    /// Index of the maximum along `dim` (i64, not differentiable).
    pub fn argmax(&self, dim: isize) -> Result<Tensor> {
        let dim = resolve_dim(dim, self.rank())?;
        #[cfg(feature = "cuda")]
        if let Some(cx) = on_cuda(self)? {
            let idx = crate::ops::cuda::reduce::argmax(&cx, self, dim)?;
            return crate::ops::cuda::tensor(idx, &reduced_shape(self.shape(), &[dim], false));
        }
        let (p, kept, _, inner) = split_reduced(self, &[dim])?;
        let a = crate::with_real!(self.dtype(), T => reduce::max_rows(&p.to_vec::<T>(), inner).1);
        Tensor::from_i64(a.into_iter().map(|i| i as i64).collect(), &kept)
    }

    /// Sum a broadcast result back down to `shape` (the adjoint of `broadcast_as`).
    pub fn sum_to(&self, shape: &[usize]) -> Result<Tensor> {
        if self.shape() == shape {
            return Ok(self.clone());
        }
        if shape.len() > self.rank() {
            bail!("sum_to: cannot reduce {:?} to {shape:?}", self.shape());
        }
        let lead = self.rank() - shape.len();
        let mut dims: Vec<isize> = (0..lead as isize).collect();
        for (i, &s) in shape.iter().enumerate() {
            let d = self.shape()[lead + i];
            if s == 1 && d != 1 {
                dims.push((lead + i) as isize);
            } else if s != d {
                bail!("sum_to: cannot reduce {:?} to {shape:?}", self.shape());
            }
        }
        self.sum_dims(&dims, false)?.reshape(shape)
    }
}
