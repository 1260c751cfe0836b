//! Prometheus text exposition (format 0.0.4) of pipeline metrics, labelled by source, encoded by the
//! `prometheus` crate's [`TextEncoder`].
//!
//! Names follow Prometheus conventions with the prefix `saccade_`: counters end in `_total`, latencies are
//! histograms in seconds (`saccade_stage_latency_seconds{source,stage}`). Nothing is counted twice: each scrape
//! reads the pipelines' own atomics and histograms ([`PipelineMetrics`], [`OutputMetrics`]) into metric
//! families, and the crate encodes them (escaping, `+Inf` bucket, `_sum`, `_count`).

use prometheus::proto::{
    Bucket, Counter, Gauge, Histogram, LabelPair, Metric, MetricFamily, MetricType,
};
use prometheus::TextEncoder;

use crate::metrics::{OutputMetrics, PipelineMetrics, Stage};

/// Histogram bucket upper bounds, seconds.
pub const LATENCY_BUCKETS_S: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// The HTTP `Content-Type` of [`render`]'s text.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// One pipeline's metrics with its source label and measured fps.
pub struct SourceMetrics<'a> {
    pub source: &'a str,
    pub metrics: &'a PipelineMetrics,
    pub fps: f64,
}

fn labels(pairs: &[(&str, &str)]) -> Vec<LabelPair> {
    pairs
        .iter()
        .map(|(name, value)| {
            let mut l = LabelPair::default();
            l.set_name((*name).to_string());
            l.set_value((*value).to_string());
            l
        })
        .collect()
}

fn family(name: &str, help: &str, kind: MetricType, metrics: Vec<Metric>) -> MetricFamily {
    let mut f = MetricFamily::default();
    f.set_name(name.to_string());
    f.set_help(help.to_string());
    f.set_field_type(kind);
    f.set_metric(metrics);
    f
}

fn counter(pairs: &[(&str, &str)], value: u64) -> Metric {
    let mut c = Counter::default();
    c.set_value(value as f64);
    let mut m = Metric::from_label(labels(pairs));
    m.set_counter(c);
    m
}

fn gauge(pairs: &[(&str, &str)], value: f64) -> Metric {
    let mut g = Gauge::default();
    g.set_value(value);
    let mut m = Metric::from_gauge(g);
    m.set_label(labels(pairs));
    m
}

fn stage_histogram(s: &SourceMetrics<'_>, stage: Stage) -> Metric {
    let (counts, count, sum_s) = s
        .metrics
        .histogram(stage)
        .cumulative_counts(&LATENCY_BUCKETS_S);
    let buckets = LATENCY_BUCKETS_S
        .iter()
        .zip(counts)
        .map(|(&bound, c)| {
            let mut b = Bucket::default();
            b.set_upper_bound(bound);
            b.set_cumulative_count(c);
            b
        })
        .collect();
    // The encoder adds the `+Inf` bucket (= the count).
    let mut h = Histogram::default();
    h.set_bucket(buckets);
    h.set_sample_count(count);
    // An empty histogram's sum is -0.0 (an empty f64 sum); Prometheus would read "-0".
    h.set_sample_sum(if count == 0 { 0.0 } else { sum_s });
    let mut m = Metric::from_label(labels(&[("source", s.source), ("stage", stage.name())]));
    m.set_histogram(h);
    m
}

