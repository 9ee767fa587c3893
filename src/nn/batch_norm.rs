//! `BatchNorm2d` with running statistics and a train/eval switch.

use super::Module;
use crate::error::Result;
use crate::tensor::{DType, Tensor};
use std::sync::atomic::{AtomicBool, Ordering};

pub struct BatchNorm2d {
    pub weight: Tensor,
    pub bias: Tensor,
    /// Running statistics, kept in f32 (f64 for f64 layers) like PyTorch's buffers.
    pub running_mean: Tensor,
    pub running_var: Tensor,
    /// Batches seen in training mode (an i64 scalar, as in PyTorch's state dict).
    pub num_batches_tracked: Tensor,
    pub momentum: f64,
    pub eps: f64,
    training: AtomicBool,
}

impl BatchNorm2d {
    /// Weight 1, bias 0, running mean 0 and variance 1; starts in training mode.
    pub fn new(channels: usize, eps: f64, momentum: f64, dtype: DType) -> Result<BatchNorm2d> {
        let stats = dtype.compute();
        Ok(BatchNorm2d {
            weight: Tensor::ones(&[channels], dtype)?.into_param()?,
            bias: Tensor::zeros(&[channels], dtype)?.into_param()?,
            running_mean: Tensor::zeros(&[channels], stats)?,
            running_var: Tensor::ones(&[channels], stats)?,
            num_batches_tracked: Tensor::from_i64(vec![0], &[])?,
            momentum,
            eps,
            training: AtomicBool::new(true),
        })
    }

    /// Switch between batch statistics (training, updating the running stats) and
    /// the running statistics (eval).
    pub fn set_training(&self, training: bool) {
        self.training.store(training, Ordering::Relaxed);
    }

    pub fn is_training(&self) -> bool {
        self.training.load(Ordering::Relaxed)
    }
}

impl Module for BatchNorm2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let training = self.is_training();
        let y = x.batch_norm(
            Some(&self.running_mean),
            Some(&self.running_var),
            Some(&self.weight),
            Some(&self.bias),
            training,
            self.momentum,
            self.eps,
        )?;
        if training {
            let n = self.num_batches_tracked.to_vec_i64()[0] + 1;
            self.num_batches_tracked
                .set_data(&Tensor::from_i64(vec![n], &[])?)?;
        }
        Ok(y)
    }

    fn parameters(&self) -> Vec<(String, Tensor)> {
        vec![
            ("weight".to_string(), self.weight.clone()),
            ("bias".to_string(), self.bias.clone()),
        ]
    }

    fn buffers(&self) -> Vec<(String, Tensor)> {
        vec![
            ("running_mean".to_string(), self.running_mean.clone()),
            ("running_var".to_string(), self.running_var.clone()),
            (
                "num_batches_tracked".to_string(),
                self.num_batches_tracked.clone(),
            ),
        ]
    }
}
