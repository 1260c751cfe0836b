//! Test doubles for the focus strategies: a classifier that calls a patch a stop sign by how red it is, a glance
//! map computed from the frame's redness, and synthetic frames with a red square pasted on a grey road. They
//! stand in for trained weights so the strategies' tests can fail on logic alone.

#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use candle_core::{Device, Tensor};
use saccade_models::{GlanceMap, ModelError, PatchClassifier, BACKGROUND_CLASS, NUM_CLASSES};

use super::{FocusBudget, FocusInput, FocusOutcome, FocusStrategy};
use crate::frame::{BoxPx, Frame};

/// The class the mock calls every red patch.
pub const STOP_CLASS: usize = 14;

/// Scores a patch by the fraction of strongly red pixels in its central half: ≥ 40 % red is a stop sign.
#[derive(Debug, Default)]
pub struct RednessClassifier {
    pub side_px: usize,
    pub calls: AtomicUsize,
    pub patches_seen: AtomicUsize,
}

impl RednessClassifier {
    pub fn new(side_px: usize) -> Self {
        Self {
            side_px,
            ..Self::default()
        }
    }
}

fn is_red(r: f32, g: f32, b: f32) -> bool {
    r > 0.6 && g < 0.35 && b < 0.35
}

impl PatchClassifier for RednessClassifier {
    fn input_side_px(&self) -> usize {
        self.side_px
    }
    fn classify(&self, patches: &Tensor) -> Result<Tensor, ModelError> {
        let (n, c, h, w) = patches.dims4()?;
        if c != 3 || h != self.side_px || w != self.side_px {
            return Err(ModelError::BadInput {
                expected: format!("(b, 3, {0}, {0})", self.side_px),
                found: patches.dims().to_vec(),
            });
        }
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.patches_seen.fetch_add(n, Ordering::SeqCst);
        let data = patches.flatten_all()?.to_vec1::<f32>()?;
        let plane = h * w;
        let mut out = vec![0.0f32; n * NUM_CLASSES];
        // Like a classifier trained with off-centre crops as background: only red in the central half counts.
        let (lo, hi) = (h / 4, h - h / 4);
        let central = ((hi - lo) * (hi - lo)).max(1) as f32;
        for i in 0..n {
            let p = &data[i * 3 * plane..(i + 1) * 3 * plane];
            let mut red = 0usize;
            for y in lo..hi {
                for x in lo..hi {
                    let k = y * w + x;
                    if is_red(p[k], p[plane + k], p[2 * plane + k]) {
                        red += 1;
                    }
                }
            }
            let frac = red as f32 / central;
            let sign = 0.97 / (1.0 + (-(frac - 0.4) * 25.0).exp());
            out[i * NUM_CLASSES + STOP_CLASS] = sign;
            out[i * NUM_CLASSES + BACKGROUND_CLASS] = 1.0 - sign;
        }
        Ok(Tensor::from_vec(out, (n, NUM_CLASSES), &Device::Cpu)?)
    }
    fn classify_with_boxes(
        &self,
        patches: &Tensor,
    ) -> Result<saccade_models::PatchVerdicts, ModelError> {
        Ok(saccade_models::PatchVerdicts::without_boxes(
            self.classify(patches)?,
        ))
    }
    fn mflops_per_patch(&self) -> f64 {
        1.5
    }
    fn describe(&self) -> String {
        "mock redness classifier".into()
    }
}

/// A box-head classifier: a patch with any strongly red pixels holds a stop sign, boxed by the red pixels'
/// bounding box (in patch sides); the probability grows with how much of the patch the red fills, like a net
/// that is surer of a well-framed sign.
#[derive(Debug, Default)]
pub struct BoxingRednessClassifier {
    pub side_px: usize,
    pub patches_seen: AtomicUsize,
}

