//! Downstream evaluation: ROC AUC (exact with ties) over prediction/label CSVs.

pub mod auc;
pub mod scores;

pub use auc::roc_auc;
pub use scores::{evaluate, write_predictions_csv, ClassAuc, EvalReport, ScoreTable};
