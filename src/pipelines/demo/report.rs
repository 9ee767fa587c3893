//! What the demo reports: the paper-style table of linear-probe mean AUCs, the
//! judge's agreement (its AUC on synthetic vs real images of the same reports),
//! results.json, and a PNG grid of real images above the synthetic ones.

use super::run::{ARMS, FRACTIONS};
use super::sets::Row;
use crate::data::atomic::write_atomic;
use crate::data::csv::{write_csv_atomic, CsvTable};
use crate::error::{Error, Result};
use crate::eval::{roc_auc, ScoreTable};
use crate::imageio::resize::resize_bilinear;
use crate::imageio::{read_png, write_png_atomic};
use serde_json::{json, Map, Value};
use std::path::{Path, PathBuf};

/// Mean AUC per encoder and label fraction (None where no class had both outcomes).
pub struct ProbeTable {
    pub rows: Vec<(String, Vec<Option<f64>>)>,
}

impl ProbeTable {
    pub fn from_json(v: &Value) -> Result<ProbeTable> {
        let rows = ARMS
            .iter()
            .map(|arm| {
                let row = v
                    .get(*arm)
                    .ok_or_else(|| Error::msg(format!("probe results lack `{arm}`")))?;
                let aucs = FRACTIONS.iter().map(|(k, _)| row[*k].as_f64()).collect();
                Ok((arm.to_string(), aucs))
            })
            .collect::<Result<_>>()?;
        Ok(ProbeTable { rows })
    }

    /// The table as the paper prints it (rows: initialisation; columns: label share).
    pub fn render(&self, agreement: &Value) -> String {
        let mut s = String::from("Linear probe, mean AUC on the downstream test split\n");
        s.push_str(&format!(
            "{:<26}{:>8}{:>8}{:>8}\n",
            "image encoder", "1%", "10%", "100%"
        ));
        for (arm, aucs) in &self.rows {
            let name = match arm.as_str() {
                "random" => "random init",
                "real" => "ConVIRT, real pairs",
                _ => "ConVIRT, synthetic pairs",
            };
            s.push_str(&format!("{name:<26}"));
            for a in aucs {
                match a {
                    Some(v) => s.push_str(&format!("{v:>8.3}")),
                    None => s.push_str(&format!("{:>8}", "n/a")),
                }
            }
            s.push('\n');
        }
        let get = |k: &str| agreement[k]["mean_auc"].as_f64();
        if let (Some(syn), Some(real)) = (get("synthetic"), get("real")) {
            s.push_str(&format!(
                "\nDoes the generator follow its reports? A classifier trained on real phantoms\n\
                 finds the reported findings with mean AUC {syn:.3} in the synthetic images\n\
                 ({real:.3} in the real images of the same reports; chance 0.5).\n"
            ));
        }
        s
    }
}

/// The judge's mean and per-class AUC over its `synthetic/…` and `real/…` test rows.
pub fn judge_agreement(predictions: &Path, manifest: &CsvTable, labels: &[&str]) -> Result<Value> {
    let pred = ScoreTable::read_predictions(predictions)?;
    let id_col = manifest.column("id")?;
    let label_cols = labels
        .iter()
        .map(|l| manifest.column(l))
        .collect::<Result<Vec<_>>>()?;
    let truth: std::collections::HashMap<&str, usize> = (0..manifest.len())
        .map(|r| (manifest.get(r, id_col), r))
        .collect();
    let class_of = |name: &str| pred.classes.iter().position(|c| c == name);
    let mut out = Map::new();
    for subset in ["synthetic", "real"] {
        let mut per_class = Map::new();
        let mut defined = Vec::new();
        for (l, &col) in labels.iter().zip(&label_cols) {
            let Some(c) = class_of(l) else {
                return Err(Error::file(predictions, format!("no column `{l}`")));
            };
            let (mut scores, mut truths) = (Vec::new(), Vec::new());
            for (row, id) in pred.ids.iter().enumerate() {
                if !id.starts_with(&format!("{subset}/")) {
                    continue;
                }
                let (Some(&r), Some(s)) = (truth.get(id.as_str()), pred.get(row, c)) else {
                    return Err(Error::file(
                        predictions,
                        format!("id {id:?} has no label or score"),
                    ));
                };
                scores.push(s);
                truths.push(manifest.get(r, col).trim() == "1");
            }
            let auc = roc_auc(&scores, &truths);
            if let Some(a) = auc {
                defined.push(a);
            }
            per_class.insert(l.to_string(), json!(auc));
        }
        let mean =
            (!defined.is_empty()).then(|| defined.iter().sum::<f64>() / defined.len() as f64);
        out.insert(
            subset.to_string(),
            json!({"mean_auc": mean, "per_class": per_class}),
        );
    }
    out.insert("chance".into(), json!(0.5));
    Ok(Value::Object(out))
}