impl PatchClassifier for BoxingRednessClassifier {
    fn input_side_px(&self) -> usize {
        self.side_px
    }
    fn classify(&self, patches: &Tensor) -> Result<Tensor, ModelError> {
        Ok(self.classify_with_boxes(patches)?.probs)
    }
    fn classify_with_boxes(
        &self,
        patches: &Tensor,
    ) -> Result<saccade_models::PatchVerdicts, ModelError> {
        let (n, _, h, w) = patches.dims4()?;
        self.patches_seen.fetch_add(n, Ordering::SeqCst);
        let data = patches.flatten_all()?.to_vec1::<f32>()?;
        let plane = h * w;
        let mut out = vec![0.0f32; n * NUM_CLASSES];
        let mut boxes = Vec::with_capacity(n);
        for i in 0..n {
            let p = &data[i * 3 * plane..(i + 1) * 3 * plane];
            let (mut x0, mut y0, mut x1, mut y1, mut red) = (w, h, 0, 0, 0usize);
            for y in 0..h {
                for x in 0..w {
                    let k = y * w + x;
                    if is_red(p[k], p[plane + k], p[2 * plane + k]) {
                        red += 1;
                        x0 = x0.min(x);
                        y0 = y0.min(y);
                        x1 = x1.max(x + 1);
                        y1 = y1.max(y + 1);
                    }
                }
            }
            let fill = red as f32 / plane as f32;
            let sign = if red == 0 {
                0.02
            } else {
                (0.55 + fill).min(0.97)
            };
            out[i * NUM_CLASSES + STOP_CLASS] = sign;
            out[i * NUM_CLASSES + BACKGROUND_CLASS] = 1.0 - sign;
            boxes.push(if red == 0 {
                [0.25, 0.25, 0.75, 0.75]
            } else {
                [
                    x0 as f32 / w as f32,
                    y0 as f32 / h as f32,
                    x1 as f32 / w as f32,
                    y1 as f32 / h as f32,
                ]
            });
        }
        Ok(saccade_models::PatchVerdicts {
            probs: Tensor::from_vec(out, (n, NUM_CLASSES), &Device::Cpu)?,
            boxes: Some(boxes),
        })
    }
    fn mflops_per_patch(&self) -> f64 {
        1.5
    }
    fn describe(&self) -> String {
        "mock boxing redness classifier".into()
    }
}

/// A 640×480 grey frame with red squares `(x, y, side)` pasted in (frame px).
pub fn frame_with_squares(width: u32, height: u32, squares: &[(u32, u32, u32)]) -> Frame {
    let mut rgb = vec![0u8; width as usize * height as usize * 3];
    for (i, px) in rgb.chunks_exact_mut(3).enumerate() {
        // A faint texture so crops are not trivially constant.
        let t = ((i * 7) % 13) as u8;
        px.copy_from_slice(&[100 + t, 110 + t, 105 + t]);
    }
    for &(x, y, side) in squares {
        for yy in y..(y + side).min(height) {
            for xx in x..(x + side).min(width) {
                let p = (yy as usize * width as usize + xx as usize) * 3;
                rgb[p..p + 3].copy_from_slice(&[230, 20, 25]);
            }
        }
    }
    Frame::from_rgb(0, width, height, rgb).unwrap()
}

