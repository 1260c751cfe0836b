//! `saccade train classifier`: trains the patch classifier ([`PatchNet`]) on augmented GTSRB crops, sign
//! crops cut from synthetic scenes the way the runtime cuts them, rendered drawings (positives and hard
//! negatives) and background patches (procedural textures, real photos away from their boxes, synthetic
//! scenes away from their signs). It reports GTSRB test accuracy per epoch, saves
//! `patchnet.safetensors` and `patchnet.q8_0.gguf`, and evaluates f32, Q8_0 and Q4_0.

mod loss;
mod samples;
#[cfg(test)]
mod tests;
mod validation;

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use candle_core::{DType, Tensor};
use candle_nn::{AdamW, Optimizer, ParamsAdamW, VarBuilder, VarMap};
use saccade_models::patchnet::{InputNorm, PatchNet, PatchNetConfig, PATCHNET_KIND};
use saccade_models::weights::{quantize_file, QuantDtype};
use saccade_models::PatchClassifier;

use self::{loss::*, samples::*, validation::*};
use crate::train::common::{
    batch_tensor, cosine_lr, file_bytes, progress, rng_for, sample_rng, save_named, train_device,
};
use crate::train::data::{GtsrbSet, GTSRB_SIDE_PX};
use crate::train::gtsdb::{load_gtsdb, CropJitter, GtsdbSplit};
use crate::train::pictos::load_pictograms;
use crate::train::scenes::{scene_crops, SceneCrops};
use rayon::prelude::*;

pub use validation::gtsrb_accuracy;

