//! Generation work: the deterministic list of images to make (one per prompt and index), each
//! image's seed and file name, shards of the list, resuming, and the manifest of written files.
//!
//! Typical use: `let all = work_list(&prompts, n, run_seed)?;` (checks file names) →
//! `shard.select(all)` → `pending(.., out_dir, n)` → generate, write each PNG
//! (`item.file_name(n)`), then `manifest.append(&batch)`.

use crate::data::csv::{append_rows, write_csv_atomic, CsvTable};
use crate::error::{Error, Result};
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};

/// One prompt to generate images for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Prompt {
    pub id: String,
    pub prompt: String,
    /// Negative prompt ("" for none).
    pub negative: String,
}

/// One image to generate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkItem {
    pub id: String,
    pub prompt: String,
    pub negative: String,
    /// Image index within its prompt (0-based).
    pub index: usize,
    /// The image's own seed, [`image_seed`]`(run_seed, id, index)`.
    pub seed: u64,
}

impl WorkItem {
    /// The PNG's file name in the output folder: [`image_file_name`]`(id, index, n)`.
    pub fn file_name(&self, images_per_prompt: usize) -> String {
        image_file_name(&self.id, self.index, images_per_prompt)
    }
}

/// SplitMix64's output function (Steele, Lea & Flood 2014): a bijective 64-bit mixer.
pub fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// 64-bit FNV-1a of `bytes` (offset basis 0xcbf29ce484222325, prime 0x100000001b3).
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The seed of image `index` of prompt `id` in a run seeded with `run_seed`:
///
/// `splitmix64(splitmix64(splitmix64(run_seed) ^ fnv1a64(id as UTF-8)) ^ index)`
///
/// It depends only on these three values, not on the order or number of prompts, shards or
/// batches, so an image can be regenerated alone. This formula is part of the output
/// format and must never change (tests pin known values).
pub fn image_seed(run_seed: u64, id: &str, index: usize) -> u64 {
    splitmix64(splitmix64(splitmix64(run_seed) ^ fnv1a64(id.as_bytes())) ^ index as u64)
}

/// Longest file-name stem kept as is; longer ids are cut and given a hash suffix, staying
/// well under the usual 255-byte limit.
const MAX_STEM: usize = 200;

/// The PNG file name for image `index` of prompt `id`: the id with every character outside
/// `[A-Za-z0-9._-]` replaced by `_` (an empty id becomes `_`), then `_{index}` when there
/// are several images per prompt, then `.png`. Stems over 200 bytes are cut to 183 and
/// end in `-` and the 16 hex digits of the id's FNV-1a hash.
pub fn image_file_name(id: &str, index: usize, images_per_prompt: usize) -> String {
    let mut stem: String = id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if stem.is_empty() {
        stem.push('_');
    }
    if stem.len() > MAX_STEM {
        stem.truncate(MAX_STEM - 17);
        stem.push_str(&format!("-{:016x}", fnv1a64(id.as_bytes())));
    }
    if images_per_prompt > 1 {
        format!("{stem}_{index}.png")
    } else {
        format!("{stem}.png")
    }
}

/// The file names of `items` (in order), checking that no two items share one: an error
/// names both ids (or the repeated id). Names are compared exactly; on case-insensitive
/// file systems ids differing only in case would still collide.
pub fn file_names(items: &[WorkItem], images_per_prompt: usize) -> Result<Vec<String>> {
    let names: Vec<String> = items
        .iter()
        .map(|i| i.file_name(images_per_prompt))
        .collect();
    let mut seen: HashMap<&str, &WorkItem> = HashMap::with_capacity(items.len());
    for (item, file) in items.iter().zip(&names) {
        if let Some(prev) = seen.insert(file, item) {
            if prev.id == item.id {
                crate::bail!(
                    "prompt id {:?} appears more than once (image {} twice); ids must be unique",
                    item.id,
                    item.index
                );
            }
            crate::bail!(
                "prompt ids {:?} and {:?} both map to the file name {:?}; make the ids differ in [A-Za-z0-9._-]",
                prev.id,
                item.id,
                file
            );
        }
    }
    Ok(names)
}

