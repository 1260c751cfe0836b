//! `saccade train scorer`: differentiable patch selection (Cordonnier et al. 2021) on a frame-level task,
//! "which speed limit is in this frame" (synthetic scenes with exactly one speed-limit sign). The frozen
//! glance net proposes `C` candidate cells (highest objectness); a small scorer head on the glance outputs
//! of each candidate scores them; the perturbed top-K ([`super::topk`]) turns the scores into soft
//! selection weights of `K` patches; the frozen patch classifier's probabilities of the candidates are
//! averaged with those weights and a linear head maps them to the frame label. Cross-entropy on the frame
//! label trains the scorer through the top-K's perturbation gradient. Glance and patch outputs are frozen,
//! so they are computed once per frame and the training loop itself is cheap.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context};
use candle_core::{DType, Device, Module, Tensor, D};
use candle_nn::{AdamW, Optimizer, ParamsAdamW, VarBuilder, VarMap};
use rand::seq::SliceRandom;
use saccade_models::glancenet::{GlanceNetModel, GLANCE_STRIDE_PX};
use saccade_models::patchnet::PatchNet;
use saccade_models::PatchClassifier;
use saccade_runtime::focus::geometry::{refined_centre_frame, GlanceGeometry};
use saccade_runtime::synth::{Scene, Split};

use super::augment::{area_downscale, crop_square};
use super::common::{batch_tensor, progress, rng_for};
use super::scenes::generator;
use super::topk::{perturbed_topk, PerturbedTopK};
use rayon::prelude::*;

/// GTSRB ids of the speed-limit signs (20, 30, 50, 60, 70, 80, 100, 120 km/h): the frame labels.
pub const SPEED_LIMIT_CLASSES: [usize; 8] = [0, 1, 2, 3, 4, 5, 7, 8];

/// Inputs per candidate of the scorer head: objectness logit, log2 side, x and y (0..1), mean RGB of the cell.
const SCORER_INPUTS: usize = 7;

/// Knobs of `saccade train scorer`.
#[derive(Debug, Clone, clap::Args)]
pub struct ScorerArgs {
    #[arg(long, default_value = "../shared/data")]
    pub data: PathBuf,
    /// Holds glancenet.safetensors and patchnet.safetensors; scorer.safetensors is written here.
    #[arg(long, default_value = "models/weights")]
    pub out: PathBuf,
    #[arg(long, default_value_t = 20261126)]
    pub seed: u64,
    #[arg(long, default_value_t = 40)]
    pub epochs: usize,
    /// Scenes generated per split; those with exactly one speed-limit sign are kept.
    #[arg(long, default_value_t = 1500)]
    pub scenes: usize,
    #[arg(long, default_value_t = 300)]
    pub eval_scenes: usize,
    /// Candidate cells proposed by the frozen glance net.
    #[arg(long, default_value_t = 12)]
    pub candidates: usize,
    /// Patches selected per frame.
    #[arg(long, default_value_t = 4)]
    pub k: usize,
    /// Standard deviation of the top-K perturbation.
    #[arg(long, default_value_t = 0.05)]
    pub sigma: f32,
    /// Monte-Carlo samples of the perturbed top-K.
    #[arg(long, default_value_t = 500)]
    pub samples: usize,
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    #[arg(long, default_value_t = 3e-3)]
    pub lr: f64,
}

/// Everything the scorer needs of one frame, computed once with the frozen nets.
#[derive(Debug, Clone)]
struct FrameCandidates {
    /// `C × SCORER_INPUTS`.
    scorer_inputs: Vec<f32>,
    /// `C × NUM_CLASSES` patch classifier probabilities.
    patch_probs: Vec<f32>,
    /// Index into [`SPEED_LIMIT_CLASSES`].
    label: usize,
}

