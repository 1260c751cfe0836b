//! Image operations shared by the stages: the glance input (whole frame shrunk with area averaging so small
//! signs do not alias away), crop-and-resize of frame regions into CHW f32 patches for the backbone, and the
//! bilinear sampling the zoom warp uses. These run on the hot path, so every function writes into a buffer the
//! caller owns and allocates nothing.
//!
//! Coordinates: pixel `i` covers `[i, i + 1)`; its centre is `i + 0.5`. A region `[x0, x1)` resized to `n`
//! pixels gives output pixel `k` the footprint `[x0 + k·s, x0 + (k + 1)·s)` with `s = (x1 − x0) / n`. Reads
//! past the image edge repeat the edge pixel (clamp), so regions may extend past the frame.

use crate::frame::{BoxPx, Frame};

/// Shrinking by at least this factor (on either axis) averages the footprint instead of sampling bilinearly:
/// bilinear reads 2×2 source pixels per output, so beyond 2× it skips pixels and a 6 px sign can vanish.
pub const AREA_SCALE_THRESHOLD: f32 = 2.0;

/// Why an image operation refused its buffers.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ImageOpsError {
    #[error("{what} is {width}×{height}: zero-sized images are not allowed")]
    ZeroSize {
        what: &'static str,
        width: usize,
        height: usize,
    },
    #[error("{what} buffer for {width}×{height} has {found} elements, expected {expected}")]
    WrongLength {
        what: &'static str,
        width: usize,
        height: usize,
        found: usize,
        expected: usize,
    },
    #[error("crop region [{xmin}, {ymin}, {xmax}, {ymax}) is empty or not finite")]
    BadRegion {
        xmin: f32,
        ymin: f32,
        xmax: f32,
        ymax: f32,
    },
}

fn check_image(
    what: &'static str,
    len: usize,
    width: usize,
    height: usize,
    channels: usize,
) -> Result<(), ImageOpsError> {
    if width == 0 || height == 0 {
        return Err(ImageOpsError::ZeroSize {
            what,
            width,
            height,
        });
    }
    let expected = width * height * channels;
    if len != expected {
        return Err(ImageOpsError::WrongLength {
            what,
            width,
            height,
            found: len,
            expected,
        });
    }
    Ok(())
}

fn check_region(region: &BoxPx) -> Result<(), ImageOpsError> {
    let finite = region.xmin.is_finite()
        && region.ymin.is_finite()
        && region.xmax.is_finite()
        && region.ymax.is_finite();
    if !finite || region.width() <= 0.0 || region.height() <= 0.0 {
        return Err(ImageOpsError::BadRegion {
            xmin: region.xmin,
            ymin: region.ymin,
            xmax: region.xmax,
            ymax: region.ymax,
        });
    }
    Ok(())
}

/// Bilinear sample of an RGB8 image at `(x_px, y_px)` in pixel-centre coordinates (`(0, 0)` is the centre of
/// the top-left pixel), clamped to the edge. Returns channels in 0..255 as f32.
#[inline]
pub fn sample_bilinear_rgb(
    rgb: &[u8],
    width: usize,
    height: usize,
    x_px: f32,
    y_px: f32,
) -> [f32; 3] {
    // A buffer that does not hold the image it claims gives black rather than a panic.
    if width == 0 || height == 0 || rgb.len() < width * height * 3 {
        return [0.0; 3];
    }
    let x = x_px.clamp(0.0, (width - 1) as f32);
    let y = y_px.clamp(0.0, (height - 1) as f32);
    let x0 = x.floor() as usize;
    let y0 = y.floor() as usize;
    let x1 = (x0 + 1).min(width - 1);
    let y1 = (y0 + 1).min(height - 1);
    let fx = x - x0 as f32;
    let fy = y - y0 as f32;
    let row0 = y0 * width;
    let row1 = y1 * width;
    let mut out = [0.0f32; 3];
    for (c, o) in out.iter_mut().enumerate() {
        let p00 = rgb[(row0 + x0) * 3 + c] as f32;
        let p01 = rgb[(row0 + x1) * 3 + c] as f32;
        let p10 = rgb[(row1 + x0) * 3 + c] as f32;
        let p11 = rgb[(row1 + x1) * 3 + c] as f32;
        let top = p00 + (p01 - p00) * fx;
        let bottom = p10 + (p11 - p10) * fx;
        *o = top + (bottom - top) * fy;
    }
    out
}

