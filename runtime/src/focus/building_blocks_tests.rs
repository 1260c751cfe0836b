//! Specifications of the focus building blocks: geometry, selection, verdicts and merging.

#![allow(clippy::unwrap_used)]

use super::classify::*;
use super::geometry::*;
use super::outcome::*;
use super::selection::*;
use super::*;
use proptest::prelude::*;
use saccade_models::{BACKGROUND_CLASS, NUM_CLASSES};

fn arb_box() -> impl Strategy<Value = BoxPx> {
    (0.0f32..200.0, 0.0f32..200.0, 1.0f32..80.0, 1.0f32..80.0)
        .prop_map(|(x, y, w, h)| BoxPx::new(x, y, x + w, y + h))
}

#[test]
fn nms_keeps_the_best_of_overlapping_boxes() {
    let boxes = [
        (BoxPx::new(0.0, 0.0, 10.0, 10.0), 0.5),
        (BoxPx::new(1.0, 1.0, 11.0, 11.0), 0.9),
        (BoxPx::new(50.0, 50.0, 60.0, 60.0), 0.2),
    ];
    assert_eq!(nms(&boxes, 0.5), vec![1, 2]);
    assert_eq!(nms(&boxes, 0.9), vec![1, 0, 2]);
    assert!(nms(&[], 0.5).is_empty());
}

#[test]
fn verdict_needs_sign_above_background_and_min_score() {
    let mut probs = vec![0.0f32; NUM_CLASSES];
    probs[14] = 0.6;
    probs[BACKGROUND_CLASS] = 0.4;
    let v = PatchVerdict::from_probs(&probs);
    assert_eq!(v.best_sign_class, 14);
    assert!(v.is_sign(0.5));
    assert!(!v.is_sign(0.7));
    probs[14] = 0.3;
    probs[BACKGROUND_CLASS] = 0.7;
    assert!(!PatchVerdict::from_probs(&probs).is_sign(0.1));
}

#[test]
fn square_is_shifted_into_the_frame_and_shrunk_if_too_big() {
    let b = square_in_frame(5.0, 95.0, 20.0, 100.0, 100.0);
    assert_eq!(b, BoxPx::new(0.0, 80.0, 20.0, 100.0));
    let b = square_in_frame(50.0, 20.0, 500.0, 100.0, 40.0);
    assert_eq!(b, BoxPx::new(30.0, 0.0, 70.0, 40.0));
}

fn map(objectness: Vec<f32>, w: usize, h: usize) -> GlanceMap {
    GlanceMap {
        map_width: w,
        map_height: h,
        stride_px: 8,
        box_side_glance_px: vec![4.0; w * h],
        objectness,
        feature: Vec::new(),
        class_probs: None,
    }
}

#[test]
fn refined_centre_moves_towards_a_lit_neighbour_and_stays_for_a_lone_peak() {
    let frame = Frame::from_rgb(0, 128, 96, vec![0; 128 * 96 * 3]).unwrap();
    // 4×3 map, 8 glance px per cell, glance 32×24 → 4 frame px per glance px, 32 frame px per cell.
    let mut obj = vec![0.0; 12];
    obj[5] = 0.9; // cell (1, 1): centre (48, 48)
    let lone = map(obj.clone(), 4, 3);
    let geometry = GlanceGeometry::new(&frame, &lone, (32, 24));
    assert_eq!(refined_centre_frame(&lone, &geometry, 5), (48.0, 48.0));
    // An equally lit right neighbour: half way to the border (weights 0.81 and 0.81 → +0.5 cell).
    obj[6] = 0.9;
    let pair = map(obj.clone(), 4, 3);
    let (x, y) = refined_centre_frame(&pair, &geometry, 5);
    assert!(
        (x - 64.0).abs() < 1e-4 && (y - 48.0).abs() < 1e-4,
        "{x} {y}"
    );
    // A brighter neighbour does not pull (it is its own peak); a dimmer one pulls less.
    obj[6] = 0.3;
    let dim = map(obj, 4, 3);
    let (x, _) = refined_centre_frame(&dim, &geometry, 5);
    assert!(x > 48.0 && x < 56.0, "{x}");
}

#[test]
fn object_box_shrinks_around_the_centre() {
    let b = object_box(BoxPx::new(10.0, 10.0, 50.0, 50.0), 20.0);
    assert_eq!(b, BoxPx::new(20.0, 20.0, 40.0, 40.0));
    assert_eq!(
        object_box(BoxPx::new(0.0, 0.0, 8.0, 8.0), 0.0),
        BoxPx::new(0.0, 0.0, 8.0, 8.0)
    );
}

