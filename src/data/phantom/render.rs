//! Rendering a [`Case`] to pixels: pose, normal anatomy with vascular markings, findings,
//! exposure and quantum noise; per-finding masks, boxes and the anatomical regions.

use super::anatomy::{soft, Anatomy};
use super::findings::{hilum, Drawer, Finding, Side, Zone};
use super::{splitmix64, Case, Rng};

/// A finding's mask: 255 inside, 0 outside, `size * size` pixels row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct FindingMask {
    pub finding: Finding,
    pub pixels: Vec<u8>,
}

/// A box around one instance of a finding (one side's effusion, one consolidation, ...),
/// in pixels: `x0, y0` the first column and row inside, `x1, y1` one past the last.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BoxRow {
    pub finding: Finding,
    pub side: Option<Side>,
    pub x0: usize,
    pub y0: usize,
    pub x1: usize,
    pub y1: usize,
}

/// Anatomical regions of the rendered image (from the anatomy, unchanged by findings except
/// the heart's size): for tests and analysis.
#[derive(Clone, Debug, PartialEq)]
pub struct Regions {
    /// 0 outside the lungs, else `1 + 3 * side + zone` (side 0 right, 1 left; zone 0 upper,
    /// 1 mid, 2 lower), the lungs without the heart's shadow.
    pub lung_zone: Vec<u8>,
    /// Inside the heart silhouette.
    pub heart: Vec<bool>,
}

impl Regions {
    /// The code of `side`'s `zone` in [`Regions::lung_zone`].
    pub fn code(side: Side, zone: Zone) -> u8 {
        1 + 3 * side.index() as u8 + zone.index() as u8
    }
}

/// A rendered image with its masks, boxes and regions.
#[derive(Clone, Debug, PartialEq)]
pub struct Rendered {
    pub size: usize,
    /// 8-bit grayscale, row-major.
    pub pixels: Vec<u8>,
    /// One mask per positive finding that has masks, in [`Finding::ALL`] order.
    pub masks: Vec<FindingMask>,
    pub boxes: Vec<BoxRow>,
    pub regions: Regions,
}

/// A vessel branch in one lung's frame (h lateral from the midline, y down).
#[derive(Clone, Copy, Debug)]
struct Branch {
    origin: (f64, f64),
    dir: (f64, f64),
    len: f64,
    curve: f64,
    width: f64,
    bbox: (f64, f64, f64, f64),
}

impl Branch {
    fn new(origin: (f64, f64), angle: f64, len: f64, curve: f64, width: f64) -> Branch {
        let dir = (angle.cos(), angle.sin());
        let end = (origin.0 + dir.0 * len, origin.1 + dir.1 * len);
        let pad = width + curve.abs() * len * len + 0.01;
        Branch {
            origin,
            dir,
            len,
            curve,
            width,
            bbox: (
                origin.0.min(end.0) - pad,
                origin.1.min(end.1) - pad,
                origin.0.max(end.0) + pad,
                origin.1.max(end.1) + pad,
            ),
        }
    }

    fn point(&self, a: f64) -> (f64, f64) {
        let b = self.curve * a * a;
        (
            self.origin.0 + self.dir.0 * a - self.dir.1 * b,
            self.origin.1 + self.dir.1 * a + self.dir.0 * b,
        )
    }

    fn at(&self, h: f64, y: f64) -> f64 {
        if h < self.bbox.0 || y < self.bbox.1 || h > self.bbox.2 || y > self.bbox.3 {
            return 0.0;
        }
        let (dh, dy) = (h - self.origin.0, y - self.origin.1);
        let a = dh * self.dir.0 + dy * self.dir.1;
        if a < 0.0 || a > self.len {
            return 0.0;
        }
        let b = -dh * self.dir.1 + dy * self.dir.0 - self.curve * a * a;
        let w = self.width * (1.0 - 0.65 * a / self.len);
        let q = b / w;
        if q.abs() >= 1.0 {
            return 0.0;
        }
        (1.0 - q * q) * (1.0 - 0.5 * a / self.len)
    }
}

