//! The glance net's Q8_0 forward pass on the CPU: the patch classifier's integer scheme
//! ([`crate::patchnet_int8`]) for the glance net's strided convolutions over a whole downscaled frame, in NHWC
//! layout so each im2col row is three contiguous runs of `3 · c` channel bytes.
//!
//! Layer by layer: conv1 (3 input channels, 27 taps: too few for whole blocks, and its normalised input is
//! signed) stays f32, a direct convolution over the normalised, zero-bordered image with the bias and ReLU
//! fused (not candle's sgemm over an im2col: its three multi-megabyte tensors per frame cost more in fresh
//! pages than the product itself once the pipeline's other stages run between glances). Its output is
//! quantised to u8 with one scale per image; conv2, conv3 and conv4 multiply u8 im2col rows by i8 kernels
//! (one scale per output channel) with the bias and ReLU fused, and each output but the last is quantised
//! again with one scale per image. The 1×1 `obj` and `size` heads and the pooled feature are computed in f32
//! from conv4's output, and `cls` is the float net's layer on the pooled feature. The buffers are kept
//! between calls: the tensor entry allocates only candle's tensors at the two ends (the input's copy, the
//! outputs), and `glance_into` (slices in, the caller's map out) nothing but the helper threads of the
//! parallel integer products. They are the caller's ([`GlanceNetScratch`], a slot of the [`ModelState`] each
//! worker passes in: tract's `SimpleState` beside the immutable `SimplePlan`), so the sources' glance threads
//! share one net without a lock.
//!
//! Where the i8 kernels come from: a Q8_0 glance file (`saccade quantize --dtype q8_0`) stores every 3×3 kernel
//! whose rows are whole 32-value blocks (conv3 and conv4 of the shipped net, 288 taps) in Q8_0 with one scale
//! per row, which loads exactly; a kernel whose rows are not (conv2 of the shipped net: 16 channels × 9 = 144
//! taps) stays f16 in the file and is quantised per row at load.

use candle_core::{DType, Device, Module, Result, Tensor};

use super::config::{GlanceMaps, GlanceNetConfig};
use crate::flops::conv_out_side_px;
use crate::format::WeightSet;
use crate::int8::{
    matmul, padded, quantise_u8, taps_last_to_channels_last, Int8Matrix, QuantRows, BLOCK,
};
use crate::kernels::conv1::{pad_zero_border, Conv1};
use crate::layers::{Layer, LayerKind};
use crate::linear::QLinear;
use crate::slice_ops::softmax_extend;
use crate::state::ModelState;
use crate::{GlanceMap, ModelError};

/// The buffers of one forward pass, sized by the largest input their worker has run.
#[derive(Default)]
pub(crate) struct GlanceNetScratch {
    /// The normalised input image with a border of zeros, `(3, h + 2, w + 2)`.
    padded: Vec<f32>,
    /// A conv's output, NHWC f32.
    act: Vec<f32>,
    /// The current layer's input as u8 codes, NHWC.
    codes: Vec<u8>,
    rows: QuantRows,
    objectness_logits: Vec<f32>,
    log2_side: Vec<f32>,
    pooled: Vec<f32>,
    /// The class head's input as candle's quantised matmul sees it, and its logits.
    cls_input: Vec<f32>,
    cls_logits: Vec<f32>,
}

/// conv2, conv3 or conv4 on the integer path.
#[derive(Debug)]
struct IntConv {
    name: &'static str,
    /// `(c_out, 9 · c_in)` with the bias, columns in `(dy, dx, c)` order.
    kernel: Int8Matrix,
    c_in: usize,
    stride: usize,
    /// The file stored the kernel in Q8_0 (else it was quantised here at load).
    from_file: bool,
}

/// The class head (`cls`, `(num_classes, c3)`) on slices: the float net's layer, or candle's Q8_0 product
/// (the input row quantised to Q8_0 blocks, scale rounded through f16, as candle does before its integer
/// dot) with the dequantised weights; equal to candle's result up to rounding.
#[derive(Debug)]
struct ClsHead {
    /// `(out, in)` row-major, dequantised.
    weight: Vec<f32>,
    bias: Vec<f32>,
    in_dim: usize,
    /// Quantise the input row to Q8_0 first (a Q8_0 weight).
    q8_input: bool,
}

