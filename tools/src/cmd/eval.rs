//! `saccade eval`: detection quality and cost of a strategy on annotated frames.

use std::collections::HashSet;
use std::path::PathBuf;

use anyhow::{ensure, Context};

use crate::engine::{self, ModelArgs, StrategyArgs};
use crate::eval::*;
use crate::settings::{configs_with_user_file, StrategyFile};

#[derive(Debug, Clone, clap::Args)]
pub struct EvalArgs {
    /// Folder of frames (JPEG/PNG); frames without a row in the CSV count as frames with no sign.
    #[arg(long)]
    pub images: PathBuf,
    /// Annotations: `file,width,height,class,gtsrb_class_id,xmin,ymin,xmax,ymax` (inclusive corners).
    #[arg(long)]
    pub annotations: PathBuf,
    /// Write the report as JSON to this path (`-` for stdout).
    #[arg(long)]
    pub json: Option<String>,
    /// Comma-separated `class` values whose boxes are neutral (a detection of them is neither TP nor FP).
    #[arg(long, value_delimiter = ',')]
    pub ignore_classes: Vec<String>,
    /// Only the frames of this GTSDB split (by the file stem's frame number: train = 0–599 except
    /// number % 6 == 5, validation = number % 6 == 5 below 600, test = 600–899); `all`: every frame.
    #[arg(long, value_enum, default_value_t = EvalSplit::All)]
    pub split: EvalSplit,
    /// TOML file of strategy settings (`[topk]`, `[gfnet]`, …): its keys override the fitted settings beside
    /// the weights, which override the defaults.
    #[arg(long)]
    pub strategy_config: Option<PathBuf>,
    /// Also print the score-threshold sweep (the JSON always has it).
    #[arg(long)]
    pub sweep: bool,
    /// Resize every frame to `WIDTHxHEIGHT` before it enters the pipeline (boxes scaled alike): the same
    /// scene as a camera of another resolution sees it.
    #[arg(long)]
    pub rescale: Option<String>,
    /// Evaluate only the first N frames (in name order, after `--split`): for slow baselines such as
    /// `fullres`.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Write every missed sign and every false positive to this CSV (one row each: frame, kind, class, box,
    /// side, whether the strategy looked at it, the nearest detection): where each miss was lost.
    #[arg(long)]
    pub misses: Option<PathBuf>,
    #[command(flatten)]
    pub strategy: StrategyArgs,
    #[command(flatten)]
    pub models: ModelArgs,
}

/// Evaluates the strategy on the annotated frames and writes the reports the flags ask for.
pub fn eval(args: EvalArgs) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&args.annotations)
        .with_context(|| format!("reading annotations {}", args.annotations.display()))?;
    let rows = parse_annotations(&text, &args.annotations)?;
    let items = items_from_folder(&args.images, &rows)?;
    let mut items = select_split(items, args.split, &args.images)?;
    if let Some(n) = args.limit {
        ensure!(n > 0, "--limit 0: expected at least one frame");
        items.truncate(n);
    }
    let user_settings = args
        .strategy_config
        .as_deref()
        .map(StrategyFile::load)
        .transpose()?;
    let models = engine::load_models(&args.models)?;
    let configs = configs_with_user_file(user_settings.as_ref(), &models.weights_dir)?;
    let mut processor = engine::build_processor_exact(&models, &args.strategy, &configs)?;
    let ignored: HashSet<String> = args
        .ignore_classes
        .iter()
        .map(|c| c.trim().to_string())
        .filter(|c| !c.is_empty())
        .collect();
    let rescale = match &args.rescale {
        Some(text) => {
            let (w, h) = crate::train::common::parse_size(text)?;
            ensure!(
                w <= 8192 && h <= 8192,
                "--rescale {text}: at most 8192 px a side"
            );
            Some((w as u32, h as u32))
        }
        None => None,
    };
    let mut evaluation = evaluate_rescaled(
        &mut processor,
        args.strategy.strategy.name(),
        &items,
        &ignored,
        rescale,
    )?;
    let report = &mut evaluation.report;
    report.split = args.split;
    report.strategy_config = args
        .strategy_config
        .as_ref()
        .map(|p| p.display().to_string());
    report.strategy_settings = serde_json::to_value(&configs)?
        .get(args.strategy.strategy.name())
        .cloned()
        .map(floats_as_f32);
    eprint!("{}", report.human());
    if args.sweep {
        eprint!("{}", report.sweep_table());
    }
    if let Some(path) = &args.json {
        write_json(&evaluation.report, path)?;
    }
    if let Some(path) = &args.misses {
        let names: Vec<&str> = items.iter().map(|i| i.name.as_str()).collect();
        let csv = misses_csv(
            &names,
            &evaluation.scored_frames,
            &evaluation.examined,
            &ignored,
        );
        std::fs::write(path, csv)
            .with_context(|| format!("writing --misses {}", path.display()))?;
    }
    Ok(())
}