/// Vascular trees fanning out from each hilum.
fn vessels(anatomy: &Anatomy) -> [Vec<Branch>; 2] {
    Side::BOTH.map(|side| {
        let mut rng = Rng::new(splitmix64(anatomy.texture_seed ^ (side.index() as u64 + 1)));
        let (hx, hy) = hilum(anatomy, side);
        let origin = (side.sign() * (hx - 0.5), hy);
        let mut out = Vec::new();
        let n = 12 + rng.below(5);
        for i in 0..n {
            let angle = -1.35 + 2.6 * (i as f64 + rng.range(0.2, 0.8)) / n as f64;
            let len = rng.range(0.16, 0.3) * if angle > 0.9 { 0.7 } else { 1.0 };
            let start = (
                origin.0 + rng.range(-0.01, 0.02),
                origin.1 + rng.range(-0.03, 0.03),
            );
            let main = Branch::new(
                start,
                angle,
                len,
                rng.range(-1.5, 1.5),
                rng.range(0.005, 0.008),
            );
            for _ in 0..3 {
                let a = rng.range(0.3, 0.7) * len;
                let child_angle =
                    angle + rng.range(0.3, 0.7) * if rng.chance(0.5) { 1.0 } else { -1.0 };
                out.push(Branch::new(
                    main.point(a),
                    child_angle,
                    (len - a) * rng.range(0.5, 0.8),
                    rng.range(-2.0, 2.0),
                    main.width * 0.6,
                ));
            }
            out.push(main);
        }
        out
    })
}

/// Renders `case` at `size` x `size` pixels.
pub fn render(case: &Case, size: usize) -> Rendered {
    let an = &case.anatomy;
    let edge = 1.0 / (size as f64 * an.scale);
    let mut detail = Rng::new(case.detail_seed);
    let drawer = Drawer::new(an, &case.findings, &mut detail, edge);
    let trees = vessels(an);
    let noise = Rng::new(splitmix64(case.detail_seed ^ 0x006E_6F69_7365)).normals(size * size);
    let (sin, cos) = (-an.rotation).sin_cos();
    let n_inst = drawer.instances.len();
    let mut inst_masks = vec![vec![false; size * size]; n_inst];
    let mut memb = vec![0.0; n_inst];
    let curve = Curve::new(an.gamma);
    let mut pixels = vec![0u8; size * size];
    let mut lung_zone = vec![0u8; size * size];
    let mut heart_region = vec![false; size * size];
    for py in 0..size {
        for px in 0..size {
            let i = py * size + px;
            // Image point -> anatomy point (undo shift, rotation about the centre, scale).
            let (ix, iy) = (
                (px as f64 + 0.5) / size as f64 - 0.5 - an.shift.0,
                (py as f64 + 0.5) / size as f64 - 0.5 - an.shift.1,
            );
            let x = 0.5 + (cos * ix - sin * iy) / an.scale;
            let y = 0.5 + (sin * ix + cos * iy) / an.scale;
            let (body, _bone) = an.body_at(x, y, edge);
            let heart = an.heart_at(x, y, drawer.heart_scale, edge);
            let lungs = Side::BOTH.map(|s| an.lung_at(s, x, y, edge));
            memb.iter_mut().for_each(|m| *m = 0.0);
            let fx = drawer.at(an, (x, y), &lungs, heart, edge, &mut memb);
            // The heart's lower edge merges with the diaphragm (no double density below it).
            let below = soft(y - an.diaphragm_y(Side::Left, x.max(0.5)), edge * 2.0);
            let mut a = body + 0.1 * heart * (1.0 - below) + fx.attenuation;
            for side in Side::BOTH {
                let s = side.index();
                let lp = &lungs[s];
                if lp.membership <= 0.0 {
                    continue;
                }
                let lung = lp.membership * (1.0 - heart);
                let mut marks = 0.0;
                for b in &trees[s] {
                    marks += b.at(lp.h, y);
                }
                // Less air toward the lung's edges (thinner lung), a breast and soft-tissue
                // shadow over the lower lateral lung.
                let rel = ((lp.h - lp.h_med) / lp.width.max(1e-6)).clamp(0.0, 1.0);
                let thick = 0.72 + 0.28 * (4.0 * rel * (1.0 - rel)).sqrt();
                let breast = 0.05 * (rel * rel) * smooth01((lp.t - 0.55) / 0.4);
                a -= 0.27 * lung * fx.air[s] * thick;
                a += breast * lung;
                a += 0.04 * marks.min(1.5) * lung * fx.markings[s] * fx.air[s];
                if lung >= 0.5 {
                    lung_zone[i] = Regions::code(side, Zone::of(lp.t));
                }
            }
            // Gastric air bubble under the left hemidiaphragm.
            let gx = 0.5 + 0.55 * an.thorax_hw;
            let gy = an.diaphragm_y(Side::Left, gx) + 0.04;
            let g = ((x - gx) / 0.045).powi(2) + ((y - gy) / 0.025).powi(2);
            a -= 0.1 * soft(1.0 - g, 0.2);
            heart_region[i] = heart >= 0.5;
            for (k, m) in memb.iter().enumerate() {
                inst_masks[k][i] = *m >= 0.5;
            }
            // Display curve, then quantum noise that grows with the signal.
            let v = curve.at((a / 0.75) * an.gain + an.offset);
            let v = v + an.noise * noise[i] * (0.4 + 0.6 * v);
            pixels[i] = (v.clamp(0.0, 1.0) * 255.0).round() as u8;
        }
    }
    let mut masks: Vec<FindingMask> = Vec::new();
    let mut boxes = Vec::new();
    for (inst, mask) in drawer.instances.iter().zip(&inst_masks) {
        if let Some(b) = bbox(mask, size) {
            boxes.push(BoxRow {
                finding: inst.finding,
                side: inst.side,
                x0: b.0,
                y0: b.1,
                x1: b.2,
                y1: b.3,
            });
        }
        let target = match masks.iter_mut().find(|m| m.finding == inst.finding) {
            Some(m) => m,
            None => {
                masks.push(FindingMask {
                    finding: inst.finding,
                    pixels: vec![0; size * size],
                });
                masks.last_mut().unwrap()
            }
        };
        for (p, &m) in target.pixels.iter_mut().zip(mask) {
            if m {
                *p = 255;
            }
        }
    }
    masks.sort_by_key(|m| Finding::ALL.iter().position(|f| *f == m.finding));
    boxes.sort_by_key(|b| Finding::ALL.iter().position(|f| *f == b.finding));
    Rendered {
        size,
        pixels,
        masks,
        boxes,
        regions: Regions {
            lung_zone,
            heart: heart_region,
        },
    }
}

