//! Sampling schedulers matching diffusers 0.42 (PNDM, DDIM, DPM-Solver++ 2M, Euler,
//! Euler ancestral, UniPC), chosen by name or by a folder's `scheduler_config.json`,
//! and the training-side noise schedule.
//!
//! Each scheduler reproduces its diffusers class step for step: the per-step scalars
//! are computed in float32 where diffusers keeps them in float32 torch tensors (its
//! `alphas_cumprod` and `sigmas`), the tensor arithmetic runs in the sample's dtype
//! (f32 or f64; f16/bf16 samples are computed in f32 and cast back, as diffusers
//! upcasts). Stochastic schedulers take their noise from the caller.

mod arith;
mod betas;
mod config;
mod ddim;
mod dpm_solver;
mod euler;
mod euler_ancestral;
mod noise;
mod pndm;
mod spacing;
mod unipc;

pub use betas::{alphas_cumprod, betas, BetaConfig, BetaSchedule};
pub use config::{FinalSigmas, PredictionType, SchedulerConfig, SolverType, TimestepSpacing};
pub use noise::NoiseSchedule;

use crate::error::Result;
use crate::models::config::Config;
use crate::tensor::Tensor;
use crate::{bail, ensure};

/// The schedulers medsyn implements.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SchedulerKind {
    Pndm,
    Ddim,
    DpmSolverPP2M,
    Euler,
    EulerAncestral,
    UniPC,
}

const ALL: [SchedulerKind; 6] = [
    SchedulerKind::Pndm,
    SchedulerKind::Ddim,
    SchedulerKind::DpmSolverPP2M,
    SchedulerKind::Euler,
    SchedulerKind::EulerAncestral,
    SchedulerKind::UniPC,
];

impl SchedulerKind {
    /// A CLI name (`pndm`, `ddim`, `dpmpp-2m`, `euler`, `euler-a`, `unipc`, any case)
    /// or a diffusers class name (`DDIMScheduler`, ...).
    pub fn parse(name: &str) -> Result<Self> {
        let lower = name.trim().to_ascii_lowercase();
        for k in ALL {
            if k.cli_name() == lower || k.class_name().eq_ignore_ascii_case(name.trim()) {
                return Ok(k);
            }
        }
        bail!(
            "unknown scheduler `{name}` (supported: {}; or the diffusers class names {})",
            ALL.map(|k| k.cli_name()).join(", "),
            ALL.map(|k| k.class_name()).join(", ")
        )
    }

    /// The scheduler a diffusers `_class_name` names, if medsyn implements it.
    pub fn from_class_name(class: &str) -> Option<Self> {
        ALL.into_iter().find(|k| k.class_name() == class)
    }

    pub fn class_name(&self) -> &'static str {
        match self {
            SchedulerKind::Pndm => "PNDMScheduler",
            SchedulerKind::Ddim => "DDIMScheduler",
            SchedulerKind::DpmSolverPP2M => "DPMSolverMultistepScheduler",
            SchedulerKind::Euler => "EulerDiscreteScheduler",
            SchedulerKind::EulerAncestral => "EulerAncestralDiscreteScheduler",
            SchedulerKind::UniPC => "UniPCMultistepScheduler",
        }
    }

    pub fn cli_name(&self) -> &'static str {
        match self {
            SchedulerKind::Pndm => "pndm",
            SchedulerKind::Ddim => "ddim",
            SchedulerKind::DpmSolverPP2M => "dpmpp-2m",
            SchedulerKind::Euler => "euler",
            SchedulerKind::EulerAncestral => "euler-a",
            SchedulerKind::UniPC => "unipc",
        }
    }

    /// Whether the diffusers class has `use_karras_sigmas`.
    pub fn has_karras(&self) -> bool {
        matches!(
            self,
            SchedulerKind::DpmSolverPP2M | SchedulerKind::Euler | SchedulerKind::UniPC
        )
    }
}

