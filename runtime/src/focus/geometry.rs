//! Glance-to-frame geometry: how map cells relate to frame pixels ([`GlanceGeometry`]), which cells lie in a
//! frame box and the best objectness among them ([`CellArea`]), and the boxes strategies cut (squares inside
//! the frame, the patch for a cell, the sign box inside a patch).

use saccade_models::GlanceMap;

use super::detect_config::DetectConfig;
use super::FocusInput;
use crate::frame::{BoxPx, Frame};

/// How glance-map cells relate to frame pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GlanceGeometry {
    pub frame_width_px: f32,
    pub frame_height_px: f32,
    /// Frame px per glance px, per axis.
    pub frame_per_glance_x: f32,
    pub frame_per_glance_y: f32,
    pub stride_glance_px: f32,
    pub map_width: usize,
    pub map_height: usize,
}

impl GlanceGeometry {
    pub fn new(frame: &Frame, glance: &GlanceMap, glance_size_px: (usize, usize)) -> Self {
        let gw = glance_size_px.0.max(1) as f32;
        let gh = glance_size_px.1.max(1) as f32;
        Self {
            frame_width_px: frame.width as f32,
            frame_height_px: frame.height as f32,
            frame_per_glance_x: frame.width as f32 / gw,
            frame_per_glance_y: frame.height as f32 / gh,
            stride_glance_px: glance.stride_px.max(1) as f32,
            map_width: glance.map_width,
            map_height: glance.map_height,
        }
    }

    pub fn from_input(input: &FocusInput<'_>) -> Self {
        Self::new(input.frame, input.glance, input.glance_size_px)
    }

    /// Centre of map cell `cell` (row-major) in frame px.
    pub fn cell_centre_frame(&self, cell: usize) -> (f32, f32) {
        (
            self.column_centre_frame(cell % self.map_width.max(1)),
            self.row_centre_frame(cell / self.map_width.max(1)),
        )
    }

    /// Frame x of the centres of the cells in map column `column`.
    fn column_centre_frame(&self, column: usize) -> f32 {
        (column as f32 + 0.5) * self.stride_glance_px * self.frame_per_glance_x
    }

    /// Frame y of the centres of the cells in map row `row`.
    fn row_centre_frame(&self, row: usize) -> f32 {
        (row as f32 + 0.5) * self.stride_glance_px * self.frame_per_glance_y
    }

    /// The cells, among the first `cells` of the map, whose centre lies in `area`, in row-major order. A
    /// centre's x depends only on its column and its y only on its row, so the columns and rows in the area are
    /// found once each: the cost is the map's width and height plus the cells inside, not a scan of the map.
    pub fn cells_in(&self, area: CellArea, cells: usize) -> impl Iterator<Item = usize> + '_ {
        let width = self.map_width.max(1);
        let rows = cells.div_ceil(width);
        let columns = span(width, |c| area.holds_x(self.column_centre_frame(c)));
        let rows = span(rows, |r| area.holds_y(self.row_centre_frame(r)));
        rows.filter(move |&r| area.holds_y(self.row_centre_frame(r)))
            .flat_map(move |r| {
                columns
                    .clone()
                    .filter(move |&c| area.holds_x(self.column_centre_frame(c)))
                    .map(move |c| r * width + c)
            })
            .filter(move |&cell| cell < cells)
    }

    /// The cell of highest objectness among `start` and the cells whose centre lies in `area`, with its
    /// objectness: `start` wins ties, then the first in row-major order.
    pub fn best_cell_in(&self, glance: &GlanceMap, start: usize, area: CellArea) -> (usize, f32) {
        let mut best = (start, glance.objectness.get(start).copied().unwrap_or(0.0));
        for cell in self.cells_in(area, glance.objectness.len()) {
            let o = glance.objectness[cell];
            if o > best.1 {
                best = (cell, o);
            }
        }
        best
    }

    /// The map cell containing frame point `(x, y)`, clamped to the map.
    pub fn cell_at_frame(&self, x_frame_px: f32, y_frame_px: f32) -> usize {
        let cx = (x_frame_px / (self.stride_glance_px * self.frame_per_glance_x)).floor();
        let cy = (y_frame_px / (self.stride_glance_px * self.frame_per_glance_y)).floor();
        let cx = (cx.max(0.0) as usize).min(self.map_width.saturating_sub(1));
        let cy = (cy.max(0.0) as usize).min(self.map_height.saturating_sub(1));
        cy * self.map_width + cx
    }

    /// Frame-px box of a cell.
    pub fn cell_box_frame(&self, cell: usize) -> BoxPx {
        let sx = self.stride_glance_px * self.frame_per_glance_x;
        let sy = self.stride_glance_px * self.frame_per_glance_y;
        let cx = (cell % self.map_width.max(1)) as f32;
        let cy = (cell / self.map_width.max(1)) as f32;
        BoxPx::new(cx * sx, cy * sy, (cx + 1.0) * sx, (cy + 1.0) * sy)
    }

    /// A side in glance px as frame px (the mean of the two axes' scales: signs are square).
    pub fn side_frame_from_glance(&self, side_glance_px: f32) -> f32 {
        side_glance_px * 0.5 * (self.frame_per_glance_x + self.frame_per_glance_y)
    }

    /// A square of side `side_frame_px` centred at `(x, y)`, shifted (not cut) to lie inside the frame.
    pub fn square_in_frame(&self, x_frame_px: f32, y_frame_px: f32, side_frame_px: f32) -> BoxPx {
        square_in_frame(
            x_frame_px,
            y_frame_px,
            side_frame_px,
            self.frame_width_px,
            self.frame_height_px,
        )
    }
}

