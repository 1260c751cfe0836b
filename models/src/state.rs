//! A worker's scratch for the forward passes it runs ([`ModelState`]), split from the nets as tract splits
//! `SimpleState` (per worker, mutable) from `SimplePlan` (shared, immutable): a net holds only its weights
//! and is shared by every thread, and the caller that runs it keeps the buffers of its passes.
//!
//! The runtime's workers (a source's glance and classify stages, a batching worker) each own one and pass it
//! to [`crate::GlanceNet::glance_into_with`] and [`crate::PatchClassifier::classify_into_with`]. The
//! stateless entries (`glance_into`, `classify_into` and the tensor paths) have no caller-owned state to
//! take: they use one fallback state per thread ([`with_thread_state`]), so the many callers that are not a
//! long-lived worker (tools, benches, wrappers that forward only the stateless method) stay allocation-free
//! in steady state without a state parameter of their own.

use std::any::Any;
use std::cell::RefCell;

/// The buffers of one worker's forward passes: one slot per kind of net it runs (the Q8_0 patch net's, the
/// Q8_0 glance net's), created on first use and grown to the largest input; nothing is allocated once they
/// have grown. Nets of the same kind share their slot (one pass at a time per state), so a worker keeps one
/// `ModelState` for all the nets it runs. A net without scratch (float or GPU weights) leaves it empty.
#[derive(Default)]
pub struct ModelState {
    slots: Vec<Box<dyn Any + Send>>,
}

impl ModelState {
    /// An empty state; its slots are made by the first pass of each kind of net.
    pub fn new() -> Self {
        Self::default()
    }

    /// The slot of scratch type `T`, made on first use.
    pub(crate) fn slot<T: Default + Send + 'static>(&mut self) -> &mut T {
        let at = match self.slots.iter().position(|s| s.is::<T>()) {
            Some(at) => at,
            None => {
                self.slots.push(Box::new(T::default()));
                self.slots.len() - 1
            }
        };
        match self.slots[at].downcast_mut::<T>() {
            Some(slot) => slot,
            // The slot at `at` holds a `T`: found by type, or pushed just above.
            None => unreachable!("model state slot changed type"),
        }
    }
}

impl std::fmt::Debug for ModelState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelState")
            .field("slots", &self.slots.len())
            .finish()
    }
}

thread_local! {
    /// The fallback state of the stateless entries on this thread.
    static THREAD_STATE: RefCell<ModelState> = RefCell::new(ModelState::new());
}

/// `f` with this thread's fallback state (for the stateless entries); `net` names the net in the error a
/// re-entered pass gets (a pass that called back into a net on the same thread).
pub(crate) fn with_thread_state<R>(
    net: &str,
    f: impl FnOnce(&mut ModelState) -> candle_core::Result<R>,
) -> candle_core::Result<R> {
    THREAD_STATE.with(|cell| {
        let mut state = cell.try_borrow_mut().map_err(|_| {
            candle_core::Error::Msg(format!(
                "{net}: a forward pass re-entered its thread's scratch"
            ))
        })?;
        f(&mut state)
    })
}

/// `f` with the caller's state, or without one (a stateless entry) with this thread's fallback
/// ([`with_thread_state`]).
pub(crate) fn in_state<R>(
    state: Option<&mut ModelState>,
    net: &str,
    f: impl FnOnce(&mut ModelState) -> candle_core::Result<R>,
) -> candle_core::Result<R> {
    match state {
        Some(state) => f(state),
        None => with_thread_state(net, f),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct A(Vec<u8>);
    #[derive(Default)]
    struct B(u32);

    #[test]
    fn one_slot_per_type_kept_between_uses() {
        let mut state = ModelState::new();
        state.slot::<A>().0.push(7);
        state.slot::<B>().0 = 3;
        assert_eq!(state.slot::<A>().0, vec![7]);
        assert_eq!(state.slot::<B>().0, 3);
        assert_eq!(state.slots.len(), 2);
    }

    #[test]
    fn a_re_entered_thread_state_is_an_error_not_a_panic() {
        let inner = with_thread_state("outer", |_| {
            Ok(with_thread_state("int8 test net", |_| Ok(())).is_err())
        });
        assert!(inner.unwrap());
    }
}
