//! `gfnet`: Glance and Focus (Wang et al., 2020) adapted to detection. Step 0 is the glance alone: if its
//! class probabilities are confident (max sign prob ≥ η₀) the frame exits with no focus. Otherwise each step
//! t = 1..T classifies one patch at the most salient glance cell not yet covered by an earlier patch, and exits
//! `Confident` as soon as the fused confidence reaches η_t.
//!
//! **Fused confidence** after step t = `min(decided_t, 1 − remaining_t)`, where `decided_t` is the smallest
//! decisiveness (max of best-sign and background probability) over the patches examined so far, and
//! `remaining_t` is the largest objectness among cells no patch has covered yet. It is high only when every
//! look gave a clear answer *and* nothing unexamined is likely a sign: the detection analogue of GFNet's
//! "the prediction is confident", since here missing a second sign is the error that matters.
//!
//! [`fit_thresholds`] fits η to a budget in mean patches per frame, as GFNet does: exits at step t take a
//! share ∝ q^t of the frames, and q is solved by bisection so the mean cost matches the budget.

use saccade_models::{class_name, BACKGROUND_CLASS};

use super::classify::PatchBatcher;
use super::detect_config::DetectConfig;
use super::exit::{open_frame, Opened};
use super::geometry::{object_box, patch_for_cell, CellArea, GlanceGeometry};
use super::outcome::OutcomeRecorder;
use super::{Detection, ExitReason, FocusInput, FocusOutcome, FocusResult, FocusStrategy};

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct GfNetConfig {
    /// Focus steps T after the glance (at most 5).
    pub max_steps: usize,
    /// Exit thresholds: `eta[0]` for the glance, `eta[t]` after focus step t. Missing entries reuse the last.
    pub eta: Vec<f32>,
    #[serde(flatten)]
    pub detect: DetectConfig,
}

impl Default for GfNetConfig {
    fn default() -> Self {
        Self {
            max_steps: 5,
            eta: vec![0.95, 0.8, 0.8, 0.8, 0.8, 0.8],
            detect: DetectConfig::default(),
        }
    }
}

/// The largest number of focus steps a config may ask for.
pub const MAX_FOCUS_STEPS: usize = 5;

pub struct GfNet {
    config: GfNetConfig,
    batcher: PatchBatcher,
    confidences: Vec<f32>,
    covered: Vec<bool>,
}

impl GfNet {
    pub fn new(config: GfNetConfig) -> Self {
        Self {
            config,
            batcher: PatchBatcher::new(),
            confidences: Vec::new(),
            covered: Vec::new(),
        }
    }

    /// The fused confidence at each step of the last frame (index 0 = glance). Run with thresholds above 1
    /// (see [`GfNetConfig::never_exit`]) on validation frames to record the input of [`fit_thresholds`].
    pub fn last_confidences(&self) -> &[f32] {
        &self.confidences
    }

    fn eta(&self, step: usize) -> f32 {
        self.config
            .eta
            .get(step)
            .or(self.config.eta.last())
            .copied()
            .unwrap_or(f32::INFINITY)
    }
}

impl GfNetConfig {
    /// This config with thresholds no confidence reaches: every frame takes all T steps (for recording).
    #[must_use]
    pub fn never_exit(mut self) -> Self {
        self.eta = vec![f32::MAX; self.max_steps + 1];
        self
    }
}