/// Knobs of `saccade train classifier`.
#[derive(Debug, Clone, clap::Args)]
pub struct ClassifierArgs {
    /// Folder holding gtsrb/, pictograms/ and scenes/.
    #[arg(long, default_value = "../shared/data")]
    pub data: PathBuf,
    /// Where the weight files go.
    #[arg(long, default_value = "models/weights")]
    pub out: PathBuf,
    #[arg(long, default_value_t = 20261126)]
    pub seed: u64,
    #[arg(long, default_value_t = 2)]
    pub epochs: usize,
    /// Steps per epoch cap (0 = a full pass over the epoch's samples).
    #[arg(long, default_value_t = 0)]
    pub steps: usize,
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
    #[arg(long, default_value_t = 3e-3)]
    pub lr: f64,
    /// Output channels of the three convolutions.
    #[arg(long, value_delimiter = ',', default_values_t = [16usize, 32, 32])]
    pub channels: Vec<usize>,
    /// Width of the hidden fully-connected layer.
    #[arg(long, default_value_t = 128)]
    pub hidden: usize,
    /// Background patches per epoch (procedural and real photos away from their boxes).
    #[arg(long, default_value_t = 3000)]
    pub backgrounds_per_epoch: usize,
    /// Drawing composites per epoch (positives and hard negatives).
    #[arg(long, default_value_t = 1500)]
    pub pictograms_per_epoch: usize,
    /// GTSRB test images scored after each epoch (a fixed evenly spaced subset; 0 = all 12,630). The
    /// final f32/Q8_0/Q4_0 numbers always use the whole test set.
    #[arg(long, default_value_t = 2000)]
    pub epoch_eval_images: usize,
    /// Synthetic training scenes to cut sign and background crops from (0 = none).
    #[arg(long, default_value_t = 300)]
    pub scenes: usize,
    /// Wall-clock budget of the training loop in minutes (0 = none). When set, the learning rate decays
    /// by elapsed time as well as by step and training stops at the budget, so a run's length no longer
    /// depends on its step count alone (the result then depends on the machine's speed).
    #[arg(long, default_value_t = 0.0)]
    pub max_train_minutes: f64,
    /// Use only the first N GTSRB train images (0 = all), for quick runs.
    #[arg(long, default_value_t = 0)]
    pub limit: usize,
    /// Where the network trains: `cpu`, or `cuda` with a `--features cuda` build. Samples are made on the
    /// CPU either way, on all cores.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Input normalisation: `per-patch` (each patch to zero mean, unit spread) or `fixed`.
    #[arg(long, default_value = "per-patch")]
    pub input_norm: String,
    /// Dropout probability on the flattened features and the hidden layer while training (0 = none).
    #[arg(long, default_value_t = 0.0)]
    pub dropout: f32,
    /// Batch normalisation after each convolution while training (batch statistics; running statistics
    /// are folded into the convolutions for evaluation and in the saved files, which keep their layers).
    #[arg(long)]
    pub batch_norm: bool,
    /// Add drawings composed from the pictograms for GTSRB classes that have none (pedestrians, sign 133:
    /// the warning triangle of `DE_136_10` with the figure of `DE_259`) as extra positives.
    #[arg(long)]
    pub composed_drawings: bool,
    /// Class-balanced GTSRB draws (0 = off): each epoch still draws as many GTSRB images as the set holds,
    /// but a class with fewer than N images is drawn as if it had N (its images repeat, augmented afresh)
    /// and the larger classes are drawn proportionally less (a fresh random subset each epoch).
    #[arg(long, default_value_t = 0)]
    pub class_floor: usize,
    /// Stop after this many epochs of the schedule (0 = run them all): the learning rate still follows
    /// `--epochs`, so the epochs that run match a full run's, for checking a rerun against a logged one.
    #[arg(long, default_value_t = 0)]
    pub stop_after_epochs: usize,
    /// Start from this trained patch net (float safetensors with the same channels and hidden width);
    /// a box head it lacks starts small.
    #[arg(long)]
    pub init: Option<PathBuf>,
    /// Add the box head: fc2 also regresses the sign's box inside the patch (trained on real GTSDB crops).
    #[arg(long)]
    pub box_head: bool,
    /// Weight of the box loss (smooth L1 on centre offset and log size) against the class cross-entropy.
    #[arg(long, default_value_t = 2.0)]
    pub box_weight: f64,
    /// Crops around real signs of the GTSDB training frames per epoch (jittered centre and context).
    #[arg(long, default_value_t = 0)]
    pub gtsdb_signs_per_epoch: usize,
    /// Background crops of the GTSDB training frames per epoch (the most colourful of a few random tries).
    #[arg(long, default_value_t = 0)]
    pub gtsdb_backgrounds_per_epoch: usize,
    /// Patch side over sign side of the GTSDB sign crops, `MIN,MAX` (log-uniform).
    #[arg(long, value_delimiter = ',', default_value = "1.1,2.8")]
    pub context_range: Vec<f32>,
    /// GTSRB draws per epoch (0 = as many as the set holds), a random subset of the epoch's draws.
    #[arg(long, default_value_t = 0)]
    pub gtsrb_per_epoch: usize,
    /// Mine hard negatives with the detector in this weights folder (glance, patch net, strategies.toml):
    /// every region its `topk` examines or reports on the GTSDB training frames that holds no sign.
    #[arg(long)]
    pub mine_with: Option<PathBuf>,
    /// Mined hard negatives per epoch (drawn with replacement, jittered ±10 % in place and ±15 % in size).
    #[arg(long, default_value_t = 0)]
    pub hard_negatives_per_epoch: usize,
    /// Mined hard positives per epoch: the `--mine-with` detector's own patches that hold a sign's centre,
    /// labelled with that sign's class and box (drawn with replacement, jittered like the negatives).
    #[arg(long, default_value_t = 0)]
    pub hard_positives_per_epoch: usize,
}

