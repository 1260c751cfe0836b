//! The JSON API: `/api/sources` (what runs, and whether it delivers frames) and `/api/stats` (rates, stage
//! latencies, drops, early exits, memory vs budget), both read from the same counters as `/metrics`.

use axum::extract::State;
use axum::Json;
use saccade_runtime::metrics::{LatencySummary, PipelineMetrics, Stage};
use std::collections::BTreeMap;

use super::live::SourceFeed;
use super::{memory_used_bytes, AppState};

/// One source in `/api/sources`.
#[derive(Debug, serde::Serialize)]
pub struct SourceInfo {
    /// Position in the config's `[[sources]]`, as used by `/stream/<index>.mjpg`.
    pub index: usize,
    pub uri: String,
    /// Path of the source's MJPEG stream.
    pub stream: String,
    /// Seconds since the last processed frame (null before the first).
    pub last_frame_age_s: Option<f64>,
    /// Whether a frame came within the `/healthz` stall time.
    pub healthy: bool,
    /// Open MJPEG streams of this source.
    pub watchers: usize,
}

/// One source in `/api/stats`.
#[derive(Debug, serde::Serialize)]
pub struct SourceStats {
    pub index: usize,
    pub uri: String,
    /// Frames processed per second since start.
    pub fps: f64,
    pub frames_captured: u64,
    pub frames_processed: u64,
    pub frames_bad: u64,
    pub frames_dropped_kernel: u64,
    pub frames_dropped_queue: u64,
    pub source_outages: u64,
    pub early_exits: u64,
    pub early_exit_ratio: f64,
    pub patches_per_frame: f64,
    pub detections: u64,
    /// Latency percentiles of each stage (capture, glance, focus, classify, total), milliseconds.
    pub stages: BTreeMap<&'static str, LatencySummary>,
}

/// `/api/stats`: every source, and the process's memory.
#[derive(Debug, serde::Serialize)]
pub struct Stats {
    pub uptime_s: f64,
    pub sources: Vec<SourceStats>,
    /// Resident memory of the process.
    pub memory_used_bytes: u64,
    /// The budget the memory plan was checked against (0: none).
    pub memory_budget_bytes: u64,
}

pub(super) async fn sources(State(state): State<AppState>) -> Json<Vec<SourceInfo>> {
    let infos = state
        .registry
        .hub
        .feeds
        .iter()
        .enumerate()
        .map(|(index, feed)| SourceInfo {
            index,
            uri: feed.uri.clone(),
            stream: format!("/stream/{index}.mjpg"),
            last_frame_age_s: feed
                .has_frames()
                .then(|| feed.since_last_frame().as_secs_f64()),
            healthy: feed.since_last_frame() <= state.stall,
            watchers: feed.watchers(),
        })
        .collect();
    Json(infos)
}

pub(super) async fn stats(State(state): State<AppState>) -> Json<Stats> {
    let registry = &state.registry;
    let sources = registry
        .hub
        .feeds
        .iter()
        .enumerate()
        .map(|(index, feed)| source_stats(index, feed, registry.fps(&feed.metrics)))
        .collect();
    Json(Stats {
        uptime_s: registry.started.elapsed().as_secs_f64(),
        sources,
        memory_used_bytes: memory_used_bytes(),
        memory_budget_bytes: registry.memory_budget_bytes,
    })
}

fn source_stats(index: usize, feed: &SourceFeed, fps: f64) -> SourceStats {
    let m = &feed.metrics;
    let get = PipelineMetrics::get;
    let processed = get(&m.frames_processed);
    let per_frame = |n: u64| n as f64 / processed.max(1) as f64;
    SourceStats {
        index,
        uri: feed.uri.clone(),
        fps,
        frames_captured: get(&m.frames_captured),
        frames_processed: processed,
        frames_bad: get(&m.frames_bad),
        frames_dropped_kernel: get(&m.frames_dropped_kernel),
        frames_dropped_queue: get(&m.frames_dropped_queue),
        source_outages: get(&m.source_outages),
        early_exits: get(&m.early_exits),
        early_exit_ratio: per_frame(get(&m.early_exits)),
        patches_per_frame: per_frame(get(&m.patches_total)),
        detections: get(&m.detections_total),
        stages: Stage::ALL
            .iter()
            .map(|stage| (stage.name(), m.histogram(*stage).summary()))
            .collect(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    #[test]
    fn stats_report_counters_ratios_and_stage_percentiles() {
        let metrics = Arc::new(PipelineMetrics::default());
        PipelineMetrics::add(&metrics.frames_processed, 4);
        PipelineMetrics::add(&metrics.early_exits, 1);
        PipelineMetrics::add(&metrics.patches_total, 10);
        metrics.record(Stage::Glance, Duration::from_millis(8));
        let feed = SourceFeed::new("synthetic://?seed=3".into(), metrics, Instant::now());
        let stats = source_stats(2, &feed, 12.5);
        assert_eq!(stats.index, 2);
        assert_eq!(stats.early_exit_ratio, 0.25);
        assert_eq!(stats.patches_per_frame, 2.5);
        assert!(
            (stats.stages["glance"].p50_ms - 8.0).abs() < 0.1,
            "{stats:?}"
        );
        assert_eq!(stats.stages["focus"].count, 0);
        let json = serde_json::to_value(&stats).unwrap();
        assert_eq!(json["fps"], 12.5);
        assert!(json["stages"]["total"]["p99_ms"].is_number(), "{json}");
    }
}
