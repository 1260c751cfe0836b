//! Allocation counts on the hot path, with a counting global allocator that counts per thread.
//!
//! The image operations of capture → glance → focus (resize, CHW conversion, patch cut) allocate nothing per
//! frame: they write into buffers sized once. So do the model calls on the CPU integer path (the shipped
//! Q8_0 nets): the glance and the classifier run on slices into caller-owned buffers
//! (`GlanceNet::glance_into`, `PatchClassifier::classify_into`, and their `_with` forms that take the
//! worker's `ModelState`), and the batching stage lends each call's
//! buffers to its worker and back. The focus stage keeps its per-frame lists as scratch, and a frame's results
//! (glance map, focus outcome) come back from the sink to be refilled (`saccade_runtime::recycle`): in steady
//! state a frame allocates nothing on its source's thread, with one source or four sharing a model.
#![allow(clippy::unwrap_used)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::Arc;

use candle_core::{Device, Tensor};
use saccade_models::glancenet::GlanceNetModel;
use saccade_models::patchnet::PatchNet;
use saccade_models::{
    GlanceMap, GlanceNet, ModelError, ModelState, PatchClassifier, PatchRows, PatchVerdicts,
};
use saccade_runtime::capture::convert::mjpeg_to_rgb;
use saccade_runtime::capture::dir::decode_image;
use saccade_runtime::capture::{Capture, FrameSource, QueuePolicy};
use saccade_runtime::focus::{strategy_by_name, FocusBudget, StrategyConfigs};
use saccade_runtime::frame::{BoxPx, Frame};
use saccade_runtime::glance::GlanceStage;
use saccade_runtime::imageops::{crop_resize_chw, resize_rgb_bilinear, rgb_to_chw_f32};
use saccade_runtime::metrics::PipelineMetrics;
use saccade_runtime::pipeline::FrameProcessor;
use saccade_runtime::pool::FramePool;
use saccade_runtime::synth::{SceneConfig, SceneGenerator};

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
    /// The largest single allocation of this thread, bytes (reset by [`largest_allocation_since`]).
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

/// Allocations of every thread of the process (for the threaded pipeline, whose threads this test does not own).
static ALL_THREADS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn count(size: usize) {
    ALL_THREADS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
    let _ = LARGEST.try_with(|c| c.set(c.get().max(size)));
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations() -> u64 {
    ALLOCATIONS.with(|c| c.get())
}

/// The largest single allocation `f` made on this thread.
fn largest_allocation_in<T>(f: impl FnOnce() -> T) -> (T, usize) {
    LARGEST.with(|c| c.set(0));
    let out = f();
    (out, LARGEST.with(|c| c.get()))
}

/// A small real JPEG whose baseline SOF claims `width`×`height`.
fn jpeg_claiming(width: u16, height: u16) -> Vec<u8> {
    let mut jpeg = Vec::new();
    image::RgbImage::from_pixel(16, 16, image::Rgb([9, 9, 9]))
        .write_to(
            &mut std::io::Cursor::new(&mut jpeg),
            image::ImageFormat::Jpeg,
        )
        .unwrap();
    let sof = jpeg.windows(2).position(|m| m == [0xFF, 0xC0]).unwrap();
    // FF C0, length (2), precision (1), height (2), width (2).
    jpeg[sof + 5..sof + 7].copy_from_slice(&height.to_be_bytes());
    jpeg[sof + 7..sof + 9].copy_from_slice(&width.to_be_bytes());
    jpeg
}

#[test]
fn a_jpeg_header_claiming_a_huge_frame_is_refused_before_its_pixels_are_allocated() {
    // 12000×12000 is 432 MB of RGB; nothing near that may be allocated on the way to the refusal.
    let jpeg = jpeg_claiming(12_000, 12_000);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("huge.jpg");
    std::fs::write(&path, &jpeg).unwrap();
    let (decoded, largest) = largest_allocation_in(|| decode_image(&path));
    let err = decoded.unwrap_err().to_string();
    assert!(
        err.contains("huge.jpg") && err.contains("12000×12000") && err.contains("67108864 px"),
        "{err}"
    );
    assert!(
        largest < 1 << 20,
        "a {largest}-byte allocation for a refused file"
    );
    let mut out = Vec::new();
    let (decoded, largest) = largest_allocation_in(|| mjpeg_to_rgb(&jpeg, &mut out));
    assert_eq!(decoded.unwrap_err().kind(), "too_large");
    assert!(
        largest < 1 << 20,
        "a {largest}-byte allocation for a refused MJPEG frame"
    );
}

fn frames(n: u64) -> Vec<Frame> {
    let generator = SceneGenerator::new(SceneConfig {
        width: 640,
        height: 480,
        ..SceneConfig::default()
    })
    .unwrap();
    (0..n)
        .map(|i| {
            let s = generator.generate(77 + i);
            Frame::from_rgb(i, s.width, s.height, s.rgb).unwrap()
        })
        .collect()
}

#[test]
fn image_operations_of_the_hot_path_allocate_nothing_per_frame() {
    let frames = frames(3);
    let (gw, gh) = (320, 240);
    let mut small = vec![0u8; gw * gh * 3];
    let mut chw = vec![0f32; gw * gh * 3];
    let mut patch = vec![0f32; 3 * 32 * 32];
    for f in &frames {
        let before = allocations();
        resize_rgb_bilinear(
            &f.rgb,
            f.width as usize,
            f.height as usize,
            &mut small,
            gw,
            gh,
        )
        .unwrap();
        rgb_to_chw_f32(&small, gw, gh, &mut chw).unwrap();
        for k in 0..8 {
            let x = 40.0 * k as f32;
            crop_resize_chw(f, BoxPx::new(x, 10.0, x + 60.0, 70.0), 32, &mut patch).unwrap();
        }
        assert_eq!(
            allocations() - before,
            0,
            "image ops allocated on frame {}",
            f.index
        );
    }
}

fn weights() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("models")
        .join("weights")
}

