//! What every training job shows and keeps while it runs: a progress bar (hidden
//! with --quiet) and a JSONL metrics log in its output folder.

use crate::error::{Error, Result};
use crate::progress::Progress;
use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};

/// `<out>/metrics.jsonl`, one JSON object per line.
pub struct MetricsLog {
    path: PathBuf,
    file: std::fs::File,
}

impl MetricsLog {
    /// Opens the log for appending (a resumed run continues it).
    pub fn append(out: &Path) -> Result<MetricsLog> {
        let path = out.join("metrics.jsonl");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| Error::file(&path, e))?;
        Ok(MetricsLog { path, file })
    }

    /// Starts an empty log (a run that does not resume).
    pub fn create(out: &Path) -> Result<MetricsLog> {
        let path = out.join("metrics.jsonl");
        let file = std::fs::File::create(&path).map_err(|e| Error::file(&path, e))?;
        Ok(MetricsLog { path, file })
    }

    pub fn write(&mut self, record: &Value) -> Result<()> {
        writeln!(self.file, "{record}").map_err(|e| Error::file(&self.path, e))
    }
}

/// A progress bar over `total` `unit`s with `done` already finished, or none.
pub fn progress(quiet: bool, total: usize, unit: &str, done: usize) -> Progress {
    if quiet {
        Progress::hidden()
    } else {
        Progress::new(total, unit).with_done(done)
    }
}

/// Creates the output folder.
pub fn create_out(out: &Path) -> Result<()> {
    std::fs::create_dir_all(out).map_err(|e| Error::file(out, format!("cannot create: {e}")))
}
