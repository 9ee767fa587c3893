//! Generation plumbing: CSV files, report sections, PNG files, the tensor→pixel rounding
//! rule, per-image seeds, shards, file names, resuming and the manifest.

use medsyn::data::{append_rows, select_text, write_csv_atomic, CsvTable, Section};
use medsyn::imageio::{read_png, tensor_to_u8_images, u8_to_tensor, write_png_atomic};
use medsyn::pipelines::work::{
    file_names, image_file_name, image_seed, pending, work_list, Manifest, Prompt, Shard,
};
use medsyn::progress::Progress;
use medsyn::{DType, Tensor};
use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};

/// A fresh, empty folder for one test.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("medsyn-genio-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

// ----- CSV -----

#[test]
fn csv_round_trip_with_nasty_fields() {
    let dir = scratch("csv");
    let path = dir.join("reports.csv");
    let headers = ["id", "text, with comma", "quote\"d"];
    let rows: Vec<Vec<String>> = vec![
        vec!["1".into(), "plain".into(), "".into()],
        vec![
            "2".into(),
            "FINDINGS:\n  Lungs clear.\r\n\nIMPRESSION: \"No\" acute, process.".into(),
            "\"\"".into(),
        ],
        vec![
            "3".into(),
            " leading and trailing ".into(),
            "naïve — ✓ 肺".into(),
        ],
        vec!["".into(), ",".into(), "\r".into()],
        vec!["5".into(), "\u{feff}bom inside".into(), "x\"y".into()],
    ];
    write_csv_atomic(&path, &headers, &rows).unwrap();
    assert_eq!(
        listing(&dir),
        ["reports.csv"],
        "atomic write left a temp file"
    );
    let t = CsvTable::read(&path).unwrap();
    assert_eq!(t.headers(), headers);
    assert_eq!(t.len(), rows.len());
    for (r, row) in rows.iter().enumerate() {
        for (c, want) in row.iter().enumerate() {
            assert_eq!(t.get(r, c), want, "row {r} col {c}");
        }
    }
    let via_rows: Vec<Vec<String>> = t
        .rows()
        .map(|r| r.fields().map(str::to_string).collect())
        .collect();
    assert_eq!(via_rows, rows);
    // Row 2 starts on line 3; its text spans four lines, so row 3 starts on line 7.
    assert_eq!((t.line(1), t.line(2)), (3, 7));

    // Fields are quoted only when needed.
    let text = fs::read_to_string(&path).unwrap();
    assert!(
        text.starts_with("id,\"text, with comma\",\"quote\"\"d\"\n1,plain,\n"),
        "{text}"
    );
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn csv_reads_crlf_and_bom_files_as_written_by_excel() {
    let dir = scratch("csv-crlf");
    let path = dir.join("prompts.csv");
    fs::write(&path, "\u{feff}id,prompt\r\na,\"two\r\nlines\"\r\nb,x\r\n").unwrap();
    let t = CsvTable::read(&path).unwrap();
    assert_eq!(t.column("id").unwrap(), 0);
    assert_eq!(t.get(0, 1), "two\r\nlines");
    assert_eq!((t.get(1, 0), t.line(1)), ("b", 4));
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn csv_malformed_rows_name_file_and_line() {
    let dir = scratch("csv-bad");
    let cases = [
        // A multi-line field before the bad row: the line count follows physical lines.
        (
            "fields.csv",
            "id,text\n1,\"a\nb\nc\"\n2,ok\n3,too,many\n",
            "line 6: row has 3 fields but the header has 2",
        ),
        (
            "short.csv",
            "id,text\r\n1,a\r\n2\r\n",
            "line 3: row has 1 fields but the header has 2",
        ),
        (
            "open.csv",
            "id,text\n1,a\n2,\"never closed\n3,b\n",
            "line 3: quoted field is never closed",
        ),
        (
            "after.csv",
            "id,text\n1,\"a\"b\n",
            "line 2: unexpected 'b' after a closing quote",
        ),
    ];
    for (name, text, want) in cases {
        let path = dir.join(name);
        fs::write(&path, text).unwrap();
        let e = CsvTable::read(&path).unwrap_err().to_string();
        assert!(e.starts_with(&path.display().to_string()), "{e}");
        assert!(e.contains(want), "{name}: {e}");
    }
    let path = dir.join("latin1.csv");
    fs::write(&path, b"id,text\n1,ok\n2,caf\xe9\n").unwrap();
    let e = CsvTable::read(&path).unwrap_err().to_string();
    assert!(e.contains("latin1.csv: line 3: not valid UTF-8"), "{e}");
    let e = CsvTable::read(dir.join("missing.csv"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("missing.csv: cannot read"), "{e}");
    let t = CsvTable::parse("id,prompt\n", "p.csv").unwrap();
    let e = t.column("Prompt").unwrap_err().to_string();
    assert!(
        e.contains("no column \"Prompt\"") && e.contains("[\"id\", \"prompt\"]"),
        "{e}"
    );
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn csv_append_creates_header_then_appends() {
    let dir = scratch("csv-append");
    let path = dir.join("m.csv");
    append_rows(&path, &["a", "b"], &[["1", "x,y"]]).unwrap();
    append_rows(&path, &["a", "b"], &[["2", "p\nq"], ["3", ""]]).unwrap();
    append_rows::<&str, [&str; 2], &str>(&path, &["a", "b"], &[]).unwrap();
    assert_eq!(
        fs::read_to_string(&path).unwrap(),
        "a,b\n1,\"x,y\"\n2,\"p\nq\"\n3,\n"
    );
    // A different header is refused.
    let e = append_rows(&path, &["a", "c"], &[["4", "z"]])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("the file's columns are [\"a\", \"b\"], expected [\"a\", \"c\"]"),
        "{e}"
    );
    // Rows of the wrong width are refused before anything is written.
    assert!(append_rows(&path, &["a", "b"], &[vec!["5"]]).is_err());
    assert_eq!(CsvTable::read(&path).unwrap().len(), 3);
    // A file cut mid-row is not appended to.
    fs::write(&path, "a,b\n1,par").unwrap();
    let e = append_rows(&path, &["a", "b"], &[["2", "y"]])
        .unwrap_err()
        .to_string();
    assert!(e.contains("ends in the middle of a row"), "{e}");
    fs::remove_dir_all(&dir).unwrap();
}

// ----- Reports -----

const STANDARD: &str = "                                 FINAL REPORT
 EXAMINATION:  CHEST (PA AND LAT)
 
 INDICATION:  ___F with new onset ascites  // eval for infection
 
 TECHNIQUE:  Chest PA and lateral
 
 COMPARISON:  None.
 
 FINDINGS: 
 
 There is no focal consolidation, pleural effusion or pneumothorax.  Bilateral
 nodular opacities that most likely represent nipple shadows. The
 cardiomediastinal silhouette is normal.
 
 IMPRESSION: 
 
 No acute cardiopulmonary process.
";

const WET_READ_AND_NOTIFICATION: &str = " WET READ: ___ ___ ___ 10:35 PM
  Increased opacity at the right base.
 ______________________________________________________________________________
                                 FINAL REPORT
 INDICATION:  History: ___M with fever
 
 COMPARISON:  ___
 
 IMPRESSION:  Right lower lobe opacity concerning for pneumonia.
 Recommend follow-up radiographs after treatment.
 
 NOTIFICATION:  The findings were discussed with Dr. ___ by Dr. ___ on the
 telephone on ___ at 10:40 AM, 2 minutes after discovery of the findings.
";

const COMBINED: &str = "                                 FINAL REPORT
 HISTORY:  Shortness of breath.
 
 FINDINGS AND IMPRESSION:  Portable AP chest radiograph demonstrates
 mild pulmonary vascular congestion.  No pleural effusion.
";

const CONCLUSION_ONLY: &str = " PA AND LATERAL VIEWS OF THE CHEST:
 
 REASON FOR EXAM:  Cough.
 
 The lungs are clear. Heart size is normal.
 
 CONCLUSION:  No pneumonia.
";

const FINDINGS_ONLY: &str =
    " FINDINGS:  Endotracheal tube tip terminates 4 cm above the carina.  The
 enteric tube courses below the diaphragm.
 
 RECOMMENDATION(S):  None.
";

const ADDENDUM: &str = " FINDINGS:  Left basilar opacity.
 
 IMPRESSION:  Possible left lower lobe pneumonia.
 
 ADDENDUM:  Reviewed with the prior study.
 
 IMPRESSION:  Left lower lobe atelectasis, no pneumonia.
 
 IMPRESSION:
";

fn sel(report: &str, section: &str) -> Option<String> {
    select_text(report, Section::parse(section).unwrap())
}

#[test]
fn report_sections() {
    let findings = "There is no focal consolidation, pleural effusion or pneumothorax. Bilateral nodular opacities that most likely represent nipple shadows. The cardiomediastinal silhouette is normal.";
    assert_eq!(sel(STANDARD, "findings").as_deref(), Some(findings));
    assert_eq!(
        sel(STANDARD, "impression").as_deref(),
        Some("No acute cardiopulmonary process.")
    );
    assert_eq!(
        sel(STANDARD, "findings_and_impression").unwrap(),
        format!("{findings} No acute cardiopulmonary process.")
    );
    let full = sel(STANDARD, "full").unwrap();
    assert!(
        full.starts_with("FINAL REPORT EXAMINATION: CHEST (PA AND LAT) INDICATION: ___F"),
        "{full}"
    );
    assert!(
        full.ends_with("IMPRESSION: No acute cardiopulmonary process."),
        "{full}"
    );

    // Impression text begins on the header line; NOTIFICATION ends it.
    assert_eq!(
        sel(WET_READ_AND_NOTIFICATION, "impression").as_deref(),
        Some("Right lower lobe opacity concerning for pneumonia. Recommend follow-up radiographs after treatment.")
    );
    assert_eq!(sel(WET_READ_AND_NOTIFICATION, "findings"), None);
    assert_eq!(
        sel(WET_READ_AND_NOTIFICATION, "impression_or_findings"),
        sel(WET_READ_AND_NOTIFICATION, "impression")
    );

    // A combined section serves both, and is used once.
    let both = "Portable AP chest radiograph demonstrates mild pulmonary vascular congestion. No pleural effusion.";
    for s in Section::NAMES.iter().filter(|&&s| s != "full") {
        assert_eq!(sel(COMBINED, s).as_deref(), Some(both), "{s}");
    }

    // CONCLUSION counts as impression; the other headers end sections.
    assert_eq!(
        sel(CONCLUSION_ONLY, "impression").as_deref(),
        Some("No pneumonia.")
    );
    assert_eq!(sel(CONCLUSION_ONLY, "findings"), None);
    assert_eq!(
        sel(CONCLUSION_ONLY, "findings_and_impression").as_deref(),
        Some("No pneumonia.")
    );

    // Findings only: the impression is missing, the fallbacks find the findings.
    let f = "Endotracheal tube tip terminates 4 cm above the carina. The enteric tube courses below the diaphragm.";
    assert_eq!(sel(FINDINGS_ONLY, "impression"), None);
    assert_eq!(
        sel(FINDINGS_ONLY, "impression_or_findings").as_deref(),
        Some(f)
    );
    assert_eq!(
        sel(FINDINGS_ONLY, "findings_and_impression").as_deref(),
        Some(f)
    );

    // The last non-empty section of a kind wins (an addendum revises the impression).
    assert_eq!(
        sel(ADDENDUM, "impression").as_deref(),
        Some("Left lower lobe atelectasis, no pneumonia.")
    );

    // Nothing to select.
    assert_eq!(sel("", "full"), None);
    assert_eq!(sel(" \n \n", "impression"), None);
    assert_eq!(
        sel("No headers at all.\nJust text.", "impression_or_findings"),
        None
    );
    assert_eq!(
        sel("No headers at all.\nJust text.", "full").as_deref(),
        Some("No headers at all. Just text.")
    );
}

// ----- PNG -----

fn pattern(len: usize, salt: u32) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i.wrapping_mul(2654435761).wrapping_add(salt) >> 13) as u8)
        .collect()
}

