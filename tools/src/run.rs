//! `saccade demo`, `saccade run` and the small file commands (`quantize`, `inspect`, `synth`).

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use clap::parser::ValueSource;
use clap::ArgMatches;

use anyhow::{bail, Context};
use saccade_runtime::budget::MemoryBudget;
use saccade_runtime::capture::open_source;
use saccade_runtime::capture::uri::parse_source_uri;
use saccade_runtime::capture::QueuePolicy;
use saccade_runtime::events::{
    EventSink, EventTarget, FileTarget, FrameEvent, RateLimitedLog, ERROR_LOG_INTERVAL,
};
use saccade_runtime::metrics::{OutputMetrics, PipelineMetrics};
use saccade_runtime::pipeline::{run_pipeline, PipelineOptions};

use crate::config::{Config, SourceConfig};
use crate::engine::{self, ModelArgs, StrategyArgs};
use crate::serve::{self, Registry, ServerOptions};
use crate::summary::Summary;

#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Where annotated PNGs go.
    #[arg(long, default_value = "saccade-demo")]
    pub out: PathBuf,
    /// Write the summary as JSON to this path (`-` for stdout).
    #[arg(long)]
    pub json: Option<String>,
    /// Folder of sample frames (default: the frames that ship with saccade).
    #[arg(long)]
    pub samples: Option<PathBuf>,
    /// Show the live page: replay the samples in a loop at --fps until Ctrl-C, serving on --http-addr (no PNGs
    /// or events file are written).
    #[arg(long)]
    pub serve: bool,
    /// Address of the live page with --serve.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub http_addr: String,
    /// Frames per second of the looped samples with --serve.
    #[arg(long, default_value_t = 5.0)]
    pub fps: f64,
    #[command(flatten)]
    pub strategy: StrategyArgs,
    #[command(flatten)]
    pub models: ModelArgs,
}

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
    #[arg(long)]
    pub policy: Option<String>,
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

pub fn demo(args: DemoArgs) -> anyhow::Result<()> {
    let samples = args.samples.unwrap_or_else(engine::default_samples_dir);
    if !samples.is_dir() {
        bail!(
            "sample frames not found at {} (pass --samples DIR)",
            samples.display()
        );
    }
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating output folder {}", args.out.display()))?;
    let mut config = Config {
        strategy: args.strategy.strategy.clone(),
        max_patches: args.strategy.max_patches,
        deadline_ms: args.strategy.deadline_ms,
        ..Config::default()
    };
    let uri = format!("dir://{}", samples.display());
    if args.serve {
        if !(args.fps.is_finite() && args.fps > 0.0) {
            bail!("--fps is {}, expected a positive number", args.fps);
        }
        // Looped at a camera-like rate until Ctrl-C; nothing is written to disk.
        config.sources = vec![SourceConfig {
            uri: format!("{uri}?loop=true&fps={}", args.fps),
            policy: Some("latest".into()),
        }];
        config.http.addr = Some(args.http_addr.clone());
    } else {
        config.sources = vec![SourceConfig {
            uri,
            policy: Some("lossless".into()),
        }];
        config.output.events = Some(args.out.join("events.jsonl").display().to_string());
        config.output.annotate = Some(args.out.clone());
    }
    apply_model_args(&mut config, &args.models, None);
    config.validate()?;
    let summaries = execute(&config, args.json.as_deref(), false)?;
    if args.serve {
        return Ok(());
    }
    println!(
        "annotated frames and events.jsonl written to {}",
        args.out.display()
    );
    if summaries.iter().all(|s| s.frames == 0) {
        bail!("the demo processed no frames from {}", samples.display());
    }
    Ok(())
}

fn given(matches: Option<&ArgMatches>, id: &str) -> bool {
    matches.is_none_or(|m| m.value_source(id) == Some(ValueSource::CommandLine))
}

