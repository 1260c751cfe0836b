//! Pixel work for training: cutting square patches the way the runtime does (a square region resized to
//! the classifier's input), the glance downscale (area average), letterboxing photos, photometric and
//! geometric augmentation, and procedural background textures. Images come in as packed RGB u8 (`HWC`) and
//! leave as planar f32 in 0..1 (`CHW`), the layout the nets take.

use rand::Rng;

/// Bilinear sample of channel `c` at (x, y) in pixel-centre coordinates, clamped to the edge.
fn sample_bilinear(rgb: &[u8], width: usize, height: usize, x: f32, y: f32, c: usize) -> f32 {
    let x = x.clamp(0.0, (width - 1) as f32);
    let y = y.clamp(0.0, (height - 1) as f32);
    let x0 = x.floor() as usize;
    let y0 = y.floor() as usize;
    let x1 = (x0 + 1).min(width - 1);
    let y1 = (y0 + 1).min(height - 1);
    let fx = x - x0 as f32;
    let fy = y - y0 as f32;
    let at = |xx: usize, yy: usize| rgb[(yy * width + xx) * 3 + c] as f32;
    let top = at(x0, y0) * (1.0 - fx) + at(x1, y0) * fx;
    let bottom = at(x0, y1) * (1.0 - fx) + at(x1, y1) * fx;
    (top * (1.0 - fy) + bottom * fy) / 255.0
}

/// Cuts the square region with top-left (`xmin_px`, `ymin_px`) and side `side_px` (source pixels, may reach
/// outside the image: edge pixels repeat) and resizes it to `out_side × out_side`, CHW f32 in 0..1.
/// When the region is much larger than the output, the source is pre-averaged so small signs do not alias.
pub fn crop_square(
    rgb: &[u8],
    width: usize,
    height: usize,
    xmin_px: f32,
    ymin_px: f32,
    side_px: f32,
    out_side: usize,
) -> Vec<f32> {
    let mut out = vec![0f32; 3 * out_side * out_side];
    if width == 0 || height == 0 || rgb.len() < width * height * 3 {
        return out;
    }
    let scale = side_px / out_side as f32;
    // Supersample when shrinking by more than 2×, approximating an area filter.
    let taps = (scale / 1.5).ceil().clamp(1.0, 4.0) as usize;
    for oy in 0..out_side {
        for ox in 0..out_side {
            for c in 0..3 {
                let mut acc = 0.0;
                for ty in 0..taps {
                    for tx in 0..taps {
                        let sx =
                            xmin_px + (ox as f32 + (tx as f32 + 0.5) / taps as f32) * scale - 0.5;
                        let sy =
                            ymin_px + (oy as f32 + (ty as f32 + 0.5) / taps as f32) * scale - 0.5;
                        acc += sample_bilinear(rgb, width, height, sx, sy, c);
                    }
                }
                out[(c * out_side + oy) * out_side + ox] = acc / (taps * taps) as f32;
            }
        }
    }
    out
}

/// Area-average downscale by an integer factor (the runtime's glance downscale), CHW f32 in 0..1.
/// The output is `width / factor × height / factor`; leftover border pixels are dropped.
pub fn area_downscale(rgb: &[u8], width: usize, height: usize, factor: usize) -> Vec<f32> {
    let factor = factor.max(1);
    let (ow, oh) = (width / factor, height / factor);
    let mut out = vec![0f32; 3 * ow * oh];
    let norm = 1.0 / (factor * factor) as f32 / 255.0;
    for oy in 0..oh {
        for ox in 0..ow {
            let mut acc = [0u32; 3];
            for y in oy * factor..(oy + 1) * factor {
                let row = &rgb[(y * width + ox * factor) * 3..(y * width + (ox + 1) * factor) * 3];
                for px in row.chunks_exact(3) {
                    acc[0] += px[0] as u32;
                    acc[1] += px[1] as u32;
                    acc[2] += px[2] as u32;
                }
            }
            for c in 0..3 {
                out[(c * oh + oy) * ow + ox] = acc[c] as f32 * norm;
            }
        }
    }
    out
}

/// Where a photo lands inside a letterboxed glance image: `glance = photo * scale + offset`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Letterbox {
    pub scale: f32,
    pub offset_x_px: f32,
    pub offset_y_px: f32,
}

/// Resizes a photo to fit `out_w × out_h` keeping its aspect ratio, centred on mid-grey; CHW f32 in 0..1.
pub fn letterbox(
    rgb: &[u8],
    width: usize,
    height: usize,
    out_w: usize,
    out_h: usize,
) -> (Vec<f32>, Letterbox) {
    let scale = (out_w as f32 / width as f32).min(out_h as f32 / height as f32);
    let (fit_w, fit_h) = (width as f32 * scale, height as f32 * scale);
    let offset_x_px = ((out_w as f32 - fit_w) / 2.0).round().max(0.0);
    let offset_y_px = ((out_h as f32 - fit_h) / 2.0).round().max(0.0);
    let mut out = vec![0.5f32; 3 * out_w * out_h];
    for oy in 0..out_h {
        let py = (oy as f32 + 0.5 - offset_y_px) / scale - 0.5;
        if py < -0.5 || py > height as f32 - 0.5 {
            continue;
        }
        for ox in 0..out_w {
            let px = (ox as f32 + 0.5 - offset_x_px) / scale - 0.5;
            if px < -0.5 || px > width as f32 - 0.5 {
                continue;
            }
            for c in 0..3 {
                out[(c * out_h + oy) * out_w + ox] = sample_bilinear(rgb, width, height, px, py, c);
            }
        }
    }
    (
        out,
        Letterbox {
            scale,
            offset_x_px,
            offset_y_px,
        },
    )
}

