//! Why a source would not open ([`SourceError`]): a bad URI, or the folder, device, pipeline or scene
//! generator behind a good one, each variant naming the URI and what failed with its own typed reason.

use std::path::PathBuf;

use super::reconnect::DeviceError;
use super::uri_error::UriError;
use crate::synth::SynthError;

/// Errors opening a source.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("source URI `{uri}`: {reason}")]
    BadUri {
        uri: String,
        #[source]
        reason: UriError,
    },
    /// A folder source's folder cannot be listed (missing, not a folder, no permission).
    #[error("source `{uri}`: folder `{}` cannot be listed: {reason}", folder.display())]
    FolderUnreadable {
        uri: String,
        folder: PathBuf,
        #[source]
        reason: std::io::Error,
    },
    /// A folder source's folder holds no image file.
    #[error("source `{uri}`: folder `{}` has no .jpg, .jpeg or .png file", folder.display())]
    FolderEmpty { uri: String, folder: PathBuf },
    /// A camera would not open.
    #[error("source `{uri}`: {reason}")]
    Device {
        uri: String,
        #[source]
        reason: DeviceError,
    },
    /// A GStreamer pipeline would not start: the pipeline's own reason (a missing file, an unknown codec, an
    /// unreachable server), or that it stalled.
    #[error("source `{uri}`: {}", pipeline_reason(reason))]
    Pipeline {
        uri: String,
        #[source]
        reason: DeviceError,
    },
    /// GStreamer itself would not initialise.
    #[cfg(feature = "gstreamer")]
    #[error("source `{uri}`: GStreamer does not initialise: {reason}")]
    GstInit {
        uri: String,
        #[source]
        reason: gstreamer::glib::Error,
    },
    /// The synthetic scene generator refused the URI's settings.
    #[error("source `{uri}`: {reason}")]
    Scene {
        uri: String,
        #[source]
        reason: SynthError,
    },
}

/// A pipeline's reason as GStreamer gave it (its message already says what is gone), or the stall.
fn pipeline_reason(reason: &DeviceError) -> String {
    match reason {
        DeviceError::Gone(message) => message.clone(),
        stalled => stalled.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_uri_and_what_failed() {
        let folder = SourceError::FolderUnreadable {
            uri: "dir:/x".into(),
            folder: PathBuf::from("/x"),
            reason: std::io::Error::from(std::io::ErrorKind::NotFound),
        };
        assert_eq!(
            folder.to_string(),
            "source `dir:/x`: folder `/x` cannot be listed: entity not found"
        );
        let empty = SourceError::FolderEmpty {
            uri: "dir:/x".into(),
            folder: PathBuf::from("/x"),
        };
        assert_eq!(
            empty.to_string(),
            "source `dir:/x`: folder `/x` has no .jpg, .jpeg or .png file"
        );
        let gone = DeviceError::Gone("no such file".into());
        let camera = SourceError::Device {
            uri: "v4l2:///dev/video9".into(),
            reason: gone.clone(),
        };
        assert_eq!(
            camera.to_string(),
            "source `v4l2:///dev/video9`: device is gone: no such file"
        );
        let pipeline = SourceError::Pipeline {
            uri: "rtsp://cam/x".into(),
            reason: gone,
        };
        assert_eq!(pipeline.to_string(), "source `rtsp://cam/x`: no such file");
        let stalled = SourceError::Pipeline {
            uri: "rtsp://cam/x".into(),
            reason: DeviceError::Stalled { waited_ms: 5 },
        };
        assert_eq!(
            stalled.to_string(),
            "source `rtsp://cam/x`: device stalled: no frame within 5 ms"
        );
    }
}
