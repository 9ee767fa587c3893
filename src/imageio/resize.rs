//! Image resizing with an antialiased bilinear (triangle) filter, as PIL's
//! `Image.resize(..., BILINEAR)` / torchvision's `Resize(antialias=True)`, and crops.

/// Per output pixel: the first input index and the normalised weights.
fn filter_taps(inp: usize, out: usize) -> Vec<(usize, Vec<f32>)> {
    let scale = inp as f64 / out as f64;
    let support = scale.max(1.0);
    (0..out)
        .map(|o| {
            let center = (o as f64 + 0.5) * scale;
            let lo = ((center - support).floor().max(0.0)) as usize;
            let hi = ((center + support).ceil() as usize).min(inp);
            let mut w: Vec<f64> = (lo..hi)
                .map(|i| (1.0 - ((i as f64 + 0.5 - center) / support).abs()).max(0.0))
                .collect();
            let sum: f64 = w.iter().sum();
            if sum > 0.0 {
                w.iter_mut().for_each(|x| *x /= sum);
            }
            (lo, w.into_iter().map(|x| x as f32).collect())
        })
        .collect()
}

/// Resizes an interleaved `(h, w, c)` image to `(oh, ow)`; values stay in the
/// input's range (0..=255 for u8 input), as f32.
pub fn resize_bilinear(
    pixels: &[u8],
    w: usize,
    h: usize,
    c: usize,
    ow: usize,
    oh: usize,
) -> Vec<f32> {
    assert_eq!(
        pixels.len(),
        w * h * c,
        "resize_bilinear: pixel buffer size"
    );
    let xt = filter_taps(w, ow);
    let yt = filter_taps(h, oh);
    // Horizontal pass: (h, ow, c).
    let mut tmp = vec![0f32; h * ow * c];
    for y in 0..h {
        let row = &pixels[y * w * c..(y + 1) * w * c];
        for (ox, (lo, ws)) in xt.iter().enumerate() {
            for ch in 0..c {
                let mut acc = 0f32;
                for (k, wt) in ws.iter().enumerate() {
                    acc += wt * row[(lo + k) * c + ch] as f32;
                }
                tmp[(y * ow + ox) * c + ch] = acc;
            }
        }
    }
    // Vertical pass: (oh, ow, c).
    let mut out = vec![0f32; oh * ow * c];
    for (oy, (lo, ws)) in yt.iter().enumerate() {
        for x in 0..ow * c {
            let mut acc = 0f32;
            for (k, wt) in ws.iter().enumerate() {
                acc += wt * tmp[(lo + k) * ow * c + x];
            }
            out[oy * ow * c + x] = acc;
        }
    }
    out
}

/// The output size that scales the shorter side to `size` (torchvision's
/// `Resize(size)` with an int: the longer side is `int(size * long / short)`).
pub fn shorter_side_size(w: usize, h: usize, size: usize) -> (usize, usize) {
    if w <= h {
        (size, (size as f64 * h as f64 / w as f64) as usize)
    } else {
        ((size as f64 * w as f64 / h as f64) as usize, size)
    }
}

/// Crops an interleaved `(h, w, c)` f32 image to `(ch, cw)` at `(top, left)`.
pub fn crop(
    pixels: &[f32],
    w: usize,
    c: usize,
    top: usize,
    left: usize,
    cw: usize,
    chh: usize,
) -> Vec<f32> {
    let mut out = Vec::with_capacity(cw * chh * c);
    for y in top..top + chh {
        out.extend_from_slice(&pixels[(y * w + left) * c..(y * w + left + cw) * c]);
    }
    out
}

/// torchvision's `CenterCrop` offsets: `(int(round((h - ch) / 2)), int(round((w - cw) / 2)))`,
/// with Python's rounding of halves to even (a margin of 85 gives 42, not 43).
pub fn center_offsets(w: usize, h: usize, cw: usize, ch: usize) -> (usize, usize) {
    let half = |m: usize| (m as f64 / 2.0).round_ties_even() as usize;
    (half(h - ch), half(w - cw))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_and_constant_images_are_preserved() {
        let px: Vec<u8> = (0..4 * 3 * 2).map(|i| (i * 7 % 256) as u8).collect();
        let same = resize_bilinear(&px, 4, 3, 2, 4, 3);
        assert!(same
            .iter()
            .zip(&px)
            .all(|(a, b)| (a - *b as f32).abs() < 1e-4));
        let flat = vec![100u8; 10 * 6];
        let down = resize_bilinear(&flat, 10, 6, 1, 3, 2);
        assert!(down.iter().all(|v| (v - 100.0).abs() < 1e-3), "{down:?}");
        let up = resize_bilinear(&flat, 10, 6, 1, 25, 13);
        assert!(up.iter().all(|v| (v - 100.0).abs() < 1e-3));
    }

    #[test]
    fn halving_averages_pairs() {
        // A 2x downscale with the triangle filter of support 2 averages neighbours
        // with weights 1/8, 3/8, 3/8, 1/8 (PIL's antialiased bilinear).
        let px: Vec<u8> = vec![0, 80, 160, 240];
        let out = resize_bilinear(&px, 4, 1, 1, 2, 1);
        let expect0 = (0.0 * 3.0 + 80.0 * 3.0 + 160.0) / 7.0; // left edge: taps 0..3
        assert!((out[0] - expect0 as f32).abs() < 1e-3, "{out:?}");
        assert_eq!(shorter_side_size(400, 300, 256), (341, 256));
        assert_eq!(center_offsets(341, 256, 256, 256), (0, 42));
        assert_eq!(center_offsets(343, 256, 256, 256), (0, 44));
        let c = crop(&[0., 1., 2., 3., 4., 5.], 3, 1, 1, 1, 2, 1);
        assert_eq!(c, vec![4., 5.]);
    }
}