/// A glance map computed from the frame, peaked at sign centres like a trained centre map: objectness of a
/// cell = how far the red fraction of a sign-sized window centred on the cell exceeds one half, rescaled to
/// 0..1; size estimate = `sign_side_frame_px` converted to glance px.
pub fn redness_glance(
    frame: &Frame,
    glance_size_px: (usize, usize),
    stride_px: usize,
    sign_side_frame_px: f32,
) -> GlanceMap {
    let map_width = glance_size_px.0 / stride_px;
    let map_height = glance_size_px.1 / stride_px;
    let fx = frame.width as f32 / glance_size_px.0 as f32;
    let fy = frame.height as f32 / glance_size_px.1 as f32;
    let (w, h) = (frame.width as i64, frame.height as i64);
    // Integral image of redness so each window costs four lookups.
    let mut integral = vec![0u32; ((w + 1) * (h + 1)) as usize];
    for y in 0..h {
        for x in 0..w {
            let [r, g, b] = frame.pixel(x as u32, y as u32);
            let red = is_red(r as f32 / 255.0, g as f32 / 255.0, b as f32 / 255.0) as u32;
            let i = ((y + 1) * (w + 1) + x + 1) as usize;
            integral[i] = red + integral[i - 1] + integral[i - (w + 1) as usize]
                - integral[i - (w + 2) as usize];
        }
    }
    let half = (sign_side_frame_px * 0.5).max(1.0);
    let mut objectness = vec![0.0f32; map_width * map_height];
    for cy in 0..map_height {
        for cx in 0..map_width {
            let x = (cx as f32 + 0.5) * stride_px as f32 * fx;
            let y = (cy as f32 + 0.5) * stride_px as f32 * fy;
            let x0 = ((x - half).round() as i64).clamp(0, w);
            let x1 = ((x + half).round() as i64).clamp(0, w);
            let y0 = ((y - half).round() as i64).clamp(0, h);
            let y1 = ((y + half).round() as i64).clamp(0, h);
            let at = |xx: i64, yy: i64| integral[(yy * (w + 1) + xx) as usize] as f32;
            let red = at(x1, y1) - at(x0, y1) - at(x1, y0) + at(x0, y0);
            let frac = red / (4.0 * half * half);
            objectness[cy * map_width + cx] = ((frac - 0.5) / 0.5).clamp(0.0, 1.0);
        }
    }
    let side_glance = sign_side_frame_px / (0.5 * (fx + fy));
    GlanceMap {
        map_width,
        map_height,
        stride_px,
        objectness,
        box_side_glance_px: vec![side_glance; map_width * map_height],
        feature: Vec::new(),
        class_probs: None,
    }
}

/// A focus input with no deadline.
pub fn input<'a>(
    frame: &'a Frame,
    glance: &'a GlanceMap,
    glance_size_px: (usize, usize),
    classifier: &'a dyn PatchClassifier,
    max_patches: usize,
) -> FocusInput<'a> {
    FocusInput {
        frame,
        glance,
        glance_size_px,
        classifier,
        budget: FocusBudget {
            max_patches,
            deadline_ms: None,
        },
        started: Instant::now(),
    }
}

/// Whether some detection of `class` overlaps the truth box by at least `min_iou`.
pub fn found(outcome: &FocusOutcome, truth: BoxPx, class: usize, min_iou: f32) -> bool {
    outcome
        .detections
        .iter()
        .any(|d| d.class_id == class && d.bbox.iou(&truth) >= min_iou)
}

/// The scene most strategy tests run on: a 640×480 frame with 40 px red squares at `corners`, its redness
/// glance (160×120, stride 4) and a redness classifier of 32 px patches.
pub struct RedSquares {
    pub frame: Frame,
    pub glance: GlanceMap,
    pub classifier: RednessClassifier,
}

impl RedSquares {
    pub const SIDE_PX: u32 = 40;

    pub fn at(corners: &[(u32, u32)]) -> Self {
        let squares: Vec<(u32, u32, u32)> = corners
            .iter()
            .map(|&(x, y)| (x, y, Self::SIDE_PX))
            .collect();
        let frame = frame_with_squares(640, 480, &squares);
        let glance = redness_glance(&frame, (160, 120), 4, Self::SIDE_PX as f32);
        Self {
            frame,
            glance,
            classifier: RednessClassifier::new(32),
        }
    }

    /// What `strategy` makes of the scene with at most 16 patches and no deadline.
    pub fn focus(&self, strategy: &mut dyn FocusStrategy) -> FocusOutcome {
        strategy
            .focus(&input(
                &self.frame,
                &self.glance,
                (160, 120),
                &self.classifier,
                16,
            ))
            .unwrap()
    }
}

/// Whether `outcome` calls the red square at `corner` a stop sign, boxed with IoU ≥ `min_iou`.
pub fn found_square(outcome: &FocusOutcome, corner: (u32, u32), min_iou: f32) -> bool {
    let (x, y) = (corner.0 as f32, corner.1 as f32);
    let side = RedSquares::SIDE_PX as f32;
    found(
        outcome,
        BoxPx::new(x, y, x + side, y + side),
        STOP_CLASS,
        min_iou,
    )
}
