//! PatchNet latency per batch size and weight format (f32, Q8_0, Q4_0 of the shipped weights), with file sizes,
//! so a change to the backbone or to quantisation shows its speed and size ratios against f32 in one run; the
//! `glance` group does the same for the shipped glance net (f32 against Q8_0 on the integer kernels).
//! The `int8` group times the integer matrix product alone with every kernel this CPU runs (scalar, AVX2,
//! AVX-512 VNNI, NEON, NEON dot product), at the shipped nets' shapes, on one thread.
//! The `train_step` group times one forward + backward pass of the trainers' graphs (NHWC, convolutions as
//! im2col matrix products) against the same networks' candle conv2d graphs.

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use saccade_models::int8::{self, Int8Kernel, Int8Matrix, QuantRows};
use saccade_models::{
    quantize_file, GlanceNet, GlanceNetConfig, GlanceNetModel, PatchClassifier, PatchNet,
    PatchNetConfig, QuantDtype,
};
use std::hint::black_box;
use std::path::PathBuf;

/// The shipped patch classifier (f32 safetensors) and its GGUF quantisations in each dtype; returns
/// (label, path). Falls back to a random-weight net of the default shape when the shipped file is missing.
#[allow(clippy::unwrap_used)]
fn model_files(dir: &std::path::Path) -> Vec<(&'static str, PathBuf)> {
    let shipped =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/weights/patchnet.safetensors");
    let float_path = if shipped.exists() {
        shipped
    } else {
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        let net = PatchNet::new(&PatchNetConfig::default(), vb).unwrap();
        let path = dir.join("patch-f32.safetensors");
        net.save_safetensors(&path).unwrap();
        path
    };
    let mut files = vec![("f32", float_path.clone())];
    for (label, dtype) in [("q8_0", QuantDtype::Q8_0), ("q4_0", QuantDtype::Q4_0)] {
        let path = dir.join(format!("patch-{label}.gguf"));
        quantize_file(&float_path, &path, dtype).unwrap();
        files.push((label, path));
    }
    files
}

