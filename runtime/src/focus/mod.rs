//! Focus strategies: where to look in the full-resolution frame and when to stop.
//!
//! Every strategy sees the same [`GlanceMap`], the same patch cutter and the same [`PatchClassifier`], so the
//! benchmark compares like with like. A strategy writes a [`FocusOutcome`]: the detections (boxes in frame
//! pixels), every patch it examined in order, and why it stopped. It writes into an outcome of an earlier
//! frame handed back by the sink ([`crate::recycle`]) and keeps its other per-frame lists as scratch, so in
//! steady state a frame allocates nothing.

// `FocusError::Model` carries `ModelError` by value: that is the agreed interface, and a strategy returns an
// error at most once per frame, so the size of the `Err` variant costs nothing measurable.
#![allow(clippy::result_large_err)]

use std::time::Instant;

use saccade_models::{GlanceMap, ModelError, PatchClassifier};

use crate::frame::{BoxPx, Frame};

pub mod baselines;
#[cfg(test)]
mod building_blocks_tests;
pub mod classify;
pub mod coarse2fine;
pub mod detect_config;
pub mod exit;
pub mod geometry;
pub mod gfnet;
pub mod glance_only;
mod kind;
pub mod outcome;
pub mod selection;
#[cfg(test)]
mod testutil;
pub mod topk;
pub mod zoom;

pub use baselines::{Downsample, DownsampleConfig, FullRes, FullResConfig};
pub use coarse2fine::{Coarse2Fine, Coarse2FineConfig};
pub use detect_config::DetectConfig;
pub use exit::ExitReason;
pub use gfnet::{fit_thresholds, GfNet, GfNetConfig};
pub use glance_only::{GlanceOnly, GlanceOnlyConfig};
pub use kind::{ParseStrategyKindError, StrategyKind};
pub use selection::nms;
pub use topk::{ObjectnessScorer, PatchScorer, TopK, TopKConfig};
pub use zoom::{Zoom, ZoomConfig, ZoomGrid};

/// One detected sign.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Detection {
    pub class_id: usize,
    pub class_name: &'static str,
    pub score: f32,
    /// Box in frame pixels.
    #[serde(rename = "box", serialize_with = "serialize_box")]
    pub bbox: BoxPx,
}

fn serialize_box<S: serde::Serializer>(b: &BoxPx, s: S) -> Result<S::Ok, S::Error> {
    serde::Serialize::serialize(&b.to_array(), s)
}

/// A patch the strategy examined, in the order it was examined.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PatchVisit {
    /// Step at which it was examined (0-based; patches of one batch share a step).
    pub step: usize,
    /// Region of the frame that was cut out, in frame pixels.
    #[serde(rename = "box", serialize_with = "serialize_box")]
    pub bbox: BoxPx,
    /// Why it was chosen: the glance/scorer score of the region.
    pub score: f32,
}

/// What a strategy did with one frame.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct FocusOutcome {
    pub detections: Vec<Detection>,
    pub patches: Vec<PatchVisit>,
    pub exit: Option<ExitReason>,
    /// Backbone MFLOPs spent on this frame (excluding the glance).
    pub backbone_mflops: f64,
    /// Full-resolution pixels the backbone saw, summed over patches (overlaps counted again).
    pub pixels_examined: u64,
}

impl FocusOutcome {
    /// Empties the outcome for the next frame (as [`FocusOutcome::default`]), keeping the capacity of its lists.
    pub fn clear(&mut self) {
        let (mut detections, mut patches) = (
            std::mem::take(&mut self.detections),
            std::mem::take(&mut self.patches),
        );
        detections.clear();
        patches.clear();
        *self = Self {
            detections,
            patches,
            ..Self::default()
        };
    }
}

/// The per-frame budget: hard limits a strategy must respect.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FocusBudget {
    /// At most this many patches per frame (the patch pool size bounds it).
    pub max_patches: usize,
    /// Stop when this much time has passed since `started` (None: no deadline).
    pub deadline_ms: Option<f64>,
}

/// Everything a strategy needs for one frame.
pub struct FocusInput<'a> {
    pub frame: &'a Frame,
    pub glance: &'a GlanceMap,
    /// Glance input size in pixels `(w, h)`: glance px → frame px is `frame.width / w`, `frame.height / h`.
    pub glance_size_px: (usize, usize),
    pub classifier: &'a dyn PatchClassifier,
    pub budget: FocusBudget,
    /// When work on this frame started (for the deadline).
    pub started: Instant,
}

/// Errors of a strategy: only model failures (bad input is impossible here, frames are validated upstream).
#[derive(Debug, thiserror::Error)]
pub enum FocusError {
    #[error("strategy `{strategy}`: {source}")]
    Model {
        strategy: &'static str,
        #[source]
        source: ModelError,
    },
    #[error("strategy `{strategy}`: {message}")]
    Tensor {
        strategy: &'static str,
        message: String,
    },
}

/// What [`FocusStrategy::focus_into`] returns: the outcome is written into the caller's.
pub type FocusResult = Result<(), FocusError>;

