//! Ops with autograd: each file holds an op's forward (dispatching to the
//! backend kernel) and its backward rule, side by side.

pub mod attention;
pub mod binary;
pub mod cast;
pub mod concat;
pub mod conv;
mod conv_weight_cache;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod device;
pub mod embedding;
pub mod loss;
pub mod matmul;
pub mod norm;
pub mod pool;
pub mod reduce;
pub mod softmax;
pub mod unary;
pub mod view;
