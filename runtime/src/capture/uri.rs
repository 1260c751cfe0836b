//! Source URIs: the one string a user gives to pick a camera, a folder replay or generated frames.
//! `parse_source_uri` is pure (no file system, no device) and turns the string into a [`SourceSpec`]; opening
//! it is `capture::open_source`'s. Every key has a default, unknown keys and bad values are errors that name
//! them.
//!
//! - `v4l:///dev/video0?width=1280&height=960&fps=30&format=yuyv|mjpeg&timeout_ms=2000` (cargo feature `camera`)
//! - `dir://PATH?fps=N&loop=true` (a relative PATH after `dir://`, an absolute one after `dir:///`)
//! - `synthetic://?width=1280&height=960&seed=1&frames=N&fps=F`
//! - `file:///path/video.mp4`, `rtsp://host/path`, `gst://<pipeline ending in appsink>` (cargo feature
//!   `gstreamer`; parsed in `capture::gst_uri`)

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use super::dir::DirOptions;
use super::gst_uri::{parse_gst_uri, GstSpec};
use super::percent::{percent_decode, percent_encode};
use super::source_error::SourceError;
use super::synthetic::SyntheticOptions;
use super::uri_error::UriError;
use crate::frame::check_frame_size;

/// Pixel format asked of a V4L2 device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PixelFormat {
    /// Packed YUV 4:2:2, `Y0 U Y1 V`.
    Yuyv,
    /// Motion JPEG, one JPEG per buffer.
    Mjpeg,
}

impl PixelFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            PixelFormat::Yuyv => "yuyv",
            PixelFormat::Mjpeg => "mjpeg",
        }
    }
}

/// Options of a V4L2 camera, parsed from a `v4l://` URI.
#[derive(Debug, Clone, PartialEq)]
pub struct V4lOptions {
    pub device: PathBuf,
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    pub format: PixelFormat,
    /// No frame for this long counts as a stall: the device is reopened.
    pub timeout_ms: u64,
}

/// What a source URI asks for, before anything is opened.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceSpec {
    V4l(V4lOptions),
    Dir(DirOptions),
    Synthetic(SyntheticOptions),
    /// A video file, network stream or pipeline that GStreamer decodes.
    Gst(GstSpec),
}

impl fmt::Display for SourceSpec {
    /// The canonical URI of the spec, every key spelled out; parsing it gives the same spec back.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SourceSpec::V4l(o) => write!(
                f,
                "v4l://{}?width={}&height={}&fps={}&format={}&timeout_ms={}",
                percent_encode(&o.device.to_string_lossy()),
                o.width,
                o.height,
                o.fps,
                o.format.as_str(),
                o.timeout_ms
            ),
            SourceSpec::Dir(o) => {
                write!(f, "dir://{}", percent_encode(&o.path.to_string_lossy()))?;
                let mut sep = '?';
                if let Some(fps) = o.fps {
                    write!(f, "{sep}fps={fps}")?;
                    sep = '&';
                }
                write!(f, "{sep}loop={}", o.loop_forever)
            }
            SourceSpec::Synthetic(o) => {
                write!(
                    f,
                    "synthetic://?width={}&height={}&seed={}",
                    o.width, o.height, o.seed
                )?;
                if let Some(frames) = o.frames {
                    write!(f, "&frames={frames}")?;
                }
                if let Some(fps) = o.fps {
                    write!(f, "&fps={fps}")?;
                }
                Ok(())
            }
            SourceSpec::Gst(spec) => write!(f, "{spec}"),
        }
    }
}

pub const DEFAULT_WIDTH_PX: u32 = 1280;
pub const DEFAULT_HEIGHT_PX: u32 = 960;
pub const DEFAULT_V4L_FPS: u32 = 30;
pub const DEFAULT_STALL_TIMEOUT_MS: u64 = 2000;

