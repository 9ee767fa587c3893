//! Prediction and label CSVs keyed by an `id` column (one column per class), their matching
//! by id and class name, per-class ROC AUC with a mean over defined classes, and the JSON
//! report; also the predictions writer the fine-tuning pipeline uses.

use super::auc::roc_auc;
use crate::data::{write_atomic, write_csv_atomic, CsvTable};
use crate::error::{Error, Result};
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The name of the id column in prediction and label files.
pub const ID_COLUMN: &str = "id";

/// A CSV of `id` + one column per class; cells are scores (predictions) or 1/0/empty
/// (labels, empty = not labelled).
#[derive(Clone, Debug)]
pub struct ScoreTable {
    pub path: PathBuf,
    pub classes: Vec<String>,
    pub ids: Vec<String>,
    /// 1-based CSV line of each row.
    pub lines: Vec<usize>,
    /// Row-major `[ids, classes]`; `None` = not labelled (labels only).
    pub values: Vec<Option<f64>>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Scores,
    Labels,
}

fn parse_cell(v: &str, kind: Kind) -> std::result::Result<Option<f64>, &'static str> {
    let v = v.trim();
    match kind {
        Kind::Labels => match v {
            "" => Ok(None),
            "1" | "1.0" => Ok(Some(1.0)),
            "0" | "0.0" => Ok(Some(0.0)),
            _ => Err("not a label: use 1, 0, or empty for not labelled"),
        },
        Kind::Scores => match v.parse::<f64>() {
            Ok(x) if x.is_finite() => Ok(Some(x)),
            Ok(_) => Err("not a finite number"),
            Err(_) if v.is_empty() => Err("an empty score (every id needs a score per class)"),
            Err(_) => Err("not a number"),
        },
    }
}

impl ScoreTable {
    fn read(path: &Path, kind: Kind) -> Result<ScoreTable> {
        let table = CsvTable::read(path)?;
        let id_col = table.column(ID_COLUMN)?;
        let class_cols: Vec<usize> = (0..table.headers().len())
            .filter(|&c| c != id_col)
            .collect();
        if class_cols.is_empty() {
            return Err(Error::file(path, "no class columns besides \"id\""));
        }
        let classes: Vec<String> = class_cols
            .iter()
            .map(|&c| table.headers()[c].clone())
            .collect();
        let mut seen: HashMap<&str, usize> = HashMap::new();
        let mut out = ScoreTable {
            path: path.to_path_buf(),
            classes,
            ids: Vec::with_capacity(table.len()),
            lines: Vec::with_capacity(table.len()),
            values: Vec::with_capacity(table.len() * class_cols.len()),
        };
        for row in table.rows() {
            let line = row.line();
            let id = row.get(id_col).trim();
            if id.is_empty() {
                return Err(Error::file(path, format!("line {line}: empty id")));
            }
            if let Some(first) = seen.insert(id, line) {
                return Err(Error::file(
                    path,
                    format!("line {line}: id {id:?} appears again (first on line {first})"),
                ));
            }
            for (&c, class) in class_cols.iter().zip(&out.classes) {
                let v = row.get(c);
                let x = parse_cell(v, kind).map_err(|why| {
                    Error::file(
                        path,
                        format!("line {line}: column {class:?}: {v:?} is {why}"),
                    )
                })?;
                out.values.push(x);
            }
            out.ids.push(id.to_string());
            out.lines.push(line);
        }
        if out.ids.is_empty() {
            return Err(Error::file(path, "no rows"));
        }
        Ok(out)
    }

    /// Reads a predictions CSV: every cell a finite number.
    pub fn read_predictions(path: impl AsRef<Path>) -> Result<ScoreTable> {
        ScoreTable::read(path.as_ref(), Kind::Scores)
    }

    /// Reads a labels CSV: cells 1, 0 (also 1.0, 0.0) or empty (not labelled).
    pub fn read_labels(path: impl AsRef<Path>) -> Result<ScoreTable> {
        ScoreTable::read(path.as_ref(), Kind::Labels)
    }

    pub fn get(&self, row: usize, class: usize) -> Option<f64> {
        self.values[row * self.classes.len() + class]
    }
}

/// One class's result.
#[derive(Clone, Debug, PartialEq)]
pub struct ClassAuc {
    pub name: String,
    /// `None` when the labelled rows hold only one label value (the AUC is undefined).
    pub auc: Option<f64>,
    pub positives: usize,
    pub negatives: usize,
}

