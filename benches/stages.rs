//! Per-stage micro-benchmarks of the hot path on one 1280×960 frame: YUYV→RGB conversion (capture), the
//! glance resize to 320×240 and the glance net, cutting 8 full-resolution patches, and the backbone on a batch
//! of 8. Models are random-init (their cost does not depend on the weights), so this runs on a fresh clone.
//! The shipped glance (Q8_0, integer kernels) is also timed on a 1360×800 frame, whole stage and parts.
//! `saccade bench` measures whole strategies against the full-resolution baseline; this isolates the stages.
#![allow(clippy::unwrap_used)]

use std::hint::black_box;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use criterion::{criterion_group, criterion_main, Criterion};
use saccade_models::{
    GlanceNet, GlanceNetConfig, GlanceNetModel, PatchClassifier, PatchNet, PatchNetConfig,
};
use saccade_runtime::capture::convert::{rgb_to_yuyv, yuyv_to_rgb};
use saccade_runtime::frame::{BoxPx, Frame};
use saccade_runtime::glance::GlanceStage;
use saccade_runtime::imageops;

const FRAME_WIDTH_PX: usize = 1280;
const FRAME_HEIGHT_PX: usize = 960;
const GLANCE_WIDTH_PX: usize = 320;
const GLANCE_HEIGHT_PX: usize = 240;
const PATCHES_PER_FRAME: usize = 8;
const PATCH_SIDE_PX: usize = 32;

/// The GTSDB frame size, the shipped glance's native input.
const REAL_WIDTH_PX: usize = 1360;
const REAL_HEIGHT_PX: usize = 800;

/// `rgb` (the test frame) resampled to `w × h`.
fn resized(rgb: &[u8], w: usize, h: usize) -> Vec<u8> {
    let mut out = vec![0u8; w * h * 3];
    imageops::resize_rgb_bilinear(rgb, FRAME_WIDTH_PX, FRAME_HEIGHT_PX, &mut out, w, h).unwrap();
    out
}

/// A frame with structure (gradients and a checker) so conversions do not see constant input.
fn test_frame_rgb() -> Vec<u8> {
    let mut rgb = vec![0u8; FRAME_WIDTH_PX * FRAME_HEIGHT_PX * 3];
    for y in 0..FRAME_HEIGHT_PX {
        for x in 0..FRAME_WIDTH_PX {
            let i = (y * FRAME_WIDTH_PX + x) * 3;
            let checker = if (x / 16 + y / 16) % 2 == 0 { 40 } else { 0 };
            rgb[i] = (x * 255 / FRAME_WIDTH_PX) as u8;
            rgb[i + 1] = (y * 255 / FRAME_HEIGHT_PX) as u8;
            rgb[i + 2] = 100 + checker;
        }
    }
    rgb
}

