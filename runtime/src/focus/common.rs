//! Pieces every focus strategy shares: glance-to-frame geometry, candidate regions (always inside the frame),
//! NMS and top-K, the patch batcher that cuts regions into one `(n, 3, s, s)` tensor and calls the classifier
//! once per batch, the decoding of probabilities into [`Detection`]s, the budget clock, and the outcome
//! bookkeeping (visits, MFLOPs, pixels). Strategies in this folder are thin plans on top of these.

use std::time::Instant;

use saccade_models::{class_name, GlanceMap, PatchClassifier, BACKGROUND_CLASS, NUM_CLASSES};

use super::{Detection, ExitReason, FocusError, FocusInput, FocusOutcome, PatchVisit};
use crate::frame::{BoxPx, Frame};
use crate::imageops;

/// Settings every strategy shares for turning probabilities into detections.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct DetectConfig {
    /// A patch becomes a detection when its best sign class beats background and reaches this probability.
    pub min_score: f32,
    /// Frame-level early exit: when the glance's best objectness is below this, no patch is examined.
    pub nothing_threshold: f32,
    /// Detections overlapping more than this (IoU) are merged, keeping the more confident.
    pub merge_iou: f32,
    /// Patch side = estimated sign side × this, so the classifier sees the sign with some surround (GTSRB
    /// crops have a ~10 % margin on each side).
    pub context: f32,
    /// Smallest patch side in frame px (the glance underestimates tiny signs).
    pub min_patch_side_px: f32,
    /// Centre patches at the objectness-weighted centroid around a cell rather than at the cell's centre.
    pub refine_centre: bool,
    /// Second look (patch nets with a box head): a patch that may hold a sign is cut again around the box
    /// the net found in it, framed as the net was trained, and classified again; its verdict and box are
    /// the ones reported.
    pub second_look: bool,
    /// Side of the second-look patch over the side of the box found in the first (the larger of its
    /// width and height).
    pub second_look_context: f32,
    /// A first patch gets a second look when its probability of holding any sign (1 − background) reaches
    /// this.
    pub second_look_min: f32,
}

impl Default for DetectConfig {
    fn default() -> Self {
        Self {
            min_score: 0.5,
            nothing_threshold: 0.1,
            merge_iou: 0.3,
            context: 1.25,
            min_patch_side_px: 24.0,
            refine_centre: true,
            second_look: true,
            second_look_context: 1.3,
            second_look_min: 0.1,
        }
    }
}

/// How glance-map cells relate to frame pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GlanceGeometry {
    pub frame_width_px: f32,
    pub frame_height_px: f32,
    /// Frame px per glance px, per axis.
    pub frame_per_glance_x: f32,
    pub frame_per_glance_y: f32,
    pub stride_glance_px: f32,
    pub map_width: usize,
    pub map_height: usize,
}

impl GlanceGeometry {
    pub fn new(frame: &Frame, glance: &GlanceMap, glance_size_px: (usize, usize)) -> Self {
        let gw = glance_size_px.0.max(1) as f32;
        let gh = glance_size_px.1.max(1) as f32;
        Self {
            frame_width_px: frame.width as f32,
            frame_height_px: frame.height as f32,
            frame_per_glance_x: frame.width as f32 / gw,
            frame_per_glance_y: frame.height as f32 / gh,
            stride_glance_px: glance.stride_px.max(1) as f32,
            map_width: glance.map_width,
            map_height: glance.map_height,
        }
    }

    pub fn from_input(input: &FocusInput<'_>) -> Self {
        Self::new(input.frame, input.glance, input.glance_size_px)
    }

    /// Centre of map cell `cell` (row-major) in frame px.
    pub fn cell_centre_frame(&self, cell: usize) -> (f32, f32) {
        let cx = (cell % self.map_width.max(1)) as f32;
        let cy = (cell / self.map_width.max(1)) as f32;
        (
            (cx + 0.5) * self.stride_glance_px * self.frame_per_glance_x,
            (cy + 0.5) * self.stride_glance_px * self.frame_per_glance_y,
        )
    }

