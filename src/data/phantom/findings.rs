//! Findings of the phantom: their labels, their sampling with prevalence and co-occurrence
//! (edema with cardiomegaly and bilateral effusions, rare pneumothorax), and their drawing
//! (enlarged heart, meniscus effusion, pneumothorax rim and pleural line, zonal
//! consolidation, nodule, perihilar edema) as attenuation plus per-instance masks.

use super::anatomy::{gauss2, soft, Anatomy, LungPoint};
use super::Rng;

/// The patient's side (in a frontal image the patient's right is on the viewer's left).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Side {
    Right,
    Left,
}

impl Side {
    pub const BOTH: [Side; 2] = [Side::Right, Side::Left];

    /// 0 right, 1 left.
    pub fn index(self) -> usize {
        self as usize
    }

    /// -1 for the right (image left, x < 0.5), +1 for the left.
    pub fn sign(self) -> f64 {
        match self {
            Side::Right => -1.0,
            Side::Left => 1.0,
        }
    }

    pub fn word(self) -> &'static str {
        match self {
            Side::Right => "right",
            Side::Left => "left",
        }
    }
}

/// Effusion laterality.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Laterality {
    Right,
    Left,
    Bilateral,
}

impl Laterality {
    pub fn sides(self) -> &'static [Side] {
        match self {
            Laterality::Right => &[Side::Right],
            Laterality::Left => &[Side::Left],
            Laterality::Bilateral => &Side::BOTH,
        }
    }

    pub fn word(self) -> &'static str {
        match self {
            Laterality::Right => "right",
            Laterality::Left => "left",
            Laterality::Bilateral => "bilateral",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Severity {
    Small,
    Large,
}

/// Lung zone, by thirds of the lung's height.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Zone {
    Upper,
    Middle,
    Lower,
}

impl Zone {
    pub const ALL: [Zone; 3] = [Zone::Upper, Zone::Middle, Zone::Lower];

