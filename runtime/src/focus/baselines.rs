//! Baselines that ignore the glance, for the benchmark to beat.
//!
//! - `fullres`: the honest full-resolution baseline — the same backbone slid densely over the whole frame at
//!   several window sides (default 32, 64, 128, 256 px: with the box head, a window frames a sign of 1/3 to 9/10
//!   of its side, so these cover signs of 12–230 px) at half-window stride, batched 256 at a time. Where the net
//!   has a box head, each window's box is the sign's regressed box and windows that may hold a sign get the
//!   same second look at full resolution as the focus strategies. It ignores
//!   `FocusBudget::max_patches` (which bounds the glance-driven strategies) and reports its real patch count;
//!   it does honour `deadline_ms`, checked before every batch.
//! - `downsample`: the whole frame shrunk uniformly by a fixed factor (default 4×, area averaging), and the
//!   backbone window slid over the shrunk image at half-window stride: the cheap "just look at less pixels"
//!   baseline. Boxes are the box head's boxes (else the windows) scaled back to frame px; no second look at full
//!   resolution, which would make it a glance-and-focus system. Like `fullres` it ignores `max_patches`.
//!
//! Neither uses the frame-level early exit: they stand for systems without a glance.

use super::classify::PatchBatcher;
use super::detect_config::DetectConfig;
use super::exit::BudgetClock;
use super::outcome::OutcomeRecorder;
use super::{ExitReason, FocusError, FocusInput, FocusOutcome, FocusResult, FocusStrategy};
use crate::frame::BoxPx;
use crate::imageops;

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct FullResConfig {
    /// Window sides in frame px; each window is resized to the classifier's input side.
    pub window_sides_px: Vec<u32>,
    /// Stride as a fraction of the window side.
    pub stride_fraction: f32,
    /// Windows per classifier call.
    pub batch_size: usize,
    #[serde(flatten)]
    pub detect: DetectConfig,
}

