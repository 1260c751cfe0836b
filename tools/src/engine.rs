//! Building what a run needs from flags: the models (loaded once, shared by every source), the strategy and
//! the per-frame budget.
//!
//! The strategy settings a processor gets are layered by [`crate::settings::effective_configs`].

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use candle_core::Device;
use saccade_models::glancenet::{GlanceNetConfig, GlanceNetModel};
use saccade_models::patchnet::{PatchNet, PatchNetConfig};
use saccade_models::{GlanceNet, PatchClassifier, QuantDtype};
use saccade_runtime::budget::{rss_bytes, MemoryPlan, PlanInput};
use saccade_runtime::capture::uri::SourceSpec;
use saccade_runtime::focus::{
    strategy_by_name, FocusBudget, FocusStrategy, StrategyConfigs, StrategyKind,
};
use saccade_runtime::glance::GlanceStage;
use saccade_runtime::pipeline::FrameProcessor;
use saccade_runtime::threads::ThreadBudget;

use crate::config::{ThreadsConfig, DEFAULT_MAX_PATCHES};
use crate::settings::effective_configs;

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
    pub dtype: QuantDtype,
}

impl Default for ModelArgs {
    /// The shipped Q8_0 weights in models/weights (what the command line gives without flags).
    fn default() -> Self {
        Self {
            weights_dir: None,
            glance_weights: None,
            classifier_weights: None,
            dtype: QuantDtype::Q8_0,
        }
    }
}

impl ModelArgs {
    fn file_in_dir(&self, stem: &str) -> PathBuf {
        let dir = self.weights_dir.clone().unwrap_or_else(default_weights_dir);
        match self.dtype {
            QuantDtype::F32 => dir.join(format!("{stem}.safetensors")),
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
    /// Focus strategy: topk, gfnet, zoom, coarse2fine, or a baseline: fullres, downsample, glance-only.
    #[arg(long, default_value = "topk")]
    pub strategy: StrategyKind,
    /// Hard limit of first-look patches per frame (the patch pool size).
    #[arg(long, default_value_t = DEFAULT_MAX_PATCHES)]
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
    /// Folder of the weights (where calibrated settings live).
    pub weights_dir: PathBuf,
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
        weights_dir: args.weights_dir.clone().unwrap_or_else(default_weights_dir),
    })
}

/// The thread layout of a run of `sources` sources: [`ThreadBudget::new`] on `threads.cores` (else this
/// machine's), with `threads.intra_op` (else a `RAYON_NUM_THREADS` set by the user) per op.
pub fn thread_budget(sources: usize, threads: &ThreadsConfig) -> ThreadBudget {
    let budget = match threads.cores {
        Some(cores) => ThreadBudget::new(sources, cores),
        None => ThreadBudget::for_this_machine(sources),
    };
    let from_env = std::env::var(RAYON_THREADS_VAR)
        .ok()
        .filter(|_| !THREADS_SET_HERE.load(std::sync::atomic::Ordering::Acquire))
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|n| *n > 0);
    let budget = match threads.intra_op.or(from_env) {
        Some(n) => budget.with_intra_op_threads(n),
        None => budget,
    };
    match threads.classify_workers {
        Some(n) => budget.with_classify_workers(n),
        None => budget,
    }
}

/// candle sizes its per-op split (`Parallelism::Rayon(n)` of its matrix products) from this variable, read
/// on every call; rayon sizes its global pool from it.
const RAYON_THREADS_VAR: &str = "RAYON_NUM_THREADS";
/// Whether [`apply_thread_budget`] set [`RAYON_THREADS_VAR`] (so a later run does not take it for the user's).
static THREADS_SET_HERE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Caps candle's per-op threads at `budget.intra_op_threads` (through `RAYON_NUM_THREADS` and
/// `CANDLE_NUM_THREADS`, which candle reads on each matrix product) and logs the layout. Call before the
/// run's threads start. rayon's global pool, which candle's parallel ops share, keeps one thread per core:
/// the pool itself never exceeds the cores. saccade's int8 product still splits over every core for large
/// products (it reads `available_parallelism`; see docs/THREADS.md).
pub fn apply_thread_budget(budget: &ThreadBudget) {
    let n = budget.intra_op_threads.to_string();
    for var in [RAYON_THREADS_VAR, "CANDLE_NUM_THREADS"] {
        if std::env::var(var).ok().as_deref() != Some(n.as_str()) {
            // std's environment lock orders this against candle's reads (both go through std::env).
            std::env::set_var(var, &n);
            THREADS_SET_HERE.store(true, std::sync::atomic::Ordering::Release);
        }
    }
    saccade_models::int8::set_max_threads(budget.intra_op_threads);
    tracing::info!("{budget}");
}