    /// The zone of height `t` (0 apex .. 1 costophrenic angle).
    pub fn of(t: f64) -> Zone {
        if t < 1.0 / 3.0 {
            Zone::Upper
        } else if t < 2.0 / 3.0 {
            Zone::Middle
        } else {
            Zone::Lower
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }

    pub fn word(self) -> &'static str {
        match self {
            Zone::Upper => "upper",
            Zone::Middle => "mid",
            Zone::Lower => "lower",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Effusion {
    pub laterality: Laterality,
    pub severity: Severity,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pneumothorax {
    pub side: Side,
    pub severity: Severity,
}

/// A consolidation (or a nodule) in one zone of one lung.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Consolidation {
    pub side: Side,
    pub zone: Zone,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Nodule {
    pub side: Side,
    pub zone: Zone,
}

/// The label columns, in CheXpert's names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Finding {
    NoFinding,
    Cardiomegaly,
    PleuralEffusion,
    Pneumothorax,
    Consolidation,
    LungOpacity,
    Nodule,
    Edema,
}

impl Finding {
    pub const ALL: [Finding; 8] = [
        Finding::NoFinding,
        Finding::Cardiomegaly,
        Finding::PleuralEffusion,
        Finding::Pneumothorax,
        Finding::Consolidation,
        Finding::LungOpacity,
        Finding::Nodule,
        Finding::Edema,
    ];

    /// The CheXpert-style column name.
    pub fn label(self) -> &'static str {
        match self {
            Finding::NoFinding => "No Finding",
            Finding::Cardiomegaly => "Cardiomegaly",
            Finding::PleuralEffusion => "Pleural Effusion",
            Finding::Pneumothorax => "Pneumothorax",
            Finding::Consolidation => "Consolidation",
            Finding::LungOpacity => "Lung Opacity",
            Finding::Nodule => "Nodule",
            Finding::Edema => "Edema",
        }
    }

    /// A file-name form of the label (`pleural_effusion`).
    pub fn slug(self) -> &'static str {
        match self {
            Finding::NoFinding => "no_finding",
            Finding::Cardiomegaly => "cardiomegaly",
            Finding::PleuralEffusion => "pleural_effusion",
            Finding::Pneumothorax => "pneumothorax",
            Finding::Consolidation => "consolidation",
            Finding::LungOpacity => "lung_opacity",
            Finding::Nodule => "nodule",
            Finding::Edema => "edema",
        }
    }

    /// Whether the finding is localised and gets a mask and boxes (the heart for
    /// cardiomegaly; edema and the umbrella labels are diffuse and do not).
    pub fn has_mask(self) -> bool {
        matches!(
            self,
            Finding::Cardiomegaly
                | Finding::PleuralEffusion
                | Finding::Pneumothorax
                | Finding::Consolidation
                | Finding::Nodule
        )
    }
}

/// Prevalences and co-occurrence of the sampled findings (probabilities).
#[derive(Clone, Debug, PartialEq)]
pub struct Prevalence {
    /// Pulmonary edema.
    pub edema: f64,
    /// Cardiomegaly with edema / without it.
    pub cardiomegaly_with_edema: f64,
    pub cardiomegaly: f64,
    /// Pleural effusion with edema / with cardiomegaly (no edema) / otherwise.
    pub effusion_with_edema: f64,
    pub effusion_with_cardiomegaly: f64,
    pub effusion: f64,
    /// Share of bilateral effusions with edema / otherwise; share of large effusions.
    pub bilateral_with_edema: f64,
    pub bilateral: f64,
    pub large_effusion: f64,
    pub pneumothorax: f64,
    pub large_pneumothorax: f64,
    /// At least one consolidation; a second one in another zone given one.
    pub consolidation: f64,
    pub second_consolidation: f64,
    pub nodule: f64,
}

impl Default for Prevalence {
    fn default() -> Self {
        Prevalence {
            edema: 0.10,
            cardiomegaly_with_edema: 0.75,
            cardiomegaly: 0.14,
            effusion_with_edema: 0.70,
            effusion_with_cardiomegaly: 0.35,
            effusion: 0.09,
            bilateral_with_edema: 0.75,
            bilateral: 0.25,
            large_effusion: 0.35,
            pneumothorax: 0.04,
            large_pneumothorax: 0.3,
            consolidation: 0.14,
            second_consolidation: 0.15,
            nodule: 0.07,
        }
    }
}

impl Prevalence {
    /// The expected share of images positive for `finding` under these settings.
    pub fn marginal(&self, finding: Finding) -> f64 {
        let (e, c) = (self.edema, self.cardiomegaly);
        let cardio = e * self.cardiomegaly_with_edema + (1.0 - e) * c;
        let effusion = e * self.effusion_with_edema
            + (1.0 - e) * (c * self.effusion_with_cardiomegaly + (1.0 - c) * self.effusion);
        match finding {
            Finding::Cardiomegaly => cardio,
            Finding::PleuralEffusion => effusion,
            Finding::Pneumothorax => self.pneumothorax,
            Finding::Consolidation => self.consolidation,
            Finding::LungOpacity => 1.0 - (1.0 - self.consolidation) * (1.0 - e),
            Finding::Nodule => self.nodule,
            Finding::Edema => e,
            Finding::NoFinding => {
                (1.0 - e)
                    * (1.0 - c)
                    * (1.0 - self.effusion)
                    * (1.0 - self.pneumothorax)
                    * (1.0 - self.consolidation)
                    * (1.0 - self.nodule)
            }
        }
    }
}

/// One image's findings (the ground truth the image, masks, labels and report share).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Findings {
    pub cardiomegaly: bool,
    pub effusion: Option<Effusion>,
    pub pneumothorax: Option<Pneumothorax>,
    /// At most one per zone and side.
    pub consolidation: Vec<Consolidation>,
    pub nodule: Option<Nodule>,
    pub edema: bool,
}

