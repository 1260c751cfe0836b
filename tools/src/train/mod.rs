//! Trainers of the shipped weights (`saccade train classifier|glance|scorer`): GTSRB, real photos and
//! synthetic scenes in, safetensors and GGUF files out. Everything runs in candle on the CPU with fixed
//! seeds, so a rerun with the same arguments reproduces the same weights.

pub mod augment;
pub mod classifier;
pub mod common;
pub mod data;
pub mod glance;
pub mod glance_sample;
pub mod gtsdb;
pub mod mining;
pub mod pictos;
pub mod scenes;
pub mod scorer;
pub mod topk;

pub use classifier::{gtsrb_accuracy, ClassifierArgs};
pub use glance::GlanceArgs;
pub use scorer::ScorerArgs;

/// `saccade train …`: which model to train.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum TrainCommand {
    /// The patch classifier (GTSRB + scene crops + drawings + backgrounds) → patchnet.safetensors, .q8_0.gguf.
    Classifier(ClassifierArgs),
    /// The glance net (synthetic Train scenes + training photos) → glancenet.safetensors, .q8_0.gguf.
    Glance(GlanceArgs),
    /// The differentiable-patch-selection scorer on frozen glance and patch nets → scorer.safetensors.
    Scorer(ScorerArgs),
}

/// Runs one trainer.
pub fn run(cmd: TrainCommand) -> anyhow::Result<()> {
    match cmd {
        TrainCommand::Classifier(args) => classifier::train_classifier(&args),
        TrainCommand::Glance(args) => glance::train_glance(&args),
        TrainCommand::Scorer(args) => scorer::train_scorer(&args),
    }
}
