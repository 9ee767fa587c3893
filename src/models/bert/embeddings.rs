//! `BertEmbeddings`: word + token-type + absolute position embeddings, then
//! LayerNorm; and the LayerNorm loader that also reads TF-era `gamma`/`beta` names.

use super::config::BertConfig;
use crate::error::Result;
use crate::models::{Init, Weights};
use crate::nn::{prefixed, Embedding, LayerNorm, Module};
use crate::tensor::Tensor;

/// nn.LayerNorm(dim) under `name`: `weight`/`bias`, or `gamma`/`beta` as
/// checkpoints converted from TensorFlow store them (transformers renames these on
/// load: its "legacy" conversion). Either way the model reports `weight`/`bias`.
pub(crate) fn layer_norm(w: &Weights, name: &str, dim: usize, eps: f64) -> Result<LayerNorm> {
    let ln = w.pp(name);
    if ln.contains("gamma") || ln.contains("beta") {
        let weight = ln.get("gamma", &[dim], Init::Ones)?;
        let bias = ln.get("beta", &[dim], Init::Zeros)?;
        return LayerNorm::from_weights(Some(weight), Some(bias), &[dim], eps);
    }
    w.layer_norm(name, dim, eps)
}

pub(crate) struct BertEmbeddings {
    word_embeddings: Embedding,
    /// nn.Embedding's `padding_idx`: this row gets no gradient.
    padding_idx: Option<i64>,
    position_embeddings: Embedding,
    token_type_embeddings: Embedding,
    layer_norm: LayerNorm,
}

impl BertEmbeddings {
    pub fn load(cfg: &BertConfig, w: &Weights) -> Result<Self> {
        let d = cfg.hidden_size;
        Ok(BertEmbeddings {
            word_embeddings: w.embedding("word_embeddings", cfg.vocab_size, d)?,
            padding_idx: cfg.pad_token_id,
            position_embeddings: w.embedding(
                "position_embeddings",
                cfg.max_position_embeddings,
                d,
            )?,
            token_type_embeddings: w.embedding("token_type_embeddings", cfg.type_vocab_size, d)?,
            layer_norm: layer_norm(w, "LayerNorm", d, cfg.layer_norm_eps)?,
        })
    }

    /// ids [N, L] (checked by the caller) → [N, L, D]. Positions are 0..L; without
    /// `token_type_ids` every token has type 0 (transformers' default buffer).
    pub fn forward(&self, input_ids: &Tensor, token_type_ids: Option<&Tensor>) -> Result<Tensor> {
        let l = input_ids.shape()[1];
        let words = self.words(input_ids)?;
        let types = match token_type_ids {
            Some(t) => self.token_type_embeddings.forward(t)?,
            // Row 0 broadcast over [N, L]: same values and gradient, no gather.
            None => self.token_type_embeddings.weight.narrow(0, 0, 1)?,
        };
        let positions = self.position_embeddings.weight.narrow(0, 0, l)?; // [L, D]
        let x = words.add(&types)?.add(&positions)?;
        self.layer_norm.forward(&x)
    }

    /// Word embeddings with PyTorch's `padding_idx` semantics: rows looked up for
    /// the padding id are taken detached from the graph, so that row's gradient stays
    /// zero (the values are the same; the split only happens when the table is
    /// trained and the batch holds the padding id).
    fn words(&self, ids: &Tensor) -> Result<Tensor> {
        let table = &self.word_embeddings.weight;
        let looked_up = self.word_embeddings.forward(ids)?;
        let Some(pad) = self.padding_idx else {
            return Ok(looked_up);
        };
        if !table.requires_grad() || !crate::autograd::is_grad_enabled() {
            return Ok(looked_up);
        }
        let flags: Vec<f64> = ids
            .to_vec_i64()
            .iter()
            .map(|&i| (i != pad) as u8 as f64)
            .collect();
        if flags.iter().all(|&f| f == 1.0) {
            return Ok(looked_up);
        }
        let mut shape = ids.shape().to_vec();
        shape.push(1);
        let keep = Tensor::from_values(flags.clone(), &shape, table.dtype())?;
        let drop = Tensor::from_values(
            flags.iter().map(|f| 1.0 - f).collect(),
            &shape,
            table.dtype(),
        )?;
        let frozen = looked_up.detach().mul(&drop)?;
        looked_up.mul(&keep)?.add(&frozen)
    }

    pub fn parameters(&self) -> Vec<(String, Tensor)> {
        let mut p = prefixed("word_embeddings", self.word_embeddings.parameters());
        p.extend(prefixed(
            "position_embeddings",
            self.position_embeddings.parameters(),
        ));
        p.extend(prefixed(
            "token_type_embeddings",
            self.token_type_embeddings.parameters(),
        ));
        p.extend(prefixed("LayerNorm", self.layer_norm.parameters()));
        p
    }
}