/// Bilinear sample of one plane of a CHW f32 image at `(x_px, y_px)` (pixel-centre coordinates, clamped).
#[inline]
pub fn sample_bilinear_plane(
    plane: &[f32],
    width: usize,
    height: usize,
    x_px: f32,
    y_px: f32,
) -> f32 {
    if width == 0 || height == 0 || plane.len() < width * height {
        return 0.0;
    }
    let x = x_px.clamp(0.0, (width - 1) as f32);
    let y = y_px.clamp(0.0, (height - 1) as f32);
    let x0 = x.floor() as usize;
    let y0 = y.floor() as usize;
    let x1 = (x0 + 1).min(width - 1);
    let y1 = (y0 + 1).min(height - 1);
    let fx = x - x0 as f32;
    let fy = y - y0 as f32;
    let top = plane[y0 * width + x0] + (plane[y0 * width + x1] - plane[y0 * width + x0]) * fx;
    let bottom = plane[y1 * width + x0] + (plane[y1 * width + x1] - plane[y1 * width + x0]) * fx;
    top + (bottom - top) * fy
}

/// How much of source pixel `i` (the span `[i, i + 1)` on one axis) the footprint `[x0, x1)` covers: the
/// weight of every area average here. Zero or negative when they do not overlap.
#[inline]
fn covered_length(i: i64, x0: f32, x1: f32) -> f32 {
    ((i + 1) as f32).min(x1) - (i as f32).max(x0)
}

/// Mean of an RGB8 image over the footprint `[x0, x1) × [y0, y1)` (pixel-edge coordinates), weighting partly
/// covered pixels by their covered area; pixels outside the image repeat the edge. Channels in 0..255.
#[inline]
pub fn area_average_rgb(
    rgb: &[u8],
    width: usize,
    height: usize,
    x0: f32,
    x1: f32,
    y0: f32,
    y1: f32,
) -> [f32; 3] {
    if width == 0 || height == 0 || rgb.len() < width * height * 3 {
        return [0.0; 3];
    }
    let mut sum = [0.0f32; 3];
    let mut total = 0.0f32;
    let i_start = x0.floor() as i64;
    let i_end = x1.ceil() as i64;
    let j_start = y0.floor() as i64;
    let j_end = y1.ceil() as i64;
    for j in j_start..j_end {
        let wy = covered_length(j, y0, y1);
        if wy <= 0.0 {
            continue;
        }
        let row = j.clamp(0, height as i64 - 1) as usize * width;
        for i in i_start..i_end {
            let wx = covered_length(i, x0, x1);
            if wx <= 0.0 {
                continue;
            }
            let w = wx * wy;
            let p = (row + i.clamp(0, width as i64 - 1) as usize) * 3;
            sum[0] += w * rgb[p] as f32;
            sum[1] += w * rgb[p + 1] as f32;
            sum[2] += w * rgb[p + 2] as f32;
            total += w;
        }
    }
    if total <= 0.0 {
        // A footprint thinner than float resolution: fall back to the pixel under its centre.
        return sample_bilinear_rgb(
            rgb,
            width,
            height,
            0.5 * (x0 + x1) - 0.5,
            0.5 * (y0 + y1) - 0.5,
        );
    }
    // Rounding in the weights can push a mean a hair past 255.
    [
        (sum[0] / total).min(255.0),
        (sum[1] / total).min(255.0),
        (sum[2] / total).min(255.0),
    ]
}

/// The value of output pixel `(u, v)` of a `dw × dh` resample of the source region `[x0, x0+sx·dw) × ...`,
/// by area averaging when shrinking ≥ [`AREA_SCALE_THRESHOLD`], else bilinear. Shared by resize and crop so
/// that cropping the whole frame equals resizing it.
#[inline]
#[allow(clippy::too_many_arguments)]
fn resample_pixel(
    rgb: &[u8],
    width: usize,
    height: usize,
    x0: f32,
    y0: f32,
    scale_x: f32,
    scale_y: f32,
    area: bool,
    u: usize,
    v: usize,
) -> [f32; 3] {
    let fx0 = x0 + u as f32 * scale_x;
    let fy0 = y0 + v as f32 * scale_y;
    if area {
        area_average_rgb(rgb, width, height, fx0, fx0 + scale_x, fy0, fy0 + scale_y)
    } else {
        sample_bilinear_rgb(
            rgb,
            width,
            height,
            fx0 + 0.5 * scale_x - 0.5,
            fy0 + 0.5 * scale_y - 0.5,
        )
    }
}

