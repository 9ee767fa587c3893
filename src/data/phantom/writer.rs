//! Writing a phantom data set: `images/NNNNN.png`, `masks/NNNNN_<finding>.png`, `labels.csv`
//! (path, split, report sections, CheXpert-style 1/0 labels) and `boxes.csv`, all atomically;
//! reruns skip images already on disk and rewrite identical CSVs.

use super::findings::Finding;
use super::render::render;
use super::report::write_report;
use super::{sample_case, split_of, Prevalence};
use crate::data::write_csv_atomic;
use crate::error::{Error, Result};
use crate::imageio::write_png_atomic;
use crate::progress::Progress;
use rayon::prelude::*;
use std::path::PathBuf;
use std::sync::Mutex;

/// The label columns of `labels.csv`, after `path, split, report, findings, impression`.
pub const LABEL_COLUMNS: [&str; 8] = [
    "No Finding",
    "Cardiomegaly",
    "Pleural Effusion",
    "Pneumothorax",
    "Consolidation",
    "Lung Opacity",
    "Nodule",
    "Edema",
];

/// Least and largest image size.
pub const MIN_SIZE: usize = 64;
pub const MAX_SIZE: usize = 4096;

/// What to write.
#[derive(Clone, Debug)]
pub struct PhantomOptions {
    /// Number of images (indices `0..n`).
    pub n: usize,
    /// Width and height in pixels (64..=4096).
    pub size: usize,
    pub seed: u64,
    pub out: PathBuf,
    /// Write `masks/` (boxes.csv is written either way).
    pub masks: bool,
    pub prevalence: Prevalence,
}

/// What a run did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Summary {
    pub written: usize,
    pub skipped: usize,
}

/// The image path of index `i`, relative to the output folder.
pub fn image_path(i: usize) -> String {
    format!("images/{i:05}.png")
}

/// The mask path of index `i` and `finding`, relative to the output folder.
pub fn mask_path(i: usize, finding: Finding) -> String {
    format!("masks/{i:05}_{}.png", finding.slug())
}

/// Checks the options (a clear error for each bad value).
pub fn validate(opts: &PhantomOptions) -> Result<()> {
    if opts.n == 0 {
        crate::bail!("the number of images must be at least 1 (got 0)");
    }
    if !(MIN_SIZE..=MAX_SIZE).contains(&opts.size) {
        crate::bail!(
            "the image size must be between {MIN_SIZE} and {MAX_SIZE} pixels (got {})",
            opts.size
        );
    }
    Ok(())
}

struct Rows {
    label: Vec<String>,
    boxes: Vec<Vec<String>>,
    written: bool,
}

/// Writes the data set described by `opts`, in parallel over images. An image whose PNG
/// already exists is not written again (nor are masks already there); it is still rendered
/// in memory for its boxes (a few ms), so a rerun gives byte-identical CSVs.
pub fn write_dataset(opts: &PhantomOptions, progress: &mut Progress) -> Result<Summary> {
    validate(opts)?;
    let out = &opts.out;
    for dir in ["images", "masks"] {
        if dir == "masks" && !opts.masks {
            continue;
        }
        let d = out.join(dir);
        std::fs::create_dir_all(&d)
            .map_err(|e| Error::file(&d, format!("cannot create the folder: {e}")))?;
    }
    let progress = Mutex::new(progress);
    let rows: Vec<Rows> = (0..opts.n)
        .into_par_iter()
        .map(|i| -> Result<Rows> {
            let case = sample_case(opts.seed, i as u64, &opts.prevalence);
            let report = write_report(&case.findings, case.report_seed);
            let rendered = render(&case, opts.size);
            let path = image_path(i);
            let exists = out.join(&path).is_file();
            // Masks go first, so an image on disk implies its masks are there; a mask missing
            // beside an existing image (an earlier --no-masks run) is added.
            if opts.masks {
                for m in &rendered.masks {
                    let mp = out.join(mask_path(i, m.finding));
                    if !mp.is_file() {
                        write_png_atomic(mp, &m.pixels, opts.size, opts.size, 1)?;
                    }
                }
            }
            if !exists {
                write_png_atomic(out.join(&path), &rendered.pixels, opts.size, opts.size, 1)?;
            }
            let mut label = vec![
                path.clone(),
                split_of(opts.seed, i as u64).to_string(),
                report.text(),
                report.findings.clone(),
                report.impression.clone(),
            ];
            for f in Finding::ALL {
                label.push(if case.findings.has(f) { "1" } else { "0" }.to_string());
            }
            let boxes = rendered
                .boxes
                .iter()
                .map(|b| {
                    vec![
                        path.clone(),
                        b.finding.label().to_string(),
                        b.side.map(|s| s.word()).unwrap_or("").to_string(),
                        b.x0.to_string(),
                        b.y0.to_string(),
                        b.x1.to_string(),
                        b.y1.to_string(),
                    ]
                })
                .collect();
            if let Ok(mut p) = progress.lock() {
                p.inc(1);
            }
            Ok(Rows {
                label,
                boxes,
                written: !exists,
            })
        })
        .collect::<Result<_>>()?;
    let mut headers: Vec<&str> = vec!["path", "split", "report", "findings", "impression"];
    headers.extend(LABEL_COLUMNS);
    let labels: Vec<&Vec<String>> = rows.iter().map(|r| &r.label).collect();
    write_csv_atomic(out.join("labels.csv"), &headers, &labels)?;
    let boxes: Vec<&Vec<String>> = rows.iter().flat_map(|r| &r.boxes).collect();
    write_csv_atomic(
        out.join("boxes.csv"),
        &["path", "finding", "side", "x0", "y0", "x1", "y1"],
        &boxes,
    )?;
    if let Ok(mut p) = progress.lock() {
        p.finish();
    }
    let written = rows.iter().filter(|r| r.written).count();
    Ok(Summary {
        written,
        skipped: opts.n - written,
    })
}
