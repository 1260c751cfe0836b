//! The glance net's shape: its config, the model kind, the convolution geometry, and the tensors, config
//! checks and costs the config implies.

use crate::flops::{conv2d_flops, conv_out_side_px, linear_flops, LayerCost};
use crate::format::{ConfigCheck, TensorRole, TensorSpec};
use crate::NUM_CLASSES;
use candle_core::Tensor;
use candle_nn::Conv2dConfig;
use serde::{Deserialize, Serialize};

/// Model kind stored in weight-file metadata.
pub const GLANCENET_KIND: &str = "glancenet";

/// Glance-image pixels per cell of the output maps (three stride-2 convolutions).
pub const GLANCE_STRIDE_PX: usize = 8;

/// Shape of the glance net.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct GlanceNetConfig {
    pub input_width_px: usize,
    pub input_height_px: usize,
    /// Output channels of conv1..conv4.
    pub channels: [usize; 4],
    /// Outputs of the `cls` head: 43 GTSRB classes + background.
    pub num_classes: usize,
}

impl Default for GlanceNetConfig {
    fn default() -> Self {
        Self {
            input_width_px: 320,
            input_height_px: 240,
            channels: [16, 32, 32, 32],
            num_classes: NUM_CLASSES,
        }
    }
}

/// Largest accepted input side: bounds every size computed from a (possibly corrupt) config.
pub const MAX_INPUT_SIDE_PX: usize = 8192;

/// Convolution geometry: (name, kernel, stride, padding).
pub(crate) const CONV_LAYERS: [(&str, usize, usize, usize); 4] = [
    ("conv1", 3, 2, 1),
    ("conv2", 3, 2, 1),
    ("conv3", 3, 2, 1),
    ("conv4", 3, 1, 1),
];

pub(crate) fn conv_cfg(stride: usize, padding: usize) -> Conv2dConfig {
    Conv2dConfig {
        padding,
        stride,
        ..Default::default()
    }
}

impl GlanceNetConfig {
    /// `(width, height)` of the output maps.
    pub fn map_size(&self) -> (usize, usize) {
        let mut w = self.input_width_px;
        let mut h = self.input_height_px;
        for (_, k, s, p) in CONV_LAYERS {
            w = conv_out_side_px(w, k, s, p);
            h = conv_out_side_px(h, k, s, p);
        }
        (w, h)
    }

    pub fn validate(&self) -> Result<(), String> {
        let side_ok = |side: usize| (8..=MAX_INPUT_SIDE_PX).contains(&side);
        if !side_ok(self.input_width_px) || !side_ok(self.input_height_px) {
            return Err(format!(
                "input {}×{} px, expected 8..={MAX_INPUT_SIDE_PX} px per side",
                self.input_width_px, self.input_height_px
            ));
        }
        if self.channels.contains(&0) || self.num_classes == 0 {
            return Err(format!(
                "channels {:?}, num_classes {}: all must be positive",
                self.channels, self.num_classes
            ));
        }
        Ok(())
    }

    pub fn tensor_specs(&self) -> Vec<TensorSpec> {
        let mut specs = Vec::new();
        let mut c_in = 3;
        for ((name, k, _, _), c_out) in CONV_LAYERS.iter().zip(self.channels) {
            specs.push(TensorSpec::new(
                format!("{name}.weight"),
                vec![c_out, c_in, *k, *k],
                TensorRole::ConvWeight,
            ));
            specs.push(TensorSpec::new(
                format!("{name}.bias"),
                vec![c_out],
                TensorRole::Bias,
            ));
            c_in = c_out;
        }
        for head in ["obj", "size"] {
            specs.push(TensorSpec::new(
                format!("{head}.weight"),
                vec![1, c_in, 1, 1],
                TensorRole::ConvWeight,
            ));
            specs.push(TensorSpec::new(
                format!("{head}.bias"),
                vec![1],
                TensorRole::Bias,
            ));
        }
        specs.push(TensorSpec::new(
            "cls.weight".into(),
            vec![self.num_classes, c_in],
            TensorRole::LinearWeight,
        ));
        specs.push(TensorSpec::new(
            "cls.bias".into(),
            vec![self.num_classes],
            TensorRole::Bias,
        ));
        specs
    }

    pub fn config_checks(&self) -> Vec<ConfigCheck> {
        vec![
            ConfigCheck::new("channels[0]", "conv1.weight", 0, self.channels[0]),
            ConfigCheck::new("channels[1]", "conv2.weight", 0, self.channels[1]),
            ConfigCheck::new("channels[2]", "conv3.weight", 0, self.channels[2]),
            ConfigCheck::new("channels[3]", "conv4.weight", 0, self.channels[3]),
            ConfigCheck::new("num_classes", "cls.weight", 0, self.num_classes),
        ]
    }

    pub fn layer_costs(&self) -> Vec<LayerCost> {
        let mut costs = Vec::new();
        let mut w = self.input_width_px;
        let mut h = self.input_height_px;
        let mut c_in = 3;
        for ((name, k, s, p), c_out) in CONV_LAYERS.iter().zip(self.channels) {
            w = conv_out_side_px(w, *k, *s, *p);
            h = conv_out_side_px(h, *k, *s, *p);
            costs.push(LayerCost {
                name: (*name).into(),
                flops: conv2d_flops(c_in, c_out, *k, h, w),
            });
            c_in = c_out;
        }
        for head in ["obj", "size"] {
            costs.push(LayerCost {
                name: head.into(),
                flops: conv2d_flops(c_in, 1, 1, h, w),
            });
        }
        costs.push(LayerCost {
            name: "cls".into(),
            flops: linear_flops(c_in, self.num_classes),
        });
        costs
    }
}

/// Raw outputs of the glance net, for the trainer's losses and for `GlanceNet::glance`.
#[derive(Debug, Clone)]
pub struct GlanceMaps {
    /// `(b, 1, h, w)` logit that a sign's centre lies in each cell.
    pub objectness_logits: Tensor,
    /// `(b, 1, h, w)` log2 of the sign's side in glance pixels.
    pub log2_side: Tensor,
    /// `(b, c)` global average of the last feature map.
    pub pooled: Tensor,
    /// `(b, num_classes)` glance-only class logits.
    pub class_logits: Tensor,
}