/// Parses a source URI without touching the file system or devices.
pub fn parse_source_uri(uri: &str) -> Result<SourceSpec, SourceError> {
    parse(uri).map_err(|reason| SourceError::BadUri {
        uri: uri.to_string(),
        reason,
    })
}

fn parse(uri: &str) -> Result<SourceSpec, UriError> {
    let (scheme, rest) = uri.split_once("://").ok_or(UriError::NoScheme)?;
    if let Some(spec) = parse_gst_uri(uri)? {
        return Ok(SourceSpec::Gst(spec));
    }
    let (location, query) = match rest.split_once('?') {
        Some((location, query)) => (location, query),
        None => (rest, ""),
    };
    let mut query = Query::parse(query)?;
    let spec = match scheme {
        "v4l" => {
            let device = percent_decode(location)?;
            if device.is_empty() {
                return Err(UriError::MissingLocation {
                    scheme: scheme.to_string(),
                    what: "a device path",
                    example: "`v4l:///dev/video0`".to_string(),
                });
            }
            let format = match query.take("format").as_deref() {
                None | Some("yuyv") => PixelFormat::Yuyv,
                Some("mjpeg") => PixelFormat::Mjpeg,
                Some(value) => {
                    return Err(UriError::bad_value("format", value, "`yuyv` or `mjpeg`"))
                }
            };
            let width = query.positive("width", DEFAULT_WIDTH_PX)?;
            let height = query.positive("height", DEFAULT_HEIGHT_PX)?;
            check_frame_size("asked size", width, height)?;
            SourceSpec::V4l(V4lOptions {
                device: PathBuf::from(device),
                width,
                height,
                fps: query.positive("fps", DEFAULT_V4L_FPS)?,
                format,
                timeout_ms: query.positive("timeout_ms", DEFAULT_STALL_TIMEOUT_MS)?,
            })
        }
        "dir" => {
            let path = percent_decode(location)?;
            if path.is_empty() {
                return Err(UriError::MissingLocation {
                    scheme: scheme.to_string(),
                    what: "a folder",
                    example: "`dir://frames` or `dir:///abs/frames`".to_string(),
                });
            }
            SourceSpec::Dir(DirOptions {
                path: PathBuf::from(path),
                fps: query.fps()?,
                loop_forever: query.boolean("loop", false)?,
            })
        }
        "synthetic" => {
            if !location.is_empty() {
                return Err(UriError::UnexpectedLocation {
                    location: location.to_string(),
                });
            }
            SyntheticSpecDefaults::apply(&mut query)?
        }
        other => {
            return Err(UriError::UnknownScheme {
                scheme: other.to_string(),
            })
        }
    };
    query.finish()?;
    Ok(spec)
}

struct SyntheticSpecDefaults;

impl SyntheticSpecDefaults {
    fn apply(query: &mut Query<'_>) -> Result<SourceSpec, UriError> {
        let width = query.positive("width", DEFAULT_WIDTH_PX)?;
        let height = query.positive("height", DEFAULT_HEIGHT_PX)?;
        check_frame_size("asked size", width, height)?;
        Ok(SourceSpec::Synthetic(SyntheticOptions {
            width,
            height,
            seed: query.number("seed", 1)?,
            frames: match query.take("frames") {
                None => None,
                Some(value) => Some(parse_positive::<u64>("frames", &value)?),
            },
            fps: query.fps()?,
        }))
    }
}

/// Query pairs in order; each key is taken once by the parser, leftovers are unknown keys.
struct Query<'a> {
    pairs: Vec<(&'a str, String)>,
}

impl<'a> Query<'a> {
    fn parse(query: &'a str) -> Result<Self, UriError> {
        let mut pairs: Vec<(&'a str, String)> = Vec::new();
        for part in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = part.split_once('=').ok_or_else(|| UriError::NotKeyValue {
                part: part.to_string(),
            })?;
            if pairs.iter().any(|(k, _)| *k == key) {
                return Err(UriError::DuplicateKey {
                    key: key.to_string(),
                });
            }
            pairs.push((key, percent_decode(value)?));
        }
        Ok(Self { pairs })
    }

