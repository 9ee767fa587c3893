//! `Modules`: loads each embedded kernel module onto one device at first use, and keeps it.

use super::registry::{self, LoadImage};
use crate::error::{Error, Result};
use cudarc::driver::{CudaContext, CudaFunction, CudaModule};
use cudarc::nvrtc::Ptx;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The kernel modules of one CUDA context, each loaded once (cubin or PTX per
/// [`registry::choose_image`]) on its first [`Modules::module`] call.
pub struct Modules {
    ctx: Arc<CudaContext>,
    cc: (u32, u32),
    loaded: Mutex<HashMap<&'static str, Arc<CudaModule>>>,
}

impl Modules {
    pub fn new(ctx: Arc<CudaContext>) -> Result<Self> {
        let (major, minor) = ctx
            .compute_capability()
            .map_err(|e| driver_error(e, "reading the compute capability"))?;
        Ok(Modules {
            ctx,
            cc: (major as u32, minor as u32),
            loaded: Mutex::new(HashMap::new()),
        })
    }

    pub fn context(&self) -> &Arc<CudaContext> {
        &self.ctx
    }

    pub fn compute_capability(&self) -> (u32, u32) {
        self.cc
    }

    /// The image that [`Modules::module`] loads for `name` on this device.
    pub fn image(&self, name: &str) -> Result<LoadImage> {
        let image = registry::module(name).ok_or_else(|| {
            Error::msg(format!(
                "no kernel module {name:?} is embedded (kernels/{name}.cu does not exist in this build)"
            ))
        })?;
        image.select(self.cc)
    }

    /// The module compiled from `kernels/{name}.cu`, loaded on first use.
    pub fn module(&self, name: &str) -> Result<Arc<CudaModule>> {
        let mut loaded = self
            .loaded
            .lock()
            .map_err(|_| Error::msg("kernel module cache poisoned"))?;
        if let Some(m) = loaded.get(name) {
            return Ok(m.clone());
        }
        let image = self.image(name)?;
        let key = registry::module(name).map(|m| m.module).unwrap_or_default();
        let ptx = match image {
            LoadImage::Cubin { bytes, .. } => Ptx::from_binary(bytes.to_vec()),
            LoadImage::Ptx { text, .. } => Ptx::from_src(text),
        };
        let module = self.ctx.load_module(ptx).map_err(|e| {
            driver_error(
                e,
                &format!(
                    "loading kernels/{name}.cu ({}) on a {}.{} device",
                    image.describe(),
                    self.cc.0,
                    self.cc.1
                ),
            )
        })?;
        loaded.insert(key, module.clone());
        Ok(module)
    }

    /// The entry point `kernel` of module `module`.
    pub fn function(&self, module: &str, kernel: &str) -> Result<CudaFunction> {
        self.module(module)?
            .load_function(kernel)
            .map_err(|e| driver_error(e, &format!("kernel {kernel} in kernels/{module}.cu")))
    }
}

/// A driver error as a crate error naming what was being done.
pub fn driver_error(e: cudarc::driver::DriverError, doing: &str) -> Error {
    Error::msg(format!("CUDA driver error while {doing}: {e}"))
}
