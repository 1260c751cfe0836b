//! The classifier's training samples: where each comes from (GTSRB, scene crops, drawings, backgrounds) and
//! how an epoch draws and augments them.

use std::path::Path;

use rand::seq::SliceRandom;
use rand::Rng;
use saccade_models::BACKGROUND_CLASS;
use saccade_runtime::frame::BoxPx;

use super::ClassifierArgs;
use crate::train::augment::{augment_gtsrb, crop_square, photometric, procedural_background};
use crate::train::data::{load_photo_annotations, read_rgb, split_every, GtsrbSet, Photo};
use crate::train::gtsdb::{
    background_crop, box_in_region, crop, sign_crop, CropJitter, GtsdbFrame,
};
use crate::train::pictos::{composite_patch, Pictogram};
use crate::train::scenes::SceneCrops;

/// Where one training sample comes from; the pixels are made fresh (augmented) each time it is drawn.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Sample {
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
pub(crate) const BOX_MARGIN: f32 = 0.15;

/// A decoded training photo: width, height, packed RGB and its annotated boxes `[xmin, ymin, xmax, ymax)`.
pub(crate) type TrainPhoto = (usize, usize, Vec<u8>, Vec<[f32; 4]>);

/// Sources of background and drawing samples held in memory for one run.
pub(crate) struct Pools {
    pub(crate) photos: Vec<TrainPhoto>,
    pub(crate) pictograms: Vec<Pictogram>,
    pub(crate) scene: SceneCrops,
    pub(crate) gtsdb: Vec<GtsdbFrame>,
    /// `(frame, sign)` of every GTSDB training sign.
    pub(crate) gtsdb_signs: Vec<(usize, usize)>,
    /// `(frame, region)` of every mined hard negative.
    pub(crate) hard_negatives: Vec<(usize, BoxPx)>,
    /// `(frame, region, sign)` of every mined hard positive.
    pub(crate) hard_positives: Vec<(usize, BoxPx, usize)>,
    pub(crate) crop_jitter: CropJitter,
}

/// One made sample: pixels, label, and the sign's box in patch sides where it is known.
pub(crate) type Made = (Vec<f32>, u32, Option<[f32; 4]>);

impl Pools {
    /// Label, pixels and (where known) the sign's box of one sample.
    pub(crate) fn make<R: Rng>(
        &self,
        gtsrb: &GtsrbSet,
        sample: Sample,
        side: usize,
        rng: &mut R,
    ) -> Made {
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
                let cut = if crate::train::mining::sign_centred_in(frame, &jittered) == Some(sign) {
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
pub(crate) fn chw_to_rgb(chw: &[f32], side: usize) -> Vec<u8> {
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
pub(crate) fn load_train_photos(data_dir: &Path) -> anyhow::Result<Vec<TrainPhoto>> {
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

/// A mined region moved by up to ±10 % of its side and scaled by 0.85–1.15, as a square.
pub(crate) fn jitter_region<R: Rng>(region: &BoxPx, rng: &mut R) -> BoxPx {
    let side_px = region.width() * rng.random_range(0.85f32..1.15);
    let (cx, cy) = region.centre();
    let cx = cx + region.width() * rng.random_range(-0.1f32..0.1);
    let cy = cy + region.height() * rng.random_range(-0.1f32..0.1);
    BoxPx::centred_square(cx, cy, side_px)
}

/// One epoch's sample list, shuffled.
pub(crate) fn epoch_samples<R: Rng>(
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
pub(crate) fn gtsrb_draws<R: Rng>(labels: &[u8], floor: usize, rng: &mut R) -> Vec<usize> {
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
