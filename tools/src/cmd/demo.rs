//! `saccade demo`: the whole pipeline on the sample frames that ship with saccade.

use std::path::PathBuf;

use anyhow::{bail, Context};
use saccade_runtime::capture::QueuePolicy;

use crate::cmd::run::apply_model_args;
use crate::config::{Config, SourceConfig};
use crate::engine::{self, ModelArgs, StrategyArgs};
use crate::run::execute;

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
        strategy: args.strategy.strategy,
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
            policy: Some(QueuePolicy::Latest),
        }];
        config.http.addr = Some(args.http_addr.clone());
    } else {
        config.sources = vec![SourceConfig {
            uri,
            policy: Some(QueuePolicy::Lossless),
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
