//! Ops with autograd: each file holds an op's forward (dispatching to the
//! backend kernel) and its backward rule, side by side.

pub mod binary;
pub mod cast;
pub mod concat;
pub mod matmul;
pub mod reduce;
pub mod unary;
pub mod view;
pub mod conv;
pub mod pool;
pub mod norm;
pub mod softmax;
pub mod attention;
pub mod embedding;
pub mod loss;
