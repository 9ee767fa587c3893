//! Image–report manifests: a CSV with an image path column, report text (one column, or
//! impression + findings columns), an optional train/valid/test split and optional labels.

use super::csv::CsvTable;
use super::reports::{select_text, Section};
use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

/// Where a sample's text comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TextSource {
    /// No text (classification manifests): every sample's text is empty.
    None,
    /// One column holding a report; `section` picks part of it (see [`select_text`]).
    Column { name: String, section: Section },
    /// Separate impression and findings columns (MIMIC-CXR sectioned CSVs), joined as
    /// MGCA does: impression, a space, findings (either may be empty).
    ImpressionFindings {
        impression: String,
        findings: String,
    },
}

/// A dataset split.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Split {
    Train,
    Valid,
    Test,
}

impl Split {
    /// Parses `train`, `valid` (also `val`, `validate`, `validation`) or `test`, any case.
    pub fn parse(s: &str) -> Option<Split> {
        match s.trim().to_ascii_lowercase().as_str() {
            "train" => Some(Split::Train),
            "valid" | "val" | "validate" | "validation" => Some(Split::Valid),
            "test" => Some(Split::Test),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Valid => "valid",
            Split::Test => "test",
        }
    }
}

/// How to read a manifest.
#[derive(Clone, Debug)]
pub struct ManifestOptions {
    /// Column with image paths, relative to the CSV's folder unless absolute.
    pub image_column: String,
    /// Column with a sample id; when `None` the image path as written is the id.
    pub id_column: Option<String>,
    pub text: TextSource,
    /// Column with train/valid/test; used when the file has it.
    pub split_column: String,
    /// Keep only the rows of this split (an error if the file has no split column).
    pub split: Option<Split>,
    /// Label columns: numbers, or empty for "not labelled".
    pub label_columns: Vec<String>,
    /// Drop rows whose text is empty (counted in [`Manifest::skipped_empty_text`]) instead of
    /// failing on them. Ignored with [`TextSource::None`].
    pub skip_empty_text: bool,
}

impl Default for ManifestOptions {
    fn default() -> Self {
        ManifestOptions {
            image_column: "path".into(),
            id_column: None,
            text: TextSource::Column {
                name: "report".into(),
                section: Section::Full,
            },
            split_column: "split".into(),
            split: None,
            label_columns: Vec::new(),
            skip_empty_text: true,
        }
    }
}

/// One manifest row.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// The image file (joined with the CSV's folder when relative).
    pub image: PathBuf,
    pub id: String,
    pub text: String,
    pub split: Option<Split>,
    /// One entry per label column; `None` where the cell is empty.
    pub labels: Vec<Option<f32>>,
    /// 1-based line of the CSV the row starts on.
    pub line: usize,
}

/// The rows of a manifest CSV, in file order.
#[derive(Clone, Debug)]
pub struct Manifest {
    pub path: PathBuf,
    pub samples: Vec<Sample>,
    pub label_names: Vec<String>,
    /// Rows dropped because their text was empty.
    pub skipped_empty_text: usize,
}

fn field_err(path: &Path, line: usize, msg: impl std::fmt::Display) -> Error {
    Error::file(path, format!("line {line}: {msg}"))
}

impl Manifest {
    /// Reads the manifest at `path`. Missing columns, empty image paths, unknown split
    /// names, non-numeric labels and malformed rows are errors naming the file (and line).
    pub fn read(path: impl AsRef<Path>, opts: &ManifestOptions) -> Result<Manifest> {
        let path = path.as_ref();
        let table = CsvTable::read(path)?;
        Manifest::from_table(&table, opts)
    }