/// Resizes RGB8 `src` (`sw × sh`) into `dst` (`dw × dh`): bilinear, or area averaging when shrinking by ≥ 2×
/// on either axis (the glance input: a sign of 20 frame px must still tint the 5 px it becomes).
pub fn resize_rgb_bilinear(
    src: &[u8],
    sw: usize,
    sh: usize,
    dst: &mut [u8],
    dw: usize,
    dh: usize,
) -> Result<(), ImageOpsError> {
    check_image("resize source", src.len(), sw, sh, 3)?;
    check_image("resize destination", dst.len(), dw, dh, 3)?;
    let scale_x = sw as f32 / dw as f32;
    let scale_y = sh as f32 / dh as f32;
    let area = scale_x.max(scale_y) >= AREA_SCALE_THRESHOLD;
    if area && sw.is_multiple_of(dw) && sh.is_multiple_of(dh) {
        // The glance's usual case (1280×960 → 320×240): whole-pixel footprints, summed in integers.
        box_shrink_integer(src, sw, dst, dw, dh, sw / dw, sh / dh);
        return Ok(());
    }
    if area && scale_x.max(scale_y) <= (FAST_AREA_TAPS - 1) as f32 {
        // Fractional shrinks (1360×800 → 448×264): the same area average with each footprint computed once.
        area_shrink_fractional(src, sw, sh, dst, dw, dh, scale_x, scale_y);
        return Ok(());
    }
    for v in 0..dh {
        for u in 0..dw {
            let p = resample_pixel(src, sw, sh, 0.0, 0.0, scale_x, scale_y, area, u, v);
            let o = (v * dw + u) * 3;
            for c in 0..3 {
                dst[o + c] = p[c].round().clamp(0.0, 255.0) as u8;
            }
        }
    }
    Ok(())
}

/// Most source pixels the area footprint of one output pixel spans on one axis on the fast path (shrinks of
/// up to 7×; larger ones take the general path).
const FAST_AREA_TAPS: usize = 8;

/// Fixed-point unit of the fast path's per-axis weights: each footprint's weights sum to exactly
/// `1 << FIXED_ONE_BITS`. 24 bits keep a row sum (≤ 255 · 2²⁴) in a `u32` and the weights' rounding under
/// 10⁻³ of a level, so results match the float path to its last rounding.
const FIXED_ONE_BITS: u32 = 24;

/// The footprint of output index `o` on one axis of an area shrink by `scale`: the first source index, how
/// many source pixels it touches, and the covered length of each (the [`area_average_rgb`] weights) as a
/// share of the footprint in fixed point, summing to exactly `1 << FIXED_ONE_BITS`.
#[derive(Debug, Clone, Copy, Default)]
struct Footprint {
    first: usize,
    len: usize,
    weights: [u32; FAST_AREA_TAPS],
}

impl Footprint {
    fn new(o: usize, scale: f32, src_len: usize) -> Self {
        let x0 = o as f32 * scale;
        let x1 = x0 + scale;
        let first = (x0.floor().max(0.0) as usize).min(src_len.saturating_sub(1));
        let mut covered = [0f32; FAST_AREA_TAPS];
        let mut len = 0;
        for (t, c) in covered
            .iter_mut()
            .enumerate()
            .take(FAST_AREA_TAPS.min(src_len - first))
        {
            let w = covered_length((first + t) as i64, x0, x1);
            if w <= 0.0 {
                break;
            }
            *c = w;
            len = t + 1;
        }
        let total: f32 = covered[..len].iter().sum();
        let one = 1u32 << FIXED_ONE_BITS;
        let mut f = Footprint {
            first,
            len: len.max(1),
            ..Footprint::default()
        };
        if total <= 0.0 {
            f.weights[0] = one;
            return f;
        }
        for (w, c) in f.weights.iter_mut().zip(&covered[..len]) {
            *w = (f64::from(*c) / f64::from(total) * f64::from(one)).round() as u32;
        }
        // Rounding may leave the sum a unit or two off: the largest weight takes the difference.
        let sum: u32 = f.weights[..len].iter().sum();
        if let Some(largest) = f.weights[..len].iter_mut().max() {
            *largest = (*largest + one).saturating_sub(sum);
        }
        f
    }
}

