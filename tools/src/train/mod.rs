//! Trainers of the shipped weights (`saccade train classifier|glance|scorer`): GTSRB and synthetic scenes in,
//! safetensors and GGUF files out. Everything runs in candle on the CPU with fixed seeds, so a rerun with the
//! same arguments reproduces the same weights.

pub mod augment;
pub mod data;
pub mod topk;
