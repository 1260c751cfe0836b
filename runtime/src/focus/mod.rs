//! Focus strategies: where to look in the full-resolution frame and when to stop.
//!
//! Every strategy sees the same [`GlanceMap`], the same patch cutter and the same [`PatchClassifier`], so the
//! benchmark compares like with like. A strategy returns a [`FocusOutcome`]: the detections (boxes in frame
//! pixels), every patch it examined in order, and why it stopped.

use std::time::Instant;

use saccade_models::{GlanceMap, ModelError, PatchClassifier};

use crate::frame::{BoxPx, Frame};

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

/// Why a strategy stopped looking at a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ExitReason {
    /// The answer was confident enough (GFNet threshold reached).
    Confident,
    /// The glance saw nothing worth a look: the frame cost only the glance.
    NothingSalient,
    /// The per-frame budget (patches or ms) was spent before the strategy finished.
    Budget,
    /// The strategy took all the steps it plans (K patches, T steps, the whole grid).
    MaxSteps,
}

impl ExitReason {
    pub fn as_str(&self) -> &'static str {
        match self {
            ExitReason::Confident => "confident",
            ExitReason::NothingSalient => "nothing_salient",
            ExitReason::Budget => "budget",
            ExitReason::MaxSteps => "max_steps",
        }
    }
    /// Whether the strategy stopped before doing all the work it could (early exit).
    pub fn is_early(&self) -> bool {
        matches!(self, ExitReason::Confident | ExitReason::NothingSalient)
    }
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

/// A way of deciding where to look and when to stop.
pub trait FocusStrategy: Send {
    /// The name used by `--strategy` and in events (`topk`, `gfnet`, `zoom`, `coarse2fine`, `fullres`, `downsample`).
    fn name(&self) -> &'static str;
    fn focus(&mut self, input: &FocusInput<'_>) -> Result<FocusOutcome, FocusError>;
}
