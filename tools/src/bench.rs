//! `saccade bench`: every focus strategy on the same frames, with the ratios against the full-resolution
//! baseline measured in the same run, then Q8_0 vs f32 backbone and single-threaded vs pipelined throughput.
//!
//! Frames are held-out synthetic 1280×960 scenes (Eval split, fixed seeds, generated once in memory) or an
//! annotated folder. The full-resolution baseline costs seconds per frame on the reference machine, so it runs
//! on a prefix of the frames only (`--fullres-frames`) and its F1 is compared with the other strategies' F1 on
//! that same prefix. Each strategy's number comes from [`crate::eval::evaluate`], so `bench` and `eval` agree.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use saccade_runtime::budget::{mib, rss_bytes};
use saccade_runtime::capture::{Capture, FrameSource, QueuePolicy};
use saccade_runtime::focus::{StrategyConfigs, STRATEGY_NAMES};
use saccade_runtime::frame::Frame;
use saccade_runtime::metrics::PipelineMetrics;
use saccade_runtime::pipeline::{run_pipeline, PipelineOptions};
use saccade_runtime::synth::{SceneConfig, SceneGenerator};

use crate::engine::{self, ModelArgs, Models, StrategyArgs};
use crate::eval::{
    evaluate, items_from_folder, parse_annotations, truth_from_boxes, write_json, EvalItem,
    EvalReport, FrameData,
};
use crate::matching::Counts;
use crate::summary::round3;

/// The baseline every ratio is measured against.
const BASELINE: &str = "fullres";
/// First seed of the benchmark's synthetic scenes (Eval split), fixed so runs compare.
const FIRST_SEED: u64 = 9_000_001;

/// Default `--memory-budget-mb` of the bench.
#[cfg(not(feature = "cuda"))]
const DEFAULT_BENCH_BUDGET_MB: f64 = 512.0;
#[cfg(feature = "cuda")]
const DEFAULT_BENCH_BUDGET_MB: f64 = 1024.0;

#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Number of frames every strategy (except fullres) runs on.
    #[arg(long, default_value_t = 20)]
    pub frames: usize,
    /// Frames the slow `fullres` baseline runs on (the first M; default min(frames, 5)).
    #[arg(long)]
    pub fullres_frames: Option<usize>,
    /// Write the results as JSON to this path (`-` for stdout).
    #[arg(long)]
    pub json: Option<String>,
    /// Write an SVG: F1 vs p50 latency (Pareto front marked) and per-stage latency bars.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// Use this folder of frames instead of synthetic scenes (needs --annotations).
    #[arg(long, requires = "annotations")]
    pub images: Option<PathBuf>,
    /// Annotations CSV of --images.
    #[arg(long, requires = "images")]
    pub annotations: Option<PathBuf>,
    /// Comma-separated strategies to run (default: all; fullres is always run as the baseline).
    #[arg(long, value_delimiter = ',')]
    pub strategies: Vec<String>,
    /// Hard limit of patches per frame.
    #[arg(long, default_value_t = 8)]
    pub max_patches: usize,
    /// Per-frame deadline in ms.
    #[arg(long)]
    pub deadline_ms: Option<f64>,
    /// Queue depth of the pipelined throughput run.
    #[arg(long, default_value_t = 2)]
    pub queue_depth: usize,
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

/// One strategy against the baseline, on the frames both ran on.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RatioVsBaseline {
    /// `fullres` p50 latency / this strategy's p50 latency.
    pub p50_speedup: f64,
    /// This strategy's MFLOPs per frame / `fullres`'s.
    pub mflops_ratio: f64,
    /// This strategy's F1 − `fullres`'s F1, both on the first `frames_compared` frames.
    pub f1_diff: f64,
    pub frames_compared: usize,
}

