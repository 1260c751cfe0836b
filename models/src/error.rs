//! Errors of the model crate: every message names the file, the tensor or key, what was expected and what was found.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("weight file {path} could not be read: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("weight file {path}: {message}")]
    BadFile { path: PathBuf, message: String },
    #[error("weight file {path}: tensor `{tensor}` is missing")]
    MissingTensor { path: PathBuf, tensor: String },
    #[error("weight file {path}: tensor `{tensor}` has shape {found:?}, expected {expected:?}")]
    WrongShape {
        path: PathBuf,
        tensor: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
    #[error("weight file {path}: tensor `{tensor}` has dtype {found}, expected {expected}")]
    WrongDtype {
        path: PathBuf,
        tensor: String,
        expected: String,
        found: String,
    },
    #[error("weight file {path}: config key `{key}` is {found}, expected {expected}")]
    BadConfig {
        path: PathBuf,
        key: String,
        expected: String,
        found: String,
    },
    #[error("input has shape {found:?}, expected {expected}")]
    BadInput { expected: String, found: Vec<usize> },
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// A config the architecture cannot run (the message is what `saccade` prints after the net's name).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("input_side_px is {0}, expected a multiple of 8 in 8..=1024")]
    PatchSide(usize),
    #[error(
        "channels {channels:?}, hidden {hidden}, num_classes {num_classes}: all must be positive"
    )]
    PatchWidths {
        channels: [usize; 3],
        hidden: usize,
        num_classes: usize,
    },
    #[error("input {width}×{height} px, expected 8..={max} px per side")]
    GlanceInput {
        width: usize,
        height: usize,
        max: usize,
    },
    #[error("channels {channels:?}, num_classes {num_classes}: all must be positive")]
    GlanceWidths {
        channels: [usize; 4],
        num_classes: usize,
    },
}
