//! Probing for `medsyn doctor`: the CUDA driver, devices, NVRTC and cuBLAS(Lt), without ever panicking.
//!
//! cudarc (dynamic loading) panics when a library or symbol is missing, so every library is
//! first opened here with libloading under the same names cudarc tries, and driver calls run
//! inside `catch_unwind` as a second guard.

use super::gpu::quietly;
use super::modules::Modules;
use super::registry;
use cudarc::driver::{result, sys, CudaContext};
use std::ffi::{c_int, c_uint};

/// The CUDA major.minor that cudarc's bindings were generated for (the `cuda-12080` feature).
pub const BINDINGS_CUDA_VERSION: (u32, u32) = (12, 8);

/// One shared library looked up by the names cudarc tries, in cudarc's order.
#[derive(Debug, Clone)]
pub struct LibProbe {
    /// "NVRTC", "cuBLAS", ...
    pub what: &'static str,
    /// The first name that loaded (the one cudarc will use), if any.
    pub loaded: Option<String>,
    /// Its version, when the library reports one.
    pub version: Option<String>,
    /// The names tried.
    pub tried: Vec<String>,
    /// Sonames of a newer major release that load but which cudarc's 12.x names skip
    /// (e.g. libcublas.so.13 on a CUDA-13-only machine).
    pub other_majors: Vec<String>,
}

/// One GPU as the driver reports it.
#[derive(Debug, Clone)]
pub struct DeviceInfo {
    pub ordinal: usize,
    pub name: String,
    pub compute_capability: (u32, u32),
    pub total_bytes: usize,
    /// What the kernel modules load as on this device ("sm_90a cubin", ...), or why none does.
    pub image: std::result::Result<String, String>,
    /// Modules that loaded, and the failures (module, error), when module loading was checked.
    pub modules_loaded: usize,
    pub module_errors: Vec<(String, String)>,
}

/// The driver's state.
#[derive(Debug, Clone)]
pub struct DriverProbe {
    /// The libcuda name that loaded, if any.
    pub library: Option<String>,
    pub tried: Vec<String>,
    /// cuDriverGetVersion as (major, minor), e.g. (13, 0) for R580.
    pub version: Option<(u32, u32)>,
    pub devices: Vec<DeviceInfo>,
    /// cuInit or a query failed (no device, stub library, permissions...).
    pub error: Option<String>,
}

/// The names cudarc's dynamic loading tries for `lib`, in its order, without repeats.
fn candidates(lib: &str) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for name in cudarc::get_lib_name_candidates(lib) {
        if !names.contains(&name) {
            names.push(name);
        }
    }
    names
}

/// The first of cudarc's candidate names for `lib` that loads.
fn first_loadable(candidates: &[String]) -> Option<(String, libloading::Library)> {
    candidates.iter().find_map(|name| {
        // SAFETY: loading runs the library's initialisers; CUDA's libraries have no preconditions.
        unsafe { libloading::Library::new(name) }
            .ok()
            .map(|l| (name.clone(), l))
    })
}

fn probe_lib(
    what: &'static str,
    lib_name: &str,
    version: impl Fn(&libloading::Library) -> Option<String>,
) -> LibProbe {
    let tried = candidates(lib_name);
    let found = first_loadable(&tried);
    let mut other_majors = Vec::new();
    for major in [13u32, 14] {
        let name = format!("lib{lib_name}.so.{major}");
        // SAFETY: as in first_loadable.
        if !tried.contains(&name) && unsafe { libloading::Library::new(&name) }.is_ok() {
            other_majors.push(name);
        }
    }
    LibProbe {
        what,
        version: found.as_ref().and_then(|(_, lib)| version(lib)),
        loaded: found.map(|(name, _)| name),
        tried,
        other_majors,
    }
}

/// NVRTC (run-time compilation; the embedded kernels do not need it).
pub fn probe_nvrtc() -> LibProbe {
    probe_lib("NVRTC", "nvrtc", |lib| {
        // SAFETY: nvrtcVersion(int*, int*) per nvrtc.h.
        unsafe {
            let f = lib
                .get::<unsafe extern "C" fn(*mut c_int, *mut c_int) -> c_int>(b"nvrtcVersion\0")
                .ok()?;
            let (mut major, mut minor) = (0, 0);
            (f(&mut major, &mut minor) == 0).then(|| format!("{major}.{minor}"))
        }
    })
}

/// cuBLAS.
pub fn probe_cublas() -> LibProbe {
    probe_lib("cuBLAS", "cublas", |lib| {
        // SAFETY: cublasGetProperty(libraryPropertyType, int*) per cublas_api.h; 0/1/2 are
        // MAJOR_VERSION/MINOR_VERSION/PATCH_LEVEL.
        unsafe {
            let f = lib
                .get::<unsafe extern "C" fn(c_int, *mut c_int) -> c_int>(b"cublasGetProperty\0")
                .ok()?;
            let mut v = [0; 3];
            for (i, slot) in v.iter_mut().enumerate() {
                if f(i as c_int, slot) != 0 {
                    return None;
                }
            }
            Some(format!("{}.{}.{}", v[0], v[1], v[2]))
        }
    })
}

