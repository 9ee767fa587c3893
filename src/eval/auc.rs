//! ROC AUC as the Mann–Whitney U statistic with midranks: exact with tied scores, equal to
//! scikit-learn's `roc_auc_score` (trapezoidal ROC area) for binary labels.

/// The area under the ROC curve of `scores` for binary `labels` (true = positive):
/// `(R+ - n+(n+ + 1)/2) / (n+ n-)`, where `R+` is the sum of the positives' ranks among all
/// scores, tied scores sharing their average rank. `None` when the AUC is undefined: no
/// positive or no negative label, or a NaN score.
///
/// Panics when `scores` and `labels` have different lengths (a caller's bug).
pub fn roc_auc(scores: &[f64], labels: &[bool]) -> Option<f64> {
    assert_eq!(
        scores.len(),
        labels.len(),
        "roc_auc: {} scores but {} labels",
        scores.len(),
        labels.len()
    );
    if scores.iter().any(|s| s.is_nan()) {
        return None;
    }
    let n_pos = labels.iter().filter(|&&l| l).count();
    let n_neg = labels.len() - n_pos;
    if n_pos == 0 || n_neg == 0 {
        return None;
    }
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_unstable_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    // Twice the rank sum of the positives, in integers: a tie group occupying ranks
    // i+1..=j has midrank (i + 1 + j) / 2.
    let mut twice_rank_sum: u128 = 0;
    let mut i = 0;
    while i < idx.len() {
        let mut j = i + 1;
        // -0.0 and 0.0 compare unequal under total_cmp but are the same score.
        while j < idx.len() && scores[idx[j]] == scores[idx[i]] {
            j += 1;
        }
        let pos_in_group = idx[i..j].iter().filter(|&&k| labels[k]).count() as u128;
        twice_rank_sum += pos_in_group * (i as u128 + 1 + j as u128);
        i = j;
    }
    let (p, n) = (n_pos as u128, n_neg as u128);
    // U = R+ - p(p+1)/2, so 2U = 2R+ - p(p+1); exact in integers.
    let twice_u = twice_rank_sum - p * (p + 1);
    Some(twice_u as f64 / (2 * p * n) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_cases() {
        assert_eq!(roc_auc(&[0.1, 0.9], &[false, true]), Some(1.0));
        assert_eq!(roc_auc(&[0.9, 0.1], &[false, true]), Some(0.0));
        assert_eq!(roc_auc(&[0.5, 0.5], &[false, true]), Some(0.5));
        // sklearn: roc_auc_score([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == 0.75
        assert_eq!(
            roc_auc(&[0.1, 0.4, 0.35, 0.8], &[false, false, true, true]),
            Some(0.75)
        );
        assert_eq!(roc_auc(&[0.1, 0.2], &[true, true]), None);
        assert_eq!(roc_auc(&[], &[]), None);
        assert_eq!(roc_auc(&[f64::NAN, 0.2], &[true, false]), None);
        assert_eq!(roc_auc(&[-0.0, 0.0], &[true, false]), Some(0.5));
    }
}