/// Q8_0 vs f32 weights for `topk`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DtypeRun {
    pub weights: String,
    pub p50_ms: f64,
    pub classify_p50_ms: f64,
    pub f1: f64,
    pub class_accuracy: Option<f64>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Throughput {
    pub strategy: String,
    pub frames: usize,
    pub single_threaded_fps: f64,
    pub pipelined_fps: f64,
    pub queue_depth: usize,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Machine {
    pub cpu: String,
    pub logical_cpus: usize,
    pub arch: &'static str,
    pub os: &'static str,
    pub rayon_num_threads: Option<String>,
    pub classifier: String,
    pub glance: String,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct BenchReport {
    pub frames_source: String,
    pub frames: usize,
    pub fullres_frames: usize,
    pub strategies: Vec<EvalReport>,
    pub ratios_vs_fullres: BTreeMap<String, RatioVsBaseline>,
    /// `f32`, `q8_0` (each a [`DtypeRun`] or `{"skipped": reason}`) and `classify_speedup_q8_0_vs_f32`.
    pub dtype_comparison: BTreeMap<String, serde_json::Value>,
    pub throughput: Option<Throughput>,
    pub peak_rss_mb: f64,
    pub memory: BenchMemory,
    pub machine: Machine,
}

/// The run's memory against its budget (MiB).
#[derive(Debug, Clone, serde::Serialize)]
pub struct BenchMemory {
    pub budget_mb: f64,
    /// What the memory plan counted at start.
    pub plan_mb: f64,
    /// Peak resident memory of the whole run.
    pub peak_rss_mb: f64,
    pub peak_within_budget: bool,
}

/// A lossless in-memory source: replays frames, restarting each capture clock as it hands a frame out.
pub struct VecSource {
    frames: std::vec::IntoIter<Frame>,
    uri: String,
}

impl VecSource {
    pub fn new(frames: Vec<Frame>) -> Self {
        Self {
            uri: format!("memory://{}-frames", frames.len()),
            frames: frames.into_iter(),
        }
    }
}

impl FrameSource for VecSource {
    fn next_frame(&mut self) -> Capture {
        match self.frames.next() {
            Some(mut frame) => {
                frame.captured_at = Instant::now();
                Capture::Frame(frame)
            }
            None => Capture::End,
        }
    }
    fn uri(&self) -> &str {
        &self.uri
    }
    fn default_policy(&self) -> QueuePolicy {
        QueuePolicy::Lossless
    }
}

/// The benchmark's synthetic frames: `count` held-out scenes from fixed seeds.
pub fn synthetic_items(count: usize) -> anyhow::Result<Vec<EvalItem>> {
    let generator = SceneGenerator::new(SceneConfig::default())
        .context("building the synthetic scene generator")?;
    Ok((0..count as u64)
        .map(|i| {
            let seed = FIRST_SEED + i;
            let scene = generator.generate(seed);
            EvalItem {
                name: format!("synthetic-eval-{seed}"),
                expected_size_px: None,
                truth: truth_from_boxes(&scene.truth),
                source: FrameData::Rgb {
                    width: scene.width,
                    height: scene.height,
                    rgb: scene.rgb,
                },
            }
        })
        .collect())
}

fn decode_all(items: &[EvalItem]) -> anyhow::Result<Vec<Frame>> {
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let (w, h, rgb) = match &item.source {
                FrameData::Rgb { width, height, rgb } => (*width, *height, rgb.clone()),
                FrameData::File(path) => {
                    let image = image::open(path)
                        .with_context(|| format!("decoding {}", path.display()))?
                        .into_rgb8();
                    let (w, h) = image.dimensions();
                    (w, h, image.into_raw())
                }
            };
            Frame::from_rgb(i as u64, w, h, rgb).with_context(|| format!("frame {}", item.name))
        })
        .collect()
}

fn strategy_args(args: &BenchArgs, name: &str) -> StrategyArgs {
    StrategyArgs {
        strategy: name.to_string(),
        max_patches: args.max_patches,
        deadline_ms: args.deadline_ms,
    }
}

/// Runs `strategy` on `items`, after one untimed warm-up frame (first calls allocate) unless it is the slow
/// baseline.
fn run_strategy(
    models: &Models,
    args: &BenchArgs,
    name: &str,
    items: &[EvalItem],
) -> anyhow::Result<crate::eval::Evaluation> {
    let mut processor = engine::build_processor(
        models,
        &strategy_args(args, name),
        &StrategyConfigs::default(),
    )?;
    if name != BASELINE {
        if let Some(first) = decode_all(&items[..items.len().min(1)])?.pop() {
            processor
                .process(first, &PipelineMetrics::default())
                .map_err(|e| anyhow::anyhow!("warm-up of {name}: {e}"))?;
        }
    }
    evaluate(&mut processor, name, items, &HashSet::new())
        .with_context(|| format!("strategy {name}"))
}