/// Settings given on the command line, applied over the folder's config the way
/// `SchedulerClass.from_config(config, **overrides)` applies keyword arguments.
#[derive(Clone, Debug, Default)]
pub struct SchedulerOptions {
    /// DDIM's eta (0 = deterministic); any other scheduler rejects a non-zero value.
    pub eta: f64,
    pub use_karras_sigmas: Option<bool>,
    pub timestep_spacing: Option<String>,
    pub prediction_type: Option<String>,
}

/// A diffusion sampler: `set_timesteps`, then for each `i` in `0..timesteps().len()`
/// call the model on `scale_model_input(x, i)` at `timesteps()[i]` and advance with
/// `x = step(model_output, i, x, noise)`.
pub trait Scheduler: Send {
    /// Sets the number of inference steps and resets the solver state.
    fn set_timesteps(&mut self, steps: usize) -> Result<()>;
    /// What the U-Net receives at each call (diffusers' `scheduler.timesteps`, as
    /// float). One entry per model call: PNDM makes more calls than steps.
    fn timesteps(&self) -> &[f64];
    /// The standard deviation of the initial noise (multiply N(0, 1) latents by it).
    fn init_noise_sigma(&self) -> f64;
    /// The model input at call `step_index` (identity except for the Euler family).
    fn scale_model_input(&self, sample: &Tensor, step_index: usize) -> Result<Tensor>;
    /// Whether `step` needs fresh standard-normal noise shaped like the sample.
    fn needs_noise(&self) -> bool;
    /// Advances the sample by one model call and returns the previous (less noisy)
    /// sample. Calls must come in order; the first after `set_timesteps` may start
    /// at any index (img2img's `set_begin_index`).
    fn step(
        &mut self,
        model_output: &Tensor,
        step_index: usize,
        sample: &Tensor,
        noise: Option<&Tensor>,
    ) -> Result<Tensor>;
    /// Model calls per step (1 for all implemented schedulers).
    fn order(&self) -> usize {
        1
    }
    /// The diffusers class name.
    fn name(&self) -> &str;
    /// The resolved configuration.
    fn config(&self) -> &SchedulerConfig;
}

/// Builds a scheduler: `kind`, or the class named by the folder config's
/// `_class_name`, configured from `folder_config` as diffusers' `from_config` would
/// (keys the class knows are read, others ignored, missing ones take the class's
/// defaults), then `overrides`.
pub fn build_scheduler(
    kind: Option<SchedulerKind>,
    folder_config: Option<&Config>,
    overrides: &SchedulerOptions,
) -> Result<Box<dyn Scheduler>> {
    let kind = match (kind, folder_config) {
        (Some(k), _) => k,
        (None, Some(cfg)) => {
            let class = cfg.str("_class_name").map_err(|e| {
                e.context("no scheduler named and the scheduler config names no class")
            })?;
            SchedulerKind::from_class_name(&class).ok_or_else(|| {
                crate::error::Error::file(
                    cfg.path(),
                    format!(
                        "scheduler class `{class}` is not implemented; choose one of {} \
                         (they are configured from this file)",
                        ALL.map(|k| k.cli_name()).join(", ")
                    ),
                )
            })?
        }
        (None, None) => bail!("no scheduler named and no scheduler config given"),
    };
    let cfg = SchedulerConfig::resolve(kind, folder_config, overrides)?;
    ensure!(
        overrides.eta == 0.0 || kind == SchedulerKind::Ddim,
        "eta = {} applies to DDIM only, not to {}",
        overrides.eta,
        kind.class_name()
    );
    ensure!(
        overrides.eta >= 0.0 && overrides.eta.is_finite(),
        "eta must be a finite non-negative number, got {}",
        overrides.eta
    );
    Ok(match kind {
        SchedulerKind::Pndm => Box::new(pndm::Pndm::new(cfg)?),
        SchedulerKind::Ddim => Box::new(ddim::Ddim::new(cfg, overrides.eta)?),
        SchedulerKind::DpmSolverPP2M => Box::new(dpm_solver::DpmSolver::new(cfg)?),
        SchedulerKind::Euler => Box::new(euler::Euler::new(cfg)?),
        SchedulerKind::EulerAncestral => Box::new(euler_ancestral::EulerAncestral::new(cfg)?),
        SchedulerKind::UniPC => Box::new(unipc::UniPC::new(cfg)?),
    })
}

