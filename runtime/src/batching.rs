//! Cross-source batching between focus selection and classify: one [`BatchingClassifier`] shared by every
//! source's focus thread gathers their patches into one classify batch (DeepStream's `nvstreammux`, Triton's
//! dynamic batching, for patches).
//!
//! Each `classify` call of a source's handle ([`BatchingClassifier::source`]) sends its patches through a
//! bounded channel to a classify worker thread and waits for its own rows of the result. A worker takes the
//! first request, everything already queued, and then waits for the other live sources' requests until the
//! batch holds one request per live source, reaches [`BatchingConfig::max_batch_patches`], or
//! [`BatchingConfig::max_wait`] has passed since the first request; with one live source it never waits. It
//! runs one classify over the concatenated patches and sends each caller its slice; an error goes to every
//! caller of that batch. A source keeps its own frame order, queue policy and metrics: only the classify
//! call in its focus thread goes through here. Workers end when the classifier and all its handles are
//! dropped.
//!
//! Allocations: none per call in steady state on the slice path ([`PatchClassifier::classify_into`], what
//! the focus stage calls). A request carries its caller's thread buffers (the patches, the verdict rows),
//! moved into the request and handed back with the reply, through preallocated channel slots; the worker
//! concatenates a batch into its own buffer and splits the verdicts into each request's rows. A batch of one
//! request is classified in the request's own buffers. The tensor entry points (`classify`,
//! `classify_with_boxes`) copy to and from tensors around the same path.

use std::cell::RefCell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use candle_core::Tensor;
use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender};
use saccade_models::{ModelError, ModelState, PatchClassifier, PatchRows, PatchVerdicts};

/// How a [`BatchingClassifier`] gathers batches.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct BatchingConfig {
    /// A worker stops gathering once its batch holds this many patches (a request is never split).
    pub max_batch_patches: usize,
    /// Longest a worker waits after a batch's first request for the other sources' requests.
    pub max_wait: Duration,
    /// Classify worker threads pulling from the one request queue.
    pub workers: usize,
}

impl Default for BatchingConfig {
    /// One worker, batches of up to 64 patches, 1 ms of waiting at most.
    fn default() -> Self {
        Self {
            max_batch_patches: 64,
            max_wait: Duration::from_millis(1),
            workers: 1,
        }
    }
}

/// What the workers have done so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct BatchingStats {
    /// Classify calls of the inner model.
    pub batches: u64,
    /// Calls the sources made.
    pub requests: u64,
    pub patches: u64,
    /// Batches that held requests of more than one call.
    pub merged_batches: u64,
    /// Time the workers spent waiting for more requests after a batch's first, ms.
    pub waited_ms: f64,
}

impl BatchingStats {
    /// Calls per classify of the inner model (1 when nothing was merged).
    pub fn requests_per_batch(&self) -> f64 {
        if self.batches == 0 {
            0.0
        } else {
            self.requests as f64 / self.batches as f64
        }
    }
}

/// One call's patches and the buffers its verdicts go into: the calling thread's, lent for the call.
struct Request {
    /// `rows` CHW patches, flattened.
    patches: Vec<f32>,
    rows: usize,
    out: PatchRows,
    reply: Sender<Reply>,
}

/// The answer to a request, with the request's buffers handed back.
struct Reply {
    result: Result<(), ModelError>,
    patches: Vec<f32>,
    out: PatchRows,
}

/// What the workers and the handles share.
#[derive(Default)]
struct Shared {
    /// Handles alive: the requests a full batch waits for (one per source).
    live_sources: AtomicUsize,
    /// Workers still running (a caller stops waiting for a reply when none is).
    live_workers: AtomicUsize,
    batches: AtomicU64,
    requests: AtomicU64,
    patches: AtomicU64,
    merged_batches: AtomicU64,
    waited_ns: AtomicU64,
}

/// Decrements the live worker count when a worker ends, however it ends.
struct WorkerAlive(Arc<Shared>);

impl Drop for WorkerAlive {
    fn drop(&mut self) {
        self.0.live_workers.fetch_sub(1, Ordering::AcqRel);
    }
}

thread_local! {
    /// This thread's reply slot: a caller has one request in flight at a time, so one slot per thread is
    /// enough, and it is made once per thread instead of once per call.
    static REPLY: (Sender<Reply>, Receiver<Reply>) = bounded(1);
    /// This thread's request buffers (patches, verdict rows): lent to the worker with each request and
    /// handed back with its reply, so they keep their capacity from call to call.
    static BUFFERS: RefCell<(Vec<f32>, PatchRows)> = RefCell::new(Default::default());
}

