//! The patch classifier against naive loops, its training path, and its files.

use super::int8::SliceNorm;
use super::model::*;
use super::*;
use crate::format::QuantDtype;
use crate::testutil::{
    batch_norm_relu_nchw, flat, max_abs_diff, naive_conv2d, naive_linear, naive_maxpool2,
    random_tensor, relu, set_batch_norm_params, varmap_builder,
};
use crate::{ModelError, PatchClassifier, NUM_CLASSES};
use candle_core::{DType, Device, Module, Tensor};
use candle_nn::VarBuilder;

fn small_cfg() -> PatchNetConfig {
    PatchNetConfig {
        input_side_px: 16,
        channels: [4, 8, 8],
        hidden: 32,
        num_classes: NUM_CLASSES,
        input_norm: InputNorm::Fixed,
        box_head: false,
    }
}

/// Runs the whole net with the naive loops, from the tensors of `net`.
fn naive_logits(net: &PatchNet, x: &Tensor) -> Vec<f32> {
    let cfg = net.config();
    let tensors: std::collections::HashMap<String, Vec<f32>> = net
        .named_tensors()
        .unwrap()
        .into_iter()
        .map(|(n, t)| (n, flat(&t)))
        .collect();
    let (b, _, s, _) = x.dims4().unwrap();
    let mut v: Vec<f32> = flat(x).iter().map(|p| (p - 0.5) / 0.25).collect();
    let mut dims = (b, 3, s, s);
    for (name, c_out) in ["conv1", "conv2", "conv3"].iter().zip(cfg.channels) {
        let (mut y, d) = naive_conv2d(
            &v,
            dims,
            &tensors[&format!("{name}.weight")],
            &tensors[&format!("{name}.bias")],
            c_out,
            3,
            1,
            1,
        );
        relu(&mut y);
        (v, dims) = naive_maxpool2(&y, d);
    }
    let mut h = naive_linear(
        &v,
        b,
        &tensors["fc1.weight"],
        &tensors["fc1.bias"],
        cfg.hidden,
    );
    relu(&mut h);
    naive_linear(
        &h,
        b,
        &tensors["fc2.weight"],
        &tensors["fc2.bias"],
        cfg.num_classes,
    )
}

/// A 16×16, 5-class net with random weights and the given input normalisation (the VarMap keeps the
/// variables alive).
fn tiny_net(input_norm: InputNorm) -> (candle_nn::VarMap, PatchNet) {
    let cfg = PatchNetConfig {
        input_side_px: 16,
        channels: [4, 4, 8],
        hidden: 8,
        num_classes: 5,
        input_norm,
        box_head: false,
    };
    let (varmap, vb) = varmap_builder();
    (varmap, PatchNet::new(&cfg, vb).unwrap())
}

