//! Sign sprites and how they land in a frame: premultiplied RGBA images with a mip chain (so a 128 px drawing
//! shrunk to 14 px does not alias), built from resvg renderings or from GTSRB crops with a shape mask, and
//! pasted through a homography so a sign can be slightly rotated and seen at an angle.

/// One premultiplied RGBA8 image.
#[derive(Debug, Clone)]
pub(crate) struct Level {
    pub width: usize,
    pub height: usize,
    pub rgba: Vec<u8>,
}

impl Level {
    /// Premultiplied RGBA at integer texel (x, y); transparent outside.
    #[inline]
    fn texel(&self, x: isize, y: isize) -> [f32; 4] {
        if x < 0 || y < 0 || x as usize >= self.width || y as usize >= self.height {
            return [0.0; 4];
        }
        let i = (y as usize * self.width + x as usize) * 4;
        [
            self.rgba[i] as f32,
            self.rgba[i + 1] as f32,
            self.rgba[i + 2] as f32,
            self.rgba[i + 3] as f32,
        ]
    }

    /// Bilinear sample at texel coordinates (texel centres at +0.5), premultiplied, 0–255.
    #[inline]
    fn sample(&self, x_texel: f32, y_texel: f32) -> [f32; 4] {
        let x = x_texel - 0.5;
        let y = y_texel - 0.5;
        let x0 = x.floor();
        let y0 = y.floor();
        let fx = x - x0;
        let fy = y - y0;
        let (xi, yi) = (x0 as isize, y0 as isize);
        let a = self.texel(xi, yi);
        let b = self.texel(xi + 1, yi);
        let c = self.texel(xi, yi + 1);
        let d = self.texel(xi + 1, yi + 1);
        let mut out = [0.0; 4];
        for k in 0..4 {
            let top = a[k] + (b[k] - a[k]) * fx;
            let bottom = c[k] + (d[k] - c[k]) * fx;
            out[k] = top + (bottom - top) * fy;
        }
        out
    }

    /// Half-size copy by 2×2 box filter (odd edges keep their last texel).
    fn halved(&self) -> Level {
        let width = (self.width / 2).max(1);
        let height = (self.height / 2).max(1);
        let mut rgba = vec![0u8; width * height * 4];
        for y in 0..height {
            for x in 0..width {
                for k in 0..4 {
                    let mut sum = 0u32;
                    for (dx, dy) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
                        let sx = (2 * x + dx).min(self.width - 1);
                        let sy = (2 * y + dy).min(self.height - 1);
                        sum += self.rgba[(sy * self.width + sx) * 4 + k] as u32;
                    }
                    rgba[(y * width + x) * 4 + k] = ((sum + 2) / 4) as u8;
                }
            }
        }
        Level {
            width,
            height,
            rgba,
        }
    }
}

/// A sign image with its mip chain; level 0 is the sharpest. The sign fills the sprite except for a
/// transparent border of `pad_px` texels at level 0, which keeps the pasted edge anti-aliased.
#[derive(Debug, Clone)]
pub(crate) struct Sprite {
    pub levels: Vec<Level>,
}

impl Sprite {
    pub fn from_level(level0: Level) -> Self {
        let mut levels = vec![level0];
        while let Some(last) = levels.last() {
            if last.width.min(last.height) < 12 {
                break;
            }
            let next = last.halved();
            levels.push(next);
        }
        Self { levels }
    }

    /// Width over height of level 0.
    pub fn aspect(&self) -> f32 {
        let l = &self.levels[0];
        l.width as f32 / l.height.max(1) as f32
    }

    /// The level whose width is closest to (but not below) `width_px / 2^blur_levels`.
    fn level_for(&self, width_px: f32, blur_levels: f32) -> &Level {
        let target = (width_px / 2f32.powf(blur_levels.max(0.0))).max(1.0);
        let mut chosen = &self.levels[0];
        for level in &self.levels {
            if level.width as f32 >= target {
                chosen = level;
            } else {
                break;
            }
        }
        chosen
    }
}

