//! `saccade train classifier`: trains the patch classifier ([`PatchNet`]) on augmented GTSRB crops, sign
//! crops cut from synthetic scenes the way the runtime cuts them, rendered drawings (positives and hard
//! negatives) and background patches (procedural textures, real photos away from their boxes, synthetic
//! scenes away from their signs). It reports GTSRB test accuracy per epoch, saves
//! `patchnet.safetensors` and `patchnet.q8_0.gguf`, and evaluates f32, Q8_0 and Q4_0.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use candle_core::{DType, Device, Tensor, D};
use candle_nn::{AdamW, Optimizer, ParamsAdamW, VarBuilder, VarMap};
use rand::seq::SliceRandom;
use rand::Rng;
use saccade_models::patchnet::{
    encode_patch_box, InputNorm, PatchNet, PatchNetConfig, BOX_OUTPUTS, PATCHNET_KIND,
};
use saccade_models::weights::{quantize_file, QuantDtype};
use saccade_models::{PatchClassifier, BACKGROUND_CLASS, NUM_CLASSES};
use saccade_runtime::frame::BoxPx;

use super::augment::{augment_gtsrb, crop_square, gtsrb_chw, photometric, procedural_background};
use super::common::{
    batch_tensor, cosine_lr, file_bytes, progress, rng_for, sample_rng, save_named, train_device,
};
use super::data::{load_photo_annotations, read_rgb, split_every, GtsrbSet, Photo, GTSRB_SIDE_PX};
use super::gtsdb::{
    background_crop, box_in_region, crop, load_gtsdb, sign_crop, CropJitter, GtsdbFrame, GtsdbSplit,
};
use super::pictos::{composite_patch, load_pictograms, Pictogram};
use super::scenes::{scene_crops, SceneCrops};
use rayon::prelude::*;

/// Knobs of `saccade train classifier`.
#[derive(Debug, Clone, clap::Args)]
pub struct ClassifierArgs {
    /// Folder holding gtsrb/, pictograms/ and scenes/.
    #[arg(long, default_value = "../shared/data")]
    pub data: PathBuf,
    /// Where the weight files go.
    #[arg(long, default_value = "models/weights")]
    pub out: PathBuf,
    #[arg(long, default_value_t = 20261126)]
    pub seed: u64,
    #[arg(long, default_value_t = 2)]
    pub epochs: usize,
    /// Steps per epoch cap (0 = a full pass over the epoch's samples).
    #[arg(long, default_value_t = 0)]
    pub steps: usize,
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
    #[arg(long, default_value_t = 3e-3)]
    pub lr: f64,
    /// Output channels of the three convolutions.
    #[arg(long, value_delimiter = ',', default_values_t = [16usize, 32, 32])]
    pub channels: Vec<usize>,
    /// Width of the hidden fully-connected layer.
    #[arg(long, default_value_t = 128)]
    pub hidden: usize,
    /// Background patches per epoch (procedural and real photos away from their boxes).
    #[arg(long, default_value_t = 3000)]
    pub backgrounds_per_epoch: usize,
    /// Drawing composites per epoch (positives and hard negatives).
    #[arg(long, default_value_t = 1500)]
    pub pictograms_per_epoch: usize,
    /// GTSRB test images scored after each epoch (a fixed evenly spaced subset; 0 = all 12,630). The
    /// final f32/Q8_0/Q4_0 numbers always use the whole test set.
    #[arg(long, default_value_t = 2000)]
    pub epoch_eval_images: usize,
    /// Synthetic training scenes to cut sign and background crops from (0 = none).
    #[arg(long, default_value_t = 300)]
    pub scenes: usize,
    /// Wall-clock budget of the training loop in minutes (0 = none). When set, the learning rate decays
    /// by elapsed time as well as by step and training stops at the budget, so a run's length no longer
    /// depends on its step count alone (the result then depends on the machine's speed).
    #[arg(long, default_value_t = 0.0)]
    pub max_train_minutes: f64,
    /// Use only the first N GTSRB train images (0 = all), for quick runs.
    #[arg(long, default_value_t = 0)]
    pub limit: usize,
    /// Where the network trains: `cpu`, or `cuda` with a `--features cuda` build. Samples are made on the
    /// CPU either way, on all cores.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Input normalisation: `per-patch` (each patch to zero mean, unit spread) or `fixed`.
    #[arg(long, default_value = "per-patch")]
    pub input_norm: String,
    /// Dropout probability on the flattened features and the hidden layer while training (0 = none).
    #[arg(long, default_value_t = 0.0)]
    pub dropout: f32,
    /// Batch normalisation after each convolution while training (batch statistics; running statistics
    /// are folded into the convolutions for evaluation and in the saved files, which keep their layers).
    #[arg(long)]
    pub batch_norm: bool,
    /// Add drawings composed from the pictograms for GTSRB classes that have none (pedestrians, sign 133:
    /// the warning triangle of `DE_136_10` with the figure of `DE_259`) as extra positives.
    #[arg(long)]
    pub composed_drawings: bool,
    /// Class-balanced GTSRB draws (0 = off): each epoch still draws as many GTSRB images as the set holds,
    /// but a class with fewer than N images is drawn as if it had N (its images repeat, augmented afresh)
    /// and the larger classes are drawn proportionally less (a fresh random subset each epoch).
    #[arg(long, default_value_t = 0)]
    pub class_floor: usize,
    /// Stop after this many epochs of the schedule (0 = run them all): the learning rate still follows
    /// `--epochs`, so the epochs that run match a full run's, for checking a rerun against a logged one.
    #[arg(long, default_value_t = 0)]
    pub stop_after_epochs: usize,
    /// Start from this trained patch net (float safetensors with the same channels and hidden width);
    /// a box head it lacks starts small.
    #[arg(long)]
    pub init: Option<PathBuf>,
    /// Add the box head: fc2 also regresses the sign's box inside the patch (trained on real GTSDB crops).
    #[arg(long)]
    pub box_head: bool,
    /// Weight of the box loss (smooth L1 on centre offset and log size) against the class cross-entropy.
    #[arg(long, default_value_t = 2.0)]
    pub box_weight: f64,
    /// Crops around real signs of the GTSDB training frames per epoch (jittered centre and context).
    #[arg(long, default_value_t = 0)]
    pub gtsdb_signs_per_epoch: usize,
    /// Background crops of the GTSDB training frames per epoch (the most colourful of a few random tries).
    #[arg(long, default_value_t = 0)]
    pub gtsdb_backgrounds_per_epoch: usize,
    /// Patch side over sign side of the GTSDB sign crops, `MIN,MAX` (log-uniform).
    #[arg(long, value_delimiter = ',', default_value = "1.1,2.8")]
    pub context_range: Vec<f32>,
    /// GTSRB draws per epoch (0 = as many as the set holds), a random subset of the epoch's draws.
    #[arg(long, default_value_t = 0)]
    pub gtsrb_per_epoch: usize,
    /// Mine hard negatives with the detector in this weights folder (glance, patch net, strategies.toml):
    /// every region its `topk` examines or reports on the GTSDB training frames that holds no sign.
    #[arg(long)]
    pub mine_with: Option<PathBuf>,
    /// Mined hard negatives per epoch (drawn with replacement, jittered ±10 % in place and ±15 % in size).
    #[arg(long, default_value_t = 0)]
    pub hard_negatives_per_epoch: usize,
    /// Mined hard positives per epoch: the `--mine-with` detector's own patches that hold a sign's centre,
    /// labelled with that sign's class and box (drawn with replacement, jittered like the negatives).
    #[arg(long, default_value_t = 0)]
    pub hard_positives_per_epoch: usize,
}

