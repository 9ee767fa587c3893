//! The CUDA backend (feature `cuda`): embedded kernel images, their load-once cache, and driver probing.
//!
//! build.rs compiles every `kernels/*.cu` to PTX and sm_80/sm_90a cubins; [`registry`] exposes them
//! with ptxas's resource report, [`modules`] loads them onto a device, [`driver`] backs `medsyn doctor`,
//! [`gpu`] opens a device for launches, uploads, downloads and timing, [`devices`] shares one
//! opened `Gpu` per ordinal with the tensor runtime.

pub mod allocator;
pub mod devices;
pub mod driver;
pub mod gpu;
pub mod modules;
pub mod registry;

pub use allocator::{AllocStats, Block, CachingAllocator};
pub use devices::{device_count, gpu};
pub use gpu::{DevBuf, Gpu};
pub use modules::Modules;
pub use registry::{Arch, ArchImage, KernelInfo, LoadImage, ModuleImage};
