//! Symmetric InfoNCE (CLIP / ConVIRT): the mean of image→text and text→image
//! cross-entropies over the similarity logits `scale · img · txtᵀ`, with the
//! matching pair on the diagonal. Fused and tiled: row blocks of the B×B logits
//! are computed with the GEMM, row log-sum-exps directly and column log-sum-exps
//! online across blocks, so memory is O(block·B + B·d), never O(B²); the
//! backward recomputes each tile.

use crate::autograd::{op_output, Backward};
use crate::backend::cpu::{
    self,
    gemm::{matmul as gemm, MatRef},
};
use crate::bail;
use crate::error::Result;
use crate::tensor::{DType, Real, Tensor};
use rayon::prelude::*;

/// Rows of the similarity matrix computed per tile by default.
pub const DEFAULT_BLOCK_ROWS: usize = 256;

/// The forward's row / column log-sum-exps: host values, or (device path) f32 [B] device
/// tensors the fused backward reads.
enum Lse {
    Host {
        row: Vec<f64>,
        col: Vec<f64>,
    },
    #[cfg(feature = "cuda")]
    Device {
        row: Tensor,
        col: Tensor,
    },
}

struct InfoNceBack {
    lse: Lse,
    block_rows: usize,
}

/// Problem dimensions and operands as the compute type.
struct Operands<T> {
    b: usize,
    d: usize,
    img: Vec<T>,
    txt: Vec<T>,
    scale: T,
}

impl<T: Real> Operands<T> {
    fn new(inputs: &[Tensor]) -> Result<Self> {
        let (b, d) = (inputs[0].shape()[0], inputs[0].shape()[1]);
        let scale = T::from_f64(inputs[2].to_scalar()?);
        Ok(Operands {
            b,
            d,
            img: inputs[0].to_vec::<T>(),
            txt: inputs[1].to_vec::<T>(),
            scale,
        })
    }

    /// Unscaled similarities of image rows r0..r0+rows against every text: [rows, B].
    fn tile(&self, r0: usize, rows: usize, out: &mut [T]) {
        let (b, d) = (self.b, self.d);
        gemm(
            rows,
            b,
            d,
            MatRef {
                data: &self.img,
                offset: r0 * d,
                rs: d,
                cs: 1,
            },
            MatRef {
                data: &self.txt,
                offset: 0,
                rs: 1,
                cs: d,
            },
            out,
            b,
            false,
            true,
        );
    }

    /// Unscaled similarity of the matching pairs.
    fn diagonal(&self) -> Vec<T> {
        let d = self.d;
        (0..self.b)
            .map(|i| {
                (0..d)
                    .map(|k| self.img[i * d + k] * self.txt[i * d + k])
                    .sum()
            })
            .collect()
    }
}

/// Forward: (loss, row log-sum-exps, column log-sum-exps) of the scaled logits.
fn forward<T: Real>(op: &Operands<T>, block_rows: usize) -> (f64, Vec<T>, Vec<T>) {
    let (b, s) = (op.b, op.scale);
    let mut row_lse = vec![T::zero(); b];
    let mut col_max = vec![T::neg_infinity(); b];
    let mut col_sum = vec![T::zero(); b];
    let mut tile = vec![T::zero(); block_rows * b];
    for r0 in (0..b).step_by(block_rows) {
        let rows = block_rows.min(b - r0);
        let t = &mut tile[..rows * b];
        op.tile(r0, rows, t);
        t.par_iter_mut().for_each(|v| *v *= s);
        let t = &*t;
        row_lse[r0..r0 + rows]
            .par_iter_mut()
            .enumerate()
            .for_each(|(i, l)| {
                let row = &t[i * b..(i + 1) * b];
                let m = row.iter().fold(
                    T::neg_infinity(),
                    |m, &v| if v > m || v.is_nan() { v } else { m },
                );
                *l = if m.is_infinite() {
                    m
                } else {
                    m + row.iter().map(|&v| (v - m).exp()).sum::<T>().ln()
                };
            });
        // Online column log-sum-exp: rescale the running sum to the new maximum.
        col_max
            .par_iter_mut()
            .zip(col_sum.par_iter_mut())
            .enumerate()
            .for_each(|(j, (cm, cs))| {
                let bm = (0..rows)
                    .map(|i| t[i * b + j])
                    .fold(
                        T::neg_infinity(),
                        |m, v| if v > m || v.is_nan() { v } else { m },
                    );
                let m = if bm > *cm || bm.is_nan() { bm } else { *cm };
                if m.is_infinite() {
                    *cm = m;
                    return;
                }
                let rescale = if cm.is_infinite() {
                    T::zero()
                } else {
                    (*cm - m).exp()
                };
                *cs = *cs * rescale + (0..rows).map(|i| (t[i * b + j] - m).exp()).sum::<T>();
                *cm = m;
            });
    }
    let col_lse: Vec<T> = col_max
        .iter()
        .zip(&col_sum)
        .map(|(&m, &sum)| if m.is_infinite() { m } else { m + sum.ln() })
        .collect();
    let diag = op.diagonal();
    let total: f64 = (0..b)
        .map(|i| row_lse[i].as_f64() + col_lse[i].as_f64() - 2.0 * (s * diag[i]).as_f64())
        .sum();
    (total / (2.0 * b as f64), row_lse, col_lse)
}