    /// The map cell containing frame point `(x, y)`, clamped to the map.
    pub fn cell_at_frame(&self, x_frame_px: f32, y_frame_px: f32) -> usize {
        let cx = (x_frame_px / (self.stride_glance_px * self.frame_per_glance_x)).floor();
        let cy = (y_frame_px / (self.stride_glance_px * self.frame_per_glance_y)).floor();
        let cx = (cx.max(0.0) as usize).min(self.map_width.saturating_sub(1));
        let cy = (cy.max(0.0) as usize).min(self.map_height.saturating_sub(1));
        cy * self.map_width + cx
    }

    /// Frame-px box of a cell.
    pub fn cell_box_frame(&self, cell: usize) -> BoxPx {
        let sx = self.stride_glance_px * self.frame_per_glance_x;
        let sy = self.stride_glance_px * self.frame_per_glance_y;
        let cx = (cell % self.map_width.max(1)) as f32;
        let cy = (cell / self.map_width.max(1)) as f32;
        BoxPx::new(cx * sx, cy * sy, (cx + 1.0) * sx, (cy + 1.0) * sy)
    }

    /// A side in glance px as frame px (the mean of the two axes' scales: signs are square).
    pub fn side_frame_from_glance(&self, side_glance_px: f32) -> f32 {
        side_glance_px * 0.5 * (self.frame_per_glance_x + self.frame_per_glance_y)
    }

    /// A square of side `side_frame_px` centred at `(x, y)`, shifted (not cut) to lie inside the frame.
    pub fn square_in_frame(&self, x_frame_px: f32, y_frame_px: f32, side_frame_px: f32) -> BoxPx {
        square_in_frame(
            x_frame_px,
            y_frame_px,
            side_frame_px,
            self.frame_width_px,
            self.frame_height_px,
        )
    }
}

/// A square of side `side` centred at `(cx, cy)`, shrunk to fit and shifted to lie inside `[0, w) × [0, h)`.
pub fn square_in_frame(cx: f32, cy: f32, side: f32, w: f32, h: f32) -> BoxPx {
    let side = if side.is_finite() { side } else { 1.0 };
    let side = side.clamp(1.0_f32.min(w.min(h)), w.min(h));
    let cx = if cx.is_finite() { cx } else { w * 0.5 };
    let cy = if cy.is_finite() { cy } else { h * 0.5 };
    let xmin = (cx - side * 0.5).clamp(0.0, w - side);
    let ymin = (cy - side * 0.5).clamp(0.0, h - side);
    BoxPx::new(xmin, ymin, xmin + side, ymin + side)
}

/// Intersection of a box with the frame.
pub fn clip_to_frame(b: BoxPx, w: f32, h: f32) -> BoxPx {
    BoxPx::new(
        b.xmin.clamp(0.0, w),
        b.ymin.clamp(0.0, h),
        b.xmax.clamp(0.0, w),
        b.ymax.clamp(0.0, h),
    )
}

/// A region a strategy may examine.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    /// The region to cut, in frame px, inside the frame.
    pub region: BoxPx,
    /// Why it is worth a look (glance objectness or a learned score).
    pub score: f32,
    /// Estimated side of the sign in it, frame px (for the detection box).
    pub object_side_frame_px: f32,
}

/// Largest objectness of the glance map (0 for an empty map).
pub fn max_objectness(glance: &GlanceMap) -> f32 {
    glance
        .objectness
        .iter()
        .copied()
        .filter(|v| v.is_finite())
        .fold(0.0, f32::max)
}

/// The estimated sign side at a cell in frame px (0 when the map lacks the estimate).
pub fn object_side_at(glance: &GlanceMap, geometry: &GlanceGeometry, cell: usize) -> f32 {
    let side_glance = glance.box_side_glance_px.get(cell).copied().unwrap_or(0.0);
    if side_glance.is_finite() {
        geometry.side_frame_from_glance(side_glance.max(0.0))
    } else {
        0.0
    }
}

