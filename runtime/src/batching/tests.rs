//! Specifications of patch batching.

#![allow(clippy::unwrap_used)]

use super::*;
use candle_core::{DType, Device};
use std::sync::{Barrier, Mutex};

/// Each patch's verdict is its own mean pixel in every column, so a caller can tell its rows from
/// another's; a batch's sizes are recorded; patches whose mean is negative fail the whole batch.
#[derive(Default)]
struct MeanClassifier {
    batch_sizes: Mutex<Vec<usize>>,
    delay: Duration,
    boxes: bool,
}

impl PatchClassifier for MeanClassifier {
    fn input_side_px(&self) -> usize {
        2
    }
    fn classify(&self, patches: &Tensor) -> Result<Tensor, ModelError> {
        Ok(self.classify_with_boxes(patches)?.probs)
    }
    fn classify_with_boxes(&self, patches: &Tensor) -> Result<PatchVerdicts, ModelError> {
        self.batch_sizes.lock().unwrap().push(patches.dim(0)?);
        std::thread::sleep(self.delay);
        let means = patches.flatten_from(1)?.mean(1)?; // (b,)
        if means.to_vec1::<f32>()?.iter().any(|m| *m < 0.0) {
            return Err(ModelError::Candle(candle_core::Error::Msg(
                "negative patch".into(),
            )));
        }
        let b = patches.dim(0)?;
        let probs = means.unsqueeze(1)?.broadcast_as((b, 3))?.contiguous()?;
        let boxes = self.boxes.then(|| {
            means
                .to_vec1::<f32>()
                .unwrap()
                .into_iter()
                .map(|m| [m; 4])
                .collect()
        });
        Ok(PatchVerdicts { probs, boxes })
    }
    fn mflops_per_patch(&self) -> f64 {
        1.0
    }
    fn describe(&self) -> String {
        "mean".into()
    }
}

fn patches(n: usize, value: f32) -> Tensor {
    Tensor::full(value, (n, 3, 2, 2), &Device::Cpu).unwrap()
}

fn config(max_wait_ms: u64) -> BatchingConfig {
    BatchingConfig {
        max_batch_patches: 64,
        max_wait: Duration::from_millis(max_wait_ms),
        workers: 1,
    }
}

#[test]
fn concurrent_sources_share_one_batch_and_each_gets_only_its_own_rows() {
    let inner = Arc::new(MeanClassifier {
        boxes: true,
        ..MeanClassifier::default()
    });
    // A generous wait: the four calls below start together, so they meet in one batch.
    let batcher = Arc::new(BatchingClassifier::new(inner.clone(), config(500)).unwrap());
    let handles: Vec<_> = (0..4).map(|_| batcher.source()).collect();
    let barrier = Barrier::new(4);
    std::thread::scope(|scope| {
        for (i, handle) in handles.iter().enumerate() {
            let barrier = &barrier;
            scope.spawn(move || {
                barrier.wait();
                let value = i as f32 + 1.0;
                let v = handle.classify_with_boxes(&patches(i + 1, value)).unwrap();
                assert_eq!(v.probs.dims(), &[i + 1, 3]);
                let got = v.probs.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                assert!(got.iter().all(|&p| p == value), "caller {i}: {got:?}");
                assert_eq!(v.boxes.unwrap(), vec![[value; 4]; i + 1]);
            });
        }
    });
    assert_eq!(*inner.batch_sizes.lock().unwrap(), vec![1 + 2 + 3 + 4]);
    let stats = batcher.stats();
    assert_eq!((stats.batches, stats.requests, stats.patches), (1, 4, 10));
    assert_eq!(stats.merged_batches, 1);
}

