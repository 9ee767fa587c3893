//! Launches of kernels/copy.cu: a copy from one strided view to another of the same shape and
//! dtype, bits as they are (CPU twin: CpuStorage::gather and layout::scatter_into).

use super::check;
use crate::cuda::gpu::Ptr;
use crate::cuda::Gpu;
use crate::error::{Error, Result};
use crate::tensor::Layout;
use cudarc::driver::{DeviceRepr, LaunchConfig, PushKernelArg};

const OP: &str = "strided_copy";

/// The most dimensions the kernel takes (after [`merged_dims`]).
pub const MAX_RANK: usize = 8;

/// The kernel's `CopyDims` argument, passed by value: three arrays of `long long`, no padding.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct CopyDims {
    shape: [i64; MAX_RANK],
    src_stride: [i64; MAX_RANK],
    dst_stride: [i64; MAX_RANK],
}

// SAFETY: #[repr(C)], plain i64 arrays (no padding, no pointers): the same bytes as the CUDA
// struct `CopyDims { long long shape[8]; long long src_stride[8]; long long dst_stride[8]; }`.
unsafe impl DeviceRepr for CopyDims {}

/// What one launch needs, worked out (and checked) on the host.
#[derive(Debug, PartialEq, Eq)]
struct Plan {
    n: usize,
    rank: usize,
    dims: CopyDims,
    src: Ptr,
    dst: Ptr,
}

