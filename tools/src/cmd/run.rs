//! `saccade run`: the pipeline on the sources of a config file and the flags, which override the file.

use std::path::PathBuf;

use clap::parser::ValueSource;
use clap::ArgMatches;

use anyhow::bail;
use saccade_runtime::capture::QueuePolicy;

use crate::config::{Config, SourceConfig};
use crate::engine::{ModelArgs, StrategyArgs};
use crate::run::execute;

#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// Source URI: v4l:///dev/video0?width=1280&height=960&fps=30&format=yuyv|mjpeg, dir://PATH[?fps=N&loop=true],
    /// synthetic://?width=1280&height=960&seed=1[&frames=N], file:///path/video.mp4, rtsp://host/path,
    /// gst://<pipeline ending in appsink> (the last three with the cargo feature `gstreamer`). Required unless
    /// --config names sources.
    #[arg(long)]
    pub source: Option<String>,
    /// TOML config file (see `saccade config --print-default`); flags given here override it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// JSON-lines events: a path, or `-` for stdout.
    #[arg(long)]
    pub events: Option<String>,
    /// Also copy the events to stdout when --events is a file.
    #[arg(long)]
    pub events_stdout: bool,
    /// Rotate the events file before it grows past this many MiB.
    #[arg(long)]
    pub events_max_mb: Option<f64>,
    /// Rotated events files to keep (default 5).
    #[arg(long)]
    pub events_keep: Option<usize>,
    /// Write annotated PNGs (heat map, patches, detections) into this folder.
    #[arg(long)]
    pub annotate: Option<PathBuf>,
    /// Publish events to MQTT: mqtt://HOST[:PORT]/TOPIC-PREFIX (mqtts:// for TLS; more keys in [mqtt]).
    #[arg(long)]
    pub mqtt: Option<String>,
    /// Write JPEG snapshots (crop and annotated frame) of detections into this folder (keys in [snapshots]).
    #[arg(long)]
    pub snapshots: Option<PathBuf>,
    /// Write the summary as JSON to this path (`-` for stdout).
    #[arg(long)]
    pub json: Option<String>,
    /// Queue policy: latest (drop the oldest when behind) or lossless (block); default by source kind.
    #[arg(long, value_parser = crate::config::parse_queue_policy)]
    pub policy: Option<QueuePolicy>,
    /// Capacity of each queue between stages (default 2).
    #[arg(long)]
    pub queue_depth: Option<usize>,
    /// Refuse to start if the memory plan exceeds this many MiB.
    #[arg(long)]
    pub memory_budget_mb: Option<f64>,
    /// Print the memory plan and the resolved settings, then exit without running.
    #[arg(long)]
    pub dry_run: bool,
    /// Serve the live page, JSON API, MJPEG streams, Prometheus /metrics and /healthz on this address
    /// (e.g. 127.0.0.1:8080; 0.0.0.0:PORT makes it reachable from other hosts).
    #[arg(long, visible_alias = "metrics-addr")]
    pub http_addr: Option<String>,
    /// /healthz answers 503 when a source delivered no frame for this many seconds (default 10).
    #[arg(long)]
    pub stall_s: Option<f64>,
    #[command(flatten)]
    pub strategy: StrategyArgs,
    #[command(flatten)]
    pub models: ModelArgs,
}

fn given(matches: Option<&ArgMatches>, id: &str) -> bool {
    matches.is_none_or(|m| m.value_source(id) == Some(ValueSource::CommandLine))
}

pub(crate) fn apply_model_args(
    config: &mut Config,
    models: &ModelArgs,
    matches: Option<&ArgMatches>,
) {
    if models.weights_dir.is_some() {
        config.models.weights_dir = models.weights_dir.clone();
    }
    if models.glance_weights.is_some() {
        config.models.glance_weights = models.glance_weights.clone();
    }
    if models.classifier_weights.is_some() {
        config.models.classifier_weights = models.classifier_weights.clone();
    }
    if given(matches, "dtype") {
        config.models.dtype = models.dtype;
    }
}

/// The settings of `saccade run`: the config file (or defaults), then the flags given on the command line.
pub fn resolve_run_config(args: &RunArgs, matches: Option<&ArgMatches>) -> anyhow::Result<Config> {
    let mut config = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    if let Some(source) = &args.source {
        config.sources = vec![SourceConfig {
            uri: source.clone(),
            policy: None,
        }];
    } else if args.config.is_none() {
        bail!("give a source with --source URI, or a config file with [[sources]] via --config");
    }
    if let Some(policy) = args.policy {
        for s in &mut config.sources {
            s.policy = Some(policy);
        }
    }
    if given(matches, "strategy") {
        config.strategy = args.strategy.strategy;
    }
    if given(matches, "max_patches") {
        config.max_patches = args.strategy.max_patches;
    }
    if args.strategy.deadline_ms.is_some() {
        config.deadline_ms = args.strategy.deadline_ms;
    }
    if let Some(q) = args.queue_depth {
        config.queue_depth = q;
    }
    if args.memory_budget_mb.is_some() {
        config.memory_budget_mb = args.memory_budget_mb;
    }
    if args.events.is_some() {
        config.output.events = args.events.clone();
    }
    if args.events_stdout {
        config.output.events_stdout = true;
    }
    if args.events_max_mb.is_some() {
        config.output.events_max_mb = args.events_max_mb;
    }
    if let Some(keep) = args.events_keep {
        config.output.events_keep = keep;
    }
    if args.annotate.is_some() {
        config.output.annotate = args.annotate.clone();
    }
    if args.mqtt.is_some() {
        config.mqtt.url = args.mqtt.clone();
    }
    if args.snapshots.is_some() {
        config.snapshots.dir = args.snapshots.clone();
    }
    if args.http_addr.is_some() {
        config.http.addr = args.http_addr.clone();
        config.metrics.addr = None;
    }
    if let Some(stall_s) = args.stall_s {
        config.http.stall_s = stall_s;
    }
    apply_model_args(&mut config, &args.models, matches);
    config.validate()?;
    Ok(config)
}

pub fn run(args: RunArgs, matches: Option<&ArgMatches>) -> anyhow::Result<()> {
    let config = resolve_run_config(&args, matches)?;
    execute(&config, args.json.as_deref(), args.dry_run).map(|_| ())
}
