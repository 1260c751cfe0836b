//! The networks saccade runs, written with candle: the glance net that looks at a downscaled copy of the
//! whole frame, and the patch classifier that examines full-resolution patches. The runtime sees them only
//! through the [`GlanceNet`] and [`PatchClassifier`] traits, so a new backbone touches this crate and one
//! registration line.

use candle_core::Tensor;

pub mod classes;

pub mod error;
pub mod flops;
pub mod format;
pub mod glancenet;
mod input_norm;
pub mod int8;
mod kernels;
pub mod layers;
pub mod linear;
pub mod patchnet;
pub mod registry;
mod slice_ops;
pub mod state;
mod train_norms;
#[cfg(feature = "train")]
mod train_ops;

#[cfg(test)]
mod testutil;

#[cfg(all(test, feature = "cuda"))]
mod cuda_tests;

pub use classes::{class_name, BACKGROUND_CLASS, NUM_CLASSES, NUM_SIGN_CLASSES};
pub use error::{ConfigError, ModelError};
pub use format::{inspect_file, Inspection, QuantDtype};
pub use glancenet::{GlanceMaps, GlanceNetConfig, GlanceNetModel, GLANCENET_KIND};
pub use linear::QLinear;
pub use patchnet::{PatchNet, PatchNetConfig, PATCHNET_KIND};
pub use registry::{load_any, quantize_file, save_safetensors, LoadedModel, QuantizeReport};
pub use state::ModelState;

/// The weight files and the models they hold, at their old path: the format ([`format`]) and the
/// registry of model kinds ([`registry`]).
pub mod weights {
    pub use crate::format::*;
    pub use crate::registry::*;
}

/// What the glance net saw in the downscaled frame: dense maps at `stride_px` (glance pixels per cell).
///
/// # Shapes
/// `objectness` and `box_side_glance_px` are row-major `map_height × map_width`.
#[derive(Debug, Clone, Default)]
pub struct GlanceMap {
    pub map_width: usize,
    pub map_height: usize,
    /// Glance-image pixels per map cell.
    pub stride_px: usize,
    /// Probability (0..1) that a sign's centre lies in each cell.
    pub objectness: Vec<f32>,
    /// Estimated side of the sign centred in each cell, in glance-image pixels.
    pub box_side_glance_px: Vec<f32>,
    /// Pooled feature vector of the whole glance (for recurrent fusion and exit decisions).
    pub feature: Vec<f32>,
    /// Optional class probabilities (NUM_CLASSES) of the glance alone, for GFNet-style exit at step 0.
    pub class_probs: Option<Vec<f32>>,
}

/// A small net over the downscaled frame that scores where to look.
pub trait GlanceNet: Send + Sync {
    /// Input size the net expects, `(width_px, height_px)`.
    fn input_size_px(&self) -> (usize, usize);
    /// `image`: `(1, 3, h, w)` f32 RGB in 0..1 at `input_size_px`.
    fn glance(&self, image: &Tensor) -> Result<GlanceMap, ModelError>;
    /// [`Self::glance`] on a CHW slice (`3 · h · w` f32 RGB in 0..1 at `input_size_px`), writing the maps into
    /// `out`'s buffers (cleared and refilled; no allocation once they have grown to size on a net that
    /// overrides this: the Q8_0 glance net on the CPU). The default goes through [`Self::glance`].
    fn glance_into(&self, chw: &[f32], out: &mut GlanceMap) -> Result<(), ModelError> {
        let (w, h) = self.input_size_px();
        if chw.len() != 3 * h * w {
            return Err(ModelError::BadInput {
                expected: format!("(1, 3, {h}, {w}) = {} values", 3 * h * w),
                found: vec![chw.len()],
            });
        }
        let image = Tensor::from_slice(chw, (1, 3, h, w), &candle_core::Device::Cpu)?;
        *out = self.glance(&image)?;
        Ok(())
    }
    /// [`Self::glance_into`] with the caller's scratch (`state`, one per worker: see [`ModelState`]) instead
    /// of the thread's fallback. The default ignores `state` (a net without scratch, or a wrapper that
    /// forwards only [`Self::glance_into`]).
    fn glance_into_with(
        &self,
        state: &mut ModelState,
        chw: &[f32],
        out: &mut GlanceMap,
    ) -> Result<(), ModelError> {
        let _ = state;
        self.glance_into(chw, out)
    }
    /// Analytic cost of one forward pass, in MFLOPs (multiply-add = 2 FLOPs).
    fn mflops(&self) -> f64;
    /// One line for logs: architecture and weight dtype.
    fn describe(&self) -> String;
}

