//! `topk`: Differentiable Patch Selection (Cordonnier et al., 2021) at inference time. Every glance cell is a
//! candidate region (a square sized from the glance size estimate, centred on the cell); a [`PatchScorer`]
//! scores them (glance objectness by default, a learned scorer later), hard top-K with NMS picks K of them,
//! and the backbone classifies all K in one batch. At inference the paper's perturbed top-K is exactly a hard
//! top-K, so nothing differentiable is needed here.

use saccade_models::GlanceMap;

use super::classify::PatchBatcher;
use super::detect_config::DetectConfig;
use super::exit::{nothing_salient_into, open_frame, Opened};
use super::outcome::examine_in_one_batch;
use super::selection::{cell_candidates_into, top_k_into, Candidate};
use super::{FocusInput, FocusOutcome, FocusResult, FocusStrategy};
use crate::frame::BoxPx;

/// Scores a candidate region centred on a glance cell; higher is more worth a look.
pub trait PatchScorer: Send {
    fn score(&self, glance: &GlanceMap, cell: usize, region_frame: &BoxPx) -> f32;
}

/// The default scorer: the glance objectness of the cell.
#[derive(Debug, Clone, Copy, Default)]
pub struct ObjectnessScorer;

impl PatchScorer for ObjectnessScorer {
    fn score(&self, glance: &GlanceMap, cell: usize, _region_frame: &BoxPx) -> f32 {
        glance.objectness.get(cell).copied().unwrap_or(0.0)
    }
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct TopKConfig {
    /// Patches per frame (before the budget's `max_patches` cap).
    pub k: usize,
    /// Candidates overlapping an already chosen one by more than this IoU are skipped.
    pub nms_iou: f32,
    /// Candidates whose score is below this are never examined, even when fewer than K remain: a large K
    /// then costs patches only in frames with that many salient places.
    pub min_objectness: f32,
    #[serde(flatten)]
    pub detect: DetectConfig,
}

impl Default for TopKConfig {
    fn default() -> Self {
        Self {
            k: 6,
            nms_iou: 0.3,
            min_objectness: 0.0,
            detect: DetectConfig::default(),
        }
    }
}

pub struct TopK {
    config: TopKConfig,
    scorer: Box<dyn PatchScorer>,
    batcher: PatchBatcher,
    /// Per-frame lists kept for their capacity: the candidates, their ranking and the chosen ones.
    candidates: Vec<Candidate>,
    order: Vec<usize>,
    chosen: Vec<Candidate>,
}

impl TopK {
    pub fn new(config: TopKConfig) -> Self {
        Self::with_scorer(config, Box::new(ObjectnessScorer))
    }

    /// A top-K strategy ranking candidates with a custom (e.g. learned) scorer.
    pub fn with_scorer(config: TopKConfig, scorer: Box<dyn PatchScorer>) -> Self {
        Self {
            config,
            scorer,
            batcher: PatchBatcher::new(),
            candidates: Vec::new(),
            order: Vec::new(),
            chosen: Vec::new(),
        }
    }
}

impl FocusStrategy for TopK {
    fn name(&self) -> &'static str {
        "topk"
    }

