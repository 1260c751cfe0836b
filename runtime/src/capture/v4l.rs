//! `v4l:///dev/video0?width=1280&height=960&fps=30&format=yuyv|mjpeg`: live V4L2 capture (cargo feature
//! `camera`). The device is opened, asked for a format and a frame rate, and what the driver accepted is
//! logged and kept ([`Negotiated`]). Frames are streamed through ≥ 4 mmap buffers; each dequeued buffer is
//! decoded straight from the mapping, reading only its `bytesused` bytes, into a fresh RGB frame, and gaps in
//! buffer sequence numbers are counted as kernel drops. A vanished or stalled device is handled by the
//! [`Reconnecting`] state machine of `capture::reconnect`: outage counted, reopen with capped backoff, resume.

use std::io;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use v4l::buffer::Type;
use v4l::io::traits::{CaptureStream, Stream as _};
use v4l::prelude::MmapStream;
use v4l::video::capture::Parameters;
use v4l::video::Capture as _;
use v4l::{Format, FourCC};

use super::raw::{RawDecoder, SequenceTracker};
use super::reconnect::{Device, DeviceError, ReconnectPolicy, Reconnecting};
use super::source::{Capture, FrameSource, QueuePolicy, SourceStats};
use super::source_error::SourceError;
use super::uri::{PixelFormat, V4lOptions};
use crate::pool::FramePool;

/// mmap buffers in flight: enough that a slow consumer of one frame does not make the driver drop the next.
pub const MMAP_BUFFERS: u32 = 4;

/// `ENODEV`: the device node is still open but the hardware is gone (unplugged).
const ENODEV: i32 = 19;

/// What the driver accepted for our request; frames are decoded at this size.
#[derive(Debug, Clone, PartialEq)]
pub struct Negotiated {
    pub width: u32,
    pub height: u32,
    pub format: PixelFormat,
    /// The FourCC the driver reports, e.g. `YUYV`.
    pub fourcc: String,
    /// Bytes per line and per image the driver will fill (the image size is an upper bound for MJPEG).
    pub stride_bytes: u32,
    pub image_bytes: u32,
    /// Frame rate the driver accepted (`None` when it does not support setting one).
    pub fps: Option<f64>,
}

struct Streaming {
    // Field order matters: the stream (and its mappings) goes before the device handle it was made from.
    stream: MmapStream<'static>,
    _device: v4l::Device,
}

/// A V4L2 device as [`Reconnecting`] drives it.
pub struct V4lDevice {
    options: V4lOptions,
    streaming: Option<Streaming>,
    negotiated: Option<Negotiated>,
    sequence: SequenceTracker,
    next_index: u64,
    /// Frames are decoded into buffers from here when the pipeline set one.
    pool: Option<FramePool>,
}

fn fourcc_of(format: PixelFormat) -> FourCC {
    match format {
        PixelFormat::Yuyv => FourCC::new(b"YUYV"),
        PixelFormat::Mjpeg => FourCC::new(b"MJPG"),
    }
}

fn gone(path: &Path, what: &str, e: &io::Error) -> DeviceError {
    DeviceError::Gone(format!("{} {what}: {e}", path.display()))
}

impl V4lDevice {
    pub fn new(options: V4lOptions) -> Self {
        Self {
            options,
            streaming: None,
            negotiated: None,
            sequence: SequenceTracker::default(),
            next_index: 0,
            pool: None,
        }
    }

    pub fn negotiated(&self) -> Option<&Negotiated> {
        self.negotiated.as_ref()
    }

