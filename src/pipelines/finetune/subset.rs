//! The label-efficiency protocol's training subsets: a fixed fraction of the
//! training rows (1 %, 10 %, 100 %), chosen by a seeded permutation so that a seed
//! always gives the same rows and smaller fractions are prefixes of larger ones.

use crate::ensure;
use crate::error::Result;
use crate::tensor::Philox;

/// Indices (into `0..n`) of the rows kept for `fraction` ∈ (0, 1]: the first
/// max(1, round(fraction·n)) of a permutation keyed by `seed`, in ascending order.
pub fn label_subset(n: usize, fraction: f64, seed: u64) -> Result<Vec<usize>> {
    ensure!(
        fraction > 0.0 && fraction <= 1.0,
        "--label-fraction must be in (0, 1], got {fraction}"
    );
    ensure!(n > 0, "no training rows to take a label fraction of");
    let keep = ((fraction * n as f64).round() as usize).clamp(1, n);
    let mut rows = Philox::new(seed ^ 0x5355_4253_4554).permutation(n);
    rows.truncate(keep);
    rows.sort_unstable();
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subsets_are_seeded_nested_and_sized() {
        let all = label_subset(1000, 1.0, 3).unwrap();
        assert_eq!(all, (0..1000).collect::<Vec<_>>());
        let ten = label_subset(1000, 0.1, 3).unwrap();
        let one = label_subset(1000, 0.01, 3).unwrap();
        assert_eq!((ten.len(), one.len()), (100, 10));
        assert!(one.iter().all(|r| ten.contains(r)), "1% ⊂ 10%");
        assert_eq!(ten, label_subset(1000, 0.1, 3).unwrap());
        assert_ne!(ten, label_subset(1000, 0.1, 4).unwrap());
        assert_eq!(
            label_subset(50, 0.01, 0).unwrap().len(),
            1,
            "at least one row"
        );
        assert!(label_subset(10, 0.0, 0).is_err());
        assert!(label_subset(10, 1.5, 0).is_err());
        assert!(label_subset(0, 0.5, 0).is_err());
    }
}
