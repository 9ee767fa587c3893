//! `medsyn train-generator`: fine-tune a Stable Diffusion folder on image–prompt
//! pairs as RoentGen was made — U-Net (and optionally the CLIP text encoder)
//! trained with the noise-prediction loss, AdamW with fp32 master weights under
//! bf16, optional EMA, checkpoints with exact resume, and a diffusers-layout
//! output folder that `generate` and diffusers load.

pub mod data;
mod export;
pub mod step;

use super::checkpoint::{self, CheckpointParts};
use super::run_log::{create_out, progress, MetricsLog};
use super::stable_diffusion::StableDiffusion;
use super::work::image_seed;
use crate::error::{Error, Result};
use crate::nn::prefixed;
use crate::optim::{clip_grad_norm_tensor, AdamW, AdamWConfig, Ema, EmaConfig, WarmupCosine};
use crate::schedulers::NoiseSchedule;
use crate::tensor::{DType, Device, Philox, Tensor};
use crate::{bail, ensure};
use serde_json::json;
use std::path::PathBuf;
use std::time::Instant;
use step::{weighted_diffusion_loss, StepNoise};

/// Options with diffusers' train_text_to_image.py defaults where it has them.
#[derive(Clone, Debug)]
pub struct TrainGeneratorOptions {
    pub model: PathBuf,
    pub data: PathBuf,
    pub image_column: String,
    pub text_column: String,
    pub out: PathBuf,
    /// Optimizer steps in total (training stops there; resume continues to it).
    pub steps: u64,
    pub batch_size: usize,
    pub grad_accum: usize,
    pub lr: f64,
    pub warmup_steps: u64,
    /// Cosine decay to 0 after warm-up; otherwise constant.
    pub cosine: bool,
    pub weight_decay: f64,
    pub max_grad_norm: f64,
    /// Min-SNR loss weighting γ (diffusers' `--snr_gamma`; 5 is the paper's); None = off.
    pub snr_gamma: Option<f64>,
    /// Pixels (default: the U-Net's sample_size × the VAE factor).
    pub resolution: Option<usize>,
    pub dtype: DType,
    /// Where the models train (the CLI's `--device`, resolved).
    pub device: Device,
    pub train_text_encoder: bool,
    pub ema: bool,
    pub ema_decay: f64,
    pub checkpoint_every: u64,
    pub keep_checkpoints: usize,
    pub seed: u64,
    pub quiet: bool,
}

/// What a run did.
#[derive(Clone, Debug)]
pub struct TrainSummary {
    pub start_step: u64,
    pub end_step: u64,
    pub last_loss: f64,
    pub seconds: f64,
}

