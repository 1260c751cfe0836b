//! Building what a run needs from flags: the models (loaded once, shared by every source), the strategy and
//! the per-frame budget.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use candle_core::Device;
use saccade_models::glancenet::GlanceNetModel;
use saccade_models::patchnet::PatchNet;
use saccade_models::{GlanceNet, PatchClassifier};
use saccade_runtime::focus::{strategy_by_name, FocusBudget, FocusStrategy, StrategyConfigs};
use saccade_runtime::glance::GlanceStage;
use saccade_runtime::pipeline::FrameProcessor;

/// Where the weights of a fresh checkout are: `models/weights/` of the source tree this binary was built from.
pub fn default_weights_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(|root| root.join("models").join("weights"))
        .unwrap_or_else(|| PathBuf::from("models/weights"))
}

/// The folder of sample frames that ship with saccade (for `saccade demo`).
pub fn default_samples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("samples")
}

/// Which weight files to load.
#[derive(Debug, Clone, clap::Args)]
pub struct ModelArgs {
    /// Folder with `glancenet.q8_0.gguf` and `patchnet.q8_0.gguf` (default: models/weights of the source tree).
    #[arg(long)]
    pub weights_dir: Option<PathBuf>,
    /// Glance net weights (safetensors or GGUF); overrides --weights-dir.
    #[arg(long)]
    pub glance_weights: Option<PathBuf>,
    /// Patch classifier weights (safetensors or GGUF); overrides --weights-dir.
    #[arg(long)]
    pub classifier_weights: Option<PathBuf>,
    /// Weight variant to pick from --weights-dir: q8_0 (GGUF), q4_0 (GGUF) or f32 (safetensors).
    #[arg(long, default_value = "q8_0")]
    pub dtype: String,
}

impl ModelArgs {
    fn file_in_dir(&self, stem: &str) -> PathBuf {
        let dir = self.weights_dir.clone().unwrap_or_else(default_weights_dir);
        match self.dtype.as_str() {
            "f32" => dir.join(format!("{stem}.safetensors")),
            other => dir.join(format!("{stem}.{other}.gguf")),
        }
    }
    pub fn glance_path(&self) -> PathBuf {
        self.glance_weights
            .clone()
            .unwrap_or_else(|| self.file_in_dir("glancenet"))
    }
    pub fn classifier_path(&self) -> PathBuf {
        self.classifier_weights
            .clone()
            .unwrap_or_else(|| self.file_in_dir("patchnet"))
    }
}

/// The strategy and the per-frame budget.
#[derive(Debug, Clone, clap::Args)]
pub struct StrategyArgs {
    /// Focus strategy: topk, gfnet, zoom, coarse2fine, fullres, downsample.
    #[arg(long, default_value = "topk")]
    pub strategy: String,
    /// Hard limit of patches per frame (the patch pool size).
    #[arg(long, default_value_t = 8)]
    pub max_patches: usize,
    /// Per-frame deadline in ms: the strategy stops when it is spent.
    #[arg(long)]
    pub deadline_ms: Option<f64>,
}

impl StrategyArgs {
    pub fn budget(&self) -> FocusBudget {
        FocusBudget {
            max_patches: self.max_patches,
            deadline_ms: self.deadline_ms,
        }
    }
}

/// Models loaded once and shared by every pipeline of the process.
#[derive(Clone)]
pub struct Models {
    pub glance: Arc<dyn GlanceNet>,
    pub classifier: Arc<dyn PatchClassifier>,
    pub device: Device,
}

pub fn device() -> anyhow::Result<Device> {
    #[cfg(feature = "cuda")]
    {
        return Device::new_cuda(0).context("opening CUDA device 0 (built with --features cuda)");
    }
    #[allow(unreachable_code)]
    Ok(Device::Cpu)
}

pub fn load_models(args: &ModelArgs) -> anyhow::Result<Models> {
    let device = device()?;
    let glance_path = args.glance_path();
    let classifier_path = args.classifier_path();
    let glance = GlanceNetModel::load(&glance_path, &device)
        .with_context(|| format!("loading the glance net from {}", glance_path.display()))?;
    let classifier = PatchNet::load(&classifier_path, &device).with_context(|| {
        format!(
            "loading the patch classifier from {}",
            classifier_path.display()
        )
    })?;
    tracing::info!(
        "glance: {} ({}); classifier: {} ({})",
        glance.describe(),
        glance_path.display(),
        classifier.describe(),
        classifier_path.display()
    );
    Ok(Models {
        glance: Arc::new(glance),
        classifier: Arc::new(classifier),
        device,
    })
}

pub fn build_strategy(
    name: &str,
    configs: &StrategyConfigs,
) -> anyhow::Result<Box<dyn FocusStrategy>> {
    Ok(strategy_by_name(name, configs)?)
}

pub fn build_processor(
    models: &Models,
    strategy: &StrategyArgs,
    configs: &StrategyConfigs,
) -> anyhow::Result<FrameProcessor> {
    Ok(FrameProcessor::new(
        GlanceStage::new(models.glance.clone(), models.device.clone()),
        build_strategy(&strategy.strategy, configs)?,
        models.classifier.clone(),
        strategy.budget(),
    ))
}
