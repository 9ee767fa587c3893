//! Float image tensors `[N, C, H, W]` in `[0, 1]` to and from interleaved 8-bit pixels
//! (`HWC`), with the rounding of diffusers' `VaeImageProcessor`.

use crate::error::{Error, Result};
use crate::tensor::{DType, Tensor};

/// Quantises one value like diffusers' `numpy_to_pil` after `postprocess`: the value is
/// taken as f32 (`.float()`), clamped to `[0, 1]`, and `(x * 255).round()` — numpy rounds
/// halves to even, so 0.5/255 becomes 0 and 1.5/255 becomes 2.
pub fn quantize(x: f32) -> u8 {
    (x.clamp(0.0, 1.0) * 255.0).round_ties_even() as u8
}

/// Splits a float image batch `[N, C, H, W]` (any float dtype, values meant to lie in
/// `[0, 1]`; outside values are clamped) into `N` interleaved `HWC` byte buffers, each
/// `H * W * C` long, ready for [`write_png_atomic`](super::write_png_atomic).
/// A NaN anywhere is an error naming the image: it would otherwise be silently written
/// as black.
pub fn tensor_to_u8_images(images: &Tensor) -> Result<Vec<Vec<u8>>> {
    let &[n, c, h, w] = images.shape() else {
        crate::bail!(
            "images must have shape [N, C, H, W], got {:?}",
            images.shape()
        );
    };
    if !images.dtype().is_float() {
        crate::bail!("images must be a float tensor, got {}", images.dtype());
    }
    if !(1..=4).contains(&c) {
        crate::bail!(
            "images must have 1 to 4 channels, got {c} (shape {:?})",
            images.shape()
        );
    }
    let plane = h * w;
    images.with_values::<f32, _>(|v| {
        (0..n)
            .map(|i| {
                let img = &v[i * c * plane..(i + 1) * c * plane];
                if img.iter().any(|x| x.is_nan()) {
                    return Err(Error::msg(format!("image {i} of the batch contains NaN")));
                }
                let mut out = vec![0u8; c * plane];
                for ch in 0..c {
                    let src = &img[ch * plane..(ch + 1) * plane];
                    for (p, &x) in src.iter().enumerate() {
                        out[p * c + ch] = quantize(x);
                    }
                }
                Ok(out)
            })
            .collect()
    })
}

/// Stacks `N` interleaved `HWC` byte images into a `[N, C, H, W]` tensor of `dtype` with
/// values `v / 255` (computed in f32, as diffusers' `pil_to_numpy` does). The inverse of
/// [`tensor_to_u8_images`] for 8-bit data.
pub fn u8_to_tensor<P: AsRef<[u8]>>(
    images: &[P],
    height: usize,
    width: usize,
    channels: usize,
    dtype: DType,
) -> Result<Tensor> {
    if !dtype.is_float() {
        crate::bail!("u8_to_tensor makes float tensors, not {dtype}");
    }
    let (c, plane) = (channels, height * width);
    let mut vals = vec![0f32; images.len() * c * plane];
    for (i, img) in images.iter().enumerate() {
        let img = img.as_ref();
        if img.len() != plane * c {
            crate::bail!(
                "image {i} has {} bytes, expected {height}x{width}x{channels} = {}",
                img.len(),
                plane * c
            );
        }
        let dst = &mut vals[i * c * plane..(i + 1) * c * plane];
        for (p, px) in img.chunks_exact(c).enumerate() {
            for (ch, &b) in px.iter().enumerate() {
                dst[ch * plane + p] = b as f32 / 255.0;
            }
        }
    }
    Tensor::from_values(vals, &[images.len(), c, height, width], dtype)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantize_matches_numpy_round_half_to_even() {
        assert_eq!(quantize(-0.3), 0);
        assert_eq!(quantize(1.7), 255);
        assert_eq!(quantize(0.5 / 255.0), 0);
        assert_eq!(quantize(1.5 / 255.0), 2);
        assert_eq!(quantize(2.5 / 255.0), 2);
        assert_eq!(quantize(0.5), 128); // 127.5 -> 128 (even)
        assert_eq!(quantize(f32::INFINITY), 255);
    }

    #[test]
    fn bad_shapes_and_dtypes_are_errors() {
        let t = Tensor::zeros(&[2, 3, 4], DType::F32).unwrap();
        assert!(tensor_to_u8_images(&t)
            .unwrap_err()
            .to_string()
            .contains("[N, C, H, W]"));
        let t = Tensor::zeros(&[1, 5, 2, 2], DType::F32).unwrap();
        assert!(tensor_to_u8_images(&t).is_err());
        let t = Tensor::from_i64(vec![0; 4], &[1, 1, 2, 2]).unwrap();
        assert!(tensor_to_u8_images(&t).is_err());
        let e = u8_to_tensor(&[vec![0u8; 5]], 2, 1, 3, DType::F32).unwrap_err();
        assert!(e.to_string().contains("image 0 has 5 bytes"), "{e}");
        assert!(u8_to_tensor(&[vec![0u8; 2]], 2, 1, 1, DType::I64).is_err());
    }

    #[test]
    fn nan_is_an_error_naming_the_image() {
        let t = Tensor::from_vec(vec![0.1f32, 0.2, f32::NAN, 0.4], &[2, 1, 1, 2]).unwrap();
        let e = tensor_to_u8_images(&t).unwrap_err().to_string();
        assert!(e.contains("image 1"), "{e}");
    }
}
