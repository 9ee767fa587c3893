//! Compute backends. `cpu` is the reference (multi-threaded, GEMM-backed);
//! a `cuda` backend joins behind the same op functions with the `cuda` feature.
//! Ops (in `crate::ops`) dispatch on the tensor's device to the backend's kernel.

pub mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;