    /// Builds a manifest from an already-parsed table; relative paths are taken relative
    /// to the folder of `table.path()`.
    pub fn from_table(table: &CsvTable, opts: &ManifestOptions) -> Result<Manifest> {
        let path = table.path();
        let base = path.parent().unwrap_or(Path::new(""));
        let img_col = table.column(&opts.image_column)?;
        let id_col = opts
            .id_column
            .as_deref()
            .map(|c| table.column(c))
            .transpose()?;
        enum Text {
            None,
            One(usize, Section),
            Two(usize, usize),
        }
        let text = match &opts.text {
            TextSource::None => Text::None,
            TextSource::Column { name, section } => Text::One(table.column(name)?, *section),
            TextSource::ImpressionFindings {
                impression,
                findings,
            } => Text::Two(table.column(impression)?, table.column(findings)?),
        };
        let split_col = table.headers().iter().position(|h| *h == opts.split_column);
        if let (Some(want), None) = (opts.split, split_col) {
            return Err(Error::file(
                path,
                format!(
                    "a {} split was asked for but there is no {:?} column; the columns are {:?}",
                    want.name(),
                    opts.split_column,
                    table.headers()
                ),
            ));
        }
        let label_cols = opts
            .label_columns
            .iter()
            .map(|c| table.column(c))
            .collect::<Result<Vec<_>>>()?;
        let mut samples = Vec::with_capacity(table.len());
        let mut skipped = 0;
        for row in table.rows() {
            let line = row.line();
            let split = match split_col {
                Some(c) => {
                    let v = row.get(c);
                    Some(Split::parse(v).ok_or_else(|| {
                        field_err(
                            path,
                            line,
                            format!("split {v:?} is not train, valid (val, validate) or test"),
                        )
                    })?)
                }
                None => None,
            };
            if opts.split.is_some() && split != opts.split {
                continue;
            }
            let raw = row.get(img_col).trim();
            if raw.is_empty() {
                return Err(field_err(
                    path,
                    line,
                    format!("empty image path in column {:?}", opts.image_column),
                ));
            }
            let rel = Path::new(raw);
            let image = if rel.is_absolute() {
                rel.to_path_buf()
            } else {
                base.join(rel)
            };
            let text = match text {
                Text::None => String::new(),
                Text::One(c, section) => select_text(row.get(c), section).unwrap_or_default(),
                Text::Two(i, f) => {
                    let joined = format!("{} {}", row.get(i), row.get(f));
                    joined.split_whitespace().collect::<Vec<_>>().join(" ")
                }
            };
            if text.is_empty() && !matches!(opts.text, TextSource::None) {
                if opts.skip_empty_text {
                    skipped += 1;
                    continue;
                }
                return Err(field_err(path, line, "the report text is empty"));
            }
            let mut labels = Vec::with_capacity(label_cols.len());
            for (&c, name) in label_cols.iter().zip(&opts.label_columns) {
                let v = row.get(c).trim();
                labels.push(if v.is_empty() {
                    None
                } else {
                    match v.parse::<f32>() {
                        Ok(x) if x.is_finite() => Some(x),
                        _ => {
                            return Err(field_err(
                                path,
                                line,
                                format!("label {name:?} is {v:?}, not a number or empty"),
                            ))
                        }
                    }
                });
            }
            let id = match id_col {
                Some(c) => row.get(c).to_string(),
                None => raw.to_string(),
            };
            samples.push(Sample {
                image,
                id,
                text,
                split,
                labels,
                line,
            });
        }
        Ok(Manifest {
            path: path.to_path_buf(),
            samples,
            label_names: opts.label_columns.clone(),
            skipped_empty_text: skipped,
        })
    }

    pub fn len(&self) -> usize {
        self.samples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// The rows of one split (rows without a split are dropped).
    pub fn split(&self, split: Split) -> Manifest {
        Manifest {
            samples: self
                .samples
                .iter()
                .filter(|s| s.split == Some(split))
                .cloned()
                .collect(),
            path: self.path.clone(),
            label_names: self.label_names.clone(),
            skipped_empty_text: self.skipped_empty_text,
        }
    }
}