#[test]
fn a_single_source_never_waits_for_a_batch() {
    let inner = Arc::new(MeanClassifier::default());
    // A wait this long would show in the elapsed time of every call if the worker waited.
    let batcher = Arc::new(BatchingClassifier::new(inner.clone(), config(2_000)).unwrap());
    let handle = batcher.source();
    let started = Instant::now();
    for i in 0..5 {
        let probs = handle.classify(&patches(2, i as f32)).unwrap();
        assert_eq!(probs.dims(), &[2, 3]);
    }
    assert!(
        started.elapsed() < Duration::from_millis(1_000),
        "5 calls of one source took {:?}",
        started.elapsed()
    );
    assert_eq!(batcher.stats().waited_ms, 0.0);
    assert_eq!(*inner.batch_sizes.lock().unwrap(), vec![2; 5]);
}

#[test]
fn the_batch_cap_and_the_deadline_end_the_gathering() {
    let inner = Arc::new(MeanClassifier::default());
    let batcher = Arc::new(
        BatchingClassifier::new(
            inner.clone(),
            BatchingConfig {
                max_batch_patches: 4,
                ..config(300)
            },
        )
        .unwrap(),
    );
    // Two live sources, but only one calls: the worker waits out the deadline, then runs alone.
    let (a, _idle) = (batcher.source(), batcher.source());
    let started = Instant::now();
    a.classify(&patches(1, 1.0)).unwrap();
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(300), "{waited:?}");
    // A request as large as the cap runs at once.
    let started = Instant::now();
    a.classify(&patches(4, 1.0)).unwrap();
    assert!(started.elapsed() < Duration::from_millis(300));
    assert_eq!(*inner.batch_sizes.lock().unwrap(), vec![1, 4]);
}

#[test]
fn an_error_reaches_every_caller_of_its_batch_and_bad_input_only_its_own() {
    let inner = Arc::new(MeanClassifier::default());
    let batcher = Arc::new(BatchingClassifier::new(inner.clone(), config(500)).unwrap());
    let handles: Vec<_> = (0..2).map(|_| batcher.source()).collect();
    let barrier = Barrier::new(2);
    let errors: Vec<String> = std::thread::scope(|scope| {
        let joins: Vec<_> = handles
            .iter()
            .enumerate()
            .map(|(i, h)| {
                let barrier = &barrier;
                scope.spawn(move || {
                    barrier.wait();
                    // Source 1's patches fail the batch they share with source 0's.
                    let value = if i == 1 { -1.0 } else { 1.0 };
                    h.classify(&patches(1, value)).unwrap_err().to_string()
                })
            })
            .collect();
        joins.into_iter().map(|j| j.join().unwrap()).collect()
    });
    for e in &errors {
        assert!(
            e.contains("negative patch") && e.contains("2 patches from 2 calls"),
            "{e}"
        );
    }
    // A wrongly shaped call fails alone, before it reaches a batch.
    let bad = Tensor::zeros((1, 3, 5, 5), DType::F32, &Device::Cpu).unwrap();
    let e = handles[0].classify(&bad).unwrap_err().to_string();
    assert!(
        e.contains("[1, 3, 5, 5]") && e.contains("(b, 3, 2, 2)"),
        "{e}"
    );
    assert_eq!(batcher.stats().batches, 1);
}

#[test]
fn workers_end_when_the_classifier_and_its_handles_are_dropped() {
    let inner = Arc::new(MeanClassifier::default());
    let batcher = Arc::new(BatchingClassifier::new(inner.clone(), config(1)).unwrap());
    let handle = batcher.source();
    handle.classify(&patches(1, 1.0)).unwrap();
    let shared = batcher.shared.clone();
    assert_eq!(shared.live_workers.load(Ordering::Acquire), 1);
    drop(batcher);
    // The handle keeps the classifier (and its worker) alive.
    handle.classify(&patches(1, 1.0)).unwrap();
    drop(handle);
    // The last drop joined the worker.
    assert_eq!(shared.live_workers.load(Ordering::Acquire), 0);
    assert_eq!(shared.live_sources.load(Ordering::Acquire), 0);
    assert!(BatchingClassifier::new(
        inner,
        BatchingConfig {
            workers: 0,
            ..config(1)
        }
    )
    .unwrap_err()
    .to_string()
    .contains("workers is 0"));
}
