//! Reductions over the innermost axis of a [outer, inner] row-major block.

use crate::tensor::Real;
use rayon::prelude::*;

/// Sum of each row of length `inner` (accumulated in f64 for accuracy).
pub fn sum_rows<T: Real>(x: &[T], outer: usize, inner: usize) -> Vec<T> {
    if inner == 0 {
        return vec![T::zero(); outer];
    }
    x.par_chunks(inner)
        .map(|row| T::from_f64(row.iter().map(|v| v.as_f64()).sum::<f64>()))
        .collect()
}

/// (max, argmax) of each row (first index wins ties; NaN propagates).
pub fn max_rows<T: Real>(x: &[T], inner: usize) -> (Vec<T>, Vec<usize>) {
    x.par_chunks(inner)
        .map(|row| {
            let mut best = (row[0], 0);
            for (i, &v) in row.iter().enumerate().skip(1) {
                if v > best.0 || (v.is_nan() && !best.0.is_nan()) {
                    best = (v, i);
                }
            }
            best
        })
        .unzip()
}
