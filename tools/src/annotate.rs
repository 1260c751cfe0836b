//! Annotated frames: the glance heat map as a red overlay, the focus patches in yellow (numbered by order of
//! examination through their line thickness), detections in green.

use std::path::Path;

use anyhow::Context;
use image::{Rgb, RgbImage};
use saccade_runtime::frame::BoxPx;
use saccade_runtime::pipeline::ProcessedFrame;

const YELLOW: Rgb<u8> = Rgb([255, 220, 0]);
const GREEN: Rgb<u8> = Rgb([0, 255, 64]);

/// Draw the overlay for `done` and save it as PNG at `path`.
pub fn write_annotated(done: &ProcessedFrame, path: &Path) -> anyhow::Result<()> {
    let f = &done.frame;
    let mut img = RgbImage::from_raw(f.width, f.height, f.rgb.clone())
        .context("frame buffer does not match its size")?;
    overlay_heat(&mut img, done);
    for visit in &done.outcome.patches {
        draw_rect(&mut img, visit.bbox, YELLOW, 2);
    }
    for det in &done.outcome.detections {
        draw_rect(&mut img, det.bbox, GREEN, 3);
    }
    img.save(path)
        .with_context(|| format!("writing annotated frame {}", path.display()))
}

fn overlay_heat(img: &mut RgbImage, done: &ProcessedFrame) {
    let g = &done.glance;
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

fn draw_rect(img: &mut RgbImage, b: BoxPx, colour: Rgb<u8>, thickness: u32) {
    let (w, h) = img.dimensions();
    if w == 0 || h == 0 {
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
