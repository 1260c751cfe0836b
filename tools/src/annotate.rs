//! Annotated frames: the glance heat map as a red overlay, the focus patches in yellow (numbered by order of
//! examination through their line thickness), detections in green with their class and score written on a dark
//! label above the box (below it at the top edge), so a person can check a run by eye.

use std::path::Path;

use anyhow::Context;
use image::{Rgb, RgbImage};
use saccade_models::GlanceMap;
use saccade_runtime::focus::{Detection, FocusOutcome};
use saccade_runtime::frame::BoxPx;
use saccade_runtime::pipeline::ProcessedFrame;

use crate::font;

const YELLOW: Rgb<u8> = Rgb([255, 220, 0]);
const GREEN: Rgb<u8> = Rgb([0, 255, 64]);
const LABEL_BACKGROUND: Rgb<u8> = Rgb([16, 16, 16]);
const LABEL_TEXT: Rgb<u8> = Rgb([255, 255, 255]);
/// Font pixels become `LABEL_SCALE`×`LABEL_SCALE` image pixels: 10×14 px characters, legible at 1360×800.
const LABEL_SCALE: u32 = 2;
/// Dark margin around the text, image pixels.
const LABEL_PAD_PX: u32 = 3;

/// Draw the overlay for `done` and save it as PNG at `path`, whole or not at all (a full disk leaves no
/// half-written PNG).
pub fn write_annotated(done: &ProcessedFrame, path: &Path) -> anyhow::Result<()> {
    let f = &done.frame;
    let mut img = RgbImage::from_raw(f.width, f.height, f.rgb.clone())
        .context("frame buffer does not match its size")?;
    annotate(&mut img, &done.glance, &done.outcome);
    let mut png = std::io::Cursor::new(Vec::new());
    img.write_to(&mut png, image::ImageFormat::Png)
        .with_context(|| format!("encoding annotated frame {}", path.display()))?;
    crate::output::write_whole_file(path, png.get_ref())
        .with_context(|| format!("writing annotated frame {}", path.display()))
}

/// Draw heat map, patches, detection boxes and their labels onto `img` (the frame the outcome refers to).
pub fn annotate(img: &mut RgbImage, glance: &GlanceMap, outcome: &FocusOutcome) {
    overlay_heat(img, glance);
    for visit in &outcome.patches {
        draw_rect(img, visit.bbox, YELLOW, 2);
    }
    for det in &outcome.detections {
        draw_rect(img, det.bbox, GREEN, 3);
    }
    // Labels last, so no box line crosses a label's text; a label that would cover one already drawn moves
    // up (or down) until it is clear, so neighbouring signs keep readable labels.
    let mut placed = Vec::new();
    for det in &outcome.detections {
        draw_label_clear_of(img, det, &mut placed);
    }
}

/// What a detection's label says, e.g. `speed limit 70 0.97`.
pub fn label_text(det: &Detection) -> String {
    format!("{} {:.2}", det.class_name, det.score)
}

fn overlay_heat(img: &mut RgbImage, g: &GlanceMap) {
    if g.map_width == 0 || g.map_height == 0 || g.objectness.len() != g.map_width * g.map_height {
        return;
    }
    let (w, h) = img.dimensions();
    for y in 0..h {
        let my = (y as usize * g.map_height / h as usize).min(g.map_height - 1);
        for x in 0..w {
            let mx = (x as usize * g.map_width / w as usize).min(g.map_width - 1);
            let a = g.objectness[my * g.map_width + mx].clamp(0.0, 1.0) * 0.5;
            if a > 0.02 {
                let p = img.get_pixel_mut(x, y);
                p[0] = (p[0] as f32 * (1.0 - a) + 255.0 * a) as u8;
                p[1] = (p[1] as f32 * (1.0 - a)) as u8;
                p[2] = (p[2] as f32 * (1.0 - a)) as u8;
            }
        }
    }
}

/// Whether any pixel of `b` lies in a `w`×`h` image (false for NaN or empty boxes).
fn overlaps_frame(b: BoxPx, w: u32, h: u32) -> bool {
    b.xmin < w as f32
        && b.xmax > 0.0
        && b.ymin < h as f32
        && b.ymax > 0.0
        && b.xmax > b.xmin
        && b.ymax > b.ymin
}