/// A part of the frame, as a test on cell centres (see [`GlanceGeometry::cells_in`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum CellArea {
    /// Centres inside the box, min edges included, max edges excluded.
    Box(BoxPx),
    /// Centres in the central half of a box: within a quarter of its width and height of its centre, edges
    /// included.
    CentralHalf {
        centre: (f32, f32),
        half_width: f32,
        half_height: f32,
    },
}

impl CellArea {
    /// The central half of `window`.
    pub fn central_half(window: &BoxPx) -> Self {
        CellArea::CentralHalf {
            centre: window.centre(),
            half_width: 0.25 * window.width(),
            half_height: 0.25 * window.height(),
        }
    }

    fn holds_x(&self, x: f32) -> bool {
        match self {
            CellArea::Box(b) => x >= b.xmin && x < b.xmax,
            CellArea::CentralHalf {
                centre, half_width, ..
            } => (x - centre.0).abs() <= *half_width,
        }
    }

    fn holds_y(&self, y: f32) -> bool {
        match self {
            CellArea::Box(b) => y >= b.ymin && y < b.ymax,
            CellArea::CentralHalf {
                centre,
                half_height,
                ..
            } => (y - centre.1).abs() <= *half_height,
        }
    }
}

/// The indices `first..=last` of `0..n` spanning every index `holds` accepts (empty when none does).
fn span(n: usize, holds: impl Fn(usize) -> bool) -> std::ops::Range<usize> {
    match (0..n).position(&holds) {
        None => 0..0,
        Some(first) => first..n - (0..n).rev().position(&holds).unwrap_or(0),
    }
}

/// A square of side `side` centred at `(cx, cy)`, shrunk to fit and shifted to lie inside `[0, w) × [0, h)`.
pub fn square_in_frame(cx: f32, cy: f32, side: f32, w: f32, h: f32) -> BoxPx {
    let side = if side.is_finite() { side } else { 1.0 };
    let side = side.clamp(1.0_f32.min(w.min(h)), w.min(h));
    let cx = if cx.is_finite() { cx } else { w * 0.5 };
    let cy = if cy.is_finite() { cy } else { h * 0.5 };
    let xmin = (cx - side * 0.5).clamp(0.0, w - side);
    let ymin = (cy - side * 0.5).clamp(0.0, h - side);
    BoxPx::new(xmin, ymin, xmin + side, ymin + side)
}

/// Intersection of a box with the frame.
pub fn clip_to_frame(b: BoxPx, w: f32, h: f32) -> BoxPx {
    BoxPx::new(
        b.xmin.clamp(0.0, w),
        b.ymin.clamp(0.0, h),
        b.xmax.clamp(0.0, w),
        b.ymax.clamp(0.0, h),
    )
}

