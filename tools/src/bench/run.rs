//! Running the bench: every strategy through `eval`, the ratios against `fullres`, the head-to-head, the
//! dtype comparison and the throughput runs.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use saccade_models::QuantDtype;
use saccade_runtime::budget::{mib, rss_bytes};
use saccade_runtime::capture::memory::VecSource;
use saccade_runtime::capture::{Capture, FrameSource, QueuePolicy};
use saccade_runtime::focus::{StrategyConfigs, StrategyKind};
use saccade_runtime::frame::Frame;
use saccade_runtime::metrics::{PipelineMetrics, Stage};
use saccade_runtime::pipeline::{run_pipeline, PipelineOptions};

use super::frames::bench_items;
use super::report::{
    BatchingReport, BenchMemory, BenchReport, CeilingShortfall, DtypeComparison, DtypeOutcome,
    DtypeRun, HeadToHead, Machine, MultiSource, RatioVsBaseline, SourceThroughput, Throughput,
};
use super::{
    BASELINE, BASELINES, GOAL_F1_BELOW_FULLRES, GOAL_MFLOPS_RATIO, GOAL_P50_SPEEDUP,
    THROUGHPUT_FRAMES_HELD,
};
use crate::cmd::bench::BenchArgs;
use crate::config::ThreadsConfig;
use crate::engine::{self, ModelArgs, Models, StrategyArgs};
use crate::eval::{evaluate, load_frame, EvalItem, Evaluation, FrameData, ScoredFrame};
use crate::matching::{match_detections, Counts, IOU_MATCH_THRESHOLD};
use crate::summary::round3;

fn strategy_args(args: &BenchArgs, name: StrategyKind) -> StrategyArgs {
    StrategyArgs {
        strategy: name,
        max_patches: args.max_patches,
        deadline_ms: args.deadline_ms,
    }
}