    /// Removes a key and gives its value.
    fn take(&mut self, key: &str) -> Option<String> {
        let at = self.pairs.iter().position(|(k, _)| *k == key)?;
        Some(self.pairs.remove(at).1)
    }

    fn number<T: FromStr>(&mut self, key: &str, default: T) -> Result<T, UriError> {
        match self.take(key) {
            None => Ok(default),
            Some(value) => value
                .parse()
                .map_err(|_| UriError::bad_value(key, &value, "an integer")),
        }
    }

    fn positive<T: FromStr + PartialOrd + Default>(
        &mut self,
        key: &str,
        default: T,
    ) -> Result<T, UriError> {
        match self.take(key) {
            None => Ok(default),
            Some(value) => parse_positive(key, &value),
        }
    }

    fn fps(&mut self) -> Result<Option<f64>, UriError> {
        match self.take("fps") {
            None => Ok(None),
            Some(value) => match value.parse::<f64>() {
                Ok(fps) if fps.is_finite() && fps > 0.0 => Ok(Some(fps)),
                _ => Err(UriError::bad_value(
                    "fps",
                    &value,
                    "a positive number of frames per second",
                )),
            },
        }
    }

    fn boolean(&mut self, key: &str, default: bool) -> Result<bool, UriError> {
        match self.take(key).as_deref() {
            None => Ok(default),
            Some("true") => Ok(true),
            Some("false") => Ok(false),
            Some(value) => Err(UriError::bad_value(key, value, "`true` or `false`")),
        }
    }

    fn finish(self) -> Result<(), UriError> {
        match self.pairs.first() {
            None => Ok(()),
            Some((key, value)) => Err(UriError::UnknownKey {
                key: key.to_string(),
                value: value.clone(),
                expected: "",
            }),
        }
    }
}

