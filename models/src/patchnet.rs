//! The patch classifier: a small CNN over a square full-resolution patch (32×32 by default) that outputs
//! logits for the 43 GTSRB classes plus background. The focus stage calls it through [`PatchClassifier`]
//! on the few patches the glance chose; the trainer builds it from a `VarMap`; the runtime loads it from
//! safetensors (float) or GGUF (fully-connected layers quantised, convolutions float).

use crate::flops::{conv2d_flops, linear_flops, total_mflops, LayerCost};
use crate::linear::QLinear;
use crate::weights::{ConfigCheck, TensorRole, TensorSpec, WeightSet};
use crate::{ModelError, PatchClassifier, NUM_CLASSES};
use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Conv2d, Conv2dConfig, VarBuilder};
use serde::{Deserialize, Serialize};
use std::path::Path;

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
}

impl Default for PatchNetConfig {
    fn default() -> Self {
        Self {
            input_side_px: 32,
            channels: [32, 64, 64],
            hidden: 256,
            num_classes: NUM_CLASSES,
        }
    }
}

impl PatchNetConfig {
    /// Side of the last feature map (after three 2× poolings).
    pub fn feature_side_px(&self) -> usize {
        self.input_side_px / 8
    }

    /// Length of the flattened feature fed to fc1.
    pub fn flat_dim(&self) -> usize {
        self.channels[2] * self.feature_side_px() * self.feature_side_px()
    }

    /// Rejects configs the architecture cannot run.
    pub fn validate(&self) -> Result<(), String> {
        if self.input_side_px < 8 || !self.input_side_px.is_multiple_of(8) {
            return Err(format!(
                "input_side_px is {}, expected a positive multiple of 8",
                self.input_side_px
            ));
        }
        if self.channels.contains(&0) || self.hidden == 0 || self.num_classes == 0 {
            return Err(format!(
                "channels {:?}, hidden {}, num_classes {}: all must be positive",
                self.channels, self.hidden, self.num_classes
            ));
        }
        Ok(())
    }

    /// Every tensor of the model with its shape, in file order.
    pub fn tensor_specs(&self) -> Vec<TensorSpec> {
        let [c0, c1, c2] = self.channels;
        let mut specs = Vec::new();
        for (name, c_in, c_out) in [("conv1", 3, c0), ("conv2", c0, c1), ("conv3", c1, c2)] {
            specs.push(TensorSpec::new(
                format!("{name}.weight"),
                vec![c_out, c_in, 3, 3],
                TensorRole::ConvWeight,
            ));
            specs.push(TensorSpec::new(
                format!("{name}.bias"),
                vec![c_out],
                TensorRole::Bias,
            ));
        }
        for (name, d_in, d_out) in [
            ("fc1", self.flat_dim(), self.hidden),
            ("fc2", self.hidden, self.num_classes),
        ] {
            specs.push(TensorSpec::new(
                format!("{name}.weight"),
                vec![d_out, d_in],
                TensorRole::LinearWeight,
            ));
            specs.push(TensorSpec::new(
                format!("{name}.bias"),
                vec![d_out],
                TensorRole::Bias,
            ));
        }
        specs
    }

    /// Config keys that the tensors pin down, so a mismatch names the key, not only the tensor.
    pub fn config_checks(&self) -> Vec<ConfigCheck> {
        vec![
            ConfigCheck::new("channels[0]", "conv1.weight", 0, self.channels[0]),
            ConfigCheck::new("channels[1]", "conv2.weight", 0, self.channels[1]),
            ConfigCheck::new("channels[2]", "conv3.weight", 0, self.channels[2]),
            ConfigCheck::new("hidden", "fc1.weight", 0, self.hidden),
            ConfigCheck::new("num_classes", "fc2.weight", 0, self.num_classes),
            // fc1's inner dim is channels[2]·(input_side_px/8)², so it pins the input side.
            ConfigCheck::new("input_side_px", "fc1.weight", 1, self.flat_dim()),
        ]
    }

