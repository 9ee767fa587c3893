//! `BertModel` (transformers' `BertModel`): embeddings, post-LN encoder layers
//! under a key-padding mask, and the optional tanh pooler over the first token.
//! Loads bare `BertModel` checkpoints and `bert.`-prefixed ones (`BertForPreTraining`,
//! e.g. Bio_ClinicalBERT) whose `cls.*` pre-training heads are skipped.

use super::config::BertConfig;
use super::embeddings::BertEmbeddings;
use super::layer::BertLayer;
use crate::error::{Error, Result};
use crate::io::TensorSet;
use crate::models::Weights;
use crate::nn::{prefixed, Linear, Module};
use crate::ops::attention::AttentionMask;
use crate::tensor::{DType, Philox, Tensor};
use crate::{bail, ensure};
use std::path::Path;

pub struct BertModel {
    config: BertConfig,
    embeddings: BertEmbeddings,
    layers: Vec<BertLayer>,
    /// `pooler.dense` (followed by tanh), absent for checkpoints without a pooler.
    pooler: Option<Linear>,
}

/// What the encoder returns for a batch of ids [N, L].
pub struct BertOutput {
    /// [N, L, H]: the last layer's output (rows at padded positions are computed
    /// too, as in transformers; callers mask them).
    pub last_hidden_state: Tensor,
    /// [N, H]: tanh(dense(last_hidden_state[:, 0])), when the model has a pooler.
    pub pooler_output: Option<Tensor>,
    /// The embeddings, then each layer's output (transformers' `hidden_states`);
    /// empty unless asked for in [`BertForwardOptions`].
    pub hidden_states: Vec<Tensor>,
    /// [N, H, L]: the last layer's attention probabilities of the first ([CLS])
    /// query over all keys, padded keys 0 (transformers' `attentions[-1][:, :, 0]`,
    /// which MGCA averages over heads to weight words); when asked for.
    pub cls_attention: Option<Tensor>,
}

/// Extra outputs of [`BertModel::forward_with`] (both off in `forward`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BertForwardOptions {
    /// Keep every layer's output (GLoRIA-style encoders aggregate the last few).
    pub hidden_states: bool,
    /// Return the last layer's [CLS] attention row.
    pub cls_attention: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Pooler {
    /// Built when the checkpoint has one (always for fresh weights).
    IfPresent,
    /// Not built; a checkpoint's `pooler.*` tensors are ignored.
    Without,
}

impl BertModel {
    /// Builds the model from `w`. Names are transformers' `BertModel` ones, either
    /// bare (`embeddings.word_embeddings.weight`, as `BertModel.save_pretrained`
    /// writes) or under `bert.` (`BertForPreTraining` / `BertForMaskedLM`, as
    /// Bio_ClinicalBERT ships). TF-era `LayerNorm.gamma/beta` are read as
    /// `weight/bias`. Deliberately skipped: the pre-training heads `cls.*` (MLM
    /// transform/decoder, next-sentence classifier) and the `embeddings.position_ids`
    /// / `embeddings.token_type_ids` buffers older transformers saved; any other
    /// tensor the config does not account for is an error. The pooler is built
    /// when the checkpoint has `pooler.dense.*` (fresh weights: always).
    pub fn load(cfg: &BertConfig, w: &Weights) -> Result<BertModel> {
        Self::build(cfg, w, Pooler::IfPresent)
    }

    /// As [`load`](Self::load) without the pooler (`add_pooling_layer=False`);
    /// a checkpoint's `pooler.*` tensors are ignored.
    pub fn load_without_pooler(cfg: &BertConfig, w: &Weights) -> Result<BertModel> {
        Self::build(cfg, w, Pooler::Without)
    }

    /// Fresh trainable weights initialised as transformers' `BertPreTrainedModel`
    /// does: linear and embedding weights N(0, initializer_range), biases 0,
    /// LayerNorms 1/0, the padding row of the word embeddings 0.
    pub fn new_random(cfg: &BertConfig, seed: u64, dtype: DType) -> Result<BertModel> {
        let model = Self::load(cfg, &Weights::random(seed, dtype))?;
        let mut rng = Philox::new(seed ^ 0x6265_7274); // "bert"
        let std = cfg.initializer_range;
        for (name, p) in model.parameters() {
            let values = if name.contains("LayerNorm.weight") {
                Tensor::ones(p.shape(), DType::F64)?
            } else if name.ends_with(".bias") {
                Tensor::zeros(p.shape(), DType::F64)?
            } else {
                let mut v = Tensor::randn(&mut rng, p.shape(), DType::F64)?.scale(std)?;
                let pad = cfg.pad_token_id.and_then(|i| usize::try_from(i).ok());
                if let (true, Some(pad)) = (name == "embeddings.word_embeddings.weight", pad) {
                    let mut rows = v.to_vec_f64();
                    let d = p.shape()[1];
                    if pad < p.shape()[0] {
                        rows[pad * d..(pad + 1) * d].fill(0.0);
                    }
                    v = Tensor::from_vec(rows, p.shape())?;
                }
                v
            };
            p.set_data(&values)?;
        }
        Ok(model)
    }

