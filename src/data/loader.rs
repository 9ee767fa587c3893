//! The training/evaluation data loader: worker threads decode and transform whole batches
//! ahead of the consumer (a bounded prefetch window), in an order that depends only on
//! `(seed, epoch)`, from any resumable position `(epoch, batch)`.

use super::manifest::Manifest;
use super::transforms::{keyed_rng, CropMode, TransformConfig};
use crate::error::{Error, Result};
use crate::imageio::decode::read_image;
use crate::tensor::{DType, Tensor};
use std::collections::{BTreeMap, HashSet};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

/// What to do with an image that cannot be read or decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OnBadImage {
    /// Warn once per image and leave it out of its batch (the batch is one shorter; a batch
    /// whose images are all bad comes out empty, so batch positions never shift).
    Skip,
    /// Stop with an error naming the file.
    Fail,
}

/// Loader settings.
#[derive(Clone, Debug)]
pub struct LoaderConfig {
    pub batch_size: usize,
    /// Shuffle each epoch (a permutation keyed by `(seed, epoch)`); otherwise file order.
    pub shuffle: bool,
    /// Drop the last, incomplete batch of each epoch.
    pub drop_last: bool,
    pub seed: u64,
    /// Worker threads decoding and transforming batches.
    pub threads: usize,
    /// At most this many batches are being prepared or waiting for the consumer.
    pub prefetch: usize,
    /// The dtype of `Batch::images`.
    pub dtype: DType,
    /// Random crops (training) or centre crops (evaluation).
    pub crop: CropMode,
    pub transform: TransformConfig,
    pub on_bad_image: OnBadImage,
}

impl Default for LoaderConfig {
    fn default() -> Self {
        LoaderConfig {
            batch_size: 72,
            shuffle: true,
            drop_last: true,
            seed: 0,
            threads: 4,
            prefetch: 8,
            dtype: DType::F32,
            crop: CropMode::Random,
            transform: TransformConfig::default(),
            on_bad_image: OnBadImage::Fail,
        }
    }
}

/// Labels of a batch: `values` `[B, L]` f32 (0 where not labelled) and `mask` `[B, L]` f32
/// (1 labelled, 0 not).
#[derive(Clone, Debug)]
pub struct Labels {
    pub values: Tensor,
    pub mask: Tensor,
}

/// One batch. `epoch` and `batch` are its position; resume after it with
/// `Loader::start_at(epoch, batch + 1)`.
#[derive(Clone, Debug)]
pub struct Batch {
    pub epoch: usize,
    pub batch: usize,
    /// `[B, C, S, S]` in the configured dtype.
    pub images: Tensor,
    pub texts: Vec<String>,
    /// Row indices into the manifest's samples.
    pub indices: Vec<usize>,
    pub ids: Vec<String>,
    /// Present when the manifest has label columns.
    pub labels: Option<Labels>,
}

impl Batch {
    pub fn len(&self) -> usize {
        self.indices.len()
    }
    pub fn is_empty(&self) -> bool {
        self.indices.is_empty()
    }
}

struct Inner {
    manifest: Manifest,
    cfg: LoaderConfig,
    /// Images already reported as skipped (each is reported once per loader).
    skipped: Mutex<HashSet<usize>>,
}

/// A data loader over a [`Manifest`]. Cheap to clone (shared state).
#[derive(Clone)]
pub struct Loader {
    inner: Arc<Inner>,
}

impl Loader {
    /// Checks the settings; the manifest must hold at least one sample.
    pub fn new(manifest: Manifest, cfg: LoaderConfig) -> Result<Loader> {
        crate::ensure!(cfg.batch_size > 0, "loader batch size must be positive");
        crate::ensure!(cfg.threads > 0, "loader needs at least one thread");
        crate::ensure!(
            cfg.prefetch > 0,
            "loader prefetch must be at least one batch"
        );
        crate::ensure!(
            cfg.dtype.is_float(),
            "loader images must be a float dtype, not {}",
            cfg.dtype
        );
        cfg.transform.validate()?;
        if manifest.is_empty() {
            return Err(Error::file(&manifest.path, "the manifest has no samples"));
        }
        if cfg.drop_last && manifest.len() < cfg.batch_size {
            return Err(Error::file(
                &manifest.path,
                format!(
                    "{} samples make no full batch of {} (drop_last is set)",
                    manifest.len(),
                    cfg.batch_size
                ),
            ));
        }
        Ok(Loader {
            inner: Arc::new(Inner {
                manifest,
                cfg,
                skipped: Mutex::new(HashSet::new()),
            }),
        })
    }

