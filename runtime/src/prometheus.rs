//! Prometheus text exposition (format 0.0.4) of pipeline metrics, labelled by source.
//!
//! Names follow Prometheus conventions with the prefix `saccade_`: counters end in `_total`, latencies are
//! histograms in seconds (`saccade_stage_latency_seconds{source,stage}`).

use std::fmt::Write as _;

use crate::metrics::{OutputMetrics, PipelineMetrics, Stage};

/// Histogram bucket upper bounds, seconds.
pub const LATENCY_BUCKETS_S: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// One pipeline's metrics with its source label and measured fps.
pub struct SourceMetrics<'a> {
    pub source: &'a str,
    pub metrics: &'a PipelineMetrics,
    pub fps: f64,
}

fn escape(label: &str) -> String {
    label
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Render every source's metrics, the process's output errors, and process memory in use vs budget.
pub fn render(
    sources: &[SourceMetrics<'_>],
    outputs: &OutputMetrics,
    memory_used_bytes: u64,
    memory_budget_bytes: u64,
) -> String {
    let mut out = String::with_capacity(8192);
    let get = PipelineMetrics::get;
    type Counter = fn(&PipelineMetrics) -> u64;
    let counters: [(&str, &str, Counter); 12] = [
        (
            "saccade_frames_captured_total",
            "Frames delivered by the source.",
            |m| PipelineMetrics::get(&m.frames_captured),
        ),
        (
            "saccade_frames_processed_total",
            "Frames that went through glance and focus.",
            |m| PipelineMetrics::get(&m.frames_processed),
        ),
        (
            "saccade_frames_bad_total",
            "Frames that could not be decoded or processed and were skipped.",
            |m| PipelineMetrics::get(&m.frames_bad),
        ),
        (
            "saccade_frames_dropped_kernel_total",
            "Frames the driver dropped (sequence gaps).",
            |m| PipelineMetrics::get(&m.frames_dropped_kernel),
        ),
        (
            "saccade_frames_dropped_queue_total",
            "Frames dropped by the latest-frame queue policy.",
            |m| PipelineMetrics::get(&m.frames_dropped_queue),
        ),
        (
            "saccade_source_outages_total",
            "Times the source vanished or stalled.",
            |m| PipelineMetrics::get(&m.source_outages),
        ),
        (
            "saccade_patches_total",
            "Full-resolution patches examined by the backbone.",
            |m| PipelineMetrics::get(&m.patches_total),
        ),
        (
            "saccade_early_exits_total",
            "Frames that exited early (confident or nothing salient).",
            |m| PipelineMetrics::get(&m.early_exits),
        ),
        ("saccade_detections_total", "Detections emitted.", |m| {
            PipelineMetrics::get(&m.detections_total)
        }),
        (
            "saccade_frame_buffers_allocated_total",
            "Frame buffers the frame pool allocated (flat once the pool is warm).",
            |m| PipelineMetrics::get(&m.frame_buffers_allocated),
        ),
        (
            "saccade_frame_buffers_reused_total",
            "Frames decoded into a recycled frame buffer.",
            |m| PipelineMetrics::get(&m.frame_buffers_reused),
        ),
        (
            "saccade_event_write_errors_total",
            "Events of this source that an events output did not take.",
            |m| PipelineMetrics::get(&m.events_write_errors),
        ),
    ];
    for (name, help, f) in counters {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        for s in sources {
            let _ = writeln!(
                out,
                "{name}{{source=\"{}\"}} {}",
                escape(s.source),
                f(s.metrics)
            );
        }
    }
    let name = "saccade_output_errors_total";
    let _ = writeln!(
        out,
        "# HELP {name} Failed writes of an output (a line or file not written, none left torn).\n# TYPE {name} counter"
    );
    for (output, counter) in [
        ("events", &outputs.events_errors),
        ("annotations", &outputs.annotations_errors),
        ("snapshots", &outputs.snapshots_errors),
    ] {
        let _ = writeln!(out, "{name}{{output=\"{output}\"}} {}", get(counter));
    }
    for (name, kind, help, counter) in [
        (
            "saccade_mqtt_published_total",
            "counter",
            "MQTT event messages the broker took.",
            &outputs.mqtt_published,
        ),
        (
            "saccade_mqtt_dropped_total",
            "counter",
            "MQTT event messages dropped (buffer full while the broker was down or slow).",
            &outputs.mqtt_dropped,
        ),
        (
            "saccade_mqtt_reconnects_total",
            "counter",
            "Times the MQTT connection came back.",
            &outputs.mqtt_reconnects,
        ),
        (
            "saccade_mqtt_connected",
            "gauge",
            "1 while connected to the MQTT broker.",
            &outputs.mqtt_connected,
        ),
        (
            "saccade_snapshots_written_total",
            "counter",
            "Snapshots written (crop and annotated frame).",
            &outputs.snapshots_written,
        ),
    ] {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {}",
            get(counter)
        );
    }
    let _ = writeln!(
        out,
        "# HELP saccade_fps Frames processed per second since start.\n# TYPE saccade_fps gauge"
    );
    for s in sources {
        let _ = writeln!(
            out,
            "saccade_fps{{source=\"{}\"}} {:.3}",
            escape(s.source),
            s.fps
        );
    }
    let _ = writeln!(out, "# HELP saccade_patches_per_frame Mean patches per processed frame.\n# TYPE saccade_patches_per_frame gauge");
    for s in sources {
        let frames = get(&s.metrics.frames_processed).max(1) as f64;
        let _ = writeln!(
            out,
            "saccade_patches_per_frame{{source=\"{}\"}} {:.4}",
            escape(s.source),
            get(&s.metrics.patches_total) as f64 / frames
        );
    }
    let _ = writeln!(out, "# HELP saccade_early_exit_ratio Fraction of processed frames that exited early.\n# TYPE saccade_early_exit_ratio gauge");
    for s in sources {
        let frames = get(&s.metrics.frames_processed).max(1) as f64;
        let _ = writeln!(
            out,
            "saccade_early_exit_ratio{{source=\"{}\"}} {:.4}",
            escape(s.source),
            get(&s.metrics.early_exits) as f64 / frames
        );
    }
    let name = "saccade_stage_latency_seconds";
    let _ = writeln!(
        out,
        "# HELP {name} Latency of each pipeline stage.\n# TYPE {name} histogram"
    );
    for s in sources {
        for stage in Stage::ALL {
            let (counts, count, sum_s) = s
                .metrics
                .histogram(stage)
                .cumulative_counts(&LATENCY_BUCKETS_S);
            let labels = format!("source=\"{}\",stage=\"{}\"", escape(s.source), stage.name());
            for (bound, c) in LATENCY_BUCKETS_S.iter().zip(&counts) {
                let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{bound}\"}} {c}");
            }
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {count}");
            let _ = writeln!(out, "{name}_sum{{{labels}}} {sum_s:.6}");
            let _ = writeln!(out, "{name}_count{{{labels}}} {count}");
        }
    }
    let _ = writeln!(out, "# HELP saccade_memory_used_bytes Resident memory of the process.\n# TYPE saccade_memory_used_bytes gauge\nsaccade_memory_used_bytes {memory_used_bytes}");
    let _ = writeln!(out, "# HELP saccade_memory_budget_bytes The memory budget the plan was checked against (memory_budget_mb, or 75 % of the memory available at start).\n# TYPE saccade_memory_budget_bytes gauge\nsaccade_memory_budget_bytes {memory_budget_bytes}");
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn exposition_has_counters_and_histograms_per_source() {
        let m = PipelineMetrics::default();
        PipelineMetrics::add(&m.frames_captured, 7);
        let outputs = OutputMetrics::default();
        PipelineMetrics::add(&outputs.events_errors, 3);
        m.record(Stage::Glance, Duration::from_millis(3));
        let text = render(
            &[SourceMetrics {
                source: "synthetic://?seed=1",
                metrics: &m,
                fps: 30.0,
            }],
            &outputs,
            10,
            20,
        );
        assert!(
            text.contains("saccade_frames_captured_total{source=\"synthetic://?seed=1\"} 7"),
            "{text}"
        );
        assert!(text.contains("saccade_stage_latency_seconds_bucket{source=\"synthetic://?seed=1\",stage=\"glance\",le=\"0.005\"} 1"), "{text}");
        assert!(text.contains("saccade_stage_latency_seconds_bucket{source=\"synthetic://?seed=1\",stage=\"glance\",le=\"0.0025\"} 0"), "{text}");
        assert!(text.contains("saccade_memory_budget_bytes 20"));
        assert!(
            text.contains("saccade_output_errors_total{output=\"events\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("saccade_output_errors_total{output=\"annotations\"} 0"),
            "{text}"
        );
        // Every sample line is `name{labels} value` or `name value`.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let value = line.rsplit(' ').next().unwrap();
            assert!(value.parse::<f64>().is_ok(), "bad sample line {line}");
        }
    }
}
