//! Video files, RTSP streams and user pipelines through GStreamer (cargo feature `gstreamer`).
//!
//! Each source is one pipeline ending in an `appsink` that is asked for packed RGB:
//! `uridecodebin ! videoconvert ! appsink` for `file://` and `rtsp://`, the user's own for `gst://`. Each
//! sample is copied row by row (GStreamer pads rows to 4 bytes) into a buffer of the frame pool, after the
//! size the caps announce is checked against the frame cap; the buffer's PTS goes into the frame.
//!
//! A file's appsink holds the decoder back when the pipeline is behind (nothing lost) and the run ends at the
//! end of the stream. A stream's appsink keeps only the newest sample, and the stream runs under the same
//! [`Reconnecting`] machine as a V4L2 camera: an error on the bus, an end of stream or no sample within the
//! timeout is an outage, counted, and the pipeline is rebuilt with capped backoff until frames come again.
//! A file whose decoder fails or stalls counts one outage and ends the run (reopening would start it over).

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app::AppSink;
use gstreamer_video::prelude::*;
use gstreamer_video::{VideoFrameRef, VideoInfo};

use super::gst_uri::{GstSpec, RtspTransport};
use super::reconnect::{Device, DeviceError, ReconnectPolicy, Reconnecting};
use super::source::{Capture, FrameSource, QueuePolicy, SourceStats};
use super::source_error::SourceError;
use crate::frame::{check_frame_size, Frame, FrameError};
use crate::pool::FramePool;

/// Samples a file's appsink holds before it blocks the decoder.
const FILE_QUEUED_SAMPLES: u32 = 2;

struct Running {
    pipeline: gst::Pipeline,
    sink: AppSink,
}

impl Drop for Running {
    fn drop(&mut self) {
        // Stops the streaming threads and closes files and sockets; failing here leaves nothing to do.
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

/// One GStreamer pipeline as [`Reconnecting`] drives it.
pub struct GstDevice {
    spec: GstSpec,
    running: Option<Running>,
    next_index: u64,
    pool: Option<FramePool>,
}

fn gone(what: impl Into<String>) -> DeviceError {
    DeviceError::Gone(what.into())
}

/// `file://` + the absolute path, escaped as GStreamer wants it.
fn file_uri(path: &Path) -> Result<String, DeviceError> {
    let absolute = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .map_err(|e| {
                gone(format!(
                    "working folder unreadable for {}: {e}",
                    path.display()
                ))
            })?
            .join(path)
    };
    if !absolute.is_file() {
        return Err(gone(format!(
            "video file {} does not exist or is not a file",
            absolute.display()
        )));
    }
    gst::glib::filename_to_uri(&absolute, None)
        .map(|u| u.to_string())
        .map_err(|e| gone(format!("video file {}: {e}", absolute.display())))
}

/// The first `appsink` in a pipeline, searching its bins.
fn find_appsink(pipeline: &gst::Pipeline) -> Option<AppSink> {
    pipeline
        .iterate_recurse()
        .into_iter()
        .find_map(|e| e.ok().and_then(|e| e.dynamic_cast::<AppSink>().ok()))
}

/// The first error or end-of-stream waiting on the bus, as a message.
fn bus_failure(pipeline: &gst::Pipeline) -> Option<(bool, String)> {
    let bus = pipeline.bus()?;
    let msg = bus.pop_filtered(&[gst::MessageType::Error, gst::MessageType::Eos])?;
    match msg.view() {
        gst::MessageView::Error(err) => Some((
            false,
            format!(
                "{} reports: {} ({})",
                err.src()
                    .map(|s| s.path_string().to_string())
                    .unwrap_or_else(|| "pipeline".into()),
                err.error(),
                err.debug().map(|d| d.to_string()).unwrap_or_default()
            ),
        )),
        _ => Some((true, "end of stream".to_string())),
    }
}

impl GstDevice {
    pub fn new(spec: GstSpec) -> Self {
        Self {
            spec,
            running: None,
            next_index: 0,
            pool: None,
        }
    }

