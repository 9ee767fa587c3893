//! GEGLU kernels over rows [h | gate] of width 2·d: y = h·gelu(gate) and its
//! backward (dh = dy·gelu(gate), dgate = dy·h·gelu'(gate)), parallel over rows.

use super::vmath;
use super::PAR_CHUNK;
use crate::tensor::Real;
use rayon::prelude::*;

/// Rows per rayon task for rows of width `d`.
fn rows_per_task(d: usize) -> usize {
    (PAR_CHUNK / d.max(1)).max(1)
}

/// y [rows, d] from x [rows, 2d].
pub fn geglu_forward<T: Real>(x: &[T], d: usize) -> Vec<T> {
    let mut y = super::poisoned::<T>(x.len() / 2);
    if d == 0 {
        return y;
    }
    y.par_chunks_mut(d)
        .zip(x.par_chunks(2 * d))
        .with_min_len(rows_per_task(d))
        .for_each(|(yr, xr)| {
            let (h, gate) = xr.split_at(d);
            vmath::geglu_into(h, gate, yr);
        });
    y
}

/// dx [rows, 2d] = [dy·gelu(gate) | dy·h·gelu'(gate)].
pub fn geglu_backward<T: Real>(x: &[T], dy: &[T], d: usize) -> Vec<T> {
    let mut dx = super::poisoned::<T>(x.len());
    if d == 0 {
        return dx;
    }
    dx.par_chunks_mut(2 * d)
        .zip(x.par_chunks(2 * d).zip(dy.par_chunks(d)))
        .with_min_len(rows_per_task(d))
        .for_each(|(dxr, (xr, gr))| {
            let (h, gate) = xr.split_at(d);
            let (dh, dgate) = dxr.split_at_mut(d);
            vmath::geglu_backward_into(h, gate, gr, dh, dgate);
        });
    dx
}
