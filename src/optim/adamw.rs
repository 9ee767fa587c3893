//! AdamW exactly as `torch.optim.AdamW` (decoupled weight decay, bias correction),
//! with fp32 moments, an fp32 master copy for bf16/f16 parameters, parameter
//! groups with and without weight decay, and a checkpointable state. Parameters on a
//! GPU (feature `cuda`) keep their state there and are stepped there (adamw/device.rs).

use super::LossScaler;
use crate::bail;
use crate::error::{Context, Result};
use crate::tensor::{DType, Real, Storage, Tensor};
use half::{bf16, f16};
use rayon::prelude::*;
use std::sync::{Arc, Weak};

#[cfg(feature = "cuda")]
mod device;
mod state;

/// Hyper-parameters, with PyTorch's defaults.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamWConfig {
    pub lr: f64,
    pub betas: (f64, f64),
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig {
            lr: 1e-3,
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: 1e-2,
        }
    }
}

/// Parameters sharing a weight decay (e.g. matrices with decay; biases and norm
/// weights without).
#[derive(Clone, Debug)]
pub struct ParamGroup {
    pub params: Vec<Tensor>,
    pub weight_decay: f64,
}

/// Moment buffers in the parameter's compute precision (f32 for f32/bf16/f16).
enum Buf {
    F32(Vec<f32>),
    F64(Vec<f64>),
}

impl Buf {
    fn zeros(dtype: DType, n: usize) -> Buf {
        if dtype == DType::F64 {
            Buf::F64(vec![0.0; n])
        } else {
            Buf::F32(vec![0.0; n])
        }
    }
    fn from_tensor(t: &Tensor, dtype: DType) -> Buf {
        if dtype == DType::F64 {
            Buf::F64(t.to_vec::<f64>())
        } else {
            Buf::F32(t.to_vec::<f32>())
        }
    }
    fn to_tensor(&self, shape: &[usize]) -> Result<Tensor> {
        match self {
            Buf::F32(v) => Tensor::from_vec(v.clone(), shape),
            Buf::F64(v) => Tensor::from_vec(v.clone(), shape),
        }
    }
}

struct ParamState {
    step: u64,
    bufs: Bufs,
    /// The storage last written from the master, to notice outside changes.
    written: Weak<Storage>,
}

/// Where a parameter's moments (and fp32 master) live.
enum Bufs {
    Host {
        exp_avg: Buf,
        exp_avg_sq: Buf,
        /// fp32 master weights of a half-precision parameter.
        master: Option<Vec<f32>>,
    },
    /// On the parameter's GPU, updated in place by the kernels (feature `cuda`).
    #[cfg(feature = "cuda")]
    Cuda(Box<device::DevBufs>),
}

impl ParamState {
    fn new(p: &Tensor) -> ParamState {
        let n = p.numel();
        ParamState {
            step: 0,
            bufs: Bufs::Host {
                exp_avg: Buf::zeros(p.dtype(), n),
                exp_avg_sq: Buf::zeros(p.dtype(), n),
                master: p.dtype().is_half().then(|| p.to_vec::<f32>()),
            },
            written: Weak::new(),
        }
    }

    /// Moves device state back to the host (a parameter updated on the CPU).
    fn move_to_host(&mut self) -> Result<()> {
        #[cfg(feature = "cuda")]
        if let Bufs::Cuda(d) = &self.bufs {
            self.bufs = d.download()?;
        }
        Ok(())
    }
}

/// Per-step scalars, computed in f64 as PyTorch does before casting to the tensor type.
struct Hyper {
    decay: f64,
    one_minus_beta1: f64,
    beta2: f64,
    one_minus_beta2: f64,
    step_size: f64,
    bc2_sqrt: f64,
    eps: f64,
}

const CHUNK: usize = 1 << 14;

/// One AdamW update of `p` in place, in PyTorch's operation order.
fn update<T: Real>(p: &mut [T], g: &[T], m: &mut [T], v: &mut [T], h: &Hyper) {
    let (decay, b1c, b2, b2c) = (
        T::from_f64(h.decay),
        T::from_f64(h.one_minus_beta1),
        T::from_f64(h.beta2),
        T::from_f64(h.one_minus_beta2),
    );
    let (neg_step, bc2, eps) = (
        T::from_f64(-h.step_size),
        T::from_f64(h.bc2_sqrt),
        T::from_f64(h.eps),
    );
    p.par_chunks_mut(CHUNK)
        .zip(g.par_chunks(CHUNK))
        .zip(m.par_chunks_mut(CHUNK))
        .zip(v.par_chunks_mut(CHUNK))
        .for_each(|(((p, g), m), v)| {
            for i in 0..p.len() {
                let pi = p[i] * decay;
                let mi = m[i] + b1c * (g[i] - m[i]);
                let vi = v[i] * b2 + b2c * g[i] * g[i];
                let denom = vi.sqrt() / bc2 + eps;
                p[i] = pi + neg_step * (mi / denom);
                m[i] = mi;
                v[i] = vi;
            }
        });
}

