//! CPU pooling kernels over [planes, h, w] blocks (PyTorch semantics): max pool with
//! argmax, average pool, adaptive average pool, nearest 2-D upsampling; each with its adjoint.

use crate::tensor::Real;
use rayon::prelude::*;

/// A pooling window layout over `planes` planes of [h, w] producing [oh, ow].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pool2dGeom {
    pub planes: usize,
    pub h: usize,
    pub w: usize,
    pub kernel: (usize, usize),
    pub stride: (usize, usize),
    pub padding: (usize, usize),
    pub oh: usize,
    pub ow: usize,
}

impl Pool2dGeom {
    /// Output size `(size + 2·pad - kernel) / stride + 1`, or None when the kernel
    /// does not fit the padded input.
    pub fn out_size(size: usize, kernel: usize, stride: usize, pad: usize) -> Option<usize> {
        (size + 2 * pad).checked_sub(kernel).map(|r| r / stride + 1)
    }

    /// The window of output (oy, ox) in padded coordinates (may start below 0).
    fn window(&self, oy: usize, ox: usize) -> (i64, i64, i64, i64) {
        let y0 = (oy * self.stride.0) as i64 - self.padding.0 as i64;
        let x0 = (ox * self.stride.1) as i64 - self.padding.1 as i64;
        (y0, x0, y0 + self.kernel.0 as i64, x0 + self.kernel.1 as i64)
    }

    /// The window clipped to the input: rows [y0, y1), cols [x0, x1).
    fn clipped(&self, oy: usize, ox: usize) -> (usize, usize, usize, usize) {
        let (y0, x0, y1, x1) = self.window(oy, ox);
        let c = |v: i64, hi: usize| v.clamp(0, hi as i64) as usize;
        (c(y0, self.h), c(x0, self.w), c(y1, self.h), c(x1, self.w))
    }
}

/// Max pooling with -inf padding; returns values and the flat in-plane index of
/// each window's maximum (first maximum wins; NaN propagates), as PyTorch does.
pub fn max_pool2d<T: Real>(g: &Pool2dGeom, x: &[T]) -> (Vec<T>, Vec<u32>) {
    let (hw, ohw) = (g.h * g.w, g.oh * g.ow);
    let mut out = vec![T::zero(); g.planes * ohw];
    let mut idx = vec![0u32; g.planes * ohw];
    if ohw == 0 || hw == 0 {
        return (out, idx);
    }
    out.par_chunks_mut(ohw)
        .zip(idx.par_chunks_mut(ohw))
        .zip(x.par_chunks(hw))
        .for_each(|((o, ix), src)| {
            for oy in 0..g.oh {
                for ox in 0..g.ow {
                    let (y0, x0, y1, x1) = g.clipped(oy, ox);
                    let mut best = T::neg_infinity();
                    let mut at = y0 * g.w + x0;
                    for y in y0..y1 {
                        for (xx, &v) in src[y * g.w..(y + 1) * g.w]
                            .iter()
                            .enumerate()
                            .take(x1)
                            .skip(x0)
                        {
                            if v > best || v.is_nan() {
                                best = v;
                                at = y * g.w + xx;
                            }
                        }
                    }
                    o[oy * g.ow + ox] = best;
                    ix[oy * g.ow + ox] = at as u32;
                }
            }
        });
    (out, idx)
}

/// Gradient of max pooling: each output's gradient goes to its argmax.
pub fn max_pool2d_backward<T: Real>(g: &Pool2dGeom, dy: &[T], idx: &[u32]) -> Vec<T> {
    let (hw, ohw) = (g.h * g.w, g.oh * g.ow);
    let mut dx = vec![T::zero(); g.planes * hw];
    if ohw == 0 || hw == 0 {
        return dx;
    }
    dx.par_chunks_mut(hw)
        .zip(dy.par_chunks(ohw))
        .zip(idx.par_chunks(ohw))
        .for_each(|((d, gy), ix)| {
            for (&v, &i) in gy.iter().zip(ix) {
                d[i as usize] += v;
            }
        });
    dx
}

/// The divisor of output (oy, ox): the window size inside the padded input
/// (`count_include_pad`) or the number of real input elements it covers.
fn avg_divisor(g: &Pool2dGeom, oy: usize, ox: usize, count_include_pad: bool) -> usize {
    let (y0, x0, y1, x1) = g.window(oy, ox);
    let (ye, xe) = (
        y1.min((g.h + g.padding.0) as i64),
        x1.min((g.w + g.padding.1) as i64),
    );
    let (cy0, cx0, cy1, cx1) = g.clipped(oy, ox);
    if count_include_pad {
        ((ye - y0) * (xe - x0)) as usize
    } else {
        (cy1 - cy0) * (cx1 - cx0)
    }
}

/// Average pooling (zero padding; divisor per `count_include_pad`).
pub fn avg_pool2d<T: Real>(g: &Pool2dGeom, x: &[T], count_include_pad: bool) -> Vec<T> {
    let (hw, ohw) = (g.h * g.w, g.oh * g.ow);
    let mut out = vec![T::zero(); g.planes * ohw];
    if ohw == 0 || hw == 0 {
        return out;
    }
    out.par_chunks_mut(ohw)
        .zip(x.par_chunks(hw))
        .for_each(|(o, src)| {
            for oy in 0..g.oh {
                for ox in 0..g.ow {
                    let (y0, x0, y1, x1) = g.clipped(oy, ox);
                    let div = avg_divisor(g, oy, ox, count_include_pad);
                    if y0 >= y1 || x0 >= x1 || div == 0 {
                        continue;
                    }
                    let s: T = (y0..y1)
                        .map(|y| src[y * g.w + x0..y * g.w + x1].iter().copied().sum::<T>())
                        .sum();
                    o[oy * g.ow + ox] = s / T::from_usize(div);
                }
            }
        });
    out
}