/// The metric families of every source, the process's output errors, and process memory in use vs budget,
/// read from the live counters now. Families of per-source metrics are empty when there are no sources.
pub fn collect(
    sources: &[SourceMetrics<'_>],
    outputs: &OutputMetrics,
    memory_used_bytes: u64,
    memory_budget_bytes: u64,
) -> Vec<MetricFamily> {
    let get = PipelineMetrics::get;
    type Read = fn(&PipelineMetrics) -> u64;
    let counters: [(&str, &str, Read); 12] = [
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
    let per_source = |f: &dyn Fn(&SourceMetrics<'_>) -> Metric| sources.iter().map(f).collect();
    let mut families: Vec<MetricFamily> = counters
        .into_iter()
        .map(|(name, help, read)| {
            family(
                name,
                help,
                MetricType::COUNTER,
                per_source(&|s| counter(&[("source", s.source)], read(s.metrics))),
            )
        })
        .collect();
    families.push(family(
        "saccade_output_errors_total",
        "Failed writes of an output (a line or file not written, none left torn).",
        MetricType::COUNTER,
        vec![
            counter(&[("output", "events")], get(&outputs.events_errors)),
            counter(
                &[("output", "annotations")],
                get(&outputs.annotations_errors),
            ),
            counter(&[("output", "snapshots")], get(&outputs.snapshots_errors)),
        ],
    ));
    for (name, kind, help, value) in [
        (
            "saccade_mqtt_published_total",
            MetricType::COUNTER,
            "MQTT event messages the broker took.",
            &outputs.mqtt_published,
        ),
        (
            "saccade_mqtt_dropped_total",
            MetricType::COUNTER,
            "MQTT event messages dropped (buffer full while the broker was down or slow).",
            &outputs.mqtt_dropped,
        ),
        (
            "saccade_mqtt_reconnects_total",
            MetricType::COUNTER,
            "Times the MQTT connection came back.",
            &outputs.mqtt_reconnects,
        ),
        (
            "saccade_mqtt_connected",
            MetricType::GAUGE,
            "1 while connected to the MQTT broker.",
            &outputs.mqtt_connected,
        ),
        (
            "saccade_snapshots_written_total",
            MetricType::COUNTER,
            "Snapshots written (crop and annotated frame).",
            &outputs.snapshots_written,
        ),
    ] {
        let sample = if kind == MetricType::COUNTER {
            counter(&[], get(value))
        } else {
            gauge(&[], get(value) as f64)
        };
        families.push(family(name, help, kind, vec![sample]));
    }
    families.push(family(
        "saccade_fps",
        "Frames processed per second since start.",
        MetricType::GAUGE,
        per_source(&|s| gauge(&[("source", s.source)], s.fps)),
    ));
    let per_frame =
        |s: &SourceMetrics<'_>, n: u64| n as f64 / get(&s.metrics.frames_processed).max(1) as f64;
    families.push(family(
        "saccade_patches_per_frame",
        "Mean patches per processed frame.",
        MetricType::GAUGE,
        per_source(&|s| {
            gauge(
                &[("source", s.source)],
                per_frame(s, get(&s.metrics.patches_total)),
            )
        }),
    ));
    families.push(family(
        "saccade_early_exit_ratio",
        "Fraction of processed frames that exited early.",
        MetricType::GAUGE,
        per_source(&|s| {
            gauge(
                &[("source", s.source)],
                per_frame(s, get(&s.metrics.early_exits)),
            )
        }),
    ));
    families.push(family(
        "saccade_stage_latency_seconds",
        "Latency of each pipeline stage.",
        MetricType::HISTOGRAM,
        sources
            .iter()
            .flat_map(|s| Stage::ALL.map(|stage| stage_histogram(s, stage)))
            .collect(),
    ));
    families.push(family(
        "saccade_memory_used_bytes",
        "Resident memory of the process.",
        MetricType::GAUGE,
        vec![gauge(&[], memory_used_bytes as f64)],
    ));
    families.push(family(
        "saccade_memory_budget_bytes",
        "The memory budget the plan was checked against (memory_budget_mb, or 75 % of the memory available at start).",
        MetricType::GAUGE,
        vec![gauge(&[], memory_budget_bytes as f64)],
    ));
    families
}

/// Render every source's metrics, the process's output errors, and process memory in use vs budget, as
/// Prometheus text format 0.0.4 (serve it as [`CONTENT_TYPE`]).
pub fn render(
    sources: &[SourceMetrics<'_>],
    outputs: &OutputMetrics,
    memory_used_bytes: u64,
    memory_budget_bytes: u64,
) -> String {
    let mut families = collect(sources, outputs, memory_used_bytes, memory_budget_bytes);
    // The encoder refuses a family without samples (the per-source ones when there is no source).
    families.retain(|f| !f.get_metric().is_empty());
    let mut out = String::with_capacity(8192);
    if let Err(e) = TextEncoder::new().encode_utf8(&families, &mut out) {
        tracing::warn!("prometheus exposition incomplete: {e}");
    }
    out
}

#[cfg(test)]
mod tests;
