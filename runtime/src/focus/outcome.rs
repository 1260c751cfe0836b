//! A frame's [`FocusOutcome`] as it is built: the [`OutcomeRecorder`] keeps visits in order, MFLOPs and
//! pixels, turns verdicts into [`Detection`]s and merges duplicates at the end. [`examine_in_one_batch`] is the
//! whole outcome of strategies that pick every region up front.

use saccade_models::class_name;

use super::classify::{Looked, PatchBatcher, PatchVerdict};
use super::detect_config::DetectConfig;
use super::exit::{BudgetClock, ExitReason};
use super::geometry::object_box;
use super::selection::Candidate;
use super::{Detection, FocusError, FocusInput, FocusOutcome, PatchVisit};
use crate::frame::BoxPx;

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
    merge_detections_in_place(&mut detections, iou_threshold);
    detections
}

/// [`merge_detections`] in place: the kept detections, best first, are what remains of `detections`.
pub fn merge_detections_in_place(detections: &mut Vec<Detection>, iou_threshold: f32) {
    // Quantised scores keep the order total (a tolerance compare would not be transitive).
    let tier = |d: &Detection| (d.score / SCORE_TIE).round() as i64;
    detections.sort_by(|a, b| {
        tier(b)
            .cmp(&tier(a))
            .then(b.bbox.area().total_cmp(&a.bbox.area()))
    });
    // The kept ones gather at the front, in order; a dropped one is swapped behind them.
    let mut kept = 0;
    for i in 0..detections.len() {
        let d = &detections[i];
        if detections[..kept]
            .iter()
            .all(|k| !same_object(&k.bbox, &d.bbox, iou_threshold))
        {
            detections.swap(kept, i);
            kept += 1;
        }
    }
    detections.truncate(kept);
}

/// Accumulates a [`FocusOutcome`] in place (the caller's, lists reused): visits in order, backbone MFLOPs and
/// pixels examined.
#[derive(Debug)]
pub struct OutcomeRecorder<'a> {
    pub outcome: &'a mut FocusOutcome,
}

impl<'a> OutcomeRecorder<'a> {
    /// Records into `out`, cleared first.
    pub fn new(out: &'a mut FocusOutcome) -> Self {
        out.clear();
        Self { outcome: out }
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
    pub fn finish(self, exit: ExitReason, merge_iou: f32) {
        merge_detections_in_place(&mut self.outcome.detections, merge_iou);
        self.outcome.exit = Some(exit);
    }
}

/// The plan of strategies that pick every region up front (topk, coarse2fine): unless the deadline has already
/// passed, classify `chosen` in one batch (second looks included) and record it as step 0 into `out`. The exit
/// is `Budget` when the deadline passed or `budget_cut` (the budget cut the plan short), else `MaxSteps`.
#[allow(clippy::too_many_arguments)]
pub fn examine_in_one_batch(
    batcher: &mut PatchBatcher,
    strategy: &'static str,
    input: &FocusInput<'_>,
    detect: &DetectConfig,
    clock: &BudgetClock,
    chosen: &[Candidate],
    budget_cut: bool,
    out: &mut FocusOutcome,
) -> Result<(), FocusError> {
    let mut recorder = OutcomeRecorder::new(out);
    if clock.expired() {
        recorder.finish(ExitReason::Budget, detect.merge_iou);
        return Ok(());
    }
    let verdicts = batcher.classify_and_look_again(
        strategy,
        input.frame,
        chosen.iter().map(|c| c.region),
        input.classifier,
        detect,
    )?;
    recorder.record_batch(
        0,
        chosen,
        verdicts,
        input.classifier.mflops_per_patch(),
        detect.min_score,
    );
    let exit = if budget_cut {
        ExitReason::Budget
    } else {
        ExitReason::MaxSteps
    };
    recorder.finish(exit, detect.merge_iou);
    Ok(())
}