/// Random brightness (±25 %), contrast (0.7–1.3) and per-channel tint (±5 %), then clamps to 0..1.
pub fn photometric<R: Rng>(chw: &mut [f32], rng: &mut R) {
    let plane = chw.len() / 3;
    if plane == 0 {
        return;
    }
    let brightness = rng.random_range(0.75f32..1.25);
    let contrast = rng.random_range(0.7f32..1.3);
    let mean = chw.iter().sum::<f32>() / chw.len() as f32;
    for c in 0..3 {
        let tint = rng.random_range(0.95f32..1.05);
        for v in &mut chw[c * plane..(c + 1) * plane] {
            *v = (((*v - mean) * contrast + mean) * brightness * tint).clamp(0.0, 1.0);
        }
    }
}

/// 3×3 box blur of a square CHW image (edges clamp), the blur of a slightly defocused camera.
pub fn box_blur3(chw: &mut [f32], side: usize) {
    let plane = side * side;
    if side == 0 || chw.len() != 3 * plane {
        return;
    }
    let src = chw.to_vec();
    for c in 0..3 {
        for y in 0..side {
            for x in 0..side {
                let mut acc = 0.0;
                for dy in [-1i32, 0, 1] {
                    for dx in [-1i32, 0, 1] {
                        let yy = (y as i32 + dy).clamp(0, side as i32 - 1) as usize;
                        let xx = (x as i32 + dx).clamp(0, side as i32 - 1) as usize;
                        acc += src[c * plane + yy * side + xx];
                    }
                }
                chw[c * plane + y * side + x] = acc / 9.0;
            }
        }
    }
}

/// A GTSRB crop (32×32 HWC u8) with a random scale (0.9–1.1), shift (±2 px), photometric change and, one
/// time in five, a blur; CHW f32 in 0..1.
pub fn augment_gtsrb<R: Rng>(image: &[u8], side: usize, rng: &mut R) -> Vec<f32> {
    let scale = rng.random_range(0.85f32..1.15);
    let aspect = rng.random_range(0.9f32..1.1);
    let angle = rng.random_range(-12f32..12.0).to_radians();
    let dx = rng.random_range(-2.5f32..2.5);
    let dy = rng.random_range(-2.5f32..2.5);
    let mut out = affine_sample(image, side, scale * aspect, scale / aspect, angle, dx, dy);
    photometric(&mut out, rng);
    if rng.random_bool(0.2) {
        box_blur3(&mut out, side);
    }
    out
}

/// Resamples a square packed-RGB image (`side × side`) through a similarity-like transform about its centre:
/// output pixel `p` shows input point `c + R(−angle)·((p − c − shift) / (sx, sy))`, so the content is scaled
/// by `sx`, `sy`, rotated by `angle` and moved by the shift. Bilinear, edge pixels repeat. CHW f32 in 0..1.
pub fn affine_sample(
    image: &[u8],
    side: usize,
    sx: f32,
    sy: f32,
    angle: f32,
    shift_x: f32,
    shift_y: f32,
) -> Vec<f32> {
    let plane = side * side;
    let mut out = vec![0f32; 3 * plane];
    let c = side as f32 / 2.0;
    let (sin, cos) = angle.sin_cos();
    for oy in 0..side {
        for ox in 0..side {
            let u = (ox as f32 + 0.5 - c - shift_x) / sx;
            let v = (oy as f32 + 0.5 - c - shift_y) / sy;
            let ix = c + cos * u + sin * v - 0.5;
            let iy = c - sin * u + cos * v - 0.5;
            for ch in 0..3 {
                out[ch * plane + oy * side + ox] = sample_bilinear(image, side, side, ix, iy, ch);
            }
        }
    }
    out
}

/// A GTSRB crop as CHW f32 in 0..1, unchanged (evaluation).
pub fn gtsrb_chw(image: &[u8], side: usize) -> Vec<f32> {
    let plane = side * side;
    let mut out = vec![0f32; 3 * plane];
    for (i, px) in image.chunks_exact(3).enumerate().take(plane) {
        for c in 0..3 {
            out[c * plane + i] = px[c] as f32 / 255.0;
        }
    }
    out
}

