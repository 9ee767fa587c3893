//! Free-text reports for the phantom: FINDINGS and IMPRESSION written from the ground truth,
//! with seeded, varied phrasing, laterality and severity, and negated pertinent negatives.
//!
//! Each positive finding has its own sentence(s) free of negation words; negative findings
//! are only named in sentences that negate them ("No ...", "without ...", "not ...").

use super::findings::{Consolidation, Findings, Laterality, Severity, Side, Zone};
use super::Rng;

/// A report's two sections.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    pub findings: String,
    pub impression: String,
}

impl Report {
    /// `FINDINGS: ...` and `IMPRESSION: ...` on their own lines (the layout
    /// [`crate::data::select_text`] parses).
    pub fn text(&self) -> String {
        format!(
            "FINDINGS: {}\nIMPRESSION: {}",
            self.findings, self.impression
        )
    }
}

fn cap(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
        None => String::new(),
    }
}

fn pick(rng: &mut Rng, options: &[&str]) -> String {
    rng.pick(options).to_string()
}

/// "right lower lobe", "left mid lung zone", "right base", ...
fn location(rng: &mut Rng, side: Side, zone: Zone) -> String {
    let s = side.word();
    let options: Vec<String> = match (side, zone) {
        (_, Zone::Upper) => vec![
            format!("{s} upper lobe"),
            format!("{s} upper lung zone"),
            format!("{s} upper lung"),
        ],
        (Side::Right, Zone::Middle) => vec![
            "right middle lobe".into(),
            "right mid lung zone".into(),
            "right midlung".into(),
        ],
        (Side::Left, Zone::Middle) => vec![
            "left mid lung zone".into(),
            "left midlung".into(),
            "lingula of the left lung".into(),
        ],
        (_, Zone::Lower) => vec![
            format!("{s} lower lobe"),
            format!("{s} lung base"),
            format!("{s} lower lung zone"),
        ],
    };
    rng.pick(&options).clone()
}

fn effusion_size(rng: &mut Rng, severity: Severity) -> String {
    match severity {
        Severity::Small => pick(rng, &["small", "small", "trace", "minimal"]),
        Severity::Large => pick(rng, &["large", "moderate to large", "moderate-sized"]),
    }
}

fn pneumothorax_size(rng: &mut Rng, severity: Severity) -> String {
    match severity {
        Severity::Small => pick(rng, &["small", "tiny", "small apical"]),
        Severity::Large => pick(rng, &["large", "moderate to large", "sizable"]),
    }
}

