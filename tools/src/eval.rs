//! `saccade eval` and `saccade eval-classifier`: accuracy and cost of a strategy on annotated frames, and of
//! the patch classifier on GTSRB crops.
//!
//! `eval` runs every frame losslessly through the single-threaded [`FrameProcessor::process`] path, matches
//! detections to the annotations (`crate::matching`) and reports detection quality next to what it cost
//! (latency per stage, patches, full-resolution pixels, MFLOPs, early exits, peak RSS), and per sign size
//! bucket how many signs were found and how many the strategy looked at (centre inside an examined patch), so
//! glance misses can be told from focus misses. It keeps every frame's scored detections, so the report also
//! has precision/recall/F1 at a sweep of score thresholds (for fitting a strategy's `min_score` on validation
//! frames). `--split` restricts a GTSDB folder to one part of its split (`crate::train::gtsdb`).
//! `saccade bench` reuses [`evaluate`] for every strategy on the same frames. The JSON keys are documented in
//! `docs/EVAL.md`.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, ensure, Context};
use candle_core::{Device, Tensor, D};
use saccade_models::patchnet::PatchNet;
use saccade_models::{class_name, PatchClassifier, NUM_SIGN_CLASSES};
use saccade_runtime::budget::{mib, rss_bytes};
use saccade_runtime::capture::dir::natural_cmp;
use saccade_runtime::focus::FocusOutcome;
use saccade_runtime::frame::{BoxPx, Frame, TruthBox};
use saccade_runtime::metrics::{PipelineMetrics, Stage};
use saccade_runtime::pipeline::FrameProcessor;

use crate::engine::{self, ModelArgs, StrategyArgs, StrategyFile};
use crate::matching::{
    tally_frame, DetectionEntry, SignCounts, SizeBucket, Tally, TruthEntry, LARGE_ABOVE_PX,
    SMALL_BELOW_PX,
};
use crate::summary::{round3, StageJson};
use crate::train::gtsdb::{split_of, GtsdbSplit};

#[derive(Debug, Clone, clap::Args)]
pub struct EvalArgs {
    /// Folder of frames (JPEG/PNG); frames without a row in the CSV count as frames with no sign.
    #[arg(long)]
    pub images: PathBuf,
    /// Annotations: `file,width,height,class,gtsrb_class_id,xmin,ymin,xmax,ymax` (inclusive corners).
    #[arg(long)]
    pub annotations: PathBuf,
    /// Write the report as JSON to this path (`-` for stdout).
    #[arg(long)]
    pub json: Option<String>,
    /// Comma-separated `class` values whose boxes are neutral (a detection of them is neither TP nor FP).
    #[arg(long, value_delimiter = ',')]
    pub ignore_classes: Vec<String>,
    /// Only the frames of this GTSDB split (by the file stem's frame number: train = 0–599 except
    /// number % 6 == 5, validation = number % 6 == 5 below 600, test = 600–899); `all`: every frame.
    #[arg(long, value_enum, default_value_t = EvalSplit::All)]
    pub split: EvalSplit,
    /// TOML file of strategy settings (`[topk]`, `[gfnet]`, …): its keys override the fitted settings beside
    /// the weights, which override the defaults.
    #[arg(long)]
    pub strategy_config: Option<PathBuf>,
    /// Also print the score-threshold sweep (the JSON always has it).
    #[arg(long)]
    pub sweep: bool,
    /// Resize every frame to `WIDTHxHEIGHT` before it enters the pipeline (boxes scaled alike): the same
    /// scene as a camera of another resolution sees it.
    #[arg(long)]
    pub rescale: Option<String>,
    /// Evaluate only the first N frames (in name order, after `--split`): for slow baselines such as
    /// `fullres`.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Write every missed sign and every false positive to this CSV (one row each: frame, kind, class, box,
    /// side, whether the strategy looked at it, the nearest detection): where each miss was lost.
    #[arg(long)]
    pub misses: Option<PathBuf>,
    #[command(flatten)]
    pub strategy: StrategyArgs,
    #[command(flatten)]
    pub models: ModelArgs,
}

/// Which frames of a folder `saccade eval` keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EvalSplit {
    /// Every frame of the folder, whatever its name.
    All,
    /// GTSDB training frames the nets learn from.
    Train,
    /// GTSDB training frames held out for fitting thresholds and choosing models.
    Validation,
    /// GTSDB test frames: for measuring only.
    Test,
}

impl EvalSplit {
    pub fn name(self) -> &'static str {
        match self {
            EvalSplit::All => "all",
            EvalSplit::Train => "train",
            EvalSplit::Validation => "validation",
            EvalSplit::Test => "test",
        }
    }

    /// Whether the frame file `name` belongs to this split: with `All` every frame; otherwise frames whose
    /// stem is a GTSDB frame number of the split (`00417.jpg` → 417).
    pub fn keeps(self, name: &str) -> bool {
        let wanted = match self {
            EvalSplit::All => return true,
            EvalSplit::Train => GtsdbSplit::Train,
            EvalSplit::Validation => GtsdbSplit::Validation,
            EvalSplit::Test => GtsdbSplit::Test,
        };
        Path::new(name)
            .file_stem()
            .and_then(|stem| stem.to_str())
            .and_then(|stem| stem.parse::<u32>().ok())
            .is_some_and(|n| split_of(n) == wanted)
    }
}

/// The items of `split`, in their order; none left is an error naming the folder.
pub fn select_split(
    items: Vec<EvalItem>,
    split: EvalSplit,
    images: &Path,
) -> anyhow::Result<Vec<EvalItem>> {
    let total = items.len();
    let kept: Vec<EvalItem> = items
        .into_iter()
        .filter(|item| split.keeps(&item.name))
        .collect();
    ensure!(
        !kept.is_empty(),
        "none of the {total} frames in {} is in the {} split (GTSDB frame numbers as file names, e.g. 00005.jpg)",
        images.display(),
        split.name()
    );
    Ok(kept)
}

#[derive(Debug, Clone, clap::Args)]
pub struct EvalClassifierArgs {
    /// Folder in the GTSRB layout: `test_images.u8` (N×32×32×3 RGB) and `test_labels.u8` (N class ids).
    #[arg(long)]
    pub data: PathBuf,
    /// Classifier weights (safetensors or GGUF; default: models/weights/patchnet.q8_0.gguf).
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// Patches per classifier call.
    #[arg(long, default_value_t = 256)]
    pub batch: usize,
    /// Evaluate only the first N images.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Write the report as JSON to this path (`-` for stdout).
    #[arg(long)]
    pub json: Option<String>,
}

/// One row of an annotations CSV.
#[derive(Debug, Clone, PartialEq)]
pub struct AnnotationRow {
    pub file: String,
    pub width_px: u32,
    pub height_px: u32,
    pub class: String,
    pub gtsrb_class_id: Option<usize>,
    /// Box in frame pixels, exclusive right/bottom edge (the CSV's inclusive corners + 1).
    pub bbox: BoxPx,
}

const CSV_COLUMNS: [&str; 9] = [
    "file",
    "width",
    "height",
    "class",
    "gtsrb_class_id",
    "xmin",
    "ymin",
    "xmax",
    "ymax",
];