/// Where one training sample comes from; the pixels are made fresh (augmented) each time it is drawn.
#[derive(Debug, Clone, Copy)]
enum Sample {
    Gtsrb(usize),
    SceneCrop(usize),
    Pictogram(usize),
    Procedural,
    PhotoBackground,
    /// Sign `1` of GTSDB training frame `0`.
    GtsdbSign(usize, usize),
    /// A background crop of GTSDB training frame `0`.
    GtsdbBackground(usize),
    /// Mined hard negative `0` (see [`super::mining`]).
    HardNegative(usize),
    /// Mined hard positive `0` (see [`super::mining`]).
    HardPositive(usize),
}

/// Share of a patch's side by which a background crop must stay away from every annotated box.
const BOX_MARGIN: f32 = 0.15;

/// A decoded training photo: width, height, packed RGB and its annotated boxes `[xmin, ymin, xmax, ymax)`.
type TrainPhoto = (usize, usize, Vec<u8>, Vec<[f32; 4]>);

/// Sources of background and drawing samples held in memory for one run.
struct Pools {
    photos: Vec<TrainPhoto>,
    pictograms: Vec<Pictogram>,
    scene: SceneCrops,
    gtsdb: Vec<GtsdbFrame>,
    /// `(frame, sign)` of every GTSDB training sign.
    gtsdb_signs: Vec<(usize, usize)>,
    /// `(frame, region)` of every mined hard negative.
    hard_negatives: Vec<(usize, BoxPx)>,
    /// `(frame, region, sign)` of every mined hard positive.
    hard_positives: Vec<(usize, BoxPx, usize)>,
    crop_jitter: CropJitter,
}

/// One made sample: pixels, label, and the sign's box in patch sides where it is known.
type Made = (Vec<f32>, u32, Option<[f32; 4]>);