#[test]
fn per_patch_norm_ignores_exposure_and_old_configs_stay_fixed() {
    let (_vm, net) = tiny_net(InputNorm::PerPatch);
    let x = Tensor::rand(0.2f32, 0.6f32, (2, 3, 16, 16), &Device::Cpu).unwrap();
    // Same patch, darker and with less contrast: 0.5·x + 0.1.
    let dim = x.affine(0.5, 0.1).unwrap();
    let a = flat(&net.logits(&x).unwrap());
    let b = flat(&net.logits(&dim).unwrap());
    for (p, q) in a.iter().zip(&b) {
        assert!((p - q).abs() < 2e-3 * (1.0 + p.abs()), "{p} vs {q}");
    }
    let old: PatchNetConfig = serde_json::from_str(
        r#"{"input_side_px":32,"channels":[16,32,32],"hidden":128,"num_classes":44}"#,
    )
    .unwrap();
    assert_eq!(old.input_norm, InputNorm::Fixed);
    let json = serde_json::to_string(net.config()).unwrap();
    assert!(json.contains(r#""input_norm":"per_patch""#), "{json}");
}

#[test]
fn dropout_with_all_ones_masks_equals_plain_logits() {
    let (_vm, net) = tiny_net(InputNorm::Fixed);
    let x = Tensor::rand(0f32, 1f32, (2, 3, 16, 16), &Device::Cpu).unwrap();
    let ones_f = Tensor::ones((2, net.config().flat_dim()), DType::F32, &Device::Cpu).unwrap();
    let ones_h = Tensor::ones((2, 8), DType::F32, &Device::Cpu).unwrap();
    let zeros_h = Tensor::zeros((2, 8), DType::F32, &Device::Cpu).unwrap();
    let plain = flat(&net.train_logits(&x, None).unwrap());
    let masked = flat(&net.train_logits(&x, Some((&ones_f, &ones_h))).unwrap());
    assert_eq!(plain, masked);
    // With the hidden layer dropped entirely only fc2's bias is left: both rows equal.
    let dropped = net
        .train_logits(&x, Some((&ones_f, &zeros_h)))
        .unwrap()
        .to_vec2::<f32>()
        .unwrap();
    assert_eq!(dropped[0], dropped[1]);
}

#[test]
fn conv_layer_matches_naive_loops() {
    let (_vm, vb) = varmap_builder();
    let conv = candle_nn::conv2d(
        3,
        5,
        3,
        candle_nn::Conv2dConfig {
            padding: 1,
            ..Default::default()
        },
        vb.pp("c"),
    )
    .unwrap();
    let x = random_tensor(&[2, 3, 7, 6], -1.0, 1.0, 11);
    let got = flat(&conv.forward(&x).unwrap());
    let (want, _) = naive_conv2d(
        &flat(&x),
        (2, 3, 7, 6),
        &flat(conv.weight()),
        &flat(conv.bias().unwrap()),
        5,
        3,
        1,
        1,
    );
    assert!(max_abs_diff(&got, &want) <= 1e-4);
}

#[test]
fn maxpool_matches_naive_loops() {
    let x = random_tensor(&[2, 3, 6, 8], -1.0, 1.0, 12);
    let got = flat(&x.max_pool2d(2).unwrap());
    let (want, _) = naive_maxpool2(&flat(&x), (2, 3, 6, 8));
    assert_eq!(got, want);
}

#[test]
fn whole_net_matches_naive_loops() {
    let (_vm, vb) = varmap_builder();
    let net = PatchNet::new(&small_cfg(), vb).unwrap();
    let x = random_tensor(&[3, 3, 16, 16], 0.0, 1.0, 13);
    let got = flat(&net.logits(&x).unwrap());
    assert_eq!(got.len(), 3 * NUM_CLASSES);
    assert!(max_abs_diff(&got, &naive_logits(&net, &x)) <= 1e-4);
}

/// The training graph (NHWC, convolutions as matrix products) computes the same logits as the
/// inference graph (candle's conv2d), and its gradients, with and without dropout, agree with
/// central finite differences. (candle's own max_pool2d backward scales the gradient of a window's
/// unique maximum by 1/4, so the conv2d graph's conv gradients are 4^k times too small; Adam's
/// per-parameter normalisation hides that, a gradient check does not.)
#[test]
fn train_logits_match_logits_and_finite_differences() {
    let cfg = PatchNetConfig {
        input_norm: InputNorm::PerPatch,
        box_head: false,
        ..small_cfg()
    };
    let (varmap, vb) = varmap_builder();
    let net = PatchNet::new(&cfg, vb).unwrap();
    crate::testutil::seed_vars(&varmap, 100);
    let plain = net.train_logits(&x_for_gradients(), None).unwrap();
    let want = net.logits(&x_for_gradients()).unwrap();
    assert!(max_abs_diff(&flat(&plain), &flat(&want)) <= 1e-4);
    check_train_gradients(&net, &varmap, &cfg);
}

/// Batch normalisation's backward pass (through the batch statistics) against finite differences, on
/// seeded variables. (With larger initial weights the finite differences stop converging: a step of a
/// batch-norm parameter moves every activation of its channel at once, and the steps cross many ReLU
/// and max-pool kinks; `batch_norm_train_logits_match_tensor_ops` checks every gradient exactly.)
#[test]
fn batch_norm_train_logits_match_finite_differences() {
    let cfg = PatchNetConfig {
        input_norm: InputNorm::PerPatch,
        box_head: false,
        ..small_cfg()
    };
    let (varmap, vb) = varmap_builder();
    let net = PatchNet::new_with_batch_norm(&cfg, vb).unwrap();
    crate::testutil::seed_vars(&varmap, 100);
    assert_eq!(set_batch_norm_params(&varmap, 22), 6);
    check_train_gradients(&net, &varmap, &cfg);
}

/// The classifier with batch normalisation from candle tensor ops in NCHW (conv2d, statistics over
/// batch and space, max-pooling as a max over reshaped windows): the reference for the training graph.
fn batch_norm_reference_logits(net: &PatchNet, x: &Tensor) -> Tensor {
    let norms = net.norms.get().unwrap();
    let b = x.dim(0).unwrap();
    let mut x = net.normalised_input(x).unwrap();
    for (i, conv) in [&net.conv1, &net.conv2, &net.conv3].into_iter().enumerate() {
        let y = x.conv2d(conv.weight(), 1, 1, 1, 1).unwrap();
        let (_, c, h, w) = y.dims4().unwrap();
        let z = batch_norm_relu_nchw(&y, &norms[i]);
        x = z
            .reshape((b, c, h / 2, 2, w / 2, 2))
            .unwrap()
            .max(5)
            .unwrap()
            .max(3)
            .unwrap();
    }
    net.head(x.reshape((b, net.cfg.flat_dim())).unwrap(), None)
        .unwrap()
}

/// Every gradient of the batch-normalised training graph equals the tensor-op reference's, for
/// several initialisations (candle's own initialiser included).
#[test]
fn batch_norm_train_logits_match_tensor_ops() {
    let cfg = PatchNetConfig {
        input_norm: InputNorm::PerPatch,
        box_head: false,
        ..small_cfg()
    };
    for seed in [None, Some(1), Some(2), Some(3)] {
        let (varmap, vb) = varmap_builder();
        let net = PatchNet::new_with_batch_norm(&cfg, vb).unwrap();
        if let Some(seed) = seed {
            crate::testutil::seed_vars(&varmap, seed);
        }
        assert_eq!(set_batch_norm_params(&varmap, 22), 6);
        let x = x_for_gradients();
        let got = net.train_logits(&x, None).unwrap();
        let want = batch_norm_reference_logits(&net, &x);
        assert!(max_abs_diff(&flat(&got), &flat(&want)) <= 1e-4);
        let weights = random_tensor(&[3, NUM_CLASSES], -1.0, 1.0, 20);
        let grads_got = crate::testutil::weighted_grads(&got, &weights);
        let grads_want = crate::testutil::weighted_grads(&want, &weights);
        let mut checked = 0;
        for (name, var) in varmap.data().lock().unwrap().iter() {
            if name.starts_with("conv") && name.ends_with(".bias") {
                assert!(grads_got.get(var.as_tensor()).is_none(), "{name}");
                continue;
            }
            let a = flat(grads_got.get(var.as_tensor()).unwrap());
            let b = flat(grads_want.get(var.as_tensor()).unwrap());
            let scale = b.iter().fold(1e-3f32, |m, v| m.max(v.abs()));
            assert!(
                max_abs_diff(&a, &b) <= 1e-4 * scale.max(1.0),
                "seed {seed:?}: gradient of {name} differs by {}",
                max_abs_diff(&a, &b)
            );
            checked += 1;
        }
        // 3 kernels, 6 batch-norm parameters, fc1 and fc2 weights and biases.
        assert_eq!(checked, 3 + 6 + 4, "seed {seed:?}");
    }
}

/// Once the running statistics have converged to a batch's, the folded network (what `logits`, the
/// saved file and every consumer see) computes what training computed on that batch.
#[test]
fn batch_norm_folds_into_the_saved_convolutions() {
    let cfg = PatchNetConfig {
        input_norm: InputNorm::PerPatch,
        box_head: false,
        ..small_cfg()
    };
    let (varmap, vb) = varmap_builder();
    let net = PatchNet::new_with_batch_norm(&cfg, vb).unwrap();
    assert_eq!(set_batch_norm_params(&varmap, 22), 6);
    let x = random_tensor(&[6, 3, 16, 16], 0.0, 1.0, 23);
    let before = flat(&net.logits(&x).unwrap());
    let mut trained = Vec::new();
    for _ in 0..200 {
        trained = flat(&net.train_logits(&x, None).unwrap());
    }
    let folded = flat(&net.logits(&x).unwrap());
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
    let loaded = PatchNet::load(&path, &Device::Cpu).unwrap();
    assert!(max_abs_diff(&flat(&loaded.logits(&x).unwrap()), &folded) <= 1e-5);
    let names: Vec<String> = net
        .named_tensors()
        .unwrap()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert!(names.iter().all(|n| !n.contains("bn")), "{names:?}");
}

fn x_for_gradients() -> Tensor {
    random_tensor(&[3, 3, 16, 16], 0.0, 1.0, 17)
}

/// Backprop through [`PatchNet::train_logits`], with and without dropout, against central finite
/// differences of a few entries of every variable.
fn check_train_gradients(net: &PatchNet, varmap: &candle_nn::VarMap, cfg: &PatchNetConfig) {
    let x = x_for_gradients();
    let mask = |n: usize, seed: u64| {
        (random_tensor(&[3, n], 0.0, 2.0, seed).ge(1.0).unwrap())
            .to_dtype(DType::F32)
            .unwrap()
    };
    let (features, hidden) = (mask(cfg.flat_dim(), 18), mask(cfg.hidden, 19));
    // A loss that weighs every logit differently, so every gradient entry matters.
    let weights = random_tensor(&[3, NUM_CLASSES], -1.0, 1.0, 20);
    for masks in [None, Some((&features, &hidden))] {
        let got = net.train_logits(&x, masks).unwrap();
        let loss = |net: &PatchNet| -> f64 {
            let logits = net.train_logits(&x, masks).unwrap();
            let l = logits.mul(&weights).unwrap().sum_all().unwrap();
            l.to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap()
        };
        let grads = crate::testutil::weighted_grads(&got, &weights);
        for var in varmap.all_vars() {
            let original = flat(var.as_tensor());
            // No gradient: the variable is not in the graph (a conv bias under batch norm), so the
            // finite differences must be zero too.
            let grad = grads
                .get(var.as_tensor())
                .map(flat)
                .unwrap_or_else(|| vec![0.0; original.len()]);
            // The largest entry and two others.
            let largest = (0..grad.len())
                .max_by(|&i, &j| grad[i].abs().total_cmp(&grad[j].abs()))
                .unwrap();
            for i in [largest, grad.len() / 3, grad.len() - 1] {
                let probe = |delta: f32| {
                    let mut v = original.clone();
                    v[i] += delta;
                    var.set(&Tensor::from_vec(v, var.shape(), &Device::Cpu).unwrap())
                        .unwrap();
                    loss(net)
                };
                // ReLU and max-pool make the loss piecewise linear: a step may cross a kink, so
                // one of five step sizes has to agree within 3 % (plus f32 rounding).
                let numeric: Vec<f32> = [1e-2f32, 3e-3, 1e-3, 3e-4, 1e-4]
                    .iter()
                    .map(|&h| ((probe(h) - probe(-h)) / (2.0 * h as f64)) as f32)
                    .collect();
                var.set(&Tensor::from_vec(original.clone(), var.shape(), &Device::Cpu).unwrap())
                    .unwrap();
                assert!(
                    numeric
                        .iter()
                        .any(|n| (n - grad[i]).abs() <= 0.03 * grad[i].abs() + 1e-2),
                    "d loss / d {:?}[{i}]: backprop {} vs finite differences {numeric:?}",
                    var.shape(),
                    grad[i]
                );
            }
        }
    }
}

#[test]
fn classify_returns_probabilities_and_rejects_bad_shapes() {
    let (_vm, vb) = varmap_builder();
    let net = PatchNet::new(&PatchNetConfig::default(), vb).unwrap();
    let probs = net
        .classify(&random_tensor(&[4, 3, 32, 32], 0.0, 1.0, 14))
        .unwrap();
    assert_eq!(probs.dims(), [4, NUM_CLASSES]);
    for row in probs.to_vec2::<f32>().unwrap() {
        assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5);
    }
    for bad in [
        vec![4, 3, 32, 31],
        vec![4, 1, 32, 32],
        vec![3, 32, 32],
        vec![1, 3, 16, 16],
    ] {
        let err = net
            .classify(&Tensor::zeros(bad.as_slice(), DType::F32, &Device::Cpu).unwrap())
            .unwrap_err();
        assert!(
            matches!(err, ModelError::BadInput { ref found, .. } if *found == bad),
            "{err}"
        );
    }
    let empty = net
        .classify(&Tensor::zeros((0, 3, 32, 32), DType::F32, &Device::Cpu).unwrap())
        .unwrap();
    assert_eq!(empty.dims(), [0, NUM_CLASSES]);
}

#[test]
fn mflops_per_patch_matches_hand_count() {
    let (_vm, vb) = varmap_builder();
    let net = PatchNet::new(&PatchNetConfig::default(), vb).unwrap();
    // conv1 2·27·32·32·32 + conv2 2·288·64·16·16 + conv3 2·576·64·8·8 + fc1 2·1024·256 + fc2 2·256·44
    let hand = 1_769_472 + 9_437_184 + 4_718_592 + 524_288 + 22_528;
    assert!((net.mflops_per_patch() - hand as f64 / 1e6).abs() < 1e-9);
    assert!(net.describe().contains("16.47 MFLOP"), "{}", net.describe());
}

#[test]
fn invalid_config_is_rejected() {
    let (_vm, vb) = varmap_builder();
    let cfg = PatchNetConfig {
        input_side_px: 30,
        ..PatchNetConfig::default()
    };
    assert!(PatchNet::new(&cfg, vb).is_err());
}

fn softmax_rows(logits: &Tensor) -> Vec<f32> {
    flat(&candle_nn::ops::softmax_last_dim(logits).unwrap())
}

#[test]
fn safetensors_round_trip_gives_identical_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("patch.safetensors");
    let (varmap, vb) = varmap_builder();
    let cfg = PatchNetConfig::default();
    let net = PatchNet::new(&cfg, vb).unwrap();
    // The trainer's path: the VarMap's tensors plus the config JSON.
    let tensors = varmap
        .data()
        .lock()
        .unwrap()
        .iter()
        .map(|(n, v)| (n.clone(), v.as_tensor().clone()))
        .collect();
    crate::format::write_safetensors(
        &tensors,
        &serde_json::to_string(&cfg).unwrap(),
        PATCHNET_KIND,
        &path,
    )
    .unwrap();
    let loaded = PatchNet::load(&path, &Device::Cpu).unwrap();
    assert_eq!(loaded.config(), &cfg);
    let x = random_tensor(&[5, 3, 32, 32], 0.0, 1.0, 15);
    assert_eq!(
        flat(&net.logits(&x).unwrap()),
        flat(&loaded.logits(&x).unwrap())
    );
}

