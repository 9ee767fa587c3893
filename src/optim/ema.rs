//! Exponential moving average of parameters, as diffusers' `EMAModel`
//! (`decay`, `min_decay`, `update_after_step`, optional warm-up), kept in f32 — on
//! the host, or (feature `cuda`) on the GPU of a parameter that lives there.

use crate::error::Result;
use crate::tensor::Tensor;
use crate::{bail, ensure};

/// EMA settings with diffusers' defaults (decay 0.9999, no warm-up).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EmaConfig {
    pub decay: f64,
    pub min_decay: f64,
    pub update_after_step: u64,
    pub use_warmup: bool,
    pub inv_gamma: f64,
    pub power: f64,
}

impl Default for EmaConfig {
    fn default() -> Self {
        EmaConfig {
            decay: 0.9999,
            min_decay: 0.0,
            update_after_step: 0,
            use_warmup: false,
            inv_gamma: 1.0,
            power: 2.0 / 3.0,
        }
    }
}

/// One parameter's f32 shadow.
enum Shadow {
    Host(Vec<f32>),
    /// On the parameter's GPU (private, replaced by each update).
    #[cfg(feature = "cuda")]
    Cuda(crate::ops::cuda::optim::StateBuf),
}

impl Shadow {
    /// The shadow of `p`'s current values, where `p` lives.
    fn of(p: &Tensor) -> Result<Shadow> {
        #[cfg(feature = "cuda")]
        if let Some(cx) = crate::ops::cuda::optim::param_device(p)? {
            return Ok(Shadow::Cuda(crate::ops::cuda::optim::StateBuf::f32_of(
                &cx, p,
            )?));
        }
        Ok(Shadow::Host(p.to_vec_f32()))
    }

    fn len(&self) -> usize {
        match self {
            Shadow::Host(v) => v.len(),
            #[cfg(feature = "cuda")]
            Shadow::Cuda(b) => b.len(),
        }
    }

    /// The values on the host (read back from a GPU: a sync).
    fn host(&self) -> Result<Vec<f32>> {
        match self {
            Shadow::Host(v) => Ok(v.clone()),
            #[cfg(feature = "cuda")]
            Shadow::Cuda(b) => b.download(),
        }
    }

    /// Values of the same location as `self` (uploaded when the shadow is on a GPU).
    fn replaced_by(&self, values: Vec<f32>) -> Result<Shadow> {
        match self {
            Shadow::Host(_) => Ok(Shadow::Host(values)),
            #[cfg(feature = "cuda")]
            Shadow::Cuda(b) => {
                let cx = crate::ops::cuda::OnCuda {
                    gpu: crate::cuda::gpu(b.ordinal())?,
                    ordinal: b.ordinal(),
                };
                let host = crate::tensor::CpuStorage::F32(values);
                Ok(Shadow::Cuda(crate::ops::cuda::optim::StateBuf::upload(
                    &cx, &host,
                )?))
            }
        }
    }
}

/// Shadow copies of a parameter list (same order every call).
pub struct Ema {
    config: EmaConfig,
    shadow: Vec<Shadow>,
    shapes: Vec<Vec<usize>>,
    optimization_step: u64,
}

impl Ema {
    /// Starts the shadow at the parameters' current values (copied on the GPU for
    /// parameters there).
    pub fn new(params: &[Tensor], config: EmaConfig) -> Ema {
        Ema {
            config,
            shadow: params
                .iter()
                .map(|p| Shadow::of(p).unwrap_or_else(|_| Shadow::Host(p.to_vec_f32())))
                .collect(),
            shapes: params.iter().map(|p| p.shape().to_vec()).collect(),
            optimization_step: 0,
        }
    }

    /// diffusers' `get_decay(optimization_step)`.
    pub fn decay_at(&self, optimization_step: u64) -> f64 {
        let c = &self.config;
        let step = optimization_step as i64 - c.update_after_step as i64 - 1;
        if step <= 0 {
            return 0.0;
        }
        let step = step as f64;
        let d = if c.use_warmup {
            1.0 - (1.0 + step / c.inv_gamma).powf(-c.power)
        } else {
            (1.0 + step) / (10.0 + step)
        };
        d.min(c.decay).max(c.min_decay)
    }

    /// One update after an optimizer step: shadow -= (1 - decay)·(shadow - param)
    /// for trainable parameters; frozen ones are copied. A parameter on a GPU is
    /// averaged there (same f32 operations, no host sync).
    pub fn update(&mut self, params: &[Tensor]) -> Result<()> {
        ensure!(
            params.len() == self.shadow.len(),
            "EMA: {} parameters, shadow holds {}",
            params.len(),
            self.shadow.len()
        );
        self.optimization_step += 1;
        let one_minus = (1.0 - self.decay_at(self.optimization_step)) as f32;
        for (s, p) in self.shadow.iter_mut().zip(params) {
            if p.numel() != s.len() {
                bail!(
                    "EMA: parameter of {} values, shadow of {}",
                    p.numel(),
                    s.len()
                );
            }
            #[cfg(feature = "cuda")]
            if let Some(cx) = crate::ops::cuda::optim::param_device(p)? {
                use crate::ops::cuda::optim::{ema_update, StateBuf};
                let here = match &*s {
                    Shadow::Cuda(b) if b.ordinal() == cx.ordinal => None,
                    other => Some(StateBuf::upload(
                        &cx,
                        &crate::tensor::CpuStorage::F32(other.host()?),
                    )?),
                };
                if let Some(b) = here {
                    *s = Shadow::Cuda(b);
                }
                let Shadow::Cuda(b) = &*s else {
                    bail!("EMA: internal: shadow not on the device");
                };
                let next = if p.requires_grad() {
                    ema_update(&cx, b, p, one_minus)?
                } else {
                    StateBuf::f32_of(&cx, p)?
                };
                *s = Shadow::Cuda(next);
                continue;
            }
            let v = p.to_vec_f32();
            if !matches!(s, Shadow::Host(_)) {
                *s = Shadow::Host(s.host()?);
            }
            #[cfg_attr(not(feature = "cuda"), allow(irrefutable_let_patterns))]
            let Shadow::Host(s) = s
            else {
                bail!("EMA: internal: shadow not on the host");
            };
            if p.requires_grad() {
                s.iter_mut()
                    .zip(&v)
                    .for_each(|(s, p)| *s -= one_minus * (*s - p));
            } else {
                s.copy_from_slice(&v);
            }
        }
        Ok(())
    }