    fn build(&self) -> Result<Running, DeviceError> {
        let description = match &self.spec {
            GstSpec::File(_) | GstSpec::Rtsp(_) => {
                "uridecodebin name=saccade_src ! videoconvert ! appsink name=saccade_sink"
                    .to_string()
            }
            GstSpec::Pipeline(o) => o.pipeline.clone(),
        };
        let element = gst::parse::launch(&description)
            .map_err(|e| gone(format!("pipeline `{description}` does not parse: {e}")))?;
        let pipeline = match element.dynamic_cast::<gst::Pipeline>() {
            Ok(p) => p,
            Err(element) => {
                // A single element: wrap it so it has a bus and a state like any pipeline.
                let p = gst::Pipeline::new();
                p.add(&element)
                    .map_err(|e| gone(format!("pipeline `{description}`: {e}")))?;
                p
            }
        };
        let sink = find_appsink(&pipeline)
            .ok_or_else(|| gone(format!("pipeline `{description}` has no appsink")))?;
        sink.set_caps(Some(
            &gst::Caps::builder("video/x-raw")
                .field("format", "RGB")
                .build(),
        ));
        sink.set_property("sync", false);
        match &self.spec {
            GstSpec::File(o) => {
                sink.set_max_buffers(FILE_QUEUED_SAMPLES);
                sink.set_drop(false);
                let uri = file_uri(&o.path)?;
                set_uri(&pipeline, &uri)?;
            }
            GstSpec::Rtsp(o) => {
                sink.set_max_buffers(1);
                sink.set_drop(true);
                set_uri(&pipeline, &o.url)?;
                let (latency, transport) = (o.latency_ms, o.transport);
                if let Some(src) = pipeline.by_name("saccade_src") {
                    src.connect("source-setup", false, move |args| {
                        if let Some(source) = args.get(1).and_then(|v| v.get::<gst::Element>().ok())
                        {
                            if source.has_property("latency") {
                                source.set_property("latency", latency);
                            }
                            if transport != RtspTransport::Auto && source.has_property("protocols")
                            {
                                let protocols = match transport {
                                    RtspTransport::Tcp => "tcp",
                                    _ => "udp",
                                };
                                source.set_property_from_str("protocols", protocols);
                            }
                        }
                        None
                    });
                }
            }
            GstSpec::Pipeline(_) => {
                sink.set_max_buffers(1);
                sink.set_drop(true);
            }
        }
        Ok(Running { pipeline, sink })
    }

    fn frame_of(&mut self, sample: &gst::Sample) -> Result<Frame, FrameError> {
        let what = self.spec.to_string();
        let bad = |message: String| FrameError::Sample {
            what: what.clone(),
            message,
        };
        let caps = sample
            .caps()
            .ok_or_else(|| bad("sample has no caps".into()))?;
        let info = VideoInfo::from_caps(caps).map_err(|e| bad(format!("caps {caps}: {e}")))?;
        check_frame_size(
            &format!("stream {}", self.spec),
            info.width(),
            info.height(),
        )?;
        let buffer = sample
            .buffer()
            .ok_or_else(|| bad("sample has no buffer".into()))?;
        let video = VideoFrameRef::from_buffer_ref_readable(buffer, &info)
            .map_err(|e| bad(format!("buffer does not map as {caps}: {e}")))?;
        let (width, height) = (info.width() as usize, info.height() as usize);
        let row = width * 3;
        let stride =
            usize::try_from(video.plane_stride()[0]).map_err(|_| bad("negative stride".into()))?;
        let data = video
            .plane_data(0)
            .map_err(|e| bad(format!("plane 0: {e}")))?;
        if stride < row || data.len() < stride * (height - 1) + row {
            return Err(bad(format!(
                "{width}×{height} RGB buffer has {} bytes with stride {stride}",
                data.len()
            )));
        }
        let mut rgb = FramePool::take_or_new(self.pool.as_ref(), row * height)?;
        for (y, out) in rgb.chunks_exact_mut(row).enumerate() {
            out.copy_from_slice(&data[y * stride..y * stride + row]);
        }
        let mut frame = Frame::from_rgb(self.next_index, info.width(), info.height(), rgb)?
            .with_pool(self.pool.as_ref());
        frame.pts_ns = buffer.pts().map(|t| t.nseconds());
        self.next_index += 1;
        Ok(frame)
    }
}

fn set_uri(pipeline: &gst::Pipeline, uri: &str) -> Result<(), DeviceError> {
    let src = pipeline
        .by_name("saccade_src")
        .ok_or_else(|| gone("pipeline lost its uridecodebin"))?;
    src.set_property("uri", uri);
    Ok(())
}

impl Device for GstDevice {
    fn open(&mut self) -> Result<(), DeviceError> {
        self.close();
        let running = self.build()?;
        let started = running.pipeline.set_state(gst::State::Playing);
        if started.is_err() {
            let why = bus_failure(&running.pipeline)
                .map(|(_, m)| m)
                .unwrap_or_else(|| "the pipeline refused to start".into());
            return Err(gone(why));
        }
        // Wait for the first state change to finish (a file prerolls, a stream connects) so that a wrong path
        // or an unreachable server fails here, naming itself.
        let timeout = gst::ClockTime::from_mseconds(self.spec.timeout_ms());
        let (result, _, _) = running.pipeline.state(Some(timeout));
        if result.is_err() {
            let why = bus_failure(&running.pipeline)
                .map(|(_, m)| m)
                .unwrap_or_else(|| "the pipeline failed to start".into());
            return Err(gone(why));
        }
        self.running = Some(running);
        Ok(())
    }

