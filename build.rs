//! Build script: records the git commit for `medsyn --version`; with the `cuda` feature, compiles
//! every kernels/*.cu through NVRTC + ptxas into embedded PTX/cubins and a kernel table.

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=kernels");
    // HEAD names the branch; the branch's ref file moves with each commit.
    println!("cargo:rerun-if-changed=.git/HEAD");
    println!("cargo:rerun-if-changed=.git/refs/heads");
    let commit = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=MEDSYN_GIT_COMMIT={commit}");

    // Without the feature nothing below is compiled: the CPU build stays CUDA-free.
    #[cfg(feature = "cuda")]
    if std::env::var_os("CARGO_FEATURE_CUDA").is_some() {
        kernels::build();
    }
}

/// NVRTC → PTX (compute_80, compute_90a) → ptxas -v → cubins (sm_80, sm_90a) for kernels/*.cu,
/// and `$OUT_DIR/kernels.rs` (the table `src/cuda/registry.rs` includes).
///
/// libnvrtc is opened with libloading rather than through cudarc as a build-dependency: seven C
/// functions are all we call, and cudarc as a build-dependency would be compiled a second time
/// (build scripts get their own profile and features) — tens of seconds on every clean build,
/// for bindings we do not need. libloading is already in the tree through cudarc.
#[cfg(feature = "cuda")]
mod kernels {
    use std::ffi::{c_char, c_int, c_void, CStr, CString};
    use std::fmt::Write as _;
    use std::path::{Path, PathBuf};
    use std::process::Command;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;

    /// (NVRTC virtual architecture, ptxas real architecture, Rust `Arch` variant).
    const ARCHS: [(&str, &str, &str); 2] = [
        ("compute_80", "sm_80", "Sm80"),
        ("compute_90a", "sm_90a", "Sm90a"),
    ];

    const INSTALL_HINT: &str = "install the CUDA compiler pieces with\n    \
        python3 -m pip install nvidia-cuda-nvrtc-cu12 nvidia-cuda-runtime-cu12 nvidia-cuda-nvcc-cu12\n\
        or install a CUDA toolkit (12.x or newer) and set CUDA_HOME to its root \
        (the folder holding bin/ptxas, include/cuda_fp16.h and lib64/libnvrtc.so), \
        or build without `--features cuda`";

    /// Where NVRTC, the CUDA headers and ptxas were found.
    struct Toolchain {
        origin: String,
        nvrtc: PathBuf,
        include: PathBuf,
        ptxas: PathBuf,
    }

    /// One entry function's ptxas report for one architecture.
    struct Entry {
        kernel: String,
        registers: u32,
        shared_bytes: u32,
        spill_bytes: u32,
    }

    /// One (file, arch) compilation's products.
    struct Compiled {
        ptx_path: PathBuf,
        cubin_path: PathBuf,
        entries: Vec<Entry>,
        /// The names of its cache entries (empty without a cache).
        cache_files: Vec<String>,
    }

