//! Data pipeline: manifests (good, missing columns, relative/absolute paths, bad rows),
//! PNG/JPEG decoding against Pillow, transforms against torchvision, deterministic shuffles
//! and crops, skip/fail on bad images, prefetching and resuming. Fixtures:
//! scripts/fixtures/data_loader.py.

mod common;

use common::Fixture;
use medsyn::data::transforms::random_crop_offsets;
use medsyn::data::{
    CropMode, Loader, LoaderConfig, Manifest, ManifestOptions, OnBadImage, Section, Split,
    TextSource, TransformConfig,
};
use medsyn::imageio::decode::{read_image, read_image_as, to_channels};
use medsyn::imageio::{write_png_atomic, Image};
use medsyn::DType;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/data_loader")
}

fn tmp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("medsyn_data_{name}_{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The fixture's pixel reference `key` as bytes (stored exactly in bf16).
fn ref_pixels(fx: &Fixture, key: &str) -> (Vec<usize>, Vec<u8>) {
    let t = fx.get(key);
    let v: Vec<u8> = t.to_vec_f64().iter().map(|&x| x as u8).collect();
    (t.shape().to_vec(), v)
}

fn check_image(img: &Image, fx: &Fixture, key: &str, tol: u8) {
    check_image_edge(img, fx, key, tol, tol)
}

/// Like [`check_image`], with a separate tolerance for the last row and column.
fn check_image_edge(img: &Image, fx: &Fixture, key: &str, tol: u8, edge_tol: u8) {
    let (shape, want) = ref_pixels(fx, key);
    assert_eq!(
        [img.height, img.width, img.channels],
        [shape[0], shape[1], shape[2]],
        "{key}: shape"
    );
    let (w, c) = (img.width, img.channels);
    let (mut inner, mut edge) = (0, 0);
    for (i, (a, b)) in img.pixels.iter().zip(&want).enumerate() {
        let (y, x) = (i / c / w, i / c % w);
        let d = a.abs_diff(*b);
        if y + 1 == img.height || x + 1 == w {
            edge = edge.max(d);
        } else {
            inner = inner.max(d);
        }
    }
    assert!(
        inner <= tol,
        "{key}: max difference from Pillow {inner} > {tol}"
    );
    assert!(
        edge <= edge_tol,
        "{key}: last row/column differ from Pillow by {edge} > {edge_tol}"
    );
}

#[test]
fn png_decoding_matches_pillow_exactly() {
    let fx = Fixture::load("data_loader");
    let dir = fixture_dir();
    for (file, key) in [
        ("gray.png", "pix_gray_png"),
        ("rgb.png", "pix_rgb_png"),
        ("rgba.png", "pix_rgba_png"),
        ("gray16.png", "pix_gray16_png_expected"),
    ] {
        check_image(&read_image(dir.join(file)).unwrap(), &fx, key, 0);
    }
    // Channel conversions as PIL's convert("RGB") / convert("L").
    for (file, key) in [("rgb.png", "pix_rgb_png"), ("rgba.png", "pix_rgba_png")] {
        let img = read_image(dir.join(file)).unwrap();
        check_image(
            &to_channels(img.clone(), 3).unwrap(),
            &fx,
            &format!("{key}_rgb"),
            0,
        );
        check_image(&to_channels(img, 1).unwrap(), &fx, &format!("{key}_l"), 0);
    }
    let g = read_image_as(dir.join("gray.png"), 3).unwrap();
    assert_eq!(g.channels, 3);
    assert!(g.pixels.chunks(3).all(|p| p[0] == p[1] && p[1] == p[2]));
}

#[test]
fn jpeg_decoding_matches_pillow_within_two_levels() {
    let fx = Fixture::load("data_loader");
    let dir = fixture_dir();
    for (file, key) in [
        ("gray.jpg", "pix_gray_jpg"),
        ("gray_progressive.jpg", "pix_gray_progressive_jpg"),
        ("rgb444.jpg", "pix_rgb444_jpg"),
        // A JPEG named .png: decoding goes by content, not by extension.
        ("jpeg_named.png", "pix_jpeg_named_png"),
    ] {
        check_image(&read_image(dir.join(file)).unwrap(), &fx, key, 2);
    }
    // 4:2:0 chroma on a 30x24 image (15x12 chroma samples, not whole MCUs): libjpeg-turbo's
    // fancy upsampling replicates the last chroma sample for the last column and row, while
    // zune-jpeg interpolates towards the encoder's padding sample; only they differ more.
    check_image_edge(
        &read_image(dir.join("rgb.jpg")).unwrap(),
        &fx,
        "pix_rgb_jpg",
        2,
        8,
    );
}

#[test]
fn corrupt_and_missing_images_are_errors_naming_the_path() {
    let dir = fixture_dir();
    let e = read_image(dir.join("truncated.jpg"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("truncated.jpg") && e.contains("JPEG"), "{e}");
    let e = read_image(dir.join("nope.png")).unwrap_err().to_string();
    assert!(e.contains("nope.png") && e.contains("cannot read"), "{e}");
    let tmp = tmp_dir("corrupt");
    let text = tmp.join("text.png");
    std::fs::write(&text, "hello").unwrap();
    let e = read_image(&text).unwrap_err().to_string();
    assert!(
        e.contains("text.png") && e.contains("not a PNG or JPEG"),
        "{e}"
    );
    let png = std::fs::read(dir.join("gray.png")).unwrap();
    let cut = tmp.join("cut.png");
    std::fs::write(&cut, &png[..png.len() / 2]).unwrap();
    let e = read_image(&cut).unwrap_err().to_string();
    assert!(e.contains("cut.png") && e.contains("PNG"), "{e}");
    std::fs::remove_dir_all(tmp).unwrap();
}

fn assert_close_f32(got: &[f32], want: &[f64], tol: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let d = got
        .iter()
        .zip(want)
        .map(|(a, b)| (*a as f64 - b).abs())
        .fold(0.0, f64::max);
    assert!(d <= tol, "{what}: max difference {d:.3e} > {tol:.1e}");
}

/// torchvision `Resize(antialias=True)` on a float tensor uses the same triangle filter as
/// medsyn (and PIL), so the float path agrees to f32 rounding (1e-4 in normalised units is
/// 0.013 of a grey level; an off-by-one pixel is ~1e-1); the PIL path resizes uint8 in
/// fixed point and rounds, which moves values by up to 1/255 (divided by std after
/// Normalize). The sizes have odd crop margins, so centre offsets round halves to even.
#[test]
fn transforms_match_torchvision() {
    let fx = Fixture::load("data_loader");
    let dir = fixture_dir();
    let cases = [
        ("down_rgb", "rgb.png", 20, 16, vec![0.5], vec![0.5], 3),
        (
            "up_gray",
            "gray.png",
            36,
            32,
            vec![0.485, 0.456, 0.406],
            vec![0.229, 0.224, 0.225],
            3,
        ),
        ("down_gray1", "gray.png", 18, 16, vec![0.3], vec![0.7], 1),
    ];
    for (name, file, resize, crop, mean, std, channels) in cases {
        let cfg = TransformConfig {
            resize,
            crop,
            channels,
            mean,
            std: std.clone(),
        };
        let img = read_image(dir.join(file)).unwrap();
        let out = cfg.apply(&img, CropMode::Center, (0, 0, 0)).unwrap();
        let want = fx.get(&format!("tf_{name}"));
        assert_eq!(want.shape(), &[channels, crop, crop]);
        assert_close_f32(&out, &want.to_vec_f64(), 1e-4, name);
        let key = format!("tfpil_{name}");
        if fx.has(&key) {
            // PIL resizes uint8 in fixed point and rounds: up to one level off.
            let min_std = std.iter().cloned().fold(f32::MAX, f32::min) as f64;
            let tol = 1.0 / 255.0 / min_std + 1e-5;
            assert_close_f32(&out, &fx.get(&key).to_vec_f64(), tol, &key);
        }
    }
    // The default 256 / 224 transform on a 300x260 pattern (subsampled reference).
    let (w, h) = (300usize, 260usize);
    let pixels: Vec<u8> = (0..h)
        .flat_map(|y| (0..w).map(move |x| ((x * 7 + y * 13 + (x * y) % 31) % 256) as u8))
        .collect();
    let img = Image {
        width: w,
        height: h,
        channels: 1,
        pixels,
    };
    let out = TransformConfig::default()
        .apply(&img, CropMode::Center, (0, 0, 0))
        .unwrap();
    assert_eq!(out.len(), 3 * 224 * 224);
    let sub: Vec<f32> = (0..3)
        .flat_map(|c| {
            let out = &out;
            (0..224).step_by(7).flat_map(move |y| {
                (0..224)
                    .step_by(7)
                    .map(move |x| out[c * 224 * 224 + y * 224 + x])
            })
        })
        .collect();
    assert_close_f32(
        &sub,
        &fx.get("tf_default_sub").to_vec_f64(),
        1e-4,
        "default",
    );
}

#[test]
fn transform_settings_are_checked() {
    let img = Image {
        width: 4,
        height: 4,
        channels: 1,
        pixels: vec![0; 16],
    };
    let bad = [
        (
            TransformConfig {
                crop: 300,
                ..Default::default()
            },
            "at most the resize",
        ),
        (
            TransformConfig {
                channels: 2,
                ..Default::default()
            },
            "1 or 3 channels",
        ),
        (
            TransformConfig {
                mean: vec![0.5, 0.5],
                ..Default::default()
            },
            "give 1 or 3",
        ),
        (
            TransformConfig {
                std: vec![0.0],
                ..Default::default()
            },
            "positive",
        ),
    ];
    for (cfg, msg) in bad {
        let e = cfg
            .apply(&img, CropMode::Center, (0, 0, 0))
            .unwrap_err()
            .to_string();
        assert!(e.contains(msg), "{e}");
    }
}

#[test]
fn random_crops_are_deterministic_and_cover_all_offsets() {
    let a = random_crop_offsets(7, 3, 11, 300, 256, 224);
    assert_eq!(a, random_crop_offsets(7, 3, 11, 300, 256, 224));
    let differing = (0..50)
        .filter(|&i| {
            random_crop_offsets(7, 3, i, 300, 256, 224)
                != random_crop_offsets(7, 4, i, 300, 256, 224)
        })
        .count();
    assert!(
        differing > 45,
        "epochs should draw new crops ({differing}/50)"
    );
    let mut seen = HashSet::new();
    for i in 0..2000 {
        let (top, left) = random_crop_offsets(1, 0, i, 12, 10, 8);
        assert!(top <= 2 && left <= 4);
        seen.insert((top, left));
    }
    assert_eq!(seen.len(), 3 * 5, "every crop position is drawn");
    // Random crop through the transform equals the crop at those offsets.
    let (w, h) = (40usize, 30usize);
    let pixels: Vec<u8> = (0..w * h).map(|i| (i * 37 % 251) as u8).collect();
    let img = Image {
        width: w,
        height: h,
        channels: 1,
        pixels,
    };
    let cfg = TransformConfig {
        resize: 30,
        crop: 20,
        channels: 1,
        ..Default::default()
    };
    let out = cfg.apply(&img, CropMode::Random, (5, 2, 9)).unwrap();
    let (top, left) = random_crop_offsets(5, 2, 9, 40, 30, 20);
    for y in 0..20 {
        for x in 0..20 {
            let v = img.pixels[(top + y) * w + left + x] as f32 / 255.0 * 2.0 - 1.0;
            assert!((out[y * 20 + x] - v).abs() < 1e-5);
        }
    }
}

const REPORT: &str = "FINAL REPORT\n EXAMINATION: chest\n FINDINGS: Lungs are clear.\n IMPRESSION: No acute process.";

#[test]
fn manifests_read_paths_text_splits_and_labels() {
    let dir = tmp_dir("manifest");
    let abs = dir.join("abs.png");
    let csv = format!(
        "path,report,split,Edema,Effusion\n\
         img/a.png,\"{REPORT}\",train,1,\n\
         {},IMPRESSION: Small effusion.,validate,0,1.0\n\
         img/c.jpg,FINDINGS: only findings,test,,0\n\
         img/d.png,,train,1,1\n",
        abs.display()
    );
    let path = dir.join("m.csv");
    std::fs::write(&path, csv).unwrap();
    let opts = ManifestOptions {
        text: TextSource::Column {
            name: "report".into(),
            section: Section::Impression,
        },
        label_columns: vec!["Edema".into(), "Effusion".into()],
        ..Default::default()
    };
    let m = Manifest::read(&path, &opts).unwrap();
    // Row 3 has no impression and row 4 no report: both dropped as empty text.
    assert_eq!(m.len(), 2);
    assert_eq!(m.skipped_empty_text, 2);
    assert_eq!(m.samples[0].image, dir.join("img/a.png"));
    assert_eq!(m.samples[0].id, "img/a.png");
    assert_eq!(m.samples[0].text, "No acute process.");
    assert_eq!(m.samples[0].labels, vec![Some(1.0), None]);
    assert_eq!(m.samples[0].split, Some(Split::Train));
    assert_eq!(m.samples[0].line, 2);
    assert_eq!(m.samples[1].image, abs);
    assert_eq!(m.samples[1].split, Some(Split::Valid));
    assert_eq!(m.samples[1].labels, vec![Some(0.0), Some(1.0)]);
    assert_eq!(m.split(Split::Valid).len(), 1);

    // Whole reports, a split filter, and empty text as an error.
    let full = ManifestOptions {
        split: Some(Split::Test),
        ..Default::default()
    };
    let m = Manifest::read(&path, &full).unwrap();
    assert_eq!(m.len(), 1);
    assert_eq!(m.samples[0].text, "FINDINGS: only findings");
    let strict = ManifestOptions {
        skip_empty_text: false,
        ..Default::default()
    };
    let e = Manifest::read(&path, &strict).unwrap_err().to_string();
    assert!(e.contains("m.csv: line 8") && e.contains("empty"), "{e}");

    // Impression + findings columns (MGCA order: impression first), no text, ids.
    let p2 = dir.join("sections.csv");
    std::fs::write(&p2, "dicom,image,impression,findings\nd1,x.png,No change. , Clear lungs.\nd2,y.png,,Small  effusion.\n").unwrap();
    let opts = ManifestOptions {
        image_column: "image".into(),
        id_column: Some("dicom".into()),
        text: TextSource::ImpressionFindings {
            impression: "impression".into(),
            findings: "findings".into(),
        },
        ..Default::default()
    };
    let m = Manifest::read(&p2, &opts).unwrap();
    assert_eq!(m.samples[0].text, "No change. Clear lungs.");
    assert_eq!(m.samples[1].text, "Small effusion.");
    assert_eq!(m.samples[1].id, "d2");
    assert_eq!(m.samples[1].split, None);
    let none = ManifestOptions {
        image_column: "image".into(),
        text: TextSource::None,
        ..Default::default()
    };
    assert_eq!(Manifest::read(&p2, &none).unwrap().samples[0].text, "");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn manifest_errors_name_file_and_line() {
    let dir = tmp_dir("manifest_err");
    let path = dir.join("bad.csv");
    let read = |text: &str, opts: &ManifestOptions| {
        std::fs::write(&path, text).unwrap();
        Manifest::read(&path, opts).unwrap_err().to_string()
    };
    let d = ManifestOptions::default();
    let e = read("image,report\na.png,x\n", &d);
    assert!(
        e.contains("bad.csv") && e.contains("no column \"path\""),
        "{e}"
    );
    let e = read("path,text\na.png,x\n", &d);
    assert!(e.contains("no column \"report\""), "{e}");
    let e = read("path,report\na.png,x\n  ,y\n", &d);
    assert!(e.contains("bad.csv: line 3: empty image path"), "{e}");
    let e = read("path,report\na.png,x\nb.png,y,z\n", &d);
    assert!(
        e.contains("bad.csv: line 3") && e.contains("3 fields"),
        "{e}"
    );
    let e = read("path,report\na.png,\"unclosed\n", &d);
    assert!(e.contains("bad.csv"), "{e}");
    let e = read("path,report,split\na.png,x,training\n", &d);
    assert!(e.contains("line 2") && e.contains("\"training\""), "{e}");
    let labels = ManifestOptions {
        label_columns: vec!["Edema".into()],
        ..d.clone()
    };
    let e = read("path,report,Edema\na.png,x,yes\n", &labels);
    assert!(e.contains("line 2") && e.contains("\"yes\""), "{e}");
    let e = read("path,report\na.png,x\n", &labels);
    assert!(e.contains("no column \"Edema\""), "{e}");
    let split = ManifestOptions {
        split: Some(Split::Train),
        ..d
    };
    let e = read("path,report\na.png,x\n", &split);
    assert!(e.contains("no \"split\" column"), "{e}");
    assert!(
        Manifest::read(dir.join("missing.csv"), &ManifestOptions::default())
            .unwrap_err()
            .to_string()
            .contains("missing.csv")
    );
    std::fs::remove_dir_all(dir).unwrap();
}

/// A folder of `n` small gray PNGs (sizes vary) and a manifest with one label column.
fn image_set(name: &str, n: usize) -> (PathBuf, PathBuf) {
    let dir = tmp_dir(name);
    std::fs::create_dir_all(dir.join("img")).unwrap();
    let mut csv = String::from("path,report,label\n");
    for i in 0..n {
        let (w, h) = (20 + i % 5, 16 + i % 3);
        let px: Vec<u8> = (0..w * h)
            .map(|p| ((p * 31 + i * 17) % 256) as u8)
            .collect();
        write_png_atomic(dir.join(format!("img/{i}.png")), &px, w, h, 1).unwrap();
        let label = if i % 4 == 3 {
            String::new()
        } else {
            (i % 2).to_string()
        };
        csv += &format!("img/{i}.png,report number {i},{label}\n");
    }
    let manifest = dir.join("manifest.csv");
    std::fs::write(&manifest, csv).unwrap();
    (dir, manifest)
}

fn small_config(threads: usize) -> LoaderConfig {
    LoaderConfig {
        batch_size: 4,
        shuffle: true,
        drop_last: false,
        seed: 42,
        threads,
        prefetch: 3,
        dtype: DType::F32,
        crop: CropMode::Random,
        transform: TransformConfig {
            resize: 14,
            crop: 12,
            ..Default::default()
        },
        on_bad_image: OnBadImage::Fail,
    }
}

fn opts() -> ManifestOptions {
    ManifestOptions {
        label_columns: vec!["label".into()],
        ..Default::default()
    }
}

#[test]
fn loader_batches_shuffles_and_threads_are_deterministic() {
    let (dir, path) = image_set("loader", 18);
    let m = Manifest::read(&path, &opts()).unwrap();
    let one = Loader::new(m.clone(), small_config(1)).unwrap();
    let two = Loader::new(m.clone(), small_config(2)).unwrap();
    assert_eq!(one.batches_per_epoch(), 5);
    let o0 = one.epoch_order(0);
    assert_eq!(o0, two.epoch_order(0));
    assert_ne!(o0, one.epoch_order(1));
    let mut sorted = o0.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..18).collect::<Vec<_>>());
    for epoch in 0..2 {
        let a: Vec<_> = one.epoch(epoch).unwrap().map(|b| b.unwrap()).collect();
        let b: Vec<_> = two.epoch(epoch).unwrap().map(|b| b.unwrap()).collect();
        assert_eq!(a.len(), 5);
        let order = one.epoch_order(epoch);
        for (k, (x, y)) in a.iter().zip(&b).enumerate() {
            assert_eq!((x.epoch, x.batch), (epoch, k));
            assert_eq!(x.indices, order[k * 4..(k * 4 + 4).min(18)].to_vec());
            assert_eq!(x.indices, y.indices);
            assert_eq!(x.images.shape(), &[x.len(), 3, 12, 12]);
            assert_eq!(
                x.images.to_vec_f32(),
                y.images.to_vec_f32(),
                "threads change nothing"
            );
            let texts: Vec<String> = x
                .indices
                .iter()
                .map(|i| format!("report number {i}"))
                .collect();
            assert_eq!(x.texts, texts);
            let labels = x.labels.as_ref().unwrap();
            assert_eq!(labels.values.shape(), &[x.len(), 1]);
            for (j, &i) in x.indices.iter().enumerate() {
                let (v, m) = (labels.values.to_vec_f32()[j], labels.mask.to_vec_f32()[j]);
                if i % 4 == 3 {
                    assert_eq!((v, m), (0.0, 0.0));
                } else {
                    assert_eq!((v, m), ((i % 2) as f32, 1.0));
                }
            }
        }
        assert_eq!(a[4].len(), 2, "the last batch is partial without drop_last");
    }
    // Crops change with the epoch, and images match the synchronous path.
    let e0 = one.load_batch(0, 1).unwrap();
    let e1 = one.load_batch(1, 1).unwrap();
    let threaded: Vec<_> = two.epoch(0).unwrap().map(|b| b.unwrap()).collect();
    assert_eq!(e0.images.to_vec_f32(), threaded[1].images.to_vec_f32());
    assert_ne!(e0.images.to_vec_f32(), e1.images.to_vec_f32());
    // drop_last, centre crops, bf16, no shuffle.
    let cfg = LoaderConfig {
        drop_last: true,
        shuffle: false,
        crop: CropMode::Center,
        dtype: DType::BF16,
        ..small_config(2)
    };
    let l = Loader::new(m, cfg).unwrap();
    let all: Vec<_> = l.epoch(0).unwrap().map(|b| b.unwrap()).collect();
    assert_eq!(all.len(), 4);
    assert_eq!(all[3].indices, vec![12, 13, 14, 15]);
    assert_eq!(all[0].images.dtype(), DType::BF16);
    let again: Vec<_> = l.epoch(5).unwrap().map(|b| b.unwrap()).collect();
    assert_eq!(
        all[2].images.to_vec_f32(),
        again[2].images.to_vec_f32(),
        "centre crops are fixed"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn loader_resumes_at_a_position() {
    let (dir, path) = image_set("resume", 22);
    let m = Manifest::read(&path, &opts()).unwrap();
    let l = Loader::new(m, small_config(2)).unwrap();
    let full: Vec<_> = l.epoch(3).unwrap().map(|b| b.unwrap()).collect();
    let mut it = l.start_at(3, 0).unwrap();
    let first = it.next().unwrap().unwrap();
    let second = it.next().unwrap().unwrap();
    assert_eq!(it.position(), (3, 2));
    drop(it); // interrupted: the workers stop.
    assert_eq!(first.indices, full[0].indices);
    assert_eq!(second.images.to_vec_f32(), full[1].images.to_vec_f32());
    let resumed: Vec<_> = l
        .start_at(3, second.batch + 1)
        .unwrap()
        .map(|b| b.unwrap())
        .collect();
    assert_eq!(resumed.len(), full.len() - 2);
    for (r, f) in resumed.iter().zip(&full[2..]) {
        assert_eq!((r.epoch, r.batch), (f.epoch, f.batch));
        assert_eq!(r.indices, f.indices);
        assert_eq!(r.images.to_vec_f32(), f.images.to_vec_f32());
    }
    assert_eq!(l.start_at(3, full.len()).unwrap().count(), 0);
    let e = l.start_at(3, full.len() + 1).err().unwrap().to_string();
    assert!(e.contains("an epoch has 6 batches"), "{e}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn loader_prefetches_up_to_its_window() {
    let (dir, path) = image_set("prefetch", 40);
    let m = Manifest::read(&path, &opts()).unwrap();
    let l = Loader::new(m, small_config(2)).unwrap();
    let it = l.epoch(0).unwrap();
    let start = Instant::now();
    while it.ready() < 3 && start.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(
        it.ready(),
        3,
        "the prefetch window fills while the consumer is idle"
    );
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(it.ready(), 3, "and no further");
    assert_eq!(it.count(), 10);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn bad_images_skip_or_fail() {
    let (dir, path) = image_set("bad", 10);
    std::fs::copy(fixture_dir().join("truncated.jpg"), dir.join("img/3.png")).unwrap();
    for k in [6, 8, 9] {
        std::fs::remove_file(dir.join(format!("img/{k}.png"))).unwrap();
    }
    let m = Manifest::read(&path, &opts()).unwrap();
    let cfg = LoaderConfig {
        shuffle: false,
        ..small_config(2)
    };
    let fail = Loader::new(m.clone(), cfg.clone()).unwrap();
    let results: Vec<_> = fail.epoch(0).unwrap().collect();
    assert_eq!(results.len(), 1, "the first error ends the epoch");
    let e = results[0].as_ref().unwrap_err().to_string();
    assert!(
        e.contains("manifest.csv line 5") && e.contains("img/3.png") && e.contains("JPEG"),
        "{e}"
    );

    let skip = Loader::new(
        m,
        LoaderConfig {
            on_bad_image: OnBadImage::Skip,
            ..cfg
        },
    )
    .unwrap();
    for _ in 0..2 {
        let batches: Vec<_> = skip.epoch(0).unwrap().map(|b| b.unwrap()).collect();
        let idx: Vec<Vec<usize>> = batches.iter().map(|b| b.indices.clone()).collect();
        // Positions never shift: a batch of only bad images comes out empty.
        assert_eq!(idx, vec![vec![0, 1, 2], vec![4, 5, 7], vec![]]);
        assert_eq!(batches[0].images.shape(), &[3, 3, 12, 12]);
        assert_eq!(batches[2].images.shape(), &[0, 3, 12, 12]);
        assert_eq!(batches[2].labels.as_ref().unwrap().mask.shape(), &[0, 1]);
        assert_eq!(batches[2].batch, 2);
    }
    let skipped: Vec<PathBuf> = [3, 6, 8, 9]
        .iter()
        .map(|k| dir.join(format!("img/{k}.png")))
        .collect();
    assert_eq!(skip.skipped(), skipped);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn loader_settings_are_checked() {
    let (dir, path) = image_set("settings", 3);
    let m = Manifest::read(&path, &opts()).unwrap();
    let bad = [
        (
            LoaderConfig {
                batch_size: 0,
                ..small_config(1)
            },
            "batch size",
        ),
        (
            LoaderConfig {
                threads: 0,
                ..small_config(1)
            },
            "thread",
        ),
        (
            LoaderConfig {
                prefetch: 0,
                ..small_config(1)
            },
            "prefetch",
        ),
        (
            LoaderConfig {
                dtype: DType::I64,
                ..small_config(1)
            },
            "float dtype",
        ),
        (
            LoaderConfig {
                drop_last: true,
                ..small_config(1)
            },
            "no full batch",
        ),
    ];
    for (cfg, msg) in bad {
        let e = Loader::new(m.clone(), cfg).err().unwrap().to_string();
        assert!(e.contains(msg), "{e}");
    }
    std::fs::remove_dir_all(dir).unwrap();
}
