//! `saccade bench`: its flags and what it does with them (print the report, write the JSON and the plot,
//! hold the run to its memory budget). The bench itself is [`crate::bench`].

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::bench::{run_bench, write_plot};
use crate::engine::ModelArgs;
use crate::eval::{write_json, EvalSplit};
use saccade_runtime::focus::StrategyKind;

/// Where the bench writes its JSON and SVG unless told otherwise.
const DEFAULT_JSON: &str = "saccade-bench/bench.json";
const DEFAULT_PLOT: &str = "saccade-bench/bench.svg";

/// Default `--memory-budget-mb` of the bench.
#[cfg(not(feature = "cuda"))]
const DEFAULT_BENCH_BUDGET_MB: f64 = 512.0;
#[cfg(feature = "cuda")]
const DEFAULT_BENCH_BUDGET_MB: f64 = 1024.0;

#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// At most this many frames per strategy (default: every frame of the folder; 20 with --synthetic).
    #[arg(long)]
    pub frames: Option<usize>,
    /// Frames the slow `fullres` baseline runs on: the first M (default: all the frames the others see).
    #[arg(long)]
    pub fullres_frames: Option<usize>,
    /// Write the results as JSON to this path (`-` for stdout).
    #[arg(long, default_value = DEFAULT_JSON)]
    pub json: Option<String>,
    /// Write an SVG: F1 (95 % interval bars) vs p50 latency, Pareto front marked, and per-stage latency bars.
    #[arg(long, default_value = DEFAULT_PLOT)]
    pub plot: Option<PathBuf>,
    /// Annotated folder of frames (default: the real GTSDB test frames in benches/gtsdb-test/).
    #[arg(long, requires = "annotations")]
    pub images: Option<PathBuf>,
    /// Annotations CSV of --images.
    #[arg(long, requires = "images")]
    pub annotations: Option<PathBuf>,
    /// Keep only these GTSDB frames of --images (`test` on a full copy of the benchmark).
    #[arg(long, value_enum, default_value_t = EvalSplit::All)]
    pub split: EvalSplit,
    /// Held-out synthetic 1280×960 scenes instead of real frames.
    #[arg(long, conflicts_with_all = ["images", "annotations"])]
    pub synthetic: bool,
    /// Comma-separated focus strategies to run (default: all); the baselines always run.
    #[arg(long, value_delimiter = ',')]
    pub strategies: Vec<StrategyKind>,
    /// Hard limit of patches per frame.
    #[arg(long, default_value_t = crate::config::DEFAULT_MAX_PATCHES)]
    pub max_patches: usize,
    /// Per-frame deadline in ms.
    #[arg(long)]
    pub deadline_ms: Option<f64>,
    /// Queue depth of the pipelined throughput run.
    #[arg(long, default_value_t = 2)]
    pub queue_depth: usize,
    /// Also run N pipelines of `topk` at once on the same frames, sharing one model and (N > 1) one batching
    /// classifier; reports aggregate fps, per-source p50/p99 and the ratio to one source.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=256))]
    pub sources: u64,
    /// With --sources N > 1: how long classify waits for the other sources' patches, ms.
    #[arg(long, default_value_t = 1.0)]
    pub batch_wait_ms: f64,
    /// Threads one op may split over (default: cores / sources; see docs/THREADS.md).
    #[arg(long)]
    pub intra_op_threads: Option<usize>,
    /// With --sources N > 1: shared classify workers (default: the layout's; see docs/THREADS.md).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=256))]
    pub classify_workers: Option<u64>,
    /// Memory budget of the run in MiB: the memory plan (models, pipeline buffers, the frames the bench
    /// holds) must fit at start, and the peak RSS at the end; the bench fails when either does not.
    /// The default fits the `fullres` baseline's 256-window batches, whose activations the plan counts at
    /// their im2col worst case. A `cuda` build's default is 1024: the CUDA libraries alone add about
    /// 350 MiB to the process (measured on an H100).
    #[arg(long, default_value_t = DEFAULT_BENCH_BUDGET_MB)]
    pub memory_budget_mb: f64,
    #[command(flatten)]
    pub models: ModelArgs,
}

impl BenchArgs {
    /// The bench's defaults with these models (what `saccade bench` with no flags does, minus the files).
    pub fn with_models(models: ModelArgs) -> Self {
        Self {
            frames: None,
            fullres_frames: None,
            json: None,
            plot: None,
            images: None,
            annotations: None,
            split: EvalSplit::All,
            synthetic: false,
            strategies: Vec::new(),
            max_patches: crate::config::DEFAULT_MAX_PATCHES,
            deadline_ms: None,
            queue_depth: 2,
            sources: 1,
            batch_wait_ms: 1.0,
            intra_op_threads: None,
            classify_workers: None,
            memory_budget_mb: DEFAULT_BENCH_BUDGET_MB,
            models,
        }
    }
}

pub fn bench(args: BenchArgs) -> anyhow::Result<()> {
    let report = run_bench(&args)?;
    print!("{}", report.human());
    let make_parent = |path: &Path| -> anyhow::Result<()> {
        match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => {
                std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))
            }
            _ => Ok(()),
        }
    };
    if let Some(path) = &args.json {
        if path != "-" {
            make_parent(Path::new(path))?;
        }
        write_json(&report, path)?;
        if path != "-" {
            eprintln!("bench: JSON written to {path}");
        }
    }
    if let Some(path) = &args.plot {
        make_parent(path)?;
        write_plot(&report, path)?;
        eprintln!("bench: plot written to {}", path.display());
    }
    anyhow::ensure!(
        report.memory.peak_within_budget,
        "peak RSS {:.1} MiB exceeded --memory-budget-mb {} (the plan counted {:.1} MiB)",
        report.memory.peak_rss_mb,
        report.memory.budget_mb,
        report.memory.plan_mb
    );
    Ok(())
}
