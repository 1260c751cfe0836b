//! The pipeline: capture → glance → focus+classify → sink, each on its own thread, joined by bounded
//! crossbeam-channel queues.
//!
//! Per source a [`QueuePolicy`]: `Latest` drops the oldest queued frame when the next stage is behind (live
//! cameras: always work on the newest frame), `Lossless` blocks the producer (replays, evaluation). Stopping
//! (the `stop` flag, set by SIGINT/SIGTERM) ends capture; every queued frame is still processed and its event
//! flushed before [`run_pipeline`] returns.
//!
//! A frame's results travel with it to the sink and come back: the frame's buffer to the frame pool
//! ([`crate::pool`]), its glance map and focus outcome to the result shelves ([`crate::recycle`]) when the
//! [`ProcessedFrame`] is dropped. The glance and focus stages take them from there and refill them in place, so
//! in steady state a frame allocates nothing on the way from capture to the sink.

// `ProcessError` carries `FocusError` (and so `ModelError`) by value, as the strategies return it: a frame
// fails at most once, so the size of the `Err` variant costs nothing measurable.
#![allow(clippy::result_large_err)]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use candle_core::Tensor;
use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};
use saccade_models::{GlanceMap, ModelError, PatchClassifier};

use crate::capture::{Capture, FrameSource, QueuePolicy};
use crate::focus::{FocusBudget, FocusError, FocusInput, FocusOutcome, FocusStrategy};
use crate::frame::Frame;
use crate::glance::{GlanceError, GlanceStage};
use crate::memory_plan::frames_in_flight;
use crate::metrics::{PipelineMetrics, Stage};
use crate::pool::FramePool;
use crate::recycle::ResultShelves;

/// How a pipeline runs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PipelineOptions {
    /// Capacity of each queue between stages (hard limit).
    pub queue_depth: usize,
    pub policy: QueuePolicy,
    pub budget: FocusBudget,
}

/// Why one frame could not be processed; the frame is counted as bad and the stream goes on.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("glance failed on frame {frame}: {source}")]
    Glance {
        frame: u64,
        #[source]
        source: GlanceError,
    },
    #[error("focus failed on frame {frame}: {source}")]
    Focus {
        frame: u64,
        #[source]
        source: FocusError,
    },
}

/// A frame that went through glance and focus, handed to the sink. Dropped, it hands its glance map and focus
/// outcome back to the stage that made them (see [`crate::recycle`]), as its frame gives its buffer back to
/// the frame pool.
pub struct ProcessedFrame {
    pub frame: Frame,
    pub glance: GlanceMap,
    pub outcome: FocusOutcome,
    /// Capture to end of focus, milliseconds.
    pub latency_ms: f64,
    /// Where the glance map and the outcome go back to.
    shelves: Option<ResultShelves>,
}

impl ProcessedFrame {
    /// A processed frame whose results are not recycled (tests, replays of stored results).
    pub fn new(frame: Frame, glance: GlanceMap, outcome: FocusOutcome, latency_ms: f64) -> Self {
        Self {
            frame,
            glance,
            outcome,
            latency_ms,
            shelves: None,
        }
    }
}

impl Drop for ProcessedFrame {
    fn drop(&mut self) {
        if let Some(shelves) = self.shelves.take() {
            shelves.glance.give(std::mem::take(&mut self.glance));
            shelves.outcome.give(std::mem::take(&mut self.outcome));
        }
    }
}

/// What a finished run did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RunSummary {
    pub frames: u64,
    pub wall_s: f64,
    pub fps: f64,
}

/// A classifier wrapper that measures the time spent inside `classify` (the classify stage, which runs on
/// the focus thread inside the strategy). It asks the classifier for its cost per patch once: a net works it out
/// from its layers, which a strategy would otherwise redo (allocating) on every frame.
pub struct TimedClassifier {
    inner: Arc<dyn PatchClassifier>,
    spent_ns: AtomicU64,
    mflops_per_patch: f64,
}