/// True when rounding `master` to `dtype` reproduces `param` exactly.
fn master_matches(master: &[f32], param: &[f32], dtype: DType) -> bool {
    let round = |x: f32| match dtype {
        DType::BF16 => bf16::from_f32(x).to_f32(),
        DType::F16 => f16::from_f32(x).to_f32(),
        _ => x,
    };
    master.len() == param.len()
        && master
            .iter()
            .zip(param)
            .all(|(&m, &p)| round(m).to_bits() == p.to_bits() || (m.is_nan() && p.is_nan()))
}

/// AdamW over parameter groups. Parameters without a gradient, or frozen ones,
/// are skipped (their state and step count stay as they are).
pub struct AdamW {
    groups: Vec<ParamGroup>,
    config: AdamWConfig,
    /// Per parameter, indexed over all groups in order.
    state: Vec<Option<ParamState>>,
    steps: u64,
}

impl AdamW {
    /// One group with `config.weight_decay`.
    pub fn new(params: Vec<Tensor>, config: AdamWConfig) -> Result<AdamW> {
        AdamW::with_groups(
            vec![ParamGroup {
                params,
                weight_decay: config.weight_decay,
            }],
            config,
        )
    }

    /// Several groups, each with its own weight decay (`config.weight_decay` unused).
    pub fn with_groups(groups: Vec<ParamGroup>, config: AdamWConfig) -> Result<AdamW> {
        let (b1, b2) = config.betas;
        if !(0.0..1.0).contains(&b1) || !(0.0..1.0).contains(&b2) {
            bail!("AdamW: betas must be in [0, 1), got ({b1}, {b2})");
        }
        if config.lr.is_nan() || config.lr < 0.0 || config.eps.is_nan() || config.eps < 0.0 {
            bail!(
                "AdamW: lr and eps must be non-negative, got lr {} eps {}",
                config.lr,
                config.eps
            );
        }
        for (gi, g) in groups.iter().enumerate() {
            if g.weight_decay.is_nan() || g.weight_decay < 0.0 {
                bail!(
                    "AdamW: group {gi} has negative weight decay {}",
                    g.weight_decay
                );
            }
            for (pi, p) in g.params.iter().enumerate() {
                if !p.dtype().is_float() || !p.is_leaf() {
                    bail!("AdamW: group {gi} parameter {pi} must be a float leaf tensor, got {} (leaf: {})", p.dtype(), p.is_leaf());
                }
            }
        }
        let n = groups.iter().map(|g| g.params.len()).sum();
        Ok(AdamW {
            groups,
            config,
            state: (0..n).map(|_| None).collect(),
            steps: 0,
        })
    }

    pub fn lr(&self) -> f64 {
        self.config.lr
    }

    pub fn set_lr(&mut self, lr: f64) {
        self.config.lr = lr;
    }

    pub fn config(&self) -> AdamWConfig {
        self.config
    }

    /// Number of `step` calls that updated parameters.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// All parameters, in group order (the indices used by the state dict).
    pub fn params(&self) -> Vec<Tensor> {
        self.groups
            .iter()
            .flat_map(|g| g.params.iter().cloned())
            .collect()
    }

    /// Every parameter at full precision, in `params()` order: the fp32 master of a
    /// half-precision parameter the optimizer has stepped, else the parameter itself
    /// (for exporting weights trained in bf16/f16 without a second rounding).
    pub fn full_precision_params(&self) -> Result<Vec<Tensor>> {
        self.params()
            .into_iter()
            .zip(&self.state)
            .map(|(p, st)| match st.as_ref().map(|s| &s.bufs) {
                Some(Bufs::Host {
                    master: Some(m), ..
                }) => Tensor::from_vec(m.clone(), p.shape()),
                #[cfg(feature = "cuda")]
                Some(Bufs::Cuda(d)) => match d.master_tensor(p.shape())? {
                    Some(m) => Ok(m),
                    None => Ok(p),
                },
                _ => Ok(p),
            })
            .collect()
    }

    pub fn zero_grad(&self) {
        for g in &self.groups {
            for p in &g.params {
                p.clear_grad();
            }
        }
    }

