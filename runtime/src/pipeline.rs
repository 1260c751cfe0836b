//! The pipeline: capture → glance → focus+classify → sink, each on its own thread, joined by bounded
//! crossbeam-channel queues.
//!
//! Per source a [`QueuePolicy`]: `Latest` drops the oldest queued frame when the next stage is behind (live
//! cameras: always work on the newest frame), `Lossless` blocks the producer (replays, evaluation). Stopping
//! (the `stop` flag, set by SIGINT/SIGTERM) ends capture; every queued frame is still processed and its event
//! flushed before [`run_pipeline`] returns.

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

/// A frame that went through glance and focus, handed to the sink.
pub struct ProcessedFrame {
    pub frame: Frame,
    pub glance: GlanceMap,
    pub outcome: FocusOutcome,
    /// Capture to end of focus, milliseconds.
    pub latency_ms: f64,
}

/// What a finished run did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RunSummary {
    pub frames: u64,
    pub wall_s: f64,
    pub fps: f64,
}

/// A classifier wrapper that measures the time spent inside `classify` (the classify stage, which runs on
/// the focus thread inside the strategy).
pub struct TimedClassifier {
    inner: Arc<dyn PatchClassifier>,
    spent_ns: AtomicU64,
}

impl TimedClassifier {
    pub fn new(inner: Arc<dyn PatchClassifier>) -> Self {
        Self {
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
    fn mflops_per_patch(&self) -> f64 {
        self.inner.mflops_per_patch()
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
}

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
        }
    }

    /// Run glance then focus on `frame`, recording stage latencies in `metrics`.
    pub fn process(
        &mut self,
        frame: Frame,
        metrics: &PipelineMetrics,
    ) -> Result<ProcessedFrame, ProcessError> {
        let started = Instant::now();
        let glance = self
            .glance
            .glance(&frame)
            .map_err(|source| ProcessError::Glance {
                frame: frame.index,
                source,
            })?;
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
    let outcome = strategy
        .focus(&input)
        .map_err(|source| ProcessError::Focus {
            frame: frame.index,
            source,
        })?;
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
    })
}