/// Sub-cell estimate of where the sign around `cell` is centred, in frame px: the centroid of the cell and its
/// 8 neighbours weighted by objectness², where the neighbours count only when at most `cell`'s objectness. A
/// sign sitting on a cell border lights both cells, so the centroid moves towards the border; a lone peak stays
/// at its cell centre. The glance map is 4·8 = 32 frame px per cell at 1280×960, too coarse for small signs.
pub fn refined_centre_frame(
    glance: &GlanceMap,
    geometry: &GlanceGeometry,
    cell: usize,
) -> (f32, f32) {
    let (w, h) = (glance.map_width, glance.map_height);
    let (cx, cy) = geometry.cell_centre_frame(cell);
    let peak = glance.objectness.get(cell).copied().unwrap_or(0.0);
    if w == 0 || h == 0 || !(peak.is_finite() && peak > 0.0) {
        return (cx, cy);
    }
    let (col, row) = ((cell % w) as isize, (cell / w) as isize);
    let sx = geometry.stride_glance_px * geometry.frame_per_glance_x;
    let sy = geometry.stride_glance_px * geometry.frame_per_glance_y;
    let (mut sum_w, mut sum_x, mut sum_y) = (0f32, 0f32, 0f32);
    for dy in -1isize..=1 {
        for dx in -1isize..=1 {
            let (c, r) = (col + dx, row + dy);
            if c < 0 || r < 0 || c >= w as isize || r >= h as isize {
                continue;
            }
            let p = glance
                .objectness
                .get(r as usize * w + c as usize)
                .copied()
                .unwrap_or(0.0);
            if !(p.is_finite() && p > 0.0) || p > peak {
                continue;
            }
            let weight = p * p;
            sum_w += weight;
            sum_x += weight * dx as f32;
            sum_y += weight * dy as f32;
        }
    }
    if sum_w <= 0.0 {
        return (cx, cy);
    }
    // Never more than half a cell away: the sign's centre is in this cell by the map's definition.
    let off_x = (sum_x / sum_w).clamp(-0.5, 0.5) * sx;
    let off_y = (sum_y / sum_w).clamp(-0.5, 0.5) * sy;
    (cx + off_x, cy + off_y)
}

/// The square patch for a cell: centred at the refined centre, sized from the glance size estimate × context,
/// inside the frame.
pub fn patch_for_cell(
    glance: &GlanceMap,
    geometry: &GlanceGeometry,
    cell: usize,
    config: &DetectConfig,
) -> (BoxPx, f32) {
    let object_side = object_side_at(glance, geometry, cell);
    let side = (object_side * config.context).max(config.min_patch_side_px);
    let (cx, cy) = if config.refine_centre {
        refined_centre_frame(glance, geometry, cell)
    } else {
        geometry.cell_centre_frame(cell)
    };
    (geometry.square_in_frame(cx, cy, side), object_side)
}

/// One candidate per glance cell, scored by `score(cell)`.
pub fn cell_candidates(
    glance: &GlanceMap,
    geometry: &GlanceGeometry,
    config: &DetectConfig,
    mut score: impl FnMut(usize) -> f32,
) -> Vec<Candidate> {
    let cells = glance.map_width * glance.map_height;
    (0..cells.min(glance.objectness.len()))
        .map(|cell| {
            let (region, object_side_frame_px) = patch_for_cell(glance, geometry, cell, config);
            let s = score(cell);
            Candidate {
                region,
                score: if s.is_finite() { s } else { 0.0 },
                object_side_frame_px,
            }
        })
        .collect()
}

