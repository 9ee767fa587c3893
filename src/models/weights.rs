//! `Weights`: where a model's parameters come from while it is being built —
//! a safetensors set (by PyTorch/diffusers names, converted to the model's dtype)
//! or a fresh PyTorch-default initialisation — and the layer constructors on top.

use crate::error::{Error, Result};
use crate::io::TensorSet;
use crate::nn::{init, BatchNorm2d, Conv2d, Conv2dConfig, Embedding, GroupNorm, LayerNorm, Linear};
use crate::tensor::{DType, Philox, Tensor};
use std::cell::RefCell;
use std::collections::BTreeSet;
use std::rc::Rc;

enum Source<'a> {
    Set(&'a TensorSet),
    Random(RefCell<Philox>),
}

struct Shared<'a> {
    source: Source<'a>,
    used: RefCell<BTreeSet<String>>,
}

/// A cursor into a weight source at a name prefix (`pp` descends one level).
/// Tensors from a file are not trainable until the model is `unfreeze`d;
/// freshly initialised ones are.
#[derive(Clone)]
pub struct Weights<'a> {
    shared: Rc<Shared<'a>>,
    prefix: String,
    dtype: DType,
}

/// How a fresh parameter is initialised (PyTorch's defaults per layer type).
#[derive(Clone, Copy, Debug)]
pub enum Init {
    /// nn.Linear / nn.Conv2d weight: U(±1/√fan_in).
    Default,
    /// nn.Linear / nn.Conv2d bias for a weight with this fan-in: U(±1/√fan_in).
    BiasFor(usize),
    Zeros,
    Ones,
    Normal(f64),
}

impl<'a> Weights<'a> {
    /// Parameters read from `set`, converted to `dtype`.
    pub fn from_set(set: &'a TensorSet, dtype: DType) -> Weights<'a> {
        Self::with_source(Source::Set(set), dtype)
    }

    /// Fresh parameters with PyTorch's default initialisation, drawn from `seed`.
    pub fn random(seed: u64, dtype: DType) -> Weights<'static> {
        Weights::with_source(Source::Random(RefCell::new(Philox::new(seed))), dtype)
    }

    fn with_source(source: Source<'a>, dtype: DType) -> Weights<'a> {
        Weights {
            shared: Rc::new(Shared {
                source,
                used: RefCell::new(BTreeSet::new()),
            }),
            prefix: String::new(),
            dtype,
        }
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The same source with another parameter dtype (e.g. f32 norms in a bf16 model).
    pub fn with_dtype(&self, dtype: DType) -> Weights<'a> {
        Weights {
            dtype,
            ..self.clone()
        }
    }

    /// Descend into a child module: `w.pp("down_blocks").pp(0)`.
    pub fn pp(&self, name: impl std::fmt::Display) -> Weights<'a> {
        Weights {
            shared: self.shared.clone(),
            prefix: self.full_name(&name.to_string()),
            dtype: self.dtype,
        }
    }

