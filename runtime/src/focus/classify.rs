//! Classifying regions: the [`PatchBatcher`] cuts regions into one `(n, 3, s, s)` tensor and calls the
//! classifier once per batch, with the second look (a patch cut again around the box the net found), and
//! [`PatchVerdict`] reads what the classifier said about one patch.

use saccade_models::{PatchClassifier, BACKGROUND_CLASS, NUM_CLASSES};

use super::detect_config::DetectConfig;
use super::geometry::frame_box_from_patch;
use super::FocusError;
use crate::frame::{BoxPx, Frame};
use crate::imageops;

/// What the classifier said about one patch: the best sign class and the background probability.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PatchVerdict {
    pub best_sign_class: usize,
    pub best_sign_prob: f32,
    pub background_prob: f32,
    /// Where the sign lies in the patch, `[xmin, ymin, xmax, ymax]` in patch sides (box-head nets only).
    pub box_in_patch: Option<[f32; 4]>,
}

impl PatchVerdict {
    /// The verdict of a probability row, with the box head's box when there is one.
    pub fn with_box(probs: &[f32], box_in_patch: Option<[f32; 4]>) -> Self {
        Self {
            box_in_patch,
            ..Self::from_probs(probs)
        }
    }

    /// Probability that the patch holds a sign of any class.
    pub fn sign_probability(&self) -> f32 {
        (1.0 - self.background_prob).clamp(0.0, 1.0)
    }

    pub fn from_probs(probs: &[f32]) -> Self {
        let mut best_sign_class = 0;
        let mut best_sign_prob = f32::NEG_INFINITY;
        for (c, &p) in probs.iter().enumerate().take(BACKGROUND_CLASS) {
            if p > best_sign_prob {
                best_sign_prob = p;
                best_sign_class = c;
            }
        }
        Self {
            best_sign_class,
            best_sign_prob: best_sign_prob.max(0.0),
            background_prob: probs.get(BACKGROUND_CLASS).copied().unwrap_or(0.0),
            box_in_patch: None,
        }
    }

    /// A sign when background is not the arg-max and the sign probability reaches `min_score`.
    pub fn is_sign(&self, min_score: f32) -> bool {
        self.best_sign_prob > self.background_prob && self.best_sign_prob >= min_score
    }

    /// How decided the classifier is either way (sign or background): the larger of the two.
    pub fn decisiveness(&self) -> f32 {
        self.best_sign_prob.max(self.background_prob)
    }
}

/// The final word on one examined region: its verdict (after the second look, if there was one), the sign's
/// box in frame px when the net regresses boxes, and the second patch when one was cut.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Looked {
    pub verdict: PatchVerdict,
    pub object_frame: Option<BoxPx>,
    pub second_region: Option<BoxPx>,
}

/// Cuts patches into one reusable CHW buffer and classifies them in one call. It keeps the per-frame lists of
/// the first and second looks as scratch (cleared, capacity kept), so in steady state classifying allocates
/// nothing.
#[derive(Debug, Default)]
pub struct PatchBatcher {
    buffer: Vec<f32>,
    /// The classifier's verdicts of the last batch (kept for its buffers).
    rows: saccade_models::PatchRows,
    /// The scratch of the classifier's forward passes on this source's thread.
    state: saccade_models::ModelState,
    /// Scratch of [`Self::classify_and_look_again`]: the regions, the first verdicts, the boxes they found
    /// and the final word on each region.
    regions: Vec<BoxPx>,
    first: Vec<PatchVerdict>,
    objects: Vec<Option<BoxPx>>,
    looked: Vec<Looked>,
    /// Scratch of [`Self::second_look_into`]: the regions looked at again (with the index of their first look)
    /// and their verdicts.
    again: Vec<(usize, BoxPx)>,
    again_regions: Vec<BoxPx>,
    second: Vec<PatchVerdict>,
}

impl PatchBatcher {
    pub fn new() -> Self {
        Self::default()
    }

    /// The buffer for `n` patches of `side × side`, reused across calls (grows, never shrinks).
    pub fn prepare(&mut self, n: usize, side_px: usize) -> &mut [f32] {
        let len = n * 3 * side_px * side_px;
        if self.buffer.len() < len {
            self.buffer.resize(len, 0.0);
        }
        &mut self.buffer[..len]
    }