    pub fn build() {
        let manifest = PathBuf::from(env("CARGO_MANIFEST_DIR"));
        let out_dir = PathBuf::from(env("OUT_DIR"));
        let kernel_dir = manifest.join("kernels");
        for var in ["CUDA_HOME", "CUDA_PATH"] {
            println!("cargo:rerun-if-env-changed={var}");
        }
        let mut sources = Vec::new();
        let mut watched = Vec::new();
        if let Ok(dir) = std::fs::read_dir(&kernel_dir) {
            for entry in dir.flatten() {
                let path = entry.path();
                watched.push(path.clone());
                if path.extension().is_some_and(|e| e == "cu") {
                    sources.push(path);
                }
            }
        }
        watched.sort();
        for path in &watched {
            println!("cargo:rerun-if-changed={}", path.display());
        }
        sources.sort();

        let tools = find_toolchain().unwrap_or_else(|why| {
            fail(&format!("the `cuda` feature needs NVRTC, the CUDA headers and ptxas: {why}\nFix: {INSTALL_HINT}"))
        });
        // SAFETY: loading libnvrtc runs its initialisers, which have no preconditions.
        let lib = unsafe { libloading::Library::new(&tools.nvrtc) }.unwrap_or_else(|e| {
            fail(&format!(
                "cannot load {} ({}): {e}\nFix: {INSTALL_HINT}",
                tools.nvrtc.display(),
                tools.origin
            ))
        });
        let nvrtc =
            Nvrtc::new(&lib).unwrap_or_else(|e| fail(&format!("{}: {e}", tools.nvrtc.display())));
        let ptxas_version = ptxas_version(&tools.ptxas);

        let image_dir = out_dir.join("kernels");
        std::fs::create_dir_all(&image_dir)
            .unwrap_or_else(|e| fail(&format!("{}: {e}", image_dir.display())));

        let job = Job {
            salt: salt(&kernel_dir, &tools, &nvrtc.version(), &ptxas_version),
            cache_dir: cache_dir(&out_dir),
            nvrtc: &nvrtc,
            tools: &tools,
            manifest: &manifest,
            image_dir: &image_dir,
        };
        // (source index, arch index) jobs over a few threads: NVRTC is thread safe for distinct
        // programs, and ptxas runs as a child process.
        let jobs: Vec<(usize, usize)> = (0..sources.len())
            .flat_map(|s| (0..ARCHS.len()).map(move |a| (s, a)))
            .collect();
        let results: Vec<Mutex<Option<Result<Compiled, String>>>> =
            jobs.iter().map(|_| Mutex::new(None)).collect();
        let next = AtomicUsize::new(0);
        let threads = std::env::var("NUM_JOBS")
            .ok()
            .and_then(|n| n.parse::<usize>().ok())
            .or_else(|| std::thread::available_parallelism().ok().map(|n| n.get()))
            .unwrap_or(1)
            .clamp(1, jobs.len().max(1));
        std::thread::scope(|scope| {
            for _ in 0..threads {
                scope.spawn(|| loop {
                    let j = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&(s, a)) = jobs.get(j) else { break };
                    let r = compile_one(&job, &sources[s], ARCHS[a]);
                    *results[j].lock().unwrap() = Some(r);
                });
            }
        });

        if let Some(dir) = &job.cache_dir {
            prune_cache(dir, &results);
        }
        let mut errors = String::new();
        let mut compiled: Vec<Compiled> = Vec::new();
        for slot in results {
            match slot.into_inner().unwrap().expect("every job ran") {
                Ok(c) => compiled.push(c),
                Err(e) => errors.push_str(&e),
            }
        }
        if !errors.is_empty() {
            fail(&format!(
                "kernels/*.cu failed to compile (NVRTC/ptxas from {}):\n{errors}",
                tools.origin
            ));
        }

