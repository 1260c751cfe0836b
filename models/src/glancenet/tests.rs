//! The glance net against naive loops, its training path, and its files.

use super::config::*;
use super::*;
use crate::format::QuantDtype;
use crate::input_norm::normalise_unit_rgb;
use crate::testutil::{
    batch_norm_relu_nchw, flat, max_abs_diff, naive_conv2d, random_tensor, relu,
    set_batch_norm_params, varmap_builder,
};
use crate::{GlanceNet, ModelError, NUM_CLASSES};
use candle_core::{DType, Device, Module, Tensor, D};

fn small_cfg() -> GlanceNetConfig {
    GlanceNetConfig {
        input_width_px: 40,
        input_height_px: 24,
        channels: [4, 6, 6, 5],
        num_classes: NUM_CLASSES,
    }
}

/// The training graph computes the same maps as the inference graph, and the same gradients (the
/// glance net has no max-pooling, so candle's conv2d backward is a valid reference here).
#[test]
fn train_maps_match_forward_maps_in_value_and_gradient() {
    let (varmap, vb) = varmap_builder();
    let net = GlanceNetModel::new(&small_cfg(), vb).unwrap();
    let x = random_tensor(&[2, 3, 24, 40], 0.0, 1.0, 22);
    let want = net.forward_maps(&x).unwrap();
    let got = net.train_maps(&x).unwrap();
    let parts = |m: &GlanceMaps| {
        [
            m.objectness_logits.clone(),
            m.log2_side.clone(),
            m.pooled.clone(),
            m.class_logits.clone(),
        ]
    };
    let mut losses = Vec::new();
    for (seed, (a, b)) in parts(&got).iter().zip(parts(&want).iter()).enumerate() {
        assert_eq!(a.dims(), b.dims());
        assert!(max_abs_diff(&flat(a), &flat(b)) <= 1e-4);
        let weights = random_tensor(a.dims(), -1.0, 1.0, 30 + seed as u64);
        losses.push((
            a.mul(&weights).unwrap().sum_all().unwrap(),
            b.mul(&weights).unwrap().sum_all().unwrap(),
        ));
    }
    let total = |pick: fn(&(Tensor, Tensor)) -> &Tensor| {
        losses
            .iter()
            .map(pick)
            .fold(None::<Tensor>, |acc, l| {
                Some(match acc {
                    Some(acc) => (acc + l).unwrap(),
                    None => l.clone(),
                })
            })
            .unwrap()
    };
    let grads_got = total(|l| &l.0).backward().unwrap();
    let grads_want = total(|l| &l.1).backward().unwrap();
    for var in varmap.all_vars() {
        let a = flat(grads_got.get(var.as_tensor()).unwrap());
        let b = flat(grads_want.get(var.as_tensor()).unwrap());
        let scale = b.iter().fold(1f32, |m, v| m.max(v.abs()));
        assert!(
            max_abs_diff(&a, &b) <= 1e-4 * scale,
            "gradient of {:?}",
            var.dims()
        );
    }
}

/// The glance net with batch normalisation from candle tensor ops in NCHW: the reference for the
/// training graph's values and gradients.
fn batch_norm_reference(net: &GlanceNetModel, x: &Tensor) -> GlanceMaps {
    let norms = net.norms.get().unwrap();
    let mut x = normalise_unit_rgb(x).unwrap();
    for (i, (conv, (_, _, stride, padding))) in net.convs.iter().zip(CONV_LAYERS).enumerate() {
        let y = x.conv2d(conv.weight(), padding, stride, 1, 1).unwrap();
        x = batch_norm_relu_nchw(&y, &norms[i]);
    }
    let pooled = x.flatten_from(2).unwrap().mean(D::Minus1).unwrap();
    GlanceMaps {
        objectness_logits: net.obj.forward(&x).unwrap(),
        log2_side: net.size.forward(&x).unwrap(),
        class_logits: net.cls.forward(&pooled).unwrap(),
        pooled,
    }
}

