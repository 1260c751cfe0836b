//! Real road frames for training: the German Traffic Sign Detection Benchmark (`../shared/data/gtsdb/`,
//! 1360×800, boxes of the 43 GTSRB classes) under its official split. Frames 00000–00599 are the benchmark's
//! training frames; every sixth of them (number % 6 == 5) is held out as *validation* (threshold fitting,
//! model selection, progress reports), the rest train. Frames 00600–00899 are the benchmark's *test* frames:
//! no trainer loads them (see [`GtsdbSplit`]).
//!
//! Besides loading, this module cuts the random views the trainers learn from: glance-sized views of a whole
//! frame at a random scale, offset and aspect (so one glance net serves cameras of other resolutions), and
//! patch-sized crops around real signs with jittered centres and scales, and crops of the background.

use std::path::{Path, PathBuf};

use anyhow::{ensure, Context};
use rand::Rng;
use rayon::prelude::*;
use saccade_runtime::frame::BoxPx;
use saccade_runtime::imageops::{
    area_average_rgb, crop_resize_rgb_chw, resize_rgb_bilinear, sample_bilinear_rgb,
};

use super::data::read_rgb;
use super::glance_sample::{GlanceBox, GlanceSample};

/// Frames numbered below this are the benchmark's training frames; the rest are its test frames.
pub const FIRST_TEST_FRAME: u32 = 600;
/// A training frame whose number modulo this is [`VALIDATION_REMAINDER`] is held out for validation.
pub const VALIDATION_EVERY: u32 = 6;
pub const VALIDATION_REMAINDER: u32 = 5;

/// Which part of the benchmark a frame belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GtsdbSplit {
    /// Training frames minus validation: what the nets learn from.
    Train,
    /// Held-out training frames: progress reports, threshold fitting and model selection.
    Validation,
    /// The benchmark's test frames: measuring only. No trainer may ask for them.
    Test,
}

/// The split of frame number `n` (the file stem, e.g. 00417 → 417).
pub fn split_of(n: u32) -> GtsdbSplit {
    if n >= FIRST_TEST_FRAME {
        GtsdbSplit::Test
    } else if n % VALIDATION_EVERY == VALIDATION_REMAINDER {
        GtsdbSplit::Validation
    } else {
        GtsdbSplit::Train
    }
}

/// One sign of a frame, in frame pixels (exclusive max corner).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SignBox {
    pub bbox: BoxPx,
    pub class_id: usize,
}

/// A decoded frame and its signs.
#[derive(Debug, Clone)]
pub struct GtsdbFrame {
    pub file: String,
    pub width_px: usize,
    pub height_px: usize,
    pub rgb: Vec<u8>,
    pub signs: Vec<SignBox>,
}

impl GtsdbFrame {
    /// Whether `region` holds no sign: no sign overlaps it by more than 10 % of the sign's area. The rule for
    /// every background and hard-negative crop.
    pub fn holds_no_sign(&self, region: &BoxPx) -> bool {
        self.signs
            .iter()
            .all(|s| s.bbox.intersection_area(region) <= 0.1 * s.bbox.area())
    }
}

fn frame_number(file: &str) -> Option<u32> {
    Path::new(file).file_stem()?.to_str()?.parse().ok()
}

