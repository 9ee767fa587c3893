//! Resampling learned position embeddings to another patch grid, as timm's
//! `resample_abs_pos_embed` (PyTorch's antialiased bicubic `F.interpolate`), written
//! as one matmul with a fixed interpolation matrix so that it has a gradient.

use crate::error::Result;
use crate::tensor::{DType, Tensor};

/// The cubic convolution kernel with a = -0.5 (Keys; PIL), which PyTorch's
/// antialiased bicubic mode uses (its plain bicubic uses a = -0.75).
fn cubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        ((A * x - 5.0 * A) * x + 8.0 * A) * x - 4.0 * A
    } else {
        0.0
    }
}

/// Weights [out, inp] (row-major) of PyTorch's 1-D antialiased bicubic resize
/// (`align_corners=False`): output i reads inputs around (i + 0.5)·inp/out with the
/// kernel stretched by the scale when shrinking, each row normalised to sum 1
/// (PyTorch's `_compute_weights_aa`).
pub fn aa_bicubic_weights(inp: usize, out: usize) -> Vec<f64> {
    let scale = inp as f64 / out as f64;
    let (support, invscale) = if scale >= 1.0 {
        (2.0 * scale, 1.0 / scale)
    } else {
        (2.0, 1.0)
    };
    let mut m = vec![0.0; out * inp];
    for (i, row) in m.chunks_mut(inp.max(1)).enumerate().take(out) {
        let center = scale * (i as f64 + 0.5);
        // C++ truncation towards zero, then clamped, as PyTorch.
        let lo = ((center - support + 0.5) as i64).max(0) as usize;
        let hi = ((center + support + 0.5) as i64).clamp(0, inp as i64) as usize;
        let w: Vec<f64> = (lo..hi)
            .map(|j| cubic((j as f64 - center + 0.5) * invscale))
            .collect();
        let total: f64 = w.iter().sum();
        if total != 0.0 {
            for (j, wj) in (lo..hi).zip(w) {
                row[j] = wj / total;
            }
        }
    }
    m
}

/// timm's `resample_abs_pos_embed`: `posemb` [1, prefix + old.0·old.1, D] with the
/// grid part resized to `new` (rows, cols) → [1, prefix + new.0·new.1, D]. The
/// prefix (class-token) rows are kept. Half-precision embeddings are resampled in
/// f32 and cast back, as timm does.
pub fn resample_abs_pos_embed(
    posemb: &Tensor,
    old: (usize, usize),
    new: (usize, usize),
    num_prefix_tokens: usize,
) -> Result<Tensor> {
    let shape = posemb.shape();
    crate::ensure!(
        shape.len() == 3 && shape[0] == 1 && shape[1] == num_prefix_tokens + old.0 * old.1,
        "resample_abs_pos_embed: expected [1, {} + {}x{}, D], got {shape:?}",
        num_prefix_tokens,
        old.0,
        old.1
    );
    crate::ensure!(
        new.0 > 0 && new.1 > 0,
        "resample_abs_pos_embed: empty target grid {new:?}"
    );
    if old == new {
        return Ok(posemb.clone());
    }
    let d = shape[2];
    let (rh, rw) = (
        aa_bicubic_weights(old.0, new.0),
        aa_bicubic_weights(old.1, new.1),
    );
    // kron(Rh, Rw): row (i, j) of the new grid, column (a, b) of the old one.
    let (lo, ln) = (old.0 * old.1, new.0 * new.1);
    let mut k = Vec::with_capacity(ln * lo);
    for i in 0..new.0 {
        for j in 0..new.1 {
            for a in 0..old.0 {
                let wa = rh[i * old.0 + a];
                k.extend((0..old.1).map(|b| wa * rw[j * old.1 + b]));
            }
        }
    }
    let compute = if posemb.dtype() == DType::F64 {
        DType::F64
    } else {
        DType::F32
    };
    let k = Tensor::from_values(k, &[ln, lo], compute)?;
    let grid = posemb
        .narrow(1, num_prefix_tokens, lo)?
        .reshape(&[lo, d])?
        .to_dtype(compute)?;
    let resized = k
        .matmul(&grid)?
        .to_dtype(posemb.dtype())?
        .reshape(&[1, ln, d])?;
    if num_prefix_tokens == 0 {
        return Ok(resized);
    }
    let prefix = posemb.narrow(1, 0, num_prefix_tokens)?;
    Tensor::cat(&[&prefix, &resized], 1)
}
