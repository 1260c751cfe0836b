//! Training the glancenet (feature `train`): batch normalisation after each convolution, folded away for
//! inference and saving, and the forward pass in NHWC with the hand-written backward passes of
//! `train_ops`.

use super::config::{GlanceMaps, GlanceNetConfig, CONV_LAYERS};
use super::model::GlanceNetModel;
use crate::train_norms::TrainNorms;
use crate::train_ops::{conv1x1_nhwc_to_nchw, conv3x3_bn_relu_nhwc, conv3x3_relu_nhwc, BatchNorm};
use candle_core::{DType, Module, Tensor};
use candle_nn::VarBuilder;

impl GlanceNetModel {
    /// Builds the network for training with batch normalisation after each convolution (scale and shift
    /// from `vb` under `convN.bn`). [`Self::train_maps`] normalises with the batch's statistics and
    /// updates running ones; [`Self::forward_maps`], [`Self::named_tensors`] and the saved files use the
    /// convolutions with the running normalisation folded in ([`Self::folded`]), so the stored network
    /// has the same layers as one trained without it.
    pub fn new_with_batch_norm(cfg: &GlanceNetConfig, vb: VarBuilder) -> candle_core::Result<Self> {
        let mut net = Self::new(cfg, vb.clone())?;
        let [c0, c1, c2, c3] = cfg.channels;
        let norm = |c, i: usize| BatchNorm::new(c, vb.pp(CONV_LAYERS[i].0).pp("bn"));
        net.norms = TrainNorms::new([norm(c0, 0)?, norm(c1, 1)?, norm(c2, 2)?, norm(c3, 3)?]);
        Ok(net)
    }
    /// The inference network: batch normalisation (if any) folded into the convolutions with its running
    /// statistics, weights detached from training.
    pub fn folded(&self) -> candle_core::Result<Self> {
        let Some(norms) = self.norms.get() else {
            return Ok(self.clone());
        };
        Ok(Self {
            convs: [
                norms[0].fold_into(&self.convs[0])?,
                norms[1].fold_into(&self.convs[1])?,
                norms[2].fold_into(&self.convs[2])?,
                norms[3].fold_into(&self.convs[3])?,
            ],
            norms: TrainNorms::default(),
            int8: None,
            ..self.clone()
        })
    }
    /// All heads for training: the same function as [`Self::forward_maps`], computed in NHWC layout with
    /// every convolution as one matrix product over an im2col (see `train_ops`); several times faster to
    /// backpropagate on the CPU than candle's conv2d.
    pub fn train_maps(&self, x: &Tensor) -> candle_core::Result<GlanceMaps> {
        let b = x.dim(0)?;
        let mut x = self.normalised_input(x)?.permute((0, 2, 3, 1))?;
        for (i, (conv, (_, _, stride, _))) in self.convs.iter().zip(CONV_LAYERS).enumerate() {
            x = match self.norms.get() {
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
}
