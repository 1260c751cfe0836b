//! `saccade train glance`: trains the glance net ([`GlanceNetModel`]) on synthetic Train scenes
//! (1280×960 area-averaged 4× to 320×240, as the runtime downscales) and on the training part of the real
//! photos (letterboxed to 320×240). Per 8-px cell it learns objectness (1 at the cell holding a sign's centre,
//! the 8 cells around it ignored; BCE on positives, focal-weighted BCE on negatives, normalised by the
//! number of signs) and log2 of the sign's side in glance pixels (L1 at positive cells); the glance class
//! head learns the class of the largest sign, or background. It reports recall of sign centres on Eval
//! scenes and held-out photos and saves `glancenet.safetensors` and `glancenet.q8_0.gguf`.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use candle_core::{DType, Device, Tensor, D};
use candle_nn::{AdamW, Optimizer, ParamsAdamW, VarBuilder, VarMap};
use rand::seq::SliceRandom;
use saccade_models::glancenet::{GlanceNetConfig, GlanceNetModel, GLANCENET_KIND};
use saccade_models::weights::{quantize_file, QuantDtype};
use saccade_runtime::synth::Split;

use super::augment::{area_downscale, letterbox, photometric};
use super::common::{
    batch_tensor, cosine_lr, file_bytes, parse_size, progress, rng_for, sample_rng, save_named,
    train_device,
};
use super::data::{load_photo_annotations, read_rgb, split_every};
use super::glance_sample::{cell_of, glance_targets, GlanceBox, GlanceSample, GlanceTargets};
use super::gtsdb::{glance_sample_exact, glance_view, load_gtsdb, GtsdbSplit, ViewJitter};
use super::scenes::generator;
use rayon::prelude::*;

/// Knobs of `saccade train glance`.
#[derive(Debug, Clone, clap::Args)]
pub struct GlanceArgs {
    #[arg(long, default_value = "../shared/data")]
    pub data: PathBuf,
    #[arg(long, default_value = "models/weights")]
    pub out: PathBuf,
    #[arg(long, default_value_t = 20261126)]
    pub seed: u64,
    #[arg(long, default_value_t = 4)]
    pub epochs: usize,
    /// Steps per epoch cap (0 = a full pass).
    #[arg(long, default_value_t = 0)]
    pub steps: usize,
    #[arg(long, default_value_t = 16)]
    pub batch: usize,
    #[arg(long, default_value_t = 3e-3)]
    pub lr: f64,
    /// Synthetic Train scenes generated once and reused every epoch.
    #[arg(long, default_value_t = 1200)]
    pub scenes: usize,
    /// Synthetic Eval scenes for the recall report.
    #[arg(long, default_value_t = 200)]
    pub eval_scenes: usize,
    /// Use at most this many training photos (0 = all of the training split).
    #[arg(long, default_value_t = 0)]
    pub photos: usize,
    /// Weight of the positive (sign-centre) cells in the objectness loss, against the focal-weighted
    /// negatives; above 1 pushes the peaks of the map up.
    #[arg(long, default_value_t = 1.0)]
    pub pos_weight: f64,
    /// Wall-clock budget of the training loop in minutes (0 = none); the learning rate then decays by
    /// elapsed time as well as by step.
    #[arg(long, default_value_t = 0.0)]
    pub max_train_minutes: f64,
    /// Where the network trains: `cpu`, or `cuda` with a `--features cuda` build.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Stop after this many epochs of the schedule (0 = run them all): the learning rate still follows
    /// `--epochs`, so the epochs that run match a full run's, for checking a rerun against a logged one.
    #[arg(long, default_value_t = 0)]
    pub stop_after_epochs: usize,
    /// Batch normalisation after each convolution while training, folded into the convolutions for
    /// evaluation and saving (the saved network has the same layers either way).
    #[arg(long)]
    pub batch_norm: bool,
    /// Train on the real GTSDB training frames (`DATA/gtsdb`, frames 00000–00599 less the validation
    /// frames, every sixth) in random scale/offset/aspect views, and report recall on the validation frames.
    #[arg(long)]
    pub gtsdb: bool,
    /// Random views of each GTSDB training frame per epoch.
    #[arg(long, default_value_t = 1)]
    pub gtsdb_views: usize,
    /// Range of the views' magnification against the runtime's frame→glance shrink, `MIN,MAX`.
    #[arg(long, value_delimiter = ',', default_value = "0.65,1.5")]
    pub scale_range: Vec<f32>,
    /// Glance input `WIDTHxHEIGHT` in pixels (the runtime resizes every frame to it).
    #[arg(long, default_value = "320x240")]
    pub input_size: String,
    /// Output channels of conv1..conv4.
    #[arg(long, value_delimiter = ',', default_value = "16,32,32,32")]
    pub channels: Vec<usize>,
    /// Start from this trained glance net (float safetensors of the same channels) instead of seeded
    /// random weights; its convolutions work at any input size.
    #[arg(long)]
    pub init: Option<PathBuf>,
}