/// cuBLASLt.
pub fn probe_cublaslt() -> LibProbe {
    probe_lib("cuBLASLt", "cublasLt", |lib| {
        // SAFETY: size_t cublasLtGetVersion(void) per cublasLt.h (e.g. 120903 for 12.9.3).
        unsafe {
            let f = lib
                .get::<unsafe extern "C" fn() -> usize>(b"cublasLtGetVersion\0")
                .ok()?;
            let v = f();
            Some(format!("{}.{}.{}", v / 10000, (v / 100) % 100, v % 100))
        }
    })
}

/// The driver, its version and devices; with `load_modules`, also loads every embedded module on
/// every device (creating the device's primary context) to prove the images are accepted.
pub fn probe_driver(load_modules: bool) -> DriverProbe {
    let tried = candidates("cuda");
    let library = first_loadable(&tried).map(|(name, _)| name);
    let mut probe = DriverProbe {
        library,
        tried,
        version: None,
        devices: Vec::new(),
        error: None,
    };
    if probe.library.is_none() {
        return probe;
    }
    let outcome = quietly(|| query_driver(load_modules));
    match outcome {
        Ok((version, devices, error)) => {
            probe.version = version;
            probe.devices = devices;
            probe.error = error;
        }
        Err(panic) => probe.error = Some(format!("the CUDA driver library misbehaved: {panic}")),
    }
    probe
}

type DriverState = (Option<(u32, u32)>, Vec<DeviceInfo>, Option<String>);

fn query_driver(load_modules: bool) -> DriverState {
    let mut raw = 0 as c_int;
    // SAFETY: one valid out-pointer; cuDriverGetVersion needs no cuInit.
    let version = unsafe { sys::cuDriverGetVersion(&mut raw) }
        .result()
        .ok()
        .map(|()| (raw as u32 / 1000, (raw as u32 % 1000) / 10));
    if let Err(e) = result::init() {
        return (version, Vec::new(), Some(format!("cuInit failed: {e}")));
    }
    let count = match result::device::get_count() {
        Ok(n) => n,
        Err(e) => {
            return (
                version,
                Vec::new(),
                Some(format!("cuDeviceGetCount failed: {e}")),
            )
        }
    };
    let mut devices = Vec::new();
    for ordinal in 0..count.max(0) {
        match device_info(ordinal, load_modules) {
            Ok(d) => devices.push(d),
            Err(e) => return (version, devices, Some(format!("device {ordinal}: {e}"))),
        }
    }
    (version, devices, None)
}

fn device_info(
    ordinal: c_int,
    load_modules: bool,
) -> std::result::Result<DeviceInfo, result::DriverError> {
    use sys::CUdevice_attribute::{
        CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR as MAJOR,
        CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR as MINOR,
    };
    let dev = result::device::get(ordinal)?;
    let name = result::device::get_name(dev)?;
    // SAFETY: `dev` came from cuDeviceGet.
    let (major, minor, total_bytes) = unsafe {
        (
            result::device::get_attribute(dev, MAJOR)?,
            result::device::get_attribute(dev, MINOR)?,
            result::device::total_mem(dev)?,
        )
    };
    let cc = (major as c_uint, minor as c_uint);
    let image = match registry::choose_image(cc) {
        Some((arch, registry::ImageKind::Cubin)) => Ok(format!("{} cubins", arch.name())),
        Some((arch, registry::ImageKind::Ptx)) => Ok(format!(
            "{} PTX, JIT-compiled by the driver",
            arch.compute_name()
        )),
        None => Err(format!(
            "compute capability {major}.{minor} is below 8.0: no embedded kernel runs on it"
        )),
    };
    let mut info = DeviceInfo {
        ordinal: ordinal as usize,
        name,
        compute_capability: cc,
        total_bytes,
        image,
        modules_loaded: 0,
        module_errors: Vec::new(),
    };
    if load_modules && info.image.is_ok() {
        match CudaContext::new(ordinal as usize)
            .map_err(|e| e.to_string())
            .and_then(|ctx| Modules::new(ctx).map_err(|e| e.to_string()))
        {
            Ok(modules) => {
                for m in registry::modules() {
                    match modules.module(m.module) {
                        Ok(_) => info.modules_loaded += 1,
                        Err(e) => info
                            .module_errors
                            .push((m.module.to_string(), e.to_string())),
                    }
                }
            }
            Err(e) => info.module_errors.push(("(context)".to_string(), e)),
        }
    }
    Ok(info)
}