impl TimedClassifier {
    pub fn new(inner: Arc<dyn PatchClassifier>) -> Self {
        Self {
            mflops_per_patch: inner.mflops_per_patch(),
            inner,
            spent_ns: AtomicU64::new(0),
        }
    }
    /// Time spent classifying since the last call, and reset.
    pub fn take_spent(&self) -> Duration {
        Duration::from_nanos(self.spent_ns.swap(0, Ordering::Relaxed))
    }
}

impl PatchClassifier for TimedClassifier {
    fn input_side_px(&self) -> usize {
        self.inner.input_side_px()
    }
    fn classify(&self, patches: &Tensor) -> Result<Tensor, ModelError> {
        let t = Instant::now();
        let out = self.inner.classify(patches);
        self.spent_ns
            .fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
        out
    }
    fn classify_with_boxes(
        &self,
        patches: &Tensor,
    ) -> Result<saccade_models::PatchVerdicts, ModelError> {
        let t = Instant::now();
        let out = self.inner.classify_with_boxes(patches);
        self.spent_ns
            .fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
        out
    }
    fn classify_into(
        &self,
        patches_chw: &[f32],
        batch: usize,
        out: &mut saccade_models::PatchRows,
    ) -> Result<(), ModelError> {
        let t = Instant::now();
        let result = self.inner.classify_into(patches_chw, batch, out);
        self.spent_ns
            .fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
        result
    }
    fn classify_into_with(
        &self,
        state: &mut saccade_models::ModelState,
        patches_chw: &[f32],
        batch: usize,
        out: &mut saccade_models::PatchRows,
    ) -> Result<(), ModelError> {
        let t = Instant::now();
        let result = self
            .inner
            .classify_into_with(state, patches_chw, batch, out);
        self.spent_ns
            .fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
        result
    }
    fn mflops_per_patch(&self) -> f64 {
        self.mflops_per_patch
    }
    fn describe(&self) -> String {
        self.inner.describe()
    }
}

/// Glance and focus for one frame on the calling thread: the single-threaded path (evaluation, tests) and
/// the body of the pipeline's stages.
pub struct FrameProcessor {
    pub glance: GlanceStage,
    pub strategy: Box<dyn FocusStrategy>,
    pub classifier: Arc<TimedClassifier>,
    pub budget: FocusBudget,
    /// Glance maps and outcomes of dropped [`ProcessedFrame`]s, refilled by the next frames.
    shelves: ResultShelves,
}

/// Spare results [`FrameProcessor::process`] keeps: a caller that holds a few processed frames at once still
/// finds their results again when it drops them.
const PROCESSOR_SPARE_RESULTS: usize = 4;

impl FrameProcessor {
    pub fn new(
        glance: GlanceStage,
        strategy: Box<dyn FocusStrategy>,
        classifier: Arc<dyn PatchClassifier>,
        budget: FocusBudget,
    ) -> Self {
        Self {
            glance,
            strategy,
            classifier: Arc::new(TimedClassifier::new(classifier)),
            budget,
            shelves: ResultShelves::new(PROCESSOR_SPARE_RESULTS),
        }
    }

    /// Run glance then focus on `frame`, recording stage latencies in `metrics`.
    pub fn process(
        &mut self,
        frame: Frame,
        metrics: &PipelineMetrics,
    ) -> Result<ProcessedFrame, ProcessError> {
        let started = Instant::now();
        let mut glance = self.shelves.glance.take();
        if let Err(source) = self.glance.glance_into(&frame, &mut glance) {
            self.shelves.glance.give(glance);
            return Err(ProcessError::Glance {
                frame: frame.index,
                source,
            });
        }
        metrics.record(Stage::Glance, started.elapsed());
        let glance_size_px = self.glance.input_size_px();
        focus_frame(
            frame,
            glance,
            glance_size_px,
            self.strategy.as_mut(),
            &self.classifier,
            self.budget,
            started,
            metrics,
            &self.shelves,
        )
    }
}