/// `dst`'s view (`dst_layout` over the buffer `dst`) = `src`'s view (`src_layout` over `src`),
/// element for element in row-major order of the shared shape (as `CpuStorage::gather` of the
/// source followed by `scatter_into` the destination). Both `Ptr`s point at the start of their
/// storage (the layouts' offsets are applied here) and must be of one dtype (any of the seven:
/// bits are copied, nothing is converted). Errors: different shapes or dtypes, a view reaching
/// past its buffer, a destination that writes one element twice through a 0 stride, more than
/// 8 dimensions left after merging. The two buffers must not overlap. Nothing is launched when
/// the shape is empty.
pub fn strided_copy(
    g: &Gpu,
    src: Ptr,
    src_layout: &Layout,
    dst: Ptr,
    dst_layout: &Layout,
) -> Result<()> {
    let Some(p) = plan(src, src_layout, dst, dst_layout)? else {
        return Ok(());
    };
    let kernel = match src.dtype.size_in_bytes() {
        1 => "strided_copy_b1",
        2 => "strided_copy_b2",
        4 => "strided_copy_b4",
        8 => "strided_copy_b8",
        other => {
            return Err(Error::msg(format!(
                "{OP}: no kernel for {other}-byte elements"
            )))
        }
    };
    let cfg = LaunchConfig {
        grid_dim: (check::blocks(p.n, 256, 16 * g.sm_count()?), 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    };
    let n = p.n as i64;
    let rank = check::int(OP, "rank", p.rank)?;
    let f = g.function("copy", kernel)?;
    let mut b = g.stream().launch_builder(&f);
    b.arg(&n)
        .arg(&rank)
        .arg(&p.dims)
        .arg(&p.src.addr)
        .arg(&p.dst.addr);
    // SAFETY: arguments follow strided_copy_bK(i64, int, CopyDims, const T*, T*); both views
    // were checked to lie within their buffers and the destination not to alias itself.
    check::launched(unsafe { b.launch(cfg) }, kernel)
}

/// Checks the arguments and works out the launch; None when there is nothing to copy.
fn plan(src: Ptr, src_layout: &Layout, dst: Ptr, dst_layout: &Layout) -> Result<Option<Plan>> {
    if src_layout.shape() != dst_layout.shape() {
        return Err(Error::msg(format!(
            "{OP}: source shape {:?} differs from destination shape {:?}",
            src_layout.shape(),
            dst_layout.shape()
        )));
    }
    if src.dtype != dst.dtype {
        return Err(Error::msg(format!(
            "{OP}: destination is {:?}, expected {:?}",
            dst.dtype, src.dtype
        )));
    }
    check::need(OP, "source", src, src_layout.storage_extent())?;
    check::need(OP, "destination", dst, dst_layout.storage_extent())?;
    let n = src_layout.numel();
    if n == 0 {
        return Ok(None);
    }
    for (d, (&size, &stride)) in dst_layout
        .shape()
        .iter()
        .zip(dst_layout.strides())
        .enumerate()
    {
        if size > 1 && stride == 0 {
            return Err(Error::msg(format!(
                "{OP}: destination dim {d} (size {size}) has stride 0: it would write one element {size} times"
            )));
        }
    }
    let (shape, ss, ds) = merged_dims(
        src_layout.shape(),
        src_layout.strides(),
        dst_layout.strides(),
    );
    if shape.len() > MAX_RANK {
        return Err(Error::msg(format!(
            "{OP}: the views of shape {:?} (source strides {:?}, destination strides {:?}) leave {} dims after merging; the kernel takes at most {MAX_RANK}",
            src_layout.shape(),
            src_layout.strides(),
            dst_layout.strides(),
            shape.len()
        )));
    }
    let mut dims = CopyDims::default();
    for k in 0..shape.len() {
        dims.shape[k] = shape[k] as i64;
        dims.src_stride[k] = ss[k] as i64;
        dims.dst_stride[k] = ds[k] as i64;
    }
    Ok(Some(Plan {
        n,
        rank: shape.len(),
        dims,
        src: src.offset(src_layout.offset())?,
        dst: dst.offset(dst_layout.offset())?,
    }))
}

/// `shape` with its size-1 dims dropped and each run of adjacent dims that are contiguous with
/// each other in both views (outer stride = inner stride · inner size, in the source and in the
/// destination) merged into one; returns (shape, source strides, destination strides). The
/// merged shape visits the same (source, destination) offset pairs in the same order. Always at
/// least one dim: an empty shape gives ([0], [1], [1]), a one-element shape ([1], [1], [1]).
pub fn merged_dims(
    shape: &[usize],
    src_strides: &[usize],
    dst_strides: &[usize],
) -> (Vec<usize>, Vec<usize>, Vec<usize>) {
    debug_assert!(shape.len() == src_strides.len() && shape.len() == dst_strides.len());
    if shape.contains(&0) {
        return (vec![0], vec![1], vec![1]);
    }
    let (mut sh, mut ss, mut ds) = (Vec::new(), Vec::new(), Vec::new());
    for k in 0..shape.len() {
        let (n, a, b) = (shape[k], src_strides[k], dst_strides[k]);
        if n == 1 {
            continue;
        }
        if let Some(last) = sh.len().checked_sub(1) {
            if ss[last] == a * n && ds[last] == b * n {
                sh[last] *= n;
                ss[last] = a;
                ds[last] = b;
                continue;
            }
        }
        sh.push(n);
        ss.push(a);
        ds.push(b);
    }
    if sh.is_empty() {
        return (vec![1], vec![1], vec![1]);
    }
    (sh, ss, ds)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::DType;

    /// (source, destination) offsets of every element in row-major order of `shape`.
    fn offsets(shape: &[usize], ss: &[usize], ds: &[usize]) -> Vec<(usize, usize)> {
        let n: usize = shape.iter().product();
        (0..n)
            .map(|i| {
                let (mut rem, mut s, mut d) = (i, 0, 0);
                for k in (0..shape.len()).rev() {
                    let c = rem % shape[k];
                    rem /= shape[k];
                    s += c * ss[k];
                    d += c * ds[k];
                }
                (s, d)
            })
            .collect()
    }

    fn merged(shape: &[usize], ss: &[usize], ds: &[usize]) -> (Vec<usize>, Vec<usize>, Vec<usize>) {
        let m = merged_dims(shape, ss, ds);
        assert_eq!(
            offsets(&m.0, &m.1, &m.2),
            offsets(shape, ss, ds),
            "{shape:?} {ss:?} {ds:?} → {m:?}"
        );
        m
    }

    #[test]
    fn merges_contiguous_keeps_permuted_drops_ones() {
        // Both contiguous: one dim.
        assert_eq!(
            merged(&[2, 3, 4], &[12, 4, 1], &[12, 4, 1]),
            (vec![24], vec![1], vec![1])
        );
        // Source permuted (transpose of [3, 2]): nothing merges.
        assert_eq!(
            merged(&[2, 3], &[1, 2], &[3, 1]),
            (vec![2, 3], vec![1, 2], vec![3, 1])
        );
        // Contiguous in the source but a narrowed destination row: the inner dims merge only
        // where both views agree.
        assert_eq!(
            merged(&[4, 2, 3], &[6, 3, 1], &[20, 3, 1]),
            (vec![4, 6], vec![6, 1], vec![20, 1])
        );
        // Size-1 dims dropped (their strides are arbitrary).
        assert_eq!(
            merged(&[1, 5, 1, 7], &[99, 7, 13, 1], &[0, 7, 5, 1]),
            (vec![35], vec![1], vec![1])
        );
        // A broadcast (stride 0) source dim stays apart from its non-broadcast neighbours...
        assert_eq!(
            merged(&[5, 7, 3], &[0, 1, 0], &[21, 3, 1]),
            (vec![5, 7, 3], vec![0, 1, 0], vec![21, 3, 1])
        );
        // ...but adjacent broadcast dims merge with each other.
        assert_eq!(
            merged(&[4, 5, 6], &[0, 0, 1], &[30, 6, 1]),
            (vec![20, 6], vec![0, 1], vec![6, 1])
        );
        // Empty and one-element shapes.
        assert_eq!(merged_dims(&[3, 0, 2], &[2, 2, 1], &[2, 2, 1]).0, vec![0]);
        assert_eq!(merged(&[], &[], &[]), (vec![1], vec![1], vec![1]));
        assert_eq!(
            merged(&[1, 1], &[5, 3], &[1, 1]),
            (vec![1], vec![1], vec![1])
        );
    }

    /// xorshift64* in [0, n).
    fn next(s: &mut u64, n: usize) -> usize {
        *s ^= *s >> 12;
        *s ^= *s << 25;
        *s ^= *s >> 27;
        ((s.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 33) % n as u64) as usize
    }

    /// A random view of a random shape: contiguous storage of a larger shape, permuted,
    /// narrowed and with some dims broadcast.
    fn random_view(s: &mut u64, shape: &[usize], broadcast: bool) -> Layout {
        let rank = shape.len();
        let perm: Vec<usize> = {
            let mut p: Vec<usize> = (0..rank).collect();
            if next(s, 2) == 0 {
                for i in (1..rank).rev() {
                    p.swap(i, next(s, i + 1));
                }
            }
            p
        };
        // Storage shape: each dim of the view padded by 0..2 (narrowed views).
        let mut inv = vec![0; rank];
        for (i, &p) in perm.iter().enumerate() {
            inv[p] = i;
        }
        let big: Vec<usize> = (0..rank).map(|k| shape[inv[k]] + next(s, 3)).collect();
        let mut l = Layout::contiguous(&big).permute(&perm).unwrap();
        for (k, &n) in shape.iter().enumerate() {
            let start = next(s, l.shape()[k] - n + 1);
            l = l.narrow(k, start, n).unwrap();
        }
        if broadcast {
            let mut strides = l.strides().to_vec();
            for st in strides.iter_mut() {
                if next(s, 4) == 0 {
                    *st = 0;
                }
            }
            l = Layout::new(l.shape().to_vec(), strides, l.offset());
        }
        l
    }

    #[test]
    fn merged_dims_visit_the_same_offsets_as_the_views() {
        let mut s = 0x1234_5678_9abc_def1u64;
        for _ in 0..400 {
            let rank = next(&mut s, 7);
            let shape: Vec<usize> = (0..rank).map(|_| 1 + next(&mut s, 4)).collect();
            let src = random_view(&mut s, &shape, true);
            let dst = random_view(&mut s, &shape, false);
            let m = merged(&shape, src.strides(), dst.strides());
            assert!(m.0.len() <= rank.max(1));
            // Contiguous-to-contiguous always ends as one dim.
            let c = Layout::contiguous(&shape);
            assert_eq!(merged(&shape, c.strides(), c.strides()).0.len(), 1);
        }
    }

    fn fake(dtype: DType, len: usize) -> Ptr {
        Ptr {
            addr: 0x10_0000,
            dtype,
            len,
        }
    }

    #[test]
    fn plan_checks_and_offsets() {
        let f32p = |len| fake(DType::F32, len);
        let src = Layout::contiguous(&[4, 6]).permute(&[1, 0]).unwrap(); // [6, 4]
        let dst = Layout::contiguous(&[6, 10]).narrow(1, 3, 4).unwrap(); // offset 3
        let p = plan(f32p(24), &src, f32p(60), &dst).unwrap().unwrap();
        assert_eq!((p.n, p.rank), (24, 2));
        assert_eq!(&p.dims.shape[..3], &[6, 4, 0]);
        assert_eq!(&p.dims.src_stride[..2], &[1, 6]);
        assert_eq!(&p.dims.dst_stride[..2], &[10, 1]);
        assert_eq!(p.dst.addr, 0x10_0000 + 12);
        assert_eq!(p.dst.len, 57);

        let err = |r: Result<Option<Plan>>| r.unwrap_err().to_string();
        let e = err(plan(f32p(24), &src, f32p(56), &dst));
        assert!(e.contains("destination holds 56 elements"), "{e}");
        let e = err(plan(f32p(23), &src, f32p(60), &dst));
        assert!(e.contains("source holds 23 elements"), "{e}");
        let e = err(plan(f32p(24), &src, fake(DType::BF16, 60), &dst));
        assert!(e.contains("expected F32"), "{e}");
        let e = err(plan(f32p(24), &Layout::contiguous(&[24]), f32p(60), &dst));
        assert!(e.contains("differs from destination shape"), "{e}");
        let bcast = Layout::new(vec![6, 4], vec![0, 1], 0);
        let e = err(plan(f32p(24), &src, f32p(60), &bcast));
        assert!(e.contains("stride 0"), "{e}");
        // Nine dims that cannot merge (reversed order of a contiguous [2; 9]).
        let nine = Layout::contiguous(&[2; 9]);
        let rev = nine.permute(&[8, 7, 6, 5, 4, 3, 2, 1, 0]).unwrap();
        let e = err(plan(f32p(512), &rev, f32p(512), &nine));
        assert!(e.contains("at most 8"), "{e}");
        // ...while nine contiguous dims are one.
        assert_eq!(
            plan(f32p(512), &nine, f32p(512), &nine)
                .unwrap()
                .unwrap()
                .rank,
            1
        );
        // Empty: nothing to launch, even from null pointers.
        let empty = Layout::contiguous(&[3, 0]);
        assert!(
            plan(Ptr::null(DType::U8), &empty, Ptr::null(DType::U8), &empty)
                .unwrap()
                .is_none()
        );
    }
}