/// A net of `cfg` with seeded weights instead of candle's unseeded initialiser: weights uniform in
/// ±`scale`/sqrt(fan_in) (PyTorch's default bound at scale 1), biases ±0.1; variable `i` in name order
/// draws from seed `first_seed + i`.
fn seeded_net(cfg: &PatchNetConfig, scale: f32, first_seed: u64) -> PatchNet {
    let (vm, vb) = varmap_builder();
    PatchNet::new(cfg, vb).unwrap();
    let mut names: Vec<(String, Vec<usize>)> = vm
        .data()
        .lock()
        .unwrap()
        .iter()
        .map(|(n, v)| (n.clone(), v.as_tensor().dims().to_vec()))
        .collect();
    names.sort();
    let seeded: std::collections::HashMap<String, Tensor> = names
        .into_iter()
        .enumerate()
        .map(|(i, (name, dims))| {
            let fan_in: usize = dims.iter().skip(1).product();
            let a = if dims.len() > 1 {
                scale / (fan_in as f32).sqrt()
            } else {
                0.1
            };
            (name, random_tensor(&dims, -a, a, first_seed + i as u64))
        })
        .collect();
    PatchNet::new(
        cfg,
        VarBuilder::from_tensors(seeded, DType::F32, &Device::Cpu),
    )
    .unwrap()
}