impl Backward for InfoNceBack {
    fn name(&self) -> &'static str {
        "info_nce"
    }
    fn backward(
        &self,
        g: &Tensor,
        inputs: &[Tensor],
        needs: &[bool],
        out: &Tensor,
    ) -> Result<Vec<Option<Tensor>>> {
        match &self.lse {
            Lse::Host { row, col } => self.host_backward(g, inputs, needs, out, row, col),
            #[cfg(feature = "cuda")]
            Lse::Device { row, col } => {
                let d = inputs[0].shape()[1];
                let cx = crate::ops::cuda::OnCuda::of(&[row])?.expect("device log-sum-exps");
                if crate::ops::cuda::loss::info_nce_backward_applies(&cx, inputs[0].dtype(), d) {
                    return crate::ops::cuda::loss::info_nce_backward(
                        &cx, &inputs[0], &inputs[1], &inputs[2], g, row, col, needs,
                    );
                }
                // Wider than the fused backward: computed on the host (read back), the
                // gradients sent to the device below.
                let (row, col) = (row.to_vec_f64(), col.to_vec_f64());
                let grads = self.host_backward(g, inputs, needs, out, &row, &col)?;
                grads
                    .into_iter()
                    .map(|o| o.map(|t| t.to_device(cx.device())).transpose())
                    .collect()
            }
        }
    }
}

impl InfoNceBack {
    /// The CPU backward from the forward's log-sum-exps.
    fn host_backward(
        &self,
        g: &Tensor,
        inputs: &[Tensor],
        needs: &[bool],
        out: &Tensor,
        row_lse: &[f64],
        col_lse: &[f64],
    ) -> Result<Vec<Option<Tensor>>> {
        crate::with_real!(out.dtype(), T => {
            let op = Operands::<T>::new(inputs)?;
            let (b, d, s) = (op.b, op.d, op.scale);
            let (rl, cl): (Vec<T>, Vec<T>) = (
                row_lse.iter().map(|&v| T::from_f64(v)).collect(),
                col_lse.iter().map(|&v| T::from_f64(v)).collect(),
            );
            // dL/dz_ij = c (softmax_row_i(j) + softmax_col_j(i) - 2 δij), c = g / 2B.
            let c = T::from_f64(g.to_scalar()? / (2.0 * b as f64));
            let two = T::from_f64(2.0);
            let mut grad_img = vec![T::zero(); if needs[0] { b * d } else { 0 }];
            let mut grad_txt = vec![T::zero(); if needs[1] { b * d } else { 0 }];
            let mut grad_scale = 0.0f64;
            let mut tile = vec![T::zero(); self.block_rows * b];
            for r0 in (0..b).step_by(self.block_rows) {
                let rows = self.block_rows.min(b - r0);
                let t = &mut tile[..rows * b];
                op.tile(r0, rows, t);
                // Replace each unscaled similarity S_ij by dL/dS_ij = s dL/dz_ij, and
                // collect dL/ds = Σ dL/dz_ij S_ij on the way.
                grad_scale += t
                    .par_chunks_mut(b)
                    .enumerate()
                    .map(|(i, row)| {
                        let gi = r0 + i;
                        let mut acc = 0.0f64;
                        for (j, v) in row.iter_mut().enumerate() {
                            let z = s * *v;
                            let mut dz = (z - rl[gi]).exp() + (z - cl[j]).exp();
                            if j == gi {
                                dz -= two;
                            }
                            dz *= c;
                            acc += (dz * *v).as_f64();
                            *v = dz * s;
                        }
                        acc
                    })
                    .sum::<f64>();
                let t = &*t;
                if needs[0] {
                    // grad_img[block] = G_tile @ txt
                    let dst = &mut grad_img[r0 * d..(r0 + rows) * d];
                    gemm(rows, d, b, MatRef { data: t, offset: 0, rs: b, cs: 1 }, MatRef { data: &op.txt, offset: 0, rs: d, cs: 1 }, dst, d, false, true);
                }
                if needs[1] {
                    // grad_txt += G_tileᵀ @ img[block]
                    gemm(b, d, rows, MatRef { data: t, offset: 0, rs: 1, cs: b }, MatRef { data: &op.img, offset: r0 * d, rs: d, cs: 1 }, &mut grad_txt, d, true, true);
                }
            }
            let as_grad = |v: Vec<T>, like: &Tensor| Tensor::from_values(v, like.shape(), like.dtype());
            Ok(vec![
                if needs[0] { Some(as_grad(grad_img, &inputs[0])?) } else { None },
                if needs[1] { Some(as_grad(grad_txt, &inputs[1])?) } else { None },
                if needs[2] { Some(Tensor::full(grad_scale, inputs[2].shape(), inputs[2].dtype())?) } else { None },
            ])
        })
    }
}