/// Greedy non-maximum suppression: indices of the kept boxes, best score first; no two kept boxes overlap by
/// more than `iou_threshold`. Ties keep the earlier box.
pub fn nms(boxes_with_scores: &[(BoxPx, f32)], iou_threshold: f32) -> Vec<usize> {
    let mut order: Vec<usize> = (0..boxes_with_scores.len()).collect();
    order.sort_by(|&a, &b| {
        boxes_with_scores[b]
            .1
            .total_cmp(&boxes_with_scores[a].1)
            .then(a.cmp(&b))
    });
    let mut kept: Vec<usize> = Vec::new();
    for i in order {
        let b = &boxes_with_scores[i].0;
        if kept
            .iter()
            .all(|&k| boxes_with_scores[k].0.iou(b) <= iou_threshold)
        {
            kept.push(i);
        }
    }
    kept
}

/// The `k` best candidates, greedily skipping any overlapping an already chosen one by more than `iou_threshold`.
pub fn top_k(candidates: &[Candidate], k: usize, iou_threshold: f32) -> Vec<Candidate> {
    let mut order: Vec<usize> = (0..candidates.len()).collect();
    order.sort_by(|&a, &b| {
        candidates[b]
            .score
            .total_cmp(&candidates[a].score)
            .then(a.cmp(&b))
    });
    let mut chosen: Vec<Candidate> = Vec::with_capacity(k);
    for i in order {
        if chosen.len() >= k {
            break;
        }
        let c = candidates[i];
        if chosen
            .iter()
            .all(|o| o.region.iou(&c.region) <= iou_threshold)
        {
            chosen.push(c);
        }
    }
    chosen
}

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

/// The box of a sign found in `region`: the region shrunk to the estimated sign side around its centre (never
/// larger than the region; the region itself when there is no estimate).
pub fn object_box(region: BoxPx, object_side_frame_px: f32) -> BoxPx {
    if object_side_frame_px.is_nan() || object_side_frame_px <= 0.0 {
        return region;
    }
    let (cx, cy) = region.centre();
    let half_w = 0.5 * object_side_frame_px.min(region.width());
    let half_h = 0.5 * object_side_frame_px.min(region.height());
    BoxPx::new(cx - half_w, cy - half_h, cx + half_w, cy + half_h)
}

/// A box given in the sides of the square (or any) `region` (0..1 spans it), in frame px.
pub fn frame_box_from_patch(region: &BoxPx, b: &[f32; 4]) -> BoxPx {
    let (w, h) = (region.width(), region.height());
    BoxPx::new(
        region.xmin + b[0] * w,
        region.ymin + b[1] * h,
        region.xmin + b[2] * w,
        region.ymin + b[3] * h,
    )
}

/// The final word on one examined region: its verdict (after the second look, if there was one), the sign's
/// box in frame px when the net regresses boxes, and the second patch when one was cut.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Looked {
    pub verdict: PatchVerdict,
    pub object_frame: Option<BoxPx>,
    pub second_region: Option<BoxPx>,
}

/// A detection for a verdict, or `None` when the patch is background or not confident enough.
pub fn detection_from(verdict: &PatchVerdict, bbox: BoxPx, min_score: f32) -> Option<Detection> {
    if !verdict.is_sign(min_score) {
        return None;
    }
    Some(Detection {
        class_id: verdict.best_sign_class,
        class_name: class_name(verdict.best_sign_class),
        score: verdict.best_sign_prob,
        bbox,
    })
}

/// Whether two detection boxes are the same sign: they overlap by more than `iou_threshold`, the centre of
/// either lies inside the other, or most (≥ ½) of the smaller lies inside the larger. Neighbouring patches of
/// one sign give boxes offset by a patch stride, and dense windows inside a sign give fragments of it: their
/// IoU is small although they plainly mark the same object.
pub fn same_object(a: &BoxPx, b: &BoxPx, iou_threshold: f32) -> bool {
    let inside =
        |p: (f32, f32), r: &BoxPx| p.0 >= r.xmin && p.0 < r.xmax && p.1 >= r.ymin && p.1 < r.ymax;
    let smaller = a.area().min(b.area());
    a.iou(b) > iou_threshold
        || inside(a.centre(), b)
        || inside(b.centre(), a)
        || (smaller > 0.0 && a.intersection_area(b) >= 0.5 * smaller)
}

