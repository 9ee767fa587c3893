//! ROC AUC against scikit-learn's `roc_auc_score` (ties, missing labels, undefined classes;
//! fixture from scripts/fixtures/eval_auc.py), the predictions writer, and `medsyn eval`:
//! a good run with its JSON, and errors for malformed rows, bad scores and mismatched ids.

use medsyn::data::write_csv_atomic;
use medsyn::eval::{evaluate, roc_auc, write_predictions_csv, ScoreTable};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn fixture() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/eval_auc.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run scripts/fixtures/make_all.py)", path.display()));
    serde_json::from_str(&text).unwrap()
}

fn tmp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("medsyn_eval_auc_{name}_{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn medsyn(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_medsyn"))
        .args(args)
        .output()
        .expect("run medsyn")
}

/// Runs `medsyn eval` expecting failure; returns stderr.
fn eval_fails(pred: &Path, labels: &Path) -> String {
    let o = medsyn(&[
        "eval",
        "--predictions",
        pred.to_str().unwrap(),
        "--labels",
        labels.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(1), "expected exit 1, stderr:\n{err}");
    assert!(
        err.starts_with("error: ") && !err.contains("panicked"),
        "{err}"
    );
    err
}

#[test]
fn roc_auc_matches_sklearn_with_ties_and_missing_labels() {
    let fx = fixture();
    let cases = fx["cases"].as_array().unwrap();
    assert!(cases.len() >= 8);
    let mut undefined = 0;
    for (k, case) in cases.iter().enumerate() {
        let scores: Vec<f64> = case["scores"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        let labels: Vec<Option<bool>> = case["labels"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_i64().map(|x| x == 1))
            .collect();
        let (s, l): (Vec<f64>, Vec<bool>) = scores
            .iter()
            .zip(&labels)
            .filter_map(|(&s, l)| l.map(|l| (s, l)))
            .unzip();
        let got = roc_auc(&s, &l);
        match case["auc"].as_f64() {
            Some(want) => {
                let got = got.unwrap_or_else(|| panic!("case {k}: undefined, sklearn {want}"));
                assert!(
                    (got - want).abs() < 1e-12,
                    "case {k}: {got} vs sklearn {want}"
                );
                // Reversing the scores mirrors the AUC.
                let neg: Vec<f64> = s.iter().map(|x| -x).collect();
                let mirrored = roc_auc(&neg, &l).unwrap();
                assert!((mirrored - (1.0 - want)).abs() < 1e-12, "case {k}");
            }
            None => {
                undefined += 1;
                assert_eq!(got, None, "case {k}: sklearn has no AUC (one label value)");
            }
        }
    }
    assert_eq!(
        undefined, 2,
        "the fixture has an all-negative and an all-positive case"
    );
}

/// Writes the fixture table as predictions (via `write_predictions_csv`) and labels (rows
/// reversed, so matching must go by id).
fn write_table(dir: &Path) -> (PathBuf, PathBuf, Value) {
    let t = fixture()["table"].clone();
    let ids: Vec<String> = t["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    let classes: Vec<String> = t["classes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    let scores: Vec<f64> = t["scores"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r.as_array().unwrap().iter().map(|v| v.as_f64().unwrap()))
        .collect();
    let pred = dir.join("predictions.csv");
    write_predictions_csv(&pred, &classes, &ids, &scores).unwrap();
    let mut header = vec!["id".to_string()];
    header.extend(classes.iter().cloned());
    let rows: Vec<Vec<String>> = ids
        .iter()
        .zip(t["labels"].as_array().unwrap())
        .rev()
        .map(|(id, r)| {
            let mut row = vec![id.clone()];
            row.extend(r.as_array().unwrap().iter().map(|v| match v.as_i64() {
                Some(x) => x.to_string(),
                None => String::new(),
            }));
            row
        })
        .collect();
    let labels = dir.join("labels.csv");
    write_csv_atomic(&labels, &header, &rows).unwrap();
    (pred, labels, t)
}

#[test]
fn evaluate_matches_sklearn_per_class_and_mean() {
    let dir = tmp_dir("lib");
    let (pred, labels, t) = write_table(&dir);
    let p = ScoreTable::read_predictions(&pred).unwrap();
    // The written scores read back bit-exactly.
    let want: Vec<f64> = t["scores"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r.as_array().unwrap().iter().map(|v| v.as_f64().unwrap()))
        .collect();
    let got: Vec<f64> = p.values.iter().map(|v| v.unwrap()).collect();
    assert_eq!(got, want);
    let l = ScoreTable::read_labels(&labels).unwrap();
    let report = evaluate(&p, &l).unwrap();
    for c in &report.classes {
        match t["auc"][&c.name].as_f64() {
            Some(want) => assert!((c.auc.unwrap() - want).abs() < 1e-12, "{}", c.name),
            None => assert_eq!(c.auc, None, "{}", c.name),
        }
    }
    let mean = t["mean_auc"].as_f64().unwrap();
    assert!((report.mean_auc.unwrap() - mean).abs() < 1e-12);
    let rare = report.classes.iter().find(|c| c.name == "Rare").unwrap();
    assert_eq!(rare.positives, 0);
    assert!(rare.negatives > 0);
    assert!(report.table().contains("left out of the mean: Rare"));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn cli_eval_prints_and_writes_json() {
    let dir = tmp_dir("cli");
    let (pred, labels, t) = write_table(&dir);
    let json = dir.join("out").join("auc.json");
    std::fs::create_dir_all(json.parent().unwrap()).unwrap();
    let o = medsyn(&[
        "eval",
        "--predictions",
        pred.to_str().unwrap(),
        "--labels",
        labels.to_str().unwrap(),
        "--json",
        json.to_str().unwrap(),
    ]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        out.contains("Pleural Effusion") && out.contains("mean"),
        "{out}"
    );
    assert!(out.contains("undefined"), "{out}");
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    for (class, want) in t["auc"].as_object().unwrap() {
        match want.as_f64() {
            Some(w) => assert!((v["auc"][class].as_f64().unwrap() - w).abs() < 1e-12),
            None => assert!(v["auc"][class].is_null(), "{class}"),
        }
    }
    assert!((v["mean_auc"].as_f64().unwrap() - t["mean_auc"].as_f64().unwrap()).abs() < 1e-12);
    assert_eq!(v["undefined"], serde_json::json!(["Rare"]));
    // Nothing but the JSON was left in the folder (atomic write, no temp files).
    let names: Vec<_> = std::fs::read_dir(json.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("auc.json")]);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn cli_eval_errors_name_file_and_line() {
    let dir = tmp_dir("errors");
    let pred = dir.join("p.csv");
    let labels = dir.join("l.csv");
    let good_labels = "id,A,B\nx,1,0\ny,0,\nz,1,1\n";
    std::fs::write(&labels, good_labels).unwrap();

    // A malformed row (an extra field) in the predictions.
    std::fs::write(&pred, "id,A,B\nx,0.1,0.2\ny,0.3,0.4,0.5\nz,0.2,0.1\n").unwrap();
    let e = eval_fails(&pred, &labels);
    assert!(e.contains("p.csv: line 3") && e.contains("4 fields"), "{e}");

    // A non-numeric score.
    std::fs::write(&pred, "id,A,B\nx,0.1,0.2\ny,0.3,0.4\nz,high,0.1\n").unwrap();
    let e = eval_fails(&pred, &labels);
    assert!(
        e.contains("p.csv: line 4")
            && e.contains("\"A\"")
            && e.contains("\"high\" is not a number"),
        "{e}"
    );
    std::fs::write(&pred, "id,A,B\nx,0.1,0.2\ny,0.3,NaN\nz,0.2,0.1\n").unwrap();
    let e = eval_fails(&pred, &labels);
    assert!(
        e.contains("line 3") && e.contains("not a finite number"),
        "{e}"
    );

    // A label that is neither 1, 0 nor empty.
    std::fs::write(&pred, "id,A,B\nx,0.1,0.2\ny,0.3,0.4\nz,0.2,0.1\n").unwrap();
    std::fs::write(&labels, "id,A,B\nx,1,0\ny,-1,\nz,1,1\n").unwrap();
    let e = eval_fails(&pred, &labels);
    assert!(e.contains("l.csv: line 3") && e.contains("\"-1\""), "{e}");

    // Mismatched ids, listed.
    std::fs::write(&labels, "id,A,B\nx,1,0\nw,0,\nv,1,1\n").unwrap();
    let e = eval_fails(&pred, &labels);
    assert!(e.contains("ids do not match"), "{e}");
    assert!(
        e.contains("\"w\", \"v\"") && e.contains("\"y\", \"z\""),
        "{e}"
    );

    // A label class with no prediction column.
    std::fs::write(&labels, "id,A,C\nx,1,0\ny,0,\nz,1,1\n").unwrap();
    let e = eval_fails(&pred, &labels);
    assert!(
        e.contains("no prediction column") && e.contains("\"C\""),
        "{e}"
    );

    // A duplicated id.
    std::fs::write(&labels, "id,A,B\nx,1,0\ny,0,\nx,1,1\n").unwrap();
    let e = eval_fails(&pred, &labels);
    assert!(e.contains("line 4") && e.contains("first on line 2"), "{e}");

    // A missing id column.
    std::fs::write(&labels, "name,A,B\nx,1,0\n").unwrap();
    let e = eval_fails(&pred, &labels);
    assert!(e.contains("no column \"id\""), "{e}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn predictions_writer_rejects_bad_input() {
    let dir = tmp_dir("writer");
    let p = dir.join("p.csv");
    let e = write_predictions_csv(&p, &["A", "B"], &["x"], &[0.5]).unwrap_err();
    assert!(
        e.to_string().contains("1 scores for 1 ids x 2 classes"),
        "{e}"
    );
    let e = write_predictions_csv(&p, &["A"], &["x", "y"], &[0.5, f64::NAN]).unwrap_err();
    assert!(e.to_string().contains("\"y\""), "{e}");
    assert!(write_predictions_csv(&p, &["id"], &["x"], &[0.5]).is_err());
    assert!(!p.exists());
    // Ids and classes with commas and quotes survive the round trip.
    write_predictions_csv(
        &p,
        &["a,b", "q\""],
        &["x,1", "y"],
        &[0.25, -1e-30, 3.0, 0.1],
    )
    .unwrap();
    let t = ScoreTable::read_predictions(&p).unwrap();
    assert_eq!(t.classes, vec!["a,b", "q\""]);
    assert_eq!(t.ids, vec!["x,1", "y"]);
    assert_eq!(
        t.values,
        vec![Some(0.25), Some(-1e-30), Some(3.0), Some(0.1)]
    );
    std::fs::remove_dir_all(dir).unwrap();
}
