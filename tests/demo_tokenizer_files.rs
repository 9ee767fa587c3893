//! The demo's tokenizer folders trained on report text: medsyn's CLIP and BERT
//! tokenizers load them, corpus words become single tokens, unseen words still
//! encode, output is deterministic, bad inputs are errors naming the path, and
//! transformers gives the same ids (scripts/fixtures/check_demo_tokenizers.py, run
//! when python3 with transformers is installed).

use medsyn::models::bert::BertTokenizer;
use medsyn::models::clip::ClipTokenizer;
use medsyn::pipelines::demo::tokenizer_files::{
    write_bert_tokenizer_folder, write_bert_vocab, write_clip_tokenizer, ClipVocabSummary,
};
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// A fresh scratch folder, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir =
            std::env::temp_dir().join(format!("medsyn-demo-tok-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const REPORTS: [&str; 20] = [
    "FINDINGS: Heart size is normal. There is a small apical left pneumothorax with a visible visceral pleural line.\nIMPRESSION: Small left pneumothorax.",
    "FINDINGS: The lungs are clear. No pleural effusion or pneumothorax.\nIMPRESSION: No acute cardiopulmonary process.",
    "FINDINGS: Moderate cardiomegaly. Small bilateral pleural effusions with adjacent atelectasis.\nIMPRESSION: Cardiomegaly and small bilateral effusions.",
    "FINDINGS: Right lower lobe consolidation concerning for pneumonia. Heart size is normal.\nIMPRESSION: Right lower lobe pneumonia.",
    "FINDINGS: Large right pleural effusion. The left lung is clear.\nIMPRESSION: Large right pleural effusion.",
    "FINDINGS: Patchy opacity in the left base, likely atelectasis. No pneumothorax.\nIMPRESSION: Left basilar atelectasis.",
    "FINDINGS: Mild pulmonary edema with cephalization. Heart size is enlarged.\nIMPRESSION: Mild pulmonary edema.",
    "FINDINGS: No focal consolidation, effusion, or pneumothorax. Heart size is normal.\nIMPRESSION: Normal chest radiograph.",
    "FINDINGS: A 12 mm nodule projects over the right upper lobe.\nIMPRESSION: Right upper lobe nodule; CT recommended.",
    "FINDINGS: Endotracheal tube terminates 4 cm above the carina. Lungs are clear.\nIMPRESSION: Tube in standard position.",
    "FINDINGS: There is a moderate left pneumothorax. Heart size is normal.\nIMPRESSION: Moderate left pneumothorax.",
    "FINDINGS: Small right apical pneumothorax. Small left pleural effusion.\nIMPRESSION: Small right pneumothorax and left effusion.",
    "FINDINGS: The cardiomediastinal silhouette is within normal limits. No acute osseous abnormality.\nIMPRESSION: No acute disease.",
    "FINDINGS: Bibasilar opacities, atelectasis versus aspiration.\nIMPRESSION: Bibasilar opacities.",
    "FINDINGS: Hyperinflated lungs, compatible with COPD. No consolidation.\nIMPRESSION: COPD without acute process.",
    "FINDINGS: Left lower lobe collapse with volume loss.\nIMPRESSION: Left lower lobe collapse.",
    "FINDINGS: Interval decrease in the right pleural effusion. Heart size is stable.\nIMPRESSION: Improving right effusion.",
    "FINDINGS: Diffuse interstitial opacities (likely edema). Small effusions.\nIMPRESSION: Interstitial edema.",
    "FINDINGS: No pneumothorax after chest tube removal. Heart size is normal.\nIMPRESSION: No pneumothorax.",
    "FINDINGS: Pacemaker leads in the right atrium and ventricle. Lungs clear.\nIMPRESSION: No acute findings.",
];

fn corpus() -> Vec<String> {
    REPORTS.iter().map(|s| s.to_string()).collect()
}

/// The corpus's words as the CLIP pre-tokenizer sees them (for these ASCII reports:
/// lower-cased letter runs, single digits, punctuation runs).
fn clip_words(text: &str) -> Vec<String> {
    // Letters 0, digits 1, other 2; a word ends at whitespace, a change of kind, or
    // after a digit (digits are single words).
    let kind = |c: char| match c {
        c if c.is_alphabetic() => 0,
        c if c.is_ascii_digit() => 1,
        _ => 2,
    };
    let mut words: Vec<String> = Vec::new();
    let mut prev: Option<char> = None;
    for c in text.to_lowercase().chars() {
        if c.is_whitespace() {
            prev = None;
            continue;
        }
        match (prev, words.last_mut()) {
            (Some(p), Some(w)) if kind(p) == kind(c) && kind(c) != 1 => w.push(c),
            _ => words.push(c.to_string()),
        }
        prev = Some(c);
    }
    words
}

/// Files of a folder, name -> bytes.
fn read_all(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    files.sort();
    files
}

#[test]
fn clip_corpus_words_are_single_tokens() {
    let s = Scratch::new("clip");
    let dir = s.path("tokenizer");
    let summary = write_clip_tokenizer(&corpus(), &dir, 100_000).unwrap();
    // 512 byte symbols + merges (one new token each at most) + 2 specials.
    assert!(summary.merges > 0);
    assert!(summary.vocab_size <= 512 + summary.merges + 2);
    let merges = std::fs::read_to_string(dir.join("merges.txt")).unwrap();
    assert!(merges.starts_with("#version: 0.2\n"));
    assert_eq!(merges.lines().count(), summary.merges + 1);

    let tok = ClipTokenizer::from_dir(&dir).unwrap();
    assert_eq!(tok.vocab_size(), summary.vocab_size);
    assert_eq!(tok.max_length(), 77);
    assert_eq!(tok.bos_id() as usize, summary.vocab_size - 2);
    assert_eq!(tok.eos_id() as usize, summary.vocab_size - 1);
    assert_eq!(tok.pad_id(), tok.eos_id());
    let vocab: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("vocab.json")).unwrap()).unwrap();
    assert_eq!(vocab["!"], 0);
    assert_eq!(vocab["Ā"], 188); // byte 0: CLIP's order puts non-printable bytes after the 188 printable
    assert_eq!(vocab["!</w>"], 256);

    let words: BTreeSet<String> = REPORTS.iter().flat_map(|r| clip_words(r)).collect();
    assert!(words.len() > 80, "{}", words.len());
    for w in &words {
        let enc = tok.encode(w).unwrap();
        assert_eq!(enc.full_len, 3, "{w:?} -> {:?}", &enc.ids[..enc.full_len]);
        assert_eq!(enc.ids[0], tok.bos_id());
        assert_eq!(enc.ids[2], tok.eos_id());
        assert_eq!(tok.decode_skip_special(&enc.ids), *w);
    }
    for r in REPORTS {
        let ids = tok.text_ids(r).unwrap();
        assert_eq!(ids.len(), clip_words(r).len(), "{r}");
        let decoded = tok.decode(&ids);
        let squeeze = |s: &str| s.split_whitespace().collect::<String>();
        assert_eq!(squeeze(&decoded), squeeze(&r.to_lowercase()));
    }
    let ids = tok
        .text_ids("IMPRESSION: Small left pneumothorax.")
        .unwrap();
    assert_eq!(tok.decode(&ids), "impression : small left pneumothorax .");

    // Unseen words fall back to smaller pieces (down to byte symbols), never fail.
    for text in ["zebra", "Zebra-crossing über 9000 µm 😀", "qqqq xj"] {
        let enc = tok.encode(text).unwrap();
        assert!(enc.full_len > 3, "{text}");
        let ids = &enc.ids[1..enc.full_len - 1];
        assert!(ids.iter().all(|&i| i < tok.bos_id()), "{text}: {ids:?}");
        let squeeze = |s: &str| s.split_whitespace().collect::<String>();
        assert_eq!(squeeze(&tok.decode(ids)), squeeze(&text.to_lowercase()));
    }
    let zebra = tok.text_ids("zebra").unwrap();
    assert!((2..=5).contains(&zebra.len()), "{zebra:?}");
}