#[test]
fn png_round_trip_gray_rgb_rgba() {
    let dir = scratch("png");
    for (channels, color) in [
        (1, png::ColorType::Grayscale),
        (2, png::ColorType::GrayscaleAlpha),
        (3, png::ColorType::Rgb),
        (4, png::ColorType::Rgba),
    ] {
        let (w, h) = (37, 23);
        let pixels = pattern(w * h * channels, channels as u32);
        let path = dir.join(format!("img{channels}.png"));
        write_png_atomic(&path, &pixels, w, h, channels).unwrap();
        let img = read_png(&path).unwrap();
        assert_eq!((img.width, img.height, img.channels), (w, h, channels));
        assert_eq!(img.pixels, pixels);

        // The png crate's own decoder sees the same image.
        let dec = png::Decoder::new(std::io::BufReader::new(fs::File::open(&path).unwrap()));
        let mut reader = dec.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size()];
        let info = reader.next_frame(&mut buf).unwrap();
        assert_eq!((info.width, info.height), (w as u32, h as u32));
        assert_eq!(
            (info.color_type, info.bit_depth),
            (color, png::BitDepth::Eight)
        );
        assert_eq!(&buf[..info.buffer_size()], &pixels[..]);
    }
    assert_eq!(
        listing(&dir),
        ["img1.png", "img2.png", "img3.png", "img4.png"]
    );
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn png_errors_name_the_path() {
    let dir = scratch("png-bad");
    let good = dir.join("good.png");
    write_png_atomic(&good, &pattern(64 * 64 * 3, 7), 64, 64, 3).unwrap();
    let bytes = fs::read(&good).unwrap();

    let truncated = dir.join("truncated.png");
    fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let garbage = dir.join("garbage.png");
    fs::write(&garbage, b"definitely not a PNG file").unwrap();
    let mut flipped = bytes.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0xff; // breaks the IDAT CRC
    let corrupt = dir.join("corrupt.png");
    fs::write(&corrupt, &flipped).unwrap();
    for path in [&truncated, &garbage, &corrupt, &dir.join("missing.png")] {
        let e = read_png(path).unwrap_err().to_string();
        assert!(e.starts_with(&path.display().to_string()), "{e}");
    }

    // Bad arguments, and a missing folder: errors, and no file or temp file is left.
    let e = write_png_atomic(dir.join("x.png"), &[0; 10], 2, 2, 3)
        .unwrap_err()
        .to_string();
    assert!(e.contains("x.png") && e.contains("10 bytes"), "{e}");
    assert!(write_png_atomic(dir.join("y.png"), &[0; 8], 2, 2, 2).is_ok());
    assert!(write_png_atomic(dir.join("z.png"), &[0; 20], 2, 2, 5).is_err());
    assert!(write_png_atomic(dir.join("no/such/dir.png"), &[0; 4], 2, 2, 1).is_err());
    assert_eq!(
        listing(&dir),
        [
            "corrupt.png",
            "garbage.png",
            "good.png",
            "truncated.png",
            "y.png"
        ]
    );
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn png_overwrite_is_atomic_and_leaves_no_temp() {
    let dir = scratch("png-atomic");
    let path = dir.join("a.png");
    write_png_atomic(&path, &[1, 2, 3, 4], 2, 2, 1).unwrap();
    write_png_atomic(&path, &[9, 8, 7, 6, 5, 4], 3, 2, 1).unwrap();
    assert_eq!(read_png(&path).unwrap().pixels, [9, 8, 7, 6, 5, 4]);
    assert_eq!(listing(&dir), ["a.png"]);
    fs::remove_dir_all(&dir).unwrap();
}

// ----- Tensor <-> pixels -----

/// numpy's `round` (half to even) of a value that is exactly `k + 0.5`.
fn half_to_even(k: u32) -> u8 {
    (if k.is_multiple_of(2) { k } else { k + 1 }) as u8
}

#[test]
fn rounding_is_numpy_half_to_even() {
    // Every (k + 0.5) / 255 in f32 times 255 is exactly k + 0.5 (checked below), so these
    // are all ties; numpy (and so diffusers) rounds them to even.
    let vals: Vec<f32> = (0..255)
        .map(|k| ((k as f64 + 0.5) / 255.0) as f32)
        .collect();
    for (k, v) in vals.iter().enumerate() {
        assert_eq!(v * 255.0, k as f32 + 0.5);
    }
    let t = Tensor::from_vec(vals.clone(), &[1, 1, 1, 255]).unwrap();
    let out = tensor_to_u8_images(&t).unwrap();
    let want: Vec<u8> = (0..255).map(half_to_even).collect();
    assert_eq!(out, vec![want]);
    // Spot values printed by numpy: (np.float32(x) * 255).round().astype("uint8").
    assert_eq!(&out[0][..4], &[0, 2, 2, 4]);
    assert_eq!(
        (out[0][126], out[0][127], out[0][128], out[0][254]),
        (126, 128, 128, 254)
    );

    // Clamping, and just off the ties.
    let t = Tensor::from_vec(vec![-1.0f32, 2.0, 0.0021, 0.0018, 1.0, 0.99], &[1, 1, 2, 3]).unwrap();
    assert_eq!(
        tensor_to_u8_images(&t).unwrap(),
        vec![vec![0, 255, 1, 0, 255, 252]]
    );
}

#[test]
fn tensor_to_pixels_interleaves_and_inverts() {
    // [N=2, C=3, H=1, W=2]: channel planes become RGB triples per pixel.
    let v: Vec<f32> = (0..12).map(|i| i as f32 / 255.0).collect();
    let t = Tensor::from_vec(v, &[2, 3, 1, 2]).unwrap();
    let imgs = tensor_to_u8_images(&t).unwrap();
    assert_eq!(imgs, vec![vec![0, 2, 4, 1, 3, 5], vec![6, 8, 10, 7, 9, 11]]);

    // Every byte value survives u8 -> tensor -> u8, in f32, f64 and f16.
    let all: Vec<u8> = (0..=255).collect();
    let imgs = vec![all.clone(), all.iter().rev().copied().collect()];
    for dtype in [DType::F32, DType::F64, DType::F16] {
        let t = u8_to_tensor(&imgs, 8, 8, 4, dtype).unwrap();
        assert_eq!((t.shape(), t.dtype()), (&[2, 4, 8, 8][..], dtype));
        assert_eq!(tensor_to_u8_images(&t).unwrap(), imgs, "{dtype}");
    }
    // Values are v / 255 computed in f32, planes in CHW order.
    let t = u8_to_tensor(&[[0u8, 51, 255]], 1, 1, 3, DType::F32).unwrap();
    assert_eq!(t.to_vec_f32(), vec![0.0, 51.0f32 / 255.0, 1.0]);
    // bf16 tensors convert too (through f32, as diffusers' `.float()` does).
    let t = Tensor::from_values(vec![0.5f32, 1.0, 0.0, 0.25], &[1, 1, 2, 2], DType::BF16).unwrap();
    assert_eq!(
        tensor_to_u8_images(&t).unwrap(),
        vec![vec![128, 255, 0, 64]]
    );
}

// ----- Work items -----

/// The documented seed formula, written out again independently of the library.
fn seed_by_formula(run_seed: u64, id: &str, index: usize) -> u64 {
    fn mix(x: u64) -> u64 {
        let mut z = x.wrapping_add(0x9E3779B97F4A7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58476D1CE4E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D049BB133111EB);
        z ^ (z >> 31)
    }
    let mut h: u64 = 0xCBF29CE484222325;
    for b in id.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001B3);
    }
    mix(mix(mix(run_seed) ^ h) ^ index as u64)
}