    /// Cuts `regions` of `frame` at the classifier's side and classifies them in one batch, into `out`
    /// (cleared first).
    pub fn classify_regions_into(
        &mut self,
        strategy: &'static str,
        frame: &Frame,
        regions: &[BoxPx],
        classifier: &dyn PatchClassifier,
        out: &mut Vec<PatchVerdict>,
    ) -> Result<(), FocusError> {
        let side = classifier.input_side_px();
        let per_patch = 3 * side * side;
        let buffer = self.prepare(regions.len(), side);
        for (region, patch) in regions
            .iter()
            .zip(buffer.chunks_exact_mut(per_patch.max(1)))
        {
            imageops::crop_resize_chw(frame, *region, side, patch).map_err(|e| {
                FocusError::Tensor {
                    strategy,
                    message: e.to_string(),
                }
            })?;
        }
        self.classify_prepared_into(strategy, regions.len(), side, classifier, out)
    }

    /// Classifies the first `n` patches already written into the buffer by [`PatchBatcher::prepare`],
    /// through [`PatchClassifier::classify_into_with`] with this batcher's state (no tensors on the Q8_0 CPU
    /// path), into `out` (cleared first).
    pub fn classify_prepared_into(
        &mut self,
        strategy: &'static str,
        n: usize,
        side_px: usize,
        classifier: &dyn PatchClassifier,
        out: &mut Vec<PatchVerdict>,
    ) -> Result<(), FocusError> {
        out.clear();
        if n == 0 {
            return Ok(());
        }
        let len = n * 3 * side_px * side_px;
        if self.buffer.len() < len {
            return Err(FocusError::Tensor {
                strategy,
                message: format!(
                    "{n} patches of {side_px} px need {len} values, the buffer holds {}",
                    self.buffer.len()
                ),
            });
        }
        classifier
            .classify_into_with(&mut self.state, &self.buffer[..len], n, &mut self.rows)
            .map_err(|source| FocusError::Model { strategy, source })?;
        let rows = &self.rows;
        if rows.probs.len() != n * NUM_CLASSES || (rows.has_boxes && rows.boxes.len() != n) {
            return Err(FocusError::Tensor {
                strategy,
                message: format!(
                    "classifier returned {} probabilities and {} boxes for {n} patches, expected {} and {}",
                    rows.probs.len(),
                    rows.boxes.len(),
                    n * NUM_CLASSES,
                    if rows.has_boxes { n } else { 0 }
                ),
            });
        }
        out.extend(
            rows.probs
                .chunks_exact(NUM_CLASSES)
                .enumerate()
                .map(|(i, r)| PatchVerdict::with_box(r, rows.boxes.get(i).copied())),
        );
        Ok(())
    }

    /// The second look: each first verdict whose patch may hold a sign (see [`DetectConfig::second_look`])
    /// and came with a box is re-examined in one batch on a square around that box (`frame_objects[i]`:
    /// the box in frame px, or `None` to keep the first verdict). Every result names its final verdict and
    /// box. Into `looked` (cleared first).
    #[allow(clippy::too_many_arguments)]
    pub fn second_look_into(
        &mut self,
        strategy: &'static str,
        frame: &Frame,
        first: &[PatchVerdict],
        frame_objects: &[Option<BoxPx>],
        classifier: &dyn PatchClassifier,
        detect: &DetectConfig,
        looked: &mut Vec<Looked>,
    ) -> Result<(), FocusError> {
        looked.clear();
        looked.extend(first.iter().zip(frame_objects).map(|(v, o)| Looked {
            verdict: *v,
            object_frame: *o,
            second_region: None,
        }));
        if !detect.second_look {
            return Ok(());
        }
        let (fw, fh) = (frame.width as f32, frame.height as f32);
        let mut again = std::mem::take(&mut self.again);
        again.clear();
        for (i, l) in looked.iter().enumerate() {
            let Some(object) = l.object_frame else {
                continue;
            };
            if l.verdict.sign_probability() < detect.second_look_min || object.area() <= 0.0 {
                continue;
            }
            let (cx, cy) = object.centre();
            let side = (object.width().max(object.height()) * detect.second_look_context)
                .max(detect.min_patch_side_px.min(8.0));
            // Not shifted into the frame: the sign must stay where the net was trained to see it (the
            // cutter repeats edge pixels for the part outside).
            let region = BoxPx::centred_square(cx, cy, side);
            if region.xmax <= 0.0 || region.ymax <= 0.0 || region.xmin >= fw || region.ymin >= fh {
                continue;
            }
            again.push((i, region));
        }
        let mut result = Ok(());
        if !again.is_empty() {
            let mut regions = std::mem::take(&mut self.again_regions);
            let mut second = std::mem::take(&mut self.second);
            regions.clear();
            regions.extend(again.iter().map(|(_, r)| *r));
            result = self.classify_regions_into(strategy, frame, &regions, classifier, &mut second);
            if result.is_ok() {
                for (&(i, region), v) in again.iter().zip(&second) {
                    looked[i] = Looked {
                        verdict: *v,
                        object_frame: v
                            .box_in_patch
                            .map(|b| frame_box_from_patch(&region, &b))
                            .or(looked[i].object_frame),
                        second_region: Some(region),
                    };
                }
            }
            self.again_regions = regions;
            self.second = second;
        }
        self.again = again;
        result
    }