fn prefix_counts(tallies: &[crate::matching::Tally], n: usize) -> Counts {
    let mut c = Counts::default();
    for t in tallies.iter().take(n) {
        c.add(&t.overall);
    }
    c
}

fn dtype_run(
    models_args: &ModelArgs,
    args: &BenchArgs,
    dtype: &str,
    items: &[EvalItem],
) -> serde_json::Value {
    let mut m = models_args.clone();
    m.dtype = dtype.to_string();
    m.classifier_weights = None;
    let weights = m.classifier_path();
    let result = (|| -> anyhow::Result<DtypeRun> {
        let models = engine::load_models(&m)?;
        let evaluation = run_strategy(&models, args, "topk", items)?;
        let r = &evaluation.report;
        Ok(DtypeRun {
            weights: weights.display().to_string(),
            p50_ms: r.p50_ms,
            classify_p50_ms: r.stages.get("classify").map_or(0.0, |s| s.p50_ms),
            f1: r.f1,
            class_accuracy: r.class_accuracy,
        })
    })();
    match result {
        Ok(run) => serde_json::to_value(run).unwrap_or(serde_json::Value::Null),
        Err(e) => serde_json::json!({ "skipped": format!("{e:#}") }),
    }
}

fn throughput(models: &Models, args: &BenchArgs, items: &[EvalItem]) -> anyhow::Result<Throughput> {
    let name = "topk";
    let frames = decode_all(items)?;
    let mut processor = engine::build_processor(
        models,
        &strategy_args(args, name),
        &StrategyConfigs::default(),
    )?;
    let metrics = PipelineMetrics::default();
    if let Some(first) = frames.first() {
        processor
            .process(first.clone(), &metrics)
            .map_err(|e| anyhow::anyhow!("warm-up: {e}"))?;
    }
    let started = Instant::now();
    for frame in &frames {
        let mut frame = frame.clone();
        frame.captured_at = Instant::now();
        processor
            .process(frame, &metrics)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    let single_s = started.elapsed().as_secs_f64();
    let processor = engine::build_processor(
        models,
        &strategy_args(args, name),
        &StrategyConfigs::default(),
    )?;
    let options = PipelineOptions {
        queue_depth: args.queue_depth,
        policy: QueuePolicy::Lossless,
        budget: strategy_args(args, name).budget(),
    };
    let n = frames.len();
    let summary = run_pipeline(
        Box::new(VecSource::new(frames)),
        processor,
        options,
        Arc::new(PipelineMetrics::default()),
        Arc::new(AtomicBool::new(false)),
        |_| {},
    );
    Ok(Throughput {
        strategy: name.to_string(),
        frames: n,
        single_threaded_fps: round3(if single_s > 0.0 {
            n as f64 / single_s
        } else {
            0.0
        }),
        pipelined_fps: round3(summary.fps),
        queue_depth: args.queue_depth,
    })
}

fn machine(models: &Models) -> Machine {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".to_string());
    Machine {
        cpu,
        logical_cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
        arch: std::env::consts::ARCH,
        os: std::env::consts::OS,
        rayon_num_threads: std::env::var("RAYON_NUM_THREADS").ok(),
        classifier: models.classifier.describe(),
        glance: models.glance.describe(),
    }
}

/// Runs the whole benchmark and returns its report (printing progress to stderr).
pub fn run_bench(args: &BenchArgs) -> anyhow::Result<BenchReport> {
    anyhow::ensure!(args.frames > 0, "--frames is 0, expected at least 1");
    let (source, mut items) = match (&args.images, &args.annotations) {
        (Some(images), Some(annotations)) => {
            let text = std::fs::read_to_string(annotations)
                .with_context(|| format!("reading annotations {}", annotations.display()))?;
            let rows = parse_annotations(&text, annotations)?;
            (
                format!("{} ({})", images.display(), annotations.display()),
                items_from_folder(images, &rows)?,
            )
        }
        _ => (
            format!(
                "synthetic 1280×960 eval scenes, seeds {FIRST_SEED}..{}",
                FIRST_SEED + args.frames as u64
            ),
            synthetic_items(args.frames)?,
        ),
    };
    items.truncate(args.frames);
    let n = items.len();
    let fullres_n = args.fullres_frames.unwrap_or(5).min(n).max(1);
    let models = engine::load_models(&args.models)?;
    let plan = bench_memory_plan(&models, args, &items);
    eprintln!("{plan}");
    plan.check(args.memory_budget_mb)
        .context("the bench does not fit --memory-budget-mb")?;
    let wanted: Vec<&str> = if args.strategies.is_empty() {
        STRATEGY_NAMES.to_vec()
    } else {
        STRATEGY_NAMES
            .iter()
            .copied()
            .filter(|s| *s == BASELINE || args.strategies.iter().any(|w| w == s))
            .collect()
    };
    for w in &args.strategies {
        anyhow::ensure!(
            STRATEGY_NAMES.contains(&w.as_str()),
            "--strategies `{w}`: expected one of {}",
            STRATEGY_NAMES.join(", ")
        );
    }
    let mut evaluations = Vec::new();
    for name in &wanted {
        let frames = if *name == BASELINE { fullres_n } else { n };
        eprintln!("bench: {name} on {frames} frames ...");
        evaluations.push(run_strategy(&models, args, name, &items[..frames])?);
    }
    let baseline = evaluations
        .iter()
        .find(|e| e.report.strategy == BASELINE)
        .context("the fullres baseline did not run")?;
    let mut ratios = BTreeMap::new();
    for e in &evaluations {
        if e.report.strategy == BASELINE {
            continue;
        }
        let b = &baseline.report;
        let f1_here = prefix_counts(&e.frame_tallies, fullres_n).f1();
        let f1_base = prefix_counts(&baseline.frame_tallies, fullres_n).f1();
        ratios.insert(
            e.report.strategy.clone(),
            RatioVsBaseline {
                p50_speedup: round3(if e.report.p50_ms > 0.0 {
                    b.p50_ms / e.report.p50_ms
                } else {
                    0.0
                }),
                mflops_ratio: round3(if b.mflops_per_frame > 0.0 {
                    e.report.mflops_per_frame / b.mflops_per_frame
                } else {
                    0.0
                }),
                f1_diff: round3(f1_here - f1_base),
                frames_compared: fullres_n,
            },
        );
    }
    eprintln!("bench: topk with f32 and q8_0 classifier weights ...");
    let mut dtype_comparison = BTreeMap::new();
    for dtype in ["f32", "q8_0"] {
        dtype_comparison.insert(
            dtype.to_string(),
            dtype_run(&args.models, args, dtype, &items),
        );
    }
    let classify = |k: &str| {
        dtype_comparison
            .get(k)
            .and_then(|v| v.get("classify_p50_ms"))
            .and_then(serde_json::Value::as_f64)
    };
    if let (Some(f32_ms), Some(q8_ms)) = (classify("f32"), classify("q8_0")) {
        if q8_ms > 0.0 {
            dtype_comparison.insert(
                "classify_speedup_q8_0_vs_f32".to_string(),
                serde_json::json!(round3(f32_ms / q8_ms)),
            );
        }
    }
    eprintln!("bench: topk single-threaded vs pipelined ...");
    let throughput = if wanted.contains(&"topk") {
        Some(throughput(&models, args, &items)?)
    } else {
        None
    };
    let peak_rss_mb = rss_bytes().map_or(0.0, |(_, peak)| mib(peak));
    Ok(BenchReport {
        frames_source: source,
        frames: n,
        fullres_frames: fullres_n,
        strategies: evaluations.into_iter().map(|e| e.report).collect(),
        ratios_vs_fullres: ratios,
        dtype_comparison,
        throughput,
        peak_rss_mb: round3(peak_rss_mb),
        memory: BenchMemory {
            budget_mb: args.memory_budget_mb,
            plan_mb: round3(mib(plan.total_bytes())),
            peak_rss_mb: round3(peak_rss_mb),
            peak_within_budget: peak_rss_mb <= args.memory_budget_mb,
        },
        machine: machine(&models),
    })
}

/// The plan of the largest configuration the bench runs (the `fullres` baseline's 256-window batches, one
/// pipeline), plus the frames it holds for every strategy to see the same ones.
fn bench_memory_plan(
    models: &Models,
    args: &BenchArgs,
    items: &[EvalItem],
) -> saccade_runtime::budget::MemoryPlan {
    let config = crate::config::Config {
        strategy: BASELINE.to_string(),
        max_patches: args.max_patches,
        queue_depth: args.queue_depth,
        ..crate::config::Config::default()
    };
    let mut plan = engine::memory_plan(models, &args.models, &config, &[(1280, 960)]);
    let held: u64 = items.iter().map(EvalItem::bytes_held).sum();
    plan.items.push(saccade_runtime::budget::BudgetItem {
        name: "bench frames",
        bytes: held,
        lower: "--frames",
    });
    plan
}

impl BenchReport {
    pub fn human(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "saccade bench: {} frames: {}",
            self.frames, self.frames_source
        );
        let _ = writeln!(
            s,
            "ratios vs fullres (measured in this run; fullres ran on the first {} of {} frames, F1 compared on those {}):",
            self.fullres_frames, self.frames, self.fullres_frames
        );
        let _ = writeln!(
            s,
            "  {:<12} {:>12} {:>13} {:>8}",
            "strategy", "p50 speed-up", "MFLOPs ratio", "ΔF1"
        );
        for (name, r) in &self.ratios_vs_fullres {
            let _ = writeln!(
                s,
                "  {name:<12} {:>11.1}× {:>13.4} {:>+8.3}",
                r.p50_speedup, r.mflops_ratio, r.f1_diff
            );
        }
        let _ = writeln!(
            s,
            "  {:<12} {:>6} {:>6} {:>6} {:>6} {:>7} {:>9} {:>9} {:>8} {:>9} {:>9} {:>6} {:>7}",
            "strategy",
            "frames",
            "prec",
            "recall",
            "F1",
            "cls acc",
            "p50 ms",
            "p99 ms",
            "patches",
            "px frac",
            "MFLOPs",
            "exit",
            "RSS MB"
        );
        for r in &self.strategies {
            let _ = writeln!(
                s,
                "  {:<12} {:>6} {:>6.3} {:>6.3} {:>6.3} {:>7} {:>9.2} {:>9.2} {:>8.2} {:>9.4} {:>9.1} {:>6.2} {:>7.0}",
                r.strategy,
                r.frames,
                r.precision,
                r.recall,
                r.f1,
                r.class_accuracy.map_or("-".to_string(), |a| format!("{a:.3}")),
                r.p50_ms,
                r.p99_ms,
                r.patches_per_frame,
                r.pixel_fraction,
                r.mflops_per_frame,
                r.early_exit_rate,
                r.peak_rss_mb
            );
        }
        let _ = writeln!(s, "topk backbone weights:");
        for dtype in ["f32", "q8_0"] {
            if let Some(v) = self.dtype_comparison.get(dtype) {
                match v.get("skipped") {
                    Some(reason) => {
                        let _ =
                            writeln!(s, "  {dtype:<5} skipped: {}", reason.as_str().unwrap_or(""));
                    }
                    None => {
                        let f =
                            |k: &str| v.get(k).and_then(serde_json::Value::as_f64).unwrap_or(0.0);
                        let _ = writeln!(
                            s,
                            "  {dtype:<5} p50 {:.2} ms/frame, classify p50 {:.2} ms, F1 {:.3}",
                            f("p50_ms"),
                            f("classify_p50_ms"),
                            f("f1")
                        );
                    }
                }
            }
        }
        if let Some(x) = self.dtype_comparison.get("classify_speedup_q8_0_vs_f32") {
            let _ = writeln!(s, "  classify speed-up of q8_0 over f32: {x}×");
        }
        if let Some(t) = &self.throughput {
            let _ = writeln!(
                s,
                "throughput of {} on {} frames: single-threaded {:.2} fps, pipelined {:.2} fps (queue depth {})",
                t.strategy, t.frames, t.single_threaded_fps, t.pipelined_fps, t.queue_depth
            );
        }
        let _ = writeln!(
            s,
            "memory: plan {:.0} MiB, peak RSS {:.0} MiB, budget {:.0} MiB: {}",
            self.memory.plan_mb,
            self.memory.peak_rss_mb,
            self.memory.budget_mb,
            if self.memory.peak_within_budget {
                "within"
            } else {
                "OVER"
            }
        );
        let _ = writeln!(
            s,
            "{} ({} logical CPUs)",
            self.machine.cpu, self.machine.logical_cpus
        );
        s
    }
}

