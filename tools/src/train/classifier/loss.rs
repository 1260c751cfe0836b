//! The classifier's training loss: cross-entropy, the box head's smooth-L1 and dropout masks.

use candle_core::{DType, Device, Tensor, D};
use rand::Rng;
use saccade_models::patchnet::{encode_patch_box, PatchNet, PatchNetConfig, BOX_OUTPUTS};

/// Dropout masks of one batch for [`PatchNet::train_logits`]: each value 0 with probability `p`,
/// else `1/(1−p)`, drawn from `rng`.
pub(crate) fn dropout_masks<R: Rng>(
    cfg: &PatchNetConfig,
    batch: usize,
    p: f32,
    rng: &mut R,
    device: &Device,
) -> anyhow::Result<(Tensor, Tensor)> {
    let keep = 1.0 / (1.0 - p);
    let mut mask = |n: usize| -> anyhow::Result<Tensor> {
        let v: Vec<f32> = (0..batch * n)
            .map(|_| if rng.random::<f32>() < p { 0.0 } else { keep })
            .collect();
        Ok(Tensor::from_vec(v, (batch, n), device)?)
    };
    Ok((mask(cfg.flat_dim())?, mask(cfg.hidden)?))
}

/// Box targets of a batch for the box head: `(b, 4)` encoded targets and a `(b, 1)` mask (1 where known).
pub(crate) fn box_targets(
    boxes: &[Option<[f32; 4]>],
    device: &Device,
) -> anyhow::Result<(Tensor, Tensor)> {
    let mut t = Vec::with_capacity(boxes.len() * 4);
    let mut m = Vec::with_capacity(boxes.len());
    for b in boxes {
        match b {
            Some(b) => {
                t.extend_from_slice(&encode_patch_box(*b));
                m.push(1f32);
            }
            None => {
                t.extend_from_slice(&[0.0; 4]);
                m.push(0.0);
            }
        }
    }
    Ok((
        Tensor::from_vec(t, (boxes.len(), 4), device)?,
        Tensor::from_vec(m, (boxes.len(), 1), device)?,
    ))
}

/// Smooth-L1 (Huber, δ = 1) box loss summed over the four outputs, averaged over the samples with a box.
pub(crate) fn box_loss(
    raw: &Tensor,
    targets: &Tensor,
    mask: &Tensor,
) -> candle_core::Result<Tensor> {
    let d = (raw - targets)?.abs()?;
    let small = d.minimum(1.0)?;
    let huber = ((small.sqr()? * 0.5)? + (d - &small)?)?;
    let n = mask.sum_all()?.to_scalar::<f32>()?.max(1.0);
    huber
        .broadcast_mul(mask)?
        .sum_all()?
        .affine(1.0 / n as f64, 0.0)
}

/// Mean cross-entropy (plus the weighted box loss when the net has a box head and `boxes` is given) and
/// accuracy of a forward pass (with dropout when `masks` is given).
pub(crate) fn loss_and_hits(
    model: &PatchNet,
    x: &Tensor,
    labels: &Tensor,
    masks: Option<&(Tensor, Tensor)>,
    boxes: Option<(&Tensor, &Tensor, f64)>,
) -> anyhow::Result<(Tensor, usize)> {
    let outputs = model.train_outputs(x, masks.map(|(features, hidden)| (features, hidden)))?;
    let classes = model.config().num_classes;
    let logits = outputs.narrow(1, 0, classes)?.contiguous()?;
    let mut loss = candle_nn::loss::cross_entropy(&logits, labels)?;
    if let (true, Some((targets, mask, weight))) = (model.config().box_head, boxes) {
        let raw = outputs.narrow(1, classes, BOX_OUTPUTS)?;
        loss = (loss + box_loss(&raw, targets, mask)?.affine(weight, 0.0)?)?;
    }
    let hits = logits
        .argmax(D::Minus1)?
        .eq(labels)?
        .to_dtype(DType::U32)?
        .sum_all()?
        .to_scalar::<u32>()? as usize;
    Ok((loss, hits))
}
