//! `coarse2fine`: the coarse pass is the glance; its objectness is the attention map. Cells above a threshold
//! are grouped into 4-connected components; each component (best first) becomes a frame region — the cells'
//! box grown by half the estimated sign side plus a margin — and the fine pass cuts that region at full
//! resolution in backbone-sized windows (a few per region, sized from the sign estimate), all regions' windows
//! classified as one batch.

use saccade_models::GlanceMap;

use super::classify::PatchBatcher;
use super::detect_config::DetectConfig;
use super::exit::{nothing_salient_into, open_frame, Opened};
use super::geometry::{object_side_at, refined_centre_frame, CellArea, GlanceGeometry};
use super::outcome::examine_in_one_batch;
use super::selection::Candidate;
use super::{FocusInput, FocusOutcome, FocusResult, FocusStrategy};
use crate::frame::BoxPx;

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Coarse2FineConfig {
    /// Cells at or above this objectness belong to an informative region.
    pub threshold: f32,
    /// Extra margin around a region, as a fraction of the estimated sign side.
    pub margin_fraction: f32,
    /// Most regions examined per frame (the best first).
    pub max_regions: usize,
    /// Most windows per region.
    pub max_windows_per_region: usize,
    #[serde(flatten)]
    pub detect: DetectConfig,
}

impl Default for Coarse2FineConfig {
    fn default() -> Self {
        Self {
            threshold: 0.3,
            margin_fraction: 0.25,
            max_regions: 4,
            max_windows_per_region: 3,
            detect: DetectConfig::default(),
        }
    }
}

/// An informative region of the attention map.
#[derive(Debug, Clone, PartialEq)]
pub struct Region {
    /// Frame-px box, inside the frame.
    pub bbox: BoxPx,
    /// Best objectness of its cells.
    pub score: f32,
    /// Largest sign-side estimate among its cells, frame px.
    pub object_side_frame_px: f32,
    /// The cell of highest objectness.
    pub peak_cell: usize,
}

/// 4-connected components of the cells at or above `threshold`, each as (cells, best score).
pub fn components(glance: &GlanceMap, threshold: f32) -> Vec<(Vec<usize>, f32)> {
    let mut scratch = Scratch::default();
    components_into(glance, threshold, &mut scratch);
    scratch
        .components
        .iter()
        .map(|(cells, best)| (scratch.members[cells.clone()].to_vec(), *best))
        .collect()
}

/// The per-frame lists of [`Coarse2Fine`], kept for their capacity.
#[derive(Debug, Default)]
struct Scratch {
    /// Cells already in a component.
    label: Vec<bool>,
    stack: Vec<usize>,
    /// The cells of every component, one after the other.
    members: Vec<usize>,
    /// Each component: its cells in `members` and its best score.
    components: Vec<(std::ops::Range<usize>, f32)>,
    regions: Vec<Region>,
    /// The windows of one region, before ranking.
    all: Vec<Candidate>,
}

/// [`components`] into `scratch.components` (cells in `scratch.members`).
fn components_into(glance: &GlanceMap, threshold: f32, scratch: &mut Scratch) {
    let (w, h) = (glance.map_width, glance.map_height);
    let cells = (w * h).min(glance.objectness.len());
    let Scratch {
        label,
        stack,
        members,
        components,
        ..
    } = scratch;
    label.clear();
    label.resize(cells, false);
    stack.clear();
    members.clear();
    components.clear();
    for start in 0..cells {
        // NaN objectness is never informative.
        if label[start] || glance.objectness[start].is_nan() || glance.objectness[start] < threshold
        {
            continue;
        }
        label[start] = true;
        stack.push(start);
        let first = members.len();
        let mut best = f32::MIN;
        while let Some(c) = stack.pop() {
            members.push(c);
            best = best.max(glance.objectness[c]);
            let (x, y) = (c % w, c / w);
            let mut push = |n: usize| {
                if n < cells && !label[n] && glance.objectness[n] >= threshold {
                    label[n] = true;
                    stack.push(n);
                }
            };
            if x > 0 {
                push(c - 1);
            }
            if x + 1 < w {
                push(c + 1);
            }
            if y > 0 {
                push(c - w);
            }
            if y + 1 < h {
                push(c + w);
            }
        }
        components.push((first..members.len(), best));
    }
}

/// The informative regions of a glance, best first, mapped to frame px with their margin and clipped.
pub fn regions(
    glance: &GlanceMap,
    geometry: &GlanceGeometry,
    config: &Coarse2FineConfig,
) -> Vec<Region> {
    let mut scratch = Scratch::default();
    regions_into(glance, geometry, config, &mut scratch);
    scratch.regions
}

