//! Camera faults on demand, for tests: [`FaultSource`] wraps any [`FrameSource`] and injects, on a
//! deterministic [`FaultSchedule`], every [`Fault`] a real camera produces, through the real raw decoders and
//! the reconnect state machine, so tests here and pipeline tests exercise the real recovery paths without
//! hardware. Built for this crate's tests and behind the cargo feature `fault-injection` (integration tests,
//! fuzzing); product builds do not have it.

use std::time::Duration;

use super::convert::{rgb_to_yuyv, strip_huffman_tables, yuyv_to_rgb};
use super::raw::{RawDecoder, SequenceTracker};
use super::reconnect::{Device, DeviceError, ReconnectPolicy, Reconnecting};
use super::source::{Capture, FrameSource, QueuePolicy, SourceStats};
use super::uri::PixelFormat;
use crate::frame::{Frame, FrameError};
use crate::pool::FramePool;

/// One fault a camera can produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// A truncated, bit-flipped MJPEG buffer: a bad frame.
    CorruptMjpeg,
    /// A valid MJPEG buffer without DHT segments (as UVC cameras send): must decode to a good frame.
    MjpegWithoutHuffman,
    /// A YUYV buffer one byte short: a bad frame.
    YuyvWrongLength,
    /// A buffer that claims a zero-sized frame: a bad frame.
    ZeroSize,
    /// A YUYV buffer that claims an odd width: a bad frame.
    OddSize,
    /// An MJPEG buffer at half the negotiated size: a bad frame.
    SizeChange,
    /// The device disappears: the read fails, then `failed_opens` reopen attempts fail before it returns.
    Vanish { failed_opens: u32 },
    /// No frame within the stall timeout (simulated: the read fails at once), then the reopen succeeds.
    Stall,
    /// The driver drops `frames` frames: the sequence number jumps.
    KernelDrop { frames: u32 },
}

impl Fault {
    /// Every kind of fault once, in a fixed order.
    pub const ALL: [Fault; 9] = [
        Fault::CorruptMjpeg,
        Fault::MjpegWithoutHuffman,
        Fault::YuyvWrongLength,
        Fault::ZeroSize,
        Fault::OddSize,
        Fault::SizeChange,
        Fault::Vanish { failed_opens: 3 },
        Fault::Stall,
        Fault::KernelDrop { frames: 2 },
    ];

    /// Whether the injected buffer should come out as `Capture::Bad`.
    pub fn gives_bad_frame(self) -> bool {
        matches!(
            self,
            Fault::CorruptMjpeg
                | Fault::YuyvWrongLength
                | Fault::ZeroSize
                | Fault::OddSize
                | Fault::SizeChange
        )
    }
}

/// When faults happen, by device read number (from 0).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FaultSchedule {
    at_read: Vec<(u64, Fault)>,
}

impl FaultSchedule {
    /// Faults at the given read numbers.
    pub fn at(mut at_read: Vec<(u64, Fault)>) -> Self {
        at_read.sort_by_key(|(read, _)| *read);
        Self { at_read }
    }

    /// `faults` in turn, one every `period_reads` reads (the first at read `period_reads - 1`), for `rounds`
    /// passes over the list.
    pub fn every(period_reads: u64, faults: &[Fault], rounds: usize) -> Self {
        let period = period_reads.max(1);
        let at_read = faults
            .iter()
            .cycle()
            .take(faults.len() * rounds)
            .enumerate()
            .map(|(i, f)| ((i as u64 + 1) * period - 1, *f))
            .collect();
        Self { at_read }
    }

    fn fault_at(&self, read: u64) -> Option<Fault> {
        self.at_read
            .iter()
            .find(|(r, _)| *r == read)
            .map(|(_, f)| *f)
    }
}

/// The simulated camera under [`FaultSource`]: frames come from the inner source and pass through untouched
/// (truth boxes and file names included) except on scheduled reads, where a faulty raw buffer is built from
/// the frame and decoded by the real converters.
pub struct FaultDevice<S: FrameSource> {
    inner: S,
    schedule: FaultSchedule,
    reads: u64,
    next_index: u64,
    opens_to_fail: u32,
    sequence: SequenceTracker,
    next_sequence: u32,
    injected: Vec<(u64, Fault)>,
}

