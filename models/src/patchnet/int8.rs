//! The patch classifier's Q8_0 forward pass on the CPU: convolutions as im2col + the integer matrix product
//! of [`crate::int8`], in NHWC layout so each im2col row is nine contiguous runs of channel bytes.
//!
//! Layer by layer: conv1 (3 input channels, 27 taps: too few for whole blocks) stays f32, the direct
//! convolution of `crate::kernels::conv1` with bias and ReLU fused; its output, after 2×2 max-pool, is quantised to
//! u8 with one scale per patch; conv2
//! and conv3 multiply u8 im2col rows by i8 kernels with the bias and ReLU fused; fc1 and fc2 take per-patch
//! u8 rows. The buffers are kept between calls: the tensor entry allocates only candle's tensors at the two
//! ends, and the slice entry ([`Int8PatchNet::with_outputs`], normalising each patch itself) nothing but the
//! helper threads of the parallel integer products.
//!
//! The net itself is immutable (tract's `SimplePlan`); its scratch buffers (tract's `SimpleState`) are the
//! caller's ([`PatchNetScratch`], a slot of the [`ModelState`] each worker passes in), so several sources'
//! threads classify at once without a lock.

use candle_core::{Device, Result, Tensor};

use super::config::PatchNetConfig;
use crate::format::WeightSet;
use crate::int8::{matmul, padded, quantise_u8, taps_last_to_channels_last, Int8Matrix, QuantRows};
use crate::kernels::conv1::{pad_zero_border, Conv1};
use crate::layers::LayerKind;
use crate::slice_ops::per_patch_shift_divisor;
use crate::state::ModelState;
use crate::ModelError;

/// The buffers of one forward pass, sized by the largest batch their worker has run.
#[derive(Default)]
pub(crate) struct PatchNetScratch {
    /// One normalised patch with a border of zeros, `(3, s + 2, s + 2)`.
    padded: Vec<f32>,
    act: Vec<f32>,
    pooled: Vec<f32>,
    codes: Vec<u8>,
    sample_scales: Vec<f32>,
    rows: QuantRows,
    logits: Vec<f32>,
    /// One patch's squared deviations (per-patch normalisation of the slice path).
    squares: Vec<f32>,
}

/// How the forward pass normalises each patch before conv1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SliceNorm {
    /// The input is normalised already (the tensor path normalised it with candle).
    Done,
    /// `(x − 0.5) / 0.25`.
    Fixed,
    /// Each patch to zero mean and unit deviation, as `normalise_per_patch`.
    PerPatch,
}

pub(crate) struct Int8PatchNet {
    side: usize,
    channels: [usize; 3],
    conv1: Conv1,
    /// `(c1, 9·c0)`, columns in `(dy, dx, c)` order.
    conv2: Int8Matrix,
    /// `(c2, 9·c1)`, columns in `(dy, dx, c)` order.
    conv3: Int8Matrix,
    /// `(hidden, flat)`, columns in `(y, x, c)` order.
    fc1: Int8Matrix,
    fc2: Int8Matrix,
}

impl std::fmt::Debug for Int8PatchNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Int8PatchNet")
            .field("side", &self.side)
            .field("channels", &self.channels)
            .finish()
    }
}

