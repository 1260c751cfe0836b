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

mod frames;
mod plot;
mod report;
mod run;

use saccade_runtime::focus::StrategyKind;

pub use frames::{default_frames_dir, synthetic_items};
pub use plot::{pareto_front, write_plot};
pub use report::{
    BatchingReport, BenchMemory, BenchReport, CeilingShortfall, DtypeRun, HeadToHead, Machine,
    MultiSource, RatioVsBaseline, SourceThroughput, Throughput,
};
pub use run::run_bench;
pub use saccade_runtime::capture::memory::VecSource;

/// The baseline every ratio is measured against: it looks everywhere.
pub const BASELINE: StrategyKind = StrategyKind::FullRes;
/// Strategies without focus, for the focus strategies to beat: they run whatever `--strategies` says.
pub const BASELINES: [StrategyKind; 3] = [
    StrategyKind::FullRes,
    StrategyKind::Downsample,
    StrategyKind::GlanceOnly,
];
/// First seed of the benchmark's synthetic scenes (Eval split), fixed so runs compare.
const FIRST_SEED: u64 = 9_000_001;
/// Synthetic scenes the bench generates when `--frames` does not say.
const DEFAULT_SYNTHETIC_FRAMES: usize = 20;
/// Frames decoded and held in memory for the throughput runs (replayed in a cycle to `--frames`).
const THROUGHPUT_FRAMES_HELD: usize = 12;

/// The goals the best focus strategy is held to against `fullres`, measured in one run.
pub const GOAL_F1_BELOW_FULLRES: f64 = 0.02;
pub const GOAL_P50_SPEEDUP: f64 = 20.0;
pub const GOAL_MFLOPS_RATIO: f64 = 0.05;

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::bench::frames::bench_items;
    use crate::bench::run::wanted_strategies;
    use crate::cmd::bench::{bench, BenchArgs};
    use crate::engine::ModelArgs;
    use crate::eval::EvalSplit;
    use saccade_runtime::focus::STRATEGY_NAMES;

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
            sources: 3,
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
        let multi = &v["throughput"]["multi_source"];
        assert_eq!(multi["sources"], 3, "{multi}");
        assert_eq!(multi["per_source"].as_array().unwrap().len(), 3);
        assert!(multi["aggregate_fps"].as_f64().unwrap() > 0.0);
        let ratio =
            multi["aggregate_fps"].as_f64().unwrap() / multi["one_source_fps"].as_f64().unwrap();
        assert!(
            (multi["ratio_vs_one_source"].as_f64().unwrap() - ratio).abs() < 0.01,
            "{multi}"
        );
        for p in multi["per_source"].as_array().unwrap() {
            assert!(
                p["p99_ms"].as_f64().unwrap() >= p["p50_ms"].as_f64().unwrap(),
                "{p}"
            );
        }
        // Every source's frames went through the shared classify stage: a worker per core, up to one per
        // source.
        let batching = &multi["batching"];
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
        assert_eq!(
            batching["workers"].as_u64().unwrap(),
            cores.min(multi["sources"].as_u64().unwrap()),
            "{batching}"
        );
        assert!(
            batching["batches"].as_u64().unwrap() <= batching["requests"].as_u64().unwrap(),
            "{batching}"
        );
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
        assert!(!BASELINES
            .iter()
            .any(|b| b.name() == h["strategy"].as_str().unwrap()));
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
            strategies: vec![StrategyKind::GfNet],
            ..BenchArgs::with_models(ModelArgs::default())
        };
        let names: Vec<&str> = wanted_strategies(&args).iter().map(|k| k.name()).collect();
        assert_eq!(names, vec!["gfnet", "fullres", "downsample", "glance-only"]);
        use clap::Parser;
        let err = crate::Cli::try_parse_from(["saccade", "bench", "--strategies", "topk,saliency"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("`saliency`"), "{err}");
    }

    #[test]
    fn bench_refuses_to_start_over_its_memory_budget_and_reports_peak_against_it() {
        let dir = tempfile::tempdir().unwrap();
        let models = crate::eval::write_random_models(dir.path());
        let (images, annotations) = crate::eval::tests::small_annotated_folder(dir.path());
        let args = |budget: f64, strategies: Vec<StrategyKind>| BenchArgs {
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
        let report = run_bench(&args(8192.0, vec![StrategyKind::TopK])).unwrap();
        assert!(report.memory.plan_mb > 0.0);
        assert!(report.memory.peak_rss_mb >= report.peak_rss_mb - 1e-9);
        assert!(report.memory.peak_within_budget);
        assert!(report.human().contains("budget 8192 MiB: within"));
    }
}
