//! The parsed contents of one weight file ([`WeightSet`]): tensors as stored, kind and config from the
//! metadata; checked against a model's specs, and handed out as f32 tensors, convolutions, fully-connected
//! layers or integer matrices.

use super::{
    bad_file, conv_q8_0_shape, ggml_name, ConfigCheck, FileFormat, TensorRole, TensorSpec,
};
use super::{CONFIG_KEY, KIND_KEY};
use crate::int8::Int8Matrix;
use crate::linear::QLinear;
use crate::ModelError;
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{DType, Device, Tensor};
use candle_nn::{Conv2d, Conv2dConfig};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

const GGUF_MAGIC: &[u8; 4] = b"GGUF";

/// One tensor as stored in a file.
#[derive(Debug, Clone)]
pub(super) enum Stored {
    /// From safetensors, in the file's dtype.
    Float(Tensor),
    /// From GGUF (any ggml dtype, float ones included).
    Ggml(Arc<QTensor>),
}

impl Stored {
    pub(super) fn dims(&self) -> &[usize] {
        match self {
            Self::Float(t) => t.dims(),
            Self::Ggml(q) => q.shape().dims(),
        }
    }

    pub(super) fn dtype_name(&self) -> String {
        match self {
            Self::Float(t) => format!("{:?}", t.dtype()).to_ascii_lowercase(),
            Self::Ggml(q) => ggml_name(q.dtype()),
        }
    }

    fn is_float(&self) -> bool {
        match self {
            Self::Float(t) => matches!(t.dtype(), DType::F32 | DType::F16),
            Self::Ggml(q) => matches!(q.dtype(), GgmlDType::F32 | GgmlDType::F16),
        }
    }

    fn is_linear_weight_dtype(&self) -> bool {
        match self {
            Self::Float(_) => self.is_float(),
            Self::Ggml(q) => matches!(
                q.dtype(),
                GgmlDType::F32
                    | GgmlDType::F16
                    | GgmlDType::Q8_0
                    | GgmlDType::Q4_0
                    | GgmlDType::Q4K
            ),
        }
    }

    pub(super) fn storage_bytes(&self) -> usize {
        match self {
            Self::Float(t) => t.elem_count() * t.dtype().size_in_bytes(),
            Self::Ggml(q) => q.storage_size_in_bytes(),
        }
    }

    fn to_f32(&self) -> candle_core::Result<Tensor> {
        match self {
            Self::Float(t) => t.to_dtype(DType::F32),
            Self::Ggml(q) => q.dequantize(&q.device()),
        }
    }
}

/// The parsed contents of one weight file: tensors, kind and config, not yet checked against a model.
#[derive(Debug, Clone)]
pub struct WeightSet {
    pub(super) path: PathBuf,
    pub(super) format: FileFormat,
    pub(super) file_bytes: usize,
    pub(super) kind: Option<String>,
    pub(super) config_json: Option<String>,
    pub(super) requested_dtype: Option<String>,
    pub(super) fallbacks: Vec<String>,
    pub(super) tensors: HashMap<String, Stored>,
}