/// Frames of `split` with exactly one speed-limit sign, with their candidates.
#[allow(clippy::too_many_arguments)]
fn candidate_frames(
    args: &ScorerArgs,
    split: Split,
    count: usize,
    first_seed: u64,
    glance: &GlanceNetModel,
    patch: &PatchNet,
) -> anyhow::Result<Vec<FrameCandidates>> {
    let generator = generator(&args.data, split)?;
    let cfg = glance.config().clone();
    let (map_w, map_h) = cfg.map_size();
    let factor = 1280 / cfg.input_width_px;
    let side = patch.input_side_px();
    let bar = progress(count, &format!("{split:?} scorer frames"));
    let frame = |i: usize| -> anyhow::Result<Option<FrameCandidates>> {
        bar.inc(1);
        let scene: Scene = generator.generate(first_seed.wrapping_add(i as u64));
        let limits: Vec<usize> = scene
            .truth
            .iter()
            .filter_map(|t| t.class_id)
            .filter_map(|c| SPEED_LIMIT_CLASSES.iter().position(|&s| s == c))
            .collect();
        if limits.len() != 1 {
            return Ok(None);
        }
        let (w, h) = (scene.width as usize, scene.height as usize);
        let chw = area_downscale(&scene.rgb, w, h, factor);
        let x = batch_tensor(
            std::slice::from_ref(&chw),
            3,
            cfg.input_height_px,
            cfg.input_width_px,
            &Device::Cpu,
        )?;
        let maps = glance.forward_maps(&x)?;
        let obj = maps.objectness_logits.flatten_all()?.to_vec1::<f32>()?;
        let sides = maps.log2_side.flatten_all()?.to_vec1::<f32>()?;
        // The runtime's view of the map (probabilities) and geometry, to centre patches as it does.
        let map = saccade_models::GlanceMap {
            map_width: map_w,
            map_height: map_h,
            stride_px: GLANCE_STRIDE_PX,
            objectness: obj.iter().map(|&l| 1.0 / (1.0 + (-l).exp())).collect(),
            ..Default::default()
        };
        let geometry = GlanceGeometry {
            frame_width_px: w as f32,
            frame_height_px: h as f32,
            frame_per_glance_x: factor as f32,
            frame_per_glance_y: factor as f32,
            stride_glance_px: GLANCE_STRIDE_PX as f32,
            map_width: map_w,
            map_height: map_h,
        };
        let mut ranked: Vec<usize> = (0..obj.len()).collect();
        ranked.sort_by(|&a, &b| obj[b].total_cmp(&obj[a]));
        let order = spread_candidates(&ranked, map_w, args.candidates);
        let plane = cfg.input_width_px * cfg.input_height_px;
        let mut scorer_inputs = Vec::with_capacity(order.len() * SCORER_INPUTS);
        let mut patches = Vec::with_capacity(order.len());
        for &cell in &order {
            let (cx, cy) = (cell % map_w, cell / map_w);
            let mut rgb = [0f32; 3];
            for (c, v) in rgb.iter_mut().enumerate() {
                let mut acc = 0.0;
                for y in cy * GLANCE_STRIDE_PX..(cy + 1) * GLANCE_STRIDE_PX {
                    for x in cx * GLANCE_STRIDE_PX..(cx + 1) * GLANCE_STRIDE_PX {
                        acc += chw[c * plane
                            + y.min(cfg.input_height_px - 1) * cfg.input_width_px
                            + x.min(cfg.input_width_px - 1)];
                    }
                }
                *v = acc / (GLANCE_STRIDE_PX * GLANCE_STRIDE_PX) as f32;
            }
            scorer_inputs.extend([
                obj[cell],
                sides[cell],
                (cx as f32 + 0.5) / map_w as f32,
                (cy as f32 + 0.5) / map_h as f32,
                rgb[0],
                rgb[1],
                rgb[2],
            ]);
            // The patch the runtime would cut: centred where the cell and its neighbours place the sign
            // (`refine_centre`, as `topk` does), the predicted sign filling ~70 %. Cell centres alone are up to
            // 16 px off, which cuts small signs in half.
            let (centre_x, centre_y) = refined_centre_frame(&map, &geometry, cell);
            let sign_px = sides[cell].clamp(1.0, 8.0).exp2() * factor as f32;
            let region = (sign_px / 0.7).max(side as f32);
            patches.push(crop_square(
                &scene.rgb,
                w,
                h,
                centre_x - region / 2.0,
                centre_y - region / 2.0,
                region,
                side,
            ));
        }
        let probs = patch.classify(&batch_tensor(&patches, 3, side, side, &Device::Cpu)?)?;
        Ok(Some(FrameCandidates {
            scorer_inputs,
            patch_probs: probs.flatten_all()?.to_vec1::<f32>()?,
            label: limits[0],
        }))
    };
    // Frames on all cores; `collect` keeps the seed order, so the result does not depend on the threads.
    let frames: Vec<Option<FrameCandidates>> = (0..count)
        .into_par_iter()
        .map(frame)
        .collect::<anyhow::Result<_>>()?;
    bar.finish_and_clear();
    Ok(frames.into_iter().flatten().collect())
}