    pub fn manifest(&self) -> &Manifest {
        &self.inner.manifest
    }

    pub fn config(&self) -> &LoaderConfig {
        &self.inner.cfg
    }

    /// Batches in each epoch.
    pub fn batches_per_epoch(&self) -> usize {
        let (n, b) = (self.inner.manifest.len(), self.inner.cfg.batch_size);
        if self.inner.cfg.drop_last {
            n / b
        } else {
            n.div_ceil(b)
        }
    }

    /// The order of sample indices in `epoch`: a permutation keyed by `(seed, epoch)` when
    /// shuffling, else `0..n`.
    pub fn epoch_order(&self, epoch: usize) -> Vec<usize> {
        self.inner.order(epoch)
    }

    /// Images skipped so far (with [`OnBadImage::Skip`]), sorted.
    pub fn skipped(&self) -> Vec<PathBuf> {
        let set = lock(&self.inner.skipped);
        let mut idx: Vec<usize> = set.iter().copied().collect();
        idx.sort_unstable();
        idx.into_iter()
            .map(|i| self.inner.manifest.samples[i].image.clone())
            .collect()
    }

    /// Loads one batch on the calling thread.
    pub fn load_batch(&self, epoch: usize, batch: usize) -> Result<Batch> {
        crate::ensure!(
            batch < self.batches_per_epoch(),
            "batch {batch} is out of range: an epoch has {} batches",
            self.batches_per_epoch()
        );
        let order = self.inner.order(epoch);
        self.inner.load(&order, epoch, batch)
    }

    /// The batches of `epoch` in order.
    pub fn epoch(&self, epoch: usize) -> Result<Batches> {
        self.start_at(epoch, 0)
    }

    /// The batches of `epoch` from batch `batch` on, prepared by the worker threads: one
    /// `Batch` per position, in order (with [`OnBadImage::Skip`] it may be short, or empty).
    /// Resuming at `(epoch, batch)` yields exactly the batches an uninterrupted run would
    /// have yielded from there. `batch` may equal the number of batches (an empty iterator).
    pub fn start_at(&self, epoch: usize, batch: usize) -> Result<Batches> {
        let end = self.batches_per_epoch();
        crate::ensure!(
            batch <= end,
            "cannot start at batch {batch}: an epoch has {end} batches"
        );
        let order = Arc::new(self.inner.order(epoch));
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                next_claim: batch,
                consumed: batch,
                stop: false,
                ready: BTreeMap::new(),
            }),
            work: Condvar::new(),
            done: Condvar::new(),
        });
        let workers = self.inner.cfg.threads.min(end - batch);
        let mut handles = Vec::with_capacity(workers);
        for t in 0..workers {
            let (inner, shared, order) = (self.inner.clone(), shared.clone(), order.clone());
            let h = std::thread::Builder::new()
                .name(format!("medsyn-loader-{t}"))
                .spawn(move || worker(&inner, &shared, &order, epoch, end))
                .map_err(|e| Error::msg(format!("cannot start a loader thread: {e}")))?;
            handles.push(h);
        }
        Ok(Batches {
            shared,
            handles,
            epoch,
            end,
            prefetch: self.inner.cfg.prefetch,
            finished: batch == end,
        })
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Inner {
    fn order(&self, epoch: usize) -> Vec<usize> {
        let n = self.manifest.len();
        if self.cfg.shuffle {
            keyed_rng(self.cfg.seed, 0, epoch as u64, 0).permutation(n)
        } else {
            (0..n).collect()
        }
    }

    fn load(&self, order: &[usize], epoch: usize, batch: usize) -> Result<Batch> {
        let cfg = &self.cfg;
        let b = cfg.batch_size;
        let rows = &order[batch * b..((batch + 1) * b).min(order.len())];
        let per = cfg.transform.output_len();
        let mut vals = vec![0f32; rows.len() * per];
        let mut kept = Vec::with_capacity(rows.len());
        for &i in rows {
            let sample = &self.manifest.samples[i];
            let slot = kept.len();
            let result = read_image(&sample.image).and_then(|img| {
                let out = &mut vals[slot * per..(slot + 1) * per];
                cfg.transform
                    .apply_into(&img, cfg.crop, (cfg.seed, epoch, i), out)
                    .map_err(|e| e.context(sample.image.display()))
            });
            match result {
                Ok(()) => kept.push(i),
                Err(e) => match cfg.on_bad_image {
                    OnBadImage::Fail => {
                        return Err(e.context(format!(
                            "{} line {}",
                            self.manifest.path.display(),
                            sample.line
                        )))
                    }
                    OnBadImage::Skip => {
                        if lock(&self.skipped).insert(i) {
                            eprintln!("warning: skipping image (--on-bad-image skip): {e}");
                        }
                    }
                },
            }
        }
        vals.truncate(kept.len() * per);
        let (c, s) = (cfg.transform.channels, cfg.transform.crop);
        let images = Tensor::from_values(vals, &[kept.len(), c, s, s], cfg.dtype)?;
        let samples = &self.manifest.samples;
        let nl = self.manifest.label_names.len();
        let labels = if nl == 0 {
            None
        } else {
            let mut values = Vec::with_capacity(kept.len() * nl);
            let mut mask = Vec::with_capacity(kept.len() * nl);
            for &i in &kept {
                for l in &samples[i].labels {
                    values.push(l.unwrap_or(0.0));
                    mask.push(if l.is_some() { 1f32 } else { 0.0 });
                }
            }
            Some(Labels {
                values: Tensor::from_vec(values, &[kept.len(), nl])?,
                mask: Tensor::from_vec(mask, &[kept.len(), nl])?,
            })
        };
        Ok(Batch {
            epoch,
            batch,
            images,
            texts: kept.iter().map(|&i| samples[i].text.clone()).collect(),
            ids: kept.iter().map(|&i| samples[i].id.clone()).collect(),
            indices: kept,
            labels,
        })
    }
}