/// Writes the report of `findings`, its wording drawn from `seed`.
pub fn write_report(findings: &Findings, seed: u64) -> Report {
    let mut rng = Rng::new(seed);
    let f = findings;
    let mut body: Vec<String> = Vec::new();
    let mut imp: Vec<String> = Vec::new();

    // Heart and mediastinum.
    if f.cardiomegaly {
        body.push(pick(
            &mut rng,
            &[
                "The heart is enlarged.",
                "Cardiomegaly is present.",
                "The cardiac silhouette is enlarged.",
                "There is enlargement of the cardiac silhouette.",
                "Moderate cardiomegaly.",
            ],
        ));
    } else if rng.chance(0.85) {
        body.push(pick(
            &mut rng,
            &[
                "Heart size is normal.",
                "The cardiac silhouette is normal in size.",
                "The heart is not enlarged.",
                "No cardiomegaly.",
                "The cardiomediastinal silhouette is within normal limits.",
            ],
        ));
    }
    if rng.chance(0.5) {
        body.push(pick(
            &mut rng,
            &[
                "The mediastinal and hilar contours are unremarkable.",
                "Mediastinal contours are unremarkable.",
                "The hilar contours are stable in appearance.",
            ],
        ));
    }

    // Lungs.
    for c in &f.consolidation {
        let Consolidation { side, zone } = *c;
        let loc = location(&mut rng, side, zone);
        body.push(match rng.below(4) {
            0 => format!("Focal consolidation in the {loc}."),
            1 => format!("There is airspace consolidation in the {loc}."),
            2 => format!("Patchy airspace opacity in the {loc}, consistent with consolidation."),
            _ => format!("Consolidation is seen in the {loc}."),
        });
        let loc = location(&mut rng, side, zone);
        imp.push(match rng.below(3) {
            0 => format!("{} consolidation, possibly pneumonia.", cap(&loc)),
            1 => format!(
                "Consolidation in the {loc}, concerning for pneumonia in the appropriate clinical setting."
            ),
            _ => format!("Airspace consolidation in the {loc}."),
        });
    }
    if let Some(n) = f.nodule {
        let loc = location(&mut rng, n.side, n.zone);
        let size = pick(
            &mut rng,
            &["small", "well-circumscribed", "rounded", "8 mm"],
        );
        body.push(match rng.below(3) {
            0 => format!("A {size} nodule projects over the {loc}."),
            1 => format!("There is a {size} nodular opacity in the {loc}."),
            _ => format!("A {size} pulmonary nodule is seen in the {loc}."),
        });
        let loc = location(&mut rng, n.side, n.zone);
        imp.push(match rng.below(3) {
            0 => format!(
                "{} pulmonary nodule; recommend chest CT for further characterization.",
                cap(&loc)
            ),
            1 => format!("Pulmonary nodule in the {loc}."),
            _ => format!("Nodule in the {loc}, follow-up CT recommended."),
        });
    }
    if f.edema {
        body.push(pick(
            &mut rng,
            &[
                "There is pulmonary vascular congestion with perihilar haziness, consistent with pulmonary edema.",
                "Bilateral perihilar opacities and indistinct pulmonary vessels are consistent with interstitial edema.",
                "Diffuse perihilar haziness reflects pulmonary edema.",
                "Mild to moderate pulmonary edema.",
            ],
        ));
        if f.cardiomegaly && rng.chance(0.5) {
            imp.push(pick(
                &mut rng,
                &[
                    "Cardiomegaly with pulmonary edema, consistent with congestive heart failure.",
                    "Cardiomegaly and pulmonary edema, compatible with fluid overload.",
                ],
            ));
        } else {
            imp.push(pick(
                &mut rng,
                &[
                    "Pulmonary edema.",
                    "Findings consistent with pulmonary edema.",
                    "Interstitial pulmonary edema.",
                    "Mild pulmonary edema.",
                ],
            ));
            if f.cardiomegaly {
                imp.push(pick(
                    &mut rng,
                    &["Cardiomegaly.", "Enlarged cardiac silhouette."],
                ));
            }
        }
    } else if f.cardiomegaly {
        imp.push(pick(
            &mut rng,
            &[
                "Cardiomegaly.",
                "Enlarged cardiac silhouette.",
                "Moderate cardiomegaly.",
            ],
        ));
    }
    let lungs_negative = f.consolidation.is_empty() && f.nodule.is_none() && !f.edema;
    if lungs_negative && f.effusion.is_none() && f.pneumothorax.is_none() && rng.chance(0.4) {
        body.push(pick(
            &mut rng,
            &[
                "The lungs are clear without focal consolidation, effusion, or pneumothorax.",
                "Lungs are clear. No pleural effusion or pneumothorax.",
            ],
        ));
    } else {
        if f.consolidation.is_empty() && rng.chance(0.75) {
            body.push(pick(
                &mut rng,
                &[
                    "No focal consolidation.",
                    "There is no focal airspace consolidation.",
                    "No consolidation is seen.",
                ],
            ));
        }
        if !f.edema && rng.chance(0.6) {
            body.push(pick(
                &mut rng,
                &[
                    "No pulmonary edema.",
                    "There is no evidence of pulmonary edema.",
                    "No vascular congestion or edema.",
                ],
            ));
        }
        if f.nodule.is_none() && rng.chance(0.3) {
            body.push(pick(
                &mut rng,
                &[
                    "No suspicious pulmonary nodule.",
                    "No focal nodule or mass.",
                ],
            ));
        }
        // Pleura.
        if let Some(e) = f.effusion {
            let size = effusion_size(&mut rng, e.severity);
            let sentence = match e.laterality {
                Laterality::Bilateral => match rng.below(3) {
                    0 => format!("There are {size} bilateral pleural effusions."),
                    1 => format!("Bilateral {size} pleural effusions."),
                    _ => format!(
                        "{} bilateral pleural effusions with blunting of both costophrenic angles.",
                        cap(&size)
                    ),
                },
                lat => {
                    let side = lat.word();
                    match (rng.below(3), e.severity) {
                        (0, Severity::Small) => format!(
                            "Blunting of the {side} costophrenic angle, consistent with a {size} pleural effusion."
                        ),
                        (0, Severity::Large) => format!(
                            "A {size} {side} pleural effusion obscures the {side} hemidiaphragm."
                        ),
                        (1, _) => format!("There is a {size} {side} pleural effusion."),
                        _ => format!("{} {side} pleural effusion.", cap(&size)),
                    }
                }
            };
            body.push(sentence);
            let size = effusion_size(&mut rng, e.severity);
            imp.push(match e.laterality {
                Laterality::Bilateral => {
                    if rng.chance(0.5) {
                        format!("{} bilateral pleural effusions.", cap(&size))
                    } else {
                        format!("Bilateral pleural effusions, {size}.")
                    }
                }
                lat => {
                    if rng.chance(0.5) {
                        format!("{} {} pleural effusion.", cap(&size), lat.word())
                    } else {
                        format!("{} pleural effusion, {size}.", cap(lat.word()))
                    }
                }
            });
        }
        if let Some(p) = f.pneumothorax {
            let size = pneumothorax_size(&mut rng, p.severity);
            let side = p.side.word();
            body.push(match rng.below(3) {
                0 => format!("There is a {size} {side} pneumothorax with a visible visceral pleural line."),
                1 => format!("A {size} {side} pneumothorax is present."),
                _ => format!(
                    "{} pleural line with absent peripheral lung markings, consistent with a {size} pneumothorax.",
                    cap(side)
                ),
            });
            let size = pneumothorax_size(&mut rng, p.severity);
            let sentence = if p.severity == Severity::Large && rng.chance(0.5) {
                format!(
                    "{} {side} pneumothorax; findings were communicated to the referring clinician.",
                    cap(&size)
                )
            } else {
                format!("{} {side} pneumothorax.", cap(&size))
            };
            imp.insert(0, sentence);
        }
        match (f.effusion.is_none(), f.pneumothorax.is_none()) {
            (true, true) if rng.chance(0.8) => body.push(pick(
                &mut rng,
                &[
                    "No pleural effusion or pneumothorax.",
                    "There is no pleural effusion or pneumothorax.",
                    "The costophrenic angles are sharp without pleural effusion. No pneumothorax.",
                ],
            )),
            (true, false) if rng.chance(0.7) => body.push(pick(
                &mut rng,
                &["No pleural effusion.", "There is no pleural effusion."],
            )),
            (false, true) if rng.chance(0.7) => body.push(pick(
                &mut rng,
                &["No pneumothorax.", "There is no pneumothorax."],
            )),
            _ => {}
        }
    }
    if rng.chance(0.6) {
        body.push(pick(
            &mut rng,
            &[
                "No acute osseous abnormality.",
                "The visualized osseous structures are unremarkable.",
                "Osseous structures are intact.",
            ],
        ));
    }

    if imp.is_empty() {
        imp.push(pick(
            &mut rng,
            &[
                "No acute cardiopulmonary process.",
                "No acute cardiopulmonary abnormality.",
                "Normal chest radiograph.",
                "No acute intrathoracic abnormality.",
            ],
        ));
    } else if f.pneumothorax.is_none() && rng.chance(0.25) {
        imp.push("No pneumothorax.".to_string());
    }
    Report {
        findings: body.join(" "),
        impression: imp.join(" "),
    }
}
