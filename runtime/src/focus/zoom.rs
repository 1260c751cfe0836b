//! `zoom`: Learning to Zoom (Recasens et al., 2018). The glance objectness, pooled to a small square saliency
//! map (31×31) plus a constant floor, drives a sampling grid: each grid node's frame coordinate is the
//! Gaussian-weighted average of the coordinates around it, weighted by saliency, so salient places attract
//! samples and are magnified. As in the paper, the saliency map is padded by replication and the average runs
//! over the padded domain (whose coordinates continue past 0 and 1), so a uniform map gives the identity and
//! the borders are not squeezed inward. The full-resolution frame is warped through the grid into one small
//! square image (bilinear), and windows of the warped image are classified as one batch; every window's
//! detections are mapped back through the grid to frame pixels.
//!
//! Windows follow the signs' size: the warped image is scanned with backbone-sized windows, each scored by the
//! best glance cell under it; one window per distinct cell is kept, re-centred on that cell's warped position
//! and sized to the glance's size estimate × `context`, magnified as the warp magnifies that spot (never below
//! the backbone's side). It is resampled from the warped image to the backbone's side, so a large or strongly
//! magnified sign is seen whole instead of in fragments (`object_sized_windows = false`: the fixed windows).

use saccade_models::GlanceMap;

use super::classify::{Looked, PatchBatcher};
use super::detect_config::DetectConfig;
use super::exit::{max_objectness, nothing_salient_into, open_frame, Opened};
use super::geometry::{clip_to_frame, object_side_at, patch_for_cell, CellArea, GlanceGeometry};
use super::outcome::OutcomeRecorder;
use super::selection::nms_into;
use super::{ExitReason, FocusInput, FocusOutcome, FocusResult, FocusStrategy};
use crate::frame::{BoxPx, Frame};
use crate::imageops::{sample_bilinear_plane, sample_bilinear_rgb};

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct ZoomConfig {
    /// Side of the square saliency map and sampling grid (the paper's 31).
    pub grid_side: usize,
    /// Added to the max-normalised saliency so empty regions still get samples and the warp stays smooth.
    pub saliency_floor: f32,
    /// Gaussian σ as a fraction of the grid side.
    pub sigma_fraction: f32,
    /// Side of the warped image in px.
    pub warped_side_px: usize,
    /// Stride of the classifier-sized windows on the warped image, px.
    pub window_stride_px: usize,
    /// Most windows classified per frame (before the budget's `max_patches` cap).
    pub max_windows: usize,
    /// Size each window to its sign (glance size estimate × `context`, in warped px) and centre it on the
    /// glance peak; `false`: fixed backbone-sized windows at the stride grid's positions.
    pub object_sized_windows: bool,
    #[serde(flatten)]
    pub detect: DetectConfig,
}

impl Default for ZoomConfig {
    fn default() -> Self {
        Self {
            grid_side: 31,
            saliency_floor: 0.002,
            sigma_fraction: 0.25,
            warped_side_px: 192,
            window_stride_px: 16,
            max_windows: 12,
            object_sized_windows: true,
            detect: DetectConfig::default(),
        }
    }
}

/// The sampling grid: for each of `side × side` nodes spread evenly over the warped image (node 0 on its left
/// edge, node `side − 1` on its right), the normalised frame coordinate (0..1) it samples.
#[derive(Debug, Clone, PartialEq)]
pub struct ZoomGrid {
    pub side: usize,
    /// Normalised frame x of each node, row-major.
    pub x_norm: Vec<f64>,
    /// Normalised frame y of each node, row-major.
    pub y_norm: Vec<f64>,
    pub frame_width_px: f64,
    pub frame_height_px: f64,
    pub warped_side_px: f64,
}

impl ZoomGrid {
    /// The identity grid (uniform saliency).
    pub fn identity(
        side: usize,
        frame_width_px: f64,
        frame_height_px: f64,
        warped_side_px: f64,
    ) -> Self {
        let uniform = vec![1.0f32; side * side];
        Self::from_saliency(
            &uniform,
            side,
            0.25,
            frame_width_px,
            frame_height_px,
            warped_side_px,
        )
    }

