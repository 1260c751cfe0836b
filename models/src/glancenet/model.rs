//! The glance network ([`GlanceNetModel`]): built from a `VarBuilder` for training or from a weight file,
//! run through candle or, for Q8_0 files on the CPU, the integer plan.

use super::config::{GlanceMaps, GlanceNetConfig, GLANCENET_KIND, GLANCE_STRIDE_PX};
use super::int8::Int8GlanceNet;
use crate::flops::total_mflops;
use crate::format::WeightSet;
use crate::input_norm::normalise_unit_rgb;
use crate::linear::QLinear;
use crate::state::{in_state, ModelState};
use crate::train_norms::TrainNorms;
use crate::{GlanceMap, GlanceNet, ModelError};
use candle_core::{DType, Device, Module, Tensor, D};
use candle_nn::{Conv2d, VarBuilder};
use std::path::Path;
use std::sync::Arc;

/// The glance network.
///
/// # Shapes
/// input `(b, 3, H, W)` f32 RGB in 0..1 → maps `(b, 1, H/8, W/8)` (rounded up), pooled `(b, c)`.
#[derive(Debug, Clone)]
pub struct GlanceNetModel {
    pub(super) cfg: GlanceNetConfig,
    pub(super) convs: [Conv2d; 4],
    pub(super) obj: Conv2d,
    pub(super) size: Conv2d,
    pub(super) cls: QLinear,
    pub(super) conv_stored_dtype: DType,
    /// The integer forward pass, for Q8_0 files on the CPU.
    pub(super) int8: Option<Arc<Int8GlanceNet>>,
    /// Batch normalisation of the four convolutions while training ([`Self::new_with_batch_norm`]);
    /// folded into the convolutions for inference and saving.
    pub(super) norms: TrainNorms<4>,
}

impl GlanceNetModel {
    pub fn new(cfg: &GlanceNetConfig, vb: VarBuilder) -> candle_core::Result<Self> {
        if let Err(message) = cfg.validate() {
            candle_core::bail!("glancenet config: {message}");
        }
        let layers = cfg.layers();
        let conv = |i: usize| layers[i].new_conv(&vb);
        let convs = [conv(0)?, conv(1)?, conv(2)?, conv(3)?];
        let (obj, size) = (conv(4)?, conv(5)?);
        let cls = layers[6].new_linear(&vb)?;
        Ok(Self {
            cfg: cfg.clone(),
            conv_stored_dtype: convs[0].weight().dtype(),
            convs,
            obj,
            size,
            cls,
            int8: None,
            norms: TrainNorms::default(),
        })
    }

    pub(crate) fn from_weight_set(
        cfg: &GlanceNetConfig,
        set: &WeightSet,
    ) -> Result<Self, ModelError> {
        if let Err(message) = cfg.validate() {
            return Err(set.bad_config("config", "a valid glancenet config", &message.to_string()));
        }
        set.validate(&cfg.tensor_specs(), &cfg.config_checks())?;
        let layers = cfg.layers();
        let conv = |i: usize| layers[i].load_conv(set);
        let convs = [conv(0)?, conv(1)?, conv(2)?, conv(3)?];
        let int8 = if convs[0].weight().device().is_cpu() {
            Int8GlanceNet::from_weight_set(cfg, set)?.map(Arc::new)
        } else {
            None
        };
        Ok(Self {
            cfg: cfg.clone(),
            convs,
            int8,
            obj: conv(4)?,
            size: conv(5)?,
            cls: layers[6].load_linear(set)?,
            conv_stored_dtype: set.stored_float_dtype("conv1.weight"),
            norms: TrainNorms::default(),
        })
    }

    /// Loads a glance net from safetensors or GGUF (chosen by the file's magic bytes).
    pub fn load(path: &Path, device: &Device) -> Result<Self, ModelError> {
        let set = WeightSet::read(path, device)?;
        set.expect_kind(GLANCENET_KIND)?;
        let cfg: GlanceNetConfig = set.parse_config()?;
        Self::from_weight_set(&cfg, &set)
    }

