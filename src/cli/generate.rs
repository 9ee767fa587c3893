//! `medsyn generate`: synthetic images from prompts or a CSV of reports with a
//! diffusers Stable Diffusion folder (RoentGen, SD 1.x / 2.x).

use crate::data::reports::Section;
use crate::error::Result;
use crate::pipelines::generate::{run_generate, GenerateOptions, PromptSource};
use crate::pipelines::work::Shard;
use crate::schedulers::SchedulerOptions;
use clap::Args;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct GenerateArgs {
    /// A diffusers StableDiffusionPipeline folder (model_index.json, unet/, vae/,
    /// text_encoder/, tokenizer/, scheduler/) with safetensors weights, e.g. RoentGen.
    #[arg(long)]
    pub model: PathBuf,
    /// A prompt (repeat the flag for several). Images are named prompt-0000.png, ….
    #[arg(long = "prompt", value_name = "TEXT")]
    pub prompts: Vec<String>,
    /// A CSV of reports (one image per row, named by --id-column). Quoted multi-line
    /// fields are fine.
    #[arg(long, value_name = "FILE.csv", conflicts_with = "prompts")]
    pub reports: Option<PathBuf>,
    /// The CSV column that names each image.
    #[arg(long, default_value = "id")]
    pub id_column: String,
    /// The CSV column holding the report text.
    #[arg(long, default_value = "text")]
    pub text_column: String,
    /// Which part of each report is the prompt: full, impression, findings,
    /// impression-or-findings, findings-and-impression (MIMIC-CXR section headers).
    /// Reports without that section are skipped and counted.
    #[arg(long, default_value = "full")]
    pub section: String,
    /// A negative prompt (repeat to pair one with each prompt in order; a single one
    /// applies to all). Used only with guidance > 1.
    #[arg(long = "negative-prompt", value_name = "TEXT")]
    pub negatives: Vec<String>,
    /// Denoising steps (diffusers' default 50; RoentGen's card recommends 75).
    #[arg(long, default_value_t = 50)]
    pub steps: usize,
    /// Classifier-free guidance scale (diffusers' default 7.5; RoentGen's card: 4).
    /// At 1 or below the unconditional pass is skipped.
    #[arg(long, default_value_t = 7.5)]
    pub guidance: f64,
    /// pndm, ddim, dpmpp-2m, euler, euler-a, unipc (or the diffusers class name).
    /// Default: the scheduler in the model folder, with its config.
    #[arg(long)]
    pub scheduler: Option<String>,
    /// DDIM's eta (0 = deterministic).
    #[arg(long, default_value_t = 0.0)]
    pub eta: f64,
    /// Karras sigmas for dpmpp-2m / euler (default: the folder's config).
    #[arg(long)]
    pub karras: Option<bool>,
    /// Override the scheduler's timestep spacing: leading, trailing or linspace.
    #[arg(long)]
    pub timestep_spacing: Option<String>,
    /// Run seed: each image's seed is derived from it and the image's id and index,
    /// so sharded, resumed and single runs give identical images.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Image height in pixels (default: the U-Net's sample_size × the VAE's factor).
    #[arg(long)]
    pub height: Option<usize>,
    /// Image width in pixels (default as --height).
    #[arg(long)]
    pub width: Option<usize>,
    /// Images denoised together (guidance doubles the U-Net batch).
    #[arg(long, default_value_t = 1)]
    pub batch_size: usize,
    /// Images per prompt (files get a _N suffix when above 1).
    #[arg(long, default_value_t = 1)]
    pub images_per_prompt: usize,
    /// Start from these latents instead of random noise: a safetensors file with
    /// `latents` [N, 4, h, w], one per image in work order; scaled by the scheduler's
    /// init_noise_sigma as diffusers' `latents=` argument.
    #[arg(long, value_name = "FILE.safetensors")]
    pub latents: Option<PathBuf>,
    /// Also save f32 `latents` (final, before the VAE) and `images` ([0, 1], NCHW)
    /// of the images generated in this run.
    #[arg(long, value_name = "FILE.safetensors")]
    pub save_tensors: Option<PathBuf>,
    /// Output folder: one PNG per image plus manifest.csv (id, prompt, seed, steps,
    /// guidance, scheduler, file). Existing PNGs are skipped, so a rerun resumes.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Run only shard I of N (0-based, "I/N"): image k belongs to shard k mod N.
    #[arg(long, default_value = "0/1")]
    pub shard: String,
    /// Where the models run: cpu, cuda, cuda:N, or auto (cuda:0 when this build has the CUDA
    /// backend (`--features cuda`) and a GPU is usable, else cpu).
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// Compute dtype of the models: f32, bf16 or f16.
    #[arg(long, default_value = "f32")]
    pub dtype: String,
    /// No progress bar or warnings.
    #[arg(long)]
    pub quiet: bool,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: &GenerateArgs) -> Result<()> {
    let device = super::device::resolve_device(&args.device)?;
    let prompts = match &args.reports {
        Some(path) => PromptSource::Reports {
            path: path.clone(),
            id_column: args.id_column.clone(),
            text_column: args.text_column.clone(),
            section: Section::parse(&args.section)?,
        },
        None => PromptSource::List(args.prompts.clone()),
    };
    let opts = GenerateOptions {
        model: args.model.clone(),
        prompts,
        negatives: args.negatives.clone(),
        steps: args.steps,
        guidance: args.guidance,
        scheduler: args.scheduler.clone(),
        scheduler_options: SchedulerOptions {
            eta: args.eta,
            use_karras_sigmas: args.karras,
            timestep_spacing: args.timestep_spacing.clone(),
            ..SchedulerOptions::default()
        },
        seed: args.seed,
        height: args.height,
        width: args.width,
        batch_size: args.batch_size,
        images_per_prompt: args.images_per_prompt,
        latents: args.latents.clone(),
        save_tensors: args.save_tensors.clone(),
        out: args.out.clone(),
        shard: Shard::parse(&args.shard)?,
        dtype: super::device::parse_dtype(&args.dtype)?,
        device,
        quiet: args.quiet,
    };
    let s = run_generate(&opts)?;
    if args.json {
        let v = serde_json::json!({
            "total": s.total, "in_shard": s.in_shard, "already_done": s.already_done,
            "generated": s.generated, "skipped_reports": s.skipped_reports,
            "truncated_prompts": s.truncated_prompts, "seconds": s.seconds,
        });
        println!("{v}");
    } else {
        println!(
            "generated {} images in {:.1} s ({} already done, {} in this shard of {}; {} reports without the section skipped; {} prompts truncated)",
            s.generated, s.seconds, s.already_done, s.in_shard, s.total, s.skipped_reports, s.truncated_prompts
        );
    }
    Ok(())
}