#[test]
fn patch_box_encoding_round_trips_and_clamps_wild_outputs() {
    for b in [
        [0.1f32, 0.2, 0.9, 0.7],
        [0.3, 0.3, 0.5, 0.6],
        [-0.2, 0.0, 0.6, 1.3],
    ] {
        let d = decode_patch_box(&encode_patch_box(b));
        for (x, y) in d.iter().zip(b) {
            assert!((x - y).abs() < 1e-5, "{b:?} -> {d:?}");
        }
    }
    let wild = decode_patch_box(&[f32::NAN, 1e9, -1e9, f32::INFINITY]);
    assert!(wild.iter().all(|v| v.is_finite()), "{wild:?}");
    assert!(wild[2] - wild[0] >= 1.0 / 64.0 - 1e-6 && wild[3] - wild[1] <= 4.0 + 1e-6);
    // Zero outputs: the sign fills the patch, centred.
    assert_eq!(decode_patch_box(&[0.0; 4]), [0.0, 0.0, 1.0, 1.0]);
}

#[test]
fn box_head_adds_four_outputs_that_survive_saving_and_q8_0() {
    let cfg = PatchNetConfig {
        box_head: true,
        ..small_cfg()
    };
    assert_eq!(cfg.num_outputs(), NUM_CLASSES + BOX_OUTPUTS);
    let specs = cfg.tensor_specs();
    let fc2 = specs.iter().find(|s| s.name == "fc2.weight").unwrap();
    assert_eq!(fc2.shape, vec![NUM_CLASSES + BOX_OUTPUTS, cfg.hidden]);
    // Files without the key have no box head.
    let old: PatchNetConfig = serde_json::from_str(
        r#"{"input_side_px":32,"channels":[16,32,32],"hidden":128,"num_classes":44}"#,
    )
    .unwrap();
    assert!(!old.box_head);
    let dir = tempfile::tempdir().unwrap();
    // Seeded weights of the usual scale (candle's initialiser is unseeded, and a wild box output would be
    // clamped, hiding or inventing differences).
    let net = seeded_net(&cfg, 1.0, 500);
    let x = random_tensor(&[5, 3, 16, 16], 0.0, 1.0, 5);
    let want = net.classify_with_boxes(&x).unwrap();
    assert_eq!(want.probs.dims(), &[5, NUM_CLASSES]);
    let want_boxes = want.boxes.unwrap();
    assert_eq!(want_boxes.len(), 5);
    // The class probabilities are those of `classify`, untouched by the box rows.
    assert_eq!(flat(&want.probs), flat(&net.classify(&x).unwrap()));
    let path = dir.path().join("p.safetensors");
    net.save_safetensors(&path).unwrap();
    let q8 = dir.path().join("p.gguf");
    crate::registry::quantize_file(&path, &q8, QuantDtype::Q8_0).unwrap();
    for (file, tol) in [(&path, 1e-5f32), (&q8, 0.03)] {
        let loaded = PatchNet::load(file, &Device::Cpu).unwrap();
        assert!(loaded.config().box_head);
        let got = loaded.classify_with_boxes(&x).unwrap().boxes.unwrap();
        for (g, w) in got.iter().zip(&want_boxes) {
            for (a, b) in g.iter().zip(w) {
                assert!(
                    (a - b).abs() <= tol * (1.0 + b.abs()),
                    "{file:?}: {g:?} vs {w:?}"
                );
            }
        }
    }
    // A net without a box head reports none.
    let (_vm2, vb2) = varmap_builder();
    let plain = PatchNet::new(&small_cfg(), vb2).unwrap();
    assert!(plain.classify_with_boxes(&x).unwrap().boxes.is_none());
}

