//! The patch classifier: a small CNN over a square full-resolution patch (32×32 by default) that outputs
//! logits for the 43 GTSRB classes plus background. The focus stage calls it through [`PatchClassifier`]
//! on the few patches the glance chose; the trainer builds it from a `VarMap`; the runtime loads it from
//! safetensors (float) or GGUF (fully-connected layers quantised, convolutions float).

use crate::flops::{conv2d_flops, linear_flops, total_mflops, LayerCost};
use crate::format::{ConfigCheck, TensorRole, TensorSpec, WeightSet};
use crate::linear::QLinear;
use crate::patchnet_int8::{Int8PatchNet, SliceNorm};
use crate::slice_ops::softmax_extend;
use crate::train_ops::{conv_block_nhwc, conv_bn_block_nhwc, BatchNorm};
use crate::{ModelError, PatchClassifier, PatchVerdicts, NUM_CLASSES};
use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Conv2d, Conv2dConfig, VarBuilder};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::Arc;

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

/// Input normalisation of the patch classifier; see [`PatchNetConfig::input_norm`].
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum InputNorm {
    #[default]
    Fixed,
    PerPatch,
}

/// Floor of a patch's standard deviation (0..1 pixel units) in `per_patch` normalisation, so a flat patch
/// is not blown up into amplified noise; above it the normalisation ignores exposure and contrast.
pub const PER_PATCH_STD_FLOOR: f64 = 0.05;

