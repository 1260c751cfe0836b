//! Why a source URI is refused: [`UriError`], each variant naming the part of the URI (scheme, location, key)
//! and the value that is wrong.

use crate::frame::FrameError;

/// The schemes a source URI may have, for messages.
pub const SCHEMES: &str = "`v4l`, `dir`, `synthetic`, `file`, `rtsp`, `rtsps` or `gst`";

/// What is wrong with a source URI (the URI itself is added by [`SourceError::BadUri`](super::SourceError)).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum UriError {
    #[error("expected `SCHEME://...` with scheme {SCHEMES}")]
    NoScheme,
    #[error("unknown scheme `{scheme}`, expected {SCHEMES}")]
    UnknownScheme { scheme: String },
    /// `example` is written as it appears in the message, e.g. "`dir://frames` or `dir:///abs/frames`".
    #[error("{scheme} needs {what}, e.g. {example}")]
    MissingLocation {
        scheme: String,
        what: &'static str,
        example: String,
    },
    #[error("synthetic takes no location, found `{location}`; use `synthetic://?width=...`")]
    UnexpectedLocation { location: String },
    #[error("query part `{part}` is not `key=value`")]
    NotKeyValue { part: String },
    #[error("key `{key}` is given twice")]
    DuplicateKey { key: String },
    #[error("unknown key `{key}` (value `{value}`){expected}")]
    UnknownKey {
        key: String,
        value: String,
        /// What the scheme takes, as `, expected ...`, or empty.
        expected: &'static str,
    },
    /// `expected` is written as it appears in the message, e.g. "a positive integer" or "`true` or `false`".
    #[error("key `{key}` has value `{value}`, expected {expected}")]
    BadValue {
        key: String,
        value: String,
        expected: &'static str,
    },
    #[error("{0}")]
    FrameSize(#[from] FrameError),
    #[error("bad percent escape at byte {at} of `{text}`")]
    BadPercentEscape { at: usize, text: String },
    #[error("`{text}` decodes to invalid UTF-8")]
    InvalidUtf8 { text: String },
    #[error(
        "the pipeline `{pipeline}` has no `appsink`: end it in `... ! videoconvert ! appsink`"
    )]
    NoAppsink { pipeline: String },
    #[error("frame size {width}×{height} is too small, at least 64×64")]
    TooSmall { width: u32, height: u32 },
    #[error("fps {fps} must be a positive number")]
    BadFps { fps: f64 },
    /// The build lacks the cargo feature the scheme needs.
    #[error("this build has no {what}: rebuild with {how}")]
    NotBuilt {
        what: &'static str,
        how: &'static str,
    },
}

impl UriError {
    /// `key`'s `value` is not what the key takes.
    pub fn bad_value(key: &str, value: &str, expected: &'static str) -> Self {
        UriError::BadValue {
            key: key.to_string(),
            value: value.to_string(),
            expected,
        }
    }
}