/// Per-class AUCs and their mean over the classes where the AUC is defined.
#[derive(Clone, Debug, PartialEq)]
pub struct EvalReport {
    pub classes: Vec<ClassAuc>,
    pub mean_auc: Option<f64>,
    /// Prediction columns with no label column of the same name (not evaluated).
    pub unused_prediction_columns: Vec<String>,
}

/// Lists up to five items and how many more there are.
fn some_of(items: &[&str]) -> String {
    let shown: Vec<String> = items.iter().take(5).map(|s| format!("{s:?}")).collect();
    let more = items.len().saturating_sub(5);
    if more > 0 {
        format!("{} and {more} more", shown.join(", "))
    } else {
        shown.join(", ")
    }
}

/// Matches rows by id and classes by name, then computes each label class's AUC over its
/// labelled rows. Ids present in one file only, and label classes missing from the
/// predictions, are errors that list a few of them.
pub fn evaluate(predictions: &ScoreTable, labels: &ScoreTable) -> Result<EvalReport> {
    let pred_row: HashMap<&str, usize> = predictions
        .ids
        .iter()
        .enumerate()
        .map(|(i, id)| (id.as_str(), i))
        .collect();
    let label_ids: HashMap<&str, usize> = labels
        .ids
        .iter()
        .enumerate()
        .map(|(i, id)| (id.as_str(), i))
        .collect();
    let only_labels: Vec<&str> = labels
        .ids
        .iter()
        .map(String::as_str)
        .filter(|id| !pred_row.contains_key(id))
        .collect();
    let only_preds: Vec<&str> = predictions
        .ids
        .iter()
        .map(String::as_str)
        .filter(|id| !label_ids.contains_key(id))
        .collect();
    if !only_labels.is_empty() || !only_preds.is_empty() {
        let mut parts = Vec::new();
        if !only_labels.is_empty() {
            parts.push(format!(
                "{} id(s) of {} have no prediction in {}: {}",
                only_labels.len(),
                labels.path.display(),
                predictions.path.display(),
                some_of(&only_labels)
            ));
        }
        if !only_preds.is_empty() {
            parts.push(format!(
                "{} id(s) of {} have no labels in {}: {}",
                only_preds.len(),
                predictions.path.display(),
                labels.path.display(),
                some_of(&only_preds)
            ));
        }
        crate::bail!("the ids do not match: {}", parts.join("; "));
    }
    let missing: Vec<&str> = labels
        .classes
        .iter()
        .map(String::as_str)
        .filter(|c| !predictions.classes.iter().any(|p| p == c))
        .collect();
    if !missing.is_empty() {
        crate::bail!(
            "{}: no prediction column for label class(es) {}; the prediction columns are {:?}",
            predictions.path.display(),
            some_of(&missing),
            predictions.classes
        );
    }
    let mut classes = Vec::with_capacity(labels.classes.len());
    for (lc, name) in labels.classes.iter().enumerate() {
        let pc = predictions.classes.iter().position(|p| p == name).unwrap();
        let (mut scores, mut truth) = (Vec::new(), Vec::new());
        for (lr, id) in labels.ids.iter().enumerate() {
            if let Some(l) = labels.get(lr, lc) {
                let pr = pred_row[id.as_str()];
                scores.push(predictions.get(pr, pc).expect("predictions are complete"));
                truth.push(l == 1.0);
            }
        }
        let positives = truth.iter().filter(|&&t| t).count();
        classes.push(ClassAuc {
            name: name.clone(),
            auc: roc_auc(&scores, &truth),
            positives,
            negatives: truth.len() - positives,
        });
    }
    let defined: Vec<f64> = classes.iter().filter_map(|c| c.auc).collect();
    let mean_auc =
        (!defined.is_empty()).then(|| defined.iter().sum::<f64>() / defined.len() as f64);
    let unused_prediction_columns = predictions
        .classes
        .iter()
        .filter(|p| !labels.classes.contains(p))
        .cloned()
        .collect();
    Ok(EvalReport {
        classes,
        mean_auc,
        unused_prediction_columns,
    })
}

