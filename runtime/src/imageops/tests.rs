//! Specifications of the image operations: resizes against references, crops, area averaging and the CHW conversions.

#![allow(clippy::unwrap_used)]

use super::*;
use proptest::prelude::*;

/// The fractional shrink as it was first written: per output pixel, per footprint row, the weighted
/// row sum (the reference the vertical-first version must equal bit for bit).
#[allow(clippy::too_many_arguments)]
fn area_shrink_fractional_per_pixel(
    src: &[u8],
    sw: usize,
    sh: usize,
    dst: &mut [u8],
    dw: usize,
    dh: usize,
    scale_x: f32,
    scale_y: f32,
) {
    let half = 1u64 << (2 * FIXED_ONE_BITS - 1);
    {
        let mut columns: Vec<Footprint> = Vec::new();
        columns.extend((0..dw).map(|u| Footprint::new(u, scale_x, sw)));
        for (v, out_row) in dst.chunks_exact_mut(dw * 3).take(dh).enumerate() {
            let fy = Footprint::new(v, scale_y, sh);
            for (fx, out) in columns.iter().zip(out_row.chunks_exact_mut(3)) {
                let mut acc = [0u64; 3];
                for (ty, &wy) in fy.weights[..fy.len].iter().enumerate() {
                    let start = ((fy.first + ty) * sw + fx.first) * 3;
                    let pixels = &src[start..start + fx.len * 3];
                    let mut row = [0u32; 3];
                    for (&wx, px) in fx.weights[..fx.len].iter().zip(pixels.chunks_exact(3)) {
                        row[0] += wx * u32::from(px[0]);
                        row[1] += wx * u32::from(px[1]);
                        row[2] += wx * u32::from(px[2]);
                    }
                    for c in 0..3 {
                        acc[c] += u64::from(wy) * u64::from(row[c]);
                    }
                }
                for c in 0..3 {
                    out[c] = ((acc[c] + half) >> (2 * FIXED_ONE_BITS)).min(255) as u8;
                }
            }
        }
    }
}

