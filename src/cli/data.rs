//! `medsyn data ...`: data-set tools; `medsyn data phantom` writes the procedural
//! chest-radiograph phantom (images, reports, labels, masks, boxes).

use crate::data::phantom::{write_dataset, PhantomOptions, Prevalence};
use crate::error::Result;
use crate::progress::Progress;
use clap::{Args, Subcommand};
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct DataArgs {
    #[command(subcommand)]
    pub command: DataCommand,
}

#[derive(Subcommand, Debug)]
pub enum DataCommand {
    /// Write a synthetic chest-radiograph data set: PNGs, reports, labels, masks and boxes
    ///
    /// Draws frontal chest X-ray-like grayscale images (thorax, lungs with vascular
    /// markings, heart and mediastinum, diaphragm, ribs, clavicles, soft tissue; varied
    /// build, inspiration, positioning, exposure and noise) with findings at realistic
    /// prevalence and co-occurrence: cardiomegaly, pleural effusion (left/right/bilateral,
    /// small/large), pneumothorax, consolidation (by zone), nodule, pulmonary edema, or no
    /// finding. Writes OUT/images/NNNNN.png, OUT/masks/NNNNN_<finding>.png, OUT/labels.csv
    /// (path, split, report, findings, impression, and CheXpert-style 1/0 columns) and
    /// OUT/boxes.csv (path, finding, side, x0, y0, x1, y1; x1/y1 exclusive). The same seed
    /// gives identical files; image k does not depend on --n. Reruns skip images already
    /// written.
    Phantom(PhantomArgs),
}

#[derive(Args, Debug)]
pub struct PhantomArgs {
    /// Number of images to write (indices 0..N; at least 1).
    #[arg(long)]
    pub n: usize,
    /// Width and height of the square images in pixels (64 to 4096).
    #[arg(long, default_value_t = 256)]
    pub size: usize,
    /// Random seed: the same seed writes byte-identical files.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output folder (created when missing).
    #[arg(long)]
    pub out: PathBuf,
    /// Do not write the per-finding mask PNGs (boxes.csv is still written).
    #[arg(long)]
    pub no_masks: bool,
    /// Do not show the progress bar.
    #[arg(long)]
    pub quiet: bool,
}

pub fn run(args: &DataArgs) -> Result<()> {
    match &args.command {
        DataCommand::Phantom(a) => phantom(a),
    }
}

fn phantom(a: &PhantomArgs) -> Result<()> {
    if a.n == 0 {
        crate::bail!("--n must be at least 1 (got 0)");
    }
    if a.size < 64 || a.size > 4096 {
        crate::bail!("--size must be between 64 and 4096 pixels (got {})", a.size);
    }
    let opts = PhantomOptions {
        n: a.n,
        size: a.size,
        seed: a.seed,
        out: a.out.clone(),
        masks: !a.no_masks,
        prevalence: Prevalence::default(),
    };
    let mut progress = if a.quiet {
        Progress::hidden()
    } else {
        Progress::new(a.n, "phantom")
    };
    let s = write_dataset(&opts, &mut progress)?;
    println!(
        "wrote {} images ({} already there) to {}",
        s.written,
        s.skipped,
        a.out.display()
    );
    Ok(())
}