impl WeightSet {
    /// Reads and parses a safetensors or GGUF file (by magic bytes) onto `device`.
    pub fn read(path: &Path, device: &Device) -> Result<Self, ModelError> {
        let bytes = std::fs::read(path).map_err(|source| ModelError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_bytes(path, &bytes, device)
    }

    /// Parses file bytes; `path` is only used in error messages.
    pub fn from_bytes(path: &Path, bytes: &[u8], device: &Device) -> Result<Self, ModelError> {
        if bytes.len() >= 4 && &bytes[..4] == GGUF_MAGIC {
            Self::from_gguf(path, bytes, device)
        } else if bytes.len() >= 9 && bytes[8] == b'{' {
            Self::from_safetensors(path, bytes, device)
        } else {
            let head: Vec<String> = bytes.iter().take(9).map(|b| format!("{b:02x}")).collect();
            Err(bad_file(
                path,
                format!(
                    "{} bytes starting with [{}]: expected the magic `GGUF` or a safetensors header \
                     (8-byte length then `{{`)",
                    bytes.len(),
                    head.join(" ")
                ),
            ))
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn format(&self) -> FileFormat {
        self.format
    }

    /// The model kind from the metadata, or a `BadConfig` error naming the missing key.
    pub fn kind(&self) -> Result<&str, ModelError> {
        self.kind_as("a model kind")
    }

    /// [`Self::kind`], with `expected` (the kinds the caller knows) in the error when it is absent.
    pub fn kind_as(&self, expected: &str) -> Result<&str, ModelError> {
        self.kind
            .as_deref()
            .ok_or_else(|| self.bad_config(KIND_KEY, expected, "absent"))
    }

    /// The config JSON from the metadata, or a `BadConfig` error naming the missing key.
    pub fn config_json(&self) -> Result<&str, ModelError> {
        self.config_json
            .as_deref()
            .ok_or_else(|| self.bad_config(CONFIG_KEY, "a config JSON", "absent"))
    }

    /// The names of the tensors the file holds, in no particular order.
    pub fn tensor_names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    /// The file's size in bytes.
    pub fn file_bytes(&self) -> usize {
        self.file_bytes
    }

    pub(crate) fn expect_kind(&self, kind: &str) -> Result<(), ModelError> {
        let found = self.kind_as(&format!("`{kind}`"))?;
        if found != kind {
            return Err(self.bad_config(KIND_KEY, &format!("`{kind}`"), &format!("`{found}`")));
        }
        Ok(())
    }

    /// Deserialises the config JSON from the metadata.
    pub fn parse_config<T: serde::de::DeserializeOwned>(&self) -> Result<T, ModelError> {
        let json = self
            .config_json
            .as_deref()
            .ok_or_else(|| self.bad_config(CONFIG_KEY, "a config JSON", "absent"))?;
        serde_json::from_str(json).map_err(|e| {
            self.bad_config(
                CONFIG_KEY,
                &format!("a {} config JSON", self.kind.as_deref().unwrap_or("model")),
                &format!("`{json}` ({e})"),
            )
        })
    }

    pub(crate) fn bad_config(&self, key: &str, expected: &str, found: &str) -> ModelError {
        ModelError::BadConfig {
            path: self.path.clone(),
            key: key.to_string(),
            expected: expected.to_string(),
            found: found.to_string(),
        }
    }

    /// Checks the tensors against what a config implies: config keys first (so a config that does not
    /// match the tensors names the key), then presence, shape and dtype of every tensor, then extras.
    pub fn validate(&self, specs: &[TensorSpec], checks: &[ConfigCheck]) -> Result<(), ModelError> {
        for check in checks {
            if let Some(stored) = self.tensors.get(&check.tensor) {
                if let Some(&found_dim) = stored.dims().get(check.dim) {
                    if found_dim != check.expected {
                        return Err(self.bad_config(
                            check.key,
                            &format!(
                                "a value giving {found_dim} (tensor `{}` has shape {:?}, dim {} = {found_dim})",
                                check.tensor,
                                stored.dims(),
                                check.dim
                            ),
                            &format!("a value giving {}", check.expected),
                        ));
                    }
                }
            }
        }
        for spec in specs {
            let stored = self
                .tensors
                .get(&spec.name)
                .ok_or_else(|| ModelError::MissingTensor {
                    path: self.path.clone(),
                    tensor: spec.name.clone(),
                })?;
            let flat_q8_conv = spec.role == TensorRole::ConvWeight
                && matches!(stored, Stored::Ggml(q) if q.dtype() == GgmlDType::Q8_0)
                && conv_q8_0_shape(&spec.shape).is_some_and(|s| stored.dims() == s);
            if flat_q8_conv {
                continue;
            }
            if stored.dims() != spec.shape.as_slice() {
                return Err(ModelError::WrongShape {
                    path: self.path.clone(),
                    tensor: spec.name.clone(),
                    expected: spec.shape.clone(),
                    found: stored.dims().to_vec(),
                });
            }
            let (ok, expected) = match spec.role {
                TensorRole::ConvWeight => (
                    stored.is_float(),
                    "f32 or f16 (or q8_0 flattened to (out, in·9) for 3×3 kernels)",
                ),
                TensorRole::Bias => (stored.is_float(), "f32 or f16"),
                TensorRole::LinearWeight => (
                    stored.is_linear_weight_dtype(),
                    "f32, f16, q8_0, q4_0 or q4k",
                ),
            };
            if !ok {
                return Err(ModelError::WrongDtype {
                    path: self.path.clone(),
                    tensor: spec.name.clone(),
                    expected: expected.into(),
                    found: stored.dtype_name(),
                });
            }
        }
        let mut extra: Vec<&String> = self
            .tensors
            .keys()
            .filter(|name| !specs.iter().any(|s| &s.name == *name))
            .collect();
        extra.sort();
        if let Some(name) = extra.first() {
            return Err(bad_file(
                &self.path,
                format!(
                    "tensor `{name}` is not part of a {} (expected only {:?})",
                    self.kind.as_deref().unwrap_or("model"),
                    specs.iter().map(|s| s.name.as_str()).collect::<Vec<_>>()
                ),
            ));
        }
        Ok(())
    }

    fn stored(&self, name: &str) -> Result<&Stored, ModelError> {
        self.tensors
            .get(name)
            .ok_or_else(|| ModelError::MissingTensor {
                path: self.path.clone(),
                tensor: name.to_string(),
            })
    }

    /// A tensor as f32 (widened or dequantised).
    pub fn tensor_f32(&self, name: &str) -> Result<Tensor, ModelError> {
        Ok(self.stored(name)?.to_f32()?)
    }

    /// The dtype a float tensor was stored in (F32 if it is absent or quantised).
    pub(crate) fn stored_float_dtype(&self, name: &str) -> DType {
        match self.tensors.get(name) {
            Some(Stored::Float(t)) => t.dtype(),
            Some(Stored::Ggml(q)) if q.dtype() == GgmlDType::F16 => DType::F16,
            _ => DType::F32,
        }
    }

    /// A convolution computed in f32 (f16 kernels are widened once here: candle's CPU f16 conv is slower).
    pub(crate) fn conv(&self, prefix: &str, cfg: Conv2dConfig) -> Result<Conv2d, ModelError> {
        let weight = self.tensor_f32(&format!("{prefix}.weight"))?;
        // A Q8_0 kernel is stored flattened (validated against the 4-D spec): back to (out, in, 3, 3).
        let weight = match weight.dims() {
            &[out, flat] => weight.reshape((out, flat / 9, 3, 3))?,
            _ => weight,
        };
        let bias = self.tensor_f32(&format!("{prefix}.bias"))?;
        Ok(Conv2d::new(weight, Some(bias), cfg))
    }

    /// A weight stored as Q8_0, as an [`Int8Matrix`] of its `cols` first columns (`None` for other dtypes).
    pub(crate) fn int8(&self, name: &str, cols: usize) -> Result<Option<Int8Matrix>, ModelError> {
        match self.stored(name)? {
            Stored::Ggml(q) if q.dtype() == GgmlDType::Q8_0 => {
                Ok(Some(Int8Matrix::from_q8_0(q, cols)?))
            }
            _ => Ok(None),
        }
    }

    /// A fully-connected layer, quantised if the file stores it quantised.
    pub(crate) fn linear(&self, prefix: &str) -> Result<QLinear, ModelError> {
        let bias = self.tensor_f32(&format!("{prefix}.bias"))?;
        let layer = match self.stored(&format!("{prefix}.weight"))? {
            Stored::Float(w) => QLinear::from_tensor(w.clone(), Some(bias))?,
            Stored::Ggml(q) => QLinear::from_qtensor(q.clone(), Some(bias))?,
        };
        Ok(layer)
    }
}