/// (x0, y0, x1, y1) of the set pixels, x1/y1 exclusive; None when empty.
fn bbox(mask: &[bool], size: usize) -> Option<(usize, usize, usize, usize)> {
    let mut b: Option<(usize, usize, usize, usize)> = None;
    for (i, _) in mask.iter().enumerate().filter(|(_, m)| **m) {
        let (x, y) = (i % size, i / size);
        b = Some(match b {
            None => (x, y, x + 1, y + 1),
            Some((x0, y0, x1, y1)) => (x0.min(x), y0.min(y), x1.max(x + 1), y1.max(y + 1)),
        });
    }
    b
}

fn smooth01(t: f64) -> f64 {
    let t = t.clamp(0.0, 1.0);
    t * t * (3.0 - 2.0 * t)
}

/// `x.clamp(0, 1)^gamma` by linear interpolation in a table (powf per pixel is slow).
struct Curve {
    table: Vec<f64>,
}

impl Curve {
    const N: usize = 1024;

    fn new(gamma: f64) -> Curve {
        Curve {
            table: (0..=Self::N + 1)
                .map(|i| (i.min(Self::N) as f64 / Self::N as f64).powf(gamma))
                .collect(),
        }
    }

    fn at(&self, x: f64) -> f64 {
        let u = x.clamp(0.0, 1.0) * Self::N as f64;
        let i = u as usize;
        let f = u - i as f64;
        self.table[i] * (1.0 - f) + self.table[i + 1] * f
    }
}