/// Synthetic scenes of `split` downscaled to glance size, boxes in glance pixels.
pub fn synthetic_glance_samples(
    data_dir: &std::path::Path,
    split: Split,
    count: usize,
    first_seed: u64,
    factor: usize,
) -> anyhow::Result<Vec<GlanceSample>> {
    let generator = generator(data_dir, split)?;
    let bar = progress(count, &format!("generating {split:?} scenes"));
    let out = (0..count)
        .into_par_iter()
        .map(|i| {
            let scene = generator.generate(first_seed.wrapping_add(i as u64));
            let chw = area_downscale(
                &scene.rgb,
                scene.width as usize,
                scene.height as usize,
                factor,
            );
            let f = factor as f32;
            let boxes = scene
                .truth
                .iter()
                .map(|t| GlanceBox {
                    xmin: t.bbox.xmin / f,
                    ymin: t.bbox.ymin / f,
                    xmax: t.bbox.xmax / f,
                    ymax: t.bbox.ymax / f,
                    class_id: t.class_id,
                    ignore: false,
                })
                .collect();
            bar.inc(1);
            GlanceSample::from_chw_f32(&chw, boxes)
        })
        .collect();
    bar.finish_and_clear();
    Ok(out)
}

/// Real photos letterboxed to `out_w × out_h`: (training split, held-out split).
pub fn photo_glance_samples(
    data_dir: &std::path::Path,
    out_w: usize,
    out_h: usize,
) -> anyhow::Result<(Vec<GlanceSample>, Vec<GlanceSample>)> {
    let photos = load_photo_annotations(data_dir)?;
    let convert = |photo: &super::data::Photo| -> anyhow::Result<GlanceSample> {
        let (w, h, rgb) = read_rgb(&photo.path)?;
        let (chw, lb) = letterbox(&rgb, w, h, out_w, out_h);
        let boxes = photo
            .boxes
            .iter()
            .map(|b| GlanceBox {
                xmin: b.xmin_px * lb.scale + lb.offset_x_px,
                ymin: b.ymin_px * lb.scale + lb.offset_y_px,
                xmax: b.xmax_px * lb.scale + lb.offset_x_px,
                ymax: b.ymax_px * lb.scale + lb.offset_y_px,
                class_id: b.gtsrb_class_id,
                ignore: !b.is_sign(),
            })
            .collect();
        Ok(GlanceSample::from_chw_f32(&chw, boxes))
    };
    let (train, held) = split_every(&photos, 5);
    let train = train
        .iter()
        .map(convert)
        .collect::<anyhow::Result<Vec<_>>>()?;
    let held = held
        .iter()
        .map(convert)
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok((train, held))
}

