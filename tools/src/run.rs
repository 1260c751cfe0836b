//! `saccade demo`, `saccade run` and the small file commands (`quantize`, `inspect`, `synth`).

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::{bail, Context};
use saccade_runtime::capture::uri::open_source;
use saccade_runtime::capture::QueuePolicy;
use saccade_runtime::events::{EventSink, EventTarget, FrameEvent};
use saccade_runtime::focus::StrategyConfigs;
use saccade_runtime::metrics::PipelineMetrics;
use saccade_runtime::pipeline::{run_pipeline, PipelineOptions};

use crate::engine::{self, ModelArgs, StrategyArgs};
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
    #[command(flatten)]
    pub strategy: StrategyArgs,
    #[command(flatten)]
    pub models: ModelArgs,
}

#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// Source URI: v4l:///dev/video0?width=1280&height=960&fps=30&format=yuyv|mjpeg, dir://PATH[?fps=N&loop=true],
    /// synthetic://?width=1280&height=960&seed=1[&frames=N].
    #[arg(long)]
    pub source: String,
    /// JSON-lines events: a path, or `-` for stdout.
    #[arg(long)]
    pub events: Option<String>,
    /// Write annotated PNGs (heat map, patches, detections) into this folder.
    #[arg(long)]
    pub annotate: Option<PathBuf>,
    /// Write the summary as JSON to this path (`-` for stdout).
    #[arg(long)]
    pub json: Option<String>,
    /// Queue policy: latest (drop the oldest when behind) or lossless (block); default by source kind.
    #[arg(long)]
    pub policy: Option<String>,
    /// Capacity of each queue between stages.
    #[arg(long, default_value_t = 2)]
    pub queue_depth: usize,
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
    let run_args = RunArgs {
        source: format!("dir://{}", samples.display()),
        events: Some(args.out.join("events.jsonl").display().to_string()),
        annotate: Some(args.out.clone()),
        json: args.json,
        policy: Some("lossless".into()),
        queue_depth: 2,
        strategy: args.strategy,
        models: args.models,
    };
    let summary = execute(&run_args)?;
    println!(
        "annotated frames and events.jsonl written to {}",
        args.out.display()
    );
    if summary.frames == 0 {
        bail!("the demo processed no frames from {}", samples.display());
    }
    Ok(())
}

pub fn run(args: RunArgs) -> anyhow::Result<()> {
    execute(&args).map(|_| ())
}

fn parse_policy(s: &str) -> anyhow::Result<QueuePolicy> {
    match s {
        "latest" => Ok(QueuePolicy::Latest),
        "lossless" => Ok(QueuePolicy::Lossless),
        other => bail!("--policy `{other}`: expected `latest` or `lossless`"),
    }
}

/// Open the source, run the pipeline until it ends or a signal stops it, print and return the summary.
pub fn execute(args: &RunArgs) -> anyhow::Result<Summary> {
    let source = open_source(&args.source).with_context(|| format!("opening {}", args.source))?;
    let policy = match &args.policy {
        Some(p) => parse_policy(p)?,
        None => source.default_policy(),
    };
    let models = engine::load_models(&args.models)?;
    let configs = StrategyConfigs::default();
    let processor = engine::build_processor(&models, &args.strategy, &configs)?;
    let target = match args.events.as_deref() {
        None => EventTarget::Discard,
        Some("-") => EventTarget::Stdout,
        Some(path) => EventTarget::File(PathBuf::from(path)),
    };
    let mut sink = EventSink::open(&target).context("opening the events output")?;
    if let Some(dir) = &args.annotate {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating annotation folder {}", dir.display()))?;
    }
    let stop = install_signal_handlers()?;
    let metrics = Arc::new(PipelineMetrics::default());
    let options = PipelineOptions {
        queue_depth: args.queue_depth,
        policy,
        budget: args.strategy.budget(),
    };
    let source_uri = args.source.clone();
    let strategy = args.strategy.strategy.clone();
    let annotate = args.annotate.clone();
    let mut annotate_failed = false;
    let run = run_pipeline(source, processor, options, metrics.clone(), stop, |done| {
        let event = FrameEvent::new(
            &source_uri,
            &strategy,
            &done.frame,
            &done.outcome,
            done.latency_ms,
        );
        sink.write(&event);
        if let (Some(dir), false) = (&annotate, annotate_failed) {
            let name = match &done.frame.file {
                Some(file) => format!(
                    "{}.png",
                    file.rsplit_once('.').map_or(file.as_str(), |(s, _)| s)
                ),
                None => format!("{:06}.png", done.frame.index),
            };
            if let Err(e) = crate::annotate::write_annotated(&done, &dir.join(name)) {
                tracing::error!("{e:#}; no more annotated frames are written");
                annotate_failed = true;
            }
        }
    });
    sink.flush();
    let summary = Summary::new(
        &args.source,
        &args.strategy.strategy,
        &run,
        &metrics,
        models.glance.mflops(),
        sink.written(),
    );
    eprint!("{}", summary.human());
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&summary)?;
        if path == "-" {
            println!("{text}");
        } else {
            std::fs::write(path, text + "\n")
                .with_context(|| format!("writing summary JSON to {path}"))?;
        }
    }
    if let Some(err) = sink.failure() {
        bail!("events output failed: {err}");
    }
    Ok(summary)
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
    pub count: usize,
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
    generator.write_annotated_set(&args.out, args.count as u64, args.seed)?;
    println!("wrote {} frames to {}", args.count, args.out.display());
    Ok(())
}
