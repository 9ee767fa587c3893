//! GPU kernel tests (feature `cuda`): every kernel of kernels/*.cu launched on the device and
//! compared with its CPU twin on random inputs, outputs poisoned first, in f32, bf16 and f16.
//! Without a GPU each test prints that it is skipped (scripts/gpu-check.sh sets
//! MEDSYN_REQUIRE_GPU=1 so that there a missing GPU fails).
#![cfg(feature = "cuda")]

mod adamw;
mod allocator;
mod attention;
mod batch_norm;
mod conv;
mod conv_backward;
mod copy;
mod elementwise;
mod embedding;
mod geglu;
mod gemm;
mod group_norm;
mod infonce;
mod layer_norm;
mod op_harness;
mod ops_conv_loss;
mod ops_dense;
mod ops_elementwise;
mod optim_device;
mod philox;
mod pool;
mod reduce;
mod runtime;
mod softmax;
mod support;
mod upsample;
