//! The procedural chest-radiograph phantom: determinism, prevalence, reports written from the
//! ground truth, visible anatomy and findings, masks and boxes, and the `data phantom` CLI.

use medsyn::data::phantom::{
    render, sample_case, split_of, write_dataset, write_report, Effusion, Finding, Findings,
    Laterality, PhantomOptions, Prevalence, Regions, Severity, Side, Zone,
};
use medsyn::data::{select_text, CsvTable, Section};
use medsyn::progress::Progress;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("medsyn-phantom-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn opts(n: usize, size: usize, seed: u64, out: &Path) -> PhantomOptions {
    PhantomOptions {
        n,
        size,
        seed,
        out: out.to_path_buf(),
        masks: true,
        prevalence: Prevalence::default(),
    }
}

/// Every file under `dir` (relative path -> bytes).
fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

#[test]
fn same_seed_same_bytes_and_image_k_independent_of_n() {
    let (a, b, c, d) = (scratch("a"), scratch("b"), scratch("c"), scratch("d"));
    write_dataset(&opts(5, 64, 1, &a), &mut Progress::hidden()).unwrap();
    write_dataset(&opts(5, 64, 1, &b), &mut Progress::hidden()).unwrap();
    write_dataset(&opts(5, 64, 2, &c), &mut Progress::hidden()).unwrap();
    write_dataset(&opts(10, 64, 1, &d), &mut Progress::hidden()).unwrap();
    let (fa, fb, fc, fd) = (files(&a), files(&b), files(&c), files(&d));
    assert!(fa.len() >= 7, "{:?}", fa.keys());
    assert_eq!(fa, fb, "same seed must give byte-identical files");
    assert_ne!(fa["labels.csv"], fc["labels.csv"]);
    for i in 0..5 {
        let p = format!("images/{i:05}.png");
        assert_ne!(fa[&p], fc[&p], "seed 2 image {i} equals seed 1's");
    }
    // Every image and mask of the 5-image run is identical in the 10-image run.
    for (k, v) in &fa {
        if k.ends_with(".png") {
            assert_eq!(Some(v), fd.get(k), "{k} differs between n=5 and n=10");
        }
    }
    let la = CsvTable::read(a.join("labels.csv")).unwrap();
    let ld = CsvTable::read(d.join("labels.csv")).unwrap();
    assert_eq!((la.len(), ld.len()), (5, 10));
    for r in 0..5 {
        for col in 0..la.headers().len() {
            assert_eq!(la.get(r, col), ld.get(r, col));
        }
    }
    for dir in [a, b, c, d] {
        std::fs::remove_dir_all(dir).unwrap();
    }
}

#[test]
fn prevalence_and_co_occurrence_follow_the_settings() {
    let p = Prevalence::default();
    let n = 2000;
    let cases: Vec<Findings> = (0..n).map(|i| sample_case(7, i, &p).findings).collect();
    for f in Finding::ALL {
        let got = cases.iter().filter(|c| c.has(f)).count() as f64 / n as f64;
        let want = p.marginal(f);
        let sd = (want * (1.0 - want) / n as f64).sqrt();
        assert!(
            (got - want).abs() < 4.0 * sd + 0.005,
            "{}: {got:.3} positive, {want:.3} expected",
            f.label()
        );
    }
    // Edema brings cardiomegaly and (mostly bilateral) effusions with it.
    let rate = |sel: &dyn Fn(&Findings) -> bool, of: &dyn Fn(&Findings) -> bool| {
        let pool: Vec<_> = cases.iter().filter(|c| of(c)).collect();
        pool.iter().filter(|c| sel(c)).count() as f64 / pool.len() as f64
    };
    let cm_edema = rate(&|c| c.cardiomegaly, &|c| c.edema);
    let cm_no = rate(&|c| c.cardiomegaly, &|c| !c.edema);
    assert!(cm_edema > cm_no + 0.3, "{cm_edema} vs {cm_no}");
    let bil = |c: &Findings| matches!(c.effusion, Some(e) if e.laterality == Laterality::Bilateral);
    let bil_edema = rate(&bil, &|c| c.edema && c.effusion.is_some());
    let bil_no = rate(&bil, &|c| !c.edema && c.effusion.is_some());
    assert!(bil_edema > bil_no + 0.2, "{bil_edema} vs {bil_no}");
    // Every laterality, severity and zone occurs.
    for lat in [Laterality::Left, Laterality::Right, Laterality::Bilateral] {
        for sev in [Severity::Small, Severity::Large] {
            let want = Effusion {
                laterality: lat,
                severity: sev,
            };
            assert!(cases.iter().any(|c| c.effusion == Some(want)), "{want:?}");
        }
    }
    for zone in Zone::ALL {
        assert!(cases
            .iter()
            .any(|c| c.consolidation.iter().any(|k| k.zone == zone)));
    }
    // Splits: about 80/10/10.
    let train = (0..n).filter(|&i| split_of(7, i) == "train").count() as f64 / n as f64;
    assert!((train - 0.8).abs() < 0.04, "{train}");
    // Ground truth depends on (seed, index) only.
    assert_eq!(sample_case(7, 11, &p), sample_case(7, 11, &p));
    assert_ne!(sample_case(7, 11, &p), sample_case(8, 11, &p));
}