impl Default for FullResConfig {
    fn default() -> Self {
        Self {
            window_sides_px: vec![32, 64, 128, 256],
            stride_fraction: 0.5,
            batch_size: 256,
            detect: DetectConfig::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct DownsampleConfig {
    /// The frame is shrunk by this factor on both axes.
    pub factor: f32,
    /// Stride as a fraction of the classifier's input side.
    pub stride_fraction: f32,
    pub batch_size: usize,
    #[serde(flatten)]
    pub detect: DetectConfig,
}

impl Default for DownsampleConfig {
    fn default() -> Self {
        Self {
            factor: 4.0,
            stride_fraction: 0.5,
            batch_size: 256,
            detect: DetectConfig {
                second_look: false,
                ..DetectConfig::default()
            },
        }
    }
}

/// Origins of `window`-px windows every `stride` px over `length` px, the last flush with the far edge.
fn origins(length: f32, window: f32, stride: f32) -> impl Iterator<Item = f32> {
    let stride = stride.max(1.0);
    let span = (length - window).max(0.0);
    let n = (span / stride).ceil() as usize;
    (0..=n).map(move |i| (i as f32 * stride).min(span))
}

/// Slides windows over an image in batches: `windows` are (region in the image, box to report in frame px).
/// Shared by both baselines.
#[allow(clippy::too_many_arguments)]
fn slide(
    strategy: &'static str,
    rgb: &[u8],
    width: usize,
    height: usize,
    windows: &[(BoxPx, BoxPx)],
    batch_size: usize,
    detect: &DetectConfig,
    object_fraction: f32,
    batcher: &mut PatchBatcher,
    input: &FocusInput<'_>,
    out: &mut FocusOutcome,
) -> Result<(), FocusError> {
    let clock = BudgetClock::new(input);
    let side = input.classifier.input_side_px();
    let per_patch = 3 * side * side;
    let mflops = input.classifier.mflops_per_patch();
    let mut recorder = OutcomeRecorder::new(out);
    for (step, chunk) in windows.chunks(batch_size.max(1)).enumerate() {
        if clock.expired() {
            recorder.finish(ExitReason::Budget, detect.merge_iou);
            return Ok(());
        }
        let buffer = batcher.prepare(chunk.len(), side);
        for ((region, _), patch) in chunk.iter().zip(buffer.chunks_exact_mut(per_patch.max(1))) {
            imageops::crop_resize_rgb_chw(rgb, width, height, *region, side, patch).map_err(
                |e| FocusError::Tensor {
                    strategy,
                    message: e.to_string(),
                },
            )?;
        }
        let looked = batcher.classify_prepared_and_look_again(
            strategy,
            input.frame,
            side,
            chunk.iter().map(|&(_, frame_box)| frame_box),
            input.classifier,
            detect,
        )?;
        for ((_, frame_box), l) in chunk.iter().zip(looked) {
            recorder.record_looked(
                step,
                *frame_box,
                0.0,
                frame_box.width() * object_fraction,
                l,
                mflops,
                detect.min_score,
            );
        }
    }
    recorder.finish(ExitReason::MaxSteps, detect.merge_iou);
    Ok(())
}

pub struct FullRes {
    config: FullResConfig,
    batcher: PatchBatcher,
    windows: Vec<(BoxPx, BoxPx)>,
}

impl FullRes {
    pub fn new(config: FullResConfig) -> Self {
        Self {
            config,
            batcher: PatchBatcher::new(),
            windows: Vec::new(),
        }
    }
}

impl FocusStrategy for FullRes {
    fn name(&self) -> &'static str {
        "fullres"
    }

    fn focus_into(&mut self, input: &FocusInput<'_>, out: &mut FocusOutcome) -> FocusResult {
        let frame = input.frame;
        let (w, h) = (frame.width as f32, frame.height as f32);
        self.windows.clear();
        for &side in &self.config.window_sides_px {
            let side = (side.max(1) as f32).min(w.min(h));
            let stride = side * self.config.stride_fraction.max(0.05);
            for y in origins(h, side, stride) {
                for x in origins(w, side, stride) {
                    let b = BoxPx::new(x, y, x + side, y + side);
                    self.windows.push((b, b));
                }
            }
        }
        slide(
            "fullres",
            &frame.rgb,
            frame.width as usize,
            frame.height as usize,
            &self.windows,
            self.config.batch_size,
            &self.config.detect,
            1.0 / self.config.detect.context.max(1.0),
            &mut self.batcher,
            input,
            out,
        )
    }
}

/// The configured strategy and its per-frame scratch (empty until the first frame).
#[derive(Default)]
pub struct Downsample {
    config: DownsampleConfig,
    batcher: PatchBatcher,
    small: Vec<u8>,
    windows: Vec<(BoxPx, BoxPx)>,
}

impl Downsample {
    pub fn new(config: DownsampleConfig) -> Self {
        Self {
            config,
            ..Self::default()
        }
    }
}

impl FocusStrategy for Downsample {
    fn name(&self) -> &'static str {
        "downsample"
    }

    fn focus_into(&mut self, input: &FocusInput<'_>, out: &mut FocusOutcome) -> FocusResult {
        let frame = input.frame;
        let factor = self.config.factor.max(1.0);
        let sw = ((frame.width as f32 / factor).round() as usize).max(1);
        let sh = ((frame.height as f32 / factor).round() as usize).max(1);
        // Actual scale per axis after rounding, so boxes map back exactly.
        let (fx, fy) = (
            frame.width as f32 / sw as f32,
            frame.height as f32 / sh as f32,
        );
        self.small.clear();
        self.small.resize(sw * sh * 3, 0);
        imageops::resize_rgb_bilinear(
            &frame.rgb,
            frame.width as usize,
            frame.height as usize,
            &mut self.small,
            sw,
            sh,
        )
        .map_err(|e| FocusError::Tensor {
            strategy: "downsample",
            message: e.to_string(),
        })?;
        let side = input.classifier.input_side_px() as f32;
        let win = side.min(sw as f32).min(sh as f32);
        let stride = side * self.config.stride_fraction.max(0.05);
        self.windows.clear();
        for y in origins(sh as f32, win, stride) {
            for x in origins(sw as f32, win, stride) {
                let small_box = BoxPx::new(x, y, x + win, y + win);
                let frame_box = BoxPx::new(x * fx, y * fy, (x + win) * fx, (y + win) * fy);
                self.windows.push((small_box, frame_box));
            }
        }
        slide(
            "downsample",
            &self.small,
            sw,
            sh,
            &self.windows,
            self.config.batch_size,
            &self.config.detect,
            1.0 / self.config.detect.context.max(1.0),
            &mut self.batcher,
            input,
            out,
        )
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::focus::testutil::*;
    use std::sync::atomic::Ordering;

    #[test]
    fn window_origins_cover_the_length_flush_to_the_end() {
        let v: Vec<f32> = origins(100.0, 32.0, 16.0).collect();
        assert_eq!(v, vec![0.0, 16.0, 32.0, 48.0, 64.0, 68.0]);
        let v: Vec<f32> = origins(20.0, 32.0, 16.0).collect();
        assert_eq!(v, vec![0.0]);
    }

    #[test]
    fn fullres_finds_a_red_square_and_reports_its_real_patch_count() {
        let frame = frame_with_squares(320, 240, &[(150, 100, 40)]);
        let glance = redness_glance(&frame, (80, 60), 4, 40.0);
        let classifier = RednessClassifier::new(16);
        let config = FullResConfig {
            batch_size: 64,
            window_sides_px: vec![32, 48, 64],
            ..FullResConfig::default()
        };
        let out = FullRes::new(config)
            .focus(&input(&frame, &glance, (80, 60), &classifier, 4))
            .unwrap();
        // 32: 19×14, 48: 13×9, 64: 9×7 windows.
        assert_eq!(out.patches.len(), 19 * 14 + 13 * 9 + 9 * 7);
        assert_eq!(
            classifier.calls.load(Ordering::SeqCst),
            out.patches.len().div_ceil(64)
        );
        assert!(
            found(
                &out,
                BoxPx::new(150.0, 100.0, 190.0, 140.0),
                STOP_CLASS,
                0.3
            ),
            "{out:?}"
        );
        assert_eq!(out.exit, Some(ExitReason::MaxSteps));
    }

    #[test]
    fn downsample_finds_a_large_red_square() {
        let frame = frame_with_squares(640, 480, &[(300, 200, 128)]);
        let glance = redness_glance(&frame, (160, 120), 4, 128.0);
        let classifier = RednessClassifier::new(32);
        let out = Downsample::new(DownsampleConfig::default())
            .focus(&input(&frame, &glance, (160, 120), &classifier, 4))
            .unwrap();
        // 160×120 shrunk image, 32 px windows at stride 16: 9×7.
        assert_eq!(out.patches.len(), 9 * 7);
        assert!(
            found(
                &out,
                BoxPx::new(300.0, 200.0, 428.0, 328.0),
                STOP_CLASS,
                0.3
            ),
            "{out:?}"
        );
        assert!(out
            .patches
            .iter()
            .all(|p| p.bbox.xmax <= 640.0 && p.bbox.ymax <= 480.0));
    }
}