/// Parses an annotations CSV (columns by header name, any order, extra columns ignored). Errors name the file,
/// the 1-based line, the column and the value.
pub fn parse_annotations(text: &str, path: &Path) -> anyhow::Result<Vec<AnnotationRow>> {
    let shown = path.display();
    let mut lines = text.lines().enumerate();
    let Some((_, header)) = lines.next() else {
        bail!(
            "{shown}: empty file, expected a header `{}`",
            CSV_COLUMNS.join(",")
        );
    };
    let names: Vec<&str> = header.split(',').map(str::trim).collect();
    let mut index = [0usize; 9];
    for (slot, column) in index.iter_mut().zip(CSV_COLUMNS) {
        *slot = names.iter().position(|n| *n == column).with_context(|| {
            format!(
                "{shown} line 1: no column `{column}` in header `{header}`, expected `{}`",
                CSV_COLUMNS.join(",")
            )
        })?;
    }
    let mut rows = Vec::new();
    for (i, line) in lines {
        let line_no = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        ensure!(
            fields.len() == names.len(),
            "{shown} line {line_no}: {} fields, expected {} like the header",
            fields.len(),
            names.len()
        );
        let field = |k: usize| fields[index[k]];
        let bad = |k: usize, expected: &str| {
            anyhow::anyhow!(
                "{shown} line {line_no}, column `{}`: `{}` is not {expected}",
                CSV_COLUMNS[k],
                field(k)
            )
        };
        let size = |k: usize| -> anyhow::Result<u32> {
            field(k)
                .parse::<u32>()
                .ok()
                .filter(|v| *v > 0)
                .ok_or_else(|| bad(k, "a positive integer"))
        };
        let coord = |k: usize| -> anyhow::Result<f32> {
            field(k)
                .parse::<f32>()
                .ok()
                .filter(|v| v.is_finite())
                .ok_or_else(|| bad(k, "a number"))
        };
        let file = field(0).to_string();
        ensure!(
            !file.is_empty(),
            "{shown} line {line_no}, column `file`: empty"
        );
        let (width_px, height_px) = (size(1)?, size(2)?);
        let gtsrb_class_id = match field(4) {
            "" => None,
            s => Some(
                s.parse::<usize>()
                    .ok()
                    .filter(|id| *id < NUM_SIGN_CLASSES)
                    .ok_or_else(|| bad(4, "empty or a GTSRB class id 0–42"))?,
            ),
        };
        let (xmin, ymin, xmax, ymax) = (coord(5)?, coord(6)?, coord(7)?, coord(8)?);
        ensure!(
            xmin <= xmax && ymin <= ymax,
            "{shown} line {line_no}: box ({xmin}, {ymin})–({xmax}, {ymax}) has its max corner before its min corner"
        );
        rows.push(AnnotationRow {
            file,
            width_px,
            height_px,
            class: field(3).to_string(),
            gtsrb_class_id,
            bbox: BoxPx::new(xmin, ymin, xmax + 1.0, ymax + 1.0),
        });
    }
    Ok(rows)
}

/// A frame to evaluate: where it comes from and its truth.
#[derive(Debug, Clone)]
pub struct EvalItem {
    pub name: String,
    pub source: FrameData,
    /// Size the annotations expect, checked against the decoded image.
    pub expected_size_px: Option<(u32, u32)>,
    pub truth: Vec<TruthEntry>,
}

impl EvalItem {
    /// Bytes of pixels the bench holds for this item: in-memory scenes, and files once the throughput run
    /// has decoded them (their annotated size, else a 1280×960 frame).
    pub fn bytes_held(&self) -> u64 {
        match &self.source {
            FrameData::Rgb { rgb, .. } => rgb.len() as u64,
            FrameData::File(_) => self
                .expected_size_px
                .map_or(1280 * 960 * 3, |(w, h)| u64::from(w) * u64::from(h) * 3),
        }
    }
}

/// Pixels in memory (synthetic scenes) or a file decoded when its turn comes (keeps RSS to one frame).
#[derive(Debug, Clone)]
pub enum FrameData {
    File(PathBuf),
    Rgb {
        width: u32,
        height: u32,
        rgb: Vec<u8>,
    },
}

fn is_image_file(path: &Path) -> bool {
    path.is_file()
        && path.extension().and_then(|e| e.to_str()).is_some_and(|e| {
            ["jpg", "jpeg", "png"]
                .iter()
                .any(|x| e.eq_ignore_ascii_case(x))
        })
}

/// The frames of `images` in natural order with their boxes from `rows`; a file named in the CSV but missing
/// from the folder is an error.
pub fn items_from_folder(images: &Path, rows: &[AnnotationRow]) -> anyhow::Result<Vec<EvalItem>> {
    let entries = std::fs::read_dir(images)
        .with_context(|| format!("listing frames folder {}", images.display()))?;
    let mut names: Vec<String> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| is_image_file(p))
        .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    let mut by_file: BTreeMap<&str, Vec<&AnnotationRow>> = BTreeMap::new();
    for row in rows {
        by_file.entry(row.file.as_str()).or_default().push(row);
    }
    for file in by_file.keys() {
        if !names.iter().any(|n| n == file) {
            bail!(
                "annotations name `{file}`, which is not a .jpg/.jpeg/.png file in {}",
                images.display()
            );
        }
    }
    ensure!(
        !names.is_empty(),
        "{} has no .jpg, .jpeg or .png file",
        images.display()
    );
    names.sort_by(|a, b| natural_cmp(a, b));
    Ok(names
        .into_iter()
        .map(|name| {
            let rows = by_file.get(name.as_str()).map(Vec::as_slice).unwrap_or(&[]);
            EvalItem {
                source: FrameData::File(images.join(&name)),
                expected_size_px: rows.first().map(|r| (r.width_px, r.height_px)),
                truth: rows
                    .iter()
                    .map(|r| TruthEntry {
                        bbox: r.bbox,
                        class_name: r.class.clone(),
                        class_id: r.gtsrb_class_id,
                    })
                    .collect(),
                name,
            }
        })
        .collect())
}

/// Truth boxes of a synthetic scene, named by their GTSRB class.
pub fn truth_from_boxes(boxes: &[TruthBox]) -> Vec<TruthEntry> {
    boxes
        .iter()
        .map(|t| TruthEntry {
            bbox: t.bbox,
            class_name: t.class_id.map_or("unknown", class_name).to_string(),
            class_id: t.class_id,
        })
        .collect()
}