fn stages(c: &mut Criterion) {
    let device = Device::Cpu;
    let rgb = test_frame_rgb();
    let yuyv = rgb_to_yuyv(&rgb, FRAME_WIDTH_PX as u32, FRAME_HEIGHT_PX as u32).unwrap();
    let mut rgb_out = Vec::new();
    c.bench_function("yuyv_to_rgb_1280x960", |b| {
        b.iter(|| {
            yuyv_to_rgb(
                black_box(&yuyv),
                FRAME_WIDTH_PX as u32,
                FRAME_HEIGHT_PX as u32,
                &mut rgb_out,
            )
            .unwrap()
        })
    });

    let mut small = vec![0u8; GLANCE_WIDTH_PX * GLANCE_HEIGHT_PX * 3];
    c.bench_function("glance_resize_1280x960_to_320x240", |b| {
        b.iter(|| {
            imageops::resize_rgb_bilinear(
                black_box(&rgb),
                FRAME_WIDTH_PX,
                FRAME_HEIGHT_PX,
                &mut small,
                GLANCE_WIDTH_PX,
                GLANCE_HEIGHT_PX,
            )
            .unwrap()
        })
    });

    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &device);
    let glance = GlanceNetModel::new(
        &GlanceNetConfig {
            input_width_px: GLANCE_WIDTH_PX,
            input_height_px: GLANCE_HEIGHT_PX,
            ..GlanceNetConfig::default()
        },
        vb.pp("glance"),
    )
    .unwrap();
    let glance_input = Tensor::rand(
        0f32,
        1.0,
        (1, 3, GLANCE_HEIGHT_PX, GLANCE_WIDTH_PX),
        &device,
    )
    .unwrap();
    c.bench_function("glance_net_320x240", |b| {
        b.iter(|| glance.glance(black_box(&glance_input)).unwrap())
    });

    // The shipped glance on a real frame size: the stage as the pipeline runs it (fractional area shrink of
    // 1360×800 to the net's 448×264, CHW conversion, the Q8_0 net on the integer kernels) and its parts.
    let weights =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/weights/glancenet.q8_0.gguf");
    let shipped: std::sync::Arc<dyn GlanceNet> =
        std::sync::Arc::new(GlanceNetModel::load(&weights, &device).unwrap());
    let (gw, gh) = shipped.input_size_px();
    let (rw, rh) = (REAL_WIDTH_PX, REAL_HEIGHT_PX);
    let real = Frame::from_rgb(0, rw as u32, rh as u32, resized(&rgb, rw, rh)).unwrap();
    let mut shrunk = vec![0u8; gw * gh * 3];
    c.bench_function(&format!("glance_resize_1360x800_to_{gw}x{gh}"), |b| {
        b.iter(|| {
            imageops::resize_rgb_bilinear(black_box(&real.rgb), rw, rh, &mut shrunk, gw, gh)
                .unwrap()
        })
    });
    let mut chw = vec![0f32; gw * gh * 3];
    c.bench_function(&format!("glance_chw_{gw}x{gh}"), |b| {
        b.iter(|| imageops::rgb_to_chw_f32(black_box(&shrunk), gw, gh, &mut chw).unwrap())
    });
    let shipped_input = Tensor::from_slice(&chw, (1, 3, gh, gw), &device).unwrap();
    c.bench_function(&format!("glance_net_{gw}x{gh}_shipped_q8_0"), |b| {
        b.iter(|| shipped.glance(black_box(&shipped_input)).unwrap())
    });
    let mut stage = GlanceStage::new(shipped.clone(), device.clone());
    c.bench_function("glance_stage_1360x800_shipped_q8_0", |b| {
        b.iter(|| stage.glance(black_box(&real)).unwrap())
    });

    // Eight regions of different sizes spread over the frame, as a top-K focus would pick them.
    let regions: Vec<BoxPx> = (0..PATCHES_PER_FRAME)
        .map(|i| {
            let side = 24.0 + 16.0 * i as f32;
            let x = 100.0 + 140.0 * i as f32;
            let y = 150.0 + 70.0 * i as f32;
            BoxPx::new(x, y, x + side, y + side)
        })
        .collect();
    let patch_len = 3 * PATCH_SIDE_PX * PATCH_SIDE_PX;
    let mut patches = vec![0f32; PATCHES_PER_FRAME * patch_len];
    c.bench_function("patch_cut_8x32px", |b| {
        b.iter(|| {
            for (region, out) in regions.iter().zip(patches.chunks_exact_mut(patch_len)) {
                imageops::crop_resize_rgb_chw(
                    black_box(&rgb),
                    FRAME_WIDTH_PX,
                    FRAME_HEIGHT_PX,
                    *region,
                    PATCH_SIDE_PX,
                    out,
                )
                .unwrap();
            }
        })
    });

    let backbone = PatchNet::new(&PatchNetConfig::default(), vb.pp("patch")).unwrap();
    let batch = Tensor::from_slice(
        &patches,
        (PATCHES_PER_FRAME, 3, PATCH_SIDE_PX, PATCH_SIDE_PX),
        &device,
    )
    .unwrap();
    c.bench_function("backbone_batch_8", |b| {
        b.iter(|| backbone.classify(black_box(&batch)).unwrap())
    });
}

criterion_group!(benches, stages);
criterion_main!(benches);