/// The frames of `split` (sorted by name), decoded, with their boxes. Frames without a box are included:
/// they are the negatives. Refuses the test split: training code has no business reading it.
pub fn load_gtsdb(data_dir: &Path, split: GtsdbSplit) -> anyhow::Result<Vec<GtsdbFrame>> {
    ensure!(
        split != GtsdbSplit::Test,
        "GTSDB test frames ({FIRST_TEST_FRAME:05}–00899) are for measuring only; trainers load Train or Validation"
    );
    let root = data_dir.join("gtsdb");
    let csv = root.join("annotations.csv");
    let text =
        std::fs::read_to_string(&csv).with_context(|| format!("reading {}", csv.display()))?;
    let rows = crate::eval::annotations::parse_annotations(&text, &csv)?;
    let image_dir = root.join("images");
    let mut files: Vec<(u32, PathBuf)> = std::fs::read_dir(&image_dir)
        .with_context(|| format!("listing {}", image_dir.display()))?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_str()?.to_string();
            let n = frame_number(&name)?;
            (split_of(n) == split).then(|| (n, e.path()))
        })
        .collect();
    files.sort();
    ensure!(
        !files.is_empty(),
        "no GTSDB frames of the {split:?} split in {}",
        image_dir.display()
    );
    files
        .par_iter()
        .map(|(_, path)| {
            let file = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .to_string();
            let (w, h, rgb) = read_rgb(path)?;
            let signs = rows
                .iter()
                .filter(|r| r.file == file)
                .filter_map(|r| {
                    r.gtsrb_class_id.map(|class_id| SignBox {
                        bbox: r.bbox,
                        class_id,
                    })
                })
                .collect();
            Ok(GtsdbFrame {
                file,
                width_px: w,
                height_px: h,
                rgb,
                signs,
            })
        })
        .collect()
}

/// The frame as the runtime's glance stage sees it: resized to `out_w × out_h`, boxes scaled alike.
pub fn glance_sample_exact(frame: &GtsdbFrame, out_w: usize, out_h: usize) -> GlanceSample {
    let mut small = vec![0u8; out_w * out_h * 3];
    // The sizes are consistent by construction; a failure leaves a black image rather than a panic.
    let _ = resize_rgb_bilinear(
        &frame.rgb,
        frame.width_px,
        frame.height_px,
        &mut small,
        out_w,
        out_h,
    );
    let (sx, sy) = (
        out_w as f32 / frame.width_px as f32,
        out_h as f32 / frame.height_px as f32,
    );
    let boxes = frame
        .signs
        .iter()
        .map(|s| GlanceBox {
            xmin: s.bbox.xmin * sx,
            ymin: s.bbox.ymin * sy,
            xmax: s.bbox.xmax * sx,
            ymax: s.bbox.ymax * sy,
            class_id: Some(s.class_id),
            ignore: false,
        })
        .collect();
    let plane = out_w * out_h;
    let mut chw_u8 = vec![0u8; 3 * plane];
    for (i, px) in small.chunks_exact(3).enumerate() {
        for c in 0..3 {
            chw_u8[c * plane + i] = px[c];
        }
    }
    GlanceSample { chw_u8, boxes }
}

/// Ranges of a random glance view.
#[derive(Debug, Clone, Copy)]
pub struct ViewJitter {
    /// Magnification against the runtime's frame→glance scale (signs appear `scale`× as large).
    pub scale_min: f32,
    pub scale_max: f32,
    /// Largest ratio between the horizontal and vertical magnification (≥ 1).
    pub aspect_max: f32,
    /// Probability of a horizontal mirror (the class is then unknown: mirrored arrows change meaning).
    pub flip_probability: f64,
}

