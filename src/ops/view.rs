//! View ops (no copy where the layout allows): reshape, permute, transpose,
//! narrow, broadcast, squeeze/unsqueeze; and `contiguous`, which copies.

use crate::autograd::{record, Backward};
use crate::bail;
use crate::error::Result;
use crate::tensor::{resolve_dim, Layout, Storage, Tensor};

struct ReshapeBack;
impl Backward for ReshapeBack {
    fn name(&self) -> &'static str {
        "reshape"
    }
    fn backward(
        &self,
        g: &Tensor,
        inputs: &[Tensor],
        _: &[bool],
        _: &Tensor,
    ) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(g.reshape(inputs[0].shape())?)])
    }
}

struct PermuteBack(Vec<usize>);
impl Backward for PermuteBack {
    fn name(&self) -> &'static str {
        "permute"
    }
    fn backward(
        &self,
        g: &Tensor,
        _: &[Tensor],
        _: &[bool],
        _: &Tensor,
    ) -> Result<Vec<Option<Tensor>>> {
        let mut inverse = vec![0; self.0.len()];
        for (i, &p) in self.0.iter().enumerate() {
            inverse[p] = i;
        }
        Ok(vec![Some(g.permute(&inverse)?)])
    }
}

struct NarrowBack {
    dim: usize,
    start: usize,
}
impl Backward for NarrowBack {
    fn name(&self) -> &'static str {
        "narrow"
    }
    fn backward(
        &self,
        g: &Tensor,
        inputs: &[Tensor],
        _: &[bool],
        _: &Tensor,
    ) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(g.pad_into(
            inputs[0].shape(),
            self.dim,
            self.start,
        )?)])
    }
}

struct BroadcastBack;
impl Backward for BroadcastBack {
    fn name(&self) -> &'static str {
        "broadcast"
    }
    fn backward(
        &self,
        g: &Tensor,
        inputs: &[Tensor],
        _: &[bool],
        _: &Tensor,
    ) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(g.sum_to(inputs[0].shape())?)])
    }
}

struct ContiguousBack;
impl Backward for ContiguousBack {
    fn name(&self) -> &'static str {
        "contiguous"
    }
    fn backward(
        &self,
        g: &Tensor,
        _: &[Tensor],
        _: &[bool],
        _: &Tensor,
    ) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(g.clone())])
    }
}

/// Resolve a shape with at most one `-1` entry against `numel`.
fn infer_shape(shape: &[isize], numel: usize) -> Result<Vec<usize>> {
    let known: usize = shape
        .iter()
        .filter(|&&d| d >= 0)
        .map(|&d| d as usize)
        .product();
    let holes = shape.iter().filter(|&&d| d < 0).count();
    match holes {
        0 => Ok(shape.iter().map(|&d| d as usize).collect()),
        1 if known > 0 && numel.is_multiple_of(known) => Ok(shape
            .iter()
            .map(|&d| if d < 0 { numel / known } else { d as usize })
            .collect()),
        _ => bail!("cannot infer shape {shape:?} for {numel} elements"),
    }
}

impl Tensor {
    /// Same elements in a new shape: a view when contiguous, else a copy.
    pub fn reshape(&self, shape: &[usize]) -> Result<Tensor> {
        let n: usize = shape.iter().product();
        if n != self.numel() {
            bail!(
                "cannot reshape {:?} ({} elements) to {shape:?}",
                self.shape(),
                self.numel()
            );
        }
        if shape == self.shape() {
            return Ok(self.clone());
        }
        let base = if self.is_contiguous() {
            self.clone()
        } else {
            self.contiguous()?
        };
        let layout = base
            .layout()
            .reshape(shape)
            .expect("contiguous layouts reshape");
        let node = record(&[&base], || ReshapeBack);
        Ok(base.view_with(layout, node))
    }

    /// `reshape` with one dimension given as -1 (inferred).
    pub fn reshape_infer(&self, shape: &[isize]) -> Result<Tensor> {
        self.reshape(&infer_shape(shape, self.numel())?)
    }

    /// Collapse everything from `start_dim` on into one dimension.
    pub fn flatten_from(&self, start_dim: usize) -> Result<Tensor> {
        let mut shape = self.shape()[..start_dim].to_vec();
        shape.push(self.shape()[start_dim..].iter().product());
        self.reshape(&shape)
    }

    pub fn permute(&self, perm: &[usize]) -> Result<Tensor> {
        let layout = self.layout().permute(perm)?;
        let node = record(&[self], || PermuteBack(perm.to_vec()));
        Ok(self.view_with(layout, node))
    }

    /// Swap two dimensions (negative indices count from the end).
    pub fn transpose(&self, d0: isize, d1: isize) -> Result<Tensor> {
        let (a, b) = (resolve_dim(d0, self.rank())?, resolve_dim(d1, self.rank())?);
        let mut perm: Vec<usize> = (0..self.rank()).collect();
        perm.swap(a, b);
        self.permute(&perm)
    }

