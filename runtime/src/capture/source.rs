//! What a frame source is: the [`FrameSource`] trait every capture backend implements, what it hands the
//! pipeline on each call ([`Capture`]), the counters it keeps, the queue policy it asks for, and why opening
//! one fails.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use crate::frame::{Frame, FrameError};
use crate::pool::FramePool;

/// What a source hands the pipeline on each call.
#[derive(Debug)]
pub enum Capture {
    /// A decoded frame.
    Frame(Frame),
    /// The buffer could not be decoded; the stream goes on. The pipeline counts it as bad.
    Bad(FrameError),
    /// The source is exhausted (end of a replay): the run ends by itself.
    End,
}

/// Counters a source keeps itself (the pipeline adds queue drops).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct SourceStats {
    /// Frames the kernel/driver dropped before we saw them (v4l sequence gaps).
    pub kernel_dropped: u64,
    /// Times the device vanished or stalled.
    pub outages: u64,
}

/// How the pipeline queues frames of a source when the consumer is behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QueuePolicy {
    /// Drop the oldest queued frame (live cameras).
    Latest,
    /// Block the producer (replays, evaluation): nothing is lost.
    Lossless,
}

/// A producer of frames.
pub trait FrameSource: Send {
    /// Blocks until the next frame (or fault, or end).
    fn next_frame(&mut self) -> Capture;
    /// The URI the source was opened from, for events and metrics.
    fn uri(&self) -> &str;
    /// The queue policy this kind of source wants by default.
    fn default_policy(&self) -> QueuePolicy;
    fn stats(&self) -> SourceStats {
        SourceStats::default()
    }
    /// Decode into buffers taken from `pool` from now on. Sources that decode camera buffers do; sources whose
    /// frames are made by a library that allocates its own output (image files, generated scenes) ignore it.
    fn use_pool(&mut self, _pool: FramePool) {}
    /// Give up waiting for a source that is down once `stop` is raised (live sources that reconnect).
    fn use_stop(&mut self, _stop: Arc<AtomicBool>) {}
}