/// A random view of `frame` at glance size: magnified by a random scale around the runtime's own shrink, at
/// a random offset (pixels beyond the frame repeat its edge), maybe mirrored. CHW f32 in 0..1 and the
/// signs in view pixels (signs cut by more than half by the view's edge are marked ignore).
pub fn glance_view<R: Rng>(
    frame: &GtsdbFrame,
    out_w: usize,
    out_h: usize,
    jitter: &ViewJitter,
    rng: &mut R,
) -> (Vec<f32>, Vec<GlanceBox>) {
    let log_s = rng.random_range(jitter.scale_min.ln()..=jitter.scale_max.ln());
    let log_a = rng.random_range(-jitter.aspect_max.ln()..=jitter.aspect_max.ln()) * 0.5;
    let (fw, fh) = (frame.width_px as f32, frame.height_px as f32);
    // Frame pixels per view pixel.
    let step_x = fw / out_w as f32 / (log_s + log_a).exp();
    let step_y = fh / out_h as f32 / (log_s - log_a).exp();
    let (span_x, span_y) = (step_x * out_w as f32, step_y * out_h as f32);
    let pick = |rng: &mut R, span: f32, full: f32| {
        let (lo, hi) = if span <= full {
            (0.0, full - span)
        } else {
            (full - span, 0.0)
        };
        if hi > lo {
            rng.random_range(lo..hi)
        } else {
            lo
        }
    };
    let x0 = pick(rng, span_x, fw);
    let y0 = pick(rng, span_y, fh);
    let flip = rng.random_bool(jitter.flip_probability);
    let plane = out_w * out_h;
    let mut chw = vec![0f32; 3 * plane];
    let area = step_x >= 1.5 || step_y >= 1.5;
    for v in 0..out_h {
        let fy = y0 + v as f32 * step_y;
        for u in 0..out_w {
            let fx = x0 + u as f32 * step_x;
            let p = if area {
                area_average_rgb(
                    &frame.rgb,
                    frame.width_px,
                    frame.height_px,
                    fx,
                    fx + step_x,
                    fy,
                    fy + step_y,
                )
            } else {
                sample_bilinear_rgb(
                    &frame.rgb,
                    frame.width_px,
                    frame.height_px,
                    fx + 0.5 * step_x - 0.5,
                    fy + 0.5 * step_y - 0.5,
                )
            };
            let ou = if flip { out_w - 1 - u } else { u };
            let o = v * out_w + ou;
            chw[o] = p[0] / 255.0;
            chw[plane + o] = p[1] / 255.0;
            chw[2 * plane + o] = p[2] / 255.0;
        }
    }
    let (vw, vh) = (out_w as f32, out_h as f32);
    let boxes = frame
        .signs
        .iter()
        .filter_map(|s| {
            let mut b = GlanceBox {
                xmin: (s.bbox.xmin - x0) / step_x,
                ymin: (s.bbox.ymin - y0) / step_y,
                xmax: (s.bbox.xmax - x0) / step_x,
                ymax: (s.bbox.ymax - y0) / step_y,
                class_id: (!flip).then_some(s.class_id),
                ignore: false,
            };
            if flip {
                (b.xmin, b.xmax) = (vw - b.xmax, vw - b.xmin);
            }
            let inside_w = (b.xmax.min(vw) - b.xmin.max(0.0)).max(0.0);
            let inside_h = (b.ymax.min(vh) - b.ymin.max(0.0)).max(0.0);
            let full = (b.xmax - b.xmin) * (b.ymax - b.ymin);
            let share = if full > 0.0 {
                inside_w * inside_h / full
            } else {
                0.0
            };
            if share <= 0.0 {
                return None;
            }
            b.ignore = share < 0.5;
            Some(b)
        })
        .collect();
    (chw, boxes)
}

/// Ranges of the square crops cut around real signs for the patch net.
#[derive(Debug, Clone, Copy)]
pub struct CropJitter {
    /// Patch side over sign side (the larger of its width and height), drawn log-uniformly.
    pub context_min: f32,
    pub context_max: f32,
}

/// Side of a sign box: the larger of its width and height.
pub fn sign_side_px(b: &BoxPx) -> f32 {
    b.width().max(b.height()).max(1.0)
}

/// A square crop around `sign` at `side_px`: side = sign side × a random context, the sign's centre moved
/// off the patch centre by up to 90 % of the slack (plus 5 % of the side), so the sign stays mostly inside.
/// CHW f32 in 0..1, the region in frame pixels, and the sign's box in patch sides (the box head's target).
pub fn sign_crop<R: Rng>(
    frame: &GtsdbFrame,
    sign: &SignBox,
    side_px: usize,
    jitter: &CropJitter,
    rng: &mut R,
) -> (Vec<f32>, BoxPx, [f32; 4]) {
    let s = sign_side_px(&sign.bbox);
    let context = rng
        .random_range(jitter.context_min.ln()..=jitter.context_max.ln())
        .exp();
    let side = s * context;
    let slack = 0.9 * (side - s).max(0.0) / 2.0 + 0.05 * side;
    let (cx, cy) = sign.bbox.centre();
    let px = cx + rng.random_range(-slack..=slack);
    let py = cy + rng.random_range(-slack..=slack);
    let region = BoxPx::centred_square(px, py, side);
    let target = box_in_region(&sign.bbox, &region);
    (crop(frame, region, side_px), region, target)
}

