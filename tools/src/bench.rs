//! `saccade bench`: every focus strategy and three baselines on the same real frames, with the ratios against
//! the full-resolution baseline measured in the same run, then Q8_0 vs f32 backbone and single-threaded vs
//! pipelined throughput.
//!
//! Frames: by default the 38 real GTSDB test frames shipped in `benches/gtsdb-test/` (provenance there); any
//! annotated folder with `--images/--annotations` (`--split test` keeps the GTSDB test frames of a full copy
//! of the benchmark); held-out synthetic 1280×960 scenes with `--synthetic`.
//!
//! The baselines use the same trained nets as the focus strategies, so the only difference is where the
//! network looks: `fullres` runs the patch detector (box head, second look, NMS, fitted threshold) densely
//! over every pixel at every window scale the signs need, `downsample` over the whole frame shrunk,
//! `glance-only` reports the glance's own boxes with no patch at all. Each strategy's numbers come from
//! [`crate::eval::evaluate`], so `bench` and `eval` agree, with 95 % bootstrap intervals over frames.

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
    evaluate, items_from_folder, parse_annotations, select_split, truth_from_boxes, write_json,
    EvalItem, EvalReport, EvalSplit, Evaluation, FrameData, ScoredFrame,
};
use crate::matching::{match_detections, Counts, Verdict, IOU_MATCH_THRESHOLD};
use crate::summary::round3;

/// The baseline every ratio is measured against: it looks everywhere.
pub const BASELINE: &str = "fullres";
/// Strategies without focus, for the focus strategies to beat: they run whatever `--strategies` says.
pub const BASELINES: &[&str] = &["fullres", "downsample", "glance-only"];
/// First seed of the benchmark's synthetic scenes (Eval split), fixed so runs compare.
const FIRST_SEED: u64 = 9_000_001;
/// Synthetic scenes the bench generates when `--frames` does not say.
const DEFAULT_SYNTHETIC_FRAMES: usize = 20;
/// Frames decoded and held in memory for the throughput runs (replayed in a cycle to `--frames`).
const THROUGHPUT_FRAMES_HELD: usize = 12;
/// Where the bench writes its JSON and SVG unless told otherwise.
const DEFAULT_JSON: &str = "saccade-bench/bench.json";
const DEFAULT_PLOT: &str = "saccade-bench/bench.svg";

/// The goals the best focus strategy is held to against `fullres`, measured in one run.
pub const GOAL_F1_BELOW_FULLRES: f64 = 0.02;
pub const GOAL_P50_SPEEDUP: f64 = 20.0;
pub const GOAL_MFLOPS_RATIO: f64 = 0.05;

/// Default `--memory-budget-mb` of the bench.
#[cfg(not(feature = "cuda"))]
const DEFAULT_BENCH_BUDGET_MB: f64 = 512.0;
#[cfg(feature = "cuda")]
const DEFAULT_BENCH_BUDGET_MB: f64 = 1024.0;

/// The real frames shipped for the bench (`benches/gtsdb-test/` of the checkout).
pub fn default_frames_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("benches")
        .join("gtsdb-test")
}

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
    pub strategies: Vec<String>,
    /// Hard limit of patches per frame.
    #[arg(long, default_value_t = engine::DEFAULT_MAX_PATCHES)]
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
            max_patches: engine::DEFAULT_MAX_PATCHES,
            deadline_ms: None,
            queue_depth: 2,
            memory_budget_mb: DEFAULT_BENCH_BUDGET_MB,
            models,
        }
    }
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
    /// This strategy's recall − `fullres`'s recall on those frames.
    pub recall_diff: f64,
    pub frames_compared: usize,
}