impl FocusStrategy for GfNet {
    fn name(&self) -> &'static str {
        "gfnet"
    }

    fn focus_into(&mut self, input: &FocusInput<'_>, out: &mut FocusOutcome) -> FocusResult {
        self.confidences.clear();
        let detect = self.config.detect.clone();
        let glance = input.glance;
        let geometry = GlanceGeometry::from_input(input);
        let mut recorder = OutcomeRecorder::new(out);

        // Step 0: the glance alone.
        let glance_conf = glance
            .class_probs
            .as_ref()
            .map(|p| {
                p.iter()
                    .take(BACKGROUND_CLASS)
                    .copied()
                    .fold(0.0f32, f32::max)
            })
            .unwrap_or(0.0);
        self.confidences.push(glance_conf);
        if glance_conf >= self.eta(0) {
            if let Some(probs) = &glance.class_probs {
                // Confident from the glance: report it at the most salient cell.
                let (class_id, score) = probs
                    .iter()
                    .take(BACKGROUND_CLASS)
                    .enumerate()
                    .fold((0, f32::MIN), |a, (c, &p)| if p > a.1 { (c, p) } else { a });
                let cell = argmax(&glance.objectness);
                if score >= detect.min_score {
                    if let Some(cell) = cell {
                        let (region, side) = patch_for_cell(glance, &geometry, cell, &detect);
                        recorder.detect(Detection {
                            class_id,
                            class_name: class_name(class_id),
                            score,
                            bbox: object_box(region, side),
                        });
                    }
                }
            }
            recorder.finish(ExitReason::Confident, detect.merge_iou);
            return Ok(());
        }
        let Some(Opened { clock, .. }) = open_frame(input, &detect) else {
            recorder.finish(ExitReason::NothingSalient, detect.merge_iou);
            return Ok(());
        };
        let cells = (glance.map_width * glance.map_height).min(glance.objectness.len());
        self.covered.clear();
        self.covered.resize(cells, false);
        let mflops = input.classifier.mflops_per_patch();
        let steps = self.config.max_steps.min(MAX_FOCUS_STEPS);
        let mut decided = 1.0f32;
        for step in 1..=steps {
            let next = (0..cells)
                .filter(|&c| !self.covered[c])
                .max_by(|&a, &b| glance.objectness[a].total_cmp(&glance.objectness[b]));
            let Some(cell) = next else {
                // Everything has been looked at: nothing is left to be unsure about.
                recorder.finish(ExitReason::MaxSteps, detect.merge_iou);
                return Ok(());
            };
            if recorder.outcome.patches.len() >= input.budget.max_patches || clock.expired() {
                recorder.finish(ExitReason::Budget, detect.merge_iou);
                return Ok(());
            }
            let (region, side) = patch_for_cell(glance, &geometry, cell, &detect);
            let looked = self.batcher.classify_and_look_again(
                "gfnet",
                input.frame,
                [region],
                input.classifier,
                &detect,
            )?;
            if let Some(l) = looked.first() {
                decided = decided.min(l.verdict.decisiveness());
                recorder.record_looked(
                    step,
                    region,
                    glance.objectness[cell],
                    side,
                    l,
                    mflops,
                    detect.min_score,
                );
            }
            // Mask every cell whose centre the patch covered, and the chosen one in any case.
            self.covered[cell] = true;
            for c in geometry.cells_in(CellArea::Box(region), self.covered.len()) {
                self.covered[c] = true;
            }
            let remaining = (0..cells)
                .filter(|&c| !self.covered[c])
                .map(|c| glance.objectness[c])
                .fold(0.0f32, f32::max);
            let confidence = decided.min(1.0 - remaining);
            self.confidences.push(confidence);
            if confidence >= self.eta(step) {
                recorder.finish(ExitReason::Confident, detect.merge_iou);
                return Ok(());
            }
        }
        recorder.finish(ExitReason::MaxSteps, detect.merge_iou);
        Ok(())
    }
}

fn argmax(values: &[f32]) -> Option<usize> {
    (0..values.len()).max_by(|&a, &b| values[a].total_cmp(&values[b]))
}

/// Simulates exits: the mean number of focus patches per frame when exiting at the first step t with
/// `conf[t] ≥ eta[t]` (a frame whose trace ended early stopped there).
fn mean_patches(confidences: &[Vec<f32>], eta: &[f32], max_steps: usize) -> f64 {
    if confidences.is_empty() {
        return 0.0;
    }
    let total: usize = confidences
        .iter()
        .map(|conf| {
            let last = conf.len().saturating_sub(1).min(max_steps);
            (0..=last)
                .find(|&t| conf[t] >= eta.get(t).copied().unwrap_or(f32::MAX))
                .unwrap_or(last)
        })
        .sum();
    total as f64 / confidences.len() as f64
}

/// Thresholds for exit rates ∝ q^t: at each step, the remaining frames with the highest confidence exit until
/// that step's share is reached; η_t is the confidence of the last frame let out (f32::MAX: none exit).
fn thresholds_for_ratio(confidences: &[Vec<f32>], q: f64, max_steps: usize) -> Vec<f32> {
    let n = confidences.len();
    let weights: Vec<f64> = (0..=max_steps).map(|t| q.powi(t as i32)).collect();
    let sum: f64 = weights.iter().sum();
    let mut eta = vec![f32::MAX; max_steps + 1];
    let mut remaining: Vec<usize> = (0..n).collect();
    let mut cumulative_share = 0.0;
    let mut exited = 0usize;
    for t in 0..=max_steps {
        cumulative_share += weights[t] / sum;
        let target = ((cumulative_share * n as f64).round() as usize).min(n);
        let quota = target.saturating_sub(exited);
        // Frames whose trace ended before t have stopped already: they do not take quota.
        remaining.retain(|&i| confidences[i].len() > t);
        if quota == 0 || remaining.is_empty() {
            continue;
        }
        remaining.sort_by(|&a, &b| confidences[b][t].total_cmp(&confidences[a][t]));
        let take = quota.min(remaining.len());
        eta[t] = confidences[remaining[take - 1]][t];
        // Ties at the threshold exit too.
        let out: Vec<usize> = remaining
            .iter()
            .copied()
            .filter(|&i| confidences[i][t] >= eta[t])
            .collect();
        exited += out.len();
        remaining.retain(|i| !out.contains(i));
    }
    eta
}

