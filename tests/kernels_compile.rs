//! The CUDA compile gate (feature `cuda`): every kernels/*.cu compiled for sm_80 and sm_90a, every
//! entry point in the table, no spills in the attention/InfoNCE/GroupNorm/conv (forward and
//! backward) kernels, and `medsyn kernels` / `medsyn doctor` running cleanly (here without a GPU).
#![cfg(feature = "cuda")]

use medsyn::cuda::registry::{self, choose_image, Arch, ImageKind, LoadImage};
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Command, Output};

/// kernels/*.cu as (stem, source text), sorted.
fn sources() -> Vec<(String, String)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("kernels");
    let mut out: Vec<(String, String)> = std::fs::read_dir(&dir)
        .expect("kernels/")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "cu"))
        .map(|p| {
            let stem = p.file_stem().unwrap().to_string_lossy().into_owned();
            (stem, std::fs::read_to_string(&p).expect("read .cu"))
        })
        .collect();
    out.sort();
    out
}

/// Source without comments and without preprocessor lines (macro bodies name parameters,
/// not kernels).
fn strip(src: &str) -> String {
    let mut out = String::with_capacity(src.len());
    let b = src.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i..].starts_with(b"//") {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if b[i..].starts_with(b"/*") {
            i += 2;
            while i < b.len() && !b[i..].starts_with(b"*/") {
                i += 1;
            }
            i += 2;
            out.push(' ');
        } else {
            // Non-ASCII only occurs in comments and strings; keep the text ASCII so that
            // byte offsets are char boundaries.
            out.push(if b[i].is_ascii() { b[i] as char } else { ' ' });
            i += 1;
        }
    }
    let mut kept = String::new();
    let mut continued = false;
    for line in out.lines() {
        let directive = continued || line.trim_start().starts_with('#');
        continued = directive && line.trim_end().ends_with('\\');
        if !directive {
            kept.push_str(line);
        }
        kept.push('\n');
    }
    kept
}

fn is_ident(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

/// The identifier that ends at byte `end` (exclusive), skipping whitespace before `end`.
fn ident_before(s: &str, end: usize) -> Option<String> {
    let b = s.as_bytes();
    let mut e = end;
    while e > 0 && b[e - 1].is_ascii_whitespace() {
        e -= 1;
    }
    let mut start = e;
    while start > 0 && is_ident(b[start - 1]) {
        start -= 1;
    }
    (start < e).then(|| s[start..e].to_string())
}

/// The names of the `extern "C"` `__global__` functions of a source, including the
/// NAME_f32/_f16/_bf16 entry points that MEDSYN_DTYPES(NAME, ...) generates and the
/// NAME_SUFFIX of MEDSYN_ENTRY(NAME, SUFFIX, ...).
fn entry_points(src: &str) -> BTreeSet<String> {
    let s = strip(src);
    let b = s.as_bytes();
    let mut names = BTreeSet::new();
    // Braces opened by `extern "C" {` blocks are marked true.
    let mut blocks: Vec<bool> = Vec::new();
    let mut stmt_start = 0;
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'{' => {
                blocks.push(s[stmt_start..i].trim_end().ends_with("extern \"C\""));
                stmt_start = i + 1;
            }
            b'}' => {
                blocks.pop();
                stmt_start = i + 1;
            }
            b';' => stmt_start = i + 1,
            _ => {}
        }
        let word_start = i == 0 || !is_ident(b[i - 1]);
        if word_start
            && s[i..].starts_with("__global__")
            && !is_ident(*b.get(i + 10).unwrap_or(&b' '))
        {
            let extern_c = s[stmt_start..i].contains("extern \"C\"") || blocks.iter().any(|&x| x);
            // The parameter list is the last top-level (...) before the body or `;`.
            let (mut depth, mut last_open, mut j) = (0i32, None, i);
            while j < b.len() && !(depth == 0 && (b[j] == b'{' || b[j] == b';')) {
                match b[j] {
                    b'(' => {
                        if depth == 0 {
                            last_open = Some(j);
                        }
                        depth += 1;
                    }
                    b')' => depth -= 1,
                    _ => {}
                }
                j += 1;
            }
            if extern_c {
                if let Some(name) = last_open.and_then(|p| ident_before(&s, p)) {
                    names.insert(name);
                }
            }
        }
        for (mac, suffixes) in [
            ("MEDSYN_DTYPES(", &["f32", "f16", "bf16"][..]),
            ("MEDSYN_ENTRY(", &[][..]),
        ] {
            if word_start && s[i..].starts_with(mac) {
                let args: Vec<&str> = s[i + mac.len()..].splitn(3, ',').map(str::trim).collect();
                if suffixes.is_empty() {
                    if args.len() >= 2 {
                        names.insert(format!("{}_{}", args[0], args[1]));
                    }
                } else {
                    for suffix in suffixes {
                        names.insert(format!("{}_{suffix}", args[0]));
                    }
                }
            }
        }
        i += 1;
    }
    names
}