/// Decodes (or copies) the frame; its capture clock starts now, so latency is that of glance + focus.
/// Decodes `item` (checking a file against the size its annotations give) as frame number `index`.
pub(crate) fn load_frame(index: u64, item: &EvalItem) -> anyhow::Result<Frame> {
    let frame = match &item.source {
        FrameData::File(path) => {
            // Header size checked against the frame cap before the pixels are decoded.
            let image = saccade_runtime::capture::dir::decode_image(path)
                .with_context(|| format!("decoding frame {}", path.display()))?;
            let (w, h) = image.dimensions();
            if let Some((ew, eh)) = item.expected_size_px {
                ensure!(
                    (w, h) == (ew, eh),
                    "frame {} is {w}×{h}, but its annotations say {ew}×{eh}",
                    path.display()
                );
            }
            Frame::from_rgb(index, w, h, image.into_raw())
                .with_context(|| format!("frame {}", path.display()))?
        }
        FrameData::Rgb { width, height, rgb } => {
            Frame::from_rgb(index, *width, *height, rgb.clone())
                .with_context(|| format!("frame {}", item.name))?
        }
    };
    let mut frame = frame;
    frame.file = Some(item.name.clone());
    Ok(frame)
}

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
    fn from_tally(tally: &Tally) -> Self {
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
fn best_f1(sweep: &[SweepPoint]) -> BestF1 {
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

/// An evaluation: the report, the tally of every frame (so a caller can re-score a prefix of the frames) and
/// every frame's truth and scored detections.
pub struct Evaluation {
    pub report: EvalReport,
    pub frame_tallies: Vec<Tally>,
    pub scored_frames: Vec<ScoredFrame>,
    /// The boxes of the patches examined in each frame, in the order of `scored_frames`.
    pub examined: Vec<Vec<BoxPx>>,
}

/// Header of [`misses_csv`].
pub const MISSES_HEADER: &str =
    "frame,kind,class,xmin,ymin,xmax,ymax,side_px,looked_at,nearest_iou,nearest_class,nearest_score";

/// One CSV row per missed sign (`kind` = `glance-miss` when no examined patch held its centre, else
/// `focus-miss`) and per false positive (`kind` = `fp`, `looked_at` empty), each with the detection (for a
/// miss) or truth box (for a false positive) it overlaps most, if any. Ignored classes are left out, as in the tally.
pub fn misses_csv(
    names: &[&str],
    frames: &[ScoredFrame],
    examined: &[Vec<BoxPx>],
    ignored: &HashSet<String>,
) -> String {
    use crate::matching::{
        found_flags, is_looked_at, match_detections, Verdict, IOU_MATCH_THRESHOLD,
    };
    use std::fmt::Write as _;
    let mut out = format!("{MISSES_HEADER}\n");
    let csv_text = |t: &str| {
        if t.contains([',', '"', '\n']) {
            format!("\"{}\"", t.replace('"', "\"\""))
        } else {
            t.to_string()
        }
    };
    for ((name, frame), patches) in names.iter().zip(frames).zip(examined) {
        let verdicts = match_detections(
            &frame.truth,
            &frame.detections,
            ignored,
            IOU_MATCH_THRESHOLD,
        );
        let found = found_flags(&verdicts, frame.truth.len());
        for (t, entry) in frame.truth.iter().enumerate() {
            if found[t] || ignored.contains(&entry.class_name) {
                continue;
            }
            let looked = is_looked_at(&entry.bbox, patches);
            let nearest = nearest_by_iou(&entry.bbox, &frame.detections, |d| &d.bbox);
            let kind = if looked { "focus-miss" } else { "glance-miss" };
            write_box_columns(
                &mut out,
                name,
                kind,
                &csv_text(&entry.class_name),
                &entry.bbox,
            );
            match nearest {
                Some((iou, d)) => {
                    let _ = writeln!(
                        out,
                        "{looked},{iou:.3},{},{:.3}",
                        csv_text(&d.class_name),
                        d.score
                    );
                }
                None => {
                    let _ = writeln!(out, "{looked},,,");
                }
            }
        }
        for (d, v) in frame.detections.iter().zip(&verdicts) {
            if *v != Verdict::FalsePositive {
                continue;
            }
            let nearest = nearest_by_iou(&d.bbox, &frame.truth, |t| &t.bbox);
            write_box_columns(&mut out, name, "fp", &csv_text(&d.class_name), &d.bbox);
            match nearest {
                Some((iou, t)) => {
                    let _ = writeln!(out, ",{iou:.3},{},{:.3}", csv_text(&t.class_name), d.score);
                }
                None => {
                    let _ = writeln!(out, ",,,{:.3}", d.score);
                }
            }
        }
    }
    out
}

/// The item of `items` whose box overlaps `bbox` most (IoU > 0), with that IoU.
fn nearest_by_iou<'a, T>(
    bbox: &BoxPx,
    items: &'a [T],
    box_of: impl Fn(&T) -> &BoxPx,
) -> Option<(f32, &'a T)> {
    items
        .iter()
        .map(|item| (bbox.iou(box_of(item)), item))
        .filter(|(iou, _)| *iou > 0.0)
        .max_by(|a, b| a.0.total_cmp(&b.0))
}

/// `frame,kind,class,xmin,ymin,xmax,ymax,side_px,` of a [`misses_csv`] row.
fn write_box_columns(out: &mut String, frame: &str, kind: &str, class: &str, b: &BoxPx) {
    use std::fmt::Write as _;
    let _ = write!(
        out,
        "{frame},{kind},{class},{:.0},{:.0},{:.0},{:.0},{:.0},",
        b.xmin,
        b.ymin,
        b.xmax,
        b.ymax,
        b.width().max(b.height()),
    );
}

fn class_report(c: &crate::matching::Counts) -> ClassReport {
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

fn build_report(
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

/// `value` with every float written as the shortest decimal of its `f32` (settings are `f32`: `0.3`, not
/// `0.30000001192092896`).
fn floats_as_f32(value: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::Number(n) if n.is_f64() => {
            let shortest = n
                .as_f64()
                .and_then(|x| (x as f32).to_string().parse::<f64>().ok())
                .and_then(serde_json::Number::from_f64);
            Value::Number(shortest.unwrap_or(n))
        }
        Value::Array(items) => Value::Array(items.into_iter().map(floats_as_f32).collect()),
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| (k, floats_as_f32(v)))
                .collect(),
        ),
        other => other,
    }
}

/// Writes `value` as pretty JSON to `path` (`-`: stdout).
pub fn write_json<T: serde::Serialize>(value: &T, path: &str) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    if path == "-" {
        println!("{text}");
        Ok(())
    } else {
        std::fs::write(path, text + "\n").with_context(|| format!("writing JSON to {path}"))
    }
}

pub fn eval(args: EvalArgs) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&args.annotations)
        .with_context(|| format!("reading annotations {}", args.annotations.display()))?;
    let rows = parse_annotations(&text, &args.annotations)?;
    let items = items_from_folder(&args.images, &rows)?;
    let mut items = select_split(items, args.split, &args.images)?;
    if let Some(n) = args.limit {
        ensure!(n > 0, "--limit 0: expected at least one frame");
        items.truncate(n);
    }
    let user_settings = args
        .strategy_config
        .as_deref()
        .map(StrategyFile::load)
        .transpose()?;
    let models = engine::load_models(&args.models)?;
    let configs = engine::configs_with_user_file(user_settings.as_ref(), &models.weights_dir)?;
    let mut processor = engine::build_processor_exact(&models, &args.strategy, &configs)?;
    let ignored: HashSet<String> = args
        .ignore_classes
        .iter()
        .map(|c| c.trim().to_string())
        .filter(|c| !c.is_empty())
        .collect();
    let rescale = match &args.rescale {
        Some(text) => {
            let (w, h) = crate::train::glance::parse_size(text)?;
            ensure!(
                w <= 8192 && h <= 8192,
                "--rescale {text}: at most 8192 px a side"
            );
            Some((w as u32, h as u32))
        }
        None => None,
    };
    let mut evaluation = evaluate_rescaled(
        &mut processor,
        &args.strategy.strategy,
        &items,
        &ignored,
        rescale,
    )?;
    let report = &mut evaluation.report;
    report.split = args.split;
    report.strategy_config = args
        .strategy_config
        .as_ref()
        .map(|p| p.display().to_string());
    report.strategy_settings = serde_json::to_value(&configs)?
        .get(&args.strategy.strategy)
        .cloned()
        .map(floats_as_f32);
    eprint!("{}", report.human());
    if args.sweep {
        eprint!("{}", report.sweep_table());
    }
    if let Some(path) = &args.json {
        write_json(&evaluation.report, path)?;
    }
    if let Some(path) = &args.misses {
        let names: Vec<&str> = items.iter().map(|i| i.name.as_str()).collect();
        let csv = misses_csv(
            &names,
            &evaluation.scored_frames,
            &evaluation.examined,
            &ignored,
        );
        std::fs::write(path, csv)
            .with_context(|| format!("writing --misses {}", path.display()))?;
    }
    Ok(())
}