/// Scores closer than this count as a tie when merging (saturated classifiers give many near-equal scores).
const SCORE_TIE: f32 = 1e-3;

/// Merges duplicate detections (class-agnostic: two different signs rarely overlap that much), keeping the
/// most confident of each group — among near-ties the larger box, which holds the whole sign where the
/// smaller ones hold fragments of it; best first.
pub fn merge_detections(mut detections: Vec<Detection>, iou_threshold: f32) -> Vec<Detection> {
    // Quantised scores keep the order total (a tolerance compare would not be transitive).
    let tier = |d: &Detection| (d.score / SCORE_TIE).round() as i64;
    detections.sort_by(|a, b| {
        tier(b)
            .cmp(&tier(a))
            .then(b.bbox.area().total_cmp(&a.bbox.area()))
    });
    let mut kept: Vec<Detection> = Vec::with_capacity(detections.len());
    for d in detections {
        if kept
            .iter()
            .all(|k| !same_object(&k.bbox, &d.bbox, iou_threshold))
        {
            kept.push(d);
        }
    }
    kept
}

/// Cuts patches into one reusable CHW buffer and classifies them in one call.
#[derive(Debug, Default)]
pub struct PatchBatcher {
    buffer: Vec<f32>,
    /// The classifier's verdicts of the last batch (kept for its buffers).
    rows: saccade_models::PatchRows,
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

    /// Cuts `regions` of `frame` at the classifier's side and classifies them in one batch.
    pub fn classify_regions(
        &mut self,
        strategy: &'static str,
        frame: &Frame,
        regions: &[BoxPx],
        classifier: &dyn PatchClassifier,
    ) -> Result<Vec<PatchVerdict>, FocusError> {
        let side = classifier.input_side_px();
        let per_patch = 3 * side * side;
        let buffer = self.prepare(regions.len(), side);
        for (region, out) in regions
            .iter()
            .zip(buffer.chunks_exact_mut(per_patch.max(1)))
        {
            imageops::crop_resize_chw(frame, *region, side, out).map_err(|e| {
                FocusError::Tensor {
                    strategy,
                    message: e.to_string(),
                }
            })?;
        }
        self.classify_prepared(strategy, regions.len(), side, classifier)
    }