#[test]
fn entry_point_scanner_reads_the_kernel_conventions() {
    let src = r#"
        // extern "C" __global__ void in_a_comment(int x) {}
        #define MEDSYN_DTYPES_LIKE(NAME) extern "C" __global__ void NAME(int x) {}
        template <typename T> __global__ void templated(T* x) {}
        __global__ void plain_cpp(int* x) {}
        extern "C" __global__ void __launch_bounds__(256, 2) bounded(const float* x, int n) { if (n) {} }
        extern "C" {
        __global__ void in_block(float* y) { }
        }
        MEDSYN_DTYPES(scale, (T* y, const T* x), (y, x))
        MEDSYN_ENTRY(only, bf16, __nv_bfloat16, (T* y), (y))
        /* extern "C" __global__ void in_block_comment() {} */
    "#;
    let names: Vec<String> = entry_points(src).into_iter().collect();
    assert_eq!(
        names,
        [
            "bounded",
            "in_block",
            "only_bf16",
            "scale_bf16",
            "scale_f16",
            "scale_f32"
        ]
    );
}

#[test]
fn every_source_file_has_images_for_both_archs() {
    let files = sources();
    assert!(!files.is_empty(), "no kernels/*.cu found");
    let stems: Vec<&str> = files.iter().map(|(s, _)| s.as_str()).collect();
    let modules: Vec<&str> = registry::modules().iter().map(|m| m.module).collect();
    assert_eq!(modules, stems, "embedded modules differ from kernels/*.cu");
    for m in registry::modules() {
        assert_eq!(m.source, format!("kernels/{}.cu", m.module));
        for arch in Arch::ALL {
            let image = m
                .image(arch)
                .unwrap_or_else(|| panic!("{}: no {arch} image", m.module));
            let target = format!(".target {}", arch.name());
            assert!(
                image.ptx.contains(&target),
                "{}: {arch} PTX lacks `{target}`",
                m.module
            );
            assert!(
                image.cubin.starts_with(b"\x7fELF"),
                "{}: {arch} cubin is not an ELF file",
                m.module
            );
        }
    }
}

#[test]
fn every_entry_point_is_in_the_table_for_both_archs() {
    let mut missing = Vec::new();
    for (stem, src) in sources() {
        let names = entry_points(&src);
        for arch in Arch::ALL {
            assert!(
                registry::kernels()
                    .iter()
                    .any(|k| k.module == stem && k.arch == arch),
                "kernels/{stem}.cu has no entry point for {arch} in the table"
            );
            for name in &names {
                if registry::kernel(&stem, name, arch).is_none() {
                    missing.push(format!("{stem}.cu: {name} ({arch})"));
                }
            }
        }
    }
    assert!(
        missing.is_empty(),
        "entry points missing from the kernel table:\n{}",
        missing.join("\n")
    );
}

#[test]
fn ptxas_reports_are_plausible() {
    let kernels = registry::kernels();
    assert!(!kernels.is_empty());
    for k in kernels {
        assert!(
            (1..=255).contains(&k.registers),
            "{} {}: {} registers",
            k.kernel,
            k.arch,
            k.registers
        );
        // Static __shared__ arrays are limited to 48 KiB per block.
        assert!(
            k.shared_bytes <= 48 * 1024,
            "{} {}: {} bytes static smem",
            k.kernel,
            k.arch,
            k.shared_bytes
        );
    }
    // Each module's entry points are the same on both archs.
    for m in registry::modules() {
        let on = |arch| -> BTreeSet<&str> {
            registry::kernels()
                .iter()
                .filter(|k| k.module == m.module && k.arch == arch)
                .map(|k| k.kernel)
                .collect()
        };
        assert_eq!(on(Arch::Sm80), on(Arch::Sm90a), "{}", m.module);
    }
}

#[test]
fn fused_kernels_do_not_spill() {
    // conv: the forward kernels; im2col/col2im: conv2d's backward (kernels/conv_backward.cu).
    const GATED: [&str; 8] = [
        "attention",
        "flash",
        "infonce",
        "info_nce",
        "group_norm",
        "conv",
        "im2col",
        "col2im",
    ];
    let spills: Vec<String> = registry::kernels()
        .iter()
        .filter(|k| GATED.iter().any(|p| k.kernel.starts_with(p)) && k.spill_bytes != 0)
        .map(|k| {
            format!(
                "{} ({}, kernels/{}.cu): {} bytes spilled, {} registers",
                k.kernel, k.arch, k.module, k.spill_bytes, k.registers
            )
        })
        .collect();
    assert!(
        spills.is_empty(),
        "kernels that must not spill do:\n{}",
        spills.join("\n")
    );
}