    pub fn config(&self) -> &GlanceNetConfig {
        &self.cfg
    }

    /// Whether the forward pass runs on the integer kernels (a Q8_0 file on the CPU).
    pub fn runs_integer_kernels(&self) -> bool {
        self.int8.is_some()
    }

    /// The same net through candle's float convolutions (weights as stored, dequantised): the reference the
    /// integer path is checked and timed against.
    pub fn without_integer_kernels(&self) -> Self {
        Self {
            int8: None,
            ..self.clone()
        }
    }

    /// Checks the input has 3 channels, moves it to the weights' device and normalises it.
    pub(super) fn normalised_input(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (_b, c, _h, _w) = x.dims4()?;
        if c != 3 {
            candle_core::bail!(
                "glancenet input has shape {:?}, expected (b, 3, h, w)",
                x.dims()
            );
        }
        // Inputs are built on the CPU by the capture and glance stages; the weights may live on a GPU.
        let x = x.to_device(self.convs[0].weight().device())?;
        normalise_unit_rgb(&x.to_dtype(self.convs[0].weight().dtype())?)
    }

    /// All heads of the glance net: on the integer kernels for a Q8_0 file on the CPU, else through candle.
    pub fn forward_maps(&self, x: &Tensor) -> candle_core::Result<GlanceMaps> {
        #[cfg(feature = "train")]
        if self.norms.is_on() {
            return self.folded()?.forward_maps(x);
        }
        if let Some(int8) = &self.int8 {
            return int8.maps(x, &self.cls);
        }
        let mut x = self.normalised_input(x)?;
        // (b, 3, H, W) -> (b, c0, H/2, W/2) -> (b, c1, H/4, W/4) -> (b, c2, H/8, W/8) -> (b, c3, H/8, W/8)
        for conv in &self.convs {
            x = conv.forward(&x)?.relu()?;
        }
        // (b, c3, h, w) -> (b, 1, h, w)
        let objectness_logits = self.obj.forward(&x)?.to_dtype(DType::F32)?;
        let log2_side = self.size.forward(&x)?.to_dtype(DType::F32)?;
        // (b, c3, h, w) -> (b, c3)
        let pooled = x.flatten_from(2)?.mean(D::Minus1)?.to_dtype(DType::F32)?;
        // (b, c3) -> (b, num_classes)
        let class_logits = self.cls.forward(&pooled)?;
        Ok(GlanceMaps {
            objectness_logits,
            log2_side,
            pooled,
            class_logits,
        })
    }

    /// Writes the (dequantised) weights as an f32 safetensors checkpoint with kind and config.
    pub fn save_safetensors(&self, path: &Path) -> Result<(), ModelError> {
        crate::format::write_checkpoint(self.named_tensors()?, &self.cfg, GLANCENET_KIND, path)
    }

    /// Layers in file order with f32 weights, for saving and quantising.
    pub fn named_tensors(&self) -> candle_core::Result<Vec<(String, Tensor)>> {
        #[cfg(feature = "train")]
        if self.norms.is_on() {
            return self.folded()?.named_tensors();
        }
        let layers = self.cfg.layers();
        let mut out = Vec::new();
        let convs = self.convs.iter().chain([&self.obj, &self.size]);
        for (layer, conv) in layers.iter().zip(convs) {
            layer.conv_tensors(conv, &mut out)?;
        }
        layers[6].linear_tensors(&self.cls, &mut out)?;
        Ok(out)
    }
}