/// GTSRB crops in memory: N×32×32×3 RGB and N labels.
pub struct GtsrbTest {
    pub images: Vec<u8>,
    pub labels: Vec<u8>,
}

pub const GTSRB_SIDE_PX: usize = 32;

impl std::fmt::Debug for GtsrbTest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GtsrbTest")
            .field("images", &self.len())
            .finish()
    }
}

impl GtsrbTest {
    pub fn from_bytes(images: Vec<u8>, labels: Vec<u8>) -> anyhow::Result<Self> {
        let per_image = GTSRB_SIDE_PX * GTSRB_SIDE_PX * 3;
        ensure!(
            images.len().is_multiple_of(per_image),
            "images hold {} bytes, expected a multiple of {per_image} (32×32×3)",
            images.len()
        );
        let n = images.len() / per_image;
        ensure!(
            labels.len() == n,
            "{} labels for {n} images, expected one label per image",
            labels.len()
        );
        if let Some((i, l)) = labels
            .iter()
            .enumerate()
            .find(|(_, l)| **l as usize >= NUM_SIGN_CLASSES)
        {
            bail!("label {i} is {l}, expected a GTSRB class id 0–42");
        }
        Ok(Self { images, labels })
    }

    pub fn load(dir: &Path) -> anyhow::Result<Self> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read(&path).with_context(|| format!("reading {}", path.display()))
        };
        Self::from_bytes(read("test_images.u8")?, read("test_labels.u8")?)
            .with_context(|| format!("GTSRB test set in {}", dir.display()))
    }

    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
}

/// Image `i` of `set` as CHW f32 in 0..1 at `side` px (bilinear when the net's input is not 32 px).
fn gtsrb_chw(set: &GtsrbTest, i: usize, side: usize, out: &mut Vec<f32>) {
    let per_image = GTSRB_SIDE_PX * GTSRB_SIDE_PX * 3;
    let image = &set.images[i * per_image..(i + 1) * per_image];
    let plane = side * side;
    let start = out.len();
    out.resize(start + 3 * plane, 0.0);
    let scale = GTSRB_SIDE_PX as f32 / side as f32;
    let max = (GTSRB_SIDE_PX - 1) as f32;
    for y in 0..side {
        let sy = ((y as f32 + 0.5) * scale - 0.5).clamp(0.0, max);
        let (y0, fy) = (sy.floor() as usize, sy.fract());
        let y1 = (y0 + 1).min(GTSRB_SIDE_PX - 1);
        for x in 0..side {
            let sx = ((x as f32 + 0.5) * scale - 0.5).clamp(0.0, max);
            let (x0, fx) = (sx.floor() as usize, sx.fract());
            let x1 = (x0 + 1).min(GTSRB_SIDE_PX - 1);
            for c in 0..3 {
                let px = |xx: usize, yy: usize| image[(yy * GTSRB_SIDE_PX + xx) * 3 + c] as f32;
                let top = px(x0, y0) * (1.0 - fx) + px(x1, y0) * fx;
                let bottom = px(x0, y1) * (1.0 - fx) + px(x1, y1) * fx;
                out[start + c * plane + y * side + x] = (top * (1.0 - fy) + bottom * fy) / 255.0;
            }
        }
    }
}

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

fn class_label(c: usize) -> String {
    format!("{c:02} {}", class_name(c))
}