    /// Transpose of the last two dimensions.
    pub fn t(&self) -> Result<Tensor> {
        if self.rank() < 2 {
            bail!("t() needs rank >= 2, got shape {:?}", self.shape());
        }
        self.transpose(-2, -1)
    }

    /// `len` entries of dimension `dim` starting at `start` (a view).
    pub fn narrow(&self, dim: isize, start: usize, len: usize) -> Result<Tensor> {
        let dim = resolve_dim(dim, self.rank())?;
        let layout = self.layout().narrow(dim, start, len)?;
        let node = record(&[self], || NarrowBack { dim, start });
        Ok(self.view_with(layout, node))
    }

    /// Split into `n` equal pieces along `dim` (views).
    pub fn chunk(&self, n: usize, dim: isize) -> Result<Vec<Tensor>> {
        let size = self.dim(dim)?;
        if n == 0 || size % n != 0 {
            bail!("cannot chunk dimension of size {size} into {n} equal parts");
        }
        (0..n)
            .map(|i| self.narrow(dim, i * size / n, size / n))
            .collect()
    }

    /// Split along `dim` into pieces of the given sizes (views).
    pub fn split(&self, sizes: &[usize], dim: isize) -> Result<Vec<Tensor>> {
        let total = self.dim(dim)?;
        if sizes.iter().sum::<usize>() != total {
            bail!("split sizes {sizes:?} do not sum to dimension size {total}");
        }
        let mut start = 0;
        sizes
            .iter()
            .map(|&s| {
                let piece = self.narrow(dim, start, s);
                start += s;
                piece
            })
            .collect()
    }

    /// View stretched to `shape` by broadcasting (no copy).
    pub fn broadcast_as(&self, shape: &[usize]) -> Result<Tensor> {
        if shape == self.shape() {
            return Ok(self.clone());
        }
        let layout = self.layout().broadcast_to(shape)?;
        let node = record(&[self], || BroadcastBack);
        Ok(self.view_with(layout, node))
    }

    /// Insert a size-1 dimension at `dim` (0..=rank; negative counts from the end).
    pub fn unsqueeze(&self, dim: isize) -> Result<Tensor> {
        let dim = resolve_dim(dim, self.rank() + 1)?;
        let mut shape = self.shape().to_vec();
        shape.insert(dim, 1);
        self.reshape_view(&shape)
    }

    /// Remove a size-1 dimension.
    pub fn squeeze(&self, dim: isize) -> Result<Tensor> {
        let dim = resolve_dim(dim, self.rank())?;
        if self.shape()[dim] != 1 {
            bail!(
                "squeeze({dim}) on a dimension of size {}",
                self.shape()[dim]
            );
        }
        let mut shape = self.shape().to_vec();
        shape.remove(dim);
        self.reshape_view(&shape)
    }

    /// Reshape that only adds/removes unit dims: always a view, any layout.
    fn reshape_view(&self, shape: &[usize]) -> Result<Tensor> {
        let mut strides = Vec::with_capacity(shape.len());
        let mut src = self
            .shape()
            .iter()
            .zip(self.layout().strides())
            .filter(|(&d, _)| d != 1);
        for &d in shape {
            if d == 1 {
                strides.push(0);
            } else {
                let (&sd, &ss) = src.next().expect("unit-dim reshape keeps other dims");
                debug_assert_eq!(sd, d);
                strides.push(ss);
            }
        }
        let layout = Layout::new(shape.to_vec(), strides, self.layout().offset());
        let node = record(&[self], || ReshapeBack);
        Ok(self.view_with(layout, node))
    }

    /// A row-major copy (or `self` when already contiguous).
    pub fn contiguous(&self) -> Result<Tensor> {
        if self.is_contiguous() {
            return Ok(self.clone());
        }
        #[cfg(feature = "cuda")]
        if let Some(cx) = crate::ops::cuda::OnCuda::of(&[self])? {
            let storage = crate::ops::cuda::copy::contiguous(&cx, self)?;
            return crate::autograd::op_output(storage, self.shape(), &[self], || ContiguousBack);
        }
        let storage = Storage::Cpu(self.storage().cpu().gather(self.layout()));
        crate::autograd::op_output(storage, self.shape(), &[self], || ContiguousBack)
    }

    /// This tensor written into zeros of `shape` at offset `start` along `dim`
    /// (the adjoint of `narrow`).
    pub fn pad_into(&self, shape: &[usize], dim: usize, start: usize) -> Result<Tensor> {
        #[cfg(feature = "cuda")]
        if let Some(cx) = crate::ops::cuda::OnCuda::of(&[self])? {
            let storage = crate::ops::cuda::copy::pad_into(&cx, self, shape, dim, start)?;
            return crate::ops::cuda::tensor(storage, shape);
        }
        crate::with_real!(self.dtype(), T => {
            let mut out = vec![T::zero(); shape.iter().product()];
            let window = Layout::contiguous(shape).narrow(dim, start, self.shape()[dim])?;
            let src = self.to_vec::<T>();
            crate::tensor::scatter_into(&mut out, &window, &src);
            Tensor::from_values(out, shape, self.dtype())
        })
    }
}