/// Hundreds of overlapping words over three letters ("abcab", "bca", ...): encoding
/// with the written merges (lowest rank first) must reproduce the training
/// segmentation, every word one token.
#[test]
fn clip_merges_reproduce_training_on_overlapping_words() {
    let s = Scratch::new("clip-abc");
    let mut state = 12345u64;
    let mut next = || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) as usize
    };
    let mut texts = Vec::new();
    let mut words = BTreeSet::new();
    for _ in 0..400 {
        let len = 1 + next() % 7;
        let w: String = (0..len).map(|_| ['a', 'b', 'c'][next() % 3]).collect();
        for _ in 0..1 + next() % 4 {
            texts.push(format!("{w} {w}"));
        }
        words.insert(w);
    }
    let dir = s.path("tokenizer");
    let summary = write_clip_tokenizer(&texts, &dir, 100_000).unwrap();
    let tok = ClipTokenizer::from_dir(&dir).unwrap();
    assert!(
        summary.vocab_size <= 512 + summary.merges + 2,
        "{summary:?}"
    );
    for w in &words {
        assert_eq!(tok.text_ids(w).unwrap().len(), 1, "{w}");
    }
}

#[test]
fn clip_files_are_deterministic() {
    let s = Scratch::new("clip-det");
    let (a, b) = (s.path("a"), s.path("b"));
    let sa = write_clip_tokenizer(&corpus(), &a, 100_000).unwrap();
    // Same corpus in another order and written twice into the same folder.
    let mut reversed = corpus();
    reversed.reverse();
    write_clip_tokenizer(&reversed, &b, 100_000).unwrap();
    let sb = write_clip_tokenizer(&reversed, &b, 100_000).unwrap();
    assert_eq!(sa, sb);
    let (fa, fb) = (read_all(&a), read_all(&b));
    let names: Vec<&str> = fa.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "merges.txt",
            "special_tokens_map.json",
            "tokenizer_config.json",
            "vocab.json"
        ]
    );
    assert!(fa == fb, "same corpus, different files");
}