/// A way of deciding where to look and when to stop.
pub trait FocusStrategy: Send {
    /// The name used by `--strategy` and in events (`topk`, `gfnet`, `zoom`, `coarse2fine`, `fullres`, `downsample`,
    /// `glance-only`).
    fn name(&self) -> &'static str;
    /// Looks at one frame, writing what it did into `out` (cleared first) and reusing its lists: the pipeline
    /// hands the outcomes of earlier frames back here (see [`crate::recycle`]), and a strategy keeps its other
    /// per-frame lists as scratch, so a frame allocates nothing once the lists have grown.
    fn focus_into(&mut self, input: &FocusInput<'_>, out: &mut FocusOutcome) -> FocusResult;
    /// [`Self::focus_into`] into a new outcome.
    fn focus(&mut self, input: &FocusInput<'_>) -> Result<FocusOutcome, FocusError> {
        let mut out = FocusOutcome::default();
        self.focus_into(input, &mut out)?;
        Ok(out)
    }
}

/// The names `strategy_by_name` knows, in the order benchmarks list them.
pub const STRATEGY_NAMES: &[&str] = &[
    "topk",
    "gfnet",
    "zoom",
    "coarse2fine",
    "fullres",
    "downsample",
    "glance-only",
];

/// The configuration of every strategy, as one table (`[topk]`, `[gfnet]`, ... in a TOML config).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct StrategyConfigs {
    pub topk: TopKConfig,
    pub gfnet: GfNetConfig,
    pub zoom: ZoomConfig,
    pub coarse2fine: Coarse2FineConfig,
    pub fullres: FullResConfig,
    pub downsample: DownsampleConfig,
    #[serde(rename = "glance-only")]
    pub glance_only: GlanceOnlyConfig,
}

/// A strategy name that is not one of [`STRATEGY_NAMES`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown focus strategy `{name}`, expected one of: topk, gfnet, zoom, coarse2fine, fullres, downsample, glance-only")]
pub struct UnknownStrategy {
    pub name: String,
}

