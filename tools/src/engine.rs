//! Building what a run needs from flags: the models (loaded once, shared by every source), the strategy and
//! the per-frame budget.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use candle_core::Device;
use saccade_models::glancenet::{GlanceNetConfig, GlanceNetModel};
use saccade_models::patchnet::{PatchNet, PatchNetConfig};
use saccade_models::{GlanceNet, PatchClassifier};
use saccade_runtime::budget::{rss_bytes, MemoryPlan, PlanInput};
use saccade_runtime::capture::uri::SourceSpec;
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
    pub glance_config: GlanceNetConfig,
    pub classifier_config: PatchNetConfig,
    /// Bytes of the weight files as loaded.
    pub weight_bytes: u64,
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
    let weight_bytes = [&glance_path, &classifier_path]
        .iter()
        .map(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .sum();
    Ok(Models {
        glance_config: glance.config().clone(),
        classifier_config: classifier.config().clone(),
        glance: Arc::new(glance),
        classifier: Arc::new(classifier),
        device,
        weight_bytes,
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

/// Frame size a source will deliver, for the memory plan: what the URI asks for, or the first image of a
/// replayed folder (1920×1080 when it cannot be read).
pub fn frame_size_hint(spec: &SourceSpec) -> (u32, u32) {
    match spec {
        SourceSpec::V4l(o) => (o.width, o.height),
        SourceSpec::Synthetic(o) => (o.width, o.height),
        SourceSpec::Dir(o) => std::fs::read_dir(&o.path)
            .ok()
            .and_then(|entries| {
                let mut files: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
                files.sort();
                files.iter().find_map(|p| image::image_dimensions(p).ok())
            })
            .unwrap_or((1920, 1080)),
    }
}

/// Activation bytes of one forward pass: conv outputs and their im2col buffers, f32.
fn patchnet_activation_bytes(cfg: &PatchNetConfig, batch: usize) -> u64 {
    let s = cfg.input_side_px;
    let [c0, c1, c2] = cfg.channels;
    let convs = [(3, c0, s), (c0, c1, s / 2), (c1, c2, s / 4)];
    let per_patch: usize = 3 * s * s
        + convs
            .iter()
            .map(|&(cin, cout, side)| side * side * (9 * cin + 2 * cout))
            .sum::<usize>()
        + 2 * (cfg.hidden + cfg.num_classes);
    (per_patch * batch * 4) as u64
}

fn glance_activation_bytes(cfg: &GlanceNetConfig) -> u64 {
    let (mut w, mut h) = (cfg.input_width_px, cfg.input_height_px);
    let mut cin = 3;
    let mut total = 3 * w * h;
    for (i, &cout) in cfg.channels.iter().enumerate() {
        if i < 3 {
            w = w.div_ceil(2);
            h = h.div_ceil(2);
        }
        total += w * h * (9 * cin + 2 * cout);
        cin = cout;
    }
    (total * 4) as u64
}

/// The memory plan of a run with these models and settings.
pub fn memory_plan(
    models: &Models,
    margs: &ModelArgs,
    config: &crate::config::Config,
    frame_sizes: &[(u32, u32)],
) -> MemoryPlan {
    let _ = margs;
    let (w, h) = frame_sizes
        .iter()
        .copied()
        .max_by_key(|(w, h)| *w as u64 * *h as u64)
        .unwrap_or((1280, 960));
    let (gw, gh) = models.glance.input_size_px();
    // fullres/downsample batch 256 windows at a time regardless of max_patches.
    let batch = match config.strategy.as_str() {
        "fullres" | "downsample" => 256.max(config.max_patches),
        _ => config.max_patches,
    };
    MemoryPlan::new(&PlanInput {
        frame_width_px: w,
        frame_height_px: h,
        sources: frame_sizes.len().max(1),
        queue_depth: config.queue_depth,
        glance_width_px: gw,
        glance_height_px: gh,
        max_patches: batch,
        patch_side_px: models.classifier.input_side_px(),
        weight_bytes: models.weight_bytes,
        activation_bytes: patchnet_activation_bytes(&models.classifier_config, batch)
            + glance_activation_bytes(&models.glance_config),
        baseline_bytes: rss_bytes().map(|(rss, _)| rss).unwrap_or(0),
    })
}