    /// The full name a tensor `name` gets under this prefix.
    pub fn full_name(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.prefix)
        }
    }

    /// The file (or folder) the weights are read from, if any.
    pub fn source_name(&self) -> Option<String> {
        match &self.shared.source {
            Source::Set(s) => Some(s.path().display().to_string()),
            Source::Random(_) => None,
        }
    }

    /// Whether the source holds `name` (for optional tensors); always false for
    /// a random source, so optional parts are only built when asked for.
    pub fn contains(&self, name: &str) -> bool {
        match &self.shared.source {
            Source::Set(s) => s.contains(&self.full_name(name)),
            Source::Random(_) => false,
        }
    }

    /// The tensor `name` with exactly `shape`, in this cursor's dtype.
    pub fn get(&self, name: &str, shape: &[usize], how: Init) -> Result<Tensor> {
        let full = self.full_name(name);
        let t = match &self.shared.source {
            Source::Set(set) => {
                let t = set.load_expect(&full, shape, self.dtype)?;
                t.set_requires_grad(false)?;
                t
            }
            Source::Random(rng) => {
                let rng = &mut *rng.borrow_mut();
                match how {
                    Init::Default => init::kaiming_uniform(rng, shape, 5f64.sqrt(), self.dtype)?,
                    Init::BiasFor(fan_in) => {
                        init::uniform(rng, shape, 1.0 / (fan_in.max(1) as f64).sqrt(), self.dtype)?
                    }
                    Init::Zeros => Tensor::zeros(shape, self.dtype)?.into_param()?,
                    Init::Ones => Tensor::ones(shape, self.dtype)?.into_param()?,
                    Init::Normal(std) => init::normal(rng, shape, std, self.dtype)?,
                }
            }
        };
        self.shared.used.borrow_mut().insert(full);
        Ok(t)
    }

    /// Names in the source that no `get` has read (after building a model: weights
    /// the config did not account for, usually a config/weights mismatch).
    pub fn unused(&self) -> Vec<String> {
        match &self.shared.source {
            Source::Set(set) => {
                let used = self.shared.used.borrow();
                set.names()
                    .iter()
                    .filter(|n| !used.contains(*n))
                    .cloned()
                    .collect()
            }
            Source::Random(_) => Vec::new(),
        }
    }

    /// Fails when the source holds tensors the model did not read, naming a few.
    pub fn ensure_all_used(&self, what: &str) -> Result<()> {
        let unused = self.unused();
        if unused.is_empty() {
            return Ok(());
        }
        let shown: Vec<&str> = unused.iter().take(5).map(String::as_str).collect();
        Err(Error::msg(format!(
            "{}: {} tensors are not used by the {what} built from its config (e.g. {}); the config does not describe these weights",
            self.source_name().unwrap_or_default(),
            unused.len(),
            shown.join(", ")
        )))
    }

    /// nn.Linear(in, out, bias) at this prefix.
    pub fn linear(&self, name: &str, inp: usize, out: usize, bias: bool) -> Result<Linear> {
        let w = self.pp(name);
        let weight = w.get("weight", &[out, inp], Init::Default)?;
        let bias = bias
            .then(|| w.get("bias", &[out], Init::BiasFor(inp)))
            .transpose()?;
        Linear::from_weights(weight, bias)
    }

    /// nn.Conv2d(inp, out, k, stride, padding) (square kernel, with bias).
    pub fn conv2d(
        &self,
        name: &str,
        inp: usize,
        out: usize,
        k: usize,
        stride: usize,
        padding: usize,
    ) -> Result<Conv2d> {
        let config = Conv2dConfig {
            stride: (stride, stride),
            padding: (padding, padding),
            ..Conv2dConfig::default()
        };
        self.conv2d_with(name, inp, out, (k, k), config)
    }

    /// nn.Conv2d with a full geometry.
    pub fn conv2d_with(
        &self,
        name: &str,
        inp: usize,
        out: usize,
        k: (usize, usize),
        config: Conv2dConfig,
    ) -> Result<Conv2d> {
        let w = self.pp(name);
        let shape = [out, inp / config.groups.max(1), k.0, k.1];
        let weight = w.get("weight", &shape, Init::Default)?;
        let fan_in = shape[1] * k.0 * k.1;
        let bias = config
            .bias
            .then(|| w.get("bias", &[out], Init::BiasFor(fan_in)))
            .transpose()?;
        Conv2d::from_weights(weight, bias, config)
    }

    /// nn.GroupNorm(groups, channels, eps) (affine).
    pub fn group_norm(
        &self,
        name: &str,
        groups: usize,
        channels: usize,
        eps: f64,
    ) -> Result<GroupNorm> {
        let w = self.pp(name);
        let gn = GroupNorm::new(groups, channels, eps, self.dtype)?;
        Ok(GroupNorm {
            weight: w.get("weight", &[channels], Init::Ones)?,
            bias: w.get("bias", &[channels], Init::Zeros)?,
            ..gn
        })
    }

    /// nn.LayerNorm(dim, eps) (affine).
    pub fn layer_norm(&self, name: &str, dim: usize, eps: f64) -> Result<LayerNorm> {
        let w = self.pp(name);
        let weight = w.get("weight", &[dim], Init::Ones)?;
        let bias = w.get("bias", &[dim], Init::Zeros)?;
        LayerNorm::from_weights(Some(weight), Some(bias), &[dim], eps)
    }

    /// nn.BatchNorm2d(channels, eps, momentum) (affine, tracking running stats), in
    /// training mode. Weight/bias come from the source (fresh: 1 and 0, trainable).
    /// From a file, running_mean/running_var are read in the compute dtype (f32 for
    /// half models, like PyTorch's buffers) and num_batches_tracked as i64; a file
    /// without num_batches_tracked (pre-0.4 PyTorch) starts it at 0, as PyTorch's
    /// loader does. Fresh: running mean 0, variance 1, count 0.
    pub fn batch_norm2d(
        &self,
        name: &str,
        channels: usize,
        eps: f64,
        momentum: f64,
    ) -> Result<BatchNorm2d> {
        let w = self.pp(name);
        let mut bn = BatchNorm2d::new(channels, eps, momentum, self.dtype)?;
        bn.weight = w.get("weight", &[channels], Init::Ones)?;
        bn.bias = w.get("bias", &[channels], Init::Zeros)?;
        if let Source::Set(_) = &self.shared.source {
            let stats = w.with_dtype(self.dtype.compute());
            bn.running_mean = stats.get("running_mean", &[channels], Init::Zeros)?;
            bn.running_var = stats.get("running_var", &[channels], Init::Ones)?;
            if w.contains("num_batches_tracked") {
                bn.num_batches_tracked =
                    w.with_dtype(DType::I64)
                        .get("num_batches_tracked", &[], Init::Zeros)?;
            }
        }
        Ok(bn)
    }

    /// nn.Embedding(n, dim) (fresh: N(0, 1), as PyTorch).
    pub fn embedding(&self, name: &str, n: usize, dim: usize) -> Result<Embedding> {
        let weight = self.pp(name).get("weight", &[n, dim], Init::Normal(1.0))?;
        Embedding::from_weights(weight)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::Module;

    #[test]
    fn random_weights_have_pytorch_names_and_shapes() {
        let w = Weights::random(3, DType::F32);
        let lin = w.pp("block").pp(0).linear("proj", 4, 6, true).unwrap();
        assert_eq!(lin.weight.shape(), [6, 4]);
        assert!(lin.weight.requires_grad());
        let bound = 0.5f32;
        assert!(lin.weight.to_vec_f32().iter().all(|x| x.abs() <= bound));
        assert_eq!(w.pp("a").full_name("b"), "a.b");
        let gn = w.group_norm("norm", 2, 4, 1e-5).unwrap();
        assert_eq!(gn.weight.to_vec_f32(), vec![1.0; 4]);
        assert_eq!(lin.parameters().len(), 2);
        assert!(w.unused().is_empty());
    }

    #[test]
    fn file_weights_report_missing_misshaped_and_unused() {
        let dir = std::env::temp_dir().join(format!("medsyn-weights-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("w.safetensors");
        let a = Tensor::from_vec(vec![1f32, 2., 3., 4., 5., 6.], &[3, 2]).unwrap();
        let b = Tensor::from_vec(vec![0.5f32; 3], &[3]).unwrap();
        let extra = Tensor::from_vec(vec![0f32], &[1]).unwrap();
        crate::io::save_safetensors(
            &path,
            &[("l.weight", &a), ("l.bias", &b), ("extra", &extra)],
            None,
        )
        .unwrap();
        let set = TensorSet::open(&path).unwrap();
        let w = Weights::from_set(&set, DType::BF16);
        let lin = w.linear("l", 2, 3, true).unwrap();
        assert_eq!(lin.weight.dtype(), DType::BF16);
        assert!(!lin.weight.requires_grad());
        let e = w.ensure_all_used("test model").unwrap_err().to_string();
        assert!(e.contains("extra") && e.contains("w.safetensors"), "{e}");
        let e = w.linear("l", 3, 3, true).err().unwrap().to_string();
        assert!(e.contains("l.weight"), "{e}");
        let e = w.linear("missing", 2, 3, false).err().unwrap().to_string();
        assert!(e.contains("missing.weight"), "{e}");
        std::fs::remove_dir_all(&dir).ok();
    }
}
