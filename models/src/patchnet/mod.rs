//! The patch classifier: a small CNN over a square full-resolution patch (32×32 by default) that outputs
//! logits for the 43 GTSRB classes plus background. The focus stage calls it through [`PatchClassifier`]
//! on the few patches the glance chose; the trainer builds it from a `VarMap`; the runtime loads it from
//! safetensors (float) or GGUF (fully-connected layers quantised, convolutions float).

mod config;
mod int8;
mod model;
#[cfg(feature = "train")]
mod train;

pub use crate::input_norm::{InputNorm, PER_PATCH_STD_FLOOR};
pub use config::{decode_patch_box, encode_patch_box, PatchNetConfig, BOX_OUTPUTS, PATCHNET_KIND};
pub use model::PatchNet;

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