impl Findings {
    /// Draws findings with the prevalences and co-occurrences of `p`.
    pub fn sample(rng: &mut Rng, p: &Prevalence) -> Findings {
        let edema = rng.chance(p.edema);
        let cardiomegaly = rng.chance(if edema {
            p.cardiomegaly_with_edema
        } else {
            p.cardiomegaly
        });
        let effusion_p = if edema {
            p.effusion_with_edema
        } else if cardiomegaly {
            p.effusion_with_cardiomegaly
        } else {
            p.effusion
        };
        let effusion = rng.chance(effusion_p).then(|| {
            let bilateral = if edema {
                p.bilateral_with_edema
            } else {
                p.bilateral
            };
            let laterality = if rng.chance(bilateral) {
                Laterality::Bilateral
            } else if rng.chance(0.55) {
                Laterality::Right
            } else {
                Laterality::Left
            };
            let severity = if rng.chance(p.large_effusion) {
                Severity::Large
            } else {
                Severity::Small
            };
            Effusion {
                laterality,
                severity,
            }
        });
        let pneumothorax = rng.chance(p.pneumothorax).then(|| Pneumothorax {
            side: *rng.pick(&Side::BOTH),
            severity: if rng.chance(p.large_pneumothorax) {
                Severity::Large
            } else {
                Severity::Small
            },
        });
        let mut consolidation = Vec::new();
        if rng.chance(p.consolidation) {
            // Often on the side of a unilateral effusion (parapneumonic), mostly lower zones.
            let side = match effusion.map(|e| e.laterality) {
                Some(Laterality::Right) if rng.chance(0.6) => Side::Right,
                Some(Laterality::Left) if rng.chance(0.6) => Side::Left,
                _ => *rng.pick(&Side::BOTH),
            };
            let zone = Zone::ALL[rng.weighted(&[0.2, 0.3, 0.5])];
            consolidation.push(Consolidation { side, zone });
            if rng.chance(p.second_consolidation) {
                let other = Consolidation {
                    side: *rng.pick(&Side::BOTH),
                    zone: *rng.pick(&Zone::ALL),
                };
                if other != consolidation[0] {
                    consolidation.push(other);
                }
            }
        }
        let nodule = rng.chance(p.nodule).then(|| Nodule {
            side: *rng.pick(&Side::BOTH),
            zone: Zone::ALL[rng.weighted(&[0.45, 0.35, 0.2])],
        });
        Findings {
            cardiomegaly,
            effusion,
            pneumothorax,
            consolidation,
            nodule,
            edema,
        }
    }

    /// Whether the image is positive for `finding`.
    pub fn has(&self, finding: Finding) -> bool {
        match finding {
            Finding::NoFinding => self.is_normal(),
            Finding::Cardiomegaly => self.cardiomegaly,
            Finding::PleuralEffusion => self.effusion.is_some(),
            Finding::Pneumothorax => self.pneumothorax.is_some(),
            Finding::Consolidation => !self.consolidation.is_empty(),
            Finding::LungOpacity => !self.consolidation.is_empty() || self.edema,
            Finding::Nodule => self.nodule.is_some(),
            Finding::Edema => self.edema,
        }
    }

    /// No finding at all.
    pub fn is_normal(&self) -> bool {
        !self.cardiomegaly
            && self.effusion.is_none()
            && self.pneumothorax.is_none()
            && self.consolidation.is_empty()
            && self.nodule.is_none()
            && !self.edema
    }

    /// The positive labels, in [`Finding::ALL`] order.
    pub fn positives(&self) -> Vec<Finding> {
        Finding::ALL.into_iter().filter(|f| self.has(*f)).collect()
    }
}

/// One drawn, localised finding (one side's effusion, one consolidation, ...).
#[derive(Clone, Debug, PartialEq)]
pub struct Instance {
    pub finding: Finding,
    pub side: Option<Side>,
}

/// What the findings add at one point.
#[derive(Clone, Copy, Debug, Default)]
pub struct Effect {
    /// Added attenuation.
    pub attenuation: f64,
    /// Factor on each lung's air lucency (fluid replaces air) and on its vascular markings.
    pub air: [f64; 2],
    pub markings: [f64; 2],
}

#[derive(Clone, Debug)]
struct Blob {
    side: Side,
    lobes: Vec<(f64, f64, f64, f64)>,
}

/// The findings of one image with their shapes drawn, ready to evaluate at any point.
#[derive(Clone, Debug)]
pub struct Drawer {
    pub instances: Vec<Instance>,
    /// Heart half widths are scaled by this (1 without cardiomegaly).
    pub heart_scale: f64,
    /// Per side: (fluid level above the angle, lateral rise), as fractions of lung height.
    effusion: [Option<(f64, f64)>; 2],
    /// Pneumothorax side and rim width.
    pneumothorax: Option<(Side, f64)>,
    consolidation: Vec<Blob>,
    /// Nodule side, centre and radius.
    nodule: Option<(Side, f64, f64, f64)>,
    edema: Option<f64>,
    hila: [(f64, f64); 2],
}

