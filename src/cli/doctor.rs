//! `medsyn doctor`: what this binary's CUDA backend finds on this machine, and what to install when something is missing.

use crate::error::{Error, Result};
use clap::Args;
use std::io::Write;

#[derive(Args, Debug)]
pub struct DoctorArgs {
    /// Do not create a context on each GPU to load the embedded kernel modules (faster; the
    /// check that the driver accepts the cubins/PTX is then skipped).
    #[arg(long)]
    pub no_load: bool,
}

pub fn run(args: &DoctorArgs) -> Result<()> {
    let text = report(args);
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(Error::msg(format!("cannot write to stdout: {e}"))),
    }
}

fn field(s: &mut String, label: &str, value: impl std::fmt::Display) {
    s.push_str(&format!("{label:<18}{value}\n"));
}

#[cfg(not(feature = "cuda"))]
fn report(_args: &DoctorArgs) -> String {
    let mut s = String::new();
    field(&mut s, "medsyn", version());
    field(
        &mut s,
        "CUDA backend",
        "not built in: this binary was built without the `cuda` feature",
    );
    s.push_str(
        "\nTo use a GPU, rebuild with `cargo build --release --features cuda` (README: CUDA build);\n\
         the CPU backend needs nothing else.\n",
    );
    s
}

fn version() -> String {
    format!(
        "{} (commit {})",
        env!("CARGO_PKG_VERSION"),
        env!("MEDSYN_GIT_COMMIT")
    )
}

/// The oldest Linux driver branch that supports CUDA `major.minor` (so can JIT its PTX).
#[cfg(feature = "cuda")]
fn min_driver(v: (u32, u32)) -> &'static str {
    match v {
        (12, 0) => "R525",
        (12, 1) => "R530",
        (12, 2) => "R535",
        (12, 3) => "R545",
        (12, 4) => "R550",
        (12, 5) => "R555",
        (12, 6) => "R560",
        (12, 7) | (12, 8) => "R570",
        (12, 9) => "R575",
        (13, 0) => "R580",
        _ => "a driver of that CUDA version",
    }
}