/// The full, deterministic work list: for each prompt in order, images `0..images_per_prompt`,
/// with their seeds and file names; an error when two items would share a file.
pub fn work_list(
    prompts: &[Prompt],
    images_per_prompt: usize,
    run_seed: u64,
) -> Result<Vec<WorkItem>> {
    if images_per_prompt == 0 {
        crate::bail!("images per prompt must be at least 1");
    }
    let mut items = Vec::with_capacity(prompts.len() * images_per_prompt);
    for p in prompts {
        for index in 0..images_per_prompt {
            items.push(WorkItem {
                id: p.id.clone(),
                prompt: p.prompt.clone(),
                negative: p.negative.clone(),
                index,
                seed: image_seed(run_seed, &p.id, index),
            });
        }
    }
    file_names(&items, images_per_prompt)?;
    Ok(items)
}

/// Shard `index` of `count` (`index < count`): the items at positions `k` of the full work
/// list with `k % count == index`. Shards of one list are disjoint and together cover it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    index: usize,
    count: usize,
}

impl Default for Shard {
    fn default() -> Self {
        Shard::all()
    }
}

impl Shard {
    /// The whole list (shard 0/1).
    pub fn all() -> Shard {
        Shard { index: 0, count: 1 }
    }

    /// Shard `index` of `count`; an error unless `index < count`.
    pub fn new(index: usize, count: usize) -> Result<Shard> {
        if index >= count {
            crate::bail!("invalid shard {index}/{count}: expected I/N with 0 <= I < N (0-based)");
        }
        Ok(Shard { index, count })
    }

    /// This shard's number, `0..count`.
    pub fn index(&self) -> usize {
        self.index
    }

    /// The number of shards.
    pub fn count(&self) -> usize {
        self.count
    }

    /// Parses `I/N` with `0 <= I < N`.
    pub fn parse(text: &str) -> Result<Shard> {
        let bad = || {
            Error::msg(format!(
                "invalid shard {text:?}: expected I/N with 0 <= I < N (0-based), e.g. 0/4"
            ))
        };
        let (i, n) = text.trim().split_once('/').ok_or_else(bad)?;
        let index: usize = i.trim().parse().map_err(|_| bad())?;
        let count: usize = n.trim().parse().map_err(|_| bad())?;
        Shard::new(index, count).map_err(|_| bad())
    }

    /// Whether the item at `position` of the full work list belongs to this shard.
    pub fn contains(&self, position: usize) -> bool {
        position % self.count == self.index
    }

