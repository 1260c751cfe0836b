//! The saccade runtime: capture frames, glance at a downscaled copy, focus on a few full-resolution patches,
//! classify them with a quantised backbone, exit early, and emit detections — on threads joined by bounded
//! queues, under a fixed memory budget. It knows models only through `saccade_models`' traits.

pub mod batching;
pub mod capture;
pub mod events;
pub mod focus;
pub mod frame;
pub mod frame_error;
pub mod glance;
pub mod imageops;
pub mod memory_plan;
pub mod metrics;
pub mod pipeline;
pub mod pool;
pub mod prometheus;
pub mod recycle;
pub mod synth;
pub mod threads;

/// The memory plan's old name, kept for callers outside the runtime.
pub use memory_plan as budget;
