//! Recycling a frame's results: the glance map and the focus outcome go downstream with the frame (to the sink
//! and the outputs) and come back here when the [`ProcessedFrame`](crate::pipeline::ProcessedFrame) is dropped,
//! so the next frame refills their lists within the capacity they already have. Together with the frame pool
//! ([`crate::pool`]) and the strategies' own scratch lists this makes a frame allocate nothing in steady state.
//!
//! A [`Recycler`] is a bounded shelf of spare values: [`Recycler::take`] hands out a spare (or a default value
//! when none is there: the first frames, or after a frame was dropped by a `latest` queue), and
//! [`Recycler::give`] puts one back, dropping it when the shelf is full. Clones share the shelf.

use std::sync::Arc;

use crossbeam_channel::{bounded, Receiver, Sender};
use saccade_models::GlanceMap;

use crate::focus::FocusOutcome;

/// A bounded shelf of spare `T`s; clones share it.
pub struct Recycler<T> {
    inner: Arc<(Sender<T>, Receiver<T>)>,
}

impl<T> Clone for Recycler<T> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<T> std::fmt::Debug for Recycler<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recycler")
            .field("spare", &self.inner.1.len())
            .field("capacity", &self.inner.1.capacity())
            .finish()
    }
}

impl<T: Default> Recycler<T> {
    /// A shelf holding at most `capacity` spares (at least one).
    pub fn new(capacity: usize) -> Self {
        Self {
            inner: Arc::new(bounded(capacity.max(1))),
        }
    }

    /// A spare (contents unspecified: the caller overwrites them), or a new default value when none is there.
    pub fn take(&self) -> T {
        self.inner.1.try_recv().unwrap_or_default()
    }

    /// Puts `value` back; it is dropped when the shelf is full.
    pub fn give(&self, value: T) {
        let _ = self.inner.0.try_send(value);
    }

    /// Spares on the shelf now.
    pub fn spare(&self) -> usize {
        self.inner.1.len()
    }
}

/// The shelves of a frame's results: its glance map and its focus outcome.
#[derive(Debug, Clone)]
pub struct ResultShelves {
    pub glance: Recycler<GlanceMap>,
    pub outcome: Recycler<FocusOutcome>,
}

impl ResultShelves {
    /// Shelves for `capacity` frames' results each.
    pub fn new(capacity: usize) -> Self {
        Self {
            glance: Recycler::new(capacity),
            outcome: Recycler::new(capacity),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_value_given_back_is_taken_again_with_its_capacity() {
        let shelf: Recycler<Vec<u32>> = Recycler::new(2);
        assert!(shelf.take().is_empty());
        let mut v = shelf.take();
        v.extend(0..100);
        let ptr = v.as_ptr();
        shelf.give(v);
        assert_eq!(shelf.spare(), 1);
        let again = shelf.take();
        assert_eq!(again.as_ptr(), ptr);
        assert!(again.capacity() >= 100);
    }

    #[test]
    fn a_full_shelf_drops_what_comes_back_and_clones_share_it() {
        let shelf: Recycler<Vec<u8>> = Recycler::new(2);
        let other = shelf.clone();
        for _ in 0..5 {
            other.give(vec![1]);
        }
        assert_eq!(shelf.spare(), 2);
        assert_eq!(shelf.take(), vec![1]);
        assert_eq!(other.spare(), 1);
    }
}
