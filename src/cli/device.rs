//! `--device` and `--dtype` flags shared by the subcommands.

use crate::bail;
use crate::error::Result;
use crate::tensor::DType;

/// Accepts `auto` and `cpu`; `cuda[:N]` is refused with the reason until models run on the
/// GPU (with the `cuda` feature the kernels are built in and tested, but the tensor runtime
/// does not place tensors on the device yet).
pub fn require_cpu(device: &str) -> Result<()> {
    match device {
        "auto" | "cpu" => Ok(()),
        d if d == "cuda" || d.starts_with("cuda:") => bail!(
            "--device {d}: {}; use --device cpu or auto",
            if cfg!(feature = "cuda") {
                "this medsyn build has the CUDA kernels (`medsyn kernels`, `medsyn doctor`) but \
                 no CUDA backend for models yet: they run on the CPU only"
            } else {
                "this medsyn build has no CUDA backend (CPU only)"
            }
        ),
        d => bail!("--device {d}: expected auto, cpu or cuda:N"),
    }
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