impl Int8PatchNet {
    /// The integer network of a file whose conv2, conv3, fc1 and fc2 weights are Q8_0 (`None` otherwise),
    /// built by walking the config's layer table: the first layer (conv1) stays f32, every later one becomes
    /// an i8 matrix whose columns are put in the order the NHWC activations arrive in.
    pub(crate) fn from_weight_set(
        cfg: &PatchNetConfig,
        set: &WeightSet,
    ) -> std::result::Result<Option<Self>, ModelError> {
        let layers = cfg.layers();
        let Some((first, rest)) = layers.split_first() else {
            return Ok(None);
        };
        let values = |name: &str| -> std::result::Result<Vec<f32>, ModelError> {
            Ok(set.tensor_f32(name)?.flatten_all()?.to_vec1::<f32>()?)
        };
        let mut matrices = Vec::with_capacity(rest.len());
        for (previous, layer) in layers.iter().zip(rest) {
            let Some(matrix) = set.int8(&layer.weight(), layer.row_len())? else {
                return Ok(None);
            };
            let order = match (previous.kind, layer.kind) {
                (_, LayerKind::Conv { kernel: 3, .. }) => {
                    if matrix.padded_cols() != layer.row_len() {
                        // Kernels whose rows are not whole blocks cannot be stored as Q8_0 in the first place.
                        return Ok(None);
                    }
                    // (c, dy, dx) columns to the (dy, dx, c) of an NHWC im2col row.
                    Some(taps_last_to_channels_last(layer.inputs))
                }
                // The integer pass has only 3×3 convolutions.
                (_, LayerKind::Conv { .. }) => return Ok(None),
                // The first fully-connected layer's columns are (c, y, x) in the float net's CHW flatten;
                // NHWC activations flatten (y, x, c).
                (LayerKind::Conv { .. }, LayerKind::Linear) => {
                    let (channels, cells) =
                        (previous.outputs, layer.inputs / previous.outputs.max(1));
                    Some(
                        (0..cells)
                            .flat_map(|p| (0..channels).map(move |c| c * cells + p))
                            .collect::<Vec<usize>>(),
                    )
                }
                (LayerKind::Linear, LayerKind::Linear) => None,
            };
            let matrix = match order {
                Some(order) => matrix.permute_columns(&order),
                None => matrix,
            };
            matrices.push(matrix.with_bias(&values(&layer.bias())?));
        }
        let Ok([conv2, conv3, fc1, fc2]) = <[Int8Matrix; 4]>::try_from(matrices) else {
            return Ok(None);
        };
        let conv1 = Conv1::new(
            &values(&first.weight())?,
            &values(&first.bias())?,
            first.outputs,
            first.stride(),
        );
        Ok(Some(Self {
            side: cfg.input_side_px,
            channels: cfg.channels,
            conv1,
            conv2,
            conv3,
            fc1,
            fc2,
        }))
    }

    /// Logits of normalised patches (with the thread's fallback state: a tensor path has no worker's).
    ///
    /// # Shapes
    /// `(b, 3, s, s)` f32 on the CPU → `(b, num_classes)`.
    pub(crate) fn logits(&self, x: &Tensor) -> Result<Tensor> {
        let (b, _, _, _) = x.dims4()?;
        let input = x.flatten_all()?.to_vec1::<f32>()?;
        crate::state::with_thread_state("int8 patchnet", |state| {
            self.with_outputs(&input, b, SliceNorm::Done, state, |logits| {
                Tensor::from_slice(logits, (b, self.fc2.rows()), &Device::Cpu)
            })
        })?
    }

    /// Runs the net on `b` CHW patches (`input`, `b · 3 · s · s` values) normalised as `norm` says, and hands
    /// `f` the `(b, outputs)` row-major outputs, with the buffers of `state`: nothing is allocated once they
    /// have grown to the batch.
    pub(crate) fn with_outputs<R>(
        &self,
        input: &[f32],
        b: usize,
        norm: SliceNorm,
        state: &mut ModelState,
        f: impl FnOnce(&[f32]) -> R,
    ) -> Result<R> {
        let s = self.side;
        if input.len() != b * 3 * s * s {
            candle_core::bail!(
                "int8 patchnet: {} input values for {b} patches of (3, {s}, {s})",
                input.len()
            );
        }
        let sc = state.slot::<PatchNetScratch>();
        self.outputs_in(input, b, norm, sc);
        Ok(f(&sc.logits))
    }