    fn negotiate(&self, device: &v4l::Device) -> Result<Negotiated, DeviceError> {
        let path = &self.options.device;
        let wanted = fourcc_of(self.options.format);
        let request = Format::new(self.options.width, self.options.height, wanted);
        let accepted = device
            .set_format(&request)
            .map_err(|e| gone(path, "refused VIDIOC_S_FMT", &e))?;
        let fourcc = accepted
            .fourcc
            .str()
            .map(str::to_string)
            .unwrap_or_else(|_| format!("{:?}", accepted.fourcc.repr));
        if accepted.fourcc != wanted {
            return Err(DeviceError::Gone(format!(
                "{} does not offer {}: the driver chose {fourcc} (try the other `format=`)",
                path.display(),
                self.options.format.as_str()
            )));
        }
        let fps = match device.set_params(&Parameters::with_fps(self.options.fps)) {
            Ok(params) if params.interval.numerator > 0 => {
                Some(f64::from(params.interval.denominator) / f64::from(params.interval.numerator))
            }
            Ok(_) => None,
            Err(e) => {
                tracing::warn!(device = %path.display(), error = %e, fps = self.options.fps, "driver refused the frame rate; using its default");
                None
            }
        };
        crate::frame::check_frame_size(
            &format!("camera {} negotiated", path.display()),
            accepted.width,
            accepted.height,
        )
        .map_err(|e| DeviceError::Gone(e.to_string()))?;
        let negotiated = Negotiated {
            width: accepted.width,
            height: accepted.height,
            format: self.options.format,
            fourcc,
            stride_bytes: accepted.stride,
            image_bytes: accepted.size,
            fps,
        };
        tracing::info!(
            device = %path.display(),
            asked = %format!("{}×{} {} @ {} fps", self.options.width, self.options.height, self.options.format.as_str(), self.options.fps),
            width = negotiated.width,
            height = negotiated.height,
            fourcc = %negotiated.fourcc,
            stride_bytes = negotiated.stride_bytes,
            image_bytes = negotiated.image_bytes,
            fps = ?negotiated.fps,
            "camera format negotiated"
        );
        Ok(negotiated)
    }

    fn decoder(&self) -> Option<RawDecoder> {
        self.negotiated.as_ref().map(|n| RawDecoder {
            format: n.format,
            width: n.width,
            height: n.height,
        })
    }
}

impl Device for V4lDevice {
    fn open(&mut self) -> Result<(), DeviceError> {
        self.close();
        let path = self.options.device.clone();
        let device =
            v4l::Device::with_path(&path).map_err(|e| gone(&path, "cannot be opened", &e))?;
        let negotiated = self.negotiate(&device)?;
        if let Some(before) = &self.negotiated {
            if (before.width, before.height) != (negotiated.width, negotiated.height) {
                tracing::warn!(
                    from = %format!("{}×{}", before.width, before.height),
                    to = %format!("{}×{}", negotiated.width, negotiated.height),
                    "camera came back at another size"
                );
            }
        }
        let stream = MmapStream::with_buffers(&device, Type::VideoCapture, MMAP_BUFFERS)
            .map_err(|e| gone(&path, "cannot map capture buffers", &e))?;
        self.negotiated = Some(negotiated);
        self.sequence.restart();
        self.streaming = Some(Streaming {
            stream,
            _device: device,
        });
        Ok(())
    }

    fn read(&mut self, timeout: Duration) -> Result<Capture, DeviceError> {
        let path = self.options.device.clone();
        let decoder = self.decoder();
        let (Some(streaming), Some(decoder)) = (self.streaming.as_mut(), decoder) else {
            return Err(DeviceError::Gone(format!("{} is not open", path.display())));
        };
        // The v4l crate converts the timeout to i32 milliseconds and panics beyond that: keep it in range.
        let timeout = timeout.min(Duration::from_millis(i32::MAX as u64));
        streaming.stream.set_timeout(timeout);
        let (buffer, meta) = match streaming.stream.next() {
            Ok(next) => next,
            Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                return Err(DeviceError::Stalled {
                    waited_ms: timeout.as_millis() as u64,
                })
            }
            Err(e) => return Err(gone(&path, "stopped streaming", &e)),
        };
        self.sequence.observe(meta.sequence);
        // Only `bytesused` is frame data: the rest of the mapping is stale bytes of an older frame.
        let used = (meta.bytesused as usize).min(buffer.len());
        let rgb = match FramePool::take_or_new(
            self.pool.as_ref(),
            decoder.width as usize * decoder.height as usize * 3,
        ) {
            Ok(rgb) => rgb,
            Err(e) => return Ok(Capture::Bad(e)),
        };
        let capture = match decoder.decode_into(&buffer[..used], self.next_index, rgb) {
            Ok(frame) => {
                self.next_index += 1;
                Capture::Frame(frame.with_pool(self.pool.as_ref()))
            }
            Err(e) => Capture::Bad(e),
        };
        Ok(capture)
    }

    fn close(&mut self) {
        if let Some(mut streaming) = self.streaming.take() {
            // The v4l stream's Drop panics when VIDIOC_STREAMOFF fails with anything but ENODEV. Stop it here
            // first; if that fails otherwise, leak the mappings rather than panic in the capture thread.
            if let Err(e) = streaming.stream.stop() {
                if e.raw_os_error() != Some(ENODEV) {
                    tracing::warn!(error = %e, "VIDIOC_STREAMOFF failed; leaking the capture buffers");
                    std::mem::forget(streaming);
                }
            }
        }
    }

    fn kernel_dropped(&self) -> u64 {
        self.sequence.dropped()
    }

    fn use_pool(&mut self, pool: FramePool) {
        self.pool = Some(pool);
    }
}