    /// Loads a checkpoint folder: `config.json` plus `model.safetensors` (or a
    /// sharded index), weights converted to `dtype`.
    pub fn from_pretrained(dir: &Path, dtype: DType) -> Result<BertModel> {
        let cfg = BertConfig::load(dir.join("config.json"))?;
        let set = TensorSet::open(dir)?;
        Self::load(&cfg, &Weights::from_set(&set, dtype))
    }

    fn build(cfg: &BertConfig, w: &Weights, pooler: Pooler) -> Result<BertModel> {
        cfg.validate().map_err(Error::msg)?;
        let from_file = w.source_name().is_some();
        let nested = w.contains("bert.embeddings.word_embeddings.weight");
        if from_file && !nested && !w.contains("embeddings.word_embeddings.weight") {
            bail!(
                "{}: no BERT weights: expected `embeddings.word_embeddings.weight` (BertModel) or `bert.embeddings.word_embeddings.weight` (BertForPreTraining)",
                w.source_name().unwrap_or_default()
            );
        }
        let root = if nested { w.pp("bert") } else { w.clone() };
        let embeddings = BertEmbeddings::load(cfg, &root.pp("embeddings"))?;
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| BertLayer::load(cfg, &root.pp("encoder.layer").pp(i)))
            .collect::<Result<Vec<_>>>()?;
        let d = cfg.hidden_size;
        let pooler = match pooler {
            Pooler::IfPresent if !from_file || root.contains("pooler.dense.weight") => {
                Some(root.linear("pooler.dense", d, d, true)?)
            }
            _ => None,
        };
        let base = if nested { "bert." } else { "" };
        let skipped = |name: &str| {
            let inner = name.strip_prefix(base).unwrap_or(name);
            name.starts_with("cls.")
                || inner == "embeddings.position_ids"
                || inner == "embeddings.token_type_ids"
                || (pooler.is_none() && inner.starts_with("pooler."))
        };
        let unused: Vec<String> = w.unused().into_iter().filter(|n| !skipped(n)).collect();
        if !unused.is_empty() {
            let shown: Vec<&str> = unused.iter().take(5).map(String::as_str).collect();
            bail!(
                "{}: {} tensors are not used by the BERT model built from its config (e.g. {}); the config does not describe these weights",
                w.source_name().unwrap_or_default(),
                unused.len(),
                shown.join(", ")
            );
        }
        Ok(BertModel {
            config: cfg.clone(),
            embeddings,
            layers,
            pooler,
        })
    }

    pub fn config(&self) -> &BertConfig {
        &self.config
    }

    pub fn hidden_size(&self) -> usize {
        self.config.hidden_size
    }

    pub fn has_pooler(&self) -> bool {
        self.pooler.is_some()
    }

    /// Encodes `input_ids` [N, L] (i64 or i32, 0 <= id < vocab_size, 1 <= L <=
    /// max_position_embeddings). `attention_mask` [N, L] (any dtype, non-zero = real
    /// token) hides padded keys from every query; `token_type_ids` [N, L] default
    /// to 0. Dropout is not applied (eval-mode semantics).
    pub fn forward(
        &self,
        input_ids: &Tensor,
        attention_mask: &Tensor,
        token_type_ids: Option<&Tensor>,
    ) -> Result<BertOutput> {
        self.forward_with(
            input_ids,
            attention_mask,
            token_type_ids,
            BertForwardOptions::default(),
        )
    }

    /// As [`forward`](Self::forward), with the extra outputs `opts` asks for.
    pub fn forward_with(
        &self,
        input_ids: &Tensor,
        attention_mask: &Tensor,
        token_type_ids: Option<&Tensor>,
        opts: BertForwardOptions,
    ) -> Result<BertOutput> {
        self.check_inputs(input_ids, attention_mask, token_type_ids)?;
        let mask = AttentionMask::key_padding(attention_mask);
        let mut x = self.embeddings.forward(input_ids, token_type_ids)?;
        let cls_bias = match opts.cls_attention {
            true => Some(padding_bias(attention_mask, x.dtype())?),
            false => None,
        };
        let (mut hidden_states, mut cls_attention) = (Vec::new(), None);
        let last = self.layers.len() - 1;
        for (i, layer) in self.layers.iter().enumerate() {
            let bias = cls_bias.as_ref().filter(|_| i == last);
            let (next, probs) = layer.forward(&x, mask, bias)?;
            if opts.hidden_states {
                hidden_states.push(x);
            }
            (x, cls_attention) = (next, probs);
        }
        if opts.hidden_states {
            hidden_states.push(x.clone());
        }
        let pooler_output = match &self.pooler {
            Some(dense) => {
                let (n, d) = (x.shape()[0], x.shape()[2]);
                let first = x.narrow(1, 0, 1)?.reshape(&[n, d])?;
                Some(dense.forward(&first)?.tanh()?)
            }
            None => None,
        };
        Ok(BertOutput {
            last_hidden_state: x,
            pooler_output,
            hidden_states,
            cls_attention,
        })
    }

    fn check_inputs(&self, ids: &Tensor, mask: &Tensor, types: Option<&Tensor>) -> Result<()> {
        let &[n, l] = ids.shape() else {
            bail!("BERT: input_ids must be [N, L], got {:?}", ids.shape())
        };
        let integer = |t: &Tensor| matches!(t.dtype(), DType::I64 | DType::I32);
        ensure!(
            integer(ids),
            "BERT: input_ids must be i64 or i32, got {}",
            ids.dtype()
        );
        let max = self.config.max_position_embeddings;
        ensure!(
            l > 0 && l <= max,
            "BERT: sequence length {l} is outside 1..={max} (max_position_embeddings); truncate the text to at most {max} tokens"
        );
        ensure!(
            mask.shape() == [n, l],
            "BERT: attention_mask {:?} does not match input_ids {:?}",
            mask.shape(),
            ids.shape()
        );
        check_range(ids, self.config.vocab_size, "input_ids", "vocab_size")?;
        if let Some(t) = types {
            ensure!(
                t.shape() == [n, l],
                "BERT: token_type_ids {:?} does not match input_ids {:?}",
                t.shape(),
                ids.shape()
            );
            ensure!(
                integer(t),
                "BERT: token_type_ids must be i64 or i32, got {}",
                t.dtype()
            );
            check_range(
                t,
                self.config.type_vocab_size,
                "token_type_ids",
                "type_vocab_size",
            )?;
        }
        Ok(())
    }

    /// Stop training: no gradient is computed or kept for any parameter.
    pub fn freeze(&self) -> Result<()> {
        self.parameters()
            .iter()
            .try_for_each(|(_, p)| p.set_requires_grad(false))
    }

    /// Train every parameter (weights loaded from a file start frozen).
    pub fn unfreeze(&self) -> Result<()> {
        self.parameters()
            .iter()
            .try_for_each(|(_, p)| p.set_requires_grad(true))
    }

    /// Every parameter under transformers' `BertModel` names (no `bert.` prefix,
    /// `LayerNorm.weight/bias` also for checkpoints that stored gamma/beta).
    pub fn parameters(&self) -> Vec<(String, Tensor)> {
        let mut p = prefixed("embeddings", self.embeddings.parameters());
        for (i, layer) in self.layers.iter().enumerate() {
            p.extend(prefixed(&format!("encoder.layer.{i}"), layer.parameters()));
        }
        if let Some(pooler) = &self.pooler {
            p.extend(prefixed("pooler.dense", pooler.parameters()));
        }
        p
    }
}

/// [N, 1, 1, L]: 0 where `mask` keeps the key, a large negative number where it
/// hides it (transformers adds the dtype's minimum; -1e30 saturates the same way).
fn padding_bias(mask: &Tensor, dtype: DType) -> Result<Tensor> {
    let (n, l) = (mask.shape()[0], mask.shape()[1]);
    let vals = mask
        .to_vec_f64()
        .iter()
        .map(|&m| if m != 0.0 { 0.0 } else { -1e30 })
        .collect();
    Tensor::from_values(vals, &[n, 1, 1, l], dtype)
}

/// Every entry of the integer tensor `t` must lie in 0..n.
fn check_range(t: &Tensor, n: usize, what: &str, key: &str) -> Result<()> {
    let l = t.shape()[1];
    if let Some((i, &v)) = t
        .to_vec_i64()
        .iter()
        .enumerate()
        .find(|(_, &v)| v < 0 || v as u64 >= n as u64)
    {
        bail!(
            "BERT: {what}[{}, {}] = {v} is outside 0..{n} ({key}); the tokenizer does not match the model",
            i / l,
            i % l
        );
    }
    Ok(())
}
