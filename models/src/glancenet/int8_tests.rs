//! The glance net's integer plan against the float path, on seeded and shipped weights, and its timing.

#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::HashMap;
    use std::path::{Path, PathBuf};

    use super::super::*;
    use crate::format::QuantDtype;
    use crate::glancenet::{GlanceNetModel, GLANCENET_KIND};
    use crate::registry::{quantize_file, save_safetensors};
    use crate::testutil::{flat, max_abs_diff, random_tensor};
    use crate::{GlanceNet, NUM_CLASSES};

    /// A glance net of the shipped shape with seeded weights, uniform ±sqrt(6 / fan_in) (He: activations keep
    /// their scale through the ReLUs, so no layer is dead or saturated), biases ±0.1, saved as f32
    /// safetensors and quantised to Q8_0; returns (f32 path, Q8_0 path).
    fn seeded_files(dir: &Path, input: (usize, usize), seed: u64) -> (PathBuf, PathBuf) {
        let cfg = GlanceNetConfig {
            input_width_px: input.0,
            input_height_px: input.1,
            ..GlanceNetConfig::default()
        };
        let tensors: HashMap<String, Tensor> = cfg
            .tensor_specs()
            .into_iter()
            .enumerate()
            .map(|(i, spec)| {
                let fan_in: usize = spec.shape.iter().skip(1).product();
                let a = if spec.shape.len() > 1 {
                    (6.0 / fan_in as f32).sqrt()
                } else {
                    0.1
                };
                let t = random_tensor(&spec.shape, -a, a, seed + i as u64);
                (spec.name, t)
            })
            .collect();
        let float_path = dir.join("glance.safetensors");
        let json = serde_json::to_string(&cfg).unwrap();
        save_safetensors(&tensors, &json, GLANCENET_KIND, &float_path).unwrap();
        let q8_path = dir.join("glance.q8_0.gguf");
        quantize_file(&float_path, &q8_path, QuantDtype::Q8_0).unwrap();
        (float_path, q8_path)
    }

    fn load(path: &Path) -> GlanceNetModel {
        GlanceNetModel::load(path, &Device::Cpu).unwrap()
    }

    /// Range of a vector: the scale the logit tolerances are stated against.
    fn spread(v: &[f32]) -> f32 {
        let (lo, hi) = v
            .iter()
            .fold((f32::MAX, f32::MIN), |(lo, hi), &x| (lo.min(x), hi.max(x)));
        hi - lo
    }

    /// A Q8_0 file runs on the integer path and an f32 or f16 file does not; a Q8_0 glance file keeps conv3
    /// and conv4 (288 taps) in Q8_0 flattened with one scale per row, conv1 (27) and conv2 (144) in f16.
    #[test]
    fn q8_0_files_run_on_the_integer_path() {
        let dir = tempfile::tempdir().unwrap();
        let (float_path, q8_path) = seeded_files(dir.path(), (64, 40), 100);
        let report = quantize_file(&float_path, &dir.path().join("q.gguf"), QuantDtype::Q8_0)
            .unwrap()
            .tensors;
        let dtype = |name: &str| {
            let t = report.iter().find(|t| t.name == name).unwrap();
            (t.shape.clone(), t.dtype.clone())
        };
        assert_eq!(dtype("conv1.weight"), (vec![16, 3, 3, 3], "f16".into()));
        assert_eq!(dtype("conv2.weight"), (vec![32, 16, 3, 3], "f16".into()));
        assert_eq!(dtype("conv3.weight"), (vec![32, 288], "q8_0".into()));
        assert_eq!(dtype("conv4.weight"), (vec![32, 288], "q8_0".into()));
        let q = load(&q8_path);
        assert!(q.runs_integer_kernels());
        assert!(!q.without_integer_kernels().runs_integer_kernels());
        assert!(q
            .describe()
            .contains("conv3, conv4 Q8_0, conv2 quantised at load"));
        let int8 = Int8GlanceNet::from_weight_set(
            q.config(),
            &crate::format::WeightSet::read(&q8_path, &Device::Cpu).unwrap(),
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            int8.kernel_sources(),
            "conv3, conv4 Q8_0, conv2 quantised at load"
        );
        assert!(q.describe().contains("integer kernels"), "{}", q.describe());
        assert!(!load(&float_path).runs_integer_kernels());
        assert!(!load(&float_path).describe().contains("int8"));
        for dtype in [QuantDtype::F16, QuantDtype::Q4_0, QuantDtype::F32] {
            let path = dir.path().join(format!("glance-{dtype}.gguf"));
            quantize_file(&float_path, &path, dtype).unwrap();
            assert!(!load(&path).runs_integer_kernels(), "{dtype}");
        }
    }

    /// Integer path against the f32 net and against the same Q8_0 weights through candle, on seeded weights
    /// and a batch of two random images of an odd size (45×27 → 23×14 → 12×7 → 12×7 maps: every padding edge
    /// and the stride-1 conv4). Measured max |Δ objectness logit| relative to the logits' range (about 4.2):
    /// 0.013 against candle on the same weights (activation rounding alone), 0.013 against f32 (weights and
    /// activations); the bounds are 0.05 and 0.06. Sizes (measured 0.014), pooled features (0.007) and class
    /// logits (0.005) are held to the same relative bounds. Seeds are fixed, so the outcome is the same on
    /// every run.
    #[test]
    fn integer_path_stays_close_to_float_on_seeded_weights() {
        let dir = tempfile::tempdir().unwrap();
        let (float_path, q8_path) = seeded_files(dir.path(), (90, 53), 200);
        let (float, q8) = (load(&float_path), load(&q8_path));
        assert!(q8.runs_integer_kernels());
        let x = random_tensor(&[2, 3, 53, 90], 0.0, 1.0, 7);
        let got = q8.forward_maps(&x).unwrap();
        assert_eq!(got.objectness_logits.dims(), [2, 1, 7, 12]);
        assert_eq!(got.pooled.dims(), [2, 32]);
        assert_eq!(got.class_logits.dims(), [2, NUM_CLASSES]);
        for (label, reference, bound) in [
            (
                "candle, same Q8_0 weights",
                q8.without_integer_kernels(),
                0.05f32,
            ),
            ("f32", float, 0.06),
        ] {
            let want = reference.forward_maps(&x).unwrap();
            for (part, a, b) in [
                (
                    "objectness",
                    &got.objectness_logits,
                    &want.objectness_logits,
                ),
                ("log2 side", &got.log2_side, &want.log2_side),
                ("pooled", &got.pooled, &want.pooled),
                ("class logits", &got.class_logits, &want.class_logits),
            ] {
                let (a, b) = (flat(a), flat(b));
                let d = max_abs_diff(&a, &b) / spread(&b);
                eprintln!(
                    "{part} vs {label}: max |Δ| / range = {d:.4} (range {:.3})",
                    spread(&b)
                );
                assert!(d <= bound, "{part} vs {label}: {d} > {bound}");
            }
        }
    }

    /// Objectness of the n best cells, best first (ties to the lower index).
    fn top_cells(p: &[f32], n: usize) -> Vec<usize> {
        let mut order: Vec<usize> = (0..p.len()).collect();
        order.sort_by(|&a, &b| p[b].total_cmp(&p[a]).then(a.cmp(&b)));
        order.truncate(n);
        order
    }

    /// The shipped glance net on a real frame (`tools/samples/00600.jpg`, 1360×800, shrunk to 448×264): the
    /// `glance_into` (slices into the caller's map) gives what `glance` gives through tensors: the same map
    /// size, objectness, box sides and feature within 1e-6, class probabilities within 1e-5 (the class head's
    /// dot products are summed in another order than candle's).
    #[test]
    fn glance_into_matches_the_tensor_path() {
        let weights = Path::new(env!("CARGO_MANIFEST_DIR")).join("weights");
        let q8 = load(&weights.join("glancenet.q8_0.gguf"));
        assert!(q8.runs_integer_kernels(), "{}", q8.describe());
        let (w, h) = q8.input_size_px();
        let chw = flat(&random_tensor(&[1, 3, h, w], 0.0, 1.0, 5));
        let x = Tensor::from_vec(chw.clone(), (1, 3, h, w), &Device::Cpu).unwrap();
        let want = q8.glance(&x).unwrap();
        let mut got = crate::GlanceMap::default();
        let (mut state, mut with_state) = (crate::ModelState::new(), crate::GlanceMap::default());
        for _ in 0..2 {
            q8.glance_into(&chw, &mut got).unwrap();
            // A worker's own state gives the same maps as the thread's fallback.
            q8.glance_into_with(&mut state, &chw, &mut with_state)
                .unwrap();
            assert_eq!(
                (
                    &with_state.objectness,
                    &with_state.feature,
                    &with_state.class_probs
                ),
                (&got.objectness, &got.feature, &got.class_probs)
            );
            assert_eq!(
                (got.map_width, got.map_height, got.stride_px),
                (want.map_width, want.map_height, want.stride_px)
            );
            for (name, a, b, tol) in [
                ("objectness", &got.objectness, &want.objectness, 1e-6),
                (
                    "box sides",
                    &got.box_side_glance_px,
                    &want.box_side_glance_px,
                    1e-6,
                ),
                ("feature", &got.feature, &want.feature, 1e-6),
                (
                    "class probabilities",
                    got.class_probs.as_ref().unwrap(),
                    want.class_probs.as_ref().unwrap(),
                    1e-5,
                ),
            ] {
                assert_eq!(a.len(), b.len(), "{name}");
                let d = max_abs_diff(a, b);
                let scale = b.iter().fold(1f32, |m, v| m.max(v.abs()));
                assert!(d <= tol * scale, "{name} differ by {d}");
            }
        }
        let e = q8.glance_into(&chw[1..], &mut got).unwrap_err().to_string();
        assert!(e.contains(&format!("(1, 3, {h}, {w})")), "{e}");
    }

    /// Q8_0 file on the integer path against the f32 file through candle. Measured: max |Δ objectness| 0.015;
    /// the same best cell and the same 8 best cells (the sixth ranked eighth); box sides within 2^0.028 at
    /// those cells and 2^0.18 anywhere (log2 sides span 4.5). Bounds: 0.05 in probability; the same best cell
    /// and each of the f32 net's 8 best cells (what `topk` looks at first) among the integer path's 10 best;
    /// |Δ log2 side| 0.1 at the 8 best cells and a tenth of the range anywhere.
    #[test]
    fn shipped_net_on_a_real_frame_matches_float() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let weights = root.join("models/weights");
        let float = load(&weights.join("glancenet.safetensors"));
        let q8 = load(&weights.join("glancenet.q8_0.gguf"));
        assert!(q8.runs_integer_kernels(), "{}", q8.describe());
        let (w, h) = q8.input_size_px();
        let frame = image::open(root.join("tools/samples/00600.jpg"))
            .unwrap()
            .resize_exact(w as u32, h as u32, image::imageops::FilterType::Triangle)
            .to_rgb8();
        let mut chw = vec![0f32; 3 * w * h];
        for (i, px) in frame.pixels().enumerate() {
            for c in 0..3 {
                chw[c * w * h + i] = px[c] as f32 / 255.0;
            }
        }
        let x = Tensor::from_vec(chw, (1, 3, h, w), &Device::Cpu).unwrap();
        let (want, got) = (float.glance(&x).unwrap(), q8.glance(&x).unwrap());
        assert_eq!(
            (got.map_width, got.map_height, got.stride_px),
            (want.map_width, want.map_height, want.stride_px)
        );
        let d = max_abs_diff(&got.objectness, &want.objectness);
        let (top_want, top_got) = (
            top_cells(&want.objectness, 8),
            top_cells(&got.objectness, 10),
        );
        eprintln!(
            "real frame: max |Δ objectness| = {d:.4}; f32 best {top_want:?} ({:?}), integer best {top_got:?}",
            top_want.iter().map(|&i| want.objectness[i]).collect::<Vec<_>>()
        );
        assert!(d <= 0.05, "max |Δ objectness| {d}");
        assert!(
            top_want.iter().all(|c| top_got.contains(c)),
            "f32 best cells {top_want:?}, integer path's {top_got:?}"
        );
        assert_eq!(top_want[0], top_got[0], "best cell");
        let log2_side_diff = |cells: &mut dyn Iterator<Item = usize>| {
            cells
                .map(|i| {
                    (got.box_side_glance_px[i] / want.box_side_glance_px[i])
                        .log2()
                        .abs()
                })
                .fold(0f32, f32::max)
        };
        let all = log2_side_diff(&mut (0..want.objectness.len()));
        let best = log2_side_diff(&mut top_want.iter().copied());
        let log2_sides: Vec<f32> = want.box_side_glance_px.iter().map(|s| s.log2()).collect();
        eprintln!(
            "max |Δ log2 side|: {all:.4} over all cells (range {:.3}), {best:.4} at the 8 best",
            spread(&log2_sides)
        );
        assert!(
            best <= 0.1,
            "box sides at the best cells differ by 2^{best}"
        );
        assert!(
            all <= 0.1 * spread(&log2_sides),
            "box sides differ by 2^{all}"
        );
        assert!(max_abs_diff(&got.feature, &want.feature) <= 0.05 * spread(&want.feature));
        let (pg, pw) = (got.class_probs.unwrap(), want.class_probs.unwrap());
        assert!(max_abs_diff(&pg, &pw) <= 0.05, "class probabilities");
    }

    /// Wrong input shapes are `BadInput` from `glance` and errors (never panics) from `forward_maps`.
    #[test]
    fn bad_input_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let (_, q8_path) = seeded_files(dir.path(), (64, 40), 300);
        let net = load(&q8_path);
        assert!(net.runs_integer_kernels());
        for bad in [
            vec![1, 3, 40, 65],
            vec![1, 4, 40, 64],
            vec![2, 3, 40, 64],
            vec![3, 40, 64],
            vec![1, 3, 0, 64],
        ] {
            let x = Tensor::zeros(bad.as_slice(), DType::F32, &Device::Cpu).unwrap();
            let err = net.glance(&x).unwrap_err();
            assert!(matches!(err, ModelError::BadInput { .. }), "{bad:?}: {err}");
        }
        for bad in [
            vec![1, 4, 40, 64],
            vec![0, 3, 40, 64],
            vec![1, 3, 0, 64],
            vec![3, 40, 64],
        ] {
            let x = Tensor::zeros(bad.as_slice(), DType::F32, &Device::Cpu).unwrap();
            assert!(net.forward_maps(&x).is_err(), "{bad:?}");
        }
        // A frame of another size than the config's still runs through `forward_maps`, as candle's does.
        let x = random_tensor(&[1, 3, 17, 9], 0.0, 1.0, 3);
        let maps = net.forward_maps(&x).unwrap();
        assert_eq!(maps.objectness_logits.dims(), [1, 1, 3, 2]);
    }
}