#[test]
fn seeds_are_pinned_and_distinct() {
    // Computed once (in Python) from the documented formula; must never change.
    let known: [(u64, &str, usize, u64); 6] = [
        (0, "", 0, 0xa6bbc8dcbe30928c),
        (0, "a", 0, 0x65ba8032a9c1e010),
        (42, "p10/p10000032/s50414267", 0, 0x23ab4e9ade8955a0),
        (42, "p10/p10000032/s50414267", 1, 0x64707cdc6c4b087c),
        (2024, "study-7", 3, 0x89711a6a12cdcdb1),
        (u64::MAX, "éé", 7, 0xc12c60741a4123a8),
    ];
    for (run, id, index, want) in known {
        assert_eq!(image_seed(run, id, index), want, "{run} {id:?} {index}");
        assert_eq!(
            seed_by_formula(run, id, index),
            want,
            "{run} {id:?} {index}"
        );
    }
    let mut seen = HashSet::new();
    for run in [0u64, 1, 12345] {
        for i in 0..500 {
            let id = format!("s{i}");
            for index in 0..4 {
                let s = image_seed(run, &id, index);
                assert_eq!(s, seed_by_formula(run, &id, index));
                assert!(seen.insert(s), "seed collision at {run} {id} {index}");
            }
        }
    }
    // Work items carry these seeds, independent of their position in the list.
    let prompts = prompts(&["b", "a"]);
    let items = work_list(&prompts, 2, 9).unwrap();
    let reversed = work_list(&[prompts[1].clone(), prompts[0].clone()], 2, 9).unwrap();
    for it in &items {
        assert_eq!(it.seed, image_seed(9, &it.id, it.index));
        assert!(reversed.iter().any(|r| r == it));
    }
}

