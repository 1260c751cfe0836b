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

    /// Every metric family of the exposition, with its type, in order: the names as they were when the text
    /// was hand-formatted (scrapers and dashboards depend on them).
    const FAMILIES: [(&str, &str); 24] = [
        ("saccade_frames_captured_total", "counter"),
        ("saccade_frames_processed_total", "counter"),
        ("saccade_frames_bad_total", "counter"),
        ("saccade_frames_dropped_kernel_total", "counter"),
        ("saccade_frames_dropped_queue_total", "counter"),
        ("saccade_source_outages_total", "counter"),
        ("saccade_patches_total", "counter"),
        ("saccade_early_exits_total", "counter"),
        ("saccade_detections_total", "counter"),
        ("saccade_frame_buffers_allocated_total", "counter"),
        ("saccade_frame_buffers_reused_total", "counter"),
        ("saccade_event_write_errors_total", "counter"),
        ("saccade_output_errors_total", "counter"),
        ("saccade_mqtt_published_total", "counter"),
        ("saccade_mqtt_dropped_total", "counter"),
        ("saccade_mqtt_reconnects_total", "counter"),
        ("saccade_mqtt_connected", "gauge"),
        ("saccade_snapshots_written_total", "counter"),
        ("saccade_fps", "gauge"),
        ("saccade_patches_per_frame", "gauge"),
        ("saccade_early_exit_ratio", "gauge"),
        ("saccade_stage_latency_seconds", "histogram"),
        ("saccade_memory_used_bytes", "gauge"),
        ("saccade_memory_budget_bytes", "gauge"),
    ];

    /// A sample: name, labels (unescaped, in order), value.
    type Sample = (String, Vec<(String, String)>, f64);

    /// One sample line split into name, labels and value; `None` if it does not parse.
    fn parse_sample(line: &str) -> Option<Sample> {
        let (series, value) = line.rsplit_once(' ')?;
        let value = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().ok()?,
        };
        let Some((name, rest)) = series.split_once('{') else {
            return Some((series.to_string(), Vec::new(), value));
        };
        let mut labels = Vec::new();
        let mut chars = rest.chars().peekable();
        loop {
            let label: String = chars.by_ref().take_while(|&c| c != '=').collect();
            if chars.next()? != '"' {
                return None;
            }
            let mut v = String::new();
            loop {
                match chars.next()? {
                    '\\' => match chars.next()? {
                        'n' => v.push('\n'),
                        c @ ('\\' | '"') => v.push(c),
                        _ => return None,
                    },
                    '"' => break,
                    '\n' => return None,
                    c => v.push(c),
                }
            }
            labels.push((label, v));
            match chars.next()? {
                ',' => {}
                '}' => break,
                _ => return None,
            }
        }
        if chars.next().is_some() {
            return None;
        }
        let valid_name = |n: &str| {
            !n.is_empty()
                && n.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
        };
        (valid_name(name) && labels.iter().all(|(l, _)| valid_name(l)))
            .then(|| (name.to_string(), labels, value))
    }

    fn two_sources_text(first: &str) -> String {
        let a = PipelineMetrics::default();
        let b = PipelineMetrics::default();
        PipelineMetrics::add(&a.frames_processed, 4);
        PipelineMetrics::add(&a.patches_total, 10);
        PipelineMetrics::add(&a.early_exits, 1);
        for ms in [0.5, 3.0, 3.0, 20.0, 7000.0] {
            a.record(Stage::Focus, Duration::from_secs_f64(ms / 1e3));
        }
        b.record(Stage::Total, Duration::from_millis(40));
        render(
            &[
                SourceMetrics {
                    source: first,
                    metrics: &a,
                    fps: 12.5,
                },
                SourceMetrics {
                    source: "rtsp://cam/2",
                    metrics: &b,
                    fps: 0.0,
                },
            ],
            &OutputMetrics::default(),
            1 << 20,
            1 << 30,
        )
    }

    #[test]
    fn exposition_keeps_every_family_name_and_type() {
        let text = two_sources_text("rtsp://cam/1");
        let types: Vec<(&str, &str)> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .map(|l| l.split_once(' ').unwrap())
            .collect();
        assert_eq!(types, FAMILIES, "{text}");
        assert!(!text.contains(" -0\n"), "an empty sum reads -0: {text}");
        for (name, _) in FAMILIES {
            assert!(
                text.contains(&format!("# HELP {name} ")),
                "no help for {name}"
            );
        }
        // Every sample belongs to a family declared above it, with its labels.
        let mut family = "";
        for line in text.lines() {
            if let Some(l) = line.strip_prefix("# TYPE ") {
                family = l.split_once(' ').unwrap().0;
                continue;
            }
            if line.starts_with('#') {
                continue;
            }
            let (name, labels, _) =
                parse_sample(line).unwrap_or_else(|| panic!("bad sample line {line:?}"));
            let label_names: Vec<&str> = labels.iter().map(|(l, _)| l.as_str()).collect();
            let expected: &[&str] = match family {
                "saccade_stage_latency_seconds" if name.ends_with("_bucket") => {
                    &["source", "stage", "le"]
                }
                "saccade_stage_latency_seconds" => &["source", "stage"],
                "saccade_output_errors_total" => &["output"],
                "saccade_memory_used_bytes" | "saccade_memory_budget_bytes" => &[],
                f if f.starts_with("saccade_mqtt_") || f.starts_with("saccade_snapshots_") => &[],
                _ => &["source"],
            };
            assert_eq!(label_names, expected, "{line}");
            let suffixes: &[&str] = if family == "saccade_stage_latency_seconds" {
                &["_bucket", "_sum", "_count"]
            } else {
                &[""]
            };
            assert!(
                suffixes.iter().any(|s| name == format!("{family}{s}")),
                "{name} under {family}"
            );
        }
    }

    #[test]
    fn histogram_buckets_are_cumulative_and_inf_is_the_count() {
        let text = two_sources_text("rtsp://cam/1");
        let samples: Vec<_> = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| parse_sample(l).unwrap())
            .collect();
        let bounds: Vec<String> = LATENCY_BUCKETS_S
            .iter()
            .map(|b| b.to_string())
            .chain(["+Inf".to_string()])
            .collect();
        let mut series = 0;
        for source in ["rtsp://cam/1", "rtsp://cam/2"] {
            for stage in Stage::ALL {
                let labels = |extra: Option<&str>| {
                    let mut l = vec![
                        ("source".to_string(), source.to_string()),
                        ("stage".to_string(), stage.name().to_string()),
                    ];
                    l.extend(extra.map(|le| ("le".to_string(), le.to_string())));
                    l
                };
                let value = |name: &str, extra: Option<&str>| {
                    let want = labels(extra);
                    samples
                        .iter()
                        .find(|(n, l, _)| n == name && *l == want)
                        .map(|s| s.2)
                        .unwrap_or_else(|| panic!("no {name} {want:?}"))
                };
                let buckets: Vec<f64> = bounds
                    .iter()
                    .map(|le| value("saccade_stage_latency_seconds_bucket", Some(le)))
                    .collect();
                assert!(buckets.windows(2).all(|w| w[0] <= w[1]), "{buckets:?}");
                let count = value("saccade_stage_latency_seconds_count", None);
                assert_eq!(buckets.last().copied(), Some(count));
                let sum = value("saccade_stage_latency_seconds_sum", None);
                if source == "rtsp://cam/1" && stage == Stage::Focus {
                    // 0.5, 3, 3, 20 and 7000 ms.
                    assert_eq!(count, 5.0);
                    assert_eq!(buckets[..3], [1.0, 1.0, 3.0]);
                    assert_eq!(buckets[buckets.len() - 2], 4.0);
                    assert!((sum - 7.0265).abs() < 0.01, "{sum}");
                } else if source == "rtsp://cam/2" && stage == Stage::Total {
                    assert_eq!(count, 1.0);
                    assert_eq!(buckets[6], 1.0);
                    assert_eq!(buckets[5], 0.0);
                } else {
                    assert_eq!((count, sum), (0.0, 0.0));
                }
                series += 1;
            }
        }
        assert_eq!(series, 10);
        let bucket_lines = samples
            .iter()
            .filter(|s| s.0 == "saccade_stage_latency_seconds_bucket")
            .count();
        assert_eq!(bucket_lines, 10 * bounds.len());
    }

    #[test]
    fn label_values_are_escaped() {
        let nasty = "file:///a \"b\"\\c\nd";
        let text = two_sources_text(nasty);
        assert!(
            text.contains(r#"saccade_fps{source="file:///a \"b\"\\c\nd"} 12.5"#),
            "{text}"
        );
        let parsed: Vec<_> = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| parse_sample(l).unwrap_or_else(|| panic!("bad sample line {l:?}")))
            .collect();
        assert!(parsed
            .iter()
            .any(|(n, l, v)| n == "saccade_patches_per_frame"
                && l == &[("source".to_string(), nasty.to_string())]
                && *v == 2.5));
        assert!(parsed
            .iter()
            .any(|(n, l, v)| n == "saccade_early_exit_ratio"
                && l == &[("source".to_string(), nasty.to_string())]
                && *v == 0.25));
    }

    #[test]
    fn no_sources_still_renders_outputs_and_memory() {
        let text = render(&[], &OutputMetrics::default(), 5, 6);
        assert!(text.contains("saccade_output_errors_total{output=\"events\"} 0"));
        assert!(text.contains("saccade_memory_used_bytes 5\n"), "{text}");
        assert!(text.contains("saccade_memory_budget_bytes 6\n"), "{text}");
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            assert!(parse_sample(line).is_some(), "bad sample line {line:?}");
        }
    }
}
