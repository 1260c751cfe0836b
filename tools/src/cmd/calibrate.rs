//! `saccade calibrate`: fit GFNet's exit thresholds η_t on a validation split to a compute budget, as the
//! Glance-and-Focus paper does, and check on a second, held-out half that the budget is met.
//!
//! Validation frames are the GTSDB validation frames with `--gtsdb DATA` (training frames with number % 6 == 5),
//! else synthetic Eval-split scenes with seeds from 900 000 up, disjoint from the benchmark's seeds. The
//! thresholds are written as a `[gfnet]` table (`gfnet.toml` beside the weights by default), which `run`,
//! `demo`, `eval` and `bench` use when the gfnet settings are not customised and `strategies.toml` has no
//! `[gfnet]` table. The budget is simulated as one patch per focus step: second looks (box-head nets) add
//! patches the fit does not see, so the measured check can exceed the budget.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use saccade_runtime::focus::{
    fit_thresholds, FocusBudget, FocusInput, FocusOutcome, FocusStrategy, GfNet, GfNetConfig,
};
use saccade_runtime::frame::Frame;
use saccade_runtime::glance::GlanceStage;
use saccade_runtime::pipeline::TimedClassifier;
use saccade_runtime::synth::{SceneConfig, SceneGenerator, Split};

use crate::engine::{self, ModelArgs};
use crate::train::gtsdb::GtsdbSplit;

/// First seed of the validation scenes.
pub const VALIDATION_FIRST_SEED: u64 = 900_000;

#[derive(Debug, Clone, clap::Args)]
pub struct CalibrateArgs {
    /// Budget: mean focus patches per frame the thresholds should give.
    #[arg(long, default_value_t = 2.0)]
    pub budget_patches: f64,
    /// Validation frames (half fit the thresholds, half check them).
    #[arg(long, default_value_t = 60)]
    pub frames: usize,
    /// Focus steps T (≤ 5).
    #[arg(long, default_value_t = 5)]
    pub max_steps: usize,
    /// Where to write the `[gfnet]` table (default: gfnet.toml in the weights folder).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Fit on real frames: the GTSDB validation frames under DATA/gtsdb (training frames whose number
    /// % 6 == 5; never the test frames), first half fit, second half check. `--frames` is then ignored.
    #[arg(long)]
    pub gtsdb: Option<PathBuf>,
    #[command(flatten)]
    pub models: ModelArgs,
}

/// Run `strategy` over `frames` (glance first), calling `each` after every frame with the strategy and what it did.
fn run_gfnet(
    frames: &[Frame],
    glance: &mut GlanceStage,
    classifier: &Arc<TimedClassifier>,
    config: &GfNetConfig,
    mut each: impl FnMut(&GfNet, &FocusOutcome),
) -> anyhow::Result<()> {
    let mut strategy = GfNet::new(config.clone());
    for frame in frames {
        let map = glance.glance(frame)?;
        let input = FocusInput {
            frame,
            glance: &map,
            glance_size_px: glance.input_size_px(),
            classifier: classifier.as_ref(),
            budget: FocusBudget {
                max_patches: config.max_steps,
                deadline_ms: None,
            },
            started: Instant::now(),
        };
        let outcome = strategy.focus(&input)?;
        each(&strategy, &outcome);
    }
    Ok(())
}

fn record_confidences(
    frames: &[Frame],
    glance: &mut GlanceStage,
    classifier: &Arc<TimedClassifier>,
    config: &GfNetConfig,
) -> anyhow::Result<Vec<Vec<f32>>> {
    let mut out = Vec::with_capacity(frames.len());
    run_gfnet(
        frames,
        glance,
        classifier,
        &config.clone().never_exit(),
        |s, _| out.push(s.last_confidences().to_vec()),
    )?;
    Ok(out)
}

fn mean_patches(
    frames: &[Frame],
    glance: &mut GlanceStage,
    classifier: &Arc<TimedClassifier>,
    config: &GfNetConfig,
) -> anyhow::Result<f64> {
    let mut patches = 0usize;
    run_gfnet(frames, glance, classifier, config, |_, o| {
        patches += o.patches.len()
    })?;
    Ok(patches as f64 / frames.len().max(1) as f64)
}

