//! The glance net: a small strided CNN over a downscaled copy of the whole frame (320×240 by default)
//! that scores, per 8×8-pixel cell, whether a sign's centre lies there (`obj`) and how large it is
//! (`size`, log2 of the side in glance pixels), plus glance-only class logits (`cls`) from the pooled
//! feature. The runtime's glance stage calls it through [`GlanceNet`]; the trainer uses [`GlanceMaps`].

mod config;
mod int8;
mod model;
#[cfg(feature = "train")]
mod train;

pub use config::{
    GlanceMaps, GlanceNetConfig, GLANCENET_KIND, GLANCE_STRIDE_PX, MAX_INPUT_SIDE_PX,
};
pub use model::GlanceNetModel;

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
