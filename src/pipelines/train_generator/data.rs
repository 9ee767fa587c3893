//! Image–prompt pairs for generator fine-tuning: a CSV manifest (e.g. the one
//! `generate` writes, or MIMIC-CXR image paths with impressions), images resized
//! (shorter side) and centre-cropped to the training resolution, in [-1, 1].

use crate::data::csv::CsvTable;
use crate::error::{Error, Result};
use crate::imageio::read_png;
use crate::imageio::resize::{center_offsets, crop, resize_bilinear, shorter_side_size};
use crate::tensor::Tensor;
use std::path::{Path, PathBuf};

/// One training pair.
#[derive(Clone, Debug)]
pub struct Pair {
    pub image: PathBuf,
    pub prompt: String,
}

/// Reads `(image, prompt)` pairs; relative image paths are taken from the CSV's folder.
pub fn read_pairs(csv: &Path, image_column: &str, text_column: &str) -> Result<Vec<Pair>> {
    let table = CsvTable::read(csv)?;
    let (ic, tc) = (table.column(image_column)?, table.column(text_column)?);
    let base = csv.parent().unwrap_or(Path::new("."));
    let mut pairs = Vec::with_capacity(table.len());
    for row in table.rows() {
        let file = row.get(ic).trim();
        if file.is_empty() {
            return Err(Error::file(
                csv,
                format!("line {}: empty `{image_column}`", row.line()),
            ));
        }
        let p = Path::new(file);
        let image = if p.is_absolute() {
            p.to_path_buf()
        } else {
            base.join(p)
        };
        pairs.push(Pair {
            image,
            prompt: row.get(tc).trim().to_string(),
        });
    }
    if pairs.is_empty() {
        return Err(Error::file(csv, "no rows"));
    }
    Ok(pairs)
}

/// Loads an image as RGB [3, size, size] in [-1, 1]: shorter side resized to
/// `size` (antialiased bilinear), centre crop, `x / 127.5 - 1` (diffusers'
/// `Normalize([0.5], [0.5])`). Grayscale is replicated to three channels.
pub fn load_image(path: &Path, size: usize) -> Result<Tensor> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    if ext != "png" {
        return Err(Error::file(
            path,
            "only PNG images are read for generator training (convert JPEG/DICOM to PNG first)",
        ));
    }
    let img = read_png(path)?;
    let (w, h, c) = (img.width, img.height, img.channels);
    if w == 0 || h == 0 {
        return Err(Error::file(path, "empty image"));
    }
    let (rw, rh) = shorter_side_size(w, h, size);
    let resized = resize_bilinear(&img.pixels, w, h, c, rw.max(size), rh.max(size));
    let (rw, rh) = (rw.max(size), rh.max(size));
    let (top, left) = center_offsets(rw, rh, size, size);
    let px = crop(&resized, rw, c, top, left, size, size);
    let mut chw = vec![0f32; 3 * size * size];
    for i in 0..size * size {
        for ch in 0..3 {
            // gray (1), gray+alpha (2): replicate the gray channel; RGB(A): take RGB.
            let src = if c < 3 { 0 } else { ch };
            chw[ch * size * size + i] = px[i * c + src] / 127.5 - 1.0;
        }
    }
    Tensor::from_vec(chw, &[3, size, size])
}