/// results.json and table.txt in `out`; the table is also printed.
pub fn write_results(out: &Path, results: &Value, table: &ProbeTable) -> Result<()> {
    let text = table.render(&results["agreement"]);
    println!("{text}");
    println!(
        "total {:.0} s; results in {}",
        results["seconds"].as_f64().unwrap_or(0.0),
        out.join("results.json").display()
    );
    write_atomic(out.join("table.txt"), text.as_bytes())?;
    let path = out.join("results.json");
    let json = serde_json::to_string_pretty(results).map_err(|e| Error::file(&path, e))?;
    write_atomic(&path, json.as_bytes())
}

/// `value` as a reader of its JSON text sees it (floats rounded through the text).
pub fn as_written(value: &Value) -> Value {
    serde_json::from_str(&value.to_string()).unwrap_or_else(|_| value.clone())
}

/// `grid.png`: up to `n` reports chosen to cover every finding (then normals), the
/// real image above the synthetic image of the same report, each 96 px; `grid.csv`
/// names the columns' report ids and impressions.
pub fn write_grid(
    path: &Path,
    real: &[Row],
    synthetic: impl Fn(&Row) -> PathBuf,
    n: usize,
) -> Result<()> {
    let picked = pick_reports(real, n);
    if picked.is_empty() {
        return Err(Error::file(path, "no reports to show"));
    }
    const CELL: usize = 96;
    const GAP: usize = 4;
    let (w, h) = (picked.len() * (CELL + GAP) - GAP, 2 * CELL + GAP);
    let mut canvas = vec![255u8; w * h];
    for (col, r) in picked.iter().enumerate() {
        for (row, file) in [r.image.clone(), synthetic(r)].iter().enumerate() {
            let cell = gray_cell(file, CELL)?;
            let (x0, y0) = (col * (CELL + GAP), row * (CELL + GAP));
            for y in 0..CELL {
                let dst = (y0 + y) * w + x0;
                canvas[dst..dst + CELL].copy_from_slice(&cell[y * CELL..(y + 1) * CELL]);
            }
        }
    }
    write_png_atomic(path, &canvas, w, h, 1)?;
    let rows: Vec<Vec<String>> = picked
        .iter()
        .enumerate()
        .map(|(i, r)| vec![i.to_string(), r.id.clone(), r.impression.clone()])
        .collect();
    write_csv_atomic(
        path.with_extension("csv"),
        &["column", "id", "impression"],
        &rows,
    )
}

/// One report per finding (the first positive for each label), then the first
/// reports with no finding, up to `n`.
fn pick_reports(rows: &[Row], n: usize) -> Vec<&Row> {
    let labels = rows.first().map_or(0, |r| r.labels.len());
    let mut picked: Vec<&Row> = Vec::new();
    for l in 0..labels {
        if let Some(r) = rows
            .iter()
            .find(|r| r.labels[l].trim() == "1" && !picked.iter().any(|p| p.id == r.id))
        {
            picked.push(r);
        }
    }
    for r in rows
        .iter()
        .filter(|r| r.labels.iter().all(|v| v.trim() != "1"))
    {
        if picked.len() >= n {
            break;
        }
        picked.push(r);
    }
    picked.truncate(n);
    picked
}

/// An image as `size`×`size` gray bytes (first channel, bilinear resize).
fn gray_cell(path: &Path, size: usize) -> Result<Vec<u8>> {
    let img = read_png(path)?;
    let gray: Vec<u8> = img.pixels.iter().step_by(img.channels).copied().collect();
    let resized = resize_bilinear(&gray, img.width, img.height, 1, size, size);
    Ok(resized
        .iter()
        .map(|v| v.round().clamp(0.0, 255.0) as u8)
        .collect())
}
