//! The CSV files the demo's stages hand each other: the real reports as generation
//! prompts, the synthetic image–report pairs, and the judge's manifest (trained on
//! the downstream set, tested on synthetic and real images of the same reports).

use crate::data::csv::{write_csv_atomic, CsvTable};
use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

/// One row of a phantom `labels.csv`.
#[derive(Clone, Debug)]
pub struct Row {
    /// The image file name stem (`00042`), unique within a set.
    pub id: String,
    pub image: PathBuf,
    pub split: String,
    pub report: String,
    pub findings: String,
    pub impression: String,
    /// The label columns' values as written (`1`, `0`).
    pub labels: Vec<String>,
}

/// Reads a phantom `labels.csv` with `labels` (image paths made absolute).
pub fn read_rows(csv: &Path, labels: &[&str]) -> Result<Vec<Row>> {
    let table = CsvTable::read(csv)?;
    let col = |n: &str| table.column(n);
    let (path, split, report, findings, impression) = (
        col("path")?,
        col("split")?,
        col("report")?,
        col("findings")?,
        col("impression")?,
    );
    let label_cols = labels.iter().map(|l| col(l)).collect::<Result<Vec<_>>>()?;
    let base = csv.parent().unwrap_or(Path::new("."));
    table
        .rows()
        .map(|r| {
            let file = Path::new(r.get(path));
            let id = file
                .file_stem()
                .and_then(|s| s.to_str())
                .ok_or_else(|| Error::file(csv, format!("line {}: bad path", r.line())))?
                .to_string();
            Ok(Row {
                id,
                image: base.join(file),
                split: r.get(split).to_string(),
                report: r.get(report).to_string(),
                findings: r.get(findings).to_string(),
                impression: r.get(impression).to_string(),
                labels: label_cols.iter().map(|&c| r.get(c).to_string()).collect(),
            })
        })
        .collect()
}

/// `id,impression`: the prompts `generate` reads (`--id-column id --text-column impression`).
pub fn write_prompts(path: &Path, rows: &[Row]) -> Result<()> {
    let body: Vec<[&str; 2]> = rows
        .iter()
        .map(|r| [r.id.as_str(), r.impression.as_str()])
        .collect();
    write_csv_atomic(path, &["id", "impression"], &body)
}

fn pair_header(labels: &[&str]) -> Vec<String> {
    let mut h: Vec<String> = ["id", "path", "split", "report", "findings", "impression"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    h.extend(labels.iter().map(|s| s.to_string()));
    h
}

fn pair_fields(id: &str, image: &Path, split: &str, r: &Row) -> Vec<String> {
    let mut f = vec![
        id.to_string(),
        image.display().to_string(),
        split.to_string(),
        r.report.clone(),
        r.findings.clone(),
        r.impression.clone(),
    ];
    f.extend(r.labels.iter().cloned());
    f
}

/// The synthetic pairs: each real report beside the image generated from it.
pub fn write_synthetic_pairs(
    path: &Path,
    rows: &[Row],
    image_of: impl Fn(&Row) -> PathBuf,
    labels: &[&str],
) -> Result<()> {
    let mut body = Vec::with_capacity(rows.len());
    for r in rows {
        let image = image_of(r);
        if !image.is_file() {
            return Err(Error::file(
                &image,
                "missing: the synthetic image of this report was not generated",
            ));
        }
        body.push(pair_fields(&r.id, &image, &r.split, r));
    }
    write_csv_atomic(path, &pair_header(labels), &body)
}

/// The judge's manifest: the downstream set's train and valid rows, and as `test`
/// every real report twice — its synthetic image (id `synthetic/<id>`) and its real
/// image (id `real/<id>`), both with the report's labels.
pub fn write_judge_manifest(
    path: &Path,
    downstream: &[Row],
    real: &[Row],
    synthetic_image: impl Fn(&Row) -> PathBuf,
    labels: &[&str],
) -> Result<()> {
    let mut body = Vec::new();
    for r in downstream.iter().filter(|r| r.split != "test") {
        body.push(pair_fields(
            &format!("downstream/{}", r.id),
            &r.image,
            &r.split,
            r,
        ));
    }
    for r in real {
        body.push(pair_fields(
            &format!("synthetic/{}", r.id),
            &synthetic_image(r),
            "test",
            r,
        ));
        body.push(pair_fields(&format!("real/{}", r.id), &r.image, "test", r));
    }
    write_csv_atomic(path, &pair_header(labels), &body)
}