/// The best focus strategy (highest F1 on the frames `fullres` ran on) against `fullres`, with the goals.
#[derive(Debug, Clone, serde::Serialize)]
pub struct HeadToHead {
    pub strategy: String,
    pub frames_compared: usize,
    pub f1: f64,
    pub fullres_f1: f64,
    pub recall: f64,
    pub fullres_recall: f64,
    pub p50_speedup: f64,
    pub mflops_ratio: f64,
    /// F1 no more than [`GOAL_F1_BELOW_FULLRES`] below `fullres`.
    pub f1_goal_met: bool,
    /// p50 at least [`GOAL_P50_SPEEDUP`]× lower.
    pub speedup_goal_met: bool,
    /// At most [`GOAL_MFLOPS_RATIO`] of `fullres`'s MFLOPs per frame.
    pub mflops_goal_met: bool,
    /// `fullres` looks everywhere, so its recall should be the ceiling of every focus strategy's; `null` when
    /// it is, else why not.
    pub fullres_below_focus: Option<CeilingShortfall>,
}

/// Why `fullres` found fewer signs than a focus strategy on the same frames: the signs the focus strategy
/// found and `fullres` did not, split by what `fullres` reported there.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CeilingShortfall {
    /// The focus strategy with the highest recall.
    pub strategy: String,
    pub recall: f64,
    pub fullres_recall: f64,
    /// Signs that strategy found and `fullres` missed.
    pub signs_missed_by_fullres: u64,
    /// Of those, signs where a `fullres` detection overlapped the sign but below the matching IoU (a box
    /// off the sign: its window grid or regressed box framed it worse).
    pub boxed_off: u64,
    /// Of those, signs no `fullres` detection touched (every window scored below its threshold).
    pub no_detection: u64,
    pub explanation: String,
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
    /// Non-ignored annotated signs on those frames.
    pub signs: u64,
    pub fullres_frames: usize,
    /// Focus strategies first, then the baselines; each with the frames it ran on and its 95 % intervals.
    pub strategies: Vec<EvalReport>,
    pub ratios_vs_fullres: BTreeMap<String, RatioVsBaseline>,
    /// `null` when no focus strategy ran.
    pub head_to_head: Option<HeadToHead>,
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

/// A lossless in-memory source: replays `frames` in a cycle until it has handed out `total`, restarting each
/// capture clock as it hands a frame out.
pub struct VecSource {
    frames: Vec<Frame>,
    next: usize,
    total: usize,
    uri: String,
}

impl VecSource {
    pub fn new(frames: Vec<Frame>) -> Self {
        let total = frames.len();
        Self::cycling(frames, total)
    }

    /// `total` frames, going round `frames` as often as needed (none when `frames` is empty).
    pub fn cycling(frames: Vec<Frame>, total: usize) -> Self {
        Self {
            uri: format!("memory://{}-frames", frames.len()),
            total: if frames.is_empty() { 0 } else { total },
            frames,
            next: 0,
        }
    }
}

