//! One glance-sized training image with its signs, and the per-cell targets the glance net learns from it.

use saccade_models::glancenet::GLANCE_STRIDE_PX;
use saccade_models::BACKGROUND_CLASS;

/// A sign in glance pixels; `class_id` None = no GTSRB class; `ignore` = an annotated non-sign (traffic light).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GlanceBox {
    pub xmin: f32,
    pub ymin: f32,
    pub xmax: f32,
    pub ymax: f32,
    pub class_id: Option<usize>,
    pub ignore: bool,
}

/// One glance-sized training or evaluation image: CHW u8 (memory: thousands are held at once).
#[derive(Debug, Clone)]
pub struct GlanceSample {
    pub chw_u8: Vec<u8>,
    pub boxes: Vec<GlanceBox>,
}

impl GlanceSample {
    pub(crate) fn from_chw_f32(chw: &[f32], boxes: Vec<GlanceBox>) -> Self {
        Self {
            chw_u8: chw
                .iter()
                .map(|v| (v * 255.0).round().clamp(0.0, 255.0) as u8)
                .collect(),
            boxes,
        }
    }

    pub(crate) fn chw_f32(&self) -> Vec<f32> {
        self.chw_u8.iter().map(|&v| v as f32 / 255.0).collect()
    }
}

/// Targets of one image on the `map_w × map_h` grid.
#[derive(Debug, Clone, PartialEq)]
pub struct GlanceTargets {
    /// 1 at centre cells, else 0.
    pub objectness: Vec<f32>,
    /// 1 where the objectness loss counts (0 next to a centre and on ignored boxes).
    pub weight: Vec<f32>,
    /// log2 of the sign side in glance px at centre cells, 0 elsewhere.
    pub log2_side: Vec<f32>,
    /// Class of the largest sign, background when none; `None` when the largest sign has no GTSRB class.
    pub class_id: Option<usize>,
}

/// Cell of a point in glance pixels, clamped to the grid.
pub(crate) fn cell_of(x: f32, y: f32, map_w: usize, map_h: usize) -> (usize, usize) {
    let cx = ((x / GLANCE_STRIDE_PX as f32).floor().max(0.0) as usize).min(map_w - 1);
    let cy = ((y / GLANCE_STRIDE_PX as f32).floor().max(0.0) as usize).min(map_h - 1);
    (cx, cy)
}

/// Builds the per-cell targets of one image.
pub fn glance_targets(boxes: &[GlanceBox], map_w: usize, map_h: usize) -> GlanceTargets {
    let cells = map_w * map_h;
    let mut objectness = vec![0f32; cells];
    let mut weight = vec![1f32; cells];
    let mut log2_side = vec![0f32; cells];
    for b in boxes.iter().filter(|b| b.ignore) {
        let (x0, y0) = cell_of(b.xmin, b.ymin, map_w, map_h);
        let (x1, y1) = cell_of(b.xmax, b.ymax, map_w, map_h);
        for y in y0..=y1 {
            for x in x0..=x1 {
                weight[y * map_w + x] = 0.0;
            }
        }
    }
    let signs: Vec<&GlanceBox> = boxes.iter().filter(|b| !b.ignore).collect();
    // Neighbours first, so a centre that is also another sign's neighbour keeps its positive weight.
    for b in &signs {
        let (cx, cy) = cell_of(
            (b.xmin + b.xmax) / 2.0,
            (b.ymin + b.ymax) / 2.0,
            map_w,
            map_h,
        );
        for y in cy.saturating_sub(1)..=(cy + 1).min(map_h - 1) {
            for x in cx.saturating_sub(1)..=(cx + 1).min(map_w - 1) {
                if objectness[y * map_w + x] == 0.0 {
                    weight[y * map_w + x] = 0.0;
                }
            }
        }
    }
    for b in &signs {
        let (cx, cy) = cell_of(
            (b.xmin + b.xmax) / 2.0,
            (b.ymin + b.ymax) / 2.0,
            map_w,
            map_h,
        );
        let i = cy * map_w + cx;
        let side = (b.xmax - b.xmin).max(b.ymax - b.ymin).max(1.0);
        // Two signs in one cell: the larger one sets the size (it is the one a patch should frame).
        if objectness[i] == 0.0 || side.log2() > log2_side[i] {
            log2_side[i] = side.log2();
        }
        objectness[i] = 1.0;
        weight[i] = 1.0;
    }
    let largest = signs.iter().max_by(|a, b| {
        let area = |g: &&&GlanceBox| (g.xmax - g.xmin) * (g.ymax - g.ymin);
        area(a).total_cmp(&area(b))
    });
    let class_id = match largest {
        None => Some(BACKGROUND_CLASS),
        Some(b) => b.class_id,
    };
    GlanceTargets {
        objectness,
        weight,
        log2_side,
        class_id,
    }
}
