//! Data loader throughput: 512x512 grayscale PNG and JPEG images decoded and transformed
//! (resize 256, random crop 224, normalise, 3 channels) per second, 1 vs 2 loader threads,
//! beside the usual PyTorch path (PIL open + torchvision transforms, one process) on the
//! same files when python3 with Pillow/torchvision is there. `cargo bench --bench data_loader`.
//! Writes target/bench-results/data_loader.json. JPEGs are written with Pillow (medsyn has
//! no JPEG encoder); without python3 only PNG is measured.

#[path = "common/mod.rs"]
mod common;

use common::{median, write_report};
use medsyn::data::{CropMode, Loader, LoaderConfig, Manifest, ManifestOptions, TextSource};
use medsyn::imageio::write_png_atomic;
use medsyn::DType;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

const IMAGES: usize = 96;
const SIDE: usize = 512;
const ROUNDS: usize = 3;

/// A smooth radiograph-like gray image with noise, different per `k`.
fn pixels(k: usize) -> Vec<u8> {
    let mut state = 0x9E37_79B9u32.wrapping_mul(k as u32 + 1);
    (0..SIDE * SIDE)
        .map(|i| {
            let (x, y) = ((i % SIDE) as f32, (i / SIDE) as f32);
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            let noise = (state % 17) as f32 - 8.0;
            let v = 120.0
                + 70.0 * ((x - 256.0) / (90.0 + k as f32)).cos() * (y / 140.0).sin()
                + 30.0 * ((x + y) / 60.0).sin()
                + noise;
            v.clamp(0.0, 255.0) as u8
        })
        .collect()
}

/// Writes the images and a manifest; returns the manifest path.
fn make_set(dir: &Path, ext: &str) -> Option<PathBuf> {
    std::fs::create_dir_all(dir).unwrap();
    let mut csv = String::from("path\n");
    for k in 0..IMAGES {
        let png = dir.join(format!("{k}.png"));
        write_png_atomic(&png, &pixels(k), SIDE, SIDE, 1).unwrap();
        csv += &format!("{k}.{ext}\n");
    }
    if ext == "jpg" {
        // Pillow re-encodes the PNGs as quality-95 JPEGs (as MIMIC-CXR-JPG ships).
        let code = "import sys\nfrom PIL import Image\nfor p in sys.argv[1:]:\n    \
                    Image.open(p).save(p[:-4] + '.jpg', quality=95)\n";
        let pngs: Vec<String> = (0..IMAGES)
            .map(|k| dir.join(format!("{k}.png")).display().to_string())
            .collect();
        let ok = Command::new("python3")
            .arg("-c")
            .arg(code)
            .args(&pngs)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !ok {
            println!("python3 with Pillow not found: JPEG skipped");
            return None;
        }
    }
    let manifest = dir.join(format!("manifest_{ext}.csv"));
    std::fs::write(&manifest, csv).unwrap();
    Some(manifest)
}

/// Images per second through the loader (median over rounds of one epoch each).
fn medsyn_rate(manifest: &Path, threads: usize) -> f64 {
    let opts = ManifestOptions {
        text: TextSource::None,
        ..Default::default()
    };
    let m = Manifest::read(manifest, &opts).unwrap();
    let cfg = LoaderConfig {
        batch_size: 16,
        threads,
        prefetch: 2 * threads,
        dtype: DType::F32,
        crop: CropMode::Random,
        ..Default::default()
    };
    let loader = Loader::new(m, cfg).unwrap();
    let mut rates = Vec::new();
    for epoch in 0..=ROUNDS {
        let t0 = Instant::now();
        let n: usize = loader.epoch(epoch).unwrap().map(|b| b.unwrap().len()).sum();
        let rate = n as f64 / t0.elapsed().as_secs_f64();
        if epoch > 0 {
            rates.push(rate); // epoch 0 warms the page cache
        }
    }
    median(rates)
}

/// PIL + torchvision on one thread: open, convert("RGB"), Resize(256), RandomCrop(224),
/// ToTensor, Normalize — images per second, or None without python3/torchvision.
fn torch_rate(manifest: &Path) -> Option<f64> {
    let code = r#"
import sys, time, os, torch
torch.set_num_threads(1)
from PIL import Image
import torchvision.transforms as T
tf = T.Compose([T.Resize(256), T.RandomCrop(224), T.ToTensor(), T.Normalize([0.5]*3, [0.5]*3)])
d = os.path.dirname(sys.argv[1])
paths = [os.path.join(d, l.strip()) for l in open(sys.argv[1]).read().split("\n")[1:] if l.strip()]
rates = []
for r in range(4):
    t0 = time.perf_counter()
    for p in paths:
        tf(Image.open(p).convert("RGB"))
    if r:
        rates.append(len(paths) / (time.perf_counter() - t0))
print(sorted(rates)[len(rates) // 2])
"#;
    let out = Command::new("python3")
        .arg("-c")
        .arg(code)
        .arg(manifest)
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

fn main() {
    let dir = std::env::temp_dir().join(format!("medsyn_bench_loader_{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("data loader: {IMAGES} {SIDE}x{SIDE} gray images -> [3, 224, 224] f32, {cores} cores");
    println!(
        "{:<6} {:>14} {:>14} {:>16} {:>12}",
        "format", "1 thread img/s", "2 threads img/s", "torch 1 thr img/s", "medsyn/torch"
    );
    let mut rows = Vec::new();
    for ext in ["png", "jpg"] {
        let Some(manifest) = make_set(&dir, ext) else {
            continue;
        };
        let one = medsyn_rate(&manifest, 1);
        let two = medsyn_rate(&manifest, 2);
        let torch = torch_rate(&manifest);
        let ratio = torch.map(|t| one / t);
        println!(
            "{ext:<6} {one:>14.1} {two:>14.1} {:>16} {:>12}",
            torch.map_or("n/a".into(), |t| format!("{t:.1}")),
            ratio.map_or("n/a".into(), |r| format!("{r:.2}x")),
        );
        rows.push(json!({
            "format": ext, "images": IMAGES, "side": SIDE,
            "medsyn_1_thread_img_s": one, "medsyn_2_threads_img_s": two,
            "torch_pil_1_thread_img_s": torch, "medsyn_1_over_torch": ratio,
        }));
    }
    let _ = std::fs::remove_dir_all(&dir);
    write_report("data_loader", &json!({ "cores": cores, "rows": rows }));
}
