//! The projection head of ConVIRT (and of the global branches of GLoRIA/MGCA):
//! Linear → ReLU → Linear into the shared embedding space, named as PyTorch's
//! `nn.Sequential(nn.Linear, nn.ReLU, nn.Linear)` ("0.weight", "2.weight", ...).

use crate::ensure;
use crate::error::Result;
use crate::models::Weights;
use crate::nn::{prefixed, Linear, Module};
use crate::tensor::Tensor;

pub struct ProjectionHead {
    pub hidden: Linear,
    pub out: Linear,
}

impl ProjectionHead {
    /// `input` → `hidden` → `output` features, weights under `w` ("0.*", "2.*").
    pub fn load(w: &Weights, input: usize, hidden: usize, output: usize) -> Result<Self> {
        ensure!(
            input > 0 && hidden > 0 && output > 0,
            "projection head: sizes must be positive, got {input} → {hidden} → {output}"
        );
        Ok(ProjectionHead {
            hidden: w.linear("0", input, hidden, true)?,
            out: w.linear("2", hidden, output, true)?,
        })
    }

    pub fn input_dim(&self) -> usize {
        self.hidden.weight.shape()[1]
    }

    pub fn output_dim(&self) -> usize {
        self.out.weight.shape()[0]
    }
}

impl Module for ProjectionHead {
    /// [N, input] → [N, output].
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        ensure!(
            x.rank() == 2 && x.shape()[1] == self.input_dim(),
            "projection head: expected features [N, {}], got {:?}",
            self.input_dim(),
            x.shape()
        );
        self.out.forward(&self.hidden.forward(x)?.relu()?)
    }

    fn parameters(&self) -> Vec<(String, Tensor)> {
        let mut all = prefixed("0", self.hidden.parameters());
        all.extend(prefixed("2", self.out.parameters()));
        all
    }
}