fn check(img: &Tensor, txt: &Tensor, logit_scale: &Tensor, block_rows: usize) -> Result<DType> {
    if img.rank() != 2 || img.shape() != txt.shape() {
        bail!(
            "info_nce: image and text embeddings must both be [B, d], got {:?} and {:?}",
            img.shape(),
            txt.shape()
        );
    }
    if img.shape()[0] == 0 {
        bail!("info_nce: empty batch");
    }
    if logit_scale.numel() != 1 {
        bail!(
            "info_nce: logit scale must have one element, got shape {:?}",
            logit_scale.shape()
        );
    }
    if block_rows == 0 {
        bail!("info_nce: block_rows must be positive");
    }
    super::loss_dtype("info_nce", &[img, txt, logit_scale])
}

impl Tensor {
    /// Symmetric InfoNCE of paired embeddings `self` (images, [B, d]) and `txt`
    /// ([B, d]) at `temperature`: (CE(img·txtᵀ/τ, arange) + CE(txt·imgᵀ/τ, arange)) / 2.
    /// The embeddings are used as given (L2-normalise them first for CLIP/ConVIRT).
    pub fn info_nce(&self, txt: &Tensor, temperature: f64) -> Result<Tensor> {
        if temperature.is_nan() || temperature <= 0.0 {
            bail!("info_nce: temperature must be positive, got {temperature}");
        }
        let dtype = if self.dtype() == DType::F64 {
            DType::F64
        } else {
            DType::F32
        };
        let scale = Tensor::scalar(1.0 / temperature, dtype)?;
        self.info_nce_tiled(txt, &scale, DEFAULT_BLOCK_ROWS)
    }

    /// InfoNCE with logits `logit_scale · img·txtᵀ` for a one-element (possibly
    /// trainable) `logit_scale` tensor, e.g. CLIP's `logit_scale.exp()`.
    pub fn info_nce_with_logit_scale(&self, txt: &Tensor, logit_scale: &Tensor) -> Result<Tensor> {
        self.info_nce_tiled(txt, logit_scale, DEFAULT_BLOCK_ROWS)
    }

    /// InfoNCE computing `block_rows` rows of the similarity matrix per tile.
    pub fn info_nce_tiled(
        &self,
        txt: &Tensor,
        logit_scale: &Tensor,
        block_rows: usize,
    ) -> Result<Tensor> {
        let dtype = check(self, txt, logit_scale, block_rows)?;
        let block_rows = block_rows.min(self.shape()[0]);
        #[cfg(feature = "cuda")]
        if let Some(cx) = crate::ops::cuda::OnCuda::of(&[self, txt, logit_scale])? {
            if crate::ops::cuda::loss::info_nce_applies(self, txt, logit_scale) {
                let (storage, row, col) =
                    crate::ops::cuda::loss::info_nce_forward(&cx, self, txt, logit_scale)?;
                return op_output(storage, &[], &[self, txt, logit_scale], || InfoNceBack {
                    lse: Lse::Device { row, col },
                    block_rows,
                });
            }
        }
        let inputs = [self.clone(), txt.clone(), logit_scale.clone()];
        let (storage, row_lse, col_lse) = crate::with_real!(dtype, T => {
            let op = Operands::<T>::new(&inputs)?;
            let (loss, rl, cl) = forward(&op, block_rows);
            let f = |v: Vec<T>| v.into_iter().map(|x| x.as_f64()).collect::<Vec<f64>>();
            (cpu::storage_from(vec![T::from_f64(loss)], dtype), f(rl), f(cl))
        });
        op_output(storage, &[], &[self, txt, logit_scale], || InfoNceBack {
            lse: Lse::Host {
                row: row_lse,
                col: col_lse,
            },
            block_rows,
        })
    }
}
