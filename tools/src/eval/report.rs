//! The detection report of `saccade eval`: per-class, per-size and cost figures, as JSON and as text.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::{split::*, stats::*};
use crate::matching::{SignCounts, SizeBucket, Tally, LARGE_ABOVE_PX, SMALL_BELOW_PX};
use crate::summary::{round3, StageJson};

/// Per-class metrics in the report.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ClassReport {
    pub tp: u64,
    pub fp: u64,
    #[serde(rename = "fn")]
    pub fn_: u64,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    /// `null` where no matched box of the class has a class id.
    pub class_accuracy: Option<f64>,
}

/// The signs of one size bucket (or of all): how many, found, looked at.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SignsReport {
    pub signs: u64,
    pub found: u64,
    /// `found / signs`; `null` without signs.
    pub recall: Option<f64>,
    pub looked_at: u64,
    /// `looked_at / signs`; `null` without signs.
    pub looked_at_share: Option<f64>,
    pub found_when_looked_at: u64,
}

impl From<SignCounts> for SignsReport {
    fn from(c: SignCounts) -> Self {
        Self {
            signs: c.signs,
            found: c.found,
            recall: c.recall().map(round3),
            looked_at: c.looked_at,
            looked_at_share: c.looked_at_share().map(round3),
            found_when_looked_at: c.found_when_looked_at,
        }
    }
}

impl SignsReport {
    /// Signs neither looked at nor found.
    pub fn glance_misses(&self) -> u64 {
        self.counts().glance_misses()
    }
    /// Signs looked at but not found.
    pub fn focus_misses(&self) -> u64 {
        self.counts().focus_misses()
    }
    fn counts(&self) -> SignCounts {
        SignCounts {
            signs: self.signs,
            found: self.found,
            looked_at: self.looked_at,
            found_when_looked_at: self.found_when_looked_at,
        }
    }
}

/// Signs per Tsinghua-Tencent 100K size bucket of the larger box side in frame pixels: small `< 32`, medium
/// `32..=96`, large `> 96`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct BySizeReport {
    pub small: SignsReport,
    pub medium: SignsReport,
    pub large: SignsReport,
}

impl BySizeReport {
    pub(crate) fn from_tally(tally: &Tally) -> Self {
        Self {
            small: tally.signs(SizeBucket::Small).into(),
            medium: tally.signs(SizeBucket::Medium).into(),
            large: tally.signs(SizeBucket::Large).into(),
        }
    }

    fn get(&self, bucket: SizeBucket) -> &SignsReport {
        match bucket {
            SizeBucket::Small => &self.small,
            SizeBucket::Medium => &self.medium,
            SizeBucket::Large => &self.large,
        }
    }
}

/// What `saccade eval` reports (and `saccade bench` per strategy): keys documented in `docs/EVAL.md`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct EvalReport {
    pub strategy: String,
    /// Which frames of the folder were evaluated (`all` unless `saccade eval --split` says otherwise).
    pub split: EvalSplit,
    pub frames: u64,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub class_accuracy: Option<f64>,
    pub tp: u64,
    pub fp: u64,
    #[serde(rename = "fn")]
    pub fn_: u64,
    /// Non-ignored truth boxes (`tp + fn`).
    pub signs: u64,
    /// Signs whose centre lies inside a patch the strategy examined.
    pub looked_at: u64,
    /// `looked_at / signs`; `null` without signs.
    pub looked_at_share: Option<f64>,
    /// Signs both looked at and found.
    pub found_when_looked_at: u64,
    pub by_size: BySizeReport,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub patches_per_frame: f64,
    pub pixel_fraction: f64,
    pub mflops_per_frame: f64,
    pub backbone_mflops_per_frame: f64,
    pub glance_mflops: f64,
    pub early_exit_rate: f64,
    pub peak_rss_mb: f64,
    pub wall_s: f64,
    pub stages: BTreeMap<&'static str, StageJson>,
    pub per_class: BTreeMap<String, ClassReport>,
    /// `saccade eval --strategy-config`, if given.
    pub strategy_config: Option<String>,
    /// The evaluated strategy's settings as applied (`null` where the caller did not record them, as in bench).
    pub strategy_settings: Option<serde_json::Value>,
    /// Detection quality counting only detections with score ≥ threshold, for each of [`sweep_thresholds`].
    pub score_sweep: Vec<SweepPoint>,
    /// The sweep's point of highest F1 (ties: the highest threshold).
    pub best_f1: BestF1,
    /// 95 % intervals of precision, recall and F1 by bootstrap over frames.
    pub ci95: Intervals95,
}