fn draw_rect(img: &mut RgbImage, b: BoxPx, colour: Rgb<u8>, thickness: u32) {
    let (w, h) = img.dimensions();
    if !overlaps_frame(b, w, h) {
        return;
    }
    let clamp_x = |v: f32| (v.max(0.0) as u32).min(w - 1);
    let clamp_y = |v: f32| (v.max(0.0) as u32).min(h - 1);
    let (x0, y0, x1, y1) = (
        clamp_x(b.xmin),
        clamp_y(b.ymin),
        clamp_x(b.xmax - 1.0),
        clamp_y(b.ymax - 1.0),
    );
    for t in 0..thickness {
        for x in x0..=x1 {
            img.put_pixel(x, (y0 + t).min(h - 1), colour);
            img.put_pixel(x, y1.saturating_sub(t), colour);
        }
        for y in y0..=y1 {
            img.put_pixel((x0 + t).min(w - 1), y, colour);
            img.put_pixel(x1.saturating_sub(t), y, colour);
        }
    }
}

/// A label's rectangle in frame pixels: top-left corner and size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct LabelRect {
    x_px: i64,
    y_px: i64,
    width_px: i64,
    height_px: i64,
}

/// Where the label of box `b` goes in a `w`×`h` image: above the box, below it when there is no room above,
/// inside its top when neither fits; shifted sideways to stay in the frame when it fits. `None` when the box
/// misses the frame (there is nothing to label).
fn label_rect(b: BoxPx, text_size_px: (u32, u32), w: u32, h: u32) -> Option<LabelRect> {
    if !overlaps_frame(b, w, h) {
        return None;
    }
    let (w, h) = (i64::from(w), i64::from(h));
    let width_px = i64::from(text_size_px.0 + 2 * LABEL_PAD_PX);
    let height_px = i64::from(text_size_px.1 + 2 * LABEL_PAD_PX);
    // f32 → i64 saturates (NaN was refused above), so huge or infinite boxes stay representable.
    let (box_x0, box_y0, box_y1) = (
        b.xmin.floor() as i64,
        b.ymin.floor() as i64,
        b.ymax.ceil() as i64,
    );
    let x_px = box_x0.min(w - width_px).max(0);
    let y_px = if box_y0.saturating_sub(height_px) >= 0 {
        box_y0 - height_px
    } else if box_y1.saturating_add(height_px) <= h {
        box_y1
    } else {
        box_y0.min(h - height_px).max(0)
    };
    Some(LabelRect {
        x_px,
        y_px,
        width_px,
        height_px,
    })
}

impl LabelRect {
    fn overlaps(&self, o: &LabelRect) -> bool {
        self.x_px < o.x_px + o.width_px
            && o.x_px < self.x_px + self.width_px
            && self.y_px < o.y_px + o.height_px
            && o.y_px < self.y_px + self.height_px
    }
}

/// `r` moved up by whole label heights, or else down, until it covers none of `placed` (unchanged when no
/// clear spot is in the frame).
fn clear_of(r: LabelRect, placed: &[LabelRect], h: u32) -> LabelRect {
    let h = i64::from(h);
    let free = |c: &LabelRect| placed.iter().all(|p| !c.overlaps(p));
    if free(&r) {
        return r;
    }
    for dir in [-1i64, 1] {
        let mut c = r;
        loop {
            c.y_px += dir * r.height_px;
            if c.y_px < 0 || c.y_px + c.height_px > h {
                break;
            }
            if free(&c) {
                return c;
            }
        }
    }
    r
}

#[cfg(test)]
fn draw_label(img: &mut RgbImage, det: &Detection) {
    draw_label_clear_of(img, det, &mut Vec::new());
}