impl GlanceNetModel {
    /// [`GlanceNet::glance_into`] with the worker's state, or (`None`) the thread's fallback.
    fn glance_slices(
        &self,
        state: Option<&mut ModelState>,
        chw: &[f32],
        out: &mut GlanceMap,
    ) -> Result<(), ModelError> {
        let (w, h) = self.input_size_px();
        match &self.int8 {
            Some(int8) if !self.norms.is_on() && int8.has_slice_path() => {
                if chw.len() != 3 * h * w {
                    return Err(ModelError::BadInput {
                        expected: format!("(1, 3, {h}, {w}) = {} values", 3 * h * w),
                        found: vec![chw.len()],
                    });
                }
                Ok(in_state(state, "int8 glancenet", |state| {
                    int8.glance_into(chw, (h, w), GLANCE_STRIDE_PX, state, out)
                })?)
            }
            _ => {
                let image = Tensor::from_slice(chw, (1, 3, h, w), &candle_core::Device::Cpu)
                    .map_err(|_| ModelError::BadInput {
                        expected: format!("(1, 3, {h}, {w}) = {} values", 3 * h * w),
                        found: vec![chw.len()],
                    })?;
                *out = self.glance(&image)?;
                Ok(())
            }
        }
    }
}

impl GlanceNet for GlanceNetModel {
    fn input_size_px(&self) -> (usize, usize) {
        (self.cfg.input_width_px, self.cfg.input_height_px)
    }

    fn glance(&self, image: &Tensor) -> Result<GlanceMap, ModelError> {
        let (w, h) = self.input_size_px();
        if image.dims() != [1, 3, h, w] {
            return Err(ModelError::BadInput {
                expected: format!("(1, 3, {h}, {w})"),
                found: image.dims().to_vec(),
            });
        }
        let maps = self.forward_maps(&image.to_dtype(DType::F32)?)?;
        let (_, _, map_height, map_width) = maps.objectness_logits.dims4()?;
        let objectness = candle_nn::ops::sigmoid(&maps.objectness_logits)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let box_side_glance_px = (&maps.log2_side * std::f64::consts::LN_2)?
            .exp()?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let feature = maps.pooled.flatten_all()?.to_vec1::<f32>()?;
        let class_probs = candle_nn::ops::softmax_last_dim(&maps.class_logits)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        Ok(GlanceMap {
            map_width,
            map_height,
            stride_px: GLANCE_STRIDE_PX,
            objectness,
            box_side_glance_px,
            feature,
            class_probs: Some(class_probs),
        })
    }

    /// On the Q8_0 integer path: the whole glance on slices into `out`'s buffers (nothing allocated once
    /// they and this thread's fallback state have grown); otherwise the tensor path.
    fn glance_into(&self, chw: &[f32], out: &mut GlanceMap) -> Result<(), ModelError> {
        self.glance_slices(None, chw, out)
    }

    /// [`Self::glance_into`] with the worker's `state`.
    fn glance_into_with(
        &self,
        state: &mut ModelState,
        chw: &[f32],
        out: &mut GlanceMap,
    ) -> Result<(), ModelError> {
        self.glance_slices(Some(state), chw, out)
    }

    fn mflops(&self) -> f64 {
        total_mflops(&self.cfg.layer_costs())
    }

    fn describe(&self) -> String {
        if let Some(int8) = &self.int8 {
            return format!(
                "glancenet {}×{} conv {:?} (conv1 {:?}, conv2–4 int8: {}) → obj/size maps at stride {} + cls ({:?}), integer kernels, {:.1} MFLOP",
                self.cfg.input_width_px,
                self.cfg.input_height_px,
                self.cfg.channels,
                self.conv_stored_dtype,
                int8.kernel_sources(),
                GLANCE_STRIDE_PX,
                self.cls.weight_dtype(),
                self.mflops(),
            );
        }
        format!(
            "glancenet {}×{} conv {:?} ({:?}) → obj/size maps at stride {} + cls ({:?}), {:.1} MFLOP",
            self.cfg.input_width_px,
            self.cfg.input_height_px,
            self.cfg.channels,
            self.conv_stored_dtype,
            GLANCE_STRIDE_PX,
            self.cls.weight_dtype(),
            self.mflops(),
        )
    }
}
