//! Tests of the classifier trainer: dropout, draws, losses and a tiny training run.
#![allow(clippy::unwrap_used)]

use candle_core::{DType, Device, Tensor};
use candle_nn::{AdamW, Optimizer, ParamsAdamW, VarBuilder, VarMap};
use saccade_models::patchnet::{InputNorm, PatchNet, PatchNetConfig};
use saccade_models::NUM_CLASSES;

use super::{loss::*, samples::*};
use crate::train::augment::{crop_square, gtsrb_chw, procedural_background};
use crate::train::common::{batch_tensor, rng_for};

#[test]
fn dropout_masks_drop_about_p_and_keep_the_mean() {
    let cfg = PatchNetConfig {
        channels: [4, 4, 8],
        hidden: 64,
        ..PatchNetConfig::default()
    };
    let (features, hidden) =
        dropout_masks(&cfg, 32, 0.25, &mut rng_for(3, 0), &Device::Cpu).unwrap();
    assert_eq!(features.dims(), &[32, cfg.flat_dim()]);
    assert_eq!(hidden.dims(), &[32, 64]);
    let v = features.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let zeros = v.iter().filter(|&&m| m == 0.0).count() as f64 / v.len() as f64;
    let mean = v.iter().map(|&m| m as f64).sum::<f64>() / v.len() as f64;
    assert!((zeros - 0.25).abs() < 0.03, "{zeros}");
    assert!((mean - 1.0).abs() < 0.05, "{mean}");
    assert!(v.iter().all(|&m| m == 0.0 || (m - 4.0 / 3.0).abs() < 1e-6));
}

#[test]
fn gtsrb_draws_without_a_floor_take_every_image_once() {
    let labels = [0u8, 0, 1, 2, 2, 2];
    assert_eq!(
        gtsrb_draws(&labels, 0, &mut rng_for(1, 0)),
        vec![0, 1, 2, 3, 4, 5]
    );
}

proptest::proptest! {
    /// With a floor, the epoch keeps its size (within one draw per class), every draw is a real
    /// index, and each class gets its `max(count, floor)` share: a rare class is drawn at least as
    /// often as it has images when the floor is above its count, and no class is starved.
    #[test]
    fn gtsrb_draws_balance_classes(
        counts in proptest::collection::vec(1usize..40, 1..8),
        floor in 1usize..60,
        seed in 0u64..1000,
    ) {
        let labels: Vec<u8> = counts
            .iter()
            .enumerate()
            .flat_map(|(c, &n)| std::iter::repeat_n(c as u8, n))
            .collect();
        let draws = gtsrb_draws(&labels, floor, &mut rng_for(seed, 0));
        let classes = counts.len();
        proptest::prop_assert!(draws.len().abs_diff(labels.len()) <= classes);
        let weight: usize = counts.iter().map(|&n| n.max(floor)).sum();
        let mut drawn = vec![0usize; classes];
        for &i in &draws {
            proptest::prop_assert!(i < labels.len());
            drawn[labels[i] as usize] += 1;
        }
        for (c, &n) in counts.iter().enumerate() {
            let expected = n.max(floor) as f64 / weight as f64 * labels.len() as f64;
            proptest::prop_assert!((drawn[c] as f64 - expected).abs() <= 0.5 + 1e-9,
                "class {c}: {} drawn, {expected} expected", drawn[c]);
        }
    }
}

/// A tiny patch net fitted to 16 fixed patches for 30 steps must lower its loss clearly: the training
/// loop (forward, cross-entropy, AdamW, backprop through the VarMap) works end to end.
#[test]
fn tiny_classifier_loss_falls_on_a_handful_of_samples() {
    for batch_norm in [false, true] {
        tiny_classifier_loss_falls(batch_norm);
    }
}

fn tiny_classifier_loss_falls(batch_norm: bool) {
    let device = Device::Cpu;
    let mut rng = rng_for(5, 0);
    let cfg = PatchNetConfig {
        input_side_px: 16,
        channels: [4, 8, 8],
        hidden: 16,
        num_classes: NUM_CLASSES,
        input_norm: InputNorm::PerPatch,
        box_head: false,
    };
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &device);
    let model = if batch_norm {
        PatchNet::new_with_batch_norm(&cfg, vb).unwrap()
    } else {
        PatchNet::new(&cfg, vb).unwrap()
    };
    let mut opt = AdamW::new(
        varmap.all_vars(),
        ParamsAdamW {
            lr: 1e-2,
            ..Default::default()
        },
    )
    .unwrap();
    let imgs: Vec<Vec<f32>> = (0..16)
        .map(|_| {
            let rgb = procedural_background(16, &mut rng);
            crop_square(&rgb, 16, 16, 0.0, 0.0, 16.0, 16)
        })
        .collect();
    let labels: Vec<u32> = (0..16).map(|i| (i % 4) as u32 * 10).collect();
    let x = batch_tensor(&imgs, 3, 16, 16, &device).unwrap();
    let y = Tensor::new(labels.as_slice(), &device).unwrap();
    let first = loss_and_hits(&model, &x, &y, None, None)
        .unwrap()
        .0
        .to_scalar::<f32>()
        .unwrap();
    for _ in 0..30 {
        let (loss, _) = loss_and_hits(&model, &x, &y, None, None).unwrap();
        opt.backward_step(&loss).unwrap();
    }
    let last = loss_and_hits(&model, &x, &y, None, None)
        .unwrap()
        .0
        .to_scalar::<f32>()
        .unwrap();
    assert!(
        last < 0.5 * first,
        "batch norm {batch_norm}: loss went from {first} to {last}"
    );
}

#[test]
fn chw_to_rgb_inverts_gtsrb_chw() {
    let mut rng = rng_for(1, 0);
    let rgb = procedural_background(8, &mut rng);
    assert_eq!(chw_to_rgb(&gtsrb_chw(&rgb, 8), 8), rgb);
}
