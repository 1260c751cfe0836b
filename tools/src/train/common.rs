//! Pieces every trainer shares: seeded RNGs, the learning-rate schedule, batches of CHW images as tensors,
//! progress bars, and saving a model's tensors with its config.

use std::collections::HashMap;
use std::path::Path;

use anyhow::Context;
use candle_core::{Device, Tensor};
use indicatif::{ProgressBar, ProgressStyle};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// A deterministic RNG for one purpose of one run: the same `(seed, stream)` always gives the same numbers,
/// and different streams do not share numbers.
pub fn rng_for(seed: u64, stream: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(stream);
    rng
}

/// Cosine decay from `peak_lr` to 5 % of it, after a linear warm-up over the first 3 % of steps.
pub fn cosine_lr(peak_lr: f64, step: usize, total_steps: usize) -> f64 {
    let total = total_steps.max(1) as f64;
    let warmup = (total * 0.03).max(1.0);
    let s = step as f64;
    if s < warmup {
        return peak_lr * (s + 1.0) / warmup;
    }
    let progress = ((s - warmup) / (total - warmup).max(1.0)).clamp(0.0, 1.0);
    let floor = 0.05 * peak_lr;
    floor + (peak_lr - floor) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
}

/// Stacks CHW f32 images of one shape into a `(b, c, h, w)` tensor.
pub fn batch_tensor(
    images: &[Vec<f32>],
    channels: usize,
    height: usize,
    width: usize,
    device: &Device,
) -> anyhow::Result<Tensor> {
    let per = channels * height * width;
    let mut flat = Vec::with_capacity(images.len() * per);
    for (i, img) in images.iter().enumerate() {
        anyhow::ensure!(
            img.len() == per,
            "image {i} of the batch has {} values, expected {per} ({channels}×{height}×{width})",
            img.len()
        );
        flat.extend_from_slice(img);
    }
    Ok(Tensor::from_vec(
        flat,
        (images.len(), channels, height, width),
        device,
    )?)
}

/// The device a trainer runs on, from `--device`: `cpu`, or `cuda` (GPU 0; the binary must be built with
/// `--features cuda`, else candle reports that CUDA support is missing).
pub fn train_device(name: &str) -> anyhow::Result<Device> {
    match name {
        "cpu" => Ok(Device::Cpu),
        "cuda" => Device::new_cuda(0)
            .context("--device cuda: opening CUDA device 0 (needs a build with `--features cuda`)"),
        other => anyhow::bail!("--device is `{other}`, expected `cpu` or `cuda`"),
    }
}

/// An RNG for sample `index` of epoch `epoch` of one run: each sample's augmentation draws from its own
/// stream, so batches can be made on any number of threads and still give the same pixels.
pub fn sample_rng(seed: u64, epoch: usize, index: usize) -> ChaCha8Rng {
    rng_for(seed, (1u64 << 48) | ((epoch as u64) << 28) | index as u64)
}

/// A progress bar over `len` steps with a message slot for the running loss.
pub fn progress(len: usize, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len as u64);
    if let Ok(style) = ProgressStyle::with_template(
        "{prefix} [{elapsed_precise}] {bar:30} {pos}/{len} ({eta}) {msg}",
    ) {
        bar.set_style(style);
    }
    bar.set_prefix(what.to_string());
    bar
}

/// Saves `(name, tensor)` pairs with the model kind and config through the models crate's writer.
pub fn save_named(
    tensors: Vec<(String, Tensor)>,
    config_json: &str,
    kind: &str,
    path: &Path,
) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let map: HashMap<String, Tensor> = tensors.into_iter().collect();
    saccade_models::weights::save_safetensors(&map, config_json, kind, path)
        .with_context(|| format!("saving {}", path.display()))
}

/// A `MIN,MAX` flag's two values, checked: `0 < MIN ≤ MAX`.
pub fn positive_range(flag: &str, values: &[f32]) -> anyhow::Result<(f32, f32)> {
    match values {
        &[min, max] if min > 0.0 && min <= max => Ok((min, max)),
        _ => anyhow::bail!("{flag} {values:?}: expected MIN,MAX with 0 < MIN ≤ MAX"),
    }
}