/// Shape of a GTSRB sign, for the alpha mask that hides the crop's own background.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SignShape {
    Circle,
    TriangleUp,
    TriangleDown,
    Diamond,
    Octagon,
}

impl SignShape {
    /// The outline of each GTSRB class (warning signs are triangles, yield points down, priority road is a
    /// diamond, stop an octagon, the rest round).
    pub fn of_gtsrb_class(class_id: usize) -> Self {
        match class_id {
            11 | 18..=31 => SignShape::TriangleUp,
            13 => SignShape::TriangleDown,
            12 => SignShape::Diamond,
            14 => SignShape::Octagon,
            _ => SignShape::Circle,
        }
    }

    /// Signed distance (positive inside) of point (x, y) in the unit square to the shape, in unit-square units.
    fn signed_distance(self, x: f32, y: f32) -> f32 {
        let polygon: &[(f32, f32)] = match self {
            SignShape::Circle => {
                let (dx, dy) = (x - 0.5, y - 0.5);
                return 0.5 - (dx * dx + dy * dy).sqrt();
            }
            SignShape::TriangleUp => &[(0.5, 0.067), (1.0, 0.933), (0.0, 0.933)],
            SignShape::TriangleDown => &[(0.0, 0.067), (1.0, 0.067), (0.5, 0.933)],
            SignShape::Diamond => &[(0.5, 0.0), (1.0, 0.5), (0.5, 1.0), (0.0, 0.5)],
            SignShape::Octagon => &[
                (0.293, 0.0),
                (0.707, 0.0),
                (1.0, 0.293),
                (1.0, 0.707),
                (0.707, 1.0),
                (0.293, 1.0),
                (0.0, 0.707),
                (0.0, 0.293),
            ],
        };
        // Convex polygons listed clockwise in image coordinates: inside is to the right of each edge.
        let mut distance = f32::INFINITY;
        for i in 0..polygon.len() {
            let (ax, ay) = polygon[i];
            let (bx, by) = polygon[(i + 1) % polygon.len()];
            let (ex, ey) = (bx - ax, by - ay);
            let length = (ex * ex + ey * ey).sqrt().max(1e-6);
            let d = (ex * (y - ay) - ey * (x - ax)) / length;
            distance = distance.min(d);
        }
        distance
    }
}

/// Side of a GTSRB crop in pixels, and the margin around the sign in it (GTSRB keeps ~10 % around the sign).
pub(crate) const GTSRB_SIDE_PX: usize = 32;
const GTSRB_MARGIN_PX: f32 = 3.0;
/// Level-0 size of a sprite built from a crop: the 26 px sign upsampled so the mask edge stays crisp.
const CROP_SPRITE_INNER_PX: usize = 64;
const CROP_SPRITE_PAD_PX: usize = 2;