/// Trains, checkpoints every `checkpoint_every` steps and at the end, and exports
/// the diffusers folder to `out`. Resumes from the newest checkpoint in `out`.
pub fn train_generator(opts: &TrainGeneratorOptions) -> Result<TrainSummary> {
    let started = Instant::now();
    ensure!(
        opts.batch_size >= 1 && opts.grad_accum >= 1,
        "--batch-size and --grad-accum must be at least 1"
    );
    ensure!(opts.steps >= 1, "--steps must be at least 1");
    if opts.dtype == DType::F16 {
        bail!("--dtype f16 is not supported for training (no loss scaling here): use bf16 or f32");
    }
    let pairs = data::read_pairs(&opts.data, &opts.image_column, &opts.text_column)?;
    let mut pipe = StableDiffusion::load(&opts.model, opts.dtype)?;
    pipe.to_device(opts.device)?;
    let resolution = opts.resolution.unwrap_or(pipe.default_size().0);
    let multiple = pipe.vae_scale_factor()
        << pipe
            .unet
            .config()
            .block_out_channels
            .len()
            .saturating_sub(1);
    ensure!(
        resolution.is_multiple_of(multiple),
        "--resolution must be a multiple of {multiple} for this model, got {resolution}"
    );
    let schedule = NoiseSchedule::from_config(Some(&pipe.scheduler_config), None)?;

    // Trainable parameters: the U-Net, then the text encoder when asked.
    if let Some(vae) = &pipe.vae {
        vae.parameters()
            .iter()
            .try_for_each(|(_, p)| p.set_requires_grad(false))?;
    }
    let mut named: Vec<(String, Tensor)> = prefixed("unet", pipe.unet.parameters());
    if opts.train_text_encoder {
        named.extend(prefixed("text_encoder", pipe.text_encoder.parameters()));
    } else {
        pipe.text_encoder
            .parameters()
            .iter()
            .try_for_each(|(_, p)| p.set_requires_grad(false))?;
    }
    for (_, p) in &named {
        p.set_requires_grad(true)?;
    }
    let params: Vec<Tensor> = named.iter().map(|(_, p)| p.clone()).collect();
    let config = AdamWConfig {
        lr: opts.lr,
        weight_decay: opts.weight_decay,
        ..AdamWConfig::default()
    };
    let mut opt = AdamW::new(params.clone(), config)?;
    let mut ema = opts.ema.then(|| {
        Ema::new(
            &params,
            EmaConfig {
                decay: opts.ema_decay,
                ..EmaConfig::default()
            },
        )
    });
    let lr_at = |step: u64| {
        if opts.cosine {
            WarmupCosine {
                base_lr: opts.lr,
                warmup_steps: opts.warmup_steps,
                total_steps: opts.steps,
                min_lr: 0.0,
            }
            .lr_at(step)
        } else if step < opts.warmup_steps {
            opts.lr * (step + 1) as f64 / opts.warmup_steps as f64
        } else {
            opts.lr
        }
    };

    create_out(&opts.out)?;
    let mut start_step = 0;
    if let Some((step, dir)) = checkpoint::latest(&opts.out) {
        resume(&dir, &named, &mut opt, ema.as_mut())?;
        start_step = step;
        if !opts.quiet {
            eprintln!("resuming from {} (step {step})", dir.display());
        }
    }

    let mut metrics = MetricsLog::append(&opts.out)?;
    let mut progress = progress(
        opts.quiet,
        opts.steps as usize,
        "steps",
        start_step as usize,
    );
    let per_step = opts.batch_size * opts.grad_accum;
    let (c, h) = (pipe.latent_channels(), resolution / pipe.vae_scale_factor());
    let mut last_loss = f64::NAN;
    let mut order = EpochOrder::new(pairs.len(), opts.seed);
    for step in start_step..opts.steps {
        let t0 = Instant::now();
        let mut step_loss = 0.0;
        for micro in 0..opts.grad_accum {
            let first = (step as usize * per_step) + micro * opts.batch_size;
            let idx: Vec<usize> = (first..first + opts.batch_size)
                .map(|p| order.index(p))
                .collect();
            let images: Vec<Tensor> = idx
                .iter()
                .map(|&i| data::load_image(&pairs[i].image, resolution)?.unsqueeze(0))
                .collect::<Result<_>>()?;
            let pixels = Tensor::cat(&images.iter().collect::<Vec<_>>(), 0)?;
            let prompts: Vec<String> = idx.iter().map(|&i| pairs[i].prompt.clone()).collect();
            let (ids, _) = pipe.tokenize(&prompts)?;
            let mut rng = Philox::new(image_seed(
                opts.seed,
                "train-generator",
                step as usize * opts.grad_accum + micro,
            ));
            let draws = draw_step_noise(
                &mut rng,
                opts.batch_size,
                [c, h, h],
                schedule.num_train_timesteps(),
            )?;
            let loss =
                weighted_diffusion_loss(&pipe, &schedule, &pixels, &ids, &draws, opts.snr_gamma)?;
            // Backward is queued before the loss is read back, so that on a GPU the read waits
            // for work already queued instead of leaving the device idle meanwhile.
            loss.scale(1.0 / opts.grad_accum as f64)?.backward()?;
            let value = loss.to_scalar()?;
            if !value.is_finite() {
                bail!("the loss is {value} at step {step} (micro-batch {micro}); lower --lr, or use --dtype f32");
            }
            step_loss += value / opts.grad_accum as f64;
        }
        if opts.max_grad_norm > 0.0 {
            // The norm stays on the device (no read-back inside the step).
            clip_grad_norm_tensor(&params, opts.max_grad_norm)?;
        }
        let lr = lr_at(step);
        opt.set_lr(lr);
        opt.step()?;
        opt.zero_grad();
        if let Some(e) = ema.as_mut() {
            e.update(&params)?;
        }
        last_loss = step_loss;
        let rate = per_step as f64 / t0.elapsed().as_secs_f64();
        metrics
            .write(&json!({"step": step + 1, "loss": step_loss, "lr": lr, "images_per_s": rate}))?;
        progress.inc(1);
        let done = step + 1;
        if done % opts.checkpoint_every.max(1) == 0 || done == opts.steps {
            save_checkpoint(opts, done, &named, &opt, ema.as_ref())?;
        }
        order.forget_old(done as usize * per_step);
    }
    progress.finish();
    export::export_folder(&pipe, opts, &named, &opt, ema.as_ref())?;
    Ok(TrainSummary {
        start_step,
        end_step: opts.steps,
        last_loss,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// The draws of one micro-batch: VAE sampling noise, diffusion noise, timesteps.
fn draw_step_noise(
    rng: &mut Philox,
    batch: usize,
    chw: [usize; 3],
    train_steps: usize,
) -> Result<StepNoise> {
    let n = batch * chw.iter().product::<usize>();
    let shape = [batch, chw[0], chw[1], chw[2]];
    let vae_noise = Tensor::from_vec(
        rng.normal(n).into_iter().map(|x| x as f32).collect(),
        &shape,
    )?;
    let noise = Tensor::from_vec(
        rng.normal(n).into_iter().map(|x| x as f32).collect(),
        &shape,
    )?;
    let timesteps = (0..batch)
        .map(|_| rng.below(train_steps as u64) as usize)
        .collect();
    Ok(StepNoise {
        vae_noise,
        noise,
        timesteps,
    })
}

/// Data order: a fresh permutation per epoch from the seed, so a resumed run sees
/// exactly the samples the uninterrupted run would have.
struct EpochOrder {
    n: usize,
    seed: u64,
    epochs: Vec<(usize, Vec<usize>)>,
}

impl EpochOrder {
    fn new(n: usize, seed: u64) -> Self {
        EpochOrder {
            n,
            seed,
            epochs: Vec::new(),
        }
    }
    /// The dataset index at global sample position `p`.
    fn index(&mut self, p: usize) -> usize {
        let epoch = p / self.n;
        if !self.epochs.iter().any(|(e, _)| *e == epoch) {
            let perm = Philox::new(image_seed(self.seed, "epoch", epoch)).permutation(self.n);
            self.epochs.push((epoch, perm));
        }
        let perm = &self.epochs.iter().find(|(e, _)| *e == epoch).unwrap().1;
        perm[p % self.n]
    }
    fn forget_old(&mut self, next: usize) {
        let current = next / self.n;
        self.epochs.retain(|(e, _)| *e >= current);
    }
}

fn save_checkpoint(
    opts: &TrainGeneratorOptions,
    step: u64,
    named: &[(String, Tensor)],
    opt: &AdamW,
    ema: Option<&Ema>,
) -> Result<()> {
    let full = opt.full_precision_params()?;
    let weights: Vec<(String, Tensor)> = named
        .iter()
        .zip(full)
        .map(|((n, _), t)| (n.clone(), t))
        .collect();
    let mut groups = vec![
        ("weights".to_string(), weights),
        ("optimizer".to_string(), opt.state_dict()?),
    ];
    if let Some(e) = ema {
        groups.push(("ema".to_string(), e.state_dict()?));
    }
    let state = json!({"step": step, "seed": opts.seed, "batch_size": opts.batch_size, "grad_accum": opts.grad_accum,
                       "train_text_encoder": opts.train_text_encoder, "ema": opts.ema});
    checkpoint::save(
        &opts.out,
        step,
        &CheckpointParts { groups, state },
        opts.keep_checkpoints,
    )?;
    Ok(())
}

fn resume(
    dir: &std::path::Path,
    named: &[(String, Tensor)],
    opt: &mut AdamW,
    ema: Option<&mut Ema>,
) -> Result<()> {
    let weights = checkpoint::load_group(dir, "weights")?;
    ensure!(
        weights.len() == named.len(),
        "{}: the checkpoint holds {} trained tensors, this run trains {} (same --train-text-encoder as before?)",
        dir.display(),
        weights.len(),
        named.len()
    );
    for (name, p) in named {
        let Some((_, t)) = weights.iter().find(|(n, _)| n == name) else {
            return Err(Error::file(dir, format!("checkpoint lacks `{name}`")));
        };
        p.set_data(t)?;
    }
    opt.load_state_dict(&checkpoint::load_group(dir, "optimizer")?)?;
    if let Some(e) = ema {
        e.load_state_dict(&checkpoint::load_group(dir, "ema")?)?;
    }
    Ok(())
}