    fn focus_into(&mut self, input: &FocusInput<'_>, out: &mut FocusOutcome) -> FocusResult {
        let detect = &self.config.detect;
        let Some(Opened { clock, geometry }) = open_frame(input, detect) else {
            nothing_salient_into(out);
            return Ok(());
        };
        let scorer = &self.scorer;
        let candidates = &mut self.candidates;
        cell_candidates_into(input.glance, &geometry, detect, |_| 0.0, candidates);
        for (cell, c) in candidates.iter_mut().enumerate() {
            let s = scorer.score(input.glance, cell, &c.region);
            c.score = if s.is_finite() { s } else { 0.0 };
        }
        candidates.retain(|c| c.score >= self.config.min_objectness);
        let k = self.config.k.min(input.budget.max_patches);
        // The budget cut the plan short when the configured K would have found more regions: the greedy pick
        // of K + 1 starts with the pick of K.
        let pick = if k < self.config.k { k + 1 } else { k };
        top_k_into(
            candidates,
            pick,
            self.config.nms_iou,
            &mut self.order,
            &mut self.chosen,
        );
        let budget_cut = self.chosen.len() > k;
        self.chosen.truncate(k);
        examine_in_one_batch(
            &mut self.batcher,
            "topk",
            input,
            detect,
            &clock,
            &self.chosen,
            budget_cut,
            out,
        )
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::focus::testutil::*;
    use crate::focus::DetectConfig;
    use crate::focus::ExitReason;
    use proptest::prelude::*;

    #[test]
    fn second_look_boxes_the_sign_where_the_net_found_it_and_counts_its_patch() {
        // A small sign off the glance cell centre: the first patch frames it loosely, the box head finds it,
        // the second patch frames it tightly.
        let frame = frame_with_squares(640, 480, &[(303, 207, 22)]);
        let glance = redness_glance(&frame, (160, 120), 4, 22.0);
        let classifier = BoxingRednessClassifier {
            side_px: 32,
            ..Default::default()
        };
        let truth = BoxPx::new(303.0, 207.0, 325.0, 229.0);
        let config = TopKConfig {
            k: 2,
            detect: DetectConfig {
                context: 3.0,
                min_score: 0.3,
                ..DetectConfig::default()
            },
            ..TopKConfig::default()
        };
        let mut with = TopK::new(config.clone());
        let out = with
            .focus(&input(&frame, &glance, (160, 120), &classifier, 16))
            .unwrap();
        let best = out
            .detections
            .iter()
            .map(|d| d.bbox.iou(&truth))
            .fold(0.0, f32::max);
        assert!(best > 0.8, "best IoU {best}: {out:?}");
        // Every second look is a visit of its own: more patches than K.
        assert!(out.patches.len() > 2, "{:?}", out.patches);
        assert_eq!(
            classifier
                .patches_seen
                .load(std::sync::atomic::Ordering::SeqCst),
            out.patches.len()
        );
        // Without the second look the box is still the net's own, from the loose first patch.
        let mut without = TopK::new(TopKConfig {
            detect: DetectConfig {
                second_look: false,
                ..config.detect.clone()
            },
            ..config
        });
        let out = without
            .focus(&input(&frame, &glance, (160, 120), &classifier, 16))
            .unwrap();
        assert_eq!(out.patches.len(), 2);
        let best_loose = out
            .detections
            .iter()
            .map(|d| d.bbox.iou(&truth))
            .fold(0.0, f32::max);
        assert!(best_loose > 0.5, "best IoU {best_loose}: {out:?}");
    }

    #[test]
    fn min_objectness_keeps_a_large_k_from_examining_empty_places() {
        let frame = frame_with_squares(640, 480, &[(300, 200, 40)]);
        let glance = redness_glance(&frame, (160, 120), 4, 40.0);
        let floor = 0.5 * glance.objectness.iter().copied().fold(0.0, f32::max);
        let salient = glance.objectness.iter().filter(|&&o| o >= floor).count();
        assert!(salient > 0 && salient < 40, "{salient} salient cells");
        let classifier = RednessClassifier::new(32);
        let config = TopKConfig {
            k: 40,
            nms_iou: 1.0,
            detect: DetectConfig {
                second_look: false,
                ..DetectConfig::default()
            },
            ..TopKConfig::default()
        };
        // No floor: K patches, most of them on empty road.
        let out = TopK::new(config.clone())
            .focus(&input(&frame, &glance, (160, 120), &classifier, 64))
            .unwrap();
        assert_eq!(out.patches.len(), 40);
        // A floor: only the salient cells' patches, and the sign is still found.
        let out = TopK::new(TopKConfig {
            min_objectness: floor,
            ..config
        })
        .focus(&input(&frame, &glance, (160, 120), &classifier, 64))
        .unwrap();
        assert_eq!(out.patches.len(), salient);
        assert!(
            found(
                &out,
                BoxPx::new(300.0, 200.0, 340.0, 240.0),
                STOP_CLASS,
                0.5
            ),
            "{out:?}"
        );
    }

    #[test]
    fn topk_finds_a_red_square() {
        let scene = RedSquares::at(&[(300, 200)]);
        let mut s = TopK::new(TopKConfig::default());
        let out = scene.focus(&mut s);
        assert!(found_square(&out, (300, 200), 0.5), "{out:?}");
        assert_eq!(out.patches.len(), 6);
        assert_eq!(out.exit, Some(ExitReason::MaxSteps));
        assert_eq!(
            scene
                .classifier
                .calls
                .load(std::sync::atomic::Ordering::SeqCst),
            1
        );
        assert!((out.backbone_mflops - 6.0 * 1.5).abs() < 1e-9);
        assert!(out.pixels_examined > 0);
    }

    #[test]
    fn an_empty_frame_exits_before_any_patch() {
        let frame = frame_with_squares(640, 480, &[]);
        let glance = redness_glance(&frame, (160, 120), 4, 40.0);
        let classifier = RednessClassifier::new(32);
        let out = TopK::new(TopKConfig::default())
            .focus(&input(&frame, &glance, (160, 120), &classifier, 16))
            .unwrap();
        assert_eq!(out.exit, Some(ExitReason::NothingSalient));
        assert!(out.patches.is_empty());
        assert_eq!(
            classifier.calls.load(std::sync::atomic::Ordering::SeqCst),
            0
        );
    }

    #[test]
    fn a_learned_scorer_replaces_objectness() {
        struct Fixed(usize);
        impl PatchScorer for Fixed {
            fn score(&self, _: &GlanceMap, cell: usize, _: &BoxPx) -> f32 {
                if cell == self.0 {
                    1.0
                } else {
                    0.0
                }
            }
        }
        let frame = frame_with_squares(640, 480, &[(300, 200, 40)]);
        let glance = redness_glance(&frame, (160, 120), 4, 40.0);
        let classifier = RednessClassifier::new(32);
        let config = TopKConfig {
            k: 1,
            ..TopKConfig::default()
        };
        let mut s = TopK::with_scorer(config, Box::new(Fixed(0)));
        let out = s
            .focus(&input(&frame, &glance, (160, 120), &classifier, 16))
            .unwrap();
        assert_eq!(out.patches.len(), 1);
        assert_eq!(out.patches[0].bbox.xmin, 0.0);
        assert!(out.detections.is_empty());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        #[test]
        fn topk_never_selects_more_than_budget_patches_and_stays_inside_the_frame(
            x in 0u32..600, y in 0u32..440, side in 8u32..120, max_patches in 0usize..10, k in 1usize..12,
        ) {
            let frame = frame_with_squares(640, 480, &[(x, y, side)]);
            let glance = redness_glance(&frame, (160, 120), 8, side as f32 * 1.5);
            let classifier = RednessClassifier::new(16);
            let mut s = TopK::new(TopKConfig { k, ..TopKConfig::default() });
            let out = s.focus(&input(&frame, &glance, (160, 120), &classifier, max_patches)).unwrap();
            prop_assert!(out.patches.len() <= max_patches);
            for p in &out.patches {
                prop_assert!(p.bbox.xmin >= 0.0 && p.bbox.ymin >= 0.0 && p.bbox.xmax <= 640.0 && p.bbox.ymax <= 480.0);
            }
        }
    }
}
