//! The thread layout of a run: how many threads each stage gets for N sources on C cores, so the
//! pipelines' own threads and the math libraries' pools do not oversubscribe the cores (see docs/THREADS.md).
//!
//! Per source: capture, glance, focus and sink threads (capture and sink mostly wait on I/O and queues). With
//! more than one source, the sources' classify calls go to `classify_workers` shared threads
//! ([`crate::batching`]). One op (a convolution, a matrix product) may split over `intra_op_threads`: that
//! caps candle's rayon pools and saccade's int8 matrix product, which otherwise each assume the whole machine.

use crate::batching::BatchingConfig;

/// How many threads each part of a run gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct ThreadBudget {
    /// Cores the run may use (`available_parallelism`, or the override).
    pub cores: usize,
    pub sources: usize,
    /// Threads one op may split over: candle's rayon pools (`RAYON_NUM_THREADS`) and the int8 product.
    pub intra_op_threads: usize,
    /// Shared classify workers; 0 with one source (it classifies on its focus thread, as before).
    pub classify_workers: usize,
}

impl ThreadBudget {
    /// The layout for `sources` sources on `cores` cores (both at least 1):
    /// `intra_op_threads = max(1, cores / sources)` (each source's glance is one op at a time, so N sources
    /// already keep N cores busy and an op splits only over the cores left to its source);
    /// `classify_workers = 0` for one source, else `min(sources, cores)`: classify is about half of a frame's
    /// work and a worker computes on one core (its ops are single-threaded once N ≥ C), so fewer workers
    /// than cores make the workers the bottleneck (one worker for 4 sources on 2 cores gave 0.73× one
    /// source's fps, two gave ≥ 0.9×); each worker batches the calls queued when it is free
    /// (`ceil(sources / workers)` sources at most).
    pub fn new(sources: usize, cores: usize) -> Self {
        let (sources, cores) = (sources.max(1), cores.max(1));
        Self {
            cores,
            sources,
            intra_op_threads: (cores / sources).max(1),
            classify_workers: if sources == 1 { 0 } else { sources.min(cores) },
        }
    }

    /// [`Self::new`] on this machine's cores.
    pub fn for_this_machine(sources: usize) -> Self {
        Self::new(
            sources,
            std::thread::available_parallelism().map_or(1, |n| n.get()),
        )
    }

    /// The same layout with `workers` shared classify workers (at least 1; ignored with one source, which
    /// classifies on its focus thread).
    #[must_use]
    pub fn with_classify_workers(mut self, workers: usize) -> Self {
        if self.sources > 1 {
            self.classify_workers = workers.max(1);
        }
        self
    }

    /// The same layout with `threads` per op (at least 1).
    #[must_use]
    pub fn with_intra_op_threads(mut self, threads: usize) -> Self {
        self.intra_op_threads = threads.max(1);
        self
    }

    /// Threads the run starts itself: 4 per source plus the classify workers.
    pub fn pipeline_threads(&self) -> usize {
        4 * self.sources + self.classify_workers
    }

    /// Threads that can compute at once in the worst case: every source's glance and focus thread and every
    /// classify worker, each inside an op split `intra_op_threads` ways.
    pub fn peak_compute_threads(&self) -> usize {
        (2 * self.sources + self.classify_workers) * self.intra_op_threads
    }

    /// The batching stage of this layout (`None` with one source): one request per source per worker, so a
    /// batch holds at most `ceil(sources / workers)` calls of up to `max_patches` patches each.
    pub fn batching(&self, max_patches: usize, max_wait_ms: f64) -> Option<BatchingConfig> {
        (self.classify_workers > 0).then(|| BatchingConfig {
            max_batch_patches: self.sources.div_ceil(self.classify_workers) * max_patches.max(1),
            max_wait: std::time::Duration::from_secs_f64(max_wait_ms.max(0.0) / 1e3),
            workers: self.classify_workers,
        })
    }
}

impl std::fmt::Display for ThreadBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "threads: {} source(s) on {} core(s): capture/glance/focus/sink per source, {} classify worker(s){}, \
             {} thread(s) per op (candle pools, int8 product)",
            self.sources,
            self.cores,
            self.classify_workers,
            if self.classify_workers == 0 {
                " (classify on the focus thread)"
            } else {
                " (batching across sources)"
            },
            self.intra_op_threads
        )
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn one_source_keeps_every_core_for_its_ops_and_classifies_on_its_focus_thread() {
        let b = ThreadBudget::new(1, 2);
        assert_eq!((b.intra_op_threads, b.classify_workers), (2, 0));
        assert!(b.batching(16, 1.0).is_none());
        assert_eq!(ThreadBudget::new(1, 16).intra_op_threads, 16);
    }

    #[test]
    fn many_sources_split_the_cores_and_never_oversubscribe_the_ops() {
        // 4 sources on 2 cores: ops single-threaded, two shared classify workers batching two sources each.
        let b = ThreadBudget::new(4, 2);
        assert_eq!((b.intra_op_threads, b.classify_workers), (1, 2));
        let batching = b.batching(16, 1.5).unwrap();
        assert_eq!(batching.max_batch_patches, 32);
        assert_eq!(batching.workers, 2);
        assert_eq!(batching.max_wait, std::time::Duration::from_micros(1500));
        // 16 on 16: a worker per core.
        let b = ThreadBudget::new(16, 16);
        assert_eq!((b.intra_op_threads, b.classify_workers), (1, 16));
        assert_eq!(b.batching(8, 1.0).unwrap().max_batch_patches, 8);
        // 8 on 2: two workers of four sources each.
        assert_eq!(
            ThreadBudget::new(8, 2)
                .batching(8, 1.0)
                .unwrap()
                .max_batch_patches,
            32
        );
        // 2 on 16: 8 threads per op; the glance and focus threads of both sources plus the two workers,
        // each split 8 ways, stay within 3× the cores.
        let b = ThreadBudget::new(2, 16);
        assert_eq!((b.intra_op_threads, b.classify_workers), (8, 2));
        assert_eq!(
            ThreadBudget::new(4, 2)
                .with_classify_workers(1)
                .classify_workers,
            1
        );
        assert_eq!(
            ThreadBudget::new(1, 2)
                .with_classify_workers(3)
                .classify_workers,
            0
        );
        for sources in 1..=32 {
            for cores in 1..=32 {
                let b = ThreadBudget::new(sources, cores);
                assert!(
                    b.intra_op_threads * sources <= cores.max(sources),
                    "{sources} sources on {cores} cores: {b:?}"
                );
                assert!(b.classify_workers <= sources.max(1));
            }
        }
    }

    #[test]
    fn overrides_and_degenerate_inputs_stay_at_least_one() {
        let b = ThreadBudget::new(0, 0);
        assert_eq!((b.sources, b.cores, b.intra_op_threads), (1, 1, 1));
        assert_eq!(
            ThreadBudget::new(4, 2)
                .with_intra_op_threads(0)
                .intra_op_threads,
            1
        );
        assert_eq!(
            ThreadBudget::new(4, 2)
                .with_intra_op_threads(3)
                .intra_op_threads,
            3
        );
        assert_eq!(ThreadBudget::new(4, 2).pipeline_threads(), 18);
        assert!(ThreadBudget::new(4, 2)
            .to_string()
            .contains("2 classify worker(s)"));
    }
}
