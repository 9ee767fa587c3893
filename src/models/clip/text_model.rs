//! `ClipTextModel` (transformers' `CLIPTextModel`): token + position embeddings,
//! pre-LN encoder layers under a causal mask, the final LayerNorm, and the
//! pooled end-of-text row.

use super::config::ClipTextConfig;
use super::encoder::ClipEncoderLayer;
use crate::error::Result;
use crate::models::{Init, Weights};
use crate::nn::{prefixed, Embedding, LayerNorm, Module};
use crate::ops::attention::AttentionMask;
use crate::tensor::{DType, Tensor};
use crate::{bail, ensure};

pub struct ClipTextModel {
    config: ClipTextConfig,
    /// `text_model` when the checkpoint's names carry it (transformers 4 saves,
    /// every SD checkpoint), empty for transformers 5's bare names.
    root: String,
    token_embedding: Embedding,
    position_embedding: Embedding,
    layers: Vec<ClipEncoderLayer>,
    final_layer_norm: LayerNorm,
}

/// What the text encoder returns for a batch of ids [B, L].
pub struct ClipTextOutput {
    /// [B, L, D]: the last layer's output after `final_layer_norm` (SD's
    /// `encoder_hidden_states`).
    pub last_hidden_state: Tensor,
    /// [B, L, D]: the input of the last layer, without the final LayerNorm
    /// (transformers' `hidden_states[-2]`; `clip_skip = 1`).
    pub penultimate: Tensor,
    /// [B, D]: the row of `last_hidden_state` at each sequence's end-of-text token.
    pub pooled: Tensor,
    /// The embeddings, then each layer's output (transformers' `hidden_states`).
    pub hidden_states: Vec<Tensor>,
}

impl ClipTextModel {
    /// Builds the model from `w` (transformers' names, with or without the
    /// `text_model.` prefix). A file's `embeddings.position_ids` buffer is read
    /// and ignored, as transformers 5 does (positions are always 0..L); any other
    /// tensor the config does not account for is an error.
    pub fn load(cfg: &ClipTextConfig, w: &Weights) -> Result<ClipTextModel> {
        let bare = !w.contains("text_model.embeddings.token_embedding.weight")
            && w.contains("embeddings.token_embedding.weight");
        let root = if bare { "" } else { "text_model" };
        let t = if bare { w.clone() } else { w.pp(root) };
        let (d, e) = (cfg.hidden_size, t.pp("embeddings"));
        let token_embedding = e.embedding("token_embedding", cfg.vocab_size, d)?;
        let position_embedding =
            e.embedding("position_embedding", cfg.max_position_embeddings, d)?;
        if e.contains("position_ids") {
            let shape = [1, cfg.max_position_embeddings];
            let get = |dt| e.with_dtype(dt).get("position_ids", &shape, Init::Zeros);
            get(DType::I64).or_else(|_| get(DType::F32))?;
        }
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| ClipEncoderLayer::load(cfg, &t.pp("encoder.layers").pp(i)))
            .collect::<Result<Vec<_>>>()?;
        let final_layer_norm = t.layer_norm("final_layer_norm", d, cfg.layer_norm_eps)?;
        w.ensure_all_used("CLIP text model")?;
        Ok(ClipTextModel {
            config: cfg.clone(),
            root: root.to_string(),
            token_embedding,
            position_embedding,
            layers,
            final_layer_norm,
        })
    }

    pub fn config(&self) -> &ClipTextConfig {
        &self.config
    }

    /// Encodes `input_ids` [B, L] (integer, L <= max_position_embeddings). Attention
    /// is causal; `attention_mask` [B, L] (non-zero = real token) also hides padded
    /// keys. SD pipelines pass no mask.
    pub fn forward(
        &self,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
    ) -> Result<ClipTextOutput> {
        let &[b, l] = input_ids.shape() else {
            bail!(
                "CLIP text model: input_ids must be [B, L], got {:?}",
                input_ids.shape()
            )
        };
        let max = self.config.max_position_embeddings;
        ensure!(
            l > 0 && l <= max,
            "CLIP text model: sequence length {l} is outside 1..={max} (max_position_embeddings)"
        );
        let mut mask = AttentionMask::causal();
        if let Some(m) = attention_mask {
            ensure!(
                m.shape() == [b, l],
                "CLIP text model: attention_mask {:?} does not match input_ids {:?}",
                m.shape(),
                input_ids.shape()
            );
            mask = mask.with_key_padding(m);
        }
        let positions = Tensor::from_i64((0..l as i64).collect(), &[1, l])?;
        let x = self
            .token_embedding
            .forward(input_ids)?
            .add(&self.position_embedding.forward(&positions)?)?;
        let mut hidden_states = vec![x];
        for layer in &self.layers {
            let h = layer.forward(hidden_states.last().unwrap(), mask)?;
            hidden_states.push(h);
        }
        let last_hidden_state = self
            .final_layer_norm
            .forward(hidden_states.last().unwrap())?;
        let pooled = self.pool(&last_hidden_state, input_ids)?;
        Ok(ClipTextOutput {
            penultimate: hidden_states[hidden_states.len() - 2].clone(),
            last_hidden_state,
            pooled,
            hidden_states,
        })
    }

    /// diffusers' `clip_skip`: `final_layer_norm(hidden_states[-(clip_skip + 1)])`
    /// (0 gives `last_hidden_state`).
    pub fn clip_skip(&self, out: &ClipTextOutput, clip_skip: usize) -> Result<Tensor> {
        let n = out.hidden_states.len();
        ensure!(
            clip_skip < n,
            "clip_skip {clip_skip} is more than the {} layers of the text encoder",
            n - 1
        );
        self.final_layer_norm
            .forward(&out.hidden_states[n - 1 - clip_skip])
    }

    /// Rows at each sequence's end-of-text token. transformers' rule: configs with
    /// the legacy `eos_token_id == 2` take the largest id's position, others the
    /// first `eos_token_id` (position 0 when there is none).
    fn pool(&self, last: &Tensor, input_ids: &Tensor) -> Result<Tensor> {
        let (b, l, d) = (last.shape()[0], last.shape()[1], last.shape()[2]);
        let ids = input_ids.to_vec_i64();
        let eos = self.config.eos_token_id;
        let rows = ids
            .chunks(l)
            .enumerate()
            .map(|(i, row)| {
                let at = if eos == 2 {
                    // First index of the maximum, as torch.argmax.
                    let max = *row.iter().max().unwrap();
                    row.iter().position(|&t| t == max).unwrap()
                } else {
                    row.iter().position(|&t| t == eos).unwrap_or(0)
                };
                last.narrow(0, i, 1)?.narrow(1, at, 1)
            })
            .collect::<Result<Vec<_>>>()?;
        let refs: Vec<&Tensor> = rows.iter().collect();
        Tensor::cat(&refs, 0)?.reshape(&[b, d])
    }

    /// Every parameter under the checkpoint's names.
    pub fn parameters(&self) -> Vec<(String, Tensor)> {
        let mut p = prefixed(
            "embeddings.token_embedding",
            self.token_embedding.parameters(),
        );
        p.extend(prefixed(
            "embeddings.position_embedding",
            self.position_embedding.parameters(),
        ));
        for (i, layer) in self.layers.iter().enumerate() {
            p.extend(prefixed(&format!("encoder.layers.{i}"), layer.parameters()));
        }
        p.extend(prefixed(
            "final_layer_norm",
            self.final_layer_norm.parameters(),
        ));
        match self.root.as_str() {
            "" => p,
            root => prefixed(root, p),
        }
    }
}