/// `b` in the sides of the square `region`: 0..1 spans the region.
pub fn box_in_region(b: &BoxPx, region: &BoxPx) -> [f32; 4] {
    let side = region.width().max(1e-3);
    [
        (b.xmin - region.xmin) / side,
        (b.ymin - region.ymin) / side,
        (b.xmax - region.xmin) / side,
        (b.ymax - region.ymin) / side,
    ]
}

/// `region` of `frame` (frame px, may reach past the frame) at `side_px`, CHW f32 in 0..1: the runtime's cutter.
pub fn crop(frame: &GtsdbFrame, region: BoxPx, side_px: usize) -> Vec<f32> {
    let mut out = vec![0f32; 3 * side_px * side_px];
    // The runtime's own cutter; a degenerate region (impossible here) leaves a black patch.
    let _ = crop_resize_rgb_chw(
        &frame.rgb,
        frame.width_px,
        frame.height_px,
        region,
        side_px,
        &mut out,
    );
    out
}

/// Mean saturation-like colourfulness (max − min channel) of a CHW patch.
fn colourfulness(chw: &[f32]) -> f32 {
    let plane = chw.len() / 3;
    if plane == 0 {
        return 0.0;
    }
    (0..plane)
        .map(|i| {
            let (r, g, b) = (chw[i], chw[plane + i], chw[2 * plane + i]);
            r.max(g).max(b) - r.min(g).min(b)
        })
        .sum::<f32>()
        / plane as f32
}