    /// The paper's grid from a square saliency map (row-major, `side × side`, positive).
    ///
    /// # Shapes
    /// `saliency`: `side × side`; the padded domain is `3·side` per axis (replication padding of `side`).
    pub fn from_saliency(
        saliency: &[f32],
        side: usize,
        sigma_fraction: f32,
        frame_width_px: f64,
        frame_height_px: f64,
        warped_side_px: f64,
    ) -> Self {
        let mut grid = Self {
            side: 0,
            x_norm: Vec::new(),
            y_norm: Vec::new(),
            frame_width_px,
            frame_height_px,
            warped_side_px,
        };
        grid.rebuild(saliency, side, sigma_fraction, &mut GridScratch::default());
        grid
    }

    /// [`Self::from_saliency`] in place for the same frame and warped sizes, reusing this grid's lists and
    /// `scratch`.
    fn rebuild(
        &mut self,
        saliency: &[f32],
        side: usize,
        sigma_fraction: f32,
        scratch: &mut GridScratch,
    ) {
        let side = side.max(2);
        let pad = side;
        let padded = side + 2 * pad;
        let sigma = (sigma_fraction.max(1e-3) as f64 * side as f64).max(0.5);
        // g[d] for d = offset between an output node (at padded index i + pad) and a padded index.
        // Offsets are whole cells in -padded..padded: tabulate the kernel once instead of ~350k exp() calls.
        let GridScratch { table, t_den, t_x } = scratch;
        table.clear();
        table.extend((0..2 * padded).map(|i| {
            let d = i as f64 - padded as f64;
            (-(d * d) / (2.0 * sigma * sigma)).exp()
        }));
        let gauss = |d: f64| table[(d + padded as f64) as usize];
        let coord = |k: usize| (k as f64 - pad as f64) / (side - 1) as f64;
        let sal = |r: usize, c: usize| -> f64 {
            let rr = r.saturating_sub(pad).min(side - 1);
            let cc = c.saturating_sub(pad).min(side - 1);
            let v = saliency.get(rr * side + cc).copied().unwrap_or(1.0) as f64;
            if v.is_finite() {
                v.max(1e-6)
            } else {
                1e-6
            }
        };
        // Separable pass 1 along columns: (padded rows) × (output cols).
        for t in [&mut *t_den, &mut *t_x] {
            t.clear();
            t.resize(padded * side, 0.0);
        }
        for r in 0..padded {
            for c in 0..side {
                let (mut den, mut num_x) = (0.0, 0.0);
                for cp in 0..padded {
                    let w = sal(r, cp) * gauss((c + pad) as f64 - cp as f64);
                    den += w;
                    num_x += w * coord(cp);
                }
                t_den[r * side + c] = den;
                t_x[r * side + c] = num_x;
            }
        }
        // Pass 2 along rows: (output rows) × (output cols).
        let (x_norm, y_norm) = (&mut self.x_norm, &mut self.y_norm);
        for v in [&mut *x_norm, &mut *y_norm] {
            v.clear();
            v.resize(side * side, 0.0);
        }
        for r in 0..side {
            for c in 0..side {
                let (mut den, mut num_x, mut num_y) = (0.0, 0.0, 0.0);
                for rp in 0..padded {
                    let g = gauss((r + pad) as f64 - rp as f64);
                    den += g * t_den[rp * side + c];
                    num_x += g * t_x[rp * side + c];
                    num_y += g * coord(rp) * t_den[rp * side + c];
                }
                let den = den.max(f64::MIN_POSITIVE);
                x_norm[r * side + c] = (num_x / den).clamp(0.0, 1.0);
                y_norm[r * side + c] = (num_y / den).clamp(0.0, 1.0);
            }
        }
        self.side = side;
    }