/// Each patch of `x` `(b, c, h, w)` to zero mean and unit standard deviation (floored at
/// [`PER_PATCH_STD_FLOOR`]).
pub(crate) fn normalise_per_patch(x: &Tensor) -> candle_core::Result<Tensor> {
    let flat = x.flatten_from(1)?;
    let mean = flat.mean_keepdim(1)?;
    let centred = flat.broadcast_sub(&mean)?;
    let std = centred.sqr()?.mean_keepdim(1)?.sqrt()?;
    let scale = std.maximum(PER_PATCH_STD_FLOOR)?;
    centred.broadcast_div(&scale)?.reshape(x.shape())
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
    pub fn validate(&self) -> Result<(), String> {
        if !(8..=1024).contains(&self.input_side_px) || !self.input_side_px.is_multiple_of(8) {
            return Err(format!(
                "input_side_px is {}, expected a multiple of 8 in 8..=1024",
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
            ("fc2", self.hidden, self.num_outputs()),
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
            ConfigCheck::new(
                if self.box_head {
                    "num_classes (+4 box outputs)"
                } else {
                    "num_classes"
                },
                "fc2.weight",
                0,
                self.num_outputs(),
            ),
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
                flops: linear_flops(self.hidden, self.num_outputs()),
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
    /// The integer forward pass, for Q8_0 files on the CPU.
    int8: Option<Arc<Int8PatchNet>>,
    /// Batch normalisation of the three convolutions while training ([`Self::new_with_batch_norm`]);
    /// folded into the convolutions for inference and saving.
    norms: Option<Arc<[BatchNorm; 3]>>,
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
        let fc2 = QLinear::new(cfg.hidden, cfg.num_outputs(), vb.pp("fc2"))?;
        Ok(Self {
            cfg: cfg.clone(),
            conv_stored_dtype: conv1.weight().dtype(),
            conv1,
            conv2,
            conv3,
            fc1,
            fc2,
            int8: None,
            norms: None,
        })
    }

    /// Builds the network for training with batch normalisation after each convolution (scale and shift
    /// from `vb` under `convN.bn`). [`Self::train_logits`] normalises with the batch's statistics and
    /// updates running ones; [`Self::logits`], [`Self::named_tensors`] and the saved files use the
    /// convolutions with the running normalisation folded in ([`Self::folded`]), so the stored network
    /// has the same layers as one trained without it.
    pub fn new_with_batch_norm(cfg: &PatchNetConfig, vb: VarBuilder) -> candle_core::Result<Self> {
        let mut net = Self::new(cfg, vb.clone())?;
        let [c0, c1, c2] = cfg.channels;
        net.norms = Some(Arc::new([
            BatchNorm::new(c0, vb.pp("conv1").pp("bn"))?,
            BatchNorm::new(c1, vb.pp("conv2").pp("bn"))?,
            BatchNorm::new(c2, vb.pp("conv3").pp("bn"))?,
        ]));
        Ok(net)
    }

    /// The inference network: batch normalisation (if any) folded into the convolutions with its running
    /// statistics, weights detached from training.
    pub fn folded(&self) -> candle_core::Result<Self> {
        let Some(norms) = &self.norms else {
            return Ok(self.clone());
        };
        Ok(Self {
            conv1: norms[0].fold_into(&self.conv1)?,
            conv2: norms[1].fold_into(&self.conv2)?,
            conv3: norms[2].fold_into(&self.conv3)?,
            norms: None,
            int8: None,
            ..self.clone()
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
        let int8 = if conv1.weight().device().is_cpu() {
            Int8PatchNet::from_weight_set(cfg, set)?.map(Arc::new)
        } else {
            None
        };
        Ok(Self {
            int8,
            cfg: cfg.clone(),
            conv_stored_dtype: set.stored_float_dtype("conv1.weight"),
            conv1,
            conv2: set.conv("conv2", same_padding())?,
            conv3: set.conv("conv3", same_padding())?,
            fc1: set.linear("fc1")?,
            fc2: set.linear("fc2")?,
            norms: None,
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
        let out = self.outputs(x)?;
        if self.cfg.box_head {
            out.narrow(1, 0, self.cfg.num_classes)?.contiguous()
        } else {
            Ok(out)
        }
    }

    /// Every output of fc2: class logits, then the raw box outputs when the net has a box head.
    ///
    /// # Shapes
    /// `(b, 3, s, s)` → `(b, num_outputs)`.
    pub fn outputs(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        if self.norms.is_some() {
            return self.folded()?.outputs(x);
        }
        let b = x.dim(0)?;
        let x = self.normalised_input(x)?;
        if let Some(int8) = &self.int8 {
            return int8.logits(&x);
        }
        // (b, 3, s, s) -> (b, c0, s/2, s/2)
        let x = self.conv1.forward(&x)?.relu()?.max_pool2d(2)?;
        // (b, c0, s/2, s/2) -> (b, c1, s/4, s/4)
        let x = self.conv2.forward(&x)?.relu()?.max_pool2d(2)?;
        // (b, c1, s/4, s/4) -> (b, c2, s/8, s/8)
        let x = self.conv3.forward(&x)?.relu()?.max_pool2d(2)?;
        // (b, c2, s/8, s/8) -> (b, c2·(s/8)²)
        let x = x.reshape((b, self.cfg.flat_dim()))?.to_dtype(DType::F32)?;
        self.head(x, None)
    }

    /// Class logits for training: the same function as [`Self::logits`], computed with the activations in
    /// NHWC layout and every convolution as one matrix product over an im2col (see `train_ops`), whose
    /// backward pass is matrix products and a col2im: several times faster on the CPU than candle's
    /// conv2d backward.
    ///
    /// With `masks`, dropout: the flattened features are multiplied by the first `(b, flat_dim)` and the
    /// hidden activations by the second `(b, hidden)` (each value 0, or 1/(1−p) to keep the
    /// expectation). The trainer draws the masks from its own seeded RNG, so a run is reproducible where
    /// candle's random tensors are not.
    pub fn train_logits(
        &self,
        x: &Tensor,
        masks: Option<(&Tensor, &Tensor)>,
    ) -> candle_core::Result<Tensor> {
        let out = self.train_outputs(x, masks)?;
        if self.cfg.box_head {
            out.narrow(1, 0, self.cfg.num_classes)?.contiguous()
        } else {
            Ok(out)
        }
    }

    /// [`Self::train_logits`] with the box head's outputs after the class logits (`(b, num_outputs)`).
    pub fn train_outputs(
        &self,
        x: &Tensor,
        masks: Option<(&Tensor, &Tensor)>,
    ) -> candle_core::Result<Tensor> {
        let x = self.normalised_input(x)?;
        let b = x.dim(0)?;
        // (b, 3, s, s) -> (b, s, s, 3) -> (b, s/2, s/2, c0) -> (b, s/4, s/4, c1) -> (b, s/8, s/8, c2)
        let mut x = x.permute((0, 2, 3, 1))?;
        for (i, conv) in [&self.conv1, &self.conv2, &self.conv3]
            .into_iter()
            .enumerate()
        {
            x = match &self.norms {
                Some(norms) => conv_bn_block_nhwc(&x, conv, &norms[i])?,
                None => conv_block_nhwc(&x, conv)?,
            };
        }
        // Flatten in the NCHW order the fc1 weights are stored in.
        let x = x.permute((0, 3, 1, 2))?.reshape((b, self.cfg.flat_dim()))?;
        self.head(x.to_dtype(DType::F32)?, masks)
    }

    /// Checks the input shape, moves it to the weights' device and normalises it.
    fn normalised_input(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let s = self.cfg.input_side_px;
        let (_, c, h, w) = x.dims4()?;
        if c != 3 || h != s || w != s {
            candle_core::bail!(
                "patchnet input has shape {:?}, expected (b, 3, {s}, {s})",
                x.dims()
            );
        }
        // Patches are cut on the CPU by the focus stage; the weights may live on a GPU.
        let x = x.to_device(self.conv1.weight().device())?;
        match self.cfg.input_norm {
            InputNorm::Fixed => normalise_unit_rgb(&x.to_dtype(self.conv1.weight().dtype())?),
            // Statistics in f32, then the conv dtype.
            InputNorm::PerPatch => {
                normalise_per_patch(&x.to_dtype(DType::F32)?)?.to_dtype(self.conv1.weight().dtype())
            }
        }
    }

    /// fc1 → ReLU → fc2 on flattened features, with the dropout masks when given.
    fn head(&self, x: Tensor, masks: Option<(&Tensor, &Tensor)>) -> candle_core::Result<Tensor> {
        let mut x = x;
        if let Some((feature_mask, _)) = masks {
            x = x.mul(feature_mask)?;
        }
        // (b, flat) -> (b, hidden) -> (b, num_outputs)
        let mut x = self.fc1.forward(&x)?.relu()?;
        if let Some((_, hidden_mask)) = masks {
            x = x.mul(hidden_mask)?;
        }
        self.fc2.forward(&x)
    }

    /// Writes the (dequantised) weights as an f32 safetensors checkpoint with kind and config.
    pub fn save_safetensors(&self, path: &Path) -> Result<(), ModelError> {
        let tensors = self.named_tensors()?.into_iter().collect();
        let config_json = serde_json::to_string(&self.cfg).map_err(|e| ModelError::BadConfig {
            path: path.to_path_buf(),
            key: crate::format::CONFIG_KEY.into(),
            expected: "a serialisable patchnet config".into(),
            found: e.to_string(),
        })?;
        crate::format::write_safetensors(&tensors, &config_json, PATCHNET_KIND, path)
    }

    /// Layers in file order with their (dequantised, f32) weights, for saving and quantising.
    pub fn named_tensors(&self) -> candle_core::Result<Vec<(String, Tensor)>> {
        if self.norms.is_some() {
            return self.folded()?.named_tensors();
        }
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
        Ok(self.classify_with_boxes(patches)?.probs)
    }

    fn classify_with_boxes(&self, patches: &Tensor) -> Result<PatchVerdicts, ModelError> {
        let s = self.cfg.input_side_px;
        let dims = patches.dims();
        if dims.len() != 4 || dims[1] != 3 || dims[2] != s || dims[3] != s {
            return Err(ModelError::BadInput {
                expected: format!("(b, 3, {s}, {s})"),
                found: dims.to_vec(),
            });
        }
        if dims[0] == 0 {
            return Ok(PatchVerdicts {
                probs: Tensor::zeros((0, self.cfg.num_classes), DType::F32, patches.device())?,
                boxes: self.cfg.box_head.then(Vec::new),
            });
        }
        // (b, num_classes [+ 4]): class logits, then the box head's raw outputs when there is one.
        let out = self.outputs(&patches.to_dtype(DType::F32)?)?;
        if !self.cfg.box_head {
            return Ok(PatchVerdicts::without_boxes(
                candle_nn::ops::softmax_last_dim(&out)?,
            ));
        }
        let probs = candle_nn::ops::softmax_last_dim(
            &out.narrow(1, 0, self.cfg.num_classes)?.contiguous()?,
        )?;
        let raw = out
            .narrow(1, self.cfg.num_classes, BOX_OUTPUTS)?
            .to_dtype(DType::F32)?
            .to_vec2::<f32>()?;
        Ok(PatchVerdicts {
            probs,
            boxes: Some(raw.iter().map(|r| decode_patch_box(r)).collect()),
        })
    }

    /// On the Q8_0 integer path: normalisation, forward pass, softmax and boxes on slices, into `out`'s
    /// buffers (nothing allocated once they and this thread's scratch have grown). Otherwise (float or GPU
    /// weights) the tensor path.
    fn classify_into(
        &self,
        patches_chw: &[f32],
        batch: usize,
        out: &mut crate::PatchRows,
    ) -> Result<(), ModelError> {
        let s = self.cfg.input_side_px;
        let int8 = match &self.int8 {
            Some(int8) if self.norms.is_none() => int8,
            _ => {
                let patches =
                    Tensor::from_slice(patches_chw, (batch, 3, s, s), &candle_core::Device::Cpu)
                        .map_err(|_| ModelError::BadInput {
                            expected: format!(
                                "({batch}, 3, {s}, {s}) = {} values",
                                batch * 3 * s * s
                            ),
                            found: vec![patches_chw.len()],
                        })?;
                return out.fill_from(&self.classify_with_boxes(&patches)?);
            }
        };
        if patches_chw.len() != batch * 3 * s * s {
            return Err(ModelError::BadInput {
                expected: format!("({batch}, 3, {s}, {s}) = {} values", batch * 3 * s * s),
                found: vec![patches_chw.len()],
            });
        }
        let norm = match self.cfg.input_norm {
            InputNorm::Fixed => SliceNorm::Fixed,
            InputNorm::PerPatch => SliceNorm::PerPatch,
        };
        out.clear();
        out.has_boxes = self.cfg.box_head;
        let (classes, outputs) = (self.cfg.num_classes, self.cfg.num_outputs());
        int8.with_outputs(patches_chw, batch, norm, |rows| {
            for row in rows.chunks_exact(outputs) {
                softmax_extend(&row[..classes], &mut out.probs);
                if self.cfg.box_head {
                    out.boxes.push(decode_patch_box(&row[classes..]));
                }
            }
        })?;
        Ok(())
    }

    fn mflops_per_patch(&self) -> f64 {
        total_mflops(&self.cfg.layer_costs())
    }

    fn describe(&self) -> String {
        if self.int8.is_some() {
            return format!(
                "patchnet {s}×{s} conv {:?} (conv1 {:?}, conv2–3 Q8_0) → fc {} (Q8_0) → {} (Q8_0), integer kernels, {:.2} MFLOP/patch",
                self.cfg.channels,
                self.conv_stored_dtype,
                self.cfg.hidden,
                self.cfg.num_classes,
                self.mflops_per_patch(),
                s = self.cfg.input_side_px,
            );
        }
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::format::QuantDtype;
    use crate::testutil::{
        batch_norm_relu_nchw, flat, max_abs_diff, naive_conv2d, naive_linear, naive_maxpool2,
        random_tensor, relu, set_batch_norm_params, varmap_builder,
    };

    fn small_cfg() -> PatchNetConfig {
        PatchNetConfig {
            input_side_px: 16,
            channels: [4, 8, 8],
            hidden: 32,
            num_classes: NUM_CLASSES,
            input_norm: InputNorm::Fixed,
            box_head: false,
        }
    }

    /// Runs the whole net with the naive loops, from the tensors of `net`.
    fn naive_logits(net: &PatchNet, x: &Tensor) -> Vec<f32> {
        let cfg = net.config();
        let tensors: std::collections::HashMap<String, Vec<f32>> = net
            .named_tensors()
            .unwrap()
            .into_iter()
            .map(|(n, t)| (n, flat(&t)))
            .collect();
        let (b, _, s, _) = x.dims4().unwrap();
        let mut v: Vec<f32> = flat(x).iter().map(|p| (p - 0.5) / 0.25).collect();
        let mut dims = (b, 3, s, s);
        for (name, c_out) in ["conv1", "conv2", "conv3"].iter().zip(cfg.channels) {
            let (mut y, d) = naive_conv2d(
                &v,
                dims,
                &tensors[&format!("{name}.weight")],
                &tensors[&format!("{name}.bias")],
                c_out,
                3,
                1,
                1,
            );
            relu(&mut y);
            (v, dims) = naive_maxpool2(&y, d);
        }
        let mut h = naive_linear(
            &v,
            b,
            &tensors["fc1.weight"],
            &tensors["fc1.bias"],
            cfg.hidden,
        );
        relu(&mut h);
        naive_linear(
            &h,
            b,
            &tensors["fc2.weight"],
            &tensors["fc2.bias"],
            cfg.num_classes,
        )
    }

    /// A 16×16, 5-class net with random weights and the given input normalisation (the VarMap keeps the
    /// variables alive).
    fn tiny_net(input_norm: InputNorm) -> (candle_nn::VarMap, PatchNet) {
        let cfg = PatchNetConfig {
            input_side_px: 16,
            channels: [4, 4, 8],
            hidden: 8,
            num_classes: 5,
            input_norm,
            box_head: false,
        };
        let (varmap, vb) = varmap_builder();
        (varmap, PatchNet::new(&cfg, vb).unwrap())
    }

    #[test]
    fn per_patch_norm_ignores_exposure_and_old_configs_stay_fixed() {
        let (_vm, net) = tiny_net(InputNorm::PerPatch);
        let x = Tensor::rand(0.2f32, 0.6f32, (2, 3, 16, 16), &Device::Cpu).unwrap();
        // Same patch, darker and with less contrast: 0.5·x + 0.1.
        let dim = x.affine(0.5, 0.1).unwrap();
        let a = flat(&net.logits(&x).unwrap());
        let b = flat(&net.logits(&dim).unwrap());
        for (p, q) in a.iter().zip(&b) {
            assert!((p - q).abs() < 2e-3 * (1.0 + p.abs()), "{p} vs {q}");
        }
        let old: PatchNetConfig = serde_json::from_str(
            r#"{"input_side_px":32,"channels":[16,32,32],"hidden":128,"num_classes":44}"#,
        )
        .unwrap();
        assert_eq!(old.input_norm, InputNorm::Fixed);
        let json = serde_json::to_string(net.config()).unwrap();
        assert!(json.contains(r#""input_norm":"per_patch""#), "{json}");
    }

    #[test]
    fn dropout_with_all_ones_masks_equals_plain_logits() {
        let (_vm, net) = tiny_net(InputNorm::Fixed);
        let x = Tensor::rand(0f32, 1f32, (2, 3, 16, 16), &Device::Cpu).unwrap();
        let ones_f = Tensor::ones((2, net.config().flat_dim()), DType::F32, &Device::Cpu).unwrap();
        let ones_h = Tensor::ones((2, 8), DType::F32, &Device::Cpu).unwrap();
        let zeros_h = Tensor::zeros((2, 8), DType::F32, &Device::Cpu).unwrap();
        let plain = flat(&net.train_logits(&x, None).unwrap());
        let masked = flat(&net.train_logits(&x, Some((&ones_f, &ones_h))).unwrap());
        assert_eq!(plain, masked);
        // With the hidden layer dropped entirely only fc2's bias is left: both rows equal.
        let dropped = net
            .train_logits(&x, Some((&ones_f, &zeros_h)))
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        assert_eq!(dropped[0], dropped[1]);
    }

    #[test]
    fn conv_layer_matches_naive_loops() {
        let (_vm, vb) = varmap_builder();
        let conv = candle_nn::conv2d(3, 5, 3, same_padding(), vb.pp("c")).unwrap();
        let x = random_tensor(&[2, 3, 7, 6], -1.0, 1.0, 11);
        let got = flat(&conv.forward(&x).unwrap());
        let (want, _) = naive_conv2d(
            &flat(&x),
            (2, 3, 7, 6),
            &flat(conv.weight()),
            &flat(conv.bias().unwrap()),
            5,
            3,
            1,
            1,
        );
        assert!(max_abs_diff(&got, &want) <= 1e-4);
    }

    #[test]
    fn maxpool_matches_naive_loops() {
        let x = random_tensor(&[2, 3, 6, 8], -1.0, 1.0, 12);
        let got = flat(&x.max_pool2d(2).unwrap());
        let (want, _) = naive_maxpool2(&flat(&x), (2, 3, 6, 8));
        assert_eq!(got, want);
    }

    #[test]
    fn whole_net_matches_naive_loops() {
        let (_vm, vb) = varmap_builder();
        let net = PatchNet::new(&small_cfg(), vb).unwrap();
        let x = random_tensor(&[3, 3, 16, 16], 0.0, 1.0, 13);
        let got = flat(&net.logits(&x).unwrap());
        assert_eq!(got.len(), 3 * NUM_CLASSES);
        assert!(max_abs_diff(&got, &naive_logits(&net, &x)) <= 1e-4);
    }

    /// The training graph (NHWC, convolutions as matrix products) computes the same logits as the
    /// inference graph (candle's conv2d), and its gradients, with and without dropout, agree with
    /// central finite differences. (candle's own max_pool2d backward scales the gradient of a window's
    /// unique maximum by 1/4, so the conv2d graph's conv gradients are 4^k times too small; Adam's
    /// per-parameter normalisation hides that, a gradient check does not.)
    #[test]
    fn train_logits_match_logits_and_finite_differences() {
        let cfg = PatchNetConfig {
            input_norm: InputNorm::PerPatch,
            box_head: false,
            ..small_cfg()
        };
        let (varmap, vb) = varmap_builder();
        let net = PatchNet::new(&cfg, vb).unwrap();
        crate::testutil::seed_vars(&varmap, 100);
        let plain = net.train_logits(&x_for_gradients(), None).unwrap();
        let want = net.logits(&x_for_gradients()).unwrap();
        assert!(max_abs_diff(&flat(&plain), &flat(&want)) <= 1e-4);
        check_train_gradients(&net, &varmap, &cfg);
    }

    /// Batch normalisation's backward pass (through the batch statistics) against finite differences, on
    /// seeded variables. (With larger initial weights the finite differences stop converging: a step of a
    /// batch-norm parameter moves every activation of its channel at once, and the steps cross many ReLU
    /// and max-pool kinks; `batch_norm_train_logits_match_tensor_ops` checks every gradient exactly.)
    #[test]
    fn batch_norm_train_logits_match_finite_differences() {
        let cfg = PatchNetConfig {
            input_norm: InputNorm::PerPatch,
            box_head: false,
            ..small_cfg()
        };
        let (varmap, vb) = varmap_builder();
        let net = PatchNet::new_with_batch_norm(&cfg, vb).unwrap();
        crate::testutil::seed_vars(&varmap, 100);
        assert_eq!(set_batch_norm_params(&varmap, 22), 6);
        check_train_gradients(&net, &varmap, &cfg);
    }

    /// The classifier with batch normalisation from candle tensor ops in NCHW (conv2d, statistics over
    /// batch and space, max-pooling as a max over reshaped windows): the reference for the training graph.
    fn batch_norm_reference_logits(net: &PatchNet, x: &Tensor) -> Tensor {
        let norms = net.norms.as_ref().unwrap();
        let b = x.dim(0).unwrap();
        let mut x = net.normalised_input(x).unwrap();
        for (i, conv) in [&net.conv1, &net.conv2, &net.conv3].into_iter().enumerate() {
            let y = x.conv2d(conv.weight(), 1, 1, 1, 1).unwrap();
            let (_, c, h, w) = y.dims4().unwrap();
            let z = batch_norm_relu_nchw(&y, &norms[i]);
            x = z
                .reshape((b, c, h / 2, 2, w / 2, 2))
                .unwrap()
                .max(5)
                .unwrap()
                .max(3)
                .unwrap();
        }
        net.head(x.reshape((b, net.cfg.flat_dim())).unwrap(), None)
            .unwrap()
    }

    /// Every gradient of the batch-normalised training graph equals the tensor-op reference's, for
    /// several initialisations (candle's own initialiser included).
    #[test]
    fn batch_norm_train_logits_match_tensor_ops() {
        let cfg = PatchNetConfig {
            input_norm: InputNorm::PerPatch,
            box_head: false,
            ..small_cfg()
        };
        for seed in [None, Some(1), Some(2), Some(3)] {
            let (varmap, vb) = varmap_builder();
            let net = PatchNet::new_with_batch_norm(&cfg, vb).unwrap();
            if let Some(seed) = seed {
                crate::testutil::seed_vars(&varmap, seed);
            }
            assert_eq!(set_batch_norm_params(&varmap, 22), 6);
            let x = x_for_gradients();
            let got = net.train_logits(&x, None).unwrap();
            let want = batch_norm_reference_logits(&net, &x);
            assert!(max_abs_diff(&flat(&got), &flat(&want)) <= 1e-4);
            let weights = random_tensor(&[3, NUM_CLASSES], -1.0, 1.0, 20);
            let grads_got = crate::testutil::weighted_grads(&got, &weights);
            let grads_want = crate::testutil::weighted_grads(&want, &weights);
            let mut checked = 0;
            for (name, var) in varmap.data().lock().unwrap().iter() {
                if name.starts_with("conv") && name.ends_with(".bias") {
                    assert!(grads_got.get(var.as_tensor()).is_none(), "{name}");
                    continue;
                }
                let a = flat(grads_got.get(var.as_tensor()).unwrap());
                let b = flat(grads_want.get(var.as_tensor()).unwrap());
                let scale = b.iter().fold(1e-3f32, |m, v| m.max(v.abs()));
                assert!(
                    max_abs_diff(&a, &b) <= 1e-4 * scale.max(1.0),
                    "seed {seed:?}: gradient of {name} differs by {}",
                    max_abs_diff(&a, &b)
                );
                checked += 1;
            }
            // 3 kernels, 6 batch-norm parameters, fc1 and fc2 weights and biases.
            assert_eq!(checked, 3 + 6 + 4, "seed {seed:?}");
        }
    }

    /// Once the running statistics have converged to a batch's, the folded network (what `logits`, the
    /// saved file and every consumer see) computes what training computed on that batch.
    #[test]
    fn batch_norm_folds_into_the_saved_convolutions() {
        let cfg = PatchNetConfig {
            input_norm: InputNorm::PerPatch,
            box_head: false,
            ..small_cfg()
        };
        let (varmap, vb) = varmap_builder();
        let net = PatchNet::new_with_batch_norm(&cfg, vb).unwrap();
        assert_eq!(set_batch_norm_params(&varmap, 22), 6);
        let x = random_tensor(&[6, 3, 16, 16], 0.0, 1.0, 23);
        let before = flat(&net.logits(&x).unwrap());
        let mut trained = Vec::new();
        for _ in 0..200 {
            trained = flat(&net.train_logits(&x, None).unwrap());
        }
        let folded = flat(&net.logits(&x).unwrap());
        assert!(
            max_abs_diff(&before, &trained) > 0.1,
            "the running statistics must matter"
        );
        assert!(
            max_abs_diff(&folded, &trained) <= 1e-3,
            "{}",
            max_abs_diff(&folded, &trained)
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bn.safetensors");
        net.save_safetensors(&path).unwrap();
        let loaded = PatchNet::load(&path, &Device::Cpu).unwrap();
        assert!(max_abs_diff(&flat(&loaded.logits(&x).unwrap()), &folded) <= 1e-5);
        let names: Vec<String> = net
            .named_tensors()
            .unwrap()
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert!(names.iter().all(|n| !n.contains("bn")), "{names:?}");
    }

    fn x_for_gradients() -> Tensor {
        random_tensor(&[3, 3, 16, 16], 0.0, 1.0, 17)
    }

    /// Backprop through [`PatchNet::train_logits`], with and without dropout, against central finite
    /// differences of a few entries of every variable.
    fn check_train_gradients(net: &PatchNet, varmap: &candle_nn::VarMap, cfg: &PatchNetConfig) {
        let x = x_for_gradients();
        let mask = |n: usize, seed: u64| {
            (random_tensor(&[3, n], 0.0, 2.0, seed).ge(1.0).unwrap())
                .to_dtype(DType::F32)
                .unwrap()
        };
        let (features, hidden) = (mask(cfg.flat_dim(), 18), mask(cfg.hidden, 19));
        // A loss that weighs every logit differently, so every gradient entry matters.
        let weights = random_tensor(&[3, NUM_CLASSES], -1.0, 1.0, 20);
        for masks in [None, Some((&features, &hidden))] {
            let got = net.train_logits(&x, masks).unwrap();
            let loss = |net: &PatchNet| -> f64 {
                let logits = net.train_logits(&x, masks).unwrap();
                let l = logits.mul(&weights).unwrap().sum_all().unwrap();
                l.to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap()
            };
            let grads = crate::testutil::weighted_grads(&got, &weights);
            for var in varmap.all_vars() {
                let original = flat(var.as_tensor());
                // No gradient: the variable is not in the graph (a conv bias under batch norm), so the
                // finite differences must be zero too.
                let grad = grads
                    .get(var.as_tensor())
                    .map(flat)
                    .unwrap_or_else(|| vec![0.0; original.len()]);
                // The largest entry and two others.
                let largest = (0..grad.len())
                    .max_by(|&i, &j| grad[i].abs().total_cmp(&grad[j].abs()))
                    .unwrap();
                for i in [largest, grad.len() / 3, grad.len() - 1] {
                    let probe = |delta: f32| {
                        let mut v = original.clone();
                        v[i] += delta;
                        var.set(&Tensor::from_vec(v, var.shape(), &Device::Cpu).unwrap())
                            .unwrap();
                        loss(net)
                    };
                    // ReLU and max-pool make the loss piecewise linear: a step may cross a kink, so
                    // one of five step sizes has to agree within 3 % (plus f32 rounding).
                    let numeric: Vec<f32> = [1e-2f32, 3e-3, 1e-3, 3e-4, 1e-4]
                        .iter()
                        .map(|&h| ((probe(h) - probe(-h)) / (2.0 * h as f64)) as f32)
                        .collect();
                    var.set(
                        &Tensor::from_vec(original.clone(), var.shape(), &Device::Cpu).unwrap(),
                    )
                    .unwrap();
                    assert!(
                        numeric
                            .iter()
                            .any(|n| (n - grad[i]).abs() <= 0.03 * grad[i].abs() + 1e-2),
                        "d loss / d {:?}[{i}]: backprop {} vs finite differences {numeric:?}",
                        var.shape(),
                        grad[i]
                    );
                }
            }
        }
    }

    #[test]
    fn classify_returns_probabilities_and_rejects_bad_shapes() {
        let (_vm, vb) = varmap_builder();
        let net = PatchNet::new(&PatchNetConfig::default(), vb).unwrap();
        let probs = net
            .classify(&random_tensor(&[4, 3, 32, 32], 0.0, 1.0, 14))
            .unwrap();
        assert_eq!(probs.dims(), [4, NUM_CLASSES]);
        for row in probs.to_vec2::<f32>().unwrap() {
            assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5);
        }
        for bad in [
            vec![4, 3, 32, 31],
            vec![4, 1, 32, 32],
            vec![3, 32, 32],
            vec![1, 3, 16, 16],
        ] {
            let err = net
                .classify(&Tensor::zeros(bad.as_slice(), DType::F32, &Device::Cpu).unwrap())
                .unwrap_err();
            assert!(
                matches!(err, ModelError::BadInput { ref found, .. } if *found == bad),
                "{err}"
            );
        }
        let empty = net
            .classify(&Tensor::zeros((0, 3, 32, 32), DType::F32, &Device::Cpu).unwrap())
            .unwrap();
        assert_eq!(empty.dims(), [0, NUM_CLASSES]);
    }

    #[test]
    fn mflops_per_patch_matches_hand_count() {
        let (_vm, vb) = varmap_builder();
        let net = PatchNet::new(&PatchNetConfig::default(), vb).unwrap();
        // conv1 2·27·32·32·32 + conv2 2·288·64·16·16 + conv3 2·576·64·8·8 + fc1 2·1024·256 + fc2 2·256·44
        let hand = 1_769_472 + 9_437_184 + 4_718_592 + 524_288 + 22_528;
        assert!((net.mflops_per_patch() - hand as f64 / 1e6).abs() < 1e-9);
        assert!(net.describe().contains("16.47 MFLOP"), "{}", net.describe());
    }

    #[test]
    fn invalid_config_is_rejected() {
        let (_vm, vb) = varmap_builder();
        let cfg = PatchNetConfig {
            input_side_px: 30,
            ..PatchNetConfig::default()
        };
        assert!(PatchNet::new(&cfg, vb).is_err());
    }

    fn softmax_rows(logits: &Tensor) -> Vec<f32> {
        flat(&candle_nn::ops::softmax_last_dim(logits).unwrap())
    }

    #[test]
    fn safetensors_round_trip_gives_identical_outputs() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("patch.safetensors");
        let (varmap, vb) = varmap_builder();
        let cfg = PatchNetConfig::default();
        let net = PatchNet::new(&cfg, vb).unwrap();
        // The trainer's path: the VarMap's tensors plus the config JSON.
        let tensors = varmap
            .data()
            .lock()
            .unwrap()
            .iter()
            .map(|(n, v)| (n.clone(), v.as_tensor().clone()))
            .collect();
        crate::format::write_safetensors(
            &tensors,
            &serde_json::to_string(&cfg).unwrap(),
            PATCHNET_KIND,
            &path,
        )
        .unwrap();
        let loaded = PatchNet::load(&path, &Device::Cpu).unwrap();
        assert_eq!(loaded.config(), &cfg);
        let x = random_tensor(&[5, 3, 32, 32], 0.0, 1.0, 15);
        assert_eq!(
            flat(&net.logits(&x).unwrap()),
            flat(&loaded.logits(&x).unwrap())
        );
    }

    /// A net of `cfg` with seeded weights instead of candle's unseeded initialiser: weights uniform in
    /// ±`scale`/sqrt(fan_in) (PyTorch's default bound at scale 1), biases ±0.1; variable `i` in name order
    /// draws from seed `first_seed + i`.
    fn seeded_net(cfg: &PatchNetConfig, scale: f32, first_seed: u64) -> PatchNet {
        let (vm, vb) = varmap_builder();
        PatchNet::new(cfg, vb).unwrap();
        let mut names: Vec<(String, Vec<usize>)> = vm
            .data()
            .lock()
            .unwrap()
            .iter()
            .map(|(n, v)| (n.clone(), v.as_tensor().dims().to_vec()))
            .collect();
        names.sort();
        let seeded: std::collections::HashMap<String, Tensor> = names
            .into_iter()
            .enumerate()
            .map(|(i, (name, dims))| {
                let fan_in: usize = dims.iter().skip(1).product();
                let a = if dims.len() > 1 {
                    scale / (fan_in as f32).sqrt()
                } else {
                    0.1
                };
                (name, random_tensor(&dims, -a, a, first_seed + i as u64))
            })
            .collect();
        PatchNet::new(
            cfg,
            VarBuilder::from_tensors(seeded, DType::F32, &Device::Cpu),
        )
        .unwrap()
    }

    #[test]
    fn patch_box_encoding_round_trips_and_clamps_wild_outputs() {
        for b in [
            [0.1f32, 0.2, 0.9, 0.7],
            [0.3, 0.3, 0.5, 0.6],
            [-0.2, 0.0, 0.6, 1.3],
        ] {
            let d = decode_patch_box(&encode_patch_box(b));
            for (x, y) in d.iter().zip(b) {
                assert!((x - y).abs() < 1e-5, "{b:?} -> {d:?}");
            }
        }
        let wild = decode_patch_box(&[f32::NAN, 1e9, -1e9, f32::INFINITY]);
        assert!(wild.iter().all(|v| v.is_finite()), "{wild:?}");
        assert!(wild[2] - wild[0] >= 1.0 / 64.0 - 1e-6 && wild[3] - wild[1] <= 4.0 + 1e-6);
        // Zero outputs: the sign fills the patch, centred.
        assert_eq!(decode_patch_box(&[0.0; 4]), [0.0, 0.0, 1.0, 1.0]);
    }

    #[test]
    fn box_head_adds_four_outputs_that_survive_saving_and_q8_0() {
        let cfg = PatchNetConfig {
            box_head: true,
            ..small_cfg()
        };
        assert_eq!(cfg.num_outputs(), NUM_CLASSES + BOX_OUTPUTS);
        let specs = cfg.tensor_specs();
        let fc2 = specs.iter().find(|s| s.name == "fc2.weight").unwrap();
        assert_eq!(fc2.shape, vec![NUM_CLASSES + BOX_OUTPUTS, cfg.hidden]);
        // Files without the key have no box head.
        let old: PatchNetConfig = serde_json::from_str(
            r#"{"input_side_px":32,"channels":[16,32,32],"hidden":128,"num_classes":44}"#,
        )
        .unwrap();
        assert!(!old.box_head);
        let dir = tempfile::tempdir().unwrap();
        // Seeded weights of the usual scale (candle's initialiser is unseeded, and a wild box output would be
        // clamped, hiding or inventing differences).
        let net = seeded_net(&cfg, 1.0, 500);
        let x = random_tensor(&[5, 3, 16, 16], 0.0, 1.0, 5);
        let want = net.classify_with_boxes(&x).unwrap();
        assert_eq!(want.probs.dims(), &[5, NUM_CLASSES]);
        let want_boxes = want.boxes.unwrap();
        assert_eq!(want_boxes.len(), 5);
        // The class probabilities are those of `classify`, untouched by the box rows.
        assert_eq!(flat(&want.probs), flat(&net.classify(&x).unwrap()));
        let path = dir.path().join("p.safetensors");
        net.save_safetensors(&path).unwrap();
        let q8 = dir.path().join("p.gguf");
        crate::registry::quantize_file(&path, &q8, QuantDtype::Q8_0).unwrap();
        for (file, tol) in [(&path, 1e-5f32), (&q8, 0.03)] {
            let loaded = PatchNet::load(file, &Device::Cpu).unwrap();
            assert!(loaded.config().box_head);
            let got = loaded.classify_with_boxes(&x).unwrap().boxes.unwrap();
            for (g, w) in got.iter().zip(&want_boxes) {
                for (a, b) in g.iter().zip(w) {
                    assert!(
                        (a - b).abs() <= tol * (1.0 + b.abs()),
                        "{file:?}: {g:?} vs {w:?}"
                    );
                }
            }
        }
        // A net without a box head reports none.
        let (_vm2, vb2) = varmap_builder();
        let plain = PatchNet::new(&small_cfg(), vb2).unwrap();
        assert!(plain.classify_with_boxes(&x).unwrap().boxes.is_none());
    }

    /// Float vs quantised on seeded random weights (bound 2/sqrt(fan_in), so the softmax is neither flat nor
    /// saturated): max |Δ softmax| over a batch. Measured: f16 0.0003, Q8_0 0.016 (integer path: weights
    /// with one scale per row, activations rounded per patch), Q4_0 0.043, Q4K 0.045; the bounds are
    /// 2–7× that: f16 0.002, Q8_0 0.04, 4-bit 0.15. Same seeds every run, so the outcome is fixed.
    #[test]
    fn quantised_files_stay_close_to_float() {
        let dir = tempfile::tempdir().unwrap();
        let float_path = dir.path().join("patch.safetensors");
        // Seeded weights of twice the usual scale (bound 2/sqrt(fan_in)), so the softmax is neither flat nor
        // saturated, and the measured error and the test's outcome are the same on every run.
        let net = seeded_net(&PatchNetConfig::default(), 2.0, 1000);
        net.save_safetensors(&float_path).unwrap();
        let x = random_tensor(&[16, 3, 32, 32], 0.0, 1.0, 16);
        let want = softmax_rows(&net.logits(&x).unwrap());
        for (dtype, tolerance) in [
            (QuantDtype::F16, 0.002),
            (QuantDtype::Q8_0, 0.04),
            (QuantDtype::Q4_0, 0.15),
            (QuantDtype::Q4K, 0.15),
        ] {
            let path = dir.path().join(format!("patch-{dtype}.gguf"));
            let report = crate::registry::quantize_file(&float_path, &path, dtype).unwrap();
            assert!(report.fallbacks.is_empty(), "{report}");
            let q = PatchNet::load(&path, &Device::Cpu).unwrap();
            assert_eq!(q.fc1.weight_dtype(), dtype.ggml());
            assert_eq!(q.int8.is_some(), dtype == QuantDtype::Q8_0);
            let got = softmax_rows(&q.logits(&x).unwrap());
            if q.int8.is_some() {
                // The same Q8_0 weights through candle's float convs and QMatMul: what differs is only the
                // integer path's activation rounding, so a wrong im2col order or column permutation shows.
                let candle_path = PatchNet {
                    int8: None,
                    ..q.clone()
                };
                let reference = softmax_rows(&candle_path.logits(&x).unwrap());
                let d = max_abs_diff(&got, &reference);
                eprintln!("q8_0 integer path vs candle path: max |Δ softmax| = {d:.5}");
                // Measured 0.0093.
                assert!(d <= 0.02, "integer path differs from candle's by {d}");
            }
            let diff = max_abs_diff(&got, &want);
            eprintln!(
                "{dtype}: max |Δ softmax| = {diff:.5}, file {} B",
                report.output_file_bytes
            );
            assert!(diff <= tolerance, "{dtype}: {diff} > {tolerance}");
        }
    }

    /// The shipped Q8_0 net on its integer path (its scratch is per thread, not behind a lock).
    fn shipped_q8_0() -> PatchNet {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("weights")
            .join("patchnet.q8_0.gguf");
        let net = PatchNet::load(&path, &Device::Cpu).unwrap();
        assert!(
            net.int8.is_some(),
            "{} is not on the integer path",
            path.display()
        );
        net
    }

    /// The slice path (`classify_into`: per-patch normalisation in place, forward pass, softmax, boxes) gives
    /// what the tensor path gives: logits within 1e-5 (the same bits where candle sums with AVX2), so the
    /// probabilities and boxes too; a flat patch (deviation under the floor) included.
    #[test]
    fn classify_into_matches_the_tensor_path_on_the_integer_net() {
        let net = shipped_q8_0();
        let side = net.input_side_px();
        let x = random_tensor(&[9, 3, side, side], 0.0, 1.0, 77);
        let mut values = flat(&x);
        // Patch 0 nearly flat: its deviation is floored.
        for v in &mut values[..3 * side * side] {
            *v = 0.5 + (*v - 0.5) * 0.01;
        }
        let x = Tensor::from_vec(values.clone(), (9, 3, side, side), &Device::Cpu).unwrap();
        let want_logits = flat(&net.outputs(&x).unwrap());
        let want = net.classify_with_boxes(&x).unwrap();
        let mut rows = crate::PatchRows::default();
        net.classify_into(&values, 9, &mut rows).unwrap();
        // The slice path's logits, recovered from its probabilities, are checked through the probabilities:
        // softmax is 1-Lipschitz, so a logit error of ε moves a probability by at most ε.
        let d = max_abs_diff(&rows.probs, &flat(&want.probs));
        assert!(d <= 1e-5, "probabilities differ by {d}");
        let want_boxes = want.boxes.unwrap();
        assert_eq!(rows.has_boxes, net.cfg.box_head);
        for (a, b) in rows.boxes.iter().zip(&want_boxes) {
            assert!(max_abs_diff(a, b) <= 1e-5, "{a:?} vs {b:?}");
        }
        // And the logits themselves, through the integer net's own entry on slices.
        let norm = match net.cfg.input_norm {
            InputNorm::Fixed => SliceNorm::Fixed,
            InputNorm::PerPatch => SliceNorm::PerPatch,
        };
        let got_logits = net
            .int8
            .as_ref()
            .unwrap()
            .with_outputs(&values, 9, norm, |l| l.to_vec())
            .unwrap();
        let d = max_abs_diff(&got_logits, &want_logits);
        assert!(d <= 1e-5, "logits differ by {d}");
        // A wrong length is refused naming both.
        let e = net
            .classify_into(&values[1..], 9, &mut rows)
            .unwrap_err()
            .to_string();
        assert!(e.contains("(9, 3, 32, 32)") && e.contains("27647"), "{e}");
    }

    #[test]
    fn the_integer_net_classifies_from_several_threads_at_once_as_it_does_alone() {
        let net = shipped_q8_0();
        let side = net.input_side_px();
        let inputs: Vec<Tensor> = (0..4)
            .map(|i| random_tensor(&[3 + i, 3, side, side], 0.0, 1.0, 40 + i as u64))
            .collect();
        let alone: Vec<Vec<f32>> = inputs
            .iter()
            .map(|x| flat(&net.classify(x).unwrap()))
            .collect();
        let barrier = std::sync::Barrier::new(inputs.len());
        std::thread::scope(|scope| {
            for (x, want) in inputs.iter().zip(&alone) {
                let (net, barrier) = (&net, &barrier);
                scope.spawn(move || {
                    barrier.wait();
                    for _ in 0..5 {
                        assert_eq!(&flat(&net.classify(x).unwrap()), want);
                    }
                });
            }
        });
    }

    #[test]
    fn a_patch_gets_the_same_verdict_in_any_batch() {
        // What lets a batching stage concatenate several sources' patches: rows do not mix.
        let net = shipped_q8_0();
        let side = net.input_side_px();
        let a = random_tensor(&[2, 3, side, side], 0.0, 1.0, 7);
        let b = random_tensor(&[5, 3, side, side], 0.0, 1.0, 8);
        let both = Tensor::cat(&[&a, &b], 0).unwrap();
        let together = flat(&net.classify(&both).unwrap());
        let apart = [
            flat(&net.classify(&a).unwrap()),
            flat(&net.classify(&b).unwrap()),
        ]
        .concat();
        let d = max_abs_diff(&together, &apart);
        assert!(d <= 1e-5, "max |Δ softmax| {d} between one batch and two");
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod timing {
    use super::*;
    use crate::format::QuantDtype;
    use crate::testutil::{random_tensor, varmap_builder};

    /// Rough latency check without a release build (candle itself is built at opt-level 3 in dev):
    /// `cargo test -p saccade-models --lib timing -- --ignored --nocapture`. The criterion bench
    /// `benches/backbone.rs` is the reference measurement.
    #[test]
    #[ignore]
    fn print_patchnet_latency_per_format() {
        let dir = tempfile::tempdir().unwrap();
        let (_vm, vb) = varmap_builder();
        let net = PatchNet::new(&PatchNetConfig::default(), vb).unwrap();
        let float_path = dir.path().join("f32.safetensors");
        net.save_safetensors(&float_path).unwrap();
        let mut nets = vec![("f32", net)];
        for dtype in [QuantDtype::Q8_0, QuantDtype::Q4_0] {
            let path = dir.path().join(format!("{dtype}.gguf"));
            crate::registry::quantize_file(&float_path, &path, dtype).unwrap();
            nets.push((
                if dtype == QuantDtype::Q8_0 {
                    "q8_0"
                } else {
                    "q4_0"
                },
                PatchNet::load(&path, &Device::Cpu).unwrap(),
            ));
        }
        for batch in [1usize, 8, 32] {
            let x = random_tensor(&[batch, 3, 32, 32], 0.0, 1.0, 31);
            for (label, net) in &nets {
                net.classify(&x).unwrap();
                let reps = 20;
                let start = std::time::Instant::now();
                for _ in 0..reps {
                    net.classify(&x).unwrap();
                }
                let ms = start.elapsed().as_secs_f64() * 1e3 / reps as f64;
                eprintln!("batch {batch:>2} {label}: {ms:.3} ms");
            }
        }
    }
}
