//! The training graphs on a CUDA device (built from candle tensor ops there, custom ops on the CPU) against
//! the CPU: the same variables give the same outputs and the same gradients. Needs a GPU:
//! `cargo test -p saccade-models --features cuda -- --ignored cuda_`.

#![allow(clippy::unwrap_used)]

use crate::glancenet::{GlanceNetConfig, GlanceNetModel};
use crate::patchnet::{InputNorm, PatchNet, PatchNetConfig};
use crate::testutil::{flat, max_abs_diff, random_tensor, seed_vars, set_batch_norm_params};
use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};

fn cuda() -> Device {
    Device::new_cuda(0)
        .expect("a CUDA device (these tests are run with --ignored on a GPU machine)")
}

/// Seeded variables on the CPU and a copy of them on `device`, each in its own `VarMap`.
fn twin_varmaps<T>(
    build: impl Fn(VarBuilder) -> candle_core::Result<T>,
    device: &Device,
    seed: u64,
) -> ((VarMap, T), (VarMap, T)) {
    let cpu_map = VarMap::new();
    build(VarBuilder::from_varmap(&cpu_map, DType::F32, &Device::Cpu)).unwrap();
    seed_vars(&cpu_map, seed);
    // Batch-norm scales and shifts away from 1 and 0, as the CPU tests do.
    set_batch_norm_params(&cpu_map, 900);
    let cpu_net = build(VarBuilder::from_varmap(&cpu_map, DType::F32, &Device::Cpu)).unwrap();
    let dev_map = VarMap::new();
    let dev_net = build(VarBuilder::from_varmap(&dev_map, DType::F32, device)).unwrap();
    {
        let cpu = cpu_map.data().lock().unwrap();
        for (name, var) in dev_map.data().lock().unwrap().iter() {
            var.set(&cpu[name].as_tensor().to_device(device).unwrap())
                .unwrap();
        }
    }
    ((cpu_map, cpu_net), (dev_map, dev_net))
}

/// Outputs within `1e-3` (relative to their largest), and the gradients of `sum(out · weights)` of every
/// variable that has one within `1e-3` of the largest entry.
fn check_twins(cpu: (&VarMap, Tensor), dev: (&VarMap, Tensor), what: &str) {
    let (a, b) = (flat(&cpu.1), flat(&dev.1.to_device(&Device::Cpu).unwrap()));
    let scale = a.iter().fold(1f32, |m, v| m.max(v.abs()));
    assert!(
        max_abs_diff(&a, &b) <= 1e-3 * scale,
        "{what}: outputs differ by {}",
        max_abs_diff(&a, &b)
    );
    let weights = random_tensor(cpu.1.dims(), -1.0, 1.0, 77);
    let g_cpu = cpu
        .1
        .mul(&weights)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let w_dev = weights.to_device(dev.1.device()).unwrap();
    let g_dev = dev
        .1
        .mul(&w_dev)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let dev_vars = dev.0.data().lock().unwrap();
    let mut checked = 0;
    for (name, var) in cpu.0.data().lock().unwrap().iter() {
        let got = g_dev.get(dev_vars[name].as_tensor());
        let Some(want) = g_cpu.get(var.as_tensor()) else {
            assert!(
                got.is_none(),
                "{what}: {name} has a gradient on the device only"
            );
            continue;
        };
        let (want, got) = (
            flat(want),
            flat(&got.unwrap().to_device(&Device::Cpu).unwrap()),
        );
        let scale = want.iter().fold(1e-3f32, |m, v| m.max(v.abs()));
        assert!(
            max_abs_diff(&want, &got) <= 1e-3 * scale,
            "{what}: gradient of {name} differs by {} (largest {scale})",
            max_abs_diff(&want, &got)
        );
        checked += 1;
    }
    assert!(checked > 0);
    println!("{what}: outputs and {checked} gradients match");
}

#[test]
#[ignore = "needs a CUDA device"]
fn cuda_patchnet_training_graph_matches_cpu() {
    let device = cuda();
    let cfg = PatchNetConfig {
        input_side_px: 16,
        channels: [4, 8, 8],
        hidden: 16,
        input_norm: InputNorm::PerPatch,
        box_head: false,
        ..PatchNetConfig::default()
    };
    let x = random_tensor(&[5, 3, 16, 16], 0.0, 1.0, 3);
    for batch_norm in [false, true] {
        let build = |vb: VarBuilder| {
            if batch_norm {
                PatchNet::new_with_batch_norm(&cfg, vb)
            } else {
                PatchNet::new(&cfg, vb)
            }
        };
        let ((cpu_map, cpu_net), (dev_map, dev_net)) = twin_varmaps(build, &device, 11);
        check_twins(
            (&cpu_map, cpu_net.train_logits(&x, None).unwrap()),
            (&dev_map, dev_net.train_logits(&x, None).unwrap()),
            &format!("patchnet (batch norm {batch_norm})"),
        );
    }
}

#[test]
#[ignore = "needs a CUDA device"]
fn cuda_glance_training_graph_matches_cpu() {
    let device = cuda();
    let cfg = GlanceNetConfig {
        input_width_px: 40,
        input_height_px: 24,
        channels: [4, 6, 6, 5],
        ..GlanceNetConfig::default()
    };
    let x = random_tensor(&[3, 3, 24, 40], 0.0, 1.0, 4);
    for batch_norm in [false, true] {
        let build = |vb: VarBuilder| {
            if batch_norm {
                GlanceNetModel::new_with_batch_norm(&cfg, vb)
            } else {
                GlanceNetModel::new(&cfg, vb)
            }
        };
        let ((cpu_map, cpu_net), (dev_map, dev_net)) = twin_varmaps(build, &device, 12);
        let (a, b) = (
            cpu_net.train_maps(&x).unwrap(),
            dev_net.train_maps(&x).unwrap(),
        );
        let join = |m: &crate::GlanceMaps| {
            let obj = m.objectness_logits.flatten_all().unwrap();
            let size = m.log2_side.flatten_all().unwrap();
            Tensor::cat(&[obj, size, m.class_logits.flatten_all().unwrap()], 0).unwrap()
        };
        check_twins(
            (&cpu_map, join(&a)),
            (&dev_map, join(&b)),
            &format!("glance net (batch norm {batch_norm})"),
        );
    }
}