    /// Classifies `regions` of `frame` and takes the second look where it applies: the final word on each
    /// region, in order (valid until the next call).
    pub fn classify_and_look_again(
        &mut self,
        strategy: &'static str,
        frame: &Frame,
        regions: impl IntoIterator<Item = BoxPx>,
        classifier: &dyn PatchClassifier,
        detect: &DetectConfig,
    ) -> Result<&[Looked], FocusError> {
        let side = classifier.input_side_px();
        let per_patch = 3 * side * side;
        let mut r = std::mem::take(&mut self.regions);
        r.clear();
        r.extend(regions);
        let buffer = self.prepare(r.len(), side);
        let cut = r
            .iter()
            .zip(buffer.chunks_exact_mut(per_patch.max(1)))
            .try_for_each(|(region, patch)| {
                imageops::crop_resize_chw(frame, *region, side, patch).map_err(|e| {
                    FocusError::Tensor {
                        strategy,
                        message: e.to_string(),
                    }
                })
            });
        self.regions = r;
        cut?;
        self.look_at_prepared(strategy, frame, side, classifier, detect)
    }

    /// The patches already written into the buffer by [`PatchBatcher::prepare`], one for each of
    /// `patch_boxes` (the frame box each patch shows), classified in one batch with the second look where it
    /// applies: the final word on each, in order (valid until the next call).
    pub fn classify_prepared_and_look_again(
        &mut self,
        strategy: &'static str,
        frame: &Frame,
        side_px: usize,
        patch_boxes: impl IntoIterator<Item = BoxPx>,
        classifier: &dyn PatchClassifier,
        detect: &DetectConfig,
    ) -> Result<&[Looked], FocusError> {
        self.regions.clear();
        self.regions.extend(patch_boxes);
        self.look_at_prepared(strategy, frame, side_px, classifier, detect)
    }

    /// The first look at the prepared patches showing `self.regions`, then the second look.
    fn look_at_prepared(
        &mut self,
        strategy: &'static str,
        frame: &Frame,
        side_px: usize,
        classifier: &dyn PatchClassifier,
        detect: &DetectConfig,
    ) -> Result<&[Looked], FocusError> {
        let mut first = std::mem::take(&mut self.first);
        let mut objects = std::mem::take(&mut self.objects);
        let mut looked = std::mem::take(&mut self.looked);
        let n = self.regions.len();
        let result = self
            .classify_prepared_into(strategy, n, side_px, classifier, &mut first)
            .and_then(|()| {
                objects.clear();
                objects.extend(
                    first
                        .iter()
                        .zip(&self.regions)
                        .map(|(v, r)| v.box_in_patch.map(|b| frame_box_from_patch(r, &b))),
                );
                self.second_look_into(
                    strategy,
                    frame,
                    &first,
                    &objects,
                    classifier,
                    detect,
                    &mut looked,
                )
            });
        (self.first, self.objects, self.looked) = (first, objects, looked);
        result.map(|()| self.looked.as_slice())
    }
}