#[allow(clippy::too_many_arguments)]
fn focus_frame(
    frame: Frame,
    glance: GlanceMap,
    glance_size_px: (usize, usize),
    strategy: &mut dyn FocusStrategy,
    classifier: &Arc<TimedClassifier>,
    budget: FocusBudget,
    started: Instant,
    metrics: &PipelineMetrics,
    shelves: &ResultShelves,
) -> Result<ProcessedFrame, ProcessError> {
    let focus_start = Instant::now();
    classifier.take_spent();
    let classifier_dyn: &dyn PatchClassifier = classifier.as_ref();
    let input = FocusInput {
        frame: &frame,
        glance: &glance,
        glance_size_px,
        classifier: classifier_dyn,
        budget,
        started,
    };
    let mut outcome = shelves.outcome.take();
    if let Err(source) = strategy.focus_into(&input, &mut outcome) {
        shelves.glance.give(glance);
        shelves.outcome.give(outcome);
        return Err(ProcessError::Focus {
            frame: frame.index,
            source,
        });
    }
    let focus_total = focus_start.elapsed();
    let classify = classifier.take_spent();
    metrics.record(Stage::Classify, classify);
    metrics.record(Stage::Focus, focus_total.saturating_sub(classify));
    let latency = frame.captured_at.elapsed();
    metrics.record(Stage::Total, latency);
    PipelineMetrics::add(&metrics.frames_processed, 1);
    PipelineMetrics::add(&metrics.patches_total, outcome.patches.len() as u64);
    PipelineMetrics::add(&metrics.detections_total, outcome.detections.len() as u64);
    PipelineMetrics::add(
        &metrics.backbone_kflops_total,
        (outcome.backbone_mflops * 1000.0).round() as u64,
    );
    PipelineMetrics::add(&metrics.pixels_examined_total, outcome.pixels_examined);
    PipelineMetrics::add(
        &metrics.pixels_total,
        frame.width as u64 * frame.height as u64,
    );
    if outcome.exit.is_some_and(|e| e.is_early()) {
        PipelineMetrics::add(&metrics.early_exits, 1);
    }
    Ok(ProcessedFrame {
        frame,
        glance,
        outcome,
        latency_ms: latency.as_secs_f64() * 1000.0,
        shelves: Some(shelves.clone()),
    })
}

/// Send under a policy: `Lossless` blocks; `Latest` evicts the oldest queued item when the queue is full
/// (handed to `evicted`). Returns false when the receiver is gone.
fn send_with_policy<T>(
    tx: &Sender<T>,
    rx_for_eviction: &Receiver<T>,
    mut item: T,
    policy: QueuePolicy,
    dropped: &AtomicU64,
    mut evicted: impl FnMut(T),
) -> bool {
    match policy {
        QueuePolicy::Lossless => tx.send(item).is_ok(),
        QueuePolicy::Latest => loop {
            match tx.try_send(item) {
                Ok(()) => return true,
                Err(TrySendError::Disconnected(_)) => return false,
                Err(TrySendError::Full(back)) => {
                    if let Ok(old) = rx_for_eviction.try_recv() {
                        dropped.fetch_add(1, Ordering::Relaxed);
                        evicted(old);
                    }
                    item = back;
                }
            }
        },
    }
}

