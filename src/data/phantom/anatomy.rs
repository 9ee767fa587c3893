//! The normal chest of the phantom: seeded shape parameters and the attenuation of thorax
//! wall, lungs with vascular markings, heart, mediastinum, spine, ribs and clavicles.
//!
//! Coordinates are in "anatomy units": x from 0 (image left = patient's right) to 1, y from
//! 0 (top) to 1, before the pose (rotation, shift, scale) is applied at render time.

use super::findings::Side;
use super::Rng;

/// One image's anatomy and exposure: every shape parameter of the normal chest.
#[derive(Clone, Debug, PartialEq)]
pub struct Anatomy {
    /// Rotation (radians), shift and scale of the patient in the image (positioning).
    pub rotation: f64,
    pub shift: (f64, f64),
    pub scale: f64,
    /// Half width of the bony thorax (inner chest wall), from the midline.
    pub thorax_hw: f64,
    /// Top of the lung apices.
    pub apex_y: f64,
    /// Lateral costophrenic angle of each lung (`[right, left]`), set by inspiration depth.
    pub base_y: [f64; 2],
    /// Height of each hemidiaphragm's dome above its costophrenic angle.
    pub dome_h: [f64; 2],
    /// Half width of the upper mediastinum.
    pub mediastinum_hw: f64,
    /// Heart centre, half widths to the patient's right and left, half height (normal size).
    pub heart_c: (f64, f64),
    pub heart_right: f64,
    pub heart_left: f64,
    pub heart_hh: f64,
    /// First posterior rib's height at the spine and the rib spacing.
    pub rib0_y: f64,
    pub rib_spacing: f64,
    /// Clavicle height at the sternal end and its rise to the lateral end.
    pub clavicle_y: f64,
    pub clavicle_rise: f64,
    /// Soft tissue thickness (chest wall, shoulders).
    pub soft_tissue: f64,
    /// Exposure: gain, offset and gamma of the display curve; quantum noise level.
    pub gain: f64,
    pub offset: f64,
    pub gamma: f64,
    pub noise: f64,
    /// Seeds the vascular markings.
    pub texture_seed: u64,
}

impl Anatomy {
    /// Draws a normal chest with varied build, inspiration, positioning and exposure.
    pub fn sample(rng: &mut Rng) -> Anatomy {
        let thorax_hw = rng.range(0.35, 0.41);
        let base = rng.range(0.73, 0.82);
        let right_higher = rng.range(0.005, 0.03);
        let mediastinum_hw = rng.range(0.055, 0.075);
        // Normal cardiothoracic ratio 0.38-0.48, about a third of the width right of midline.
        let ctr = rng.range(0.38, 0.48);
        let width = ctr * 2.0 * thorax_hw;
        let right_frac = rng.range(0.28, 0.36);
        let heart_hh = rng.range(0.10, 0.125);
        Anatomy {
            rotation: rng.range(-0.05, 0.05),
            shift: (rng.range(-0.025, 0.025), rng.range(-0.02, 0.025)),
            scale: rng.range(0.94, 1.04),
            thorax_hw,
            apex_y: rng.range(0.10, 0.15),
            base_y: [base - right_higher, base],
            dome_h: [rng.range(0.04, 0.07), rng.range(0.035, 0.065)],
            mediastinum_hw,
            heart_c: (
                0.5 + rng.range(-0.005, 0.01),
                base - 0.045 - heart_hh * rng.range(0.75, 0.95),
            ),
            heart_right: width * right_frac,
            heart_left: width * (1.0 - right_frac),
            heart_hh,
            rib0_y: rng.range(0.09, 0.12),
            rib_spacing: rng.range(0.062, 0.074),
            clavicle_y: rng.range(0.14, 0.19),
            clavicle_rise: rng.range(0.035, 0.075),
            soft_tissue: rng.range(0.35, 0.42),
            gain: rng.range(0.88, 1.12),
            offset: rng.range(-0.04, 0.04),
            gamma: rng.range(0.85, 1.2),
            noise: rng.range(0.008, 0.025),
            texture_seed: (rng.uniform() * 9.0e15) as u64,
        }
    }

    /// The cardiothoracic ratio of this (normal) heart.
    pub fn ctr(&self) -> f64 {
        (self.heart_right + self.heart_left) / (2.0 * self.thorax_hw)
    }

