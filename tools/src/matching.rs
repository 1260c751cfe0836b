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
//!
//! Every non-ignored truth box is also counted per [`SizeBucket`] (the larger side of the box in frame pixels)
//! as found or not, and as *looked at* or not: looked at when its centre lies inside a patch the strategy
//! examined. A sign not looked at and not found is a glance miss; looked at and not found, a focus miss.

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
    /// Non-ignored signs per size bucket, indexed in [`SizeBucket::ALL`] order: use [`Tally::signs`].
    pub by_size: [SignCounts; 3],
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
        for (mine, theirs) in self.by_size.iter_mut().zip(&other.by_size) {
            mine.add(theirs);
        }
    }

    /// The signs of one size bucket.
    pub fn signs(&self, bucket: SizeBucket) -> SignCounts {
        self.by_size[bucket.index()]
    }

    /// The signs of all buckets together.
    pub fn all_signs(&self) -> SignCounts {
        let mut all = SignCounts::default();
        for counts in &self.by_size {
            all.add(counts);
        }
        all
    }
}

/// Signs whose larger side is below this many frame pixels are small (Tsinghua-Tencent 100K buckets).
pub const SMALL_BELOW_PX: f32 = 32.0;
/// Signs whose larger side is above this many frame pixels are large; from [`SMALL_BELOW_PX`] up to and
/// including this, medium.
pub const LARGE_ABOVE_PX: f32 = 96.0;

/// Size bucket of a sign: small `< 32`, medium `32..=96`, large `> 96` px of the box's larger side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SizeBucket {
    Small,
    Medium,
    Large,
}

impl SizeBucket {
    pub const ALL: [SizeBucket; 3] = [SizeBucket::Small, SizeBucket::Medium, SizeBucket::Large];

    pub fn name(self) -> &'static str {
        match self {
            SizeBucket::Small => "small",
            SizeBucket::Medium => "medium",
            SizeBucket::Large => "large",
        }
    }

    /// The bucket of a sign whose larger side is `side_px` frame pixels.
    pub fn of_side_px(side_px: f32) -> Self {
        if side_px < SMALL_BELOW_PX {
            SizeBucket::Small
        } else if side_px <= LARGE_ABOVE_PX {
            SizeBucket::Medium
        } else {
            SizeBucket::Large
        }
    }

    /// The bucket of a truth box (exclusive right/bottom edge, so a CSV box with inclusive corners 0..=31 is
    /// 32 px wide).
    pub fn of_box(bbox_frame: &BoxPx) -> Self {
        Self::of_side_px(bbox_frame.width().max(bbox_frame.height()))
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// What became of the (non-ignored) signs of one size bucket, or of all of them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SignCounts {
    pub signs: u64,
    /// Signs a detection matched (the TPs).
    pub found: u64,
    /// Signs whose centre lies inside a patch the strategy examined.
    pub looked_at: u64,
    /// Signs both looked at and found.
    pub found_when_looked_at: u64,
}

fn ratio_or_none(numerator: u64, denominator: u64) -> Option<f64> {
    (denominator > 0).then(|| numerator as f64 / denominator as f64)
}

impl SignCounts {
    pub fn add(&mut self, other: &SignCounts) {
        self.signs += other.signs;
        self.found += other.found;
        self.looked_at += other.looked_at;
        self.found_when_looked_at += other.found_when_looked_at;
    }
    /// `found / signs`; `None` without signs (a bucket with no sign has no recall to speak of).
    pub fn recall(&self) -> Option<f64> {
        ratio_or_none(self.found, self.signs)
    }
    /// `looked_at / signs`; `None` without signs.
    pub fn looked_at_share(&self) -> Option<f64> {
        ratio_or_none(self.looked_at, self.signs)
    }
    /// Signs neither looked at nor found: the glance did not send focus there.
    pub fn glance_misses(&self) -> u64 {
        let not_looked_at = self.signs.saturating_sub(self.looked_at);
        let found_unlooked = self.found.saturating_sub(self.found_when_looked_at);
        not_looked_at.saturating_sub(found_unlooked)
    }
    /// Signs looked at but not found: focus examined them and missed.
    pub fn focus_misses(&self) -> u64 {
        self.looked_at.saturating_sub(self.found_when_looked_at)
    }
}

