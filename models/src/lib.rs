//! The networks saccade runs, written with candle: the glance net that looks at a downscaled copy of the
//! whole frame, and the patch classifier that examines full-resolution patches. The runtime sees them only
//! through the [`GlanceNet`] and [`PatchClassifier`] traits, so a new backbone touches this crate and one
//! registration line.

use candle_core::Tensor;

pub mod classes;
mod conv1;
pub mod error;
pub mod flops;
pub mod glancenet;
mod glancenet_int8;
pub mod int8;
pub mod linear;
pub mod patchnet;
mod patchnet_int8;
mod train_ops;
pub mod weights;

#[cfg(test)]
mod testutil;

#[cfg(all(test, feature = "cuda"))]
mod cuda_tests;

pub use classes::{class_name, BACKGROUND_CLASS, NUM_CLASSES, NUM_SIGN_CLASSES};
pub use error::ModelError;
pub use glancenet::{GlanceMaps, GlanceNetConfig, GlanceNetModel, GLANCENET_KIND};
pub use linear::QLinear;
pub use patchnet::{PatchNet, PatchNetConfig, PATCHNET_KIND};
pub use weights::{
    inspect_file, load_any, quantize_file, save_safetensors, Inspection, LoadedModel, QuantDtype,
    QuantizeReport,
};

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

/// Classifies square full-resolution patches into the 43 GTSRB classes plus background.
pub trait PatchClassifier: Send + Sync {
    /// Side of the square input in pixels (patches are resized to this).
    fn input_side_px(&self) -> usize;
    /// `patches`: `(b, 3, s, s)` f32 RGB in 0..1 → `(b, NUM_CLASSES)` softmax probabilities.
    fn classify(&self, patches: &Tensor) -> Result<Tensor, ModelError>;
    /// [`Self::classify`] plus the sign's box inside each patch where the net has a box head. No default:
    /// a wrapper that forgot to forward it would silently drop every box.
    fn classify_with_boxes(&self, patches: &Tensor) -> Result<PatchVerdicts, ModelError>;
    /// Analytic cost of classifying one patch, in MFLOPs.
    fn mflops_per_patch(&self) -> f64;
    /// One line for logs: architecture and weight dtype.
    fn describe(&self) -> String;
}