/// Scratch of the fractional shrink, kept per thread so steady state allocates nothing.
#[derive(Default)]
struct ShrinkScratch {
    /// The column footprints of the last shrink.
    columns: Vec<Footprint>,
    /// One output row's source rows combined vertically: `sw × 3` sums in fixed point.
    blended: Vec<u32>,
}

thread_local! {
    static SHRINK_SCRATCH: std::cell::RefCell<ShrinkScratch> = std::cell::RefCell::new(ShrinkScratch::default());
}

/// Area averaging for fractional shrink factors of at most `FAST_AREA_TAPS − 1`: what the general path
/// computes per pixel with [`area_average_rgb`], in integers (fixed-point weights per axis, exact sums).
/// Vertical first: the source rows of an output row's footprint are combined over the whole row width
/// (contiguous bytes, so it runs many lanes at once), then each output pixel combines its footprint's
/// columns of that row. The sums are the same integers the per-pixel double loop makes (Σ_x w_x Σ_y w_y p =
/// Σ_y w_y Σ_x w_x p, exactly, in integers), so the result is identical to it. Equal to the float path but
/// for ties in the last rounding (at most 1 apart).
#[allow(clippy::too_many_arguments)]
fn area_shrink_fractional(
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
    SHRINK_SCRATCH.with(|cell| {
        let mut scratch = cell.borrow_mut();
        let ShrinkScratch { columns, blended } = &mut *scratch;
        columns.clear();
        columns.extend((0..dw).map(|u| Footprint::new(u, scale_x, sw)));
        blended.clear();
        blended.resize(sw * 3, 0);
        for (v, out_row) in dst.chunks_exact_mut(dw * 3).take(dh).enumerate() {
            let fy = Footprint::new(v, scale_y, sh);
            blend_rows(src, sw, &fy, blended);
            for (fx, out) in columns.iter().zip(out_row.chunks_exact_mut(3)) {
                let sums = &blended[fx.first * 3..(fx.first + fx.len) * 3];
                let mut acc = [0u64; 3];
                for (&wx, px) in fx.weights[..fx.len].iter().zip(sums.chunks_exact(3)) {
                    let wx = u64::from(wx);
                    acc[0] += wx * u64::from(px[0]);
                    acc[1] += wx * u64::from(px[1]);
                    acc[2] += wx * u64::from(px[2]);
                }
                for c in 0..3 {
                    out[c] = ((acc[c] + half) >> (2 * FIXED_ONE_BITS)).min(255) as u8;
                }
            }
        }
    });
}