/// How often a caller waiting for its reply checks that a worker is still alive.
const REPLY_CHECK: Duration = Duration::from_millis(200);

/// A [`PatchClassifier`] that classifies the patches of several sources' calls in one batch of `inner`.
pub struct BatchingClassifier {
    inner: Arc<dyn PatchClassifier>,
    config: BatchingConfig,
    /// `None` only while dropping.
    tx: Option<Sender<Request>>,
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for BatchingClassifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchingClassifier")
            .field("config", &self.config)
            .field("stats", &self.stats())
            .finish()
    }
}

/// Why a batching classifier could not start.
#[derive(Debug, thiserror::Error)]
pub enum BatchingError {
    #[error("batching classifier: {field} is {value}, expected at least 1")]
    Zero { field: &'static str, value: usize },
    #[error("batching classifier: starting classify worker {index}: {source}")]
    Spawn {
        index: usize,
        #[source]
        source: std::io::Error,
    },
}

impl BatchingClassifier {
    /// Starts `config.workers` classify workers over `inner`.
    pub fn new(
        inner: Arc<dyn PatchClassifier>,
        config: BatchingConfig,
    ) -> Result<Self, BatchingError> {
        for (field, value) in [
            ("workers", config.workers),
            ("max_batch_patches", config.max_batch_patches),
        ] {
            if value == 0 {
                return Err(BatchingError::Zero { field, value });
            }
        }
        // Every caller has at most one request in flight, so a queue this deep rarely blocks a sender.
        let (tx, rx) = bounded::<Request>(64);
        let shared = Arc::new(Shared::default());
        let mut this = Self {
            inner: inner.clone(),
            config,
            tx: Some(tx),
            shared: shared.clone(),
            workers: Vec::with_capacity(config.workers),
        };
        for index in 0..config.workers {
            let (inner, rx, shared) = (inner.clone(), rx.clone(), shared.clone());
            shared.live_workers.fetch_add(1, Ordering::AcqRel);
            let alive = WorkerAlive(shared.clone());
            let handle = std::thread::Builder::new()
                .name(format!("saccade-classify-{index}"))
                .spawn(move || {
                    let _alive = alive;
                    worker(inner.as_ref(), &rx, &shared, config);
                })
                .map_err(|source| BatchingError::Spawn { index, source })?;
            this.workers.push(handle);
        }
        Ok(this)
    }

    /// A handle for one source: a [`PatchClassifier`] whose calls join the batches. While it lives, a worker
    /// waits (up to `max_wait`) for its request before classifying a batch without it.
    pub fn source(self: &Arc<Self>) -> Arc<dyn PatchClassifier> {
        self.shared.live_sources.fetch_add(1, Ordering::AcqRel);
        Arc::new(SourceHandle {
            batcher: self.clone(),
        })
    }

    pub fn config(&self) -> BatchingConfig {
        self.config
    }

    pub fn stats(&self) -> BatchingStats {
        let s = &self.shared;
        BatchingStats {
            batches: s.batches.load(Ordering::Relaxed),
            requests: s.requests.load(Ordering::Relaxed),
            patches: s.patches.load(Ordering::Relaxed),
            merged_batches: s.merged_batches.load(Ordering::Relaxed),
            waited_ms: s.waited_ns.load(Ordering::Relaxed) as f64 / 1e6,
        }
    }