/// Run a source through glance, focus and the sink until the source ends or `stop` is set.
///
/// `sink` runs on its own thread and sees every processed frame in order. Failures of a model on one frame are
/// logged and counted; the run goes on.
pub fn run_pipeline<F>(
    mut source: Box<dyn FrameSource>,
    processor: FrameProcessor,
    options: PipelineOptions,
    metrics: Arc<PipelineMetrics>,
    stop: Arc<AtomicBool>,
    mut sink: F,
) -> RunSummary
where
    F: FnMut(ProcessedFrame) + Send,
{
    let depth = options.queue_depth.max(1);
    // One buffer for every place a frame can sit: the pool never holds more than the memory plan counts.
    let pool = FramePool::new(frames_in_flight(depth));
    source.use_pool(pool.clone());
    source.use_stop(stop.clone());
    let (frame_tx, frame_rx) = bounded::<Frame>(depth);
    let (glanced_tx, glanced_rx) = bounded::<(Frame, GlanceMap, Instant)>(depth);
    let (done_tx, done_rx) = bounded::<ProcessedFrame>(depth);
    let started = Instant::now();
    let FrameProcessor {
        mut glance,
        mut strategy,
        classifier,
        budget,
        shelves: _,
    } = processor;
    // Spare results for every place a frame's results can sit, as for the frame buffers.
    let shelves = ResultShelves::new(frames_in_flight(depth));
    let glance_size_px = glance.input_size_px();

    std::thread::scope(|scope| {
        let m = &metrics;
        let stop = &stop;
        let frame_rx_evict = frame_rx.clone();
        scope.spawn(move || {
            let mut last_stats = source.stats();
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let capture = source.next_frame();
                let stats = source.stats();
                PipelineMetrics::add(
                    &m.frames_dropped_kernel,
                    stats
                        .kernel_dropped
                        .saturating_sub(last_stats.kernel_dropped),
                );
                PipelineMetrics::add(
                    &m.source_outages,
                    stats.outages.saturating_sub(last_stats.outages),
                );
                last_stats = stats;
                let (allocated, reused, _) = pool.counts();
                m.frame_buffers_allocated
                    .store(allocated, Ordering::Relaxed);
                m.frame_buffers_reused.store(reused, Ordering::Relaxed);
                match capture {
                    Capture::Frame(frame) => {
                        m.record(Stage::Capture, t.elapsed());
                        PipelineMetrics::add(&m.frames_captured, 1);
                        if !send_with_policy(
                            &frame_tx,
                            &frame_rx_evict,
                            frame,
                            options.policy,
                            &m.frames_dropped_queue,
                            drop,
                        ) {
                            break;
                        }
                    }
                    Capture::Bad(e) => {
                        PipelineMetrics::add(&m.frames_bad, 1);
                        tracing::debug!("bad frame from {}: {e}", source.uri());
                    }
                    Capture::End => break,
                }
            }
            // Dropping the sender lets the later stages drain and finish.
            drop(frame_tx);
        });

        let glanced_rx_evict = glanced_rx.clone();
        let shelves = &shelves;
        scope.spawn(move || {
            for frame in frame_rx.iter() {
                let t = Instant::now();
                let mut map = shelves.glance.take();
                match glance.glance_into(&frame, &mut map) {
                    Ok(()) => {
                        m.record(Stage::Glance, t.elapsed());
                        if !send_with_policy(
                            &glanced_tx,
                            &glanced_rx_evict,
                            (frame, map, t),
                            options.policy,
                            &m.frames_dropped_queue,
                            |(_, map, _)| shelves.glance.give(map),
                        ) {
                            break;
                        }
                    }
                    Err(e) => {
                        shelves.glance.give(map);
                        PipelineMetrics::add(&m.frames_bad, 1);
                        tracing::error!("glance failed on frame {}: {e}", frame.index);
                    }
                }
            }
        });

        scope.spawn(move || {
            for (frame, map, t) in glanced_rx.iter() {
                match focus_frame(
                    frame,
                    map,
                    glance_size_px,
                    strategy.as_mut(),
                    &classifier,
                    budget,
                    t,
                    m,
                    shelves,
                ) {
                    Ok(done) => {
                        // The sink is lossless: every computed detection reaches the output.
                        if done_tx.send(done).is_err() {
                            break;
                        }
                    }
                    Err(e) => {
                        PipelineMetrics::add(&m.frames_bad, 1);
                        tracing::error!("{e}");
                    }
                }
            }
        });

        scope.spawn(move || {
            for done in done_rx.iter() {
                sink(done);
            }
        });
    });

    let wall_s = started.elapsed().as_secs_f64();
    let frames = PipelineMetrics::get(&metrics.frames_processed);
    RunSummary {
        frames,
        wall_s,
        fps: if wall_s > 0.0 {
            frames as f64 / wall_s
        } else {
            0.0
        },
    }
}

#[cfg(test)]
mod tests;
