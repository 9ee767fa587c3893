//! Tabular and text inputs: RFC 4180 CSV files, report section selection, atomic file writes.

pub mod atomic;
pub mod csv;
pub mod reports;

pub use atomic::write_atomic;
pub use csv::{append_rows, write_csv_atomic, CsvTable, CsvWriter};
pub use reports::{select_text, Section};