    /// The lung of `side` at point (x, y).
    pub fn lung_at(&self, side: Side, x: f64, y: f64, edge: f64) -> LungPoint {
        let s = side.index();
        let h = side.sign() * (x - 0.5);
        let base = self.base_y[s];
        let t = (y - self.apex_y) / (base - self.apex_y);
        let (med, lat) = (self.mediastinum_hw + 0.01, self.thorax_hw - 0.02);
        let h_apex = med + 0.38 * (lat - med);
        let f = if t <= 0.0 {
            0.0
        } else {
            let tc = t.min(1.0);
            (1.0 - (1.0 - tc) * (1.0 - tc)).sqrt()
        };
        let h_lat = h_apex + (lat - h_apex) * f;
        let h_med = h_apex - (h_apex - med) * f * f.sqrt().sqrt();
        let bottom = self.diaphragm_y(side, x);
        let d = (h - h_med).min(h_lat - h).min(bottom - y);
        let m = if t <= 0.0 { 0.0 } else { soft(d, edge) };
        LungPoint {
            membership: m,
            t,
            h,
            wall: (h_lat - h).min((y - self.apex_y) * 0.8),
            depth: (bottom - y) / (bottom - self.apex_y),
            width: (h_lat - h_med).max(0.0),
            h_med,
            h_lat,
        }
    }

    /// The top of the hemidiaphragm under `side` at x (a dome, lowest at the lateral angle).
    pub fn diaphragm_y(&self, side: Side, x: f64) -> f64 {
        let s = side.index();
        let h = side.sign() * (x - 0.5);
        let (med, lat) = (self.mediastinum_hw + 0.01, self.thorax_hw - 0.02);
        let hc = med + 0.4 * (lat - med);
        let hw = 0.6 * (lat - med);
        let q = (h - hc) / hw;
        self.base_y[s] - self.dome_h[s] * (1.0 - q * q).max(0.0)
    }

    /// Membership of the heart silhouette at (x, y), with its half widths scaled by `scale`.
    pub fn heart_at(&self, x: f64, y: f64, scale: f64, edge: f64) -> f64 {
        let (cx, cy) = self.heart_c;
        let a = if x < cx {
            self.heart_right * scale
        } else {
            self.heart_left * scale
        };
        // Egg-shaped: the upper half tapers into the mediastinum.
        let b = self.heart_hh * (1.0 + 0.35 * (scale - 1.0)) * if y < cy { 1.3 } else { 1.0 };
        let (u, v) = ((x - cx) / a, (y - cy) / b);
        let r = (u * u + v * v).sqrt();
        soft((1.0 - r) * a.min(b), edge)
    }