    /// Classifies the first `n` patches already written into the buffer by [`PatchBatcher::prepare`],
    /// through [`PatchClassifier::classify_into`] (no tensors on the Q8_0 CPU path).
    pub fn classify_prepared(
        &mut self,
        strategy: &'static str,
        n: usize,
        side_px: usize,
        classifier: &dyn PatchClassifier,
    ) -> Result<Vec<PatchVerdict>, FocusError> {
        if n == 0 {
            return Ok(Vec::new());
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
            .classify_into(&self.buffer[..len], n, &mut self.rows)
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
        Ok(rows
            .probs
            .chunks_exact(NUM_CLASSES)
            .enumerate()
            .map(|(i, r)| PatchVerdict::with_box(r, rows.boxes.get(i).copied()))
            .collect())
    }

    /// The second look: each first verdict whose patch may hold a sign (see [`DetectConfig::second_look`])
    /// and came with a box is re-examined in one batch on a square around that box (`frame_objects[i]`:
    /// the box in frame px, or `None` to keep the first verdict). Every result names its final verdict and
    /// box.
    pub fn second_look(
        &mut self,
        strategy: &'static str,
        frame: &Frame,
        first: &[PatchVerdict],
        frame_objects: &[Option<BoxPx>],
        classifier: &dyn PatchClassifier,
        detect: &DetectConfig,
    ) -> Result<Vec<Looked>, FocusError> {
        let mut looked: Vec<Looked> = first
            .iter()
            .zip(frame_objects)
            .map(|(v, o)| Looked {
                verdict: *v,
                object_frame: *o,
                second_region: None,
            })
            .collect();
        if !detect.second_look {
            return Ok(looked);
        }
        let (fw, fh) = (frame.width as f32, frame.height as f32);
        let mut again: Vec<(usize, BoxPx)> = Vec::new();
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
        if again.is_empty() {
            return Ok(looked);
        }
        let regions: Vec<BoxPx> = again.iter().map(|(_, r)| *r).collect();
        let second = self.classify_regions(strategy, frame, &regions, classifier)?;
        for ((i, region), v) in again.into_iter().zip(second) {
            looked[i] = Looked {
                verdict: v,
                object_frame: v
                    .box_in_patch
                    .map(|b| frame_box_from_patch(&region, &b))
                    .or(looked[i].object_frame),
                second_region: Some(region),
            };
        }
        Ok(looked)
    }

    /// Classifies `regions` of `frame` and takes the second look where it applies.
    pub fn classify_and_look_again(
        &mut self,
        strategy: &'static str,
        frame: &Frame,
        regions: &[BoxPx],
        classifier: &dyn PatchClassifier,
        detect: &DetectConfig,
    ) -> Result<Vec<Looked>, FocusError> {
        let first = self.classify_regions(strategy, frame, regions, classifier)?;
        let objects: Vec<Option<BoxPx>> = first
            .iter()
            .zip(regions)
            .map(|(v, r)| v.box_in_patch.map(|b| frame_box_from_patch(r, &b)))
            .collect();
        self.second_look(strategy, frame, &first, &objects, classifier, detect)
    }
}

/// The per-frame deadline.
#[derive(Debug, Clone, Copy)]
pub struct BudgetClock {
    started: Instant,
    deadline_ms: Option<f64>,
}

impl BudgetClock {
    pub fn new(input: &FocusInput<'_>) -> Self {
        Self {
            started: input.started,
            deadline_ms: input.budget.deadline_ms,
        }
    }

    /// Whether the deadline has passed; checked before each batch, so a deadline of 0 ms examines nothing.
    pub fn expired(&self) -> bool {
        match self.deadline_ms {
            Some(d) => self.started.elapsed().as_secs_f64() * 1000.0 >= d,
            None => false,
        }
    }
}

/// Accumulates a [`FocusOutcome`]: visits in order, backbone MFLOPs and pixels examined.
#[derive(Debug, Default)]
pub struct OutcomeRecorder {
    pub outcome: FocusOutcome,
}

impl OutcomeRecorder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records one classified patch.
    pub fn visit(&mut self, step: usize, region: BoxPx, score: f32, mflops_per_patch: f64) {
        self.outcome.patches.push(PatchVisit {
            step,
            bbox: region,
            score,
        });
        self.outcome.backbone_mflops += mflops_per_patch;
        self.outcome.pixels_examined += region.area().round().max(0.0) as u64;
    }

    /// Record one classified batch: every candidate (and its second-look patch) as a visit at `step`, and
    /// a detection for each final verdict that names a sign with at least `min_score`, boxed where the net
    /// found the sign (else by the glance's size estimate).
    pub fn record_batch(
        &mut self,
        step: usize,
        candidates: &[Candidate],
        looked: &[Looked],
        mflops_per_patch: f64,
        min_score: f32,
    ) {
        for (c, l) in candidates.iter().zip(looked) {
            self.record_looked(
                step,
                c.region,
                c.score,
                c.object_side_frame_px,
                l,
                mflops_per_patch,
                min_score,
            );
        }
    }

    /// Records one examined region with its final word (see [`Self::record_batch`]).
    #[allow(clippy::too_many_arguments)]
    pub fn record_looked(
        &mut self,
        step: usize,
        region: BoxPx,
        score: f32,
        object_side_frame_px: f32,
        looked: &Looked,
        mflops_per_patch: f64,
        min_score: f32,
    ) {
        self.visit(step, region, score, mflops_per_patch);
        if let Some(second) = looked.second_region {
            self.visit(step, second, score, mflops_per_patch);
        }
        let bbox = looked
            .object_frame
            .unwrap_or_else(|| object_box(region, object_side_frame_px));
        if let Some(d) = detection_from(&looked.verdict, bbox, min_score) {
            self.detect(d);
        }
    }