/// Size of a file in bytes (0 when it cannot be read), for reports.
pub fn file_bytes(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// Replace every variable of `varmap` by seeded values, so training starts from the same weights on every run
/// (candle's CPU initialisers cannot be seeded). Weights: uniform ±1/sqrt(fan_in) as candle-nn's `linear`
/// initialises them; biases: uniform ±0.1. Batch-norm scales and shifts (`….bn.*`) keep their constant
/// initialisation (1 and 0) and are left out of the numbering, so the other variables get the same values
/// with and without batch norm. Build the model once to create the variables, call this, then build the model
/// again from the same `VarMap`: the second build picks up the seeded variables.
pub fn seed_varmap(varmap: &candle_nn::VarMap, seed: u64) -> anyhow::Result<()> {
    use rand::Rng;
    let data = varmap
        .data()
        .lock()
        .map_err(|_| anyhow::anyhow!("variable map lock poisoned"))?;
    let mut names: Vec<&String> = data.keys().filter(|n| !n.contains(".bn.")).collect();
    names.sort();
    for (i, name) in names.into_iter().enumerate() {
        let var = &data[name];
        let dims = var.as_tensor().dims().to_vec();
        let n: usize = dims.iter().product();
        let bound = if dims.len() > 1 {
            let fan_in: usize = dims.iter().skip(1).product();
            1.0 / (fan_in.max(1) as f32).sqrt()
        } else {
            0.1
        };
        let mut rng = rng_for(seed, 0x5eed_0000 + i as u64);
        let values: Vec<f32> = (0..n).map(|_| rng.random_range(-bound..bound)).collect();
        let t = Tensor::from_vec(values, dims, var.as_tensor().device())?;
        var.set(&t)?;
    }
    Ok(())
}

/// Start training from a trained net: every variable of `varmap` that the float checkpoint `path` holds
/// takes its value. A variable with more rows (dim 0) than the stored tensor — a head grown by new outputs —
/// takes the stored rows first and keeps its own (seeded) values, scaled by 0.1, for the new rows. Batch-norm
/// variables (`….bn.*`) keep their initialisation. Returns how many variables were set.
pub fn init_varmap_from(varmap: &candle_nn::VarMap, path: &Path) -> anyhow::Result<usize> {
    let stored =
        candle_core::safetensors::load(path, &candle_core::Device::Cpu).with_context(|| {
            format!(
                "reading initial weights {} (float safetensors)",
                path.display()
            )
        })?;
    let data = varmap
        .data()
        .lock()
        .map_err(|_| anyhow::anyhow!("variable map lock poisoned"))?;
    let mut set = 0;
    for (name, var) in data.iter() {
        let Some(value) = stored.get(name) else {
            continue;
        };
        let have = var.as_tensor().dims().to_vec();
        let value = value.to_device(var.as_tensor().device())?;
        if value.dims() == have.as_slice() {
            var.set(&value)?;
        } else if value.dims().len() == have.len()
            && value.dims()[1..] == have[1..]
            && value.dims()[0] < have[0]
        {
            let n = value.dims()[0];
            let fresh = var
                .as_tensor()
                .narrow(0, n, have[0] - n)?
                .affine(0.1, 0.0)?;
            var.set(&Tensor::cat(&[&value, &fresh], 0)?)?;
        } else {
            anyhow::bail!(
                "initial weights {}: tensor `{name}` has shape {:?}, the net needs {have:?}",
                path.display(),
                value.dims()
            );
        }
        set += 1;
    }
    Ok(set)
}

/// Parses `WIDTHxHEIGHT`.
pub fn parse_size(text: &str) -> anyhow::Result<(usize, usize)> {
    let (w, h) = text
        .split_once(['x', '×'])
        .with_context(|| format!("size `{text}`: expected WIDTHxHEIGHT, e.g. 448x264"))?;
    let parse = |v: &str| {
        v.trim()
            .parse::<usize>()
            .ok()
            .filter(|n| *n > 0)
            .with_context(|| format!("size `{text}`: `{v}` is not a positive integer"))
    };
    Ok((parse(w)?, parse(h)?))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    #[test]
    fn ranges_need_two_positive_ordered_values() {
        assert_eq!(positive_range("--r", &[0.5, 2.0]).unwrap(), (0.5, 2.0));
        assert_eq!(positive_range("--r", &[1.0, 1.0]).unwrap(), (1.0, 1.0));
        for bad in [
            &[2.0, 1.0][..],
            &[0.0, 1.0],
            &[1.0],
            &[1.0, 2.0, 3.0],
            &[f32::NAN, 1.0],
        ] {
            let err = positive_range("--r", bad).unwrap_err().to_string();
            assert!(err.contains("--r") && err.contains("MIN,MAX"), "{err}");
        }
    }

    use super::*;

    #[test]
    fn train_device_accepts_cpu_and_names_a_bad_value() {
        assert!(train_device("cpu").is_ok());
        let err = format!("{:#}", train_device("tpu").unwrap_err());
        assert!(err.contains("`tpu`"), "{err}");
    }

    #[test]
    fn sample_streams_differ_by_epoch_and_index() {
        use rand::Rng;
        let a: u64 = sample_rng(1, 0, 5).random();
        let b: u64 = sample_rng(1, 1, 5).random();
        let c: u64 = sample_rng(1, 0, 6).random();
        assert_ne!(a, b);
        assert_ne!(a, c);
        assert_eq!(a, sample_rng(1, 0, 5).random::<u64>());
    }

    #[test]
    fn cosine_lr_warms_up_peaks_and_decays_to_floor() {
        let total = 1000;
        assert!(cosine_lr(1.0, 0, total) < 0.1);
        let peak = (0..total)
            .map(|s| cosine_lr(1.0, s, total))
            .fold(0.0, f64::max);
        assert!((peak - 1.0).abs() < 1e-3);
        assert!((cosine_lr(1.0, total - 1, total) - 0.05).abs() < 1e-3);
    }
}
