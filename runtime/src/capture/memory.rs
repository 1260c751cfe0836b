//! An in-memory source: frames already decoded, replayed without loss (benchmarks, tests).

use std::time::Instant;

use super::source::{Capture, FrameSource, QueuePolicy};
use crate::frame::Frame;

/// A lossless in-memory source: replays `frames` in a cycle until it has handed out `total`, restarting each
/// capture clock as it hands a frame out.
pub struct VecSource {
    frames: Vec<Frame>,
    next: usize,
    total: usize,
    uri: String,
}

impl VecSource {
    pub fn new(frames: Vec<Frame>) -> Self {
        let total = frames.len();
        Self::cycling(frames, total)
    }

    /// `total` frames, going round `frames` as often as needed (none when `frames` is empty).
    pub fn cycling(frames: Vec<Frame>, total: usize) -> Self {
        Self {
            uri: format!("memory://{}-frames", frames.len()),
            total: if frames.is_empty() { 0 } else { total },
            frames,
            next: 0,
        }
    }
}

impl FrameSource for VecSource {
    fn next_frame(&mut self) -> Capture {
        if self.next >= self.total {
            return Capture::End;
        }
        let mut frame = self.frames[self.next % self.frames.len()].clone();
        frame.index = self.next as u64;
        frame.captured_at = Instant::now();
        self.next += 1;
        Capture::Frame(frame)
    }
    fn uri(&self) -> &str {
        &self.uri
    }
    fn default_policy(&self) -> QueuePolicy {
        QueuePolicy::Lossless
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn vec_source_replays_every_frame_then_ends() {
        let frames: Vec<Frame> = (0..3)
            .map(|i| Frame::from_rgb(i, 2, 2, vec![0; 12]).unwrap())
            .collect();
        let mut source = VecSource::new(frames);
        let mut seen = Vec::new();
        while let Capture::Frame(f) = source.next_frame() {
            seen.push(f.index);
        }
        assert_eq!(seen, vec![0, 1, 2]);
        assert!(matches!(source.next_frame(), Capture::End));
        assert_eq!(source.default_policy(), QueuePolicy::Lossless);
    }

    #[test]
    fn vec_source_cycles_through_its_frames_to_the_total() {
        let frames: Vec<Frame> = (0..2)
            .map(|i| Frame::from_rgb(i, 2, 2, vec![i as u8; 12]).unwrap())
            .collect();
        let mut source = VecSource::cycling(frames, 5);
        let mut seen = Vec::new();
        while let Capture::Frame(f) = source.next_frame() {
            seen.push((f.index, f.rgb[0]));
        }
        assert_eq!(seen, vec![(0, 0), (1, 1), (2, 0), (3, 1), (4, 0)]);
        assert!(matches!(
            VecSource::cycling(Vec::new(), 3).next_frame(),
            Capture::End
        ));
    }
}
