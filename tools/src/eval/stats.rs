//! Statistics over an evaluation's frames: bootstrap intervals and the score-threshold sweep.

use std::collections::HashSet;

use crate::matching::{tally_frame, DetectionEntry, TruthEntry};
use crate::summary::round3;

/// 95 % percentile-bootstrap intervals `[low, high]` over frames: the frames are drawn with replacement
/// [`BOOTSTRAP_RESAMPLES`] times (fixed seed, so a report is reproducible), each draw's counts summed and
/// scored, and the 2.5th and 97.5th percentiles taken. Signs on one frame stay together, so the intervals
/// count the frames, not the signs, as the independent draws.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Intervals95 {
    pub precision: [f64; 2],
    pub recall: [f64; 2],
    pub f1: [f64; 2],
    pub resamples: usize,
}

/// Bootstrap draws behind [`Intervals95`].
pub const BOOTSTRAP_RESAMPLES: usize = 1000;

/// The 95 % bootstrap intervals of the summed `per_frame` counts (see [`Intervals95`]): `[x, x]` for a single
/// frame, and the (degenerate) scores of zero counts without frames.
pub fn bootstrap_intervals(per_frame: &[crate::matching::Counts], resamples: usize) -> Intervals95 {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0x5acc_ade5);
    let n = per_frame.len();
    if n == 0 {
        let c = crate::matching::Counts::default();
        let point = |x: f64| [round3(x), round3(x)];
        return Intervals95 {
            precision: point(c.precision()),
            recall: point(c.recall()),
            f1: point(c.f1()),
            resamples: 0,
        };
    }
    let mut p = Vec::with_capacity(resamples);
    let mut r = Vec::with_capacity(resamples);
    let mut f = Vec::with_capacity(resamples);
    for _ in 0..resamples.max(1) {
        let mut c = crate::matching::Counts::default();
        for _ in 0..n {
            c.add(&per_frame[rng.random_range(0..n)]);
        }
        p.push(c.precision());
        r.push(c.recall());
        f.push(c.f1());
    }
    let interval = |v: &mut Vec<f64>| -> [f64; 2] {
        v.sort_by(f64::total_cmp);
        let at = |q: f64| v[((q * (v.len() - 1) as f64).round() as usize).min(v.len() - 1)];
        [round3(at(0.025)), round3(at(0.975))]
    };
    Intervals95 {
        precision: interval(&mut p),
        recall: interval(&mut r),
        f1: interval(&mut f),
        resamples: resamples.max(1),
    }
}

/// Detection quality when only detections scoring at least `threshold` count.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SweepPoint {
    pub threshold: f64,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub tp: u64,
    pub fp: u64,
    #[serde(rename = "fn")]
    pub fn_: u64,
}

/// The best point of a score sweep.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct BestF1 {
    pub threshold: f64,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
}

/// A frame's truth and scored detections, kept so its detections can be matched again at other thresholds.
#[derive(Debug, Clone, PartialEq)]
pub struct ScoredFrame {
    pub truth: Vec<TruthEntry>,
    pub detections: Vec<DetectionEntry>,
}

/// Score thresholds of the sweep: 0.05, 0.10, …, 0.95, then 0.96 … 0.99 and 0.995 (a trained classifier's
/// scores crowd near 1, where the best threshold often lies).
pub fn sweep_thresholds() -> impl Iterator<Item = f32> {
    (1..=19u8)
        .map(|i| f32::from(i) / 20.0)
        .chain((96..=99u8).map(|i| f32::from(i) / 100.0))
        .chain(std::iter::once(0.995))
}

/// Matches every frame again with only its detections scoring ≥ t, for each threshold t of
/// [`sweep_thresholds`], with the matching and ignore set of the main numbers.
pub fn score_sweep(frames: &[ScoredFrame], ignored: &HashSet<String>) -> Vec<SweepPoint> {
    let mut kept = Vec::new();
    sweep_thresholds()
        .map(|threshold| {
            let mut c = crate::matching::Counts::default();
            for frame in frames {
                kept.clear();
                kept.extend(
                    frame
                        .detections
                        .iter()
                        .filter(|d| d.score >= threshold)
                        .cloned(),
                );
                c.add(&tally_frame(&frame.truth, &kept, &[], ignored).overall);
            }
            SweepPoint {
                threshold: round3(f64::from(threshold)),
                precision: round3(c.precision()),
                recall: round3(c.recall()),
                f1: round3(c.f1()),
                tp: c.tp,
                fp: c.fp,
                fn_: c.fn_,
            }
        })
        .collect()
}

/// The point of highest F1 (ties go to the highest threshold: below the strategy's `min_score` the sweep only
/// repeats the unfiltered numbers); F1 of an empty sweep is 0 at threshold 0.
pub(crate) fn best_f1(sweep: &[SweepPoint]) -> BestF1 {
    let best = sweep
        .iter()
        .rev()
        .reduce(|best, p| if p.f1 > best.f1 { p } else { best });
    best.map_or(
        BestF1 {
            threshold: 0.0,
            precision: 0.0,
            recall: 0.0,
            f1: 0.0,
        },
        |p| BestF1 {
            threshold: p.threshold,
            precision: p.precision,
            recall: p.recall,
            f1: p.f1,
        },
    )
}