impl Drawer {
    /// Draws the shapes of `findings` on `anatomy` from `rng`; `edge` is a pixel in
    /// anatomy units (the least size a shape may have).
    pub fn new(anatomy: &Anatomy, findings: &Findings, rng: &mut Rng, edge: f64) -> Drawer {
        let mut instances = Vec::new();
        let heart_scale = if findings.cardiomegaly {
            instances.push(Instance {
                finding: Finding::Cardiomegaly,
                side: None,
            });
            rng.range(0.54, 0.64) / anatomy.ctr()
        } else {
            1.0
        };
        let mut effusion = [None, None];
        if let Some(e) = findings.effusion {
            for &side in e.laterality.sides() {
                effusion[side.index()] = Some(match e.severity {
                    Severity::Small => (rng.range(0.01, 0.04), rng.range(0.07, 0.11)),
                    Severity::Large => (rng.range(0.26, 0.4), rng.range(0.12, 0.2)),
                });
                instances.push(Instance {
                    finding: Finding::PleuralEffusion,
                    side: Some(side),
                });
            }
        }
        let pneumothorax = findings.pneumothorax.map(|p| {
            instances.push(Instance {
                finding: Finding::Pneumothorax,
                side: Some(p.side),
            });
            let gap = match p.severity {
                Severity::Small => rng.range(0.018, 0.03),
                Severity::Large => rng.range(0.05, 0.085),
            };
            (p.side, gap.max(2.5 * edge))
        });
        let mut consolidation = Vec::new();
        for c in &findings.consolidation {
            instances.push(Instance {
                finding: Finding::Consolidation,
                side: Some(c.side),
            });
            let (cx, cy) = point_in_zone(anatomy, c.side, c.zone, heart_scale, rng, 0.3, 0.75);
            let n = 7 + rng.below(5);
            let lobes = (0..n)
                .map(|i| {
                    let spread = if i == 0 { 0.0 } else { 0.05 };
                    (
                        cx + rng.range(-spread, spread),
                        cy + rng.range(-spread, spread) * 0.8,
                        rng.range(0.012, 0.028).max(1.5 * edge),
                        rng.range(0.5, 1.0),
                    )
                })
                .collect();
            consolidation.push(Blob {
                side: c.side,
                lobes,
            });
        }
        let nodule = findings.nodule.map(|n| {
            instances.push(Instance {
                finding: Finding::Nodule,
                side: Some(n.side),
            });
            let (cx, cy) = point_in_zone(anatomy, n.side, n.zone, heart_scale, rng, 0.25, 0.75);
            (n.side, cx, cy, rng.range(0.011, 0.022).max(1.2 * edge))
        });
        let edema = findings.edema.then(|| rng.range(0.7, 1.0));
        let hila = Side::BOTH.map(|side| hilum(anatomy, side));
        Drawer {
            instances,
            heart_scale,
            effusion,
            pneumothorax,
            consolidation,
            nodule,
            edema,
            hila,
        }
    }

    /// The findings' effect at point (x, y) given both lungs' geometry there and the heart's
    /// membership; writes each instance's membership (0..1) into `masks`.
    pub fn at(
        &self,
        anatomy: &Anatomy,
        (x, y): (f64, f64),
        lungs: &[LungPoint; 2],
        heart: f64,
        edge: f64,
        masks: &mut [f64],
    ) -> Effect {
        let mut e = Effect {
            attenuation: 0.0,
            air: [1.0; 2],
            markings: [1.0; 2],
        };
        let mut k = 0;
        if self.heart_scale != 1.0 {
            masks[k] = heart;
            k += 1;
        }
        for side in Side::BOTH {
            let s = side.index();
            let Some((level, rise)) = self.effusion[s] else {
                continue;
            };
            let lp = &lungs[s];
            let height = anatomy.base_y[s] - anatomy.apex_y;
            let lateral =
                ((lp.h - lp.h_med) / (anatomy.thorax_hw - anatomy.mediastinum_hw)).clamp(0.0, 1.0);
            let top = anatomy.base_y[s] - height * (level + rise * lateral.powf(2.5));
            // Fluid thickens downward from the meniscus; it fills the lung there.
            let below = y - top;
            let fill = soft(below, edge) * (0.75 + 0.25 * (below / 0.05).clamp(0.0, 1.0));
            let m = lp.membership * (1.0 - heart);
            e.air[s] *= 1.0 - fill;
            e.attenuation += 0.03 * fill * m;
            masks[k] = soft(below, edge) * m;
            k += 1;
        }
        if let Some((side, gap)) = self.pneumothorax {
            let s = side.index();
            let lp = &lungs[s];
            // The rim narrows toward the base (air collects apically and laterally).
            let g = gap * (1.0 - smoothstep(0.55, 1.0, lp.t));
            let m = lp.membership * (1.0 - heart);
            let rim = soft(g - lp.wall, edge) * m;
            e.markings[s] *= 1.0 - rim;
            e.attenuation -= 0.06 * rim;
            // The visceral pleural line at the edge of the collapsed lung.
            let line = (1.0 - (lp.wall - g).abs() / (0.6 * edge).max(0.003)).max(0.0);
            e.attenuation += 0.1 * line * m * (g > edge) as u8 as f64;
            // The collapsed lung is a little denser.
            e.attenuation += 0.06 * (gap / 0.085) * soft(lp.wall - g, edge) * m;
            masks[k] = rim;
            k += 1;
        }
        for blob in &self.consolidation {
            let s = blob.side.index();
            let m = lungs[s].membership * (1.0 - heart);
            let mut d = 0.0;
            if m > 0.0 {
                for &(cx, cy, r, w) in &blob.lobes {
                    d += w * gauss2(x - cx, y - cy, r);
                }
            }
            let d = smoothstep(0.15, 0.9, d) * m;
            e.attenuation += 0.22 * d;
            e.markings[s] *= 1.0 - 0.5 * d;
            masks[k] = soft(d - 0.35, 0.1);
            k += 1;
        }
        if let Some((_, cx, cy, r)) = self.nodule {
            let dist = ((x - cx).powi(2) + (y - cy).powi(2)).sqrt();
            let inside = soft(r - dist, edge);
            let dome = (1.0 - (dist / r).powi(2)).max(0.0).sqrt();
            e.attenuation += 0.16 * inside + 0.08 * dome;
            masks[k] = inside;
        }
        if let Some(strength) = self.edema {
            // Bilateral perihilar haze ("bat wing"), fading to the periphery, with
            // indistinct vessels.
            for side in Side::BOTH {
                let s = side.index();
                let (hx, hy) = self.hila[s];
                let dx = (x - hx) / 0.13;
                let dy = (y - hy) / 0.16;
                let haze = (-(dx * dx + dy * dy) / 2.0).exp();
                let m = lungs[s].membership * (1.0 - heart);
                e.attenuation += 0.2 * strength * haze * m + 0.04 * strength * m;
                e.markings[s] *= 1.0 + 0.3 * haze;
            }
        }
        e
    }
}