/// A sign-free procedural texture (gradients, noise, stripes, blobs of random colour), packed RGB u8,
/// `side × side`: backgrounds the classifier must call background.
pub fn procedural_background<R: Rng>(side: usize, rng: &mut R) -> Vec<u8> {
    let mut base = [0f32; 3];
    let mut grad = [0f32; 3];
    for c in 0..3 {
        base[c] = rng.random_range(0.0f32..255.0);
        grad[c] = rng.random_range(-120.0f32..120.0);
    }
    let angle = rng.random_range(0.0f32..std::f32::consts::TAU);
    let (ca, sa) = (angle.cos(), angle.sin());
    let noise_amp = rng.random_range(0.0f32..60.0);
    let stripe_period = rng.random_range(3.0f32..20.0);
    let stripe_amp = if rng.random_bool(0.3) {
        rng.random_range(0.0f32..80.0)
    } else {
        0.0
    };
    let blobs: Vec<(f32, f32, f32, [f32; 3])> = (0..rng.random_range(0..4))
        .map(|_| {
            (
                rng.random_range(0.0..side as f32),
                rng.random_range(0.0..side as f32),
                rng.random_range(2.0..side as f32 / 2.0),
                [
                    rng.random_range(0.0..255.0),
                    rng.random_range(0.0..255.0),
                    rng.random_range(0.0..255.0),
                ],
            )
        })
        .collect();
    let mut out = vec![0u8; side * side * 3];
    for y in 0..side {
        for x in 0..side {
            let t = ((x as f32 * ca + y as f32 * sa) / side as f32) - 0.5;
            let stripe = stripe_amp * ((x as f32 * ca + y as f32 * sa) / stripe_period).sin();
            let mut px = [0f32; 3];
            for c in 0..3 {
                px[c] = base[c] + grad[c] * t + stripe;
            }
            for (bx, by, r, colour) in &blobs {
                // Square blobs only: round blobs in red or blue would look like signs.
                if (x as f32 - bx).abs() < *r && (y as f32 - by).abs() < *r * 0.6 {
                    px = *colour;
                }
            }
            let n = noise_amp * (rng.random::<f32>() - 0.5);
            for c in 0..3 {
                out[(y * side + x) * 3 + c] = (px[c] + n).clamp(0.0, 255.0) as u8;
            }
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn ramp(width: usize, height: usize) -> Vec<u8> {
        (0..width * height)
            .flat_map(|i| {
                let v = ((i % width) * 255 / width.max(1)) as u8;
                [v, v / 2, 255 - v]
            })
            .collect()
    }

    #[test]
    fn affine_sample_identity_copies_and_a_shift_moves_content() {
        let side = 8;
        let mut img = vec![0u8; side * side * 3];
        img[(2 * side + 3) * 3] = 255; // red dot at (3, 2)
        let same = affine_sample(&img, side, 1.0, 1.0, 0.0, 0.0, 0.0);
        assert_eq!(same, gtsrb_chw(&img, side));
        let moved = affine_sample(&img, side, 1.0, 1.0, 0.0, 2.0, 1.0);
        assert!((moved[3 * side + 5] - 1.0).abs() < 1e-6);
        // A quarter turn keeps the dot's distance from the centre.
        let turned = affine_sample(&img, side, 1.0, 1.0, std::f32::consts::FRAC_PI_2, 0.0, 0.0);
        let (i, _) = turned[..side * side]
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .unwrap();
        let (x, y) = ((i % side) as f32 + 0.5 - 4.0, (i / side) as f32 + 0.5 - 4.0);
        assert!(((x * x + y * y).sqrt() - (0.5f32 * 0.5 + 1.5 * 1.5).sqrt()).abs() < 1e-3);
    }

    #[test]
    fn crop_of_whole_image_at_same_size_is_identity() {
        let img = ramp(32, 32);
        let out = crop_square(&img, 32, 32, 0.0, 0.0, 32.0, 32);
        assert_eq!(out, gtsrb_chw(&img, 32));
    }

    #[test]
    fn area_downscale_averages_blocks() {
        let mut img = vec![0u8; 8 * 4 * 3];
        // Top-left 4×4 block white, the rest black.
        for y in 0..4 {
            for x in 0..4 {
                img[(y * 8 + x) * 3..(y * 8 + x) * 3 + 3].copy_from_slice(&[255, 255, 255]);
            }
        }
        let out = area_downscale(&img, 8, 4, 4);
        assert_eq!(out.len(), 3 * 2);
        assert!((out[0] - 1.0).abs() < 1e-6 && out[1].abs() < 1e-6);
    }

    #[test]
    fn letterbox_keeps_aspect_and_centres() {
        let img = ramp(300, 400);
        let (out, lb) = letterbox(&img, 300, 400, 320, 240);
        assert_eq!(out.len(), 3 * 320 * 240);
        assert!((lb.scale - 0.6).abs() < 1e-6);
        assert_eq!(lb.offset_y_px, 0.0);
        assert_eq!(lb.offset_x_px, 70.0);
        // Padding stays mid-grey.
        assert_eq!(out[0], 0.5);
    }

    #[test]
    fn augmentations_stay_in_unit_range() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let img = ramp(32, 32);
        for _ in 0..20 {
            let out = augment_gtsrb(&img, 32, &mut rng);
            assert_eq!(out.len(), 3072);
            assert!(out.iter().all(|v| (0.0..=1.0).contains(v)));
            let bg = procedural_background(32, &mut rng);
            assert_eq!(bg.len(), 3072);
        }
    }
}