const NEGATION: [&str; 5] = ["no ", "not ", "without", "normal", "negative"];

fn keywords(f: Finding) -> &'static [&'static str] {
    match f {
        Finding::Cardiomegaly => &["cardiomegaly", "enlarged", "enlargement"],
        Finding::PleuralEffusion => &["effusion"],
        Finding::Pneumothorax => &["pneumothorax"],
        Finding::Consolidation => &["consolidation", "airspace"],
        Finding::Nodule => &["nodule", "nodular"],
        Finding::Edema => &["edema"],
        Finding::NoFinding | Finding::LungOpacity => &[],
    }
}

fn sentences(text: &str) -> Vec<String> {
    text.to_lowercase()
        .split(['.', ';'])
        .map(|s| format!(" {} ", s.trim()))
        .filter(|s| s.trim().len() > 1)
        .collect()
}

fn negated(sentence: &str) -> bool {
    NEGATION.iter().any(|n| sentence.contains(n))
}

fn mentions(sentence: &str, f: Finding) -> bool {
    keywords(f).iter().any(|k| sentence.contains(k))
}

fn side_words(sentence: &str) -> Vec<&'static str> {
    let words: Vec<&str> = sentence.split(|c: char| !c.is_ascii_alphabetic()).collect();
    ["left", "right", "bilateral"]
        .into_iter()
        .filter(|w| words.contains(w))
        .collect()
}

#[test]
fn reports_name_exactly_the_positive_findings() {
    let p = Prevalence::default();
    let mut negated_mentions = 0;
    let mut normal_impressions = std::collections::BTreeSet::new();
    for i in 0..400 {
        let case = sample_case(3, i, &p);
        let f = &case.findings;
        let r = write_report(f, case.report_seed);
        assert_eq!(r, write_report(f, case.report_seed));
        let text = r.text();
        assert_eq!(
            select_text(&text, Section::Impression).as_deref(),
            Some(r.impression.as_str())
        );
        assert_eq!(
            select_text(&text, Section::Findings).as_deref(),
            Some(r.findings.as_str())
        );
        let imp = sentences(&r.impression);
        let all = sentences(&text);
        for finding in Finding::ALL {
            if keywords(finding).is_empty() {
                continue;
            }
            if f.has(finding) {
                assert!(
                    imp.iter().any(|s| mentions(s, finding) && !negated(s)),
                    "impression of {f:?} does not name {}: {text}",
                    finding.label()
                );
                assert!(
                    all.iter().all(|s| !mentions(s, finding) || !negated(s)),
                    "{} is positive but negated: {text}",
                    finding.label()
                );
            } else {
                for s in all.iter().filter(|s| mentions(s, finding)) {
                    assert!(
                        negated(s),
                        "{} is negative but named in {s:?}: {text}",
                        finding.label()
                    );
                    negated_mentions += 1;
                }
            }
        }
        // Laterality words agree with the ground truth.
        if let Some(e) = f.effusion {
            for s in all.iter().filter(|s| s.contains("effusion")) {
                assert_eq!(side_words(s), vec![e.laterality.word()], "{s:?} for {e:?}");
            }
        }
        if let Some(pt) = f.pneumothorax {
            for s in all.iter().filter(|s| s.contains("pneumothorax")) {
                assert_eq!(side_words(s), vec![pt.side.word()], "{s:?} for {pt:?}");
            }
        }
        for c in &f.consolidation {
            assert!(text.contains(c.side.word()));
        }
        if f.is_normal() {
            assert!(imp.iter().all(|s| negated(s)), "{text}");
            normal_impressions.insert(r.impression.clone());
        }
    }
    assert!(
        negated_mentions > 400,
        "only {negated_mentions} negated mentions"
    );
    assert!(normal_impressions.len() >= 3, "{normal_impressions:?}");
}

