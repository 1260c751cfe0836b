//! Specifications of the Prometheus exposition.

#![allow(clippy::unwrap_used)]

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