/// `models` for one source of a run: its classifier is `batcher`'s handle when the sources share one.
pub fn models_for_source(
    models: &Models,
    batcher: Option<&Arc<saccade_runtime::batching::BatchingClassifier>>,
) -> Models {
    let mut m = models.clone();
    if let Some(batcher) = batcher {
        m.classifier = batcher.source();
    }
    m
}

/// The classify stage shared by the sources of a run, when `budget` has one (more than one source).
pub fn batching_classifier(
    models: &Models,
    budget: &ThreadBudget,
    max_patches: usize,
    threads: &ThreadsConfig,
) -> anyhow::Result<Option<Arc<saccade_runtime::batching::BatchingClassifier>>> {
    let Some(config) = budget.batching(max_patches, threads.batch_wait_ms) else {
        return Ok(None);
    };
    let batcher =
        saccade_runtime::batching::BatchingClassifier::new(models.classifier.clone(), config)
            .context("starting the classify workers shared by the sources")?;
    Ok(Some(Arc::new(batcher)))
}

pub fn build_strategy(
    kind: StrategyKind,
    configs: &StrategyConfigs,
) -> anyhow::Result<Box<dyn FocusStrategy>> {
    Ok(strategy_by_name(kind.name(), configs)?)
}

/// A processor with `configs` after [`effective_configs`].
pub fn build_processor(
    models: &Models,
    strategy: &StrategyArgs,
    configs: &StrategyConfigs,
) -> anyhow::Result<FrameProcessor> {
    let configs = effective_configs(configs, &models.weights_dir)?;
    build_processor_exact(models, strategy, &configs)
}

/// A processor with exactly `configs` (nothing from beside the weights is applied).
pub fn build_processor_exact(
    models: &Models,
    strategy: &StrategyArgs,
    configs: &StrategyConfigs,
) -> anyhow::Result<FrameProcessor> {
    Ok(FrameProcessor::new(
        GlanceStage::new(models.glance.clone(), models.device.clone()),
        build_strategy(strategy.strategy, configs)?,
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
                // A file over the frame cap is refused as a bad frame when its turn comes: not planned for.
                files.iter().find_map(|p| {
                    image::image_dimensions(p).ok().filter(|&(w, h)| {
                        saccade_runtime::frame::check_frame_size("", w, h).is_ok()
                    })
                })
            })
            .unwrap_or((1920, 1080)),
        // Known only once the stream's caps are negotiated: planned as 1080p.
        SourceSpec::Gst(_) => (1920, 1080),
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
    let batch = config.strategy.batch_patches(config.max_patches);
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
        // Per source (the plan multiplies): scratch is per thread, each source's glance thread holds a
        // glance's, and each source's patches are classified once at a time (on its focus thread, or in a
        // shared worker's batch of all sources).
        activation_bytes: patchnet_activation_bytes(&models.classifier_config, batch)
            + glance_activation_bytes(&models.glance_config),
        baseline_bytes: rss_bytes().map(|(rss, _)| rss).unwrap_or(0),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_threads_section_sets_the_thread_budget() {
        let c = crate::config::Config::from_toml("[threads]\ncores = 4\nintra_op = 2\n", "t.toml")
            .unwrap();
        let budget = thread_budget(8, &c.threads);
        assert_eq!((budget.cores, budget.intra_op_threads), (4, 2));
        let c = crate::config::Config::from_toml("[threads]\nclassify_workers = 3\n", "t.toml")
            .unwrap();
        assert_eq!(thread_budget(8, &c.threads).classify_workers, 3);
        assert_eq!(thread_budget(1, &c.threads).classify_workers, 0);
    }
}