#[test]
fn detections_of_one_sign_from_neighbouring_patches_merge() {
    let det = |x: f32, score: f32| Detection {
        class_id: 14,
        class_name: "stop",
        score,
        bbox: BoxPx::new(x, 100.0, x + 40.0, 140.0),
    };
    let merged = merge_detections(vec![det(100.0, 0.7), det(116.0, 0.9), det(300.0, 0.8)], 0.3);
    assert_eq!(merged.len(), 2);
    assert_eq!(merged[0].score, 0.9);
    assert_eq!(merged[1].score, 0.8);
    // Two signs side by side stay two.
    assert_eq!(
        merge_detections(vec![det(100.0, 0.7), det(141.0, 0.9)], 0.3).len(),
        2
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn nms_output_has_no_pair_above_its_threshold(
        boxes in proptest::collection::vec((arb_box(), 0.0f32..1.0), 0..30),
        iou in 0.05f32..0.95,
    ) {
        let kept = nms(&boxes, iou);
        for (a, &i) in kept.iter().enumerate() {
            for &j in &kept[a + 1..] {
                prop_assert!(boxes[i].0.iou(&boxes[j].0) <= iou);
            }
        }
        // Every dropped box overlaps a kept one with a score at least as high.
        for i in 0..boxes.len() {
            if !kept.contains(&i) {
                prop_assert!(kept.iter().any(|&k| boxes[k].0.iou(&boxes[i].0) > iou && boxes[k].1 >= boxes[i].1));
            }
        }
    }

    #[test]
    fn squares_always_lie_inside_the_frame(
        cx in -100.0f32..1500.0, cy in -100.0f32..1100.0, side in 0.0f32..2000.0,
        w in 16.0f32..1400.0, h in 16.0f32..1000.0,
    ) {
        let b = square_in_frame(cx, cy, side, w, h);
        prop_assert!(b.xmin >= 0.0 && b.ymin >= 0.0 && b.xmax <= w + 1e-3 && b.ymax <= h + 1e-3);
        prop_assert!(b.width() > 0.0 && b.height() > 0.0);
    }

    #[test]
    fn top_k_returns_at_most_k_non_overlapping(
        boxes in proptest::collection::vec((arb_box(), 0.0f32..1.0), 0..40),
        k in 0usize..10,
    ) {
        let cands: Vec<Candidate> = boxes.iter().map(|(b, s)| Candidate { region: *b, score: *s, object_side_frame_px: 0.0 }).collect();
        let chosen = top_k(&cands, k, 0.3);
        prop_assert!(chosen.len() <= k);
        for (a, c) in chosen.iter().enumerate() {
            for d in &chosen[a + 1..] {
                prop_assert!(c.region.iou(&d.region) <= 0.3);
            }
        }
    }

    #[test]
    fn the_cell_index_agrees_with_a_scan_of_every_cell(
        w in 1usize..24,
        h in 1usize..18,
        seed in 0u64..1000,
        x in -50.0f32..700.0,
        y in -50.0f32..500.0,
        side in 0.0f32..400.0,
    ) {
        let objectness: Vec<f32> = (0..w * h)
            .map(|i| (((i as u64 * 2654435761 + seed) % 97) as f32 / 97.0).min(0.9))
            .collect();
        let glance = map(objectness, w, h);
        let geometry = GlanceGeometry {
            frame_width_px: 640.0,
            frame_height_px: 480.0,
            frame_per_glance_x: 640.0 / (4 * w) as f32,
            frame_per_glance_y: 480.0 / (4 * h) as f32,
            stride_glance_px: 4.0,
            map_width: w,
            map_height: h,
        };
        let b = BoxPx::new(x, y, x + side, y + side * 0.8);
        let (cx, cy) = b.centre();
        let start = geometry.cell_at_frame(cx, cy);
        for area in [CellArea::Box(b), CellArea::central_half(&b)] {
            let scanned: Vec<usize> = (0..w * h)
                .filter(|&c| {
                    let (px, py) = geometry.cell_centre_frame(c);
                    match area {
                        CellArea::Box(b) => px >= b.xmin && px < b.xmax && py >= b.ymin && py < b.ymax,
                        CellArea::CentralHalf { .. } => {
                            (px - cx).abs() <= 0.25 * b.width() && (py - cy).abs() <= 0.25 * b.height()
                        }
                    }
                })
                .collect();
            let indexed: Vec<usize> = geometry.cells_in(area, w * h).collect();
            prop_assert_eq!(&indexed, &scanned);
            let mut best = (start, glance.objectness[start]);
            for &c in &scanned {
                if glance.objectness[c] > best.1 {
                    best = (c, glance.objectness[c]);
                }
            }
            prop_assert_eq!(geometry.best_cell_in(&glance, start, area), best);
        }
    }
}