fn parse_positive<T: FromStr + PartialOrd + Default>(
    key: &str,
    value: &str,
) -> Result<T, UriError> {
    match value.parse::<T>() {
        Ok(n) if n > T::default() => Ok(n),
        _ => Err(UriError::bad_value(key, value, "a positive integer")),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn bad_message(uri: &str) -> String {
        match parse_source_uri(uri) {
            Err(SourceError::BadUri { reason, .. }) => reason.to_string(),
            other => panic!("`{uri}` should be a bad URI, got {other:?}"),
        }
    }

    #[test]
    fn v4l_uri_gives_device_size_fps_and_format() {
        let spec =
            parse_source_uri("v4l:///dev/video2?width=640&height=480&fps=15&format=mjpeg").unwrap();
        assert_eq!(
            spec,
            SourceSpec::V4l(V4lOptions {
                device: PathBuf::from("/dev/video2"),
                width: 640,
                height: 480,
                fps: 15,
                format: PixelFormat::Mjpeg,
                timeout_ms: DEFAULT_STALL_TIMEOUT_MS,
            })
        );
    }

    #[test]
    fn synthetic_defaults_are_1280_by_960_seed_1_endless_unpaced() {
        let spec = parse_source_uri("synthetic://").unwrap();
        assert_eq!(
            spec,
            SourceSpec::Synthetic(SyntheticOptions {
                width: 1280,
                height: 960,
                seed: 1,
                frames: None,
                fps: None
            })
        );
    }

    #[test]
    fn dir_uri_accepts_relative_and_absolute_paths() {
        let SourceSpec::Dir(rel) = parse_source_uri("dir://frames/a?fps=12.5&loop=true").unwrap()
        else {
            panic!("not a dir spec")
        };
        assert_eq!(rel.path, PathBuf::from("frames/a"));
        assert_eq!(rel.fps, Some(12.5));
        assert!(rel.loop_forever);
        let SourceSpec::Dir(abs) = parse_source_uri("dir:///data/my%20frames").unwrap() else {
            panic!("not a dir spec")
        };
        assert_eq!(abs.path, PathBuf::from("/data/my frames"));
        assert!(!abs.loop_forever);
    }

    #[test]
    fn bad_keys_and_values_are_named_in_the_error() {
        assert!(bad_message("http://x").contains("`http`"));
        assert!(bad_message("file:///v.mp4?fps=3").contains("`fps`"));
        assert!(bad_message("synthetic://?colour=red").contains("`colour`"));
        let m = bad_message("synthetic://?width=wide");
        assert!(m.contains("`width`") && m.contains("`wide`"), "{m}");
        let m = bad_message("v4l:///dev/video0?format=h264");
        assert!(m.contains("`format`") && m.contains("`h264`"), "{m}");
        let m = bad_message("dir://x?fps=-3");
        assert!(m.contains("`fps`") && m.contains("`-3`"), "{m}");
        assert!(bad_message("dir://x?loop=yes").contains("`yes`"));
        assert!(bad_message("synthetic://?frames=0").contains("`frames`"));
        assert!(bad_message("synthetic://?seed=1&seed=2").contains("twice"));
        assert!(bad_message("no scheme").contains("SCHEME"));
    }

    #[test]
    fn a_frame_size_over_the_cap_is_refused_naming_the_uri_the_size_and_the_limit() {
        for uri in [
            "synthetic://?width=100000&height=100000",
            "v4l:///dev/video0?width=100000&height=100000",
        ] {
            let m = parse_source_uri(uri).unwrap_err().to_string();
            assert!(
                m.contains(uri)
                    && m.contains("100000×100000")
                    && m.contains("10000000000 px")
                    && m.contains("limit of 67108864 px"),
                "{m}"
            );
        }
        assert!(parse_source_uri("synthetic://?width=8192&height=8192").is_ok());
        assert!(bad_message("synthetic://?width=8192&height=8193").contains("8192×8193"));
    }

    fn spec_strategy() -> impl Strategy<Value = SourceSpec> {
        let path = "[a-zA-Z0-9 _./%?&=#-]{1,24}";
        let fps = proptest::option::of(prop_oneof![
            (1u32..240).prop_map(f64::from),
            0.001f64..1000.0
        ]);
        prop_oneof![
            (
                path,
                1u32..5000,
                1u32..5000,
                1u32..240,
                any::<bool>(),
                1u64..100_000
            )
                .prop_map(|(p, width, height, fps, mjpeg, timeout_ms)| {
                    SourceSpec::V4l(V4lOptions {
                        device: PathBuf::from(p),
                        width,
                        height,
                        fps,
                        format: if mjpeg {
                            PixelFormat::Mjpeg
                        } else {
                            PixelFormat::Yuyv
                        },
                        timeout_ms,
                    })
                }),
            (path, fps.clone(), any::<bool>()).prop_map(|(p, fps, loop_forever)| {
                SourceSpec::Dir(DirOptions {
                    path: PathBuf::from(p),
                    fps,
                    loop_forever,
                })
            }),
            (
                1u32..5000,
                1u32..5000,
                any::<u64>(),
                proptest::option::of(1u64..u64::MAX),
                fps
            )
                .prop_map(|(width, height, seed, frames, fps)| {
                    SourceSpec::Synthetic(SyntheticOptions {
                        width,
                        height,
                        seed,
                        frames,
                        fps,
                    })
                }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn parser_never_panics(uri in ".{0,64}") {
            let _ = parse_source_uri(&uri);
        }

        #[test]
        fn parser_never_panics_on_near_valid_uris(
            scheme in prop_oneof![Just("v4l"), Just("dir"), Just("synthetic"), Just("x")],
            rest in "[a-z/%=&?0-9.]{0,40}",
        ) {
            let _ = parse_source_uri(&format!("{scheme}://{rest}"));
        }

        #[test]
        fn valid_uris_round_trip_their_values(spec in spec_strategy()) {
            let uri = spec.to_string();
            prop_assert_eq!(parse_source_uri(&uri).unwrap(), spec, "{}", uri);
        }
    }
}
