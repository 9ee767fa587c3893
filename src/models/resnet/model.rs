//! `ResNet`: torchvision's ResNet (stem conv7x7/2 → BN → ReLU → maxpool 3x3/2 →
//! layer1..layer4 → global average pool → optional `fc`) under torchvision's
//! state-dict names, with the feature taps the pre-training methods need.

use super::block::{bn, conv, conv_bn, module_entries, Block};
use super::config::ResNetConfig;
use crate::error::{Error, Result};
use crate::models::Weights;
use crate::nn::{BatchNorm2d, Conv2d, Linear, Module};
use crate::tensor::{DType, Tensor};
use crate::{bail, ensure};

/// The head's tensors, skipped on load when the config has no head.
const HEAD: [&str; 2] = ["fc.weight", "fc.bias"];

pub struct ResNet {
    config: ResNetConfig,
    dtype: DType,
    pub conv1: Conv2d,
    pub bn1: BatchNorm2d,
    /// layer1..layer4, each a list of blocks (`layer{s+1}.{i}`).
    pub layers: Vec<Vec<Block>>,
    pub fc: Option<Linear>,
}

/// Feature maps after each stage, for dense heads (U-Net decoders) and GLoRIA.
pub struct ResNetStages {
    /// After conv1/bn1/relu (before the max-pool): stem_width channels, H/2.
    pub stem: Tensor,
    /// Outputs of layer1..layer4: H/4, H/8, H/16, H/32.
    pub layers: [Tensor; 4],
}

impl ResNet {
    /// Builds the network of `cfg` from `w` (torchvision's names, relative to `w`'s
    /// prefix); it runs in `w`'s dtype, BatchNorms start in training mode (call
    /// `set_training(false)` for inference). Fresh weights use torchvision's init.
    ///
    /// From a file: every tensor under this prefix must be used, except `fc.weight`
    /// and `fc.bias` when `cfg.num_classes` is `None` — a torchvision classifier
    /// checkpoint then loads as a head-less encoder, its ImageNet head skipped.
    pub fn load(cfg: &ResNetConfig, w: &Weights) -> Result<ResNet> {
        cfg.validate()?;
        let stem = cfg.stem_width;
        let conv1 = conv(w, "conv1", (cfg.in_channels, stem), 7, 2, 1)?;
        let bn1 = bn(w, "bn1", stem, cfg, false)?;
        let mut inplanes = stem;
        let mut layers = Vec::with_capacity(4);
        for s in 0..4 {
            let lw = w.pp(format!("layer{}", s + 1));
            let planes = cfg.widths[s];
            let mut blocks = Vec::with_capacity(cfg.layers[s]);
            for i in 0..cfg.layers[s] {
                let stride = if s > 0 && i == 0 { 2 } else { 1 };
                blocks.push(Block::load(cfg, &lw.pp(i), inplanes, planes, stride)?);
                inplanes = planes * cfg.block.expansion();
            }
            layers.push(blocks);
        }
        let fc = cfg
            .num_classes
            .map(|n| w.linear("fc", cfg.feature_dim(), n, true))
            .transpose()?;
        let model = ResNet {
            config: cfg.clone(),
            dtype: w.dtype(),
            conv1,
            bn1,
            layers,
            fc,
        };
        model.check_all_used(w)?;
        Ok(model)
    }

    /// Fails when the file holds tensors under this model's prefix that the config
    /// did not read (other prefixes belong to other models sharing the file).
    fn check_all_used(&self, w: &Weights) -> Result<()> {
        let Some(file) = w.source_name() else {
            return Ok(());
        };
        let prefix = w.full_name("");
        let skipped: Vec<String> = if self.fc.is_none() {
            HEAD.iter().map(|n| w.full_name(n)).collect()
        } else {
            Vec::new()
        };
        let unused: Vec<String> = w
            .unused()
            .into_iter()
            .filter(|n| n.starts_with(&prefix) && !skipped.contains(n))
            .collect();
        if unused.is_empty() {
            return Ok(());
        }
        let shown: Vec<&str> = unused.iter().take(5).map(String::as_str).collect();
        Err(Error::msg(format!(
            "{file}: {} tensors are not used by the ResNet built from its config (e.g. {}); \
             the config (depth/layers/widths/num_classes) does not describe these weights",
            unused.len(),
            shown.join(", ")
        )))
    }

