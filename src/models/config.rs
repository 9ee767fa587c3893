//! Reading model configs (`config.json`, `model_index.json`, scheduler configs):
//! typed getters whose errors name the file and the key.

use crate::error::{Error, Result};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// A parsed JSON object plus the file it came from (for error messages).
#[derive(Clone, Debug)]
pub struct Config {
    path: PathBuf,
    value: Value,
}

impl Config {
    /// Reads and parses `path`; a missing file or invalid JSON is an error naming it.
    pub fn load(path: impl AsRef<Path>) -> Result<Config> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::file(path, format!("cannot read config: {e}")))?;
        let value: Value = serde_json::from_str(&python_json_constants(&text))
            .map_err(|e| Error::file(path, format!("invalid JSON: {e}")))?;
        Config::from_value(path, value)
    }

    /// Wraps an already parsed object (`path` is only used in messages).
    pub fn from_value(path: impl AsRef<Path>, value: Value) -> Result<Config> {
        let path = path.as_ref().to_path_buf();
        if !value.is_object() {
            return Err(Error::file(&path, "a config must be a JSON object"));
        }
        Ok(Config { path, value })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn value(&self) -> &Value {
        &self.value
    }

    /// The raw value of `key`; `None` when absent or null.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.value.get(key).filter(|v| !v.is_null())
    }

    pub fn has(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    fn err(&self, key: &str, what: impl std::fmt::Display) -> Error {
        Error::file(&self.path, format!("key `{key}`: {what}"))
    }

    fn required(&self, key: &str) -> Result<&Value> {
        self.get(key)
            .ok_or_else(|| self.err(key, "missing (required by this model)"))
    }

    fn as_usize(&self, key: &str, v: &Value) -> Result<usize> {
        v.as_u64()
            .map(|x| x as usize)
            .ok_or_else(|| self.err(key, format!("expected a non-negative integer, got {v}")))
    }

    fn as_f64(&self, key: &str, v: &Value) -> Result<f64> {
        v.as_f64()
            .ok_or_else(|| self.err(key, format!("expected a number, got {v}")))
    }

    pub fn usize(&self, key: &str) -> Result<usize> {
        self.as_usize(key, self.required(key)?)
    }

    pub fn usize_or(&self, key: &str, default: usize) -> Result<usize> {
        self.get(key).map_or(Ok(default), |v| self.as_usize(key, v))
    }

    pub fn opt_usize(&self, key: &str) -> Result<Option<usize>> {
        self.get(key).map(|v| self.as_usize(key, v)).transpose()
    }

    pub fn f64(&self, key: &str) -> Result<f64> {
        self.as_f64(key, self.required(key)?)
    }

    pub fn f64_or(&self, key: &str, default: f64) -> Result<f64> {
        self.get(key).map_or(Ok(default), |v| self.as_f64(key, v))
    }

    pub fn opt_f64(&self, key: &str) -> Result<Option<f64>> {
        self.get(key).map(|v| self.as_f64(key, v)).transpose()
    }

    pub fn bool_or(&self, key: &str, default: bool) -> Result<bool> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v
                .as_bool()
                .ok_or_else(|| self.err(key, format!("expected true/false, got {v}"))),
        }
    }

    pub fn str(&self, key: &str) -> Result<String> {
        let v = self.required(key)?;
        v.as_str()
            .map(str::to_string)
            .ok_or_else(|| self.err(key, format!("expected a string, got {v}")))
    }

    pub fn str_or(&self, key: &str, default: &str) -> Result<String> {
        match self.get(key) {
            None => Ok(default.to_string()),
            Some(_) => self.str(key),
        }
    }

    pub fn opt_str(&self, key: &str) -> Result<Option<String>> {
        self.get(key).map(|_| self.str(key)).transpose()
    }

    /// A list of strings (e.g. `down_block_types`).
    pub fn str_list(&self, key: &str) -> Result<Vec<String>> {
        let v = self.required(key)?;
        let arr = v
            .as_array()
            .ok_or_else(|| self.err(key, format!("expected a list of strings, got {v}")))?;
        arr.iter()
            .map(|x| {
                x.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| self.err(key, format!("expected strings, found {x}")))
            })
            .collect()
    }

    /// A list of integers (e.g. `block_out_channels`).
    pub fn usize_list(&self, key: &str) -> Result<Vec<usize>> {
        let v = self.required(key)?;
        let arr = v
            .as_array()
            .ok_or_else(|| self.err(key, format!("expected a list of integers, got {v}")))?;
        arr.iter().map(|x| self.as_usize(key, x)).collect()
    }

    /// A list of floats (e.g. `trained_betas`).
    pub fn f64_list(&self, key: &str) -> Result<Vec<f64>> {
        let v = self.required(key)?;
        let arr = v
            .as_array()
            .ok_or_else(|| self.err(key, format!("expected a list of numbers, got {v}")))?;
        arr.iter().map(|x| self.as_f64(key, x)).collect()
    }

    /// An integer or a list of `n` integers (diffusers' per-block settings such as
    /// `attention_head_dim` or `transformer_layers_per_block`): always `n` values.
    pub fn usize_per_block(&self, key: &str, n: usize) -> Result<Vec<usize>> {
        let v = self.required(key)?;
        let list = if v.is_array() {
            self.usize_list(key)?
        } else {
            vec![self.as_usize(key, v)?; n]
        };
        if list.len() != n {
            return Err(self.err(
                key,
                format!("has {} entries, expected one per block ({n})", list.len()),
            ));
        }
        Ok(list)
    }

    /// A string that must be one of `allowed`; the error lists them.
    pub fn choice(&self, key: &str, default: &str, allowed: &[&str]) -> Result<String> {
        let s = self.str_or(key, default)?;
        if allowed.contains(&s.as_str()) {
            Ok(s)
        } else {
            Err(self.err(
                key,
                format!("`{s}` is not supported (supported: {})", allowed.join(", ")),
            ))
        }
    }

    /// Fails when `key` is set to something other than null/false/its default
    /// (`what` says why medsyn does not support it).
    pub fn reject(&self, key: &str, what: &str) -> Result<()> {
        match self.get(key) {
            None | Some(Value::Bool(false)) => Ok(()),
            Some(v) => Err(self.err(key, format!("{v} is not supported: {what}"))),
        }
    }
}