/// `blended[i] = Σ_t w_t · src[row first + t][i]` over a whole source row (`sw × 3` bytes): each footprint's
/// weights sum to `1 << FIXED_ONE_BITS`, so a sum stays ≤ 255 · 2²⁴ and fits a `u32`. Compiled for AVX2 where
/// the CPU has it (8 lanes of 32-bit products; the default x86-64 target has no 32-bit lane multiply).
#[allow(unsafe_code)]
fn blend_rows(src: &[u8], sw: usize, fy: &Footprint, blended: &mut [u32]) {
    #[cfg(target_arch = "x86_64")]
    {
        static AVX2: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        if *AVX2.get_or_init(|| std::arch::is_x86_feature_detected!("avx2")) {
            // SAFETY: the CPU has AVX2 (checked just above).
            unsafe { blend_rows_avx2(src, sw, fy, blended) };
            return;
        }
    }
    blend_rows_portable(src, sw, fy, blended);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[allow(unsafe_code)]
unsafe fn blend_rows_avx2(src: &[u8], sw: usize, fy: &Footprint, blended: &mut [u32]) {
    blend_rows_portable(src, sw, fy, blended);
}

#[inline(always)]
fn blend_rows_portable(src: &[u8], sw: usize, fy: &Footprint, blended: &mut [u32]) {
    let stride = sw * 3;
    let row = |t: usize| &src[(fy.first + t) * stride..(fy.first + t + 1) * stride];
    let w0 = fy.weights[0];
    for (b, &p) in blended.iter_mut().zip(row(0)) {
        *b = w0 * u32::from(p);
    }
    for t in 1..fy.len {
        let w = fy.weights[t];
        for (b, &p) in blended.iter_mut().zip(row(t)) {
            *b += w * u32::from(p);
        }
    }
}

/// The taps of one output index's area footprint `[x0, x0 + scale)` on one axis: clamped source indices
/// (pixels outside the image repeat the edge) and covered lengths, appended to `taps`; what
/// [`area_average_rgb`] visits on that axis.
fn push_area_taps(x0: f32, scale: f32, len: usize, taps: &mut Vec<(usize, f32)>) {
    let x1 = x0 + scale;
    for i in (x0.floor() as i64)..(x1.ceil() as i64) {
        let w = covered_length(i, x0, x1);
        if w > 0.0 {
            taps.push((i.clamp(0, len as i64 - 1) as usize, w));
        }
    }
}

/// Scratch of [`area_crop_chw`], kept per thread so steady state allocates nothing.
#[derive(Default)]
struct CropScratch {
    /// Every column's taps, then every row's, and where each column's and row's taps start.
    taps: Vec<(usize, f32)>,
    starts: Vec<usize>,
    /// One output row's source rows combined vertically, over the crop's columns: `3 ·` columns.
    blended: Vec<f32>,
}

thread_local! {
    static CROP_SCRATCH: std::cell::RefCell<CropScratch> = std::cell::RefCell::new(CropScratch::default());
}

/// The area-averaging crop of [`crop_resize_rgb_chw`] (shrinks of ≥ [`AREA_SCALE_THRESHOLD`]): each output
/// pixel the coverage-weighted mean of its footprint, as [`area_average_rgb`] computes it, but vertical first
/// (each source row read once per output row, over the crop's columns only) with the taps of every column and
/// row computed once per crop. Equal to the per-pixel path to float rounding (the same weights, summed in
/// another order). `width` and `height` must be non-zero.
fn area_crop_chw(
    rgb: &[u8],
    width: usize,
    height: usize,
    region: BoxPx,
    side_px: usize,
    out: &mut [f32],
) {
    let scale_x = region.width() / side_px as f32;
    let scale_y = region.height() / side_px as f32;
    let plane = side_px * side_px;
    CROP_SCRATCH.with(|cell| {
        let mut scratch = cell.borrow_mut();
        let CropScratch {
            taps,
            starts,
            blended,
        } = &mut *scratch;
        taps.clear();
        starts.clear();
        for u in 0..side_px {
            starts.push(taps.len());
            push_area_taps(region.xmin + u as f32 * scale_x, scale_x, width, taps);
        }
        for v in 0..side_px {
            starts.push(taps.len());
            push_area_taps(region.ymin + v as f32 * scale_y, scale_y, height, taps);
        }
        starts.push(taps.len());
        // The source columns the crop touches (clamped): blended holds them from `first_col` on.
        let column_taps = &taps[..starts[side_px]];
        let first_col = column_taps.iter().map(|t| t.0).min().unwrap_or(0);
        let last_col = column_taps.iter().map(|t| t.0).max().unwrap_or(0);
        let cols = last_col - first_col + 1;
        blended.clear();
        blended.resize(cols * 3, 0.0);
        for v in 0..side_px {
            let row_taps = &taps[starts[side_px + v]..starts[side_px + v + 1]];
            blended.iter_mut().for_each(|b| *b = 0.0);
            let mut row_total = 0.0f32;
            for &(j, wy) in row_taps {
                let src = &rgb[(j * width + first_col) * 3..(j * width + first_col + cols) * 3];
                for (b, &p) in blended.iter_mut().zip(src) {
                    *b += wy * f32::from(p);
                }
                row_total += wy;
            }
            for u in 0..side_px {
                let mut sum = [0.0f32; 3];
                let mut col_total = 0.0f32;
                for &(i, wx) in &taps[starts[u]..starts[u + 1]] {
                    let p = &blended[(i - first_col) * 3..(i - first_col) * 3 + 3];
                    sum[0] += wx * p[0];
                    sum[1] += wx * p[1];
                    sum[2] += wx * p[2];
                    col_total += wx;
                }
                let total = row_total * col_total;
                let o = v * side_px + u;
                if total > 0.0 {
                    out[o] = (sum[0] / total).min(255.0) / 255.0;
                    out[plane + o] = (sum[1] / total).min(255.0) / 255.0;
                    out[2 * plane + o] = (sum[2] / total).min(255.0) / 255.0;
                } else {
                    // A footprint thinner than float resolution: the per-pixel path's own fallback.
                    let p = resample_pixel(
                        rgb,
                        width,
                        height,
                        region.xmin,
                        region.ymin,
                        scale_x,
                        scale_y,
                        true,
                        u,
                        v,
                    );
                    out[o] = p[0] / 255.0;
                    out[plane + o] = p[1] / 255.0;
                    out[2 * plane + o] = p[2] / 255.0;
                }
            }
        }
    });
}

/// Box filter for integer shrink factors `fx × fy`: each output pixel is the rounded mean of its block.
fn box_shrink_integer(
    src: &[u8],
    sw: usize,
    dst: &mut [u8],
    dw: usize,
    dh: usize,
    fx: usize,
    fy: usize,
) {
    let n = (fx * fy) as u32;
    for v in 0..dh {
        for u in 0..dw {
            let mut sum = [0u32; 3];
            for j in 0..fy {
                let row = ((v * fy + j) * sw + u * fx) * 3;
                for px in src[row..row + fx * 3].chunks_exact(3) {
                    sum[0] += px[0] as u32;
                    sum[1] += px[1] as u32;
                    sum[2] += px[2] as u32;
                }
            }
            let o = (v * dw + u) * 3;
            for c in 0..3 {
                dst[o + c] = ((sum[c] + n / 2) / n) as u8;
            }
        }
    }
}

/// RGB8 interleaved (`w × h`) → planar CHW f32 in 0..1 (`3·w·h` floats in `out`).
pub fn rgb_to_chw_f32(
    rgb: &[u8],
    w: usize,
    h: usize,
    out: &mut [f32],
) -> Result<(), ImageOpsError> {
    check_image("RGB source", rgb.len(), w, h, 3)?;
    check_image("CHW destination", out.len(), w, h, 3)?;
    let plane = w * h;
    let (r_plane, rest) = out.split_at_mut(plane);
    let (g_plane, b_plane) = rest.split_at_mut(plane);
    for (i, px) in rgb.chunks_exact(3).enumerate() {
        r_plane[i] = px[0] as f32 / 255.0;
        g_plane[i] = px[1] as f32 / 255.0;
        b_plane[i] = px[2] as f32 / 255.0;
    }
    Ok(())
}

/// Cuts `region` (frame px, may extend past the frame: edge pixels repeat) out of an RGB8 image and resizes it
/// to `side_px × side_px`, writing `3·side²` floats in CHW order, 0..1, into `out`.
pub fn crop_resize_rgb_chw(
    rgb: &[u8],
    width: usize,
    height: usize,
    region: BoxPx,
    side_px: usize,
    out: &mut [f32],
) -> Result<(), ImageOpsError> {
    check_image("crop source", rgb.len(), width, height, 3)?;
    check_image("crop destination", out.len(), side_px, side_px, 3)?;
    check_region(&region)?;
    let scale_x = region.width() / side_px as f32;
    let scale_y = region.height() / side_px as f32;
    let area = scale_x.max(scale_y) >= AREA_SCALE_THRESHOLD;
    if area && width > 0 && height > 0 {
        area_crop_chw(rgb, width, height, region, side_px, out);
        return Ok(());
    }
    let plane = side_px * side_px;
    for v in 0..side_px {
        for u in 0..side_px {
            let p = resample_pixel(
                rgb,
                width,
                height,
                region.xmin,
                region.ymin,
                scale_x,
                scale_y,
                area,
                u,
                v,
            );
            let o = v * side_px + u;
            out[o] = p[0] / 255.0;
            out[plane + o] = p[1] / 255.0;
            out[2 * plane + o] = p[2] / 255.0;
        }
    }
    Ok(())
}

/// [`crop_resize_rgb_chw`] on a frame: the patch cutter every focus strategy uses.
pub fn crop_resize_chw(
    frame: &Frame,
    region: BoxPx,
    side_px: usize,
    out: &mut [f32],
) -> Result<(), ImageOpsError> {
    crop_resize_rgb_chw(
        &frame.rgb,
        frame.width as usize,
        frame.height as usize,
        region,
        side_px,
        out,
    )
}

#[cfg(test)]
mod tests;