    /// Normalised frame point of a normalised warped point (bilinear between grid nodes).
    fn norm_from_warped_norm(&self, a: f64, b: f64) -> (f64, f64) {
        let n = self.side;
        let gx = a.clamp(0.0, 1.0) * (n - 1) as f64;
        let gy = b.clamp(0.0, 1.0) * (n - 1) as f64;
        let x0 = (gx.floor() as usize).min(n - 2);
        let y0 = (gy.floor() as usize).min(n - 2);
        let fx = gx - x0 as f64;
        let fy = gy - y0 as f64;
        let lerp = |v: &[f64]| {
            let top = v[y0 * n + x0] * (1.0 - fx) + v[y0 * n + x0 + 1] * fx;
            let bottom = v[(y0 + 1) * n + x0] * (1.0 - fx) + v[(y0 + 1) * n + x0 + 1] * fx;
            top * (1.0 - fy) + bottom * fy
        };
        (lerp(&self.x_norm), lerp(&self.y_norm))
    }

    /// The frame point (px, edge coordinates) a warped-image point (px) samples.
    pub fn frame_from_warped(&self, u_warped_px: f64, v_warped_px: f64) -> (f64, f64) {
        let (x, y) = self.norm_from_warped_norm(
            u_warped_px / self.warped_side_px,
            v_warped_px / self.warped_side_px,
        );
        (x * self.frame_width_px, y * self.frame_height_px)
    }

    /// The warped-image point (px) whose sample lands on the frame point (px): the inverse map, by Newton
    /// steps on the piecewise-bilinear grid from the nearest node. The Gaussian-average grid has no folds
    /// (its Jacobian is a covariance over σ²), so the inverse is unique where the grid is not clamped.
    pub fn warped_from_frame(&self, x_frame_px: f64, y_frame_px: f64) -> (f64, f64) {
        let tx = x_frame_px / self.frame_width_px;
        let ty = y_frame_px / self.frame_height_px;
        let n = self.side;
        // Coarse search on a lattice twice as fine as the grid (the grid's nodes can coincide where it is
        // clamped, so nodes alone may point at the wrong place).
        let lattice = 2 * (n - 1);
        let mut best = ((0.0f64, 0.0f64), f64::INFINITY);
        for j in 0..=lattice {
            for i in 0..=lattice {
                let (aa, bb) = (i as f64 / lattice as f64, j as f64 / lattice as f64);
                let (x, y) = self.norm_from_warped_norm(aa, bb);
                let d = (x - tx).powi(2) + (y - ty).powi(2);
                if d < best.1 {
                    best = ((aa, bb), d);
                }
            }
        }
        let cell = 1.0 / lattice as f64;
        let ((a0, b0), _) = best;
        // Refine over the cells around that node: where the grid is clamped, several nodes share a coordinate
        // and Newton from a node would stall on a zero Jacobian.
        let (mut a, mut b, mut best_d) = (a0, b0, best.1);
        let sub = 8;
        for j in -sub..=sub {
            for i in -sub..=sub {
                let aa = (a0 + i as f64 * cell / sub as f64).clamp(0.0, 1.0);
                let bb = (b0 + j as f64 * cell / sub as f64).clamp(0.0, 1.0);
                let (x, y) = self.norm_from_warped_norm(aa, bb);
                let d = (x - tx).powi(2) + (y - ty).powi(2);
                if d < best_d {
                    (a, b, best_d) = (aa, bb, d);
                }
            }
        }
        let h = 1e-6;
        for _ in 0..40 {
            let (fx, fy) = self.norm_from_warped_norm(a, b);
            let (ex, ey) = (fx - tx, fy - ty);
            if ex.abs() < 1e-9 && ey.abs() < 1e-9 {
                break;
            }
            // One-sided differences pointing into the unit square.
            let da = if a + h <= 1.0 { h } else { -h };
            let db = if b + h <= 1.0 { h } else { -h };
            let (ax, ay) = self.norm_from_warped_norm(a + da, b);
            let (bx, by) = self.norm_from_warped_norm(a, b + db);
            let (j11, j21) = ((ax - fx) / da, (ay - fy) / da);
            let (j12, j22) = ((bx - fx) / db, (by - fy) / db);
            let det = j11 * j22 - j12 * j21;
            if det.abs() < 1e-12 {
                break;
            }
            let step_a = (j22 * ex - j12 * ey) / det;
            let step_b = (-j21 * ex + j11 * ey) / det;
            a = (a - step_a).clamp(0.0, 1.0);
            b = (b - step_b).clamp(0.0, 1.0);
        }
        (a * self.warped_side_px, b * self.warped_side_px)
    }

