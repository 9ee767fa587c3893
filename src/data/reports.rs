//! Report text selection: the IMPRESSION / FINDINGS sections of free-text radiology reports
//! (MIMIC-CXR style), whitespace-collapsed, for use as prompts and captions.
//!
//! A section header is a line (after leading spaces) that starts with an ALL-CAPS name of
//! letters, spaces and `()/,&-`, ending with `:` — e.g. `IMPRESSION:`, `FINDINGS AND
//! IMPRESSION:`, `RECOMMENDATION(S):` — and the text after the colon on that line belongs to
//! the section. A line holding only one of the known names below (`IMPRESSION`, no colon)
//! is a header too. Each header ends the previous section. Names are mapped as in the
//! MIMIC-CXR section parser (`conclusion` counts as impression, common misspellings are
//! accepted); when a report has several sections of a kind, the last non-empty one is used
//! (addenda come later and revise earlier text).

use crate::error::{Error, Result};
use std::fmt;

/// Which part of a report to use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Section {
    /// The whole report.
    Full,
    /// IMPRESSION (or CONCLUSION, or a combined FINDINGS AND IMPRESSION section).
    Impression,
    /// FINDINGS (or a combined FINDINGS AND IMPRESSION section).
    Findings,
    /// The impression when there is one, else the findings.
    ImpressionOrFindings,
    /// Findings then impression, joined by a space (whichever exist; a combined section once).
    FindingsAndImpression,
}

impl Section {
    pub const NAMES: [&'static str; 5] = [
        "full",
        "impression",
        "findings",
        "impression_or_findings",
        "findings_and_impression",
    ];

    /// Parses a name from [`Section::NAMES`] (`-` may stand for `_`, any case).
    pub fn parse(name: &str) -> Result<Section> {
        Ok(
            match name.trim().to_ascii_lowercase().replace('-', "_").as_str() {
                "full" => Section::Full,
                "impression" => Section::Impression,
                "findings" => Section::Findings,
                "impression_or_findings" => Section::ImpressionOrFindings,
                "findings_and_impression" => Section::FindingsAndImpression,
                _ => {
                    return Err(Error::msg(format!(
                        "unknown report section {name:?}; expected one of {}",
                        Section::NAMES.join(", ")
                    )))
                }
            },
        )
    }

    pub fn name(self) -> &'static str {
        Section::NAMES[self as usize]
    }
}

impl fmt::Display for Section {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The kinds of section that selection cares about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Findings,
    Impression,
    Both,
    Other,
}

/// Maps a header name (upper case, spaces collapsed) to its kind.
fn kind_of(name: &str) -> Kind {
    match name {
        "IMPRESSION" | "IMPRESSIONS" | "CONCLUSION" | "CONCLUSIONS" | "IMPRESSON"
        | "IMPRRESSION" | "IMORESSION" | "IMPRESSOIN" | "IMPRSSION" | "IMPRESION"
        | "IMPERSSION" | "MPRESSION" | "IMPESSION" => Kind::Impression,
        "FINDINGS" | "FINDING" | "FINDINS" | "FINDINDGS" | "FINDGINGS" | "FINDNGS"
        | "FINDNINGS" | "FINIDNGS" | "REFERENCE FINDINGS" | "CHEST, TWO VIEWS" => Kind::Findings,
        "FINDINGS AND IMPRESSION"
        | "FINDINGS/IMPRESSION"
        | "FINDINGS / IMPRESSION"
        | "FINDINGS/ IMPRESSION"
        | "IMPRESSION AND FINDINGS"
        | "FINDINGS AND IMPRESSIONS" => Kind::Both,
        _ => Kind::Other,
    }
}