/// The first `count` cells of `ranked` (best first) such that no two are neighbours (8-connected on a map
/// `map_w` cells wide): without this the candidates crowd around the most salient sign of the frame.
fn spread_candidates(ranked: &[usize], map_w: usize, count: usize) -> Vec<usize> {
    let w = map_w.max(1);
    let mut out: Vec<usize> = Vec::with_capacity(count);
    for &cell in ranked {
        if out.len() == count {
            break;
        }
        let (x, y) = (cell % w, cell / w);
        let near = out
            .iter()
            .any(|&o| (o % w).abs_diff(x) <= 1 && (o / w).abs_diff(y) <= 1);
        if !near {
            out.push(cell);
        }
    }
    out
}

/// Scorer head (per candidate MLP) and the frame head over aggregated patch probabilities.
struct ScorerModel {
    score1: candle_nn::Linear,
    score2: candle_nn::Linear,
    head: candle_nn::Linear,
}

impl ScorerModel {
    fn new(vb: VarBuilder) -> candle_core::Result<Self> {
        Ok(Self {
            score1: candle_nn::linear(SCORER_INPUTS, 16, vb.pp("scorer.fc1"))?,
            score2: candle_nn::linear(16, 1, vb.pp("scorer.fc2"))?,
            head: candle_nn::linear(
                saccade_models::NUM_CLASSES,
                SPEED_LIMIT_CLASSES.len(),
                vb.pp("head"),
            )?,
        })
    }

    /// Candidate scores.
    ///
    /// # Shapes
    /// `(b, C, SCORER_INPUTS)` → `(b, C)`.
    fn scores(&self, inputs: &Tensor) -> candle_core::Result<Tensor> {
        let (b, c, f) = inputs.dims3()?;
        // (b, C, F) -> (b·C, F) -> (b·C, 16) -> (b·C, 1) -> (b, C)
        let x = inputs.reshape((b * c, f))?;
        let x = self.score1.forward(&x)?.relu()?;
        self.score2.forward(&x)?.reshape((b, c))
    }

    /// Frame logits from selection weights and candidate probabilities.
    ///
    /// # Shapes
    /// `weights (b, C)`, `probs (b, C, classes)` → `(b, 8)`.
    fn frame_logits(
        &self,
        weights: &Tensor,
        probs: &Tensor,
        k: usize,
    ) -> candle_core::Result<Tensor> {
        // (b, 1, C) × (b, C, classes) -> (b, 1, classes) -> (b, classes)
        let pooled = weights
            .unsqueeze(1)?
            .matmul(probs)?
            .squeeze(1)?
            .affine(1.0 / k as f64, 0.0)?;
        // Log of the averaged probabilities: the head then reads evidence on a log scale.
        let pooled = (pooled + 1e-4)?.log()?;
        self.head.forward(&pooled)
    }
}

