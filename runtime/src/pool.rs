//! The frame pool: RGB buffers sized once and recycled, so capture allocates no frame memory in steady state.
//!
//! A source takes a buffer with [`FramePool::take`] and decodes into it; the `Frame`
//! that carries it hands the buffer back when it is dropped (the sink is done with it, a `latest` queue evicted
//! it, or a stage failed on it). The pool holds at most `capacity` idle buffers — the number of places a
//! frame can sit in a pipeline (`memory_plan::frames_in_flight`) — so a buffer given back
//! to a full pool is freed, and the pool never holds more than the memory plan counts.
//!
//! The first take of a size fills the pool to its capacity at once: a pipeline's frames in flight reach
//! their bound only when stalls back up every queue together (a slow sink while the classifier stalls),
//! which may first happen hours into a run; buffers reserved then would show as memory growth long after
//! start. Reserved up front, the frame memory is what the memory plan says from the first frame on.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crossbeam_channel::{bounded, Receiver, Sender};

use crate::frame_error::{try_zeroed, FrameError};

/// Counters of a pool, shared by its clones (read with [`FramePool::counts`]).
#[derive(Debug, Default)]
struct PoolStats {
    /// Buffers allocated because no idle buffer of the right size was there.
    allocated: AtomicU64,
    /// Takes served by a recycled buffer.
    reused: AtomicU64,
    /// Buffers freed because the pool was full when they came back.
    freed: AtomicU64,
    /// Of `allocated`, the buffers reserved ahead to fill the pool on the first take of a size.
    prefilled: AtomicU64,
}

/// A bounded pool of byte buffers; clones share the same buffers and counters (one pointer each, so a
/// frame that carries one stays small).
#[derive(Clone)]
pub struct FramePool {
    inner: Arc<Inner>,
}

struct Inner {
    idle_tx: Sender<Vec<u8>>,
    idle_rx: Receiver<Vec<u8>>,
    capacity: usize,
    stats: PoolStats,
    /// The buffer length the pool was last filled for (0: not yet).
    filled_for: std::sync::atomic::AtomicUsize,
}

impl std::fmt::Debug for FramePool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FramePool")
            .field("capacity", &self.inner.capacity)
            .field("idle", &self.inner.idle_rx.len())
            .field("stats", &self.inner.stats)
            .finish()
    }
}