struct State {
    /// The next batch a worker will take.
    next_claim: usize,
    /// The next batch the consumer will return.
    consumed: usize,
    stop: bool,
    ready: BTreeMap<usize, Result<Batch>>,
}

struct Shared {
    state: Mutex<State>,
    /// Signalled when workers may claim more (the consumer advanced, or stop).
    work: Condvar,
    /// Signalled when a batch is ready.
    done: Condvar,
}

fn worker(inner: &Inner, shared: &Shared, order: &[usize], epoch: usize, end: usize) {
    loop {
        let b = {
            let mut st = lock(&shared.state);
            while !st.stop
                && st.next_claim < end
                && st.next_claim >= st.consumed + inner.cfg.prefetch
            {
                st = shared.work.wait(st).unwrap_or_else(|e| e.into_inner());
            }
            if st.stop || st.next_claim >= end {
                return;
            }
            st.next_claim += 1;
            st.next_claim - 1
        };
        let result = catch_unwind(AssertUnwindSafe(|| inner.load(order, epoch, b)))
            .unwrap_or_else(|_| Err(Error::msg(format!("loader thread panicked on batch {b}"))));
        lock(&shared.state).ready.insert(b, result);
        shared.done.notify_all();
    }
}

/// The batches of one epoch, prepared in the background. Dropping it stops the workers.
pub struct Batches {
    shared: Arc<Shared>,
    handles: Vec<JoinHandle<()>>,
    epoch: usize,
    end: usize,
    prefetch: usize,
    finished: bool,
}

impl Batches {
    /// The position the next call to `next` continues from: `(epoch, batch)`.
    pub fn position(&self) -> (usize, usize) {
        (self.epoch, lock(&self.shared.state).consumed)
    }

    /// Batches prepared and waiting for the consumer right now.
    pub fn ready(&self) -> usize {
        lock(&self.shared.state).ready.len()
    }

    /// The prefetch window in batches.
    pub fn prefetch(&self) -> usize {
        self.prefetch
    }
}

impl Iterator for Batches {
    type Item = Result<Batch>;

    fn next(&mut self) -> Option<Result<Batch>> {
        if self.finished {
            return None;
        }
        let mut st = lock(&self.shared.state);
        loop {
            let want = st.consumed;
            if want >= self.end {
                self.finished = true;
                return None;
            }
            if let Some(r) = st.ready.remove(&want) {
                st.consumed += 1;
                self.shared.work.notify_all();
                match r {
                    Ok(batch) => return Some(Ok(batch)),
                    Err(e) => {
                        st.stop = true;
                        self.finished = true;
                        self.shared.work.notify_all();
                        return Some(Err(e));
                    }
                }
            }
            st = self.shared.done.wait(st).unwrap_or_else(|e| e.into_inner());
        }
    }
}

impl Drop for Batches {
    fn drop(&mut self) {
        lock(&self.shared.state).stop = true;
        self.shared.work.notify_all();
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}