fn batch_inputs(
    frames: &[&FrameCandidates],
    c: usize,
    device: &Device,
) -> anyhow::Result<(Tensor, Tensor, Tensor)> {
    let b = frames.len();
    let inputs: Vec<f32> = frames
        .iter()
        .flat_map(|f| f.scorer_inputs.iter().copied())
        .collect();
    let probs: Vec<f32> = frames
        .iter()
        .flat_map(|f| f.patch_probs.iter().copied())
        .collect();
    let labels: Vec<u32> = frames.iter().map(|f| f.label as u32).collect();
    Ok((
        Tensor::from_vec(inputs, (b, c, SCORER_INPUTS), device)?,
        Tensor::from_vec(probs, (b, c, saccade_models::NUM_CLASSES), device)?,
        Tensor::new(labels.as_slice(), device)?,
    ))
}

/// Starts the frame head as the identity on the speed-limit classes: frame logit j = log of the averaged
/// probability of speed limit j, so training starts from reading the classifier and adjusts from there. From
/// a random start, the head did not learn that mapping in 60 epochs (loss above ln 8, frame accuracy near chance
/// with the task's upper bound at 46 %).
fn start_head_at_identity(varmap: &VarMap) -> anyhow::Result<()> {
    let data = varmap
        .data()
        .lock()
        .map_err(|_| anyhow::anyhow!("scorer VarMap lock poisoned"))?;
    let classes = saccade_models::NUM_CLASSES;
    let mut weight = vec![0f32; SPEED_LIMIT_CLASSES.len() * classes];
    for (j, &c) in SPEED_LIMIT_CLASSES.iter().enumerate() {
        weight[j * classes + c] = 1.0;
    }
    let (Some(w), Some(b)) = (data.get("head.weight"), data.get("head.bias")) else {
        anyhow::bail!("the scorer has no head.weight/head.bias variables");
    };
    let device = w.as_tensor().device().clone();
    w.set(&Tensor::from_vec(
        weight,
        (SPEED_LIMIT_CLASSES.len(), classes),
        &device,
    )?)?;
    b.set(&Tensor::zeros(
        SPEED_LIMIT_CLASSES.len(),
        DType::F32,
        &device,
    )?)?;
    Ok(())
}

/// Hard top-K selection weights (1 for the K best, 0 else), the inference-time form of the perturbed top-K.
fn hard_topk(scores: &Tensor, k: usize) -> anyhow::Result<Tensor> {
    let rows = scores.to_vec2::<f32>()?;
    let mut out = Vec::new();
    for row in &rows {
        let mut order: Vec<usize> = (0..row.len()).collect();
        order.sort_by(|&a, &b| row[b].total_cmp(&row[a]));
        let mut w = vec![0f32; row.len()];
        for &i in order.iter().take(k) {
            w[i] = 1.0;
        }
        out.extend(w);
    }
    Ok(Tensor::from_vec(
        out,
        (rows.len(), rows.first().map_or(0, Vec::len)),
        scores.device(),
    )?)
}

/// Frame accuracy with hard top-K on the scorer's scores (`use_scorer`) or on the glance objectness alone.
fn frame_accuracy(
    model: &ScorerModel,
    frames: &[FrameCandidates],
    args: &ScorerArgs,
    use_scorer: bool,
) -> anyhow::Result<f64> {
    let device = Device::Cpu;
    let mut hits = 0;
    for chunk in frames.chunks(64) {
        let refs: Vec<&FrameCandidates> = chunk.iter().collect();
        let (inputs, probs, labels) = batch_inputs(&refs, args.candidates, &device)?;
        let scores = if use_scorer {
            model.scores(&inputs)?
        } else {
            inputs.narrow(2, 0, 1)?.squeeze(2)?
        };
        let weights = hard_topk(&scores, args.k)?;
        let predicted = model
            .frame_logits(&weights, &probs, args.k)?
            .argmax(D::Minus1)?;
        hits += predicted
            .eq(&labels)?
            .to_dtype(DType::U32)?
            .sum_all()?
            .to_scalar::<u32>()? as usize;
    }
    Ok(hits as f64 / frames.len().max(1) as f64)
}

