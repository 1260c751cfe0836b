//! The TOML configuration: every setting the CLI has, validated on load, with a commented default
//! (`saccade config --print-default`). Several `[[sources]]` run as several pipelines in one process,
//! sharing one loaded model.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use saccade_models::QuantDtype;
use saccade_runtime::capture::uri::parse_source_uri;
use saccade_runtime::capture::QueuePolicy;
use saccade_runtime::focus::{StrategyConfigs, StrategyKind};

/// Default hard limit of full-resolution patches per frame: room for `topk`'s fitted K = 48 first looks
/// (second looks come on top, one per first patch at most).
pub const DEFAULT_MAX_PATCHES: usize = 48;

/// Everything a run can be told.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Focus strategy of every source: topk, gfnet, zoom, coarse2fine, fullres, downsample.
    pub strategy: StrategyKind,
    /// Hard limit of patches per frame (the patch pool size).
    pub max_patches: usize,
    /// Per-frame deadline in ms (0 or absent: none).
    pub deadline_ms: Option<f64>,
    /// Capacity of each queue between stages.
    pub queue_depth: usize,
    /// The run refuses to start if its memory plan exceeds this (absent: 75 % of the memory available at start,
    /// `saccade_runtime::budget::DEFAULT_BUDGET_FRACTION_OF_AVAILABLE`).
    pub memory_budget_mb: Option<f64>,
    pub models: ModelsConfig,
    pub output: OutputConfig,
    pub metrics: MetricsConfig,
    pub http: HttpConfig,
    pub threads: ThreadsConfig,
    pub mqtt: crate::mqtt::MqttConfig,
    pub snapshots: crate::snapshots::SnapshotConfig,
    pub sources: Vec<SourceConfig>,
    pub strategies: StrategyConfigs,
}

/// The thread layout's overrides (docs/THREADS.md); absent keys take the computed layout.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ThreadsConfig {
    /// Cores to plan for (absent: `available_parallelism`).
    pub cores: Option<usize>,
    /// Threads one op may split over: candle's rayon pools and the int8 product (absent: cores / sources,
    /// or `RAYON_NUM_THREADS` when that is set).
    pub intra_op: Option<usize>,
    /// With several sources, how long the classify worker waits for the other sources' patches, ms.
    pub batch_wait_ms: f64,
    /// With several sources, the shared classify workers (absent: the computed layout).
    pub classify_workers: Option<usize>,
}