/// Float vs quantised on seeded random weights (bound 2/sqrt(fan_in), so the softmax is neither flat nor
/// saturated): max |Δ softmax| over a batch. Measured: f16 0.0003, Q8_0 0.016 (integer path: weights
/// with one scale per row, activations rounded per patch), Q4_0 0.043, Q4K 0.045; the bounds are
/// 2–7× that: f16 0.002, Q8_0 0.04, 4-bit 0.15. Same seeds every run, so the outcome is fixed.
#[test]
fn quantised_files_stay_close_to_float() {
    let dir = tempfile::tempdir().unwrap();
    let float_path = dir.path().join("patch.safetensors");
    // Seeded weights of twice the usual scale (bound 2/sqrt(fan_in)), so the softmax is neither flat nor
    // saturated, and the measured error and the test's outcome are the same on every run.
    let net = seeded_net(&PatchNetConfig::default(), 2.0, 1000);
    net.save_safetensors(&float_path).unwrap();
    let x = random_tensor(&[16, 3, 32, 32], 0.0, 1.0, 16);
    let want = softmax_rows(&net.logits(&x).unwrap());
    for (dtype, tolerance) in [
        (QuantDtype::F16, 0.002),
        (QuantDtype::Q8_0, 0.04),
        (QuantDtype::Q4_0, 0.15),
        (QuantDtype::Q4K, 0.15),
    ] {
        let path = dir.path().join(format!("patch-{dtype}.gguf"));
        let report = crate::registry::quantize_file(&float_path, &path, dtype).unwrap();
        assert!(report.fallbacks.is_empty(), "{report}");
        let q = PatchNet::load(&path, &Device::Cpu).unwrap();
        assert_eq!(q.fc1.weight_dtype(), dtype.ggml());
        assert_eq!(q.int8.is_some(), dtype == QuantDtype::Q8_0);
        let got = softmax_rows(&q.logits(&x).unwrap());
        if q.int8.is_some() {
            // The same Q8_0 weights through candle's float convs and QMatMul: what differs is only the
            // integer path's activation rounding, so a wrong im2col order or column permutation shows.
            let candle_path = PatchNet {
                int8: None,
                ..q.clone()
            };
            let reference = softmax_rows(&candle_path.logits(&x).unwrap());
            let d = max_abs_diff(&got, &reference);
            eprintln!("q8_0 integer path vs candle path: max |Δ softmax| = {d:.5}");
            // Measured 0.0093.
            assert!(d <= 0.02, "integer path differs from candle's by {d}");
        }
        let diff = max_abs_diff(&got, &want);
        eprintln!(
            "{dtype}: max |Δ softmax| = {diff:.5}, file {} B",
            report.output_file_bytes
        );
        assert!(diff <= tolerance, "{dtype}: {diff} > {tolerance}");
    }
}

