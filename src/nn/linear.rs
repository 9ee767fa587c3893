//! `Linear`: y = x Wᵀ + b with PyTorch's weight layout [out, in].

use super::{init, Module};
use crate::bail;
use crate::error::Result;
use crate::tensor::{DType, Philox, Tensor};

pub struct Linear {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
}

impl Linear {
    /// A fresh layer with PyTorch's default initialisation.
    pub fn new(
        in_features: usize,
        out_features: usize,
        bias: bool,
        dtype: DType,
        rng: &mut Philox,
    ) -> Result<Linear> {
        let (weight, bias) =
            init::default_weight_and_bias(rng, &[out_features, in_features], bias, dtype)?;
        Ok(Linear { weight, bias })
    }

    /// From existing tensors (weight [out, in], bias [out]).
    pub fn from_weights(weight: Tensor, bias: Option<Tensor>) -> Result<Linear> {
        if weight.rank() != 2 {
            bail!("Linear: weight must be [out, in], got {:?}", weight.shape());
        }
        if let Some(b) = &bias {
            if b.shape() != [weight.shape()[0]] {
                bail!(
                    "Linear: bias shape {:?} does not match weight {:?}",
                    b.shape(),
                    weight.shape()
                );
            }
        }
        Ok(Linear { weight, bias })
    }
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.linear(&self.weight, self.bias.as_ref())
    }

    fn parameters(&self) -> Vec<(String, Tensor)> {
        let mut p = vec![("weight".to_string(), self.weight.clone())];
        p.extend(self.bias.iter().map(|b| ("bias".to_string(), b.clone())));
        p
    }
}