#[allow(clippy::unwrap_used)]
mod timing {
    use super::super::*;
    use crate::glancenet::GlanceNetModel;
    use crate::testutil::random_tensor;
    use crate::GlanceNet;

    /// Glance latency of the shipped f32 file (candle) and Q8_0 file (integer path) at 448×264 in one run:
    /// `cargo test --release -p saccade-models --lib glancenet_int8::timing -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn print_glance_latency_f32_vs_int8() {
        let weights = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("weights");
        let nets = [
            ("f32", "glancenet.safetensors"),
            ("q8_0 int8", "glancenet.q8_0.gguf"),
        ]
        .map(|(label, file)| {
            let net = GlanceNetModel::load(&weights.join(file), &Device::Cpu).unwrap();
            (label, net)
        });
        let (w, h) = nets[0].1.input_size_px();
        let x = random_tensor(&[1, 3, h, w], 0.0, 1.0, 1);
        for _ in 0..3 {
            for (label, net) in &nets {
                net.glance(&x).unwrap();
                let mut times: Vec<f64> = (0..30)
                    .map(|_| {
                        let start = std::time::Instant::now();
                        net.glance(&x).unwrap();
                        start.elapsed().as_secs_f64() * 1e3
                    })
                    .collect();
                times.sort_by(f64::total_cmp);
                eprintln!(
                    "{label}: p50 {:.2} ms, min {:.2} ms ({})",
                    times[times.len() / 2],
                    times[0],
                    net.describe()
                );
            }
        }
    }
}
