//! Shared test helpers: fixtures written by scripts/fixtures/*.py, closeness
//! checks with dtype-fit tolerances, poisoned buffers, and gradient checks.
#![allow(dead_code)]

use medsyn::autograd::gradcheck::check_gradients;
use medsyn::tensor::Philox;
use medsyn::{DType, Result, Tensor};
use std::collections::HashMap;
use std::path::PathBuf;

/// All tensors of `tests/fixtures/<name>.safetensors`, read with the safetensors
/// crate directly (independent of medsyn's own loader).
pub struct Fixture {
    pub name: String,
    tensors: HashMap<String, (Vec<usize>, Vec<f64>, DType)>,
}

impl Fixture {
    pub fn load(name: &str) -> Fixture {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(format!("{name}.safetensors"));
        let bytes = std::fs::read(&path).unwrap_or_else(|e| {
            panic!("{}: {e} (run scripts/fixtures/make_all.py)", path.display())
        });
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let mut tensors = HashMap::new();
        for (k, v) in st.tensors() {
            let d = v.data();
            let (vals, dtype): (Vec<f64>, DType) = match v.dtype() {
                safetensors::Dtype::F64 => (
                    d.chunks(8)
                        .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
                        .collect(),
                    DType::F64,
                ),
                safetensors::Dtype::F32 => (
                    d.chunks(4)
                        .map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64)
                        .collect(),
                    DType::F32,
                ),
                safetensors::Dtype::BF16 => (
                    d.chunks(2)
                        .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f64())
                        .collect(),
                    DType::BF16,
                ),
                safetensors::Dtype::F16 => (
                    d.chunks(2)
                        .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f64())
                        .collect(),
                    DType::F16,
                ),
                safetensors::Dtype::I64 => (
                    d.chunks(8)
                        .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f64)
                        .collect(),
                    DType::I64,
                ),
                other => panic!("fixture dtype {other:?} not handled"),
            };
            tensors.insert(k.to_string(), (v.shape().to_vec(), vals, dtype));
        }
        Fixture {
            name: name.to_string(),
            tensors,
        }
    }

    pub fn has(&self, key: &str) -> bool {
        self.tensors.contains_key(key)
    }

    /// The fixture tensor `key` in its stored dtype.
    pub fn get(&self, key: &str) -> Tensor {
        let (shape, vals, dtype) = self
            .tensors
            .get(key)
            .unwrap_or_else(|| panic!("fixture {} has no tensor `{key}`", self.name));
        if *dtype == DType::I64 {
            return Tensor::from_i64(vals.iter().map(|&v| v as i64).collect(), shape).unwrap();
        }
        Tensor::from_values(vals.clone(), shape, *dtype).unwrap()
    }

    /// The fixture tensor `key` converted to `dtype`, as a trainable leaf.
    pub fn param(&self, key: &str, dtype: DType) -> Tensor {
        self.get(key).to_dtype(dtype).unwrap().into_param().unwrap()
    }

    pub fn scalar(&self, key: &str) -> f64 {
        self.tensors[key].1[0]
    }
}

/// Relative tolerance that fits a dtype's precision.
pub fn tol(dtype: DType) -> f64 {
    match dtype {
        DType::F64 => 1e-10,
        DType::F32 => 1e-5,
        DType::F16 => 5e-3,
        DType::BF16 => 2e-2,
        _ => 0.0,
    }
}