/// The shipped Q8_0 net on its integer path (its scratch is the caller's or the thread's, not behind a lock).
fn shipped_q8_0() -> PatchNet {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("weights")
        .join("patchnet.q8_0.gguf");
    let net = PatchNet::load(&path, &Device::Cpu).unwrap();
    assert!(
        net.int8.is_some(),
        "{} is not on the integer path",
        path.display()
    );
    net
}

/// The slice path (`classify_into`: per-patch normalisation in place, forward pass, softmax, boxes) gives
/// what the tensor path gives: logits within 1e-5 (the same bits where candle sums with AVX2), so the
/// probabilities and boxes too; a flat patch (deviation under the floor) included.
#[test]
fn classify_into_matches_the_tensor_path_on_the_integer_net() {
    let net = shipped_q8_0();
    let side = net.input_side_px();
    let x = random_tensor(&[9, 3, side, side], 0.0, 1.0, 77);
    let mut values = flat(&x);
    // Patch 0 nearly flat: its deviation is floored.
    for v in &mut values[..3 * side * side] {
        *v = 0.5 + (*v - 0.5) * 0.01;
    }
    let x = Tensor::from_vec(values.clone(), (9, 3, side, side), &Device::Cpu).unwrap();
    let want_logits = flat(&net.outputs(&x).unwrap());
    let want = net.classify_with_boxes(&x).unwrap();
    let mut rows = crate::PatchRows::default();
    net.classify_into(&values, 9, &mut rows).unwrap();
    // The slice path's logits, recovered from its probabilities, are checked through the probabilities:
    // softmax is 1-Lipschitz, so a logit error of ε moves a probability by at most ε.
    let d = max_abs_diff(&rows.probs, &flat(&want.probs));
    assert!(d <= 1e-5, "probabilities differ by {d}");
    let want_boxes = want.boxes.unwrap();
    assert_eq!(rows.has_boxes, net.cfg.box_head);
    for (a, b) in rows.boxes.iter().zip(&want_boxes) {
        assert!(max_abs_diff(a, b) <= 1e-5, "{a:?} vs {b:?}");
    }
    // And the logits themselves, through the integer net's own entry on slices.
    let norm = match net.cfg.input_norm {
        InputNorm::Fixed => SliceNorm::Fixed,
        InputNorm::PerPatch => SliceNorm::PerPatch,
    };
    let got_logits = net
        .int8
        .as_ref()
        .unwrap()
        .with_outputs(&values, 9, norm, &mut crate::ModelState::new(), |l| {
            l.to_vec()
        })
        .unwrap();
    let d = max_abs_diff(&got_logits, &want_logits);
    assert!(d <= 1e-5, "logits differ by {d}");
    // A wrong length is refused naming both.
    let e = net
        .classify_into(&values[1..], 9, &mut rows)
        .unwrap_err()
        .to_string();
    assert!(e.contains("(9, 3, 32, 32)") && e.contains("27647"), "{e}");
}

