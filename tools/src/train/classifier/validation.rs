//! How the patch net does on held-out data: GTSRB test accuracy, background accuracy and GTSDB validation crops.

use candle_core::{Device, D};
use saccade_models::patchnet::PatchNet;
use saccade_models::{PatchClassifier, BACKGROUND_CLASS, NUM_CLASSES};
use saccade_runtime::frame::BoxPx;

use crate::train::augment::{crop_square, gtsrb_chw};
use crate::train::common::{batch_tensor, rng_for};
use crate::train::data::{GtsrbSet, GTSRB_SIDE_PX};
use crate::train::gtsdb::{background_crop, sign_crop, CropJitter, GtsdbFrame};

/// Accuracy of `model` on GTSRB crops (`images`: N×32×32×3 RGB u8, `labels`: N class ids) and per class
/// (`NUM_CLASSES` entries; NaN where the class has no image). A prediction of background counts as wrong.
pub fn gtsrb_accuracy(
    model: &dyn PatchClassifier,
    images: &[u8],
    labels: &[u8],
    device: &Device,
) -> anyhow::Result<(f64, Vec<f64>)> {
    let set = GtsrbSet::from_bytes(images.to_vec(), labels.to_vec())?;
    let side = model.input_side_px();
    let mut correct = vec![0usize; NUM_CLASSES];
    let mut total = vec![0usize; NUM_CLASSES];
    let batch = 256;
    for start in (0..set.len()).step_by(batch) {
        let end = (start + batch).min(set.len());
        let imgs: Vec<Vec<f32>> = (start..end)
            .map(|i| {
                let chw = gtsrb_chw(set.image(i), GTSRB_SIDE_PX);
                if side == GTSRB_SIDE_PX {
                    chw
                } else {
                    crop_square(
                        set.image(i),
                        GTSRB_SIDE_PX,
                        GTSRB_SIDE_PX,
                        0.0,
                        0.0,
                        GTSRB_SIDE_PX as f32,
                        side,
                    )
                }
            })
            .collect();
        let x = batch_tensor(&imgs, 3, side, side, device)?;
        let probs = model.classify(&x)?;
        let predicted = probs.argmax(D::Minus1)?.to_vec1::<u32>()?;
        for (k, p) in predicted.into_iter().enumerate() {
            let label = set.labels[start + k] as usize;
            total[label] += 1;
            if p as usize == label {
                correct[label] += 1;
            }
        }
    }
    let all_total: usize = total.iter().sum();
    let all_correct: usize = correct.iter().sum();
    let per_class = correct
        .iter()
        .zip(&total)
        .map(|(&c, &t)| {
            if t == 0 {
                f64::NAN
            } else {
                c as f64 / t as f64
            }
        })
        .collect();
    Ok((all_correct as f64 / all_total.max(1) as f64, per_class))
}

/// Share of held-out background patches the model calls background (1 − false-positive rate per patch).
pub(crate) fn background_accuracy(
    model: &PatchNet,
    patches: &[Vec<f32>],
    device: &Device,
) -> anyhow::Result<f64> {
    let side = model.input_side_px();
    let mut correct = 0usize;
    for chunk in patches.chunks(256) {
        let x = batch_tensor(chunk, 3, side, side, device)?;
        let predicted = model.logits(&x)?.argmax(D::Minus1)?.to_vec1::<u32>()?;
        correct += predicted
            .iter()
            .filter(|&&p| p as usize == BACKGROUND_CLASS)
            .count();
    }
    Ok(correct as f64 / patches.len().max(1) as f64)
}

/// Fixed crops of the GTSDB validation frames: each sign at three framings, and background crops.
#[derive(Default)]
pub(crate) struct ValidationCrops {
    /// (pixels, class, box in patch sides)
    pub(crate) signs: Vec<(Vec<f32>, usize, [f32; 4])>,
    pub(crate) backgrounds: Vec<Vec<f32>>,
}