#[test]
fn clip_small_merge_cap_still_encodes() {
    let s = Scratch::new("clip-cap");
    let dir = s.path("tokenizer");
    let summary = write_clip_tokenizer(&corpus(), &dir, 10).unwrap();
    assert_eq!(
        summary,
        ClipVocabSummary {
            vocab_size: 512 + 10 + 2,
            merges: 10
        }
    );
    let tok = ClipTokenizer::from_dir(&dir).unwrap();
    let ids = tok.text_ids(REPORTS[0]).unwrap();
    assert!(ids.len() > clip_words(REPORTS[0]).len());
    let squeeze = |s: &str| s.split_whitespace().collect::<String>();
    assert_eq!(
        squeeze(&tok.decode(&ids)),
        squeeze(&REPORTS[0].to_lowercase())
    );
    // No merges at all: only byte symbols.
    let none = write_clip_tokenizer(&corpus(), &s.path("none"), 0).unwrap();
    assert_eq!(none.vocab_size, 514);
    let tok = ClipTokenizer::from_dir(&s.path("none")).unwrap();
    assert_eq!(tok.text_ids("heart").unwrap().len(), 5);
    // Special tokens in the text are not words: nothing to merge between x and y.
    let texts = vec!["x<|endoftext|>y <|startoftext|>".to_string()];
    let specials = write_clip_tokenizer(&texts, &s.path("specials"), 100).unwrap();
    assert_eq!(specials.merges, 0);
}