    /// The frame box (px, clipped to the frame) covered by a warped-image box: the bounding box of its mapped
    /// edges, sampled at 8 points per edge because the warp bends straight lines.
    pub fn frame_box_from_warped(&self, b: BoxPx) -> BoxPx {
        let mut out = BoxPx::new(f32::MAX, f32::MAX, f32::MIN, f32::MIN);
        let steps = 8;
        for k in 0..=steps {
            let t = k as f32 / steps as f32;
            let xs = b.xmin + t * b.width();
            let ys = b.ymin + t * b.height();
            for (u, v) in [(xs, b.ymin), (xs, b.ymax), (b.xmin, ys), (b.xmax, ys)] {
                let (x, y) = self.frame_from_warped(u as f64, v as f64);
                out.xmin = out.xmin.min(x as f32);
                out.ymin = out.ymin.min(y as f32);
                out.xmax = out.xmax.max(x as f32);
                out.ymax = out.ymax.max(y as f32);
            }
        }
        clip_to_frame(out, self.frame_width_px as f32, self.frame_height_px as f32)
    }
}

/// Area-pools the glance objectness onto a `side × side` square over the whole frame, max-normalised, plus
/// `floor`. Writes into `out` (resized to `side²`).
pub fn saliency_from_glance(glance: &GlanceMap, side: usize, floor: f32, out: &mut Vec<f32>) {
    out.clear();
    out.resize(side * side, floor.max(1e-6));
    let (mw, mh) = (glance.map_width, glance.map_height);
    if mw == 0 || mh == 0 || glance.objectness.len() < mw * mh {
        return;
    }
    let peak = max_objectness(glance).max(1e-6);
    let sx = mw as f32 / side as f32;
    let sy = mh as f32 / side as f32;
    for r in 0..side {
        let (y0, y1) = (r as f32 * sy, (r + 1) as f32 * sy);
        for c in 0..side {
            let (x0, x1) = (c as f32 * sx, (c + 1) as f32 * sx);
            let (mut sum, mut total) = (0.0f32, 0.0f32);
            for j in (y0.floor() as usize)..(y1.ceil() as usize).min(mh) {
                let wy = ((j + 1) as f32).min(y1) - (j as f32).max(y0);
                for i in (x0.floor() as usize)..(x1.ceil() as usize).min(mw) {
                    let wx = ((i + 1) as f32).min(x1) - (i as f32).max(x0);
                    let v = glance.objectness[j * mw + i];
                    if wx > 0.0 && wy > 0.0 && v.is_finite() {
                        sum += wx * wy * v;
                        total += wx * wy;
                    }
                }
            }
            if total > 0.0 {
                out[r * side + c] = sum / total / peak + floor.max(1e-6);
            }
        }
    }
}

/// The lists [`ZoomGrid::rebuild`] works in.
#[derive(Debug, Default)]
struct GridScratch {
    /// The Gaussian kernel by offset.
    table: Vec<f64>,
    /// The column pass: weight sums and weighted x per (padded row, output column).
    t_den: Vec<f64>,
    t_x: Vec<f64>,
}

