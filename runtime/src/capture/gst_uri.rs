//! The source URIs GStreamer opens (cargo feature `gstreamer`), parsed without it so that every build can
//! check them and name the feature when it is missing:
//!
//! - `file:///path/video.mp4?timeout_ms=10000`: any container and codec GStreamer decodes; the run ends at
//!   the end of the stream. `file://relative/path.mp4` is taken from the working folder.
//! - `rtsp://[user:pass@]host[:port]/path?latency_ms=200&timeout_ms=5000&transport=auto|tcp|udp`: a network
//!   camera. saccade's own keys are taken out of the query; any other key is passed on to the camera.
//! - `gst://<pipeline ending in appsink>`: anything else GStreamer can produce, e.g. a Jetson CSI camera,
//!   `gst://nvarguscamerasrc ! nvvidconv ! videoconvert ! appsink`. The text after `gst://` is the pipeline
//!   as `gst-launch-1.0` takes it, verbatim (no query).

use std::fmt;
use std::path::PathBuf;

use super::uri_error::UriError;

/// No decoded frame for this long counts as a stall (a file's decoder that hangs).
pub const DEFAULT_FILE_TIMEOUT_MS: u64 = 10_000;
/// No frame for this long counts as a dropped stream: it is reconnected.
pub const DEFAULT_STREAM_TIMEOUT_MS: u64 = 5_000;
/// The RTSP jitter buffer.
pub const DEFAULT_RTSP_LATENCY_MS: u32 = 200;

/// A video file.
#[derive(Debug, Clone, PartialEq)]
pub struct FileOptions {
    pub path: PathBuf,
    pub timeout_ms: u64,
}

/// How RTSP carries the media.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RtspTransport {
    /// GStreamer's default: UDP, then TCP.
    Auto,
    Tcp,
    Udp,
}

impl RtspTransport {
    pub fn as_str(self) -> &'static str {
        match self {
            RtspTransport::Auto => "auto",
            RtspTransport::Tcp => "tcp",
            RtspTransport::Udp => "udp",
        }
    }
}

/// A network stream.
#[derive(Debug, Clone, PartialEq)]
pub struct RtspOptions {
    /// The URL handed to GStreamer: the given one without saccade's keys.
    pub url: String,
    pub latency_ms: u32,
    pub timeout_ms: u64,
    pub transport: RtspTransport,
}

/// A pipeline written by the user, ending in an `appsink`.
#[derive(Debug, Clone, PartialEq)]
pub struct PipelineOptions {
    pub pipeline: String,
    pub timeout_ms: u64,
}

/// What a GStreamer URI asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum GstSpec {
    File(FileOptions),
    Rtsp(RtspOptions),
    Pipeline(PipelineOptions),
}

impl GstSpec {
    /// Files end; streams and pipelines are live and reconnect.
    pub fn is_live(&self) -> bool {
        !matches!(self, GstSpec::File(_))
    }

    pub fn timeout_ms(&self) -> u64 {
        match self {
            GstSpec::File(o) => o.timeout_ms,
            GstSpec::Rtsp(o) => o.timeout_ms,
            GstSpec::Pipeline(o) => o.timeout_ms,
        }
    }
}

impl fmt::Display for GstSpec {
    /// The canonical URI; parsing it gives the same spec back.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GstSpec::File(o) => write!(
                f,
                "file://{}?timeout_ms={}",
                super::percent::percent_encode(&o.path.to_string_lossy()),
                o.timeout_ms
            ),
            GstSpec::Rtsp(o) => {
                let sep = if o.url.contains('?') { '&' } else { '?' };
                write!(
                    f,
                    "{}{sep}latency_ms={}&timeout_ms={}&transport={}",
                    o.url,
                    o.latency_ms,
                    o.timeout_ms,
                    o.transport.as_str()
                )
            }
            GstSpec::Pipeline(o) => write!(f, "gst://{}", o.pipeline),
        }
    }
}

/// The schemes this file parses.
pub const GST_SCHEMES: [&str; 4] = ["file", "rtsp", "rtsps", "gst"];

