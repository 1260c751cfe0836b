//! What the pipelines hand to the HTTP server while they run: the time of each source's last frame (for
//! `/healthz`), each frame's JSON event (for `/api/events`) and, while someone watches, a copy of a frame with
//! its glance map and outcome (for `/stream/<n>.mjpg`).
//!
//! The sink thread never waits on the server: events go into a bounded broadcast channel whose slow receivers
//! lose the oldest events, and frames go into a one-frame slot that the encoder empties (a newer frame
//! replaces one not yet encoded). Copies and JSON are made only while someone watches or listens, and frames
//! are handed over at most `LIVE_FPS` times a second.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use image::codecs::jpeg::JpegEncoder;
use image::RgbImage;
use saccade_models::GlanceMap;
use saccade_runtime::events::FrameEvent;
use saccade_runtime::focus::FocusOutcome;
use saccade_runtime::metrics::PipelineMetrics;
use saccade_runtime::pipeline::ProcessedFrame;
use tokio::sync::{broadcast, watch, Notify};

/// Frames per second handed to the MJPEG encoder, whatever the pipeline's rate.
pub const LIVE_FPS: f64 = 5.0;
/// Events kept for a slow `/api/events` subscriber before it loses the oldest.
pub const EVENTS_CAPACITY: usize = 256;
/// JPEG quality of the live streams (1–100).
pub const JPEG_QUALITY: u8 = 75;

/// A frame copied for the encoder, with what to draw on it.
pub struct LiveFrame {
    pub index: u64,
    pub width: u32,
    pub height: u32,
    pub rgb: Vec<u8>,
    pub glance: GlanceMap,
    pub outcome: FocusOutcome,
}

/// One source as the server sees it.
pub struct SourceFeed {
    pub uri: String,
    pub metrics: Arc<PipelineMetrics>,
    started: Instant,
    /// Milliseconds from `started` to the last processed frame, plus one (0: none yet).
    last_frame_ms: AtomicU64,
    /// Open `/stream/<n>.mjpg` responses.
    watchers: AtomicUsize,
    /// When the last frame went into the slot, ms from `started` plus one (0: never).
    last_handoff_ms: AtomicU64,
    slot: Mutex<Option<LiveFrame>>,
    /// The RGB buffer of the last encoded frame, for the next copy (no allocation per frame).
    spare_rgb: Mutex<Vec<u8>>,
    frame_ready: Notify,
    jpeg: watch::Sender<Option<Bytes>>,
}

impl SourceFeed {
    pub fn new(uri: String, metrics: Arc<PipelineMetrics>, started: Instant) -> Self {
        Self {
            uri,
            metrics,
            started,
            last_frame_ms: AtomicU64::new(0),
            watchers: AtomicUsize::new(0),
            last_handoff_ms: AtomicU64::new(0),
            slot: Mutex::new(None),
            spare_rgb: Mutex::new(Vec::new()),
            frame_ready: Notify::new(),
            jpeg: watch::Sender::new(None),
        }
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64 + 1
    }

    /// Time since this source's last processed frame, or since start when it has delivered none.
    pub fn since_last_frame(&self) -> Duration {
        let now = self.now_ms();
        let last = self.last_frame_ms.load(Ordering::Relaxed);
        Duration::from_millis(now.saturating_sub(last.max(1)))
    }

    /// Whether the source has delivered at least one frame.
    pub fn has_frames(&self) -> bool {
        self.last_frame_ms.load(Ordering::Relaxed) > 0
    }

    pub fn watchers(&self) -> usize {
        self.watchers.load(Ordering::Relaxed)
    }

    /// Called by the sink thread for every processed frame: stamps the time and, when someone watches and the
    /// last hand-off is at least 1/`LIVE_FPS` old, copies the frame into the encoder's slot.
    pub fn frame_done(&self, done: &ProcessedFrame) {
        let now = self.now_ms();
        self.last_frame_ms.store(now, Ordering::Relaxed);
        if self.watchers() == 0 {
            return;
        }
        let interval_ms = (1000.0 / LIVE_FPS) as u64;
        let last = self.last_handoff_ms.load(Ordering::Relaxed);
        if last > 0 && now.saturating_sub(last) < interval_ms {
            return;
        }
        self.last_handoff_ms.store(now, Ordering::Relaxed);
        let mut rgb = match self.spare_rgb.lock() {
            Ok(mut spare) => std::mem::take(&mut *spare),
            Err(_) => Vec::new(),
        };
        rgb.clear();
        rgb.extend_from_slice(&done.frame.rgb);
        let frame = LiveFrame {
            index: done.frame.index,
            width: done.frame.width,
            height: done.frame.height,
            rgb,
            glance: done.glance.clone(),
            outcome: done.outcome.clone(),
        };
        if let Ok(mut slot) = self.slot.lock() {
            *slot = Some(frame);
        }
        self.frame_ready.notify_one();
    }

    /// Wait for the next frame handed over by the sink.
    pub async fn next_frame(&self) -> LiveFrame {
        loop {
            if let Some(frame) = self.slot.lock().ok().and_then(|mut s| s.take()) {
                return frame;
            }
            self.frame_ready.notified().await;
        }
    }

    /// Give an encoded frame's buffer back for the next copy.
    pub fn recycle(&self, rgb: Vec<u8>) {
        if let Ok(mut spare) = self.spare_rgb.lock() {
            *spare = rgb;
        }
    }

