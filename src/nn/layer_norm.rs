//! `LayerNorm` over the trailing dims given by `normalized_shape`.

use super::Module;
use crate::bail;
use crate::error::Result;
use crate::tensor::{DType, Tensor};

pub struct LayerNorm {
    pub weight: Option<Tensor>,
    pub bias: Option<Tensor>,
    pub normalized_shape: Vec<usize>,
    pub eps: f64,
}

impl LayerNorm {
    /// Weight 1 and bias 0 (`elementwise_affine=True`), as PyTorch initialises them.
    pub fn new(normalized_shape: &[usize], eps: f64, dtype: DType) -> Result<LayerNorm> {
        Ok(LayerNorm {
            weight: Some(Tensor::ones(normalized_shape, dtype)?.into_param()?),
            bias: Some(Tensor::zeros(normalized_shape, dtype)?.into_param()?),
            normalized_shape: normalized_shape.to_vec(),
            eps,
        })
    }

    /// From existing tensors (either may be absent); shapes must match.
    pub fn from_weights(
        weight: Option<Tensor>,
        bias: Option<Tensor>,
        normalized_shape: &[usize],
        eps: f64,
    ) -> Result<LayerNorm> {
        for (name, t) in [("weight", &weight), ("bias", &bias)] {
            if let Some(t) = t {
                if t.shape() != normalized_shape {
                    bail!("LayerNorm: {name} shape {:?} does not match normalized shape {normalized_shape:?}", t.shape());
                }
            }
        }
        Ok(LayerNorm {
            weight,
            bias,
            normalized_shape: normalized_shape.to_vec(),
            eps,
        })
    }
}

impl Module for LayerNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let n = self.normalized_shape.len();
        if x.rank() < n || x.shape()[x.rank() - n..] != self.normalized_shape[..] {
            bail!(
                "LayerNorm: input shape {:?} does not end in {:?}",
                x.shape(),
                self.normalized_shape
            );
        }
        x.layer_norm(n, self.weight.as_ref(), self.bias.as_ref(), self.eps)
    }

    fn parameters(&self) -> Vec<(String, Tensor)> {
        let mut p: Vec<(String, Tensor)> = self
            .weight
            .iter()
            .map(|w| ("weight".to_string(), w.clone()))
            .collect();
        p.extend(self.bias.iter().map(|b| ("bias".to_string(), b.clone())));
        p
    }
}