#[test]
fn image_choice_follows_compute_capability() {
    assert_eq!(choose_image((9, 0)), Some((Arch::Sm90a, ImageKind::Cubin)));
    for minor in [0, 6, 7, 9] {
        assert_eq!(
            choose_image((8, minor)),
            Some((Arch::Sm80, ImageKind::Cubin))
        );
    }
    for cc in [(10, 0), (12, 0), (9, 1)] {
        assert_eq!(
            choose_image(cc),
            Some((Arch::Sm80, ImageKind::Ptx)),
            "{cc:?}"
        );
    }
    assert_eq!(choose_image((7, 5)), None);

    let m = &registry::modules()[0];
    match m.select((9, 0)).unwrap() {
        LoadImage::Cubin { arch, bytes } => {
            assert_eq!(arch, Arch::Sm90a);
            assert_eq!(bytes, m.image(Arch::Sm90a).unwrap().cubin);
        }
        other => panic!("sm_90 got {other:?}"),
    }
    match m.select((8, 9)).unwrap() {
        LoadImage::Cubin { arch, bytes } => {
            assert_eq!(arch, Arch::Sm80);
            assert_eq!(bytes, m.image(Arch::Sm80).unwrap().cubin);
        }
        other => panic!("sm_89 got {other:?}"),
    }
    match m.select((12, 0)).unwrap() {
        LoadImage::Ptx { arch, text } => {
            assert_eq!(arch, Arch::Sm80);
            assert!(text.contains(".target sm_80"));
        }
        other => panic!("sm_120 got {other:?}"),
    }
    let err = m.select((7, 5)).unwrap_err().to_string();
    assert!(err.contains("7.5") && err.contains("8.0"), "{err}");
}

#[test]
fn arch_names_parse() {
    for arch in Arch::ALL {
        assert_eq!(Arch::parse(arch.name()), Some(arch));
        assert_eq!(Arch::parse(arch.compute_name()), Some(arch));
    }
    assert_eq!(Arch::parse("sm_90"), None);
    assert_eq!(Arch::parse("sm_70"), None);
}

fn medsyn(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_medsyn"))
        .args(args)
        .output()
        .expect("run medsyn")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn medsyn_kernels_lists_the_table() {
    let o = medsyn(&["kernels"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    let lines: Vec<&str> = out.lines().collect();
    let header: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(
        header,
        ["kernel", "arch", "registers", "shared_bytes", "spill_bytes"]
    );
    assert_eq!(lines.len(), registry::kernels().len() + 1);
    // Aligned: every line has the header's width.
    assert!(lines.iter().all(|l| l.len() == lines[0].len()), "{out}");
    for k in registry::kernels() {
        let row = format!(
            "{} {} {} {} {}",
            k.kernel,
            k.arch.name(),
            k.registers,
            k.shared_bytes,
            k.spill_bytes
        );
        assert!(
            lines
                .iter()
                .any(|l| l.split_whitespace().collect::<Vec<_>>().join(" ") == row),
            "no line `{row}`"
        );
    }

    let o = medsyn(&["kernels", "--json", "--arch", "sm_90a"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON");
    assert_eq!(v["cuda"], true);
    let rows = v["kernels"].as_array().unwrap();
    let expected = registry::kernels()
        .iter()
        .filter(|k| k.arch == Arch::Sm90a)
        .count();
    assert_eq!(rows.len(), expected);
    assert!(rows
        .iter()
        .all(|r| r["arch"] == "sm_90a" && r["registers"].as_u64().unwrap() > 0));

    let o = medsyn(&["kernels", "--arch", "sm_70"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stderr).contains("expected sm_80 or sm_90a"));
}

#[test]
fn medsyn_doctor_reports_without_panicking() {
    let o = medsyn(&["doctor"]);
    let (out, err) = (text(&o.stdout), text(&o.stderr));
    assert!(o.status.success(), "doctor failed:\n{out}\n{err}");
    assert!(!err.contains("panicked"), "{err}");
    for field in [
        "CUDA backend",
        "Embedded kernels",
        "CUDA driver",
        "NVRTC",
        "cuBLAS",
        "cuBLASLt",
    ] {
        assert!(out.contains(field), "doctor output lacks {field}:\n{out}");
    }
    let modules = format!("{} modules", registry::modules().len());
    assert!(out.contains(&modules), "{out}");
}
