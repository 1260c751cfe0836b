//! The glance net: a small strided CNN over a downscaled copy of the whole frame (320×240 by default)
//! that scores, per 8×8-pixel cell, whether a sign's centre lies there (`obj`) and how large it is
//! (`size`, log2 of the side in glance pixels), plus glance-only class logits (`cls`) from the pooled
//! feature. The runtime's glance stage calls it through [`GlanceNet`]; the trainer uses [`GlanceMaps`].

use crate::flops::{conv2d_flops, conv_out_side_px, linear_flops, total_mflops, LayerCost};
use crate::format::{ConfigCheck, TensorRole, TensorSpec, WeightSet};
use crate::glancenet_int8::Int8GlanceNet;
use crate::linear::QLinear;
use crate::patchnet::normalise_unit_rgb;
use crate::train_ops::{conv1x1_nhwc_to_nchw, conv3x3_bn_relu_nhwc, conv3x3_relu_nhwc, BatchNorm};
use crate::{GlanceMap, GlanceNet, ModelError, NUM_CLASSES};
use candle_core::{DType, Device, Module, Tensor, D};
use candle_nn::{Conv2d, Conv2dConfig, VarBuilder};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::Arc;

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

fn conv_cfg(stride: usize, padding: usize) -> Conv2dConfig {
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

/// Raw outputs of the glance net, for the trainer's losses and for [`GlanceNet::glance`].
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

/// The glance network.
///
/// # Shapes
/// input `(b, 3, H, W)` f32 RGB in 0..1 → maps `(b, 1, H/8, W/8)` (rounded up), pooled `(b, c)`.
#[derive(Debug, Clone)]
pub struct GlanceNetModel {
    cfg: GlanceNetConfig,
    convs: [Conv2d; 4],
    obj: Conv2d,
    size: Conv2d,
    cls: QLinear,
    conv_stored_dtype: DType,
    /// The integer forward pass, for Q8_0 files on the CPU.
    int8: Option<Arc<Int8GlanceNet>>,
    /// Batch normalisation of the four convolutions while training ([`Self::new_with_batch_norm`]);
    /// folded into the convolutions for inference and saving.
    norms: Option<Arc<[BatchNorm; 4]>>,
}

impl GlanceNetModel {
    pub fn new(cfg: &GlanceNetConfig, vb: VarBuilder) -> candle_core::Result<Self> {
        if let Err(message) = cfg.validate() {
            candle_core::bail!("glancenet config: {message}");
        }
        let [c0, c1, c2, c3] = cfg.channels;
        let conv = |c_in, c_out, i: usize| {
            let (name, k, s, p) = CONV_LAYERS[i];
            candle_nn::conv2d(c_in, c_out, k, conv_cfg(s, p), vb.pp(name))
        };
        let convs = [
            conv(3, c0, 0)?,
            conv(c0, c1, 1)?,
            conv(c1, c2, 2)?,
            conv(c2, c3, 3)?,
        ];
        let obj = candle_nn::conv2d(c3, 1, 1, conv_cfg(1, 0), vb.pp("obj"))?;
        let size = candle_nn::conv2d(c3, 1, 1, conv_cfg(1, 0), vb.pp("size"))?;
        let cls = QLinear::new(c3, cfg.num_classes, vb.pp("cls"))?;
        Ok(Self {
            cfg: cfg.clone(),
            conv_stored_dtype: convs[0].weight().dtype(),
            convs,
            obj,
            size,
            cls,
            int8: None,
            norms: None,
        })
    }

    /// Builds the network for training with batch normalisation after each convolution (scale and shift
    /// from `vb` under `convN.bn`). [`Self::train_maps`] normalises with the batch's statistics and
    /// updates running ones; [`Self::forward_maps`], [`Self::named_tensors`] and the saved files use the
    /// convolutions with the running normalisation folded in ([`Self::folded`]), so the stored network
    /// has the same layers as one trained without it.
    pub fn new_with_batch_norm(cfg: &GlanceNetConfig, vb: VarBuilder) -> candle_core::Result<Self> {
        let mut net = Self::new(cfg, vb.clone())?;
        let [c0, c1, c2, c3] = cfg.channels;
        let norm = |c, i: usize| BatchNorm::new(c, vb.pp(CONV_LAYERS[i].0).pp("bn"));
        net.norms = Some(Arc::new([
            norm(c0, 0)?,
            norm(c1, 1)?,
            norm(c2, 2)?,
            norm(c3, 3)?,
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
            convs: [
                norms[0].fold_into(&self.convs[0])?,
                norms[1].fold_into(&self.convs[1])?,
                norms[2].fold_into(&self.convs[2])?,
                norms[3].fold_into(&self.convs[3])?,
            ],
            norms: None,
            int8: None,
            ..self.clone()
        })
    }

    pub(crate) fn from_weight_set(
        cfg: &GlanceNetConfig,
        set: &WeightSet,
    ) -> Result<Self, ModelError> {
        if let Err(message) = cfg.validate() {
            return Err(set.bad_config("config", "a valid glancenet config", &message));
        }
        set.validate(&cfg.tensor_specs(), &cfg.config_checks())?;
        let conv = |i: usize| {
            let (name, _, s, p) = CONV_LAYERS[i];
            set.conv(name, conv_cfg(s, p))
        };
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
            obj: set.conv("obj", conv_cfg(1, 0))?,
            size: set.conv("size", conv_cfg(1, 0))?,
            cls: set.linear("cls")?,
            conv_stored_dtype: set.stored_float_dtype("conv1.weight"),
            norms: None,
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
    fn normalised_input(&self, x: &Tensor) -> candle_core::Result<Tensor> {
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
        if self.norms.is_some() {
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

    /// All heads for training: the same function as [`Self::forward_maps`], computed in NHWC layout with
    /// every convolution as one matrix product over an im2col (see `train_ops`); several times faster to
    /// backpropagate on the CPU than candle's conv2d.
    pub fn train_maps(&self, x: &Tensor) -> candle_core::Result<GlanceMaps> {
        let b = x.dim(0)?;
        let mut x = self.normalised_input(x)?.permute((0, 2, 3, 1))?;
        for (i, (conv, (_, _, stride, _))) in self.convs.iter().zip(CONV_LAYERS).enumerate() {
            x = match &self.norms {
                Some(norms) => conv3x3_bn_relu_nhwc(&x, conv, stride, &norms[i])?,
                None => conv3x3_relu_nhwc(&x, conv, stride)?,
            };
        }
        let (_, h, w, c3) = x.dims4()?;
        let objectness_logits = conv1x1_nhwc_to_nchw(&x, &self.obj)?.to_dtype(DType::F32)?;
        let log2_side = conv1x1_nhwc_to_nchw(&x, &self.size)?.to_dtype(DType::F32)?;
        let pooled = x.reshape((b, h * w, c3))?.mean(1)?.to_dtype(DType::F32)?;
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
        let tensors = self.named_tensors()?.into_iter().collect();
        let config_json = serde_json::to_string(&self.cfg).map_err(|e| ModelError::BadConfig {
            path: path.to_path_buf(),
            key: crate::format::CONFIG_KEY.into(),
            expected: "a serialisable glancenet config".into(),
            found: e.to_string(),
        })?;
        crate::format::write_safetensors(&tensors, &config_json, GLANCENET_KIND, path)
    }

    /// Layers in file order with f32 weights, for saving and quantising.
    pub fn named_tensors(&self) -> candle_core::Result<Vec<(String, Tensor)>> {
        if self.norms.is_some() {
            return self.folded()?.named_tensors();
        }
        let mut out = Vec::new();
        let named_convs = CONV_LAYERS
            .iter()
            .map(|l| l.0)
            .zip(self.convs.iter())
            .chain([("obj", &self.obj), ("size", &self.size)]);
        for (name, conv) in named_convs {
            out.push((
                format!("{name}.weight"),
                conv.weight().to_dtype(DType::F32)?,
            ));
            if let Some(bias) = conv.bias() {
                out.push((format!("{name}.bias"), bias.to_dtype(DType::F32)?));
            }
        }
        out.push(("cls.weight".into(), self.cls.weight_f32()?));
        if let Some(bias) = self.cls.bias() {
            out.push(("cls.bias".into(), bias.to_dtype(DType::F32)?));
        }
        Ok(out)
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
    /// they have grown); otherwise the tensor path.
    fn glance_into(&self, chw: &[f32], out: &mut GlanceMap) -> Result<(), ModelError> {
        let (w, h) = self.input_size_px();
        match &self.int8 {
            Some(int8) if self.norms.is_none() && int8.has_slice_path() => {
                if chw.len() != 3 * h * w {
                    return Err(ModelError::BadInput {
                        expected: format!("(1, 3, {h}, {w}) = {} values", 3 * h * w),
                        found: vec![chw.len()],
                    });
                }
                Ok(int8.glance_into(chw, (h, w), GLANCE_STRIDE_PX, out)?)
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::format::QuantDtype;
    use crate::testutil::{
        batch_norm_relu_nchw, flat, max_abs_diff, naive_conv2d, random_tensor, relu,
        set_batch_norm_params, varmap_builder,
    };

    fn small_cfg() -> GlanceNetConfig {
        GlanceNetConfig {
            input_width_px: 40,
            input_height_px: 24,
            channels: [4, 6, 6, 5],
            num_classes: NUM_CLASSES,
        }
    }

    /// The training graph computes the same maps as the inference graph, and the same gradients (the
    /// glance net has no max-pooling, so candle's conv2d backward is a valid reference here).
    #[test]
    fn train_maps_match_forward_maps_in_value_and_gradient() {
        let (varmap, vb) = varmap_builder();
        let net = GlanceNetModel::new(&small_cfg(), vb).unwrap();
        let x = random_tensor(&[2, 3, 24, 40], 0.0, 1.0, 22);
        let want = net.forward_maps(&x).unwrap();
        let got = net.train_maps(&x).unwrap();
        let parts = |m: &GlanceMaps| {
            [
                m.objectness_logits.clone(),
                m.log2_side.clone(),
                m.pooled.clone(),
                m.class_logits.clone(),
            ]
        };
        let mut losses = Vec::new();
        for (seed, (a, b)) in parts(&got).iter().zip(parts(&want).iter()).enumerate() {
            assert_eq!(a.dims(), b.dims());
            assert!(max_abs_diff(&flat(a), &flat(b)) <= 1e-4);
            let weights = random_tensor(a.dims(), -1.0, 1.0, 30 + seed as u64);
            losses.push((
                a.mul(&weights).unwrap().sum_all().unwrap(),
                b.mul(&weights).unwrap().sum_all().unwrap(),
            ));
        }
        let total = |pick: fn(&(Tensor, Tensor)) -> &Tensor| {
            losses
                .iter()
                .map(pick)
                .fold(None::<Tensor>, |acc, l| {
                    Some(match acc {
                        Some(acc) => (acc + l).unwrap(),
                        None => l.clone(),
                    })
                })
                .unwrap()
        };
        let grads_got = total(|l| &l.0).backward().unwrap();
        let grads_want = total(|l| &l.1).backward().unwrap();
        for var in varmap.all_vars() {
            let a = flat(grads_got.get(var.as_tensor()).unwrap());
            let b = flat(grads_want.get(var.as_tensor()).unwrap());
            let scale = b.iter().fold(1f32, |m, v| m.max(v.abs()));
            assert!(
                max_abs_diff(&a, &b) <= 1e-4 * scale,
                "gradient of {:?}",
                var.dims()
            );
        }
    }

    /// The glance net with batch normalisation from candle tensor ops in NCHW: the reference for the
    /// training graph's values and gradients.
    fn batch_norm_reference(net: &GlanceNetModel, x: &Tensor) -> GlanceMaps {
        let norms = net.norms.as_ref().unwrap();
        let mut x = normalise_unit_rgb(x).unwrap();
        for (i, (conv, (_, _, stride, padding))) in net.convs.iter().zip(CONV_LAYERS).enumerate() {
            let y = x.conv2d(conv.weight(), padding, stride, 1, 1).unwrap();
            x = batch_norm_relu_nchw(&y, &norms[i]);
        }
        let pooled = x.flatten_from(2).unwrap().mean(D::Minus1).unwrap();
        GlanceMaps {
            objectness_logits: net.obj.forward(&x).unwrap(),
            log2_side: net.size.forward(&x).unwrap(),
            class_logits: net.cls.forward(&pooled).unwrap(),
            pooled,
        }
    }

    /// Batch normalisation in the training graph (batch statistics, analytic backward through them)
    /// against the same network from candle tensor ops, in value and in every gradient.
    #[test]
    fn batch_norm_train_maps_match_tensor_ops_in_value_and_gradient() {
        let (varmap, vb) = varmap_builder();
        let net = GlanceNetModel::new_with_batch_norm(&small_cfg(), vb).unwrap();
        crate::testutil::seed_vars(&varmap, 7);
        assert_eq!(set_batch_norm_params(&varmap, 40), 8);
        let x = random_tensor(&[3, 3, 24, 40], 0.0, 1.0, 23);
        let got = net.train_maps(&x).unwrap();
        let want = batch_norm_reference(&net, &x);
        let parts = |m: &GlanceMaps| {
            [
                m.objectness_logits.clone(),
                m.log2_side.clone(),
                m.pooled.clone(),
                m.class_logits.clone(),
            ]
        };
        let (mut loss_got, mut loss_want) = (Vec::new(), Vec::new());
        for (seed, (a, b)) in parts(&got).iter().zip(parts(&want).iter()).enumerate() {
            assert_eq!(a.dims(), b.dims());
            assert!(max_abs_diff(&flat(a), &flat(b)) <= 1e-4, "output {seed}");
            let weights = random_tensor(a.dims(), -1.0, 1.0, 50 + seed as u64);
            loss_got.push(a.mul(&weights).unwrap().sum_all().unwrap());
            loss_want.push(b.mul(&weights).unwrap().sum_all().unwrap());
        }
        let sum = |l: Vec<Tensor>| Tensor::stack(&l, 0).unwrap().sum_all().unwrap();
        let grads_got = sum(loss_got).backward().unwrap();
        let grads_want = sum(loss_want).backward().unwrap();
        let mut checked = 0;
        for (name, var) in varmap.data().lock().unwrap().iter() {
            let (a, b) = (
                grads_got.get(var.as_tensor()),
                grads_want.get(var.as_tensor()),
            );
            if name.ends_with("bias") && name.starts_with("conv") {
                // The normalisation removes the convolutions' biases: neither graph uses them.
                continue;
            }
            let (a, b) = (flat(a.unwrap()), flat(b.unwrap()));
            let scale = b.iter().fold(1f32, |m, v| m.max(v.abs()));
            assert!(
                max_abs_diff(&a, &b) <= 1e-4 * scale,
                "gradient of {name}: {a:?} vs {b:?}"
            );
            checked += 1;
        }
        // 4 conv kernels, 8 batch-norm parameters, 2 heads with biases, cls weight and bias.
        assert_eq!(checked, 4 + 8 + 4 + 2);
    }

    /// Once the running statistics have converged to a batch's, the folded network (what `forward_maps`,
    /// the glance stage and the saved file see) computes what training computed on that batch.
    #[test]
    fn batch_norm_folds_into_the_saved_convolutions() {
        let (varmap, vb) = varmap_builder();
        let net = GlanceNetModel::new_with_batch_norm(&small_cfg(), vb).unwrap();
        crate::testutil::seed_vars(&varmap, 8);
        assert_eq!(set_batch_norm_params(&varmap, 40), 8);
        let x = random_tensor(&[4, 3, 24, 40], 0.0, 1.0, 24);
        let before = flat(&net.forward_maps(&x).unwrap().objectness_logits);
        let mut trained = Vec::new();
        for _ in 0..200 {
            trained = flat(&net.train_maps(&x).unwrap().objectness_logits);
        }
        let folded = flat(&net.forward_maps(&x).unwrap().objectness_logits);
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
        let loaded = GlanceNetModel::load(&path, &Device::Cpu).unwrap();
        let reloaded = flat(&loaded.forward_maps(&x).unwrap().objectness_logits);
        assert!(max_abs_diff(&reloaded, &folded) <= 1e-5);
        let names: Vec<String> = net
            .named_tensors()
            .unwrap()
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert!(names.iter().all(|n| !n.contains("bn")), "{names:?}");
    }

    #[test]
    fn maps_match_naive_loops() {
        let (_vm, vb) = varmap_builder();
        let cfg = small_cfg();
        let net = GlanceNetModel::new(&cfg, vb).unwrap();
        let x = random_tensor(&[2, 3, 24, 40], 0.0, 1.0, 21);
        let maps = net.forward_maps(&x).unwrap();
        let t: std::collections::HashMap<String, Vec<f32>> = net
            .named_tensors()
            .unwrap()
            .into_iter()
            .map(|(n, t)| (n, flat(&t)))
            .collect();
        let mut v: Vec<f32> = flat(&x).iter().map(|p| (p - 0.5) / 0.25).collect();
        let mut dims = (2, 3, 24, 40);
        for ((name, k, s, p), c_out) in CONV_LAYERS.iter().zip(cfg.channels) {
            let w = &t[&format!("{name}.weight")];
            let b = &t[&format!("{name}.bias")];
            let (mut y, d) = naive_conv2d(&v, dims, w, b, c_out, *k, *s, *p);
            relu(&mut y);
            (v, dims) = (y, d);
        }
        assert_eq!((dims.2, dims.3), (3, 5));
        assert_eq!(cfg.map_size(), (5, 3));
        let c = cfg.channels[3];
        let (obj, _) = naive_conv2d(&v, dims, &t["obj.weight"], &t["obj.bias"], 1, 1, 1, 0);
        let (size, _) = naive_conv2d(&v, dims, &t["size.weight"], &t["size.bias"], 1, 1, 1, 0);
        assert_eq!(maps.objectness_logits.dims(), [2, 1, 3, 5]);
        assert!(max_abs_diff(&flat(&maps.objectness_logits), &obj) <= 1e-4);
        assert!(max_abs_diff(&flat(&maps.log2_side), &size) <= 1e-4);
        let cells = 15;
        let pooled: Vec<f32> = (0..2 * c)
            .map(|i| v[i * cells..(i + 1) * cells].iter().sum::<f32>() / cells as f32)
            .collect();
        assert!(max_abs_diff(&flat(&maps.pooled), &pooled) <= 1e-4);
        let cls = crate::testutil::naive_linear(
            &pooled,
            2,
            &t["cls.weight"],
            &t["cls.bias"],
            NUM_CLASSES,
        );
        assert!(max_abs_diff(&flat(&maps.class_logits), &cls) <= 1e-4);
    }

    #[test]
    fn glance_fills_the_map_for_a_full_size_input() {
        let (_vm, vb) = varmap_builder();
        let net = GlanceNetModel::new(&GlanceNetConfig::default(), vb).unwrap();
        let x = random_tensor(&[1, 3, 240, 320], 0.0, 1.0, 22);
        let maps = net.forward_maps(&x).unwrap();
        let map = net.glance(&x).unwrap();
        assert_eq!((map.map_width, map.map_height, map.stride_px), (40, 30, 8));
        assert_eq!(map.objectness.len(), 1200);
        assert!(map.objectness.iter().all(|p| (0.0..=1.0).contains(p)));
        let log2 = flat(&maps.log2_side);
        for (side, l) in map.box_side_glance_px.iter().zip(&log2) {
            assert!((side - l.exp2()).abs() <= 1e-4 * side.max(1.0));
        }
        assert_eq!(map.feature.len(), 32);
        let probs = map.class_probs.unwrap();
        assert_eq!(probs.len(), NUM_CLASSES);
        assert!((probs.iter().sum::<f32>() - 1.0).abs() < 1e-5);
    }

    #[test]
    fn glance_rejects_wrong_input_size() {
        let (_vm, vb) = varmap_builder();
        let net = GlanceNetModel::new(&GlanceNetConfig::default(), vb).unwrap();
        for bad in [
            vec![1, 3, 240, 321],
            vec![2, 3, 240, 320],
            vec![3, 240, 320],
        ] {
            let err = net
                .glance(&Tensor::zeros(bad.as_slice(), DType::F32, &Device::Cpu).unwrap())
                .unwrap_err();
            assert!(matches!(err, ModelError::BadInput { .. }), "{err}");
        }
    }

    #[test]
    fn mflops_match_hand_count() {
        let (_vm, vb) = varmap_builder();
        let net = GlanceNetModel::new(&GlanceNetConfig::default(), vb).unwrap();
        // 160×120, 80×60, 40×30, 40×30 outputs; 1×1 heads on 40×30; cls 32→44.
        let hand = 2 * 27 * 16 * 19_200
            + 2 * 144 * 32 * 4_800
            + 2 * 288 * 32 * 1_200
            + 2 * 288 * 32 * 1_200
            + 2 * (2 * 32 * 1_200)
            + 2 * 32 * 44;
        assert_eq!(hand, 105_218_816);
        assert!((net.mflops() - hand as f64 / 1e6).abs() < 1e-9);
    }

    #[test]
    fn round_trip_and_q4k_fallback_is_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let float_path = dir.path().join("glance.safetensors");
        let (_vm, vb) = varmap_builder();
        let net = GlanceNetModel::new(&GlanceNetConfig::default(), vb).unwrap();
        net.save_safetensors(&float_path).unwrap();
        let x = random_tensor(&[1, 3, 240, 320], 0.0, 1.0, 23);
        let want = net.forward_maps(&x).unwrap();
        let loaded = GlanceNetModel::load(&float_path, &Device::Cpu).unwrap();
        let got = loaded.forward_maps(&x).unwrap();
        assert_eq!(flat(&want.objectness_logits), flat(&got.objectness_logits));
        assert_eq!(flat(&want.class_logits), flat(&got.class_logits));

        let q_path = dir.path().join("glance-q4k.gguf");
        let report = crate::registry::quantize_file(&float_path, &q_path, QuantDtype::Q4K).unwrap();
        // cls has inner dim 32: Q4K needs 256, so it falls back to Q8_0 and says so.
        assert_eq!(report.fallbacks.len(), 1, "{report}");
        assert!(report.fallbacks[0].contains("cls.weight"));
        let q = GlanceNetModel::load(&q_path, &Device::Cpu).unwrap();
        assert_eq!(
            q.cls.weight_dtype(),
            candle_core::quantized::GgmlDType::Q8_0
        );
        let inspection = crate::format::inspect_file(&q_path).unwrap().to_string();
        assert!(
            inspection.contains("cls.weight") && inspection.contains("q8_0"),
            "{inspection}"
        );
        assert!(inspection.contains("not possible"), "{inspection}");
        let got = q.forward_maps(&x).unwrap();
        // Conv kernels are stored f16 in GGUF: maps move by f16 rounding only.
        assert!(
            max_abs_diff(
                &flat(&want.objectness_logits),
                &flat(&got.objectness_logits)
            ) < 0.01
        );
    }
}