/// Batch normalisation in the training graph (batch statistics, analytic backward through them)
/// against the same network from candle tensor ops, in value and in every gradient.
#[test]
fn batch_norm_train_maps_match_tensor_ops_in_value_and_gradient() {
    let (varmap, vb) = varmap_builder();
    let net = GlanceNetModel::new_with_batch_norm(&small_cfg(), vb).unwrap();
    crate::testutil::seed_vars(&varmap, 7);
    assert_eq!(set_batch_norm_params(&varmap, 40), 8);
    let x = random_tensor(&[3, 3, 24, 40], 0.0, 1.0, 23);
    let got = net.train_maps(&x).unwrap();
    let want = batch_norm_reference(&net, &x);
    let parts = |m: &GlanceMaps| {
        [
            m.objectness_logits.clone(),
            m.log2_side.clone(),
            m.pooled.clone(),
            m.class_logits.clone(),
        ]
    };
    let (mut loss_got, mut loss_want) = (Vec::new(), Vec::new());
    for (seed, (a, b)) in parts(&got).iter().zip(parts(&want).iter()).enumerate() {
        assert_eq!(a.dims(), b.dims());
        assert!(max_abs_diff(&flat(a), &flat(b)) <= 1e-4, "output {seed}");
        let weights = random_tensor(a.dims(), -1.0, 1.0, 50 + seed as u64);
        loss_got.push(a.mul(&weights).unwrap().sum_all().unwrap());
        loss_want.push(b.mul(&weights).unwrap().sum_all().unwrap());
    }
    let sum = |l: Vec<Tensor>| Tensor::stack(&l, 0).unwrap().sum_all().unwrap();
    let grads_got = sum(loss_got).backward().unwrap();
    let grads_want = sum(loss_want).backward().unwrap();
    let mut checked = 0;
    for (name, var) in varmap.data().lock().unwrap().iter() {
        let (a, b) = (
            grads_got.get(var.as_tensor()),
            grads_want.get(var.as_tensor()),
        );
        if name.ends_with("bias") && name.starts_with("conv") {
            // The normalisation removes the convolutions' biases: neither graph uses them.
            continue;
        }
        let (a, b) = (flat(a.unwrap()), flat(b.unwrap()));
        let scale = b.iter().fold(1f32, |m, v| m.max(v.abs()));
        assert!(
            max_abs_diff(&a, &b) <= 1e-4 * scale,
            "gradient of {name}: {a:?} vs {b:?}"
        );
        checked += 1;
    }
    // 4 conv kernels, 8 batch-norm parameters, 2 heads with biases, cls weight and bias.
    assert_eq!(checked, 4 + 8 + 4 + 2);
}

