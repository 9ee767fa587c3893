//! JPEG decoding (baseline and progressive, 8-bit) with `zune-jpeg`: grayscale files stay one
//! channel, colour files (YCbCr, RGB, CMYK/YCCK) become RGB.

use super::png::Image;
use crate::error::{Error, Result};
use std::path::Path;
use zune_jpeg::zune_core::bytestream::ZCursor;
use zune_jpeg::zune_core::colorspace::ColorSpace;
use zune_jpeg::zune_core::options::DecoderOptions;
use zune_jpeg::JpegDecoder;

/// The largest width or height accepted (the decoder's own limit is 65535; chest X-rays are
/// at most a few thousand pixels a side).
const MAX_SIDE: usize = 1 << 15;

/// Decodes JPEG bytes. A single-component (grayscale) file gives a 1-channel [`Image`];
/// anything else is converted to 3-channel RGB. Truncated or corrupt data is an error.
pub fn decode_jpeg(bytes: &[u8]) -> Result<Image> {
    let err = |e: zune_jpeg::errors::DecodeErrors| Error::msg(format!("not a readable JPEG: {e}"));
    let base = DecoderOptions::default()
        .set_max_width(MAX_SIDE)
        .set_max_height(MAX_SIDE)
        .set_strict_mode(true);
    let mut probe = JpegDecoder::new_with_options(ZCursor::new(bytes), base);
    probe.decode_headers().map_err(err)?;
    let gray = probe.input_colorspace() == Some(ColorSpace::Luma);
    let (out_space, channels) = if gray {
        (ColorSpace::Luma, 1)
    } else {
        (ColorSpace::RGB, 3)
    };
    let mut dec =
        JpegDecoder::new_with_options(ZCursor::new(bytes), base.jpeg_set_out_colorspace(out_space));
    let pixels = dec.decode().map_err(err)?;
    let (width, height) = dec
        .dimensions()
        .ok_or_else(|| Error::msg("JPEG decoder returned no dimensions"))?;
    if pixels.len() != width * height * channels {
        crate::bail!(
            "JPEG decoder returned {} bytes for a {width}x{height}x{channels} image",
            pixels.len()
        );
    }
    Ok(Image {
        width,
        height,
        channels,
        pixels,
    })
}

/// Reads and decodes a JPEG file (see [`decode_jpeg`]); errors name `path`.
pub fn read_jpeg(path: impl AsRef<Path>) -> Result<Image> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|e| Error::file(path, format!("cannot read: {e}")))?;
    decode_jpeg(&bytes).map_err(|e| e.context(path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_and_truncation_are_errors() {
        let e = decode_jpeg(b"not a jpeg at all").unwrap_err().to_string();
        assert!(e.contains("not a readable JPEG"), "{e}");
        // A start-of-image marker followed by nothing.
        assert!(decode_jpeg(&[0xFF, 0xD8, 0xFF]).is_err());
    }
}
