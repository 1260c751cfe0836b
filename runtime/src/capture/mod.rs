//! Opening a source: [`open_source`] parses a URI (`v4l:///dev/video0?...`, `dir://PATH`, `synthetic://?...`,
//! and with GStreamer `file://…`, `rtsp://…`, `gst://…`) and opens the backend it names. Capture is the first
//! stage of the pipeline: it produces RGB frames and counts what it lost.

pub mod convert;
pub mod dir;
#[cfg(any(test, feature = "fault-injection"))]
pub mod fault;
#[cfg(feature = "gstreamer")]
pub mod gst;
pub mod gst_uri;
pub mod memory;
mod percent;
pub mod raw;
pub mod reconnect;
pub mod source;
pub mod source_error;
pub mod synthetic;
#[cfg(feature = "turbojpeg")]
pub mod turbo;
pub mod uri;
pub mod uri_error;
#[cfg(feature = "camera")]
pub mod v4l;

#[cfg(feature = "camera")]
pub use self::v4l::V4lSource;
pub use dir::{DirOptions, DirSource};
#[cfg(any(test, feature = "fault-injection"))]
pub use fault::{Fault, FaultSchedule, FaultSource};
pub use source::{Capture, FrameSource, QueuePolicy, SourceStats};
pub use source_error::SourceError;
pub use uri::{parse_source_uri, PixelFormat, SourceSpec, V4lOptions};
pub use uri_error::UriError;

use synthetic::SyntheticSource;

/// Opens the source a URI names. `v4l://` needs the cargo feature `camera`; `file://`, `rtsp://` and
/// `gst://` need the cargo feature `gstreamer`.
pub fn open_source(uri: &str) -> Result<Box<dyn FrameSource>, SourceError> {
    match parse_source_uri(uri)? {
        SourceSpec::Dir(options) => Ok(Box::new(DirSource::open(uri, options)?)),
        SourceSpec::Synthetic(options) => Ok(Box::new(SyntheticSource::open(uri, options)?)),
        #[cfg(feature = "camera")]
        SourceSpec::V4l(options) => Ok(Box::new(v4l::V4lSource::open(uri, options)?)),
        #[cfg(not(feature = "camera"))]
        SourceSpec::V4l(_) => Err(SourceError::BadUri {
            uri: uri.to_string(),
            reason: UriError::NotBuilt {
                what: "camera support",
                how: "`--features camera` (e.g. `cargo build --release --features camera`)",
            },
        }),
        #[cfg(feature = "gstreamer")]
        SourceSpec::Gst(spec) => Ok(Box::new(gst::GstSource::open(uri, spec)?)),
        #[cfg(not(feature = "gstreamer"))]
        SourceSpec::Gst(_) => Err(SourceError::BadUri {
            uri: uri.to_string(),
            reason: UriError::NotBuilt {
                what: "GStreamer support (video files, RTSP streams, pipelines)",
                how: "`--features gstreamer` (e.g. `cargo build --release --features gstreamer`; \
                      Debian: `apt-get install libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev \
                      gstreamer1.0-plugins-good gstreamer1.0-plugins-bad gstreamer1.0-libav`)",
            },
        }),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[cfg(not(feature = "camera"))]
    #[test]
    fn v4l_without_the_camera_feature_says_how_to_rebuild() {
        let err = open_source("v4l:///dev/video0").err().unwrap();
        assert!(err.to_string().contains("--features camera"), "{err}");
    }

    #[cfg(not(feature = "gstreamer"))]
    #[test]
    fn gstreamer_uris_without_the_feature_name_the_uri_and_the_feature() {
        for uri in [
            "file:///videos/road.mp4",
            "rtsp://cam.local/stream1",
            "gst://videotestsrc ! videoconvert ! appsink",
        ] {
            let err = open_source(uri).err().unwrap().to_string();
            assert!(
                err.contains(uri) && err.contains("--features gstreamer"),
                "{err}"
            );
        }
    }

    #[test]
    fn open_source_opens_synthetic_frames() {
        let mut source = open_source("synthetic://?width=64&height=64&frames=1").unwrap();
        assert!(matches!(source.next_frame(), Capture::Frame(_)));
        assert!(matches!(source.next_frame(), Capture::End));
    }
}