/// Parses a `file://`, `rtsp://`, `rtsps://` or `gst://` URI (`Ok(None)` for another scheme). Errors are
/// name the key and value; the caller adds the URI.
pub fn parse_gst_uri(uri: &str) -> Result<Option<GstSpec>, UriError> {
    let Some((scheme, rest)) = uri.split_once("://") else {
        return Ok(None);
    };
    match scheme {
        "file" => {
            let (location, query) = rest.split_once('?').unwrap_or((rest, ""));
            let path = super::percent::percent_decode(location)?;
            if path.is_empty() {
                return Err(UriError::MissingLocation {
                    scheme: scheme.to_string(),
                    what: "a path",
                    example: "`file:///videos/road.mp4`".to_string(),
                });
            }
            let mut timeout_ms = DEFAULT_FILE_TIMEOUT_MS;
            for (key, value) in split_query(query)? {
                match key {
                    "timeout_ms" => timeout_ms = positive(key, value)?,
                    _ => {
                        return Err(UriError::UnknownKey {
                            key: key.to_string(),
                            value: value.to_string(),
                            expected: ", expected `timeout_ms`",
                        })
                    }
                }
            }
            Ok(Some(GstSpec::File(FileOptions {
                path: PathBuf::from(path),
                timeout_ms,
            })))
        }
        "rtsp" | "rtsps" => {
            let (location, query) = rest.split_once('?').unwrap_or((rest, ""));
            if location.is_empty() || location.starts_with('/') {
                return Err(UriError::MissingLocation {
                    scheme: scheme.to_string(),
                    what: "a host",
                    example: format!("`{scheme}://camera.local:554/stream1`"),
                });
            }
            let mut options = RtspOptions {
                url: String::new(),
                latency_ms: DEFAULT_RTSP_LATENCY_MS,
                timeout_ms: DEFAULT_STREAM_TIMEOUT_MS,
                transport: RtspTransport::Auto,
            };
            let mut passed_on = Vec::new();
            for (key, value) in split_query(query)? {
                match key {
                    "latency_ms" => options.latency_ms = positive_or_zero(key, value)?,
                    "timeout_ms" => options.timeout_ms = positive(key, value)?,
                    "transport" => {
                        options.transport = match value {
                            "auto" => RtspTransport::Auto,
                            "tcp" => RtspTransport::Tcp,
                            "udp" => RtspTransport::Udp,
                            _ => {
                                return Err(UriError::bad_value(
                                    key,
                                    value,
                                    "`auto`, `tcp` or `udp`",
                                ))
                            }
                        }
                    }
                    _ => passed_on.push(format!("{key}={value}")),
                }
            }
            options.url = if passed_on.is_empty() {
                format!("{scheme}://{location}")
            } else {
                format!("{scheme}://{location}?{}", passed_on.join("&"))
            };
            Ok(Some(GstSpec::Rtsp(options)))
        }
        "gst" => {
            let pipeline = rest.trim();
            if !pipeline.contains("appsink") {
                return Err(UriError::NoAppsink {
                    pipeline: pipeline.to_string(),
                });
            }
            Ok(Some(GstSpec::Pipeline(PipelineOptions {
                pipeline: pipeline.to_string(),
                timeout_ms: DEFAULT_STREAM_TIMEOUT_MS,
            })))
        }
        _ => Ok(None),
    }
}

/// Raw `key=value` pairs (values are passed on as written); a key given twice is an error.
fn split_query(query: &str) -> Result<Vec<(&str, &str)>, UriError> {
    let mut pairs: Vec<(&str, &str)> = Vec::new();
    for part in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = part.split_once('=').ok_or_else(|| UriError::NotKeyValue {
            part: part.to_string(),
        })?;
        if pairs.iter().any(|(k, _)| *k == key) {
            return Err(UriError::DuplicateKey {
                key: key.to_string(),
            });
        }
        pairs.push((key, value));
    }
    Ok(pairs)
}

fn positive(key: &str, value: &str) -> Result<u64, UriError> {
    match value.parse::<u64>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(UriError::bad_value(key, value, "a positive integer")),
    }
}

fn positive_or_zero(key: &str, value: &str) -> Result<u32, UriError> {
    value
        .parse::<u32>()
        .map_err(|_| UriError::bad_value(key, value, "an integer ≥ 0"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn file_uris_give_the_path_and_timeout() {
        let spec = parse_gst_uri("file:///videos/my%20road.mp4?timeout_ms=3000")
            .unwrap()
            .unwrap();
        assert_eq!(
            spec,
            GstSpec::File(FileOptions {
                path: PathBuf::from("/videos/my road.mp4"),
                timeout_ms: 3000
            })
        );
        assert!(!spec.is_live());
        assert_eq!(parse_gst_uri(&spec.to_string()).unwrap().unwrap(), spec);
    }

    #[test]
    fn rtsp_takes_its_own_keys_and_passes_the_rest_on() {
        let spec =
            parse_gst_uri("rtsp://u:p@cam:8554/live?channel=2&timeout_ms=1500&transport=tcp")
                .unwrap()
                .unwrap();
        let GstSpec::Rtsp(o) = &spec else {
            panic!("not rtsp")
        };
        assert_eq!(o.url, "rtsp://u:p@cam:8554/live?channel=2");
        assert_eq!(o.timeout_ms, 1500);
        assert_eq!(o.transport, RtspTransport::Tcp);
        assert_eq!(o.latency_ms, DEFAULT_RTSP_LATENCY_MS);
        assert!(spec.is_live());
        assert_eq!(parse_gst_uri(&spec.to_string()).unwrap().unwrap(), spec);
    }

    #[test]
    fn gst_pipelines_are_verbatim_and_need_an_appsink() {
        let spec = parse_gst_uri("gst://videotestsrc ! videoconvert ! appsink")
            .unwrap()
            .unwrap();
        assert_eq!(
            spec,
            GstSpec::Pipeline(PipelineOptions {
                pipeline: "videotestsrc ! videoconvert ! appsink".into(),
                timeout_ms: DEFAULT_STREAM_TIMEOUT_MS
            })
        );
        let err = parse_gst_uri("gst://videotestsrc ! autovideosink")
            .unwrap_err()
            .to_string();
        assert!(err.contains("appsink"), "{err}");
    }

    #[test]
    fn bad_values_are_named() {
        let err = parse_gst_uri("file:///a.mp4?timeout_ms=0")
            .unwrap_err()
            .to_string();
        assert!(err.contains("`timeout_ms`") && err.contains("`0`"), "{err}");
        let err = parse_gst_uri("file:///a.mp4?speed=2")
            .unwrap_err()
            .to_string();
        assert!(err.contains("`speed`"), "{err}");
        let err = parse_gst_uri("rtsp://cam/x?transport=carrier")
            .unwrap_err()
            .to_string();
        assert!(err.contains("`carrier`"), "{err}");
        assert!(parse_gst_uri("rtsp:///x")
            .unwrap_err()
            .to_string()
            .contains("host"));
        assert!(parse_gst_uri("file://")
            .unwrap_err()
            .to_string()
            .contains("path"));
        assert_eq!(parse_gst_uri("dir://x").unwrap(), None);
    }
}
