//! `medsyn generate`: text-to-image over a list of prompts or a CSV of reports —
//! deterministic per-image seeds, sharding, resume (skips PNGs already written),
//! batching with classifier-free guidance, PNGs + manifest, optional tensor dump.
//!
//! Noise: image k of a run gets `seed = image_seed(run_seed, id, index)` and its
//! initial latents are the first C·h·w standard normals of `Philox4x32-10(seed)`
//! (Box–Muller in f64 over counter blocks 0, 1, … as in `tensor::random`,
//! rounded to f32, NCHW order). A stochastic scheduler continues the same stream
//! for each step's noise. A batch is only a grouping: an image's pixels do not
//! depend on the batch size, the shard or an interrupted run.

use super::stable_diffusion::StableDiffusion;
use super::work::{file_names, work_list, Manifest, Prompt, Shard, WorkItem};
use crate::data::csv::CsvTable;
use crate::data::reports::{select_text, Section};
use crate::error::{Context, Error, Result};
use crate::imageio::{tensor_to_u8_images, write_png_atomic};
use crate::io::{save_safetensors, TensorSet};
use crate::progress::Progress;
use crate::schedulers::{build_scheduler, SchedulerKind, SchedulerOptions};
use crate::tensor::{DType, Device, Philox, Tensor};
use crate::{bail, ensure};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Where prompts come from.
#[derive(Clone, Debug)]
pub enum PromptSource {
    /// Prompts given on the command line; ids are `prompt-0000`, `prompt-0001`, ….
    List(Vec<String>),
    /// A CSV of reports: the id and text columns, and which part of the text.
    Reports {
        path: PathBuf,
        id_column: String,
        text_column: String,
        section: Section,
    },
}

/// Everything `generate` needs (the CLI fills it; defaults are diffusers').
#[derive(Clone, Debug)]
pub struct GenerateOptions {
    pub model: PathBuf,
    pub prompts: PromptSource,
    /// One per prompt (in order), or one for all, or none ("").
    pub negatives: Vec<String>,
    pub steps: usize,
    pub guidance: f64,
    /// None: the model folder's scheduler.
    pub scheduler: Option<String>,
    pub scheduler_options: SchedulerOptions,
    pub seed: u64,
    pub height: Option<usize>,
    pub width: Option<usize>,
    pub batch_size: usize,
    pub images_per_prompt: usize,
    pub latents: Option<PathBuf>,
    pub save_tensors: Option<PathBuf>,
    pub out: Option<PathBuf>,
    pub shard: Shard,
    pub dtype: DType,
    /// Where the models run (the CLI's `--device`, resolved).
    pub device: Device,
    pub quiet: bool,
}

/// What a run did (printed by the CLI, also as JSON).
#[derive(Clone, Debug, Default)]
pub struct GenerateSummary {
    pub total: usize,
    pub in_shard: usize,
    pub already_done: usize,
    pub generated: usize,
    pub skipped_reports: usize,
    pub truncated_prompts: usize,
    pub seconds: f64,
}

/// The full, ordered work list (before sharding): one item per prompt × image index.
pub fn work_items(opts: &GenerateOptions) -> Result<(Vec<WorkItem>, usize)> {
    let (entries, skipped) = prompt_entries(&opts.prompts)?;
    ensure!(
        !entries.is_empty(),
        "no prompts to generate (give --prompt or --reports)"
    );
    let negatives: Vec<String> = match opts.negatives.len() {
        0 => vec![String::new(); entries.len()],
        1 => vec![opts.negatives[0].clone(); entries.len()],
        n if n == entries.len() => opts.negatives.clone(),
        n => bail!("{n} negative prompts for {} prompts: give one per prompt, in order, or a single one for all", entries.len()),
    };
    let prompts: Vec<Prompt> = entries
        .into_iter()
        .zip(negatives)
        .map(|((id, prompt), negative)| Prompt {
            id,
            prompt,
            negative,
        })
        .collect();
    let items = work_list(&prompts, opts.images_per_prompt, opts.seed)?;
    Ok((items, skipped))
}

