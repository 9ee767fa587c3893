//! Shape, strides and offset: how a tensor's elements map onto its storage.

use crate::bail;
use crate::error::Result;

/// A strided view of storage. Strides are in elements; a stride of 0 broadcasts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    shape: Vec<usize>,
    strides: Vec<usize>,
    offset: usize,
}

/// Row-major strides of a shape.
pub fn contiguous_strides(shape: &[usize]) -> Vec<usize> {
    let mut strides = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        strides[i] = strides[i + 1] * shape[i + 1];
    }
    strides
}

/// Resolve a possibly negative dimension index against a rank.
pub fn resolve_dim(dim: isize, rank: usize) -> Result<usize> {
    let d = if dim < 0 { dim + rank as isize } else { dim };
    if d < 0 || d as usize >= rank {
        bail!("dimension {dim} out of range for a tensor of rank {rank}");
    }
    Ok(d as usize)
}

/// The shape two shapes broadcast to (numpy rules), or an error naming both.
pub fn broadcast_shapes(a: &[usize], b: &[usize]) -> Result<Vec<usize>> {
    let rank = a.len().max(b.len());
    let mut out = vec![0; rank];
    for i in 0..rank {
        let da = if i + a.len() >= rank {
            a[i + a.len() - rank]
        } else {
            1
        };
        let db = if i + b.len() >= rank {
            b[i + b.len() - rank]
        } else {
            1
        };
        out[i] = match (da, db) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => bail!("shapes {a:?} and {b:?} do not broadcast"),
        };
    }
    Ok(out)
}

impl Layout {
    pub fn contiguous(shape: &[usize]) -> Self {
        Layout {
            shape: shape.to_vec(),
            strides: contiguous_strides(shape),
            offset: 0,
        }
    }

    pub fn new(shape: Vec<usize>, strides: Vec<usize>, offset: usize) -> Self {
        debug_assert_eq!(shape.len(), strides.len());
        Layout {
            shape,
            strides,
            offset,
        }
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }
    pub fn strides(&self) -> &[usize] {
        &self.strides
    }
    pub fn offset(&self) -> usize {
        self.offset
    }
    pub fn rank(&self) -> usize {
        self.shape.len()
    }
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// True when elements are laid out row-major with no gaps (offset may be non-zero).
    pub fn is_contiguous(&self) -> bool {
        let mut expected = 1;
        for (&dim, &stride) in self.shape.iter().zip(&self.strides).rev() {
            if dim != 1 && stride != expected {
                return false;
            }
            expected *= dim;
        }
        true
    }

    /// One past the largest storage index this view touches (0 for empty views).
    pub fn storage_extent(&self) -> usize {
        if self.numel() == 0 {
            return 0;
        }
        self.offset
            + self
                .shape
                .iter()
                .zip(&self.strides)
                .map(|(&d, &s)| (d - 1) * s)
                .sum::<usize>()
            + 1
    }

    /// Same elements, new shape; a view when the layout is contiguous.
    pub fn reshape(&self, shape: &[usize]) -> Option<Layout> {
        if !self.is_contiguous() {
            return None;
        }
        Some(Layout {
            shape: shape.to_vec(),
            strides: contiguous_strides(shape),
            offset: self.offset,
        })
    }

    pub fn permute(&self, perm: &[usize]) -> Result<Layout> {
        let rank = self.rank();
        let mut seen = vec![false; rank];
        if perm.len() != rank {
            bail!("permutation {perm:?} does not match rank {rank}");
        }
        for &p in perm {
            if p >= rank || seen[p] {
                bail!("{perm:?} is not a permutation of 0..{rank}");
            }
            seen[p] = true;
        }
        Ok(Layout {
            shape: perm.iter().map(|&p| self.shape[p]).collect(),
            strides: perm.iter().map(|&p| self.strides[p]).collect(),
            offset: self.offset,
        })
    }

    pub fn narrow(&self, dim: usize, start: usize, len: usize) -> Result<Layout> {
        if dim >= self.rank() || start + len > self.shape[dim] {
            bail!(
                "narrow(dim {dim}, start {start}, len {len}) out of range for shape {:?}",
                self.shape
            );
        }
        let mut out = self.clone();
        out.shape[dim] = len;
        out.offset += start * self.strides[dim];
        Ok(out)
    }

    /// View with size-1 (or missing leading) dimensions stretched to `shape` (stride 0).
    pub fn broadcast_to(&self, shape: &[usize]) -> Result<Layout> {
        if shape.len() < self.rank() {
            bail!("cannot broadcast shape {:?} to {shape:?}", self.shape);
        }
        let lead = shape.len() - self.rank();
        let mut strides = vec![0; shape.len()];
        for i in 0..self.rank() {
            let (d, t) = (self.shape[i], shape[lead + i]);
            strides[lead + i] = if d == t {
                self.strides[i]
            } else if d == 1 {
                0
            } else {
                bail!("cannot broadcast shape {:?} to {shape:?}", self.shape);
            };
        }
        Ok(Layout {
            shape: shape.to_vec(),
            strides,
            offset: self.offset,
        })
    }

    /// Storage index of every element, in row-major order of the view.
    pub fn for_each_index(&self, mut f: impl FnMut(usize)) {
        self.for_each_run(|start, len, stride| {
            for i in 0..len {
                f(start + i * stride);
            }
        });
    }

    /// The view as runs along its last dim, in row-major order: `f(start, len,
    /// stride)` for each, covering storage indices start, start + stride, ….
    /// Copies go run by run (unit-stride runs become slice copies).
    pub fn for_each_run(&self, mut f: impl FnMut(usize, usize, usize)) {
        let rank = self.rank();
        if self.numel() == 0 {
            return;
        }
        if rank == 0 {
            return f(self.offset, 1, 1);
        }
        let inner = self.shape[rank - 1];
        let inner_stride = self.strides[rank - 1];
        let mut idx = vec![0usize; rank - 1];
        let mut base = self.offset;
        loop {
            f(base, inner, inner_stride);
            // advance the outer multi-index
            let mut d = rank - 1;
            loop {
                if d == 0 {
                    return;
                }
                d -= 1;
                idx[d] += 1;
                base += self.strides[d];
                if idx[d] < self.shape[d] {
                    break;
                }
                base -= idx[d] * self.strides[d];
                idx[d] = 0;
            }
        }
    }
}

/// dst[view's storage indices, in row-major order] = src (src.len() = view.numel()).
pub fn scatter_into<T: Copy>(dst: &mut [T], view: &Layout, src: &[T]) {
    let mut i = 0;
    view.for_each_run(|start, len, stride| {
        let from = &src[i..i + len];
        match stride {
            1 => dst[start..start + len]
                .iter_mut()
                .zip(from)
                .for_each(|(o, &v)| *o = v),
            _ => from
                .iter()
                .enumerate()
                .for_each(|(k, &v)| dst[start + k * stride] = v),
        }
        i += len;
    });
}