/// [`regions`] into `scratch.regions`.
fn regions_into(
    glance: &GlanceMap,
    geometry: &GlanceGeometry,
    config: &Coarse2FineConfig,
    scratch: &mut Scratch,
) {
    components_into(glance, config.threshold, scratch);
    let Scratch {
        members,
        components,
        regions,
        ..
    } = scratch;
    regions.clear();
    regions.extend(components.iter().map(|(cells, score)| {
        let cells = &members[cells.clone()];
        let mut b = BoxPx::new(f32::MAX, f32::MAX, f32::MIN, f32::MIN);
        let mut side = 0.0f32;
        let mut peak_cell = cells.first().copied().unwrap_or(0);
        for &c in cells {
            if glance.objectness[c] > glance.objectness[peak_cell] {
                peak_cell = c;
            }
            let cb = geometry.cell_box_frame(c);
            b.xmin = b.xmin.min(cb.xmin);
            b.ymin = b.ymin.min(cb.ymin);
            b.xmax = b.xmax.max(cb.xmax);
            b.ymax = b.ymax.max(cb.ymax);
            side = side.max(object_side_at(glance, geometry, c));
        }
        let grow = side * (0.5 + config.margin_fraction);
        let bbox = super::geometry::clip_to_frame(
            BoxPx::new(b.xmin - grow, b.ymin - grow, b.xmax + grow, b.ymax + grow),
            geometry.frame_width_px,
            geometry.frame_height_px,
        );
        Region {
            bbox,
            score: *score,
            object_side_frame_px: side,
            peak_cell,
        }
    }));
    regions.sort_by(|a, b| b.score.total_cmp(&a.score));
    regions.truncate(config.max_regions);
}

/// The best objectness among cells whose centre lies in the central half of `window` (0 if none).
fn window_score(glance: &GlanceMap, geometry: &GlanceGeometry, window: &BoxPx) -> f32 {
    let (cx, cy) = window.centre();
    let start = geometry.cell_at_frame(cx, cy);
    geometry
        .best_cell_in(glance, start, CellArea::central_half(window))
        .1
}

/// Windows for one region, best first: one centred on the region's peak cell, then a covering grid at half-window
/// stride ranked by the objectness under each window's centre, without near-duplicates (IoU > 0.5), at most
/// `max_windows_per_region`, all inside the frame; appended to `out` (`all`: scratch for the unranked windows).
fn windows_for(
    glance: &GlanceMap,
    region: &Region,
    geometry: &GlanceGeometry,
    config: &Coarse2FineConfig,
    all: &mut Vec<Candidate>,
    out: &mut Vec<Candidate>,
) {
    let d = &config.detect;
    let side = (region.object_side_frame_px * d.context).max(d.min_patch_side_px);
    let b = region.bbox;
    let (px, py) = if d.refine_centre {
        refined_centre_frame(glance, geometry, region.peak_cell)
    } else {
        geometry.cell_centre_frame(region.peak_cell)
    };
    all.clear();
    all.push(Candidate {
        region: geometry.square_in_frame(px, py, side),
        score: region.score,
        object_side_frame_px: region.object_side_frame_px,
    });
    let stride = 0.5 * side;
    let steps = |len: f32| ((len - side).max(0.0) / stride).ceil() as usize + 1;
    let (nx, ny) = (steps(b.width()), steps(b.height()));
    for j in 0..ny {
        for i in 0..nx {
            let cx =
                (b.xmin + 0.5 * side + i as f32 * stride).min(b.xmax - 0.5 * side.min(b.width()));
            let cy =
                (b.ymin + 0.5 * side + j as f32 * stride).min(b.ymax - 0.5 * side.min(b.height()));
            let window = geometry.square_in_frame(cx, cy, side);
            all.push(Candidate {
                region: window,
                score: window_score(glance, geometry, &window).min(region.score),
                object_side_frame_px: region.object_side_frame_px,
            });
        }
    }
    // The peak window first (stable sort keeps it ahead of grid windows of equal score).
    all[1..].sort_by(|a, b| b.score.total_cmp(&a.score));
    let first = out.len();
    for &c in all.iter() {
        if out.len() - first >= config.max_windows_per_region.max(1) {
            break;
        }
        if c.score >= config.threshold
            && out[first..].iter().all(|o| o.region.iou(&c.region) <= 0.5)
        {
            out.push(c);
        }
    }
}

