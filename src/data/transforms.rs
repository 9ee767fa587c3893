//! Image transforms for the encoders: resize the shorter side (antialiased bilinear), random
//! (training) or centre (evaluation) crop, scale to [0, 1], normalise per channel, and
//! replicate gray to the encoder's channel count. Output is `[C, S, S]` f32, channel-major.

use crate::error::Result;
use crate::imageio::decode::to_channels;
use crate::imageio::resize::{center_offsets, crop, resize_bilinear, shorter_side_size};
use crate::imageio::Image;
use crate::tensor::Philox;

/// Random crop for training, centre crop for evaluation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CropMode {
    Random,
    Center,
}

/// Sizes and normalisation. The default is the MGCA / ConVIRT setting: shorter side 256,
/// crop 224, mean = std = 0.5, 3 channels.
#[derive(Clone, Debug, PartialEq)]
pub struct TransformConfig {
    /// The shorter side after resizing.
    pub resize: usize,
    /// The square crop's side.
    pub crop: usize,
    /// Output channels: 1 (gray) or 3 (gray replicated, or RGB).
    pub channels: usize,
    /// Per-channel mean and std, applied to values in [0, 1]: one value for all channels or
    /// one per output channel.
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

impl Default for TransformConfig {
    fn default() -> Self {
        TransformConfig {
            resize: 256,
            crop: 224,
            channels: 3,
            mean: vec![0.5],
            std: vec![0.5],
        }
    }
}

/// SplitMix64's finaliser: a well-mixed 64-bit hash step.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A generator keyed by `(seed, stream, a, b)`: independent streams for shuffles
/// (`stream` 0) and crops (`stream` 1) that depend on nothing but these numbers.
pub fn keyed_rng(seed: u64, stream: u64, a: u64, b: u64) -> Philox {
    let k = mix(mix(mix(seed ^ 0x6D65_6473_796E) ^ stream) ^ a.wrapping_mul(0x9E37_79B9_7F4A_7C15))
        ^ mix(b.wrapping_add(0x632B_E59B_D9B4_E019));
    Philox::new(mix(k))
}

/// The centre crop's `(top, left)` as torchvision's `CenterCrop`:
/// `int(round((h - size) / 2))`, Python rounding halves to even (an odd margin of 9 gives 4).
pub fn center_crop_offsets(w: usize, h: usize, size: usize) -> (usize, usize) {
    center_offsets(w, h, size, size)
}

/// The random crop's `(top, left)` for sample `index` in `epoch`: uniform over all
/// positions, as torchvision's `RandomCrop`, and a function of `(seed, epoch, index)` only.
pub fn random_crop_offsets(
    seed: u64,
    epoch: usize,
    index: usize,
    w: usize,
    h: usize,
    size: usize,
) -> (usize, usize) {
    let mut rng = keyed_rng(seed, 1, epoch as u64, index as u64);
    let top = rng.below((h - size + 1) as u64) as usize;
    let left = rng.below((w - size + 1) as u64) as usize;
    (top, left)
}

impl TransformConfig {
    /// Checks the sizes and normalisation values.
    pub fn validate(&self) -> Result<()> {
        crate::ensure!(
            self.crop > 0 && self.resize >= self.crop,
            "transform sizes: the crop ({}) must be positive and at most the resize ({})",
            self.crop,
            self.resize
        );
        crate::ensure!(
            self.channels == 1 || self.channels == 3,
            "transforms produce 1 or 3 channels, not {}",
            self.channels
        );
        for (what, v) in [("mean", &self.mean), ("std", &self.std)] {
            crate::ensure!(
                v.len() == 1 || v.len() == self.channels,
                "normalisation {what} has {} values; give 1 or {} (one per channel)",
                v.len(),
                self.channels
            );
            crate::ensure!(
                v.iter().all(|x| x.is_finite()),
                "normalisation {what} {v:?} is not finite"
            );
        }
        crate::ensure!(
            self.std.iter().all(|&s| s > 0.0),
            "normalisation std {:?} must be positive",
            self.std
        );
        Ok(())
    }

    /// Number of f32 values one transformed image has: `channels * crop * crop`.
    pub fn output_len(&self) -> usize {
        self.channels * self.crop * self.crop
    }

    /// Transforms a decoded image into `out` (`[channels, crop, crop]`, length
    /// [`output_len`](Self::output_len)). Colour images are converted to the wanted channels
    /// first (RGB to gray by luma); gray images are resized once and replicated. The crop is
    /// random (a function of `(seed, epoch, index)`) or central.
    pub fn apply_into(
        &self,
        img: &Image,
        mode: CropMode,
        (seed, epoch, index): (u64, usize, usize),
        out: &mut [f32],
    ) -> Result<()> {
        self.validate()?;
        crate::ensure!(
            out.len() == self.output_len(),
            "transform output buffer has {} values, expected {}",
            out.len(),
            self.output_len()
        );
        crate::ensure!(
            img.width > 0 && img.height > 0,
            "cannot transform an empty {}x{} image",
            img.width,
            img.height
        );
        // Gray (or gray+alpha) stays one channel through the resize; colour goes to the
        // output channel count.
        let work_c = if img.channels <= 2 { 1 } else { self.channels };
        let converted;
        let src = if img.channels == work_c {
            img
        } else {
            converted = to_channels(img.clone(), work_c)?;
            &converted
        };
        let (w, h) = (src.width, src.height);
        let (rw, rh) = shorter_side_size(w, h, self.resize);
        let resized = resize_bilinear(&src.pixels, w, h, work_c, rw, rh);
        let s = self.crop;
        let (top, left) = match mode {
            CropMode::Center => center_crop_offsets(rw, rh, s),
            CropMode::Random => random_crop_offsets(seed, epoch, index, rw, rh, s),
        };
        let cropped = crop(&resized, rw, work_c, top, left, s, s);
        let plane = s * s;
        for ch in 0..self.channels {
            let sc = ch.min(work_c - 1);
            let mean = self.mean[ch.min(self.mean.len() - 1)];
            let std = self.std[ch.min(self.std.len() - 1)];
            // (v / 255 - mean) / std as one multiply-add.
            let a = 1.0 / (255.0 * std);
            let b = -mean / std;
            let dst = &mut out[ch * plane..(ch + 1) * plane];
            for (d, px) in dst.iter_mut().zip(cropped.chunks_exact(work_c)) {
                *d = px[sc] * a + b;
            }
        }
        Ok(())
    }

    /// [`apply_into`](Self::apply_into) into a new vector.
    pub fn apply(&self, img: &Image, mode: CropMode, key: (u64, usize, usize)) -> Result<Vec<f32>> {
        let mut out = vec![0f32; self.output_len()];
        self.apply_into(img, mode, key, &mut out)?;
        Ok(out)
    }
}