fn mean_where(pixels: &[u8], sel: impl Fn(usize) -> bool) -> f64 {
    let (mut s, mut n) = (0.0, 0usize);
    for (i, &p) in pixels.iter().enumerate() {
        if sel(i) {
            s += p as f64;
            n += 1;
        }
    }
    assert!(n > 0, "empty region");
    s / n as f64
}

#[test]
fn lungs_are_darker_than_the_heart() {
    let p = Prevalence::default();
    for i in 0..12 {
        let case = sample_case(5, i, &p);
        let r = render(&case, 128);
        assert_eq!(r.pixels.len(), 128 * 128);
        let lung = mean_where(&r.pixels, |k| r.regions.lung_zone[k] > 0);
        let heart = mean_where(&r.pixels, |k| r.regions.heart[k]);
        assert!(
            heart > lung + 40.0,
            "case {i}: heart {heart:.1}, lungs {lung:.1}"
        );
        // Outside the body (image corners at the top) is dark.
        assert!(
            r.pixels[0] < 60 && r.pixels[127] < 60,
            "corners {} {}",
            r.pixels[0],
            r.pixels[127]
        );
    }
}

#[test]
fn a_large_left_effusion_whitens_the_left_lower_zone_only() {
    let mut case = sample_case(9, 4, &Prevalence::default());
    case.findings = Findings::default();
    let clear = render(&case, 128);
    case.findings.effusion = Some(Effusion {
        laterality: Laterality::Left,
        severity: Severity::Large,
    });
    let wet = render(&case, 128);
    let ll = Regions::code(Side::Left, Zone::Lower);
    let before = mean_where(&clear.pixels, |k| clear.regions.lung_zone[k] == ll);
    let after = mean_where(&wet.pixels, |k| clear.regions.lung_zone[k] == ll);
    assert!(
        after > before + 30.0,
        "left lower zone {before:.1} -> {after:.1}"
    );
    let ru = Regions::code(Side::Right, Zone::Upper);
    for k in (0..clear.pixels.len()).filter(|&k| clear.regions.lung_zone[k] == ru) {
        assert_eq!(
            clear.pixels[k], wet.pixels[k],
            "right upper zone changed at {k}"
        );
    }
    assert_eq!(clear.regions, wet.regions);
    assert!(clear.masks.is_empty() && clear.boxes.is_empty());
    assert_eq!(wet.masks.len(), 1);
    assert_eq!(wet.masks[0].finding, Finding::PleuralEffusion);
}

#[test]
fn masks_exist_exactly_for_localised_findings_and_boxes_match_them() {
    let p = Prevalence {
        // More positives so every finding is seen in a few dozen images.
        edema: 0.3,
        cardiomegaly: 0.3,
        effusion: 0.3,
        pneumothorax: 0.3,
        consolidation: 0.4,
        second_consolidation: 0.4,
        nodule: 0.3,
        ..Prevalence::default()
    };
    let mut seen = BTreeMap::new();
    for size in [64, 96] {
        for i in 0..40 {
            let case = sample_case(21, i, &p);
            let r = render(&case, size);
            let f = &case.findings;
            for finding in Finding::ALL {
                let mask = r.masks.iter().find(|m| m.finding == finding);
                let want = f.has(finding) && finding.has_mask();
                assert_eq!(
                    mask.is_some(),
                    want,
                    "{} in {f:?} at {size}",
                    finding.label()
                );
                let Some(mask) = mask else { continue };
                *seen.entry(finding.label()).or_insert(0) += 1;
                assert_eq!(mask.pixels.len(), size * size);
                assert!(mask.pixels.iter().all(|&v| v == 0 || v == 255));
                let on: Vec<usize> = (0..size * size)
                    .filter(|&k| mask.pixels[k] == 255)
                    .collect();
                assert!(!on.is_empty(), "empty {} mask", finding.label());
                if finding == Finding::Cardiomegaly {
                    let heart: Vec<usize> =
                        (0..size * size).filter(|&k| r.regions.heart[k]).collect();
                    assert_eq!(on, heart);
                } else {
                    // A nodule may project over the heart (retrocardiac).
                    let nodule = finding == Finding::Nodule;
                    let inside = on
                        .iter()
                        .filter(|&&k| r.regions.lung_zone[k] > 0 || (nodule && r.regions.heart[k]))
                        .count();
                    assert!(
                        inside as f64 >= 0.8 * on.len() as f64,
                        "{} mask: {inside} of {} pixels in the lungs (case {i}, size {size}, {f:?}, {:?})",
                        finding.label(),
                        on.len(),
                        r.boxes
                    );
                }
                // Boxes: inside the image, tight around mask pixels, together the mask's bbox.
                let boxes: Vec<_> = r.boxes.iter().filter(|b| b.finding == finding).collect();
                assert!(!boxes.is_empty());
                let (mut x0, mut y0, mut x1, mut y1) = (size, size, 0, 0);
                for &k in &on {
                    let (x, y) = (k % size, k / size);
                    (x0, y0, x1, y1) = (x0.min(x), y0.min(y), x1.max(x + 1), y1.max(y + 1));
                }
                let ux0 = boxes.iter().map(|b| b.x0).min().unwrap();
                let uy0 = boxes.iter().map(|b| b.y0).min().unwrap();
                let ux1 = boxes.iter().map(|b| b.x1).max().unwrap();
                let uy1 = boxes.iter().map(|b| b.y1).max().unwrap();
                assert_eq!(
                    (ux0, uy0, ux1, uy1),
                    (x0, y0, x1, y1),
                    "{}",
                    finding.label()
                );
                for b in &boxes {
                    assert!(b.x0 < b.x1 && b.y0 < b.y1 && b.x1 <= size && b.y1 <= size);
                    let hit = |x: usize, y: usize| mask.pixels[y * size + x] == 255;
                    assert!(
                        (b.x0..b.x1).any(|x| hit(x, b.y0))
                            && (b.x0..b.x1).any(|x| hit(x, b.y1 - 1))
                    );
                    assert!(
                        (b.y0..b.y1).any(|y| hit(b.x0, y))
                            && (b.y0..b.y1).any(|y| hit(b.x1 - 1, y))
                    );
                    // The patient's left is on the image's right.
                    if let Some(side) = b.side {
                        let cx = (b.x0 + b.x1) as f64 / 2.0 / size as f64;
                        assert_eq!(cx > 0.5, side == Side::Left, "{b:?}");
                    }
                }
                if finding == Finding::PleuralEffusion {
                    let sides = f.effusion.unwrap().laterality.sides().len();
                    assert_eq!(boxes.len(), sides);
                }
            }
        }
    }
    assert_eq!(seen.len(), 5, "{seen:?}");
}

