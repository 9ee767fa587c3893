//! Cross-entropy over class logits [N, C]: a fused log-softmax + NLL with label
//! smoothing and `ignore_index`; the backward recomputes softmax from stored row
//! log-sum-exps and never materialises probabilities in the forward.

use super::{loss_dtype, reduce_losses, Reduction, Upstream};
use crate::autograd::{op_output, Backward};
use crate::backend::cpu;
use crate::bail;
use crate::error::Result;
use crate::tensor::{Real, Tensor};
use rayon::prelude::*;

struct CrossEntropyBack {
    /// Class per row, or `None` for ignored rows.
    targets: Vec<Option<usize>>,
    lse: Vec<f64>,
    smoothing: f64,
    reduction: Reduction,
    count: f64,
}

/// Row log-sum-exp, shifted by the row maximum (NaN propagates).
fn logsumexp<T: Real>(row: &[T]) -> T {
    let m = row.iter().fold(
        T::neg_infinity(),
        |m, &v| if v > m || v.is_nan() { v } else { m },
    );
    if m.is_infinite() {
        return m;
    }
    let s: T = row.iter().map(|&v| (v - m).exp()).sum();
    m + s.ln()
}

impl Backward for CrossEntropyBack {
    fn name(&self) -> &'static str {
        "cross_entropy"
    }
    fn backward(
        &self,
        g: &Tensor,
        inputs: &[Tensor],
        _: &[bool],
        _: &Tensor,
    ) -> Result<Vec<Option<Tensor>>> {
        let x = &inputs[0];
        let c = x.shape()[1];
        let dx = crate::with_real!(x.dtype(), T => {
            let up = Upstream::<T>::new(g, self.reduction, self.count);
            let xv = x.to_vec::<T>();
            let eps = T::from_f64(self.smoothing);
            let uniform = eps / T::from_usize(c);
            let hit = T::one() - eps;
            let mut dx = vec![T::zero(); xv.len()];
            dx.par_chunks_mut(c.max(1)).zip(xv.par_chunks(c.max(1))).enumerate().for_each(|(i, (d, row))| {
                let Some(t) = self.targets[i] else { return };
                let gi = up.at(i);
                let lse = T::from_f64(self.lse[i]);
                for (j, (dj, &v)) in d.iter_mut().zip(row).enumerate() {
                    let target = if j == t { hit } else { T::zero() };
                    *dj = gi * ((v - lse).exp() - target - uniform);
                }
            });
            Tensor::from_values(dx, x.shape(), x.dtype())?
        });
        Ok(vec![Some(dx), None])
    }
}

impl Tensor {
    /// Mean cross-entropy of logits [N, C] against class indices [N] (integer),
    /// as `F.cross_entropy(logits, targets, ignore_index=.., label_smoothing=..)`.
    pub fn cross_entropy(
        &self,
        targets: &Tensor,
        ignore_index: Option<i64>,
        label_smoothing: f64,
    ) -> Result<Tensor> {
        self.cross_entropy_with(targets, ignore_index, label_smoothing, Reduction::Mean)
    }

    /// Cross-entropy with an explicit reduction. The mean divides by the number of
    /// non-ignored rows (NaN when every row is ignored, as PyTorch); ignored rows
    /// give 0 under `Reduction::None`.
    pub fn cross_entropy_with(
        &self,
        targets: &Tensor,
        ignore_index: Option<i64>,
        label_smoothing: f64,
        reduction: Reduction,
    ) -> Result<Tensor> {
        let dtype = loss_dtype("cross_entropy", &[self])?;
        if self.rank() != 2 {
            bail!(
                "cross_entropy: logits must be [N, C], got shape {:?}",
                self.shape()
            );
        }
        let (n, c) = (self.shape()[0], self.shape()[1]);
        if targets.dtype().is_float() {
            bail!(
                "cross_entropy: targets must be integer class indices, got {}",
                targets.dtype()
            );
        }
        if targets.shape() != [n] {
            bail!(
                "cross_entropy: targets shape {:?} does not match logits {:?} (want [{n}])",
                targets.shape(),
                self.shape()
            );
        }
        if !(0.0..=1.0).contains(&label_smoothing) {
            bail!("cross_entropy: label_smoothing must be in [0, 1], got {label_smoothing}");
        }
        let mut rows = Vec::with_capacity(n);
        for (i, t) in targets.to_vec_i64().into_iter().enumerate() {
            if Some(t) == ignore_index {
                rows.push(None);
            } else if t < 0 || t >= c as i64 {
                bail!("cross_entropy: target {t} at index {i} is out of range for {c} classes");
            } else {
                rows.push(Some(t as usize));
            }
        }
        let count = rows.iter().filter(|r| r.is_some()).count() as f64;
        let (storage, shape, lse) = crate::with_real!(dtype, T => {
            let xv = self.to_vec::<T>();
            let eps = T::from_f64(label_smoothing);
            let per_row: Vec<(T, T)> = (0..n)
                .into_par_iter()
                .map(|i| {
                    let row = &xv[i * c..(i + 1) * c];
                    let lse = logsumexp(row);
                    let Some(t) = rows[i] else { return (T::zero(), lse) };
                    let nll = lse - row[t];
                    let loss = if label_smoothing > 0.0 {
                        let mean = row.iter().copied().sum::<T>() / T::from_usize(c);
                        (T::one() - eps) * nll + eps * (lse - mean)
                    } else {
                        nll
                    };
                    (loss, lse)
                })
                .collect();
            let (losses, lse): (Vec<T>, Vec<T>) = per_row.into_iter().unzip();
            let (v, shape) = reduce_losses(losses, &[n], reduction, count);
            (cpu::storage_from(v, dtype), shape, lse.into_iter().map(|v| v.as_f64()).collect::<Vec<f64>>())
        });
        op_output(storage, &shape, &[self, targets], || CrossEntropyBack {
            targets: rows,
            lse,
            smoothing: label_smoothing,
            reduction,
            count,
        })
    }
}