    /// Analytic cost of each layer for one patch.
    pub fn layer_costs(&self) -> Vec<LayerCost> {
        let [c0, c1, c2] = self.channels;
        let s = self.input_side_px;
        vec![
            LayerCost {
                name: "conv1".into(),
                flops: conv2d_flops(3, c0, 3, s, s),
            },
            LayerCost {
                name: "conv2".into(),
                flops: conv2d_flops(c0, c1, 3, s / 2, s / 2),
            },
            LayerCost {
                name: "conv3".into(),
                flops: conv2d_flops(c1, c2, 3, s / 4, s / 4),
            },
            LayerCost {
                name: "fc1".into(),
                flops: linear_flops(self.flat_dim(), self.hidden),
            },
            LayerCost {
                name: "fc2".into(),
                flops: linear_flops(self.hidden, self.num_classes),
            },
        ]
    }
}

/// The patch classifier network.
///
/// # Shapes
/// input `(b, 3, s, s)` f32 RGB in 0..1 → logits `(b, num_classes)`.
#[derive(Debug, Clone)]
pub struct PatchNet {
    cfg: PatchNetConfig,
    conv1: Conv2d,
    conv2: Conv2d,
    conv3: Conv2d,
    fc1: QLinear,
    fc2: QLinear,
    /// Dtype the conv weights were stored in (they are computed in the dtype of `conv1.weight`).
    conv_stored_dtype: DType,
}

fn same_padding() -> Conv2dConfig {
    Conv2dConfig {
        padding: 1,
        ..Default::default()
    }
}

/// Maps 0..1 pixels to roughly zero-mean unit-range inputs; kept inside the model so callers never differ.
pub(crate) fn normalise_unit_rgb(x: &Tensor) -> candle_core::Result<Tensor> {
    (x - 0.5)? / 0.25
}

impl PatchNet {
    /// Builds the network from `vb` (a `VarMap` for training, or stored float tensors).
    pub fn new(cfg: &PatchNetConfig, vb: VarBuilder) -> candle_core::Result<Self> {
        if let Err(message) = cfg.validate() {
            candle_core::bail!("patchnet config: {message}");
        }
        let [c0, c1, c2] = cfg.channels;
        let conv1 = candle_nn::conv2d(3, c0, 3, same_padding(), vb.pp("conv1"))?;
        let conv2 = candle_nn::conv2d(c0, c1, 3, same_padding(), vb.pp("conv2"))?;
        let conv3 = candle_nn::conv2d(c1, c2, 3, same_padding(), vb.pp("conv3"))?;
        let fc1 = QLinear::new(cfg.flat_dim(), cfg.hidden, vb.pp("fc1"))?;
        let fc2 = QLinear::new(cfg.hidden, cfg.num_classes, vb.pp("fc2"))?;
        Ok(Self {
            cfg: cfg.clone(),
            conv_stored_dtype: conv1.weight().dtype(),
            conv1,
            conv2,
            conv3,
            fc1,
            fc2,
        })
    }

    /// Builds the network from a validated weight file.
    pub(crate) fn from_weight_set(
        cfg: &PatchNetConfig,
        set: &WeightSet,
    ) -> Result<Self, ModelError> {
        if let Err(message) = cfg.validate() {
            return Err(set.bad_config("config", "a valid patchnet config", &message));
        }
        set.validate(&cfg.tensor_specs(), &cfg.config_checks())?;
        let conv1 = set.conv("conv1", same_padding())?;
        Ok(Self {
            cfg: cfg.clone(),
            conv_stored_dtype: set.stored_float_dtype("conv1.weight"),
            conv1,
            conv2: set.conv("conv2", same_padding())?,
            conv3: set.conv("conv3", same_padding())?,
            fc1: set.linear("fc1")?,
            fc2: set.linear("fc2")?,
        })
    }

    /// Loads a patch classifier from safetensors or GGUF (chosen by the file's magic bytes).
    pub fn load(path: &Path, device: &Device) -> Result<Self, ModelError> {
        let set = WeightSet::read(path, device)?;
        set.expect_kind(PATCHNET_KIND)?;
        let cfg: PatchNetConfig = set.parse_config()?;
        Self::from_weight_set(&cfg, &set)
    }

    pub fn config(&self) -> &PatchNetConfig {
        &self.cfg
    }

