//! A scheduler's settings resolved as diffusers' `SchedulerClass.from_config(file,
//! **overrides)` resolves them: keys the class knows come from the file, others are
//! ignored, missing ones take that class's own defaults; unsupported values fail.

use super::betas::BetaConfig;
use super::{SchedulerKind, SchedulerOptions};
use crate::error::{Error, Result};
use crate::models::config::Config;
use crate::{bail, ensure};
use serde_json::json;

/// What the model predicts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PredictionType {
    Epsilon,
    VPrediction,
    Sample,
}

impl PredictionType {
    pub fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "epsilon" => PredictionType::Epsilon,
            "v_prediction" => PredictionType::VPrediction,
            "sample" => PredictionType::Sample,
            _ => bail!(
                "prediction_type `{s}` is not supported (supported: epsilon, v_prediction, sample)"
            ),
        })
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            PredictionType::Epsilon => "epsilon",
            PredictionType::VPrediction => "v_prediction",
            PredictionType::Sample => "sample",
        }
    }
}

/// How inference timesteps are spread over the training ones (arXiv 2305.08891, Table 2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimestepSpacing {
    Leading,
    Trailing,
    Linspace,
}

impl TimestepSpacing {
    pub fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "leading" => TimestepSpacing::Leading,
            "trailing" => TimestepSpacing::Trailing,
            "linspace" => TimestepSpacing::Linspace,
            _ => bail!(
                "timestep_spacing `{s}` is not supported (supported: leading, trailing, linspace)"
            ),
        })
    }
}

/// The sigma after the last step (`final_sigmas_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinalSigmas {
    Zero,
    SigmaMin,
}

/// Multistep solver variants: DPM-Solver's midpoint/heun, UniPC's bh1/bh2.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SolverType {
    Midpoint,
    Heun,
    Bh1,
    Bh2,
}

/// Every setting the implemented schedulers use; keys a class does not know keep
/// that class's behaviour (e.g. `clip_sample` is false outside DDIM).
#[derive(Clone, Debug, PartialEq)]
pub struct SchedulerConfig {
    pub kind: SchedulerKind,
    pub betas: BetaConfig,
    pub prediction_type: PredictionType,
    pub timestep_spacing: TimestepSpacing,
    pub steps_offset: usize,
    /// PNDM: skip the Runge-Kutta warm-up (Stable Diffusion configs set it).
    pub skip_prk_steps: bool,
    /// PNDM / DDIM: the "previous" alpha product of the last step is 1.
    pub set_alpha_to_one: bool,
    /// DDIM: clip the predicted x0 to ±clip_sample_range.
    pub clip_sample: bool,
    pub clip_sample_range: f64,
    pub use_karras_sigmas: bool,
    /// Karras range override (a `sigma_min`/`sigma_max` key in the file).
    pub sigma_min: Option<f64>,
    pub sigma_max: Option<f64>,
    pub final_sigmas_type: FinalSigmas,
    /// DPM-Solver / UniPC.
    pub solver_order: usize,
    pub solver_type: SolverType,
    pub lower_order_final: bool,
    pub euler_at_final: bool,
    pub lambda_min_clipped: f64,
    pub predict_x0: bool,
    pub disable_corrector: Vec<usize>,
}

/// Keys that select features medsyn does not implement, per class: (key, why).
const UNSUPPORTED_FLAGS: &[(&str, &str)] = &[
    ("thresholding", "dynamic thresholding is not implemented"),
    (
        "use_exponential_sigmas",
        "only Karras sigmas are implemented",
    ),
    ("use_beta_sigmas", "only Karras sigmas are implemented"),
    ("use_lu_lambdas", "only Karras sigmas are implemented"),
    (
        "use_flow_sigmas",
        "flow-matching sigmas are not implemented",
    ),
    (
        "use_dynamic_shifting",
        "dynamic shifting is not implemented",
    ),
    (
        "solver_p",
        "a separate predictor scheduler is not implemented",
    ),
    ("shift_terminal", "flow-matching sigmas are not implemented"),
];