/// Send under a policy: `Lossless` blocks; `Latest` evicts the oldest queued item when the queue is full.
/// Returns false when the receiver is gone.
fn send_with_policy<T>(
    tx: &Sender<T>,
    rx_for_eviction: &Receiver<T>,
    mut item: T,
    policy: QueuePolicy,
    dropped: &AtomicU64,
) -> bool {
    match policy {
        QueuePolicy::Lossless => tx.send(item).is_ok(),
        QueuePolicy::Latest => loop {
            match tx.try_send(item) {
                Ok(()) => return true,
                Err(TrySendError::Disconnected(_)) => return false,
                Err(TrySendError::Full(back)) => {
                    if rx_for_eviction.try_recv().is_ok() {
                        dropped.fetch_add(1, Ordering::Relaxed);
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
    } = processor;
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
        scope.spawn(move || {
            for frame in frame_rx.iter() {
                let t = Instant::now();
                match glance.glance(&frame) {
                    Ok(map) => {
                        m.record(Stage::Glance, t.elapsed());
                        if !send_with_policy(
                            &glanced_tx,
                            &glanced_rx_evict,
                            (frame, map, t),
                            options.policy,
                            &m.frames_dropped_queue,
                        ) {
                            break;
                        }
                    }
                    Err(e) => {
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
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::capture::fault::{Fault, FaultSchedule, FaultSource};
    use crate::capture::synthetic::{SyntheticOptions, SyntheticSource};
    use crate::focus::{ExitReason, FocusError};
    use candle_core::Device;
    use saccade_models::{GlanceNet, NUM_CLASSES};
    use std::sync::Mutex;

    #[test]
    fn latest_policy_evicts_the_oldest_item() {
        let (tx, rx) = bounded::<u32>(2);
        let dropped = AtomicU64::new(0);
        for i in 0..5 {
            assert!(send_with_policy(&tx, &rx, i, QueuePolicy::Latest, &dropped));
        }
        assert_eq!(dropped.load(Ordering::Relaxed), 3);
        assert_eq!(rx.try_iter().collect::<Vec<_>>(), vec![3, 4]);
    }

    /// A glance net that sees a flat map: enough to drive the pipeline without weights.
    struct FlatGlance;
    impl GlanceNet for FlatGlance {
        fn input_size_px(&self) -> (usize, usize) {
            (64, 48)
        }
        fn glance(&self, image: &Tensor) -> Result<GlanceMap, ModelError> {
            assert_eq!(image.dims(), &[1, 3, 48, 64]);
            Ok(GlanceMap {
                map_width: 8,
                map_height: 6,
                stride_px: 8,
                objectness: vec![0.5; 48],
                box_side_glance_px: vec![4.0; 48],
                feature: vec![0.0; 4],
                class_probs: None,
            })
        }
        fn mflops(&self) -> f64 {
            0.0
        }
        fn describe(&self) -> String {
            "flat".into()
        }
    }

    struct NoClassifier;
    impl PatchClassifier for NoClassifier {
        fn input_side_px(&self) -> usize {
            32
        }
        fn classify(&self, patches: &Tensor) -> Result<Tensor, ModelError> {
            Ok(Tensor::zeros(
                (patches.dim(0)?, NUM_CLASSES),
                candle_core::DType::F32,
                &Device::Cpu,
            )?)
        }
        fn classify_with_boxes(
            &self,
            patches: &Tensor,
        ) -> Result<saccade_models::PatchVerdicts, ModelError> {
            Ok(saccade_models::PatchVerdicts::without_boxes(
                self.classify(patches)?,
            ))
        }
        fn mflops_per_patch(&self) -> f64 {
            1.0
        }
        fn describe(&self) -> String {
            "none".into()
        }
    }

    /// A strategy that takes `delay` per frame and looks at nothing.
    struct Slow {
        delay: Duration,
    }
    impl FocusStrategy for Slow {
        fn name(&self) -> &'static str {
            "slow"
        }
        fn focus(&mut self, _input: &FocusInput<'_>) -> Result<FocusOutcome, FocusError> {
            std::thread::sleep(self.delay);
            Ok(FocusOutcome {
                exit: Some(ExitReason::NothingSalient),
                ..FocusOutcome::default()
            })
        }
    }

    fn synthetic(frames: u64) -> SyntheticSource {
        SyntheticSource::open(
            "synthetic://test",
            SyntheticOptions {
                width: 160,
                height: 120,
                seed: 7,
                frames: Some(frames),
                fps: None,
            },
        )
        .unwrap()
    }

    fn processor(delay_ms: u64) -> FrameProcessor {
        FrameProcessor::new(
            GlanceStage::new(Arc::new(FlatGlance), Device::Cpu),
            Box::new(Slow {
                delay: Duration::from_millis(delay_ms),
            }),
            Arc::new(NoClassifier),
            FocusBudget {
                max_patches: 4,
                deadline_ms: None,
            },
        )
    }

    /// Queue depth 1 and at most 4 patches, under `policy`.
    fn options(policy: QueuePolicy) -> PipelineOptions {
        PipelineOptions {
            queue_depth: 1,
            policy,
            budget: FocusBudget {
                max_patches: 4,
                deadline_ms: None,
            },
        }
    }

    fn run(
        source: Box<dyn FrameSource>,
        policy: QueuePolicy,
        delay_ms: u64,
    ) -> (Arc<PipelineMetrics>, Vec<u64>) {
        let metrics = Arc::new(PipelineMetrics::default());
        let seen = Mutex::new(Vec::new());
        run_pipeline(
            source,
            processor(delay_ms),
            options(policy),
            metrics.clone(),
            Arc::new(AtomicBool::new(false)),
            |done| seen.lock().unwrap().push(done.frame.index),
        );
        (metrics, seen.into_inner().unwrap())
    }

    /// A camera-like source: each frame is decoded (filled with its index) into a buffer from the pool.
    struct PooledSource {
        pool: Option<FramePool>,
        next: u64,
        frames: u64,
    }

    impl FrameSource for PooledSource {
        fn next_frame(&mut self) -> Capture {
            if self.next >= self.frames {
                return Capture::End;
            }
            let (w, h) = (64u32, 48u32);
            let len = (w * h * 3) as usize;
            let mut rgb = FramePool::take_or_new(self.pool.as_ref(), len).unwrap();
            rgb.fill(self.next as u8);
            let frame = Frame::from_rgb(self.next, w, h, rgb).unwrap();
            self.next += 1;
            Capture::Frame(frame.with_pool(self.pool.as_ref()))
        }
        fn uri(&self) -> &str {
            "pooled://test"
        }
        fn default_policy(&self) -> QueuePolicy {
            QueuePolicy::Lossless
        }
        fn use_pool(&mut self, pool: FramePool) {
            self.pool = Some(pool);
        }
    }

    #[test]
    fn frames_are_decoded_into_recycled_buffers_and_never_more_than_fit_in_flight() {
        for (policy, delay_ms) in [(QueuePolicy::Lossless, 0), (QueuePolicy::Latest, 2)] {
            let metrics = Arc::new(PipelineMetrics::default());
            let intact = AtomicU64::new(0);
            let source = PooledSource {
                pool: None,
                next: 0,
                frames: 60,
            };
            run_pipeline(
                Box::new(source),
                processor(delay_ms),
                options(policy),
                metrics.clone(),
                Arc::new(AtomicBool::new(false)),
                |done| {
                    // A buffer recycled while its frame was still in use would show another frame's bytes.
                    if done.frame.rgb.iter().all(|&b| b == done.frame.index as u8) {
                        intact.fetch_add(1, Ordering::Relaxed);
                    }
                },
            );
            let allocated = PipelineMetrics::get(&metrics.frame_buffers_allocated);
            let reused = PipelineMetrics::get(&metrics.frame_buffers_reused);
            let processed = PipelineMetrics::get(&metrics.frames_processed);
            assert!(
                allocated <= frames_in_flight(1) as u64,
                "{policy:?}: {allocated} buffers allocated for {} places",
                frames_in_flight(1)
            );
            // The counters are read before each capture, so the last frame's take may not be in them yet.
            assert!(
                allocated + reused >= 59,
                "{policy:?}: {allocated} + {reused}"
            );
            assert_eq!(intact.load(Ordering::Relaxed), processed, "{policy:?}");
        }
    }

    #[test]
    fn lossless_pipeline_loses_no_frame_even_when_the_consumer_is_slow() {
        let (m, seen) = run(Box::new(synthetic(12)), QueuePolicy::Lossless, 5);
        assert_eq!(seen, (0..12).collect::<Vec<_>>());
        assert_eq!(PipelineMetrics::get(&m.frames_captured), 12);
        assert_eq!(PipelineMetrics::get(&m.frames_processed), 12);
        assert_eq!(PipelineMetrics::get(&m.frames_dropped_queue), 0);
        assert_eq!(PipelineMetrics::get(&m.early_exits), 12);
    }

    #[test]
    fn latest_pipeline_drops_the_oldest_frames_when_the_consumer_is_slow_and_counts_them() {
        let (m, seen) = run(Box::new(synthetic(40)), QueuePolicy::Latest, 50);
        let captured = PipelineMetrics::get(&m.frames_captured);
        let dropped = PipelineMetrics::get(&m.frames_dropped_queue);
        let processed = PipelineMetrics::get(&m.frames_processed);
        assert_eq!(captured, 40);
        assert!(
            dropped > 0,
            "a consumer 50 ms/frame behind must cause drops"
        );
        assert_eq!(
            processed + dropped,
            captured,
            "every frame is processed or counted as dropped"
        );
        assert_eq!(seen.len() as u64, processed);
        // Newest frames win: the last captured frame is always processed, and order is kept.
        assert_eq!(seen.last(), Some(&39));
        assert!(seen.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn injected_camera_faults_are_counted_and_the_pipeline_keeps_running() {
        let schedule = FaultSchedule::every(3, &Fault::ALL, 1);
        let source = FaultSource::new(synthetic(40), schedule);
        let (m, seen) = run(Box::new(source), QueuePolicy::Lossless, 0);
        let bad_kinds = Fault::ALL.iter().filter(|f| f.gives_bad_frame()).count() as u64;
        assert_eq!(PipelineMetrics::get(&m.frames_bad), bad_kinds);
        assert!(
            PipelineMetrics::get(&m.source_outages) >= 2,
            "vanish and stall are outages"
        );
        assert_eq!(PipelineMetrics::get(&m.frames_dropped_kernel), 2);
        assert_eq!(PipelineMetrics::get(&m.frames_processed), seen.len() as u64);
        assert!(
            seen.len() >= 30,
            "the stream went on after the faults: {} frames",
            seen.len()
        );
    }

    #[test]
    fn stop_flag_ends_an_endless_source_and_drains_what_was_captured() {
        let metrics = Arc::new(PipelineMetrics::default());
        let stop = Arc::new(AtomicBool::new(false));
        let count = AtomicU64::new(0);
        let stopper = stop.clone();
        run_pipeline(
            Box::new(synthetic(u64::MAX)),
            processor(1),
            PipelineOptions {
                queue_depth: 2,
                policy: QueuePolicy::Lossless,
                budget: FocusBudget {
                    max_patches: 4,
                    deadline_ms: None,
                },
            },
            metrics.clone(),
            stop,
            |_| {
                if count.fetch_add(1, Ordering::Relaxed) == 5 {
                    stopper.store(true, Ordering::Relaxed);
                }
            },
        );
        let processed = PipelineMetrics::get(&metrics.frames_processed);
        assert_eq!(processed, PipelineMetrics::get(&metrics.frames_captured));
        assert_eq!(count.load(Ordering::Relaxed), processed);
        assert!(processed >= 6);
    }
}