/// (id, prompt) pairs and the number of reports skipped for lacking the section.
fn prompt_entries(source: &PromptSource) -> Result<(Vec<(String, String)>, usize)> {
    match source {
        PromptSource::List(prompts) => Ok((
            prompts
                .iter()
                .enumerate()
                .map(|(i, p)| (format!("prompt-{i:04}"), p.clone()))
                .collect(),
            0,
        )),
        PromptSource::Reports {
            path,
            id_column,
            text_column,
            section,
        } => {
            let table = CsvTable::read(path)?;
            let (idc, textc) = (table.column(id_column)?, table.column(text_column)?);
            let mut seen = HashSet::new();
            let mut out = Vec::with_capacity(table.len());
            let mut skipped = 0;
            for row in table.rows() {
                let id = row.get(idc).trim().to_string();
                if id.is_empty() {
                    return Err(Error::file(
                        path,
                        format!("line {}: empty `{id_column}`", row.line()),
                    ));
                }
                if !seen.insert(id.clone()) {
                    return Err(Error::file(
                        path,
                        format!(
                            "line {}: id `{id}` appears twice (ids name the output files)",
                            row.line()
                        ),
                    ));
                }
                match select_text(row.get(textc), *section) {
                    Some(text) if !text.is_empty() => out.push((id, text)),
                    _ => skipped += 1,
                }
            }
            Ok((out, skipped))
        }
    }
}

/// Runs generation. Images already present in `--out` are skipped (resume).
pub fn run_generate(opts: &GenerateOptions) -> Result<GenerateSummary> {
    let started = Instant::now();
    ensure!(opts.steps >= 1, "--steps must be at least 1");
    ensure!(opts.batch_size >= 1, "--batch-size must be at least 1");
    ensure!(
        opts.out.is_some() || opts.save_tensors.is_some(),
        "nothing would be saved: give --out DIR and/or --save-tensors FILE"
    );
    let (items, skipped_reports) = work_items(opts)?;
    let mut pipe = StableDiffusion::load(&opts.model, opts.dtype)?;
    pipe.to_device(opts.device)?;
    let (height, width) = image_size(opts, &pipe)?;
    let (h, w) = (
        height / pipe.vae_scale_factor(),
        width / pipe.vae_scale_factor(),
    );
    let channels = pipe.latent_channels();
    let given_latents = opts
        .latents
        .as_ref()
        .map(|p| load_latents(p, items.len(), [channels, h, w]))
        .transpose()?;
    let kind = opts
        .scheduler
        .as_deref()
        .map(SchedulerKind::parse)
        .transpose()?;
    let scheduler_name =
        build_scheduler(kind, Some(&pipe.scheduler_config), &opts.scheduler_options)?
            .name()
            .to_string();

    let files = file_names(&items, opts.images_per_prompt)?;
    let mut todo: Vec<usize> = (0..items.len())
        .filter(|&k| opts.shard.contains(k))
        .collect();
    let in_shard = todo.len();
    if let Some(out) = &opts.out {
        std::fs::create_dir_all(out)
            .map_err(|e| Error::file(out, format!("cannot create: {e}")))?;
        todo.retain(|&k| !out.join(&files[k]).is_file());
    }
    let mut summary = GenerateSummary {
        total: items.len(),
        in_shard,
        already_done: in_shard - todo.len(),
        skipped_reports,
        ..Default::default()
    };
    let manifest = opts.out.as_ref().map(|o| {
        Manifest::new(
            o.join(manifest_name(&opts.shard)),
            opts.steps,
            opts.guidance,
            &scheduler_name,
            opts.images_per_prompt,
        )
    });
    if let (Some(out), Some(m)) = (&opts.out, &manifest) {
        // Rows lost to an interruption between a PNG and its row come back first.
        m.reconcile(&opts.shard.select(items.clone()), out)?;
    }
    let mut progress = if opts.quiet {
        Progress::hidden()
    } else {
        Progress::new(in_shard, "images").with_done(summary.already_done)
    };
    let mut kept_latents = Vec::new();
    let mut kept_images = Vec::new();
    for batch in todo.chunks(opts.batch_size) {
        let prompts: Vec<String> = batch.iter().map(|&k| items[k].prompt.clone()).collect();
        let negatives: Vec<String> = batch.iter().map(|&k| items[k].negative.clone()).collect();
        let encoded = pipe.encode_prompts(&prompts, &negatives, opts.guidance)?;
        for (i, cut) in &encoded.truncated {
            summary.truncated_prompts += 1;
            if !opts.quiet {
                progress.println(&format!(
                    "warning: prompt `{}` is longer than {} CLIP tokens; this part was cut: {cut}",
                    items[batch[*i]].id,
                    pipe.tokenizer.max_length()
                ));
            }
        }
        let mut rngs: Vec<Philox> = batch.iter().map(|&k| Philox::new(items[k].seed)).collect();
        let per_image = channels * h * w;
        let noise0 = match &given_latents {
            Some(all) => Tensor::cat(
                &batch
                    .iter()
                    .map(|&k| all.narrow(0, k, 1))
                    .collect::<Result<Vec<_>>>()?
                    .iter()
                    .collect::<Vec<_>>(),
                0,
            )?,
            None => draw_noise(&mut rngs, per_image, [channels, h, w])?,
        };
        let mut scheduler =
            build_scheduler(kind, Some(&pipe.scheduler_config), &opts.scheduler_options)?;
        scheduler.set_timesteps(opts.steps)?;
        let latents = pipe.initial_latents(&noise0, scheduler.as_ref())?;
        let latents = pipe.denoise(
            latents,
            &encoded.embeds,
            opts.guidance,
            scheduler.as_mut(),
            |_| draw_noise(&mut rngs, per_image, [channels, h, w]),
            |_| {},
        )?;
        let images = pipe.decode(&latents)?;
        if let Some(out) = &opts.out {
            let pixels = tensor_to_u8_images(&images)?;
            for (j, &k) in batch.iter().enumerate() {
                write_png_atomic(out.join(&files[k]), &pixels[j], width, height, 3)?;
            }
            let written: Vec<WorkItem> = batch.iter().map(|&k| items[k].clone()).collect();
            if let Some(m) = &manifest {
                m.append(&written)?;
            }
        }
        if opts.save_tensors.is_some() {
            kept_latents.push(latents);
            kept_images.push(images);
        }
        summary.generated += batch.len();
        progress.inc(batch.len());
    }
    progress.finish();
    if let Some(path) = &opts.save_tensors {
        save_tensors(path, &kept_latents, &kept_images)?;
    }
    summary.seconds = started.elapsed().as_secs_f64();
    Ok(summary)
}

