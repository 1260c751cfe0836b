//! `saccade eval` and `saccade eval-classifier`: accuracy and cost of a strategy on annotated frames, and of
//! the patch classifier on GTSRB crops.
//!
//! `eval` runs every frame losslessly through the single-threaded [`FrameProcessor::process`] path, matches
//! detections to the annotations (`crate::matching`) and reports detection quality next to what it cost
//! (latency per stage, patches, full-resolution pixels, MFLOPs, early exits, peak RSS), and per sign size
//! bucket how many signs were found and how many the strategy looked at (centre inside an examined patch), so
//! glance misses can be told from focus misses. It keeps every frame's scored detections, so the report also
//! has precision/recall/F1 at a sweep of score thresholds (for fitting a strategy's `min_score` on validation
//! frames). `--split` restricts a GTSDB folder to one part of its split (`crate::train::gtsdb`).
//! `saccade bench` reuses [`evaluate`] for every strategy on the same frames. The JSON keys are documented in
//! `docs/EVAL.md`.

pub mod annotations;
pub mod classifier;
pub mod gtsrb;
pub mod items;
pub mod json;
pub mod misses;
pub mod report;
pub mod run;
pub mod split;
pub mod stats;
#[cfg(test)]
pub(crate) mod tests;
#[cfg(test)]
mod testutil;

pub use annotations::*;
pub use classifier::*;
pub use gtsrb::*;
pub use items::*;
pub use json::*;
pub use misses::*;
pub use report::*;
pub use run::*;
pub use split::*;
pub use stats::*;
#[cfg(test)]
pub(crate) use testutil::*;