/// The shipped Q8_0 nets behind the `topk` strategy with at most 8 patches per frame, on the CPU.
fn topk_processor() -> FrameProcessor {
    processor_for("topk")
}

#[test]
fn the_q8_0_model_calls_allocate_nothing_in_steady_state() {
    let device = Device::Cpu;
    let glance = GlanceNetModel::load(&weights().join("glancenet.q8_0.gguf"), &device).unwrap();
    let classifier = PatchNet::load(&weights().join("patchnet.q8_0.gguf"), &device).unwrap();
    let (w, h) = glance.input_size_px();
    let chw: Vec<f32> = (0..3 * w * h).map(|i| (i % 251) as f32 / 251.0).collect();
    let side = classifier.input_side_px();
    let patches: Vec<f32> = (0..48 * 3 * side * side)
        .map(|i| (i % 97) as f32 / 97.0)
        .collect();
    let (mut map, mut rows) = (GlanceMap::default(), PatchRows::default());
    // A worker's own state (what the runtime's stages pass), beside the stateless calls' thread fallback.
    let mut state = ModelState::new();
    let mut counts = Vec::new();
    for round in 0..4 {
        // Batches of several sizes, the largest first (buffers grow once, to the largest).
        for batch in [48, 8, 1, 30] {
            let before = allocations();
            let batch_chw = &patches[..batch * 3 * side * side];
            glance.glance_into(&chw, &mut map).unwrap();
            classifier
                .classify_into(batch_chw, batch, &mut rows)
                .unwrap();
            glance.glance_into_with(&mut state, &chw, &mut map).unwrap();
            classifier
                .classify_into_with(&mut state, batch_chw, batch, &mut rows)
                .unwrap();
            if round > 0 {
                counts.push(allocations() - before);
            }
            assert_eq!(rows.probs.len(), batch * saccade_models::NUM_CLASSES);
        }
    }
    eprintln!("allocations per glance + classify (Q8_0, steady state): {counts:?}");
    // Nothing at all once the buffers have grown: the integer products split over the int8 pool's parked
    // helper threads, started by the first large product (before these rounds), and spawn nothing per call.
    assert!(
        counts.iter().all(|&n| n == 0),
        "glance + classify allocated in steady state: {counts:?}"
    );
}

#[test]
fn allocations_per_frame_stay_constant_and_outside_the_models_in_steady_state() {
    let mut processor = topk_processor();
    let per_frame = steady_state_counts(&mut processor, &frames(3), 6);
    eprintln!("allocations per frame (topk, 1 source, steady state): {per_frame:?}");
    // The same three frames repeat: each frame's count must be the same in every round (no growth, no leak
    // of work).
    for (i, n) in per_frame.iter().enumerate().skip(3) {
        assert_eq!(
            *n,
            per_frame[i % 3],
            "frame {} allocated {n} vs {} earlier: {per_frame:?}",
            i % 3,
            per_frame[i % 3]
        );
    }
    assert!(
        per_frame.iter().all(|&n| n == 0),
        "a frame allocated in steady state: {per_frame:?}"
    );
}

/// The shipped Q8_0 nets behind strategy `name` with at most 8 patches per frame, on the CPU.
fn processor_for(name: &str) -> FrameProcessor {
    let device = Device::Cpu;
    let glance = GlanceNetModel::load(&weights().join("glancenet.q8_0.gguf"), &device).unwrap();
    let classifier = PatchNet::load(&weights().join("patchnet.q8_0.gguf"), &device).unwrap();
    FrameProcessor::new(
        GlanceStage::new(Arc::new(glance), device),
        strategy_by_name(name, &StrategyConfigs::default()).unwrap(),
        Arc::new(classifier),
        FocusBudget {
            max_patches: 8,
            deadline_ms: None,
        },
    )
}

/// Allocations of each frame of `processor` on this thread, rounds 1.. of `rounds` over `frames` (round 0
/// warms the buffers up).
fn steady_state_counts(
    processor: &mut FrameProcessor,
    frames: &[Frame],
    rounds: usize,
) -> Vec<u64> {
    steady_state_counts_with(processor, frames, rounds, || {})
}

/// [`steady_state_counts`], calling `before_each` (outside the count) before each frame.
fn steady_state_counts_with(
    processor: &mut FrameProcessor,
    frames: &[Frame],
    rounds: usize,
    mut before_each: impl FnMut(),
) -> Vec<u64> {
    let metrics = PipelineMetrics::default();
    let mut per_frame = Vec::with_capacity(rounds * frames.len());
    for round in 0..rounds {
        for f in frames {
            before_each();
            // Cloned before counting: the clone is this test's frame, not the pipeline's.
            let frame = f.clone();
            let before = allocations();
            let done = processor.process(frame, &metrics).unwrap();
            let n = allocations() - before;
            drop(done);
            if round > 0 {
                per_frame.push(n);
            }
        }
    }
    per_frame
}

