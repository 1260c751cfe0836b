//! What the bench reports: the JSON structures and the human summary.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::{GOAL_F1_BELOW_FULLRES, GOAL_MFLOPS_RATIO, GOAL_P50_SPEEDUP};
use crate::eval::EvalReport;

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

/// `topk` with the f32 and the Q8_0 weight files. Fields in the order of their JSON keys (alphabetical, as
/// the report has always written them).
#[derive(Debug, Clone, serde::Serialize)]
pub struct DtypeComparison {
    /// f32's classify p50 over q8_0's; absent when either did not run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub classify_speedup_q8_0_vs_f32: Option<f64>,
    pub f32: DtypeOutcome,
    pub q8_0: DtypeOutcome,
}

/// One dtype's run, or why it did not run (`{"skipped": reason}`: no weight file of that dtype, say).
#[derive(Debug, Clone, serde::Serialize)]
#[serde(untagged)]
pub enum DtypeOutcome {
    Ran(DtypeRun),
    Skipped { skipped: String },
}

impl DtypeOutcome {
    pub fn classify_p50_ms(&self) -> Option<f64> {
        match self {
            Self::Ran(run) => Some(run.classify_p50_ms),
            Self::Skipped { .. } => None,
        }
    }
}

/// Q8_0 vs f32 weights for `topk`: one dtype's figures (fields in JSON key order).
#[derive(Debug, Clone, serde::Serialize)]
pub struct DtypeRun {
    pub class_accuracy: Option<f64>,
    pub classify_p50_ms: f64,
    pub f1: f64,
    pub p50_ms: f64,
    pub weights: String,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Throughput {
    pub strategy: String,
    pub frames: usize,
    pub single_threaded_fps: f64,
    pub pipelined_fps: f64,
    /// Capture-to-result latency of the pipelined run, per frame.
    pub pipelined_p50_ms: f64,
    pub pipelined_p99_ms: f64,
    pub queue_depth: usize,
    /// `--sources N` > 1: N pipelines on the same frames sharing one model; `null` otherwise.
    pub multi_source: Option<MultiSource>,
}

/// N pipelines of `topk` on the same frames at once, sharing the loaded model and one batching classifier.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MultiSource {
    pub sources: usize,
    pub frames_per_source: usize,
    /// Frames of all sources / wall time of the whole run.
    pub aggregate_fps: f64,
    /// The single-source pipelined fps of the same bench ([`Throughput::pipelined_fps`]).
    pub one_source_fps: f64,
    /// `aggregate_fps / one_source_fps`.
    pub ratio_vs_one_source: f64,
    /// Each source's own fps and capture-to-result latency.
    pub per_source: Vec<SourceThroughput>,
    /// The thread layout the run used.
    pub threads: saccade_runtime::threads::ThreadBudget,
    /// What the shared classify stage did (`null` when the sources did not share one).
    pub batching: Option<BatchingReport>,
}

/// One source of a multi-source run. `p50_ms`/`p99_ms` are capture-to-result: in a saturated lossless
/// replay they include the time a frame waits in the source's queues (about `frames in flight / fps`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct SourceThroughput {
    pub fps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// The glance of one frame.
    pub glance_p99_ms: f64,
    /// The classify calls of one frame, including the wait for a shared batch and the batch's classify.
    pub classify_p99_ms: f64,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct BatchingReport {
    pub max_wait_ms: f64,
    pub max_batch_patches: usize,
    pub workers: usize,
    pub batches: u64,
    pub requests: u64,
    pub patches: u64,
    pub merged_batches: u64,
    pub requests_per_batch: f64,
    pub waited_ms: f64,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Machine {
    pub cpu: String,
    pub logical_cpus: usize,
    pub arch: &'static str,
    pub os: &'static str,
    pub rayon_num_threads: Option<String>,
    /// The int8 matrix-product kernel the Q8_0 nets run on (`SACCADE_INT8_KERNEL` overrides it).
    pub int8_kernel: &'static str,
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
    pub dtype_comparison: DtypeComparison,
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
            "strategy", "p50 speed-up", "MFLOPs share", "ΔF1", "Δrecall"
        );
        for (name, r) in &self.ratios_vs_fullres {
            let _ = writeln!(
                s,
                "  {name:<12} {:>11.1}× {:>11.2} % {:>+8.3} {:>+8.3}",
                r.p50_speedup,
                r.mflops_ratio * 100.0,
                r.f1_diff,
                r.recall_diff
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
        let _ = writeln!(
            s,
            "topk with the f32 and the q8_0 weight files (glance and patch net) of the weights folder:"
        );
        let c = &self.dtype_comparison;
        for (dtype, outcome) in [("f32", &c.f32), ("q8_0", &c.q8_0)] {
            match outcome {
                DtypeOutcome::Skipped { skipped } => {
                    let _ = writeln!(s, "  {dtype:<5} skipped: {skipped}");
                }
                DtypeOutcome::Ran(run) => {
                    let _ = writeln!(
                        s,
                        "  {dtype:<5} p50 {:.2} ms/frame, classify p50 {:.2} ms, F1 {:.3}",
                        run.p50_ms, run.classify_p50_ms, run.f1
                    );
                }
            }
        }
        if let Some(x) = c.classify_speedup_q8_0_vs_f32 {
            // Written as JSON writes the number (`4.0`, not `4`), as the report always has.
            let _ = writeln!(
                s,
                "  classify speed-up of q8_0 over f32: {}×",
                serde_json::Value::from(x)
            );
        }
        if let Some(t) = &self.throughput {
            let _ = writeln!(
                s,
                "throughput of {} on {} frames: single-threaded {:.2} fps, pipelined {:.2} fps (p50 {:.1} ms, \
                 p99 {:.1} ms; queue depth {})",
                t.strategy,
                t.frames,
                t.single_threaded_fps,
                t.pipelined_fps,
                t.pipelined_p50_ms,
                t.pipelined_p99_ms,
                t.queue_depth
            );
        }
        if let Some(m) = self
            .throughput
            .as_ref()
            .and_then(|t| t.multi_source.as_ref())
        {
            let _ = writeln!(
                s,
                "{} sources sharing one model: {:.2} fps in all, {:.2}× one source's {:.2} fps ({})",
                m.sources, m.aggregate_fps, m.ratio_vs_one_source, m.one_source_fps, m.threads
            );
            for (i, p) in m.per_source.iter().enumerate() {
                let _ = writeln!(
                    s,
                    "  source {i}: {:.2} fps, p50 {:.1} ms, p99 {:.1} ms (glance p99 {:.1} ms, classify p99 {:.1} ms)",
                    p.fps, p.p50_ms, p.p99_ms, p.glance_p99_ms, p.classify_p99_ms
                );
            }
            if let Some(b) = &m.batching {
                let _ = writeln!(
                    s,
                    "  classify batches: {} of {:.2} calls on average ({} merged), {:.1} ms waited in all",
                    b.batches, b.requests_per_batch, b.merged_batches, b.waited_ms
                );
            }
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
            "{} ({} logical CPUs, int8 kernel {})",
            self.machine.cpu, self.machine.logical_cpus, self.machine.int8_kernel
        );
        s
    }
}