impl FramePool {
    /// A pool that keeps at most `capacity` idle buffers (at least one).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        let (idle_tx, idle_rx) = bounded(capacity);
        Self {
            inner: Arc::new(Inner {
                idle_tx,
                idle_rx,
                capacity,
                stats: PoolStats::default(),
                filled_for: std::sync::atomic::AtomicUsize::new(0),
            }),
        }
    }

    /// A buffer of exactly `len` bytes (contents unspecified: the caller overwrites all of it). A recycled
    /// buffer is used when its capacity fits; one too small (the source changed size) is freed instead. A new
    /// buffer is reserved fallibly: when the memory is not there this is an error, not an abort.
    pub fn take(&self, len: usize) -> Result<Vec<u8>, FrameError> {
        while let Ok(mut buf) = self.inner.idle_rx.try_recv() {
            if buf.capacity() >= len {
                self.inner.stats.reused.fetch_add(1, Ordering::Relaxed);
                // Within capacity: neither truncate nor resize allocates.
                buf.truncate(len);
                buf.resize(len, 0);
                return Ok(buf);
            }
            self.inner.stats.freed.fetch_add(1, Ordering::Relaxed);
        }
        let buf = try_zeroed(len)?;
        self.inner.stats.allocated.fetch_add(1, Ordering::Relaxed);
        if len > 0 && self.inner.filled_for.swap(len, Ordering::Relaxed) != len {
            self.fill(len);
        }
        Ok(buf)
    }

    /// Reserves idle buffers of `len` bytes until the pool holds `capacity - 1` (the caller holds the
    /// other). Stops quietly where the memory is not there: takes then reserve as they go.
    fn fill(&self, len: usize) {
        for _ in self.inner.idle_rx.len()..self.inner.capacity.saturating_sub(1) {
            let Ok(buf) = try_zeroed(len) else { return };
            if self.inner.idle_tx.try_send(buf).is_err() {
                return;
            }
            self.inner.stats.allocated.fetch_add(1, Ordering::Relaxed);
            self.inner.stats.prefilled.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// [`take`](Self::take) from `pool`, or a fresh buffer (reserved as fallibly) when a source runs without one.
    pub fn take_or_new(pool: Option<&FramePool>, len: usize) -> Result<Vec<u8>, FrameError> {
        match pool {
            Some(pool) => pool.take(len),
            None => try_zeroed(len),
        }
    }

    /// Hands a buffer back; it is freed if the pool already holds `capacity` idle buffers.
    pub fn give(&self, buf: Vec<u8>) {
        if buf.capacity() == 0 {
            return;
        }
        if self.inner.idle_tx.try_send(buf).is_err() {
            self.inner.stats.freed.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Idle buffers now in the pool.
    pub fn idle(&self) -> usize {
        self.inner.idle_rx.len()
    }

    /// Of the allocated buffers, those reserved ahead to fill the pool.
    pub fn prefilled(&self) -> u64 {
        self.inner.stats.prefilled.load(Ordering::Relaxed)
    }

    /// `(allocated, reused, freed)` so far (`allocated` counts the buffers reserved ahead).
    pub fn counts(&self) -> (u64, u64, u64) {
        (
            self.inner.stats.allocated.load(Ordering::Relaxed),
            self.inner.stats.reused.load(Ordering::Relaxed),
            self.inner.stats.freed.load(Ordering::Relaxed),
        )
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::frame::Frame;
    use proptest::prelude::*;

    #[test]
    fn a_dropped_frame_gives_its_buffer_back_and_the_next_take_reuses_it() {
        let pool = FramePool::new(2);
        let buf = pool.take(4 * 2 * 3).unwrap();
        let ptr = buf.as_ptr();
        let frame = Frame::from_rgb(0, 4, 2, buf)
            .unwrap()
            .with_pool(Some(&pool));
        // The first take filled the pool: one buffer for it, one reserved ahead.
        assert_eq!(pool.idle(), 1);
        assert_eq!(pool.prefilled(), 1);
        drop(frame);
        assert_eq!(pool.idle(), 2);
        let again = [pool.take(24).unwrap(), pool.take(24).unwrap()];
        assert!(
            again.iter().any(|b| b.as_ptr() == ptr),
            "the recycled buffer was not reused"
        );
        assert_eq!(pool.counts(), (2, 2, 0));
    }

    #[test]
    fn a_buffer_too_small_for_the_new_size_is_freed_not_reused() {
        let pool = FramePool::new(2);
        pool.give(vec![0; 10]);
        let big = pool.take(100).unwrap();
        assert_eq!(big.len(), 100);
        assert_eq!(pool.counts(), (2, 0, 1));
        // A smaller size fits a recycled bigger buffer.
        pool.give(big);
        assert_eq!(pool.take(50).unwrap().len(), 50);
        assert_eq!(pool.counts(), (2, 1, 1));
    }

    #[test]
    fn clones_of_a_frame_all_come_back_but_the_pool_never_exceeds_its_capacity() {
        let pool = FramePool::new(3);
        let frame = Frame::from_rgb(0, 2, 2, pool.take(12).unwrap())
            .unwrap()
            .with_pool(Some(&pool));
        let clones: Vec<Frame> = (0..5).map(|_| frame.clone()).collect();
        drop(frame);
        drop(clones);
        assert_eq!(pool.idle(), 3);
        // Two idle buffers were reserved ahead by the first take; of the six that came back one fitted.
        assert_eq!(pool.counts().2, 5, "five of six buffers had to be freed");
    }

    #[test]
    fn the_first_take_fills_the_pool_so_a_full_pipeline_allocates_nothing_later() {
        let pool = FramePool::new(4);
        // Every place of the pipeline holds a frame at once (the worst backlog), then all come back.
        let held: Vec<Vec<u8>> = (0..4).map(|_| pool.take(30).unwrap()).collect();
        assert_eq!(
            pool.counts(),
            (4, 3, 0),
            "the 2nd..4th takes came from the fill"
        );
        for buf in held {
            pool.give(buf);
        }
        let again: Vec<Vec<u8>> = (0..4).map(|_| pool.take(30).unwrap()).collect();
        assert_eq!(pool.counts(), (4, 7, 0));
        drop(again);
        // A new size fills again.
        let _ = pool.take(60).unwrap();
        assert_eq!(pool.prefilled(), 6);
    }

    #[test]
    fn a_buffer_that_cannot_be_reserved_is_an_error_and_is_not_counted() {
        let pool = FramePool::new(2);
        let err = pool.take(usize::MAX).unwrap_err();
        assert_eq!(err.kind(), "out_of_memory");
        assert_eq!(pool.counts(), (0, 0, 0));
        assert!(FramePool::take_or_new(None, usize::MAX).is_err());
        assert_eq!(FramePool::take_or_new(Some(&pool), 6).unwrap().len(), 6);
    }

    proptest! {
        /// Whatever the order of takes and gives, the pool holds at most `capacity` idle buffers, every take
        /// has the asked length, and allocations never exceed takes.
        #[test]
        fn pool_stays_bounded(capacity in 1usize..6, ops in proptest::collection::vec((any::<bool>(), 1usize..64), 1..80)) {
            let pool = FramePool::new(capacity);
            let mut held: Vec<Vec<u8>> = Vec::new();
            let mut takes = 0u64;
            for (take, len) in ops {
                if take || held.is_empty() {
                    let buf = pool.take(len).unwrap();
                    prop_assert_eq!(buf.len(), len);
                    takes += 1;
                    held.push(buf);
                } else if let Some(buf) = held.pop() {
                    pool.give(buf);
                }
                prop_assert!(pool.idle() <= capacity);
            }
            let (allocated, reused, _) = pool.counts();
            prop_assert_eq!(allocated - pool.prefilled() + reused, takes);
        }
    }
}