fn class_knows(kind: SchedulerKind, key: &str) -> bool {
    use SchedulerKind::*;
    match key {
        "thresholding" => matches!(kind, Ddim | DpmSolverPP2M | UniPC),
        "use_exponential_sigmas" | "use_beta_sigmas" => {
            matches!(kind, DpmSolverPP2M | Euler | UniPC)
        }
        "use_lu_lambdas" => kind == DpmSolverPP2M,
        "use_flow_sigmas" | "use_dynamic_shifting" => matches!(kind, DpmSolverPP2M | UniPC),
        "solver_p" | "shift_terminal" => kind == UniPC,
        _ => false,
    }
}

fn allowed_predictions(kind: SchedulerKind) -> &'static [&'static str] {
    match kind {
        SchedulerKind::Pndm | SchedulerKind::EulerAncestral => &["epsilon", "v_prediction"],
        _ => &["epsilon", "v_prediction", "sample"],
    }
}

impl SchedulerConfig {
    /// Resolves the settings of `kind` from an optional folder config and CLI overrides.
    pub fn resolve(
        kind: SchedulerKind,
        folder: Option<&Config>,
        overrides: &SchedulerOptions,
    ) -> Result<SchedulerConfig> {
        let empty;
        let cfg = match folder {
            Some(c) => c,
            None => {
                empty = Config::from_value("<class defaults>", json!({}))?;
                &empty
            }
        };
        Self::read(kind, cfg, overrides).map_err(|e| e.context(kind.class_name()))
    }

