//! Softmax and log-softmax kernels over the middle axis of an [outer, n, inner]
//! row-major block (max-subtracted; fused backward from the saved output).

use super::vmath::{self, Map};
use super::PAR_CHUNK;
use crate::tensor::Real;
use rayon::prelude::*;

/// Softmax (or log-softmax when `log`) of x [outer, n, inner] over `n`.
pub fn softmax<T: Real>(x: &[T], n: usize, inner: usize, log: bool) -> Vec<T> {
    let mut y = vec![T::zero(); x.len()];
    let block = n * inner;
    if block == 0 {
        return y;
    }
    y.par_chunks_mut(block)
        .zip(x.par_chunks(block))
        .with_min_len((PAR_CHUNK / block).max(1))
        .for_each(|(yb, xb)| {
            if inner == 1 && !log {
                // The last dim: one contiguous row.
                let max = xb.iter().fold(T::neg_infinity(), |a, &v| a.max(v));
                yb.copy_from_slice(xb);
                let inv = vmath::exp_sub_sum(yb, max).recip();
                yb.iter_mut().for_each(|v| *v *= inv);
                return;
            }
            // Column-wise over `inner` so that dim != last stays unit-stride.
            let mut max = vec![T::neg_infinity(); inner];
            for row in xb.chunks(inner) {
                max.iter_mut().zip(row).for_each(|(m, &v)| *m = m.max(v));
            }
            let mut sum = vec![T::zero(); inner];
            let mut e = vec![T::zero(); inner];
            for (yr, xr) in yb.chunks_mut(inner).zip(xb.chunks(inner)) {
                for i in 0..inner {
                    e[i] = xr[i] - max[i];
                }
                if log {
                    yr.copy_from_slice(&e);
                }
                vmath::map_in_place(Map::Exp, &mut e);
                sum.iter_mut().zip(&e).for_each(|(s, &v)| *s += v);
                if !log {
                    yr.copy_from_slice(&e);
                }
            }
            if log {
                let lse: Vec<T> = sum.iter().map(|s| s.ln()).collect();
                yb.chunks_mut(inner)
                    .for_each(|yr| yr.iter_mut().zip(&lse).for_each(|(v, &l)| *v -= l));
            } else {
                let inv: Vec<T> = sum.iter().map(|s| s.recip()).collect();
                yb.chunks_mut(inner)
                    .for_each(|yr| yr.iter_mut().zip(&inv).for_each(|(v, &r)| *v *= r));
            }
        });
    y
}

/// Backward from the saved output y: softmax dx = y·(g − Σ g·y);
/// log-softmax dx = g − exp(y)·Σ g.
pub fn softmax_backward<T: Real>(y: &[T], g: &[T], n: usize, inner: usize, log: bool) -> Vec<T> {
    let mut dx = vec![T::zero(); y.len()];
    let block = n * inner;
    if block == 0 {
        return dx;
    }
    dx.par_chunks_mut(block)
        .zip(y.par_chunks(block).zip(g.par_chunks(block)))
        .with_min_len((PAR_CHUNK / block).max(1))
        .for_each(|(db, (yb, gb))| {
            let mut dot = vec![T::zero(); inner];
            for (yr, gr) in yb.chunks(inner).zip(gb.chunks(inner)) {
                for i in 0..inner {
                    dot[i] += if log { gr[i] } else { gr[i] * yr[i] };
                }
            }
            for ((dr, yr), gr) in db
                .chunks_mut(inner)
                .zip(yb.chunks(inner))
                .zip(gb.chunks(inner))
            {
                for i in 0..inner {
                    dr[i] = if log {
                        gr[i] - yr[i].exp() * dot[i]
                    } else {
                        yr[i] * (gr[i] - dot[i])
                    };
                }
            }
        });
    dx
}
