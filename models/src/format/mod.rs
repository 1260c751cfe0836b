//! Weight files as files, knowing no model: the metadata keys, what a tensor is for ([`TensorRole`]) and the
//! shape a config implies ([`TensorSpec`]), and the parsed contents of a safetensors or GGUF file
//! ([`WeightSet`]), checked against a list of specs before candle sees the bytes, so a bad file is an error
//! that names the file, the tensor or key, what was expected and what was found, and never a panic. Which
//! model a file holds is the registry's business (the `registry` module).

mod dtype;
mod gguf;
mod inspect;
mod safetensors;
mod set;

pub(crate) use dtype::{dtype_for, ggml_name};
pub use dtype::{ParseQuantDtypeError, QuantDtype};
pub use gguf::{quantise_for_role, write_gguf};
pub use inspect::{inspect_bytes, inspect_file, Inspection, TensorEntry};
pub use safetensors::{write_checkpoint, write_safetensors};
pub use set::WeightSet;

use crate::ModelError;
use std::fmt;
use std::path::Path;

/// Metadata key holding the model kind (`"patchnet"` / `"glancenet"`), in both file formats.
pub const KIND_KEY: &str = "saccade.kind";
/// Metadata key holding the model config as JSON.
pub const CONFIG_KEY: &str = "saccade.config";
/// GGUF metadata key: the weight dtype that was asked for.
pub const REQUESTED_DTYPE_KEY: &str = "saccade.requested_dtype";
/// GGUF metadata key: one line per tensor that could not take the requested dtype.
pub const FALLBACKS_KEY: &str = "saccade.fallbacks";

/// What a tensor is for; decides which dtypes it may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TensorRole {
    /// Convolution kernels: float (f32 or f16) with their 4-D shape, or — 3×3 kernels whose
    /// `in_channels · 9` is a multiple of 32 — Q8_0 flattened to `(out, in · 9)` in candle's `(in, kh, kw)`
    /// order (see [`conv_q8_0_shape`]).
    ConvWeight,
    /// Biases: float.
    Bias,
    /// Fully-connected weights: float or quantised.
    LinearWeight,
}

/// The 2-D shape a 4-D conv kernel `(out, in, 3, 3)` takes as a Q8_0 tensor, when it can: 3×3, and
/// `in · 9` a whole number of 32-value blocks.
pub fn conv_q8_0_shape(shape: &[usize]) -> Option<[usize; 2]> {
    match shape {
        [out, inp, 3, 3] if (inp * 9).is_multiple_of(crate::int8::BLOCK) => Some([*out, inp * 9]),
        _ => None,
    }
}

/// A tensor a model needs, with the shape its config implies.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorSpec {
    pub name: String,
    pub shape: Vec<usize>,
    pub role: TensorRole,
}

impl TensorSpec {
    pub fn new(name: String, shape: Vec<usize>, role: TensorRole) -> Self {
        Self { name, shape, role }
    }
}

/// A config key that a tensor dimension pins down: `tensor.shape[dim]` must equal `expected`.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigCheck {
    pub key: &'static str,
    pub tensor: String,
    pub dim: usize,
    pub expected: usize,
}

impl ConfigCheck {
    pub fn new(key: &'static str, tensor: impl Into<String>, dim: usize, expected: usize) -> Self {
        Self {
            key,
            tensor: tensor.into(),
            dim,
            expected,
        }
    }
}

/// Container format of a weight file, told by its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFormat {
    Safetensors,
    Gguf,
}

impl fmt::Display for FileFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Safetensors => write!(f, "safetensors"),
            Self::Gguf => write!(f, "GGUF"),
        }
    }
}

pub(crate) fn bad_file(path: &Path, message: impl Into<String>) -> ModelError {
    ModelError::BadFile {
        path: path.to_path_buf(),
        message: message.into(),
    }
}
