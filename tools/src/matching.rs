//! Matching detections to truth boxes and the detection metrics built on it, for `saccade eval` and
//! `saccade bench`.
//!
//! Matching is greedy and class-agnostic, highest score first: a detection takes the unmatched truth box it
//! overlaps most (IoU ≥ [`IOU_MATCH_THRESHOLD`]) and is a true positive; a second detection of an already
//! matched box is a false positive (a duplicate); a detection that only overlaps an *ignored* box is neutral
//! (neither TP nor FP), as is every detection of an ignored box. Classification accuracy is measured on the
//! matched boxes that carry a GTSRB class id; boxes without one count for localisation only.
//!
//! Empty denominators read as 1 (no detection made: nothing was wrong; no box to find: nothing was missed), so
//! every rate stays in `[0, 1]`; F1 is 0 when precision and recall are both 0.

use std::collections::{BTreeMap, HashSet};

use saccade_runtime::frame::BoxPx;

/// IoU a detection needs with a truth box to count as finding it.
pub const IOU_MATCH_THRESHOLD: f32 = 0.5;

/// A box of the ground truth of one frame.
#[derive(Debug, Clone, PartialEq)]
pub struct TruthEntry {
    pub bbox: BoxPx,
    /// The annotation's `class` (for synthetic scenes the GTSRB class name): the key of per-class metrics and
    /// of `--ignore-classes`.
    pub class_name: String,
    /// GTSRB class id; `None`: the box counts for localisation only.
    pub class_id: Option<usize>,
}

/// A detection as matching sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct DetectionEntry {
    pub bbox: BoxPx,
    pub score: f32,
    pub class_id: usize,
    /// Name of the predicted class: where a false positive is counted per class.
    pub class_name: String,
}

/// What matching decided about one detection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Found the truth box with this index.
    TruePositive { truth: usize },
    /// Found nothing (or a box another, higher-scored detection already found).
    FalsePositive,
    /// Overlaps an ignored box only.
    Neutral,
}

/// Counts of one class, or of everything.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counts {
    pub tp: u64,
    pub fp: u64,
    #[serde(rename = "fn")]
    pub fn_: u64,
    /// Matched boxes that carry a class id.
    pub classified: u64,
    /// Of those, how many got the right class.
    pub class_correct: u64,
}

fn ratio_or_one(numerator: u64, denominator: u64) -> f64 {
    if denominator == 0 {
        1.0
    } else {
        numerator as f64 / denominator as f64
    }
}

impl Counts {
    pub fn add(&mut self, other: &Counts) {
        self.tp += other.tp;
        self.fp += other.fp;
        self.fn_ += other.fn_;
        self.classified += other.classified;
        self.class_correct += other.class_correct;
    }
    pub fn precision(&self) -> f64 {
        ratio_or_one(self.tp, self.tp + self.fp)
    }
    pub fn recall(&self) -> f64 {
        ratio_or_one(self.tp, self.tp + self.fn_)
    }
    pub fn f1(&self) -> f64 {
        let (p, r) = (self.precision(), self.recall());
        if p + r <= 0.0 {
            0.0
        } else {
            2.0 * p * r / (p + r)
        }
    }
    /// Share of the matched, class-labelled boxes classified right (1 when there is none).
    pub fn class_accuracy(&self) -> f64 {
        ratio_or_one(self.class_correct, self.classified)
    }
}

/// The outcome of matching one frame: overall counts and counts per class name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tally {
    pub overall: Counts,
    pub per_class: BTreeMap<String, Counts>,
}

impl Tally {
    /// Adds `c` to the overall counts and to those of `class`.
    fn count(&mut self, class: &str, c: &Counts) {
        self.overall.add(c);
        self.per_class.entry(class.to_string()).or_default().add(c);
    }

    pub fn add(&mut self, other: &Tally) {
        self.overall.add(&other.overall);
        for (name, counts) in &other.per_class {
            self.per_class.entry(name.clone()).or_default().add(counts);
        }
    }
}