        let table = generate_table(
            &sources,
            &manifest,
            &compiled,
            &nvrtc.version(),
            &ptxas_version,
            &tools,
        );
        let dest = out_dir.join("kernels.rs");
        std::fs::write(&dest, table).unwrap_or_else(|e| fail(&format!("{}: {e}", dest.display())));
    }

    /// What every compilation shares.
    struct Job<'a> {
        /// Hash of everything besides the source that decides the output (headers, toolchain).
        salt: u64,
        cache_dir: Option<PathBuf>,
        nvrtc: &'a Nvrtc<'a>,
        tools: &'a Toolchain,
        manifest: &'a Path,
        image_dir: &'a Path,
    }

    /// A cache of compiled images shared by every build of one profile (target/<profile>/
    /// medsyn-kernel-cache), keyed by a hash of source, headers, toolchain and options: `cargo
    /// clippy` and `cargo test` run this script separately, and editing one .cu file should not
    /// recompile the others. Entries are written to a temporary name and renamed into place.
    fn cache_dir(out_dir: &Path) -> Option<PathBuf> {
        // OUT_DIR is <target>/<profile>/build/medsyn-<hash>/out.
        let dir = out_dir.ancestors().nth(3)?.join("medsyn-kernel-cache");
        std::fs::create_dir_all(&dir).ok()?;
        Some(dir)
    }

    /// Deletes cache entries other than this build's (older versions of each file pile up
    /// otherwise: the attention images alone are tens of MB), unless a job failed.
    fn prune_cache(dir: &Path, results: &[Mutex<Option<Result<Compiled, String>>>]) {
        let mut keep = std::collections::HashSet::new();
        for slot in results {
            match &*slot.lock().unwrap() {
                Some(Ok(c)) => keep.extend(c.cache_files.iter().cloned()),
                _ => return,
            }
        }
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !keep.contains(&name) && !name.contains(".tmp") {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }

    fn salt(kernel_dir: &Path, tools: &Toolchain, nvrtc: &(i32, i32), ptxas: &str) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        let mut files: Vec<PathBuf> = std::fs::read_dir(kernel_dir)
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        files.sort();
        for f in files
            .iter()
            .filter(|f| f.extension().is_none_or(|e| e != "cu"))
        {
            f.file_name().hash(&mut h);
            std::fs::read(f).unwrap_or_default().hash(&mut h);
        }
        (&tools.nvrtc, &tools.include, &tools.ptxas, nvrtc, ptxas).hash(&mut h);
        h.finish()
    }

    fn key(salt: u64, source: &[u8], options: &[String], real_arch: &str) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (salt, source, options, real_arch, "v1").hash(&mut h);
        h.finish()
    }

    /// Writes `bytes` to `dst` through a temporary file, so readers never see half a file.
    fn put(dst: &Path, bytes: &[u8]) -> std::io::Result<()> {
        let tmp = dst.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(&tmp, bytes)?;
        std::fs::rename(&tmp, dst)
    }

    /// NVRTC → PTX, then ptxas → cubin with its -v report, for one file and architecture
    /// (or the same three products from the cache).
    fn compile_one(
        job: &Job,
        source: &Path,
        (virtual_arch, real_arch, _): (&str, &str, &str),
    ) -> Result<Compiled, String> {
        let Job {
            nvrtc,
            tools,
            manifest,
            image_dir,
            ..
        } = *job;
        let rel = source
            .strip_prefix(manifest)
            .unwrap_or(source)
            .display()
            .to_string();
        let stem = stem(source);
        let text = std::fs::read(source).map_err(|e| format!("{rel}: {e}\n"))?;
        let options = [
            format!("--gpu-architecture={virtual_arch}"),
            format!("-I{}", tools.include.display()),
            format!("-I{}", manifest.join("kernels").display()),
            "--std=c++17".to_string(),
            "-default-device".to_string(),
            // No -lineinfo: it triples the embedded images (51 MB per binary with it,
            // past what a GPU check can carry); profile with scripts/compile_kernel.py
            // builds or a local -lineinfo rebuild instead.
        ];
        let ptx_path = image_dir.join(format!("{stem}.{real_arch}.ptx"));
        let cubin_path = image_dir.join(format!("{stem}.{real_arch}.cubin"));
        let cached = job.cache_dir.as_ref().map(|dir| {
            let base = format!(
                "{stem}.{real_arch}.{:016x}",
                key(job.salt, &text, &options, real_arch)
            );
            ["ptx", "cubin", "ptxas"].map(|ext| dir.join(format!("{base}.{ext}")))
        });
        let cache_files: Vec<String> = cached
            .iter()
            .flatten()
            .filter_map(|p| Some(p.file_name()?.to_string_lossy().into_owned()))
            .collect();
        if let Some([ptx_c, cubin_c, report_c]) = &cached {
            if let (Ok(ptx), Ok(cubin), Ok(report)) = (
                std::fs::read(ptx_c),
                std::fs::read(cubin_c),
                std::fs::read_to_string(report_c),
            ) {
                put(&ptx_path, &ptx).map_err(|e| format!("{}: {e}\n", ptx_path.display()))?;
                put(&cubin_path, &cubin).map_err(|e| format!("{}: {e}\n", cubin_path.display()))?;
                let entries = parse_ptxas(&report, &rel, real_arch)?;
                return Ok(Compiled {
                    ptx_path,
                    cubin_path,
                    entries,
                    cache_files,
                });
            }
        }
        let (ptx, log) = nvrtc
            .compile(&text, &rel, &options)
            .map_err(|log| format!("\n== {rel} ({virtual_arch}): NVRTC error\n{log}\n"))?;
        if !log.trim().is_empty() {
            for line in log.lines().filter(|l| !l.trim().is_empty()).take(20) {
                println!("cargo:warning={rel} ({virtual_arch}): {line}");
            }
        }
        std::fs::write(&ptx_path, &ptx).map_err(|e| format!("{}: {e}\n", ptx_path.display()))?;
        let out = Command::new(&tools.ptxas)
            .arg(format!("-arch={real_arch}"))
            .arg("-v")
            .arg(&ptx_path)
            .arg("-o")
            .arg(&cubin_path)
            .output()
            .map_err(|e| {
                format!(
                    "\n== {rel} ({real_arch}): cannot run {}: {e}\n",
                    tools.ptxas.display()
                )
            })?;
        let report = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        if !out.status.success() {
            return Err(format!("\n== {rel} ({real_arch}): ptxas error\n{report}\n"));
        }
        let entries = parse_ptxas(&report, &rel, real_arch)?;
        if let Some([ptx_c, cubin_c, report_c]) = &cached {
            // A failed cache write only costs a recompilation next time.
            let cubin = std::fs::read(&cubin_path)
                .map_err(|e| format!("{}: {e}\n", cubin_path.display()))?;
            let _ = put(ptx_c, &ptx)
                .and_then(|()| put(cubin_c, &cubin))
                .and_then(|()| put(report_c, report.as_bytes()));
        }
        Ok(Compiled {
            ptx_path,
            cubin_path,
            entries,
            cache_files,
        })
    }

    /// Reads ptxas -v: per `Compiling entry function 'K'` its `Function properties for K` spill line
    /// and its `Used N registers, ..., N bytes smem` line. Spills of non-inlined device functions are
    /// reported separately by ptxas; they are not attributed to an entry, so they warn here.
    fn parse_ptxas(report: &str, rel: &str, arch: &str) -> Result<Vec<Entry>, String> {
        let mut entries: Vec<Entry> = Vec::new();
        let mut current: Option<String> = None;
        let mut props_for: Option<String> = None;
        let mut spill = 0u32;
        for line in report.lines() {
            if let Some(name) = quoted_after(line, "Compiling entry function '") {
                current = Some(name);
                spill = 0;
            } else if let Some(rest) = line.split("Function properties for ").nth(1) {
                props_for = Some(rest.trim().to_string());
            } else if line.contains("bytes spill stores") {
                let stores = number_before(line, " bytes spill stores").unwrap_or(0);
                let loads = number_before(line, " bytes spill loads").unwrap_or(0);
                if props_for.is_some() && props_for == current {
                    spill = stores + loads;
                } else if stores + loads > 0 {
                    let f = props_for.as_deref().unwrap_or("?");
                    println!(
                        "cargo:warning={rel} ({arch}): device function {f} spills {} bytes",
                        stores + loads
                    );
                }
            } else if line.contains("Used ") && line.contains(" registers") {
                let kernel = current.take().ok_or_else(|| {
                    format!("\n== {rel} ({arch}): ptxas report has a register line outside an entry function:\n{report}\n")
                })?;
                entries.push(Entry {
                    kernel,
                    registers: number_before(line, " registers").unwrap_or(0),
                    shared_bytes: number_before(line, " bytes smem").unwrap_or(0),
                    spill_bytes: spill,
                });
                props_for = None;
            }
        }
        if let Some(k) = current {
            return Err(format!(
                "\n== {rel} ({arch}): ptxas printed no register count for {k}:\n{report}\n"
            ));
        }
        entries.sort_by(|a, b| a.kernel.cmp(&b.kernel));
        Ok(entries)
    }

    fn quoted_after(line: &str, marker: &str) -> Option<String> {
        let rest = line.split(marker).nth(1)?;
        Some(rest[..rest.find('\'')?].to_string())
    }

    /// The integer just before `suffix` in `line` ("Used 22 registers" → 22).
    fn number_before(line: &str, suffix: &str) -> Option<u32> {
        let head = &line[..line.find(suffix)?];
        let digits: String = head
            .chars()
            .rev()
            .take_while(|c| c.is_ascii_digit())
            .collect();
        digits.chars().rev().collect::<String>().parse().ok()
    }

    fn generate_table(
        sources: &[PathBuf],
        manifest: &Path,
        compiled: &[Compiled],
        nvrtc_version: &(i32, i32),
        ptxas_version: &str,
        tools: &Toolchain,
    ) -> String {
        let mut s = String::from("// @generated by build.rs from kernels/*.cu: do not edit.\n\n");
        s.push_str("pub(super) static MODULES: &[ModuleImage] = &[\n");
        for (i, source) in sources.iter().enumerate() {
            let rel = source
                .strip_prefix(manifest)
                .unwrap_or(source)
                .display()
                .to_string();
            let _ = writeln!(s, "    ModuleImage {{\n        module: {:?},\n        source: {rel:?},\n        images: &[", stem(source));
            for (a, (_, _, variant)) in ARCHS.iter().enumerate() {
                let c = &compiled[i * ARCHS.len() + a];
                let _ = writeln!(
                    s,
                    "            ArchImage {{ arch: Arch::{variant}, ptx: include_str!({:?}), cubin: include_bytes!({:?}) }},",
                    c.ptx_path.display().to_string(),
                    c.cubin_path.display().to_string()
                );
            }
            s.push_str("        ],\n    },\n");
        }
        s.push_str("];\n\npub(super) static KERNELS: &[KernelInfo] = &[\n");
        for (i, source) in sources.iter().enumerate() {
            for (a, (_, _, variant)) in ARCHS.iter().enumerate() {
                for e in &compiled[i * ARCHS.len() + a].entries {
                    let _ = writeln!(
                        s,
                        "    KernelInfo {{ module: {:?}, kernel: {:?}, arch: Arch::{variant}, registers: {}, shared_bytes: {}, spill_bytes: {} }},",
                        stem(source), e.kernel, e.registers, e.shared_bytes, e.spill_bytes
                    );
                }
            }
        }
        s.push_str("];\n\n");
        let _ = writeln!(
            s,
            "pub(super) const NVRTC_VERSION: (u32, u32) = ({}, {});",
            nvrtc_version.0, nvrtc_version.1
        );
        let _ = writeln!(
            s,
            "pub(super) const PTXAS_VERSION: &str = {ptxas_version:?};"
        );
        let _ = writeln!(s, "pub(super) const TOOLCHAIN: &str = {:?};", tools.origin);
        s
    }

    fn stem(path: &Path) -> String {
        path.file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    /// "12.9.86" from `ptxas --version` ("... release 12.9, V12.9.86"), or "unknown".
    fn ptxas_version(ptxas: &Path) -> String {
        Command::new(ptxas)
            .arg("--version")
            .output()
            .ok()
            .and_then(|o| {
                let text = String::from_utf8_lossy(&o.stdout).into_owned();
                let v = text
                    .split(", V")
                    .nth(1)?
                    .split_whitespace()
                    .next()?
                    .to_string();
                Some(v)
            })
            .unwrap_or_else(|| "unknown".to_string())
    }

    // ---- finding the toolchain --------------------------------------------------------------

    /// $CUDA_HOME, $CUDA_PATH, /usr/local/cuda (a toolkit root each), then the
    /// nvidia-cuda-{nvrtc,runtime,nvcc}-cu12 wheels of the `python3` on PATH. The first place
    /// that has all three pieces wins, so NVRTC, headers and ptxas come from one release.
    fn find_toolchain() -> Result<Toolchain, String> {
        let mut tried = String::new();
        let mut roots: Vec<(String, PathBuf)> = Vec::new();
        for var in ["CUDA_HOME", "CUDA_PATH"] {
            if let Some(v) = std::env::var_os(var).filter(|v| !v.is_empty()) {
                roots.push((
                    format!("${var}={}", PathBuf::from(&v).display()),
                    PathBuf::from(v),
                ));
            }
        }
        roots.push((
            "/usr/local/cuda".to_string(),
            PathBuf::from("/usr/local/cuda"),
        ));
        for (origin, root) in roots {
            match toolkit_at(&root) {
                Ok((nvrtc, include, ptxas)) => {
                    return Ok(Toolchain {
                        origin,
                        nvrtc,
                        include,
                        ptxas,
                    })
                }
                Err(missing) => {
                    let _ = writeln!(tried, "  {origin}: {missing}");
                    if origin.starts_with('$') {
                        println!("cargo:warning={origin}: {missing}; looking further");
                    }
                }
            }
        }
        match wheels() {
            Ok(t) => Ok(t),
            Err(why) => {
                let _ = writeln!(tried, "  python3 wheels: {why}");
                Err(format!("not found in any of:\n{tried}"))
            }
        }
    }

    fn toolkit_at(root: &Path) -> Result<(PathBuf, PathBuf, PathBuf), String> {
        if !root.is_dir() {
            return Err("no such folder".to_string());
        }
        let lib_dirs = [
            "lib64",
            "lib",
            "targets/x86_64-linux/lib",
            "targets/sbsa-linux/lib",
        ];
        let nvrtc = lib_dirs.iter().find_map(|d| nvrtc_in(&root.join(d)));
        let include = [
            "include",
            "targets/x86_64-linux/include",
            "targets/sbsa-linux/include",
        ]
        .iter()
        .map(|d| root.join(d))
        .find(|d| has_headers(d));
        let ptxas = Some(root.join("bin/ptxas")).filter(|p| p.is_file());
        let mut missing = Vec::new();
        if nvrtc.is_none() {
            missing.push("lib64/libnvrtc.so");
        }
        if include.is_none() {
            missing.push("include/cuda_fp16.h + cuda_bf16.h");
        }
        if ptxas.is_none() {
            missing.push("bin/ptxas");
        }
        match (nvrtc, include, ptxas) {
            (Some(n), Some(i), Some(p)) => Ok((n, i, p)),
            _ => Err(format!("missing {}", missing.join(", "))),
        }
    }

    fn has_headers(dir: &Path) -> bool {
        dir.join("cuda_fp16.h").is_file() && dir.join("cuda_bf16.h").is_file()
    }

    /// libnvrtc.so in `dir`, else the highest-versioned libnvrtc.so.N (never the `.alt` variant).
    fn nvrtc_in(dir: &Path) -> Option<PathBuf> {
        let plain = dir.join("libnvrtc.so");
        if plain.is_file() {
            return Some(plain);
        }
        let mut best: Option<(u32, PathBuf)> = None;
        for entry in std::fs::read_dir(dir).ok()?.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(v) = name
                .strip_prefix("libnvrtc.so.")
                .and_then(|v| v.split('.').next()?.parse::<u32>().ok())
            {
                if best.as_ref().is_none_or(|(b, _)| v > *b) {
                    best = Some((v, entry.path()));
                }
            }
        }
        best.map(|(_, p)| p)
    }

    /// Asks `python3` where the three cu12 wheels live.
    fn wheels() -> Result<Toolchain, String> {
        const SCRIPT: &str = "import importlib\n\
            for m in ('nvidia.cuda_nvrtc', 'nvidia.cuda_runtime', 'nvidia.cuda_nvcc'):\n    \
                try:\n        print(m, list(importlib.import_module(m).__path__)[0])\n    \
                except Exception:\n        print(m, '')\n";
        let out = Command::new("python3")
            .args(["-c", SCRIPT])
            .output()
            .map_err(|e| format!("cannot run python3 ({e})"))?;
        if !out.status.success() {
            return Err(format!(
                "python3 failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let path_of = |module: &str| -> Option<PathBuf> {
            text.lines()
                .find_map(|l| l.strip_prefix(module)?.strip_prefix(' '))
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(PathBuf::from)
        };
        let nvrtc = path_of("nvidia.cuda_nvrtc").and_then(|p| nvrtc_in(&p.join("lib")));
        let include = path_of("nvidia.cuda_runtime")
            .map(|p| p.join("include"))
            .filter(|d| has_headers(d));
        let ptxas = path_of("nvidia.cuda_nvcc")
            .map(|p| p.join("bin/ptxas"))
            .filter(|p| p.is_file());
        let mut missing = Vec::new();
        if nvrtc.is_none() {
            missing.push("nvidia-cuda-nvrtc-cu12 (libnvrtc.so.12)");
        }
        if include.is_none() {
            missing.push("nvidia-cuda-runtime-cu12 (cuda_fp16.h, cuda_bf16.h)");
        }
        if ptxas.is_none() {
            missing.push("nvidia-cuda-nvcc-cu12 (ptxas)");
        }
        match (nvrtc, include, ptxas) {
            (Some(nvrtc), Some(include), Some(ptxas)) => Ok(Toolchain {
                origin: "the nvidia-cuda-*-cu12 wheels of python3".to_string(),
                nvrtc,
                include,
                ptxas,
            }),
            _ => Err(format!("missing {}", missing.join(", "))),
        }
    }

    // ---- NVRTC through libloading ------------------------------------------------------------

    type Prog = *mut c_void;

    /// The NVRTC entry points build.rs calls (signatures from nvrtc.h; stable since CUDA 7).
    struct Nvrtc<'l> {
        version: libloading::Symbol<'l, unsafe extern "C" fn(*mut c_int, *mut c_int) -> c_int>,
        error_string: libloading::Symbol<'l, unsafe extern "C" fn(c_int) -> *const c_char>,
        #[allow(clippy::type_complexity)]
        create: libloading::Symbol<
            'l,
            unsafe extern "C" fn(
                *mut Prog,
                *const c_char,
                *const c_char,
                c_int,
                *const *const c_char,
                *const *const c_char,
            ) -> c_int,
        >,
        compile: libloading::Symbol<
            'l,
            unsafe extern "C" fn(Prog, c_int, *const *const c_char) -> c_int,
        >,
        log_size: libloading::Symbol<'l, unsafe extern "C" fn(Prog, *mut usize) -> c_int>,
        log: libloading::Symbol<'l, unsafe extern "C" fn(Prog, *mut c_char) -> c_int>,
        ptx_size: libloading::Symbol<'l, unsafe extern "C" fn(Prog, *mut usize) -> c_int>,
        ptx: libloading::Symbol<'l, unsafe extern "C" fn(Prog, *mut c_char) -> c_int>,
        destroy: libloading::Symbol<'l, unsafe extern "C" fn(*mut Prog) -> c_int>,
    }

    impl<'l> Nvrtc<'l> {
        fn new(lib: &'l libloading::Library) -> Result<Self, libloading::Error> {
            // SAFETY: the symbol types match nvrtc.h's declarations.
            unsafe {
                Ok(Nvrtc {
                    version: lib.get(b"nvrtcVersion\0")?,
                    error_string: lib.get(b"nvrtcGetErrorString\0")?,
                    create: lib.get(b"nvrtcCreateProgram\0")?,
                    compile: lib.get(b"nvrtcCompileProgram\0")?,
                    log_size: lib.get(b"nvrtcGetProgramLogSize\0")?,
                    log: lib.get(b"nvrtcGetProgramLog\0")?,
                    ptx_size: lib.get(b"nvrtcGetPTXSize\0")?,
                    ptx: lib.get(b"nvrtcGetPTX\0")?,
                    destroy: lib.get(b"nvrtcDestroyProgram\0")?,
                })
            }
        }

        fn version(&self) -> (i32, i32) {
            let (mut major, mut minor) = (0, 0);
            // SAFETY: two valid out-pointers.
            unsafe { (self.version)(&mut major, &mut minor) };
            (major, minor)
        }

        fn check(&self, code: c_int, what: &str) -> Result<(), String> {
            if code == 0 {
                return Ok(());
            }
            // SAFETY: nvrtcGetErrorString returns a static C string for any code.
            let msg = unsafe { CStr::from_ptr((self.error_string)(code)) }
                .to_string_lossy()
                .into_owned();
            Err(format!("{what} failed: {msg} ({code})"))
        }

        /// Compiles one source: Ok((ptx, log)) or Err(log).
        fn compile(
            &self,
            source: &[u8],
            name: &str,
            options: &[String],
        ) -> Result<(Vec<u8>, String), String> {
            let src = CString::new(source).map_err(|_| "source contains a NUL byte".to_string())?;
            let name_c =
                CString::new(name).map_err(|_| "file name contains a NUL byte".to_string())?;
            let opts: Vec<CString> = options
                .iter()
                .map(|o| CString::new(o.as_str()).unwrap())
                .collect();
            let opt_ptrs: Vec<*const c_char> = opts.iter().map(|o| o.as_ptr()).collect();
            let mut prog: Prog = std::ptr::null_mut();
            // SAFETY: valid C strings; no headers passed in memory (count 0, null arrays).
            let code = unsafe {
                (self.create)(
                    &mut prog,
                    src.as_ptr(),
                    name_c.as_ptr(),
                    0,
                    std::ptr::null(),
                    std::ptr::null(),
                )
            };
            self.check(code, "nvrtcCreateProgram")?;
            // SAFETY: `prog` was created above and is destroyed exactly once below.
            let result = unsafe {
                let code = (self.compile)(prog, opt_ptrs.len() as c_int, opt_ptrs.as_ptr());
                let log = self.program_log(prog);
                match (code, log) {
                    (0, Ok(log)) => self.program_ptx(prog).map(|ptx| (ptx, log)),
                    (_, Ok(log)) => Err(format!(
                        "{log}\n{}",
                        self.check(code, "nvrtcCompileProgram").unwrap_err()
                    )),
                    (_, Err(e)) => Err(e),
                }
            };
            // SAFETY: see above.
            unsafe { (self.destroy)(&mut prog) };
            result
        }

        unsafe fn program_log(&self, prog: Prog) -> Result<String, String> {
            let mut size = 0usize;
            self.check((self.log_size)(prog, &mut size), "nvrtcGetProgramLogSize")?;
            let mut buf = vec![0u8; size.max(1)];
            self.check(
                (self.log)(prog, buf.as_mut_ptr().cast()),
                "nvrtcGetProgramLog",
            )?;
            let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
            Ok(String::from_utf8_lossy(&buf[..end]).into_owned())
        }

        unsafe fn program_ptx(&self, prog: Prog) -> Result<Vec<u8>, String> {
            let mut size = 0usize;
            self.check((self.ptx_size)(prog, &mut size), "nvrtcGetPTXSize")?;
            let mut buf = vec![0u8; size.max(1)];
            self.check((self.ptx)(prog, buf.as_mut_ptr().cast()), "nvrtcGetPTX")?;
            let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
            buf.truncate(end);
            Ok(buf)
        }
    }

    fn env(var: &str) -> String {
        std::env::var(var).unwrap_or_else(|_| fail(&format!("cargo did not set {var}")))
    }

    /// Stops the build with `message` (cargo shows a failed build script's stderr).
    fn fail(message: &str) -> ! {
        eprintln!("\nerror: medsyn build.rs (feature `cuda`): {message}\n");
        std::process::exit(1);
    }
}