impl Drop for V4lDevice {
    fn drop(&mut self) {
        self.close();
    }
}

/// A live V4L2 camera as a [`FrameSource`]: drops the oldest frame when the pipeline is behind.
pub struct V4lSource {
    uri: String,
    machine: Reconnecting<V4lDevice>,
}

impl V4lSource {
    /// Opens the device once (failing here names the path and the reason: a wrong path is not an outage),
    /// then streams under the reconnect state machine with the URI's stall timeout.
    pub fn open(uri: &str, options: V4lOptions) -> Result<Self, SourceError> {
        let policy = ReconnectPolicy {
            stall_timeout: Duration::from_millis(options.timeout_ms),
            ..ReconnectPolicy::default()
        };
        let mut device = V4lDevice::new(options);
        device.open().map_err(|reason| SourceError::Device {
            uri: uri.to_string(),
            reason,
        })?;
        Ok(Self {
            uri: uri.to_string(),
            machine: Reconnecting::new(device, policy),
        })
    }

    /// Makes a source whose device is down return `Capture::End` once `stop` is raised, so shutdown does not
    /// wait on a camera that never returns.
    #[must_use]
    pub fn with_stop(mut self, stop: Arc<AtomicBool>) -> Self {
        self.machine = self.machine.with_stop(stop);
        self
    }

    /// What the driver accepted at the last open.
    pub fn negotiated(&self) -> Option<&Negotiated> {
        self.machine.device().negotiated()
    }
}

impl FrameSource for V4lSource {
    fn next_frame(&mut self) -> Capture {
        self.machine.next_capture()
    }

    fn uri(&self) -> &str {
        &self.uri
    }

    fn default_policy(&self) -> QueuePolicy {
        QueuePolicy::Latest
    }

    fn stats(&self) -> SourceStats {
        self.machine.stats()
    }

    fn use_pool(&mut self, pool: FramePool) {
        self.machine.device_mut().use_pool(pool);
    }

    fn use_stop(&mut self, stop: Arc<AtomicBool>) {
        self.machine.set_stop(stop);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::capture::uri::{parse_source_uri, SourceSpec};

    #[test]
    fn missing_device_fails_at_open_naming_the_path() {
        let SourceSpec::V4l(options) = parse_source_uri("v4l:///dev/video-does-not-exist").unwrap()
        else {
            panic!("not a v4l spec")
        };
        let err = V4lSource::open("v4l:///dev/video-does-not-exist", options)
            .err()
            .unwrap();
        assert!(
            err.to_string().contains("/dev/video-does-not-exist"),
            "{err}"
        );
    }

    #[test]
    #[ignore = "needs a V4L2 device at /dev/video0"]
    fn reads_ten_frames_from_dev_video0() {
        let uri = std::env::var("SACCADE_V4L_URI")
            .unwrap_or_else(|_| "v4l:///dev/video0?width=640&height=480&fps=30&format=yuyv".into());
        let SourceSpec::V4l(options) = parse_source_uri(&uri).unwrap() else {
            panic!("SACCADE_V4L_URI must be a v4l:// URI")
        };
        let mut source = V4lSource::open(&uri, options).unwrap();
        let negotiated = source.negotiated().cloned().unwrap();
        eprintln!("negotiated {negotiated:?}");
        let mut frames = 0;
        let mut bad = 0;
        while frames < 10 {
            match source.next_frame() {
                Capture::Frame(f) => {
                    assert_eq!((f.width, f.height), (negotiated.width, negotiated.height));
                    assert_eq!(f.rgb.len(), f.width as usize * f.height as usize * 3);
                    frames += 1;
                }
                Capture::Bad(e) => {
                    bad += 1;
                    assert!(bad < 10, "too many bad frames, last: {e}");
                }
                Capture::End => panic!("a camera never ends"),
            }
        }
        eprintln!("stats {:?}", source.stats());
    }
}