    /// Class logits of a batch of patches.
    ///
    /// # Shapes
    /// `(b, 3, s, s)` → `(b, num_classes)`.
    pub fn logits(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let s = self.cfg.input_side_px;
        let (b, c, h, w) = x.dims4()?;
        if c != 3 || h != s || w != s {
            candle_core::bail!(
                "patchnet input has shape {:?}, expected (b, 3, {s}, {s})",
                x.dims()
            );
        }
        let x = normalise_unit_rgb(&x.to_dtype(self.conv1.weight().dtype())?)?;
        // (b, 3, s, s) -> (b, c0, s/2, s/2)
        let x = self.conv1.forward(&x)?.relu()?.max_pool2d(2)?;
        // (b, c0, s/2, s/2) -> (b, c1, s/4, s/4)
        let x = self.conv2.forward(&x)?.relu()?.max_pool2d(2)?;
        // (b, c1, s/4, s/4) -> (b, c2, s/8, s/8)
        let x = self.conv3.forward(&x)?.relu()?.max_pool2d(2)?;
        // (b, c2, s/8, s/8) -> (b, c2·(s/8)²)
        let x = x.reshape((b, self.cfg.flat_dim()))?.to_dtype(DType::F32)?;
        // (b, flat) -> (b, hidden) -> (b, num_classes)
        let x = self.fc1.forward(&x)?.relu()?;
        self.fc2.forward(&x)
    }

    /// Writes the (dequantised) weights as an f32 safetensors checkpoint with kind and config.
    pub fn save_safetensors(&self, path: &Path) -> Result<(), ModelError> {
        let tensors = self.named_tensors()?.into_iter().collect();
        let config_json = serde_json::to_string(&self.cfg).map_err(|e| ModelError::BadConfig {
            path: path.to_path_buf(),
            key: crate::weights::CONFIG_KEY.into(),
            expected: "a serialisable patchnet config".into(),
            found: e.to_string(),
        })?;
        crate::weights::save_safetensors(&tensors, &config_json, PATCHNET_KIND, path)
    }

    /// Layers in file order with their (dequantised, f32) weights, for saving and quantising.
    pub fn named_tensors(&self) -> candle_core::Result<Vec<(String, Tensor)>> {
        let mut out = Vec::new();
        for (name, conv) in [
            ("conv1", &self.conv1),
            ("conv2", &self.conv2),
            ("conv3", &self.conv3),
        ] {
            out.push((
                format!("{name}.weight"),
                conv.weight().to_dtype(DType::F32)?,
            ));
            if let Some(bias) = conv.bias() {
                out.push((format!("{name}.bias"), bias.to_dtype(DType::F32)?));
            }
        }
        for (name, fc) in [("fc1", &self.fc1), ("fc2", &self.fc2)] {
            out.push((format!("{name}.weight"), fc.weight_f32()?));
            if let Some(bias) = fc.bias() {
                out.push((format!("{name}.bias"), bias.to_dtype(DType::F32)?));
            }
        }
        Ok(out)
    }
}

impl PatchClassifier for PatchNet {
    fn input_side_px(&self) -> usize {
        self.cfg.input_side_px
    }

    fn classify(&self, patches: &Tensor) -> Result<Tensor, ModelError> {
        let s = self.cfg.input_side_px;
        let dims = patches.dims();
        if dims.len() != 4 || dims[1] != 3 || dims[2] != s || dims[3] != s {
            return Err(ModelError::BadInput {
                expected: format!("(b, 3, {s}, {s})"),
                found: dims.to_vec(),
            });
        }
        if dims[0] == 0 {
            return Ok(Tensor::zeros(
                (0, self.cfg.num_classes),
                DType::F32,
                patches.device(),
            )?);
        }
        let logits = self.logits(&patches.to_dtype(DType::F32)?)?;
        Ok(candle_nn::ops::softmax_last_dim(&logits)?)
    }

    fn mflops_per_patch(&self) -> f64 {
        total_mflops(&self.cfg.layer_costs())
    }

    fn describe(&self) -> String {
        format!(
            "patchnet {s}×{s} conv {:?} ({:?}) → fc {} ({:?}) → {} ({:?}), {:.2} MFLOP/patch",
            self.cfg.channels,
            self.conv_stored_dtype,
            self.cfg.hidden,
            self.fc1.weight_dtype(),
            self.cfg.num_classes,
            self.fc2.weight_dtype(),
            self.mflops_per_patch(),
            s = self.cfg.input_side_px,
        )
    }
}
