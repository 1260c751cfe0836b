//! Running frames through a processor and scoring them against their truth: the evaluation itself.

use std::collections::HashSet;
use std::time::Instant;

use saccade_runtime::budget::{mib, rss_bytes};
use saccade_runtime::focus::FocusOutcome;
use saccade_runtime::frame::{BoxPx, Frame};
use saccade_runtime::metrics::{PipelineMetrics, Stage};
use saccade_runtime::pipeline::FrameProcessor;

use super::{items::*, report::*, split::*, stats::*};
use crate::matching::{tally_frame, DetectionEntry, Tally, TruthEntry};
use crate::summary::{round3, StageJson};

/// An evaluation: the report, the tally of every frame (so a caller can re-score a prefix of the frames) and
/// every frame's truth and scored detections.
pub struct Evaluation {
    pub report: EvalReport,
    pub frame_tallies: Vec<Tally>,
    pub scored_frames: Vec<ScoredFrame>,
    /// The boxes of the patches examined in each frame, in the order of `scored_frames`.
    pub examined: Vec<Vec<BoxPx>>,
}

pub(crate) fn class_report(c: &crate::matching::Counts) -> ClassReport {
    ClassReport {
        tp: c.tp,
        fp: c.fp,
        fn_: c.fn_,
        precision: round3(c.precision()),
        recall: round3(c.recall()),
        f1: round3(c.f1()),
        class_accuracy: (c.classified > 0).then(|| round3(c.class_accuracy())),
    }
}

/// Detections of an outcome as matching sees them.
pub fn detections_of(outcome: &FocusOutcome) -> Vec<DetectionEntry> {
    outcome
        .detections
        .iter()
        .map(|d| DetectionEntry {
            bbox: d.bbox,
            score: d.score,
            class_id: d.class_id,
            class_name: d.class_name.to_string(),
        })
        .collect()
}

/// Runs every item through `processor` (single-threaded, lossless) and scores it.
pub fn evaluate(
    processor: &mut FrameProcessor,
    strategy: &str,
    items: &[EvalItem],
    ignored: &HashSet<String>,
) -> anyhow::Result<Evaluation> {
    evaluate_rescaled(processor, strategy, items, ignored, None)
}

/// `frame` resized to `width × height` (bilinear, area-averaged when shrinking ≥ 2×) and `truth` scaled
/// alike.
pub fn rescale_frame(
    frame: Frame,
    truth: &[TruthEntry],
    width: u32,
    height: u32,
) -> anyhow::Result<(Frame, Vec<TruthEntry>)> {
    if (frame.width, frame.height) == (width, height) {
        return Ok((frame, truth.to_vec()));
    }
    let mut rgb = vec![0u8; width as usize * height as usize * 3];
    saccade_runtime::imageops::resize_rgb_bilinear(
        &frame.rgb,
        frame.width as usize,
        frame.height as usize,
        &mut rgb,
        width as usize,
        height as usize,
    )?;
    let sx = width as f32 / frame.width as f32;
    let sy = height as f32 / frame.height as f32;
    let mut out = Frame::from_rgb(frame.index, width, height, rgb)?;
    out.file = frame.file.clone();
    let truth = truth
        .iter()
        .map(|t| TruthEntry {
            bbox: BoxPx::new(
                t.bbox.xmin * sx,
                t.bbox.ymin * sy,
                t.bbox.xmax * sx,
                t.bbox.ymax * sy,
            ),
            ..t.clone()
        })
        .collect();
    Ok((out, truth))
}

