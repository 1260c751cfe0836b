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