impl<S: FrameSource> FaultDevice<S> {
    // The error is a `Capture` handed on as is (end or bad frame); both sides move a frame by value anyway.
    #[allow(clippy::result_large_err)]
    fn inner_frame(&mut self) -> Result<Frame, Capture> {
        match self.inner.next_frame() {
            Capture::Frame(frame) => {
                self.sequence.observe(self.next_sequence);
                self.next_sequence = self.next_sequence.wrapping_add(1);
                Ok(frame)
            }
            other => Err(other),
        }
    }

    fn renumbered(&mut self, capture: Capture) -> Capture {
        match capture {
            Capture::Frame(mut frame) => {
                frame.index = self.next_index;
                self.next_index += 1;
                Capture::Frame(frame)
            }
            other => other,
        }
    }

    /// Builds the faulty buffer for `fault` from `frame` and decodes it like a camera buffer.
    fn decode_faulty(&self, fault: Fault, mut frame: Frame) -> Capture {
        let (w, h) = (frame.width, frame.height);
        let bad = Capture::Bad;
        let jpeg_of = |rgb: &[u8], w: u32, h: u32| -> Result<Vec<u8>, FrameError> {
            let mut jpeg = Vec::new();
            image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 90)
                .encode(rgb, w, h, image::ExtendedColorType::Rgb8)
                .map_err(|e| FrameError::Jpeg {
                    bytes: 0,
                    message: format!("fault injector could not encode {w}×{h}: {e}"),
                })?;
            Ok(jpeg)
        };
        let mjpeg = RawDecoder {
            format: PixelFormat::Mjpeg,
            width: w,
            height: h,
        };
        let mut rgb_out = Vec::new();
        match fault {
            Fault::CorruptMjpeg => match jpeg_of(&frame.rgb, w, h) {
                Ok(mut jpeg) => {
                    // Flip bits in the entropy-coded data and cut the tail, as a broken USB transfer does.
                    let len = jpeg.len();
                    for i in (len / 2..len).step_by(7) {
                        jpeg[i] ^= 0x5A;
                    }
                    jpeg.truncate(len * 3 / 4);
                    match mjpeg.decode(&jpeg, 0) {
                        Ok(_) => bad(FrameError::Jpeg {
                            bytes: jpeg.len(),
                            message: "corrupted frame decoded anyway (injected fault)".to_string(),
                        }),
                        Err(e) => bad(e),
                    }
                }
                Err(e) => bad(e),
            },
            Fault::MjpegWithoutHuffman => match jpeg_of(&frame.rgb, w, h) {
                Ok(jpeg) => match mjpeg.decode(&strip_huffman_tables(&jpeg), frame.index) {
                    Ok(mut decoded) => {
                        decoded.truth = std::mem::take(&mut frame.truth);
                        decoded.file = frame.file.take();
                        Capture::Frame(decoded)
                    }
                    Err(e) => bad(e),
                },
                Err(e) => bad(e),
            },
            Fault::YuyvWrongLength => {
                let mut yuyv = rgb_to_yuyv(&frame.rgb, w, h)
                    .unwrap_or_else(|_| vec![128; w as usize * h as usize * 2]);
                yuyv.pop();
                match yuyv_to_rgb(&yuyv, w, h, &mut rgb_out) {
                    Ok(()) => Capture::Frame(frame),
                    Err(e) => bad(e),
                }
            }
            Fault::ZeroSize => match yuyv_to_rgb(&[], 0, h, &mut rgb_out) {
                Ok(()) => Capture::Frame(frame),
                Err(e) => bad(e),
            },
            Fault::OddSize => {
                let odd_w = w | 1;
                let yuyv = vec![128u8; odd_w as usize * h as usize * 2];
                match yuyv_to_rgb(&yuyv, odd_w, h, &mut rgb_out) {
                    Ok(()) => Capture::Frame(frame),
                    Err(e) => bad(e),
                }
            }
            Fault::SizeChange => {
                let (half_w, half_h) = ((w / 2).max(1), (h / 2).max(1));
                let mut half = Vec::with_capacity(half_w as usize * half_h as usize * 3);
                for y in 0..half_h {
                    for x in 0..half_w {
                        half.extend_from_slice(
                            &frame.pixel((x * 2).min(w - 1), (y * 2).min(h - 1)),
                        );
                    }
                }
                match jpeg_of(&half, half_w, half_h).and_then(|j| mjpeg.decode(&j, 0)) {
                    Ok(_) => Capture::Frame(frame),
                    Err(e) => bad(e),
                }
            }
            // Device-level faults are handled in `read`.
            Fault::Vanish { .. } | Fault::Stall | Fault::KernelDrop { .. } => Capture::Frame(frame),
        }
    }
}

