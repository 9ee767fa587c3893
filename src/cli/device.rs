//! `--device` and `--dtype` flags shared by the subcommands.

use crate::bail;
use crate::error::Result;
use crate::tensor::{DType, Device};

/// The device `--device` names: `cpu`; `cuda` / `cuda:N` (an error saying why when this build
/// has no CUDA backend or the machine no such GPU — never a panic); `auto` = cuda:0 when this
/// build has the CUDA backend and a GPU is usable, else the CPU.
pub fn resolve_device(flag: &str) -> Result<Device> {
    match flag {
        "cpu" => Ok(Device::Cpu),
        "auto" => Ok(auto()),
        d if d == "cuda" || d.starts_with("cuda:") => {
            let device = Device::parse(d).map_err(|e| e.context("--device"))?;
            usable(d, device)
        }
        d => bail!("--device {d}: expected auto, cpu, cuda or cuda:N"),
    }
}

#[cfg(feature = "cuda")]
fn auto() -> Device {
    if crate::cuda::device_count() > 0 && crate::cuda::gpu(0).is_ok() {
        Device::Cuda(0)
    } else {
        Device::Cpu
    }
}

#[cfg(not(feature = "cuda"))]
fn auto() -> Device {
    Device::Cpu
}

#[cfg(feature = "cuda")]
fn usable(flag: &str, device: Device) -> Result<Device> {
    if let Device::Cuda(n) = device {
        crate::cuda::gpu(n).map_err(|e| e.context(format!("--device {flag}")))?;
    }
    Ok(device)
}

#[cfg(not(feature = "cuda"))]
fn usable(flag: &str, _: Device) -> Result<Device> {
    bail!(
        "--device {flag}: this medsyn build has no CUDA backend (CPU only); rebuild with \
         `cargo build --release --features cuda` (see README, CUDA build) or use --device cpu"
    )
}

/// `f32`, `bf16` or `f16` (also `float32`, `bfloat16`, `float16`, `fp16`).
pub fn parse_dtype(s: &str) -> Result<DType> {
    Ok(match s.to_ascii_lowercase().as_str() {
        "f32" | "float32" | "fp32" => DType::F32,
        "bf16" | "bfloat16" => DType::BF16,
        "f16" | "float16" | "fp16" | "half" => DType::F16,
        other => bail!("--dtype {other}: expected f32, bf16 or f16"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_flags_resolve_or_explain() {
        assert_eq!(resolve_device("cpu").unwrap(), Device::Cpu);
        let e = resolve_device("tpu").unwrap_err().to_string();
        assert!(e.contains("expected auto, cpu, cuda or cuda:N"), "{e}");
        let e = resolve_device("cuda:x").unwrap_err().to_string();
        assert!(e.contains("cuda:x"), "{e}");
        if cfg!(feature = "cuda") {
            return; // the GPU test binary covers the feature build (tests/gpu/runtime.rs)
        }
        assert_eq!(resolve_device("auto").unwrap(), Device::Cpu);
        for flag in ["cuda", "cuda:1"] {
            let e = resolve_device(flag).unwrap_err().to_string();
            assert!(
                e.contains("no CUDA backend") && e.contains("--features cuda"),
                "{e}"
            );
        }
        let t = crate::Tensor::ones(&[2], DType::F32).unwrap();
        let e = t.to_device(Device::Cuda(0)).unwrap_err().to_string();
        assert!(e.contains("no CUDA backend"), "{e}");
    }
}