/// The per-frame lists of [`Zoom`], kept for their capacity.
#[derive(Debug, Default)]
struct Scratch {
    grid: GridScratch,
    /// The grid before the last one, rebuilt for the next frame.
    spare_grid: Option<ZoomGrid>,
    origins: Vec<usize>,
    /// (window on the warped image, its frame box, score, best cell under it).
    windows: Vec<(BoxPx, BoxPx, f32, usize)>,
    scored: Vec<(BoxPx, f32)>,
    order: Vec<usize>,
    /// The windows kept, best first: after NMS, one per cell, then the chosen ones.
    ranked: Vec<usize>,
    /// Cells that already have a window.
    seen: Vec<bool>,
    fallback: Vec<BoxPx>,
}

pub struct Zoom {
    config: ZoomConfig,
    batcher: PatchBatcher,
    saliency: Vec<f32>,
    warped: Vec<f32>,
    last_grid: Option<ZoomGrid>,
    scratch: Scratch,
}

impl Zoom {
    pub fn new(config: ZoomConfig) -> Self {
        Self {
            config,
            batcher: PatchBatcher::new(),
            saliency: Vec::new(),
            warped: Vec::new(),
            last_grid: None,
            scratch: Scratch::default(),
        }
    }

    /// The grid used for the last frame (for visualisation and tests).
    pub fn last_grid(&self) -> Option<&ZoomGrid> {
        self.last_grid.as_ref()
    }

    /// Warps the frame through the grid into `self.warped` (CHW, 0..1, `warped_side²` per plane).
    fn warp(&mut self, frame: &Frame, grid: &ZoomGrid) {
        let side = self.config.warped_side_px;
        let plane = side * side;
        self.warped.clear();
        self.warped.resize(3 * plane, 0.0);
        let (w, h) = (frame.width as usize, frame.height as usize);
        for v in 0..side {
            for u in 0..side {
                let (x, y) = grid.frame_from_warped(u as f64 + 0.5, v as f64 + 0.5);
                let p = sample_bilinear_rgb(&frame.rgb, w, h, x as f32 - 0.5, y as f32 - 0.5);
                let o = v * side + u;
                self.warped[o] = p[0] / 255.0;
                self.warped[plane + o] = p[1] / 255.0;
                self.warped[2 * plane + o] = p[2] / 255.0;
            }
        }
    }
}

/// The window for glance cell `cell`: the frame patch [`patch_for_cell`] would cut (refined centre, size estimate
/// × context, at least `min_patch_side_px`) carried into the warped image — centred on the warped position of
/// its centre, its side times the warp's local magnification there, at least `min_side` (the backbone's side,
/// so no window is magnified past the warped image's own pixels) and at most the warped image, shifted inside
/// it. Returns the window (warped px) and the frame box it covers.
fn object_window(
    grid: &ZoomGrid,
    glance: &GlanceMap,
    geometry: &GlanceGeometry,
    cell: usize,
    detect: &DetectConfig,
    min_side: f32,
    warped_side: f32,
) -> (BoxPx, BoxPx) {
    let (patch, _) = patch_for_cell(glance, geometry, cell, detect);
    let (cx, cy) = patch.centre();
    let (u, v) = grid.warped_from_frame(f64::from(cx), f64::from(cy));
    // Warped px per frame px around (u, v), from a small square's image.
    let d = 2.0;
    let (x0, y0) = grid.frame_from_warped(u - d, v - d);
    let (x1, y1) = grid.frame_from_warped(u + d, v + d);
    let span = ((x1 - x0).abs() + (y1 - y0).abs()) / 2.0;
    let magnification = if span > 1e-6 { 2.0 * d / span } else { 1.0 };
    let side_w = (patch.width().max(patch.height()) * magnification as f32)
        .max(min_side)
        .min(warped_side);
    let half = side_w / 2.0;
    let xmin = (u as f32 - half).clamp(0.0, warped_side - side_w);
    let ymin = (v as f32 - half).clamp(0.0, warped_side - side_w);
    let window = BoxPx::new(xmin, ymin, xmin + side_w, ymin + side_w);
    (window, grid.frame_box_from_warped(window))
}