/// What a patch classifier says about a batch: class probabilities and, from a net with a box head, where
/// the sign lies in each patch.
#[derive(Debug, Clone)]
pub struct PatchVerdicts {
    /// `(b, NUM_CLASSES)` softmax probabilities.
    pub probs: Tensor,
    /// One `[xmin, ymin, xmax, ymax]` per patch in patch sides (0..1 spans the patch), when the net
    /// regresses boxes.
    pub boxes: Option<Vec<[f32; 4]>>,
}

impl PatchVerdicts {
    /// The verdicts of a net without a box head.
    pub fn without_boxes(probs: Tensor) -> Self {
        Self { probs, boxes: None }
    }
}

/// What a patch classifier says about a batch, in caller-owned buffers that keep their capacity between
/// calls ([`PatchClassifier::classify_into`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PatchRows {
    /// `batch × NUM_CLASSES` softmax probabilities, row-major.
    pub probs: Vec<f32>,
    /// One `[xmin, ymin, xmax, ymax]` per patch in patch sides when the net regresses boxes, else empty.
    pub boxes: Vec<[f32; 4]>,
    /// Whether the net has a box head (`boxes` holds one box per patch).
    pub has_boxes: bool,
}

impl PatchRows {
    /// Empties the rows, keeping the buffers.
    pub fn clear(&mut self) {
        self.probs.clear();
        self.boxes.clear();
        self.has_boxes = false;
    }

    /// Fills the rows from tensor verdicts (the default path of [`PatchClassifier::classify_into`]).
    pub fn fill_from(&mut self, verdicts: &PatchVerdicts) -> Result<(), ModelError> {
        self.clear();
        let probs = verdicts
            .probs
            .to_dtype(candle_core::DType::F32)?
            .flatten_all()?;
        self.probs.extend(probs.to_vec1::<f32>()?);
        if let Some(boxes) = &verdicts.boxes {
            self.has_boxes = true;
            self.boxes.extend_from_slice(boxes);
        }
        Ok(())
    }
}

/// Classifies square full-resolution patches into the 43 GTSRB classes plus background.
pub trait PatchClassifier: Send + Sync {
    /// Side of the square input in pixels (patches are resized to this).
    fn input_side_px(&self) -> usize;
    /// `patches`: `(b, 3, s, s)` f32 RGB in 0..1 → `(b, NUM_CLASSES)` softmax probabilities.
    fn classify(&self, patches: &Tensor) -> Result<Tensor, ModelError>;
    /// [`Self::classify`] plus the sign's box inside each patch where the net has a box head. No default:
    /// a wrapper that forgot to forward it would silently drop every box.
    fn classify_with_boxes(&self, patches: &Tensor) -> Result<PatchVerdicts, ModelError>;
    /// [`Self::classify_with_boxes`] on a slice of `batch` CHW patches (`batch · 3 · s · s` f32 RGB in 0..1),
    /// writing the verdicts into `out`'s buffers (cleared and refilled). A net that overrides this (the Q8_0
    /// patch net on the CPU) allocates nothing once the buffers have grown; the default builds a tensor and
    /// goes through [`Self::classify_with_boxes`]. A wrapper should forward it, or its calls take the
    /// allocating default.
    fn classify_into(
        &self,
        patches_chw: &[f32],
        batch: usize,
        out: &mut PatchRows,
    ) -> Result<(), ModelError> {
        let s = self.input_side_px();
        if patches_chw.len() != batch * 3 * s * s {
            return Err(ModelError::BadInput {
                expected: format!("({batch}, 3, {s}, {s}) = {} values", batch * 3 * s * s),
                found: vec![patches_chw.len()],
            });
        }
        let patches = Tensor::from_slice(patches_chw, (batch, 3, s, s), &candle_core::Device::Cpu)?;
        out.fill_from(&self.classify_with_boxes(&patches)?)
    }
    /// [`Self::classify_into`] with the caller's scratch (`state`, one per worker: see [`ModelState`])
    /// instead of the thread's fallback. The default ignores `state` (a net without scratch, or a wrapper
    /// that forwards only [`Self::classify_into`]).
    fn classify_into_with(
        &self,
        state: &mut ModelState,
        patches_chw: &[f32],
        batch: usize,
        out: &mut PatchRows,
    ) -> Result<(), ModelError> {
        let _ = state;
        self.classify_into(patches_chw, batch, out)
    }
    /// Analytic cost of classifying one patch, in MFLOPs.
    fn mflops_per_patch(&self) -> f64;
    /// One line for logs: architecture and weight dtype.
    fn describe(&self) -> String;
}
