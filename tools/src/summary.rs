//! The run summary: what `saccade demo` and `saccade run` print at the end, and write with `--json`.
//!
//! JSON keys are stable (documented in the README): `frames, fps, stages.{capture,glance,focus,classify,total}.
//! {p50_ms,p90_ms,p99_ms,max_ms}, patches_per_frame, early_exit_rate, dropped_frames, detections`, and more.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use saccade_runtime::metrics::{LatencySummary, PipelineMetrics, Stage};
use saccade_runtime::pipeline::RunSummary;

#[derive(Debug, Clone, serde::Serialize)]
pub struct StageJson {
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl From<LatencySummary> for StageJson {
    fn from(s: LatencySummary) -> Self {
        Self {
            p50_ms: round3(s.p50_ms),
            p90_ms: round3(s.p90_ms),
            p99_ms: round3(s.p99_ms),
            max_ms: round3(s.max_ms),
        }
    }
}

/// Summary of one run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Summary {
    pub source: String,
    pub strategy: String,
    pub frames: u64,
    pub fps: f64,
    pub wall_s: f64,
    pub stages: BTreeMap<&'static str, StageJson>,
    pub patches_per_frame: f64,
    pub early_exit_rate: f64,
    pub dropped_frames: u64,
    pub dropped_frames_kernel: u64,
    pub dropped_frames_queue: u64,
    pub bad_frames: u64,
    pub source_outages: u64,
    pub detections: u64,
    pub mflops_per_frame: f64,
    pub pixel_fraction: f64,
    pub events_written: u64,
    /// Events of this source that an events output did not take (a full disk, a closed stdout).
    pub events_not_written: u64,
    /// Why, when `events_not_written` is not 0: each failing output and its last error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub events_error: Option<String>,
}

/// The per-stage latency table of the printed summaries, one row per stage in pipeline order; the capture
/// row is labelled `capture_label` (eval reads files, so its capture is decoding).
pub fn write_stage_table(
    s: &mut String,
    stages: &BTreeMap<&'static str, StageJson>,
    capture_label: &str,
) {
    let _ = writeln!(s, "  stage      p50 ms   p99 ms   max ms");
    for name in ["capture", "glance", "focus", "classify", "total"] {
        if let Some(st) = stages.get(name) {
            let label = if name == "capture" {
                capture_label
            } else {
                name
            };
            let _ = writeln!(
                s,
                "  {label:<9} {:>7.2}  {:>7.2}  {:>7.2}",
                st.p50_ms, st.p99_ms, st.max_ms
            );
        }
    }
}

pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

impl Summary {
    pub fn new(
        source: &str,
        strategy: &str,
        run: &RunSummary,
        metrics: &PipelineMetrics,
        glance_mflops: f64,
        events_written: u64,
    ) -> Self {
        let get = PipelineMetrics::get;
        let frames = get(&metrics.frames_processed);
        let per_frame = |x: f64| if frames > 0 { x / frames as f64 } else { 0.0 };
        let stages = Stage::ALL
            .iter()
            .map(|s| (s.name(), StageJson::from(metrics.histogram(*s).summary())))
            .collect();
        let pixels_total = get(&metrics.pixels_total);
        Self {
            source: source.to_string(),
            strategy: strategy.to_string(),
            frames,
            fps: round3(run.fps),
            wall_s: round3(run.wall_s),
            stages,
            patches_per_frame: round3(per_frame(get(&metrics.patches_total) as f64)),
            early_exit_rate: round3(per_frame(get(&metrics.early_exits) as f64)),
            dropped_frames: get(&metrics.frames_dropped_kernel)
                + get(&metrics.frames_dropped_queue),
            dropped_frames_kernel: get(&metrics.frames_dropped_kernel),
            dropped_frames_queue: get(&metrics.frames_dropped_queue),
            bad_frames: get(&metrics.frames_bad),
            source_outages: get(&metrics.source_outages),
            detections: get(&metrics.detections_total),
            mflops_per_frame: round3(
                glance_mflops + per_frame(get(&metrics.backbone_kflops_total) as f64 / 1000.0),
            ),
            pixel_fraction: if pixels_total > 0 {
                round3(get(&metrics.pixels_examined_total) as f64 / pixels_total as f64)
            } else {
                0.0
            },
            events_written,
            events_not_written: get(&metrics.events_write_errors),
            events_error: None,
        }
    }

    /// Records why this source's events were not written (the sink's failure), when some were not.
    #[must_use]
    pub fn with_events_error(mut self, error: Option<String>) -> Self {
        if self.events_not_written > 0 {
            self.events_error = error;
        }
        self
    }

    /// The human summary printed at the end of a run.
    pub fn human(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "saccade: {} frames from {} with strategy `{}` in {:.2} s ({:.1} fps)",
            self.frames, self.source, self.strategy, self.wall_s, self.fps
        );
        write_stage_table(&mut s, &self.stages, "capture");
        let _ = writeln!(
            s,
            "  patches/frame {:.2}, early-exit rate {:.0} %, full-res pixels examined {:.1} %, {:.1} MFLOPs/frame",
            self.patches_per_frame,
            self.early_exit_rate * 100.0,
            self.pixel_fraction * 100.0,
            self.mflops_per_frame
        );
        let _ = writeln!(
            s,
            "  dropped frames {} (kernel {}, queue {}), bad frames {}, detections {}",
            self.dropped_frames,
            self.dropped_frames_kernel,
            self.dropped_frames_queue,
            self.bad_frames,
            self.detections
        );
        if self.events_not_written > 0 {
            let _ = writeln!(
                s,
                "  {} events not written ({})",
                self.events_not_written,
                self.events_error.as_deref().unwrap_or("unknown error")
            );
        }
        s
    }
}
