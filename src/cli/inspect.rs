//! `medsyn inspect PATH [--json]`: tensors, parameter counts and sizes of weight files and model folders.

use crate::error::{Error, Result};
use crate::io::{find_pickled_weights, pickle_hint, TensorInfo, TensorSet};
use clap::Args;
use serde_json::{json, Value};
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Args, Debug)]
pub struct InspectArgs {
    /// A .safetensors file, a *.safetensors.index.json, or a model folder: either one
    /// holding model.safetensors (transformers) or one with component subfolders such as
    /// unet/, vae/, text_encoder/ (diffusers).
    pub path: PathBuf,
    /// Print the listing as JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// One set of weights: a subfolder of a model folder, or the file given.
pub struct Component {
    pub name: String,
    /// Weight files, relative to the inspected folder where possible.
    pub files: Vec<PathBuf>,
    /// Header entries, sorted by name.
    pub tensors: Vec<TensorInfo>,
}

impl Component {
    pub fn params(&self) -> u64 {
        self.tensors.iter().map(|t| t.numel() as u64).sum()
    }
    pub fn bytes(&self) -> u64 {
        self.tensors.iter().map(|t| t.byte_len as u64).sum()
    }
}

/// Everything `inspect` prints.
pub struct Report {
    pub path: PathBuf,
    pub components: Vec<Component>,
    /// Subfolders skipped because they hold only pickled weights.
    pub skipped: Vec<String>,
}

impl Report {
    pub fn params(&self) -> u64 {
        self.components.iter().map(Component::params).sum()
    }
    pub fn bytes(&self) -> u64 {
        self.components.iter().map(Component::bytes).sum()
    }
    pub fn tensor_count(&self) -> usize {
        self.components.iter().map(|c| c.tensors.len()).sum()
    }
}

pub fn run(args: &InspectArgs) -> Result<()> {
    let report = collect(&args.path)?;
    for name in &report.skipped {
        eprintln!(
            "note: skipped {name}/ (pickled weights only; convert to .safetensors to inspect it)"
        );
    }
    let text = if args.json {
        let mut s = serde_json::to_string_pretty(&to_json(&report))
            .map_err(|e| Error::msg(e.to_string()))?;
        s.push('\n');
        s
    } else {
        render_text(&report)
    };
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        // `medsyn inspect ... | head` closes the pipe early; that is not an error.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(Error::msg(format!("cannot write to stdout: {e}"))),
    }
}

/// Reads the headers of everything under `path` (no tensor data is touched).
pub fn collect(path: &Path) -> Result<Report> {
    if !path.exists() {
        return Err(Error::file(path, "no such file or folder"));
    }
    let mut report = Report {
        path: path.to_path_buf(),
        components: Vec::new(),
        skipped: Vec::new(),
    };
    if !path.is_dir() {
        let name = path.file_name().map_or_else(
            || path.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        report
            .components
            .push(component(name, &TensorSet::open(path)?, path.parent())?);
        return Ok(report);
    }
    if has_safetensors(path) {
        let name = path
            .canonicalize()
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()));
        report.components.push(component(
            name.unwrap_or_else(|| ".".into()),
            &TensorSet::open(path)?,
            Some(path),
        )?);
    }
    let mut subdirs: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(|e| Error::file(path, format!("cannot list folder: {e}")))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    subdirs.sort();
    let mut pickled = find_pickled_weights(path);
    for sub in &subdirs {
        let name = sub
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        if has_safetensors(sub) {
            report
                .components
                .push(component(name, &TensorSet::open(sub)?, Some(path))?);
        } else {
            let p = find_pickled_weights(sub);
            if !p.is_empty() {
                report.skipped.push(name);
                pickled.extend(p);
            }
        }
    }
    if report.components.is_empty() {
        if let Some(first) = pickled.first() {
            let list: Vec<String> = pickled
                .iter()
                .map(|p| rel(p, Some(path)).display().to_string())
                .collect();
            return Err(Error::file(
                path,
                format!(
                    "holds only pickled weights ({}), which are not supported. {}",
                    list.join(", "),
                    pickle_hint(first)
                ),
            ));
        }
        return Err(Error::file(
            path,
            "no .safetensors weights here or in its subfolders (expected a file, an index json, \
             or a model folder such as unet/, vae/, text_encoder/)",
        ));
    }
    Ok(report)
}

/// True when `dir` directly holds a `.safetensors` file or a safetensors index.
fn has_safetensors(dir: &Path) -> bool {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            e.path().is_file()
                && (name.ends_with(".safetensors") || name.ends_with(".safetensors.index.json"))
        })
}

fn rel(p: &Path, base: Option<&Path>) -> PathBuf {
    base.and_then(|b| p.strip_prefix(b).ok())
        .map_or_else(|| p.to_path_buf(), Path::to_path_buf)
}

fn component(name: String, set: &TensorSet, base: Option<&Path>) -> Result<Component> {
    let tensors = set
        .names()
        .iter()
        .map(|n| set.info(n).cloned())
        .collect::<Result<Vec<_>>>()?;
    let mut files: Vec<PathBuf> = set.files().into_iter().map(|f| rel(f, base)).collect();
    if set.is_sharded() {
        files.insert(0, rel(set.path(), base));
    }
    Ok(Component {
        name,
        files,
        tensors,
    })
}

