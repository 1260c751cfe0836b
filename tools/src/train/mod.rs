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