/// Trains, saves and evaluates the patch classifier; see the module docs.
pub fn train_classifier(args: &ClassifierArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    anyhow::ensure!(
        (0.0..1.0).contains(&args.dropout),
        "--dropout is {}, expected a probability in 0 ≤ p < 1",
        args.dropout
    );
    let device = train_device(&args.device)?;
    let mut gtsrb = GtsrbSet::load(&args.data, "train")?;
    if args.limit > 0 && args.limit < gtsrb.len() {
        gtsrb.images.truncate(args.limit * 3072);
        gtsrb.labels.truncate(args.limit);
    }
    let test = GtsrbSet::load(&args.data, "test")?;
    let photos = load_train_photos(&args.data).context("loading training photos")?;
    let pictograms =
        load_pictograms(&args.data, args.composed_drawings).context("rendering pictograms")?;
    let scene = if args.scenes > 0 {
        scene_crops(&args.data, args.scenes, args.seed, GTSRB_SIDE_PX)
            .context("cutting synthetic scene crops")?
    } else {
        SceneCrops::default()
    };
    let uses_gtsdb = args.gtsdb_signs_per_epoch > 0
        || args.gtsdb_backgrounds_per_epoch > 0
        || args.mine_with.is_some();
    let (gtsdb, gtsdb_val) = if uses_gtsdb {
        (
            load_gtsdb(&args.data, GtsdbSplit::Train).context("loading GTSDB")?,
            load_gtsdb(&args.data, GtsdbSplit::Validation).context("loading GTSDB")?,
        )
    } else {
        (Vec::new(), Vec::new())
    };
    let (context_min, context_max) =
        crate::train::common::positive_range("--context-range", &args.context_range)?;
    let crop_jitter = CropJitter {
        context_min,
        context_max,
    };
    let gtsdb_signs: Vec<(usize, usize)> = gtsdb
        .iter()
        .enumerate()
        .flat_map(|(f, frame)| (0..frame.signs.len()).map(move |k| (f, k)))
        .collect();
    let mined = match &args.mine_with {
        Some(dir) => {
            let mined = crate::train::mining::mine(&gtsdb, dir)?;
            println!(
                "mined {} hard negatives and {} hard positives on the GTSDB training frames with {}",
                mined.negatives.len(),
                mined.positives.len(),
                dir.display()
            );
            mined
        }
        None => crate::train::mining::Mined::default(),
    };
    println!(
        "GTSDB: {} training frames ({} signs), {} validation frames",
        gtsdb.len(),
        gtsdb_signs.len(),
        gtsdb_val.len()
    );
    println!(
        "classifier data: {} GTSRB train, {} GTSRB test, {} photos, {} drawings, {} scene crops ({} signs) from {} scenes, loaded in {:.1} s",
        gtsrb.len(),
        test.len(),
        photos.len(),
        pictograms.len(),
        scene.crops.len(),
        scene.sign_crops,
        args.scenes,
        started.elapsed().as_secs_f64()
    );
    let pools = Pools {
        photos,
        pictograms,
        scene,
        gtsdb,
        gtsdb_signs,
        hard_negatives: mined.negatives,
        hard_positives: mined.positives,
        crop_jitter,
    };
    let val_crops = gtsdb_validation_crops(&gtsdb_val, &crop_jitter, args.seed);

    // Held-out backgrounds from a stream no training sample uses.
    let mut held_rng = rng_for(args.seed, 99);
    let held_backgrounds: Vec<Vec<f32>> = (0..1000)
        .map(|i| {
            let kind = if i % 2 == 0 {
                Sample::Procedural
            } else {
                Sample::PhotoBackground
            };
            pools.make(&gtsrb, kind, GTSRB_SIDE_PX, &mut held_rng).0
        })
        .collect();

    let [c0, c1, c2] = match args.channels.as_slice() {
        &[a, b, c] => [a, b, c],
        other => anyhow::bail!(
            "--channels has {} values, expected 3 (e.g. 16,32,32)",
            other.len()
        ),
    };
    let input_norm = match args.input_norm.as_str() {
        "per-patch" => InputNorm::PerPatch,
        "fixed" => InputNorm::Fixed,
        other => anyhow::bail!("--input-norm is `{other}`, expected per-patch or fixed"),
    };
    let cfg = PatchNetConfig {
        channels: [c0, c1, c2],
        hidden: args.hidden,
        input_norm,
        box_head: args.box_head,
        ..PatchNetConfig::default()
    };
    let epoch_test = if args.epoch_eval_images == 0 || args.epoch_eval_images >= test.len() {
        test.clone()
    } else {
        let stride = test.len() / args.epoch_eval_images;
        let picked: Vec<usize> = (0..args.epoch_eval_images).map(|i| i * stride).collect();
        GtsrbSet {
            images: picked
                .iter()
                .flat_map(|&i| test.image(i).iter().copied())
                .collect(),
            labels: picked.iter().map(|&i| test.labels[i]).collect(),
        }
    };
    let varmap = VarMap::new();
    let build = |varmap: &VarMap| {
        let vb = VarBuilder::from_varmap(varmap, DType::F32, &device);
        if args.batch_norm {
            PatchNet::new_with_batch_norm(&cfg, vb)
        } else {
            PatchNet::new(&cfg, vb)
        }
    };
    build(&varmap)?;
    crate::train::common::seed_varmap(&varmap, args.seed)?;
    if let Some(init) = &args.init {
        let n = crate::train::common::init_varmap_from(&varmap, init)?;
        println!("started from {} ({n} tensors)", init.display());
    }
    let model = build(&varmap)?;
    let mut opt = AdamW::new(
        varmap.all_vars(),
        ParamsAdamW {
            lr: args.lr,
            weight_decay: 1e-4,
            ..Default::default()
        },
    )?;
    let mut epoch_rng = rng_for(args.seed, 1);
    let probe = epoch_samples(args, &gtsrb.labels, &pools, &mut rng_for(args.seed, 2)).len();
    let steps_per_epoch = if args.steps > 0 {
        args.steps.min(probe / args.batch)
    } else {
        probe / args.batch
    };
    let total_steps = steps_per_epoch * args.epochs;
    let mut step = 0usize;
    let mut log = Vec::new();
    let train_started = Instant::now();
    let budget_secs = args.max_train_minutes * 60.0;
    let over_budget = || budget_secs > 0.0 && train_started.elapsed().as_secs_f64() >= budget_secs;
    for epoch in 0..args.epochs {
        if args.stop_after_epochs > 0 && epoch >= args.stop_after_epochs {
            break;
        }
        if over_budget() {
            break;
        }
        let epoch_started = Instant::now();
        let samples = epoch_samples(args, &gtsrb.labels, &pools, &mut epoch_rng);
        let bar = progress(
            steps_per_epoch,
            &format!("classifier epoch {}/{}", epoch + 1, args.epochs),
        );
        let (mut loss_sum, mut hits, mut seen) = (0.0f64, 0usize, 0usize);
        for (b, batch) in samples
            .chunks_exact(args.batch)
            .take(steps_per_epoch)
            .enumerate()
        {
            if over_budget() {
                break;
            }
            let made: Vec<Made> = batch
                .par_iter()
                .enumerate()
                .map(|(k, &s)| {
                    let mut rng = sample_rng(args.seed, epoch, b * args.batch + k);
                    pools.make(&gtsrb, s, GTSRB_SIDE_PX, &mut rng)
                })
                .collect();
            let boxes: Vec<Option<[f32; 4]>> = made.iter().map(|m| m.2).collect();
            let (imgs, labels): (Vec<Vec<f32>>, Vec<u32>) =
                made.into_iter().map(|(chw, label, _)| (chw, label)).unzip();
            let (box_t, box_m) = box_targets(&boxes, &device)?;
            let x = batch_tensor(&imgs, 3, GTSRB_SIDE_PX, GTSRB_SIDE_PX, &device)?;
            let y = Tensor::new(labels.as_slice(), &device)?;
            let mut lr_step = step;
            if budget_secs > 0.0 {
                let time_fraction = train_started.elapsed().as_secs_f64() / budget_secs;
                lr_step = lr_step.max((time_fraction * total_steps as f64) as usize);
            }
            opt.set_learning_rate(cosine_lr(args.lr, lr_step, total_steps));
            let masks = if args.dropout > 0.0 {
                Some(dropout_masks(
                    &cfg,
                    batch.len(),
                    args.dropout,
                    &mut epoch_rng,
                    &device,
                )?)
            } else {
                None
            };
            let (loss, batch_hits) = loss_and_hits(
                &model,
                &x,
                &y,
                masks.as_ref(),
                Some((&box_t, &box_m, args.box_weight)),
            )?;
            opt.backward_step(&loss)?;
            loss_sum += loss.to_scalar::<f32>()? as f64 * batch.len() as f64;
            hits += batch_hits;
            seen += batch.len();
            step += 1;
            bar.inc(1);
            if step.is_multiple_of(20) {
                bar.set_message(format!("loss {:.3}", loss_sum / seen as f64));
            }
        }
        bar.finish_and_clear();
        let (test_acc, _) =
            gtsrb_accuracy(&model, &epoch_test.images, &epoch_test.labels, &device)?;
        let bg_acc = background_accuracy(&model, &held_backgrounds, &device)?;
        let val_line = if val_crops.signs.is_empty() {
            String::new()
        } else {
            format!(
                ", {}",
                validation_report(&model, &val_crops, &device)?.describe()
            )
        };
        let line = format!(
            "epoch {}/{} ({seen} samples, {step} steps so far): train loss {:.4}, train acc {:.2} %, GTSRB test acc {:.2} % ({} images), held-out background acc {:.2} %{val_line}, {:.0} s",
            epoch + 1,
            args.epochs,
            loss_sum / seen.max(1) as f64,
            100.0 * hits as f64 / seen.max(1) as f64,
            100.0 * test_acc,
            epoch_test.len(),
            100.0 * bg_acc,
            epoch_started.elapsed().as_secs_f64()
        );
        println!("{line}");
        log.push(line);
    }
    let train_secs = started.elapsed().as_secs_f64();

    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let f32_path = args.out.join("patchnet.safetensors");
    let q8_path = args.out.join("patchnet.q8_0.gguf");
    let q4_path =
        std::env::temp_dir().join(format!("saccade-patchnet-{}.q4_0.gguf", std::process::id()));
    save_named(
        model.named_tensors()?,
        &serde_json::to_string(&cfg)?,
        PATCHNET_KIND,
        &f32_path,
    )?;
    quantize_file(&f32_path, &q8_path, QuantDtype::Q8_0).context("quantising to Q8_0")?;
    quantize_file(&f32_path, &q4_path, QuantDtype::Q4_0).context("quantising to Q4_0")?;

    let mut report = serde_json::Map::new();
    for (name, path) in [("f32", &f32_path), ("q8_0", &q8_path), ("q4_0", &q4_path)] {
        let loaded = PatchNet::load(path, &device)
            .with_context(|| format!("reloading {}", path.display()))?;
        let (acc, per_class) = gtsrb_accuracy(&loaded, &test.images, &test.labels, &device)?;
        let bg = background_accuracy(&loaded, &held_backgrounds, &device)?;
        let val = if val_crops.signs.is_empty() {
            None
        } else {
            Some(validation_report(&loaded, &val_crops, &device)?)
        };
        if let Some(v) = &val {
            println!("{name}: {}", v.describe());
        }
        let worst = per_class
            .iter()
            .enumerate()
            .filter(|(_, a)| a.is_finite())
            .min_by(|a, b| a.1.total_cmp(b.1))
            .map(|(c, a)| (c, *a))
            .unwrap_or((0, f64::NAN));
        println!(
            "{name}: GTSRB test acc {:.2} % (worst class {} at {:.1} %), held-out background acc {:.2} %, file {} bytes — {}",
            100.0 * acc,
            worst.0,
            100.0 * worst.1,
            100.0 * bg,
            file_bytes(path),
            loaded.describe()
        );
        report.insert(
            name.to_string(),
            serde_json::json!({
                "gtsrb_test_accuracy": acc,
                "gtsrb_test_per_class": per_class.iter().map(|a| if a.is_finite() { *a } else { -1.0 }).collect::<Vec<_>>(),
                "heldout_background_accuracy": bg,
                "gtsdb_validation": val,
                "file_bytes": file_bytes(path),
            }),
        );
    }
    let _ = std::fs::remove_file(&q4_path);
    report.insert("train_seconds".into(), serde_json::json!(train_secs));
    report.insert("epochs".into(), serde_json::json!(log));
    report.insert("args".into(), serde_json::json!(format!("{args:?}")));
    let report_path = args.out.join("patchnet.metrics.json");
    std::fs::write(&report_path, serde_json::to_string_pretty(&report)?)
        .with_context(|| format!("writing {}", report_path.display()))?;
    println!(
        "classifier done in {:.0} s; wrote {}, {}, {}",
        started.elapsed().as_secs_f64(),
        f32_path.display(),
        q8_path.display(),
        report_path.display()
    );
    Ok(())
}