#[test]
fn the_integer_net_classifies_from_several_threads_at_once_as_it_does_alone() {
    let net = shipped_q8_0();
    let side = net.input_side_px();
    let inputs: Vec<Tensor> = (0..4)
        .map(|i| random_tensor(&[3 + i, 3, side, side], 0.0, 1.0, 40 + i as u64))
        .collect();
    let alone: Vec<Vec<f32>> = inputs
        .iter()
        .map(|x| flat(&net.classify(x).unwrap()))
        .collect();
    let barrier = std::sync::Barrier::new(inputs.len());
    std::thread::scope(|scope| {
        for (x, want) in inputs.iter().zip(&alone) {
            let (net, barrier) = (&net, &barrier);
            scope.spawn(move || {
                barrier.wait();
                for _ in 0..5 {
                    assert_eq!(&flat(&net.classify(x).unwrap()), want);
                }
            });
        }
    });
}

#[test]
fn a_worker_state_gives_the_verdicts_of_the_stateless_path() {
    let net = shipped_q8_0();
    let side = net.input_side_px();
    let values = flat(&random_tensor(&[6, 3, side, side], 0.0, 1.0, 21));
    let mut want = crate::PatchRows::default();
    net.classify_into(&values, 6, &mut want).unwrap();
    // One state per worker, shared by several batch sizes (its buffers grow to the largest).
    let mut state = crate::ModelState::new();
    let mut got = crate::PatchRows::default();
    for batch in [6, 2, 6] {
        net.classify_into_with(
            &mut state,
            &values[..batch * 3 * side * side],
            batch,
            &mut got,
        )
        .unwrap();
        assert_eq!(got.probs[..], want.probs[..batch * crate::NUM_CLASSES]);
        assert_eq!(
            got.boxes[..],
            want.boxes[..if got.has_boxes { batch } else { 0 }]
        );
    }
}