    /// The averaged parameters, as f32 tensors in parameter order (a shadow on a GPU
    /// as a fresh tensor on that GPU).
    pub fn shadow(&self) -> Result<Vec<Tensor>> {
        self.shadow
            .iter()
            .zip(&self.shapes)
            .map(|(v, s)| match v {
                Shadow::Host(v) => Tensor::from_vec(v.clone(), s),
                #[cfg(feature = "cuda")]
                Shadow::Cuda(b) => b.to_tensor(s),
            })
            .collect()
    }

    pub fn optimization_step(&self) -> u64 {
        self.optimization_step
    }

    /// `ema.{i}` tensors (on the host: GPU shadows are read back) and the step
    /// counter, for checkpoints.
    pub fn state_dict(&self) -> Result<Vec<(String, Tensor)>> {
        let mut out = Vec::with_capacity(self.shadow.len() + 1);
        for (i, (v, s)) in self.shadow.iter().zip(&self.shapes).enumerate() {
            out.push((format!("ema.{i}"), Tensor::from_vec(v.host()?, s)?));
        }
        out.push((
            "ema.step".into(),
            Tensor::from_i64(vec![self.optimization_step as i64], &[1])?,
        ));
        Ok(out)
    }

    /// Restores what `state_dict` wrote (shapes must match); a shadow on a GPU gets
    /// the values uploaded there.
    pub fn load_state_dict(&mut self, entries: &[(String, Tensor)]) -> Result<()> {
        let find = |n: &str| entries.iter().find(|(k, _)| k == n).map(|(_, t)| t);
        for i in 0..self.shadow.len() {
            let Some(t) = find(&format!("ema.{i}")) else {
                bail!("EMA state: missing ema.{i}")
            };
            ensure!(
                t.shape() == self.shapes[i].as_slice(),
                "EMA state: ema.{i} has shape {:?}, expected {:?}",
                t.shape(),
                self.shapes[i]
            );
            self.shadow[i] = self.shadow[i].replaced_by(t.to_vec_f32())?;
        }
        let Some(step) = find("ema.step") else {
            bail!("EMA state: missing ema.step")
        };
        self.optimization_step = step.to_vec_i64()[0] as u64;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decay_follows_diffusers_schedule() {
        let e = Ema::new(&[], EmaConfig::default());
        assert_eq!(e.decay_at(1), 0.0);
        assert!((e.decay_at(2) - 2.0 / 11.0).abs() < 1e-15);
        assert!((e.decay_at(1_000_000) - 0.9999).abs() < 1e-15);
        let w = Ema::new(
            &[],
            EmaConfig {
                use_warmup: true,
                ..EmaConfig::default()
            },
        );
        assert!((w.decay_at(11) - (1.0 - 11f64.powf(-2.0 / 3.0))).abs() < 1e-12);
    }

    #[test]
    fn update_averages_trainable_and_copies_frozen() {
        let a = Tensor::from_vec(vec![1.0f32, 2.0], &[2])
            .unwrap()
            .into_param()
            .unwrap();
        let b = Tensor::from_vec(vec![5.0f32], &[1]).unwrap();
        let mut e = Ema::new(&[a.clone(), b.clone()], EmaConfig::default());
        a.set_data(&Tensor::from_vec(vec![3.0f32, 4.0], &[2]).unwrap())
            .unwrap();
        e.update(&[a.clone(), b.clone()]).unwrap(); // decay 0: shadow = param
        assert_eq!(e.shadow().unwrap()[0].to_vec_f32(), vec![3.0, 4.0]);
        a.set_data(&Tensor::from_vec(vec![14.0f32, 4.0], &[2]).unwrap())
            .unwrap();
        e.update(&[a.clone(), b]).unwrap(); // decay 2/11
        let s = e.shadow().unwrap()[0].to_vec_f32();
        assert!((s[0] - (3.0 + 9.0 / 11.0 * 11.0)).abs() < 1e-5, "{s:?}");
        let state = e.state_dict().unwrap();
        let mut f = Ema::new(
            &[a.clone(), Tensor::zeros(&[1], crate::DType::F32).unwrap()],
            EmaConfig::default(),
        );
        f.load_state_dict(&state).unwrap();
        assert_eq!(f.optimization_step(), 2);
        assert_eq!(f.shadow().unwrap()[0].to_vec_f32(), s);
    }
}