    /// The tensor entry point: checks the shape, then [`Self::submit`] on a copy of the patches.
    fn submit_tensor(&self, patches: &Tensor) -> Result<PatchVerdicts, ModelError> {
        let side = self.inner.input_side_px();
        let b = match patches.dims() {
            [b, 3, h, w] if *h == side && *w == side => *b,
            found => {
                return Err(ModelError::BadInput {
                    expected: format!("(b, 3, {side}, {side}) patches for the batching classifier"),
                    found: found.to_vec(),
                })
            }
        };
        if b == 0 {
            return self.inner.classify_with_boxes(patches);
        }
        let values = patches
            .to_dtype(candle_core::DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let mut rows = PatchRows::default();
        self.submit(&values, b, &mut rows)?;
        let per_row = rows.probs.len() / b;
        Ok(PatchVerdicts {
            probs: Tensor::from_vec(rows.probs, (b, per_row), patches.device())?,
            boxes: rows.has_boxes.then_some(rows.boxes),
        })
    }

    /// Sends `batch` patches to a worker and waits for this call's verdicts, written into `out`.
    fn submit(&self, patches: &[f32], batch: usize, out: &mut PatchRows) -> Result<(), ModelError> {
        let side = self.inner.input_side_px();
        if patches.len() != batch * 3 * side * side {
            return Err(ModelError::BadInput {
                expected: format!(
                    "({batch}, 3, {side}, {side}) = {} values for the batching classifier",
                    batch * 3 * side * side
                ),
                found: vec![patches.len()],
            });
        }
        let Some(tx) = &self.tx else {
            return Err(stopped("the batching classifier is shutting down"));
        };
        let (mut lent, rows_out) = BUFFERS.with(|cell| std::mem::take(&mut *cell.borrow_mut()));
        lent.clear();
        lent.extend_from_slice(patches);
        REPLY.with(|(reply_tx, reply_rx)| {
            let request = Request {
                patches: lent,
                rows: batch,
                out: rows_out,
                reply: reply_tx.clone(),
            };
            tx.send(request)
                .map_err(|_| stopped("every classify worker has ended"))?;
            loop {
                match reply_rx.recv_timeout(REPLY_CHECK) {
                    Ok(reply) => {
                        if reply.result.is_ok() {
                            out.clear();
                            out.has_boxes = reply.out.has_boxes;
                            out.probs.extend_from_slice(&reply.out.probs);
                            out.boxes.extend_from_slice(&reply.out.boxes);
                        }
                        BUFFERS.with(|cell| *cell.borrow_mut() = (reply.patches, reply.out));
                        return reply.result;
                    }
                    Err(RecvTimeoutError::Timeout) => {
                        if self.shared.live_workers.load(Ordering::Acquire) == 0 {
                            return Err(stopped(
                                "every classify worker ended before answering this request",
                            ));
                        }
                    }
                    Err(RecvTimeoutError::Disconnected) => {
                        return Err(stopped("the reply slot was closed"));
                    }
                }
            }
        })
    }
}

fn stopped(why: &str) -> ModelError {
    ModelError::Candle(candle_core::Error::Msg(format!(
        "batching classifier: {why}"
    )))
}

impl Drop for BatchingClassifier {
    fn drop(&mut self) {
        // Closing the queue ends each worker after its current batch.
        drop(self.tx.take());
        for handle in self.workers.drain(..) {
            if handle.join().is_err() {
                tracing::error!("a classify worker panicked");
            }
        }
    }
}

impl PatchClassifier for BatchingClassifier {
    fn input_side_px(&self) -> usize {
        self.inner.input_side_px()
    }
    fn classify(&self, patches: &Tensor) -> Result<Tensor, ModelError> {
        self.submit_tensor(patches).map(|v| v.probs)
    }
    fn classify_with_boxes(&self, patches: &Tensor) -> Result<PatchVerdicts, ModelError> {
        self.submit_tensor(patches)
    }
    fn classify_into(
        &self,
        patches_chw: &[f32],
        batch: usize,
        out: &mut PatchRows,
    ) -> Result<(), ModelError> {
        self.submit(patches_chw, batch, out)
    }
    fn mflops_per_patch(&self) -> f64 {
        self.inner.mflops_per_patch()
    }
    fn describe(&self) -> String {
        format!(
            "{} (batched across sources: {} worker(s), ≤ {} patches, ≤ {:.1} ms wait)",
            self.inner.describe(),
            self.config.workers,
            self.config.max_batch_patches,
            self.config.max_wait.as_secs_f64() * 1e3
        )
    }
}

/// One source's view of a [`BatchingClassifier`].
struct SourceHandle {
    batcher: Arc<BatchingClassifier>,
}

impl Drop for SourceHandle {
    fn drop(&mut self) {
        self.batcher
            .shared
            .live_sources
            .fetch_sub(1, Ordering::AcqRel);
    }
}

impl PatchClassifier for SourceHandle {
    fn input_side_px(&self) -> usize {
        self.batcher.input_side_px()
    }
    fn classify(&self, patches: &Tensor) -> Result<Tensor, ModelError> {
        self.batcher.classify(patches)
    }
    fn classify_with_boxes(&self, patches: &Tensor) -> Result<PatchVerdicts, ModelError> {
        self.batcher.classify_with_boxes(patches)
    }
    fn classify_into(
        &self,
        patches_chw: &[f32],
        batch: usize,
        out: &mut PatchRows,
    ) -> Result<(), ModelError> {
        self.batcher.classify_into(patches_chw, batch, out)
    }
    fn mflops_per_patch(&self) -> f64 {
        self.batcher.mflops_per_patch()
    }
    fn describe(&self) -> String {
        self.batcher.describe()
    }
}

/// Gathers and runs batches until the queue closes.
fn worker(
    inner: &dyn PatchClassifier,
    rx: &Receiver<Request>,
    shared: &Shared,
    config: BatchingConfig,
) {
    let mut batch: Vec<Request> = Vec::with_capacity(16);
    let mut buffers = (Vec::new(), PatchRows::default());
    // The scratch of this worker's forward passes.
    let mut state = ModelState::new();
    while let Ok(first) = rx.recv() {
        let mut patches = first.rows;
        batch.push(first);
        // What is queued already costs no wait.
        while patches < config.max_batch_patches {
            match rx.try_recv() {
                Ok(r) => {
                    patches += r.rows;
                    batch.push(r);
                }
                Err(_) => break,
            }
        }
        // One request per live source makes a full batch; several workers share the sources.
        let live = shared.live_sources.load(Ordering::Acquire);
        let expected = live.div_ceil(config.workers).max(1);
        if batch.len() < expected
            && patches < config.max_batch_patches
            && !config.max_wait.is_zero()
        {
            let started = Instant::now();
            let deadline = started + config.max_wait;
            while batch.len() < expected && patches < config.max_batch_patches {
                match rx.recv_deadline(deadline) {
                    Ok(r) => {
                        patches += r.rows;
                        batch.push(r);
                    }
                    Err(_) => break,
                }
            }
            shared
                .waited_ns
                .fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
        }
        shared.batches.fetch_add(1, Ordering::Relaxed);
        shared
            .requests
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        shared.patches.fetch_add(patches as u64, Ordering::Relaxed);
        if batch.len() > 1 {
            shared.merged_batches.fetch_add(1, Ordering::Relaxed);
        }
        run_batch(inner, &mut state, &mut batch, &mut buffers, patches);
    }
}

/// Answers `request` with `result` and hands its buffers back.
fn answer(request: Request, result: Result<(), ModelError>) {
    let Request {
        patches,
        out,
        reply,
        ..
    } = request;
    // A caller that gave up is gone; nothing to do.
    let _ = reply.send(Reply {
        result,
        patches,
        out,
    });
}

/// Classifies `batch` in one call of `inner` and answers each request with its rows; empties `batch`.
/// `state` (the forward passes' scratch) and `buffers` (the concatenated patches, the batch's verdicts) are
/// the worker's, kept between batches.
fn run_batch(
    inner: &dyn PatchClassifier,
    state: &mut ModelState,
    batch: &mut Vec<Request>,
    (all, verdicts): &mut (Vec<f32>, PatchRows),
    patches: usize,
) {
    if batch.len() == 1 {
        if let Some(mut request) = batch.pop() {
            let result = guarded(|| {
                inner.classify_into_with(state, &request.patches, request.rows, &mut request.out)
            });
            answer(request, result);
        }
        return;
    }
    all.clear();
    for request in batch.iter() {
        all.extend_from_slice(&request.patches);
    }
    let requests = batch.len();
    let result = guarded(|| {
        inner.classify_into_with(state, all, patches, verdicts)?;
        let boxes_expected = if verdicts.has_boxes { patches } else { 0 };
        if patches == 0
            || !verdicts.probs.len().is_multiple_of(patches)
            || verdicts.boxes.len() != boxes_expected
        {
            return Err(stopped(&format!(
                "the classifier gave {} probabilities and {} boxes for {patches} patches",
                verdicts.probs.len(),
                verdicts.boxes.len()
            )));
        }
        Ok(())
    });
    match result {
        Ok(()) => {
            let per_row = verdicts.probs.len() / patches;
            let mut start = 0;
            for mut request in batch.drain(..) {
                let n = request.rows;
                let out = &mut request.out;
                out.clear();
                out.has_boxes = verdicts.has_boxes;
                out.probs
                    .extend_from_slice(&verdicts.probs[start * per_row..(start + n) * per_row]);
                if verdicts.has_boxes {
                    out.boxes
                        .extend_from_slice(&verdicts.boxes[start..start + n]);
                }
                answer(request, Ok(()));
                start += n;
            }
        }
        Err(e) => {
            for request in batch.drain(..) {
                answer(
                    request,
                    Err(ModelError::Candle(candle_core::Error::Msg(format!(
                        "classifying a batch of {patches} patches from {requests} calls: {e}"
                    )))),
                );
            }
        }
    }
}

/// `f`, with a panic turned into an error (a worker must answer every request it took).
fn guarded(f: impl FnOnce() -> Result<(), ModelError>) -> Result<(), ModelError> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|panic| {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic".to_string());
        Err(stopped(&format!("the classifier panicked: {what}")))
    })
}

#[cfg(test)]
mod tests;