/// A square background crop of `frame` (side 16–200 px) that no sign overlaps by more than 10 % of the
/// sign's area: the most colourful of `tries` random candidates, so red and blue things that are not signs
/// (tail lights, boards, foliage in the evening sun) are well represented. `None` when every try hit a sign.
pub fn background_crop<R: Rng>(
    frame: &GtsdbFrame,
    side_px: usize,
    tries: usize,
    rng: &mut R,
) -> Option<(Vec<f32>, BoxPx)> {
    let (fw, fh) = (frame.width_px as f32, frame.height_px as f32);
    let mut best: Option<(f32, Vec<f32>, BoxPx)> = None;
    for _ in 0..tries.max(1) {
        let side = rng
            .random_range(16f32.ln()..200f32.ln())
            .exp()
            .min(fw.min(fh));
        let x0 = rng.random_range(0.0..(fw - side).max(1.0));
        let y0 = rng.random_range(0.0..(fh - side).max(1.0));
        let region = BoxPx::new(x0, y0, x0 + side, y0 + side);
        if !frame.holds_no_sign(&region) {
            continue;
        }
        let chw = crop(frame, region, side_px);
        let c = colourfulness(&chw);
        if best.as_ref().is_none_or(|(bc, _, _)| c > *bc) {
            best = Some((c, chw, region));
        }
    }
    best.map(|(_, chw, region)| (chw, region))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::train::common::rng_for;

    #[test]
    fn split_follows_the_benchmark_and_holds_out_every_sixth_training_frame() {
        assert_eq!(split_of(0), GtsdbSplit::Train);
        assert_eq!(split_of(5), GtsdbSplit::Validation);
        assert_eq!(split_of(595), GtsdbSplit::Train);
        assert_eq!(split_of(599), GtsdbSplit::Validation);
        assert_eq!(split_of(600), GtsdbSplit::Test);
        assert_eq!(split_of(899), GtsdbSplit::Test);
        let val = (0..600)
            .filter(|&n| split_of(n) == GtsdbSplit::Validation)
            .count();
        assert_eq!(val, 100);
    }

    #[test]
    fn trainers_cannot_load_the_test_split() {
        let err = load_gtsdb(Path::new("/nonexistent"), GtsdbSplit::Test).unwrap_err();
        assert!(err.to_string().contains("measuring only"), "{err}");
    }

    fn frame_with_square(x: usize, y: usize, side: usize) -> GtsdbFrame {
        let (w, h) = (400, 240);
        let mut rgb = vec![40u8; w * h * 3];
        for yy in y..y + side {
            for xx in x..x + side {
                let p = (yy * w + xx) * 3;
                rgb[p] = 230;
            }
        }
        GtsdbFrame {
            file: "t.jpg".into(),
            width_px: w,
            height_px: h,
            rgb,
            signs: vec![SignBox {
                bbox: BoxPx::new(x as f32, y as f32, (x + side) as f32, (y + side) as f32),
                class_id: 14,
            }],
        }
    }

    #[test]
    fn glance_view_boxes_land_on_the_pixels_they_label() {
        let frame = frame_with_square(180, 100, 40);
        let jitter = ViewJitter {
            scale_min: 0.7,
            scale_max: 1.5,
            aspect_max: 1.2,
            flip_probability: 0.5,
        };
        let (w, h) = (100, 60);
        for k in 0..40 {
            let mut rng = rng_for(7, k);
            let (chw, boxes) = glance_view(&frame, w, h, &jitter, &mut rng);
            assert_eq!(chw.len(), 3 * w * h);
            for b in boxes.iter().filter(|b| !b.ignore) {
                let cx = ((b.xmin + b.xmax) / 2.0) as usize;
                let cy = ((b.ymin + b.ymax) / 2.0) as usize;
                let red = chw[cy.min(h - 1) * w + cx.min(w - 1)];
                assert!(red > 0.7, "view {k}: box {b:?} centre is not red ({red})");
            }
        }
    }

    #[test]
    fn sign_crops_keep_the_sign_inside_and_label_its_box() {
        let frame = frame_with_square(180, 100, 40);
        let jitter = CropJitter {
            context_min: 1.1,
            context_max: 2.8,
        };
        for k in 0..50 {
            let mut rng = rng_for(3, k);
            let (chw, region, t) = sign_crop(&frame, &frame.signs[0], 32, &jitter, &mut rng);
            assert!((region.width() - region.height()).abs() < 1e-3);
            let side = region.width() / 40.0;
            assert!((1.1 - 1e-3..=2.8 + 1e-3).contains(&side), "context {side}");
            let (cx, cy) = (0.5 * (t[0] + t[2]), 0.5 * (t[1] + t[3]));
            assert!(
                (0.0..=1.0).contains(&cx) && (0.0..=1.0).contains(&cy),
                "{t:?}"
            );
            // The pixel at the labelled centre is the red square.
            let (u, v) = ((cx * 32.0) as usize, (cy * 32.0) as usize);
            assert!(chw[v.min(31) * 32 + u.min(31)] > 0.7, "crop {k}: {t:?}");
            assert!(((t[2] - t[0]) * region.width() - 40.0).abs() < 1e-2);
        }
    }

    #[test]
    fn background_crops_stay_off_the_signs() {
        let frame = frame_with_square(180, 100, 40);
        let sign = frame.signs[0].bbox;
        for k in 0..30 {
            let (chw, r) = background_crop(&frame, 16, 4, &mut rng_for(5, k)).unwrap();
            assert_eq!(chw.len(), 3 * 16 * 16);
            assert!(
                sign.intersection_area(&r) <= 0.1 * sign.area(),
                "crop {k} {r:?} covers the sign"
            );
        }
    }

    #[test]
    fn exact_glance_sample_scales_boxes_like_the_runtime_resize() {
        let frame = frame_with_square(200, 120, 40);
        let s = glance_sample_exact(&frame, 100, 60);
        let b = s.boxes[0];
        assert!((b.xmin - 50.0).abs() < 1e-4 && (b.ymax - 40.0).abs() < 1e-4);
        assert_eq!(s.chw_u8.len(), 3 * 100 * 60);
        assert!(s.chw_u8[35 * 100 + 55] > 200);
    }
}