impl Default for ThreadsConfig {
    fn default() -> Self {
        Self {
            cores: None,
            intra_op: None,
            batch_wait_ms: 1.0,
            classify_workers: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelsConfig {
    /// Folder with the weight files (absent: models/weights of the source tree).
    pub weights_dir: Option<PathBuf>,
    pub glance_weights: Option<PathBuf>,
    pub classifier_weights: Option<PathBuf>,
    /// q8_0, q4_0 or f32.
    #[serde(with = "weight_dtype")]
    pub dtype: QuantDtype,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OutputConfig {
    /// JSON-lines events: a path or `-` for stdout (absent: none).
    pub events: Option<String>,
    /// Also write the events to stdout when `events` is a file.
    pub events_stdout: bool,
    /// Rotate the events file before it grows past this many MiB (absent: never).
    pub events_max_mb: Option<f64>,
    /// Rotated events files kept (`events.jsonl.1` … `.N`).
    pub events_keep: usize,
    /// Folder for annotated PNGs (absent: none).
    pub annotate: Option<PathBuf>,
}

impl Default for OutputConfig {
    fn default() -> Self {
        Self {
            events: None,
            events_stdout: false,
            events_max_mb: None,
            events_keep: 5,
            annotate: None,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// The same as `http.addr` (kept for older configs; give one of the two).
    pub addr: Option<String>,
}

/// The HTTP server: live page, JSON API, MJPEG streams, `/metrics` and `/healthz`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Listen on this address, e.g. `127.0.0.1:8080` (absent: no server).
    pub addr: Option<String>,
    /// Bearer token required on every path but `/healthz` (absent: none).
    pub token: Option<String>,
    /// `/healthz` answers 503 when a source delivered no frame for this many seconds.
    pub stall_s: f64,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            addr: None,
            token: None,
            stall_s: crate::serve::DEFAULT_STALL_S,
        }
    }
}

impl Config {
    /// The HTTP server's address: `http.addr`, else `metrics.addr`.
    pub fn http_addr(&self) -> Option<&str> {
        self.http.addr.as_deref().or(self.metrics.addr.as_deref())
    }
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    pub uri: String,
    /// latest or lossless (absent: the source's default: latest for cameras, lossless for replays).
    #[serde(default)]
    pub policy: Option<QueuePolicy>,
}

impl Default for ModelsConfig {
    fn default() -> Self {
        Self {
            weights_dir: None,
            glance_weights: None,
            classifier_weights: None,
            dtype: QuantDtype::Q8_0,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            strategy: StrategyKind::TopK,
            max_patches: DEFAULT_MAX_PATCHES,
            deadline_ms: None,
            queue_depth: 2,
            memory_budget_mb: None,
            models: ModelsConfig::default(),
            output: OutputConfig::default(),
            metrics: MetricsConfig::default(),
            http: HttpConfig::default(),
            threads: ThreadsConfig::default(),
            mqtt: crate::mqtt::MqttConfig::default(),
            snapshots: crate::snapshots::SnapshotConfig::default(),
            sources: vec![SourceConfig {
                uri: "synthetic://?width=1280&height=960&seed=1".into(),
                policy: None,
            }],
            strategies: StrategyConfigs::default(),
        }
    }
}

const HEADER: &str = "\
# saccade configuration (TOML). Every key is optional; absent keys take the values shown here.
# Flags given on the command line override the file.
#
# strategy: topk | gfnet | zoom | coarse2fine | fullres | downsample | glance-only
# max_patches: hard limit of full-resolution patches per frame (the patch pool size)
# deadline_ms: per-frame budget in milliseconds (omit for none)
# queue_depth: capacity of each queue between the stages
# memory_budget_mb: refuse to start when the memory plan exceeds this (omit: 75 % of the memory available at start)
# [models] weights_dir / glance_weights / classifier_weights: weight files; dtype: q8_0 | q4_0 | f32
# [output] events: JSON-lines path or \"-\" for stdout; events_stdout: also copy a file's events to stdout
#          events_max_mb: rotate the events file at this size (omit: never); events_keep: rotated files kept
#          annotate: folder for annotated PNGs
# [http] addr: HTTP server (live page /, /api/*, /stream/N.mjpg, /metrics, /healthz), e.g. \"127.0.0.1:8080\"
#        (omit to turn off; bind 0.0.0.0 only with a token on a trusted network)
#        token: bearer token for everything but /healthz (omit: none)
#        stall_s: /healthz answers 503 when a source delivered no frame for this many seconds
# [metrics] addr: older name of http.addr
# [threads] cores: cores to plan for (omit: all); intra_op: threads per op (omit: cores / sources);
#           batch_wait_ms: with several sources, how long classify waits to batch their patches;
#           classify_workers: with several sources, the shared classify workers (omit: the layout's; docs/THREADS.md)
# [mqtt] url: mqtt://HOST[:PORT]/TOPIC-PREFIX (mqtts:// for TLS; omit: no MQTT); one message per frame with
#        detections on PREFIX/events (all_frames = true: every frame), retained PREFIX/available online/offline
#        client_id; qos: 0 | 1 | 2; username / password; ca_file: PEM CA for mqtts:// (omit: system roots)
#        buffer: messages held while the broker is down or slow (more are dropped, saccade_mqtt_dropped_total)
#        keep_alive_s; drain_timeout_s: how long the end of a run waits for the broker to take the buffer
# [snapshots] dir: folder of JPEG snapshots (omit: none): a crop of each sign (margin: fraction of its side
#        added around it) and the annotated frame, for detections with score >= min_score, at most one per class
#        and source every min_interval_s; the oldest are removed to keep the folder under max_mb; quality: JPEG
# [[sources]] uri: v4l:///dev/video0?width=1280&height=960&fps=30&format=yuyv | dir://PATH | synthetic://?seed=1
#             | file:///path/video.mp4 | rtsp://host:554/path?latency_ms=200&timeout_ms=5000&transport=tcp
#             | gst://<pipeline ending in appsink> (file, rtsp and gst need the cargo feature `gstreamer`)
#             policy: latest (drop the oldest frame when behind) | lossless (block); omit for the source's default
# [strategies.NAME]: the settings of each focus strategy
";

impl Config {
    /// The commented default configuration.
    pub fn default_toml() -> anyhow::Result<String> {
        let body =
            toml::to_string_pretty(&Config::default()).context("serialising the default config")?;
        Ok(format!("{HEADER}\n{body}"))
    }

    /// Parse and validate a config text; `origin` names it in errors.
    pub fn from_toml(text: &str, origin: &str) -> anyhow::Result<Self> {
        let config: Config =
            toml::from_str(text).map_err(|e| anyhow::anyhow!("config {origin}: {e}"))?;
        config
            .validate()
            .with_context(|| format!("config {origin}"))?;
        Ok(config)
    }

    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config file {}", path.display()))?;
        Self::from_toml(&text, &path.display().to_string())
    }

    /// Check every value against what it must be; errors name the key, the value and what was expected.
    pub fn validate(&self) -> anyhow::Result<()> {
        if !(1..=1024).contains(&self.max_patches) {
            bail!(
                "key `max_patches` is {}, expected 1..=1024",
                self.max_patches
            );
        }
        if !(1..=256).contains(&self.queue_depth) {
            bail!(
                "key `queue_depth` is {}, expected 1..=256",
                self.queue_depth
            );
        }
        if let Some(d) = self.deadline_ms {
            if !(d.is_finite() && d >= 0.0) {
                bail!("key `deadline_ms` is {d}, expected a number ≥ 0");
            }
        }
        for (key, value) in [
            ("threads.cores", self.threads.cores),
            ("threads.intra_op", self.threads.intra_op),
            ("threads.classify_workers", self.threads.classify_workers),
        ] {
            if let Some(n) = value {
                if !(1..=1024).contains(&n) {
                    bail!("key `{key}` is {n}, expected 1..=1024");
                }
            }
        }
        let wait = self.threads.batch_wait_ms;
        if !(wait.is_finite() && (0.0..=100.0).contains(&wait)) {
            bail!("key `threads.batch_wait_ms` is {wait}, expected 0..=100");
        }
        if let Some(m) = self.memory_budget_mb {
            if !(m.is_finite() && m > 0.0) {
                bail!("key `memory_budget_mb` is {m}, expected a number > 0");
            }
        }
        if !weight_dtype::WEIGHT_FILE_DTYPES.contains(&self.models.dtype) {
            bail!(
                "key `models.dtype` is `{}`, expected {}",
                self.models.dtype,
                weight_dtype::EXPECTED
            );
        }
        if let Some(mb) = self.output.events_max_mb {
            if !(mb.is_finite() && mb >= 0.001) {
                bail!("key `output.events_max_mb` is {mb}, expected a number ≥ 0.001");
            }
            if self.output.events.is_none() || self.output.events.as_deref() == Some("-") {
                bail!("key `output.events_max_mb` is set, but `output.events` is not a file path");
            }
        }
        if self.output.events_keep > 1000 {
            bail!(
                "key `output.events_keep` is {}, expected 0..=1000",
                self.output.events_keep
            );
        }
        for (key, addr) in [
            ("metrics.addr", &self.metrics.addr),
            ("http.addr", &self.http.addr),
        ] {
            if let Some(addr) = addr {
                addr.parse::<SocketAddr>().map_err(|e| {
                    anyhow::anyhow!("key `{key}` is `{addr}`, expected HOST:PORT ({e})")
                })?;
            }
        }
        if let (Some(a), Some(b)) = (&self.metrics.addr, &self.http.addr) {
            if a != b {
                bail!("keys `metrics.addr` (`{a}`) and `http.addr` (`{b}`) differ, expected one address: give only `http.addr`");
            }
        }
        if let Some(token) = &self.http.token {
            if token.is_empty() || token.chars().any(|c| c.is_whitespace() || c.is_control()) {
                bail!("key `http.token` is empty or has spaces or control characters, expected a non-empty word");
            }
        }
        if !(self.http.stall_s.is_finite() && self.http.stall_s > 0.0) {
            bail!(
                "key `http.stall_s` is {}, expected a number of seconds > 0",
                self.http.stall_s
            );
        }
        self.mqtt.validate()?;
        self.snapshots.validate()?;
        if self.sources.is_empty() {
            bail!("key `sources` is empty, expected at least one [[sources]] entry");
        }
        for (i, s) in self.sources.iter().enumerate() {
            parse_source_uri(&s.uri).with_context(|| format!("key `sources[{i}].uri`"))?;
        }
        Ok(())
    }
}

/// `models.dtype` in a config: the dtypes there are weight files of, spelt as `QuantDtype` displays them.
mod weight_dtype {
    use saccade_models::QuantDtype;

    /// The dtypes `--weights-dir` has files of.
    pub const WEIGHT_FILE_DTYPES: [QuantDtype; 3] =
        [QuantDtype::Q8_0, QuantDtype::Q4_0, QuantDtype::F32];
    pub const EXPECTED: &str = "q8_0, q4_0 or f32";

    pub fn serialize<S: serde::Serializer>(dtype: &QuantDtype, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(dtype)
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<QuantDtype, D::Error> {
        let text = <String as serde::Deserialize>::deserialize(d)?;
        text.parse::<QuantDtype>()
            .ok()
            .filter(|dtype| WEIGHT_FILE_DTYPES.contains(dtype))
            .ok_or_else(|| {
                serde::de::Error::custom(format!(
                    "key `models.dtype` is `{text}`, expected {EXPECTED}"
                ))
            })
    }
}

/// A queue policy as `--policy` spells it (`latest`, `lossless`).
pub fn parse_queue_policy(text: &str) -> Result<QueuePolicy, UnknownPolicy> {
    match text {
        "latest" => Ok(QueuePolicy::Latest),
        "lossless" => Ok(QueuePolicy::Lossless),
        other => Err(UnknownPolicy(other.to_string())),
    }
}

/// A queue policy that is neither `latest` nor `lossless`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("policy `{0}`: expected `latest` or `lossless`")]
pub struct UnknownPolicy(pub String);

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn default_config_round_trips_through_its_commented_toml() {
        let text = Config::default_toml().unwrap();
        assert!(text.starts_with("# saccade configuration"));
        assert_eq!(
            Config::from_toml(&text, "default").unwrap(),
            Config::default()
        );
    }

    #[test]
    fn bad_values_name_the_key_and_value() {
        let err = Config::from_toml("strategy = \"stare\"", "t.toml").unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("strategy") && msg.contains("stare"), "{msg}");
        let err = Config::from_toml("queue_depth = 0", "t.toml").unwrap_err();
        assert!(format!("{err:#}").contains("queue_depth"));
        let err = Config::from_toml("[metrics]\naddr = \"nowhere\"", "t.toml").unwrap_err();
        assert!(format!("{err:#}").contains("metrics.addr"));
        let err = Config::from_toml("[http]\nstall_s = 0", "t.toml").unwrap_err();
        assert!(format!("{err:#}").contains("http.stall_s` is 0"), "{err:#}");
        let err = Config::from_toml("[http]\ntoken = \"a b\"", "t.toml").unwrap_err();
        assert!(format!("{err:#}").contains("http.token"), "{err:#}");
        let err = Config::from_toml(
            "[http]\naddr = \"127.0.0.1:1\"\n[metrics]\naddr = \"127.0.0.1:2\"",
            "t.toml",
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("127.0.0.1:2"), "{err:#}");
        let old = Config::from_toml("[metrics]\naddr = \"127.0.0.1:9464\"", "t.toml").unwrap();
        assert_eq!(old.http_addr(), Some("127.0.0.1:9464"));
        let err = Config::from_toml("[[sources]]\nuri = \"ftp://x\"", "t.toml").unwrap_err();
        assert!(format!("{err:#}").contains("sources[0].uri"), "{err:#}");
    }

    #[test]
    fn events_rotation_needs_a_file_and_a_positive_size() {
        let ok = Config::from_toml(
            "[output]\nevents = \"ev.jsonl\"\nevents_max_mb = 64\nevents_keep = 3\nevents_stdout = true",
            "t.toml",
        )
        .unwrap();
        assert_eq!(ok.output.events_max_mb, Some(64.0));
        assert_eq!(ok.output.events_keep, 3);
        let err =
            Config::from_toml("[output]\nevents = \"-\"\nevents_max_mb = 1", "t.toml").unwrap_err();
        assert!(format!("{err:#}").contains("not a file path"), "{err:#}");
        let err = Config::from_toml("[output]\nevents = \"e\"\nevents_max_mb = -2", "t.toml")
            .unwrap_err();
        assert!(
            format!("{err:#}").contains("events_max_mb` is -2"),
            "{err:#}"
        );
        let err = Config::from_toml("[output]\nevents_keep = 5000", "t.toml").unwrap_err();
        assert!(format!("{err:#}").contains("events_keep"), "{err:#}");
    }

    #[test]
    fn unknown_keys_and_syntax_errors_are_rejected() {
        assert!(Config::from_toml("strategyy = \"topk\"", "t.toml").is_err());
        let err = Config::from_toml("max_patches = \"eight\"", "t.toml").unwrap_err();
        assert!(format!("{err:#}").contains("max_patches"), "{err:#}");
        assert!(Config::from_toml("[[sources]\n", "t.toml").is_err());
    }

    #[test]
    fn mqtt_and_snapshot_sections_parse_and_bad_values_name_the_key() {
        let c = Config::from_toml(
            "[mqtt]\nurl = \"mqtt://127.0.0.1:1883/site\"\nqos = 0\nbuffer = 10\n[snapshots]\ndir = \"snaps\"\nmax_mb = 2\n",
            "t.toml",
        )
        .unwrap();
        assert_eq!((c.mqtt.qos, c.mqtt.buffer), (0, 10));
        assert_eq!(c.snapshots.max_mb, 2.0);
        for (text, key) in [
            ("[mqtt]\nqos = 5\n", "mqtt.qos"),
            ("[mqtt]\nurl = \"http://x\"\n", "mqtt.url"),
            ("[snapshots]\nmin_score = 2.0\n", "snapshots.min_score"),
            ("[snapshots]\nmax_mb = 0\n", "snapshots.max_mb"),
        ] {
            let err = format!("{:#}", Config::from_toml(text, "t.toml").unwrap_err());
            assert!(err.contains(key), "{text}: {err}");
        }
    }

    #[test]
    fn two_sources_parse() {
        let c = Config::from_toml(
            "[[sources]]\nuri = \"synthetic://?seed=1\"\n[[sources]]\nuri = \"synthetic://?seed=2\"\npolicy = \"latest\"\n",
            "t.toml",
        )
        .unwrap();
        assert_eq!(c.sources.len(), 2);
    }

    #[test]
    fn the_threads_section_parses_and_bad_values_name_the_key() {
        let c = Config::from_toml(
            "[threads]\ncores = 4\nintra_op = 2\nbatch_wait_ms = 0.5\n",
            "t.toml",
        )
        .unwrap();
        assert_eq!(
            (c.threads.cores, c.threads.intra_op, c.threads.batch_wait_ms),
            (Some(4), Some(2), 0.5)
        );
        for (text, key) in [
            ("[threads]\nintra_op = 0\n", "threads.intra_op"),
            ("[threads]\ncores = 0\n", "threads.cores"),
            (
                "[threads]\nclassify_workers = 0\n",
                "threads.classify_workers",
            ),
            ("[threads]\nbatch_wait_ms = -1.0\n", "threads.batch_wait_ms"),
        ] {
            let err = Config::from_toml(text, "t.toml").unwrap_err();
            let err = format!("{err:#}");
            assert!(err.contains(key), "{text}: {err}");
        }
    }
}