impl Pools {
    /// Label, pixels and (where known) the sign's box of one sample.
    fn make<R: Rng>(&self, gtsrb: &GtsrbSet, sample: Sample, side: usize, rng: &mut R) -> Made {
        match sample {
            Sample::GtsdbSign(f, k) => {
                let frame = &self.gtsdb[f];
                let sign = &frame.signs[k];
                let (mut chw, _, target) = sign_crop(frame, sign, side, &self.crop_jitter, rng);
                photometric(&mut chw, rng);
                (chw, sign.class_id as u32, Some(target))
            }
            Sample::GtsdbBackground(f) => {
                let mut chw = match background_crop(&self.gtsdb[f], side, 4, rng) {
                    Some((chw, _)) => chw,
                    None => {
                        let bg = procedural_background(side, rng);
                        crop_square(&bg, side, side, 0.0, 0.0, side as f32, side)
                    }
                };
                photometric(&mut chw, rng);
                (chw, BACKGROUND_CLASS as u32, None)
            }
            Sample::HardPositive(k) => {
                let (f, region, sign) = self.hard_positives[k];
                let frame = &self.gtsdb[f];
                let jittered = jitter_region(&region, rng);
                // Jitter must keep the sign's centre inside the crop (and the same sign the nearest).
                let cut = if super::mining::sign_centred_in(frame, &jittered) == Some(sign) {
                    jittered
                } else {
                    region
                };
                let mut chw = crop(frame, cut, side);
                photometric(&mut chw, rng);
                let target = box_in_region(&frame.signs[sign].bbox, &cut);
                (chw, frame.signs[sign].class_id as u32, Some(target))
            }
            Sample::HardNegative(k) => {
                let (f, region) = self.hard_negatives[k];
                let frame = &self.gtsdb[f];
                let jittered = jitter_region(&region, rng);
                // Jitter must not slide the crop onto a sign.
                let cut = if frame.holds_no_sign(&jittered) {
                    jittered
                } else {
                    region
                };
                let mut chw = crop(frame, cut, side);
                photometric(&mut chw, rng);
                (chw, BACKGROUND_CLASS as u32, None)
            }
            Sample::Gtsrb(i) => (
                augment_gtsrb(gtsrb.image(i), side, rng),
                gtsrb.labels[i] as u32,
                None,
            ),
            Sample::SceneCrop(i) => {
                let (pixels, label) = &self.scene.crops[i];
                let mut out = pixels.clone();
                photometric(&mut out, rng);
                (out, *label as u32, None)
            }
            Sample::Pictogram(i) => {
                let picto = &self.pictograms[i];
                let bg = self.background_rgb(64, rng);
                let label = picto.class_id.unwrap_or(BACKGROUND_CLASS) as u32;
                (composite_patch(picto, &bg, 64, side, rng), label, None)
            }
            Sample::Procedural => {
                let bg = procedural_background(side, rng);
                let mut out = crop_square(&bg, side, side, 0.0, 0.0, side as f32, side);
                photometric(&mut out, rng);
                (out, BACKGROUND_CLASS as u32, None)
            }
            Sample::PhotoBackground => {
                let bg = self.background_rgb(side, rng);
                let mut out = crop_square(&bg, side, side, 0.0, 0.0, side as f32, side);
                photometric(&mut out, rng);
                (out, BACKGROUND_CLASS as u32, None)
            }
        }
    }

    /// A sign-free square background, packed RGB `side²`: a real photo region away from its boxes when one
    /// is found in a few tries, else a procedural texture.
    fn background_rgb<R: Rng>(&self, side: usize, rng: &mut R) -> Vec<u8> {
        if !self.photos.is_empty() && rng.random_bool(0.6) {
            for _ in 0..8 {
                let (w, h, rgb, boxes) = &self.photos[rng.random_range(0..self.photos.len())];
                let max_side = (*w.min(h) as f32 * 0.7).max(17.0);
                let region = rng.random_range(16.0..max_side);
                let x0 = rng.random_range(0.0..(*w as f32 - region).max(1.0));
                let y0 = rng.random_range(0.0..(*h as f32 - region).max(1.0));
                let m = region * BOX_MARGIN;
                let clear = boxes.iter().all(|b| {
                    b[2] < x0 - m
                        || b[0] > x0 + region + m
                        || b[3] < y0 - m
                        || b[1] > y0 + region + m
                });
                if clear {
                    let chw = crop_square(rgb, *w, *h, x0, y0, region, side);
                    return chw_to_rgb(&chw, side);
                }
            }
        }
        procedural_background(side, rng)
    }
}

/// Planar f32 (0..1) back to packed RGB u8.
fn chw_to_rgb(chw: &[f32], side: usize) -> Vec<u8> {
    let plane = side * side;
    let mut out = vec![0u8; plane * 3];
    for i in 0..plane {
        for c in 0..3 {
            out[i * 3 + c] = (chw[c * plane + i] * 255.0).round().clamp(0.0, 255.0) as u8;
        }
    }
    out
}

