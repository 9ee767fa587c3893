//! The process's opened GPUs: one `Gpu` per ordinal, opened at first use and shared by every
//! tensor on that device (one stream each, so work on a device is ordered without syncs).

use super::driver::probe_driver;
use super::Gpu;
use crate::error::{Error, Result};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

fn opened() -> &'static Mutex<HashMap<usize, Arc<Gpu>>> {
    static OPENED: OnceLock<Mutex<HashMap<usize, Arc<Gpu>>>> = OnceLock::new();
    OPENED.get_or_init(|| Mutex::new(HashMap::new()))
}

/// The shared `Gpu` of `cuda:ordinal`, opened on first use; an error (never a panic) names
/// the device and the problem when there is no driver, no such device or no usable kernel image.
/// Its context is made current on the calling thread: the raw driver calls of the ops
/// (memsets, copies on the legacy default stream, cuBLAS) act on the thread's current
/// context, and a thread (a test's, a worker's) may reach them before any cudarc call that
/// binds it.
pub fn gpu(ordinal: usize) -> Result<Arc<Gpu>> {
    let mut map = opened()
        .lock()
        .map_err(|_| Error::msg("GPU registry poisoned by an earlier panic"))?;
    if let Some(g) = map.get(&ordinal) {
        bind(g, ordinal)?;
        return Ok(g.clone());
    }
    let count = device_count();
    if ordinal >= count {
        return Err(Error::msg(format!(
            "cuda:{ordinal}: {}; run `medsyn doctor`",
            match count {
                0 => "no usable CUDA GPU or driver on this machine".to_string(),
                n => format!(
                    "this machine has {n} CUDA device(s) (cuda:0..cuda:{})",
                    n - 1
                ),
            }
        )));
    }
    let g = Arc::new(Gpu::open(ordinal)?);
    bind(&g, ordinal)?;
    map.insert(ordinal, g.clone());
    Ok(g)
}

/// Makes `g`'s context current on the calling thread (a no-op when it is already).
pub fn bind(g: &Gpu, ordinal: usize) -> Result<()> {
    g.context().bind_to_thread().map_err(|e| {
        Error::msg(format!(
            "cuda:{ordinal}: making its context current on this thread failed: {e}"
        ))
    })
}

/// How many CUDA devices the driver reports (0 without a driver or libcuda; never panics).
pub fn device_count() -> usize {
    static COUNT: OnceLock<usize> = OnceLock::new();
    *COUNT.get_or_init(|| {
        let probe = probe_driver(false);
        if probe.error.is_some() {
            0
        } else {
            probe.devices.len()
        }
    })
}