fn manifest_name(shard: &Shard) -> String {
    if shard.count() == 1 {
        "manifest.csv".to_string()
    } else {
        format!("manifest-shard-{}-of-{}.csv", shard.index(), shard.count())
    }
}

fn image_size(opts: &GenerateOptions, pipe: &StableDiffusion) -> Result<(usize, usize)> {
    let (dh, dw) = pipe.default_size();
    let (height, width) = (opts.height.unwrap_or(dh), opts.width.unwrap_or(dw));
    let f = pipe.vae_scale_factor();
    // The U-Net halves the latent once per down block: keep every level whole.
    let levels = pipe
        .unet
        .config()
        .block_out_channels
        .len()
        .saturating_sub(1);
    let multiple = f << levels;
    ensure!(
        height > 0 && width > 0 && height % multiple == 0 && width % multiple == 0,
        "--height/--width must be positive multiples of {multiple} for this model, got {height}×{width}"
    );
    Ok((height, width))
}

/// Standard normals, one Philox stream per image, as f32 [B, C, h, w].
fn draw_noise(rngs: &mut [Philox], per_image: usize, chw: [usize; 3]) -> Result<Tensor> {
    let mut v = Vec::with_capacity(rngs.len() * per_image);
    for rng in rngs.iter_mut() {
        v.extend(rng.normal(per_image).into_iter().map(|x| x as f32));
    }
    Tensor::from_vec(v, &[rngs.len(), chw[0], chw[1], chw[2]])
}

/// `--latents FILE`: tensor `latents`, [N, C, h, w] with one row per image of the run.
fn load_latents(path: &Path, n: usize, chw: [usize; 3]) -> Result<Tensor> {
    let set = TensorSet::open(path)?;
    let t = set
        .load_as("latents", DType::F32)
        .with_context(|| "--latents needs a tensor named `latents`".to_string())?;
    let want = [n, chw[0], chw[1], chw[2]];
    if t.shape() != want {
        return Err(Error::file(path, format!("`latents` has shape {:?}, expected {want:?} (one per image of the run, at this height/width)", t.shape())));
    }
    Ok(t)
}

fn save_tensors(path: &Path, latents: &[Tensor], images: &[Tensor]) -> Result<()> {
    ensure!(
        !latents.is_empty(),
        "--save-tensors: no image was generated in this run (all were already done)"
    );
    let cat = |ts: &[Tensor]| Tensor::cat(&ts.iter().collect::<Vec<_>>(), 0);
    let (l, i) = (cat(latents)?, cat(images)?);
    save_safetensors(path, &[("latents", &l), ("images", &i)], None)
}
