//! `saccade train classifier|glance|scorer`: which model to train, handed to its trainer in
//! [`crate::train`].

use crate::train::{classifier, glance, scorer, ClassifierArgs, GlanceArgs, ScorerArgs};

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
