//! `medsyn eval --predictions P.csv --labels L.csv [--json OUT.json]`: per-class and mean
//! ROC AUC of classification scores against labels, matched by id and class name.

use crate::error::Result;
use crate::eval::{evaluate, ScoreTable};
use clap::Args;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct EvalArgs {
    /// CSV with an `id` column and one score column per class.
    #[arg(long)]
    pub predictions: PathBuf,
    /// CSV with an `id` column and one column per class: 1 positive, 0 negative, empty = not
    /// labelled (that row is left out for that class).
    #[arg(long)]
    pub labels: PathBuf,
    /// Also write `{"auc": {class: value}, "mean_auc": value, ...}` here (atomically).
    #[arg(long)]
    pub json: Option<PathBuf>,
}

pub fn run(args: &EvalArgs) -> Result<()> {
    let predictions = ScoreTable::read_predictions(&args.predictions)?;
    let labels = ScoreTable::read_labels(&args.labels)?;
    let report = evaluate(&predictions, &labels)?;
    print!("{}", report.table());
    if let Some(path) = &args.json {
        report.write_json(path)?;
        println!("wrote {}", path.display());
    }
    Ok(())
}