#[test]
fn bad_inputs_are_errors_naming_the_path() {
    let s = Scratch::new("errors");
    let dir = s.path("empty-corpus");
    for texts in [vec![], vec!["   \n\t".to_string()]] {
        let err = write_clip_tokenizer(&texts, &dir, 100).unwrap_err();
        assert!(err.message().contains(&*dir.to_string_lossy()), "{err}");
        assert!(err.message().contains("no words"), "{err}");
        let path = dir.join("vocab.txt");
        let err = write_bert_vocab(&texts, &path, 1).unwrap_err();
        assert!(err.message().contains(&*path.to_string_lossy()), "{err}");
    }
    assert!(!dir.exists(), "nothing is written for an empty corpus");
    // A folder that cannot be created (its parent is a file).
    let file = s.path("a-file");
    std::fs::write(&file, b"x").unwrap();
    let bad = file.join("tokenizer");
    let err = write_clip_tokenizer(&corpus(), &bad, 100).unwrap_err();
    assert!(err.message().contains(&*bad.to_string_lossy()), "{err}");
    let err = write_bert_vocab(&corpus(), &bad.join("vocab.txt"), 1).unwrap_err();
    assert!(err.message().contains(&*bad.to_string_lossy()), "{err}");
    let err = write_bert_tokenizer_folder(&corpus(), &bad, 1).unwrap_err();
    assert!(err.message().contains(&*bad.to_string_lossy()), "{err}");
}

#[test]
fn bert_vocab_covers_the_corpus() {
    let s = Scratch::new("bert");
    let path = s.path("vocab.txt");
    let n = write_bert_vocab(&corpus(), &path, 2).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), n);
    assert_eq!(lines[..5], ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]);
    assert_eq!(
        lines.iter().collect::<BTreeSet<_>>().len(),
        n,
        "duplicate lines"
    );
    assert!(lines.contains(&"a") && lines.contains(&"##a") && lines.contains(&":"));
    assert!(lines.contains(&"pneumothorax") && !lines.contains(&"Pneumothorax"));
    assert!(
        !lines.contains(&"aspiration"),
        "seen once, below min_count 2"
    );
    // Most frequent first: "findings" and "impression" (20 each) lead the words.
    let first_word = lines
        .iter()
        .position(|l| l.len() > 1 && !l.starts_with('[') && !l.starts_with("##"))
        .unwrap();
    assert_eq!(
        lines[first_word..first_word + 2],
        ["findings", "impression"]
    );

    let tok = BertTokenizer::from_dir(&s.0).unwrap();
    assert_eq!(tok.vocab_size(), n);
    let unk = 1;
    for r in REPORTS {
        let ids = tok.encode(r).unwrap();
        assert!(!ids.contains(&unk), "{r}: {ids:?}");
        assert_eq!(ids[0], tok.cls_id());
        assert_eq!(*ids.last().unwrap(), tok.sep_id());
    }
    let id = |w: &str| lines.iter().position(|l| *l == w).unwrap() as i64;
    let ids = tok
        .encode("Heart size is normal. No PNEUMOTHORAX.")
        .unwrap();
    let expect: Vec<i64> = [
        "heart",
        "size",
        "is",
        "normal",
        ".",
        "no",
        "pneumothorax",
        ".",
    ]
    .iter()
    .map(|w| id(w))
    .collect();
    assert_eq!(ids[1..ids.len() - 1], expect[..]);
    // A rare or unseen word falls back to known pieces, not [UNK].
    let ids = tok.encode("aspiration zebra café").unwrap();
    assert!(!ids.contains(&unk), "{ids:?}");
    assert_eq!(tok.decode(&ids, true).unwrap(), "aspiration zebra cafe");

    // The folder variant adds a tokenizer_config.json; same vocabulary.
    let dir = s.path("folder");
    assert_eq!(write_bert_tokenizer_folder(&corpus(), &dir, 2).unwrap(), n);
    assert_eq!(
        std::fs::read(dir.join("vocab.txt")).unwrap(),
        text.as_bytes()
    );
    let cfg: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("tokenizer_config.json")).unwrap())
            .unwrap();
    assert_eq!(cfg["do_lower_case"], true);
    // Deterministic for a reordered corpus.
    let mut reversed = corpus();
    reversed.reverse();
    write_bert_vocab(&reversed, &s.path("again.txt"), 2).unwrap();
    assert_eq!(std::fs::read(s.path("again.txt")).unwrap(), text.as_bytes());
}

