//! The glance stage: shrink the full frame to the glance net's input and score where to look.
//!
//! Sits between capture and focus. It owns its buffers (the shrunk RGB image and its CHW float copy), sized once
//! for the net's input, so steady state reuses them for every frame.

use std::sync::Arc;

use candle_core::{Device, Tensor};
use saccade_models::{GlanceMap, GlanceNet, ModelError, ModelState};

use crate::frame::Frame;
use crate::imageops::ImageOpsError;

/// Why the glance failed on a frame.
#[derive(Debug, thiserror::Error)]
pub enum GlanceError {
    #[error("glance input: {0}")]
    Image(#[from] ImageOpsError),
    #[error("glance net: {0}")]
    Model(#[from] ModelError),
}

/// Glance net plus its preallocated input buffers.
pub struct GlanceStage {
    net: Arc<dyn GlanceNet>,
    device: Device,
    small_rgb: Vec<u8>,
    chw: Vec<f32>,
    /// The scratch of the glance net's forward passes on this stage's thread.
    state: ModelState,
}

impl GlanceStage {
    pub fn new(net: Arc<dyn GlanceNet>, device: Device) -> Self {
        let (w, h) = net.input_size_px();
        Self {
            net,
            device,
            small_rgb: vec![0; w * h * 3],
            chw: vec![0.0; w * h * 3],
            state: ModelState::new(),
        }
    }

    /// Glance input size `(w, h)` in pixels.
    pub fn input_size_px(&self) -> (usize, usize) {
        self.net.input_size_px()
    }

    pub fn net(&self) -> &Arc<dyn GlanceNet> {
        &self.net
    }

    /// Shrink `frame` to the glance size and run the glance net on it.
    pub fn glance(&mut self, frame: &Frame) -> Result<GlanceMap, GlanceError> {
        let mut map = GlanceMap::default();
        self.glance_into(frame, &mut map)?;
        Ok(map)
    }

    /// [`Self::glance`] into `out`'s buffers: on the Q8_0 glance net on the CPU nothing is allocated once
    /// they have grown ([`GlanceNet::glance_into_with`], with this stage's state).
    pub fn glance_into(&mut self, frame: &Frame, out: &mut GlanceMap) -> Result<(), GlanceError> {
        let (w, h) = self.net.input_size_px();
        crate::imageops::resize_rgb_bilinear(
            &frame.rgb,
            frame.width as usize,
            frame.height as usize,
            &mut self.small_rgb,
            w,
            h,
        )?;
        crate::imageops::rgb_to_chw_f32(&self.small_rgb, w, h, &mut self.chw)?;
        if self.device.is_cpu() {
            return Ok(self.net.glance_into_with(&mut self.state, &self.chw, out)?);
        }
        let input =
            Tensor::from_slice(&self.chw, (1, 3, h, w), &self.device).map_err(ModelError::from)?;
        *out = self.net.glance(&input)?;
        Ok(())
    }

    /// The shrunk RGB image of the last frame (for overlays).
    pub fn last_small_rgb(&self) -> &[u8] {
        &self.small_rgb
    }
}
