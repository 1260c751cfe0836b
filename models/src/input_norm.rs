//! How pixels are normalised before a net's first convolution: the fixed map of 0..1 pixels to roughly
//! zero-mean unit-range inputs, or each patch to zero mean and unit spread ([`InputNorm`]).

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

/// Input normalisation of the patch classifier; see `PatchNetConfig::input_norm`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum InputNorm {
    #[default]
    Fixed,
    PerPatch,
}

/// Floor of a patch's standard deviation (0..1 pixel units) in `per_patch` normalisation, so a flat patch
/// is not blown up into amplified noise; above it the normalisation ignores exposure and contrast.
pub const PER_PATCH_STD_FLOOR: f64 = 0.05;

/// Each patch of `x` `(b, c, h, w)` to zero mean and unit standard deviation (floored at
/// [`PER_PATCH_STD_FLOOR`]).
pub(crate) fn normalise_per_patch(x: &Tensor) -> candle_core::Result<Tensor> {
    let flat = x.flatten_from(1)?;
    let mean = flat.mean_keepdim(1)?;
    let centred = flat.broadcast_sub(&mean)?;
    let std = centred.sqr()?.mean_keepdim(1)?.sqrt()?;
    let scale = std.maximum(PER_PATCH_STD_FLOOR)?;
    centred.broadcast_div(&scale)?.reshape(x.shape())
}

/// Maps 0..1 pixels to roughly zero-mean unit-range inputs; kept inside the model so callers never differ.
pub(crate) fn normalise_unit_rgb(x: &Tensor) -> candle_core::Result<Tensor> {
    (x - 0.5)? / 0.25
}
