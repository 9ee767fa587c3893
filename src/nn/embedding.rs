//! `Embedding`: a [vocab, dim] table looked up by integer ids.

use super::{init, Module};
use crate::bail;
use crate::error::Result;
use crate::tensor::{DType, Philox, Tensor};

pub struct Embedding {
    pub weight: Tensor,
}

impl Embedding {
    /// N(0, 1) entries, as PyTorch initialises `nn.Embedding`.
    pub fn new(vocab: usize, dim: usize, dtype: DType, rng: &mut Philox) -> Result<Embedding> {
        Ok(Embedding {
            weight: init::normal(rng, &[vocab, dim], 1.0, dtype)?,
        })
    }

    pub fn from_weights(weight: Tensor) -> Result<Embedding> {
        if weight.rank() != 2 {
            bail!(
                "Embedding: weight must be [vocab, dim], got {:?}",
                weight.shape()
            );
        }
        Ok(Embedding { weight })
    }
}

impl Module for Embedding {
    /// `ids`: integer tensor of any shape → ids.shape + [dim].
    fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        Tensor::embedding(ids, &self.weight)
    }

    fn parameters(&self) -> Vec<(String, Tensor)> {
        vec![("weight".to_string(), self.weight.clone())]
    }
}