pub fn calibrate(args: CalibrateArgs) -> anyhow::Result<()> {
    let models = engine::load_models(&args.models)?;
    let frames: Vec<Frame> = match &args.gtsdb {
        Some(data) => crate::train::gtsdb::load_gtsdb(data, GtsdbSplit::Validation)?
            .into_iter()
            .enumerate()
            .map(|(i, f)| Frame::from_rgb(i as u64, f.width_px as u32, f.height_px as u32, f.rgb))
            .collect::<Result<_, saccade_runtime::frame::FrameError>>()?,
        None => {
            let generator = SceneGenerator::new(SceneConfig {
                split: Split::Eval,
                ..SceneConfig::default()
            })?;
            (0..args.frames.max(2) as u64)
                .map(|i| {
                    let scene = generator.generate(VALIDATION_FIRST_SEED + i);
                    let mut frame = Frame::from_rgb(i, scene.width, scene.height, scene.rgb)?;
                    frame.truth = scene.truth;
                    Ok(frame)
                })
                .collect::<Result<_, saccade_runtime::frame::FrameError>>()?
        }
    };
    let weights_dir = args
        .models
        .weights_dir
        .clone()
        .unwrap_or_else(engine::default_weights_dir);
    // The fitted detection settings (strategies.toml) are the base; only the exit thresholds are fitted here.
    let fitted_base = crate::settings::effective_configs(
        &saccade_runtime::focus::StrategyConfigs::default(),
        &weights_dir,
    )?
    .gfnet;
    let (fit, check) = frames.split_at(frames.len() / 2);
    let mut glance = GlanceStage::new(models.glance.clone(), models.device.clone());
    let classifier = Arc::new(TimedClassifier::new(models.classifier.clone()));
    let base = GfNetConfig {
        max_steps: args.max_steps.clamp(1, 5),
        eta: GfNetConfig::default().eta,
        ..fitted_base
    };
    let confidences = record_confidences(fit, &mut glance, &classifier, &base)?;
    let eta = fit_thresholds(&confidences, args.budget_patches, base.max_steps);
    let fitted = GfNetConfig {
        eta: eta.clone(),
        ..base
    };
    let on_fit = mean_patches(fit, &mut glance, &classifier, &fitted)?;
    let on_check = mean_patches(check, &mut glance, &classifier, &fitted)?;
    let error_pct = if args.budget_patches > 0.0 {
        100.0 * (on_check - args.budget_patches).abs() / args.budget_patches
    } else {
        0.0
    };
    let out = args.out.clone().unwrap_or_else(|| {
        args.models
            .weights_dir
            .clone()
            .unwrap_or_else(engine::default_weights_dir)
            .join("gfnet.toml")
    });
    let frames_said = match &args.gtsdb {
        Some(_) => "GTSDB validation frames (training frames with number % 6 == 5)".to_string(),
        None => format!("synthetic Eval-split frames (seeds {VALIDATION_FIRST_SEED}..)"),
    };
    let command = match &args.gtsdb {
        Some(_) => format!(
            "saccade calibrate --budget-patches {} --gtsdb ../shared/data",
            args.budget_patches
        ),
        None => format!(
            "saccade calibrate --budget-patches {} --frames {}",
            args.budget_patches, args.frames
        ),
    };
    let header = format!(
        "# GFNet exit thresholds fitted by `{command}`\n\
         # on {} {frames_said}, checked on {} more: mean patches {:.3} (fit) / {:.3} (check),\n\
         # {:.1} % from the budget.\n",
        fit.len(),
        check.len(),
        on_fit,
        on_check,
        error_pct
    );
    let body = toml::to_string_pretty(&crate::settings::CalibratedGfNet { gfnet: fitted })?;
    std::fs::write(&out, format!("{header}{body}"))
        .with_context(|| format!("writing {}", out.display()))?;
    println!(
        "eta = {eta:?}\nbudget {:.2} patches/frame: fit half {on_fit:.3}, held-out half {on_check:.3} ({error_pct:.1} % off)\nwrote {}",
        args.budget_patches,
        out.display()
    );
    Ok(())
}