/// Checks a step count against the training schedule.
fn check_steps(cfg: &SchedulerConfig, steps: usize) -> Result<()> {
    ensure!(
        steps > 0,
        "{}: the number of inference steps must be at least 1",
        cfg.kind.class_name()
    );
    ensure!(
        steps <= cfg.betas.num_train_timesteps,
        "{}: {steps} inference steps exceed the {} training timesteps",
        cfg.kind.class_name(),
        cfg.betas.num_train_timesteps
    );
    Ok(())
}

/// Tracks the order of `step` calls after `set_timesteps`.
#[derive(Clone, Debug, Default)]
struct StepCursor {
    /// Number of model calls in the schedule; None before `set_timesteps`.
    len: Option<usize>,
    /// The index the next `step` must have; None when any start is allowed.
    next: Option<usize>,
}

impl StepCursor {
    fn reset(&mut self, len: usize) {
        self.len = Some(len);
        self.next = None;
    }

    /// Validates an index for `scale_model_input`.
    fn check(&self, class: &str, i: usize) -> Result<()> {
        let Some(len) = self.len else {
            bail!("{class}: call set_timesteps before stepping")
        };
        ensure!(
            i < len,
            "{class}: step index {i} is past the schedule's {len} model calls"
        );
        Ok(())
    }

    /// Validates the index of a `step` call and moves on.
    fn advance(&mut self, class: &str, i: usize) -> Result<()> {
        self.check(class, i)?;
        if let Some(n) = self.next {
            ensure!(
                i == n,
                "{class}: step {i} called where step {n} was expected (steps run in order; \
                 call set_timesteps to start over)"
            );
        }
        self.next = Some(i + 1);
        Ok(())
    }
}

/// The validated inputs of a `step`, in the working dtype (see `arith`).
struct StepInput {
    model_output: Tensor,
    sample: Tensor,
    noise: Option<Tensor>,
    /// The sample's own dtype, which the result is cast back to.
    dtype: crate::tensor::DType,
}

impl StepCursor {
    /// Validates a `step` call (order, noise, shapes, dtypes), then moves on.
    fn begin_step(
        &mut self,
        class: &str,
        needs_noise: bool,
        model_output: &Tensor,
        i: usize,
        sample: &Tensor,
        noise: Option<&Tensor>,
    ) -> Result<StepInput> {
        self.check(class, i)?;
        let noise = check_noise(class, needs_noise, noise, sample)?;
        ensure!(
            model_output.shape() == sample.shape(),
            "{class}: model output {:?} and sample {:?} differ in shape",
            model_output.shape(),
            sample.shape()
        );
        let dtype = sample.dtype();
        let input = StepInput {
            model_output: arith::work(model_output, dtype)?,
            sample: arith::work(sample, dtype)?,
            noise: noise.map(|n| arith::work(n, dtype)).transpose()?,
            dtype,
        };
        self.advance(class, i)?;
        Ok(input)
    }
}

/// Checks the noise argument of `step` against what the scheduler needs.
fn check_noise<'a>(
    class: &str,
    needs: bool,
    noise: Option<&'a Tensor>,
    sample: &Tensor,
) -> Result<Option<&'a Tensor>> {
    match (needs, noise) {
        (true, None) => bail!("{class}: this configuration is stochastic; step needs noise"),
        (false, Some(_)) => bail!(
            "{class}: this configuration is deterministic and takes no noise \
             (drawing it would shift the random stream)"
        ),
        (true, Some(n)) => {
            ensure!(
                n.shape() == sample.shape(),
                "{class}: noise shape {:?} differs from the sample's {:?}",
                n.shape(),
                sample.shape()
            );
            Ok(Some(n))
        }
        (false, None) => Ok(None),
    }
}