impl<S: FrameSource> Device for FaultDevice<S> {
    fn open(&mut self) -> Result<(), DeviceError> {
        if self.opens_to_fail > 0 {
            self.opens_to_fail -= 1;
            return Err(DeviceError::Gone(
                "injected: device node missing (ENODEV)".to_string(),
            ));
        }
        self.sequence.restart();
        self.next_sequence = 0;
        Ok(())
    }

    fn read(&mut self, timeout: Duration) -> Result<Capture, DeviceError> {
        let read = self.reads;
        self.reads += 1;
        let Some(fault) = self.schedule.fault_at(read) else {
            let capture = match self.inner_frame() {
                Ok(frame) => Capture::Frame(frame),
                Err(other) => other,
            };
            return Ok(self.renumbered(capture));
        };
        self.injected.push((read, fault));
        match fault {
            Fault::Vanish { failed_opens } => {
                self.opens_to_fail = failed_opens;
                Err(DeviceError::Gone(
                    "injected: VIDIOC_DQBUF failed with ENODEV".to_string(),
                ))
            }
            Fault::Stall => Err(DeviceError::Stalled {
                waited_ms: timeout.as_millis() as u64,
            }),
            Fault::KernelDrop { frames } => {
                // The driver recycled these buffers before we dequeued them: they never reach us.
                for _ in 0..frames {
                    match self.inner.next_frame() {
                        Capture::End => return Ok(Capture::End),
                        _ => self.next_sequence = self.next_sequence.wrapping_add(1),
                    }
                }
                let capture = match self.inner_frame() {
                    Ok(frame) => Capture::Frame(frame),
                    Err(other) => other,
                };
                Ok(self.renumbered(capture))
            }
            decode_fault => {
                let capture = match self.inner_frame() {
                    Ok(frame) => self.decode_faulty(decode_fault, frame),
                    Err(other) => other,
                };
                Ok(self.renumbered(capture))
            }
        }
    }

    fn close(&mut self) {}

    fn kernel_dropped(&self) -> u64 {
        self.sequence.dropped()
    }

    fn use_pool(&mut self, pool: FramePool) {
        self.inner.use_pool(pool);
    }
}

/// A [`FrameSource`] that injects camera faults into another source on a deterministic schedule, and
/// recovers from them through [`Reconnecting`] exactly as the V4L2 source does.
pub struct FaultSource<S: FrameSource> {
    machine: Reconnecting<FaultDevice<S>>,
    uri: String,
    policy: QueuePolicy,
}

impl<S: FrameSource> FaultSource<S> {
    /// Backoff is 1 ms doubling to 8 ms so tests stay fast; use [`FaultSource::with_policy`] for real timings.
    pub fn new(inner: S, schedule: FaultSchedule) -> Self {
        Self::with_policy(
            inner,
            schedule,
            ReconnectPolicy {
                initial_backoff: Duration::from_millis(1),
                max_backoff: Duration::from_millis(8),
                stall_timeout: Duration::from_millis(2000),
            },
        )
    }

    pub fn with_policy(inner: S, schedule: FaultSchedule, policy: ReconnectPolicy) -> Self {
        let uri = inner.uri().to_string();
        let queue_policy = inner.default_policy();
        let device = FaultDevice {
            inner,
            schedule,
            reads: 0,
            next_index: 0,
            opens_to_fail: 0,
            sequence: SequenceTracker::default(),
            next_sequence: 0,
            injected: Vec::new(),
        };
        Self {
            machine: Reconnecting::new(device, policy),
            uri,
            policy: queue_policy,
        }
    }

    /// Replaces the backoff sleep (tests record delays).
    #[must_use]
    pub fn with_sleeper(mut self, sleep: impl FnMut(Duration) + Send + 'static) -> Self {
        self.machine = self.machine.with_sleeper(sleep);
        self
    }