/// The configured strategy and its per-frame scratch (empty until the first frame).
#[derive(Default)]
pub struct Coarse2Fine {
    config: Coarse2FineConfig,
    batcher: PatchBatcher,
    /// The windows of a frame, kept for their capacity.
    windows: Vec<Candidate>,
    scratch: Scratch,
}

impl Coarse2Fine {
    pub fn new(config: Coarse2FineConfig) -> Self {
        Self {
            config,
            ..Self::default()
        }
    }
}

impl FocusStrategy for Coarse2Fine {
    fn name(&self) -> &'static str {
        "coarse2fine"
    }

    fn focus_into(&mut self, input: &FocusInput<'_>, out: &mut FocusOutcome) -> FocusResult {
        let detect = &self.config.detect;
        let glance = input.glance;
        let Some(Opened { clock, geometry }) = open_frame(input, detect) else {
            nothing_salient_into(out);
            return Ok(());
        };
        let windows = &mut self.windows;
        windows.clear();
        regions_into(glance, &geometry, &self.config, &mut self.scratch);
        for region in &self.scratch.regions {
            windows_for(
                glance,
                region,
                &geometry,
                &self.config,
                &mut self.scratch.all,
                windows,
            );
        }
        let budget_cut = windows.len() > input.budget.max_patches;
        windows.truncate(input.budget.max_patches);
        examine_in_one_batch(
            &mut self.batcher,
            "coarse2fine",
            input,
            detect,
            &clock,
            windows,
            budget_cut,
            out,
        )
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::focus::testutil::*;
    use crate::focus::ExitReason;
    use proptest::prelude::*;

    #[test]
    fn components_split_separate_blobs() {
        let mut g = GlanceMap {
            map_width: 5,
            map_height: 4,
            stride_px: 4,
            objectness: vec![0.0; 20],
            box_side_glance_px: vec![4.0; 20],
            ..GlanceMap::default()
        };
        for c in [0, 1, 5, 13, 14, 19] {
            g.objectness[c] = 0.9;
        }
        g.objectness[19] = 0.95;
        let mut comps = components(&g, 0.5);
        comps.iter_mut().for_each(|c| c.0.sort());
        assert_eq!(comps.len(), 2);
        assert_eq!(comps[0].0, vec![0, 1, 5]);
        assert_eq!(comps[1].0, vec![13, 14, 19]);
        assert_eq!(comps[1].1, 0.95);
    }

    #[test]
    fn coarse2fine_finds_two_red_squares() {
        let frame = frame_with_squares(640, 480, &[(300, 200, 40), (50, 380, 48)]);
        let glance = redness_glance(&frame, (160, 120), 4, 44.0);
        let classifier = RednessClassifier::new(32);
        let out = Coarse2Fine::new(Coarse2FineConfig::default())
            .focus(&input(&frame, &glance, (160, 120), &classifier, 16))
            .unwrap();
        assert!(
            found(
                &out,
                BoxPx::new(300.0, 200.0, 340.0, 240.0),
                STOP_CLASS,
                0.5
            ),
            "{out:?}"
        );
        assert!(
            found(&out, BoxPx::new(50.0, 380.0, 98.0, 428.0), STOP_CLASS, 0.5),
            "{out:?}"
        );
        assert_eq!(
            classifier.calls.load(std::sync::atomic::Ordering::SeqCst),
            1
        );
        assert_eq!(out.exit, Some(ExitReason::MaxSteps));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        #[test]
        fn coarse2fine_boxes_lie_in_frame_coordinates(
            squares in proptest::collection::vec((0u32..620, 0u32..460, 8u32..140), 0..4),
            max_patches in 0usize..12,
        ) {
            let frame = frame_with_squares(640, 480, &squares);
            let glance = redness_glance(&frame, (160, 120), 8, 60.0);
            let classifier = RednessClassifier::new(16);
            let out = Coarse2Fine::new(Coarse2FineConfig::default())
                .focus(&input(&frame, &glance, (160, 120), &classifier, max_patches))
                .unwrap();
            prop_assert!(out.patches.len() <= max_patches);
            let inside = |b: &BoxPx| b.xmin >= 0.0 && b.ymin >= 0.0 && b.xmax <= 640.0 && b.ymax <= 480.0;
            prop_assert!(out.patches.iter().all(|p| inside(&p.bbox)));
            prop_assert!(out.detections.iter().all(|d| inside(&d.bbox)));
        }
    }
}