/// The estimated sign side at a cell in frame px (0 when the map lacks the estimate).
pub fn object_side_at(glance: &GlanceMap, geometry: &GlanceGeometry, cell: usize) -> f32 {
    let side_glance = glance.box_side_glance_px.get(cell).copied().unwrap_or(0.0);
    if side_glance.is_finite() {
        geometry.side_frame_from_glance(side_glance.max(0.0))
    } else {
        0.0
    }
}

/// Sub-cell estimate of where the sign around `cell` is centred, in frame px: the centroid of the cell and its
/// 8 neighbours weighted by objectness², where the neighbours count only when at most `cell`'s objectness. A
/// sign sitting on a cell border lights both cells, so the centroid moves towards the border; a lone peak stays
/// at its cell centre. The glance map is 4·8 = 32 frame px per cell at 1280×960, too coarse for small signs.
pub fn refined_centre_frame(
    glance: &GlanceMap,
    geometry: &GlanceGeometry,
    cell: usize,
) -> (f32, f32) {
    let (w, h) = (glance.map_width, glance.map_height);
    let (cx, cy) = geometry.cell_centre_frame(cell);
    let peak = glance.objectness.get(cell).copied().unwrap_or(0.0);
    if w == 0 || h == 0 || !(peak.is_finite() && peak > 0.0) {
        return (cx, cy);
    }
    let (col, row) = ((cell % w) as isize, (cell / w) as isize);
    let sx = geometry.stride_glance_px * geometry.frame_per_glance_x;
    let sy = geometry.stride_glance_px * geometry.frame_per_glance_y;
    let (mut sum_w, mut sum_x, mut sum_y) = (0f32, 0f32, 0f32);
    for dy in -1isize..=1 {
        for dx in -1isize..=1 {
            let (c, r) = (col + dx, row + dy);
            if c < 0 || r < 0 || c >= w as isize || r >= h as isize {
                continue;
            }
            let p = glance
                .objectness
                .get(r as usize * w + c as usize)
                .copied()
                .unwrap_or(0.0);
            if !(p.is_finite() && p > 0.0) || p > peak {
                continue;
            }
            let weight = p * p;
            sum_w += weight;
            sum_x += weight * dx as f32;
            sum_y += weight * dy as f32;
        }
    }
    if sum_w <= 0.0 {
        return (cx, cy);
    }
    // Never more than half a cell away: the sign's centre is in this cell by the map's definition.
    let off_x = (sum_x / sum_w).clamp(-0.5, 0.5) * sx;
    let off_y = (sum_y / sum_w).clamp(-0.5, 0.5) * sy;
    (cx + off_x, cy + off_y)
}

/// The square patch for a cell: centred at the refined centre, sized from the glance size estimate × context,
/// inside the frame.
pub fn patch_for_cell(
    glance: &GlanceMap,
    geometry: &GlanceGeometry,
    cell: usize,
    config: &DetectConfig,
) -> (BoxPx, f32) {
    let object_side = object_side_at(glance, geometry, cell);
    let side = (object_side * config.context).max(config.min_patch_side_px);
    let (cx, cy) = if config.refine_centre {
        refined_centre_frame(glance, geometry, cell)
    } else {
        geometry.cell_centre_frame(cell)
    };
    (geometry.square_in_frame(cx, cy, side), object_side)
}

/// The box of a sign found in `region`: the region shrunk to the estimated sign side around its centre (never
/// larger than the region; the region itself when there is no estimate).
pub fn object_box(region: BoxPx, object_side_frame_px: f32) -> BoxPx {
    if object_side_frame_px.is_nan() || object_side_frame_px <= 0.0 {
        return region;
    }
    let (cx, cy) = region.centre();
    let half_w = 0.5 * object_side_frame_px.min(region.width());
    let half_h = 0.5 * object_side_frame_px.min(region.height());
    BoxPx::new(cx - half_w, cy - half_h, cx + half_w, cy + half_h)
}

/// A box given in the sides of the square (or any) `region` (0..1 spans it), in frame px.
pub fn frame_box_from_patch(region: &BoxPx, b: &[f32; 4]) -> BoxPx {
    let (w, h) = (region.width(), region.height());
    BoxPx::new(
        region.xmin + b[0] * w,
        region.ymin + b[1] * h,
        region.xmin + b[2] * w,
        region.ymin + b[3] * h,
    )
}
