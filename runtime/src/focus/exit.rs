//! When a strategy stops looking at a frame: the [`ExitReason`]s, the frame-level early exit (the glance's
//! best objectness under `nothing_threshold`: nothing is examined), and the deadline clock checked before
//! each batch. [`open_frame`] is the opening every glance-driven strategy shares.

use std::time::Instant;

use saccade_models::GlanceMap;

use super::detect_config::DetectConfig;
use super::geometry::GlanceGeometry;
use super::{FocusInput, FocusOutcome};

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

/// Largest objectness of the glance map (0 for an empty map).
pub fn max_objectness(glance: &GlanceMap) -> f32 {
    glance
        .objectness
        .iter()
        .copied()
        .filter(|v| v.is_finite())
        .fold(0.0, f32::max)
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

/// The outcome of a frame the glance found empty.
pub fn nothing_salient() -> FocusOutcome {
    FocusOutcome {
        exit: Some(ExitReason::NothingSalient),
        ..FocusOutcome::default()
    }
}

/// [`nothing_salient`] into `out`, keeping the capacity of its lists.
pub fn nothing_salient_into(out: &mut FocusOutcome) {
    out.clear();
    out.exit = Some(ExitReason::NothingSalient);
}

/// What a glance-driven strategy starts a frame with once the glance found something worth a look.
#[derive(Debug, Clone, Copy)]
pub struct Opened {
    pub clock: BudgetClock,
    pub geometry: GlanceGeometry,
}

/// The opening every glance-driven strategy shares: the frame-level early exit (`None` when the glance's best
/// objectness is under `detect.nothing_threshold`: the frame ends as [`nothing_salient`]), else the deadline
/// clock and the glance geometry.
pub fn open_frame(input: &FocusInput<'_>, detect: &DetectConfig) -> Option<Opened> {
    if max_objectness(input.glance) < detect.nothing_threshold {
        return None;
    }
    Some(Opened {
        clock: BudgetClock::new(input),
        geometry: GlanceGeometry::from_input(input),
    })
}