fn apply_model_args(config: &mut Config, models: &ModelArgs, matches: Option<&ArgMatches>) {
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
        config.models.dtype = models.dtype.clone();
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
    if let Some(policy) = &args.policy {
        for s in &mut config.sources {
            s.policy = Some(policy.clone());
        }
    }
    if given(matches, "strategy") {
        config.strategy = args.strategy.strategy.clone();
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

fn parse_policy(s: &str) -> anyhow::Result<QueuePolicy> {
    match s {
        "latest" => Ok(QueuePolicy::Latest),
        "lossless" => Ok(QueuePolicy::Lossless),
        other => bail!("policy `{other}`: expected `latest` or `lossless`"),
    }
}

fn model_args(config: &Config) -> ModelArgs {
    ModelArgs {
        weights_dir: config.models.weights_dir.clone(),
        glance_weights: config.models.glance_weights.clone(),
        classifier_weights: config.models.classifier_weights.clone(),
        dtype: config.models.dtype.clone(),
    }
}

fn strategy_args(config: &Config) -> StrategyArgs {
    StrategyArgs {
        strategy: config.strategy.clone(),
        max_patches: config.max_patches,
        deadline_ms: config.deadline_ms.filter(|d| *d > 0.0),
    }
}

/// Open every source, load the models once, check the memory plan, run one pipeline per source until they
/// end or a signal stops them; print and return the summaries.
pub fn execute(config: &Config, json: Option<&str>, dry_run: bool) -> anyhow::Result<Vec<Summary>> {
    let margs = model_args(config);
    let sargs = strategy_args(config);
    let threads = engine::thread_budget(config.sources.len(), &config.threads);
    engine::apply_thread_budget(&threads);
    let models = engine::load_models(&margs)?;
    let mut sources = Vec::new();
    let mut frame_sizes = Vec::new();
    for s in &config.sources {
        let spec = parse_source_uri(&s.uri).with_context(|| format!("source {}", s.uri))?;
        frame_sizes.push(engine::frame_size_hint(&spec));
        if !dry_run {
            let source = open_source(&s.uri).with_context(|| format!("opening {}", s.uri))?;
            let policy = match &s.policy {
                Some(p) => parse_policy(p)?,
                None => source.default_policy(),
            };
            sources.push((s.uri.clone(), source, policy));
        }
    }
    let plan = engine::memory_plan(&models, &margs, config, &frame_sizes);
    tracing::info!("{plan}");
    if dry_run {
        println!("{plan}");
        println!("{threads}");
        println!("{}", toml::to_string_pretty(config)?);
    }
    // Without memory_budget_mb the plan is checked against a share of the memory available now.
    let budget = MemoryBudget::resolve(config.memory_budget_mb);
    match &budget {
        Some(budget) => {
            plan.check_budget(budget)?;
            if dry_run {
                println!("fits {budget}");
            }
        }
        None => tracing::warn!(
            "/proc/meminfo is unreadable and no memory_budget_mb is set: the memory plan is not checked"
        ),
    }
    if dry_run {
        return Ok(Vec::new());
    }

    let output = &config.output;
    let target = match output.events.as_deref() {
        None => EventTarget::discard(),
        Some("-") => EventTarget::stdout(),
        Some(path) => EventTarget {
            stdout: output.events_stdout,
            file: Some(FileTarget {
                path: PathBuf::from(path),
                max_bytes: output
                    .events_max_mb
                    .map(|mb| (mb * 1024.0 * 1024.0).round() as u64),
                keep: output.events_keep,
            }),
        },
    };
    let outputs = Arc::new(OutputMetrics::default());
    let sink = Mutex::new(
        EventSink::open(&target)
            .context("opening the events output")?
            .with_metrics(outputs.clone()),
    );
    if let Some(dir) = &config.output.annotate {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating annotation folder {}", dir.display()))?;
    }
    let mqtt = crate::mqtt::MqttSink::start(&config.mqtt, outputs.clone())?;
    let snapshots = crate::snapshots::Snapshots::open(&config.snapshots)?.map(Mutex::new);
    let stop = install_signal_handlers()?;
    let metrics: Vec<Arc<PipelineMetrics>> = sources
        .iter()
        .map(|_| Arc::new(PipelineMetrics::default()))
        .collect();
    let registry = Arc::new(Registry::new(
        sources
            .iter()
            .zip(&metrics)
            .map(|((uri, _, _), m)| (uri.clone(), m.clone()))
            .collect(),
        outputs.clone(),
        budget.map_or(0, |b| b.budget_bytes()),
    ));
    let server = match config.http_addr() {
        Some(addr) => {
            let options = ServerOptions {
                addr: addr.to_string(),
                token: config.http.token.clone(),
                stall: std::time::Duration::from_secs_f64(config.http.stall_s),
            };
            let server = serve::spawn(&options, registry.clone())?;
            let local = server.local_addr;
            eprintln!("saccade: live view on http://{local}/, metrics on http://{local}/metrics");
            Some(server)
        }
        None => None,
    };
    let multi = sources.len() > 1;
    let batcher =
        engine::batching_classifier(&models, &threads, sargs.max_patches, &config.threads)?;
    let annotate = config.output.annotate.clone();
    let mut runs = Vec::new();
    std::thread::scope(|scope| -> anyhow::Result<()> {
        let mut handles = Vec::new();
        for (i, ((uri, source, policy), m)) in sources.into_iter().zip(&metrics).enumerate() {
            let processor = engine::build_processor(
                &engine::models_for_source(&models, batcher.as_ref()),
                &sargs,
                &config.strategies,
            )?;
            let options = PipelineOptions {
                queue_depth: config.queue_depth,
                policy,
                budget: sargs.budget(),
            };
            let (stop, sink, annotate, strategy) =
                (stop.clone(), &sink, annotate.clone(), &config.strategy);
            let (mqtt, snapshots) = (mqtt.as_ref(), snapshots.as_ref());
            let m = m.clone();
            let outputs = outputs.clone();
            let source_metrics = m.clone();
            let registry = registry.clone();
            handles.push(scope.spawn(move || {
                let mut annotate_log = RateLimitedLog::new(ERROR_LOG_INTERVAL);
                let mut snapshot_log = RateLimitedLog::new(ERROR_LOG_INTERVAL);
                let run = run_pipeline(source, processor, options, m, stop, |done| {
                    let event = FrameEvent::new(
                        &uri,
                        strategy,
                        &done.frame,
                        &done.outcome,
                        done.latency_ms,
                    );
                    let written = match sink.lock() {
                        Ok(mut sink) => sink.write(&event),
                        Err(_) => false,
                    };
                    if !written {
                        PipelineMetrics::add(&source_metrics.events_write_errors, 1);
                    }
                    if let Some(mqtt) = mqtt {
                        mqtt.publish(&event);
                    }
                    registry.hub.frame_done(i, &done, &event);
                    if let Some(snapshots) = snapshots {
                        let taken = match snapshots.lock() {
                            Ok(mut s) => s.take(i, &done, std::time::Instant::now()),
                            Err(_) => Err(anyhow::anyhow!("snapshot writer poisoned")),
                        };
                        match taken {
                            Ok(n) => PipelineMetrics::add(&outputs.snapshots_written, n as u64),
                            Err(e) => {
                                PipelineMetrics::add(&outputs.snapshots_errors, 1);
                                if let Some(held_back) = snapshot_log.due(std::time::Instant::now()) {
                                    tracing::error!(
                                        "{e:#}; the next detection tries again ({held_back} errors since the last message)"
                                    );
                                }
                            }
                        }
                    }
                    if let Some(dir) = &annotate {
                        let stem = match &done.frame.file {
                            Some(file) => file
                                .rsplit_once('.')
                                .map_or(file.as_str(), |(s, _)| s)
                                .to_string(),
                            None => format!("{:06}", done.frame.index),
                        };
                        let name = if multi {
                            format!("source{i}-{stem}.png")
                        } else {
                            format!("{stem}.png")
                        };
                        if let Err(e) = crate::annotate::write_annotated(&done, &dir.join(name)) {
                            PipelineMetrics::add(&outputs.annotations_errors, 1);
                            if let Some(held_back) = annotate_log.due(std::time::Instant::now()) {
                                tracing::error!(
                                    "{e:#}; the next frame tries again ({held_back} errors since the last message)"
                                );
                            }
                        }
                    }
                });
                (uri, run)
            }));
        }
        for h in handles {
            match h.join() {
                Ok(r) => runs.push(r),
                Err(_) => bail!("a pipeline thread panicked"),
            }
        }
        Ok(())
    })?;
    if let Some(batcher) = &batcher {
        let stats = batcher.stats();
        tracing::info!(
            "classify batching: {} batches of {:.2} calls on average ({} merged), {:.1} ms waited",
            stats.batches,
            stats.requests_per_batch(),
            stats.merged_batches,
            stats.waited_ms
        );
    }
    if let Some(server) = server {
        server.stop();
    }
    let mut sink = sink
        .into_inner()
        .map_err(|_| anyhow::anyhow!("events sink poisoned"))?;
    sink.flush();
    let summaries: Vec<Summary> = runs
        .iter()
        .zip(&metrics)
        .map(|((uri, run), m)| {
            Summary::new(
                uri,
                &config.strategy,
                run,
                m,
                models.glance.mflops(),
                sink.written(),
            )
            .with_events_error(sink.failure())
        })
        .collect();
    for s in &summaries {
        eprint!("{}", s.human());
    }
    if let Some(mqtt) = mqtt {
        let (published, dropped) = mqtt.finish();
        eprintln!(
            "  mqtt: {published} messages published, {dropped} dropped, {} reconnects",
            PipelineMetrics::get(&outputs.mqtt_reconnects)
        );
    }
    if snapshots.is_some() {
        eprintln!(
            "  snapshots: {} written, {} failed",
            PipelineMetrics::get(&outputs.snapshots_written),
            PipelineMetrics::get(&outputs.snapshots_errors)
        );
    }
    let annotations_lost = PipelineMetrics::get(&outputs.annotations_errors);
    if annotations_lost > 0 {
        eprintln!("  {annotations_lost} annotated frames not written (see the errors above)");
    }
    if let Some(path) = json {
        let text = if summaries.len() == 1 {
            serde_json::to_string_pretty(&summaries[0])?
        } else {
            serde_json::to_string_pretty(&summaries)?
        };
        if path == "-" {
            println!("{text}");
        } else {
            crate::output::write_whole_file(std::path::Path::new(path), (text + "\n").as_bytes())
                .with_context(|| format!("writing summary JSON to {path}"))?;
        }
    }
    if sink.not_written() > 0 {
        bail!(
            "{} events not written ({})",
            sink.not_written(),
            sink.failure().unwrap_or_else(|| "unknown error".into())
        );
    }
    Ok(summaries)
}

/// SIGINT/SIGTERM: the first stops capture and lets the queues drain; a second exits at once.
pub fn install_signal_handlers() -> anyhow::Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        // Registered first, so it sees the flag as it was before this signal: exits on the second one.
        signal_hook::flag::register_conditional_shutdown(signal, 130, stop.clone())
            .context("installing signal handlers")?;
        signal_hook::flag::register(signal, stop.clone()).context("installing signal handlers")?;
    }
    Ok(stop)
}