impl ClsHead {
    /// The head of `cls`, or `None` for a quantisation other than Q8_0 (those stay on candle's path).
    fn from_linear(cls: &QLinear) -> Result<Option<Self>> {
        use candle_core::quantized::GgmlDType;
        let q8_input = match cls.weight_dtype() {
            GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16 => false,
            GgmlDType::Q8_0 if cls.in_dim().is_multiple_of(BLOCK) => true,
            _ => return Ok(None),
        };
        let weight = cls.weight_f32()?.flatten_all()?.to_vec1::<f32>()?;
        let bias = match cls.bias() {
            Some(b) => b.to_dtype(DType::F32)?.to_vec1::<f32>()?,
            None => vec![0.0; cls.out_dim()],
        };
        Ok(Some(Self {
            weight,
            bias,
            in_dim: cls.in_dim(),
            q8_input,
        }))
    }

    /// `logits = W · x + b` for one row `x`; `input` holds the row as the product sees it.
    fn logits(&self, x: &[f32], input: &mut Vec<f32>, logits: &mut Vec<f32>) {
        input.clear();
        input.extend_from_slice(&x[..self.in_dim.min(x.len())]);
        if self.q8_input {
            for block in input.chunks_mut(BLOCK) {
                let amax = block.iter().fold(0f32, |m, v| m.max(v.abs()));
                let d = amax / 127.0;
                let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                let stored = half::f16::from_f32(d).to_f32();
                for v in block.iter_mut() {
                    *v = f32::round(*v * id) as i8 as f32 * stored;
                }
            }
        }
        logits.clear();
        logits.extend(
            self.weight
                .chunks_exact(self.in_dim.max(1))
                .zip(&self.bias)
                .map(|(row, b)| dot(input, row) + b),
        );
    }
}

pub(crate) struct Int8GlanceNet {
    /// The class head on slices (`None`: [`Self::glance_into`] is not available).
    cls: Option<ClsHead>,
    channels: [usize; 4],
    conv1: Conv1,
    convs: [IntConv; 3],
    obj_w: Vec<f32>,
    obj_b: f32,
    size_w: Vec<f32>,
    size_b: f32,
}

impl std::fmt::Debug for Int8GlanceNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Int8GlanceNet")
            .field("channels", &self.channels)
            .field("kernels", &self.kernel_sources())
            .finish()
    }
}

