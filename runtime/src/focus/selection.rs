//! Choosing regions: [`Candidate`] regions, one per glance cell, and picking among them with NMS and top-K.

use saccade_models::GlanceMap;

use super::detect_config::DetectConfig;
use super::geometry::{patch_for_cell, GlanceGeometry};
use crate::frame::BoxPx;

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

/// One candidate per glance cell, scored by `score(cell)`, into `out` (cleared first).
pub fn cell_candidates_into(
    glance: &GlanceMap,
    geometry: &GlanceGeometry,
    config: &DetectConfig,
    mut score: impl FnMut(usize) -> f32,
    out: &mut Vec<Candidate>,
) {
    let cells = glance.map_width * glance.map_height;
    out.clear();
    out.extend((0..cells.min(glance.objectness.len())).map(|cell| {
        let (region, object_side_frame_px) = patch_for_cell(glance, geometry, cell, config);
        let s = score(cell);
        Candidate {
            region,
            score: if s.is_finite() { s } else { 0.0 },
            object_side_frame_px,
        }
    }));
}

/// `order` = the indices `0..n`, best `score` first, ties by index. No two keys are equal (the index breaks
/// ties), so the unstable sort, which needs no buffer, gives the stable order.
fn rank_by_score(order: &mut Vec<usize>, n: usize, score: impl Fn(usize) -> f32) {
    order.clear();
    order.extend(0..n);
    order.sort_unstable_by(|&a, &b| score(b).total_cmp(&score(a)).then(a.cmp(&b)));
}

/// Greedy non-maximum suppression: indices of the kept boxes, best score first; no two kept boxes overlap by
/// more than `iou_threshold`. Ties keep the earlier box.
pub fn nms(boxes_with_scores: &[(BoxPx, f32)], iou_threshold: f32) -> Vec<usize> {
    let (mut order, mut kept) = (Vec::new(), Vec::new());
    nms_into(boxes_with_scores, iou_threshold, &mut order, &mut kept);
    kept
}

/// [`nms`] into `kept` (cleared first), with `order` as scratch for the ranking.
pub fn nms_into(
    boxes_with_scores: &[(BoxPx, f32)],
    iou_threshold: f32,
    order: &mut Vec<usize>,
    kept: &mut Vec<usize>,
) {
    rank_by_score(order, boxes_with_scores.len(), |i| boxes_with_scores[i].1);
    kept.clear();
    for &i in order.iter() {
        let b = &boxes_with_scores[i].0;
        if kept
            .iter()
            .all(|&k| boxes_with_scores[k].0.iou(b) <= iou_threshold)
        {
            kept.push(i);
        }
    }
}

/// The `k` best candidates, greedily skipping any overlapping an already chosen one by more than `iou_threshold`.
pub fn top_k(candidates: &[Candidate], k: usize, iou_threshold: f32) -> Vec<Candidate> {
    let (mut order, mut chosen) = (Vec::new(), Vec::with_capacity(k));
    top_k_into(candidates, k, iou_threshold, &mut order, &mut chosen);
    chosen
}

/// [`top_k`] into `chosen` (cleared first), with `order` as scratch for the ranking.
pub fn top_k_into(
    candidates: &[Candidate],
    k: usize,
    iou_threshold: f32,
    order: &mut Vec<usize>,
    chosen: &mut Vec<Candidate>,
) {
    rank_by_score(order, candidates.len(), |i| candidates[i].score);
    chosen.clear();
    for &i in order.iter() {
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
}