/// A sprite from one 32×32 RGB GTSRB crop: cut to the sign, upsampled, masked by the class's shape.
pub(crate) fn sprite_from_gtsrb_crop(crop_rgb: &[u8], shape: SignShape) -> Sprite {
    let side = CROP_SPRITE_INNER_PX + 2 * CROP_SPRITE_PAD_PX;
    let mut rgba = vec![0u8; side * side * 4];
    let inner = CROP_SPRITE_INNER_PX as f32;
    let sign_side_crop = GTSRB_SIDE_PX as f32 - 2.0 * GTSRB_MARGIN_PX;
    // Shrinking the mask a little cuts off the crop background that a loose GTSRB box leaves at the rim.
    let shrink = 0.96;
    let feather_unit = 1.2 / inner;
    let crop_pixel = |x: isize, y: isize| -> [f32; 3] {
        let xc = x.clamp(0, GTSRB_SIDE_PX as isize - 1) as usize;
        let yc = y.clamp(0, GTSRB_SIDE_PX as isize - 1) as usize;
        let i = (yc * GTSRB_SIDE_PX + xc) * 3;
        [
            crop_rgb[i] as f32,
            crop_rgb[i + 1] as f32,
            crop_rgb[i + 2] as f32,
        ]
    };
    for y in 0..CROP_SPRITE_INNER_PX {
        for x in 0..CROP_SPRITE_INNER_PX {
            let u = (x as f32 + 0.5) / inner;
            let v = (y as f32 + 0.5) / inner;
            let d =
                shape.signed_distance(0.5 + (u - 0.5) / shrink, 0.5 + (v - 0.5) / shrink) * shrink;
            let alpha = (d / feather_unit + 0.5).clamp(0.0, 1.0);
            if alpha <= 0.0 {
                continue;
            }
            let cx = GTSRB_MARGIN_PX + u * sign_side_crop - 0.5;
            let cy = GTSRB_MARGIN_PX + v * sign_side_crop - 0.5;
            let (x0, y0) = (cx.floor(), cy.floor());
            let (fx, fy) = (cx - x0, cy - y0);
            let (xi, yi) = (x0 as isize, y0 as isize);
            let a = crop_pixel(xi, yi);
            let b = crop_pixel(xi + 1, yi);
            let c = crop_pixel(xi, yi + 1);
            let e = crop_pixel(xi + 1, yi + 1);
            let o = ((y + CROP_SPRITE_PAD_PX) * side + x + CROP_SPRITE_PAD_PX) * 4;
            for k in 0..3 {
                let top = a[k] + (b[k] - a[k]) * fx;
                let bottom = c[k] + (e[k] - c[k]) * fx;
                let value = top + (bottom - top) * fy;
                rgba[o + k] = (value * alpha).round().clamp(0.0, 255.0) as u8;
            }
            rgba[o + 3] = (alpha * 255.0).round() as u8;
        }
    }
    Sprite::from_level(Level {
        width: side,
        height: side,
        rgba,
    })
}

/// A sprite from a premultiplied RGBA rendering: cropped to its opaque part plus a 1-texel border.
pub(crate) fn sprite_from_premultiplied(
    width: usize,
    height: usize,
    rgba: &[u8],
) -> Option<Sprite> {
    let (mut x0, mut y0, mut x1, mut y1) = (usize::MAX, usize::MAX, 0usize, 0usize);
    for y in 0..height {
        for x in 0..width {
            if rgba[(y * width + x) * 4 + 3] > 8 {
                x0 = x0.min(x);
                y0 = y0.min(y);
                x1 = x1.max(x + 1);
                y1 = y1.max(y + 1);
            }
        }
    }
    if x0 >= x1 || y0 >= y1 {
        return None;
    }
    let pad = 1;
    let (w, h) = (x1 - x0 + 2 * pad, y1 - y0 + 2 * pad);
    let mut out = vec![0u8; w * h * 4];
    for y in y0..y1 {
        let src = (y * width + x0) * 4..(y * width + x1) * 4;
        let dst_start = ((y - y0 + pad) * w + pad) * 4;
        out[dst_start..dst_start + (x1 - x0) * 4].copy_from_slice(&rgba[src]);
    }
    Some(Sprite::from_level(Level {
        width: w,
        height: h,
        rgba: out,
    }))
}

/// Where and how a sprite lands: the frame-pixel positions of its corners (top-left, top-right,
/// bottom-right, bottom-left) and photometric changes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Placement {
    pub corners_frame_px: [(f32, f32); 4],
    /// Multiplier on the sign's colours (shade, exposure).
    pub gain: f32,
    /// Added to the sign's colours, 0–255 units (haze).
    pub offset: f32,
    /// Extra blur in mip levels (0 = sharp).
    pub blur_levels: f32,
}

/// Projective map from the unit square to a quad (Heckbert), and its inverse.
#[derive(Debug, Clone, Copy)]
struct Homography {
    m: [f32; 9],
}