    /// The faults injected so far, with the read number each happened at.
    pub fn injected(&self) -> &[(u64, Fault)] {
        &self.machine.device().injected
    }

    /// Reopen attempts that failed.
    pub fn failed_opens(&self) -> u64 {
        self.machine.failed_opens()
    }
}

impl<S: FrameSource> FrameSource for FaultSource<S> {
    fn next_frame(&mut self) -> Capture {
        self.machine.next_capture()
    }

    fn uri(&self) -> &str {
        &self.uri
    }

    fn default_policy(&self) -> QueuePolicy {
        self.policy
    }

    fn stats(&self) -> SourceStats {
        self.machine.stats()
    }

    fn use_pool(&mut self, pool: FramePool) {
        self.machine.device_mut().use_pool(pool);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::sync::Mutex;

    /// Flat grey 64×48 frames carrying one truth box: the other engineers' synthetic frames may change, these
    /// do not.
    struct GreySource {
        frames: u64,
        next: u64,
    }

    impl FrameSource for GreySource {
        fn next_frame(&mut self) -> Capture {
            if self.next >= self.frames {
                return Capture::End;
            }
            self.next += 1;
            let mut frame = Frame::from_rgb(self.next - 1, 64, 48, vec![128; 64 * 48 * 3]).unwrap();
            frame.truth.push(crate::frame::TruthBox {
                bbox: crate::frame::BoxPx::new(1.0, 2.0, 30.0, 40.0),
                class_id: Some(14),
            });
            Capture::Frame(frame)
        }
        fn uri(&self) -> &str {
            "test://grey"
        }
        fn default_policy(&self) -> QueuePolicy {
            QueuePolicy::Lossless
        }
    }

    fn synthetic(frames: u64) -> GreySource {
        GreySource { frames, next: 0 }
    }

    #[derive(Default)]
    struct Tally {
        frames: Vec<Frame>,
        bad: Vec<FrameError>,
    }

    fn drain(source: &mut impl FrameSource) -> Tally {
        let mut tally = Tally::default();
        for _ in 0..10_000 {
            match source.next_frame() {
                Capture::Frame(f) => tally.frames.push(f),
                Capture::Bad(e) => tally.bad.push(e),
                Capture::End => return tally,
            }
        }
        panic!("source never ended");
    }

    #[test]
    fn each_fault_gives_its_error_and_the_stream_continues() {
        let expected_kinds = [
            (Fault::CorruptMjpeg, Some("corrupt_jpeg")),
            (Fault::MjpegWithoutHuffman, None),
            (Fault::YuyvWrongLength, Some("wrong_length")),
            (Fault::ZeroSize, Some("zero_size")),
            (Fault::OddSize, Some("odd_width")),
            (Fault::SizeChange, Some("size_changed")),
            (Fault::Vanish { failed_opens: 2 }, None),
            (Fault::Stall, None),
            (Fault::KernelDrop { frames: 3 }, None),
        ];
        for (fault, kind) in expected_kinds {
            let mut source = FaultSource::new(synthetic(6), FaultSchedule::at(vec![(2, fault)]));
            let tally = drain(&mut source);
            let consumed_by_drop = match fault {
                Fault::KernelDrop { frames } => u64::from(frames),
                _ => 0,
            };
            let bad_frames = u64::from(kind.is_some());
            assert_eq!(
                tally.frames.len() as u64,
                6 - bad_frames - consumed_by_drop,
                "{fault:?}: every other frame comes through"
            );
            assert_eq!(
                tally.bad.iter().map(|e| e.kind()).collect::<Vec<_>>(),
                kind.into_iter().collect::<Vec<_>>(),
                "{fault:?}"
            );
            assert_eq!(source.injected(), &[(2, fault)]);
            let stats = source.stats();
            let outage = matches!(fault, Fault::Vanish { .. } | Fault::Stall);
            assert_eq!(stats.outages, u64::from(outage), "{fault:?}");
            assert_eq!(stats.kernel_dropped, consumed_by_drop, "{fault:?}");
            let indices: Vec<u64> = tally.frames.iter().map(|f| f.index).collect();
            assert_eq!(indices, (0..indices.len() as u64).collect::<Vec<_>>());
        }
    }

    #[test]
    fn mjpeg_without_huffman_tables_comes_through_as_a_good_frame() {
        let mut source = FaultSource::new(
            synthetic(1),
            FaultSchedule::at(vec![(0, Fault::MjpegWithoutHuffman)]),
        );
        let Capture::Frame(frame) = source.next_frame() else {
            panic!("a DHT-less MJPEG frame must decode")
        };
        assert_eq!((frame.width, frame.height), (64, 48));
        // The synthetic frame is flat grey 128: JPEG keeps a flat field within a level or two.
        assert!(frame.rgb.iter().all(|&v| v.abs_diff(128) <= 3));
        assert_eq!(frame.truth.len(), 1, "truth boxes survive the re-encode");
    }

    #[test]
    fn vanish_retries_with_backoff_and_resumes() {
        let delays = Arc::new(Mutex::new(Vec::new()));
        let recorded = Arc::clone(&delays);
        let mut source = FaultSource::with_policy(
            synthetic(4),
            FaultSchedule::at(vec![(1, Fault::Vanish { failed_opens: 8 })]),
            ReconnectPolicy::default(),
        )
        .with_sleeper(move |d| recorded.lock().unwrap().push(d.as_millis()));
        let tally = drain(&mut source);
        assert_eq!(tally.frames.len(), 4);
        assert_eq!(source.failed_opens(), 8);
        assert_eq!(source.stats().outages, 1);
        assert_eq!(
            *delays.lock().unwrap(),
            [100, 200, 400, 800, 1600, 3200, 5000, 5000]
        );
    }

    #[test]
    fn a_schedule_of_every_fault_twice_keeps_exact_counters() {
        let schedule = FaultSchedule::every(3, &Fault::ALL, 2);
        let mut source = FaultSource::new(synthetic(200), schedule);
        let tally = drain(&mut source);
        let bad_expected = 2 * Fault::ALL.iter().filter(|f| f.gives_bad_frame()).count();
        assert_eq!(tally.bad.len(), bad_expected);
        assert_eq!(source.injected().len(), 2 * Fault::ALL.len());
        let stats = source.stats();
        assert_eq!(stats.outages, 4, "two vanishes and two stalls");
        assert_eq!(stats.kernel_dropped, 4, "two drops of two frames");
        // 200 inner frames: bad ones and dropped ones are consumed, outages consume nothing.
        assert_eq!(tally.frames.len() as u64, 200 - bad_expected as u64 - 4);
    }

    #[test]
    fn stalls_in_a_row_are_one_outage_with_backoff_between_reopens() {
        let delays = Arc::new(Mutex::new(Vec::new()));
        let recorded = Arc::clone(&delays);
        let stalls = (1..5).map(|read| (read, Fault::Stall)).collect();
        let mut source = FaultSource::with_policy(
            synthetic(3),
            FaultSchedule::at(stalls),
            ReconnectPolicy::default(),
        )
        .with_sleeper(move |d| recorded.lock().unwrap().push(d.as_millis()));
        let tally = drain(&mut source);
        assert_eq!(tally.frames.len(), 3);
        assert_eq!(source.stats().outages, 1);
        assert_eq!(*delays.lock().unwrap(), [100, 200, 400]);
    }

    #[test]
    fn stop_flag_ends_a_source_whose_device_never_returns() {
        let stop = Arc::new(AtomicBool::new(false));
        let raise = Arc::clone(&stop);
        let device = FaultDevice {
            inner: synthetic(10),
            schedule: FaultSchedule::at(vec![(
                0,
                Fault::Vanish {
                    failed_opens: u32::MAX,
                },
            )]),
            reads: 0,
            next_index: 0,
            opens_to_fail: 0,
            sequence: SequenceTracker::default(),
            next_sequence: 0,
            injected: Vec::new(),
        };
        let mut attempts = 0;
        let mut machine = Reconnecting::new(device, ReconnectPolicy::default())
            .with_stop(stop)
            .with_sleeper(move |_| {
                attempts += 1;
                if attempts == 5 {
                    raise.store(true, Ordering::Relaxed);
                }
            });
        assert!(matches!(machine.next_capture(), Capture::End));
        assert_eq!(machine.failed_opens(), 5);
    }
}
