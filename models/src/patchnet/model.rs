//! The patch classifier network ([`PatchNet`]): built from a `VarBuilder` for training or from a weight
//! file, run through candle or, for Q8_0 files on the CPU, the integer plan.

use super::config::{decode_patch_box, PatchNetConfig, BOX_OUTPUTS, PATCHNET_KIND};
use super::int8::{Int8PatchNet, SliceNorm};
use crate::flops::total_mflops;
use crate::format::WeightSet;
use crate::input_norm::{normalise_per_patch, normalise_unit_rgb, InputNorm};
use crate::linear::QLinear;
use crate::slice_ops::softmax_extend;
use crate::state::{in_state, ModelState};
use crate::train_norms::TrainNorms;
use crate::{ModelError, PatchClassifier, PatchVerdicts};
use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Conv2d, VarBuilder};
use std::path::Path;
use std::sync::Arc;

/// The patch classifier network.
///
/// # Shapes
/// input `(b, 3, s, s)` f32 RGB in 0..1 → logits `(b, num_classes)`.
#[derive(Debug, Clone)]
pub struct PatchNet {
    pub(super) cfg: PatchNetConfig,
    pub(super) conv1: Conv2d,
    pub(super) conv2: Conv2d,
    pub(super) conv3: Conv2d,
    pub(super) fc1: QLinear,
    pub(super) fc2: QLinear,
    /// Dtype the conv weights were stored in (they are computed in the dtype of `conv1.weight`).
    pub(super) conv_stored_dtype: DType,
    /// The integer forward pass, for Q8_0 files on the CPU.
    pub(super) int8: Option<Arc<Int8PatchNet>>,
    /// Batch normalisation of the three convolutions while training ([`Self::new_with_batch_norm`]);
    /// folded into the convolutions for inference and saving.
    pub(super) norms: TrainNorms<3>,
}

impl PatchNet {
    /// Builds the network from `vb` (a `VarMap` for training, or stored float tensors).
    pub fn new(cfg: &PatchNetConfig, vb: VarBuilder) -> candle_core::Result<Self> {
        if let Err(message) = cfg.validate() {
            candle_core::bail!("patchnet config: {message}");
        }
        let layers = cfg.layers();
        let conv1 = layers[0].new_conv(&vb)?;
        Ok(Self {
            cfg: cfg.clone(),
            conv_stored_dtype: conv1.weight().dtype(),
            conv1,
            conv2: layers[1].new_conv(&vb)?,
            conv3: layers[2].new_conv(&vb)?,
            fc1: layers[3].new_linear(&vb)?,
            fc2: layers[4].new_linear(&vb)?,
            int8: None,
            norms: TrainNorms::default(),
        })
    }

    /// Builds the network from a validated weight file.
    pub(crate) fn from_weight_set(
        cfg: &PatchNetConfig,
        set: &WeightSet,
    ) -> Result<Self, ModelError> {
        if let Err(message) = cfg.validate() {
            return Err(set.bad_config("config", "a valid patchnet config", &message.to_string()));
        }
        set.validate(&cfg.tensor_specs(), &cfg.config_checks())?;
        let layers = cfg.layers();
        let conv1 = layers[0].load_conv(set)?;
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
            conv2: layers[1].load_conv(set)?,
            conv3: layers[2].load_conv(set)?,
            fc1: layers[3].load_linear(set)?,
            fc2: layers[4].load_linear(set)?,
            norms: TrainNorms::default(),
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
        #[cfg(feature = "train")]
        if self.norms.is_on() {
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

    /// Checks the input shape, moves it to the weights' device and normalises it.
    pub(super) fn normalised_input(&self, x: &Tensor) -> candle_core::Result<Tensor> {
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
    pub(super) fn head(
        &self,
        x: Tensor,
        masks: Option<(&Tensor, &Tensor)>,
    ) -> candle_core::Result<Tensor> {
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
        crate::format::write_checkpoint(self.named_tensors()?, &self.cfg, PATCHNET_KIND, path)
    }

    /// Layers in file order with their (dequantised, f32) weights, for saving and quantising.
    pub fn named_tensors(&self) -> candle_core::Result<Vec<(String, Tensor)>> {
        #[cfg(feature = "train")]
        if self.norms.is_on() {
            return self.folded()?.named_tensors();
        }
        let layers = self.cfg.layers();
        let mut out = Vec::new();
        for (layer, conv) in layers.iter().zip([&self.conv1, &self.conv2, &self.conv3]) {
            layer.conv_tensors(conv, &mut out)?;
        }
        for (layer, fc) in layers[3..].iter().zip([&self.fc1, &self.fc2]) {
            layer.linear_tensors(fc, &mut out)?;
        }
        Ok(out)
    }
}

impl PatchNet {
    /// [`PatchClassifier::classify_into`] with the worker's state, or (`None`) the thread's fallback.
    fn classify_slices(
        &self,
        state: Option<&mut ModelState>,
        patches_chw: &[f32],
        batch: usize,
        out: &mut crate::PatchRows,
    ) -> Result<(), ModelError> {
        let s = self.cfg.input_side_px;
        let int8 = match &self.int8 {
            Some(int8) if !self.norms.is_on() => int8,
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
        in_state(state, "int8 patchnet", |state| {
            int8.with_outputs(patches_chw, batch, norm, state, |rows| {
                for row in rows.chunks_exact(outputs) {
                    softmax_extend(&row[..classes], &mut out.probs);
                    if self.cfg.box_head {
                        out.boxes.push(decode_patch_box(&row[classes..]));
                    }
                }
            })
        })?;
        Ok(())
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
    /// buffers (nothing allocated once they and this thread's fallback state have grown). Otherwise (float
    /// or GPU weights) the tensor path.
    fn classify_into(
        &self,
        patches_chw: &[f32],
        batch: usize,
        out: &mut crate::PatchRows,
    ) -> Result<(), ModelError> {
        self.classify_slices(None, patches_chw, batch, out)
    }

    /// [`Self::classify_into`] with the worker's `state`.
    fn classify_into_with(
        &self,
        state: &mut ModelState,
        patches_chw: &[f32],
        batch: usize,
        out: &mut crate::PatchRows,
    ) -> Result<(), ModelError> {
        self.classify_slices(Some(state), patches_chw, batch, out)
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