fn prompts(ids: &[&str]) -> Vec<Prompt> {
    ids.iter()
        .map(|id| Prompt {
            id: id.to_string(),
            prompt: format!("chest x-ray {id}"),
            negative: String::new(),
        })
        .collect()
}

#[test]
fn work_list_order_and_file_names() {
    let items = work_list(&prompts(&["p/1", "p 2"]), 3, 0).unwrap();
    let names = file_names(&items, 3).unwrap();
    let got: Vec<(&str, usize, &str)> = items
        .iter()
        .zip(&names)
        .map(|(i, f)| (i.id.as_str(), i.index, f.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            ("p/1", 0, "p_1_0.png"),
            ("p/1", 1, "p_1_1.png"),
            ("p/1", 2, "p_1_2.png"),
            ("p 2", 0, "p_2_0.png"),
            ("p 2", 1, "p_2_1.png"),
            ("p 2", 2, "p_2_2.png"),
        ]
    );
    // One image per prompt: no index suffix.
    let one = work_list(&prompts(&["s50414267"]), 1, 0).unwrap();
    assert_eq!(one[0].file_name(1), "s50414267.png");
    assert_eq!(one[0].file_name(2), "s50414267_0.png");
    assert_eq!(image_file_name("a:b*c?", 0, 1), "a_b_c_.png");
}