/// Indices of the strategies no other beats on both latency (lower) and F1 (higher), by latency.
pub fn pareto_front(points: &[(f64, f64)]) -> Vec<usize> {
    let mut front: Vec<usize> = (0..points.len())
        .filter(|&i| {
            let (li, fi) = points[i];
            !points
                .iter()
                .enumerate()
                .any(|(j, &(lj, fj))| j != i && lj <= li && fj >= fi && (lj < li || fj > fi))
        })
        .collect();
    front.sort_by(|&a, &b| points[a].0.total_cmp(&points[b].0));
    front
}

/// F1 vs p50 latency (log x) with the Pareto front, and per-stage p50 latency bars, side by side in one SVG.
pub fn write_plot(report: &BenchReport, path: &Path) -> anyhow::Result<()> {
    use plotters::prelude::*;
    let draw = || -> Result<(), Box<dyn std::error::Error>> {
        let root = SVGBackend::new(path, (1200, 500)).into_drawing_area();
        root.fill(&WHITE)?;
        let (left, right) = root.split_horizontally(600);
        let points: Vec<(f64, f64)> = report
            .strategies
            .iter()
            .map(|r| (r.p50_ms.max(0.001), r.f1))
            .collect();
        let lo = points.iter().map(|p| p.0).fold(f64::INFINITY, f64::min) / 2.0;
        let hi = points.iter().map(|p| p.0).fold(0.0, f64::max) * 2.0;
        let mut chart = ChartBuilder::on(&left)
            .caption("F1 vs p50 latency per frame", ("sans-serif", 20))
            .margin(15)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d((lo.max(0.001)..hi.max(0.01)).log_scale(), 0.0..1.05)?;
        chart
            .configure_mesh()
            .x_desc("p50 latency (ms, log)")
            .y_desc("F1")
            .draw()?;
        let front = pareto_front(&points);
        chart
            .draw_series(LineSeries::new(
                front.iter().map(|&i| points[i]),
                RED.stroke_width(2),
            ))?
            .label("Pareto front")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
        chart.draw_series(report.strategies.iter().zip(&points).enumerate().map(
            |(i, (r, &p))| {
                let colour = if front.contains(&i) { RED } else { BLUE };
                EmptyElement::at(p)
                    + Circle::new((0, 0), 5, colour.filled())
                    + Text::new(r.strategy.clone(), (8, -12), ("sans-serif", 14))
            },
        ))?;
        chart
            .configure_series_labels()
            .border_style(BLACK)
            .background_style(WHITE)
            .draw()?;

        let stages = ["glance", "focus", "classify"];
        let colours = [GREEN, MAGENTA, CYAN];
        let max_ms = report
            .strategies
            .iter()
            .flat_map(|r| {
                stages
                    .iter()
                    .filter_map(|s| r.stages.get(s).map(|x| x.p50_ms))
            })
            .fold(0.0, f64::max)
            .max(0.001)
            * 1.1;
        let n = report.strategies.len();
        let mut bars = ChartBuilder::on(&right)
            .caption("p50 latency per stage (ms)", ("sans-serif", 20))
            .margin(15)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d(0.0..n as f64, 0.0..max_ms)?;
        let names: Vec<String> = report
            .strategies
            .iter()
            .map(|r| r.strategy.clone())
            .collect();
        bars.configure_mesh()
            .disable_x_mesh()
            .x_labels(n.max(1))
            .x_label_formatter(&|x| {
                let i = x.floor() as usize;
                names.get(i).cloned().unwrap_or_default()
            })
            .y_desc("ms")
            .draw()?;
        for (k, (stage, colour)) in stages.iter().zip(colours).enumerate() {
            let width = 0.8 / stages.len() as f64;
            bars.draw_series(report.strategies.iter().enumerate().map(|(i, r)| {
                let v = r.stages.get(stage).map_or(0.0, |x| x.p50_ms);
                let x0 = i as f64 + 0.1 + k as f64 * width;
                Rectangle::new([(x0, 0.0), (x0 + width, v)], colour.filled())
            }))?
            .label(*stage)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], colour.filled()));
        }
        bars.configure_series_labels()
            .border_style(BLACK)
            .background_style(WHITE)
            .draw()?;
        root.present()?;
        Ok(())
    };
    draw().map_err(|e| anyhow::anyhow!("writing plot {}: {e}", path.display()))
}