/// Gradient of average pooling: each output's gradient spread over its window.
pub fn avg_pool2d_backward<T: Real>(g: &Pool2dGeom, dy: &[T], count_include_pad: bool) -> Vec<T> {
    let (hw, ohw) = (g.h * g.w, g.oh * g.ow);
    let mut dx = vec![T::zero(); g.planes * hw];
    if ohw == 0 || hw == 0 {
        return dx;
    }
    dx.par_chunks_mut(hw)
        .zip(dy.par_chunks(ohw))
        .for_each(|(d, gy)| {
            for oy in 0..g.oh {
                for ox in 0..g.ow {
                    let (y0, x0, y1, x1) = g.clipped(oy, ox);
                    let div = avg_divisor(g, oy, ox, count_include_pad);
                    if y0 >= y1 || x0 >= x1 || div == 0 {
                        continue;
                    }
                    let v = gy[oy * g.ow + ox] / T::from_usize(div);
                    for y in y0..y1 {
                        d[y * g.w + x0..y * g.w + x1]
                            .iter_mut()
                            .for_each(|e| *e += v);
                    }
                }
            }
        });
    dx
}

/// PyTorch's adaptive bin of output `i` of `out` over `size`: [⌊i·size/out⌋, ⌈(i+1)·size/out⌉).
pub fn adaptive_bin(i: usize, size: usize, out: usize) -> (usize, usize) {
    (i * size / out, ((i + 1) * size).div_ceil(out))
}

/// Adaptive average pooling of [planes, h, w] to [planes, oh, ow].
pub fn adaptive_avg_pool2d<T: Real>(
    x: &[T],
    planes: usize,
    (h, w): (usize, usize),
    (oh, ow): (usize, usize),
) -> Vec<T> {
    let (hw, ohw) = (h * w, oh * ow);
    let mut out = vec![T::zero(); planes * ohw];
    if ohw == 0 || hw == 0 {
        return out;
    }
    out.par_chunks_mut(ohw)
        .zip(x.par_chunks(hw))
        .for_each(|(o, src)| {
            for oy in 0..oh {
                let (y0, y1) = adaptive_bin(oy, h, oh);
                for ox in 0..ow {
                    let (x0, x1) = adaptive_bin(ox, w, ow);
                    let s: T = (y0..y1)
                        .map(|y| src[y * w + x0..y * w + x1].iter().copied().sum::<T>())
                        .sum();
                    o[oy * ow + ox] = s / T::from_usize((y1 - y0) * (x1 - x0));
                }
            }
        });
    out
}

/// Gradient of adaptive average pooling (bins may overlap; contributions add).
pub fn adaptive_avg_pool2d_backward<T: Real>(
    dy: &[T],
    planes: usize,
    (h, w): (usize, usize),
    (oh, ow): (usize, usize),
) -> Vec<T> {
    let (hw, ohw) = (h * w, oh * ow);
    let mut dx = vec![T::zero(); planes * hw];
    if ohw == 0 || hw == 0 {
        return dx;
    }
    dx.par_chunks_mut(hw)
        .zip(dy.par_chunks(ohw))
        .for_each(|(d, gy)| {
            for oy in 0..oh {
                let (y0, y1) = adaptive_bin(oy, h, oh);
                for ox in 0..ow {
                    let (x0, x1) = adaptive_bin(ox, w, ow);
                    let v = gy[oy * ow + ox] / T::from_usize((y1 - y0) * (x1 - x0));
                    for y in y0..y1 {
                        d[y * w + x0..y * w + x1].iter_mut().for_each(|e| *e += v);
                    }
                }
            }
        });
    dx
}

/// Nearest-neighbour upsampling by an integer factor: out[y, x] = in[y / s, x / s].
pub fn upsample_nearest2d<T: Real>(
    x: &[T],
    planes: usize,
    (h, w): (usize, usize),
    s: usize,
) -> Vec<T> {
    let (hw, ow) = (h * w, w * s);
    let mut out = vec![T::zero(); planes * hw * s * s];
    if hw == 0 {
        return out;
    }
    out.par_chunks_mut(hw * s * s)
        .zip(x.par_chunks(hw))
        .for_each(|(o, src)| {
            for (oy, row) in o.chunks_mut(ow).enumerate() {
                let srow = &src[(oy / s) * w..(oy / s + 1) * w];
                for (dst, &v) in row.chunks_mut(s).zip(srow) {
                    dst.fill(v);
                }
            }
        });
    out
}

/// Gradient of nearest upsampling: the sum of each s×s output block.
pub fn upsample_nearest2d_backward<T: Real>(
    dy: &[T],
    planes: usize,
    (h, w): (usize, usize),
    s: usize,
) -> Vec<T> {
    let (hw, ow) = (h * w, w * s);
    let mut dx = vec![T::zero(); planes * hw];
    if hw == 0 {
        return dx;
    }
    dx.par_chunks_mut(hw)
        .zip(dy.par_chunks(hw * s * s))
        .for_each(|(d, gy)| {
            for (oy, row) in gy.chunks(ow).enumerate() {
                let drow = &mut d[(oy / s) * w..(oy / s + 1) * w];
                for (acc, block) in drow.iter_mut().zip(row.chunks(s)) {
                    *acc += block.iter().copied().sum::<T>();
                }
            }
        });
    dx
}