impl Homography {
    fn unit_square_to_quad(q: &[(f32, f32); 4]) -> Option<Self> {
        let [(x0, y0), (x1, y1), (x2, y2), (x3, y3)] = *q;
        let (dx1, dx2, dx3) = (x1 - x2, x3 - x2, x0 - x1 + x2 - x3);
        let (dy1, dy2, dy3) = (y1 - y2, y3 - y2, y0 - y1 + y2 - y3);
        let den = dx1 * dy2 - dx2 * dy1;
        if den.abs() < 1e-9 {
            return None;
        }
        let g = (dx3 * dy2 - dx2 * dy3) / den;
        let h = (dx1 * dy3 - dx3 * dy1) / den;
        Some(Self {
            m: [
                x1 - x0 + g * x1,
                x3 - x0 + h * x3,
                x0,
                y1 - y0 + g * y1,
                y3 - y0 + h * y3,
                y0,
                g,
                h,
                1.0,
            ],
        })
    }

    fn inverse(&self) -> Option<Self> {
        let [a, b, c, d, e, f, g, h, i] = self.m;
        let co = [
            e * i - f * h,
            -(d * i - f * g),
            d * h - e * g,
            -(b * i - c * h),
            a * i - c * g,
            -(a * h - b * g),
            b * f - c * e,
            -(a * f - c * d),
            a * e - b * d,
        ];
        let det = a * co[0] + b * co[1] + c * co[2];
        if det.abs() < 1e-12 {
            return None;
        }
        // Inverse = adjugate / det; the adjugate is the transposed cofactor matrix.
        Some(Self {
            m: [
                co[0] / det,
                co[3] / det,
                co[6] / det,
                co[1] / det,
                co[4] / det,
                co[7] / det,
                co[2] / det,
                co[5] / det,
                co[8] / det,
            ],
        })
    }

    #[inline]
    fn apply(&self, x: f32, y: f32) -> (f32, f32) {
        let [a, b, c, d, e, f, g, h, i] = self.m;
        let w = g * x + h * y + i;
        ((a * x + b * y + c) / w, (d * x + e * y + f) / w)
    }
}

