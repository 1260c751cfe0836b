//! Procedural backgrounds of synthetic scenes: a road seen from a car (pinhole camera over a flat ground plane:
//! sky with clouds, distant hills, asphalt with lane marks, verges, trees/buildings/walls parallel to the road,
//! lamp posts, haze), and the camera [`Layout`] every background returns (photo ones too) so the sign placer
//! puts signs on poles at plausible heights.

use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// Side of the square, tileable noise textures.
const NOISE_SIDE: usize = 256;

/// Precomputed fractal value-noise tiles in [-1, 1]: per-pixel texture lookups stay a table read, which
/// keeps a 1280×960 background in a few milliseconds.
#[derive(Debug)]
pub(crate) struct NoiseBank {
    tiles: [Vec<f32>; 2],
}

impl NoiseBank {
    pub fn new() -> Self {
        Self {
            tiles: [fractal_tile(0x5eed_0001), fractal_tile(0x5eed_0002)],
        }
    }

    /// Nearest-texel lookup, wrapping, of tile `which` at texel coordinates (x, y).
    #[inline]
    pub fn at(&self, which: usize, x: f32, y: f32) -> f32 {
        let xi = (x as i64).rem_euclid(NOISE_SIDE as i64) as usize;
        let yi = (y as i64).rem_euclid(NOISE_SIDE as i64) as usize;
        self.tiles[which & 1][yi * NOISE_SIDE + xi]
    }

    /// Bilinear lookup: smooth at low frequencies (clouds, hill outlines).
    #[inline]
    pub fn smooth(&self, which: usize, x: f32, y: f32) -> f32 {
        let (x0, y0) = (x.floor(), y.floor());
        let (fx, fy) = (x - x0, y - y0);
        let a = self.at(which, x0, y0);
        let b = self.at(which, x0 + 1.0, y0);
        let c = self.at(which, x0, y0 + 1.0);
        let d = self.at(which, x0 + 1.0, y0 + 1.0);
        let top = a + (b - a) * fx;
        let bottom = c + (d - c) * fx;
        top + (bottom - top) * fy
    }
}