/// A point inside `side`'s lung in `zone`, at a fraction of the lung's width between
/// `lo` and `hi` from its medial edge (clear of the heart).
fn point_in_zone(
    anatomy: &Anatomy,
    side: Side,
    zone: Zone,
    heart_scale: f64,
    rng: &mut Rng,
    lo: f64,
    hi: f64,
) -> (f64, f64) {
    let (t0, t1) = match zone {
        Zone::Upper => (0.14, 0.3),
        Zone::Middle => (0.4, 0.6),
        Zone::Lower => (0.7, 0.86),
    };
    // The candidate deepest inside the lung and clear of the heart; the first one with a
    // comfortable margin is taken.
    let mut best = ((0.5, 0.5), f64::NEG_INFINITY);
    for attempt in 0..48 {
        // Later attempts move laterally (and, in the lower zone, down toward the
        // costophrenic angle), clear of a large heart; a nodule may still end up
        // retrocardiac when the heart hides the whole zone.
        let (lo, hi, t1) = if attempt < 16 {
            (lo, hi, t1)
        } else {
            (
                lo.max(0.55),
                0.9,
                if zone == Zone::Lower { 0.93 } else { t1 },
            )
        };
        let t = rng.range(t0, t1);
        let y = anatomy.apex_y + t * (anatomy.base_y[side.index()] - anatomy.apex_y);
        let probe = anatomy.lung_at(side, 0.5, y, 1e-3);
        let h = probe.h_med + rng.range(lo, hi) * (probe.h_lat - probe.h_med);
        let x = 0.5 + side.sign() * h;
        let lp = anatomy.lung_at(side, x, y, 1e-3);
        let margin = (h - lp.h_med)
            .min(lp.h_lat - h)
            .min(anatomy.diaphragm_y(side, x) - y);
        let score = margin - anatomy.heart_at(x, y, heart_scale * 1.15, 1e-3);
        if score > best.1 {
            best = ((x, y), score);
        }
        if margin > 0.03 && anatomy.heart_at(x, y, heart_scale * 1.15, 1e-3) <= 0.0 {
            break;
        }
    }
    best.0
}

/// The hilum of `side`: beside the mediastinum at about 45 % of the lung's height.
pub fn hilum(anatomy: &Anatomy, side: Side) -> (f64, f64) {
    let y = anatomy.apex_y + 0.42 * (anatomy.base_y[side.index()] - anatomy.apex_y);
    (0.5 + side.sign() * (anatomy.mediastinum_hw + 0.035), y)
}

fn smoothstep(a: f64, b: f64, x: f64) -> f64 {
    let t = ((x - a) / (b - a)).clamp(0.0, 1.0);
    t * t * (3.0 - 2.0 * t)
}
