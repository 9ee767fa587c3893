//! 8-bit PNG files: atomic writes of gray / gray+alpha / RGB / RGBA pixels, and reads of any
//! PNG (palette and low bit depths expanded, 16-bit rounded down to 8-bit).

use crate::data::write_atomic;
use crate::error::{Error, Result};
use std::fs::File;
use std::io::BufReader;
use std::path::Path;

/// Decoded pixels, row-major with interleaved channels (`HWC`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Image {
    pub width: usize,
    pub height: usize,
    /// 1 gray, 2 gray+alpha, 3 RGB, 4 RGBA.
    pub channels: usize,
    pub pixels: Vec<u8>,
}

fn color_type(channels: usize) -> Option<::png::ColorType> {
    use ::png::ColorType::*;
    Some(match channels {
        1 => Grayscale,
        2 => GrayscaleAlpha,
        3 => Rgb,
        4 => Rgba,
        _ => return None,
    })
}

/// Encodes 8-bit pixels (`HWC`, `channels` 1 gray, 2 gray+alpha, 3 RGB or 4 RGBA) as PNG.
pub fn encode_png(pixels: &[u8], width: usize, height: usize, channels: usize) -> Result<Vec<u8>> {
    let color = color_type(channels).ok_or_else(|| {
        Error::msg(format!(
            "PNG images have 1, 2, 3 or 4 channels, not {channels}"
        ))
    })?;
    if width == 0 || height == 0 || width > u32::MAX as usize || height > u32::MAX as usize {
        crate::bail!("cannot encode a {width}x{height} PNG");
    }
    let expected = width * height * channels;
    if pixels.len() != expected {
        crate::bail!(
            "{} bytes of pixels for a {width}x{height}x{channels} image ({expected} expected)",
            pixels.len()
        );
    }
    let mut out = Vec::with_capacity(expected / 2 + 1024);
    let mut enc = ::png::Encoder::new(&mut out, width as u32, height as u32);
    enc.set_color(color);
    enc.set_depth(::png::BitDepth::Eight);
    let err = |e: ::png::EncodingError| Error::msg(format!("PNG encoding failed: {e}"));
    let mut writer = enc.write_header().map_err(err)?;
    writer.write_image_data(pixels).map_err(err)?;
    writer.finish().map_err(err)?;
    Ok(out)
}

/// Writes `pixels` as an 8-bit PNG at `path` atomically (temp file in the same folder, then
/// rename), so an interrupted run never leaves a truncated image under the final name.
pub fn write_png_atomic(
    path: impl AsRef<Path>,
    pixels: &[u8],
    width: usize,
    height: usize,
    channels: usize,
) -> Result<()> {
    let path = path.as_ref();
    let bytes =
        encode_png(pixels, width, height, channels).map_err(|e| e.context(path.display()))?;
    write_atomic(path, &bytes)
}

/// Reads a PNG file. Palette images become RGB (RGBA with transparency), gray below 8 bits is
/// scaled to 8 bits, and 16-bit samples are rounded to 8 bits (`round(v * 255 / 65535)`).
/// A corrupt or truncated file is an error naming `path`.
pub fn read_png(path: impl AsRef<Path>) -> Result<Image> {
    let path = path.as_ref();
    let file = File::open(path).map_err(|e| Error::file(path, format!("cannot open: {e}")))?;
    decode_png(BufReader::new(file)).map_err(|e| e.context(path.display()))
}

