//! `medsyn demo`: the whole pipeline in miniature on phantom data (the README's main command).

use super::device::resolve_device;
use crate::error::Result;
use crate::pipelines::demo::{run_demo, DemoOptions, Preset};
use clap::Args;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Folder for everything the demo makes (data, models, images, results.json,
    /// table.txt, grid.png); rerunning with the same folder resumes where it stopped.
    #[arg(long, default_value = "medsyn-demo")]
    pub out: PathBuf,
    /// `quick`: 32-px images, small sets and models, under 10 minutes on a 2-core CPU.
    /// `full`: 64-px images, 20k real pairs, larger models and schedules, sized for one
    /// GPU (hours on a CPU). Use a new --out when changing the preset.
    #[arg(long, default_value = "quick")]
    pub preset: String,
    /// Where to run: cpu, cuda, cuda:N, or auto (cuda:0 when this build has the CUDA backend
    /// (`--features cuda`) and a GPU is usable, else cpu).
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// Seed of the data sets, initialisations and sampling (same seed, same results).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Print only the final table (no stage lines or progress bars).
    #[arg(long)]
    pub quiet: bool,
}

pub fn run(args: &DemoArgs) -> Result<()> {
    run_demo(&DemoOptions {
        device: resolve_device(&args.device)?,
        out: args.out.clone(),
        preset: Preset::named(&args.preset)?,
        seed: args.seed,
        quiet: args.quiet,
    })?;
    Ok(())
}