/// If `line` is a section header, its normalised name and the text after the colon.
fn header(line: &str) -> Option<(String, &str)> {
    let line = line.trim_start();
    let name_ok = |n: &str| {
        n.bytes().filter(u8::is_ascii_uppercase).count() >= 2
            && n.starts_with(|c: char| c.is_ascii_uppercase())
            && n.bytes()
                .all(|b| b.is_ascii_uppercase() || b" ()/,&-\t".contains(&b))
    };
    let normalise = |n: &str| n.split_whitespace().collect::<Vec<_>>().join(" ");
    if let Some(colon) = line.find(':') {
        let name = line[..colon].trim_end();
        if name_ok(name) {
            return Some((normalise(name), &line[colon + 1..]));
        }
    }
    let name = normalise(line);
    (name_ok(&name) && kind_of(&name) != Kind::Other).then_some((name, ""))
}

/// Collapses runs of whitespace to single spaces and trims.
fn collapse(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The selected part of `report`, whitespace-collapsed; `None` when it is missing or empty
/// (the caller decides whether to skip the report or fall back to another section).
pub fn select_text(report: &str, section: Section) -> Option<String> {
    if section == Section::Full {
        let text = collapse(report);
        return (!text.is_empty()).then_some(text);
    }
    // Split into (kind, text) sections; text before the first header is the preamble.
    let mut sections: Vec<(Kind, String)> = Vec::new();
    let mut current: Option<(Kind, String)> = None;
    for line in report.lines() {
        if let Some((name, rest)) = header(line) {
            sections.extend(current.take());
            current = Some((kind_of(&name), rest.to_string()));
        } else if let Some((_, text)) = current.as_mut() {
            text.push('\n');
            text.push_str(line);
        }
    }
    sections.extend(current);
    let last = |want: &[Kind]| {
        sections
            .iter()
            .rev()
            .filter(|(k, _)| want.contains(k))
            .map(|(_, t)| collapse(t))
            .find(|t| !t.is_empty())
    };
    let findings = || last(&[Kind::Findings, Kind::Both]);
    let impression = || last(&[Kind::Impression, Kind::Both]);
    match section {
        Section::Full => unreachable!(),
        Section::Impression => impression(),
        Section::Findings => findings(),
        Section::ImpressionOrFindings => impression().or_else(findings),
        Section::FindingsAndImpression => match (findings(), impression()) {
            (Some(f), Some(i)) if f == i => Some(f),
            (Some(f), Some(i)) => Some(format!("{f} {i}")),
            (f, i) => f.or(i),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_lines() {
        assert_eq!(header(" IMPRESSION: "), Some(("IMPRESSION".into(), " ")));
        assert_eq!(
            header("FINDINGS  AND IMPRESSION:  No change."),
            Some(("FINDINGS AND IMPRESSION".into(), "  No change."))
        );
        assert_eq!(
            header("RECOMMENDATION(S):  CT.").unwrap().0,
            "RECOMMENDATION(S)"
        );
        assert_eq!(header("IMPRESSION").unwrap().0, "IMPRESSION");
        assert_eq!(header("FINAL REPORT"), None);
        assert_eq!(header("Impression: lower case is text"), None);
        assert_eq!(header("at 10:30 the tube was moved"), None);
        assert_eq!(header("1. CHF: improved"), None);
        assert_eq!(header("NG tube: in the stomach"), None);
    }

    #[test]
    fn kinds() {
        assert_eq!(kind_of("CONCLUSION"), Kind::Impression);
        assert_eq!(kind_of("FINDINGS/IMPRESSION"), Kind::Both);
        assert_eq!(kind_of("IMPRESSON"), Kind::Impression);
        assert_eq!(kind_of("COMPARISON"), Kind::Other);
    }

    #[test]
    fn section_names_round_trip() {
        for name in Section::NAMES {
            assert_eq!(Section::parse(name).unwrap().name(), name);
        }
        assert_eq!(
            Section::parse("Impression-Or-Findings").unwrap(),
            Section::ImpressionOrFindings
        );
        let e = Section::parse("summary").unwrap_err().to_string();
        assert!(
            e.contains("\"summary\"") && e.contains("findings_and_impression"),
            "{e}"
        );
    }
}
