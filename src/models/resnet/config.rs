//! `ResNetConfig`: torchvision's ResNet family (depth presets, block type, stage
//! widths), with the stem and stage widths open so tests can build tiny variants.

use crate::error::{Error, Result};
use crate::models::Config;

/// torchvision's residual block types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockKind {
    /// Two 3x3 convs (ResNet-18/34); expansion 1.
    Basic,
    /// 1x1 → 3x3 (stride here, torchvision's v1.5) → 1x1 ×4; expansion 4.
    Bottleneck,
}

impl BlockKind {
    /// Output channels per unit of a stage's `planes`.
    pub fn expansion(self) -> usize {
        match self {
            BlockKind::Basic => 1,
            BlockKind::Bottleneck => 4,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct ResNetConfig {
    pub block: BlockKind,
    /// Blocks per stage (layer1..layer4).
    pub layers: [usize; 4],
    /// Input image channels (3 for torchvision's checkpoints).
    pub in_channels: usize,
    /// Channels of the 7x7 stem conv (torchvision: 64).
    pub stem_width: usize,
    /// `planes` of each stage (torchvision: 64, 128, 256, 512); a stage outputs
    /// planes · expansion channels.
    pub widths: [usize; 4],
    /// Grouped 3x3 conv in bottlenecks (ResNeXt); 1 for ResNet.
    pub groups: usize,
    /// Bottleneck width = ⌊planes · width_per_group / 64⌋ · groups (torchvision: 64).
    pub width_per_group: usize,
    /// `Some(n)`: a linear head `fc` to n classes; `None`: an encoder without head
    /// (a checkpoint's fc.weight/fc.bias are then skipped on load).
    pub num_classes: Option<usize>,
    /// Fresh init only: zero the last BN weight of each residual branch.
    pub zero_init_residual: bool,
    pub bn_eps: f64,
    pub bn_momentum: f64,
}

impl ResNetConfig {
    /// torchvision's `resnet{depth}` layout (18, 34, 50, 101, 152), without head.
    pub fn for_depth(depth: usize) -> Result<ResNetConfig> {
        let (block, layers) = match depth {
            18 => (BlockKind::Basic, [2, 2, 2, 2]),
            34 => (BlockKind::Basic, [3, 4, 6, 3]),
            50 => (BlockKind::Bottleneck, [3, 4, 6, 3]),
            101 => (BlockKind::Bottleneck, [3, 4, 23, 3]),
            152 => (BlockKind::Bottleneck, [3, 8, 36, 3]),
            _ => {
                return Err(Error::msg(format!(
                    "ResNet depth {depth} is not supported (supported: 18, 34, 50, 101, 152)"
                )))
            }
        };
        Ok(ResNetConfig {
            block,
            layers,
            in_channels: 3,
            stem_width: 64,
            widths: [64, 128, 256, 512],
            groups: 1,
            width_per_group: 64,
            num_classes: None,
            zero_init_residual: false,
            bn_eps: 1e-5,
            bn_momentum: 0.1,
        })
    }

    pub fn resnet18() -> ResNetConfig {
        Self::for_depth(18).expect("preset")
    }

    pub fn resnet34() -> ResNetConfig {
        Self::for_depth(34).expect("preset")
    }

    /// The image encoder of ConVIRT/GLoRIA: bottleneck [3, 4, 6, 3], 2048 features.
    pub fn resnet50() -> ResNetConfig {
        Self::for_depth(50).expect("preset")
    }

    pub fn resnet101() -> ResNetConfig {
        Self::for_depth(101).expect("preset")
    }

    pub fn resnet152() -> ResNetConfig {
        Self::for_depth(152).expect("preset")
    }

    /// The same layout with a classification head of `n` classes (`None`: no head).
    pub fn with_classes(self, n: Option<usize>) -> ResNetConfig {
        ResNetConfig {
            num_classes: n,
            ..self
        }
    }

    /// From a JSON config: `depth` (a preset) or `block` ("basic"/"bottleneck") with
    /// `layers`; optional `in_channels`, `stem_width`, `widths`, `groups`,
    /// `width_per_group`, `num_classes`, `zero_init_residual`, `bn_eps`, `bn_momentum`.
    pub fn from_config(cfg: &Config) -> Result<ResNetConfig> {
        let err = |key: &str, what: String| Error::file(cfg.path(), format!("key `{key}`: {what}"));
        let mut c = match cfg.opt_usize("depth")? {
            Some(d) => Self::for_depth(d).map_err(|e| err("depth", e.to_string()))?,
            None => {
                let block = match cfg
                    .choice("block", "bottleneck", &["basic", "bottleneck"])?
                    .as_str()
                {
                    "basic" => BlockKind::Basic,
                    _ => BlockKind::Bottleneck,
                };
                ResNetConfig {
                    block,
                    ..Self::resnet50()
                }
            }
        };
        let four = |key: &str, v: Vec<usize>| -> Result<[usize; 4]> {
            v.try_into()
                .map_err(|v: Vec<usize>| err(key, format!("needs 4 entries, got {}", v.len())))
        };
        if cfg.has("layers") {
            c.layers = four("layers", cfg.usize_list("layers")?)?;
        }
        if cfg.has("widths") {
            c.widths = four("widths", cfg.usize_list("widths")?)?;
        }
        c.in_channels = cfg.usize_or("in_channels", c.in_channels)?;
        c.stem_width = cfg.usize_or("stem_width", c.stem_width)?;
        c.groups = cfg.usize_or("groups", c.groups)?;
        c.width_per_group = cfg.usize_or("width_per_group", c.width_per_group)?;
        c.num_classes = cfg.opt_usize("num_classes")?;
        c.zero_init_residual = cfg.bool_or("zero_init_residual", false)?;
        c.bn_eps = cfg.f64_or("bn_eps", c.bn_eps)?;
        c.bn_momentum = cfg.f64_or("bn_momentum", c.bn_momentum)?;
        cfg.reject(
            "replace_stride_with_dilation",
            "dilated stages are not supported",
        )?;
        c.validate()
            .map_err(|e| Error::file(cfg.path(), e.to_string()))?;
        Ok(c)
    }

    /// Checks that the layout can be built (non-zero sizes; BasicBlock only with
    /// groups 1 and width_per_group 64, as torchvision).
    pub fn validate(&self) -> Result<()> {
        let zero = |what: &str| Error::msg(format!("ResNetConfig: {what} must be positive"));
        if self.in_channels == 0 || self.stem_width == 0 {
            return Err(zero("in_channels and stem_width"));
        }
        if self.layers.contains(&0) || self.widths.contains(&0) {
            return Err(zero("every stage's block count and width"));
        }
        if self.groups == 0 || self.width_per_group == 0 {
            return Err(zero("groups and width_per_group"));
        }
        if self.num_classes == Some(0) {
            return Err(zero("num_classes (use None for no head)"));
        }
        if self.block == BlockKind::Basic && (self.groups != 1 || self.width_per_group != 64) {
            return Err(Error::msg(
                "ResNetConfig: BasicBlock only supports groups=1 and width_per_group=64",
            ));
        }
        if self.block == BlockKind::Bottleneck
            && self.widths.iter().any(|&p| self.inner_width(p) == 0)
        {
            return Err(Error::msg(format!(
                "ResNetConfig: width_per_group {} makes a bottleneck of width 0",
                self.width_per_group
            )));
        }
        Ok(())
    }

    /// Channels inside a bottleneck of `planes` (torchvision's `width`).
    pub fn inner_width(&self, planes: usize) -> usize {
        planes * self.width_per_group / 64 * self.groups
    }

    /// Channels of stage `i`'s output (0-based).
    pub fn stage_channels(&self, i: usize) -> usize {
        self.widths[i] * self.block.expansion()
    }

    /// Channels of the last feature map and of the pooled features (2048 for ResNet-50).
    pub fn feature_dim(&self) -> usize {
        self.stage_channels(3)
    }
}
