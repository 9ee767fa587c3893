//! The kernel images build.rs embeds (PTX + cubin per kernels/*.cu and arch) and ptxas's per-kernel report.

use crate::error::{Error, Result};
use std::fmt;

/// A target the kernels are compiled for: NVRTC emits PTX for `compute_XX`, ptxas a cubin for `sm_XX`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Arch {
    /// Ampere (A100); its cubin also runs on every 8.x device (8.6, 8.7, 8.9), its PTX JITs to any
    /// newer one.
    Sm80,
    /// Hopper (H100/H200) with the arch-specific features (wgmma, TMA, setmaxnreg); runs only on 9.0.
    Sm90a,
}

impl Arch {
    pub const ALL: [Arch; 2] = [Arch::Sm80, Arch::Sm90a];

    /// The real architecture: `sm_80`, `sm_90a`.
    pub fn name(self) -> &'static str {
        match self {
            Arch::Sm80 => "sm_80",
            Arch::Sm90a => "sm_90a",
        }
    }

    /// The virtual architecture the PTX was made for: `compute_80`, `compute_90a`.
    pub fn compute_name(self) -> &'static str {
        match self {
            Arch::Sm80 => "compute_80",
            Arch::Sm90a => "compute_90a",
        }
    }

    /// `sm_80`/`80`/`compute_80`, `sm_90a`/`90a`/`compute_90a`.
    pub fn parse(s: &str) -> Option<Arch> {
        let s = s.trim();
        let s = s
            .strip_prefix("sm_")
            .or_else(|| s.strip_prefix("compute_"))
            .unwrap_or(s);
        match s {
            "80" => Some(Arch::Sm80),
            "90a" => Some(Arch::Sm90a),
            _ => None,
        }
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One file's compiled image for one architecture.
#[derive(Debug)]
pub struct ArchImage {
    pub arch: Arch,
    /// PTX text (no trailing NUL).
    pub ptx: &'static str,
    /// ELF cubin from ptxas.
    pub cubin: &'static [u8],
}

/// One `kernels/NAME.cu`: the module NAME with its images for every [`Arch`].
#[derive(Debug)]
pub struct ModuleImage {
    /// The file stem, e.g. `attention`.
    pub module: &'static str,
    /// The source path relative to the crate root, e.g. `kernels/attention.cu`.
    pub source: &'static str,
    pub images: &'static [ArchImage],
}

impl ModuleImage {
    pub fn image(&self, arch: Arch) -> Option<&'static ArchImage> {
        self.images.iter().find(|i| i.arch == arch)
    }

    /// The image to load on a device of compute capability `cc` (see [`choose_image`]).
    pub fn select(&self, cc: (u32, u32)) -> Result<LoadImage> {
        let (arch, kind) = choose_image(cc).ok_or_else(|| {
            Error::msg(format!(
                "compute capability {}.{} is older than 8.0, the oldest the kernels are built for (sm_80)",
                cc.0, cc.1
            ))
        })?;
        let image = self.image(arch).ok_or_else(|| {
            Error::msg(format!(
                "kernel module {} has no {} image",
                self.module, arch
            ))
        })?;
        Ok(match kind {
            ImageKind::Cubin => LoadImage::Cubin {
                arch,
                bytes: image.cubin,
            },
            ImageKind::Ptx => LoadImage::Ptx {
                arch,
                text: image.ptx,
            },
        })
    }
}

/// ptxas's report for one entry point compiled for one architecture.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelInfo {
    /// The file stem of its kernels/*.cu.
    pub module: &'static str,
    /// The `extern "C"` entry point name.
    pub kernel: &'static str,
    pub arch: Arch,
    pub registers: u32,
    /// Static shared memory (`__shared__` arrays); dynamic shared memory comes on top at launch.
    pub shared_bytes: u32,
    /// Spill stores + spill loads, in bytes.
    pub spill_bytes: u32,
}

/// Whether a device gets machine code or PTX for the driver to JIT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageKind {
    Cubin,
    Ptx,
}

/// What to hand to `cuModuleLoadData` for one module on one device.
#[derive(Clone, Copy, Debug)]
pub enum LoadImage {
    Cubin { arch: Arch, bytes: &'static [u8] },
    Ptx { arch: Arch, text: &'static str },
}

impl LoadImage {
    pub fn arch(&self) -> Arch {
        match *self {
            LoadImage::Cubin { arch, .. } | LoadImage::Ptx { arch, .. } => arch,
        }
    }

    /// "sm_90a cubin", "compute_80 PTX (JIT)".
    pub fn describe(&self) -> String {
        match *self {
            LoadImage::Cubin { arch, .. } => format!("{} cubin", arch.name()),
            LoadImage::Ptx { arch, .. } => format!("{} PTX (JIT)", arch.compute_name()),
        }
    }
}

/// The image rule: exactly 9.0 → the sm_90a cubin (90a code runs on no other device);
/// 8.x → the sm_80 cubin (SASS runs on later minors of its major); anything newer (9.x ≠ 9.0,
/// 10.x, 12.x, …) → the compute_80 PTX, JIT-compiled by the driver (compute_90a PTX is not
/// forward compatible); older than 8.0 → None.
pub fn choose_image(cc: (u32, u32)) -> Option<(Arch, ImageKind)> {
    match cc {
        (9, 0) => Some((Arch::Sm90a, ImageKind::Cubin)),
        (8, _) => Some((Arch::Sm80, ImageKind::Cubin)),
        (major, _) if major >= 9 => Some((Arch::Sm80, ImageKind::Ptx)),
        _ => None,
    }
}

mod generated {
    use super::{Arch, ArchImage, KernelInfo, ModuleImage};
    include!(concat!(env!("OUT_DIR"), "/kernels.rs"));
}

/// Every kernels/*.cu, sorted by module name.
pub fn modules() -> &'static [ModuleImage] {
    generated::MODULES
}

/// Every entry point for every arch, sorted by module, arch, kernel.
pub fn kernels() -> &'static [KernelInfo] {
    generated::KERNELS
}

pub fn module(name: &str) -> Option<&'static ModuleImage> {
    modules().iter().find(|m| m.module == name)
}

pub fn kernel(module: &str, kernel: &str, arch: Arch) -> Option<&'static KernelInfo> {
    kernels()
        .iter()
        .find(|k| k.module == module && k.kernel == kernel && k.arch == arch)
}

/// The module whose file defines the entry point `kernel`, if any.
pub fn module_of(kernel: &str) -> Option<&'static str> {
    kernels()
        .iter()
        .find(|k| k.kernel == kernel)
        .map(|k| k.module)
}

/// NVRTC's version at build time (major, minor): PTX JIT needs a driver at least this new.
pub fn nvrtc_version() -> (u32, u32) {
    generated::NVRTC_VERSION
}

/// ptxas's version at build time, e.g. "12.9.86".
pub fn ptxas_version() -> &'static str {
    generated::PTXAS_VERSION
}

/// Where build.rs found NVRTC, the headers and ptxas.
pub fn toolchain() -> &'static str {
    generated::TOOLCHAIN
}