/// The `limit` most frequent (true, predicted) pairs with true ≠ predicted; ties by class ids.
fn top_confusions(labels: &[u8], predicted: &[usize], limit: usize) -> Vec<Confusion> {
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

pub fn eval_classifier(args: EvalClassifierArgs) -> anyhow::Result<()> {
    let mut set = GtsrbTest::load(&args.data)?;
    if let Some(limit) = args.limit {
        let n = limit.min(set.len());
        set.images.truncate(n * GTSRB_SIDE_PX * GTSRB_SIDE_PX * 3);
        set.labels.truncate(n);
    }
    let weights = args
        .weights
        .clone()
        .unwrap_or_else(|| engine::default_weights_dir().join("patchnet.q8_0.gguf"));
    let device = engine::device()?;
    let model = PatchNet::load(&weights, &device)
        .with_context(|| format!("loading the patch classifier from {}", weights.display()))?;
    let (predicted, ms_per_patch, p50_ms_per_batch) =
        evaluate_classifier(&model, &set, args.batch, &device)?;
    let report = classifier_report(
        &model,
        &weights,
        &set,
        &predicted,
        args.batch,
        ms_per_patch,
        p50_ms_per_batch,
    );
    eprint!("{}", report.human());
    if let Some(path) = &args.json {
        write_json(&report, path)?;
    }
    Ok(())
}

fn classifier_report(
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

/// Random-init models saved as `glancenet`/`patchnet` `.safetensors` and `.q8_0.gguf` in `dir`, for tests
/// that need real nets but not trained ones.
#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) fn write_random_models(dir: &Path) -> ModelArgs {
    use candle_nn::{VarBuilder, VarMap};
    use saccade_models::{GlanceNetConfig, GlanceNetModel, PatchNetConfig, QuantDtype};
    let device = Device::Cpu;
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, candle_core::DType::F32, &device);
    let glance = GlanceNetModel::new(&GlanceNetConfig::default(), vb.pp("g")).unwrap();
    let patch = PatchNet::new(&PatchNetConfig::default(), vb.pp("p")).unwrap();
    glance
        .save_safetensors(&dir.join("glancenet.safetensors"))
        .unwrap();
    patch
        .save_safetensors(&dir.join("patchnet.safetensors"))
        .unwrap();
    for stem in ["glancenet", "patchnet"] {
        saccade_models::quantize_file(
            &dir.join(format!("{stem}.safetensors")),
            &dir.join(format!("{stem}.q8_0.gguf")),
            QuantDtype::Q8_0,
        )
        .unwrap();
    }
    ModelArgs {
        weights_dir: Some(dir.to_path_buf()),
        glance_weights: None,
        classifier_weights: None,
        dtype: "q8_0".to_string(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod tests {
    use super::*;

    const HEADER: &str = "file,width,height,class,gtsrb_class_id,xmin,ymin,xmax,ymax\n";

    fn counts(tp: u64, fp: u64, fn_: u64) -> crate::matching::Counts {
        crate::matching::Counts {
            tp,
            fp,
            fn_,
            ..Default::default()
        }
    }

    #[test]
    fn bootstrap_intervals_hold_the_point_estimate_and_narrow_with_more_frames() {
        // Frames alternate between a found sign and a missed one: recall 0.5 overall.
        let frames = |n: usize| -> Vec<_> {
            (0..n)
                .map(|i| {
                    if i % 2 == 0 {
                        counts(1, 0, 0)
                    } else {
                        counts(0, 1, 1)
                    }
                })
                .collect()
        };
        let few = bootstrap_intervals(&frames(10), BOOTSTRAP_RESAMPLES);
        let many = bootstrap_intervals(&frames(400), BOOTSTRAP_RESAMPLES);
        for ci in [few, many] {
            assert!(ci.recall[0] <= 0.5 && 0.5 <= ci.recall[1], "{ci:?}");
            assert!(ci.precision[0] <= 0.5 && 0.5 <= ci.precision[1], "{ci:?}");
            assert!(ci.f1[0] <= ci.f1[1]);
        }
        let width = |ci: Intervals95| ci.recall[1] - ci.recall[0];
        assert!(width(many) < width(few) / 3.0, "{few:?} vs {many:?}");
        assert!(width(few) > 0.2, "{few:?}");
        // Reproducible: a fixed seed.
        assert_eq!(few, bootstrap_intervals(&frames(10), BOOTSTRAP_RESAMPLES));
        // Identical frames leave no uncertainty; no frames give zero-count scores, not a panic.
        let same = bootstrap_intervals(&[counts(2, 1, 1); 5], 200);
        assert_eq!(same.recall, [0.667, 0.667]);
        assert_eq!(bootstrap_intervals(&[], 200).resamples, 0);
    }

    #[test]
    fn annotations_parse_with_inclusive_corners_and_empty_class_id() {
        let text = format!(
            "{HEADER}a.jpg,400,300,speedlimit,,10,20,29,39\nb.jpg,400,300,stop,14,0,0,0,0\n"
        );
        let rows = parse_annotations(&text, Path::new("ann.csv")).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].gtsrb_class_id, None);
        assert_eq!(rows[0].bbox, BoxPx::new(10.0, 20.0, 30.0, 40.0));
        assert_eq!(rows[1].gtsrb_class_id, Some(14));
        assert_eq!(rows[1].bbox.area(), 1.0);
    }

    #[test]
    fn annotation_errors_name_file_line_column_and_value() {
        let text =
            format!("{HEADER}a.jpg,400,300,stop,14,0,0,5,5\na.jpg,400,300,stop,14,x1,0,5,5\n");
        let err = parse_annotations(&text, Path::new("ann.csv"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("ann.csv line 3, column `xmin`: `x1`"), "{err}");
        let err = parse_annotations(
            &format!("{HEADER}a.jpg,400,300,stop,99,0,0,5,5\n"),
            Path::new("ann.csv"),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("column `gtsrb_class_id`: `99`"), "{err}");
        let err = parse_annotations("file,width\n", Path::new("ann.csv"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("no column `height`"), "{err}");
        let err = parse_annotations(
            &format!("{HEADER}a.jpg,400,300,stop\n"),
            Path::new("ann.csv"),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("line 2: 4 fields, expected 9"), "{err}");
    }

    #[test]
    fn folder_items_include_frames_without_boxes_and_reject_missing_files() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["f10.png", "f2.png"] {
            image::RgbImage::new(8, 6)
                .save(dir.path().join(name))
                .unwrap();
        }
        let text = format!("{HEADER}f10.png,8,6,stop,14,0,0,3,3\n");
        let rows = parse_annotations(&text, Path::new("a.csv")).unwrap();
        let items = items_from_folder(dir.path(), &rows).unwrap();
        assert_eq!(items.len(), 2);
        assert_eq!(items[0].name, "f2.png");
        assert!(items[0].truth.is_empty());
        assert_eq!(items[1].truth.len(), 1);
        let text = format!("{HEADER}missing.png,8,6,stop,14,0,0,3,3\n");
        let rows = parse_annotations(&text, Path::new("a.csv")).unwrap();
        let err = items_from_folder(dir.path(), &rows)
            .unwrap_err()
            .to_string();
        assert!(err.contains("missing.png"), "{err}");
    }

    #[test]
    fn frame_size_must_match_its_annotations() {
        let dir = tempfile::tempdir().unwrap();
        image::RgbImage::new(8, 6)
            .save(dir.path().join("a.png"))
            .unwrap();
        let text = format!("{HEADER}a.png,16,6,stop,14,0,0,3,3\n");
        let rows = parse_annotations(&text, Path::new("a.csv")).unwrap();
        let items = items_from_folder(dir.path(), &rows).unwrap();
        let err = load_frame(0, &items[0]).unwrap_err().to_string();
        assert!(
            err.contains("is 8×6, but its annotations say 16×6"),
            "{err}"
        );
    }

    #[test]
    fn gtsrb_set_rejects_bad_sizes_and_labels() {
        assert!(GtsrbTest::from_bytes(vec![0; 3072 * 2], vec![1, 2]).is_ok());
        let err = GtsrbTest::from_bytes(vec![0; 3071], vec![1])
            .unwrap_err()
            .to_string();
        assert!(err.contains("3071 bytes"), "{err}");
        let err = GtsrbTest::from_bytes(vec![0; 3072], vec![1, 2])
            .unwrap_err()
            .to_string();
        assert!(err.contains("2 labels for 1 images"), "{err}");
        let err = GtsrbTest::from_bytes(vec![0; 3072], vec![43])
            .unwrap_err()
            .to_string();
        assert!(err.contains("label 0 is 43"), "{err}");
    }

    #[test]
    fn gtsrb_chw_keeps_pixels_at_native_side_and_resamples_otherwise() {
        let mut images = vec![0u8; 3072];
        images[0] = 255; // red of pixel (0, 0)
        images[3071] = 51; // blue of pixel (31, 31)
        let set = GtsrbTest::from_bytes(images, vec![0]).unwrap();
        let mut out = Vec::new();
        gtsrb_chw(&set, 0, 32, &mut out);
        assert_eq!(out.len(), 3 * 1024);
        assert_eq!(out[0], 1.0);
        assert!((out[2 * 1024 + 1023] - 0.2).abs() < 1e-6);
        let mut out = Vec::new();
        gtsrb_chw(&set, 0, 16, &mut out);
        assert_eq!(out.len(), 3 * 256);
        assert!(out.iter().all(|v| (0.0..=1.0).contains(v)));
    }

    #[test]
    fn report_counts_signs_per_size_bucket_and_tells_glance_from_focus_misses() {
        // Inclusive CSV corners: 0..=30 is a 31 px (small) sign, 100..=131 a 32 px (medium) one, 200..=299 a
        // 100 px (large) one; the traffic light is ignored.
        let text = format!(
            "{HEADER}a.png,400,300,stop,14,0,0,30,30\na.png,400,300,stop,14,100,100,131,110\n\
             a.png,400,300,yield,13,200,100,299,150\na.png,400,300,trafficlight,,0,200,9,209\n"
        );
        let rows = parse_annotations(&text, Path::new("a.csv")).unwrap();
        let truth: Vec<TruthEntry> = rows
            .iter()
            .map(|r| TruthEntry {
                bbox: r.bbox,
                class_name: r.class.clone(),
                class_id: r.gtsrb_class_id,
            })
            .collect();
        let buckets: Vec<SizeBucket> = truth.iter().map(|t| SizeBucket::of_box(&t.bbox)).collect();
        assert_eq!(
            buckets[..3],
            [SizeBucket::Small, SizeBucket::Medium, SizeBucket::Large]
        );
        // Focus looks at the small sign (and misses it) and at the large one (and finds it); the medium sign
        // is never looked at.
        let patches = [
            BoxPx::new(0.0, 0.0, 64.0, 64.0),
            BoxPx::new(224.0, 96.0, 288.0, 160.0),
        ];
        let detections = [
            DetectionEntry {
                bbox: BoxPx::new(200.0, 100.0, 300.0, 151.0),
                score: 0.9,
                class_id: 13,
                class_name: "yield".to_string(),
            },
            DetectionEntry {
                bbox: BoxPx::new(0.0, 200.0, 10.0, 210.0),
                score: 0.8,
                class_id: 26,
                class_name: "traffic signals".to_string(),
            },
        ];
        let ignored: HashSet<String> = ["trafficlight".to_string()].into();
        let tally = tally_frame(&truth, &detections, &patches, &ignored);
        let report = build_report(
            "topk",
            &PipelineMetrics::default(),
            &tally,
            Vec::new(),
            bootstrap_intervals(&[tally.overall], 1),
            0.0,
            0.0,
        );
        assert_eq!((report.tp, report.fp, report.fn_), (1, 0, 2));
        assert_eq!(report.signs, 3);
        assert_eq!(report.looked_at, 2);
        assert_eq!(report.looked_at_share, Some(0.667));
        assert_eq!(report.found_when_looked_at, 1);
        let v = serde_json::to_value(&report).unwrap();
        let expect = |bucket: &str, counts: [u64; 4], recall: f64, share: f64| {
            let b = &v["by_size"][bucket];
            let got = ["signs", "found", "looked_at", "found_when_looked_at"]
                .map(|k| b[k].as_u64().unwrap());
            assert_eq!(got, counts, "{bucket}: {b}");
            assert_eq!(b["recall"].as_f64(), Some(recall), "{bucket}: {b}");
            assert_eq!(b["looked_at_share"].as_f64(), Some(share), "{bucket}: {b}");
        };
        expect("small", [1, 0, 1, 0], 0.0, 1.0);
        expect("medium", [1, 0, 0, 0], 0.0, 0.0);
        expect("large", [1, 1, 1, 1], 1.0, 1.0);
        let human = report.human();
        assert!(
            human.contains("glance misses 1 (not looked at, not found), focus misses 1"),
            "{human}"
        );
        for row in ["small <32", "medium 32–96", "large >96", "all"] {
            assert!(human.contains(row), "no row `{row}` in {human}");
        }
    }

    #[test]
    fn report_without_signs_has_no_rates_for_them() {
        let report = build_report(
            "topk",
            &PipelineMetrics::default(),
            &Tally::default(),
            Vec::new(),
            bootstrap_intervals(&[], 1),
            0.0,
            0.0,
        );
        let v = serde_json::to_value(&report).unwrap();
        assert_eq!(v["signs"], 0);
        assert!(v["looked_at_share"].is_null(), "{v}");
        for bucket in ["small", "medium", "large"] {
            assert!(v["by_size"][bucket]["recall"].is_null(), "{v}");
            assert!(v["by_size"][bucket]["looked_at_share"].is_null(), "{v}");
        }
    }

    /// Two small frames of different sizes, one annotated, one not.
    pub(crate) fn small_annotated_folder(dir: &Path) -> (PathBuf, PathBuf) {
        let images = dir.join("frames");
        std::fs::create_dir_all(&images).unwrap();
        let mut a = image::RgbImage::from_pixel(96, 64, image::Rgb([90, 120, 90]));
        for y in 10..26 {
            for x in 30..46 {
                a.put_pixel(x, y, image::Rgb([220, 20, 20]));
            }
        }
        a.save(images.join("a.png")).unwrap();
        image::RgbImage::from_pixel(80, 80, image::Rgb([40, 40, 40]))
            .save(images.join("b.png"))
            .unwrap();
        let csv = dir.join("ann.csv");
        std::fs::write(
            &csv,
            format!("{HEADER}a.png,96,64,stop,14,30,10,45,25\na.png,96,64,trafficlight,,0,0,5,5\n"),
        )
        .unwrap();
        (images, csv)
    }

    #[test]
    fn rescaled_frames_keep_their_boxes_on_the_same_pixels() {
        let (w, h) = (40u32, 20u32);
        let mut rgb = vec![10u8; (w * h * 3) as usize];
        for y in 4..10 {
            for x in 20..30 {
                rgb[((y * w + x) * 3) as usize] = 250;
            }
        }
        let frame = Frame::from_rgb(3, w, h, rgb).unwrap();
        let truth = vec![TruthEntry {
            bbox: BoxPx::new(20.0, 4.0, 30.0, 10.0),
            class_name: "stop".into(),
            class_id: Some(14),
        }];
        let (big, t) = rescale_frame(frame, &truth, 80, 50).unwrap();
        assert_eq!((big.width, big.height, big.index), (80, 50, 3));
        let b = t[0].bbox;
        assert_eq!(b.to_array(), [40.0, 10.0, 60.0, 25.0]);
        let (cx, cy) = b.centre();
        assert!(big.pixel(cx as u32, cy as u32)[0] > 200);
        assert!(big.pixel(5, 5)[0] < 50);
    }

    #[test]
    fn eval_runs_real_nets_on_frames_of_any_size_and_writes_stable_json_keys() {
        let dir = tempfile::tempdir().unwrap();
        let models = write_random_models(dir.path());
        let (images, annotations) = small_annotated_folder(dir.path());
        let json = dir.path().join("eval.json");
        eval(EvalArgs {
            images,
            annotations,
            json: Some(json.display().to_string()),
            ignore_classes: vec!["trafficlight".to_string()],
            split: EvalSplit::All,
            strategy_config: None,
            sweep: false,
            rescale: None,
            limit: None,
            misses: None,
            strategy: StrategyArgs {
                strategy: "topk".to_string(),
                max_patches: 8,
                deadline_ms: None,
            },
            models,
        })
        .unwrap();
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap();
        for key in [
            "strategy",
            "frames",
            "precision",
            "recall",
            "f1",
            "class_accuracy",
            "p50_ms",
            "p99_ms",
            "patches_per_frame",
            "pixel_fraction",
            "mflops_per_frame",
            "early_exit_rate",
            "peak_rss_mb",
            "stages",
            "per_class",
            "signs",
            "looked_at",
            "looked_at_share",
            "found_when_looked_at",
            "by_size",
            "split",
            "strategy_config",
            "strategy_settings",
            "score_sweep",
            "best_f1",
        ] {
            assert!(v.get(key).is_some(), "missing {key} in {v}");
        }
        // One stop sign (16 px, small) counts; the ignored traffic light does not.
        assert_eq!(v["signs"], 1);
        assert_eq!(v["by_size"]["small"]["signs"], 1);
        assert_eq!(v["by_size"]["medium"]["signs"], 0);
        assert_eq!(v["by_size"]["large"]["signs"], 0);
        let small = &v["by_size"]["small"];
        for key in ["found", "looked_at", "found_when_looked_at"] {
            assert!(small[key].as_u64().unwrap() <= 1, "{key} in {small}");
        }
        assert_eq!(small["found"].as_u64(), Some(1 - v["fn"].as_u64().unwrap()));
        assert_eq!(v["frames"], 2);
        assert_eq!(v["strategy"], "topk");
        // The ignored traffic light is neither found nor missed: only the stop sign can be a FN.
        assert!(v["fn"].as_u64().unwrap() <= 1);
        for key in [
            "precision",
            "recall",
            "f1",
            "pixel_fraction",
            "early_exit_rate",
        ] {
            let x = v[key].as_f64().unwrap();
            assert!((0.0..=1.0).contains(&x), "{key} = {x}");
        }
        assert!(v["mflops_per_frame"].as_f64().unwrap() > 0.0);
        assert!(v["stages"]["total"]["p50_ms"].as_f64().unwrap() > 0.0);
        assert_eq!(v["split"], "all");
        assert!(v["strategy_config"].is_null(), "{v}");
        assert_eq!(v["strategy_settings"]["k"], 6, "the topk section: {v}");
        assert_eq!(v["score_sweep"].as_array().unwrap().len(), 24);
        // Every detection scores ≥ 0.05 (the default min_score is 0.5), so the lowest threshold repeats the
        // main numbers.
        for key in ["tp", "fp", "fn"] {
            assert_eq!(v["score_sweep"][0][key], v[key], "{key}");
        }
        let best = v["best_f1"]["f1"].as_f64().unwrap();
        assert!(best >= v["f1"].as_f64().unwrap(), "{v}");
    }

    #[test]
    fn eval_applies_the_strategy_config_file_and_keeps_only_the_split() {
        let dir = tempfile::tempdir().unwrap();
        let models = write_random_models(dir.path());
        let images = dir.path().join("frames");
        std::fs::create_dir_all(&images).unwrap();
        for name in ["00005.png", "00006.png", "00011.png", "00600.png", "a.png"] {
            image::RgbImage::from_pixel(64, 48, image::Rgb([90, 120, 90]))
                .save(images.join(name))
                .unwrap();
        }
        let annotations = dir.path().join("ann.csv");
        std::fs::write(
            &annotations,
            format!("{HEADER}00600.png,64,48,stop,14,0,0,9,9\n"),
        )
        .unwrap();
        let settings = dir.path().join("mine.toml");
        std::fs::write(&settings, "[topk]\nk = 2\nmin_score = 0.05\n").unwrap();
        let json = dir.path().join("eval.json");
        let args = EvalArgs {
            images,
            annotations,
            json: Some(json.display().to_string()),
            ignore_classes: Vec::new(),
            split: EvalSplit::Validation,
            strategy_config: Some(settings.clone()),
            sweep: true,
            rescale: None,
            limit: None,
            misses: None,
            strategy: StrategyArgs {
                strategy: "topk".to_string(),
                max_patches: 8,
                deadline_ms: None,
            },
            models,
        };
        eval(args.clone()).unwrap();
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
        assert_eq!(v["split"], "validation");
        assert_eq!(v["frames"], 2, "00005 and 00011: {v}");
        assert_eq!(v["strategy_config"], settings.display().to_string());
        assert_eq!(v["strategy_settings"]["k"], 2);
        assert_eq!(v["strategy_settings"]["min_score"], 0.05);
        std::fs::write(&settings, "[topk]\nkk = 2\n").unwrap();
        let err = format!("{:#}", eval(args).unwrap_err());
        assert!(
            err.contains("mine.toml") && err.contains("`topk.kk`"),
            "{err}"
        );
    }

    fn frames_with_names(dir: &Path, names: &[&str]) -> Vec<EvalItem> {
        for name in names {
            image::RgbImage::new(8, 6).save(dir.join(name)).unwrap();
        }
        items_from_folder(dir, &[]).unwrap()
    }

    #[test]
    fn split_keeps_the_gtsdb_frames_of_that_split_only() {
        let dir = tempfile::tempdir().unwrap();
        let items = frames_with_names(dir.path(), &["00005.png", "00006.png", "00600.png"]);
        let kept = |split| -> Vec<String> {
            select_split(items.clone(), split, dir.path())
                .unwrap()
                .into_iter()
                .map(|i| i.name)
                .collect()
        };
        assert_eq!(kept(EvalSplit::Validation), ["00005.png"]);
        assert_eq!(kept(EvalSplit::Test), ["00600.png"]);
        assert_eq!(kept(EvalSplit::Train), ["00006.png"]);
        assert_eq!(kept(EvalSplit::All).len(), 3);
    }

    #[test]
    fn split_skips_frames_whose_stem_is_not_a_number_unless_all() {
        let dir = tempfile::tempdir().unwrap();
        let items = frames_with_names(dir.path(), &["frame.png", "00005b.png", "00599.jpg"]);
        let names = |split| -> Vec<String> {
            select_split(items.clone(), split, dir.path())
                .map(|kept| kept.into_iter().map(|i| i.name).collect())
                .unwrap_or_default()
        };
        assert_eq!(names(EvalSplit::Validation), ["00599.jpg"]);
        assert_eq!(names(EvalSplit::All).len(), 3);
        let err = select_split(items.clone(), EvalSplit::Test, dir.path())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("none of the 3 frames") && err.contains("test split"),
            "{err}"
        );
    }

    fn truth_at(x: f32) -> TruthEntry {
        TruthEntry {
            bbox: BoxPx::new(x, 10.0, x + 40.0, 50.0),
            class_name: "stop".to_string(),
            class_id: Some(14),
        }
    }

    fn detection_at(x: f32, score: f32) -> DetectionEntry {
        DetectionEntry {
            bbox: BoxPx::new(x, 10.0, x + 40.0, 50.0),
            score,
            class_id: 14,
            class_name: "stop".to_string(),
        }
    }

    #[test]
    fn misses_csv_tells_glance_misses_from_focus_misses_and_lists_false_positives() {
        // Frame a: sign at 100 found; sign at 300 inside an examined patch but not found; sign at 600 never
        // looked at. Frame b: no sign, one false positive.
        let frames = [
            ScoredFrame {
                truth: vec![truth_at(100.0), truth_at(300.0), truth_at(600.0)],
                detections: vec![detection_at(100.0, 0.9), detection_at(320.0, 0.4)],
            },
            ScoredFrame {
                truth: Vec::new(),
                detections: vec![detection_at(50.0, 0.7)],
            },
        ];
        let examined = vec![
            vec![
                BoxPx::new(80.0, 0.0, 160.0, 80.0),
                BoxPx::new(280.0, 0.0, 360.0, 80.0),
            ],
            Vec::new(),
        ];
        let csv = misses_csv(&["a.jpg", "b.jpg"], &frames, &examined, &HashSet::new());
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines[0], MISSES_HEADER);
        // The detection at 320 overlaps the sign at 300 with IoU 20·40 / (2·1600 − 800) = 1/3: a miss that
        // was looked at, and a false positive.
        assert_eq!(
            &lines[1..],
            [
                "a.jpg,focus-miss,stop,300,10,340,50,40,true,0.333,stop,0.400",
                "a.jpg,glance-miss,stop,600,10,640,50,40,false,,,",
                "a.jpg,fp,stop,320,10,360,50,40,,0.333,stop,0.400",
                "b.jpg,fp,stop,50,10,90,50,40,,,,0.700",
            ]
        );
        let ignored: HashSet<String> = ["stop".to_string()].into();
        let csv = misses_csv(&["a.jpg", "b.jpg"], &frames, &examined, &ignored);
        assert!(!csv.contains("miss"), "{csv}");
    }

    #[test]
    fn score_sweep_drops_detections_below_each_threshold() {
        // Frame 1: one sign found at score 0.9. Frame 2: no sign, a false positive at score 0.3.
        let frames = [
            ScoredFrame {
                truth: vec![truth_at(100.0)],
                detections: vec![detection_at(100.0, 0.9)],
            },
            ScoredFrame {
                truth: Vec::new(),
                detections: vec![detection_at(300.0, 0.3)],
            },
        ];
        let sweep = score_sweep(&frames, &HashSet::new());
        assert_eq!(sweep.len(), 24);
        let at = |t: f64| {
            sweep
                .iter()
                .find(|p| (p.threshold - t).abs() < 1e-9)
                .unwrap()
        };
        assert_eq!(at(0.5).precision, 1.0);
        assert_eq!((at(0.5).tp, at(0.5).fp, at(0.5).fn_), (1, 0, 0));
        assert_eq!(at(0.25).precision, 0.5);
        assert_eq!((at(0.25).tp, at(0.25).fp, at(0.25).fn_), (1, 1, 0));
        // A detection scoring exactly the threshold counts.
        assert_eq!(at(0.3).fp, 1);
        assert_eq!(at(0.35).fp, 0);
        // Above the true positive's score nothing is found.
        assert_eq!((at(0.95).tp, at(0.95).fn_), (0, 1));
        assert_eq!(at(0.95).recall, 0.0);
        let mut tally = Tally::default();
        for f in &frames {
            tally.add(&tally_frame(&f.truth, &f.detections, &[], &HashSet::new()));
        }
        let ci95 = bootstrap_intervals(&[tally.overall], 1);
        let report = build_report(
            "topk",
            &PipelineMetrics::default(),
            &tally,
            sweep,
            ci95,
            0.0,
            0.0,
        );
        // The main numbers are the unfiltered ones; the best F1 is the highest threshold reaching F1 1.
        assert_eq!(report.precision, 0.5);
        assert_eq!(
            report.best_f1,
            BestF1 {
                threshold: 0.9,
                precision: 1.0,
                recall: 1.0,
                f1: 1.0
            }
        );
        let table = report.sweep_table();
        assert_eq!(table.lines().count(), 25, "{table}");
        assert!(
            table.contains("0.90  1.000  1.000  1.000     1     0     0  ← best F1"),
            "{table}"
        );
        let v = serde_json::to_value(&report).unwrap();
        assert_eq!(v["score_sweep"][9]["threshold"], 0.5);
        assert_eq!(v["score_sweep"][9]["fn"], 0);
        assert_eq!(v["best_f1"]["threshold"], 0.9);
    }

    #[test]
    fn score_sweep_uses_the_ignore_set_of_the_main_numbers() {
        let mut light = truth_at(100.0);
        light.class_name = "trafficlight".to_string();
        let frames = [ScoredFrame {
            truth: vec![light],
            detections: vec![detection_at(100.0, 0.9)],
        }];
        let ignored: HashSet<String> = ["trafficlight".to_string()].into();
        let sweep = score_sweep(&frames, &ignored);
        assert!(sweep.iter().all(|p| (p.tp, p.fp, p.fn_) == (0, 0, 0)));
        let sweep = score_sweep(&frames, &HashSet::new());
        assert_eq!((sweep[0].tp, sweep[0].fp), (1, 0));
    }

    #[test]
    fn eval_classifier_reports_accuracy_in_unit_interval() {
        let dir = tempfile::tempdir().unwrap();
        write_random_models(dir.path());
        let mut images = vec![0u8; 3072 * 5];
        for (i, b) in images.iter_mut().enumerate() {
            *b = (i * 7 % 251) as u8;
        }
        std::fs::write(dir.path().join("test_images.u8"), images).unwrap();
        std::fs::write(dir.path().join("test_labels.u8"), [0u8, 1, 2, 14, 42]).unwrap();
        let json = dir.path().join("cls.json");
        eval_classifier(EvalClassifierArgs {
            data: dir.path().to_path_buf(),
            weights: Some(dir.path().join("patchnet.safetensors")),
            batch: 2,
            limit: None,
            json: Some(json.display().to_string()),
        })
        .unwrap();
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap();
        assert_eq!(v["images"], 5);
        let acc = v["accuracy"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&acc));
        assert_eq!(v["per_class_accuracy"].as_object().unwrap().len(), 5);
        assert!(v["ms_per_patch"].as_f64().unwrap() > 0.0);
    }

    #[test]
    fn top_confusions_count_errors_most_frequent_first() {
        let labels = [27u8, 27, 27, 27, 21, 21, 1, 1];
        let predicted = [27usize, 43, 43, 11, 11, 21, 1, 2];
        let top = top_confusions(&labels, &predicted, 3);
        let pairs: Vec<(&str, &str, usize)> = top
            .iter()
            .map(|c| (&c.true_class[..2], &c.predicted[..2], c.count))
            .collect();
        // 27 → 43 twice first; then the single errors by class ids: 1 → 2, 21 → 11 (27 → 11 cut off).
        assert_eq!(pairs, [("27", "43", 2), ("01", "02", 1), ("21", "11", 1)]);
        assert!(top[0].predicted.ends_with("background"), "{:?}", top[0]);
        assert!(top_confusions(&labels, &labels.map(usize::from), 3).is_empty());
    }

    #[test]
    fn classifier_accuracy_agrees_with_the_trainers_gtsrb_accuracy() {
        let dir = tempfile::tempdir().unwrap();
        write_random_models(dir.path());
        let model = PatchNet::load(&dir.path().join("patchnet.safetensors"), &Device::Cpu).unwrap();
        let n = 40;
        let images: Vec<u8> = (0..n * 3072).map(|i| (i * 13 % 256) as u8).collect();
        let labels: Vec<u8> = (0..n).map(|i| (i % 43) as u8).collect();
        let set = GtsrbTest::from_bytes(images.clone(), labels.clone()).unwrap();
        let (predicted, _, _) = evaluate_classifier(&model, &set, 7, &Device::Cpu).unwrap();
        let report = classifier_report(&model, Path::new("w"), &set, &predicted, 7, 0.0, 0.0);
        let (accuracy, _) =
            crate::train::gtsrb_accuracy(&model, &images, &labels, &Device::Cpu).unwrap();
        assert_eq!(
            report.correct,
            (accuracy * n as f64).round() as usize,
            "{} vs {accuracy}",
            report.accuracy
        );
        assert!(
            (report.accuracy - accuracy).abs() < 1e-5,
            "{} vs {accuracy}",
            report.accuracy
        );
    }
}