    fn read(kind: SchedulerKind, cfg: &Config, ov: &SchedulerOptions) -> Result<SchedulerConfig> {
        use SchedulerKind::*;
        for (key, why) in UNSUPPORTED_FLAGS {
            if class_knows(kind, key) {
                cfg.reject(key, why)?;
            }
        }
        let betas = BetaConfig::read(cfg, kind != Pndm)?;

        let pred = match &ov.prediction_type {
            Some(p) => p.clone(),
            None => cfg.str_or("prediction_type", "epsilon")?,
        };
        let allowed = allowed_predictions(kind);
        ensure!(
            allowed.contains(&pred.as_str()),
            "prediction_type `{pred}` is not supported (supported: {})",
            allowed.join(", ")
        );
        let prediction_type = PredictionType::parse(&pred)?;

        let default_spacing = match kind {
            Pndm | Ddim => "leading",
            _ => "linspace",
        };
        let spacing = match &ov.timestep_spacing {
            Some(s) => s.clone(),
            None => cfg.str_or("timestep_spacing", default_spacing)?,
        };
        let timestep_spacing = TimestepSpacing::parse(&spacing)?;

        let karras_file = if kind.has_karras() {
            cfg.bool_or("use_karras_sigmas", false)?
        } else {
            false
        };
        let use_karras_sigmas = match ov.use_karras_sigmas {
            Some(true) if !kind.has_karras() => {
                bail!("Karras sigmas are not available (only dpmpp-2m, euler and unipc have them)")
            }
            Some(k) => k,
            None => karras_file,
        };

        let final_sigmas_type = if matches!(kind, DpmSolverPP2M | Euler | UniPC) {
            match cfg
                .choice("final_sigmas_type", "zero", &["zero", "sigma_min"])?
                .as_str()
            {
                "zero" => FinalSigmas::Zero,
                _ => FinalSigmas::SigmaMin,
            }
        } else {
            FinalSigmas::Zero
        };

        // diffusers keeps unknown keys as config attributes, and `_convert_to_karras`
        // reads `sigma_min`/`sigma_max` when present, whatever the class.
        let (sigma_min, sigma_max) = if kind.has_karras() {
            (cfg.opt_f64("sigma_min")?, cfg.opt_f64("sigma_max")?)
        } else {
            (None, None)
        };

        let mut out = SchedulerConfig {
            kind,
            betas,
            prediction_type,
            timestep_spacing,
            steps_offset: cfg.usize_or("steps_offset", 0)?,
            skip_prk_steps: false,
            set_alpha_to_one: false,
            clip_sample: false,
            clip_sample_range: 1.0,
            use_karras_sigmas,
            sigma_min,
            sigma_max,
            final_sigmas_type,
            solver_order: 1,
            solver_type: SolverType::Midpoint,
            lower_order_final: false,
            euler_at_final: false,
            lambda_min_clipped: f64::NEG_INFINITY,
            predict_x0: true,
            disable_corrector: vec![],
        };
        match kind {
            Pndm => {
                out.skip_prk_steps = cfg.bool_or("skip_prk_steps", false)?;
                out.set_alpha_to_one = cfg.bool_or("set_alpha_to_one", false)?;
            }
            Ddim => {
                out.set_alpha_to_one = cfg.bool_or("set_alpha_to_one", true)?;
                out.clip_sample = cfg.bool_or("clip_sample", true)?;
                out.clip_sample_range = cfg.f64_or("clip_sample_range", 1.0)?;
                ensure!(
                    out.clip_sample_range > 0.0,
                    "clip_sample_range must be positive, got {}",
                    out.clip_sample_range
                );
            }
            DpmSolverPP2M => {
                let algo = cfg.str_or("algorithm_type", "dpmsolver++")?;
                ensure!(
                    algo == "dpmsolver++" || algo == "deis",
                    "algorithm_type `{algo}` is not supported (supported: dpmsolver++)"
                );
                out.solver_order = read_order(cfg)?;
                out.solver_type = match cfg.str_or("solver_type", "midpoint")?.as_str() {
                    "midpoint" | "logrho" | "bh1" | "bh2" => SolverType::Midpoint,
                    "heun" => SolverType::Heun,
                    s => bail!("solver_type `{s}` is not supported (supported: midpoint, heun)"),
                };
                out.lower_order_final = cfg.bool_or("lower_order_final", true)?;
                out.euler_at_final = cfg.bool_or("euler_at_final", false)?;
                if let Some(v) = cfg.get("variance_type") {
                    bail!("variance_type {v} (learned variance) is not supported");
                }
                out.lambda_min_clipped = cfg.f64_or("lambda_min_clipped", f64::NEG_INFINITY)?;
            }
            Euler => {
                let interp = cfg.str_or("interpolation_type", "linear")?;
                ensure!(
                    interp == "linear",
                    "interpolation_type `{interp}` is not supported (supported: linear)"
                );
                let tt = cfg.str_or("timestep_type", "discrete")?;
                ensure!(
                    tt == "discrete",
                    "timestep_type `{tt}` is not supported (supported: discrete)"
                );
            }
            EulerAncestral => {}
            UniPC => {
                out.solver_order = read_order(cfg)?;
                out.solver_type = match cfg.str_or("solver_type", "bh2")?.as_str() {
                    "bh1" => SolverType::Bh1,
                    "bh2" | "midpoint" | "heun" | "logrho" => SolverType::Bh2,
                    s => bail!("solver_type `{s}` is not supported (supported: bh1, bh2)"),
                };
                out.predict_x0 = cfg.bool_or("predict_x0", true)?;
                out.lower_order_final = cfg.bool_or("lower_order_final", true)?;
                if cfg.has("disable_corrector") {
                    out.disable_corrector = cfg.usize_list("disable_corrector")?;
                }
            }
        }
        Ok(out)
    }
}

fn read_order(cfg: &Config) -> Result<usize> {
    let n = cfg.usize_or("solver_order", 2)?;
    if !(1..=3).contains(&n) {
        return Err(Error::file(
            cfg.path(),
            format!("key `solver_order`: {n} is not supported (supported: 1, 2, 3)"),
        ));
    }
    Ok(n)
}
