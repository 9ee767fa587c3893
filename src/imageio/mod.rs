//! Image files and pixels: 8-bit PNG read/write, conversion between float image tensors
//! `[N, C, H, W]` in `[0, 1]` and interleaved 8-bit pixels, and resizing/cropping (resize.rs).

pub mod convert;
pub mod decode;
pub mod jpeg;
pub mod png;
pub mod resize;

pub use self::png::{read_png, write_png_atomic, Image};
pub use convert::{tensor_to_u8_images, u8_to_tensor};