/// Once the running statistics have converged to a batch's, the folded network (what `forward_maps`,
/// the glance stage and the saved file see) computes what training computed on that batch.
#[test]
fn batch_norm_folds_into_the_saved_convolutions() {
    let (varmap, vb) = varmap_builder();
    let net = GlanceNetModel::new_with_batch_norm(&small_cfg(), vb).unwrap();
    crate::testutil::seed_vars(&varmap, 8);
    assert_eq!(set_batch_norm_params(&varmap, 40), 8);
    let x = random_tensor(&[4, 3, 24, 40], 0.0, 1.0, 24);
    let before = flat(&net.forward_maps(&x).unwrap().objectness_logits);
    let mut trained = Vec::new();
    for _ in 0..200 {
        trained = flat(&net.train_maps(&x).unwrap().objectness_logits);
    }
    let folded = flat(&net.forward_maps(&x).unwrap().objectness_logits);
    assert!(
        max_abs_diff(&before, &trained) > 0.1,
        "the running statistics must matter"
    );
    assert!(
        max_abs_diff(&folded, &trained) <= 1e-3,
        "{}",
        max_abs_diff(&folded, &trained)
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bn.safetensors");
    net.save_safetensors(&path).unwrap();
    let loaded = GlanceNetModel::load(&path, &Device::Cpu).unwrap();
    let reloaded = flat(&loaded.forward_maps(&x).unwrap().objectness_logits);
    assert!(max_abs_diff(&reloaded, &folded) <= 1e-5);
    let names: Vec<String> = net
        .named_tensors()
        .unwrap()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert!(names.iter().all(|n| !n.contains("bn")), "{names:?}");
}

#[test]
fn maps_match_naive_loops() {
    let (_vm, vb) = varmap_builder();
    let cfg = small_cfg();
    let net = GlanceNetModel::new(&cfg, vb).unwrap();
    let x = random_tensor(&[2, 3, 24, 40], 0.0, 1.0, 21);
    let maps = net.forward_maps(&x).unwrap();
    let t: std::collections::HashMap<String, Vec<f32>> = net
        .named_tensors()
        .unwrap()
        .into_iter()
        .map(|(n, t)| (n, flat(&t)))
        .collect();
    let mut v: Vec<f32> = flat(&x).iter().map(|p| (p - 0.5) / 0.25).collect();
    let mut dims = (2, 3, 24, 40);
    for ((name, k, s, p), c_out) in CONV_LAYERS.iter().zip(cfg.channels) {
        let w = &t[&format!("{name}.weight")];
        let b = &t[&format!("{name}.bias")];
        let (mut y, d) = naive_conv2d(&v, dims, w, b, c_out, *k, *s, *p);
        relu(&mut y);
        (v, dims) = (y, d);
    }
    assert_eq!((dims.2, dims.3), (3, 5));
    assert_eq!(cfg.map_size(), (5, 3));
    let c = cfg.channels[3];
    let (obj, _) = naive_conv2d(&v, dims, &t["obj.weight"], &t["obj.bias"], 1, 1, 1, 0);
    let (size, _) = naive_conv2d(&v, dims, &t["size.weight"], &t["size.bias"], 1, 1, 1, 0);
    assert_eq!(maps.objectness_logits.dims(), [2, 1, 3, 5]);
    assert!(max_abs_diff(&flat(&maps.objectness_logits), &obj) <= 1e-4);
    assert!(max_abs_diff(&flat(&maps.log2_side), &size) <= 1e-4);
    let cells = 15;
    let pooled: Vec<f32> = (0..2 * c)
        .map(|i| v[i * cells..(i + 1) * cells].iter().sum::<f32>() / cells as f32)
        .collect();
    assert!(max_abs_diff(&flat(&maps.pooled), &pooled) <= 1e-4);
    let cls =
        crate::testutil::naive_linear(&pooled, 2, &t["cls.weight"], &t["cls.bias"], NUM_CLASSES);
    assert!(max_abs_diff(&flat(&maps.class_logits), &cls) <= 1e-4);
}

#[test]
fn glance_fills_the_map_for_a_full_size_input() {
    let (_vm, vb) = varmap_builder();
    let net = GlanceNetModel::new(&GlanceNetConfig::default(), vb).unwrap();
    let x = random_tensor(&[1, 3, 240, 320], 0.0, 1.0, 22);
    let maps = net.forward_maps(&x).unwrap();
    let map = net.glance(&x).unwrap();
    assert_eq!((map.map_width, map.map_height, map.stride_px), (40, 30, 8));
    assert_eq!(map.objectness.len(), 1200);
    assert!(map.objectness.iter().all(|p| (0.0..=1.0).contains(p)));
    let log2 = flat(&maps.log2_side);
    for (side, l) in map.box_side_glance_px.iter().zip(&log2) {
        assert!((side - l.exp2()).abs() <= 1e-4 * side.max(1.0));
    }
    assert_eq!(map.feature.len(), 32);
    let probs = map.class_probs.unwrap();
    assert_eq!(probs.len(), NUM_CLASSES);
    assert!((probs.iter().sum::<f32>() - 1.0).abs() < 1e-5);
}

#[test]
fn glance_rejects_wrong_input_size() {
    let (_vm, vb) = varmap_builder();
    let net = GlanceNetModel::new(&GlanceNetConfig::default(), vb).unwrap();
    for bad in [
        vec![1, 3, 240, 321],
        vec![2, 3, 240, 320],
        vec![3, 240, 320],
    ] {
        let err = net
            .glance(&Tensor::zeros(bad.as_slice(), DType::F32, &Device::Cpu).unwrap())
            .unwrap_err();
        assert!(matches!(err, ModelError::BadInput { .. }), "{err}");
    }
}

#[test]
fn mflops_match_hand_count() {
    let (_vm, vb) = varmap_builder();
    let net = GlanceNetModel::new(&GlanceNetConfig::default(), vb).unwrap();
    // 160×120, 80×60, 40×30, 40×30 outputs; 1×1 heads on 40×30; cls 32→44.
    let hand = 2 * 27 * 16 * 19_200
        + 2 * 144 * 32 * 4_800
        + 2 * 288 * 32 * 1_200
        + 2 * 288 * 32 * 1_200
        + 2 * (2 * 32 * 1_200)
        + 2 * 32 * 44;
    assert_eq!(hand, 105_218_816);
    assert!((net.mflops() - hand as f64 / 1e6).abs() < 1e-9);
}

#[test]
fn round_trip_and_q4k_fallback_is_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let float_path = dir.path().join("glance.safetensors");
    let (_vm, vb) = varmap_builder();
    let net = GlanceNetModel::new(&GlanceNetConfig::default(), vb).unwrap();
    net.save_safetensors(&float_path).unwrap();
    let x = random_tensor(&[1, 3, 240, 320], 0.0, 1.0, 23);
    let want = net.forward_maps(&x).unwrap();
    let loaded = GlanceNetModel::load(&float_path, &Device::Cpu).unwrap();
    let got = loaded.forward_maps(&x).unwrap();
    assert_eq!(flat(&want.objectness_logits), flat(&got.objectness_logits));
    assert_eq!(flat(&want.class_logits), flat(&got.class_logits));

    let q_path = dir.path().join("glance-q4k.gguf");
    let report = crate::registry::quantize_file(&float_path, &q_path, QuantDtype::Q4K).unwrap();
    // cls has inner dim 32: Q4K needs 256, so it falls back to Q8_0 and says so.
    assert_eq!(report.fallbacks.len(), 1, "{report}");
    assert!(report.fallbacks[0].contains("cls.weight"));
    let q = GlanceNetModel::load(&q_path, &Device::Cpu).unwrap();
    assert_eq!(
        q.cls.weight_dtype(),
        candle_core::quantized::GgmlDType::Q8_0
    );
    let inspection = crate::format::inspect_file(&q_path).unwrap().to_string();
    assert!(
        inspection.contains("cls.weight") && inspection.contains("q8_0"),
        "{inspection}"
    );
    assert!(inspection.contains("not possible"), "{inspection}");
    let got = q.forward_maps(&x).unwrap();
    // Conv kernels are stored f16 in GGUF: maps move by f16 rounding only.
    assert!(
        max_abs_diff(
            &flat(&want.objectness_logits),
            &flat(&got.objectness_logits)
        ) < 0.01
    );
}