#[test]
fn a_patch_gets_the_same_verdict_in_any_batch() {
    // What lets a batching stage concatenate several sources' patches: rows do not mix.
    let net = shipped_q8_0();
    let side = net.input_side_px();
    let a = random_tensor(&[2, 3, side, side], 0.0, 1.0, 7);
    let b = random_tensor(&[5, 3, side, side], 0.0, 1.0, 8);
    let both = Tensor::cat(&[&a, &b], 0).unwrap();
    let together = flat(&net.classify(&both).unwrap());
    let apart = [
        flat(&net.classify(&a).unwrap()),
        flat(&net.classify(&b).unwrap()),
    ]
    .concat();
    let d = max_abs_diff(&together, &apart);
    assert!(d <= 1e-5, "max |Δ softmax| {d} between one batch and two");
}

#[allow(clippy::unwrap_used)]
mod timing {
    use super::*;
    use crate::format::QuantDtype;
    use crate::testutil::{random_tensor, varmap_builder};

    /// Rough latency check without a release build (candle itself is built at opt-level 3 in dev):
    /// `cargo test -p saccade-models --lib timing -- --ignored --nocapture`. The criterion bench
    /// `benches/backbone.rs` is the reference measurement.
    #[test]
    #[ignore]
    fn print_patchnet_latency_per_format() {
        let dir = tempfile::tempdir().unwrap();
        let (_vm, vb) = varmap_builder();
        let net = PatchNet::new(&PatchNetConfig::default(), vb).unwrap();
        let float_path = dir.path().join("f32.safetensors");
        net.save_safetensors(&float_path).unwrap();
        let mut nets = vec![("f32", net)];
        for dtype in [QuantDtype::Q8_0, QuantDtype::Q4_0] {
            let path = dir.path().join(format!("{dtype}.gguf"));
            crate::registry::quantize_file(&float_path, &path, dtype).unwrap();
            nets.push((
                if dtype == QuantDtype::Q8_0 {
                    "q8_0"
                } else {
                    "q4_0"
                },
                PatchNet::load(&path, &Device::Cpu).unwrap(),
            ));
        }
        for batch in [1usize, 8, 32] {
            let x = random_tensor(&[batch, 3, 32, 32], 0.0, 1.0, 31);
            for (label, net) in &nets {
                net.classify(&x).unwrap();
                let reps = 20;
                let start = std::time::Instant::now();
                for _ in 0..reps {
                    net.classify(&x).unwrap();
                }
                let ms = start.elapsed().as_secs_f64() * 1e3 / reps as f64;
                eprintln!("batch {batch:>2} {label}: {ms:.3} ms");
            }
        }
    }
}