/// Objectness (weighted BCE / focal), size (L1) and class (CE) losses of one batch.
///
/// # Shapes
/// `obj_logits`, `log2_side`: `(b, 1, h, w)`; `class_logits`: `(b, classes)`; targets as built by
/// [`glance_targets`].
pub fn glance_loss(
    obj_logits: &Tensor,
    log2_side: &Tensor,
    class_logits: &Tensor,
    targets: &[GlanceTargets],
    pos_weight: f64,
) -> candle_core::Result<(Tensor, [f32; 3])> {
    let device = obj_logits.device();
    let (b, _, h, w) = obj_logits.dims4()?;
    let cells = h * w;
    let flat = |f: &dyn Fn(&GlanceTargets) -> &Vec<f32>| -> candle_core::Result<Tensor> {
        let v: Vec<f32> = targets.iter().flat_map(|t| f(t).iter().copied()).collect();
        Tensor::from_vec(v, (b, cells), device)
    };
    let t = flat(&|t| &t.objectness)?;
    let wgt = flat(&|t| &t.weight)?;
    let side_t = flat(&|t| &t.log2_side)?;
    let num_pos = targets
        .iter()
        .map(|t| t.objectness.iter().filter(|&&o| o > 0.5).count())
        .sum::<usize>() as f64;
    // (b, 1, h, w) -> (b, h·w)
    let x = obj_logits.reshape((b, cells))?;
    let softplus = |z: &Tensor| -> candle_core::Result<Tensor> {
        // softplus(z) = relu(z) + ln(1 + e^{-|z|}), stable for large |z|.
        z.relu()? + ((z.abs()?.neg()?.exp()? + 1.0)?.log()?)
    };
    let p = candle_nn::ops::sigmoid(&x)?;
    // Positives: −ln p = softplus(−x). Negatives: −p² ln(1 − p) = p² softplus(x) (focal, γ = 2).
    let pos_term = (softplus(&x.neg()?)? * &t)?.affine(pos_weight, 0.0)?;
    let neg_term = ((p.sqr()? * softplus(&x)?)? * (1.0 - &t)?)?;
    let obj_loss = ((pos_term + neg_term)? * &wgt)?
        .sum_all()?
        .affine(1.0 / (num_pos + 1.0), 0.0)?;
    let side_pred = log2_side.reshape((b, cells))?;
    let size_loss = ((side_pred - &side_t)?.abs()? * &t)?
        .sum_all()?
        .affine(1.0 / (num_pos + 1.0), 0.0)?;
    // Class head: CE on images whose largest sign has a GTSRB class (or none at all).
    let labels: Vec<u32> = targets
        .iter()
        .map(|t| t.class_id.unwrap_or(0) as u32)
        .collect();
    let mask: Vec<f32> = targets
        .iter()
        .map(|t| if t.class_id.is_some() { 1.0 } else { 0.0 })
        .collect();
    let n_cls = mask.iter().sum::<f32>().max(1.0);
    let labels = Tensor::new(labels.as_slice(), device)?.unsqueeze(1)?;
    let mask = Tensor::new(mask.as_slice(), device)?;
    let log_probs = candle_nn::ops::log_softmax(class_logits, D::Minus1)?;
    let picked = log_probs.gather(&labels, 1)?.squeeze(1)?;
    let cls_loss = (picked * mask)?
        .sum_all()?
        .neg()?
        .affine(1.0 / n_cls as f64, 0.0)?;
    let total = ((&obj_loss + &size_loss)? + cls_loss.affine(0.3, 0.0)?)?;
    let parts = [
        obj_loss.to_scalar::<f32>()?,
        size_loss.to_scalar::<f32>()?,
        cls_loss.to_scalar::<f32>()?,
    ];
    Ok((total, parts))
}

/// Recall of sign centres and false-alarm load of a glance net on a set of images.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct GlanceReport {
    pub frames: usize,
    pub signs: usize,
    /// Signs whose centre cell or one of its 8 neighbours has objectness ≥ 0.5.
    pub recall: f64,
    /// Recall by sign side in glance px: < 8, 8–16, ≥ 16.
    pub recall_by_side: [f64; 3],
    pub signs_by_side: [usize; 3],
    /// Mean number of cells with objectness ≥ 0.5 per frame.
    pub cells_above_half_per_frame: f64,
    /// Median |log2 side error| at the best cell near each found sign.
    pub median_abs_log2_side_error: f64,
    /// Accuracy of the glance class head on frames with a class target.
    pub class_accuracy: f64,
}