#[derive(Debug, Clone, clap::Args)]
pub struct QuantizeArgs {
    /// Float model (safetensors).
    #[arg(long)]
    pub input: PathBuf,
    /// Output GGUF file.
    #[arg(long)]
    pub output: PathBuf,
    /// q8_0, q4_0, q4k, f16 or f32.
    #[arg(long, default_value = "q8_0")]
    pub dtype: String,
}

pub fn quantize(args: QuantizeArgs) -> anyhow::Result<()> {
    let dtype: saccade_models::weights::QuantDtype = args
        .dtype
        .parse()
        .map_err(|e| anyhow::anyhow!("--dtype: {e}"))?;
    let report = saccade_models::weights::quantize_file(&args.input, &args.output, dtype)?;
    println!("{report}");
    Ok(())
}

#[derive(Debug, Clone, clap::Args)]
pub struct InspectArgs {
    /// A safetensors or GGUF weight file.
    pub file: PathBuf,
}

pub fn inspect(args: InspectArgs) -> anyhow::Result<()> {
    let inspection = saccade_models::weights::inspect_file(&args.file)?;
    println!("{inspection}");
    Ok(())
}

#[derive(Debug, Clone, clap::Args)]
pub struct SynthArgs {
    /// Output folder (frames NNNN.jpg and annotations.csv).
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value_t = 16)]
    pub count: u64,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    #[arg(long, default_value_t = 1280)]
    pub width: u32,
    #[arg(long, default_value_t = 960)]
    pub height: u32,
}

pub fn synth(args: SynthArgs) -> anyhow::Result<()> {
    use saccade_runtime::synth::{SceneConfig, SceneGenerator};
    let generator = SceneGenerator::new(SceneConfig {
        width: args.width,
        height: args.height,
        ..SceneConfig::default()
    })?;
    generator.write_annotated_set(&args.out, args.count, args.seed)?;
    println!("wrote {} frames to {}", args.count, args.out.display());
    Ok(())
}