#[cfg(feature = "cuda")]
fn report(args: &DoctorArgs) -> String {
    use crate::cuda::driver::{self, LibProbe, BINDINGS_CUDA_VERSION};
    use crate::cuda::registry;

    let mut s = String::new();
    let mut fixes: Vec<String> = Vec::new();
    field(&mut s, "medsyn", version());
    field(
        &mut s,
        "CUDA backend",
        format!(
            "built in (cudarc {}.{} driver API bindings, libraries loaded at run time)",
            BINDINGS_CUDA_VERSION.0, BINDINGS_CUDA_VERSION.1
        ),
    );
    let nvrtc_built = registry::nvrtc_version();
    let archs: Vec<String> = registry::Arch::ALL
        .iter()
        .map(|a| format!("{} (cubin + {} PTX)", a.name(), a.compute_name()))
        .collect();
    field(
        &mut s,
        "Embedded kernels",
        format!(
            "{} modules, {} entry points, each for {}",
            registry::modules().len(),
            registry::kernels()
                .iter()
                .filter(|k| k.arch == registry::Arch::Sm80)
                .count(),
            archs.join(" and ")
        ),
    );
    field(
        &mut s,
        "",
        format!(
            "compiled by NVRTC {}.{} + ptxas {} ({})",
            nvrtc_built.0,
            nvrtc_built.1,
            registry::ptxas_version(),
            registry::toolchain()
        ),
    );

    let drv = driver::probe_driver(!args.no_load);
    match (&drv.library, drv.version) {
        (None, _) => {
            field(
                &mut s,
                "CUDA driver",
                format!("not found (tried {})", drv.tried.join(", ")),
            );
            fixes.push(format!(
                "No NVIDIA driver: install one (cubins need CUDA 12.0+, {}; the PTX that other GPUs JIT \
                 needs CUDA {}.{}+, {}), or run where a GPU is. The CPU backend works without it.",
                min_driver((12, 0)),
                nvrtc_built.0,
                nvrtc_built.1,
                min_driver(nvrtc_built)
            ));
        }
        (Some(lib), version) => {
            let v = version
                .map(|(a, b)| format!("CUDA {a}.{b}"))
                .unwrap_or_else(|| "version unknown".to_string());
            field(&mut s, "CUDA driver", format!("loaded {lib} ({v})"));
            if let Some(v) = version.filter(|&v| v < (12, 0)) {
                fixes.push(format!(
                    "The driver supports only CUDA {}.{}: the embedded kernels need CUDA 12.0+ ({} or newer).",
                    v.0,
                    v.1,
                    min_driver((12, 0))
                ));
            }
        }
    }
    if let Some(e) = &drv.error {
        field(&mut s, "", format!("error: {e}"));
        let hint = if e.contains("STUB_LIBRARY") {
            "A stub libcuda.so (from a toolkit's lib64/stubs) was found before the real driver: \
             remove the stubs folder from LD_LIBRARY_PATH."
        } else if e.contains("NO_DEVICE") {
            "The driver sees no GPU: check CUDA_VISIBLE_DEVICES, or the container's GPU access (--gpus)."
        } else {
            "The driver could not start: see the error above (nvidia-smi shows the driver's own view)."
        };
        fixes.push(hint.to_string());
    }
    if drv.library.is_some() && drv.devices.is_empty() && drv.error.is_none() {
        field(&mut s, "Devices", "none");
    }
    for d in &drv.devices {
        field(
            &mut s,
            &format!("Device {}", d.ordinal),
            format!(
                "{} (compute capability {}.{}, {:.1} GiB)",
                d.name,
                d.compute_capability.0,
                d.compute_capability.1,
                d.total_bytes as f64 / (1u64 << 30) as f64
            ),
        );
        match &d.image {
            Ok(image) => {
                let loaded = if args.no_load {
                    "not loaded (--no-load)".to_string()
                } else {
                    format!(
                        "{}/{} modules load",
                        d.modules_loaded,
                        registry::modules().len()
                    )
                };
                field(&mut s, "", format!("kernels: {image}; {loaded}"));
                if image.contains("PTX") {
                    if let Some(v) = drv.version.filter(|&v| v < nvrtc_built) {
                        fixes.push(format!(
                            "Device {} JIT-compiles PTX from NVRTC {}.{}, newer than the driver's CUDA {}.{}: \
                             upgrade the driver to {} or newer.",
                            d.ordinal, nvrtc_built.0, nvrtc_built.1, v.0, v.1, min_driver(nvrtc_built)
                        ));
                    }
                }
            }
            Err(why) => {
                field(&mut s, "", format!("kernels: none ({why})"));
                fixes.push(format!(
                    "Device {}: {why}; medsyn will use the CPU.",
                    d.ordinal
                ));
            }
        }
        for (module, e) in &d.module_errors {
            field(&mut s, "", format!("failed to load {module}: {e}"));
        }
        if !d.module_errors.is_empty() {
            fixes.push(format!(
                "Device {}: some kernel modules did not load (see above).",
                d.ordinal
            ));
        }
    }

    let lib_line = |p: &LibProbe| match (&p.loaded, &p.version) {
        (Some(name), Some(v)) => format!("loaded {name} ({v})"),
        (Some(name), None) => format!("loaded {name}"),
        (None, _) if !p.other_majors.is_empty() => format!(
            "not found under the names cudarc uses ({}); present but skipped: {}",
            p.tried
                .iter()
                .filter(|n| n.contains(".so"))
                .cloned()
                .collect::<Vec<_>>()
                .join(", "),
            p.other_majors.join(", ")
        ),
        (None, _) => "not found".to_string(),
    };
    let nvrtc = driver::probe_nvrtc();
    field(
        &mut s,
        "NVRTC",
        format!(
            "{} (optional: the kernels are embedded precompiled)",
            lib_line(&nvrtc)
        ),
    );
    let mut blas_missing = Vec::new();
    for probe in [driver::probe_cublas(), driver::probe_cublaslt()] {
        field(&mut s, probe.what, lib_line(&probe));
        if probe.loaded.is_none() {
            blas_missing.push(probe.what);
        }
    }
    if !blas_missing.is_empty() {
        fixes.push(format!(
            "{} (matrix multiplies on the GPU) not found under CUDA 12 names: \
             `python3 -m pip install nvidia-cublas-cu12` and add its nvidia/cublas/lib folder to \
             LD_LIBRARY_PATH, or install CUDA 12.x cuBLAS with its lib64 on the loader path.",
            blas_missing.join(" and ")
        ));
    }

    if fixes.is_empty() {
        s.push_str("\nEverything the CUDA backend needs was found.\n");
    } else {
        s.push_str("\nMissing, and how to fix it:\n");
        fixes.dedup();
        for f in fixes {
            s.push_str(&format!("  - {f}\n"));
        }
    }
    s
}