/// [`evaluate`] with every frame first resized to `rescale` `(width, height)` when given.
pub fn evaluate_rescaled(
    processor: &mut FrameProcessor,
    strategy: &str,
    items: &[EvalItem],
    ignored: &HashSet<String>,
    rescale: Option<(u32, u32)>,
) -> anyhow::Result<Evaluation> {
    let metrics = PipelineMetrics::default();
    let mut total = Tally::default();
    let mut frame_tallies = Vec::with_capacity(items.len());
    let mut scored_frames = Vec::with_capacity(items.len());
    let mut examined = Vec::with_capacity(items.len());
    let started = Instant::now();
    // Drawn on stderr only when it is a terminal.
    let bar = crate::train::common::progress(items.len(), strategy);
    for (i, item) in items.iter().enumerate() {
        bar.inc(1);
        let load_start = Instant::now();
        let frame = load_frame(i as u64, item)?;
        let (frame, truth) = match rescale {
            Some((w, h)) => rescale_frame(frame, &item.truth, w, h)?,
            None => (frame, item.truth.clone()),
        };
        metrics.record(Stage::Capture, load_start.elapsed());
        let done = processor
            .process(frame, &metrics)
            .map_err(|e| anyhow::anyhow!("{e} ({})", item.name))?;
        let patches_frame: Vec<_> = done.outcome.patches.iter().map(|p| p.bbox).collect();
        let detections = detections_of(&done.outcome);
        let tally = tally_frame(&truth, &detections, &patches_frame, ignored);
        total.add(&tally);
        frame_tallies.push(tally);
        scored_frames.push(ScoredFrame { truth, detections });
        examined.push(patches_frame);
    }
    bar.finish_and_clear();
    let wall_s = started.elapsed().as_secs_f64();
    let glance_mflops = processor.glance.net().mflops();
    let sweep = score_sweep(&scored_frames, ignored);
    let per_frame: Vec<_> = frame_tallies.iter().map(|t| t.overall).collect();
    let ci95 = bootstrap_intervals(&per_frame, BOOTSTRAP_RESAMPLES);
    let report = build_report(
        strategy,
        &metrics,
        &total,
        sweep,
        ci95,
        glance_mflops,
        wall_s,
    );
    Ok(Evaluation {
        report,
        frame_tallies,
        scored_frames,
        examined,
    })
}

pub(crate) fn build_report(
    strategy: &str,
    metrics: &PipelineMetrics,
    tally: &Tally,
    score_sweep: Vec<SweepPoint>,
    ci95: Intervals95,
    glance_mflops: f64,
    wall_s: f64,
) -> EvalReport {
    let get = PipelineMetrics::get;
    let frames = get(&metrics.frames_processed);
    let per_frame = |x: f64| if frames > 0 { x / frames as f64 } else { 0.0 };
    let pixels_total = get(&metrics.pixels_total);
    let backbone = per_frame(get(&metrics.backbone_kflops_total) as f64 / 1000.0);
    let total_latency = metrics.histogram(Stage::Total).summary();
    let c = &tally.overall;
    let signs = tally.all_signs();
    EvalReport {
        strategy: strategy.to_string(),
        split: EvalSplit::All,
        frames,
        precision: round3(c.precision()),
        recall: round3(c.recall()),
        f1: round3(c.f1()),
        class_accuracy: (c.classified > 0).then(|| round3(c.class_accuracy())),
        tp: c.tp,
        fp: c.fp,
        fn_: c.fn_,
        signs: signs.signs,
        looked_at: signs.looked_at,
        looked_at_share: signs.looked_at_share().map(round3),
        found_when_looked_at: signs.found_when_looked_at,
        by_size: BySizeReport::from_tally(tally),
        p50_ms: round3(total_latency.p50_ms),
        p99_ms: round3(total_latency.p99_ms),
        patches_per_frame: round3(per_frame(get(&metrics.patches_total) as f64)),
        pixel_fraction: if pixels_total > 0 {
            round3(get(&metrics.pixels_examined_total) as f64 / pixels_total as f64)
        } else {
            0.0
        },
        mflops_per_frame: round3(glance_mflops + backbone),
        backbone_mflops_per_frame: round3(backbone),
        glance_mflops: round3(glance_mflops),
        early_exit_rate: round3(per_frame(get(&metrics.early_exits) as f64)),
        peak_rss_mb: round3(rss_bytes().map_or(0.0, |(_, peak)| mib(peak))),
        wall_s: round3(wall_s),
        stages: Stage::ALL
            .iter()
            .map(|s| (s.name(), StageJson::from(metrics.histogram(*s).summary())))
            .collect(),
        per_class: tally
            .per_class
            .iter()
            .map(|(name, counts)| (name.clone(), class_report(counts)))
            .collect(),
        strategy_config: None,
        strategy_settings: None,
        best_f1: best_f1(&score_sweep),
        score_sweep,
        ci95,
    }
}