pub(crate) fn gtsdb_validation_crops(
    frames: &[GtsdbFrame],
    jitter: &CropJitter,
    seed: u64,
) -> ValidationCrops {
    let mut rng = rng_for(seed, 77);
    let mut out = ValidationCrops::default();
    for frame in frames {
        for sign in &frame.signs {
            for _ in 0..3 {
                let (chw, _, target) = sign_crop(frame, sign, GTSRB_SIDE_PX, jitter, &mut rng);
                out.signs.push((chw, sign.class_id, target));
            }
        }
        for _ in 0..10 {
            if let Some((chw, _)) = background_crop(frame, GTSRB_SIDE_PX, 4, &mut rng) {
                out.backgrounds.push(chw);
            }
        }
    }
    out
}

/// How the patch net does on real validation crops.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct ValidationReport {
    pub(crate) sign_crops: usize,
    /// Right class (not background) on sign crops.
    pub(crate) class_accuracy: f64,
    /// Called background on sign crops.
    pub(crate) missed_as_background: f64,
    pub(crate) background_crops: usize,
    /// Background crops called background.
    pub(crate) background_accuracy: f64,
    /// Box head: mean IoU of the regressed box with the sign's box, and the share at IoU ≥ 0.5.
    pub(crate) mean_box_iou: Option<f64>,
    pub(crate) box_iou_at_least_half: Option<f64>,
}

impl ValidationReport {
    pub(crate) fn describe(&self) -> String {
        let mut s = format!(
            "GTSDB validation crops: class acc {:.2} % of {} (background {:.2} %), background acc {:.2} % of {}",
            100.0 * self.class_accuracy,
            self.sign_crops,
            100.0 * self.missed_as_background,
            100.0 * self.background_accuracy,
            self.background_crops
        );
        if let (Some(m), Some(h)) = (self.mean_box_iou, self.box_iou_at_least_half) {
            s.push_str(&format!(
                ", box IoU mean {m:.3}, ≥ 0.5 on {:.1} %",
                100.0 * h
            ));
        }
        s
    }
}

pub(crate) fn patch_box_iou(a: &[f32; 4], b: &[f32; 4]) -> f64 {
    let ba = BoxPx::new(a[0], a[1], a[2], a[3]);
    let bb = BoxPx::new(b[0], b[1], b[2], b[3]);
    ba.iou(&bb) as f64
}

pub(crate) fn validation_report(
    model: &PatchNet,
    crops: &ValidationCrops,
    device: &Device,
) -> anyhow::Result<ValidationReport> {
    let side = GTSRB_SIDE_PX;
    let (mut right, mut as_bg, mut ious) = (0usize, 0usize, Vec::new());
    for chunk in crops.signs.chunks(256) {
        let imgs: Vec<Vec<f32>> = chunk.iter().map(|c| c.0.clone()).collect();
        let x = batch_tensor(&imgs, 3, side, side, device)?;
        let verdicts = model.classify_with_boxes(&x)?;
        let predicted = verdicts.probs.argmax(D::Minus1)?.to_vec1::<u32>()?;
        for (k, p) in predicted.iter().enumerate() {
            right += usize::from(*p as usize == chunk[k].1);
            as_bg += usize::from(*p as usize == BACKGROUND_CLASS);
            if let Some(boxes) = &verdicts.boxes {
                ious.push(patch_box_iou(&boxes[k], &chunk[k].2));
            }
        }
    }
    let bg_right = background_accuracy(model, &crops.backgrounds, device)?;
    let n = crops.signs.len().max(1) as f64;
    Ok(ValidationReport {
        sign_crops: crops.signs.len(),
        class_accuracy: right as f64 / n,
        missed_as_background: as_bg as f64 / n,
        background_crops: crops.backgrounds.len(),
        background_accuracy: bg_right,
        mean_box_iou: (!ious.is_empty()).then(|| ious.iter().sum::<f64>() / ious.len() as f64),
        box_iou_at_least_half: (!ious.is_empty())
            .then(|| ious.iter().filter(|&&v| v >= 0.5).count() as f64 / ious.len() as f64),
    })
}