impl FrameSource for VecSource {
    fn next_frame(&mut self) -> Capture {
        if self.next >= self.total {
            return Capture::End;
        }
        let mut frame = self.frames[self.next % self.frames.len()].clone();
        frame.index = self.next as u64;
        frame.captured_at = Instant::now();
        self.next += 1;
        Capture::Frame(frame)
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

/// The frames of the run and a line saying where they come from.
fn bench_items(args: &BenchArgs) -> anyhow::Result<(String, Vec<EvalItem>)> {
    if args.synthetic {
        let n = args.frames.unwrap_or(DEFAULT_SYNTHETIC_FRAMES);
        let source = format!(
            "synthetic 1280×960 eval scenes, seeds {FIRST_SEED}..{}",
            FIRST_SEED + n as u64
        );
        return Ok((source, synthetic_items(n)?));
    }
    let (images, annotations, shipped) = match (&args.images, &args.annotations) {
        (Some(i), Some(a)) => (i.clone(), a.clone(), false),
        _ => {
            let dir = default_frames_dir();
            (dir.clone(), dir.join("annotations.csv"), true)
        }
    };
    let text = std::fs::read_to_string(&annotations).with_context(|| {
        if shipped {
            format!(
                "reading the bench's real frames' annotations {} (pass --images DIR --annotations CSV, or --synthetic)",
                annotations.display()
            )
        } else {
            format!("reading annotations {}", annotations.display())
        }
    })?;
    let rows = parse_annotations(&text, &annotations)?;
    let mut items = select_split(items_from_folder(&images, &rows)?, args.split, &images)?;
    if let Some(n) = args.frames {
        items.truncate(n);
    }
    let what = if shipped {
        "real GTSDB test frames shipped with saccade"
    } else {
        "annotated frames"
    };
    let split = match args.split {
        EvalSplit::All => String::new(),
        s => format!(", {} split", s.name()),
    };
    Ok((
        format!(
            "{} ({what}{split}; annotations {})",
            images.display(),
            annotations.display()
        ),
        items,
    ))
}

fn decode(item: &EvalItem, index: u64) -> anyhow::Result<Frame> {
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
    Frame::from_rgb(index, w, h, rgb).with_context(|| format!("frame {}", item.name))
}

fn decode_all(items: &[EvalItem]) -> anyhow::Result<Vec<Frame>> {
    items
        .iter()
        .enumerate()
        .map(|(i, item)| decode(item, i as u64))
        .collect()
}

fn strategy_args(args: &BenchArgs, name: &str) -> StrategyArgs {
    StrategyArgs {
        strategy: name.to_string(),
        max_patches: args.max_patches,
        deadline_ms: args.deadline_ms,
    }
}

/// Runs `strategy` on `items` with the settings fitted beside the weights, after one untimed warm-up frame
/// (first calls allocate) unless it is the slow baseline.
fn run_strategy(
    models: &Models,
    args: &BenchArgs,
    name: &str,
    items: &[EvalItem],
) -> anyhow::Result<Evaluation> {
    let mut processor = engine::build_processor(
        models,
        &strategy_args(args, name),
        &StrategyConfigs::default(),
    )?;
    if name != BASELINE {
        if let Some(first) = items.first() {
            processor
                .process(decode(first, 0)?, &PipelineMetrics::default())
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

/// Single-threaded and pipelined frames per second of `topk` over `items.len()` frames, replaying the first
/// [`THROUGHPUT_FRAMES_HELD`] decoded frames in a cycle (decoding is not part of either figure).
fn throughput(models: &Models, args: &BenchArgs, items: &[EvalItem]) -> anyhow::Result<Throughput> {
    let name = "topk";
    let frames = decode_all(&items[..items.len().min(THROUGHPUT_FRAMES_HELD)])?;
    let n = items.len();
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
    let mut single = VecSource::cycling(frames.clone(), n);
    while let Capture::Frame(frame) = single.next_frame() {
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
    let summary = run_pipeline(
        Box::new(VecSource::cycling(frames, n)),
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

/// The strategies to run: the focus strategies `--strategies` names (all by default), then every baseline.
fn wanted_strategies(args: &BenchArgs) -> anyhow::Result<Vec<&'static str>> {
    for w in &args.strategies {
        anyhow::ensure!(
            STRATEGY_NAMES.contains(&w.as_str()),
            "--strategies `{w}`: expected one of {}",
            STRATEGY_NAMES.join(", ")
        );
    }
    let focus = STRATEGY_NAMES
        .iter()
        .copied()
        .filter(|s| !BASELINES.contains(s))
        .filter(|s| args.strategies.is_empty() || args.strategies.iter().any(|w| w == s));
    Ok(focus.chain(BASELINES.iter().copied()).collect())
}

/// For each truth box of `frame`, whether a detection matched it (the matching `eval` counts with).
fn found_flags(frame: &ScoredFrame) -> Vec<bool> {
    let mut found = vec![false; frame.truth.len()];
    for v in match_detections(
        &frame.truth,
        &frame.detections,
        &HashSet::new(),
        IOU_MATCH_THRESHOLD,
    ) {
        if let Verdict::TruePositive { truth } = v {
            found[truth] = true;
        }
    }
    found
}

/// The signs `focus` found and `fullres` missed on the first `frames` frames, split by what `fullres`
/// reported there.
fn ceiling_shortfall(focus: &Evaluation, fullres: &Evaluation, frames: usize) -> CeilingShortfall {
    let (mut missed, mut boxed_off) = (0u64, 0u64);
    for (f, b) in focus
        .scored_frames
        .iter()
        .zip(&fullres.scored_frames)
        .take(frames)
    {
        for ((t, by_focus), by_fullres) in f.truth.iter().zip(found_flags(f)).zip(found_flags(b)) {
            if by_focus && !by_fullres {
                missed += 1;
                boxed_off += u64::from(b.detections.iter().any(|d| d.bbox.iou(&t.bbox) > 0.0));
            }
        }
    }
    let recall = prefix_counts(&focus.frame_tallies, frames).recall();
    let fullres_recall = prefix_counts(&fullres.frame_tallies, frames).recall();
    let no_detection = missed - boxed_off;
    CeilingShortfall {
        strategy: focus.report.strategy.clone(),
        recall: round3(recall),
        fullres_recall: round3(fullres_recall),
        signs_missed_by_fullres: missed,
        boxed_off,
        no_detection,
        explanation: format!(
            "fullres missed {missed} signs that {} found: {boxed_off} with a fullres box overlapping the sign \
             below IoU {IOU_MATCH_THRESHOLD} (its window grid or regressed box framed the sign worse than a \
             glance-centred patch), {no_detection} with no fullres detection on the sign (every window there \
             scored below fullres's fitted min_score)",
            focus.report.strategy
        ),
    }
}

fn head_to_head(
    evaluations: &[Evaluation],
    ratios: &BTreeMap<String, RatioVsBaseline>,
    frames: usize,
) -> Option<HeadToHead> {
    let fullres = evaluations.iter().find(|e| e.report.strategy == BASELINE)?;
    let focus: Vec<&Evaluation> = evaluations
        .iter()
        .filter(|e| !BASELINES.contains(&e.report.strategy.as_str()))
        .collect();
    let score = |e: &Evaluation| prefix_counts(&e.frame_tallies, frames);
    let best = focus
        .iter()
        .copied()
        .max_by(|a, b| score(a).f1().total_cmp(&score(b).f1()))?;
    let most_found = focus
        .iter()
        .copied()
        .max_by(|a, b| score(a).recall().total_cmp(&score(b).recall()))?;
    let ratio = ratios.get(&best.report.strategy)?;
    let (b, f) = (score(best), score(fullres));
    Some(HeadToHead {
        strategy: best.report.strategy.clone(),
        frames_compared: frames,
        f1: round3(b.f1()),
        fullres_f1: round3(f.f1()),
        recall: round3(b.recall()),
        fullres_recall: round3(f.recall()),
        p50_speedup: ratio.p50_speedup,
        mflops_ratio: ratio.mflops_ratio,
        f1_goal_met: b.f1() >= f.f1() - GOAL_F1_BELOW_FULLRES,
        speedup_goal_met: ratio.p50_speedup >= GOAL_P50_SPEEDUP,
        mflops_goal_met: ratio.mflops_ratio <= GOAL_MFLOPS_RATIO,
        fullres_below_focus: (score(most_found).recall() > f.recall())
            .then(|| ceiling_shortfall(most_found, fullres, frames)),
    })
}

/// Runs the whole benchmark and returns its report (printing progress to stderr).
pub fn run_bench(args: &BenchArgs) -> anyhow::Result<BenchReport> {
    anyhow::ensure!(args.frames != Some(0), "--frames is 0, expected at least 1");
    let (source, items) = bench_items(args)?;
    anyhow::ensure!(!items.is_empty(), "no frames to bench in {source}");
    let n = items.len();
    let fullres_n = args.fullres_frames.unwrap_or(n).clamp(1, n);
    let wanted = wanted_strategies(args)?;
    let models = engine::load_models(&args.models)?;
    let plan = bench_memory_plan(&models, args, &items);
    eprintln!("{plan}");
    plan.check(args.memory_budget_mb)
        .context("the bench does not fit --memory-budget-mb")?;
    let mut evaluations = Vec::new();
    for name in &wanted {
        let frames = if *name == BASELINE { fullres_n } else { n };
        eprintln!("bench: {name} on {frames} frames ...");
        let evaluation = run_strategy(&models, args, name, &items[..frames])?;
        eprintln!(
            "bench: {name}: F1 {:.3} in {:.1} s",
            evaluation.report.f1, evaluation.report.wall_s
        );
        evaluations.push(evaluation);
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
        let here = prefix_counts(&e.frame_tallies, fullres_n);
        let base = prefix_counts(&baseline.frame_tallies, fullres_n);
        let ratio = |num: f64, den: f64| round3(if den > 0.0 { num / den } else { 0.0 });
        ratios.insert(
            e.report.strategy.clone(),
            RatioVsBaseline {
                p50_speedup: ratio(b.p50_ms, e.report.p50_ms),
                mflops_ratio: ratio(e.report.mflops_per_frame, b.mflops_per_frame),
                f1_diff: round3(here.f1() - base.f1()),
                recall_diff: round3(here.recall() - base.recall()),
                frames_compared: fullres_n,
            },
        );
    }
    let head_to_head = head_to_head(&evaluations, &ratios, fullres_n);
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
    let throughput = if wanted.contains(&"topk") {
        eprintln!("bench: topk single-threaded vs pipelined ...");
        Some(throughput(&models, args, &items)?)
    } else {
        None
    };
    let peak_rss_mb = rss_bytes().map_or(0.0, |(_, peak)| mib(peak));
    let signs = evaluations
        .iter()
        .find(|e| e.report.frames as usize == n)
        .map_or(0, |e| e.report.signs);
    Ok(BenchReport {
        frames_source: source,
        frames: n,
        signs,
        fullres_frames: fullres_n,
        strategies: evaluations.into_iter().map(|e| e.report).collect(),
        ratios_vs_fullres: ratios,
        head_to_head,
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
/// pipeline), plus the frames it holds in memory: synthetic scenes all, files only the throughput run's
/// (the evaluations decode one file at a time).
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
    let held: u64 = items
        .iter()
        .enumerate()
        .filter(|(i, item)| {
            matches!(item.source, FrameData::Rgb { .. }) || *i < THROUGHPUT_FRAMES_HELD
        })
        .map(|(_, item)| item.bytes_held())
        .sum();
    plan.items.push(saccade_runtime::budget::BudgetItem {
        name: "bench frames",
        bytes: held,
        lower: "--frames",
    });
    plan
}

/// `[lo–hi]` of an interval.
fn interval(ci: [f64; 2]) -> String {
    format!("{:.2}–{:.2}", ci[0], ci[1])
}

/// A share with two decimals, or `-` where there is nothing to share (no sign in the bucket).
fn opt2(x: Option<f64>) -> String {
    x.map_or("-".to_string(), |v| format!("{v:.2}"))
}

impl BenchReport {
    pub fn human(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "saccade bench: {} frames, {} signs: {}",
            self.frames, self.signs, self.frames_source
        );
        let _ = writeln!(
            s,
            "  {:<12} {:>6} {:>5} {:>16} {:>16} {:>16} {:>6} {:>6} {:>6} {:>6} {:>7} {:>8} {:>8} {:>7} {:>9}",
            "strategy",
            "frames",
            "signs",
            "prec [95 % CI]",
            "recall [95 % CI]",
            "F1 [95 % CI]",
            "R<32",
            "R32-96",
            "R>96",
            "looked",
            "cls acc",
            "p50 ms",
            "p99 ms",
            "patches",
            "MFLOPs"
        );
        for r in &self.strategies {
            let _ = writeln!(
                s,
                "  {:<12} {:>6} {:>5} {:>16} {:>16} {:>16} {:>6} {:>6} {:>6} {:>6} {:>7} {:>8.2} {:>8.2} {:>7.2} {:>9.1}",
                r.strategy,
                r.frames,
                r.signs,
                format!("{:.3} {}", r.precision, interval(r.ci95.precision)),
                format!("{:.3} {}", r.recall, interval(r.ci95.recall)),
                format!("{:.3} {}", r.f1, interval(r.ci95.f1)),
                opt2(r.by_size.small.recall),
                opt2(r.by_size.medium.recall),
                opt2(r.by_size.large.recall),
                opt2(r.looked_at_share),
                r.class_accuracy.map_or("-".to_string(), |a| format!("{a:.3}")),
                r.p50_ms,
                r.p99_ms,
                r.patches_per_frame,
                r.mflops_per_frame,
            );
        }
        let _ = writeln!(
            s,
            "  (R<32 … R>96: recall per sign size, larger side in px; looked: share of signs whose centre lay in \
             an examined patch; intervals: bootstrap over frames)"
        );
        let _ = writeln!(
            s,
            "against fullres (measured in this run, on the {} frames fullres ran on):",
            self.fullres_frames
        );
        let _ = writeln!(
            s,
            "  {:<12} {:>12} {:>13} {:>8} {:>8}",
            "strategy", "p50 speed-up", "MFLOPs ratio", "ΔF1", "Δrecall"
        );
        for (name, r) in &self.ratios_vs_fullres {
            let _ = writeln!(
                s,
                "  {name:<12} {:>11.1}× {:>13.4} {:>+8.3} {:>+8.3}",
                r.p50_speedup, r.mflops_ratio, r.f1_diff, r.recall_diff
            );
        }
        if let Some(h) = &self.head_to_head {
            let yes = |ok: bool| if ok { "met" } else { "NOT met" };
            let _ = writeln!(
                s,
                "best focus strategy `{}` vs fullres on {} frames: F1 {:.3} vs {:.3} (goal: at most {GOAL_F1_BELOW_FULLRES} below: {}), \
                 p50 {:.1}× lower (goal ≥ {GOAL_P50_SPEEDUP}×: {}), {:.2} % of its MFLOPs (goal ≤ {:.0} %: {})",
                h.strategy,
                h.frames_compared,
                h.f1,
                h.fullres_f1,
                yes(h.f1_goal_met),
                h.p50_speedup,
                yes(h.speedup_goal_met),
                h.mflops_ratio * 100.0,
                GOAL_MFLOPS_RATIO * 100.0,
                yes(h.mflops_goal_met),
            );
            match &h.fullres_below_focus {
                None => {
                    let _ = writeln!(
                        s,
                        "  fullres recall {:.3} is the ceiling: no focus strategy found more signs on these frames",
                        h.fullres_recall
                    );
                }
                Some(c) => {
                    let _ = writeln!(
                        s,
                        "  fullres recall {:.3} is below {}'s {:.3}: {}",
                        c.fullres_recall, c.strategy, c.recall, c.explanation
                    );
                }
            }
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
            .caption(
                format!(
                    "F1 (95 % interval) vs p50 latency, {} frames",
                    report.frames
                ),
                ("sans-serif", 20),
            )
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
        // The 95 % interval of each F1 (bootstrap over frames) as a vertical bar.
        chart.draw_series(report.strategies.iter().zip(&points).map(|(r, &(x, _))| {
            PathElement::new(vec![(x, r.ci95.f1[0]), (x, r.ci95.f1[1])], BLACK)
        }))?;
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
        // Nested: the bench makes the folders it writes into.
        let json = dir.path().join("out").join("bench.json");
        let plot = dir.path().join("out").join("bench.svg");
        bench(BenchArgs {
            frames: Some(2),
            fullres_frames: Some(1),
            json: Some(json.display().to_string()),
            plot: Some(plot.clone()),
            images: Some(images),
            annotations: Some(annotations),
            max_patches: 4,
            // Generous: the test process holds every test's memory.
            memory_budget_mb: 8192.0,
            ..BenchArgs::with_models(models.clone())
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
        for s in v["strategies"].as_array().unwrap() {
            let name = s["strategy"].as_str().unwrap();
            let ci = &s["ci95"]["recall"];
            assert!(
                ci[0].as_f64().unwrap() <= s["recall"].as_f64().unwrap() + 1e-9
                    && s["recall"].as_f64().unwrap() <= ci[1].as_f64().unwrap() + 1e-9,
                "{name}: {s}"
            );
            assert!(s["by_size"]["small"]["signs"].is_u64(), "{name}");
            assert!(s.get("looked_at_share").is_some(), "{name}");
        }
        let glance_only = v["strategies"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["strategy"] == "glance-only")
            .unwrap();
        assert_eq!(glance_only["patches_per_frame"].as_f64(), Some(0.0));
        assert_eq!(glance_only["backbone_mflops_per_frame"].as_f64(), Some(0.0));
        let h = &v["head_to_head"];
        assert!(STRATEGY_NAMES.contains(&h["strategy"].as_str().unwrap()));
        assert!(!BASELINES.contains(&h["strategy"].as_str().unwrap()));
        assert_eq!(h["frames_compared"], 1);
        let svg = std::fs::read_to_string(plot).unwrap();
        assert!(svg.contains("<svg") && svg.contains("topk") && svg.contains("Pareto"));
    }

    #[test]
    fn the_shipped_real_frames_are_the_default_and_parse() {
        let args = BenchArgs::with_models(ModelArgs::default());
        let (source, items) = bench_items(&args).unwrap();
        assert!(source.contains("gtsdb-test"), "{source}");
        assert_eq!(items.len(), 38);
        let signs: usize = items.iter().map(|i| i.truth.len()).sum();
        assert_eq!(signs, 51);
        // Every one a GTSDB test frame: the bench never measures on frames the nets were fitted on.
        assert!(items.iter().all(|i| EvalSplit::Test.keeps(&i.name)));
        let limited = bench_items(&BenchArgs {
            frames: Some(5),
            ..BenchArgs::with_models(ModelArgs::default())
        })
        .unwrap()
        .1;
        assert_eq!(limited.len(), 5);
    }

    #[test]
    fn the_baselines_always_run_after_the_chosen_focus_strategies() {
        let args = BenchArgs {
            strategies: vec!["gfnet".into()],
            ..BenchArgs::with_models(ModelArgs::default())
        };
        assert_eq!(
            wanted_strategies(&args).unwrap(),
            vec!["gfnet", "fullres", "downsample", "glance-only"]
        );
        let bad = BenchArgs {
            strategies: vec!["saliency".into()],
            ..BenchArgs::with_models(ModelArgs::default())
        };
        let err = wanted_strategies(&bad).unwrap_err().to_string();
        assert!(err.contains("`saliency`"), "{err}");
    }

    #[test]
    fn vec_source_cycles_through_its_frames_to_the_total() {
        let frames: Vec<Frame> = (0..2)
            .map(|i| Frame::from_rgb(i, 2, 2, vec![i as u8; 12]).unwrap())
            .collect();
        let mut source = VecSource::cycling(frames, 5);
        let mut seen = Vec::new();
        while let Capture::Frame(f) = source.next_frame() {
            seen.push((f.index, f.rgb[0]));
        }
        assert_eq!(seen, vec![(0, 0), (1, 1), (2, 0), (3, 1), (4, 0)]);
        assert!(matches!(
            VecSource::cycling(Vec::new(), 3).next_frame(),
            Capture::End
        ));
    }

    #[test]
    fn bench_refuses_to_start_over_its_memory_budget_and_reports_peak_against_it() {
        let dir = tempfile::tempdir().unwrap();
        let models = crate::eval::write_random_models(dir.path());
        let (images, annotations) = crate::eval::tests::small_annotated_folder(dir.path());
        let args = |budget: f64, strategies: Vec<String>| BenchArgs {
            frames: Some(1),
            fullres_frames: Some(1),
            images: Some(images.clone()),
            annotations: Some(annotations.clone()),
            strategies,
            max_patches: 4,
            memory_budget_mb: budget,
            ..BenchArgs::with_models(models.clone())
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