/// Upper bounds of the frame task: the fraction of frames in which the speed limit is the classifier's top
/// class for any candidate, and for one of the first `k` candidates (objectness order).
fn candidate_recall(frames: &[FrameCandidates], k: usize) -> (f64, f64) {
    let classes = saccade_models::NUM_CLASSES;
    let top = |probs: &[f32]| {
        probs
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map_or(0, |(i, _)| i)
    };
    let (mut any, mut first) = (0usize, 0usize);
    for f in frames {
        let want = SPEED_LIMIT_CLASSES[f.label];
        let hits: Vec<bool> = f
            .patch_probs
            .chunks_exact(classes)
            .map(|p| top(p) == want)
            .collect();
        any += usize::from(hits.iter().any(|&h| h));
        first += usize::from(hits.iter().take(k).any(|&h| h));
    }
    let n = frames.len().max(1) as f64;
    (any as f64 / n, first as f64 / n)
}

/// Trains and saves the scorer; see the module docs.
pub fn train_scorer(args: &ScorerArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let device = Device::Cpu;
    if args.k == 0 || args.k > args.candidates {
        bail!(
            "--k is {}, expected 1..={} (--candidates)",
            args.k,
            args.candidates
        );
    }
    let glance_path = args.out.join("glancenet.safetensors");
    let patch_path = args.out.join("patchnet.safetensors");
    let glance = GlanceNetModel::load(&glance_path, &device)
        .with_context(|| format!("loading {}", glance_path.display()))?;
    let patch = PatchNet::load(&patch_path, &device)
        .with_context(|| format!("loading {}", patch_path.display()))?;
    let train = candidate_frames(
        args,
        Split::Train,
        args.scenes,
        args.seed.wrapping_mul(7919),
        &glance,
        &patch,
    )?;
    let eval = candidate_frames(
        args,
        Split::Eval,
        args.eval_scenes,
        500_000,
        &glance,
        &patch,
    )?;
    if train.len() < args.batch {
        bail!(
            "only {} training frames with exactly one speed-limit sign; raise --scenes",
            train.len()
        );
    }
    println!(
        "scorer data: {} Train frames, {} Eval frames with one speed-limit sign ({:.0} s)",
        train.len(),
        eval.len(),
        started.elapsed().as_secs_f64()
    );
    for (name, frames) in [("Train", &train), ("Eval", &eval)] {
        let (any, first4) = candidate_recall(frames, args.k);
        println!(
            "  {name}: the frame's speed limit is the top class of some candidate in {:.1} % of frames, of one of the \
             {} best by objectness in {:.1} %",
            100.0 * any,
            args.k,
            100.0 * first4
        );
    }
    let varmap = VarMap::new();
    ScorerModel::new(VarBuilder::from_varmap(&varmap, DType::F32, &device))?;
    super::common::seed_varmap(&varmap, args.seed)?;
    start_head_at_identity(&varmap)?;
    let model = ScorerModel::new(VarBuilder::from_varmap(&varmap, DType::F32, &device))?;
    let mut opt = AdamW::new(
        varmap.all_vars(),
        ParamsAdamW {
            lr: args.lr,
            weight_decay: 1e-4,
            ..Default::default()
        },
    )?;
    let mut rng = rng_for(args.seed, 11);
    let mut order: Vec<usize> = (0..train.len()).collect();
    let mut step = 0u64;
    let mut log = Vec::new();
    for epoch in 0..args.epochs {
        order.shuffle(&mut rng);
        let (mut loss_sum, mut n) = (0.0f64, 0usize);
        for idx in order.chunks_exact(args.batch) {
            let refs: Vec<&FrameCandidates> = idx.iter().map(|&i| &train[i]).collect();
            let (inputs, probs, labels) = batch_inputs(&refs, args.candidates, &device)?;
            let scores = model.scores(&inputs)?;
            let op = PerturbedTopK {
                k: args.k,
                sigma: args.sigma,
                samples: args.samples,
                seed: args.seed ^ step,
            };
            let weights = perturbed_topk(&scores, op)?;
            let logits = model.frame_logits(&weights, &probs, args.k)?;
            let loss = candle_nn::loss::cross_entropy(&logits, &labels)?;
            opt.backward_step(&loss)?;
            loss_sum += loss.to_scalar::<f32>()? as f64;
            n += 1;
            step += 1;
        }
        if epoch % 5 == 4 || epoch + 1 == args.epochs {
            let line = format!(
                "epoch {}/{}: loss {:.4}, train frame acc {:.1} %, eval frame acc {:.1} % (scorer top-{}) vs {:.1} % (glance objectness top-{})",
                epoch + 1,
                args.epochs,
                loss_sum / n.max(1) as f64,
                100.0 * frame_accuracy(&model, &train, args, true)?,
                100.0 * frame_accuracy(&model, &eval, args, true)?,
                args.k,
                100.0 * frame_accuracy(&model, &eval, args, false)?,
                args.k
            );
            println!("{line}");
            log.push(line);
        }
    }
    let scorer_acc = frame_accuracy(&model, &eval, args, true)?;
    let glance_acc = frame_accuracy(&model, &eval, args, false)?;
    let path = args.out.join("scorer.safetensors");
    let tensors: HashMap<String, Tensor> = varmap
        .data()
        .lock()
        .map_err(|_| anyhow::anyhow!("scorer VarMap lock poisoned"))?
        .iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
        .collect();
    candle_core::safetensors::save(&tensors, &path)
        .with_context(|| format!("writing {}", path.display()))?;
    let report = serde_json::json!({
        "eval_frames": eval.len(),
        "train_frames": train.len(),
        "eval_frame_accuracy_scorer": scorer_acc,
        "eval_frame_accuracy_glance_objectness": glance_acc,
        "train_seconds": started.elapsed().as_secs_f64(),
        "epochs": log,
        "args": format!("{args:?}"),
    });
    std::fs::write(
        args.out.join("scorer.metrics.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    println!(
        "scorer done in {:.0} s: eval frame accuracy {:.1} % with the scorer vs {:.1} % with glance objectness; wrote {}",
        started.elapsed().as_secs_f64(),
        100.0 * scorer_acc,
        100.0 * glance_acc,
        path.display()
    );
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// The scorer learns, through the perturbed top-K alone, to select the one candidate whose patch
    /// carries the label: candidate features mark it (input 0 high), other candidates carry noise classes.
    #[test]
    fn candidates_skip_neighbours_of_better_cells() {
        // 5-wide map: cells 0 (0,0), 1 (1,0), 6 (1,1), 3 (3,0), 12 (2,2) ranked in that order.
        assert_eq!(spread_candidates(&[0, 1, 6, 3, 12], 5, 3), vec![0, 3, 12]);
        assert_eq!(spread_candidates(&[0, 1, 6, 3, 12], 5, 1), vec![0]);
        assert!(spread_candidates(&[], 5, 3).is_empty());
    }

    /// The head's starting point reads the classifier: the frame label is the speed limit with the largest
    /// averaged probability, whatever the other classes hold.
    #[test]
    fn head_starts_at_the_identity_on_speed_limits() {
        let device = Device::Cpu;
        let varmap = VarMap::new();
        ScorerModel::new(VarBuilder::from_varmap(&varmap, DType::F32, &device)).unwrap();
        super::super::common::seed_varmap(&varmap, 5).unwrap();
        start_head_at_identity(&varmap).unwrap();
        let model =
            ScorerModel::new(VarBuilder::from_varmap(&varmap, DType::F32, &device)).unwrap();
        let classes = saccade_models::NUM_CLASSES;
        for (label, &class) in SPEED_LIMIT_CLASSES.iter().enumerate() {
            // Two candidates: one splits its mass between the label's class and a non-speed-limit class (which
            // is larger), the other is background.
            let mut probs = vec![0.01f32; 2 * classes];
            probs[class] = 0.3;
            probs[14] = 0.6;
            probs[classes + saccade_models::BACKGROUND_CLASS] = 0.9;
            let probs = Tensor::from_vec(probs, (1, 2, classes), &device).unwrap();
            let weights = Tensor::new(&[[1f32, 1.0]], &device).unwrap();
            let logits = model.frame_logits(&weights, &probs, 2).unwrap();
            let got = logits.argmax(D::Minus1).unwrap().to_vec1::<u32>().unwrap()[0];
            assert_eq!(got as usize, label);
        }
    }

    #[test]
    fn scorer_learns_to_select_the_informative_candidate() {
        let device = Device::Cpu;
        let c = 6;
        let mut rng = rng_for(3, 0);
        let mut frames = Vec::new();
        for i in 0..64 {
            let label = i % 8;
            let good = rand::Rng::random_range(&mut rng, 0..c);
            let mut inputs = vec![0f32; c * SCORER_INPUTS];
            let mut probs = vec![0f32; c * saccade_models::NUM_CLASSES];
            for j in 0..c {
                inputs[j * SCORER_INPUTS + 4] = if j == good { 1.0 } else { -1.0 };
                let class = if j == good {
                    SPEED_LIMIT_CLASSES[label]
                } else {
                    SPEED_LIMIT_CLASSES[(label + 1 + j) % 8]
                };
                probs[j * saccade_models::NUM_CLASSES + class] = 1.0;
            }
            frames.push(FrameCandidates {
                scorer_inputs: inputs,
                patch_probs: probs,
                label,
            });
        }
        let args = ScorerArgs {
            data: PathBuf::new(),
            out: PathBuf::new(),
            seed: 1,
            epochs: 0,
            scenes: 0,
            eval_scenes: 0,
            candidates: c,
            k: 1,
            sigma: 0.3,
            samples: 200,
            batch: 16,
            lr: 2e-2,
        };
        let varmap = VarMap::new();
        ScorerModel::new(VarBuilder::from_varmap(&varmap, DType::F32, &device)).unwrap();
        crate::train::common::seed_varmap(&varmap, 7).unwrap();
        let model =
            ScorerModel::new(VarBuilder::from_varmap(&varmap, DType::F32, &device)).unwrap();
        let mut opt = AdamW::new(
            varmap.all_vars(),
            ParamsAdamW {
                lr: args.lr,
                ..Default::default()
            },
        )
        .unwrap();
        for step in 0..150u64 {
            let refs: Vec<&FrameCandidates> = frames
                .iter()
                .skip((step as usize * 16) % 64)
                .take(16)
                .collect();
            let (inputs, probs, labels) = batch_inputs(&refs, c, &device).unwrap();
            let op = PerturbedTopK {
                k: 1,
                sigma: args.sigma,
                samples: args.samples,
                seed: step,
            };
            let w = perturbed_topk(&model.scores(&inputs).unwrap(), op).unwrap();
            let loss = candle_nn::loss::cross_entropy(
                &model.frame_logits(&w, &probs, 1).unwrap(),
                &labels,
            )
            .unwrap();
            opt.backward_step(&loss).unwrap();
        }
        let acc = frame_accuracy(&model, &frames, &args, true).unwrap();
        assert!(acc > 0.9, "frame accuracy {acc}");
    }
}