fn pattern(w: usize, h: usize, seed: u32) -> Vec<u8> {
    (0..w * h * 3)
        .map(|i| ((i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 13) as u8)
        .collect()
}

/// Naive reference: per-pixel exact box filter with f64 and explicit loops over every source pixel.
fn naive_area(src: &[u8], sw: usize, sh: usize, dw: usize, dh: usize) -> Vec<f64> {
    let sx = sw as f64 / dw as f64;
    let sy = sh as f64 / dh as f64;
    let mut out = vec![0.0; dw * dh * 3];
    for v in 0..dh {
        for u in 0..dw {
            let (x0, x1) = (u as f64 * sx, (u + 1) as f64 * sx);
            let (y0, y1) = (v as f64 * sy, (v + 1) as f64 * sy);
            let mut acc = [0.0f64; 3];
            let mut tot = 0.0;
            for j in 0..sh {
                let wy = ((j + 1) as f64).min(y1) - (j as f64).max(y0);
                if wy <= 0.0 {
                    continue;
                }
                for i in 0..sw {
                    let wx = ((i + 1) as f64).min(x1) - (i as f64).max(x0);
                    if wx <= 0.0 {
                        continue;
                    }
                    for c in 0..3 {
                        acc[c] += wx * wy * src[(j * sw + i) * 3 + c] as f64;
                    }
                    tot += wx * wy;
                }
            }
            for c in 0..3 {
                out[(v * dw + u) * 3 + c] = acc[c] / tot;
            }
        }
    }
    out
}

/// Naive reference bilinear with half-pixel centres.
fn naive_bilinear(src: &[u8], sw: usize, sh: usize, dw: usize, dh: usize) -> Vec<f64> {
    let mut out = vec![0.0; dw * dh * 3];
    for v in 0..dh {
        for u in 0..dw {
            let x = ((u as f64 + 0.5) * sw as f64 / dw as f64 - 0.5).clamp(0.0, (sw - 1) as f64);
            let y = ((v as f64 + 0.5) * sh as f64 / dh as f64 - 0.5).clamp(0.0, (sh - 1) as f64);
            let (xi, yi) = (x.floor() as usize, y.floor() as usize);
            let (xj, yj) = ((xi + 1).min(sw - 1), (yi + 1).min(sh - 1));
            let (fx, fy) = (x - xi as f64, y - yi as f64);
            for c in 0..3 {
                let p = |xx: usize, yy: usize| src[(yy * sw + xx) * 3 + c] as f64;
                out[(v * dw + u) * 3 + c] = p(xi, yi) * (1.0 - fx) * (1.0 - fy)
                    + p(xj, yi) * fx * (1.0 - fy)
                    + p(xi, yj) * (1.0 - fx) * fy
                    + p(xj, yj) * fx * fy;
            }
        }
    }
    out
}

#[test]
fn shrinking_4x_matches_naive_box_filter() {
    let (sw, sh, dw, dh) = (64, 48, 16, 12);
    let src = pattern(sw, sh, 7);
    let mut dst = vec![0u8; dw * dh * 3];
    resize_rgb_bilinear(&src, sw, sh, &mut dst, dw, dh).unwrap();
    let reference = naive_area(&src, sw, sh, dw, dh);
    for (a, b) in dst.iter().zip(&reference) {
        assert!((*a as f64 - b).abs() <= 0.51, "{a} vs {b}");
    }
}

#[test]
fn non_integer_shrink_matches_naive_box_filter() {
    let (sw, sh, dw, dh) = (50, 37, 11, 9);
    let src = pattern(sw, sh, 3);
    let mut dst = vec![0u8; dw * dh * 3];
    resize_rgb_bilinear(&src, sw, sh, &mut dst, dw, dh).unwrap();
    let reference = naive_area(&src, sw, sh, dw, dh);
    for (a, b) in dst.iter().zip(&reference) {
        assert!((*a as f64 - b).abs() <= 0.51, "{a} vs {b}");
    }
}

#[test]
fn mild_resize_matches_naive_bilinear() {
    for (sw, sh, dw, dh) in [(20, 15, 31, 22), (40, 30, 25, 20), (9, 9, 9, 9)] {
        let src = pattern(sw, sh, 11);
        let mut dst = vec![0u8; dw * dh * 3];
        resize_rgb_bilinear(&src, sw, sh, &mut dst, dw, dh).unwrap();
        let reference = naive_bilinear(&src, sw, sh, dw, dh);
        for (a, b) in dst.iter().zip(&reference) {
            assert!((*a as f64 - b).abs() <= 0.51, "{a} vs {b}");
        }
    }
}

#[test]
fn a_small_sign_survives_a_4x_shrink() {
    // A 6 px red square on grey: bilinear at 4× could skip it; area averaging keeps its mass.
    let (sw, sh) = (80, 80);
    let mut src = vec![100u8; sw * sh * 3];
    for y in 37..43 {
        for x in 41..47 {
            let p = (y * sw + x) * 3;
            src[p..p + 3].copy_from_slice(&[255, 0, 0]);
        }
    }
    let mut dst = vec![0u8; 20 * 20 * 3];
    resize_rgb_bilinear(&src, sw, sh, &mut dst, 20, 20).unwrap();
    let red_mass: f64 = dst
        .chunks_exact(3)
        .map(|p| (p[0] as f64 - p[1] as f64).max(0.0))
        .sum::<f64>()
        * 16.0;
    let expected = 36.0 * 255.0;
    assert!(
        (red_mass - expected).abs() < 0.05 * expected,
        "{red_mass} vs {expected}"
    );
}

#[test]
fn wrong_buffer_sizes_are_errors_not_panics() {
    let src = vec![0u8; 10 * 10 * 3];
    let mut dst = vec![0u8; 5 * 5 * 3 - 1];
    let err = resize_rgb_bilinear(&src, 10, 10, &mut dst, 5, 5).unwrap_err();
    assert_eq!(
        err.to_string(),
        "resize destination buffer for 5×5 has 74 elements, expected 75"
    );
    let mut out = vec![0.0f32; 3 * 4 * 4];
    assert!(matches!(
        crop_resize_rgb_chw(&src, 10, 10, BoxPx::new(3.0, 3.0, 3.0, 8.0), 4, &mut out),
        Err(ImageOpsError::BadRegion { .. })
    ));
    assert!(matches!(
        crop_resize_rgb_chw(
            &src,
            10,
            10,
            BoxPx::new(f32::NAN, 3.0, 5.0, 8.0),
            4,
            &mut out
        ),
        Err(ImageOpsError::BadRegion { .. })
    ));
    assert!(matches!(
        rgb_to_chw_f32(&src, 0, 10, &mut out),
        Err(ImageOpsError::ZeroSize { .. })
    ));
}

#[test]
fn samplers_on_short_buffers_return_black_instead_of_panicking() {
    assert_eq!(sample_bilinear_rgb(&[1, 2], 4, 4, 1.0, 1.0), [0.0; 3]);
    assert_eq!(sample_bilinear_rgb(&[], 0, 0, 1.0, 1.0), [0.0; 3]);
    assert_eq!(sample_bilinear_plane(&[1.0], 2, 2, 0.5, 0.5), 0.0);
    assert_eq!(
        area_average_rgb(&[9; 3], 2, 1, 0.0, 2.0, 0.0, 1.0),
        [0.0; 3]
    );
}

#[test]
fn chw_planes_hold_the_channels() {
    let rgb = [255u8, 0, 51, 0, 102, 255];
    let mut out = [0.0f32; 6];
    rgb_to_chw_f32(&rgb, 2, 1, &mut out).unwrap();
    let expected = [1.0, 0.0, 0.0, 0.4, 0.2, 1.0];
    for (a, b) in out.iter().zip(expected) {
        assert!((a - b).abs() < 1e-6);
    }
}

#[test]
fn crop_past_the_edge_repeats_edge_pixels() {
    // Left half black, right half white; a crop entirely right of the frame is all white.
    let (w, h) = (8, 4);
    let mut rgb = vec![0u8; w * h * 3];
    for y in 0..h {
        for x in 4..w {
            let p = (y * w + x) * 3;
            rgb[p..p + 3].copy_from_slice(&[255, 255, 255]);
        }
    }
    let mut out = vec![0.0f32; 3 * 4 * 4];
    crop_resize_rgb_chw(&rgb, w, h, BoxPx::new(10.0, -5.0, 30.0, 15.0), 4, &mut out).unwrap();
    assert!(out.iter().all(|v| (*v - 1.0).abs() < 1e-6));
    crop_resize_rgb_chw(&rgb, w, h, BoxPx::new(-20.0, -5.0, -2.0, 15.0), 4, &mut out).unwrap();
    assert!(out.iter().all(|v| v.abs() < 1e-6));
}

#[test]
fn identity_crop_copies_pixels() {
    let (w, h) = (12, 10);
    let rgb = pattern(w, h, 5);
    let mut out = vec![0.0f32; 3 * 6 * 6];
    crop_resize_rgb_chw(&rgb, w, h, BoxPx::new(3.0, 2.0, 9.0, 8.0), 6, &mut out).unwrap();
    for v in 0..6 {
        for u in 0..6 {
            for c in 0..3 {
                let expected = rgb[((v + 2) * w + u + 3) * 3 + c] as f32 / 255.0;
                assert!((out[c * 36 + v * 6 + u] - expected).abs() < 1e-5);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn fractional_area_shrink_matches_the_per_pixel_area_average(
        sw in 8usize..160, sh in 8usize..120, shrink_x in 2.0f32..6.9, shrink_y in 1.0f32..6.9,
        seed in any::<u32>(),
    ) {
        let dw = ((sw as f32 / shrink_x) as usize).max(1);
        let dh = ((sh as f32 / shrink_y) as usize).max(1);
        let (scale_x, scale_y) = (sw as f32 / dw as f32, sh as f32 / dh as f32);
        prop_assume!(scale_x.max(scale_y) >= AREA_SCALE_THRESHOLD);
        prop_assume!(scale_x.max(scale_y) <= (FAST_AREA_TAPS - 1) as f32);
        let src = pattern(sw, sh, seed);
        let mut fast = vec![0u8; dw * dh * 3];
        area_shrink_fractional(&src, sw, sh, &mut fast, dw, dh, scale_x, scale_y);
        for v in 0..dh {
            for u in 0..dw {
                let p = resample_pixel(&src, sw, sh, 0.0, 0.0, scale_x, scale_y, true, u, v);
                for c in 0..3 {
                    let a = fast[(v * dw + u) * 3 + c];
                    let b = p[c].round().clamp(0.0, 255.0) as u8;
                    prop_assert!(a.abs_diff(b) <= 1, "({u}, {v}) channel {c}: {a} vs {b}");
                }
            }
        }
    }

    #[test]
    fn vertical_first_shrink_is_identical_to_the_per_pixel_integer_sums(
        sw in 8usize..200, sh in 8usize..120, shrink_x in 2.0f32..6.9, shrink_y in 1.0f32..6.9,
        seed in any::<u32>(),
    ) {
        let dw = ((sw as f32 / shrink_x) as usize).max(1);
        let dh = ((sh as f32 / shrink_y) as usize).max(1);
        let (scale_x, scale_y) = (sw as f32 / dw as f32, sh as f32 / dh as f32);
        prop_assume!(scale_x.max(scale_y) <= (FAST_AREA_TAPS - 1) as f32);
        let src = pattern(sw, sh, seed);
        let mut fast = vec![0u8; dw * dh * 3];
        area_shrink_fractional(&src, sw, sh, &mut fast, dw, dh, scale_x, scale_y);
        let mut reference = vec![0u8; dw * dh * 3];
        area_shrink_fractional_per_pixel(&src, sw, sh, &mut reference, dw, dh, scale_x, scale_y);
        prop_assert_eq!(fast, reference);
    }

    #[test]
    fn area_crop_matches_the_per_pixel_area_average(
        x0 in -40.0f32..300.0, y0 in -40.0f32..200.0, side in 40.0f32..400.0, aspect in 0.5f32..2.0,
        out_side in 4usize..40, seed in any::<u32>(),
    ) {
        let (w, h) = (320usize, 240usize);
        let src = pattern(w, h, seed);
        let region = BoxPx::new(x0, y0, x0 + side, y0 + side * aspect);
        let (sx, sy) = (region.width() / out_side as f32, region.height() / out_side as f32);
        prop_assume!(sx.max(sy) >= AREA_SCALE_THRESHOLD);
        let mut fast = vec![0f32; 3 * out_side * out_side];
        crop_resize_rgb_chw(&src, w, h, region, out_side, &mut fast).unwrap();
        let plane = out_side * out_side;
        for v in 0..out_side {
            for u in 0..out_side {
                let p = resample_pixel(&src, w, h, region.xmin, region.ymin, sx, sy, true, u, v);
                for c in 0..3 {
                    let a = fast[c * plane + v * out_side + u];
                    prop_assert!((a - p[c] / 255.0).abs() < 1e-4, "({u}, {v}) channel {c}: {a} vs {}", p[c] / 255.0);
                }
            }
        }
    }

    #[test]
    fn integer_box_shrink_matches_the_general_area_path(
        dw in 1usize..20, dh in 1usize..20, fx in 1usize..6, fy in 2usize..6, seed in any::<u32>(),
    ) {
        let (sw, sh) = (dw * fx, dh * fy);
        let src = pattern(sw, sh, seed);
        let mut fast = vec![0u8; dw * dh * 3];
        box_shrink_integer(&src, sw, &mut fast, dw, dh, fx, fy);
        let reference = naive_area(&src, sw, sh, dw, dh);
        for (a, b) in fast.iter().zip(&reference) {
            prop_assert!((*a as f64 - b).abs() <= 0.5 + 1e-9, "{} vs {}", a, b);
        }
    }

    #[test]
    fn resize_of_a_constant_image_stays_constant(
        sw in 1usize..40, sh in 1usize..40, dw in 1usize..40, dh in 1usize..40,
        r in any::<u8>(), g in any::<u8>(), b in any::<u8>(),
    ) {
        let src: Vec<u8> = (0..sw * sh).flat_map(|_| [r, g, b]).collect();
        let mut dst = vec![0u8; dw * dh * 3];
        resize_rgb_bilinear(&src, sw, sh, &mut dst, dw, dh).unwrap();
        for px in dst.chunks_exact(3) {
            prop_assert_eq!(px, &[r, g, b][..]);
        }
    }

    #[test]
    fn crop_writes_exactly_three_side_squared_floats_in_range(
        w in 1usize..30, h in 1usize..30, side in 1usize..20,
        x0 in -40.0f32..40.0, y0 in -40.0f32..40.0, bw in 0.5f32..60.0, bh in 0.5f32..60.0,
    ) {
        let rgb = pattern(w, h, 1);
        // One guard float after the patch must stay untouched.
        let mut out = vec![-1.0f32; 3 * side * side + 1];
        let n = 3 * side * side;
        crop_resize_rgb_chw(&rgb, w, h, BoxPx::new(x0, y0, x0 + bw, y0 + bh), side, &mut out[..n]).unwrap();
        prop_assert!(out[..n].iter().all(|v| (0.0..=1.0).contains(v)));
        prop_assert_eq!(out[n], -1.0);
    }

    #[test]
    fn crop_of_the_whole_frame_equals_resize(
        w in 1usize..48, h in 1usize..48, side in 1usize..32, seed in any::<u32>(),
    ) {
        let rgb = pattern(w, h, seed);
        let frame = Frame::from_rgb(0, w as u32, h as u32, rgb.clone()).unwrap();
        let mut crop = vec![0.0f32; 3 * side * side];
        crop_resize_chw(&frame, BoxPx::new(0.0, 0.0, w as f32, h as f32), side, &mut crop).unwrap();
        let mut small = vec![0u8; side * side * 3];
        resize_rgb_bilinear(&rgb, w, h, &mut small, side, side).unwrap();
        let mut chw = vec![0.0f32; 3 * side * side];
        rgb_to_chw_f32(&small, side, side, &mut chw).unwrap();
        for (a, b) in crop.iter().zip(&chw) {
            // The resize rounds to u8: half a level of difference at most.
            prop_assert!((a - b).abs() <= 0.5 / 255.0 + 1e-5, "{} vs {}", a, b);
        }
    }

    #[test]
    fn bilinear_sample_stays_within_neighbour_range(
        w in 1usize..20, h in 1usize..20, x in -5.0f32..25.0, y in -5.0f32..25.0, seed in any::<u32>(),
    ) {
        let rgb = pattern(w, h, seed);
        let s = sample_bilinear_rgb(&rgb, w, h, x, y);
        prop_assert!(s.iter().all(|v| (0.0..=255.0).contains(v)));
        let plane: Vec<f32> = rgb.iter().step_by(3).map(|v| *v as f32).collect();
        let p = sample_bilinear_plane(&plane, w, h, x, y);
        prop_assert!((p - s[0]).abs() < 1e-3);
    }
}