/// Evaluates `model` on `samples` (recall at objectness ≥ 0.5 within ±1 cell).
pub fn evaluate_glance(
    model: &GlanceNetModel,
    samples: &[GlanceSample],
    device: &Device,
) -> anyhow::Result<GlanceReport> {
    let cfg = model.config();
    let (map_w, map_h) = cfg.map_size();
    let (in_w, in_h) = (cfg.input_width_px, cfg.input_height_px);
    let mut found = [0usize; 3];
    let mut total = [0usize; 3];
    let mut cells_above = 0usize;
    let mut side_errors = Vec::new();
    let (mut cls_hits, mut cls_total) = (0usize, 0usize);
    for chunk in samples.chunks(16) {
        let imgs: Vec<Vec<f32>> = chunk.iter().map(GlanceSample::chw_f32).collect();
        let x = batch_tensor(&imgs, 3, in_h, in_w, device)?;
        let maps = model.forward_maps(&x)?;
        let obj = candle_nn::ops::sigmoid(&maps.objectness_logits)?
            .flatten_from(1)?
            .to_vec2::<f32>()?;
        let sides = maps.log2_side.flatten_from(1)?.to_vec2::<f32>()?;
        let classes = maps.class_logits.argmax(D::Minus1)?.to_vec1::<u32>()?;
        for (k, sample) in chunk.iter().enumerate() {
            cells_above += obj[k].iter().filter(|&&o| o >= 0.5).count();
            let targets = glance_targets(&sample.boxes, map_w, map_h);
            if let Some(c) = targets.class_id {
                cls_total += 1;
                cls_hits += usize::from(classes[k] as usize == c);
            }
            for b in sample.boxes.iter().filter(|b| !b.ignore) {
                let side = (b.xmax - b.xmin).max(b.ymax - b.ymin);
                let bucket = if side < 8.0 {
                    0
                } else if side < 16.0 {
                    1
                } else {
                    2
                };
                total[bucket] += 1;
                let (cx, cy) = cell_of(
                    (b.xmin + b.xmax) / 2.0,
                    (b.ymin + b.ymax) / 2.0,
                    map_w,
                    map_h,
                );
                let mut best = (0f32, 0usize);
                for y in cy.saturating_sub(1)..=(cy + 1).min(map_h - 1) {
                    for x in cx.saturating_sub(1)..=(cx + 1).min(map_w - 1) {
                        let i = y * map_w + x;
                        if obj[k][i] > best.0 {
                            best = (obj[k][i], i);
                        }
                    }
                }
                if best.0 >= 0.5 {
                    found[bucket] += 1;
                    side_errors.push((sides[k][best.1] - side.max(1.0).log2()).abs());
                }
            }
        }
    }
    side_errors.sort_by(f32::total_cmp);
    let signs: usize = total.iter().sum();
    let ratio = |a: usize, b: usize| {
        if b == 0 {
            f64::NAN
        } else {
            a as f64 / b as f64
        }
    };
    Ok(GlanceReport {
        frames: samples.len(),
        signs,
        recall: ratio(found.iter().sum(), signs),
        recall_by_side: [
            ratio(found[0], total[0]),
            ratio(found[1], total[1]),
            ratio(found[2], total[2]),
        ],
        signs_by_side: total,
        cells_above_half_per_frame: cells_above as f64 / samples.len().max(1) as f64,
        median_abs_log2_side_error: side_errors
            .get(side_errors.len() / 2)
            .copied()
            .unwrap_or(f32::NAN) as f64,
        class_accuracy: ratio(cls_hits, cls_total),
    })
}

fn describe_report(name: &str, r: &GlanceReport) -> String {
    format!(
        "{name}: recall {:.1} % of {} signs in {} frames (side <8 px {:.1} % of {}, 8–16 px {:.1} % of {}, ≥16 px {:.1} % of {}), {:.2} cells ≥ 0.5 per frame, median |Δlog2 side| {:.2}, glance class acc {:.1} %",
        100.0 * r.recall,
        r.signs,
        r.frames,
        100.0 * r.recall_by_side[0],
        r.signs_by_side[0],
        100.0 * r.recall_by_side[1],
        r.signs_by_side[1],
        100.0 * r.recall_by_side[2],
        r.signs_by_side[2],
        r.cells_above_half_per_frame,
        r.median_abs_log2_side_error,
        100.0 * r.class_accuracy
    )
}

