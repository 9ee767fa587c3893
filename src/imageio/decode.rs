//! Image files decoded by content (PNG or JPEG, whatever the extension says) and converted to
//! the channel count a model wants (1 gray or 3 RGB).

use super::jpeg::decode_jpeg;
use super::png::{decode_png, Image};
use crate::error::{Error, Result};
use std::io::Cursor;
use std::path::Path;

/// A file format recognised from its first bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageFormat {
    Png,
    Jpeg,
}

/// The format of `bytes` from its signature, or `None` when it is neither PNG nor JPEG.
pub fn sniff_format(bytes: &[u8]) -> Option<ImageFormat> {
    if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some(ImageFormat::Png)
    } else if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Some(ImageFormat::Jpeg)
    } else {
        None
    }
}

/// Decodes PNG or JPEG bytes, chosen by content. PNG keeps its channels (1, 2, 3 or 4; 16-bit
/// samples rounded to 8 bits); JPEG gives 1 (gray) or 3 (RGB).
pub fn decode_image(bytes: &[u8]) -> Result<Image> {
    match sniff_format(bytes) {
        Some(ImageFormat::Png) => decode_png(Cursor::new(bytes)),
        Some(ImageFormat::Jpeg) => decode_jpeg(bytes),
        None if bytes.is_empty() => crate::bail!("empty file, not an image"),
        None => crate::bail!(
            "not a PNG or JPEG file (starts with {:02x?})",
            &bytes[..bytes.len().min(8)]
        ),
    }
}

/// Reads and decodes an image file; a missing, unreadable or corrupt file is an error naming
/// `path`.
pub fn read_image(path: impl AsRef<Path>) -> Result<Image> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|e| Error::file(path, format!("cannot read: {e}")))?;
    decode_image(&bytes).map_err(|e| e.context(path.display()))
}

/// Reads an image file and converts it to `channels` (see [`to_channels`]).
pub fn read_image_as(path: impl AsRef<Path>, channels: usize) -> Result<Image> {
    let path = path.as_ref();
    to_channels(read_image(path)?, channels).map_err(|e| e.context(path.display()))
}

/// PIL's `convert("L")` luma: `(19595 R + 38470 G + 7471 B + 0x8000) >> 16` (ITU-R 601-2).
fn luma(r: u8, g: u8, b: u8) -> u8 {
    ((19595 * r as u32 + 38470 * g as u32 + 7471 * b as u32 + 0x8000) >> 16) as u8
}

/// Converts an image to 1 (gray) or 3 (RGB) channels as PIL's `convert("L")` /
/// `convert("RGB")` do: alpha is dropped (not composited), gray is replicated to RGB, and
/// RGB becomes gray through the ITU-R 601-2 luma.
pub fn to_channels(img: Image, channels: usize) -> Result<Image> {
    if channels != 1 && channels != 3 {
        crate::bail!("images can be converted to 1 or 3 channels, not {channels}");
    }
    if !(1..=4).contains(&img.channels) {
        crate::bail!(
            "an image with {} channels cannot be converted",
            img.channels
        );
    }
    if img.channels == channels {
        return Ok(img);
    }
    let c = img.channels;
    let px = &img.pixels;
    let pixels: Vec<u8> = match (c, channels) {
        (2, 1) => px.chunks_exact(2).map(|p| p[0]).collect(),
        (1 | 2, 3) => px
            .chunks_exact(c)
            .flat_map(|p| [p[0], p[0], p[0]])
            .collect(),
        (3 | 4, 1) => px.chunks_exact(c).map(|p| luma(p[0], p[1], p[2])).collect(),
        (4, 3) => px
            .chunks_exact(4)
            .flat_map(|p| [p[0], p[1], p[2]])
            .collect(),
        _ => unreachable!("channel counts checked above"),
    };
    Ok(Image {
        channels,
        pixels,
        ..img
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffing_and_conversions() {
        assert_eq!(sniff_format(b"\x89PNG\r\n\x1a\nxx"), Some(ImageFormat::Png));
        assert_eq!(
            sniff_format(&[0xFF, 0xD8, 0xFF, 0xE0]),
            Some(ImageFormat::Jpeg)
        );
        assert_eq!(sniff_format(b"GIF89a"), None);
        assert!(decode_image(b"GIF89a....")
            .unwrap_err()
            .to_string()
            .contains("not a PNG or JPEG"));
        assert!(decode_image(b"").unwrap_err().to_string().contains("empty"));
        let rgba = Image {
            width: 2,
            height: 1,
            channels: 4,
            pixels: vec![255, 0, 0, 9, 10, 20, 30, 0],
        };
        let rgb = to_channels(rgba.clone(), 3).unwrap();
        assert_eq!(rgb.pixels, vec![255, 0, 0, 10, 20, 30]);
        // PIL: Image.new("RGB", (1, 1), (255, 0, 0)).convert("L") -> 76; (10, 20, 30) -> 18.
        assert_eq!(to_channels(rgba, 1).unwrap().pixels, vec![76, 18]);
        let ga = Image {
            width: 1,
            height: 1,
            channels: 2,
            pixels: vec![7, 200],
        };
        assert_eq!(to_channels(ga.clone(), 3).unwrap().pixels, vec![7, 7, 7]);
        assert_eq!(to_channels(ga.clone(), 1).unwrap().pixels, vec![7]);
        assert!(to_channels(ga, 2).is_err());
    }
}