impl EvalReport {
    /// The human report.
    pub fn human(&self) -> String {
        let mut s = String::new();
        let pct = |x: f64| x * 100.0;
        let _ = writeln!(
            s,
            "saccade eval: strategy `{}`, {} frames ({} split) in {:.1} s",
            self.strategy,
            self.frames,
            self.split.name(),
            self.wall_s
        );
        let _ = writeln!(
            s,
            "  detection: precision {:.1} %, recall {:.1} %, F1 {:.3} (TP {}, FP {}, FN {}); class accuracy of matched boxes {}",
            pct(self.precision),
            pct(self.recall),
            self.f1,
            self.tp,
            self.fp,
            self.fn_,
            self.class_accuracy
                .map_or("n/a (no class ids)".to_string(), |a| format!("{:.1} %", pct(a)))
        );
        let ci = &self.ci95;
        let _ = writeln!(
            s,
            "  95 % intervals over frames ({} bootstrap draws): precision {:.3}–{:.3}, recall {:.3}–{:.3}, F1 {:.3}–{:.3}",
            ci.resamples, ci.precision[0], ci.precision[1], ci.recall[0], ci.recall[1], ci.f1[0], ci.f1[1]
        );
        self.write_sign_table(&mut s);
        crate::summary::write_stage_table(&mut s, &self.stages, "decode");
        let _ = writeln!(
            s,
            "  patches/frame {:.2}, full-res pixels seen {:.2} %, {:.2} MFLOPs/frame (backbone {:.2} + glance {:.2}), early-exit rate {:.0} %, peak RSS {:.0} MB",
            self.patches_per_frame,
            pct(self.pixel_fraction),
            self.mflops_per_frame,
            self.backbone_mflops_per_frame,
            self.glance_mflops,
            pct(self.early_exit_rate),
            self.peak_rss_mb
        );
        if !self.per_class.is_empty() {
            let _ = writeln!(
                s,
                "  {:<40} {:>4} {:>4} {:>4} {:>6} {:>6} {:>6} {:>7}",
                "class", "TP", "FP", "FN", "prec", "recall", "F1", "cls acc"
            );
            for (name, c) in &self.per_class {
                let _ = writeln!(
                    s,
                    "  {:<40} {:>4} {:>4} {:>4} {:>6.3} {:>6.3} {:>6.3} {:>7}",
                    name,
                    c.tp,
                    c.fp,
                    c.fn_,
                    c.precision,
                    c.recall,
                    c.f1,
                    c.class_accuracy
                        .map_or("-".to_string(), |a| format!("{a:.3}"))
                );
            }
        }
        let b = &self.best_f1;
        let _ = writeln!(
            s,
            "  best F1 over score thresholds: {:.3} at score ≥ {:.2} (precision {:.1} %, recall {:.1} %)",
            b.f1,
            b.threshold,
            pct(b.precision),
            pct(b.recall)
        );
        s
    }

    /// The score sweep, one line per threshold.
    pub fn sweep_table(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "  {:>6} {:>6} {:>6} {:>6} {:>5} {:>5} {:>5}",
            "score≥", "prec", "recall", "F1", "TP", "FP", "FN"
        );
        for p in &self.score_sweep {
            let best = if p.threshold == self.best_f1.threshold {
                "  ← best F1"
            } else {
                ""
            };
            let _ = writeln!(
                s,
                "  {:>6.2} {:>6.3} {:>6.3} {:>6.3} {:>5} {:>5} {:>5}{best}",
                p.threshold, p.precision, p.recall, p.f1, p.tp, p.fp, p.fn_
            );
        }
        s
    }

    /// Signs per size bucket: found, looked at, and where the misses happened.
    fn write_sign_table(&self, s: &mut String) {
        let rate = |x: Option<f64>| x.map_or("-".to_string(), |x| format!("{:.1} %", x * 100.0));
        let all = SignsReport {
            signs: self.signs,
            found: self.tp,
            recall: (self.signs > 0).then_some(self.recall),
            looked_at: self.looked_at,
            looked_at_share: self.looked_at_share,
            found_when_looked_at: self.found_when_looked_at,
        };
        let _ = writeln!(
            s,
            "  signs by larger box side: glance misses {} (not looked at, not found), focus misses {} (looked at, not found)",
            all.glance_misses(),
            all.focus_misses()
        );
        let _ = writeln!(
            s,
            "  {:<16} {:>6} {:>6} {:>8} {:>9} {:>8} {:>12}",
            "size (px)", "signs", "found", "recall", "looked at", "share", "found|looked"
        );
        let labels = [
            format!("small <{SMALL_BELOW_PX}"),
            format!("medium {SMALL_BELOW_PX}–{LARGE_ABOVE_PX}"),
            format!("large >{LARGE_ABOVE_PX}"),
        ];
        let rows = SizeBucket::ALL
            .iter()
            .zip(&labels)
            .map(|(b, label)| (label.as_str(), self.by_size.get(*b)))
            .chain([("all", &all)]);
        for (label, r) in rows {
            let _ = writeln!(
                s,
                "  {:<16} {:>6} {:>6} {:>8} {:>9} {:>8} {:>12}",
                label,
                r.signs,
                r.found,
                rate(r.recall),
                r.looked_at,
                rate(r.looked_at_share),
                r.found_when_looked_at
            );
        }
    }
}