/// A ~5000-report corpus trains in well under a second (release); here just timed.
#[test]
fn clip_training_on_thousands_of_reports() {
    let s = Scratch::new("clip-big");
    let texts: Vec<String> = (0..5000)
        .map(|i| {
            let mm = i % 37;
            format!(
                "{} Nodule of {mm} mm, case {i}.",
                REPORTS[i % REPORTS.len()]
            )
        })
        .collect();
    let t = std::time::Instant::now();
    let summary = write_clip_tokenizer(&texts, &s.path("tok"), 100_000).unwrap();
    eprintln!(
        "5000 reports: {summary:?} in {:.3} s",
        t.elapsed().as_secs_f64()
    );
    let tok = ClipTokenizer::from_dir(&s.path("tok")).unwrap();
    for w in ["pneumothorax", "case", "nodule", "interstitial"] {
        assert_eq!(tok.text_ids(w).unwrap().len(), 1, "{w}");
    }
}

fn python_has_transformers() -> bool {
    std::process::Command::new("python3")
        .args(["-c", "import transformers"])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn tokenizers_match_transformers() {
    let s = Scratch::new("hf");
    let (clip_dir, bert_dir) = (s.path("clip"), s.path("bert"));
    write_clip_tokenizer(&corpus(), &clip_dir, 100_000).unwrap();
    write_bert_tokenizer_folder(&corpus(), &bert_dir, 2).unwrap();
    let clip = ClipTokenizer::from_dir(&clip_dir).unwrap();
    let bert = BertTokenizer::from_dir(&bert_dir).unwrap();
    // The corpus, a cut-down tokenizer's view of it, and unseen text.
    let mut texts = corpus();
    texts.extend(
        [
            "zebra crossing",
            "Café naïve RÉSUMÉ — Ærø",
            "It's 12.5cm; they've seen <tag> x/y!!",
            "emoji 😀 and ™ ½",
            "pneumothoraxpneumothorax effusions",
            "",
        ]
        .map(String::from),
    );
    let mine_clip: Vec<Vec<i64>> = texts
        .iter()
        .map(|t| {
            let e = clip.encode(t).unwrap();
            e.ids[..e.full_len].to_vec()
        })
        .collect();
    let mine_bert: Vec<Vec<i64>> = texts.iter().map(|t| bert.encode(t).unwrap()).collect();
    if !python_has_transformers() {
        eprintln!("python3 with transformers not found: skipping the transformers comparison");
        return;
    }
    let texts_path = s.path("texts.json");
    std::fs::write(&texts_path, serde_json::to_string(&texts).unwrap()).unwrap();
    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/fixtures/check_demo_tokenizers.py");
    let out = std::process::Command::new("python3")
        .arg(&script)
        .arg(&clip_dir)
        .arg(&bert_dir)
        .arg(&texts_path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "transformers could not load the demo tokenizers:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reference: Value = serde_json::from_slice(&out.stdout).unwrap();
    let ids =
        |key: &str| -> Vec<Vec<i64>> { serde_json::from_value(reference[key].clone()).unwrap() };
    for (i, t) in texts.iter().enumerate() {
        assert_eq!(mine_clip[i], ids("clip")[i], "CLIP ids of {t:?}");
        assert_eq!(mine_bert[i], ids("bert")[i], "BERT ids of {t:?}");
        assert_eq!(
            clip.decode_skip_special(&mine_clip[i]),
            reference["clip_decoded"][i],
            "CLIP decoding of {t:?}"
        );
        assert_eq!(
            bert.decode(&mine_bert[i], true).unwrap(),
            reference["bert_decoded"][i],
            "BERT decoding of {t:?}"
        );
    }
    assert_eq!(reference["clip_vocab_size"], clip.vocab_size());
    assert_eq!(reference["bert_vocab_size"], bert.vocab_size());
    assert_eq!(reference["clip_max_length"], 77);
    assert_eq!(reference["clip_pad_id"], clip.pad_id());
}