    pub fn detect(&mut self, detection: Detection) {
        self.outcome.detections.push(detection);
    }

    /// Merges duplicate detections and stamps the exit reason.
    pub fn finish(mut self, exit: ExitReason, merge_iou: f32) -> FocusOutcome {
        let detections = std::mem::take(&mut self.outcome.detections);
        self.outcome.detections = merge_detections(detections, merge_iou);
        self.outcome.exit = Some(exit);
        self.outcome
    }
}

/// The outcome of a frame the glance found empty.
pub fn nothing_salient() -> FocusOutcome {
    FocusOutcome {
        exit: Some(ExitReason::NothingSalient),
        ..FocusOutcome::default()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb_box() -> impl Strategy<Value = BoxPx> {
        (0.0f32..200.0, 0.0f32..200.0, 1.0f32..80.0, 1.0f32..80.0)
            .prop_map(|(x, y, w, h)| BoxPx::new(x, y, x + w, y + h))
    }

    #[test]
    fn nms_keeps_the_best_of_overlapping_boxes() {
        let boxes = [
            (BoxPx::new(0.0, 0.0, 10.0, 10.0), 0.5),
            (BoxPx::new(1.0, 1.0, 11.0, 11.0), 0.9),
            (BoxPx::new(50.0, 50.0, 60.0, 60.0), 0.2),
        ];
        assert_eq!(nms(&boxes, 0.5), vec![1, 2]);
        assert_eq!(nms(&boxes, 0.9), vec![1, 0, 2]);
        assert!(nms(&[], 0.5).is_empty());
    }

    #[test]
    fn verdict_needs_sign_above_background_and_min_score() {
        let mut probs = vec![0.0f32; NUM_CLASSES];
        probs[14] = 0.6;
        probs[BACKGROUND_CLASS] = 0.4;
        let v = PatchVerdict::from_probs(&probs);
        assert_eq!(v.best_sign_class, 14);
        assert!(v.is_sign(0.5));
        assert!(!v.is_sign(0.7));
        probs[14] = 0.3;
        probs[BACKGROUND_CLASS] = 0.7;
        assert!(!PatchVerdict::from_probs(&probs).is_sign(0.1));
    }

    #[test]
    fn square_is_shifted_into_the_frame_and_shrunk_if_too_big() {
        let b = square_in_frame(5.0, 95.0, 20.0, 100.0, 100.0);
        assert_eq!(b, BoxPx::new(0.0, 80.0, 20.0, 100.0));
        let b = square_in_frame(50.0, 20.0, 500.0, 100.0, 40.0);
        assert_eq!(b, BoxPx::new(30.0, 0.0, 70.0, 40.0));
    }

    fn map(objectness: Vec<f32>, w: usize, h: usize) -> GlanceMap {
        GlanceMap {
            map_width: w,
            map_height: h,
            stride_px: 8,
            box_side_glance_px: vec![4.0; w * h],
            objectness,
            feature: Vec::new(),
            class_probs: None,
        }
    }

    #[test]
    fn refined_centre_moves_towards_a_lit_neighbour_and_stays_for_a_lone_peak() {
        let frame = Frame::from_rgb(0, 128, 96, vec![0; 128 * 96 * 3]).unwrap();
        // 4×3 map, 8 glance px per cell, glance 32×24 → 4 frame px per glance px, 32 frame px per cell.
        let mut obj = vec![0.0; 12];
        obj[5] = 0.9; // cell (1, 1): centre (48, 48)
        let lone = map(obj.clone(), 4, 3);
        let geometry = GlanceGeometry::new(&frame, &lone, (32, 24));
        assert_eq!(refined_centre_frame(&lone, &geometry, 5), (48.0, 48.0));
        // An equally lit right neighbour: half way to the border (weights 0.81 and 0.81 → +0.5 cell).
        obj[6] = 0.9;
        let pair = map(obj.clone(), 4, 3);
        let (x, y) = refined_centre_frame(&pair, &geometry, 5);
        assert!(
            (x - 64.0).abs() < 1e-4 && (y - 48.0).abs() < 1e-4,
            "{x} {y}"
        );
        // A brighter neighbour does not pull (it is its own peak); a dimmer one pulls less.
        obj[6] = 0.3;
        let dim = map(obj, 4, 3);
        let (x, _) = refined_centre_frame(&dim, &geometry, 5);
        assert!(x > 48.0 && x < 56.0, "{x}");
    }

    #[test]
    fn object_box_shrinks_around_the_centre() {
        let b = object_box(BoxPx::new(10.0, 10.0, 50.0, 50.0), 20.0);
        assert_eq!(b, BoxPx::new(20.0, 20.0, 40.0, 40.0));
        assert_eq!(
            object_box(BoxPx::new(0.0, 0.0, 8.0, 8.0), 0.0),
            BoxPx::new(0.0, 0.0, 8.0, 8.0)
        );
    }

    #[test]
    fn detections_of_one_sign_from_neighbouring_patches_merge() {
        let det = |x: f32, score: f32| Detection {
            class_id: 14,
            class_name: "stop",
            score,
            bbox: BoxPx::new(x, 100.0, x + 40.0, 140.0),
        };
        let merged = merge_detections(vec![det(100.0, 0.7), det(116.0, 0.9), det(300.0, 0.8)], 0.3);
        assert_eq!(merged.len(), 2);
        assert_eq!(merged[0].score, 0.9);
        assert_eq!(merged[1].score, 0.8);
        // Two signs side by side stay two.
        assert_eq!(
            merge_detections(vec![det(100.0, 0.7), det(141.0, 0.9)], 0.3).len(),
            2
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn nms_output_has_no_pair_above_its_threshold(
            boxes in proptest::collection::vec((arb_box(), 0.0f32..1.0), 0..30),
            iou in 0.05f32..0.95,
        ) {
            let kept = nms(&boxes, iou);
            for (a, &i) in kept.iter().enumerate() {
                for &j in &kept[a + 1..] {
                    prop_assert!(boxes[i].0.iou(&boxes[j].0) <= iou);
                }
            }
            // Every dropped box overlaps a kept one with a score at least as high.
            for i in 0..boxes.len() {
                if !kept.contains(&i) {
                    prop_assert!(kept.iter().any(|&k| boxes[k].0.iou(&boxes[i].0) > iou && boxes[k].1 >= boxes[i].1));
                }
            }
        }

        #[test]
        fn squares_always_lie_inside_the_frame(
            cx in -100.0f32..1500.0, cy in -100.0f32..1100.0, side in 0.0f32..2000.0,
            w in 16.0f32..1400.0, h in 16.0f32..1000.0,
        ) {
            let b = square_in_frame(cx, cy, side, w, h);
            prop_assert!(b.xmin >= 0.0 && b.ymin >= 0.0 && b.xmax <= w + 1e-3 && b.ymax <= h + 1e-3);
            prop_assert!(b.width() > 0.0 && b.height() > 0.0);
        }

        #[test]
        fn top_k_returns_at_most_k_non_overlapping(
            boxes in proptest::collection::vec((arb_box(), 0.0f32..1.0), 0..40),
            k in 0usize..10,
        ) {
            let cands: Vec<Candidate> = boxes.iter().map(|(b, s)| Candidate { region: *b, score: *s, object_side_frame_px: 0.0 }).collect();
            let chosen = top_k(&cands, k, 0.3);
            prop_assert!(chosen.len() <= k);
            for (a, c) in chosen.iter().enumerate() {
                for d in &chosen[a + 1..] {
                    prop_assert!(c.region.iou(&d.region) <= 0.3);
                }
            }
        }
    }
}