#[allow(clippy::unwrap_used)]
fn backbone(c: &mut Criterion) {
    let dir = std::env::temp_dir().join(format!("saccade-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let files = model_files(&dir);
    let f32_bytes = std::fs::metadata(&files[0].1).unwrap().len();
    for (label, path) in &files {
        let bytes = std::fs::metadata(path).unwrap().len();
        println!(
            "file {label}: {bytes} B ({:.2}× smaller than f32)",
            f32_bytes as f64 / bytes as f64
        );
    }
    let mut group = c.benchmark_group("patchnet");
    for batch in [1usize, 8, 32] {
        let x = Tensor::rand(0f32, 1f32, (batch, 3, 32, 32), &Device::Cpu).unwrap();
        for (label, path) in &files {
            let net = PatchNet::load(path, &Device::Cpu).unwrap();
            group.bench_with_input(BenchmarkId::new(*label, batch), &x, |b, x| {
                b.iter(|| black_box(net.classify(x).unwrap()))
            });
        }
    }
    group.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

/// The shipped glance net on one 448×264 frame: the f32 file through candle's conv2d, and the Q8_0 file on
/// the integer kernels (`glancenet_int8`) and, for reference, the same Q8_0 weights through candle.
#[allow(clippy::unwrap_used)]
fn glance(c: &mut Criterion) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/weights");
    let float = GlanceNetModel::load(&dir.join("glancenet.safetensors"), &Device::Cpu).unwrap();
    let q8 = GlanceNetModel::load(&dir.join("glancenet.q8_0.gguf"), &Device::Cpu).unwrap();
    assert!(q8.runs_integer_kernels(), "{}", q8.describe());
    let (w, h) = q8.input_size_px();
    let x = Tensor::rand(0f32, 1f32, (1, 3, h, w), &Device::Cpu).unwrap();
    let mut group = c.benchmark_group("glance");
    for (label, net) in [
        ("f32", float),
        ("q8_0_candle", q8.without_integer_kernels()),
        ("q8_0_int8", q8),
    ] {
        group.bench_function(BenchmarkId::new(label, format!("{w}x{h}")), |b| {
            b.iter(|| black_box(net.glance(&x).unwrap()))
        });
    }
    group.finish();
}

/// One forward + backward pass: the patch classifier at the trainer's batch of 128 (32×32) and the glance
/// net at its batch of 16 (320×240), each through candle's conv2d graph and through the training graph.
#[allow(clippy::unwrap_used)]
fn train_step(c: &mut Criterion) {
    let mut group = c.benchmark_group("train_step");
    group.sample_size(10);
    let cfg = PatchNetConfig {
        channels: [32, 64, 128],
        ..PatchNetConfig::default()
    };
    let x = Tensor::rand(0f32, 1f32, (128, 3, 32, 32), &Device::Cpu).unwrap();
    for (label, batch_norm) in [("patchnet", false), ("patchnet_bn", true)] {
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        let net = if batch_norm {
            PatchNet::new_with_batch_norm(&cfg, vb).unwrap()
        } else {
            PatchNet::new(&cfg, vb).unwrap()
        };
        if !batch_norm {
            group.bench_function(BenchmarkId::new(label, "conv2d"), |b| {
                b.iter(|| {
                    black_box(
                        net.logits(&x)
                            .unwrap()
                            .sum_all()
                            .unwrap()
                            .backward()
                            .unwrap(),
                    )
                })
            });
        }
        group.bench_function(BenchmarkId::new(label, "train_graph"), |b| {
            b.iter(|| {
                let loss = net.train_logits(&x, None).unwrap().sum_all().unwrap();
                black_box(loss.backward().unwrap())
            })
        });
    }
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let glance = GlanceNetModel::new(&GlanceNetConfig::default(), vb).unwrap();
    let frames = Tensor::rand(0f32, 1f32, (16, 3, 240, 320), &Device::Cpu).unwrap();
    for (label, train) in [("conv2d", false), ("train_graph", true)] {
        group.bench_function(BenchmarkId::new("glance", label), |b| {
            b.iter(|| {
                let maps = if train {
                    glance.train_maps(&frames).unwrap()
                } else {
                    glance.forward_maps(&frames).unwrap()
                };
                let loss = maps.objectness_logits.sum_all().unwrap();
                black_box(loss.backward().unwrap())
            })
        });
    }
    group.finish();
}

/// The integer product of each int8 layer of the shipped nets, `(name, m, n, k)`: the patch classifier at a
/// batch of 8 patches (32×32: conv2 on 16×16, conv3 on 8×8, fc1), and the glance net on a 448×264 frame
/// (conv2 on 224×132 with stride 2, conv3 and conv4 on 56×33).
const INT8_SHAPES: [(&str, usize, usize, usize); 5] = [
    ("patch_conv2_b8", 8 * 16 * 16, 64, 9 * 32),
    ("patch_conv3_b8", 8 * 8 * 8, 128, 9 * 64),
    ("patch_fc1_b8", 8, 256, 2048),
    ("glance_conv2", 112 * 66, 32, 9 * 16),
    ("glance_conv3", 56 * 33, 32, 9 * 32),
];

/// One int8 matrix product per kernel and shape, on the calling thread (the kernels' own speed; `matmul`
/// splits large products across cores).
fn int8_kernels(c: &mut Criterion) {
    let available = Int8Kernel::available();
    let names: Vec<&str> = available.iter().map(|k| k.name()).collect();
    println!(
        "int8 kernel: {} (available: {})",
        int8::kernel_name(),
        names.join(", ")
    );
    let mut group = c.benchmark_group("int8");
    for (name, m, n, k) in INT8_SHAPES {
        let w: Vec<f32> = (0..n * k)
            .map(|i| ((i * 7919 % 1000) as f32 - 500.0) / 500.0)
            .collect();
        let x: Vec<f32> = (0..m * k).map(|i| (i * 104729 % 997) as f32).collect();
        let w = Int8Matrix::quantize(&w, n, k);
        let mut a = QuantRows::default();
        a.quantize(&x, m, k);
        let mut out = vec![0f32; m * n];
        for &kernel in &available {
            group.bench_function(BenchmarkId::new(kernel.name(), name), |b| {
                b.iter(|| {
                    int8::matmul_on_this_thread(kernel, &a, &w, true, &mut out);
                    black_box(&out);
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, int8_kernels, backbone, glance, train_step);
criterion_main!(benches);
