//! Specifications of the pipeline: queue policies, stopping, faults and counters.

#![allow(clippy::unwrap_used)]

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
        assert!(send_with_policy(
            &tx,
            &rx,
            i,
            QueuePolicy::Latest,
            &dropped,
            drop
        ));
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
    fn focus_into(
        &mut self,
        _input: &FocusInput<'_>,
        out: &mut FocusOutcome,
    ) -> Result<(), FocusError> {
        std::thread::sleep(self.delay);
        out.clear();
        out.exit = Some(ExitReason::NothingSalient);
        Ok(())
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

#[test]
fn a_dropped_processed_frame_hands_its_results_back_for_the_next_frame() {
    let mut p = processor(0);
    let metrics = PipelineMetrics::default();
    let frame = Frame::from_rgb(0, 16, 12, vec![7; 16 * 12 * 3]).unwrap();
    let mut spare = FocusOutcome::default();
    spare.patches.reserve(100);
    p.shelves.outcome.give(spare);
    let done = p.process(frame.clone(), &metrics).unwrap();
    // The frame's outcome was written into the spare, its lists' capacity kept.
    assert!(done.outcome.patches.capacity() >= 100);
    assert_eq!(done.outcome.exit, Some(ExitReason::NothingSalient));
    assert_eq!(
        (p.shelves.glance.spare(), p.shelves.outcome.spare()),
        (0, 0)
    );
    drop(done);
    assert_eq!(
        (p.shelves.glance.spare(), p.shelves.outcome.spare()),
        (1, 1)
    );
    let again = p.process(frame.clone(), &metrics).unwrap();
    assert!(again.outcome.patches.capacity() >= 100);
    assert_eq!(again.glance.objectness.len(), 48);
    drop(again);
    // A processed frame made outside a processor goes nowhere.
    drop(ProcessedFrame::new(
        frame,
        GlanceMap::default(),
        FocusOutcome::default(),
        0.0,
    ));
    assert_eq!(
        (p.shelves.glance.spare(), p.shelves.outcome.spare()),
        (1, 1)
    );
}