/// Python's `json` writes `Infinity`, `-Infinity` and `NaN` (diffusers saves e.g.
/// `"lambda_min_clipped": -Infinity`), which strict JSON lacks: outside strings they
/// become ±1e308 and null.
fn python_json_constants(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let (mut in_string, mut escaped) = (false, false);
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
            rest = &rest[c.len_utf8()..];
            continue;
        }
        let replaced = [
            ("-Infinity", "-1e308"),
            ("Infinity", "1e308"),
            ("NaN", "null"),
        ]
        .into_iter()
        .find(|(from, _)| rest.starts_with(from));
        if let Some((from, to)) = replaced {
            out.push_str(to);
            rest = &rest[from.len()..];
            continue;
        }
        in_string = c == '"';
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cfg(v: Value) -> Config {
        Config::from_value("unet/config.json", v).unwrap()
    }

    #[test]
    fn typed_getters_and_errors_name_file_and_key() {
        let c = cfg(json!({"a": 3, "b": [1, 2], "s": "x", "f": 0.5, "n": null, "t": true}));
        assert_eq!(c.usize("a").unwrap(), 3);
        assert_eq!(c.usize_or("n", 7).unwrap(), 7);
        assert_eq!(c.usize_per_block("a", 3).unwrap(), vec![3, 3, 3]);
        assert_eq!(c.usize_per_block("b", 2).unwrap(), vec![1, 2]);
        assert!(c.bool_or("t", false).unwrap());
        assert_eq!(c.f64("f").unwrap(), 0.5);
        let e = c.usize("missing").unwrap_err().to_string();
        assert!(
            e.contains("unet/config.json") && e.contains("`missing`"),
            "{e}"
        );
        let e = c.usize("s").unwrap_err().to_string();
        assert!(e.contains("integer"), "{e}");
        let e = c.usize_per_block("b", 3).unwrap_err().to_string();
        assert!(e.contains("one per block"), "{e}");
        let e = c.choice("s", "y", &["y", "z"]).unwrap_err().to_string();
        assert!(
            e.contains("`x` is not supported") && e.contains("y, z"),
            "{e}"
        );
        assert!(c.reject("n", "").is_ok());
        assert!(c.reject("a", "why").is_err());
    }

    #[test]
    fn python_infinity_and_nan_are_read() {
        let t = r#"{"lambda_min_clipped": -Infinity, "b": Infinity, "c": NaN, "s": "NaN -Infinity \" x"}"#;
        let v: Value = serde_json::from_str(&python_json_constants(t)).unwrap();
        let c = cfg(v);
        assert_eq!(c.f64("lambda_min_clipped").unwrap(), -1e308);
        assert_eq!(c.f64("b").unwrap(), 1e308);
        assert!(!c.has("c"));
        assert_eq!(c.str("s").unwrap(), "NaN -Infinity \" x");
    }

    #[test]
    fn load_reports_missing_and_invalid_files() {
        let e = Config::load("/nonexistent/config.json")
            .unwrap_err()
            .to_string();
        assert!(e.contains("/nonexistent/config.json"), "{e}");
        let dir = std::env::temp_dir().join(format!("medsyn-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("bad.json");
        std::fs::write(&p, "{not json").unwrap();
        let e = Config::load(&p).unwrap_err().to_string();
        assert!(e.contains("invalid JSON") && e.contains("bad.json"), "{e}");
        std::fs::remove_dir_all(&dir).ok();
    }
}
