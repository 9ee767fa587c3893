//! Resumable stages: each finished stage leaves `stages/<name>.json` (its result and
//! time) in the demo's folder, so a rerun skips it; an unfinished one reruns and
//! resumes from whatever its own job saved (checkpoints, images already written).

use crate::data::atomic::write_atomic;
use crate::error::{Error, Result};
use serde_json::{json, Map, Value};
use std::path::PathBuf;
use std::time::Instant;

pub struct Stages {
    dir: PathBuf,
    total: usize,
    done: usize,
    quiet: bool,
    /// Seconds per stage (a skipped stage counts the time it took when it ran).
    pub seconds: Map<String, Value>,
}

impl Stages {
    pub fn new(out: &std::path::Path, total: usize, quiet: bool) -> Result<Stages> {
        let dir = out.join("stages");
        std::fs::create_dir_all(&dir).map_err(|e| Error::file(&dir, e))?;
        Ok(Stages {
            dir,
            total,
            done: 0,
            quiet,
            seconds: Map::new(),
        })
    }

    /// Runs `f` unless `name` finished before; returns its result either way.
    pub fn run(
        &mut self,
        name: &str,
        title: &str,
        f: impl FnOnce() -> Result<Value>,
    ) -> Result<Value> {
        self.done += 1;
        let marker = self.dir.join(format!("{name}.json"));
        if marker.is_file() {
            let text = std::fs::read_to_string(&marker).map_err(|e| Error::file(&marker, e))?;
            let saved: Value = serde_json::from_str(&text)
                .map_err(|e| Error::file(&marker, format!("{e} (delete it to rerun the stage)")))?;
            let secs = saved["seconds"].as_f64().unwrap_or(0.0);
            self.seconds.insert(name.to_string(), json!(secs));
            self.say(&format!("{title}: done before ({secs:.0} s), skipped"));
            return Ok(saved["result"].clone());
        }
        self.say(&format!("{title} ..."));
        let started = Instant::now();
        let result = f().map_err(|e| e.context(format!("demo stage `{name}`")))?;
        let secs = started.elapsed().as_secs_f64();
        let saved = json!({"seconds": secs, "result": result});
        let text = serde_json::to_string_pretty(&saved).map_err(|e| Error::file(&marker, e))?;
        write_atomic(&marker, text.as_bytes())?;
        // What a resumed run will read back (floats as parsed from the text), so a
        // first run and a resumed one report the same numbers to the last digit.
        let saved: Value = serde_json::from_str(&text).map_err(|e| Error::file(&marker, e))?;
        self.seconds
            .insert(name.to_string(), saved["seconds"].clone());
        self.say(&format!("{title}: {secs:.1} s"));
        Ok(saved["result"].clone())
    }

    /// The sum of every stage's time.
    pub fn total_seconds(&self) -> f64 {
        self.seconds.values().filter_map(Value::as_f64).sum()
    }

    fn say(&self, what: &str) {
        if !self.quiet {
            eprintln!("[{}/{}] {what}", self.done, self.total);
        }
    }
}
