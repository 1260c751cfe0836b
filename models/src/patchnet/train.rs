//! Training the patchnet (feature `train`): batch normalisation after each convolution, folded away for
//! inference and saving, and the forward pass in NHWC with the hand-written backward passes of
//! `train_ops`.

use super::config::PatchNetConfig;
use super::model::PatchNet;
use crate::train_norms::TrainNorms;
use crate::train_ops::{conv_block_nhwc, conv_bn_block_nhwc, BatchNorm};
use candle_core::{DType, Tensor};
use candle_nn::VarBuilder;

impl PatchNet {
    /// Builds the network for training with batch normalisation after each convolution (scale and shift
    /// from `vb` under `convN.bn`). [`Self::train_logits`] normalises with the batch's statistics and
    /// updates running ones; [`Self::logits`], [`Self::named_tensors`] and the saved files use the
    /// convolutions with the running normalisation folded in ([`Self::folded`]), so the stored network
    /// has the same layers as one trained without it.
    pub fn new_with_batch_norm(cfg: &PatchNetConfig, vb: VarBuilder) -> candle_core::Result<Self> {
        let mut net = Self::new(cfg, vb.clone())?;
        let [c0, c1, c2] = cfg.channels;
        net.norms = TrainNorms::new([
            BatchNorm::new(c0, vb.pp("conv1").pp("bn"))?,
            BatchNorm::new(c1, vb.pp("conv2").pp("bn"))?,
            BatchNorm::new(c2, vb.pp("conv3").pp("bn"))?,
        ]);
        Ok(net)
    }
    /// The inference network: batch normalisation (if any) folded into the convolutions with its running
    /// statistics, weights detached from training.
    pub fn folded(&self) -> candle_core::Result<Self> {
        let Some(norms) = self.norms.get() else {
            return Ok(self.clone());
        };
        Ok(Self {
            conv1: norms[0].fold_into(&self.conv1)?,
            conv2: norms[1].fold_into(&self.conv2)?,
            conv3: norms[2].fold_into(&self.conv3)?,
            norms: TrainNorms::default(),
            int8: None,
            ..self.clone()
        })
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
            x = match self.norms.get() {
                Some(norms) => conv_bn_block_nhwc(&x, conv, &norms[i])?,
                None => conv_block_nhwc(&x, conv)?,
            };
        }
        // Flatten in the NCHW order the fc1 weights are stored in.
        let x = x.permute((0, 3, 1, 2))?.reshape((b, self.cfg.flat_dim()))?;
        self.head(x.to_dtype(DType::F32)?, masks)
    }
}