/// Loads the training photos (the generator's train split) with their boxes in photo pixels.
fn load_train_photos(data_dir: &Path) -> anyhow::Result<Vec<TrainPhoto>> {
    let photos: Vec<Photo> = load_photo_annotations(data_dir)?;
    let (train, _held_out) = split_every(&photos, 5);
    let mut out = Vec::with_capacity(train.len());
    for photo in train {
        let (w, h, rgb) = read_rgb(&photo.path)?;
        let boxes = photo
            .boxes
            .iter()
            .map(|b| [b.xmin_px, b.ymin_px, b.xmax_px, b.ymax_px])
            .collect();
        out.push((w, h, rgb, boxes));
    }
    Ok(out)
}

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
fn background_accuracy(
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

/// A mined region moved by up to ±10 % of its side and scaled by 0.85–1.15, as a square.
fn jitter_region<R: Rng>(region: &BoxPx, rng: &mut R) -> BoxPx {
    let side_px = region.width() * rng.random_range(0.85f32..1.15);
    let (cx, cy) = region.centre();
    let cx = cx + region.width() * rng.random_range(-0.1f32..0.1);
    let cy = cy + region.height() * rng.random_range(-0.1f32..0.1);
    BoxPx::centred_square(cx, cy, side_px)
}

/// One epoch's sample list, shuffled.
fn epoch_samples<R: Rng>(
    args: &ClassifierArgs,
    gtsrb_labels: &[u8],
    pools: &Pools,
    rng: &mut R,
) -> Vec<Sample> {
    let mut draws = gtsrb_draws(gtsrb_labels, args.class_floor, rng);
    if args.gtsrb_per_epoch > 0 && args.gtsrb_per_epoch < draws.len() {
        draws.shuffle(rng);
        draws.truncate(args.gtsrb_per_epoch);
    }
    let mut samples: Vec<Sample> = draws.into_iter().map(Sample::Gtsrb).collect();
    if !pools.gtsdb_signs.is_empty() {
        for _ in 0..args.gtsdb_signs_per_epoch {
            let (f, k) = pools.gtsdb_signs[rng.random_range(0..pools.gtsdb_signs.len())];
            samples.push(Sample::GtsdbSign(f, k));
        }
    }
    if !pools.hard_negatives.is_empty() {
        for _ in 0..args.hard_negatives_per_epoch {
            samples.push(Sample::HardNegative(
                rng.random_range(0..pools.hard_negatives.len()),
            ));
        }
    }
    if !pools.hard_positives.is_empty() {
        for _ in 0..args.hard_positives_per_epoch {
            samples.push(Sample::HardPositive(
                rng.random_range(0..pools.hard_positives.len()),
            ));
        }
    }
    if !pools.gtsdb.is_empty() {
        for _ in 0..args.gtsdb_backgrounds_per_epoch {
            samples.push(Sample::GtsdbBackground(
                rng.random_range(0..pools.gtsdb.len()),
            ));
        }
    }
    samples.extend((0..pools.scene.crops.len()).map(Sample::SceneCrop));
    if !pools.pictograms.is_empty() {
        for _ in 0..args.pictograms_per_epoch {
            samples.push(Sample::Pictogram(
                rng.random_range(0..pools.pictograms.len()),
            ));
        }
    }
    for i in 0..args.backgrounds_per_epoch {
        samples.push(if i % 2 == 0 {
            Sample::Procedural
        } else {
            Sample::PhotoBackground
        });
    }
    samples.shuffle(rng);
    samples
}

/// The GTSRB image indices one epoch draws. With `floor == 0`, every image once. Otherwise each class
/// is weighted by `max(count, floor)` and receives that share of `labels.len()` draws: a class with more
/// draws than images repeats them (every image `q` times, then a random rest), one with fewer draws a
/// random subset. The total stays within one draw per class of `labels.len()`.
fn gtsrb_draws<R: Rng>(labels: &[u8], floor: usize, rng: &mut R) -> Vec<usize> {
    if floor == 0 {
        return (0..labels.len()).collect();
    }
    let mut by_class: Vec<Vec<usize>> = Vec::new();
    for (i, &label) in labels.iter().enumerate() {
        let c = label as usize;
        if by_class.len() <= c {
            by_class.resize(c + 1, Vec::new());
        }
        by_class[c].push(i);
    }
    let weight: usize = by_class
        .iter()
        .filter(|members| !members.is_empty())
        .map(|members| members.len().max(floor))
        .sum();
    let mut draws = Vec::with_capacity(labels.len() + by_class.len());
    for members in by_class.iter_mut().filter(|m| !m.is_empty()) {
        let share = members.len().max(floor) as f64 / weight as f64;
        let n = (share * labels.len() as f64).round() as usize;
        for _ in 0..n / members.len() {
            draws.extend_from_slice(members);
        }
        members.shuffle(rng);
        draws.extend_from_slice(&members[..n % members.len()]);
    }
    draws
}

/// Dropout masks of one batch for [`PatchNet::train_logits`]: each value 0 with probability `p`,
/// else `1/(1−p)`, drawn from `rng`.
fn dropout_masks<R: Rng>(
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
fn box_targets(boxes: &[Option<[f32; 4]>], device: &Device) -> anyhow::Result<(Tensor, Tensor)> {
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
fn box_loss(raw: &Tensor, targets: &Tensor, mask: &Tensor) -> candle_core::Result<Tensor> {
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
fn loss_and_hits(
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

/// Fixed crops of the GTSDB validation frames: each sign at three framings, and background crops.
#[derive(Default)]
struct ValidationCrops {
    /// (pixels, class, box in patch sides)
    signs: Vec<(Vec<f32>, usize, [f32; 4])>,
    backgrounds: Vec<Vec<f32>>,
}

fn gtsdb_validation_crops(
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
struct ValidationReport {
    sign_crops: usize,
    /// Right class (not background) on sign crops.
    class_accuracy: f64,
    /// Called background on sign crops.
    missed_as_background: f64,
    background_crops: usize,
    /// Background crops called background.
    background_accuracy: f64,
    /// Box head: mean IoU of the regressed box with the sign's box, and the share at IoU ≥ 0.5.
    mean_box_iou: Option<f64>,
    box_iou_at_least_half: Option<f64>,
}

impl ValidationReport {
    fn describe(&self) -> String {
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

fn patch_box_iou(a: &[f32; 4], b: &[f32; 4]) -> f64 {
    let ba = BoxPx::new(a[0], a[1], a[2], a[3]);
    let bb = BoxPx::new(b[0], b[1], b[2], b[3]);
    ba.iou(&bb) as f64
}

fn validation_report(
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

/// Trains, saves and evaluates the patch classifier; see the module docs.
pub fn train_classifier(args: &ClassifierArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    anyhow::ensure!(
        (0.0..1.0).contains(&args.dropout),
        "--dropout is {}, expected a probability in 0 ≤ p < 1",
        args.dropout
    );
    let device = train_device(&args.device)?;
    let mut gtsrb = GtsrbSet::load(&args.data, "train")?;
    if args.limit > 0 && args.limit < gtsrb.len() {
        gtsrb.images.truncate(args.limit * 3072);
        gtsrb.labels.truncate(args.limit);
    }
    let test = GtsrbSet::load(&args.data, "test")?;
    let photos = load_train_photos(&args.data).context("loading training photos")?;
    let pictograms =
        load_pictograms(&args.data, args.composed_drawings).context("rendering pictograms")?;
    let scene = if args.scenes > 0 {
        scene_crops(&args.data, args.scenes, args.seed, GTSRB_SIDE_PX)
            .context("cutting synthetic scene crops")?
    } else {
        SceneCrops::default()
    };
    let uses_gtsdb = args.gtsdb_signs_per_epoch > 0
        || args.gtsdb_backgrounds_per_epoch > 0
        || args.mine_with.is_some();
    let (gtsdb, gtsdb_val) = if uses_gtsdb {
        (
            load_gtsdb(&args.data, GtsdbSplit::Train).context("loading GTSDB")?,
            load_gtsdb(&args.data, GtsdbSplit::Validation).context("loading GTSDB")?,
        )
    } else {
        (Vec::new(), Vec::new())
    };
    let (context_min, context_max) =
        super::common::positive_range("--context-range", &args.context_range)?;
    let crop_jitter = CropJitter {
        context_min,
        context_max,
    };
    let gtsdb_signs: Vec<(usize, usize)> = gtsdb
        .iter()
        .enumerate()
        .flat_map(|(f, frame)| (0..frame.signs.len()).map(move |k| (f, k)))
        .collect();
    let mined = match &args.mine_with {
        Some(dir) => {
            let mined = super::mining::mine(&gtsdb, dir)?;
            println!(
                "mined {} hard negatives and {} hard positives on the GTSDB training frames with {}",
                mined.negatives.len(),
                mined.positives.len(),
                dir.display()
            );
            mined
        }
        None => super::mining::Mined::default(),
    };
    println!(
        "GTSDB: {} training frames ({} signs), {} validation frames",
        gtsdb.len(),
        gtsdb_signs.len(),
        gtsdb_val.len()
    );
    println!(
        "classifier data: {} GTSRB train, {} GTSRB test, {} photos, {} drawings, {} scene crops ({} signs) from {} scenes, loaded in {:.1} s",
        gtsrb.len(),
        test.len(),
        photos.len(),
        pictograms.len(),
        scene.crops.len(),
        scene.sign_crops,
        args.scenes,
        started.elapsed().as_secs_f64()
    );
    let pools = Pools {
        photos,
        pictograms,
        scene,
        gtsdb,
        gtsdb_signs,
        hard_negatives: mined.negatives,
        hard_positives: mined.positives,
        crop_jitter,
    };
    let val_crops = gtsdb_validation_crops(&gtsdb_val, &crop_jitter, args.seed);

    // Held-out backgrounds from a stream no training sample uses.
    let mut held_rng = rng_for(args.seed, 99);
    let held_backgrounds: Vec<Vec<f32>> = (0..1000)
        .map(|i| {
            let kind = if i % 2 == 0 {
                Sample::Procedural
            } else {
                Sample::PhotoBackground
            };
            pools.make(&gtsrb, kind, GTSRB_SIDE_PX, &mut held_rng).0
        })
        .collect();

    let [c0, c1, c2] = match args.channels.as_slice() {
        &[a, b, c] => [a, b, c],
        other => anyhow::bail!(
            "--channels has {} values, expected 3 (e.g. 16,32,32)",
            other.len()
        ),
    };
    let input_norm = match args.input_norm.as_str() {
        "per-patch" => InputNorm::PerPatch,
        "fixed" => InputNorm::Fixed,
        other => anyhow::bail!("--input-norm is `{other}`, expected per-patch or fixed"),
    };
    let cfg = PatchNetConfig {
        channels: [c0, c1, c2],
        hidden: args.hidden,
        input_norm,
        box_head: args.box_head,
        ..PatchNetConfig::default()
    };
    let epoch_test = if args.epoch_eval_images == 0 || args.epoch_eval_images >= test.len() {
        test.clone()
    } else {
        let stride = test.len() / args.epoch_eval_images;
        let picked: Vec<usize> = (0..args.epoch_eval_images).map(|i| i * stride).collect();
        GtsrbSet {
            images: picked
                .iter()
                .flat_map(|&i| test.image(i).iter().copied())
                .collect(),
            labels: picked.iter().map(|&i| test.labels[i]).collect(),
        }
    };
    let varmap = VarMap::new();
    let build = |varmap: &VarMap| {
        let vb = VarBuilder::from_varmap(varmap, DType::F32, &device);
        if args.batch_norm {
            PatchNet::new_with_batch_norm(&cfg, vb)
        } else {
            PatchNet::new(&cfg, vb)
        }
    };
    build(&varmap)?;
    super::common::seed_varmap(&varmap, args.seed)?;
    if let Some(init) = &args.init {
        let n = super::common::init_varmap_from(&varmap, init)?;
        println!("started from {} ({n} tensors)", init.display());
    }
    let model = build(&varmap)?;
    let mut opt = AdamW::new(
        varmap.all_vars(),
        ParamsAdamW {
            lr: args.lr,
            weight_decay: 1e-4,
            ..Default::default()
        },
    )?;
    let mut epoch_rng = rng_for(args.seed, 1);
    let probe = epoch_samples(args, &gtsrb.labels, &pools, &mut rng_for(args.seed, 2)).len();
    let steps_per_epoch = if args.steps > 0 {
        args.steps.min(probe / args.batch)
    } else {
        probe / args.batch
    };
    let total_steps = steps_per_epoch * args.epochs;
    let mut step = 0usize;
    let mut log = Vec::new();
    let train_started = Instant::now();
    let budget_secs = args.max_train_minutes * 60.0;
    let over_budget = || budget_secs > 0.0 && train_started.elapsed().as_secs_f64() >= budget_secs;
    for epoch in 0..args.epochs {
        if args.stop_after_epochs > 0 && epoch >= args.stop_after_epochs {
            break;
        }
        if over_budget() {
            break;
        }
        let epoch_started = Instant::now();
        let samples = epoch_samples(args, &gtsrb.labels, &pools, &mut epoch_rng);
        let bar = progress(
            steps_per_epoch,
            &format!("classifier epoch {}/{}", epoch + 1, args.epochs),
        );
        let (mut loss_sum, mut hits, mut seen) = (0.0f64, 0usize, 0usize);
        for (b, batch) in samples
            .chunks_exact(args.batch)
            .take(steps_per_epoch)
            .enumerate()
        {
            if over_budget() {
                break;
            }
            let made: Vec<Made> = batch
                .par_iter()
                .enumerate()
                .map(|(k, &s)| {
                    let mut rng = sample_rng(args.seed, epoch, b * args.batch + k);
                    pools.make(&gtsrb, s, GTSRB_SIDE_PX, &mut rng)
                })
                .collect();
            let boxes: Vec<Option<[f32; 4]>> = made.iter().map(|m| m.2).collect();
            let (imgs, labels): (Vec<Vec<f32>>, Vec<u32>) =
                made.into_iter().map(|(chw, label, _)| (chw, label)).unzip();
            let (box_t, box_m) = box_targets(&boxes, &device)?;
            let x = batch_tensor(&imgs, 3, GTSRB_SIDE_PX, GTSRB_SIDE_PX, &device)?;
            let y = Tensor::new(labels.as_slice(), &device)?;
            let mut lr_step = step;
            if budget_secs > 0.0 {
                let time_fraction = train_started.elapsed().as_secs_f64() / budget_secs;
                lr_step = lr_step.max((time_fraction * total_steps as f64) as usize);
            }
            opt.set_learning_rate(cosine_lr(args.lr, lr_step, total_steps));
            let masks = if args.dropout > 0.0 {
                Some(dropout_masks(
                    &cfg,
                    batch.len(),
                    args.dropout,
                    &mut epoch_rng,
                    &device,
                )?)
            } else {
                None
            };
            let (loss, batch_hits) = loss_and_hits(
                &model,
                &x,
                &y,
                masks.as_ref(),
                Some((&box_t, &box_m, args.box_weight)),
            )?;
            opt.backward_step(&loss)?;
            loss_sum += loss.to_scalar::<f32>()? as f64 * batch.len() as f64;
            hits += batch_hits;
            seen += batch.len();
            step += 1;
            bar.inc(1);
            if step.is_multiple_of(20) {
                bar.set_message(format!("loss {:.3}", loss_sum / seen as f64));
            }
        }
        bar.finish_and_clear();
        let (test_acc, _) =
            gtsrb_accuracy(&model, &epoch_test.images, &epoch_test.labels, &device)?;
        let bg_acc = background_accuracy(&model, &held_backgrounds, &device)?;
        let val_line = if val_crops.signs.is_empty() {
            String::new()
        } else {
            format!(
                ", {}",
                validation_report(&model, &val_crops, &device)?.describe()
            )
        };
        let line = format!(
            "epoch {}/{} ({seen} samples, {step} steps so far): train loss {:.4}, train acc {:.2} %, GTSRB test acc {:.2} % ({} images), held-out background acc {:.2} %{val_line}, {:.0} s",
            epoch + 1,
            args.epochs,
            loss_sum / seen.max(1) as f64,
            100.0 * hits as f64 / seen.max(1) as f64,
            100.0 * test_acc,
            epoch_test.len(),
            100.0 * bg_acc,
            epoch_started.elapsed().as_secs_f64()
        );
        println!("{line}");
        log.push(line);
    }
    let train_secs = started.elapsed().as_secs_f64();

    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let f32_path = args.out.join("patchnet.safetensors");
    let q8_path = args.out.join("patchnet.q8_0.gguf");
    let q4_path =
        std::env::temp_dir().join(format!("saccade-patchnet-{}.q4_0.gguf", std::process::id()));
    save_named(
        model.named_tensors()?,
        &serde_json::to_string(&cfg)?,
        PATCHNET_KIND,
        &f32_path,
    )?;
    quantize_file(&f32_path, &q8_path, QuantDtype::Q8_0).context("quantising to Q8_0")?;
    quantize_file(&f32_path, &q4_path, QuantDtype::Q4_0).context("quantising to Q4_0")?;

    let mut report = serde_json::Map::new();
    for (name, path) in [("f32", &f32_path), ("q8_0", &q8_path), ("q4_0", &q4_path)] {
        let loaded = PatchNet::load(path, &device)
            .with_context(|| format!("reloading {}", path.display()))?;
        let (acc, per_class) = gtsrb_accuracy(&loaded, &test.images, &test.labels, &device)?;
        let bg = background_accuracy(&loaded, &held_backgrounds, &device)?;
        let val = if val_crops.signs.is_empty() {
            None
        } else {
            Some(validation_report(&loaded, &val_crops, &device)?)
        };
        if let Some(v) = &val {
            println!("{name}: {}", v.describe());
        }
        let worst = per_class
            .iter()
            .enumerate()
            .filter(|(_, a)| a.is_finite())
            .min_by(|a, b| a.1.total_cmp(b.1))
            .map(|(c, a)| (c, *a))
            .unwrap_or((0, f64::NAN));
        println!(
            "{name}: GTSRB test acc {:.2} % (worst class {} at {:.1} %), held-out background acc {:.2} %, file {} bytes — {}",
            100.0 * acc,
            worst.0,
            100.0 * worst.1,
            100.0 * bg,
            file_bytes(path),
            loaded.describe()
        );
        report.insert(
            name.to_string(),
            serde_json::json!({
                "gtsrb_test_accuracy": acc,
                "gtsrb_test_per_class": per_class.iter().map(|a| if a.is_finite() { *a } else { -1.0 }).collect::<Vec<_>>(),
                "heldout_background_accuracy": bg,
                "gtsdb_validation": val,
                "file_bytes": file_bytes(path),
            }),
        );
    }
    let _ = std::fs::remove_file(&q4_path);
    report.insert("train_seconds".into(), serde_json::json!(train_secs));
    report.insert("epochs".into(), serde_json::json!(log));
    report.insert("args".into(), serde_json::json!(format!("{args:?}")));
    let report_path = args.out.join("patchnet.metrics.json");
    std::fs::write(&report_path, serde_json::to_string_pretty(&report)?)
        .with_context(|| format!("writing {}", report_path.display()))?;
    println!(
        "classifier done in {:.0} s; wrote {}, {}, {}",
        started.elapsed().as_secs_f64(),
        f32_path.display(),
        q8_path.display(),
        report_path.display()
    );
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn dropout_masks_drop_about_p_and_keep_the_mean() {
        let cfg = PatchNetConfig {
            channels: [4, 4, 8],
            hidden: 64,
            ..PatchNetConfig::default()
        };
        let (features, hidden) =
            dropout_masks(&cfg, 32, 0.25, &mut rng_for(3, 0), &Device::Cpu).unwrap();
        assert_eq!(features.dims(), &[32, cfg.flat_dim()]);
        assert_eq!(hidden.dims(), &[32, 64]);
        let v = features.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let zeros = v.iter().filter(|&&m| m == 0.0).count() as f64 / v.len() as f64;
        let mean = v.iter().map(|&m| m as f64).sum::<f64>() / v.len() as f64;
        assert!((zeros - 0.25).abs() < 0.03, "{zeros}");
        assert!((mean - 1.0).abs() < 0.05, "{mean}");
        assert!(v.iter().all(|&m| m == 0.0 || (m - 4.0 / 3.0).abs() < 1e-6));
    }

    #[test]
    fn gtsrb_draws_without_a_floor_take_every_image_once() {
        let labels = [0u8, 0, 1, 2, 2, 2];
        assert_eq!(
            gtsrb_draws(&labels, 0, &mut rng_for(1, 0)),
            vec![0, 1, 2, 3, 4, 5]
        );
    }

    proptest::proptest! {
        /// With a floor, the epoch keeps its size (within one draw per class), every draw is a real
        /// index, and each class gets its `max(count, floor)` share: a rare class is drawn at least as
        /// often as it has images when the floor is above its count, and no class is starved.
        #[test]
        fn gtsrb_draws_balance_classes(
            counts in proptest::collection::vec(1usize..40, 1..8),
            floor in 1usize..60,
            seed in 0u64..1000,
        ) {
            let labels: Vec<u8> = counts
                .iter()
                .enumerate()
                .flat_map(|(c, &n)| std::iter::repeat_n(c as u8, n))
                .collect();
            let draws = gtsrb_draws(&labels, floor, &mut rng_for(seed, 0));
            let classes = counts.len();
            proptest::prop_assert!(draws.len().abs_diff(labels.len()) <= classes);
            let weight: usize = counts.iter().map(|&n| n.max(floor)).sum();
            let mut drawn = vec![0usize; classes];
            for &i in &draws {
                proptest::prop_assert!(i < labels.len());
                drawn[labels[i] as usize] += 1;
            }
            for (c, &n) in counts.iter().enumerate() {
                let expected = n.max(floor) as f64 / weight as f64 * labels.len() as f64;
                proptest::prop_assert!((drawn[c] as f64 - expected).abs() <= 0.5 + 1e-9,
                    "class {c}: {} drawn, {expected} expected", drawn[c]);
            }
        }
    }

    /// A tiny patch net fitted to 16 fixed patches for 30 steps must lower its loss clearly: the training
    /// loop (forward, cross-entropy, AdamW, backprop through the VarMap) works end to end.
    #[test]
    fn tiny_classifier_loss_falls_on_a_handful_of_samples() {
        for batch_norm in [false, true] {
            tiny_classifier_loss_falls(batch_norm);
        }
    }

    fn tiny_classifier_loss_falls(batch_norm: bool) {
        let device = Device::Cpu;
        let mut rng = rng_for(5, 0);
        let cfg = PatchNetConfig {
            input_side_px: 16,
            channels: [4, 8, 8],
            hidden: 16,
            num_classes: NUM_CLASSES,
            input_norm: InputNorm::PerPatch,
            box_head: false,
        };
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &device);
        let model = if batch_norm {
            PatchNet::new_with_batch_norm(&cfg, vb).unwrap()
        } else {
            PatchNet::new(&cfg, vb).unwrap()
        };
        let mut opt = AdamW::new(
            varmap.all_vars(),
            ParamsAdamW {
                lr: 1e-2,
                ..Default::default()
            },
        )
        .unwrap();
        let imgs: Vec<Vec<f32>> = (0..16)
            .map(|_| {
                let rgb = procedural_background(16, &mut rng);
                crop_square(&rgb, 16, 16, 0.0, 0.0, 16.0, 16)
            })
            .collect();
        let labels: Vec<u32> = (0..16).map(|i| (i % 4) as u32 * 10).collect();
        let x = batch_tensor(&imgs, 3, 16, 16, &device).unwrap();
        let y = Tensor::new(labels.as_slice(), &device).unwrap();
        let first = loss_and_hits(&model, &x, &y, None, None)
            .unwrap()
            .0
            .to_scalar::<f32>()
            .unwrap();
        for _ in 0..30 {
            let (loss, _) = loss_and_hits(&model, &x, &y, None, None).unwrap();
            opt.backward_step(&loss).unwrap();
        }
        let last = loss_and_hits(&model, &x, &y, None, None)
            .unwrap()
            .0
            .to_scalar::<f32>()
            .unwrap();
        assert!(
            last < 0.5 * first,
            "batch norm {batch_norm}: loss went from {first} to {last}"
        );
    }

    #[test]
    fn chw_to_rgb_inverts_gtsrb_chw() {
        let mut rng = rng_for(1, 0);
        let rgb = procedural_background(8, &mut rng);
        assert_eq!(chw_to_rgb(&gtsrb_chw(&rgb, 8), 8), rgb);
    }
}