impl Int8GlanceNet {
    /// The integer network of a file written for it: `None` when a 3×3 kernel of conv2..conv4 that could be
    /// Q8_0 (rows of whole blocks) is stored as float, or none of them is Q8_0 (an f32 or f16 file).
    /// `set` must already be validated against `cfg`'s tensor specs. Built by walking the config's layer
    /// table: the first 3×3 convolution (conv1) stays f32, the later ones run on the integer kernels, the
    /// 1×1 heads (`obj`, `size`) in f32, and the fully-connected layer is the class head.
    pub(crate) fn from_weight_set(
        cfg: &GlanceNetConfig,
        set: &WeightSet,
    ) -> std::result::Result<Option<Self>, ModelError> {
        let int_conv = |layer: &Layer| -> std::result::Result<Option<IntConv>, ModelError> {
            let (weight, taps) = (layer.weight(), layer.row_len());
            let (kernel, from_file) = match set.int8(&weight, taps)? {
                Some(kernel) if kernel.padded_cols() == taps => (kernel, true),
                // A Q8_0 kernel of another width: validation rules it out.
                Some(_) => return Ok(None),
                // Whole-block rows stored as float: the file was not written for the integer path.
                None if taps.is_multiple_of(BLOCK) => return Ok(None),
                None => {
                    let w = set.tensor_f32(&weight)?.flatten_all()?.to_vec1::<f32>()?;
                    (Int8Matrix::quantize(&w, layer.outputs, taps), false)
                }
            };
            let bias = set.tensor_f32(&layer.bias())?.to_vec1::<f32>()?;
            Ok(Some(IntConv {
                name: layer.name,
                kernel: kernel
                    .permute_columns(&taps_last_to_channels_last(layer.inputs))
                    .with_bias(&bias),
                c_in: layer.inputs,
                stride: layer.stride(),
                from_file,
            }))
        };
        let layers = cfg.layers();
        let kernel_side = |side: usize| move |l: &&Layer| matches!(l.kind, LayerKind::Conv { kernel, .. } if kernel == side);
        let mut three = layers.iter().filter(kernel_side(3));
        let heads: Vec<&Layer> = layers.iter().filter(kernel_side(1)).collect();
        let (Some(first), [obj, size], Some(cls)) = (
            three.next(),
            heads.as_slice(),
            layers.iter().find(|l| l.kind == LayerKind::Linear),
        ) else {
            return Ok(None);
        };
        let mut convs = Vec::with_capacity(3);
        for layer in three {
            let Some(conv) = int_conv(layer)? else {
                return Ok(None);
            };
            convs.push(conv);
        }
        let Ok(convs) = <[IntConv; 3]>::try_from(convs) else {
            return Ok(None);
        };
        if !convs.iter().any(|c| c.from_file) {
            return Ok(None);
        }
        let values = |name: &str| -> std::result::Result<Vec<f32>, ModelError> {
            Ok(set.tensor_f32(name)?.flatten_all()?.to_vec1::<f32>()?)
        };
        let scalar = |name: &str| -> std::result::Result<f32, ModelError> {
            match values(name)?.as_slice() {
                [v] => Ok(*v),
                other => Err(ModelError::WrongShape {
                    path: set.path().to_path_buf(),
                    tensor: name.to_string(),
                    expected: vec![1],
                    found: vec![other.len()],
                }),
            }
        };
        let conv1 = Conv1::new(
            &values(&first.weight())?,
            &values(&first.bias())?,
            first.outputs,
            first.stride(),
        );
        Ok(Some(Self {
            cls: ClsHead::from_linear(&set.linear(cls.name)?)?,
            channels: cfg.channels,
            conv1,
            convs,
            obj_w: values(&obj.weight())?,
            obj_b: scalar(&obj.bias())?,
            size_w: values(&size.weight())?,
            size_b: scalar(&size.bias())?,
        }))
    }

    /// Whether [`Self::glance_into`] can run (the class head has a slice path).
    pub(crate) fn has_slice_path(&self) -> bool {
        self.cls.is_some()
    }

    /// Which kernels the file stored in Q8_0 and which were quantised at load, for `describe`.
    pub(crate) fn kernel_sources(&self) -> String {
        let names = |from_file: bool| {
            self.convs
                .iter()
                .filter(|c| c.from_file == from_file)
                .map(|c| c.name)
                .collect::<Vec<_>>()
                .join(", ")
        };
        let (stored, at_load) = (names(true), names(false));
        if at_load.is_empty() {
            format!("{stored} Q8_0")
        } else {
            format!("{stored} Q8_0, {at_load} quantised at load")
        }
    }

    /// All heads of the glance net on the integer path; `cls` is the float net's class head. With the
    /// thread's fallback state: a tensor path has no worker's.
    ///
    /// # Shapes
    /// `(b, 3, H, W)` f32 RGB in 0..1 (not normalised), on the CPU → the maps of [`GlanceMaps`].
    pub(crate) fn maps(&self, x: &Tensor, cls: &QLinear) -> Result<GlanceMaps> {
        let (b, c, h, w) = x.dims4()?;
        if c != 3 || b == 0 || h == 0 || w == 0 {
            candle_core::bail!(
                "glancenet input has shape {:?}, expected (b, 3, h, w) with b, h, w > 0",
                x.dims()
            );
        }
        let input = x.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        let (map_h, map_w) = self.map_size(h, w);
        crate::state::with_thread_state("int8 glancenet", |state| {
            let sc = state.slot::<GlanceNetScratch>();
            self.run_in(&input, (b, h, w), sc);
            let map_shape = (b, 1, map_h, map_w);
            let pooled = Tensor::from_slice(&sc.pooled, (b, self.channels[3]), &Device::Cpu)?;
            Ok(GlanceMaps {
                objectness_logits: Tensor::from_slice(
                    &sc.objectness_logits,
                    map_shape,
                    &Device::Cpu,
                )?,
                log2_side: Tensor::from_slice(&sc.log2_side, map_shape, &Device::Cpu)?,
                class_logits: cls.forward(&pooled)?,
                pooled,
            })
        })
    }