#[test]
fn file_name_collisions_are_detected() {
    let e = work_list(&prompts(&["x", "a/b", "y", "a_b"]), 1, 0)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("\"a/b\"") && e.contains("\"a_b\"") && e.contains("a_b.png"),
        "{e}"
    );
    let e = work_list(&prompts(&["dup", "z", "dup"]), 2, 0)
        .unwrap_err()
        .to_string();
    assert!(e.contains("\"dup\" appears more than once"), "{e}");
    // Distinct ids with distinct names pass; so does the check on its own.
    let items = work_list(&prompts(&["a.b", "a-b", "a_b"]), 2, 0).unwrap();
    assert_eq!(file_names(&items, 2).unwrap().len(), 6);
    assert!(file_names(&[items[0].clone(), items[0].clone()], 2).is_err());
    // With several images per prompt the collision shows on every index.
    let e = work_list(&prompts(&["a b", "a_b"]), 3, 0)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("\"a b\" and \"a_b\"") && e.contains("a_b_0.png"),
        "{e}"
    );
}

#[test]
fn shards_partition_the_work() {
    let ids: Vec<String> = (0..23).map(|i| format!("r{i}")).collect();
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let all = work_list(&prompts(&refs), 2, 5).unwrap();
    for n in 1..=7 {
        let mut union = Vec::new();
        for i in 0..n {
            let shard = Shard::parse(&format!("{i}/{n}")).unwrap();
            let part = shard.select(all.clone());
            for (k, item) in all.iter().enumerate() {
                assert_eq!(shard.contains(k), part.contains(item), "{shard} item {k}");
            }
            union.extend(part);
        }
        assert_eq!(
            union.len(),
            all.len(),
            "shards of {n} overlap or miss items"
        );
        let files: HashSet<String> = union.iter().map(|i| i.file_name(2)).collect();
        assert_eq!(files.len(), all.len(), "shards of {n} overlap");
    }
    assert_eq!(Shard::all().select(all.clone()), all);
    for bad in ["3/3", "0/0", "1", "x/2"] {
        assert!(Shard::parse(bad).is_err(), "{bad}");
    }
    let s = Shard::new(2, 5).unwrap();
    assert_eq!(
        (s.index(), s.count(), s.to_string()),
        (2, 5, "2/5".to_string())
    );
    assert!(Shard::new(5, 5).is_err());
}