#[test]
fn every_strategy_allocates_nothing_per_frame_in_steady_state() {
    let frames = frames(3);
    let mut report = Vec::new();
    for name in saccade_runtime::focus::STRATEGY_NAMES {
        let mut processor = processor_for(name);
        let per_frame = steady_state_counts(&mut processor, &frames, 4);
        for (i, n) in per_frame.iter().enumerate().skip(3) {
            assert_eq!(
                *n,
                per_frame[i % 3],
                "{name}: frame {} allocated {n} vs {} earlier: {per_frame:?}",
                i % 3,
                per_frame[i % 3]
            );
        }
        report.push((*name, per_frame));
    }
    eprintln!("allocations per frame by strategy (1 source, steady state): {report:?}");
    assert!(
        report
            .iter()
            .all(|(_, per_frame)| per_frame.iter().all(|&n| n == 0)),
        "a strategy allocated in steady state: {report:?}"
    );
}

#[test]
fn writing_a_frames_event_allocates_nothing_in_steady_state() {
    use saccade_runtime::events::{EventFile, EventSink, FileTarget, FrameEvent};
    let dir = tempfile::tempdir().unwrap();
    let target = FileTarget {
        path: dir.path().join("events.jsonl"),
        max_bytes: None,
        keep: 0,
    };
    let mut to_file = EventSink::from_file(EventFile::open(&target).unwrap());
    let mut to_writer = EventSink::from_writer(Box::new(std::io::sink()), "sink");
    let mut processor = topk_processor();
    let metrics = PipelineMetrics::default();
    let frames = frames(3);
    let mut per_event = Vec::new();
    for round in 0..4 {
        for f in &frames {
            let done = processor.process(f.clone(), &metrics).unwrap();
            // What the sink of `saccade run` does with every frame: its event, as a JSON line in the events
            // file (and on stdout).
            let before = allocations();
            let event = FrameEvent::new(
                "dir://frames",
                "topk",
                &done.frame,
                &done.outcome,
                done.latency_ms,
            );
            assert!(to_file.write(&event) && to_writer.write(&event));
            let n = allocations() - before;
            if round > 0 {
                per_event.push(n);
            }
        }
    }
    eprintln!("allocations per event written (sink thread, steady state): {per_event:?}");
    assert!(
        per_event.iter().all(|&n| n == 0),
        "writing events allocated: {per_event:?}"
    );
    let lines = std::fs::read_to_string(&target.path).unwrap();
    assert_eq!(lines.lines().count(), 12);
}

/// The shipped Q8_0 classifier seen from a batching stage's worker thread: records, on that thread, the
/// allocations of each model call and those the worker made between two calls (gathering, concatenating,
/// splitting and answering: the batching stage's own cost).
struct WorkerCounting {
    inner: Arc<dyn PatchClassifier>,
    state: std::sync::Mutex<WorkerState>,
}

struct WorkerState {
    last_exit: Option<u64>,
    /// Per model call: (rows, allocations inside, allocations on the worker since the previous call ended).
    calls: Vec<(usize, u64, u64)>,
}

impl WorkerCounting {
    /// Runs one model call, recording its allocations and the worker's since the previous call.
    fn counted(
        &self,
        batch: usize,
        call: impl FnOnce() -> Result<(), ModelError>,
    ) -> Result<(), ModelError> {
        let entry = allocations();
        let last_exit = self.state.lock().unwrap().last_exit;
        let before = allocations();
        let result = call();
        let inside = allocations() - before;
        let mut state = self.state.lock().unwrap();
        let between = last_exit.map_or(0, |exit| entry - exit);
        // Preallocated below: this push does not allocate.
        state.calls.push((batch, inside, between));
        state.last_exit = Some(allocations());
        result
    }
}

impl PatchClassifier for WorkerCounting {
    fn input_side_px(&self) -> usize {
        self.inner.input_side_px()
    }
    fn classify(&self, patches: &Tensor) -> Result<Tensor, ModelError> {
        Ok(self.classify_with_boxes(patches)?.probs)
    }
    fn classify_with_boxes(&self, patches: &Tensor) -> Result<PatchVerdicts, ModelError> {
        self.inner.classify_with_boxes(patches)
    }
    fn classify_into(
        &self,
        patches_chw: &[f32],
        batch: usize,
        out: &mut PatchRows,
    ) -> Result<(), ModelError> {
        self.counted(batch, || self.inner.classify_into(patches_chw, batch, out))
    }
    /// The batching worker's path: with the worker's own state.
    fn classify_into_with(
        &self,
        state: &mut ModelState,
        patches_chw: &[f32],
        batch: usize,
        out: &mut PatchRows,
    ) -> Result<(), ModelError> {
        self.counted(batch, || {
            self.inner
                .classify_into_with(state, patches_chw, batch, out)
        })
    }
    fn mflops_per_patch(&self) -> f64 {
        self.inner.mflops_per_patch()
    }
    fn describe(&self) -> String {
        self.inner.describe()
    }
}

