//! The patch classifier's shape: its config, the model kind, the box head's encoding, and the tensors,
//! config checks and costs the config implies.

use crate::error::ConfigError;
use crate::flops::LayerCost;
use crate::format::{ConfigCheck, TensorSpec};
use crate::input_norm::InputNorm;
use crate::layers::{self, Layer};
use crate::NUM_CLASSES;
use serde::{Deserialize, Serialize};

/// Model kind stored in weight-file metadata.
pub const PATCHNET_KIND: &str = "patchnet";

/// Shape of the patch classifier.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct PatchNetConfig {
    /// Side of the square input patch; must be a multiple of 8 (three 2× poolings).
    pub input_side_px: usize,
    /// Output channels of conv1, conv2, conv3.
    pub channels: [usize; 3],
    /// Width of the hidden fully-connected layer.
    pub hidden: usize,
    /// Outputs: 43 GTSRB classes + background.
    pub num_classes: usize,
    /// How pixels are normalised before conv1: `fixed` ((x − 0.5)/0.25) or `per_patch` (each patch to zero
    /// mean and unit spread, so the net sees the same input under any exposure). Files written before this
    /// key existed are `fixed`.
    #[serde(default)]
    pub input_norm: InputNorm,
    /// Whether fc2 also regresses the sign's box inside the patch: [`BOX_OUTPUTS`] more rows after the class
    /// logits (see [`decode_patch_box`]). Files written before this key existed have no box head.
    #[serde(default)]
    pub box_head: bool,
}

/// Outputs of the box head: the sign's centre offset from the patch centre (x, y, in patch sides) and the
/// natural log of its width and height in patch sides.
pub const BOX_OUTPUTS: usize = 4;

/// The box a box head's four raw outputs describe, as `[xmin, ymin, xmax, ymax]` in patch sides (0..1 is the
/// patch; a box may reach past it). Sizes are clamped to 1/64..4 patch sides, so a wild output stays finite.
pub fn decode_patch_box(raw: &[f32]) -> [f32; 4] {
    let get = |i: usize| raw.get(i).copied().filter(|v| v.is_finite()).unwrap_or(0.0);
    let cx = 0.5 + get(0).clamp(-1.0, 1.0);
    let cy = 0.5 + get(1).clamp(-1.0, 1.0);
    let w = get(2).clamp(-(64f32.ln()), 4f32.ln()).exp();
    let h = get(3).clamp(-(64f32.ln()), 4f32.ln()).exp();
    [cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h]
}

/// The box head's training target for a sign box `[xmin, ymin, xmax, ymax]` in patch sides (the inverse of
/// [`decode_patch_box`]).
pub fn encode_patch_box(b: [f32; 4]) -> [f32; 4] {
    let w = (b[2] - b[0]).max(1.0 / 64.0);
    let h = (b[3] - b[1]).max(1.0 / 64.0);
    [
        0.5 * (b[0] + b[2]) - 0.5,
        0.5 * (b[1] + b[3]) - 0.5,
        w.ln(),
        h.ln(),
    ]
}

impl Default for PatchNetConfig {
    fn default() -> Self {
        Self {
            input_side_px: 32,
            channels: [32, 64, 64],
            hidden: 256,
            num_classes: NUM_CLASSES,
            input_norm: InputNorm::PerPatch,
            box_head: false,
        }
    }
}

impl PatchNetConfig {
    /// Side of the last feature map (after three 2× poolings).
    pub fn feature_side_px(&self) -> usize {
        self.input_side_px / 8
    }

    /// Rows of fc2: the class logits, then the box head's outputs when there is one.
    pub fn num_outputs(&self) -> usize {
        self.num_classes + if self.box_head { BOX_OUTPUTS } else { 0 }
    }

    /// Length of the flattened feature fed to fc1.
    pub fn flat_dim(&self) -> usize {
        // Saturating: a corrupt config must become a shape mismatch, not an overflow panic.
        self.channels[2]
            .saturating_mul(self.feature_side_px())
            .saturating_mul(self.feature_side_px())
    }

    /// Rejects configs the architecture cannot run.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(8..=1024).contains(&self.input_side_px) || !self.input_side_px.is_multiple_of(8) {
            return Err(ConfigError::PatchSide(self.input_side_px));
        }
        if self.channels.contains(&0) || self.hidden == 0 || self.num_classes == 0 {
            return Err(ConfigError::PatchWidths {
                channels: self.channels,
                hidden: self.hidden,
                num_classes: self.num_classes,
            });
        }
        Ok(())
    }

    /// The layers, in file order: the one table the specs, checks, costs, construction, loading and saving
    /// walk.
    pub fn layers(&self) -> Vec<Layer> {
        let [c0, c1, c2] = self.channels;
        let s = self.input_side_px;
        // Same padding: each convolution's map is its input's (the 2× poolings come after).
        let conv = |name, io, side| Layer::conv(name, (3, 1, 1), io, (side, side));
        vec![
            conv("conv1", (3, c0), s).keyed("channels[0]"),
            conv("conv2", (c0, c1), s / 2).keyed("channels[1]"),
            conv("conv3", (c1, c2), s / 4).keyed("channels[2]"),
            Layer::linear("fc1", self.flat_dim(), self.hidden).keyed("hidden"),
            Layer::linear("fc2", self.hidden, self.num_outputs()).keyed(if self.box_head {
                "num_classes (+4 box outputs)"
            } else {
                "num_classes"
            }),
        ]
    }

    /// Every tensor of the model with its shape, in file order.
    pub fn tensor_specs(&self) -> Vec<TensorSpec> {
        layers::tensor_specs(&self.layers())
    }

    /// Config keys that the tensors pin down, so a mismatch names the key, not only the tensor.
    pub fn config_checks(&self) -> Vec<ConfigCheck> {
        let mut checks = layers::config_checks(&self.layers());
        // fc1's inner dim is channels[2]·(input_side_px/8)², so it pins the input side.
        checks.push(ConfigCheck::new(
            "input_side_px",
            "fc1.weight",
            1,
            self.flat_dim(),
        ));
        checks
    }

    /// Analytic cost of each layer for one patch.
    pub fn layer_costs(&self) -> Vec<LayerCost> {
        layers::layer_costs(&self.layers())
    }
}