    fn outputs_in(&self, input: &[f32], b: usize, norm: SliceNorm, sc: &mut PatchNetScratch) {
        let s = self.side;
        let [c0, c1, c2] = self.channels;

        // conv1: direct f32 convolution of each normalised, zero-bordered patch (bias and ReLU fused), then
        // pool.
        sc.act.clear();
        sc.act.resize(b * s * s * c0, 0.0);
        for (patch, out) in input
            .chunks_exact(3 * s * s)
            .zip(sc.act.chunks_exact_mut(s * s * c0))
        {
            // (v − shift) / divisor: exact for `Done` (0, 1) and the same arithmetic as candle's otherwise.
            let (shift, divisor) = match norm {
                SliceNorm::Done => (0.0, 1.0),
                SliceNorm::Fixed => (0.5, 0.25),
                SliceNorm::PerPatch => per_patch_shift_divisor(patch, &mut sc.squares),
            };
            pad_zero_border(patch, s, s, &mut sc.padded, |v| (v - shift) / divisor);
            self.conv1.forward(&sc.padded, (s, s), out);
        }
        maxpool2_nhwc(&sc.act, b, s, s, c0, &mut sc.pooled);

        // conv2 and conv3: u8 im2col · i8 kernels (bias and ReLU fused), then pool.
        let mut side = s / 2;
        for (conv, c_in, c_out) in [(&self.conv2, c0, c1), (&self.conv3, c1, c2)] {
            quantise_per_sample(&sc.pooled, b, &mut sc.codes, &mut sc.sample_scales);
            im2col_u8_nhwc(&sc.codes, &sc.sample_scales, side, c_in, &mut sc.rows);
            sc.act.clear();
            sc.act.resize(b * side * side * c_out, 0.0);
            matmul(&sc.rows, conv, true, &mut sc.act);
            maxpool2_nhwc(&sc.act, b, side, side, c_out, &mut sc.pooled);
            side /= 2;
        }

        // fc1 (ReLU) and fc2 on per-patch rows.
        let flat = side * side * c2;
        sc.rows.quantize(&sc.pooled, b, flat);
        sc.act.clear();
        sc.act.resize(b * self.fc1.rows(), 0.0);
        matmul(&sc.rows, &self.fc1, true, &mut sc.act);
        sc.rows.quantize(&sc.act, b, self.fc1.rows());
        sc.logits.clear();
        sc.logits.resize(b * self.fc2.rows(), 0.0);
        matmul(&sc.rows, &self.fc2, false, &mut sc.logits);
    }
}

/// 2×2 max-pool (stride 2) of `(b, h, w, c)` NHWC into `(b, h/2, w/2, c)`.
fn maxpool2_nhwc(x: &[f32], b: usize, h: usize, w: usize, c: usize, out: &mut Vec<f32>) {
    let (ho, wo) = (h / 2, w / 2);
    out.clear();
    out.resize(b * ho * wo * c, 0.0);
    for bi in 0..b {
        for y in 0..ho {
            for xo in 0..wo {
                let dst = &mut out[((bi * ho + y) * wo + xo) * c..][..c];
                let at = |yy: usize, xx: usize| ((bi * h + yy) * w + xx) * c;
                let (p00, p01) = (at(2 * y, 2 * xo), at(2 * y, 2 * xo + 1));
                let (p10, p11) = (at(2 * y + 1, 2 * xo), at(2 * y + 1, 2 * xo + 1));
                for (ch, d) in dst.iter_mut().enumerate() {
                    *d = x[p00 + ch]
                        .max(x[p01 + ch])
                        .max(x[p10 + ch])
                        .max(x[p11 + ch]);
                }
            }
        }
    }
}

/// Quantises each of the `b` samples of `x` (non-negative) to u8 codes 0..=127 with one scale per sample.
fn quantise_per_sample(x: &[f32], b: usize, codes: &mut Vec<u8>, scales: &mut Vec<f32>) {
    codes.clear();
    codes.resize(x.len(), 0);
    scales.clear();
    let per = x.len() / b.max(1);
    for (src, dst) in x.chunks_exact(per).zip(codes.chunks_exact_mut(per)) {
        scales.push(quantise_u8(src, dst));
    }
}

/// u8 im2col of `(b, s, s, c)` NHWC codes for a 3×3 same-padded conv into `rows` (`b·s·s` rows of `9·c`
/// codes, `(dy, dx, c)` order); each row takes its sample's scale (`b = sample_scales.len()`).
fn im2col_u8_nhwc(codes: &[u8], sample_scales: &[f32], s: usize, c: usize, rows: &mut QuantRows) {
    let b = sample_scales.len();
    let kp = padded(9 * c);
    rows.reset(b * s * s, kp);
    for bi in 0..b {
        let img = &codes[bi * s * s * c..(bi + 1) * s * s * c];
        for y in 0..s {
            for x in 0..s {
                let r = (bi * s + y) * s + x;
                rows.scales[r] = sample_scales[bi];
                let row = &mut rows.codes[r * kp..(r + 1) * kp];
                for dy in 0..3 {
                    let yy = y + dy;
                    if yy < 1 || yy > s {
                        continue;
                    }
                    for dx in 0..3 {
                        let xx = x + dx;
                        if xx < 1 || xx > s {
                            continue;
                        }
                        let src = ((yy - 1) * s + (xx - 1)) * c;
                        row[(dy * 3 + dx) * c..][..c].copy_from_slice(&img[src..src + c]);
                    }
                }
            }
        }
    }
}