    fn read(&mut self, timeout: Duration) -> Result<Capture, DeviceError> {
        let Some(running) = self.running.as_ref() else {
            return Err(gone(format!("{} is not open", self.spec)));
        };
        let wait =
            gst::ClockTime::from_nseconds(timeout.as_nanos().min(u128::from(u64::MAX)) as u64);
        match running.sink.try_pull_sample(wait) {
            Some(sample) => Ok(match self.frame_of(&sample) {
                Ok(frame) => Capture::Frame(frame),
                Err(e) => Capture::Bad(e),
            }),
            None => {
                let failure = bus_failure(&running.pipeline);
                if running.sink.is_eos() || failure.as_ref().is_some_and(|(eos, _)| *eos) {
                    if self.spec.is_live() {
                        return Err(gone("the stream ended (EOS)"));
                    }
                    return Ok(Capture::End);
                }
                match failure {
                    Some((_, message)) => Err(gone(message)),
                    None => Err(DeviceError::Stalled {
                        waited_ms: timeout.as_millis() as u64,
                    }),
                }
            }
        }
    }

    fn close(&mut self) {
        self.running = None;
    }

    fn use_pool(&mut self, pool: FramePool) {
        self.pool = Some(pool);
    }
}

enum Driver {
    /// Streams and pipelines: reconnect forever.
    Live(Box<Reconnecting<GstDevice>>),
    /// A file: a failure ends the run, counted as one outage.
    File {
        device: GstDevice,
        timeout: Duration,
        outages: u64,
        ended: bool,
    },
}

/// A video file, RTSP stream or pipeline as a [`FrameSource`].
pub struct GstSource {
    uri: String,
    driver: Driver,
}

/// GStreamer would not initialise (its libraries or plugin registry are missing or broken).
#[derive(Debug, thiserror::Error)]
#[error("GStreamer does not initialise: {0}")]
pub struct GstInitError(#[from] gst::glib::Error);

/// Initialises GStreamer once; an error names what is missing.
pub fn init() -> Result<(), GstInitError> {
    Ok(gst::init()?)
}

impl GstSource {
    /// Builds and starts the pipeline once (a missing file, an unknown codec or an unreachable server fails
    /// here, naming the URI and GStreamer's reason), then streams.
    pub fn open(uri: &str, spec: GstSpec) -> Result<Self, SourceError> {
        init().map_err(|GstInitError(reason)| SourceError::GstInit {
            uri: uri.to_string(),
            reason,
        })?;
        let timeout = Duration::from_millis(spec.timeout_ms());
        let live = spec.is_live();
        let mut device = GstDevice::new(spec);
        device.open().map_err(|reason| SourceError::Pipeline {
            uri: uri.to_string(),
            reason,
        })?;
        let driver = if live {
            let policy = ReconnectPolicy {
                stall_timeout: timeout,
                ..ReconnectPolicy::default()
            };
            Driver::Live(Box::new(Reconnecting::new(device, policy)))
        } else {
            Driver::File {
                device,
                timeout,
                outages: 0,
                ended: false,
            }
        };
        Ok(Self {
            uri: uri.to_string(),
            driver,
        })
    }
}

impl FrameSource for GstSource {
    fn next_frame(&mut self) -> Capture {
        match &mut self.driver {
            Driver::Live(machine) => machine.next_capture(),
            Driver::File {
                device,
                timeout,
                outages,
                ended,
            } => {
                if *ended {
                    return Capture::End;
                }
                match device.read(*timeout) {
                    Ok(Capture::End) => {
                        *ended = true;
                        device.close();
                        Capture::End
                    }
                    Ok(capture) => capture,
                    Err(e) => {
                        *outages += 1;
                        *ended = true;
                        device.close();
                        tracing::error!(source = %self.uri, error = %e, "video file failed; the run ends");
                        Capture::End
                    }
                }
            }
        }
    }

    fn uri(&self) -> &str {
        &self.uri
    }

    fn default_policy(&self) -> QueuePolicy {
        match self.driver {
            Driver::Live(_) => QueuePolicy::Latest,
            Driver::File { .. } => QueuePolicy::Lossless,
        }
    }

    fn stats(&self) -> SourceStats {
        match &self.driver {
            Driver::Live(machine) => machine.stats(),
            Driver::File { outages, .. } => SourceStats {
                kernel_dropped: 0,
                outages: *outages,
            },
        }
    }

    fn use_pool(&mut self, pool: FramePool) {
        match &mut self.driver {
            Driver::Live(machine) => machine.device_mut().use_pool(pool),
            Driver::File { device, .. } => device.use_pool(pool),
        }
    }

    fn use_stop(&mut self, stop: Arc<AtomicBool>) {
        if let Driver::Live(machine) = &mut self.driver {
            machine.set_stop(stop);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::capture::uri::{parse_source_uri, SourceSpec};

    fn open(uri: &str) -> Result<GstSource, SourceError> {
        let SourceSpec::Gst(spec) = parse_source_uri(uri).unwrap() else {
            panic!("{uri} is not a GStreamer URI")
        };
        GstSource::open(uri, spec)
    }

    #[test]
    fn a_pipeline_gives_rgb_frames_of_its_size_with_their_timestamps() {
        if gst::init().is_err() || gst::ElementFactory::find("videotestsrc").is_none() {
            eprintln!(
                "SKIPPED: GStreamer's videotestsrc is not installed (gstreamer1.0-plugins-base)"
            );
            return;
        }
        let uri = "gst://videotestsrc is-live=true ! video/x-raw,width=66,height=50,framerate=10/1 ! videoconvert ! appsink";
        let mut source = open(uri).unwrap();
        assert_eq!(source.default_policy(), QueuePolicy::Latest);
        let pool = FramePool::new(4);
        source.use_pool(pool.clone());
        let mut last_pts: Option<u64> = None;
        for i in 0..3u64 {
            let Capture::Frame(f) = source.next_frame() else {
                panic!("frame {i} missing")
            };
            // 66 × 3 = 198 bytes a row: GStreamer pads rows to 200, the frame has none of the padding.
            assert_eq!(
                (f.index, f.width, f.height, f.rgb.len()),
                (i, 66, 50, 66 * 50 * 3)
            );
            // The stream's own clock at 10 fps: PTS grows by about 100 ms a frame.
            let pts = f.pts_ns.unwrap();
            if let Some(last) = last_pts {
                assert!(
                    pts > last && pts - last < 1_000_000_000,
                    "{pts} after {last}"
                );
            }
            last_pts = Some(pts);
        }
        assert_eq!(source.stats().outages, 0);
    }

    #[test]
    fn a_missing_video_file_fails_at_open_naming_the_uri_and_the_path() {
        if gst::init().is_err() {
            eprintln!("SKIPPED: GStreamer does not initialise");
            return;
        }
        let err = open("file:///no/such/video.mp4").err().unwrap().to_string();
        assert!(
            err.contains("file:///no/such/video.mp4")
                && err.contains("/no/such/video.mp4 does not exist"),
            "{err}"
        );
    }
}