impl EvalReport {
    /// `{"auc": {class: value or null}, "mean_auc": value or null, "undefined": [classes],
    /// "counts": {class: {"positive": n, "negative": n}}}`.
    pub fn to_json(&self) -> Value {
        let mut auc = Map::new();
        let mut counts = Map::new();
        for c in &self.classes {
            auc.insert(c.name.clone(), json!(c.auc));
            counts.insert(
                c.name.clone(),
                json!({"positive": c.positives, "negative": c.negatives}),
            );
        }
        let undefined: Vec<&str> = self
            .classes
            .iter()
            .filter(|c| c.auc.is_none())
            .map(|c| c.name.as_str())
            .collect();
        json!({
            "auc": auc,
            "mean_auc": self.mean_auc,
            "undefined": undefined,
            "counts": counts,
        })
    }

    /// Writes [`to_json`](Self::to_json) to `path` atomically.
    pub fn write_json(&self, path: impl AsRef<Path>) -> Result<()> {
        let mut text = serde_json::to_string_pretty(&self.to_json())
            .map_err(|e| Error::msg(format!("cannot serialise the AUC report: {e}")))?;
        text.push('\n');
        write_atomic(path, text.as_bytes())
    }

    /// A human-readable table: one line per class, then the mean and what it left out.
    pub fn table(&self) -> String {
        let w = self
            .classes
            .iter()
            .map(|c| c.name.len())
            .max()
            .unwrap_or(5)
            .max(5);
        let mut s = format!(
            "{:<w$}  {:>9}  {:>9}  {:>9}\n",
            "class", "AUC", "positive", "negative"
        );
        for c in &self.classes {
            let auc = match c.auc {
                Some(a) => format!("{a:.4}"),
                None => "undefined".to_string(),
            };
            s += &format!(
                "{:<w$}  {auc:>9}  {:>9}  {:>9}\n",
                c.name, c.positives, c.negatives
            );
        }
        let undefined: Vec<&str> = self
            .classes
            .iter()
            .filter(|c| c.auc.is_none())
            .map(|c| c.name.as_str())
            .collect();
        match self.mean_auc {
            Some(m) => s += &format!("{:<w$}  {m:>9.4}\n", "mean"),
            None => s += &format!("{:<w$}  {:>9}\n", "mean", "undefined"),
        }
        if !undefined.is_empty() {
            s += &format!(
                "AUC undefined (only one label value among the labelled rows), left out of the mean: {}\n",
                undefined.join(", ")
            );
        }
        if !self.unused_prediction_columns.is_empty() {
            s += &format!(
                "prediction columns without labels (not evaluated): {}\n",
                self.unused_prediction_columns.join(", ")
            );
        }
        s
    }
}

/// Writes a predictions CSV (`id` + one column per class) atomically; `scores` is row-major
/// `[ids.len(), classes.len()]`. Scores are written in Rust's shortest round-trip form.
pub fn write_predictions_csv<C: AsRef<str>, I: AsRef<str>>(
    path: impl AsRef<Path>,
    classes: &[C],
    ids: &[I],
    scores: &[f64],
) -> Result<()> {
    let path = path.as_ref();
    crate::ensure!(
        scores.len() == ids.len() * classes.len(),
        "{}: {} scores for {} ids x {} classes",
        path.display(),
        scores.len(),
        ids.len(),
        classes.len()
    );
    crate::ensure!(
        !classes.is_empty(),
        "{}: no classes to write",
        path.display()
    );
    crate::ensure!(
        classes.iter().all(|c| c.as_ref() != ID_COLUMN),
        "{}: a class may not be called {ID_COLUMN:?}",
        path.display()
    );
    if let Some(bad) = scores.iter().position(|s| !s.is_finite()) {
        crate::bail!(
            "{}: the score of id {:?}, class {:?} is {}",
            path.display(),
            ids[bad / classes.len()].as_ref(),
            classes[bad % classes.len()].as_ref(),
            scores[bad]
        );
    }
    let mut headers = vec![ID_COLUMN.to_string()];
    headers.extend(classes.iter().map(|c| c.as_ref().to_string()));
    let rows: Vec<Vec<String>> = ids
        .iter()
        .zip(scores.chunks(classes.len()))
        .map(|(id, s)| {
            let mut r = vec![id.as_ref().to_string()];
            r.extend(s.iter().map(|x| format!("{x}")));
            r
        })
        .collect();
    write_csv_atomic(path, &headers, &rows)
}
