//! Dynamic loss scaling for half-precision training, as `torch.cuda.amp.GradScaler`:
//! scale the loss up, unscale the gradients, skip steps whose gradients overflowed
//! and back off the scale, grow it again after a run of clean steps. Gradients on a
//! GPU are checked and unscaled there, with one read-back of the overflow flag per
//! step (GradScaler's too); the scale itself is kept on the host and, as a mirror,
//! on the device.

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
    /// The scale's device mirror (feature `cuda`), made when gradients on a GPU are unscaled.
    #[cfg(feature = "cuda")]
    device: DeviceScale,
}

/// The device copy of the scaler's state, kept equal to the host fields by running
/// loss_scale_update alongside `update`; dropped (and uploaded again when next needed)
/// whenever the two could disagree. `flag`: the device overflow flag as last read back.
#[cfg(feature = "cuda")]
#[derive(Default)]
struct DeviceScale {
    state: Option<crate::ops::cuda::optim::ScalerState>,
    flag: bool,
}

#[cfg(feature = "cuda")]
impl Clone for DeviceScale {
    /// A clone starts without device state (uploaded from the host values when needed).
    fn clone(&self) -> Self {
        DeviceScale::default()
    }
}

#[cfg(feature = "cuda")]
impl std::fmt::Debug for DeviceScale {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.state {
            Some(s) => write!(f, "on cuda:{}", s.ordinal()),
            None => write!(f, "none"),
        }
    }
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
            #[cfg(feature = "cuda")]
            device: DeviceScale::default(),
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
    /// Gradients on a GPU are unscaled there into fresh tensors; the overflow flag is
    /// then read back once (a host sync).
    pub fn unscale_and_check(&mut self, params: &[Tensor]) -> Result<bool> {
        if self.unscaled.is_some() {
            bail!("LossScaler: gradients were already unscaled this step (call update() after each step)");
        }
        let inv = 1.0 / self.scale;
        let mut found_inf = false;
        #[cfg(feature = "cuda")]
        let mut on_device = false;
        for p in params {
            let Some(g) = p.grad() else { continue };
            #[cfg(feature = "cuda")]
            if self.unscale_on_device(p, &g, !on_device)? {
                on_device = true;
                continue;
            }
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
        #[cfg(feature = "cuda")]
        if on_device {
            if let Some(d) = &self.device.state {
                self.device.flag = d.found_inf()?;
                found_inf |= self.device.flag;
            }
        }
        if !self.config.enabled {
            found_inf = false;
        }
        self.unscaled = Some(found_inf);
        Ok(found_inf)
    }

    /// Unscales `g` (the gradient of `p`) on its GPU when it lives on one the kernels
    /// take (f32/bf16/f16); false leaves it to the host code. A disabled scaler leaves
    /// device gradients untouched (and never reads them). The device state follows the
    /// GPU of the step's `first` device gradient; gradients on another GPU in the same
    /// list take the host code.
    #[cfg(feature = "cuda")]
    fn unscale_on_device(&mut self, p: &Tensor, g: &Tensor, first: bool) -> Result<bool> {
        use crate::tensor::{DType, Device};
        let Device::Cuda(ordinal) = g.device() else {
            return Ok(false);
        };
        if !matches!(g.dtype(), DType::F32 | DType::BF16 | DType::F16) {
            return Ok(false);
        }
        if !self.config.enabled {
            return Ok(true);
        }
        let Some(cx) = crate::ops::cuda::OnCuda::of(&[g])? else {
            return Ok(false);
        };
        let state = match self.device.state.take() {
            Some(s) if s.ordinal() == ordinal => s,
            // A second GPU in one parameter list: the host code handles the others.
            Some(s) if !first => {
                self.device.state = Some(s);
                return Ok(false);
            }
            // None, or the parameters moved to another GPU since the last step.
            _ => {
                self.device.flag = false;
                crate::ops::cuda::optim::ScalerState::upload(&cx, self.scale, self.growth_tracker)?
            }
        };
        let unscaled = state.unscale(&cx, g);
        self.device.state = Some(state);
        p.set_grad(Some(unscaled?));
        Ok(true)
    }

    /// The overflow flag of this step's unscale, if it happened.
    pub fn unscaled_found_inf(&self) -> Option<bool> {
        self.unscaled
    }

    /// End of step: back off on overflow, grow after `growth_interval` clean steps.
    /// The device mirror (if any) runs the same update on the GPU.
    pub fn update(&mut self, found_inf: bool) {
        self.unscaled = None;
        if !self.config.enabled {
            return;
        }
        #[cfg(feature = "cuda")]
        self.update_device(found_inf);
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

    /// loss_scale_update on the device mirror when its overflow flag is `found_inf`;
    /// otherwise (or when the launch fails) the mirror is dropped, to be uploaded from
    /// the host values when next needed.
    #[cfg(feature = "cuda")]
    fn update_device(&mut self, found_inf: bool) {
        let Some(state) = self.device.state.take() else {
            return;
        };
        if self.device.flag != found_inf {
            return;
        }
        let c = &self.config;
        let kept = crate::cuda::gpu(state.ordinal()).and_then(|gpu| {
            state.update(&gpu, c.growth_factor, c.backoff_factor, c.growth_interval)
        });
        if kept.is_ok() {
            self.device.state = Some(state);
            self.device.flag = false;
        }
    }

    /// The device mirror's (scale, growth_tracker), read back (a host sync); None
    /// without one. For checks that the GPU and the host agree.
    #[cfg(feature = "cuda")]
    pub fn device_state(&self) -> Result<Option<(f64, u64)>> {
        match &self.device.state {
            Some(s) => {
                let (scale, tracker) = s.read()?;
                Ok(Some((scale, tracker.max(0) as u64)))
            }
            None => Ok(None),
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
        #[cfg(feature = "cuda")]
        {
            self.device = DeviceScale::default();
        }
        Ok(())
    }
}