/// Runs `strategy` on `items` with the settings fitted beside the weights, after one untimed warm-up frame
/// (first calls allocate) unless it is the slow baseline.
fn run_strategy(
    models: &Models,
    args: &BenchArgs,
    name: StrategyKind,
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
                .process(load_frame(0, first)?, &PipelineMetrics::default())
                .map_err(|e| anyhow::anyhow!("warm-up of {name}: {e}"))?;
        }
    }
    evaluate(&mut processor, name.name(), items, &HashSet::new())
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
    dtype: QuantDtype,
    items: &[EvalItem],
) -> DtypeOutcome {
    let mut m = models_args.clone();
    m.dtype = dtype;
    m.classifier_weights = None;
    let weights = m.classifier_path();
    let result = (|| -> anyhow::Result<DtypeRun> {
        let models = engine::load_models(&m)?;
        let evaluation = run_strategy(&models, args, StrategyKind::TopK, items)?;
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
        Ok(run) => DtypeOutcome::Ran(run),
        Err(e) => DtypeOutcome::Skipped {
            skipped: format!("{e:#}"),
        },
    }
}

/// Single-threaded and pipelined frames per second of `topk` over `items.len()` frames, replaying the first
/// [`THROUGHPUT_FRAMES_HELD`] decoded frames in a cycle (decoding is not part of either figure).
fn throughput(models: &Models, args: &BenchArgs, items: &[EvalItem]) -> anyhow::Result<Throughput> {
    let name = StrategyKind::TopK;
    let frames = items
        .iter()
        .take(THROUGHPUT_FRAMES_HELD)
        .enumerate()
        .map(|(i, item)| load_frame(i as u64, item))
        .collect::<anyhow::Result<Vec<_>>>()?;
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
    let pipelined_metrics = Arc::new(PipelineMetrics::default());
    let summary = run_pipeline(
        Box::new(VecSource::cycling(frames.clone(), n)),
        processor,
        options,
        pipelined_metrics.clone(),
        Arc::new(AtomicBool::new(false)),
        |_| {},
    );
    let latency = pipelined_metrics.histogram(Stage::Total).summary();
    let multi_source = if args.sources > 1 {
        eprintln!(
            "bench: topk on {} sources sharing one model ...",
            args.sources
        );
        Some(multi_source(models, args, &frames, n, summary.fps)?)
    } else {
        None
    };
    Ok(Throughput {
        strategy: name.to_string(),
        frames: n,
        single_threaded_fps: round3(if single_s > 0.0 {
            n as f64 / single_s
        } else {
            0.0
        }),
        pipelined_fps: round3(summary.fps),
        pipelined_p50_ms: round3(latency.p50_ms),
        pipelined_p99_ms: round3(latency.p99_ms),
        queue_depth: args.queue_depth,
        multi_source,
    })
}

/// The thread overrides of the bench's flags.
fn threads_config(args: &BenchArgs) -> ThreadsConfig {
    ThreadsConfig {
        cores: None,
        intra_op: args.intra_op_threads,
        batch_wait_ms: args.batch_wait_ms,
        classify_workers: args.classify_workers.map(|n| n as usize),
    }
}

/// `args.sources` pipelines of `topk` at once, each replaying `frames` in a cycle to `n` frames, sharing the
/// loaded model and (more than one source) one batching classifier, under the thread layout for that many
/// sources (restored to one source's afterwards).
fn multi_source(
    models: &Models,
    args: &BenchArgs,
    frames: &[Frame],
    n: usize,
    one_source_fps: f64,
) -> anyhow::Result<MultiSource> {
    let name = StrategyKind::TopK;
    let sources = args.sources as usize;
    let threads = threads_config(args);
    let budget = engine::thread_budget(sources, &threads);
    engine::apply_thread_budget(&budget);
    let batcher = engine::batching_classifier(models, &budget, args.max_patches, &threads)?;
    let mut processors = Vec::with_capacity(sources);
    for _ in 0..sources {
        processors.push(engine::build_processor(
            &engine::models_for_source(models, batcher.as_ref()),
            &strategy_args(args, name),
            &StrategyConfigs::default(),
        )?);
    }
    let metrics: Vec<Arc<PipelineMetrics>> = (0..sources)
        .map(|_| Arc::new(PipelineMetrics::default()))
        .collect();
    let options = PipelineOptions {
        queue_depth: args.queue_depth,
        policy: QueuePolicy::Lossless,
        budget: strategy_args(args, name).budget(),
    };
    let started = Instant::now();
    let runs: Vec<_> = std::thread::scope(|scope| {
        let handles: Vec<_> = processors
            .into_iter()
            .zip(&metrics)
            .map(|(processor, m)| {
                let source = VecSource::cycling(frames.to_vec(), n);
                let m = m.clone();
                scope.spawn(move || {
                    run_pipeline(
                        Box::new(source),
                        processor,
                        options,
                        m,
                        Arc::new(AtomicBool::new(false)),
                        |_| {},
                    )
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join()).collect()
    });
    let wall_s = started.elapsed().as_secs_f64();
    engine::apply_thread_budget(&engine::thread_budget(1, &threads));
    let mut per_source = Vec::with_capacity(sources);
    let mut total_frames = 0;
    for (run, m) in runs.into_iter().zip(&metrics) {
        let run = run.map_err(|_| anyhow::anyhow!("a source's pipeline panicked"))?;
        total_frames += run.frames;
        let latency = m.histogram(Stage::Total).summary();
        per_source.push(SourceThroughput {
            fps: round3(run.fps),
            p50_ms: round3(latency.p50_ms),
            p99_ms: round3(latency.p99_ms),
            glance_p99_ms: round3(m.histogram(Stage::Glance).summary().p99_ms),
            classify_p99_ms: round3(m.histogram(Stage::Classify).summary().p99_ms),
        });
    }
    let aggregate_fps = if wall_s > 0.0 {
        total_frames as f64 / wall_s
    } else {
        0.0
    };
    let batching = batcher.map(|b| {
        let (config, stats) = (b.config(), b.stats());
        BatchingReport {
            max_wait_ms: round3(config.max_wait.as_secs_f64() * 1e3),
            max_batch_patches: config.max_batch_patches,
            workers: config.workers,
            batches: stats.batches,
            requests: stats.requests,
            patches: stats.patches,
            merged_batches: stats.merged_batches,
            requests_per_batch: round3(stats.requests_per_batch()),
            waited_ms: round3(stats.waited_ms),
        }
    });
    Ok(MultiSource {
        sources,
        frames_per_source: n,
        aggregate_fps: round3(aggregate_fps),
        one_source_fps: round3(one_source_fps),
        ratio_vs_one_source: round3(if one_source_fps > 0.0 {
            aggregate_fps / one_source_fps
        } else {
            0.0
        }),
        per_source,
        threads: budget,
        batching,
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
        int8_kernel: saccade_models::int8::kernel_name(),
        classifier: models.classifier.describe(),
        glance: models.glance.describe(),
    }
}

/// The strategies to run: the focus strategies `--strategies` names (all by default), then every baseline.
pub(crate) fn wanted_strategies(args: &BenchArgs) -> Vec<StrategyKind> {
    let focus = StrategyKind::ALL
        .into_iter()
        .filter(|s| !BASELINES.contains(s))
        .filter(|s| args.strategies.is_empty() || args.strategies.contains(s));
    focus.chain(BASELINES).collect()
}

/// For each truth box of `frame`, whether a detection matched it (the matching `eval` counts with).
fn found_flags(frame: &ScoredFrame) -> Vec<bool> {
    let verdicts = match_detections(
        &frame.truth,
        &frame.detections,
        &HashSet::new(),
        IOU_MATCH_THRESHOLD,
    );
    crate::matching::found_flags(&verdicts, frame.truth.len())
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
    let fullres = evaluations
        .iter()
        .find(|e| e.report.strategy == BASELINE.name())?;
    let focus: Vec<&Evaluation> = evaluations
        .iter()
        .filter(|e| !BASELINES.iter().any(|b| b.name() == e.report.strategy))
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
    let wanted = wanted_strategies(args);
    anyhow::ensure!(
        args.batch_wait_ms.is_finite() && (0.0..=100.0).contains(&args.batch_wait_ms),
        "--batch-wait-ms is {}, expected 0..=100",
        args.batch_wait_ms
    );
    // Every figure but the multi-source run's is one source's: its thread layout.
    engine::apply_thread_budget(&engine::thread_budget(1, &threads_config(args)));
    let models = engine::load_models(&args.models)?;
    let plan = bench_memory_plan(&models, args, &items);
    eprintln!("{plan}");
    plan.check(args.memory_budget_mb)
        .context("the bench does not fit --memory-budget-mb")?;
    let mut evaluations = Vec::new();
    for &name in &wanted {
        let frames = if name == BASELINE { fullres_n } else { n };
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
        .find(|e| e.report.strategy == BASELINE.name())
        .context("the fullres baseline did not run")?;
    let mut ratios = BTreeMap::new();
    for e in &evaluations {
        if e.report.strategy == BASELINE.name() {
            continue;
        }
        let b = &baseline.report;
        let here = prefix_counts(&e.frame_tallies, fullres_n);
        let base = prefix_counts(&baseline.frame_tallies, fullres_n);
        let ratio = |num: f64, den: f64| if den > 0.0 { num / den } else { 0.0 };
        ratios.insert(
            e.report.strategy.clone(),
            RatioVsBaseline {
                p50_speedup: round3(ratio(b.p50_ms, e.report.p50_ms)),
                // Five decimals: focus strategies spend well under 1 % of fullres's MFLOPs.
                mflops_ratio: (ratio(e.report.mflops_per_frame, b.mflops_per_frame) * 1e5).round()
                    / 1e5,
                f1_diff: round3(here.f1() - base.f1()),
                recall_diff: round3(here.recall() - base.recall()),
                frames_compared: fullres_n,
            },
        );
    }
    let head_to_head = head_to_head(&evaluations, &ratios, fullres_n);
    eprintln!("bench: topk with f32 and q8_0 classifier weights ...");
    let f32_run = dtype_run(&args.models, args, QuantDtype::F32, &items);
    let q8_run = dtype_run(&args.models, args, QuantDtype::Q8_0, &items);
    let speedup = match (f32_run.classify_p50_ms(), q8_run.classify_p50_ms()) {
        (Some(f32_ms), Some(q8_ms)) if q8_ms > 0.0 => Some(round3(f32_ms / q8_ms)),
        _ => None,
    };
    let dtype_comparison = DtypeComparison {
        classify_speedup_q8_0_vs_f32: speedup,
        f32: f32_run,
        q8_0: q8_run,
    };
    let throughput = if wanted.contains(&StrategyKind::TopK) {
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
/// pipeline; with `--sources N`, what N pipelines of `topk` add to one), plus the frames it holds in memory: synthetic scenes all, files only the throughput run's
/// (the evaluations decode one file at a time).
fn bench_memory_plan(
    models: &Models,
    args: &BenchArgs,
    items: &[EvalItem],
) -> saccade_runtime::budget::MemoryPlan {
    let config = crate::config::Config {
        strategy: BASELINE,
        max_patches: args.max_patches,
        queue_depth: args.queue_depth,
        ..crate::config::Config::default()
    };
    let mut plan = engine::memory_plan(models, &args.models, &config, &[(1280, 960)]);
    if args.sources > 1 {
        // `--sources N` runs N pipelines of topk at once: what N cost more than one.
        let topk = crate::config::Config {
            strategy: saccade_runtime::focus::StrategyKind::TopK,
            ..config.clone()
        };
        let one = engine::memory_plan(models, &args.models, &topk, &[(1280, 960)]);
        let all = engine::memory_plan(
            models,
            &args.models,
            &topk,
            &vec![(1280, 960); args.sources as usize],
        );
        plan.items.push(saccade_runtime::budget::BudgetItem {
            name: "more sources",
            bytes: all.total_bytes().saturating_sub(one.total_bytes()),
            lower: "--sources",
        });
    }
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