/// Decodes PNG bytes from `r` (see [`read_png`]).
pub fn decode_png(r: impl std::io::BufRead + std::io::Seek) -> Result<Image> {
    let err = |e: ::png::DecodingError| Error::msg(format!("not a readable PNG: {e}"));
    let mut dec = ::png::Decoder::new_with_limits(r, ::png::Limits { bytes: 1 << 31 });
    dec.set_transformations(::png::Transformations::EXPAND);
    let mut reader = dec.read_info().map_err(err)?;
    let mut buf = vec![0u8; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).map_err(err)?;
    let (width, height) = (info.width as usize, info.height as usize);
    let channels = info.color_type.samples();
    if color_type(channels) != Some(info.color_type) {
        crate::bail!("unexpected decoded color type {:?}", info.color_type);
    }
    let row = width * channels;
    let pixels = match info.bit_depth {
        ::png::BitDepth::Eight => {
            let mut px = Vec::with_capacity(row * height);
            for line in buf.chunks_exact(info.line_size).take(height) {
                px.extend_from_slice(&line[..row]);
            }
            px
        }
        ::png::BitDepth::Sixteen => {
            let mut px = Vec::with_capacity(row * height);
            for line in buf.chunks_exact(info.line_size).take(height) {
                px.extend(line[..2 * row].chunks_exact(2).map(|b| {
                    let v = u16::from_be_bytes([b[0], b[1]]) as u32;
                    ((v * 255 + 32767) / 65535) as u8
                }));
            }
            px
        }
        depth => crate::bail!("unexpected decoded bit depth {depth:?}"),
    };
    Ok(Image {
        width,
        height,
        channels,
        pixels,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn encode_raw(
        w: u32,
        h: u32,
        color: ::png::ColorType,
        depth: ::png::BitDepth,
        data: &[u8],
        palette: Option<&[u8]>,
    ) -> Vec<u8> {
        let mut out = Vec::new();
        let mut enc = ::png::Encoder::new(&mut out, w, h);
        enc.set_color(color);
        enc.set_depth(depth);
        if let Some(p) = palette {
            enc.set_palette(p.to_vec());
        }
        let mut wr = enc.write_header().unwrap();
        wr.write_image_data(data).unwrap();
        wr.finish().unwrap();
        out
    }

    #[test]
    fn sixteen_bit_rounds_to_nearest() {
        // 0, 128 (0.498 -> 0), 129 (0.502 -> 1), 65535 -> 255, 32896 (= 128.0 * 257) -> 128.
        let vals: [u16; 5] = [0, 128, 129, 65535, 32896];
        let data: Vec<u8> = vals.iter().flat_map(|v| v.to_be_bytes()).collect();
        let bytes = encode_raw(
            5,
            1,
            ::png::ColorType::Grayscale,
            ::png::BitDepth::Sixteen,
            &data,
            None,
        );
        let img = decode_png(Cursor::new(bytes)).unwrap();
        assert_eq!((img.width, img.height, img.channels), (5, 1, 1));
        assert_eq!(img.pixels, vec![0, 0, 1, 255, 128]);
    }

    #[test]
    fn palette_and_low_bit_depths_expand() {
        let palette = [10, 20, 30, 200, 100, 50];
        // 4 pixels, 1 bit each: 0 1 1 0 -> 0b0110_0000.
        let bytes = encode_raw(
            4,
            1,
            ::png::ColorType::Indexed,
            ::png::BitDepth::One,
            &[0b0110_0000],
            Some(&palette),
        );
        let img = decode_png(Cursor::new(bytes)).unwrap();
        assert_eq!(img.channels, 3);
        assert_eq!(
            img.pixels,
            vec![10, 20, 30, 200, 100, 50, 200, 100, 50, 10, 20, 30]
        );
        // 2-bit gray: 0, 1, 2, 3 -> 0, 85, 170, 255.
        let bytes = encode_raw(
            4,
            1,
            ::png::ColorType::Grayscale,
            ::png::BitDepth::Two,
            &[0b0001_1011],
            None,
        );
        assert_eq!(
            decode_png(Cursor::new(bytes)).unwrap().pixels,
            vec![0, 85, 170, 255]
        );
    }

    #[test]
    fn bad_arguments_are_errors() {
        assert!(encode_png(&[0; 6], 2, 1, 5).is_err());
        assert!(encode_png(&[0; 5], 2, 1, 3).is_err());
        assert!(encode_png(&[], 0, 1, 1).is_err());
    }
}