    /// One AdamW step from the parameters' current gradients. A parameter on a GPU
    /// (f32, bf16, f16) is updated there without host sync: its new values go into
    /// fresh device memory installed with `Tensor::replace_storage`.
    pub fn step(&mut self) -> Result<()> {
        let (lr, (beta1, beta2), eps) = (self.config.lr, self.config.betas, self.config.eps);
        let mut index = 0;
        for group in &self.groups {
            for p in &group.params {
                let i = index;
                index += 1;
                if !p.requires_grad() {
                    continue;
                }
                let Some(grad) = p.grad() else { continue };
                if grad.shape() != p.shape() {
                    bail!(
                        "AdamW: parameter {i} has shape {:?} but its gradient {:?}",
                        p.shape(),
                        grad.shape()
                    );
                }
                #[cfg(feature = "cuda")]
                if let Some(cx) = crate::ops::cuda::optim::param_device(p)? {
                    let scalars = crate::backend::cuda::adamw::AdamwScalars {
                        lr,
                        beta1,
                        beta2,
                        eps,
                        weight_decay: group.weight_decay,
                    };
                    device::step_param(&cx, p, &grad, &mut self.state[i], &scalars).with_context(
                        || format!("AdamW step of parameter {i} on {}", p.device()),
                    )?;
                    continue;
                }
                let st = self.state[i].get_or_insert_with(|| ParamState::new(p));
                st.move_to_host()?;
                st.step += 1;
                let step = st.step as f64;
                let h = Hyper {
                    decay: 1.0 - lr * group.weight_decay,
                    one_minus_beta1: 1.0 - beta1,
                    beta2,
                    one_minus_beta2: 1.0 - beta2,
                    step_size: lr / (1.0 - beta1.powf(step)),
                    bc2_sqrt: (1.0 - beta2.powf(step)).powf(0.5),
                    eps,
                };
                step_param(p, &grad, st, &h)
                    .with_context(|| format!("AdamW step of parameter {i}"))?;
            }
        }
        self.steps += 1;
        Ok(())
    }

    /// A mixed-precision step: unscale the gradients (unless `scaler` already did
    /// this step), skip the update when any is inf/NaN, then update the scale.
    /// Returns whether the parameters were updated.
    pub fn step_with_scaler(&mut self, scaler: &mut LossScaler) -> Result<bool> {
        let found_inf = match scaler.unscaled_found_inf() {
            Some(f) => f,
            None => scaler.unscale_and_check(&self.params())?,
        };
        if !found_inf {
            self.step()?;
        }
        scaler.update(found_inf);
        Ok(!found_inf)
    }
}

/// Update one parameter (through its fp32 master for half dtypes).
fn step_param(p: &Tensor, grad: &Tensor, st: &mut ParamState, h: &Hyper) -> Result<()> {
    #[cfg_attr(not(feature = "cuda"), allow(irrefutable_let_patterns))]
    let Bufs::Host {
        exp_avg,
        exp_avg_sq,
        master,
    } = &mut st.bufs
    else {
        bail!("AdamW: internal: host step with device state");
    };
    match (exp_avg, exp_avg_sq, master) {
        (Buf::F32(m), Buf::F32(v), Some(master)) => {
            let current = p.storage();
            if !std::ptr::eq(Weak::as_ptr(&st.written), Arc::as_ptr(&current)) {
                // Written outside the optimizer (or freshly loaded): keep the master
                // only if it still rounds to the parameter.
                let pv = p.to_vec::<f32>();
                if !master_matches(master, &pv, p.dtype()) {
                    *master = pv;
                }
            }
            update(master, &grad.to_vec::<f32>(), m, v, h);
            p.set_data(&Tensor::from_vec(master.clone(), p.shape())?)?;
            st.written = Arc::downgrade(&p.storage());
        }
        (Buf::F32(m), Buf::F32(v), None) => {
            let mut pv = p.to_vec::<f32>();
            update(&mut pv, &grad.to_vec::<f32>(), m, v, h);
            p.set_data(&Tensor::from_vec(pv, p.shape())?)?;
        }
        (Buf::F64(m), Buf::F64(v), _) => {
            let mut pv = p.to_vec::<f64>();
            update(&mut pv, &grad.to_vec::<f64>(), m, v, h);
            p.set_data(&Tensor::from_vec(pv, p.shape())?)?;
        }
        _ => bail!(
            "AdamW: moment buffers do not match parameter dtype {}",
            p.dtype()
        ),
    }
    Ok(())
}
