//! `glance-only`: the baseline of what focus adds. The glance net's own detections and nothing else: every
//! glance-map cell that is a local maximum of objectness becomes a box (centred at the cell's refined
//! centre, sized by the glance's size estimate) with the glance's frame-level class, scored by its
//! objectness. No full-resolution patch is cut and the backbone never runs, so its cost is the glance alone;
//! the gap between it and a focus strategy is what looking at full resolution buys (box precision and the
//! class, which the glance only guesses for the frame as a whole).

use saccade_models::{class_name, GlanceMap, NUM_SIGN_CLASSES};

use super::exit::BudgetClock;
use super::geometry::{object_side_at, refined_centre_frame, GlanceGeometry};
use super::outcome::merge_detections_in_place;
use super::{Detection, ExitReason, FocusInput, FocusOutcome, FocusResult, FocusStrategy};

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct GlanceOnlyConfig {
    /// A cell becomes a detection when its objectness reaches this (and no neighbour is higher).
    pub min_score: f32,
    /// Detections overlapping more than this (IoU) are merged, keeping the more confident.
    pub merge_iou: f32,
    /// At most this many detections per frame, best first.
    pub max_detections: usize,
    /// Smallest box side in frame px (the size estimate of a tiny sign can collapse).
    pub min_side_px: f32,
}

impl Default for GlanceOnlyConfig {
    fn default() -> Self {
        Self {
            min_score: 0.3,
            merge_iou: 0.3,
            max_detections: 32,
            min_side_px: 12.0,
        }
    }
}

pub struct GlanceOnly {
    config: GlanceOnlyConfig,
}

impl GlanceOnly {
    pub fn new(config: GlanceOnlyConfig) -> Self {
        Self { config }
    }
}

/// The sign class the glance names for the whole frame (its best non-background class), 0 without class
/// probabilities.
fn frame_class(glance: &GlanceMap) -> usize {
    glance
        .class_probs
        .as_deref()
        .and_then(|p| {
            p.iter()
                .take(NUM_SIGN_CLASSES)
                .enumerate()
                .filter(|(_, v)| v.is_finite())
                .max_by(|a, b| a.1.total_cmp(b.1))
                .map(|(c, _)| c)
        })
        .unwrap_or(0)
}

/// Whether `cell` is at least as high as each of its 8 neighbours (ties keep both; merging removes one).
fn is_local_peak(glance: &GlanceMap, cell: usize) -> bool {
    let (w, h) = (glance.map_width, glance.map_height);
    let v = glance.objectness[cell];
    let (col, row) = ((cell % w) as isize, (cell / w) as isize);
    for dy in -1isize..=1 {
        for dx in -1isize..=1 {
            let (c, r) = (col + dx, row + dy);
            if (dx, dy) == (0, 0) || c < 0 || r < 0 || c >= w as isize || r >= h as isize {
                continue;
            }
            if glance
                .objectness
                .get(r as usize * w + c as usize)
                .is_some_and(|&n| n > v)
            {
                return false;
            }
        }
    }
    true
}

impl FocusStrategy for GlanceOnly {
    fn name(&self) -> &'static str {
        "glance-only"
    }

    fn focus_into(&mut self, input: &FocusInput<'_>, out: &mut FocusOutcome) -> FocusResult {
        // Like every strategy, a frame already past its deadline gets no detections.
        out.clear();
        if BudgetClock::new(input).expired() {
            out.exit = Some(ExitReason::Budget);
            return Ok(());
        }
        let glance = input.glance;
        let geometry = GlanceGeometry::from_input(input);
        let class_id = frame_class(glance);
        let cells = (glance.map_width * glance.map_height).min(glance.objectness.len());
        let detections = &mut out.detections;
        for cell in 0..cells {
            let score = glance.objectness[cell];
            let peak =
                score.is_finite() && score >= self.config.min_score && is_local_peak(glance, cell);
            if !peak {
                continue;
            }
            let (cx, cy) = refined_centre_frame(glance, &geometry, cell);
            let side = object_side_at(glance, &geometry, cell).max(self.config.min_side_px);
            detections.push(Detection {
                class_id,
                class_name: class_name(class_id),
                score,
                bbox: geometry.square_in_frame(cx, cy, side),
            });
        }
        merge_detections_in_place(detections, self.config.merge_iou);
        detections.truncate(self.config.max_detections);
        let exit = if detections.is_empty() {
            ExitReason::NothingSalient
        } else {
            ExitReason::MaxSteps
        };
        out.exit = Some(exit);
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::focus::testutil::*;
    use crate::frame::BoxPx;

    #[test]
    fn glance_only_boxes_the_glance_peak_without_examining_a_patch() {
        let frame = frame_with_squares(640, 480, &[(300, 200, 48)]);
        let mut glance = redness_glance(&frame, (160, 120), 4, 48.0);
        let mut probs = vec![0.0; saccade_models::NUM_CLASSES];
        probs[STOP_CLASS] = 0.6;
        probs[saccade_models::BACKGROUND_CLASS] = 0.4;
        glance.class_probs = Some(probs);
        let classifier = RednessClassifier::new(32);
        let out = GlanceOnly::new(GlanceOnlyConfig::default())
            .focus(&input(&frame, &glance, (160, 120), &classifier, 4))
            .unwrap();
        assert!(out.patches.is_empty());
        assert_eq!(out.backbone_mflops, 0.0);
        assert_eq!(
            classifier.calls.load(std::sync::atomic::Ordering::SeqCst),
            0
        );
        assert!(
            found(
                &out,
                BoxPx::new(300.0, 200.0, 348.0, 248.0),
                STOP_CLASS,
                0.5
            ),
            "{out:?}"
        );
        assert_eq!(out.detections.len(), 1, "{out:?}");
    }

    #[test]
    fn glance_only_reports_nothing_below_its_threshold() {
        let frame = frame_with_squares(640, 480, &[]);
        let glance = redness_glance(&frame, (160, 120), 4, 48.0);
        let classifier = RednessClassifier::new(32);
        let out = GlanceOnly::new(GlanceOnlyConfig::default())
            .focus(&input(&frame, &glance, (160, 120), &classifier, 4))
            .unwrap();
        assert!(out.detections.is_empty());
        assert_eq!(out.exit, Some(ExitReason::NothingSalient));
    }

    #[test]
    fn frame_class_skips_background_and_defaults_to_zero() {
        let mut g = GlanceMap {
            map_width: 1,
            map_height: 1,
            stride_px: 8,
            objectness: vec![0.0],
            box_side_glance_px: vec![0.0],
            feature: vec![],
            class_probs: None,
        };
        assert_eq!(frame_class(&g), 0);
        let mut p = vec![0.01; saccade_models::NUM_CLASSES];
        p[saccade_models::BACKGROUND_CLASS] = 0.9;
        p[7] = 0.05;
        g.class_probs = Some(p);
        assert_eq!(frame_class(&g), 7);
    }
}