/// Fits exit thresholds `η_0..=η_T` so that frames with these per-step fused confidences (`confidences[f][t]`,
/// index 0 = glance, as [`GfNet::last_confidences`] records them) take `budget_mean_patches` focus patches on
/// average. Exit shares follow a geometric schedule q^t; q is found by bisection on log q.
pub fn fit_thresholds(
    confidences: &[Vec<f32>],
    budget_mean_patches: f64,
    max_steps: usize,
) -> Vec<f32> {
    let budget = budget_mean_patches.clamp(0.0, max_steps as f64);
    let (mut lo, mut hi) = (-12.0f64, 12.0f64);
    let mut best = thresholds_for_ratio(confidences, 1.0, max_steps);
    let mut best_err = f64::INFINITY;
    for _ in 0..60 {
        let mid = 0.5 * (lo + hi);
        let eta = thresholds_for_ratio(confidences, mid.exp(), max_steps);
        let mean = mean_patches(confidences, &eta, max_steps);
        let err = (mean - budget).abs();
        if err < best_err {
            best_err = err;
            best = eta;
        }
        if mean < budget {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    best
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::focus::testutil::*;
    use crate::frame::BoxPx;
    use rand::{Rng, SeedableRng};
    use saccade_models::NUM_CLASSES;

    #[test]
    fn gfnet_finds_a_red_square_and_exits_confident() {
        let scene = RedSquares::at(&[(300, 200)]);
        let mut s = GfNet::new(GfNetConfig::default());
        let out = scene.focus(&mut s);
        assert!(found_square(&out, (300, 200), 0.5), "{out:?}");
        assert_eq!(
            out.exit,
            Some(ExitReason::Confident),
            "{:?}",
            s.last_confidences()
        );
        assert!(out.patches.len() < 5);
        assert_eq!(s.last_confidences().len(), out.patches.len() + 1);
        assert!(out.patches.iter().enumerate().all(|(i, p)| p.step == i + 1));
    }

    #[test]
    fn gfnet_finds_two_signs_before_it_is_confident() {
        let scene = RedSquares::at(&[(100, 100), (500, 350)]);
        let mut s = GfNet::new(GfNetConfig::default());
        let out = scene.focus(&mut s);
        assert!(found_square(&out, (100, 100), 0.5), "{out:?}");
        assert!(found_square(&out, (500, 350), 0.5), "{out:?}");
    }

    #[test]
    fn a_confident_glance_exits_at_step_zero() {
        let frame = frame_with_squares(640, 480, &[(300, 200, 40)]);
        let mut glance = redness_glance(&frame, (160, 120), 4, 40.0);
        let mut probs = vec![0.0f32; NUM_CLASSES];
        probs[STOP_CLASS] = 0.99;
        probs[BACKGROUND_CLASS] = 0.01;
        glance.class_probs = Some(probs);
        let classifier = RednessClassifier::new(32);
        let out = GfNet::new(GfNetConfig::default())
            .focus(&input(&frame, &glance, (160, 120), &classifier, 16))
            .unwrap();
        assert_eq!(out.exit, Some(ExitReason::Confident));
        assert!(out.patches.is_empty());
        assert!(found(
            &out,
            BoxPx::new(300.0, 200.0, 340.0, 240.0),
            STOP_CLASS,
            0.5
        ));
    }

    #[test]
    fn never_exit_takes_all_steps_unless_the_budget_stops_it() {
        let frame = frame_with_squares(640, 480, &[(300, 200, 40)]);
        let glance = redness_glance(&frame, (160, 120), 4, 40.0);
        let classifier = RednessClassifier::new(32);
        let mut s = GfNet::new(GfNetConfig::default().never_exit());
        let out = s
            .focus(&input(&frame, &glance, (160, 120), &classifier, 16))
            .unwrap();
        assert_eq!(out.exit, Some(ExitReason::MaxSteps));
        assert_eq!(out.patches.len(), 5);
        assert_eq!(s.last_confidences().len(), 6);
        let out = s
            .focus(&input(&frame, &glance, (160, 120), &classifier, 2))
            .unwrap();
        assert_eq!(out.exit, Some(ExitReason::Budget));
        assert_eq!(out.patches.len(), 2);
    }

    #[test]
    fn fitted_thresholds_hit_the_budget_within_ten_percent() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let frames: Vec<Vec<f32>> = (0..2000)
            .map(|_| {
                // Confidence tends to grow with steps, as more of the frame has been seen.
                let base: f32 = rng.random::<f32>() * 0.5;
                (0..=5)
                    .map(|t| (base + 0.1 * t as f32 + 0.3 * rng.random::<f32>()).min(1.0))
                    .collect()
            })
            .collect();
        for budget in [0.5, 1.0, 2.0, 3.0, 4.0] {
            let eta = fit_thresholds(&frames, budget, 5);
            assert_eq!(eta.len(), 6);
            let mean = mean_patches(&frames, &eta, 5);
            assert!(
                (mean - budget).abs() <= 0.1 * budget,
                "budget {budget}: mean {mean}, eta {eta:?}"
            );
        }
    }

    #[test]
    fn mean_patches_counts_the_exit_step() {
        let frames = vec![
            vec![0.9, 0.0, 0.0],
            vec![0.1, 0.9, 0.0],
            vec![0.1, 0.1, 0.1],
        ];
        assert!((mean_patches(&frames, &[0.5, 0.5, 0.5], 2) - 1.0).abs() < 1e-9);
    }
}