    /// This shard's items of the full work list `items`, in order.
    pub fn select<T>(&self, items: Vec<T>) -> Vec<T> {
        items
            .into_iter()
            .enumerate()
            .filter(|(k, _)| self.contains(*k))
            .map(|(_, t)| t)
            .collect()
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// The items whose PNG does not exist yet in `out_dir` (resuming an interrupted run).
/// PNGs are written atomically, so an existing file is a complete image.
pub fn pending(items: Vec<WorkItem>, out_dir: &Path, images_per_prompt: usize) -> Vec<WorkItem> {
    items
        .into_iter()
        .filter(|item| !out_dir.join(item.file_name(images_per_prompt)).is_file())
        .collect()
}

/// One manifest row.
#[derive(Clone, Debug, PartialEq)]
pub struct ManifestRow {
    pub id: String,
    pub prompt: String,
    pub seed: u64,
    pub steps: usize,
    pub guidance: f64,
    pub scheduler: String,
    /// File name relative to the output folder.
    pub file: String,
}

/// The CSV listing every written image with the settings that made it; rows are appended
/// as images are written (one process per manifest file).
#[derive(Clone, Debug)]
pub struct Manifest {
    pub path: PathBuf,
    pub steps: usize,
    pub guidance: f64,
    pub scheduler: String,
    /// Images per prompt of the run (it decides the file names).
    pub images_per_prompt: usize,
}

impl Manifest {
    pub const HEADERS: [&'static str; 7] = [
        "id",
        "prompt",
        "seed",
        "steps",
        "guidance",
        "scheduler",
        "file",
    ];

    /// A manifest at `path` for a run with these settings.
    pub fn new(
        path: impl Into<PathBuf>,
        steps: usize,
        guidance: f64,
        scheduler: &str,
        images_per_prompt: usize,
    ) -> Manifest {
        Manifest {
            path: path.into(),
            steps,
            guidance,
            scheduler: scheduler.to_string(),
            images_per_prompt,
        }
    }

    fn row(&self, item: &WorkItem) -> [String; 7] {
        [
            item.id.clone(),
            item.prompt.clone(),
            item.seed.to_string(),
            self.steps.to_string(),
            self.guidance.to_string(),
            self.scheduler.clone(),
            item.file_name(self.images_per_prompt),
        ]
    }

    /// Appends rows for `items` (images just written) in one write, creating the file with
    /// its header when absent.
    pub fn append(&self, items: &[WorkItem]) -> Result<()> {
        let rows: Vec<[String; 7]> = items.iter().map(|i| self.row(i)).collect();
        append_rows(&self.path, &Manifest::HEADERS, &rows)
    }

    /// Brings the manifest in line with `out_dir` before a resumed run: adds rows for items
    /// whose PNG exists but is not listed (a run stopped between an image and its row), and
    /// drops rows whose PNG is gone or listed twice (those images are made again and
    /// appended). Rewrites the file atomically when anything changed; returns rows added.
    pub fn reconcile(&self, items: &[WorkItem], out_dir: &Path) -> Result<usize> {
        let old = if self.path.exists() {
            Manifest::read(&self.path)?
        } else {
            Vec::new()
        };
        let mut seen = HashSet::new();
        let kept: Vec<&ManifestRow> = old
            .iter()
            .filter(|r| out_dir.join(&r.file).is_file() && seen.insert(r.file.clone()))
            .collect();
        let missing: Vec<WorkItem> = items
            .iter()
            .filter(|i| {
                let file = i.file_name(self.images_per_prompt);
                !seen.contains(&file) && out_dir.join(&file).is_file()
            })
            .cloned()
            .collect();
        if kept.len() != old.len() || !missing.is_empty() {
            let mut rows: Vec<[String; 7]> = kept
                .iter()
                .map(|r| {
                    [
                        r.id.clone(),
                        r.prompt.clone(),
                        r.seed.to_string(),
                        r.steps.to_string(),
                        r.guidance.to_string(),
                        r.scheduler.clone(),
                        r.file.clone(),
                    ]
                })
                .collect();
            rows.extend(missing.iter().map(|i| self.row(i)));
            write_csv_atomic(&self.path, &Manifest::HEADERS, &rows)?;
        }
        Ok(missing.len())
    }

    /// Reads a manifest written by [`Manifest::append`]; errors name the file and line.
    pub fn read(path: impl AsRef<Path>) -> Result<Vec<ManifestRow>> {
        let table = CsvTable::read(path)?;
        let cols: Vec<usize> = Manifest::HEADERS
            .iter()
            .map(|h| table.column(h))
            .collect::<Result<_>>()?;
        table
            .rows()
            .map(|row| {
                let f = |k: usize| row.get(cols[k]);
                let bad = |k: usize| {
                    Error::file(
                        table.path(),
                        format!(
                            "line {}: {} {:?} is not a valid number",
                            row.line(),
                            Manifest::HEADERS[k],
                            f(k)
                        ),
                    )
                };
                Ok(ManifestRow {
                    id: f(0).to_string(),
                    prompt: f(1).to_string(),
                    seed: f(2).parse().map_err(|_| bad(2))?,
                    steps: f(3).parse().map_err(|_| bad(3))?,
                    guidance: f(4).parse().map_err(|_| bad(4))?,
                    scheduler: f(5).to_string(),
                    file: f(6).to_string(),
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_hashes() {
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(splitmix64(0), 0xe220_a839_7b1d_cdaf);
    }

    #[test]
    fn file_names() {
        assert_eq!(image_file_name("p10/s5 0", 0, 1), "p10_s5_0.png");
        assert_eq!(image_file_name("a.b-c_D9", 3, 4), "a.b-c_D9_3.png");
        assert_eq!(image_file_name("é", 0, 1), "_.png");
        assert_eq!(image_file_name("", 0, 1), "_.png");
        let long = "x".repeat(300);
        let name = image_file_name(&long, 1, 2);
        assert!(name.len() < 230, "{name}");
        assert!(name.ends_with(&format!("-{:016x}_1.png", fnv1a64(long.as_bytes()))));
        assert_ne!(name, image_file_name(&"x".repeat(301), 1, 2));
    }

    #[test]
    fn shard_parse() {
        assert_eq!(Shard::parse("1/4").unwrap(), Shard { index: 1, count: 4 });
        assert_eq!(Shard::parse(" 0 / 1 ").unwrap(), Shard::all());
        assert_eq!(Shard::parse("2/3").unwrap().to_string(), "2/3");
        for bad in ["4/4", "1/0", "0", "-1/2", "a/b", "1/2/3", ""] {
            let e = Shard::parse(bad).unwrap_err().to_string();
            assert!(e.contains("expected I/N"), "{bad}: {e}");
        }
    }

    #[test]
    fn zero_images_per_prompt_is_an_error() {
        assert!(work_list(&[], 0, 1).is_err());
    }
}
