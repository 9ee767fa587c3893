//! torchvision's residual blocks: `BasicBlock` (two 3x3 convs) and `Bottleneck`
//! (1x1 → strided 3x3 → 1x1, v1.5), each with an optional 1x1 `downsample`
//! shortcut, plus conv/BN helpers that follow torchvision's init and names.

use super::config::{BlockKind, ResNetConfig};
use crate::error::Result;
use crate::models::{Init, Weights};
use crate::nn::{prefixed, BatchNorm2d, Conv2d, Conv2dConfig, Module};
use crate::tensor::Tensor;

/// A bias-free conv (torchvision's conv1x1/conv3x3/stem), freshly initialised as
/// torchvision's ResNet does: kaiming normal, fan_out, ReLU gain (std √(2/fan_out)).
pub(crate) fn conv(
    w: &Weights,
    name: &str,
    (inp, out): (usize, usize),
    k: usize,
    stride: usize,
    groups: usize,
) -> Result<Conv2d> {
    let shape = [out, inp / groups, k, k];
    let std = (2.0 / (out * k * k) as f64).sqrt();
    let weight = w.pp(name).get("weight", &shape, Init::Normal(std))?;
    let config = Conv2dConfig {
        stride: (stride, stride),
        padding: (k / 2, k / 2),
        groups,
        bias: false,
        ..Conv2dConfig::default()
    };
    Conv2d::from_weights(weight, None, config)
}

/// BatchNorm2d with the config's eps/momentum; `zero`: a fresh weight of 0
/// (zero_init_residual) instead of 1.
pub(crate) fn bn(
    w: &Weights,
    name: &str,
    ch: usize,
    cfg: &ResNetConfig,
    zero: bool,
) -> Result<BatchNorm2d> {
    let mut b = w.batch_norm2d(name, ch, cfg.bn_eps, cfg.bn_momentum)?;
    if zero && w.source_name().is_none() {
        b.weight = crate::tensor::Tensor::zeros(&[ch], w.dtype())?.into_param()?;
    }
    Ok(b)
}

/// `conv` then `bn` (and a ReLU where the block has one).
pub(crate) fn conv_bn(c: &Conv2d, b: &BatchNorm2d, x: &Tensor, relu: bool) -> Result<Tensor> {
    let y = b.forward(&c.forward(x)?)?;
    if relu {
        y.relu()
    } else {
        Ok(y)
    }
}

/// The 1x1 strided projection shortcut: `downsample.0` (conv), `downsample.1` (bn).
pub struct Downsample {
    pub conv: Conv2d,
    pub bn: BatchNorm2d,
}

/// One residual block, torchvision's names: conv1/bn1, conv2/bn2 (and conv3/bn3
/// for bottlenecks), `downsample` when the shape changes.
pub struct Block {
    pub kind: BlockKind,
    /// (conv, bn) pairs in order: 2 for basic blocks, 3 for bottlenecks.
    pub convs: Vec<(Conv2d, BatchNorm2d)>,
    pub downsample: Option<Downsample>,
}

impl Block {
    /// torchvision's block(inplanes, planes, stride, downsample, ...): the shortcut
    /// is projected when `stride != 1` or `inplanes != planes · expansion`.
    pub fn load(
        cfg: &ResNetConfig,
        w: &Weights,
        inplanes: usize,
        planes: usize,
        stride: usize,
    ) -> Result<Block> {
        let out = planes * cfg.block.expansion();
        let zero = cfg.zero_init_residual;
        let convs = match cfg.block {
            BlockKind::Basic => vec![
                (
                    conv(w, "conv1", (inplanes, planes), 3, stride, 1)?,
                    bn(w, "bn1", planes, cfg, false)?,
                ),
                (
                    conv(w, "conv2", (planes, planes), 3, 1, 1)?,
                    bn(w, "bn2", planes, cfg, zero)?,
                ),
            ],
            BlockKind::Bottleneck => {
                let width = cfg.inner_width(planes);
                vec![
                    (
                        conv(w, "conv1", (inplanes, width), 1, 1, 1)?,
                        bn(w, "bn1", width, cfg, false)?,
                    ),
                    (
                        conv(w, "conv2", (width, width), 3, stride, cfg.groups)?,
                        bn(w, "bn2", width, cfg, false)?,
                    ),
                    (
                        conv(w, "conv3", (width, out), 1, 1, 1)?,
                        bn(w, "bn3", out, cfg, zero)?,
                    ),
                ]
            }
        };
        let downsample = if stride != 1 || inplanes != out {
            let d = w.pp("downsample");
            Some(Downsample {
                conv: conv(&d, "0", (inplanes, out), 1, stride, 1)?,
                bn: bn(&d, "1", out, cfg, false)?,
            })
        } else {
            None
        };
        Ok(Block {
            kind: cfg.block,
            convs,
            downsample,
        })
    }

    /// relu(branch(x) + shortcut(x)); the branch has a ReLU after every BN but the last.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let last = self.convs.len() - 1;
        let mut y = x.clone();
        for (i, (c, b)) in self.convs.iter().enumerate() {
            y = conv_bn(c, b, &y, i < last)?;
        }
        let identity = match &self.downsample {
            Some(d) => conv_bn(&d.conv, &d.bn, x, false)?,
            None => x.clone(),
        };
        y.add(&identity)?.relu()
    }

    /// Every BatchNorm of the block.
    pub fn batch_norms(&self) -> Vec<&BatchNorm2d> {
        let mut v: Vec<&BatchNorm2d> = self.convs.iter().map(|(_, b)| b).collect();
        v.extend(self.downsample.iter().map(|d| &d.bn));
        v
    }

    /// The state dict in torchvision's order (per module: parameters then buffers),
    /// keeping only parameters (`Some(true)`), only buffers (`Some(false)`) or all.
    pub fn entries(&self, which: Option<bool>) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        for (i, (c, b)) in self.convs.iter().enumerate() {
            out.extend(module_entries(&format!("conv{}", i + 1), c, which));
            out.extend(module_entries(&format!("bn{}", i + 1), b, which));
        }
        if let Some(d) = &self.downsample {
            out.extend(module_entries("downsample.0", &d.conv, which));
            out.extend(module_entries("downsample.1", &d.bn, which));
        }
        out
    }
}

/// One module's parameters and/or buffers under `prefix.`.
pub(crate) fn module_entries(
    prefix: &str,
    m: &dyn Module,
    which: Option<bool>,
) -> Vec<(String, Tensor)> {
    let mut v = Vec::new();
    if which != Some(false) {
        v.extend(m.parameters());
    }
    if which != Some(true) {
        v.extend(m.buffers());
    }
    prefixed(prefix, v)
}