fn draw_label_clear_of(img: &mut RgbImage, det: &Detection, placed: &mut Vec<LabelRect>) {
    let text = label_text(det);
    let text_size_px = font::text_size_px(&text, LABEL_SCALE);
    let (w, h) = img.dimensions();
    let Some(r) = label_rect(det.bbox, text_size_px, w, h) else {
        return;
    };
    let r = clear_of(r, placed, h);
    placed.push(r);
    font::fill_rect(
        img,
        r.x_px,
        r.y_px,
        r.width_px,
        r.height_px,
        LABEL_BACKGROUND,
    );
    let pad = i64::from(LABEL_PAD_PX);
    font::draw_text(
        img,
        r.x_px + pad,
        r.y_px + pad,
        &text,
        LABEL_SCALE,
        LABEL_TEXT,
    );
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const GREY: Rgb<u8> = Rgb([128, 128, 128]);
    const W: u32 = 640;
    const H: u32 = 400;

    fn det(class_id: usize, score: f32, bbox: BoxPx) -> Detection {
        Detection {
            class_id,
            class_name: saccade_models::class_name(class_id),
            score,
            bbox,
        }
    }

    fn grey() -> RgbImage {
        RgbImage::from_pixel(W, H, GREY)
    }

    fn count(img: &RgbImage, colour: Rgb<u8>) -> usize {
        img.pixels().filter(|p| **p == colour).count()
    }

    /// Bounding box `(x0, y0, x1, y1)` (exclusive) of the pixels that are no longer grey.
    fn changed_extent(img: &RgbImage) -> Option<(u32, u32, u32, u32)> {
        let mut extent: Option<(u32, u32, u32, u32)> = None;
        for (x, y, p) in img.enumerate_pixels() {
            if *p != GREY {
                let e = extent.get_or_insert((x, y, x + 1, y + 1));
                *e = (e.0.min(x), e.1.min(y), e.2.max(x + 1), e.3.max(y + 1));
            }
        }
        extent
    }

    /// Text pixels of the label of `d` drawn far from any edge: what a whole, unclipped label shows.
    fn ink_of_whole_label(d: &Detection) -> usize {
        let mut img = grey();
        let centred = det(d.class_id, d.score, BoxPx::new(200.0, 200.0, 240.0, 240.0));
        draw_label(&mut img, &centred);
        let ink = count(&img, LABEL_TEXT);
        assert!(ink > 0, "no text drawn for {d:?}");
        ink
    }

    #[test]
    fn labels_of_neighbouring_signs_do_not_cover_each_other() {
        let a = LabelRect {
            x_px: 100,
            y_px: 200,
            width_px: 300,
            height_px: 20,
        };
        let b = LabelRect { x_px: 250, ..a };
        let moved = clear_of(b, &[a], 800);
        assert!(!moved.overlaps(&a), "{moved:?}");
        assert_eq!(moved.y_px, 180);
        // At the top edge it moves down instead.
        let top = LabelRect { y_px: 0, ..a };
        let moved = clear_of(LabelRect { x_px: 250, ..top }, &[top], 800);
        assert_eq!(moved.y_px, 20);
        // A clear label stays where it is.
        let far = LabelRect { x_px: 600, ..a };
        assert_eq!(clear_of(far, &[a], 800), far);
    }

    #[test]
    fn label_reads_class_name_and_score_to_two_decimals() {
        let d = det(4, 0.9749, BoxPx::new(0.0, 0.0, 10.0, 10.0));
        assert_eq!(label_text(&d), "speed limit 70 0.97");
        let d = det(13, 1.0, BoxPx::new(0.0, 0.0, 10.0, 10.0));
        assert_eq!(label_text(&d), "yield 1.00");
    }

    #[test]
    fn label_sits_on_a_dark_background_right_above_the_box_and_changes_nothing_else() {
        let mut img = grey();
        let d = det(4, 0.97, BoxPx::new(100.0, 150.0, 140.0, 190.0));
        draw_label(&mut img, &d);
        let (tw, th) = font::text_size_px(&label_text(&d), LABEL_SCALE);
        let (lw, lh) = (tw + 2 * LABEL_PAD_PX, th + 2 * LABEL_PAD_PX);
        assert_eq!(changed_extent(&img), Some((100, 150 - lh, 100 + lw, 150)));
        assert!(count(&img, LABEL_BACKGROUND) > 0);
        assert!(count(&img, LABEL_TEXT) > 0);
        // Every changed pixel is either label background or text: nothing leaks onto the frame.
        assert_eq!(
            count(&img, LABEL_BACKGROUND) + count(&img, LABEL_TEXT),
            (lw * lh) as usize
        );
    }

    #[test]
    fn label_moves_below_a_box_at_the_top_edge() {
        let mut img = grey();
        let d = det(13, 0.5, BoxPx::new(300.0, 4.0, 340.0, 44.0));
        draw_label(&mut img, &d);
        let (x0, y0, _, _) = changed_extent(&img).unwrap();
        assert_eq!((x0, y0), (300, 44));
    }

    #[test]
    fn whole_label_is_inside_the_frame_for_a_box_at_each_corner() {
        let (w, h) = (W as f32, H as f32);
        let corners = [
            BoxPx::new(-20.0, -20.0, 30.0, 30.0),
            BoxPx::new(w - 30.0, -20.0, w + 20.0, 30.0),
            BoxPx::new(-20.0, h - 30.0, 30.0, h + 20.0),
            BoxPx::new(w - 30.0, h - 30.0, w + 20.0, h + 20.0),
            BoxPx::new(0.0, 0.0, w, h),
        ];
        for bbox in corners {
            // The longest class name, so the label is much wider than the box.
            let d = det(10, 0.42, bbox);
            let mut img = grey();
            draw_label(&mut img, &d);
            assert_eq!(count(&img, LABEL_TEXT), ink_of_whole_label(&d), "{bbox:?}");
        }
    }

    #[test]
    fn label_wider_than_the_frame_is_clipped_without_panic() {
        let mut img = RgbImage::from_pixel(40, 12, GREY);
        let d = det(10, 0.42, BoxPx::new(5.0, 2.0, 30.0, 10.0));
        draw_label(&mut img, &d);
        assert!(count(&img, LABEL_TEXT) > 0);
        let mut empty = RgbImage::new(0, 0);
        annotate(
            &mut empty,
            &GlanceMap::default(),
            &FocusOutcome {
                detections: vec![d],
                ..FocusOutcome::default()
            },
        );
    }

    #[test]
    fn boxes_outside_the_frame_or_malformed_draw_nothing_and_do_not_panic() {
        let (w, h) = (W as f32, H as f32);
        let outside = [
            BoxPx::new(-80.0, 10.0, -10.0, 60.0),
            BoxPx::new(w + 10.0, 10.0, w + 80.0, 60.0),
            BoxPx::new(10.0, -80.0, 60.0, -10.0),
            BoxPx::new(10.0, h, 60.0, h + 50.0),
            BoxPx::new(f32::NAN, 10.0, 60.0, 60.0),
            BoxPx::new(60.0, 60.0, 10.0, 10.0),
            BoxPx::new(f32::NEG_INFINITY, f32::NEG_INFINITY, -1.0, -1.0),
        ];
        let outcome = FocusOutcome {
            detections: outside.iter().map(|b| det(14, 0.9, *b)).collect(),
            ..FocusOutcome::default()
        };
        let mut img = grey();
        annotate(&mut img, &GlanceMap::default(), &outcome);
        assert_eq!(changed_extent(&img), None);

        // Huge and infinite boxes that do cover the frame get their box and a whole label.
        for bbox in [
            BoxPx::new(-1e30, -1e30, 1e30, 1e30),
            BoxPx::new(f32::NEG_INFINITY, 5.0, f32::INFINITY, f32::INFINITY),
        ] {
            let d = det(14, 0.9, bbox);
            let mut img = grey();
            let outcome = FocusOutcome {
                detections: vec![d.clone()],
                ..FocusOutcome::default()
            };
            annotate(&mut img, &GlanceMap::default(), &outcome);
            assert!(count(&img, GREEN) > 0, "{bbox:?}");
            assert_eq!(count(&img, LABEL_TEXT), ink_of_whole_label(&d), "{bbox:?}");
        }
    }

    #[test]
    fn annotate_draws_boxes_then_labels_on_top() {
        let mut img = grey();
        let d = det(38, 0.88, BoxPx::new(100.0, 100.0, 200.0, 160.0));
        let outcome = FocusOutcome {
            detections: vec![d.clone()],
            ..FocusOutcome::default()
        };
        annotate(&mut img, &GlanceMap::default(), &outcome);
        assert_eq!(*img.get_pixel(100, 100), GREEN);
        assert_eq!(*img.get_pixel(199, 159), GREEN);
        assert_eq!(count(&img, LABEL_TEXT), ink_of_whole_label(&d));
        // The label ends where the box begins.
        assert_eq!(*img.get_pixel(100, 99), LABEL_BACKGROUND);
    }
}
