//! Photo backgrounds: a real photo with its annotated signs painted out from their surroundings, scaled to
//! cover the frame, with a nominal camera [`Layout`] for the sign placer.

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::background::{hash01, mix, Layout};

/// A real photo with its annotated boxes.
#[derive(Debug, Clone)]
pub(crate) struct Photo {
    pub path: std::path::PathBuf,
    /// Inclusive-corner boxes `[xmin, ymin, xmax, ymax]` in the photo's pixels.
    pub boxes_px: Vec<[u32; 4]>,
}

/// Paints a photo background: the annotated signs painted over from their surroundings, then the photo
/// scaled to cover the frame (random crop). Returns a nominal camera for the sign placer.
pub(crate) fn photo(
    rng: &mut ChaCha8Rng,
    image: &image::RgbImage,
    boxes_px: &[[u32; 4]],
    width: u32,
    height: u32,
    rgb: &mut [u8],
) -> Layout {
    let mut img = image.clone();
    for b in boxes_px {
        inpaint_box(&mut img, *b);
    }
    let (pw, ph) = (img.width() as f32, img.height() as f32);
    let scale = (width as f32 / pw).max(height as f32 / ph);
    let spare_x = pw * scale - width as f32;
    let spare_y = ph * scale - height as f32;
    let off_x = rng.random_range(0.0..=spare_x.max(0.0));
    let off_y = rng.random_range(0.0..=spare_y.max(0.0));
    let src = img.as_raw();
    let (iw, ih) = (img.width() as usize, img.height() as usize);
    for y in 0..height as usize {
        let sy = ((y as f32 + 0.5 + off_y) / scale - 0.5).clamp(0.0, ih as f32 - 1.0);
        let y0 = sy.floor() as usize;
        let y1 = (y0 + 1).min(ih - 1);
        let fy = sy - y0 as f32;
        for x in 0..width as usize {
            let sx = ((x as f32 + 0.5 + off_x) / scale - 0.5).clamp(0.0, iw as f32 - 1.0);
            let x0 = sx.floor() as usize;
            let x1 = (x0 + 1).min(iw - 1);
            let fx = sx - x0 as f32;
            for k in 0..3 {
                let a = src[(y0 * iw + x0) * 3 + k] as f32;
                let b = src[(y0 * iw + x1) * 3 + k] as f32;
                let c = src[(y1 * iw + x0) * 3 + k] as f32;
                let d = src[(y1 * iw + x1) * 3 + k] as f32;
                let top = a + (b - a) * fx;
                let bottom = c + (d - c) * fx;
                rgb[(y * width as usize + x) * 3 + k] = (top + (bottom - top) * fy) as u8;
            }
        }
    }
    let w = width as f32;
    Layout {
        horizon_y_px: height as f32 * rng.random_range(0.4..0.5),
        vanishing_x_px: w * 0.5,
        focal_px: w * 0.85,
        camera_height_m: 1.4,
        road_left_m: -5.0,
        road_right_m: 2.0,
        structure_left_m: -14.0,
        structure_right_m: 10.0,
    }
}

/// Fills a box (inclusive corners, enlarged by a few pixels) by blending the colours on its border
/// (Coons-style: each pixel mixes the border pixels in its row and column by distance), then adds a little
/// texture so the patch does not read as a flat blob.
fn inpaint_box(img: &mut image::RgbImage, b: [u32; 4]) {
    let (w, h) = (img.width(), img.height());
    if w < 3 || h < 3 {
        return;
    }
    let grow = 3;
    let x0 = b[0].saturating_sub(grow).max(1) - 1;
    let y0 = b[1].saturating_sub(grow).max(1) - 1;
    let x1 = (b[2] + grow + 1).min(w - 1);
    let y1 = (b[3] + grow + 1).min(h - 1);
    if x0 >= x1 || y0 >= y1 {
        return;
    }
    let px = |img: &image::RgbImage, x: u32, y: u32| -> [f32; 3] {
        let p = img.get_pixel(x, y).0;
        [p[0] as f32, p[1] as f32, p[2] as f32]
    };
    let mut out = Vec::with_capacity(((x1 - x0) * (y1 - y0)) as usize);
    for y in y0 + 1..y1 {
        for x in x0 + 1..x1 {
            let (l, r) = (px(img, x0, y), px(img, x1, y));
            let (t, bo) = (px(img, x, y0), px(img, x, y1));
            let fx = (x - x0) as f32 / (x1 - x0) as f32;
            let fy = (y - y0) as f32 / (y1 - y0) as f32;
            let horiz = mix(l, r, fx);
            let vert = mix(t, bo, fy);
            // Weight each direction by closeness to its border so seams vanish.
            let dh = fx.min(1.0 - fx);
            let dv = fy.min(1.0 - fy);
            let wh = dv / (dh + dv + 1e-6);
            let c = mix(vert, horiz, wh);
            let n = (hash01((x as i64) << 20 | y as i64, 77) - 0.5) * 10.0;
            out.push([c[0] + n, c[1] + n, c[2] + n]);
        }
    }
    let mut i = 0;
    for y in y0 + 1..y1 {
        for x in x0 + 1..x1 {
            let c = out[i];
            i += 1;
            img.put_pixel(
                x,
                y,
                image::Rgb([
                    c[0].clamp(0.0, 255.0) as u8,
                    c[1].clamp(0.0, 255.0) as u8,
                    c[2].clamp(0.0, 255.0) as u8,
                ]),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inpainting_removes_a_red_box_from_a_grey_photo() {
        let mut img = image::RgbImage::from_pixel(60, 40, image::Rgb([100, 100, 100]));
        for y in 10..20 {
            for x in 20..30 {
                img.put_pixel(x, y, image::Rgb([250, 0, 0]));
            }
        }
        inpaint_box(&mut img, [20, 10, 29, 19]);
        for y in 10..20 {
            for x in 20..30 {
                let p = img.get_pixel(x, y).0;
                assert!(p[0] < 120 && p[1] > 80, "({x},{y}) {p:?}");
            }
        }
    }
}
