//! Tabular and text inputs: RFC 4180 CSV files, report section selection, atomic file writes.

pub mod atomic;
pub mod csv;
pub mod loader;
pub mod manifest;
pub mod phantom;
pub mod reports;
pub mod transforms;

pub use atomic::write_atomic;
pub use csv::{append_rows, write_csv_atomic, CsvTable, CsvWriter};
pub use loader::{Batch, Batches, Labels, Loader, LoaderConfig, OnBadImage};
pub use manifest::{Manifest, ManifestOptions, Sample, Split, TextSource};
pub use reports::{select_text, Section};
pub use transforms::{CropMode, TransformConfig};