/// Builds the strategy called `name` from its section of `config`.
pub fn strategy_by_name(
    name: &str,
    config: &StrategyConfigs,
) -> Result<Box<dyn FocusStrategy>, UnknownStrategy> {
    Ok(match name {
        "topk" => Box::new(TopK::new(config.topk.clone())),
        "gfnet" => Box::new(GfNet::new(config.gfnet.clone())),
        "zoom" => Box::new(Zoom::new(config.zoom.clone())),
        "coarse2fine" => Box::new(Coarse2Fine::new(config.coarse2fine.clone())),
        "fullres" => Box::new(FullRes::new(config.fullres.clone())),
        "downsample" => Box::new(Downsample::new(config.downsample.clone())),
        "glance-only" => Box::new(GlanceOnly::new(config.glance_only.clone())),
        _ => {
            return Err(UnknownStrategy {
                name: name.to_string(),
            })
        }
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_name_builds_a_strategy_of_that_name() {
        let configs = StrategyConfigs::default();
        for name in STRATEGY_NAMES {
            assert_eq!(strategy_by_name(name, &configs).unwrap().name(), *name);
        }
        let err = strategy_by_name("saliency", &configs).err().unwrap();
        assert!(err.to_string().contains("`saliency`"));
    }

    #[test]
    fn configs_round_trip_through_json_and_fill_defaults() {
        let configs = StrategyConfigs::default();
        let text = serde_json::to_string(&configs).unwrap();
        let back: StrategyConfigs = serde_json::from_str(&text).unwrap();
        assert_eq!(back, configs);
        let partial: StrategyConfigs = serde_json::from_str(r#"{"topk": {"k": 3}}"#).unwrap();
        assert_eq!(partial.topk.k, 3);
        assert_eq!(partial.gfnet, GfNetConfig::default());
    }

    use crate::focus::testutil::*;
    use proptest::prelude::*;
    use std::sync::atomic::Ordering;

    #[test]
    fn every_strategy_finds_a_red_square_in_frame_pixels() {
        let frame = frame_with_squares(640, 480, &[(404, 148, 48)]);
        let glance = redness_glance(&frame, (160, 120), 4, 48.0);
        let truth = BoxPx::new(404.0, 148.0, 452.0, 196.0);
        for name in STRATEGY_NAMES {
            let classifier = RednessClassifier::new(32);
            let mut strategy = strategy_by_name(name, &StrategyConfigs::default()).unwrap();
            let out = strategy
                .focus(&input(&frame, &glance, (160, 120), &classifier, 16))
                .unwrap();
            // Shrunk 4×, a 48 px sign is 12 px in a 32 px window: the downsample baseline honestly misses it.
            // The glance-only baseline names the glance's frame-level class (none in this mock glance); its
            // boxes are tested in its own module.
            if !matches!(*name, "downsample" | "glance-only") {
                assert!(
                    found(&out, truth, STOP_CLASS, 0.3),
                    "{name}: {:?}",
                    out.detections
                );
            }
            // No false alarms elsewhere in the frame.
            assert!(
                out.detections.iter().all(|d| d.bbox.iou(&truth) > 0.0),
                "{name}: {:?}",
                out.detections
            );
            assert_eq!(
                classifier.patches_seen.load(Ordering::SeqCst),
                out.patches.len(),
                "{name}"
            );
            let expected_mflops = out.patches.len() as f64 * classifier.mflops_per_patch();
            assert!(
                (out.backbone_mflops - expected_mflops).abs() < 1e-6,
                "{name}"
            );
        }
    }

    #[test]
    fn a_zero_deadline_exits_on_budget_after_at_most_one_batch() {
        let frame = frame_with_squares(640, 480, &[(300, 200, 40)]);
        let glance = redness_glance(&frame, (160, 120), 4, 40.0);
        for name in STRATEGY_NAMES {
            let classifier = RednessClassifier::new(32);
            let mut strategy = strategy_by_name(name, &StrategyConfigs::default()).unwrap();
            let mut inp = input(&frame, &glance, (160, 120), &classifier, 16);
            inp.budget.deadline_ms = Some(0.0);
            let out = strategy.focus(&inp).unwrap();
            assert_eq!(out.exit, Some(ExitReason::Budget), "{name}");
            assert!(classifier.calls.load(Ordering::SeqCst) <= 1, "{name}");
        }
    }

    #[test]
    fn an_empty_glance_costs_no_patch_for_glance_driven_strategies() {
        let frame = frame_with_squares(640, 480, &[]);
        let glance = redness_glance(&frame, (160, 120), 4, 40.0);
        for name in ["topk", "gfnet", "zoom", "coarse2fine"] {
            let classifier = RednessClassifier::new(32);
            let mut strategy = strategy_by_name(name, &StrategyConfigs::default()).unwrap();
            let out = strategy
                .focus(&input(&frame, &glance, (160, 120), &classifier, 16))
                .unwrap();
            assert_eq!(out.exit, Some(ExitReason::NothingSalient), "{name}");
            assert!(
                out.patches.is_empty() && out.detections.is_empty(),
                "{name}"
            );
            assert_eq!(classifier.calls.load(Ordering::SeqCst), 0, "{name}");
        }
    }

    /// Prints per-frame focus times on a 1280×960 frame with the mock classifier (run with `--ignored
    /// --nocapture`): the strategies' own overhead (cutting, warping, bookkeeping), not the backbone's.
    #[test]
    #[ignore]
    fn print_focus_timings_on_a_full_frame() {
        let frame = frame_with_squares(1280, 960, &[(600, 400, 40), (200, 700, 64)]);
        let glance = redness_glance(&frame, (320, 240), 8, 48.0);
        let mut small = vec![0u8; 320 * 240 * 3];
        let t = std::time::Instant::now();
        for _ in 0..10 {
            crate::imageops::resize_rgb_bilinear(&frame.rgb, 1280, 960, &mut small, 320, 240)
                .unwrap();
        }
        println!(
            "resize 1280x960 -> 320x240 (area): {:.2} ms",
            t.elapsed().as_secs_f64() * 100.0
        );
        for name in STRATEGY_NAMES {
            let classifier = RednessClassifier::new(32);
            let mut strategy = strategy_by_name(name, &StrategyConfigs::default()).unwrap();
            let runs = if name.starts_with("full") { 1 } else { 10 };
            let t = std::time::Instant::now();
            let mut out = FocusOutcome::default();
            for _ in 0..runs {
                out = strategy
                    .focus(&input(&frame, &glance, (320, 240), &classifier, 16))
                    .unwrap();
            }
            println!(
                "{name:12} {:8.2} ms/frame  patches {:5}  detections {}  exit {:?}",
                t.elapsed().as_secs_f64() * 1000.0 / runs as f64,
                out.patches.len(),
                out.detections.len(),
                out.exit
            );
            for d in &out.detections {
                println!("    {:?} {:.3}", d.bbox.to_array(), d.score);
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(16))]

        #[test]
        fn glance_strategies_never_exceed_max_patches_and_stay_inside_the_frame(
            squares in proptest::collection::vec((0u32..600, 0u32..440, 12u32..100), 1..5),
            max_patches in 0usize..8,
        ) {
            let frame = frame_with_squares(640, 480, &squares);
            let glance = redness_glance(&frame, (160, 120), 8, 40.0);
            for name in ["topk", "gfnet", "zoom", "coarse2fine"] {
                let classifier = RednessClassifier::new(16);
                let mut strategy = strategy_by_name(name, &StrategyConfigs::default()).unwrap();
                let out = strategy
                    .focus(&input(&frame, &glance, (160, 120), &classifier, max_patches))
                    .unwrap();
                prop_assert!(out.patches.len() <= max_patches, "{}: {}", name, out.patches.len());
                let inside = |b: &BoxPx| b.xmin >= 0.0 && b.ymin >= 0.0 && b.xmax <= 640.0 && b.ymax <= 480.0;
                prop_assert!(out.patches.iter().all(|p| inside(&p.bbox)), "{}", name);
                prop_assert!(out.exit.is_some());
            }
        }
    }
}
