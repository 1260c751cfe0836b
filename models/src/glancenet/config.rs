//! The glance net's shape: its config, the model kind, the convolution geometry, and the tensors, config
//! checks and costs the config implies.

use crate::error::ConfigError;
use crate::flops::{conv_out_side_px, LayerCost};
use crate::format::{ConfigCheck, TensorSpec};
use crate::layers::{self, Layer};
use crate::NUM_CLASSES;
use candle_core::Tensor;
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

    pub fn validate(&self) -> Result<(), ConfigError> {
        let side_ok = |side: usize| (8..=MAX_INPUT_SIDE_PX).contains(&side);
        if !side_ok(self.input_width_px) || !side_ok(self.input_height_px) {
            return Err(ConfigError::GlanceInput {
                width: self.input_width_px,
                height: self.input_height_px,
                max: MAX_INPUT_SIDE_PX,
            });
        }
        if self.channels.contains(&0) || self.num_classes == 0 {
            return Err(ConfigError::GlanceWidths {
                channels: self.channels,
                num_classes: self.num_classes,
            });
        }
        Ok(())
    }

    /// The layers, in file order: the one table the specs, checks, costs, construction, loading and saving
    /// walk.
    pub fn layers(&self) -> Vec<Layer> {
        const KEYS: [&str; 4] = ["channels[0]", "channels[1]", "channels[2]", "channels[3]"];
        let mut layers = Vec::with_capacity(CONV_LAYERS.len() + 3);
        let (mut w, mut h, mut c_in) = (self.input_width_px, self.input_height_px, 3);
        for (((name, k, s, p), c_out), key) in CONV_LAYERS.into_iter().zip(self.channels).zip(KEYS)
        {
            w = conv_out_side_px(w, k, s, p);
            h = conv_out_side_px(h, k, s, p);
            layers.push(Layer::conv(name, (k, s, p), (c_in, c_out), (h, w)).keyed(key));
            c_in = c_out;
        }
        for head in ["obj", "size"] {
            layers.push(Layer::conv(head, (1, 1, 0), (c_in, 1), (h, w)));
        }
        layers.push(Layer::linear("cls", c_in, self.num_classes).keyed("num_classes"));
        layers
    }

    pub fn tensor_specs(&self) -> Vec<TensorSpec> {
        layers::tensor_specs(&self.layers())
    }

    pub fn config_checks(&self) -> Vec<ConfigCheck> {
        layers::config_checks(&self.layers())
    }

    pub fn layer_costs(&self) -> Vec<LayerCost> {
        layers::layer_costs(&self.layers())
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