/// Scales `n` into the largest unit (steps of 1000) whose value, rounded to
/// `decimals`, stays below 1000.
fn scaled(n: u64, units: &[&str], decimals: usize) -> (String, usize) {
    let mut x = n as f64;
    let mut unit = 0;
    let limit = 1000.0 - 0.5 * 10f64.powi(-(decimals as i32));
    while unit + 1 < units.len() && (unit == 0 && n >= 1000 || unit > 0 && x >= limit) {
        x /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        (format!("{n}"), 0)
    } else {
        (format!("{x:.decimals$}"), unit)
    }
}

/// "123 params", "12.3 K params", "859.5 M params", "1.2 B params".
pub fn human_params(n: u64) -> String {
    const UNITS: [&str; 5] = ["", " K", " M", " B", " T"];
    let (v, u) = scaled(n, &UNITS, 1);
    format!("{v}{} params", UNITS[u])
}

/// Decimal units: "512 B", "1.50 KB", "492.27 MB", "1.72 GB".
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KB", "MB", "GB", "TB", "PB"];
    let (v, u) = scaled(n, &UNITS, 2);
    format!("{v} {}", UNITS[u])
}

fn shape_str(shape: &[usize]) -> String {
    let dims: Vec<String> = shape.iter().map(usize::to_string).collect();
    format!("[{}]", dims.join(", "))
}

/// The text listing: each component's tensors, then a summary table.
pub fn render_text(report: &Report) -> String {
    let mut s = String::new();
    for c in &report.components {
        let files: Vec<String> = c.files.iter().map(|f| f.display().to_string()).collect();
        s += &format!("== {} ({})\n", c.name, files.join(", "));
        let w = c.tensors.iter().map(|t| t.name.len()).max().unwrap_or(0);
        for t in &c.tensors {
            s += &format!(
                "  {:<w$}  {:<7} {}\n",
                t.name,
                t.file_dtype_name(),
                shape_str(&t.shape)
            );
        }
        s.push('\n');
    }
    let mut rows: Vec<[String; 4]> = vec![[
        "component".into(),
        "tensors".into(),
        "params".into(),
        "size".into(),
    ]];
    for c in &report.components {
        rows.push([
            c.name.clone(),
            c.tensors.len().to_string(),
            human_params(c.params()),
            human_bytes(c.bytes()),
        ]);
    }
    rows.push([
        "total".into(),
        report.tensor_count().to_string(),
        human_params(report.params()),
        human_bytes(report.bytes()),
    ]);
    let mut widths = [0usize; 4];
    for r in &rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.len());
        }
    }
    for r in &rows {
        s += &format!(
            "{:<w0$}  {:>w1$}  {:>w2$}  {:>w3$}\n",
            r[0],
            r[1],
            r[2],
            r[3],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2],
            w3 = widths[3]
        );
    }
    s += &format!(
        "total: {} tensors, {}, {} ({} parameters, {} bytes)\n",
        report.tensor_count(),
        human_params(report.params()),
        human_bytes(report.bytes()),
        report.params(),
        report.bytes()
    );
    s
}

/// The JSON listing: the same content as the text one, with exact counts.
pub fn to_json(report: &Report) -> Value {
    let components: Vec<Value> = report
        .components
        .iter()
        .map(|c| {
            let tensors: Vec<Value> = c
                .tensors
                .iter()
                .map(|t| {
                    json!({
                        "name": t.name,
                        "dtype": t.file_dtype_name(),
                        "shape": t.shape,
                        "params": t.numel(),
                        "bytes": t.byte_len,
                    })
                })
                .collect();
            json!({
                "name": c.name,
                "files": c.files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>(),
                "tensor_count": c.tensors.len(),
                "params": c.params(),
                "bytes": c.bytes(),
                "params_human": human_params(c.params()),
                "bytes_human": human_bytes(c.bytes()),
                "tensors": tensors,
            })
        })
        .collect();
    json!({
        "path": report.path.display().to_string(),
        "components": components,
        "skipped_pickled": report.skipped,
        "total": {
            "tensor_count": report.tensor_count(),
            "params": report.params(),
            "bytes": report.bytes(),
            "params_human": human_params(report.params()),
            "bytes_human": human_bytes(report.bytes()),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_units() {
        assert_eq!(human_params(999), "999 params");
        assert_eq!(human_params(12_345), "12.3 K params");
        assert_eq!(human_params(859_520_964), "859.5 M params");
        assert_eq!(human_params(1_230_000_000), "1.2 B params");
        assert_eq!(human_params(999_960), "1.0 M params");
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1_500), "1.50 KB");
        assert_eq!(human_bytes(1_719_041_928), "1.72 GB");
        assert_eq!(human_bytes(999_999), "1.00 MB");
        assert_eq!(human_bytes(999_994), "999.99 KB");
    }
}