/// Tileable fractal value noise (5 octaves) from a fixed seed, normalised to [-1, 1].
fn fractal_tile(seed: u64) -> Vec<f32> {
    let mut out = vec![0f32; NOISE_SIDE * NOISE_SIDE];
    let hash = |x: usize, y: usize, octave: usize| -> f32 {
        let mut h = seed
            ^ (x as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
            ^ (y as u64).wrapping_mul(0xC2B2_AE3D_27D4_EB4F)
            ^ (octave as u64).wrapping_mul(0x1656_67B1_9E37_79F9);
        h ^= h >> 33;
        h = h.wrapping_mul(0xFF51_AFD7_ED55_8CCD);
        h ^= h >> 33;
        (h >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    };
    let mut amplitude = 1.0;
    for octave in 0..5 {
        let cells = 4usize << octave;
        let cell_px = NOISE_SIDE as f32 / cells as f32;
        for y in 0..NOISE_SIDE {
            for x in 0..NOISE_SIDE {
                let (gx, gy) = (x as f32 / cell_px, y as f32 / cell_px);
                let (x0, y0) = (gx.floor() as usize, gy.floor() as usize);
                let (fx, fy) = (gx - x0 as f32, gy - y0 as f32);
                let (sx, sy) = (fx * fx * (3.0 - 2.0 * fx), fy * fy * (3.0 - 2.0 * fy));
                let (x1, y1) = ((x0 + 1) % cells, (y0 + 1) % cells);
                let a = hash(x0, y0, octave);
                let b = hash(x1, y0, octave);
                let c = hash(x0, y1, octave);
                let d = hash(x1, y1, octave);
                let top = a + (b - a) * sx;
                let bottom = c + (d - c) * sx;
                out[y * NOISE_SIDE + x] += amplitude * (top + (bottom - top) * sy);
            }
        }
        amplitude *= 0.55;
    }
    let peak = out.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
    out.iter_mut().for_each(|v| *v /= peak);
    out
}

/// The pinhole camera behind a background, in frame pixels and metres.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Layout {
    pub horizon_y_px: f32,
    pub vanishing_x_px: f32,
    pub focal_px: f32,
    pub camera_height_m: f32,
    /// Lateral positions (camera at 0, right positive) of the road's left and right edges.
    pub road_left_m: f32,
    pub road_right_m: f32,
    /// Lateral positions of walls/trees on each side (signs stand between road and these).
    pub structure_left_m: f32,
    pub structure_right_m: f32,
}

impl Layout {
    /// Frame position of a world point (lateral X, height Y above ground, depth Z).
    pub fn project(&self, lateral_m: f32, height_m: f32, depth_m: f32) -> (f32, f32) {
        let x = self.vanishing_x_px + self.focal_px * lateral_m / depth_m;
        let y = self.horizon_y_px + self.focal_px * (self.camera_height_m - height_m) / depth_m;
        (x, y)
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Structure {
    Open,
    Trees,
    Buildings,
    Wall,
}

#[derive(Debug, Clone, Copy)]
struct Side {
    kind: Structure,
    lateral_m: f32,
    height_m: f32,
    colour: [f32; 3],
    verge: [f32; 3],
    sidewalk_m: f32,
}

fn jitter(rng: &mut ChaCha8Rng, c: [f32; 3], amount: f32) -> [f32; 3] {
    let common = rng.random_range(-amount..amount);
    [
        c[0] + common + rng.random_range(-amount..amount) * 0.4,
        c[1] + common + rng.random_range(-amount..amount) * 0.4,
        c[2] + common + rng.random_range(-amount..amount) * 0.4,
    ]
}

pub(crate) fn mix(a: [f32; 3], b: [f32; 3], t: f32) -> [f32; 3] {
    [
        a[0] + (b[0] - a[0]) * t,
        a[1] + (b[1] - a[1]) * t,
        a[2] + (b[2] - a[2]) * t,
    ]
}

#[inline]
fn smoothstep(e0: f32, e1: f32, x: f32) -> f32 {
    let t = ((x - e0) / (e1 - e0)).clamp(0.0, 1.0);
    t * t * (3.0 - 2.0 * t)
}

/// Coverage of a pixel of half-width `footprint` by the band |d| < half_width (analytic anti-aliasing).
#[inline]
fn band(d: f32, half_width: f32, footprint: f32) -> f32 {
    ((half_width - d.abs()) / footprint.max(1e-4) + 0.5).clamp(0.0, 1.0)
}

pub(crate) fn hash01(a: i64, b: u64) -> f32 {
    let mut h = (a as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ b;
    h ^= h >> 31;
    h = h.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    h ^= h >> 29;
    (h >> 40) as f32 / (1u64 << 24) as f32
}

fn random_side(rng: &mut ChaCha8Rng, road_edge_m: f32, sign: f32) -> Side {
    let kind = match rng.random_range(0..10) {
        0..=1 => Structure::Open,
        2..=4 => Structure::Trees,
        5..=8 => Structure::Buildings,
        _ => Structure::Wall,
    };
    let (height_m, colour) = match kind {
        Structure::Open => (0.0, [0.0; 3]),
        Structure::Trees => (
            rng.random_range(6.0..16.0),
            jitter(rng, [52.0, 72.0, 38.0], 14.0),
        ),
        Structure::Buildings => {
            let palette = [
                [170.0, 160.0, 145.0],
                [150.0, 90.0, 70.0],
                [200.0, 195.0, 185.0],
                [120.0, 120.0, 125.0],
                [190.0, 170.0, 120.0],
            ];
            let c = palette[rng.random_range(0..palette.len())];
            (rng.random_range(7.0..22.0), jitter(rng, c, 18.0))
        }
        Structure::Wall => (
            rng.random_range(1.2..3.0),
            jitter(rng, [140.0, 135.0, 125.0], 25.0),
        ),
    };
    let urban = matches!(kind, Structure::Buildings | Structure::Wall);
    let sidewalk_m = if urban || rng.random_bool(0.25) {
        rng.random_range(1.5..3.5)
    } else {
        0.0
    };
    let lateral_m = road_edge_m
        + sign
            * (sidewalk_m
                + if urban {
                    rng.random_range(3.0..6.0)
                } else {
                    rng.random_range(4.0..14.0)
                });
    Side {
        kind,
        lateral_m,
        height_m,
        colour,
        verge: jitter(rng, [78.0, 100.0, 48.0], 16.0),
        sidewalk_m,
    }
}

/// Paints a procedural road scene into `rgb` and returns its camera.
pub(crate) fn procedural(
    rng: &mut ChaCha8Rng,
    noise: &NoiseBank,
    width: u32,
    height: u32,
    rgb: &mut [u8],
) -> Layout {
    let (w, h) = (width as f32, height as f32);
    let lane_m = rng.random_range(2.9..3.7);
    let lanes_left = rng.random_range(0..3) as f32;
    let lanes_right = if rng.random_bool(0.2) { 1.0 } else { 0.0 };
    let layout_road_left = -lane_m * (0.5 + lanes_left) - rng.random_range(0.0..0.6);
    let layout_road_right = lane_m * (0.5 + lanes_right) + rng.random_range(0.0..0.6);
    let left = random_side(rng, layout_road_left, -1.0);
    let right = random_side(rng, layout_road_right, 1.0);
    let layout = Layout {
        horizon_y_px: h * rng.random_range(0.36..0.5),
        vanishing_x_px: w * rng.random_range(0.42..0.58),
        focal_px: w * rng.random_range(0.7..1.0),
        camera_height_m: rng.random_range(1.2..1.6),
        road_left_m: layout_road_left,
        road_right_m: layout_road_right,
        structure_left_m: left.lateral_m,
        structure_right_m: right.lateral_m,
    };
    let overcast = rng.random_bool(0.35);
    let sky_top = if overcast {
        jitter(rng, [150.0, 155.0, 165.0], 20.0)
    } else {
        jitter(rng, [70.0, 120.0, 200.0], 20.0)
    };
    let sky_horizon = if overcast {
        jitter(rng, [200.0, 202.0, 205.0], 12.0)
    } else {
        jitter(rng, [185.0, 205.0, 225.0], 12.0)
    };
    let cloud_colour = jitter(rng, [235.0, 235.0, 238.0], 10.0);
    let cloud_cover: f32 = rng.random_range(-0.3..0.5);
    let cloud_offset = (rng.random_range(0.0..256.0), rng.random_range(0.0..256.0));
    let asphalt = jitter(rng, [92.0, 92.0, 96.0], 20.0);
    let paint = jitter(rng, [215.0, 215.0, 210.0], 15.0);
    let paving = jitter(rng, [150.0, 145.0, 140.0], 20.0);
    let hills = jitter(rng, [95.0, 115.0, 120.0], 15.0);
    let hill_height_px = h * rng.random_range(0.0..0.06);
    let visibility_m: f32 = rng.random_range(120.0..500.0);
    let dash_period_m = rng.random_range(9.0..15.0);
    let dash_ratio = rng.random_range(0.3..0.5);
    let dash_phase = rng.random_range(0.0..1.0);
    let texture_offset = (rng.random_range(0.0..256.0), rng.random_range(0.0..256.0));
    let shadow_amount = if overcast {
        0.0
    } else {
        rng.random_range(0.0..0.35)
    };
    let building_seed: u64 = rng.random();
    let centre_line_m = -lane_m * 0.5;
    let has_centre_line = lanes_left >= 1.0 || rng.random_bool(0.5);

    let f = layout.focal_px;
    let cam_h = layout.camera_height_m;
    let (vx, hy) = (layout.vanishing_x_px, layout.horizon_y_px);
    let haze = sky_horizon;

    for y in 0..height as usize {
        let yc = y as f32 + 0.5;
        let row = &mut rgb[y * width as usize * 3..(y + 1) * width as usize * 3];
        let sky_t = (yc / hy.max(1.0)).clamp(0.0, 1.0);
        let sky_row = mix(sky_top, sky_horizon, sky_t.powf(0.7));
        for x in 0..width as usize {
            let xc = x as f32 + 0.5;
            let mut c: [f32; 3];
            if yc < hy {
                // Sky, clouds squashed towards the horizon as real cloud decks look.
                let squash = 1.0 / (0.15 + sky_t);
                let n = noise.smooth(
                    1,
                    xc / w * 180.0 + cloud_offset.0,
                    yc / h * 180.0 * squash + cloud_offset.1,
                );
                let cloud = smoothstep(0.0, 0.45, n + cloud_cover) * 0.9;
                c = mix(sky_row, cloud_colour, cloud);
                // Distant hills/tree line on the horizon.
                let hill_top = hy - hill_height_px * (0.6 + 0.4 * noise.smooth(0, xc * 0.15, 7.0));
                if yc > hill_top {
                    let t = noise.at(0, xc * 0.5, yc * 0.5) * 8.0;
                    c = mix([hills[0] + t, hills[1] + t, hills[2] + t], haze, 0.45);
                }
            } else {
                let depth_m = f * cam_h / (yc - hy).max(0.05);
                let lateral_m = (xc - vx) * depth_m / f;
                let footprint_m = depth_m / f;
                let fade = 1.0 / (1.0 + footprint_m * 4.0);
                let tx = lateral_m * 6.0 + texture_offset.0;
                let tz = depth_m * 6.0 + texture_offset.1;
                let grain = noise.at(0, tx, tz) * fade;
                if lateral_m > layout.road_left_m && lateral_m < layout.road_right_m {
                    let patch = noise.smooth(1, lateral_m * 0.3, depth_m * 0.1);
                    let grit = noise.at(1, lateral_m * 40.0 + texture_offset.1, depth_m * 40.0)
                        / (1.0 + footprint_m * 40.0);
                    // Tyres polish two darker tracks in each lane.
                    let lane_pos = ((lateral_m - centre_line_m) / lane_m).rem_euclid(1.0);
                    let track = band(lane_pos - 0.25, 0.08, footprint_m / lane_m)
                        + band(lane_pos - 0.75, 0.08, footprint_m / lane_m);
                    let speck = (hash01((y as i64) << 32 | x as i64, 0xA5) - 0.5) * 18.0 * fade;
                    let g = grain * 20.0 + patch * 16.0 + grit * 10.0 + speck - track * 5.0;
                    c = [asphalt[0] + g, asphalt[1] + g, asphalt[2] + g];
                    let mut mark = band(lateral_m - (layout.road_left_m + 0.3), 0.08, footprint_m)
                        + band(lateral_m - (layout.road_right_m - 0.3), 0.08, footprint_m);
                    let dz = footprint_m * depth_m / cam_h;
                    let dash = if dz > dash_period_m * 0.5 {
                        dash_ratio
                    } else {
                        let phase = (depth_m / dash_period_m + dash_phase).fract();
                        band(
                            phase - 0.5 * dash_ratio,
                            0.5 * dash_ratio,
                            dz / dash_period_m,
                        )
                    };
                    if has_centre_line {
                        mark += band(lateral_m - centre_line_m, 0.07, footprint_m) * dash;
                    }
                    for k in 1..=lanes_left as i32 {
                        let lane_line = centre_line_m - lane_m * k as f32;
                        if lane_line > layout.road_left_m + 0.5 {
                            mark += band(lateral_m - lane_line, 0.07, footprint_m) * dash;
                        }
                    }
                    c = mix(
                        c,
                        paint,
                        (mark * (0.6 + 0.4 * noise.at(1, tx, tz))).min(1.0),
                    );
                    if shadow_amount > 0.0 {
                        let s =
                            smoothstep(0.1, 0.3, noise.smooth(1, lateral_m * 2.0, depth_m * 0.7));
                        let k = 1.0 - shadow_amount * s;
                        c = [c[0] * k, c[1] * k, c[2] * k * 1.05];
                    }
                } else {
                    let side = if lateral_m < 0.0 { &left } else { &right };
                    let from_edge = if lateral_m < 0.0 {
                        layout.road_left_m - lateral_m
                    } else {
                        lateral_m - layout.road_right_m
                    };
                    if from_edge < side.sidewalk_m {
                        let slab_x = (from_edge / 0.5).fract();
                        let slab_z = (depth_m / 0.5).fract();
                        let joint = (band(slab_x, 0.03, footprint_m / 0.5)
                            + band(slab_z, 0.03, footprint_m * depth_m / cam_h / 0.5))
                        .min(1.0)
                            * fade;
                        let g = grain * 10.0 - joint * 25.0;
                        let kerb = band(from_edge - 0.1, 0.1, footprint_m) * 40.0;
                        c = [
                            paving[0] + g + kerb,
                            paving[1] + g + kerb,
                            paving[2] + g + kerb,
                        ];
                    } else {
                        let patch = noise.smooth(1, lateral_m * 0.5, depth_m * 0.2);
                        let dry = smoothstep(0.0, 0.6, patch);
                        let base = mix(side.verge, [130.0, 118.0, 80.0], dry * 0.6);
                        let g = grain * 30.0;
                        c = [base[0] + g, base[1] + g * 1.1, base[2] + g * 0.6];
                    }
                }
                c = mix(c, haze, 1.0 - (-depth_m / visibility_m).exp());
            }

            // Structures parallel to the road: columns left/right of the vanishing point see one side each.
            let side = if xc < vx { &left } else { &right };
            if side.kind != Structure::Open && (xc - vx).abs() > 0.5 {
                let px_per_m = (xc - vx) / side.lateral_m;
                if px_per_m > 0.0 {
                    let depth_m = f / px_per_m;
                    let foot_y = hy + cam_h * px_per_m;
                    let height_above_m = cam_h - (yc - hy) / px_per_m;
                    let (top_m, texture) = structure_height(side, depth_m, building_seed, noise);
                    if yc <= foot_y && height_above_m <= top_m {
                        let sc = structure_colour(
                            side,
                            depth_m,
                            height_above_m,
                            texture,
                            noise,
                            1.0 / px_per_m,
                        );
                        c = mix(sc, haze, 1.0 - (-depth_m / visibility_m).exp());
                    }
                }
            }
            let o = x * 3;
            row[o] = c[0].clamp(0.0, 255.0) as u8;
            row[o + 1] = c[1].clamp(0.0, 255.0) as u8;
            row[o + 2] = c[2].clamp(0.0, 255.0) as u8;
        }
    }
    draw_lamp_posts(rng, &layout, width, height, rgb);
    layout
}

/// Height of a structure at a depth, and a per-segment texture value.
#[inline]
fn structure_height(side: &Side, depth_m: f32, seed: u64, noise: &NoiseBank) -> (f32, f32) {
    match side.kind {
        Structure::Buildings => {
            let segment = (depth_m / 14.0).floor() as i64;
            let r = hash01(segment, seed ^ side.lateral_m.to_bits() as u64);
            (side.height_m * (0.5 + r), r)
        }
        Structure::Trees => {
            let n = noise.smooth(1, depth_m * 0.6, side.lateral_m * 3.0);
            let crowns = noise.at(0, depth_m * 6.0, 3.0) * 0.08;
            (side.height_m * (0.75 + 0.35 * n + crowns), 0.0)
        }
        Structure::Wall => (side.height_m, 0.0),
        Structure::Open => (0.0, 0.0),
    }
}

#[inline]
fn structure_colour(
    side: &Side,
    depth_m: f32,
    height_m: f32,
    texture: f32,
    noise: &NoiseBank,
    m_per_px: f32,
) -> [f32; 3] {
    match side.kind {
        Structure::Buildings => {
            let tint = (texture - 0.5) * 50.0;
            let mut c = [
                side.colour[0] + tint,
                side.colour[1] + tint * 0.9,
                side.colour[2] + tint * 0.8,
            ];
            let wx = (depth_m / 3.5).fract();
            let wy = (height_m / 3.0).fract();
            let zoom_m = m_per_px * depth_m / side.lateral_m.abs().max(0.5);
            let window =
                band(wx - 0.5, 0.22, zoom_m / 3.5).min(band(wy - 0.55, 0.2, m_per_px / 3.0));
            if height_m > 0.8 {
                let glass = 60.0 + 40.0 * noise.at(1, depth_m * 4.0, height_m * 4.0);
                c = mix(c, [glass * 0.8, glass * 0.9, glass], window * 0.85);
            }
            let g = noise.at(0, depth_m * 8.0, height_m * 8.0) * 8.0;
            [c[0] + g, c[1] + g, c[2] + g]
        }
        Structure::Trees => {
            let n = noise.at(0, depth_m * 5.0, height_m * 5.0);
            let leaves = noise.at(1, depth_m * 20.0, height_m * 20.0) / (1.0 + m_per_px * 10.0);
            let m = noise.smooth(1, depth_m * 1.5, height_m * 1.5);
            // Gaps between leaf clusters read as deep shadow.
            let gap = smoothstep(-0.2, -0.5, n + 0.5 * leaves) * 0.5;
            let light = (1.0 + 0.5 * n + 0.35 * leaves + 0.3 * m) * (1.0 - gap);
            [
                side.colour[0] * light,
                side.colour[1] * light,
                side.colour[2] * light,
            ]
        }
        Structure::Wall => {
            let g = noise.at(0, depth_m * 6.0, height_m * 6.0) * 14.0;
            let top = if height_m > side.height_m - 0.15 {
                -20.0
            } else {
                0.0
            };
            [
                side.colour[0] + g + top,
                side.colour[1] + g + top,
                side.colour[2] + g + top,
            ]
        }
        Structure::Open => side.verge,
    }
}

/// A vertical bar in frame pixels: a sign post or lamp post.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Pole {
    pub centre_x_px: f32,
    pub width_px: f32,
    pub top_y_px: f32,
    pub bottom_y_px: f32,
    pub colour: [f32; 3],
}

/// Fills a pole with anti-aliased sides and cylinder shading.
pub(crate) fn draw_pole(rgb: &mut [u8], width: u32, height: u32, pole: &Pole) {
    let Pole {
        centre_x_px,
        width_px,
        top_y_px,
        bottom_y_px,
        colour,
    } = *pole;
    let half = (width_px * 0.5).max(0.5);
    let x0 = (centre_x_px - half).floor().max(0.0) as u32;
    let x1 = ((centre_x_px + half).ceil().max(0.0) as u32).min(width);
    let y0 = top_y_px.floor().max(0.0) as u32;
    let y1 = (bottom_y_px.ceil().max(0.0) as u32).min(height);
    for x in x0..x1 {
        let left = (x as f32).max(centre_x_px - half);
        let right = (x as f32 + 1.0).min(centre_x_px + half);
        let cover = (right - left).clamp(0.0, 1.0);
        if cover <= 0.0 {
            continue;
        }
        let across = ((x as f32 + 0.5 - centre_x_px) / half).clamp(-1.0, 1.0);
        let shade = 1.0 - 0.35 * across - 0.25 * across * across;
        for y in y0..y1 {
            let i = (y as usize * width as usize + x as usize) * 3;
            for k in 0..3 {
                let v = rgb[i + k] as f32 * (1.0 - cover) + colour[k] * shade * cover;
                rgb[i + k] = v.clamp(0.0, 255.0) as u8;
            }
        }
    }
}

fn draw_lamp_posts(rng: &mut ChaCha8Rng, layout: &Layout, width: u32, height: u32, rgb: &mut [u8]) {
    if rng.random_bool(0.4) {
        return;
    }
    let on_right = rng.random_bool(0.6);
    let lateral_m = if on_right {
        layout.road_right_m + rng.random_range(0.4..1.2)
    } else {
        layout.road_left_m - rng.random_range(0.4..1.2)
    };
    let spacing_m = rng.random_range(25.0..45.0);
    let first_m = rng.random_range(4.0..spacing_m);
    let colour = jitter(rng, [125.0, 128.0, 130.0], 20.0);
    let post_height_m = rng.random_range(6.0..9.0);
    // Far to near so nearer posts cover farther ones.
    let count = 8;
    for k in (0..count).rev() {
        let depth_m = first_m + spacing_m * k as f32;
        let (x, foot_y) = layout.project(lateral_m, 0.0, depth_m);
        let (_, top_y) = layout.project(lateral_m, post_height_m, depth_m);
        let width_px = layout.focal_px * 0.16 / depth_m;
        let pole = Pole {
            centre_x_px: x,
            width_px,
            top_y_px: top_y,
            bottom_y_px: foot_y,
            colour,
        };
        draw_pole(rgb, width, height, &pole);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn noise_tiles_span_minus_one_to_one() {
        let bank = NoiseBank::new();
        for tile in &bank.tiles {
            let max = tile.iter().cloned().fold(f32::MIN, f32::max);
            let min = tile.iter().cloned().fold(f32::MAX, f32::min);
            assert!(max <= 1.0 && min >= -1.0 && max - min > 1.0, "{min}..{max}");
        }
    }

    #[test]
    fn procedural_sky_is_above_and_road_below_the_horizon() {
        let bank = NoiseBank::new();
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let (w, h) = (320u32, 240u32);
        let mut rgb = vec![0u8; (w * h * 3) as usize];
        let layout = procedural(&mut rng, &bank, w, h, &mut rgb);
        assert!(layout.horizon_y_px > 0.3 * h as f32 && layout.horizon_y_px < 0.55 * h as f32);
        // The bottom row straight ahead is road: grey, not green or blue.
        let x = layout.vanishing_x_px as usize;
        let i = ((h as usize - 1) * w as usize + x) * 3;
        let (r, g, b) = (rgb[i] as i32, rgb[i + 1] as i32, rgb[i + 2] as i32);
        assert!((r - g).abs() < 40 && (g - b).abs() < 40, "{r},{g},{b}");
    }
}