    /// What `GlanceNet::glance` makes of one `(3, h, w)` image (f32 RGB in 0..1, not normalised), on
    /// slices: the sigmoid of the objectness logits, the side `2^log2_side`, the pooled feature and the class
    /// head's softmax, written into `out`'s buffers with `state`'s scratch (nothing is allocated once they
    /// have grown). Each step is candle's arithmetic (see [`crate::slice_ops`]).
    pub(crate) fn glance_into(
        &self,
        chw: &[f32],
        (h, w): (usize, usize),
        stride_px: usize,
        state: &mut ModelState,
        out: &mut GlanceMap,
    ) -> Result<()> {
        if h == 0 || w == 0 || chw.len() != 3 * h * w {
            candle_core::bail!(
                "int8 glancenet: {} input values for a (3, {h}, {w}) image",
                chw.len()
            );
        }
        let (map_h, map_w) = self.map_size(h, w);
        let sc = state.slot::<GlanceNetScratch>();
        self.run_in(chw, (1, h, w), sc);
        out.map_width = map_w;
        out.map_height = map_h;
        out.stride_px = stride_px;
        out.objectness.clear();
        // candle_nn's sigmoid: 1 / (e^−v + 1).
        out.objectness.extend(
            sc.objectness_logits
                .iter()
                .map(|v| ((-v).exp() + 1.0).recip()),
        );
        out.box_side_glance_px.clear();
        let ln2 = std::f64::consts::LN_2 as f32;
        out.box_side_glance_px
            .extend(sc.log2_side.iter().map(|v| (v * ln2).exp()));
        out.feature.clear();
        out.feature.extend_from_slice(&sc.pooled);
        let Some(cls) = &self.cls else {
            candle_core::bail!("int8 glancenet: the class head's dtype has no slice path");
        };
        let probs = out.class_probs.get_or_insert_with(Vec::new);
        probs.clear();
        cls.logits(&sc.pooled, &mut sc.cls_input, &mut sc.cls_logits);
        softmax_extend(&sc.cls_logits, probs);
        Ok(())
    }

    /// Side of the output maps for an `h × w` input.
    fn map_size(&self, h: usize, w: usize) -> (usize, usize) {
        let out_side = |side: usize, stride: usize| conv_out_side_px(side, 3, stride, 1);
        let (mut map_h, mut map_w) = (
            out_side(h, self.conv1.stride),
            out_side(w, self.conv1.stride),
        );
        for conv in &self.convs {
            (map_h, map_w) = (out_side(map_h, conv.stride), out_side(map_w, conv.stride));
        }
        (map_h, map_w)
    }