/// Resamples `window` (warped px, inside the image) of the CHW warped image (`warped_side²` per plane) to
/// `side × side` CHW: each output pixel is the mean of `n × n` bilinear samples spread over its footprint, with
/// `n` the shrink factor rounded up (at most 4), so a large window is averaged rather than aliased.
fn resample_window(
    warped: &[f32],
    warped_side: usize,
    window: &BoxPx,
    side: usize,
    out: &mut [f32],
) {
    let plane = warped_side * warped_side;
    let scale = window.width() / side as f32;
    let n = (scale.ceil() as usize).clamp(1, 4);
    let inv = 1.0 / (n * n) as f32;
    for c in 0..3 {
        let src = &warped[c * plane..(c + 1) * plane];
        let dst = &mut out[c * side * side..(c + 1) * side * side];
        for y in 0..side {
            for x in 0..side {
                let mut acc = 0.0;
                for j in 0..n {
                    let fy = window.ymin + (y as f32 + (j as f32 + 0.5) / n as f32) * scale - 0.5;
                    for i in 0..n {
                        let fx =
                            window.xmin + (x as f32 + (i as f32 + 0.5) / n as f32) * scale - 0.5;
                        acc += sample_bilinear_plane(src, warped_side, warped_side, fx, fy);
                    }
                }
                dst[y * side + x] = acc * inv;
            }
        }
    }
}

/// Window origins along one axis into `v` (cleared first): every `stride` from 0, plus one flush with the far
/// edge.
fn window_origins(length: usize, window: usize, stride: usize, v: &mut Vec<usize>) {
    v.clear();
    if window >= length {
        v.push(0);
        return;
    }
    v.extend((0..=length - window).step_by(stride.max(1)));
    if v.last() != Some(&(length - window)) {
        v.push(length - window);
    }
}

