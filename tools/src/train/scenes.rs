//! Synthetic training scenes (`saccade_runtime::synth`, Train split) as training input: patches cut around
//! the signs the way the focus stage cuts them (a square around the sign, which fills 50–90 % of its side,
//! resized to the classifier's input) and background patches away from every sign, plus the glance-sized
//! copies of whole scenes (1280×960 area-averaged to 320×240).

use std::path::Path;

use anyhow::Context;
use rand::Rng;
use saccade_runtime::frame::TruthBox;
use saccade_runtime::synth::{Scene, SceneConfig, SceneGenerator, Split};

use super::augment::crop_square;
use super::common::rng_for;
use rayon::prelude::*;

/// Patches cut from synthetic scenes, CHW f32 in 0..1, with their class (43 = background).
#[derive(Debug, Clone, Default)]
pub struct SceneCrops {
    pub crops: Vec<(Vec<f32>, usize)>,
    /// How many of `crops` show a sign.
    pub sign_crops: usize,
}

/// Jittered crops per sign and background crops per scene.
const CROPS_PER_SIGN: usize = 2;
const BACKGROUNDS_PER_SCENE: usize = 3;

/// The generator for `split`, fed with the split's GTSRB crops and photos from `data_dir`.
pub fn generator(data_dir: &Path, split: Split) -> anyhow::Result<SceneGenerator> {
    let gtsrb_split = match split {
        Split::Train => "train",
        Split::Eval => "test",
    };
    let gtsrb = data_dir.join("gtsrb");
    let scenes = data_dir.join("scenes");
    let generator = SceneGenerator::new(SceneConfig {
        split,
        ..SceneConfig::default()
    })?
    .with_gtsrb(
        &gtsrb.join(format!("{gtsrb_split}_images.u8")),
        &gtsrb.join(format!("{gtsrb_split}_labels.u8")),
    )?
    .with_photos(&scenes.join("annotations.csv"), &scenes.join("images"))?;
    Ok(generator)
}

/// The square region (top-left x, y and side, scene pixels) the runtime would cut around `truth`, with the
/// sign filling `fill` of the side and the centre shifted by up to `jitter` of the side.
pub fn patch_region<R: Rng>(
    truth: &TruthBox,
    fill: f32,
    jitter: f32,
    rng: &mut R,
) -> (f32, f32, f32) {
    let sign_side = truth.bbox.width().max(truth.bbox.height()).max(1.0);
    let side = sign_side / fill;
    let (cx, cy) = truth.bbox.centre();
    let dx = if jitter > 0.0 {
        rng.random_range(-jitter..jitter) * side
    } else {
        0.0
    };
    let dy = if jitter > 0.0 {
        rng.random_range(-jitter..jitter) * side
    } else {
        0.0
    };
    (cx + dx - side / 2.0, cy + dy - side / 2.0, side)
}

/// True when the square region keeps `margin` of its side away from every truth box.
fn clear_of_signs(scene: &Scene, x0: f32, y0: f32, side: f32, margin: f32) -> bool {
    let m = side * margin;
    scene.truth.iter().all(|t| {
        let b = &t.bbox;
        b.xmax < x0 - m || b.xmin > x0 + side + m || b.ymax < y0 - m || b.ymin > y0 + side + m
    })
}

/// Cuts sign and background patches from `count` Train scenes (seeds `seed·1000 + i`), on all cores. Each
/// scene's crops come from its own RNG stream, so the result does not depend on the number of threads.
pub fn scene_crops(
    data_dir: &Path,
    count: usize,
    seed: u64,
    out_side: usize,
) -> anyhow::Result<SceneCrops> {
    let generator =
        generator(data_dir, Split::Train).context("building the Train scene generator")?;
    let bar = super::common::progress(count, "cutting scene crops");
    let per_scene: Vec<Vec<(Vec<f32>, usize)>> = (0..count)
        .into_par_iter()
        .map(|i| {
            let scene = generator.generate(seed.wrapping_mul(1000).wrapping_add(i as u64));
            let crops = crops_of_scene(&scene, &mut rng_for(seed, (40 << 32) | i as u64), out_side);
            bar.inc(1);
            crops
        })
        .collect();
    bar.finish_and_clear();
    let mut out = SceneCrops::default();
    for crops in per_scene {
        out.sign_crops += crops
            .iter()
            .filter(|(_, c)| *c != saccade_models::BACKGROUND_CLASS)
            .count();
        out.crops.extend(crops);
    }
    Ok(out)
}

/// Jittered crops around each classed sign of `scene` and background crops clear of every sign.
fn crops_of_scene<R: Rng>(scene: &Scene, rng: &mut R, out_side: usize) -> Vec<(Vec<f32>, usize)> {
    let (w, h) = (scene.width as usize, scene.height as usize);
    let mut out = Vec::new();
    for truth in &scene.truth {
        let Some(class_id) = truth.class_id else {
            continue;
        };
        for _ in 0..CROPS_PER_SIGN {
            let fill = rng.random_range(0.5f32..0.9);
            let (x0, y0, side) = patch_region(truth, fill, 0.08, rng);
            out.push((
                crop_square(&scene.rgb, w, h, x0, y0, side, out_side),
                class_id,
            ));
        }
    }
    let mut found = 0;
    for _ in 0..BACKGROUNDS_PER_SCENE * 4 {
        if found == BACKGROUNDS_PER_SCENE {
            break;
        }
        // Log-uniform side: small patches dominate, as they do among the runtime's candidates.
        let side = (rng.random_range(16f32.ln()..256f32.ln())).exp();
        let x0 = rng.random_range(0.0..(w as f32 - side).max(1.0));
        let y0 = rng.random_range(0.0..(h as f32 - side).max(1.0));
        if clear_of_signs(scene, x0, y0, side, 0.15) {
            out.push((
                crop_square(&scene.rgb, w, h, x0, y0, side, out_side),
                saccade_models::BACKGROUND_CLASS,
            ));
            found += 1;
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use saccade_runtime::frame::BoxPx;

    #[test]
    fn patch_region_is_centred_and_sized_by_fill() {
        let truth = TruthBox {
            bbox: BoxPx::new(100.0, 200.0, 140.0, 230.0),
            class_id: Some(3),
        };
        let mut rng = rng_for(0, 0);
        let (x0, y0, side) = patch_region(&truth, 0.8, 0.0, &mut rng);
        assert!((side - 50.0).abs() < 1e-4);
        assert!((x0 + side / 2.0 - 120.0).abs() < 1e-4);
        assert!((y0 + side / 2.0 - 215.0).abs() < 1e-4);
    }
}