/// Greedy class-agnostic matching, highest score first; returns one verdict per detection, in input order.
/// Truth boxes whose class is in `ignored` are neutral.
pub fn match_detections(
    truth: &[TruthEntry],
    detections: &[DetectionEntry],
    ignored: &HashSet<String>,
    iou_threshold: f32,
) -> Vec<Verdict> {
    let mut order: Vec<usize> = (0..detections.len()).collect();
    // NaN scores sort last: they must not win a box over a real score.
    order.sort_by(|&a, &b| {
        let (sa, sb) = (detections[a].score, detections[b].score);
        sb.partial_cmp(&sa)
            .unwrap_or_else(|| sa.is_nan().cmp(&sb.is_nan()))
    });
    let is_ignored: Vec<bool> = truth
        .iter()
        .map(|t| ignored.contains(&t.class_name))
        .collect();
    let mut taken = vec![false; truth.len()];
    let mut verdicts = vec![Verdict::FalsePositive; detections.len()];
    for d in order {
        let det = &detections[d].bbox;
        let mut best: Option<(usize, f32)> = None;
        let mut touches_ignored = false;
        for (t, entry) in truth.iter().enumerate() {
            let iou = det.iou(&entry.bbox);
            if iou < iou_threshold {
                continue;
            }
            if is_ignored[t] {
                touches_ignored = true;
            } else if !taken[t] && best.is_none_or(|(_, b)| iou > b) {
                best = Some((t, iou));
            }
        }
        verdicts[d] = match best {
            Some((t, _)) => {
                taken[t] = true;
                Verdict::TruePositive { truth: t }
            }
            None if touches_ignored => Verdict::Neutral,
            None => Verdict::FalsePositive,
        };
    }
    verdicts
}