#[test]
fn four_sources_sharing_one_model_through_the_batching_stage_allocate_nothing_per_frame() {
    use saccade_runtime::batching::{BatchingClassifier, BatchingConfig};
    const SOURCES: usize = 4;
    const ROUNDS: usize = 6;
    let device = Device::Cpu;
    let classifier = PatchNet::load(&weights().join("patchnet.q8_0.gguf"), &device).unwrap();
    let counting = Arc::new(WorkerCounting {
        inner: Arc::new(classifier),
        state: std::sync::Mutex::new(WorkerState {
            last_exit: None,
            calls: Vec::with_capacity(10_000),
        }),
    });
    // A long wait: the four sources reach classify at different times, and what is counted here is
    // allocations, not time, so every batch should hold all four sources' calls.
    let batcher = Arc::new(
        BatchingClassifier::new(
            counting.clone(),
            BatchingConfig {
                max_batch_patches: SOURCES * 8,
                max_wait: std::time::Duration::from_millis(200),
                workers: 1,
            },
        )
        .unwrap(),
    );
    let glance =
        Arc::new(GlanceNetModel::load(&weights().join("glancenet.q8_0.gguf"), &device).unwrap());
    let frames = frames(3);
    let barrier = std::sync::Barrier::new(SOURCES);
    let per_source: Vec<Vec<u64>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..SOURCES)
            .map(|_| {
                let mut processor = FrameProcessor::new(
                    GlanceStage::new(glance.clone(), device.clone()),
                    strategy_by_name("topk", &StrategyConfigs::default()).unwrap(),
                    batcher.source(),
                    FocusBudget {
                        max_patches: 8,
                        deadline_ms: None,
                    },
                );
                let (frames, barrier) = (&frames, &barrier);
                scope.spawn(move || {
                    steady_state_counts_with(&mut processor, frames, ROUNDS, || {
                        barrier.wait();
                    })
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    // On each source's thread: the same frame allocates the same in every round, and no more than one
    // source alone (the model calls, now through the batching stage, allocate nothing).
    for (s, per_frame) in per_source.iter().enumerate() {
        for (i, n) in per_frame.iter().enumerate().skip(3) {
            let first = per_frame[i % 3];
            assert_eq!(
                *n,
                first,
                "source {s}, frame {} allocated {n} vs {first} earlier: {per_frame:?}",
                i % 3
            );
        }
        assert!(
            per_frame.iter().all(|&n| n == 0),
            "source {s}: a frame allocated in steady state: {per_frame:?}"
        );
    }
    let stats = batcher.stats();
    let calls = counting.state.lock().unwrap().calls.clone();
    eprintln!("allocations per frame on each source thread (4 sources, batched): {per_source:?}");
    eprintln!("batching: {stats:?}");
    eprintln!(
        "worker per model call (rows, inside the model, batching stage before it): {calls:?}"
    );
    assert!(
        stats.merged_batches > 0,
        "the four sources never shared a batch: {stats:?}"
    );
    // On the worker, once its buffers have grown: the batching stage around the model calls (gathering,
    // concatenating, splitting the verdicts, answering) allocates nothing, and neither does a model call.
    let steady = &calls[calls.len() / 3..];
    for &(rows, inside, between) in steady {
        assert!(
            inside == 0 && between == 0,
            "a batch of {rows} rows allocated {inside} in the model and {between} in the batching stage: \
             {calls:?}"
        );
    }
}

/// A camera-like source for the soak: `frames` distinct 1280×960 synthetic scenes made once, then each
/// capture copies one into a buffer from the pipeline's frame pool, as the V4L2 source decodes into one.
struct CycleSource {
    scenes: Vec<(Vec<u8>, u32, u32)>,
    pool: Option<FramePool>,
    next: u64,
    total: u64,
}

impl CycleSource {
    fn new(distinct: u64, total: u64) -> Self {
        let generator = SceneGenerator::new(SceneConfig::default()).unwrap();
        let scenes = (0..distinct)
            .map(|i| {
                let s = generator.generate(177 + i);
                (s.rgb, s.width, s.height)
            })
            .collect();
        Self {
            scenes,
            pool: None,
            next: 0,
            total,
        }
    }
}

impl FrameSource for CycleSource {
    fn next_frame(&mut self) -> Capture {
        if self.next >= self.total {
            return Capture::End;
        }
        let (rgb, w, h) = &self.scenes[(self.next % self.scenes.len() as u64) as usize];
        let mut buf = FramePool::take_or_new(self.pool.as_ref(), rgb.len()).unwrap();
        buf.copy_from_slice(rgb);
        let frame = Frame::from_rgb(self.next, *w, *h, buf).unwrap();
        self.next += 1;
        Capture::Frame(frame.with_pool(self.pool.as_ref()))
    }
    fn uri(&self) -> &str {
        "soak://cycle"
    }
    fn default_policy(&self) -> QueuePolicy {
        QueuePolicy::Lossless
    }
    fn use_pool(&mut self, pool: FramePool) {
        self.pool = Some(pool);
    }
}

/// Soak: the threaded pipeline (capture into pooled buffers → glance → `topk` focus → Q8_0 classify → sink)
/// over `SACCADE_SOAK_FRAMES` 1280×960 frames (default 100 000; 8 distinct scenes cycled, so making frames
/// costs a copy). Samples RSS in the sink every 1,000 frames, prints the curve as CSV (`frames,rss_bytes`;
/// also written to `SACCADE_SOAK_CSV` when set) and requires RSS growth after the first 2,000 frames
/// (warm-up) to stay under 1 MiB, and frame buffers to be allocated only until the pool is warm. Ignored: it
/// runs for about an hour per 100,000 frames on 2 cores in a release build
/// (`cargo test --release --test it soak -- --ignored`).
#[test]
#[ignore = "soak run: minutes to hours; run with --ignored (SACCADE_SOAK_FRAMES sets the length)"]
fn soak_rss_stays_flat() {
    use saccade_runtime::budget::{frames_in_flight, rss_bytes};
    use saccade_runtime::pipeline::{run_pipeline, PipelineOptions};
    use std::sync::atomic::AtomicBool;
    let total: u64 = std::env::var("SACCADE_SOAK_FRAMES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let metrics = Arc::new(PipelineMetrics::default());
    let mut curve: Vec<(u64, u64)> = Vec::new();
    let started = std::time::Instant::now();
    let queue_depth = 2;
    let summary = run_pipeline(
        Box::new(CycleSource::new(8, total)),
        topk_processor(),
        PipelineOptions {
            queue_depth,
            policy: QueuePolicy::Lossless,
            budget: FocusBudget {
                max_patches: 8,
                deadline_ms: None,
            },
        },
        metrics.clone(),
        Arc::new(AtomicBool::new(false)),
        |done| {
            let n = done.frame.index + 1;
            if n % 1000 == 0 {
                let rss = rss_bytes().map(|(now, _peak)| now).unwrap_or(0);
                curve.push((n, rss));
                eprintln!(
                    "soak: {n} frames, RSS {:.2} MiB, {:.1} frames/s",
                    rss as f64 / 1048576.0,
                    n as f64 / started.elapsed().as_secs_f64()
                );
            }
        },
    );
    assert_eq!(summary.frames, total, "the lossless soak lost frames");
    let allocated = PipelineMetrics::get(&metrics.frame_buffers_allocated);
    eprintln!(
        "soak: {} frames in {:.0} s ({:.1} fps); frame buffers allocated {allocated}, reused {}",
        summary.frames,
        summary.wall_s,
        summary.fps,
        PipelineMetrics::get(&metrics.frame_buffers_reused)
    );
    assert!(
        allocated <= frames_in_flight(queue_depth) as u64,
        "{allocated} frame buffers allocated for {} places",
        frames_in_flight(queue_depth)
    );
    let csv: String = std::iter::once("frames,rss_bytes\n".to_string())
        .chain(curve.iter().map(|(f, r)| format!("{f},{r}\n")))
        .collect();
    if let Ok(path) = std::env::var("SACCADE_SOAK_CSV") {
        std::fs::write(path, &csv).unwrap();
    }
    let after_warmup: Vec<u64> = curve
        .iter()
        .filter(|(f, _)| *f >= 2000)
        .map(|(_, r)| *r)
        .collect();
    assert!(after_warmup.len() >= 2, "soak too short: {total} frames");
    let (first, max) = (
        after_warmup[0],
        after_warmup.iter().copied().max().unwrap_or(0),
    );
    let growth = max.saturating_sub(first);
    assert!(
        growth < 1024 * 1024,
        "RSS grew by {growth} bytes after warm-up over {total} frames:\n{csv}"
    );
}

/// The threaded pipeline (capture into pooled buffers → glance → `topk` → sink, each on its own thread) in
/// steady state allocates nothing per frame on any of its threads: frame buffers, glance maps and outcomes
/// all come back. It counts every thread of the process, so it must run alone
/// (`cargo test --release --test it threaded_pipeline -- --ignored`).
#[test]
#[ignore = "counts the allocations of the whole process: run alone with --ignored"]
fn the_threaded_pipeline_allocates_nothing_per_frame_in_steady_state() {
    use saccade_runtime::pipeline::{run_pipeline, PipelineOptions};
    use std::sync::atomic::{AtomicBool, Ordering};
    // Warm-up: each of the spare results (one per place in the pipeline) meets every one of the 8 scenes
    // (and grows its lists to the largest) within the first few hundred frames.
    const FRAMES: u64 = 1000;
    let (from, to) = (500, 980);
    let mut marks = [0u64; 2];
    run_pipeline(
        Box::new(CycleSource::new(8, FRAMES)),
        topk_processor(),
        PipelineOptions {
            queue_depth: 2,
            policy: QueuePolicy::Lossless,
            budget: FocusBudget {
                max_patches: 8,
                deadline_ms: None,
            },
        },
        Arc::new(PipelineMetrics::default()),
        Arc::new(AtomicBool::new(false)),
        |done| {
            if done.frame.index == from {
                marks[0] = ALL_THREADS.load(Ordering::Relaxed);
            } else if done.frame.index == to {
                marks[1] = ALL_THREADS.load(Ordering::Relaxed);
            }
        },
    );
    let per_frame = (marks[1] - marks[0]) as f64 / (to - from) as f64;
    eprintln!(
        "threaded pipeline: {} allocations over frames {from}..{to} ({per_frame:.2} per frame)",
        marks[1] - marks[0]
    );
    assert_eq!(
        marks[1] - marks[0],
        0,
        "{per_frame:.2} allocations per frame"
    );
}

/// Faults of the fault soak, chosen at random (a seeded xorshift, so a run can be repeated).
struct SoakRng(u64);

impl SoakRng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// A [`CycleSource`] whose decode stalls now and then (a slow MJPEG decode, a USB hiccup): `stall` long every
/// `every`-th frame on average. Counts the frames it made.
struct StallingSource {
    inner: CycleSource,
    rng: SoakRng,
    every: u64,
    stall: std::time::Duration,
    made: Arc<std::sync::atomic::AtomicU64>,
    /// A camera's frame period (`SACCADE_SOAK_FPS`; none: as fast as frames can be copied).
    period: Option<std::time::Duration>,
    next_at: Option<std::time::Instant>,
}

impl FrameSource for StallingSource {
    fn next_frame(&mut self) -> Capture {
        if let Some(period) = self.period {
            let now = std::time::Instant::now();
            let at = self.next_at.unwrap_or(now);
            if at > now {
                std::thread::sleep(at - now);
            }
            // A camera that fell behind (a stall) does not burst to catch up.
            self.next_at = Some(at.max(now) + period);
        }
        if self.rng.below(self.every) == 0 {
            std::thread::sleep(self.stall);
        }
        let capture = self.inner.next_frame();
        if matches!(capture, Capture::Frame(_)) {
            self.made.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        capture
    }
    fn uri(&self) -> &str {
        "soak://faults"
    }
    fn default_policy(&self) -> QueuePolicy {
        QueuePolicy::Latest
    }
    fn use_pool(&mut self, pool: FramePool) {
        self.inner.use_pool(pool);
    }
}

/// A classifier that stalls (`stall` long) on about one call in `every`: a slow inference step.
struct StallingClassifier {
    inner: Arc<dyn PatchClassifier>,
    calls: std::sync::atomic::AtomicU64,
    every: u64,
    stall: std::time::Duration,
}

impl StallingClassifier {
    fn maybe_stall(&self) {
        let n = self
            .calls
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // A fixed pseudo-random pattern over the call number.
        if (n.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40).checked_rem(self.every) == Some(0) {
            std::thread::sleep(self.stall);
        }
    }
}

impl PatchClassifier for StallingClassifier {
    fn input_side_px(&self) -> usize {
        self.inner.input_side_px()
    }
    fn classify(&self, patches: &Tensor) -> Result<Tensor, ModelError> {
        self.maybe_stall();
        self.inner.classify(patches)
    }
    fn classify_with_boxes(&self, patches: &Tensor) -> Result<PatchVerdicts, ModelError> {
        self.maybe_stall();
        self.inner.classify_with_boxes(patches)
    }
    fn mflops_per_patch(&self) -> f64 {
        self.inner.mflops_per_patch()
    }
    fn describe(&self) -> String {
        format!("stalling {}", self.inner.describe())
    }
}

/// The events disk of the fault soak: holds `capacity` bytes (the soak fills it and frees it again). It keeps
/// no lines, only what the checks need: the bytes, the line being written, and which frames have a line.
struct SoakDisk {
    bytes: u64,
    capacity: u64,
    /// Bytes of the line being written (since the last newline); capacity kept across lines.
    partial: Vec<u8>,
    lines: u64,
    /// One bit per frame index: the frame has a line in the file.
    seen: Vec<u64>,
    duplicates: u64,
    /// Cut-backs that did not land on the end of the last whole line.
    bad_cuts: u64,
}

impl SoakDisk {
    fn frame_of(line: &[u8]) -> Option<u64> {
        let key = b"\"frame\":";
        let at = line.windows(key.len()).position(|w| w == key)? + key.len();
        let digits: Vec<u8> = line[at..]
            .iter()
            .copied()
            .take_while(u8::is_ascii_digit)
            .collect();
        std::str::from_utf8(&digits).ok()?.parse().ok()
    }
}

struct SoakFile(Arc<std::sync::Mutex<SoakDisk>>);

impl std::io::Write for SoakFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut d = self.0.lock().unwrap();
        let room = d.capacity.saturating_sub(d.bytes) as usize;
        if room == 0 {
            return Err(std::io::Error::other("No space left on device (soak)"));
        }
        let n = buf.len().min(room);
        for &b in &buf[..n] {
            d.partial.push(b);
            if b == b'\n' {
                let frame = SoakDisk::frame_of(&d.partial);
                d.partial.clear();
                d.lines += 1;
                if let Some(f) = frame {
                    let (word, bit) = ((f / 64) as usize, f % 64);
                    if word < d.seen.len() {
                        if d.seen[word] & (1 << bit) != 0 {
                            d.duplicates += 1;
                        }
                        d.seen[word] |= 1 << bit;
                    }
                }
            }
        }
        d.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl saccade_runtime::events::LineFile for SoakFile {
    fn cut_back_to(&mut self, len: u64) -> std::io::Result<()> {
        let mut d = self.0.lock().unwrap();
        if len != d.bytes - d.partial.len() as u64 {
            d.bad_cuts += 1;
        }
        d.bytes = len;
        d.partial.clear();
        Ok(())
    }
}

/// Fault soak: the threaded pipeline of [`soak_rss_stays_flat`] (live-camera policy: the newest frame wins)
/// over `SACCADE_SOAK_FRAMES` frames (default 100 000) with faults injected at random (seed
/// `SACCADE_SOAK_SEED`, default 1): corrupt, truncated and wrongly sized buffers, the camera vanishing and
/// returning, stalls, kernel drops (all of [`Fault::ALL`] through the real decoders and reconnect logic), a
/// stalling decode and a stalling classifier, a slow sink, an events disk that fills up (part-way through a
/// line) and frees again, and SIGTERM (a real signal, handled as `saccade run` does) at 90 % of the frames.
///
/// Requires: no panic; every frame the camera made is processed, dropped (queue or kernel) or bad; every
/// processed frame has exactly one whole line in the events file or is counted as not written, and each
/// cut-back lands on a line end; RSS flat after warm-up (< 1 MiB growth from camera frame 2,000 on, sampled every
/// 1,000 camera frames; runs under 20,000 frames sample every `frames / 30` after the first third); the disk
/// filled at least once; p99 capture-to-event latency under `SACCADE_SOAK_P99_MS` (default 2000).
/// `SACCADE_SOAK_FPS` paces the camera (default: unpaced). Prints the figures and the RSS curve
/// (`SACCADE_SOAK_CSV`).
#[test]
#[ignore = "fault soak: minutes to hours; run with --ignored (SACCADE_SOAK_FRAMES sets the length)"]
fn soak_with_faults() {
    use saccade_runtime::budget::rss_bytes;
    use saccade_runtime::capture::fault::{Fault, FaultSchedule, FaultSource};
    use saccade_runtime::events::{EventFile, EventSink, FileTarget, FrameEvent, LineFile};
    use saccade_runtime::pipeline::{run_pipeline, PipelineOptions};
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    let env = |key: &str, default: u64| -> u64 {
        std::env::var(key)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let total = env("SACCADE_SOAK_FRAMES", 100_000);
    let p99_bound_ms = env("SACCADE_SOAK_P99_MS", 2000) as f64;
    let mut rng = SoakRng(env("SACCADE_SOAK_SEED", 1) | 1);
    // RSS every 1,000 frames after 2,000 of warm-up; short runs (a check that the soak works) sample more often.
    let (sample_every, warmup) = if total >= 20_000 {
        (1000, 2000)
    } else {
        ((total / 30).max(1), total / 3)
    };

    // Camera faults: one every 20..80 reads, of a random kind.
    let mut at = Vec::new();
    let mut read = 0u64;
    loop {
        read += 20 + rng.below(60);
        if read >= total {
            break;
        }
        let fault = match Fault::ALL[rng.below(Fault::ALL.len() as u64) as usize] {
            Fault::Vanish { .. } => Fault::Vanish {
                failed_opens: 1 + rng.below(4) as u32,
            },
            Fault::KernelDrop { .. } => Fault::KernelDrop {
                frames: 1 + rng.below(4) as u32,
            },
            other => other,
        };
        at.push((read, fault));
    }
    let faults_scheduled = at.len();
    let made = Arc::new(AtomicU64::new(0));
    let source = FaultSource::new(
        StallingSource {
            inner: CycleSource::new(8, total),
            rng: SoakRng(rng.next() | 1),
            every: 500,
            stall: Duration::from_millis(150),
            made: made.clone(),
            period: match env("SACCADE_SOAK_FPS", 0) {
                0 => None,
                fps => Some(Duration::from_secs_f64(1.0 / fps as f64)),
            },
            next_at: None,
        },
        FaultSchedule::at(at),
    );

    let device = Device::Cpu;
    let glance = GlanceNetModel::load(&weights().join("glancenet.q8_0.gguf"), &device).unwrap();
    let classifier = PatchNet::load(&weights().join("patchnet.q8_0.gguf"), &device).unwrap();
    let stalling = StallingClassifier {
        inner: Arc::new(classifier),
        calls: AtomicU64::new(0),
        every: 700,
        stall: Duration::from_millis(200),
    };
    let processor = FrameProcessor::new(
        GlanceStage::new(Arc::new(glance), device),
        strategy_by_name("topk", &StrategyConfigs::default()).unwrap(),
        Arc::new(stalling),
        FocusBudget {
            max_patches: 8,
            deadline_ms: None,
        },
    );

    // The events file on a disk that fills and frees.
    let disk = Arc::new(std::sync::Mutex::new(SoakDisk {
        bytes: 0,
        capacity: u64::MAX,
        partial: Vec::with_capacity(64 * 1024),
        lines: 0,
        seen: vec![0; (total as usize).div_ceil(64) + 64],
        duplicates: 0,
        bad_cuts: 0,
    }));
    let opener = {
        let disk = disk.clone();
        Box::new(move |_: &std::path::Path, _truncate: bool| {
            let file: Box<dyn LineFile> = Box::new(SoakFile(disk.clone()));
            let len = disk.lock().unwrap().bytes;
            Ok((file, len))
        })
    };
    let target = FileTarget {
        path: "soak-events.jsonl".into(),
        max_bytes: None,
        keep: 0,
    };
    let mut events = EventSink::from_file(EventFile::open_with(&target, opener).unwrap());

    // SIGTERM as `saccade run` handles it: the signal raises the stop flag, the pipeline drains.
    let stop = saccade_tools::run::install_signal_handlers().unwrap();
    let sigterm_at = total * 9 / 10;
    let mut sigterm_sent = false;

    let metrics = Arc::new(PipelineMetrics::default());
    let mut latencies: Vec<f32> = Vec::with_capacity(total as usize);
    let mut curve: Vec<(u64, u64)> = Vec::with_capacity(total as usize / 1000 + 2);
    let mut sink_calls = 0u64;
    let mut last_sample = 0u64;
    let mut disk_fills = 0u64;
    let mut full_until = 0u64;
    let started = std::time::Instant::now();
    let mut sink_rng = SoakRng(rng.next() | 1);
    let summary = run_pipeline(
        Box::new(source),
        processor,
        PipelineOptions {
            queue_depth: 2,
            policy: QueuePolicy::Latest,
            budget: FocusBudget {
                max_patches: 8,
                deadline_ms: None,
            },
        },
        metrics.clone(),
        stop.clone(),
        |done| {
            sink_calls += 1;
            latencies.push(done.latency_ms as f32);
            // The disk fills (a few bytes of room left: the next line breaks off part-way) about every 300
            // frames, for 5..50 frames, then frees again.
            {
                let mut d = disk.lock().unwrap();
                if sink_calls >= full_until && d.capacity != u64::MAX {
                    d.capacity = u64::MAX;
                } else if d.capacity == u64::MAX && (sink_calls == 10 || sink_rng.below(300) == 0) {
                    d.capacity = d.bytes + sink_rng.below(200);
                    full_until = sink_calls + 5 + sink_rng.below(45);
                    disk_fills += 1;
                }
            }
            let event = FrameEvent::new(
                "soak://faults",
                "topk",
                &done.frame,
                &done.outcome,
                done.latency_ms,
            );
            events.write(&event);
            // A slow sink now and then (a blocked stdout reader, a slow disk).
            if sink_rng.below(400) == 0 {
                std::thread::sleep(Duration::from_millis(100));
            }
            // Sampled by camera frame number, so a slow machine (most frames dropped) still samples.
            if done.frame.index / sample_every > last_sample {
                last_sample = done.frame.index / sample_every;
                let rss = rss_bytes().map(|(now, _peak)| now).unwrap_or(0);
                curve.push((done.frame.index, rss));
                eprintln!(
                    "fault soak: {sink_calls} frames processed, RSS {:.2} MiB, {:.1} frames/s",
                    rss as f64 / 1048576.0,
                    sink_calls as f64 / started.elapsed().as_secs_f64()
                );
            }
            if !sigterm_sent && done.frame.index >= sigterm_at {
                sigterm_sent = true;
                let pid = std::process::id().to_string();
                let status = std::process::Command::new("kill")
                    .args(["-TERM", &pid])
                    .status()
                    .unwrap();
                assert!(status.success(), "kill -TERM {pid}");
            }
        },
    );
    let get = |c: &AtomicU64| PipelineMetrics::get(c);
    let (captured, processed, bad) = (
        get(&metrics.frames_captured),
        get(&metrics.frames_processed),
        get(&metrics.frames_bad),
    );
    let (dropped_queue, dropped_kernel) = (
        get(&metrics.frames_dropped_queue),
        get(&metrics.frames_dropped_kernel),
    );
    let made = made.load(Ordering::Relaxed);
    let d = disk.lock().unwrap();
    let seen: u64 = d.seen.iter().map(|w| w.count_ones() as u64).sum();
    let mut sorted = latencies.clone();
    sorted.sort_by(f32::total_cmp);
    let pct = |p: f64| -> f64 {
        if sorted.is_empty() {
            return 0.0;
        }
        sorted[((sorted.len() - 1) as f64 * p).round() as usize] as f64
    };
    let report = format!(
        "fault soak: {total} frames asked, seed {}; camera made {made}; captured {captured}, processed \
         {processed}, dropped {dropped_queue} (queue) + {dropped_kernel} (kernel), bad {bad}, outages {}; \
         {faults_scheduled} camera faults scheduled; events written {}, not written {} (disk full {disk_fills} \
         times), lines in the file {}, duplicates {}, bad cut-backs {}; latency p50 {:.1} ms, p99 {:.1} ms, max \
         {:.1} ms; {:.0} s ({:.1} fps); SIGTERM sent {sigterm_sent}",
        env("SACCADE_SOAK_SEED", 1),
        get(&metrics.source_outages),
        events.written(),
        events.not_written(),
        d.lines,
        d.duplicates,
        d.bad_cuts,
        pct(0.5),
        pct(0.99),
        pct(1.0),
        summary.wall_s,
        summary.fps,
    );
    eprintln!("{report}");
    let csv: String = std::iter::once("frame,rss_bytes\n".to_string())
        .chain(curve.iter().map(|(f, r)| format!("{f},{r}\n")))
        .collect();
    if let Ok(path) = std::env::var("SACCADE_SOAK_CSV") {
        std::fs::write(path, &csv).unwrap();
    }

    // Every frame accounted for.
    assert_eq!(sink_calls, processed, "{report}");
    assert_eq!(captured, processed + dropped_queue, "{report}");
    assert_eq!(made, captured + bad + dropped_kernel, "{report}");
    assert!(
        sigterm_sent && made < total,
        "SIGTERM did not end the run early: {report}"
    );
    // Every processed frame's event written once or counted as not written.
    assert_eq!(
        events.written() + events.not_written(),
        processed,
        "{report}"
    );
    assert_eq!(d.lines, events.written(), "{report}");
    assert_eq!(seen, events.written(), "{report}");
    assert_eq!(d.duplicates, 0, "{report}");
    assert_eq!(d.bad_cuts, 0, "{report}");
    assert!(d.partial.is_empty(), "a torn line at the end: {report}");
    assert!(
        disk_fills > 0 && events.not_written() > 0,
        "no disk-full episode: {report}"
    );
    // Latency bounded, memory flat.
    assert!(pct(0.99) < p99_bound_ms, "{report}");
    let after_warmup: Vec<u64> = curve
        .iter()
        .filter(|(f, _)| *f >= warmup)
        .map(|(_, r)| *r)
        .collect();
    assert!(after_warmup.len() >= 2, "soak too short: {report}");
    let growth = after_warmup.iter().max().unwrap() - after_warmup[0];
    assert!(
        growth < 1024 * 1024,
        "RSS grew by {growth} bytes after warm-up:\n{csv}\n{report}"
    );
}