/// Pastes `sprite` into the RGB frame; returns the frame-pixel box `[xmin, ymin, xmax)` of the pixels where
/// the sign covers at least half a pixel, or `None` if nothing landed.
pub(crate) fn paste(
    rgb: &mut [u8],
    width: u32,
    height: u32,
    sprite: &Sprite,
    placement: &Placement,
) -> Option<[u32; 4]> {
    let quad = &placement.corners_frame_px;
    let forward = Homography::unit_square_to_quad(quad)?;
    let inverse = forward.inverse()?;
    let xs = quad.iter().map(|p| p.0);
    let ys = quad.iter().map(|p| p.1);
    let qx0 = xs.clone().fold(f32::INFINITY, f32::min).floor().max(0.0) as u32;
    let qx1 = (xs.fold(f32::NEG_INFINITY, f32::max).ceil().max(0.0) as u32).min(width);
    let qy0 = ys.clone().fold(f32::INFINITY, f32::min).floor().max(0.0) as u32;
    let qy1 = (ys.fold(f32::NEG_INFINITY, f32::max).ceil().max(0.0) as u32).min(height);
    if qx0 >= qx1 || qy0 >= qy1 {
        return None;
    }
    let quad_width_px = ((quad[1].0 - quad[0].0).hypot(quad[1].1 - quad[0].1)
        + (quad[2].0 - quad[3].0).hypot(quad[2].1 - quad[3].1))
        * 0.5;
    let level = sprite.level_for(quad_width_px, placement.blur_levels);
    let (lw, lh) = (level.width as f32, level.height as f32);
    let mut covered = [u32::MAX, u32::MAX, 0, 0];
    for y in qy0..qy1 {
        for x in qx0..qx1 {
            let (u, v) = inverse.apply(x as f32 + 0.5, y as f32 + 0.5);
            if !(-0.05..=1.05).contains(&u) || !(-0.05..=1.05).contains(&v) {
                continue;
            }
            let s = level.sample(u * lw, v * lh);
            let alpha = s[3] / 255.0;
            if alpha <= 0.002 {
                continue;
            }
            let i = (y as usize * width as usize + x as usize) * 3;
            for k in 0..3 {
                let sign = s[k] * placement.gain + placement.offset * alpha;
                let blended = sign + rgb[i + k] as f32 * (1.0 - alpha);
                rgb[i + k] = blended.round().clamp(0.0, 255.0) as u8;
            }
            if alpha >= 0.5 {
                covered[0] = covered[0].min(x);
                covered[1] = covered[1].min(y);
                covered[2] = covered[2].max(x + 1);
                covered[3] = covered[3].max(y + 1);
            }
        }
    }
    (covered[0] < covered[2]).then_some(covered)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]
        #[test]
        fn homography_maps_unit_corners_onto_the_quad(
            x0 in 0.0f32..50.0, y0 in 0.0f32..50.0, w in 10.0f32..100.0, h in 10.0f32..100.0,
            k in -0.1f32..0.1, shear in -5.0f32..5.0,
        ) {
            let quad = [
                (x0, y0 + k * h),
                (x0 + w + shear, y0 - k * h),
                (x0 + w, y0 + h + k * h),
                (x0 + shear, y0 + h - k * h),
            ];
            let hm = Homography::unit_square_to_quad(&quad).unwrap();
            let inv = hm.inverse().unwrap();
            for (corner, (u, v)) in quad.iter().zip([(0.0, 0.0), (1.0, 0.0), (1.0, 1.0), (0.0, 1.0)]) {
                let (x, y) = hm.apply(u, v);
                prop_assert!((x - corner.0).abs() < 1e-2 && (y - corner.1).abs() < 1e-2);
                let (ub, vb) = inv.apply(corner.0, corner.1);
                prop_assert!((ub - u).abs() < 1e-3 && (vb - v).abs() < 1e-3);
            }
        }
    }

    #[test]
    fn crop_mask_hides_the_crop_corners_and_keeps_the_centre() {
        let crop = vec![200u8; GTSRB_SIDE_PX * GTSRB_SIDE_PX * 3];
        for shape in [
            SignShape::Circle,
            SignShape::TriangleUp,
            SignShape::TriangleDown,
            SignShape::Diamond,
            SignShape::Octagon,
        ] {
            let sprite = sprite_from_gtsrb_crop(&crop, shape);
            let l = &sprite.levels[0];
            let alpha_at = |x: usize, y: usize| l.rgba[(y * l.width + x) * 4 + 3];
            assert_eq!(alpha_at(3, 3), 0, "{shape:?} corner must be transparent");
            let c = l.width / 2;
            assert_eq!(alpha_at(c, c + 4), 255, "{shape:?} centre must be opaque");
        }
    }

    #[test]
    fn paste_reports_the_box_it_changed() {
        let (w, h) = (100u32, 80u32);
        let mut rgb = vec![10u8; (w * h * 3) as usize];
        let crop = vec![250u8; GTSRB_SIDE_PX * GTSRB_SIDE_PX * 3];
        let sprite = sprite_from_gtsrb_crop(&crop, SignShape::Circle);
        let placement = Placement {
            corners_frame_px: [(20.0, 20.0), (60.0, 20.0), (60.0, 60.0), (20.0, 60.0)],
            gain: 1.0,
            offset: 0.0,
            blur_levels: 0.0,
        };
        let b = paste(&mut rgb, w, h, &sprite, &placement).unwrap();
        assert!(
            b[0] >= 20 && b[2] <= 60 && b[1] >= 20 && b[3] <= 60,
            "{b:?}"
        );
        assert!(b[2] - b[0] > 30, "{b:?}");
        for y in 0..h {
            for x in 0..w {
                let changed = rgb[((y * w + x) * 3) as usize] != 10;
                if changed {
                    assert!(
                        (19..=61).contains(&x) && (19..=61).contains(&y),
                        "({x},{y})"
                    );
                }
            }
        }
    }
}
