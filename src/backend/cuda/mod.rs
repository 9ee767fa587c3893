//! The CUDA backend's launch functions (feature `cuda`): one file per kernels/*.cu, each function
//! checking its buffers and shape, choosing the launch shape of the kernel's launch contract and
//! queuing the kernel on the device's stream (no synchronisation). The GPU tests (tests/gpu) and
//! benches (benches/gpu) launch through these, as the tensor runtime's ops (src/ops/cuda) do.

pub mod adamw;
pub mod attention;
pub mod batch_norm;
pub mod check;
pub mod conv;
pub mod conv_backward;
pub mod copy;
pub mod elementwise;
pub mod embedding;
pub mod geglu;
pub mod gemm;
pub mod group_norm;
pub mod infonce;
pub mod layer_norm;
pub mod philox;
pub mod pool;
pub mod reduce;
pub mod softmax;
pub mod upsample;