    /// Attenuation of the normal chest at (x, y) without the lungs' air and markings:
    /// chest wall and soft tissue, mediastinum, spine, ribs, clavicles. Returns
    /// (soft tissue and bone, bone only).
    pub fn body_at(&self, x: f64, y: f64, edge: f64) -> (f64, f64) {
        let ax = (x - 0.5).abs();
        // Body outline: neck, sloping shoulders, chest wall.
        let chest = self.thorax_hw + 0.06;
        let shoulder_y = self.clavicle_y - 0.02;
        let hw = if y < shoulder_y {
            let q = (y / shoulder_y).clamp(0.0, 1.0);
            0.11 + (chest + 0.06 - 0.11) * q.powf(0.6)
        } else {
            chest + 0.06 * (-(y - shoulder_y) * 12.0).exp()
        };
        let body = soft(hw - ax, edge * 2.0);
        if body <= 0.0 {
            return (0.0, 0.0);
        }
        // Thicker tissue toward the edges and at the shoulders (projection through the wall).
        let rim = (ax / hw).clamp(0.0, 1.0);
        let mut a = self.soft_tissue * body * (0.85 + 0.15 * rim * rim);
        // Mediastinum: widest at the aortic arch, tapering up into the neck.
        let top_w = self.mediastinum_hw * (0.8 + 0.2 * (y / 0.3).min(1.0));
        let knob = 0.02 * gauss2(x - 0.5 - self.mediastinum_hw, y - 0.3, 0.025);
        if y < self.heart_c.1 {
            a += 0.12 * soft(top_w - ax, edge);
        }
        a += 0.10 * knob / 0.02;
        // Liver and spleen under the hemidiaphragms.
        let side = if x < 0.5 { Side::Right } else { Side::Left };
        a += 0.13
            * soft(y - self.diaphragm_y(side, x), edge * 2.0)
            * soft(self.thorax_hw + 0.01 - ax, edge * 4.0);
        // Trachea: a lucent column down to the carina.
        let carina = self.apex_y + 0.22;
        if y < carina {
            a -= 0.07 * soft(0.016 - (x - 0.5 + 0.005).abs(), edge);
        }
        // Spine: vertebral bodies with end plates, seen through the mediastinum.
        let mut bone = 0.0;
        let spine = soft(0.034 - ax, edge);
        if spine > 0.0 {
            let phase = ((y - self.rib0_y) / self.rib_spacing).fract().abs();
            let plate = if phase < 0.1 { 0.6 } else { 1.0 };
            bone += 0.06 * spine * plate + 0.04 * soft(0.006 - (0.034 - ax).abs(), edge);
        }
        // Posterior ribs: arches convex upward with brighter cortices; anterior ribs fainter,
        // sloping down toward the midline.
        let h = ax;
        if h > 0.02 && h < self.thorax_hw + 0.035 {
            let fade_lat = soft(self.thorax_hw + 0.03 - h, edge * 3.0);
            for k in 0..11 {
                let y0 = self.rib0_y + k as f64 * self.rib_spacing;
                let c = y0 - 0.42 * h + 1.45 * h * h;
                let th = 0.009 + 0.006 * h / self.thorax_hw;
                let p = (y - c).abs() / th;
                if p < 1.0 {
                    bone += 0.085 * fade_lat * (0.65 + 0.35 * p.powi(4)) * soft(1.0 - p, edge / th);
                }
                if h > 0.1 {
                    let ca = y0 + 0.05 + 0.28 * (self.thorax_hw - h);
                    let pa = (y - ca).abs() / 0.011;
                    if pa < 1.0 {
                        bone += 0.035 * fade_lat * ((h - 0.1) / 0.1).min(1.0) * (1.0 - pa * pa);
                    }
                }
            }
        }
        // Clavicles: gently S-shaped bars from the sternal notch out to the shoulders.
        let cl0 = (0.03, self.clavicle_y);
        let cl1 = (0.31, self.clavicle_y - self.clavicle_rise);
        let s = ((h - cl0.0) / (cl1.0 - cl0.0)).clamp(0.0, 1.0);
        let cy = cl0.1 + (cl1.1 - cl0.1) * s + 0.012 * (s * std::f64::consts::PI * 2.0).sin();
        let ct = 0.011 * (1.0 + 0.3 * (1.0 - s));
        let dc = (y - cy).abs();
        if dc < ct && h > 0.02 && h < 0.34 {
            let p = dc / ct;
            bone += 0.11 * (0.7 + 0.3 * p * p) * soft(ct - dc, edge);
        }
        (a + bone * body, bone * body)
    }
}

/// One lung's geometry at a point.
#[derive(Clone, Copy, Debug)]
pub struct LungPoint {
    /// 1 inside, 0 outside, soft at the edge.
    pub membership: f64,
    /// Height from the apex (0) to the costophrenic angle (1).
    pub t: f64,
    /// Distance from the midline toward this lung's side.
    pub h: f64,
    /// Distance to the chest wall (lateral and apical pleura).
    pub wall: f64,
    /// Height above the diaphragm as a fraction of the lung's height.
    pub depth: f64,
    /// Width of the lung at this height, and its medial and lateral edges (in `h`).
    pub width: f64,
    pub h_med: f64,
    pub h_lat: f64,
}

/// 0 at d <= -edge/2, 1 at d >= edge/2, linear between (anti-aliased edges).
pub fn soft(d: f64, edge: f64) -> f64 {
    (d / edge + 0.5).clamp(0.0, 1.0)
}

/// exp(-(dx²+dy²)/(2σ²)).
pub fn gauss2(dx: f64, dy: f64, sigma: f64) -> f64 {
    (-(dx * dx + dy * dy) / (2.0 * sigma * sigma)).exp()
}