#[test]
fn a_256_image_renders_fast() {
    let p = Prevalence::default();
    let cases: Vec<_> = (0..8).map(|i| sample_case(1, i, &p)).collect();
    let mut times = Vec::new();
    for case in &cases {
        let t = std::time::Instant::now();
        let r = render(case, 256);
        times.push(t.elapsed().as_secs_f64());
        assert_eq!(r.pixels.len(), 256 * 256);
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    eprintln!("256x256 render: median {:.1} ms", median * 1e3);
    assert!(median < 0.1, "median render time {:.1} ms", median * 1e3);
}

fn medsyn(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_medsyn"))
        .args(args)
        .output()
        .expect("run medsyn")
}

#[test]
fn cli_writes_the_data_set_and_skips_on_rerun() {
    let dir = scratch("cli");
    let out = dir.join("set");
    let o = out.to_str().unwrap();
    let args = [
        "data", "phantom", "--n", "6", "--size", "128", "--seed", "1", "--out", o, "--quiet",
    ];
    let first = medsyn(&args);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let pngs = std::fs::read_dir(out.join("images")).unwrap().count();
    assert_eq!(pngs, 6);
    let labels = CsvTable::read(out.join("labels.csv")).unwrap();
    assert_eq!(labels.len(), 6);
    for col in [
        "path",
        "split",
        "report",
        "findings",
        "impression",
        "No Finding",
        "Edema",
    ] {
        labels.column(col).unwrap();
    }
    CsvTable::read(out.join("boxes.csv")).unwrap();
    let before = files(&out);
    let second = medsyn(&args);
    assert!(second.status.success());
    let said = String::from_utf8_lossy(&second.stdout);
    assert!(said.contains("wrote 0 images (6 already there)"), "{said}");
    assert_eq!(before, files(&out));

    for (bad, flag) in [("--size", "32"), ("--n", "0")] {
        let mut a: Vec<&str> = vec!["data", "phantom", "--n", "2", "--size", "64", "--out", o];
        let k = a.iter().position(|x| *x == bad).unwrap();
        a[k + 1] = flag;
        let r = medsyn(&a);
        assert!(!r.status.success(), "{bad} {flag} should fail");
        let err = String::from_utf8_lossy(&r.stderr);
        assert!(err.contains(bad), "{err}");
    }
    let help = medsyn(&["data", "phantom", "--help"]);
    let help = String::from_utf8_lossy(&help.stdout);
    for flag in ["--n", "--size", "--seed", "--out", "--no-masks", "--quiet"] {
        assert!(help.contains(flag), "{flag} missing from --help");
    }
    std::fs::remove_dir_all(dir).unwrap();
}
