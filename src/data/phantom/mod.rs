//! A procedural frontal chest-radiograph phantom: seeded anatomy and findings, rendered to
//! grayscale pixels with masks and boxes, and a free-text report from the same ground truth.
//!
//! Every image is a pure function of `(seed, index)`: its anatomy, findings, render details
//! and report wording each come from their own Philox stream keyed by a hash of the seed,
//! the index and the stream's purpose, so image `k` is the same whatever `N` is and in
//! whatever order (or on whichever thread) the images are made.

pub mod anatomy;
pub mod findings;
pub mod render;
pub mod report;
pub mod writer;

pub use anatomy::Anatomy;
pub use findings::{
    Consolidation, Effusion, Finding, Findings, Laterality, Nodule, Pneumothorax, Prevalence,
    Severity, Side, Zone,
};
pub use render::{render, BoxRow, FindingMask, Regions, Rendered};
pub use report::{write_report, Report};
pub use writer::{image_path, mask_path, write_dataset, PhantomOptions, Summary, LABEL_COLUMNS};

use crate::tensor::Philox;

/// One image's ground truth: its anatomy, its findings and the seed of its render details.
#[derive(Clone, Debug, PartialEq)]
pub struct Case {
    pub index: u64,
    pub anatomy: Anatomy,
    pub findings: Findings,
    /// Seeds the finding shapes and the noise at render time (each from its own stream).
    pub detail_seed: u64,
    /// Seeds the report's wording.
    pub report_seed: u64,
}

/// Streams of one image's randomness.
const STREAM_ANATOMY: u64 = 1;
const STREAM_FINDINGS: u64 = 2;
const STREAM_DETAIL: u64 = 3;
const STREAM_REPORT: u64 = 4;
const STREAM_SPLIT: u64 = 5;

/// SplitMix64's finaliser: a bijective 64-bit mix.
pub fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The seed of stream `stream` of image `index` in a run seeded `seed`.
pub fn mix(seed: u64, index: u64, stream: u64) -> u64 {
    splitmix64(splitmix64(splitmix64(seed ^ 0x7068_616E_746F_6D00) ^ index) ^ stream)
}

/// Samples image `index`'s ground truth (anatomy and findings only; nothing is drawn).
pub fn sample_case(seed: u64, index: u64, prevalence: &Prevalence) -> Case {
    let mut rng = Rng::new(mix(seed, index, STREAM_ANATOMY));
    let anatomy = Anatomy::sample(&mut rng);
    let mut rng = Rng::new(mix(seed, index, STREAM_FINDINGS));
    let findings = Findings::sample(&mut rng, prevalence);
    Case {
        index,
        anatomy,
        findings,
        detail_seed: mix(seed, index, STREAM_DETAIL),
        report_seed: mix(seed, index, STREAM_REPORT),
    }
}

/// The split of image `index`: about 80 % `train`, 10 % `valid`, 10 % `test`.
pub fn split_of(seed: u64, index: u64) -> &'static str {
    match mix(seed, index, STREAM_SPLIT) % 10 {
        0 => "valid",
        1 => "test",
        _ => "train",
    }
}

/// Scalar draws from a Philox stream (four uniforms per counter block, none wasted).
#[derive(Clone, Debug)]
pub struct Rng {
    philox: Philox,
    buf: [f64; 4],
    next: usize,
}

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng {
            philox: Philox::new(seed),
            buf: [0.0; 4],
            next: 4,
        }
    }

    /// A uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        if self.next == 4 {
            let u = self.philox.uniform(4);
            self.buf.copy_from_slice(&u);
            self.next = 0;
        }
        self.next += 1;
        self.buf[self.next - 1]
    }

    /// A uniform in [lo, hi).
    pub fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.uniform()
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        self.uniform() < p
    }

    /// A uniform index in `0..n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        ((self.uniform() * n as f64) as usize).min(n - 1)
    }

    /// One of `items`, uniformly.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    /// An index drawn with probability proportional to `weights`.
    pub fn weighted(&mut self, weights: &[f64]) -> usize {
        let total: f64 = weights.iter().sum();
        let mut u = self.uniform() * total;
        for (i, w) in weights.iter().enumerate() {
            if u < *w {
                return i;
            }
            u -= w;
        }
        weights.len() - 1
    }

    /// `n` standard normals.
    pub fn normals(&mut self, n: usize) -> Vec<f64> {
        self.philox.normal(n)
    }
}