    /// Publish an encoded JPEG to every open stream.
    pub fn publish_jpeg(&self, jpeg: Bytes) {
        self.jpeg.send_replace(Some(jpeg));
    }

    /// A stream's view of the JPEGs; counts as a watcher until the returned guard is dropped.
    pub fn watch(self: &Arc<Self>) -> (watch::Receiver<Option<Bytes>>, WatchGuard) {
        self.watchers.fetch_add(1, Ordering::Relaxed);
        (
            self.jpeg.subscribe(),
            WatchGuard {
                feed: Arc::clone(self),
            },
        )
    }
}

/// Keeps a source watched; dropped when its stream ends (the client left).
pub struct WatchGuard {
    feed: Arc<SourceFeed>,
}

impl Drop for WatchGuard {
    fn drop(&mut self) {
        self.feed.watchers.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Every source's feed and the events channel shared by them.
pub struct LiveHub {
    pub feeds: Vec<Arc<SourceFeed>>,
    events: broadcast::Sender<Arc<str>>,
}

impl LiveHub {
    pub fn new(feeds: Vec<Arc<SourceFeed>>) -> Self {
        let (events, _) = broadcast::channel(EVENTS_CAPACITY);
        Self { feeds, events }
    }

    /// Called by the sink thread of source `index` for every processed frame; never blocks.
    pub fn frame_done(&self, index: usize, done: &ProcessedFrame, event: &FrameEvent<'_>) {
        if let Some(feed) = self.feeds.get(index) {
            feed.frame_done(done);
        }
        if self.events.receiver_count() > 0 {
            match serde_json::to_string(event) {
                // A send fails only when every receiver left meanwhile: nothing to do.
                Ok(json) => drop(self.events.send(Arc::from(json))),
                Err(e) => tracing::debug!("event of frame {} not serialised: {e}", event.frame),
            }
        }
    }

    pub fn subscribe_events(&self) -> broadcast::Receiver<Arc<str>> {
        self.events.subscribe()
    }
}

/// Why a live frame could not be served as JPEG: each names the frame.
#[derive(Debug, thiserror::Error)]
pub enum LiveFrameError {
    #[error("live frame {index} of {width}×{height} has {found} RGB bytes, expected {expected}")]
    WrongSize {
        index: u64,
        width: u32,
        height: u32,
        found: usize,
        expected: usize,
    },
    #[error("encoding live frame {index} as JPEG: {reason}")]
    Encode {
        index: u64,
        #[source]
        reason: image::ImageError,
    },
}

/// Draw the annotations onto a live frame and encode it as JPEG; the frame's RGB buffer comes back for reuse.
pub fn encode_annotated(frame: LiveFrame) -> (Result<Vec<u8>, LiveFrameError>, Vec<u8>) {
    let expected = frame.width as usize * frame.height as usize * 3;
    let found = frame.rgb.len();
    let Some(mut img) = RgbImage::from_raw(frame.width, frame.height, frame.rgb) else {
        let error = LiveFrameError::WrongSize {
            index: frame.index,
            width: frame.width,
            height: frame.height,
            found,
            expected,
        };
        return (Err(error), Vec::new());
    };
    crate::annotate::annotate(&mut img, &frame.glance, &frame.outcome);
    let mut jpeg = Vec::with_capacity(expected / 8);
    let encoded = JpegEncoder::new_with_quality(&mut jpeg, JPEG_QUALITY)
        .encode_image(&img)
        .map_err(|reason| LiveFrameError::Encode {
            index: frame.index,
            reason,
        });
    (encoded.map(|()| jpeg), img.into_raw())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn frame(index: u64, w: u32, h: u32, rgb_len: usize) -> LiveFrame {
        LiveFrame {
            index,
            width: w,
            height: h,
            rgb: vec![90; rgb_len],
            glance: GlanceMap::default(),
            outcome: FocusOutcome::default(),
        }
    }

    #[test]
    fn annotated_frames_encode_as_jpeg_and_bad_sizes_name_the_frame() {
        let (jpeg, rgb) = encode_annotated(frame(3, 32, 16, 32 * 16 * 3));
        assert!(jpeg.unwrap().starts_with(&[0xFF, 0xD8]), "not a JPEG");
        assert_eq!(rgb.len(), 32 * 16 * 3, "buffer not handed back");
        let err = encode_annotated(frame(4, 32, 16, 10))
            .0
            .unwrap_err()
            .to_string();
        assert!(err.contains("frame 4") && err.contains("10"), "{err}");
    }

    #[test]
    fn frames_reach_the_slot_only_while_watched() {
        let feed = Arc::new(SourceFeed::new(
            "synthetic://".into(),
            Arc::new(PipelineMetrics::default()),
            Instant::now(),
        ));
        assert!(!feed.has_frames());
        let done = ProcessedFrame::new(
            saccade_runtime::frame::Frame::from_rgb(7, 4, 2, vec![1; 24]).unwrap(),
            GlanceMap::default(),
            FocusOutcome::default(),
            1.0,
        );
        feed.frame_done(&done);
        assert!(feed.has_frames());
        assert!(
            feed.slot.lock().unwrap().is_none(),
            "copied without a watcher"
        );
        let (_rx, guard) = feed.watch();
        assert_eq!(feed.watchers(), 1);
        feed.frame_done(&done);
        assert_eq!(feed.slot.lock().unwrap().as_ref().unwrap().index, 7);
        drop(guard);
        assert_eq!(feed.watchers(), 0);
    }
}
