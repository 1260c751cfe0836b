//! `saccade eval-classifier`: accuracy and latency of the patch classifier on GTSRB crops.

use std::path::PathBuf;

use anyhow::Context;
use saccade_models::patchnet::PatchNet;

use crate::engine::{self};
use crate::eval::*;

#[derive(Debug, Clone, clap::Args)]
pub struct EvalClassifierArgs {
    /// Folder in the GTSRB layout: `test_images.u8` (N×32×32×3 RGB) and `test_labels.u8` (N class ids).
    #[arg(long)]
    pub data: PathBuf,
    /// Classifier weights (safetensors or GGUF; default: models/weights/patchnet.q8_0.gguf).
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// Patches per classifier call.
    #[arg(long, default_value_t = 256)]
    pub batch: usize,
    /// Evaluate only the first N images.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Write the report as JSON to this path (`-` for stdout).
    #[arg(long)]
    pub json: Option<String>,
}

pub fn eval_classifier(args: EvalClassifierArgs) -> anyhow::Result<()> {
    let mut set = GtsrbTest::load(&args.data)?;
    if let Some(limit) = args.limit {
        let n = limit.min(set.len());
        set.images.truncate(n * GTSRB_SIDE_PX * GTSRB_SIDE_PX * 3);
        set.labels.truncate(n);
    }
    let weights = args
        .weights
        .clone()
        .unwrap_or_else(|| engine::default_weights_dir().join("patchnet.q8_0.gguf"));
    let device = engine::device()?;
    let model = PatchNet::load(&weights, &device)
        .with_context(|| format!("loading the patch classifier from {}", weights.display()))?;
    let (predicted, ms_per_patch, p50_ms_per_batch) =
        evaluate_classifier(&model, &set, args.batch, &device)?;
    let report = classifier_report(
        &model,
        &weights,
        &set,
        &predicted,
        args.batch,
        ms_per_patch,
        p50_ms_per_batch,
    );
    eprint!("{}", report.human());
    if let Some(path) = &args.json {
        write_json(&report, path)?;
    }
    Ok(())
}
