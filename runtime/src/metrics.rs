//! Counters and per-stage latency histograms of a pipeline, shared between its threads.
//!
//! Counters are atomics; histograms are HDR histograms in microseconds behind a mutex each (a stage records
//! once per frame, so contention is negligible). Everything here is preallocated at start.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use hdrhistogram::Histogram;

/// The stages whose latency is recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Capture,
    Glance,
    Focus,
    Classify,
    /// Capture to event, per frame.
    Total,
}

impl Stage {
    pub const ALL: [Stage; 5] = [
        Stage::Capture,
        Stage::Glance,
        Stage::Focus,
        Stage::Classify,
        Stage::Total,
    ];
    pub fn name(&self) -> &'static str {
        match self {
            Stage::Capture => "capture",
            Stage::Glance => "glance",
            Stage::Focus => "focus",
            Stage::Classify => "classify",
            Stage::Total => "total",
        }
    }
}

/// Percentiles of one stage, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct LatencySummary {
    pub count: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

/// Latency histogram of one stage, 1 µs to 60 s at 3 significant digits.
pub struct StageHistogram {
    histogram: Mutex<Histogram<u64>>,
}

impl Default for StageHistogram {
    fn default() -> Self {
        Self::new()
    }
}

impl StageHistogram {
    pub fn new() -> Self {
        // 1 µs .. 60 s with 3 significant figures: bounds are constants, so this cannot fail.
        let histogram = Histogram::new_with_bounds(1, 60_000_000, 3)
            .unwrap_or_else(|_| Histogram::new(3).unwrap_or_else(|_| unreachable!()));
        Self {
            histogram: Mutex::new(histogram),
        }
    }

    pub fn record(&self, elapsed: Duration) {
        let us = (elapsed.as_micros() as u64).clamp(1, 60_000_000);
        if let Ok(mut h) = self.histogram.lock() {
            // Saturating record never fails for in-range values.
            h.saturating_record(us);
        }
    }

    pub fn summary(&self) -> LatencySummary {
        let Ok(h) = self.histogram.lock() else {
            return LatencySummary::default();
        };
        if h.is_empty() {
            return LatencySummary::default();
        }
        let ms = |us: u64| us as f64 / 1000.0;
        LatencySummary {
            count: h.len(),
            p50_ms: ms(h.value_at_quantile(0.50)),
            p90_ms: ms(h.value_at_quantile(0.90)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            max_ms: ms(h.max()),
            mean_ms: h.mean() / 1000.0,
        }
    }

    /// Cumulative bucket counts at the given upper bounds (seconds), for Prometheus histograms.
    pub fn cumulative_counts(&self, bounds_s: &[f64]) -> (Vec<u64>, u64, f64) {
        let Ok(h) = self.histogram.lock() else {
            return (vec![0; bounds_s.len()], 0, 0.0);
        };
        let counts = bounds_s
            .iter()
            .map(|b| h.count_between(0, (b * 1e6) as u64))
            .collect();
        let sum_s = h
            .iter_recorded()
            .map(|v| v.value_iterated_to() as f64 * v.count_at_value() as f64)
            .sum::<f64>()
            / 1e6;
        (counts, h.len(), sum_s)
    }
}

/// Everything a pipeline counts.
#[derive(Default)]
pub struct PipelineMetrics {
    pub frames_captured: AtomicU64,
    pub frames_bad: AtomicU64,
    pub frames_dropped_kernel: AtomicU64,
    pub frames_dropped_queue: AtomicU64,
    pub frames_processed: AtomicU64,
    pub source_outages: AtomicU64,
    pub patches_total: AtomicU64,
    pub early_exits: AtomicU64,
    pub detections_total: AtomicU64,
    /// Backbone MFLOPs, ×1000 to keep an integer counter.
    pub backbone_kflops_total: AtomicU64,
    pub pixels_examined_total: AtomicU64,
    pub pixels_total: AtomicU64,
    /// Events of this pipeline that at least one events output did not take (full disk, closed stdout).
    pub events_write_errors: AtomicU64,
    /// Frame buffers the pool had to allocate (steady state: none after the first `frames_in_flight`).
    pub frame_buffers_allocated: AtomicU64,
    /// Frames decoded into a recycled buffer.
    pub frame_buffers_reused: AtomicU64,
    capture: StageHistogram,
    glance: StageHistogram,
    focus: StageHistogram,
    classify: StageHistogram,
    total: StageHistogram,
}

/// Failed writes of the process's outputs, shared by every pipeline: exposed as
/// `saccade_output_errors_total{output="events"|"annotations"}`.
#[derive(Debug, Default)]
pub struct OutputMetrics {
    /// Event lines an events output could not write (each one cut back, none torn).
    pub events_errors: AtomicU64,
    /// Annotated PNGs that could not be written (none left half-written).
    pub annotations_errors: AtomicU64,
    /// Snapshots (crop and annotated frame) that could not be written.
    pub snapshots_errors: AtomicU64,
    /// Snapshots written.
    pub snapshots_written: AtomicU64,
    /// MQTT event messages the broker took (acknowledged, or sent at QoS 0).
    pub mqtt_published: AtomicU64,
    /// MQTT event messages dropped: the buffer was full (broker down or slow), or still held at the end.
    pub mqtt_dropped: AtomicU64,
    /// 1 while connected to the MQTT broker.
    pub mqtt_connected: AtomicU64,
    /// Times the MQTT connection came back after it was lost.
    pub mqtt_reconnects: AtomicU64,
}

impl PipelineMetrics {
    pub fn histogram(&self, stage: Stage) -> &StageHistogram {
        match stage {
            Stage::Capture => &self.capture,
            Stage::Glance => &self.glance,
            Stage::Focus => &self.focus,
            Stage::Classify => &self.classify,
            Stage::Total => &self.total,
        }
    }

    pub fn record(&self, stage: Stage, elapsed: Duration) {
        self.histogram(stage).record(elapsed);
    }

    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn histogram_percentiles_follow_recorded_values() {
        let h = StageHistogram::new();
        for ms in 1..=100u64 {
            h.record(Duration::from_millis(ms));
        }
        let s = h.summary();
        assert_eq!(s.count, 100);
        assert!((s.p50_ms - 50.0).abs() < 0.5, "{s:?}");
        assert!((s.p99_ms - 99.0).abs() < 0.5, "{s:?}");
        assert!((s.max_ms - 100.0).abs() < 0.5, "{s:?}");
    }

    #[test]
    fn empty_histogram_summarises_to_zero() {
        assert_eq!(StageHistogram::new().summary(), LatencySummary::default());
    }
}
