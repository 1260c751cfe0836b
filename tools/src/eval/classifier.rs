//! Accuracy, latency and top confusions of the patch classifier on GTSRB crops (`saccade eval-classifier`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Instant;

use anyhow::ensure;
use candle_core::{Device, Tensor, D};
use saccade_models::{class_name, PatchClassifier, NUM_SIGN_CLASSES};

use super::gtsrb::*;
use crate::summary::round3;

/// What `saccade eval-classifier` reports.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ClassifierReport {
    pub weights: String,
    pub model: String,
    pub images: usize,
    /// Images classified as their true class.
    pub correct: usize,
    /// `correct / images`, to 5 decimals (so the two decimals of a percentage are exact).
    pub accuracy: f64,
    /// Accuracy per GTSRB class name (classes without an image are left out).
    pub per_class_accuracy: BTreeMap<String, f64>,
    /// Images classified as background (always wrong on GTSRB crops).
    pub background_predictions: usize,
    /// The most frequent errors, most frequent first (at most [`TOP_CONFUSIONS`]).
    pub top_confusions: Vec<Confusion>,
    pub batch: usize,
    pub ms_per_patch: f64,
    pub p50_ms_per_batch: f64,
    pub mflops_per_patch: f64,
}

/// How many errors `saccade eval-classifier` lists.
pub const TOP_CONFUSIONS: usize = 10;

/// One kind of error: images of class `true_class` predicted as `predicted` (`43 background` included).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Confusion {
    pub true_class: String,
    pub predicted: String,
    pub count: usize,
}

pub(crate) fn class_label(c: usize) -> String {
    format!("{c:02} {}", class_name(c))
}

/// The `limit` most frequent (true, predicted) pairs with true ≠ predicted; ties by class ids.
pub(crate) fn top_confusions(labels: &[u8], predicted: &[usize], limit: usize) -> Vec<Confusion> {
    let mut counts: BTreeMap<(usize, usize), usize> = BTreeMap::new();
    for (&label, &p) in labels.iter().zip(predicted) {
        if label as usize != p {
            *counts.entry((label as usize, p)).or_default() += 1;
        }
    }
    let mut pairs: Vec<((usize, usize), usize)> = counts.into_iter().collect();
    pairs.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    pairs
        .into_iter()
        .take(limit)
        .map(|((t, p), count)| Confusion {
            true_class: class_label(t),
            predicted: class_label(p),
            count,
        })
        .collect()
}

/// Accuracy of `model` on `set` (background counts as wrong), batched by `batch`.
pub fn evaluate_classifier(
    model: &dyn PatchClassifier,
    set: &GtsrbTest,
    batch: usize,
    device: &Device,
) -> anyhow::Result<(Vec<usize>, f64, f64)> {
    ensure!(batch > 0, "--batch is 0, expected at least 1");
    let side = model.input_side_px();
    let mut predicted = Vec::with_capacity(set.len());
    let mut batch_ms = Vec::new();
    let mut total_s = 0.0;
    let mut buffer = Vec::with_capacity(batch * 3 * side * side);
    for start in (0..set.len()).step_by(batch) {
        let end = (start + batch).min(set.len());
        buffer.clear();
        for i in start..end {
            gtsrb_chw(set, i, side, &mut buffer);
        }
        let x = Tensor::from_slice(&buffer, (end - start, 3, side, side), device)?;
        let t = Instant::now();
        let probs = model.classify(&x)?;
        let classes = probs.argmax(D::Minus1)?.to_vec1::<u32>()?;
        let elapsed = t.elapsed().as_secs_f64();
        total_s += elapsed;
        batch_ms.push(elapsed * 1000.0);
        predicted.extend(classes.into_iter().map(|c| c as usize));
    }
    batch_ms.sort_by(f64::total_cmp);
    let p50 = batch_ms.get(batch_ms.len() / 2).copied().unwrap_or(0.0);
    let ms_per_patch = if set.is_empty() {
        0.0
    } else {
        total_s * 1000.0 / set.len() as f64
    };
    Ok((predicted, ms_per_patch, p50))
}

pub(crate) fn classifier_report(
    model: &dyn PatchClassifier,
    weights: &Path,
    set: &GtsrbTest,
    predicted: &[usize],
    batch: usize,
    ms_per_patch: f64,
    p50_ms_per_batch: f64,
) -> ClassifierReport {
    let mut correct = vec![0usize; NUM_SIGN_CLASSES];
    let mut total = vec![0usize; NUM_SIGN_CLASSES];
    for (&label, &p) in set.labels.iter().zip(predicted) {
        let label = label as usize;
        total[label] += 1;
        correct[label] += usize::from(p == label);
    }
    let all: usize = total.iter().sum();
    let all_correct: usize = correct.iter().sum();
    ClassifierReport {
        weights: weights.display().to_string(),
        model: model.describe(),
        images: all,
        correct: all_correct,
        accuracy: if all == 0 {
            0.0
        } else {
            (all_correct as f64 / all as f64 * 100_000.0).round() / 100_000.0
        },
        per_class_accuracy: (0..NUM_SIGN_CLASSES)
            .filter(|&c| total[c] > 0)
            .map(|c| (class_label(c), round3(correct[c] as f64 / total[c] as f64)))
            .collect(),
        background_predictions: predicted
            .iter()
            .filter(|&&p| p == saccade_models::BACKGROUND_CLASS)
            .count(),
        top_confusions: top_confusions(&set.labels, predicted, TOP_CONFUSIONS),
        batch,
        ms_per_patch: (ms_per_patch * 10_000.0).round() / 10_000.0,
        p50_ms_per_batch: round3(p50_ms_per_batch),
        mflops_per_patch: round3(model.mflops_per_patch()),
    }
}

impl ClassifierReport {
    pub fn human(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "saccade eval-classifier: {} ({}) on {} GTSRB images",
            self.weights, self.model, self.images
        );
        let _ = writeln!(
            s,
            "  accuracy {:.2} % ({} of {} right, {} predicted background); {:.4} ms/patch at batch {} (p50 {:.2} ms/batch), {:.2} MFLOPs/patch",
            self.accuracy * 100.0,
            self.correct,
            self.images,
            self.background_predictions,
            self.ms_per_patch,
            self.batch,
            self.p50_ms_per_batch,
            self.mflops_per_patch
        );
        let mut worst: Vec<(&String, &f64)> = self.per_class_accuracy.iter().collect();
        worst.sort_by(|a, b| a.1.total_cmp(b.1));
        let _ = writeln!(s, "  worst classes:");
        for (name, acc) in worst.iter().take(5) {
            let _ = writeln!(s, "    {name:<48} {:.1} %", *acc * 100.0);
        }
        if !self.top_confusions.is_empty() {
            let _ = writeln!(s, "  most frequent errors (true → predicted):");
            for c in &self.top_confusions {
                let _ = writeln!(s, "    {:>5}  {} → {}", c.count, c.true_class, c.predicted);
            }
        }
        s
    }
}
