//! Dynamic loss scaling for half-precision training, as `torch.cuda.amp.GradScaler`:
//! scale the loss up, unscale the gradients, skip steps whose gradients overflowed
//! and back off the scale, grow it again after a run of clean steps.

use crate::bail;
use crate::error::Result;
use crate::tensor::Tensor;

/// Scaler settings, with GradScaler's defaults.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LossScalerConfig {
    pub init_scale: f64,
    pub growth_factor: f64,
    pub backoff_factor: f64,
    pub growth_interval: u64,
    /// When false the scale stays 1 and nothing is ever skipped (f32 training).
    pub enabled: bool,
}

impl Default for LossScalerConfig {
    fn default() -> Self {
        LossScalerConfig {
            init_scale: 65536.0,
            growth_factor: 2.0,
            backoff_factor: 0.5,
            growth_interval: 2000,
            enabled: true,
        }
    }
}

#[derive(Clone, Debug)]
pub struct LossScaler {
    config: LossScalerConfig,
    scale: f64,
    growth_tracker: u64,
    /// `Some(found_inf)` once the gradients of the current step were unscaled.
    unscaled: Option<bool>,
}

impl Default for LossScaler {
    fn default() -> Self {
        LossScaler::new(LossScalerConfig::default())
    }
}

impl LossScaler {
    pub fn new(config: LossScalerConfig) -> LossScaler {
        let scale = if config.enabled {
            config.init_scale
        } else {
            1.0
        };
        LossScaler {
            config,
            scale,
            growth_tracker: 0,
            unscaled: None,
        }
    }

    /// The current scale.
    pub fn scale_value(&self) -> f64 {
        self.scale
    }

    /// Clean steps since the last growth or backoff.
    pub fn growth_tracker(&self) -> u64 {
        self.growth_tracker
    }

    /// `loss · scale` (backpropagate this instead of the loss).
    pub fn scale(&self, loss: &Tensor) -> Result<Tensor> {
        if !self.config.enabled {
            return Ok(loss.clone());
        }
        loss.scale(self.scale)
    }

    /// Divide every gradient of `params` by the scale in place; return whether any
    /// gradient holds an inf or NaN. Call at most once per step (before clipping).
    pub fn unscale_and_check(&mut self, params: &[Tensor]) -> Result<bool> {
        if self.unscaled.is_some() {
            bail!("LossScaler: gradients were already unscaled this step (call update() after each step)");
        }
        let inv = 1.0 / self.scale;
        let mut found_inf = false;
        for p in params {
            let Some(g) = p.grad() else { continue };
            let finite = crate::with_real!(g.dtype(), T => {
                let k = T::from_f64(inv);
                let mut v = g.to_vec::<T>();
                let mut finite = true;
                for x in v.iter_mut() {
                    finite &= x.is_finite();
                    *x *= k;
                }
                if self.config.enabled {
                    p.set_grad(Some(Tensor::from_values(v, g.shape(), g.dtype())?));
                }
                finite
            });
            found_inf |= !finite;
        }
        if !self.config.enabled {
            found_inf = false;
        }
        self.unscaled = Some(found_inf);
        Ok(found_inf)
    }

    /// The overflow flag of this step's unscale, if it happened.
    pub fn unscaled_found_inf(&self) -> Option<bool> {
        self.unscaled
    }

    /// End of step: back off on overflow, grow after `growth_interval` clean steps.
    pub fn update(&mut self, found_inf: bool) {
        self.unscaled = None;
        if !self.config.enabled {
            return;
        }
        if found_inf {
            self.scale *= self.config.backoff_factor;
            self.growth_tracker = 0;
            return;
        }
        self.growth_tracker += 1;
        if self.growth_tracker >= self.config.growth_interval {
            let grown = self.scale * self.config.growth_factor;
            if grown.is_finite() {
                self.scale = grown;
            }
            self.growth_tracker = 0;
        }
    }

    /// ("scale", "growth_tracker") for checkpoints.
    pub fn state_dict(&self) -> Result<Vec<(String, Tensor)>> {
        Ok(vec![
            (
                "scale".to_string(),
                Tensor::scalar(self.scale, crate::DType::F64)?,
            ),
            (
                "growth_tracker".to_string(),
                Tensor::from_i64(vec![self.growth_tracker as i64], &[])?,
            ),
        ])
    }

    pub fn load_state_dict(&mut self, entries: &[(String, Tensor)]) -> Result<()> {
        for (k, t) in entries {
            match k.as_str() {
                "scale" => self.scale = t.to_scalar()?,
                "growth_tracker" => {
                    self.growth_tracker = t.to_vec_i64().first().copied().unwrap_or(0).max(0) as u64
                }
                other => bail!("LossScaler state: unexpected entry `{other}`"),
            }
        }
        self.unscaled = None;
        Ok(())
    }
}