impl FocusStrategy for Zoom {
    fn name(&self) -> &'static str {
        "zoom"
    }

    fn focus_into(&mut self, input: &FocusInput<'_>, out: &mut FocusOutcome) -> FocusResult {
        let detect = self.config.detect.clone();
        let glance = input.glance;
        let Some(Opened { clock, geometry }) = open_frame(input, &detect) else {
            nothing_salient_into(out);
            return Ok(());
        };
        let n = self.config.grid_side.max(2);
        let mut saliency = std::mem::take(&mut self.saliency);
        saliency_from_glance(glance, n, self.config.saliency_floor, &mut saliency);
        let warped_side = self.config.warped_side_px.max(1);
        let mut scratch = std::mem::take(&mut self.scratch);
        let mut grid = scratch.spare_grid.take().unwrap_or_else(|| ZoomGrid {
            side: 0,
            x_norm: Vec::new(),
            y_norm: Vec::new(),
            frame_width_px: 0.0,
            frame_height_px: 0.0,
            warped_side_px: 0.0,
        });
        grid.frame_width_px = input.frame.width as f64;
        grid.frame_height_px = input.frame.height as f64;
        grid.warped_side_px = warped_side as f64;
        grid.rebuild(&saliency, n, self.config.sigma_fraction, &mut scratch.grid);
        self.saliency = saliency;

        // Windows on the warped image, scored by the best objectness of the cells their frame box covers.
        let side = input.classifier.input_side_px().min(warped_side).max(1);
        let origins = &mut scratch.origins;
        window_origins(warped_side, side, self.config.window_stride_px, origins);
        let windows = &mut scratch.windows;
        windows.clear();
        for &oy in origins.iter() {
            for &ox in origins.iter() {
                let w = BoxPx::new(ox as f32, oy as f32, (ox + side) as f32, (oy + side) as f32);
                let f = grid.frame_box_from_warped(w);
                let (cx, cy) = f.centre();
                let start = geometry.cell_at_frame(cx, cy);
                let (best_cell, score) = geometry.best_cell_in(glance, start, CellArea::Box(f));
                if score >= detect.nothing_threshold && f.area() > 0.0 {
                    windows.push((w, f, score, best_cell));
                }
            }
        }
        // Overlapping windows on the same spot are redundant: keep the best of those sharing most of their area.
        let scored = &mut scratch.scored;
        scored.clear();
        scored.extend(windows.iter().map(|w| (w.0, w.2)));
        let chosen = &mut scratch.ranked;
        nms_into(scored, 0.5, &mut scratch.order, chosen);
        let limit = self.config.max_windows.min(input.budget.max_patches);
        if self.config.object_sized_windows {
            // Windows whose best cell is the same look at the same sign: one window per cell.
            let seen = &mut scratch.seen;
            seen.clear();
            chosen.retain(|&i| {
                let cell = windows[i].3;
                if cell >= seen.len() {
                    seen.resize(cell + 1, false);
                }
                !std::mem::replace(&mut seen[cell], true)
            });
        }
        let budget_cut = chosen.len() > limit && limit < self.config.max_windows;
        chosen.truncate(limit);
        if self.config.object_sized_windows {
            for &i in chosen.iter() {
                let (w, f) = object_window(
                    &grid,
                    glance,
                    &geometry,
                    windows[i].3,
                    &detect,
                    side as f32,
                    warped_side as f32,
                );
                windows[i].0 = w;
                windows[i].1 = f;
            }
        }

        let mut recorder = OutcomeRecorder::new(out);
        if clock.expired() {
            scratch.spare_grid = self.last_grid.replace(grid);
            self.scratch = scratch;
            recorder.finish(ExitReason::Budget, detect.merge_iou);
            return Ok(());
        }
        self.warp(input.frame, &grid);
        let per_patch = 3 * side * side;
        let plane = warped_side * warped_side;
        let buffer = self.batcher.prepare(chosen.len(), side);
        for (&i, out) in chosen.iter().zip(buffer.chunks_exact_mut(per_patch)) {
            let w = windows[i].0;
            if self.config.object_sized_windows {
                resample_window(&self.warped, warped_side, &w, side, out);
                continue;
            }
            let (ox, oy) = (w.xmin as usize, w.ymin as usize);
            for c in 0..3 {
                for y in 0..side {
                    let src = c * plane + (oy + y) * warped_side + ox;
                    let dst = c * side * side + y * side;
                    out[dst..dst + side].copy_from_slice(&self.warped[src..src + side]);
                }
            }
        }
        let looked = self.batcher.classify_prepared_and_look_again(
            "zoom",
            input.frame,
            side,
            chosen.iter().map(|&i| windows[i].1),
            input.classifier,
            &detect,
        )?;
        let mflops = input.classifier.mflops_per_patch();
        // A magnified sign spans several windows, each seeing a fragment: without a box from the net, report
        // the sign at the glance peak under the window with the glance's size, so the fragments agree and
        // merge into one box. With a box head, the box found in the warped window is mapped back (the warp
        // is close to linear across one window) and the second look re-examines it at full resolution.
        let fallback = &mut scratch.fallback;
        fallback.clear();
        fallback.extend(chosen.iter().map(|&i| {
            let (_, frame_box, _, cell) = windows[i];
            let object_side = object_side_at(glance, &geometry, cell);
            if object_side > 0.0 {
                let (cx, cy) = geometry.cell_centre_frame(cell);
                geometry.square_in_frame(cx, cy, object_side)
            } else {
                frame_box
            }
        }));
        for ((&i, l), fallback) in chosen.iter().zip(looked).zip(fallback.iter()) {
            let (_, frame_box, score, _) = windows[i];
            let l = Looked {
                object_frame: l.object_frame.or(Some(*fallback)),
                ..*l
            };
            recorder.record_looked(0, frame_box, score, 0.0, &l, mflops, detect.min_score);
        }
        scratch.spare_grid = self.last_grid.replace(grid);
        self.scratch = scratch;
        let exit = if budget_cut {
            ExitReason::Budget
        } else {
            ExitReason::MaxSteps
        };
        recorder.finish(exit, detect.merge_iou);
        Ok(())
    }
}

#[cfg(test)]
mod tests;