/// Trains, saves and evaluates the glance net; see the module docs.
pub fn train_glance(args: &GlanceArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let device = train_device(&args.device)?;
    let (in_w, in_h) = parse_size(&args.input_size)?;
    anyhow::ensure!(
        args.channels.len() == 4,
        "--channels {:?}: expected 4 values (conv1..conv4)",
        args.channels
    );
    let (scale_min, scale_max) = super::common::positive_range("--scale-range", &args.scale_range)?;
    let cfg = GlanceNetConfig {
        input_width_px: in_w,
        input_height_px: in_h,
        channels: [
            args.channels[0],
            args.channels[1],
            args.channels[2],
            args.channels[3],
        ],
        ..GlanceNetConfig::default()
    };
    cfg.validate()
        .map_err(|e| anyhow::anyhow!("glance net config: {e}"))?;
    let (map_w, map_h) = cfg.map_size();
    let factor = (1280 / in_w).max(1);
    let mut train = if args.scenes > 0 {
        synthetic_glance_samples(
            &args.data,
            Split::Train,
            args.scenes,
            args.seed.wrapping_mul(1000),
            factor,
        )
        .context("generating Train scenes")?
    } else {
        Vec::new()
    };
    let eval_synth = if args.eval_scenes > 0 {
        synthetic_glance_samples(&args.data, Split::Eval, args.eval_scenes, 1, factor)
            .context("generating Eval scenes")?
    } else {
        Vec::new()
    };
    let (mut train_photos, held_photos) =
        photo_glance_samples(&args.data, in_w, in_h).context("loading photos")?;
    if args.photos > 0 {
        train_photos.truncate(args.photos);
    }
    let (gtsdb_train, gtsdb_val) = if args.gtsdb {
        let train = load_gtsdb(&args.data, GtsdbSplit::Train).context("loading GTSDB")?;
        let val = load_gtsdb(&args.data, GtsdbSplit::Validation).context("loading GTSDB")?;
        let val: Vec<GlanceSample> = val
            .iter()
            .map(|f| glance_sample_exact(f, in_w, in_h))
            .collect();
        (train, val)
    } else {
        (Vec::new(), Vec::new())
    };
    println!(
        "glance data: {} Train scenes, {} training photos, {} GTSDB training frames × {} views, {} Eval scenes, {} held-out photos, {} GTSDB validation frames, loaded in {:.0} s; input {in_w}×{in_h}, maps {map_w}×{map_h}",
        train.len(),
        train_photos.len(),
        gtsdb_train.len(),
        args.gtsdb_views,
        eval_synth.len(),
        held_photos.len(),
        gtsdb_val.len(),
        started.elapsed().as_secs_f64()
    );
    train.extend(train_photos);
    let jitter = ViewJitter {
        scale_min,
        scale_max,
        aspect_max: 1.25,
        flip_probability: 0.5,
    };
    let stored = train.len();
    let items = stored + gtsdb_train.len() * args.gtsdb_views;
    anyhow::ensure!(
        items >= args.batch,
        "{items} training images, fewer than one batch of {}",
        args.batch
    );
    let report_sets: Vec<(&str, &[GlanceSample])> = [
        ("Eval scenes", eval_synth.as_slice()),
        ("held-out photos", held_photos.as_slice()),
        ("GTSDB validation", gtsdb_val.as_slice()),
    ]
    .into_iter()
    .filter(|(_, s)| !s.is_empty())
    .collect();

    let varmap = VarMap::new();
    let build = |varmap: &VarMap| {
        let vb = VarBuilder::from_varmap(varmap, DType::F32, &device);
        if args.batch_norm {
            GlanceNetModel::new_with_batch_norm(&cfg, vb)
        } else {
            GlanceNetModel::new(&cfg, vb)
        }
    };
    build(&varmap)?;
    super::common::seed_varmap(&varmap, args.seed)?;
    if let Some(init) = &args.init {
        let n = super::common::init_varmap_from(&varmap, init)?;
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
    let mut rng = rng_for(args.seed, 7);
    let full = items / args.batch;
    let steps_per_epoch = if args.steps > 0 {
        args.steps.min(full)
    } else {
        full
    };
    let total_steps = steps_per_epoch * args.epochs;
    let mut step = 0;
    let mut log = Vec::new();
    let mut order: Vec<usize> = (0..items).collect();
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
        order.shuffle(&mut rng);
        let bar = progress(
            steps_per_epoch,
            &format!("glance epoch {}/{}", epoch + 1, args.epochs),
        );
        let mut sums = [0f64; 3];
        let mut batches = 0usize;
        for (b, idx) in order
            .chunks_exact(args.batch)
            .take(steps_per_epoch)
            .enumerate()
        {
            if over_budget() {
                break;
            }
            let views: Vec<(Vec<f32>, Vec<GlanceBox>)> = idx
                .par_iter()
                .enumerate()
                .map(|(k, &i)| {
                    let mut rng = sample_rng(args.seed, epoch, b * args.batch + k);
                    let (mut chw, boxes) = if i < stored {
                        (train[i].chw_f32(), train[i].boxes.clone())
                    } else {
                        let frame = &gtsdb_train[(i - stored) % gtsdb_train.len()];
                        glance_view(frame, in_w, in_h, &jitter, &mut rng)
                    };
                    photometric(&mut chw, &mut rng);
                    (chw, boxes)
                })
                .collect();
            let targets: Vec<GlanceTargets> = views
                .iter()
                .map(|(_, boxes)| glance_targets(boxes, map_w, map_h))
                .collect();
            let imgs: Vec<Vec<f32>> = views.into_iter().map(|(chw, _)| chw).collect();
            let x = batch_tensor(&imgs, 3, in_h, in_w, &device)?;
            let maps = model.train_maps(&x)?;
            let (loss, parts) = glance_loss(
                &maps.objectness_logits,
                &maps.log2_side,
                &maps.class_logits,
                &targets,
                args.pos_weight,
            )?;
            let mut lr_step = step;
            if budget_secs > 0.0 {
                let time_fraction = train_started.elapsed().as_secs_f64() / budget_secs;
                lr_step = lr_step.max((time_fraction * total_steps as f64) as usize);
            }
            opt.set_learning_rate(cosine_lr(args.lr, lr_step, total_steps));
            opt.backward_step(&loss)?;
            for (s, p) in sums.iter_mut().zip(parts) {
                *s += p as f64;
            }
            batches += 1;
            step += 1;
            bar.inc(1);
            bar.set_message(format!(
                "obj {:.3} size {:.3} cls {:.3}",
                sums[0] / batches as f64,
                sums[1] / batches as f64,
                sums[2] / batches as f64
            ));
        }
        bar.finish_and_clear();
        let n = batches.max(1) as f64;
        let mut line = format!(
            "epoch {}/{}: loss obj {:.4} size {:.4} cls {:.4} ({:.0} s)",
            epoch + 1,
            args.epochs,
            sums[0] / n,
            sums[1] / n,
            sums[2] / n,
            epoch_started.elapsed().as_secs_f64(),
        );
        for (name, set) in &report_sets {
            let r = evaluate_glance(&model, set, &device)?;
            line.push_str(&format!("\n  {}", describe_report(name, &r)));
        }
        println!("{line}");
        log.push(line);
    }
    let train_secs = started.elapsed().as_secs_f64();

    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let f32_path = args.out.join("glancenet.safetensors");
    let q8_path = args.out.join("glancenet.q8_0.gguf");
    save_named(
        model.named_tensors()?,
        &serde_json::to_string(&cfg)?,
        GLANCENET_KIND,
        &f32_path,
    )?;
    quantize_file(&f32_path, &q8_path, QuantDtype::Q8_0).context("quantising to Q8_0")?;
    let mut report = serde_json::Map::new();
    for (name, path) in [("f32", &f32_path), ("q8_0", &q8_path)] {
        let loaded = GlanceNetModel::load(path, &device)
            .with_context(|| format!("reloading {}", path.display()))?;
        let mut entry = serde_json::Map::new();
        let mut text = format!("{name} ({} bytes):", file_bytes(path));
        for (set_name, set) in &report_sets {
            let r = evaluate_glance(&loaded, set, &device)?;
            text.push_str(&format!("\n  {}", describe_report(set_name, &r)));
            let key = set_name.replace([' ', '-'], "_").to_lowercase();
            entry.insert(key, serde_json::to_value(&r)?);
        }
        entry.insert("file_bytes".into(), serde_json::json!(file_bytes(path)));
        println!("{text}");
        report.insert(name.to_string(), serde_json::Value::Object(entry));
    }
    report.insert("train_seconds".into(), serde_json::json!(train_secs));
    report.insert("epochs".into(), serde_json::json!(log));
    report.insert("args".into(), serde_json::json!(format!("{args:?}")));
    let report_path = args.out.join("glancenet.metrics.json");
    std::fs::write(&report_path, serde_json::to_string_pretty(&report)?)
        .with_context(|| format!("writing {}", report_path.display()))?;
    println!(
        "glance done in {:.0} s; wrote {}, {}",
        started.elapsed().as_secs_f64(),
        f32_path.display(),
        q8_path.display()
    );
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use saccade_models::BACKGROUND_CLASS;

    fn sign(x: f32, y: f32, side: f32, class_id: Option<usize>) -> GlanceBox {
        GlanceBox {
            xmin: x - side / 2.0,
            ymin: y - side / 2.0,
            xmax: x + side / 2.0,
            ymax: y + side / 2.0,
            class_id,
            ignore: false,
        }
    }

    #[test]
    fn targets_mark_centre_cell_ignore_neighbours_and_pick_largest_class() {
        let boxes = [
            sign(20.0, 20.0, 8.0, Some(3)),
            sign(100.0, 60.0, 32.0, Some(14)),
        ];
        let t = glance_targets(&boxes, 40, 30);
        assert_eq!(t.objectness.iter().filter(|&&o| o == 1.0).count(), 2);
        assert_eq!(t.objectness[2 * 40 + 2], 1.0);
        assert_eq!(t.weight[2 * 40 + 2], 1.0);
        assert_eq!(t.weight[2 * 40 + 3], 0.0);
        assert_eq!(t.weight[10 * 40 + 10], 1.0);
        assert!((t.log2_side[7 * 40 + 12] - 5.0).abs() < 1e-6);
        assert_eq!(t.class_id, Some(14));
        assert_eq!(glance_targets(&[], 40, 30).class_id, Some(BACKGROUND_CLASS));
    }

    #[test]
    fn ignored_boxes_zero_the_weight_and_set_no_positive() {
        let mut light = sign(200.0, 100.0, 24.0, None);
        light.ignore = true;
        let t = glance_targets(&[light], 40, 30);
        assert!(t.objectness.iter().all(|&o| o == 0.0));
        assert_eq!(t.weight[12 * 40 + 25], 0.0);
        assert_eq!(t.class_id, Some(BACKGROUND_CLASS));
    }

    /// A tiny glance net fitted to four images for a few dozen steps lowers its loss.
    #[test]
    fn tiny_glance_loss_falls() {
        let device = Device::Cpu;
        let cfg = GlanceNetConfig {
            input_width_px: 64,
            input_height_px: 48,
            channels: [4, 8, 8, 8],
            num_classes: saccade_models::NUM_CLASSES,
        };
        let (mw, mh) = cfg.map_size();
        let varmap = VarMap::new();
        let model =
            GlanceNetModel::new(&cfg, VarBuilder::from_varmap(&varmap, DType::F32, &device))
                .unwrap();
        let mut opt = AdamW::new(
            varmap.all_vars(),
            ParamsAdamW {
                lr: 1e-2,
                ..Default::default()
            },
        )
        .unwrap();
        let mut imgs = Vec::new();
        let mut targets = Vec::new();
        for k in 0..4 {
            // A bright square on a dark image, at a different place each time.
            let (x, y) = (12.0 + 10.0 * k as f32, 14.0 + 5.0 * k as f32);
            let mut chw = vec![0.1f32; 3 * 48 * 64];
            for yy in (y as usize - 4)..(y as usize + 4) {
                for xx in (x as usize - 4)..(x as usize + 4) {
                    chw[yy * 64 + xx] = 0.9;
                }
            }
            imgs.push(chw);
            targets.push(glance_targets(&[sign(x, y, 8.0, Some(k))], mw, mh));
        }
        let x = batch_tensor(&imgs, 3, 48, 64, &device).unwrap();
        let eval = |m: &GlanceNetModel| {
            let maps = m.train_maps(&x).unwrap();
            glance_loss(
                &maps.objectness_logits,
                &maps.log2_side,
                &maps.class_logits,
                &targets,
                1.0,
            )
            .unwrap()
        };
        let first = eval(&model).0.to_scalar::<f32>().unwrap();
        for _ in 0..40 {
            let (loss, _) = eval(&model);
            opt.backward_step(&loss).unwrap();
        }
        let last = eval(&model).0.to_scalar::<f32>().unwrap();
        assert!(last < 0.5 * first, "loss went from {first} to {last}");
    }
}