    /// The forward pass on `input` (`(b, 3, h, w)` flattened) with the buffers `sc`: objectness and
    /// log2-side logits `(b, map_h · map_w)` and the pooled feature `(b, c3)` in `sc`.
    fn run_in(&self, input: &[f32], (b, h, w): (usize, usize, usize), sc: &mut GlanceNetScratch) {
        let out_side = |side: usize, stride: usize| conv_out_side_px(side, 3, stride, 1);
        let (h1, w1) = (
            out_side(h, self.conv1.stride),
            out_side(w, self.conv1.stride),
        );
        let (map_h, map_w) = self.map_size(h, w);
        let cells = map_h * map_w;
        let c3 = self.channels[3];
        for out in [&mut sc.objectness_logits, &mut sc.log2_side] {
            out.clear();
            out.resize(b * cells, 0.0);
        }
        sc.pooled.clear();
        sc.pooled.resize(b * c3, 0.0);

        for (bi, image) in input.chunks_exact(3 * h * w).enumerate().take(b) {
            // conv1 in f32 (bias and ReLU fused), then u8 codes with one scale per image.
            pad_zero_border(image, h, w, &mut sc.padded, |v| (v - 0.5) / 0.25);
            sc.act.clear();
            sc.act.resize(h1 * w1 * self.conv1.c_out, 0.0);
            self.conv1.forward(&sc.padded, (h, w), &mut sc.act);
            sc.codes.clear();
            sc.codes.resize(sc.act.len(), 0);
            let mut scale = quantise_u8(&sc.act, &mut sc.codes);

            // conv2..conv4: u8 im2col · i8 kernels (bias and ReLU fused), requantised per image between them.
            let (mut side_h, mut side_w) = (h1, w1);
            for (i, conv) in self.convs.iter().enumerate() {
                let (out_h, out_w) = (out_side(side_h, conv.stride), out_side(side_w, conv.stride));
                im2col_u8_nhwc(
                    &sc.codes,
                    scale,
                    (side_h, side_w, conv.c_in),
                    conv.stride,
                    &mut sc.rows,
                );
                sc.act.clear();
                sc.act.resize(out_h * out_w * conv.kernel.rows(), 0.0);
                matmul(&sc.rows, &conv.kernel, true, &mut sc.act);
                if i + 1 < self.convs.len() {
                    sc.codes.clear();
                    sc.codes.resize(sc.act.len(), 0);
                    scale = quantise_u8(&sc.act, &mut sc.codes);
                }
                (side_h, side_w) = (out_h, out_w);
            }

            // 1×1 heads per cell and the mean feature, in f32.
            let objectness = &mut sc.objectness_logits[bi * cells..(bi + 1) * cells];
            let log2_side = &mut sc.log2_side[bi * cells..(bi + 1) * cells];
            let pooled = &mut sc.pooled[bi * c3..(bi + 1) * c3];
            for ((px, obj), size) in sc
                .act
                .chunks_exact(c3)
                .zip(objectness.iter_mut())
                .zip(log2_side.iter_mut())
            {
                *obj = self.obj_b + dot(px, &self.obj_w);
                *size = self.size_b + dot(px, &self.size_w);
                for (p, v) in pooled.iter_mut().zip(px) {
                    *p += v;
                }
            }
            for p in pooled.iter_mut() {
                *p /= cells.max(1) as f32;
            }
        }
    }
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// u8 im2col of one `(h, w, c)` NHWC map of codes for a 3×3 conv with padding 1 and `stride` into `rows`
/// (`ho · wo` rows of `9 · c` codes in `(dy, dx, c)` order, zero-padded to whole blocks), every row with the
/// image's `scale`.
fn im2col_u8_nhwc(
    codes: &[u8],
    scale: f32,
    (h, w, c): (usize, usize, usize),
    stride: usize,
    rows: &mut QuantRows,
) {
    let (ho, wo) = (
        conv_out_side_px(h, 3, stride, 1),
        conv_out_side_px(w, 3, stride, 1),
    );
    let kp = padded(9 * c);
    rows.reset(ho * wo, kp);
    rows.scales.fill(scale);
    for (r, row) in rows.codes.chunks_exact_mut(kp).enumerate() {
        let (oy, ox) = (r / wo, r % wo);
        // Input columns ox·stride − 1 ..= ox·stride + 1: one contiguous run of 3·c codes when all are inside.
        let x0 = ox * stride;
        for dy in 0..3 {
            let Some(iy) = (oy * stride + dy).checked_sub(1).filter(|&y| y < h) else {
                continue;
            };
            let line = &codes[iy * w * c..(iy + 1) * w * c];
            let taps = &mut row[dy * 3 * c..(dy + 1) * 3 * c];
            if x0 >= 1 && x0 + 1 < w {
                taps.copy_from_slice(&line[(x0 - 1) * c..(x0 + 2) * c]);
                continue;
            }
            for (dx, tap) in taps.chunks_exact_mut(c).enumerate() {
                if let Some(ix) = (x0 + dx).checked_sub(1).filter(|&x| x < w) {
                    tap.copy_from_slice(&line[ix * c..(ix + 1) * c]);
                }
            }
        }
    }
}

#[cfg(test)]
#[path = "int8_tests.rs"]
mod int8_tests;