pub fn bench(args: BenchArgs) -> anyhow::Result<()> {
    let report = run_bench(&args)?;
    print!("{}", report.human());
    if let Some(path) = &args.json {
        write_json(&report, path)?;
    }
    if let Some(path) = &args.plot {
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn pareto_front_keeps_only_undominated_points_by_latency() {
        let points = [
            (10.0, 0.5),
            (5.0, 0.6),
            (20.0, 0.9),
            (30.0, 0.8),
            (5.0, 0.6),
        ];
        // (10, 0.5) is beaten by (5, 0.6); (30, 0.8) by (20, 0.9); equal points do not dominate each other.
        assert_eq!(pareto_front(&points), vec![1, 4, 2]);
    }

    #[test]
    fn vec_source_replays_every_frame_then_ends() {
        let frames: Vec<Frame> = (0..3)
            .map(|i| Frame::from_rgb(i, 2, 2, vec![0; 12]).unwrap())
            .collect();
        let mut source = VecSource::new(frames);
        let mut seen = Vec::new();
        while let Capture::Frame(f) = source.next_frame() {
            seen.push(f.index);
        }
        assert_eq!(seen, vec![0, 1, 2]);
        assert!(matches!(source.next_frame(), Capture::End));
        assert_eq!(source.default_policy(), QueuePolicy::Lossless);
    }

    #[test]
    fn bench_runs_every_strategy_on_a_folder_and_writes_json_and_plot() {
        let dir = tempfile::tempdir().unwrap();
        let models = crate::eval::write_random_models(dir.path());
        let (images, annotations) = crate::eval::tests::small_annotated_folder(dir.path());
        let json = dir.path().join("bench.json");
        let plot = dir.path().join("bench.svg");
        bench(BenchArgs {
            frames: 2,
            fullres_frames: Some(1),
            json: Some(json.display().to_string()),
            plot: Some(plot.clone()),
            images: Some(images),
            annotations: Some(annotations),
            strategies: Vec::new(),
            max_patches: 4,
            deadline_ms: None,
            queue_depth: 2,
            // Generous: the test process holds every test's memory.
            memory_budget_mb: 8192.0,
            models: models.clone(),
        })
        .unwrap();
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap();
        let names: Vec<&str> = v["strategies"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["strategy"].as_str().unwrap())
            .collect();
        assert_eq!(names, STRATEGY_NAMES.to_vec());
        let fullres = v["strategies"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["strategy"] == "fullres")
            .unwrap();
        assert_eq!(fullres["frames"], 1);
        assert_eq!(
            v["ratios_vs_fullres"].as_object().unwrap().len(),
            STRATEGY_NAMES.len() - 1
        );
        assert!(
            v["ratios_vs_fullres"]["topk"]["p50_speedup"]
                .as_f64()
                .unwrap()
                > 0.0
        );
        assert!(
            v["dtype_comparison"]["f32"]["p50_ms"].as_f64().is_some(),
            "{}",
            v["dtype_comparison"]
        );
        assert!(v["dtype_comparison"]["q8_0"]["p50_ms"].as_f64().is_some());
        assert!(v["throughput"]["pipelined_fps"].as_f64().unwrap() > 0.0);
        assert!(v["machine"]["logical_cpus"].as_u64().unwrap() > 0);
        let svg = std::fs::read_to_string(plot).unwrap();
        assert!(svg.contains("<svg") && svg.contains("topk") && svg.contains("Pareto"));
    }

    #[test]
    fn bench_refuses_to_start_over_its_memory_budget_and_reports_peak_against_it() {
        let dir = tempfile::tempdir().unwrap();
        let models = crate::eval::write_random_models(dir.path());
        let (images, annotations) = crate::eval::tests::small_annotated_folder(dir.path());
        let args = |budget: f64, strategies: Vec<String>| BenchArgs {
            frames: 1,
            fullres_frames: Some(1),
            json: None,
            plot: None,
            images: Some(images.clone()),
            annotations: Some(annotations.clone()),
            strategies,
            max_patches: 4,
            deadline_ms: None,
            queue_depth: 2,
            memory_budget_mb: budget,
            models: models.clone(),
        };
        let err = run_bench(&args(1.0, Vec::new())).unwrap_err();
        let text = format!("{err:#}");
        assert!(text.contains("memory-budget-mb"), "{text}");
        assert!(text.contains("MiB"), "{text}");
        let report = run_bench(&args(8192.0, vec!["topk".into()])).unwrap();
        assert!(report.memory.plan_mb > 0.0);
        assert!(report.memory.peak_rss_mb >= report.peak_rss_mb - 1e-9);
        assert!(report.memory.peak_within_budget);
        assert!(report.human().contains("budget 8192 MiB: within"));
    }
}