/// Assert |a - e| <= rtol · (|e| + 0.1·max|e|) elementwise: relative error, with a
/// floor at a tenth of the reference's largest magnitude so that entries that
/// cancel to near zero are judged against the tensor's scale.
pub fn assert_close(actual: &Tensor, expected: &Tensor, rtol: f64, what: &str) {
    assert_eq!(actual.shape(), expected.shape(), "{what}: shape");
    let a = actual.to_vec_f64();
    let e = expected.to_vec_f64();
    let scale = e.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(1e-12);
    let mut worst = (0.0, 0);
    for (i, (x, y)) in a.iter().zip(&e).enumerate() {
        assert!(
            x.is_finite() == y.is_finite(),
            "{what}: element {i}: {x} vs {y}"
        );
        let err = (x - y).abs() / (y.abs() + 0.1 * scale);
        if err > worst.0 || err.is_nan() {
            worst = (err, i);
        }
    }
    assert!(
        worst.0 <= rtol,
        "{what}: max relative error {:.3e} > {rtol:.1e} at element {} ({} vs {})",
        worst.0,
        worst.1,
        a[worst.1],
        e[worst.1]
    );
}

/// Random f64 leaf with values in [-1, 1] (or shifted for domain-restricted ops).
pub fn rand_leaf(rng: &mut Philox, shape: &[usize]) -> Tensor {
    Tensor::rand_uniform(rng, -1.0, 1.0, shape, DType::F64)
        .unwrap()
        .into_param()
        .unwrap()
}

/// Assert autograd matches f64 central finite differences.
pub fn assert_gradcheck(name: &str, f: impl Fn(&[Tensor]) -> Result<Tensor>, inputs: &[Tensor]) {
    let r = check_gradients(f, inputs, 1e-6).unwrap();
    assert!(
        r.max_error < 1e-6,
        "{name}: gradcheck error {:.3e} at input {} element {}",
        r.max_error,
        r.worst_input,
        r.worst_index
    );
}

/// Run `f` on fixture inputs cast to `dtype` (as trainable leaves), compare the
/// output with `out` and the gradients of sum(out·w) with `grads` (one key per
/// input, "" to skip), at the tolerance of `dtype` scaled by `slack`.
#[allow(clippy::too_many_arguments)]
pub fn check_op(
    fx: &Fixture,
    dtype: DType,
    inputs: &[&str],
    f: impl Fn(&[Tensor]) -> Result<Tensor>,
    out: &str,
    w: &str,
    grads: &[&str],
    slack: f64,
) {
    let xs: Vec<Tensor> = inputs.iter().map(|k| fx.param(k, dtype)).collect();
    let y = f(&xs).unwrap_or_else(|e| panic!("{out}: {e}"));
    assert_eq!(y.dtype(), dtype, "{out}: output dtype");
    let rtol = tol(dtype) * slack;
    assert_close(&y, &fx.get(out), rtol, &format!("{out} ({dtype})"));
    y.mul(&fx.get(w).to_dtype(dtype).unwrap())
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    for (x, key) in xs.iter().zip(grads) {
        if key.is_empty() {
            continue;
        }
        let g = x.grad().unwrap_or_else(|| panic!("{key}: no gradient"));
        assert_close(&g, &fx.get(key), rtol, &format!("{key} ({dtype})"));
    }
}

/// max|actual − expected| <= rtol · max(max|expected|, floor): the error measured
/// against the reference's scale, so entries that cancel to near zero do not
/// dominate (used where rounding accumulates through a chain, as in bf16). The
/// floor covers references that are (mathematically) zero. NaN always fails.
pub fn assert_scaled(actual: &Tensor, expected: &Tensor, rtol: f64, floor: f64, what: &str) {
    assert_eq!(actual.shape(), expected.shape(), "{what}: shape");
    let (a, e) = (actual.to_vec_f64(), expected.to_vec_f64());
    let scale = e.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(floor);
    let (mut worst, mut at) = (0.0f64, 0);
    for (i, (x, y)) in a.iter().zip(&e).enumerate() {
        let err = (x - y).abs() / scale;
        if err.is_nan() || err > worst {
            (worst, at) = (err, i);
        }
    }
    assert!(
        worst <= rtol,
        "{what}: error {worst:.2e} of scale {scale:.3e} > {rtol:.0e} at {at} ({} vs {})",
        a[at],
        e[at]
    );
}