#[test]
fn resume_and_manifest() {
    let dir = scratch("resume");
    let items = work_list(&prompts(&["a", "b", "c"]), 2, 1).unwrap();
    assert_eq!(pending(items.clone(), &dir, 2), items);
    let manifest = Manifest::new(dir.join("manifest.csv"), 30, 7.5, "ddim", 2);
    // Images 0..3 written; the manifest lists only the first two (a run stopped between).
    for it in &items[..3] {
        write_png_atomic(dir.join(it.file_name(2)), &[it.seed as u8; 4], 2, 2, 1).unwrap();
    }
    manifest.append(&items[..2]).unwrap();
    let left = pending(items.clone(), &dir, 2);
    assert_eq!(left, items[3..]);
    assert_eq!(manifest.reconcile(&items, &dir).unwrap(), 1);
    assert_eq!(manifest.reconcile(&items, &dir).unwrap(), 0);
    manifest.append(&left).unwrap();
    let rows = Manifest::read(&manifest.path).unwrap();
    assert_eq!(rows.len(), items.len());
    for (row, it) in rows.iter().zip(&items) {
        assert_eq!(
            (&row.id, &row.prompt, row.seed, &row.file),
            (&it.id, &it.prompt, it.seed, &it.file_name(2))
        );
        assert_eq!(
            (row.steps, row.guidance, row.scheduler.as_str()),
            (30, 7.5, "ddim")
        );
    }
    let text = fs::read_to_string(&manifest.path).unwrap();
    assert!(
        text.starts_with("id,prompt,seed,steps,guidance,scheduler,file\na,chest x-ray a,"),
        "{text}"
    );
    // A manifest with a broken number names the line.
    fs::write(
        dir.join("bad.csv"),
        "id,prompt,seed,steps,guidance,scheduler,file\na,p,12x,30,7.5,ddim,a.png\n",
    )
    .unwrap();
    let e = Manifest::read(dir.join("bad.csv")).unwrap_err().to_string();
    assert!(e.contains("bad.csv: line 2: seed \"12x\""), "{e}");
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn hidden_progress_counts_resumed_work() {
    let mut p = Progress::hidden().with_done(3);
    p.inc(1);
    p.inc(2);
    p.finish();
    assert_eq!(p.done(), 6);
}
