//! Reconnecting to a live device: [`Reconnecting`] is the state machine a camera runs under. A device that
//! vanishes (`ENODEV`, failed open) or stalls (no frame within a timeout) is closed, an outage is counted, and
//! opening is retried with capped exponential [`Backoff`] until it comes back.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::source::{Capture, SourceStats};
use crate::pool::FramePool;

/// Why a device could not be opened or read: both end in a reconnect.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DeviceError {
    #[error("device is gone: {0}")]
    Gone(String),
    #[error("device stalled: no frame within {waited_ms} ms")]
    Stalled { waited_ms: u64 },
}

/// A camera-like thing that can be (re)opened and read; [`Reconnecting`] drives it.
pub trait Device: Send {
    /// Opens (or reopens) the device and starts streaming.
    fn open(&mut self) -> Result<(), DeviceError>;
    /// The next capture, waiting at most `timeout` for a buffer. Decode failures are `Ok(Capture::Bad(..))`:
    /// only a vanished or stalled device is an `Err`.
    fn read(&mut self, timeout: Duration) -> Result<Capture, DeviceError>;
    /// Stops streaming and releases the device; the next `open` starts afresh.
    fn close(&mut self);
    /// Frames the driver dropped before we saw them.
    fn kernel_dropped(&self) -> u64 {
        0
    }
    /// Decode into buffers taken from `pool` from now on.
    fn use_pool(&mut self, _pool: FramePool) {}
}

/// Timings of the reconnect state machine.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReconnectPolicy {
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// No frame for this long counts as a stall.
    pub stall_timeout: Duration,
}

impl Default for ReconnectPolicy {
    fn default() -> Self {
        Self {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            stall_timeout: Duration::from_secs(2),
        }
    }
}

/// Capped exponential backoff: `initial, 2·initial, 4·initial, …, max, max, …` until `reset`.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max,
            next: initial.min(max),
        }
    }

    /// The delay to wait now; the one after it is doubled, up to the cap.
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = self.next.saturating_mul(2).min(self.max);
        delay
    }

    pub fn reset(&mut self) {
        self.next = self.initial.min(self.max);
    }
}

type Sleeper = Box<dyn FnMut(Duration) + Send>;

/// Drives a [`Device`]: reads frames, and on a vanish or stall counts an outage, closes, and reopens with
/// backoff until the device answers again. `next_capture` blocks until a capture is available, or returns
/// `Capture::End` once the stop flag (if any) is raised.
pub struct Reconnecting<D: Device> {
    device: D,
    policy: ReconnectPolicy,
    backoff: Backoff,
    is_open: bool,
    /// A capture came through since the last failure: the next failure starts a new outage.
    healthy: bool,
    outages: u64,
    failed_opens: u64,
    down_since: Option<Instant>,
    stop: Option<Arc<AtomicBool>>,
    sleep: Sleeper,
}

impl<D: Device> Reconnecting<D> {
    /// Wraps a device that is already open (opening it the first time is the caller's job, so that a wrong
    /// path fails at start instead of retrying forever).
    pub fn new(device: D, policy: ReconnectPolicy) -> Self {
        Self {
            device,
            backoff: Backoff::new(policy.initial_backoff, policy.max_backoff),
            policy,
            is_open: true,
            healthy: true,
            outages: 0,
            failed_opens: 0,
            down_since: None,
            stop: None,
            sleep: Box::new(std::thread::sleep),
        }
    }

    /// Returns `Capture::End` instead of waiting for a device that is down once `stop` is raised.
    #[must_use]
    pub fn with_stop(mut self, stop: Arc<AtomicBool>) -> Self {
        self.stop = Some(stop);
        self
    }

    /// [`with_stop`](Self::with_stop) on a machine held in place.
    pub fn set_stop(&mut self, stop: Arc<AtomicBool>) {
        self.stop = Some(stop);
    }

    /// Replaces `thread::sleep` for the backoff waits (tests record the delays instead of waiting).
    #[must_use]
    pub fn with_sleeper(mut self, sleep: impl FnMut(Duration) + Send + 'static) -> Self {
        self.sleep = Box::new(sleep);
        self
    }

    pub fn device(&self) -> &D {
        &self.device
    }

    pub fn device_mut(&mut self) -> &mut D {
        &mut self.device
    }

    /// Outages so far: each vanish or stall counts once, however many reopen attempts and failed reads it
    /// took before a capture came through again.
    pub fn outages(&self) -> u64 {
        self.outages
    }

    /// Reopen attempts that failed.
    pub fn failed_opens(&self) -> u64 {
        self.failed_opens
    }

    pub fn stats(&self) -> SourceStats {
        SourceStats {
            kernel_dropped: self.device.kernel_dropped(),
            outages: self.outages,
        }
    }

    fn stopped(&self) -> bool {
        self.stop
            .as_ref()
            .is_some_and(|s| s.load(Ordering::Relaxed))
    }

    pub fn next_capture(&mut self) -> Capture {
        loop {
            if self.stopped() {
                return Capture::End;
            }
            if !self.is_open {
                match self.device.open() {
                    Ok(()) => {
                        tracing::debug!("capture device reopened");
                        self.is_open = true;
                    }
                    Err(e) => {
                        self.failed_opens += 1;
                        let delay = self.backoff.next_delay();
                        tracing::debug!(error = %e, retry_in_ms = delay.as_millis(), "capture device still down");
                        (self.sleep)(delay);
                        continue;
                    }
                }
            }
            match self.device.read(self.policy.stall_timeout) {
                Ok(capture) => {
                    if let Some(since) = self.down_since.take() {
                        tracing::info!(
                            down_ms = since.elapsed().as_millis(),
                            failed_opens = self.failed_opens,
                            "capture device is back"
                        );
                    }
                    self.healthy = true;
                    self.backoff.reset();
                    return capture;
                }
                Err(e) => {
                    self.device.close();
                    self.is_open = false;
                    if self.healthy {
                        self.outages += 1;
                        self.down_since = Some(Instant::now());
                        tracing::warn!(error = %e, outages = self.outages, "capture device lost, reconnecting");
                    } else {
                        // Reopened but still no frame (a stall that persists, a device that opens and then
                        // fails): the same outage goes on, and we back off instead of spinning.
                        let delay = self.backoff.next_delay();
                        tracing::debug!(error = %e, retry_in_ms = delay.as_millis(), "capture device still failing");
                        (self.sleep)(delay);
                    }
                    self.healthy = false;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_100_ms_to_a_5_s_cap_and_resets() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        let delays: Vec<u128> = (0..9).map(|_| backoff.next_delay().as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000]);
        backoff.reset();
        assert_eq!(backoff.next_delay(), Duration::from_millis(100));
    }
}