/// Matches one frame and counts TP/FP/FN and classification, overall and per class (TP and FN under the
/// truth box's class, FP under the predicted class).
pub fn tally_frame(
    truth: &[TruthEntry],
    detections: &[DetectionEntry],
    ignored: &HashSet<String>,
) -> Tally {
    let verdicts = match_detections(truth, detections, ignored, IOU_MATCH_THRESHOLD);
    let mut tally = Tally::default();
    let mut found = vec![false; truth.len()];
    for (det, verdict) in detections.iter().zip(&verdicts) {
        match *verdict {
            Verdict::TruePositive { truth: t } => {
                found[t] = true;
                let mut c = Counts {
                    tp: 1,
                    ..Counts::default()
                };
                if let Some(id) = truth[t].class_id {
                    c.classified = 1;
                    c.class_correct = u64::from(id == det.class_id);
                }
                tally.count(&truth[t].class_name, &c);
            }
            Verdict::FalsePositive => {
                let c = Counts {
                    fp: 1,
                    ..Counts::default()
                };
                tally.count(&det.class_name, &c);
            }
            Verdict::Neutral => {}
        }
    }
    for (t, entry) in truth.iter().enumerate() {
        if found[t] || ignored.contains(&entry.class_name) {
            continue;
        }
        let c = Counts {
            fn_: 1,
            ..Counts::default()
        };
        tally.count(&entry.class_name, &c);
    }
    tally
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn truth(b: [f32; 4], name: &str, id: Option<usize>) -> TruthEntry {
        TruthEntry {
            bbox: BoxPx::new(b[0], b[1], b[2], b[3]),
            class_name: name.to_string(),
            class_id: id,
        }
    }

    fn det(b: [f32; 4], score: f32, id: usize) -> DetectionEntry {
        DetectionEntry {
            bbox: BoxPx::new(b[0], b[1], b[2], b[3]),
            score,
            class_id: id,
            class_name: format!("c{id}"),
        }
    }

    fn none() -> HashSet<String> {
        HashSet::new()
    }

    #[test]
    fn duplicate_detection_is_a_false_positive() {
        let t = [truth([0.0, 0.0, 10.0, 10.0], "c1", Some(1))];
        let d = [
            det([0.0, 0.0, 10.0, 10.0], 0.6, 1),
            det([1.0, 0.0, 11.0, 10.0], 0.9, 1),
        ];
        let v = match_detections(&t, &d, &none(), IOU_MATCH_THRESHOLD);
        // The higher score wins the box even though the other fits better.
        assert_eq!(
            v,
            vec![Verdict::FalsePositive, Verdict::TruePositive { truth: 0 }]
        );
        let tally = tally_frame(&t, &d, &none());
        assert_eq!(
            (tally.overall.tp, tally.overall.fp, tally.overall.fn_),
            (1, 1, 0)
        );
        assert_eq!(tally.overall.precision(), 0.5);
        assert_eq!(tally.overall.recall(), 1.0);
    }

    #[test]
    fn ignored_box_is_neutral_whether_found_or_missed() {
        let t = [
            truth([0.0, 0.0, 10.0, 10.0], "trafficlight", None),
            truth([50.0, 50.0, 60.0, 60.0], "trafficlight", None),
        ];
        let d = [det([0.0, 0.0, 10.0, 10.0], 0.9, 3)];
        let ignored: HashSet<String> = ["trafficlight".to_string()].into();
        assert_eq!(
            match_detections(&t, &d, &ignored, IOU_MATCH_THRESHOLD),
            vec![Verdict::Neutral]
        );
        let tally = tally_frame(&t, &d, &ignored);
        assert_eq!(tally.overall, Counts::default());
        // Without --ignore-classes the same frame has one TP and one FN.
        let tally = tally_frame(&t, &d, &none());
        assert_eq!(
            (tally.overall.tp, tally.overall.fp, tally.overall.fn_),
            (1, 0, 1)
        );
    }

    #[test]
    fn box_without_class_id_counts_for_localisation_only() {
        let t = [
            truth([0.0, 0.0, 10.0, 10.0], "speedlimit", None),
            truth([20.0, 0.0, 30.0, 10.0], "stop", Some(14)),
        ];
        let d = [
            det([0.0, 0.0, 10.0, 10.0], 0.9, 2),
            det([20.0, 0.0, 30.0, 10.0], 0.8, 13),
        ];
        let tally = tally_frame(&t, &d, &none());
        assert_eq!(tally.overall.tp, 2);
        assert_eq!(tally.overall.classified, 1);
        assert_eq!(tally.overall.class_correct, 0);
        assert_eq!(tally.per_class["speedlimit"].classified, 0);
        assert_eq!(tally.per_class["stop"].classified, 1);
        assert_eq!(tally.overall.class_accuracy(), 0.0);
    }

    #[test]
    fn low_overlap_is_a_miss_and_a_false_positive_under_the_predicted_class() {
        let t = [truth([0.0, 0.0, 10.0, 10.0], "c1", Some(1))];
        let d = [det([6.0, 0.0, 16.0, 10.0], 0.9, 5)];
        let tally = tally_frame(&t, &d, &none());
        assert_eq!(
            (tally.overall.tp, tally.overall.fp, tally.overall.fn_),
            (0, 1, 1)
        );
        assert_eq!(tally.per_class["c5"].fp, 1);
        assert_eq!(tally.per_class["c1"].fn_, 1);
        assert_eq!(tally.overall.f1(), 0.0);
    }

    #[test]
    fn empty_frame_without_detections_is_perfect() {
        let tally = tally_frame(&[], &[], &none());
        assert_eq!(tally.overall.precision(), 1.0);
        assert_eq!(tally.overall.recall(), 1.0);
        assert_eq!(tally.overall.f1(), 1.0);
    }

    fn arb_box() -> impl Strategy<Value = [f32; 4]> {
        (0.0f32..500.0, 0.0f32..500.0, 1.0f32..100.0, 1.0f32..100.0)
            .prop_map(|(x, y, w, h)| [x, y, x + w, y + h])
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn rates_stay_in_unit_interval(
            truths in prop::collection::vec((arb_box(), 0usize..4, prop::option::of(0usize..43)), 0..8),
            dets in prop::collection::vec((arb_box(), 0.0f32..1.0, 0usize..44), 0..10),
            ignore_class in prop::option::of(0usize..4),
        ) {
            let t: Vec<TruthEntry> =
                truths.iter().map(|(b, n, id)| truth(*b, &format!("c{n}"), *id)).collect();
            let d: Vec<DetectionEntry> = dets.iter().map(|(b, s, id)| det(*b, *s, *id)).collect();
            let ignored: HashSet<String> = ignore_class.map(|c| format!("c{c}")).into_iter().collect();
            let tally = tally_frame(&t, &d, &ignored);
            let c = tally.overall;
            for x in [c.precision(), c.recall(), c.f1(), c.class_accuracy()] {
                prop_assert!((0.0..=1.0).contains(&x), "{x} from {c:?}");
            }
            // Every detection is TP, FP or neutral; every non-ignored truth box is TP or FN.
            prop_assert!(c.tp + c.fp <= d.len() as u64);
            let counted = t.iter().filter(|e| !ignored.contains(&e.class_name)).count() as u64;
            prop_assert_eq!(c.tp + c.fn_, counted);
        }

        #[test]
        fn perfect_detections_score_one(
            truths in prop::collection::vec((arb_box(), 0usize..43), 1..8),
        ) {
            let t: Vec<TruthEntry> =
                truths.iter().map(|(b, id)| truth(*b, &format!("c{id}"), Some(*id))).collect();
            let d: Vec<DetectionEntry> =
                truths.iter().enumerate().map(|(i, (b, id))| det(*b, 1.0 - i as f32 * 0.01, *id)).collect();
            let c = tally_frame(&t, &d, &HashSet::new()).overall;
            prop_assert_eq!(c.precision(), 1.0);
            prop_assert_eq!(c.recall(), 1.0);
            prop_assert_eq!(c.f1(), 1.0);
            prop_assert_eq!(c.class_accuracy(), 1.0);
        }
    }
}