    pub fn config(&self) -> &ResNetConfig {
        &self.config
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Channels of the last feature map / pooled features (2048 for ResNet-50).
    pub fn feature_dim(&self) -> usize {
        self.config.feature_dim()
    }

    /// Channels of layer3's map, the local features of `forward_with_local` (1024 for ResNet-50).
    pub fn local_dim(&self) -> usize {
        self.config.stage_channels(2)
    }

    /// Training mode (batch statistics, running stats updated) or eval mode
    /// (running statistics) for every BatchNorm.
    pub fn set_training(&self, training: bool) {
        for b in self.batch_norms() {
            b.set_training(training);
        }
    }

    pub fn is_training(&self) -> bool {
        self.bn1.is_training()
    }

    fn batch_norms(&self) -> Vec<&BatchNorm2d> {
        let mut v = vec![&self.bn1];
        for block in self.layers.iter().flatten() {
            v.extend(block.batch_norms());
        }
        v
    }

    fn check_input(&self, x: &Tensor) -> Result<()> {
        let c = self.config.in_channels;
        ensure!(
            x.rank() == 4 && x.shape()[1] == c,
            "ResNet: expected images [N, {c}, H, W], got shape {:?}",
            x.shape()
        );
        if x.dtype() != self.dtype {
            bail!(
                "ResNet: input dtype {} differs from the model's {} (cast the images first)",
                x.dtype(),
                self.dtype
            );
        }
        Ok(())
    }

    /// conv1 → bn1 → relu (H/2), before the max-pool.
    fn stem(&self, x: &Tensor) -> Result<Tensor> {
        self.check_input(x)?;
        conv_bn(&self.conv1, &self.bn1, x, true)
    }

    fn run_stage(&self, s: usize, mut x: Tensor) -> Result<Tensor> {
        for block in &self.layers[s] {
            x = block.forward(&x)?;
        }
        Ok(x)
    }

    /// The stem and every stage's output map.
    pub fn forward_stages(&self, x: &Tensor) -> Result<ResNetStages> {
        let stem = self.stem(x)?;
        let l1 = self.run_stage(0, stem.max_pool2d((3, 3), (2, 2), (1, 1))?)?;
        let l2 = self.run_stage(1, l1.clone())?;
        let l3 = self.run_stage(2, l2.clone())?;
        let l4 = self.run_stage(3, l3.clone())?;
        Ok(ResNetStages {
            stem,
            layers: [l1, l2, l3, l4],
        })
    }

    /// The last feature map, layer4's output: [N, feature_dim, ⌈H/32⌉, ⌈W/32⌉].
    pub fn forward_features(&self, x: &Tensor) -> Result<Tensor> {
        let mut y = self.stem(x)?.max_pool2d((3, 3), (2, 2), (1, 1))?;
        for s in 0..4 {
            y = self.run_stage(s, y)?;
        }
        Ok(y)
    }

    /// Global average pool of a feature map [N, C, h, w] → [N, C].
    fn pool(map: &Tensor) -> Result<Tensor> {
        map.adaptive_avg_pool2d(1, 1)?.flatten_from(1)
    }

    /// Globally average-pooled features [N, feature_dim] (the encoder output, no head).
    pub fn forward_pooled(&self, x: &Tensor) -> Result<Tensor> {
        Self::pool(&self.forward_features(x)?)
    }

    /// GLoRIA's image encoder taps: (pooled layer4 features [N, feature_dim],
    /// layer3's map [N, local_dim, H/16, W/16] as the local region features).
    pub fn forward_with_local(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let mut y = self.stem(x)?.max_pool2d((3, 3), (2, 2), (1, 1))?;
        for s in 0..3 {
            y = self.run_stage(s, y)?;
        }
        let pooled = Self::pool(&self.run_stage(3, y.clone())?)?;
        Ok((pooled, y))
    }

    /// torchvision's forward: pooled features, then `fc` when the model has a head.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let pooled = self.forward_pooled(x)?;
        match &self.fc {
            Some(fc) => fc.forward(&pooled),
            None => Ok(pooled),
        }
    }

    /// Every learnable tensor under torchvision's names (conv1.weight, bn1.weight,
    /// layer1.0.conv1.weight, ..., layer4.2.downsample.1.bias, fc.weight, fc.bias).
    pub fn parameters(&self) -> Vec<(String, Tensor)> {
        self.entries(Some(true))
    }

    /// BatchNorm running_mean / running_var (f32, f64 for f64 models) and
    /// num_batches_tracked (i64).
    pub fn buffers(&self) -> Vec<(String, Tensor)> {
        self.entries(Some(false))
    }

    /// Parameters and buffers interleaved per module, exactly as torchvision's
    /// `state_dict()` orders them (save it with `crate::io::save_safetensors` and
    /// torchvision's `load_state_dict` reads it).
    pub fn state_dict(&self) -> Vec<(String, Tensor)> {
        self.entries(None)
    }

    /// Entries in torchvision's state-dict order: parameters only (`Some(true)`),
    /// buffers only (`Some(false)`) or both (`None`).
    fn entries(&self, which: Option<bool>) -> Vec<(String, Tensor)> {
        let mut out = module_entries("conv1", &self.conv1, which);
        out.extend(module_entries("bn1", &self.bn1, which));
        for (s, blocks) in self.layers.iter().enumerate() {
            for (i, block) in blocks.iter().enumerate() {
                let prefix = format!("layer{}.{i}", s + 1);
                out.extend(crate::nn::prefixed(&prefix, block.entries(which)));
            }
        }
        if let Some(fc) = &self.fc {
            out.extend(module_entries("fc", fc, which));
        }
        out
    }
}

impl Module for ResNet {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        ResNet::forward(self, x)
    }

    fn parameters(&self) -> Vec<(String, Tensor)> {
        ResNet::parameters(self)
    }

    fn buffers(&self) -> Vec<(String, Tensor)> {
        ResNet::buffers(self)
    }

    fn state_dict(&self) -> Vec<(String, Tensor)> {
        ResNet::state_dict(self)
    }
}
