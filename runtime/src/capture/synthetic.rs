//! `synthetic://?width=1280&height=960&seed=1[&frames=N][&fps=F]`: generated road scenes with pasted signs
//! and known boxes (see [`crate::synth`]), deterministic from the seed, evaluation split, bundled assets only.
//! Frame `i` is scene `seed * 1_000_003 + i`, so two sources with different seeds do not share frames.

use super::source::{Capture, FrameSource, QueuePolicy};
use super::source_error::SourceError;
use super::uri_error::UriError;
use crate::frame::Frame;
use crate::synth::{SceneConfig, SceneGenerator, Split};
use std::time::{Duration, Instant};

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

/// Spacing of the per-source seed streams: a prime, so `seed * SEED_STRIDE + i` rarely collides across seeds.
const SEED_STRIDE: u64 = 1_000_003;

pub struct SyntheticSource {
    uri: String,
    options: SyntheticOptions,
    generator: SceneGenerator,
    next_index: u64,
    /// When the next frame is due, when paced.
    next_due: Option<Instant>,
}

impl std::fmt::Debug for SyntheticSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyntheticSource")
            .field("uri", &self.uri)
            .field("options", &self.options)
            .field("next_index", &self.next_index)
            .finish()
    }
}

impl SyntheticSource {
    pub fn open(uri: &str, options: SyntheticOptions) -> Result<Self, SourceError> {
        if options.width < 64 || options.height < 64 {
            return Err(SourceError::BadUri {
                uri: uri.to_string(),
                reason: UriError::TooSmall {
                    width: options.width,
                    height: options.height,
                },
            });
        }
        crate::frame::check_frame_size("synthetic frames", options.width, options.height).map_err(
            |e| SourceError::BadUri {
                uri: uri.to_string(),
                reason: UriError::FrameSize(e),
            },
        )?;
        if let Some(fps) = options.fps {
            if !(fps.is_finite() && fps > 0.0) {
                return Err(SourceError::BadUri {
                    uri: uri.to_string(),
                    reason: UriError::BadFps { fps },
                });
            }
        }
        let generator = SceneGenerator::new(SceneConfig {
            width: options.width,
            height: options.height,
            split: Split::Eval,
            ..SceneConfig::default()
        })
        .map_err(|reason| SourceError::Scene {
            uri: uri.to_string(),
            reason,
        })?;
        Ok(Self {
            uri: uri.to_string(),
            options,
            generator,
            next_index: 0,
            next_due: None,
        })
    }

    /// The scene seed of frame `index`.
    pub fn scene_seed(&self, index: u64) -> u64 {
        self.options
            .seed
            .wrapping_mul(SEED_STRIDE)
            .wrapping_add(index)
    }

    /// Sleeps until the next frame is due; a consumer that fell behind gets frames at once rather than a
    /// burst-compensating schedule.
    fn pace(&mut self) {
        let Some(fps) = self.options.fps else {
            return;
        };
        let period = Duration::from_secs_f64(1.0 / fps);
        let now = Instant::now();
        match self.next_due {
            Some(due) if due > now => {
                std::thread::sleep(due - now);
                self.next_due = Some(due + period);
            }
            _ => self.next_due = Some(now + period),
        }
    }
}

impl FrameSource for SyntheticSource {
    fn next_frame(&mut self) -> Capture {
        if self.options.frames.is_some_and(|n| self.next_index >= n) {
            return Capture::End;
        }
        let index = self.next_index;
        let scene = self.generator.generate(self.scene_seed(index));
        self.pace();
        self.next_index += 1;
        match Frame::from_rgb(index, scene.width, scene.height, scene.rgb) {
            Ok(mut frame) => {
                frame.truth = scene.truth;
                Capture::Frame(frame)
            }
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn options(frames: Option<u64>, fps: Option<f64>) -> SyntheticOptions {
        SyntheticOptions {
            width: 320,
            height: 240,
            seed: 5,
            frames,
            fps,
        }
    }

    #[test]
    fn yields_the_requested_frames_with_truth_then_ends() {
        let mut source =
            SyntheticSource::open("synthetic://?seed=5", options(Some(6), None)).unwrap();
        let mut with_truth = 0;
        for i in 0..6 {
            match source.next_frame() {
                Capture::Frame(f) => {
                    assert_eq!(f.index, i);
                    assert_eq!((f.width, f.height), (320, 240));
                    with_truth += usize::from(!f.truth.is_empty());
                }
                other => panic!("frame {i}: {other:?}"),
            }
        }
        assert!(with_truth >= 2, "only {with_truth} of 6 frames had signs");
        assert!(matches!(source.next_frame(), Capture::End));
    }

    #[test]
    fn frames_repeat_for_the_same_seed() {
        let mut a = SyntheticSource::open("s", options(Some(2), None)).unwrap();
        let mut b = SyntheticSource::open("s", options(Some(2), None)).unwrap();
        for _ in 0..2 {
            match (a.next_frame(), b.next_frame()) {
                (Capture::Frame(x), Capture::Frame(y)) => {
                    assert_eq!(x.rgb, y.rgb);
                    assert_eq!(x.truth, y.truth);
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn paces_frames_at_the_requested_rate() {
        let mut source = SyntheticSource::open("s", options(Some(4), Some(20.0))).unwrap();
        let start = Instant::now();
        for _ in 0..4 {
            assert!(matches!(source.next_frame(), Capture::Frame(_)));
        }
        // Three periods of 50 ms separate four frames.
        assert!(
            start.elapsed() >= Duration::from_millis(145),
            "{:?}",
            start.elapsed()
        );
    }

    #[test]
    fn rejects_tiny_frames_and_bad_rates() {
        let mut o = options(None, None);
        o.width = 10;
        assert!(SyntheticSource::open("s", o).is_err());
        assert!(SyntheticSource::open("s", options(None, Some(0.0))).is_err());
    }
}