/// Whether the centre of `sign_frame` lies inside any of `patches_frame` (half-open boxes: a centre on a
/// patch's right or bottom edge is outside it, as that pixel column was not cut out).
pub fn is_looked_at(sign_frame: &BoxPx, patches_frame: &[BoxPx]) -> bool {
    let (cx, cy) = sign_frame.centre();
    patches_frame
        .iter()
        .any(|p| p.xmin <= cx && cx < p.xmax && p.ymin <= cy && cy < p.ymax)
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

/// Which of `truth_len` truth boxes a detection matched, from [`match_detections`]' verdicts.
pub fn found_flags(verdicts: &[Verdict], truth_len: usize) -> Vec<bool> {
    let mut found = vec![false; truth_len];
    for v in verdicts {
        if let Verdict::TruePositive { truth } = *v {
            found[truth] = true;
        }
    }
    found
}

/// Matches one frame and counts TP/FP/FN and classification, overall and per class (TP and FN under the
/// truth box's class, FP under the predicted class), and the non-ignored signs per size bucket: found, and
/// looked at (centre inside one of `patches_frame`, the boxes of the patches the strategy examined).
pub fn tally_frame(
    truth: &[TruthEntry],
    detections: &[DetectionEntry],
    patches_frame: &[BoxPx],
    ignored: &HashSet<String>,
) -> Tally {
    let verdicts = match_detections(truth, detections, ignored, IOU_MATCH_THRESHOLD);
    let mut tally = Tally::default();
    let found = found_flags(&verdicts, truth.len());
    for (det, verdict) in detections.iter().zip(&verdicts) {
        match *verdict {
            Verdict::TruePositive { truth: t } => {
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
        if ignored.contains(&entry.class_name) {
            continue;
        }
        let looked_at = is_looked_at(&entry.bbox, patches_frame);
        let signs = &mut tally.by_size[SizeBucket::of_box(&entry.bbox).index()];
        signs.signs += 1;
        signs.found += u64::from(found[t]);
        signs.looked_at += u64::from(looked_at);
        signs.found_when_looked_at += u64::from(found[t] && looked_at);
        if found[t] {
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
        let tally = tally_frame(&t, &d, &[], &none());
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
        let tally = tally_frame(&t, &d, &[], &ignored);
        assert_eq!(tally.overall, Counts::default());
        // Without --ignore-classes the same frame has one TP and one FN.
        let tally = tally_frame(&t, &d, &[], &none());
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
        let tally = tally_frame(&t, &d, &[], &none());
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
        let tally = tally_frame(&t, &d, &[], &none());
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
        let tally = tally_frame(&[], &[], &[], &none());
        assert_eq!(tally.overall.precision(), 1.0);
        assert_eq!(tally.overall.recall(), 1.0);
        assert_eq!(tally.overall.f1(), 1.0);
    }

    fn patch(b: [f32; 4]) -> BoxPx {
        BoxPx::new(b[0], b[1], b[2], b[3])
    }

    #[test]
    fn size_buckets_split_below_32_and_above_96_px_of_the_larger_side() {
        assert_eq!(SizeBucket::of_side_px(0.0), SizeBucket::Small);
        assert_eq!(SizeBucket::of_side_px(31.9), SizeBucket::Small);
        assert_eq!(SizeBucket::of_side_px(32.0), SizeBucket::Medium);
        assert_eq!(SizeBucket::of_side_px(96.0), SizeBucket::Medium);
        assert_eq!(SizeBucket::of_side_px(96.1), SizeBucket::Large);
        // The larger side decides: 20 wide and 40 tall is medium, 100 wide and 10 tall is large.
        assert_eq!(
            SizeBucket::of_box(&patch([0.0, 0.0, 20.0, 40.0])),
            SizeBucket::Medium
        );
        assert_eq!(
            SizeBucket::of_box(&patch([5.0, 5.0, 105.0, 15.0])),
            SizeBucket::Large
        );
        assert_eq!(
            SizeBucket::of_box(&patch([10.0, 10.0, 41.9, 41.9])),
            SizeBucket::Small
        );
    }

    #[test]
    fn sign_centred_in_a_patch_but_not_detected_is_looked_at_and_not_found() {
        let t = [truth([100.0, 100.0, 120.0, 120.0], "c1", Some(1))];
        let patches = [
            patch([0.0, 0.0, 50.0, 50.0]),
            patch([96.0, 96.0, 160.0, 160.0]),
        ];
        let tally = tally_frame(&t, &[], &patches, &none());
        let small = tally.signs(SizeBucket::Small);
        assert_eq!(
            small,
            SignCounts {
                signs: 1,
                found: 0,
                looked_at: 1,
                found_when_looked_at: 0
            }
        );
        assert_eq!((small.focus_misses(), small.glance_misses()), (1, 0));
        assert_eq!(small.looked_at_share(), Some(1.0));
        assert_eq!(small.recall(), Some(0.0));
        assert_eq!(tally.signs(SizeBucket::Medium), SignCounts::default());
        assert_eq!(tally.signs(SizeBucket::Medium).recall(), None);
    }

    #[test]
    fn sign_outside_every_patch_is_not_looked_at_even_when_found() {
        // A 40 px sign centred at (120, 120); the patches overlap it but hold not its centre (right and
        // bottom patch edges are exclusive).
        let t = [truth([100.0, 100.0, 140.0, 140.0], "c1", Some(1))];
        let patches = [
            patch([0.0, 0.0, 120.0, 200.0]),
            patch([0.0, 0.0, 200.0, 120.0]),
        ];
        let missed = tally_frame(&t, &[], &patches, &none()).signs(SizeBucket::Medium);
        assert_eq!((missed.signs, missed.looked_at, missed.found), (1, 0, 0));
        assert_eq!((missed.glance_misses(), missed.focus_misses()), (1, 0));
        // Found by a detection all the same (e.g. from a neighbouring patch): found, not looked at.
        let d = [det([100.0, 100.0, 140.0, 140.0], 0.9, 1)];
        let found = tally_frame(&t, &d, &patches, &none()).signs(SizeBucket::Medium);
        assert_eq!(
            (found.found, found.looked_at, found.found_when_looked_at),
            (1, 0, 0)
        );
        assert_eq!((found.glance_misses(), found.focus_misses()), (0, 0));
        // A patch whose left/top edge is the centre holds it.
        let edge = [patch([120.0, 120.0, 130.0, 130.0])];
        assert!(is_looked_at(&t[0].bbox, &edge));
        assert!(!is_looked_at(&t[0].bbox, &[]));
    }

    #[test]
    fn ignored_signs_are_left_out_of_size_buckets_and_looked_at() {
        let t = [
            truth([0.0, 0.0, 10.0, 10.0], "trafficlight", None),
            truth([20.0, 20.0, 30.0, 30.0], "c1", Some(1)),
        ];
        let d = [
            det([0.0, 0.0, 10.0, 10.0], 0.9, 3),
            det([20.0, 20.0, 30.0, 30.0], 0.8, 1),
        ];
        let patches = [patch([0.0, 0.0, 40.0, 40.0])];
        let ignored: HashSet<String> = ["trafficlight".to_string()].into();
        let tally = tally_frame(&t, &d, &patches, &ignored);
        let expected = SignCounts {
            signs: 1,
            found: 1,
            looked_at: 1,
            found_when_looked_at: 1,
        };
        assert_eq!(tally.signs(SizeBucket::Small), expected);
        assert_eq!(tally.all_signs(), expected);
        // Not ignored, the traffic light is a second small sign, found and looked at.
        let tally = tally_frame(&t, &d, &patches, &none());
        assert_eq!(tally.signs(SizeBucket::Small).signs, 2);
        assert_eq!(tally.signs(SizeBucket::Small).looked_at, 2);
    }

    #[test]
    fn tallies_add_up_size_buckets() {
        let t = [truth([0.0, 0.0, 50.0, 50.0], "c1", Some(1))];
        let patches = [patch([0.0, 0.0, 64.0, 64.0])];
        let mut total = tally_frame(&t, &[], &patches, &none());
        total.add(&tally_frame(&t, &[], &[], &none()));
        let medium = total.signs(SizeBucket::Medium);
        assert_eq!((medium.signs, medium.looked_at), (2, 1));
        assert_eq!(medium.looked_at_share(), Some(0.5));
    }

    fn arb_box() -> impl Strategy<Value = [f32; 4]> {
        (0.0f32..500.0, 0.0f32..500.0, 1.0f32..100.0, 1.0f32..100.0)
            .prop_map(|(x, y, w, h)| [x, y, x + w, y + h])
    }

    /// Boxes of every size bucket (up to 200 px a side) on a 300×300 field, so they overlap often.
    fn arb_sized_box() -> impl Strategy<Value = [f32; 4]> {
        (0.0f32..300.0, 0.0f32..300.0, 1.0f32..200.0, 1.0f32..200.0)
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
            let tally = tally_frame(&t, &d, &[], &ignored);
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
        fn size_buckets_partition_the_signs_and_found_never_exceeds_looked_at_or_not(
            truths in prop::collection::vec(
                (arb_sized_box(), 0usize..4, any::<bool>(), any::<bool>()),
                0..8,
            ),
            dets in prop::collection::vec((arb_sized_box(), 0.0f32..1.0, 0usize..44), 0..6),
            patches in prop::collection::vec(arb_sized_box(), 0..4),
            ignore_class in prop::option::of(0usize..4),
        ) {
            let t: Vec<TruthEntry> =
                truths.iter().map(|(b, n, _, _)| truth(*b, &format!("c{n}"), None)).collect();
            // Besides random ones, detect some signs exactly and put a small patch on the centre of some,
            // so that found, looked-at and both happen often.
            let mut d: Vec<DetectionEntry> = dets.iter().map(|(b, s, id)| det(*b, *s, *id)).collect();
            let mut p: Vec<BoxPx> = patches.iter().map(|b| patch(*b)).collect();
            for (b, _, detect, look) in &truths {
                if *detect {
                    d.push(det(*b, 0.5, 1));
                }
                if *look {
                    let (cx, cy) = patch(*b).centre();
                    p.push(BoxPx::new(cx - 4.0, cy - 4.0, cx + 4.0, cy + 4.0));
                }
            }
            let ignored: HashSet<String> = ignore_class.map(|c| format!("c{c}")).into_iter().collect();
            let tally = tally_frame(&t, &d, &p, &ignored);
            let mut sum = SignCounts::default();
            for bucket in SizeBucket::ALL {
                let c = tally.signs(bucket);
                prop_assert!(c.found_when_looked_at <= c.found, "{bucket:?} {c:?}");
                prop_assert!(c.found_when_looked_at <= c.looked_at, "{bucket:?} {c:?}");
                prop_assert!(c.found <= c.signs, "{bucket:?} {c:?}");
                prop_assert!(c.looked_at <= c.signs, "{bucket:?} {c:?}");
                // Found when looked at + found when not looked at = found, and both parts fit their sets.
                prop_assert!(c.found - c.found_when_looked_at <= c.signs - c.looked_at, "{bucket:?} {c:?}");
                // Every sign is a find, a glance miss or a focus miss.
                prop_assert_eq!(c.found + c.glance_misses() + c.focus_misses(), c.signs);
                for rate in [c.recall(), c.looked_at_share()].into_iter().flatten() {
                    prop_assert!((0.0..=1.0).contains(&rate));
                }
                sum.add(&c);
            }
            prop_assert_eq!(sum, tally.all_signs());
            let counted = t.iter().filter(|e| !ignored.contains(&e.class_name)).count() as u64;
            prop_assert_eq!(sum.signs, counted);
            prop_assert_eq!(sum.found, tally.overall.tp);
            prop_assert_eq!(sum.signs - sum.found, tally.overall.fn_);
            let looked = t
                .iter()
                .filter(|e| !ignored.contains(&e.class_name) && is_looked_at(&e.bbox, &p))
                .count() as u64;
            prop_assert_eq!(sum.looked_at, looked);
        }

        #[test]
        fn perfect_detections_score_one(
            truths in prop::collection::vec((arb_box(), 0usize..43), 1..8),
        ) {
            let t: Vec<TruthEntry> =
                truths.iter().map(|(b, id)| truth(*b, &format!("c{id}"), Some(*id))).collect();
            let d: Vec<DetectionEntry> =
                truths.iter().enumerate().map(|(i, (b, id))| det(*b, 1.0 - i as f32 * 0.01, *id)).collect();
            let c = tally_frame(&t, &d, &[], &HashSet::new()).overall;
            prop_assert_eq!(c.precision(), 1.0);
            prop_assert_eq!(c.recall(), 1.0);
            prop_assert_eq!(c.f1(), 1.0);
            prop_assert_eq!(c.class_accuracy(), 1.0);
        }
    }
}
