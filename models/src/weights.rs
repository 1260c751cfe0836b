//! Weight files of the models: float checkpoints in safetensors (what the trainer writes) and deployable
//! GGUF files (what `saccade quantize` writes, fully-connected weights in Q8_0/Q4_0/Q4K/f16, convolutions
//! float, or Q8_0 where a Q8_0 file's 3×3 kernels have whole blocks). Both carry the model kind and its config JSON in their metadata, so a file alone rebuilds its
//! model. Every check happens here, before candle sees the bytes, so a bad file is an error that names
//! the file, the tensor or key, what was expected and what was found, and never a panic.

use crate::glancenet::{GlanceNetConfig, GlanceNetModel, GLANCENET_KIND};
use crate::int8::Int8Matrix;
use crate::linear::QLinear;
use crate::patchnet::{PatchNet, PatchNetConfig, PATCHNET_KIND};
use crate::ModelError;
use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
use candle_core::safetensors::Load;
use candle_core::{DType, Device, Tensor};
use candle_nn::{Conv2d, Conv2dConfig};
use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

/// Metadata key holding the model kind (`"patchnet"` / `"glancenet"`), in both file formats.
pub const KIND_KEY: &str = "saccade.kind";
/// Metadata key holding the model config as JSON.
pub const CONFIG_KEY: &str = "saccade.config";
/// GGUF metadata key: the weight dtype that was asked for.
pub const REQUESTED_DTYPE_KEY: &str = "saccade.requested_dtype";
/// GGUF metadata key: one line per tensor that could not take the requested dtype.
pub const FALLBACKS_KEY: &str = "saccade.fallbacks";

const GGUF_MAGIC: &[u8; 4] = b"GGUF";

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
    pub tensor: &'static str,
    pub dim: usize,
    pub expected: usize,
}

impl ConfigCheck {
    pub fn new(key: &'static str, tensor: &'static str, dim: usize, expected: usize) -> Self {
        Self {
            key,
            tensor,
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

/// Weight dtype for `quantize_file` (applies to fully-connected weights; see [`TensorRole`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuantDtype {
    F32,
    F16,
    Q8_0,
    Q4_0,
    Q4K,
}

impl QuantDtype {
    pub fn ggml(self) -> GgmlDType {
        match self {
            Self::F32 => GgmlDType::F32,
            Self::F16 => GgmlDType::F16,
            Self::Q8_0 => GgmlDType::Q8_0,
            Self::Q4_0 => GgmlDType::Q4_0,
            Self::Q4K => GgmlDType::Q4K,
        }
    }

    /// Elements per quantisation block: the inner dimension must be a multiple of it.
    pub fn block_len(self) -> usize {
        self.ggml().block_size()
    }

    /// What to try if a tensor's shape does not allow this dtype.
    fn fallback(self) -> Option<Self> {
        match self {
            Self::Q4K | Self::Q4_0 => Some(Self::Q8_0),
            Self::Q8_0 | Self::F16 => Some(Self::F32),
            Self::F32 => None,
        }
    }
}

impl fmt::Display for QuantDtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::F32 => "f32",
            Self::F16 => "f16",
            Self::Q8_0 => "q8_0",
            Self::Q4_0 => "q4_0",
            Self::Q4K => "q4k",
        })
    }
}

/// `s` is not one of `f32|f16|q8_0|q4_0|q4k`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("weight dtype `{0}` is unknown, expected one of f32, f16, q8_0, q4_0, q4k")]
pub struct ParseQuantDtypeError(pub String);

impl FromStr for QuantDtype {
    type Err = ParseQuantDtypeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "f32" => Ok(Self::F32),
            "f16" => Ok(Self::F16),
            "q8_0" | "q8" => Ok(Self::Q8_0),
            "q4_0" => Ok(Self::Q4_0),
            "q4k" | "q4_k" => Ok(Self::Q4K),
            _ => Err(ParseQuantDtypeError(s.to_string())),
        }
    }
}

fn ggml_name(dtype: GgmlDType) -> String {
    match dtype {
        GgmlDType::F32 => "f32".into(),
        GgmlDType::F16 => "f16".into(),
        GgmlDType::BF16 => "bf16".into(),
        GgmlDType::Q8_0 => "q8_0".into(),
        GgmlDType::Q4_0 => "q4_0".into(),
        GgmlDType::Q4K => "q4k".into(),
        other => format!("{other:?}").to_ascii_lowercase(),
    }
}

/// One tensor as stored in a file.
#[derive(Debug, Clone)]
enum Stored {
    /// From safetensors, in the file's dtype.
    Float(Tensor),
    /// From GGUF (any ggml dtype, float ones included).
    Ggml(Arc<QTensor>),
}

impl Stored {
    fn dims(&self) -> &[usize] {
        match self {
            Self::Float(t) => t.dims(),
            Self::Ggml(q) => q.shape().dims(),
        }
    }

    fn dtype_name(&self) -> String {
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

    fn storage_bytes(&self) -> usize {
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
    path: PathBuf,
    format: FileFormat,
    file_bytes: usize,
    kind: Option<String>,
    config_json: Option<String>,
    requested_dtype: Option<String>,
    fallbacks: Vec<String>,
    tensors: HashMap<String, Stored>,
}

fn bad_file(path: &Path, message: impl Into<String>) -> ModelError {
    ModelError::BadFile {
        path: path.to_path_buf(),
        message: message.into(),
    }
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

    fn from_safetensors(path: &Path, bytes: &[u8], device: &Device) -> Result<Self, ModelError> {
        let st = safetensors::SafeTensors::deserialize(bytes).map_err(|e| {
            bad_file(
                path,
                format!("{} bytes, not valid safetensors: {e}", bytes.len()),
            )
        })?;
        let (_, header) = safetensors::SafeTensors::read_metadata(bytes)
            .map_err(|e| bad_file(path, format!("safetensors header: {e}")))?;
        let meta = header.metadata().clone().unwrap_or_default();
        let mut tensors = HashMap::new();
        for (name, view) in st.tensors() {
            let tensor = match view.dtype() {
                safetensors::Dtype::F32 | safetensors::Dtype::F16 | safetensors::Dtype::BF16 => {
                    view.load(device)?
                }
                other => {
                    return Err(ModelError::WrongDtype {
                        path: path.to_path_buf(),
                        tensor: name,
                        expected: "f32 or f16".into(),
                        found: format!("{other:?}").to_ascii_lowercase(),
                    })
                }
            };
            tensors.insert(name, Stored::Float(tensor));
        }
        Ok(Self {
            path: path.to_path_buf(),
            format: FileFormat::Safetensors,
            file_bytes: bytes.len(),
            kind: meta.get(KIND_KEY).cloned(),
            config_json: meta.get(CONFIG_KEY).cloned(),
            requested_dtype: None,
            fallbacks: Vec::new(),
            tensors,
        })
    }

    fn from_gguf(path: &Path, bytes: &[u8], device: &Device) -> Result<Self, ModelError> {
        let mut reader = std::io::Cursor::new(bytes);
        let content = gguf_file::Content::read(&mut reader)
            .map_err(|e| bad_file(path, format!("{} bytes, GGUF header: {e}", bytes.len())))?;
        let string_meta = |key: &str| -> Option<String> {
            match content.metadata.get(key) {
                Some(gguf_file::Value::String(s)) => Some(s.clone()),
                _ => None,
            }
        };
        let mut tensors = HashMap::new();
        for (name, info) in &content.tensor_infos {
            let Some(elems) = info
                .shape
                .dims()
                .iter()
                .try_fold(1usize, |acc, &d| acc.checked_mul(d))
            else {
                return Err(bad_file(
                    path,
                    format!(
                        "tensor `{name}` has shape {:?}: element count overflows",
                        info.shape.dims()
                    ),
                ));
            };
            let block = info.ggml_dtype.block_size();
            // An empty tensor would reach candle as a dangling, misaligned slice: refuse it here.
            if elems == 0 {
                return Err(bad_file(
                    path,
                    format!(
                        "tensor `{name}` has shape {:?}: no elements",
                        info.shape.dims()
                    ),
                ));
            }
            if block == 0 || !elems.is_multiple_of(block) {
                return Err(bad_file(
                    path,
                    format!(
                        "tensor `{name}` {:?} {}: {elems} elements are not a multiple of the block size {block}",
                        info.shape.dims(),
                        ggml_name(info.ggml_dtype)
                    ),
                ));
            }
            // Saturating: a corrupt header can claim any element count.
            let needed =
                ((elems / block) as u64).saturating_mul(info.ggml_dtype.type_size() as u64);
            let start = content.tensor_data_offset.saturating_add(info.offset);
            let end = start.saturating_add(needed);
            if end > bytes.len() as u64 {
                return Err(bad_file(
                    path,
                    format!(
                        "tensor `{name}` needs bytes {start}..{end}, file has {} bytes (truncated?)",
                        bytes.len()
                    ),
                ));
            }
            let q = info
                .read(&mut reader, content.tensor_data_offset, device)
                .map_err(|e| bad_file(path, format!("tensor `{name}`: {e}")))?;
            tensors.insert(name.clone(), Stored::Ggml(Arc::new(q)));
        }
        let fallbacks = string_meta(FALLBACKS_KEY)
            .map(|s| s.lines().map(str::to_string).collect())
            .unwrap_or_default();
        Ok(Self {
            path: path.to_path_buf(),
            format: FileFormat::Gguf,
            file_bytes: bytes.len(),
            kind: string_meta(KIND_KEY),
            config_json: string_meta(CONFIG_KEY),
            requested_dtype: string_meta(REQUESTED_DTYPE_KEY),
            fallbacks,
            tensors,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn format(&self) -> FileFormat {
        self.format
    }

    /// The model kind from the metadata, or a `BadConfig` error naming the missing key.
    pub fn kind(&self) -> Result<&str, ModelError> {
        self.kind.as_deref().ok_or_else(|| {
            self.bad_config(
                KIND_KEY,
                &format!("`{PATCHNET_KIND}` or `{GLANCENET_KIND}`"),
                "absent",
            )
        })
    }

    pub(crate) fn expect_kind(&self, kind: &str) -> Result<(), ModelError> {
        let found = self.kind()?;
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
            if let Some(stored) = self.tensors.get(check.tensor) {
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

/// Config JSON of a model kind, checked for parsing, plus its tensor specs.
fn specs_for(kind: &str, config_json: &str, path: &Path) -> Result<Vec<TensorSpec>, ModelError> {
    let bad = |found: String| ModelError::BadConfig {
        path: path.to_path_buf(),
        key: CONFIG_KEY.into(),
        expected: format!("a {kind} config JSON"),
        found,
    };
    match kind {
        PATCHNET_KIND => serde_json::from_str::<PatchNetConfig>(config_json)
            .map(|c| c.tensor_specs())
            .map_err(|e| bad(format!("`{config_json}` ({e})"))),
        GLANCENET_KIND => serde_json::from_str::<GlanceNetConfig>(config_json)
            .map(|c| c.tensor_specs())
            .map_err(|e| bad(format!("`{config_json}` ({e})"))),
        other => Err(ModelError::BadConfig {
            path: path.to_path_buf(),
            key: KIND_KEY.into(),
            expected: format!("`{PATCHNET_KIND}` or `{GLANCENET_KIND}`"),
            found: format!("`{other}`"),
        }),
    }
}

/// Writes float tensors (e.g. a training `VarMap`'s `data()`) as safetensors with the model kind and
/// config JSON in `__metadata__`. Tensors are written as f32 in name order.
pub fn save_safetensors(
    varmap_tensors: &HashMap<String, Tensor>,
    config_json: &str,
    kind: &str,
    path: &Path,
) -> Result<(), ModelError> {
    specs_for(kind, config_json, path)?;
    let mut names: Vec<&String> = varmap_tensors.keys().collect();
    names.sort();
    let mut tensors = Vec::with_capacity(names.len());
    for name in names {
        let t = varmap_tensors[name].to_dtype(DType::F32)?.contiguous()?;
        tensors.push((name.clone(), t));
    }
    let meta = HashMap::from([
        (KIND_KEY.to_string(), kind.to_string()),
        (CONFIG_KEY.to_string(), config_json.to_string()),
    ]);
    let bytes = safetensors::serialize(tensors.iter().map(|(n, t)| (n.as_str(), t)), Some(meta))
        .map_err(|e| bad_file(path, format!("serialising safetensors: {e}")))?;
    std::fs::write(path, bytes).map_err(|source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// A model loaded from a file whose metadata says which kind it is.
#[derive(Debug, Clone)]
pub enum LoadedModel {
    Patch(PatchNet),
    Glance(GlanceNetModel),
}

/// Loads whichever model the file holds.
pub fn load_any(path: &Path, device: &Device) -> Result<LoadedModel, ModelError> {
    model_from_set(WeightSet::read(path, device)?)
}

/// [`load_any`] of file bytes already read; `path` only names the file in errors.
pub fn load_bytes(path: &Path, bytes: &[u8], device: &Device) -> Result<LoadedModel, ModelError> {
    model_from_set(WeightSet::from_bytes(path, bytes, device)?)
}

fn model_from_set(set: WeightSet) -> Result<LoadedModel, ModelError> {
    match set.kind()? {
        PATCHNET_KIND => {
            let cfg: PatchNetConfig = set.parse_config()?;
            Ok(LoadedModel::Patch(PatchNet::from_weight_set(&cfg, &set)?))
        }
        GLANCENET_KIND => {
            let cfg: GlanceNetConfig = set.parse_config()?;
            Ok(LoadedModel::Glance(GlanceNetModel::from_weight_set(
                &cfg, &set,
            )?))
        }
        other => Err(set.bad_config(
            KIND_KEY,
            &format!("`{PATCHNET_KIND}` or `{GLANCENET_KIND}`"),
            &format!("`{other}`"),
        )),
    }
}

/// One tensor in an [`Inspection`] or a [`QuantizeReport`].
#[derive(Debug, Clone, PartialEq)]
pub struct TensorEntry {
    pub name: String,
    pub shape: Vec<usize>,
    pub dtype: String,
    pub bytes: usize,
}

/// What `quantize_file` wrote.
#[derive(Debug, Clone)]
pub struct QuantizeReport {
    pub input: PathBuf,
    pub output: PathBuf,
    pub requested: QuantDtype,
    pub tensors: Vec<TensorEntry>,
    /// Tensors whose shape did not allow `requested`, with the dtype used instead and why.
    pub fallbacks: Vec<String>,
    pub input_file_bytes: usize,
    pub output_file_bytes: usize,
}

impl fmt::Display for QuantizeReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} → {} ({}):",
            self.input.display(),
            self.output.display(),
            self.requested
        )?;
        for t in &self.tensors {
            writeln!(
                f,
                "  {:<12} {:<16} {:<5} {:>9} B",
                t.name,
                format!("{:?}", t.shape),
                t.dtype,
                t.bytes
            )?;
        }
        for note in &self.fallbacks {
            writeln!(f, "  fallback: {note}")?;
        }
        let ratio = self.input_file_bytes as f64 / self.output_file_bytes.max(1) as f64;
        write!(
            f,
            "  file {} B → {} B ({ratio:.2}× smaller)",
            self.input_file_bytes, self.output_file_bytes
        )
    }
}

/// Picks the dtype a tensor can take: `requested` if its inner dimension is a multiple of the block,
/// else the next in Q4K/Q4_0 → Q8_0 → f32, with a note saying why.
fn dtype_for(name: &str, shape: &[usize], requested: QuantDtype) -> (QuantDtype, Option<String>) {
    let inner = shape.last().copied().unwrap_or(0);
    let mut dtype = requested;
    loop {
        if inner > 0 && inner.is_multiple_of(dtype.block_len()) {
            break;
        }
        match dtype.fallback() {
            Some(next) => dtype = next,
            None => break,
        }
    }
    let note = (dtype != requested).then(|| {
        format!(
            "{name} {shape:?}: {requested} needs the inner dim to be a multiple of {}, found {inner}; stored as {dtype}",
            requested.block_len()
        )
    });
    (dtype, note)
}

/// Converts a model file (safetensors or GGUF) into a GGUF file: fully-connected weights in `dtype`
/// (falling back per tensor where the shape does not allow it), conv weights f16 (f32 when `dtype` is
/// f32; Q8_0 with one scale per output row, flattened, for 3×3 kernels with whole blocks when `dtype` is
/// Q8_0), biases f32. The config, kind, requested dtype and fallbacks go into the GGUF metadata.
pub fn quantize_file(
    input: &Path,
    output: &Path,
    dtype: QuantDtype,
) -> Result<QuantizeReport, ModelError> {
    let device = Device::Cpu;
    let set = WeightSet::read(input, &device)?;
    let kind = set.kind()?.to_string();
    let config_json = set
        .config_json
        .clone()
        .ok_or_else(|| set.bad_config(CONFIG_KEY, "a config JSON", "absent"))?;
    // Building the model validates shapes, dtypes and config before anything is written.
    match load_any(input, &device)? {
        LoadedModel::Patch(_) | LoadedModel::Glance(_) => {}
    }
    let specs = specs_for(&kind, &config_json, input)?;
    let mut qtensors = Vec::with_capacity(specs.len());
    let mut fallbacks = Vec::new();
    let mut entries = Vec::with_capacity(specs.len());
    for spec in &specs {
        let t = set.tensor_f32(&spec.name)?;
        // Both nets' Q8_0 weights run on the integer kernel (`int8`), which wants one scale per output row:
        // their 3×3 convs (where `in · 9` fits whole blocks) go to Q8_0 too, flattened.
        let int8_rows = dtype == QuantDtype::Q8_0;
        let conv_flat = conv_q8_0_shape(&spec.shape).filter(|_| int8_rows);
        let target = match spec.role {
            TensorRole::Bias => GgmlDType::F32,
            TensorRole::ConvWeight if dtype == QuantDtype::F32 => GgmlDType::F32,
            TensorRole::ConvWeight if conv_flat.is_some() => GgmlDType::Q8_0,
            TensorRole::ConvWeight => GgmlDType::F16,
            TensorRole::LinearWeight => {
                let (chosen, note) = dtype_for(&spec.name, &spec.shape, dtype);
                fallbacks.extend(note);
                chosen.ggml()
            }
        };
        let quantise_err = |e: candle_core::Error| {
            bad_file(
                output,
                format!("quantising `{}` to {}: {e}", spec.name, ggml_name(target)),
            )
        };
        let (q, shape) = if int8_rows && target == GgmlDType::Q8_0 {
            let t = match conv_flat {
                Some(flat) => t.reshape((flat[0], flat[1]))?,
                None => t,
            };
            let (rows, cols) = t.dims2()?;
            let values = t.flatten_all()?.to_vec1::<f32>()?;
            let q = Int8Matrix::quantize(&values, rows, cols)
                .to_q8_0()
                .map_err(quantise_err)?;
            (q, vec![rows, cols])
        } else {
            let q = QTensor::quantize(&t, target).map_err(quantise_err)?;
            (q, spec.shape.clone())
        };
        entries.push(TensorEntry {
            name: spec.name.clone(),
            shape,
            dtype: ggml_name(target),
            bytes: q.storage_size_in_bytes(),
        });
        qtensors.push((spec.name.clone(), q));
    }
    let meta_values = [
        (KIND_KEY, gguf_file::Value::String(kind.clone())),
        (CONFIG_KEY, gguf_file::Value::String(config_json)),
        (
            REQUESTED_DTYPE_KEY,
            gguf_file::Value::String(dtype.to_string()),
        ),
        (
            FALLBACKS_KEY,
            gguf_file::Value::String(fallbacks.join("\n")),
        ),
    ];
    let meta: Vec<(&str, &gguf_file::Value)> = meta_values.iter().map(|(k, v)| (*k, v)).collect();
    let tensor_refs: Vec<(&str, &QTensor)> =
        qtensors.iter().map(|(n, q)| (n.as_str(), q)).collect();
    let mut buffer = std::io::Cursor::new(Vec::new());
    gguf_file::write(&mut buffer, &meta, &tensor_refs)
        .map_err(|e| bad_file(output, format!("writing GGUF: {e}")))?;
    let bytes = buffer.into_inner();
    std::fs::write(output, &bytes).map_err(|source| ModelError::Io {
        path: output.to_path_buf(),
        source,
    })?;
    Ok(QuantizeReport {
        input: input.to_path_buf(),
        output: output.to_path_buf(),
        requested: dtype,
        tensors: entries,
        fallbacks,
        input_file_bytes: set.file_bytes,
        output_file_bytes: bytes.len(),
    })
}

/// What a weight file holds, for `saccade inspect`.
#[derive(Debug, Clone)]
pub struct Inspection {
    pub path: PathBuf,
    pub format: FileFormat,
    pub kind: Option<String>,
    pub config_json: Option<String>,
    pub requested_dtype: Option<String>,
    pub fallbacks: Vec<String>,
    pub tensors: Vec<TensorEntry>,
    pub tensor_bytes: usize,
    pub file_bytes: usize,
}

impl fmt::Display for Inspection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} ({}, {} B): kind {}",
            self.path.display(),
            self.format,
            self.file_bytes,
            self.kind.as_deref().unwrap_or("<none>")
        )?;
        writeln!(
            f,
            "  config: {}",
            self.config_json.as_deref().unwrap_or("<none>")
        )?;
        if let Some(requested) = &self.requested_dtype {
            writeln!(f, "  requested weight dtype: {requested}")?;
        }
        for note in &self.fallbacks {
            writeln!(f, "  note: requested dtype not possible for {note}")?;
        }
        for t in &self.tensors {
            writeln!(
                f,
                "  {:<12} {:<16} {:<5} {:>9} B",
                t.name,
                format!("{:?}", t.shape),
                t.dtype,
                t.bytes
            )?;
        }
        write!(
            f,
            "  total {} B in {} tensors",
            self.tensor_bytes,
            self.tensors.len()
        )
    }
}

/// Lists what a weight file holds without building a model (so it works on files a model rejects).
pub fn inspect_file(path: &Path) -> Result<Inspection, ModelError> {
    inspection(WeightSet::read(path, &Device::Cpu)?)
}

/// [`inspect_file`] of file bytes already read; `path` only names the file in errors.
pub fn inspect_bytes(path: &Path, bytes: &[u8]) -> Result<Inspection, ModelError> {
    inspection(WeightSet::from_bytes(path, bytes, &Device::Cpu)?)
}

fn inspection(set: WeightSet) -> Result<Inspection, ModelError> {
    let path = set.path.clone();
    let mut tensors: Vec<TensorEntry> = set
        .tensors
        .iter()
        .map(|(name, stored)| TensorEntry {
            name: name.clone(),
            shape: stored.dims().to_vec(),
            dtype: stored.dtype_name(),
            bytes: stored.storage_bytes(),
        })
        .collect();
    tensors.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Inspection {
        path,
        format: set.format,
        kind: set.kind.clone(),
        config_json: set.config_json.clone(),
        requested_dtype: set.requested_dtype.clone(),
        fallbacks: set.fallbacks.clone(),
        tensor_bytes: tensors.iter().map(|t| t.bytes).sum(),
        tensors,
        file_bytes: set.file_bytes,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::testutil::varmap_builder;
    use proptest::prelude::*;

    fn small_cfg() -> PatchNetConfig {
        PatchNetConfig {
            input_side_px: 16,
            channels: [4, 8, 8],
            hidden: 32,
            num_classes: crate::NUM_CLASSES,
            input_norm: crate::patchnet::InputNorm::Fixed,
            box_head: false,
        }
    }

    fn small_tensors() -> HashMap<String, Tensor> {
        let (_vm, vb) = varmap_builder();
        let net = PatchNet::new(&small_cfg(), vb).unwrap();
        net.named_tensors().unwrap().into_iter().collect()
    }

    fn config_json(cfg: &PatchNetConfig) -> String {
        serde_json::to_string(cfg).unwrap()
    }

    /// Writes tensors exactly as given (any dtype), bypassing `save_safetensors`' f32 conversion.
    fn write_raw(tensors: &HashMap<String, Tensor>, cfg_json: &str, path: &Path) {
        let meta = HashMap::from([
            (KIND_KEY.to_string(), PATCHNET_KIND.to_string()),
            (CONFIG_KEY.to_string(), cfg_json.to_string()),
        ]);
        let bytes = safetensors::serialize(tensors.iter(), Some(meta)).unwrap();
        std::fs::write(path, bytes).unwrap();
    }

    fn load_err(path: &Path) -> ModelError {
        PatchNet::load(path, &Device::Cpu).unwrap_err()
    }

    #[test]
    fn quant_dtype_parses_its_names() {
        for (s, d) in [
            ("f32", QuantDtype::F32),
            ("f16", QuantDtype::F16),
            ("q8_0", QuantDtype::Q8_0),
            ("Q4_0", QuantDtype::Q4_0),
            ("q4k", QuantDtype::Q4K),
        ] {
            assert_eq!(s.parse::<QuantDtype>().unwrap(), d);
            assert_eq!(d.to_string().parse::<QuantDtype>().unwrap(), d);
        }
        let err = "int3".parse::<QuantDtype>().unwrap_err();
        assert!(err.to_string().contains("int3"));
    }

    #[test]
    fn fallback_goes_q4k_then_q8_0_then_f32() {
        assert_eq!(
            dtype_for("a", &[44, 256], QuantDtype::Q4K),
            (QuantDtype::Q4K, None)
        );
        let (d, note) = dtype_for("a", &[44, 32], QuantDtype::Q4K);
        assert_eq!(d, QuantDtype::Q8_0);
        assert!(note.unwrap().contains("found 32"));
        assert_eq!(
            dtype_for("a", &[4, 20], QuantDtype::Q4_0).0,
            QuantDtype::F32
        );
        assert_eq!(
            dtype_for("a", &[4, 20], QuantDtype::F16),
            (QuantDtype::F16, None)
        );
    }

    #[test]
    fn truncated_files_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let st = dir.path().join("p.safetensors");
        save_safetensors(
            &small_tensors(),
            &config_json(&small_cfg()),
            PATCHNET_KIND,
            &st,
        )
        .unwrap();
        let gguf = dir.path().join("p.gguf");
        quantize_file(&st, &gguf, QuantDtype::Q8_0).unwrap();
        for path in [&st, &gguf] {
            let bytes = std::fs::read(path).unwrap();
            let cut = dir.path().join("cut");
            std::fs::write(&cut, &bytes[..bytes.len() - 100]).unwrap();
            let err = load_err(&cut);
            assert!(matches!(err, ModelError::BadFile { .. }), "{err}");
            assert!(err.to_string().contains("cut"), "{err}");
        }
    }

    #[test]
    fn wrong_magic_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notes.txt");
        std::fs::write(&path, b"these are not weights at all").unwrap();
        let err = load_err(&path);
        assert!(matches!(err, ModelError::BadFile { .. }), "{err}");
        assert!(err.to_string().contains("magic"), "{err}");
        std::fs::write(&path, b"").unwrap();
        assert!(matches!(load_err(&path), ModelError::BadFile { .. }));
        let err = load_err(&dir.path().join("absent.safetensors"));
        assert!(matches!(err, ModelError::Io { .. }), "{err}");
    }

    #[test]
    fn missing_tensor_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.safetensors");
        let mut tensors = small_tensors();
        tensors.remove("fc2.bias");
        save_safetensors(&tensors, &config_json(&small_cfg()), PATCHNET_KIND, &path).unwrap();
        let err = load_err(&path);
        assert!(
            matches!(&err, ModelError::MissingTensor { tensor, .. } if tensor == "fc2.bias"),
            "{err}"
        );
    }

    #[test]
    fn wrong_shape_is_named_with_expected_and_found() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.safetensors");
        let mut tensors = small_tensors();
        tensors.insert(
            "conv1.weight".into(),
            Tensor::zeros((4, 3, 5, 5), DType::F32, &Device::Cpu).unwrap(),
        );
        save_safetensors(&tensors, &config_json(&small_cfg()), PATCHNET_KIND, &path).unwrap();
        match load_err(&path) {
            ModelError::WrongShape {
                tensor,
                expected,
                found,
                ..
            } => {
                assert_eq!(tensor, "conv1.weight");
                assert_eq!(expected, vec![4, 3, 3, 3]);
                assert_eq!(found, vec![4, 3, 5, 5]);
            }
            other => panic!("expected WrongShape, got {other}"),
        }
    }

    /// A Q8_0 patch classifier keeps its 3×3 kernels flattened `(out, in·9)` when `in·9` is whole blocks
    /// (conv1's 27 taps are not: f16); a flattened kernel of the wrong width is a shape error naming it.
    #[test]
    fn q8_0_conv_kernels_are_flattened_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = PatchNetConfig {
            channels: [32, 32, 32],
            ..small_cfg()
        };
        let (_vm, vb) = varmap_builder();
        let net = PatchNet::new(&cfg, vb).unwrap();
        let float_path = dir.path().join("p.safetensors");
        net.save_safetensors(&float_path).unwrap();
        let q_path = dir.path().join("p.q8_0.gguf");
        let report = quantize_file(&float_path, &q_path, QuantDtype::Q8_0).unwrap();
        let conv2 = report
            .tensors
            .iter()
            .find(|t| t.name == "conv2.weight")
            .unwrap();
        assert_eq!(
            (conv2.shape.clone(), conv2.dtype.as_str()),
            (vec![32, 288], "q8_0")
        );
        let conv1 = report
            .tensors
            .iter()
            .find(|t| t.name == "conv1.weight")
            .unwrap();
        assert_eq!(
            (conv1.shape.clone(), conv1.dtype.as_str()),
            (vec![32, 3, 3, 3], "f16")
        );
        PatchNet::load(&q_path, &Device::Cpu).unwrap();

        // Rewrite the file with conv2 one block too wide.
        let set = WeightSet::read(&q_path, &Device::Cpu).unwrap();
        let mut tensors: Vec<(String, QTensor)> = Vec::new();
        for name in set.tensors.keys() {
            let q = if name == "conv2.weight" {
                let t = Tensor::zeros((32, 320), DType::F32, &Device::Cpu).unwrap();
                QTensor::quantize(&t, GgmlDType::Q8_0).unwrap()
            } else {
                let t = set.tensor_f32(name).unwrap();
                QTensor::quantize(&t, GgmlDType::F32).unwrap()
            };
            tensors.push((name.clone(), q));
        }
        let kind = gguf_file::Value::String(PATCHNET_KIND.into());
        let config = gguf_file::Value::String(config_json(&cfg));
        let meta = [(KIND_KEY, &kind), (CONFIG_KEY, &config)];
        let refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(n, q)| (n.as_str(), q)).collect();
        let mut file = std::fs::File::create(&q_path).unwrap();
        gguf_file::write(&mut file, &meta, &refs).unwrap();
        drop(file);
        match load_err(&q_path) {
            ModelError::WrongShape {
                tensor,
                expected,
                found,
                ..
            } => {
                assert_eq!(tensor, "conv2.weight");
                assert_eq!(expected, vec![32, 32, 3, 3]);
                assert_eq!(found, vec![32, 320]);
            }
            other => panic!("expected WrongShape, got {other}"),
        }
    }

    #[test]
    fn wrong_dtype_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.safetensors");
        let mut tensors = small_tensors();
        let fc1 = tensors["fc1.weight"].to_dtype(DType::U8).unwrap();
        tensors.insert("fc1.weight".into(), fc1);
        write_raw(&tensors, &config_json(&small_cfg()), &path);
        let err = load_err(&path);
        assert!(
            matches!(&err, ModelError::WrongDtype { tensor, found, .. } if tensor == "fc1.weight" && found == "u8"),
            "{err}"
        );
    }

    #[test]
    fn config_that_does_not_match_the_tensors_names_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.safetensors");
        let claimed = PatchNetConfig {
            hidden: 64,
            ..small_cfg()
        };
        save_safetensors(
            &small_tensors(),
            &config_json(&claimed),
            PATCHNET_KIND,
            &path,
        )
        .unwrap();
        let err = load_err(&path);
        assert!(
            matches!(&err, ModelError::BadConfig { key, .. } if key == "hidden"),
            "{err}"
        );
        assert!(err.to_string().contains("fc1.weight"), "{err}");

        // Unparseable config and wrong kind are config errors too.
        write_raw(&small_tensors(), "{\"hidden\": 3}", &path);
        let err = load_err(&path);
        assert!(
            matches!(&err, ModelError::BadConfig { key, .. } if key == CONFIG_KEY),
            "{err}"
        );
        save_safetensors(
            &small_tensors(),
            &config_json(&small_cfg()),
            PATCHNET_KIND,
            &path,
        )
        .unwrap();
        let err = GlanceNetModel::load(&path, &Device::Cpu).unwrap_err();
        assert!(
            matches!(&err, ModelError::BadConfig { key, .. } if key == KIND_KEY),
            "{err}"
        );
        assert!(save_safetensors(&small_tensors(), "{}", "resnet", &path).is_err());
    }

    #[test]
    fn load_any_picks_the_kind_and_inspect_lists_everything() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.safetensors");
        save_safetensors(
            &small_tensors(),
            &config_json(&small_cfg()),
            PATCHNET_KIND,
            &path,
        )
        .unwrap();
        assert!(matches!(
            load_any(&path, &Device::Cpu).unwrap(),
            LoadedModel::Patch(_)
        ));
        let inspection = inspect_file(&path).unwrap();
        assert_eq!(inspection.tensors.len(), 10);
        assert_eq!(inspection.kind.as_deref(), Some(PATCHNET_KIND));
        let text = inspection.to_string();
        assert!(
            text.contains("fc1.weight") && text.contains("[32, 32]") && text.contains("total"),
            "{text}"
        );
    }

    fn valid_files() -> Vec<Vec<u8>> {
        let dir = tempfile::tempdir().unwrap();
        let st = dir.path().join("p.safetensors");
        save_safetensors(
            &small_tensors(),
            &config_json(&small_cfg()),
            PATCHNET_KIND,
            &st,
        )
        .unwrap();
        let gguf = dir.path().join("p.gguf");
        quantize_file(&st, &gguf, QuantDtype::Q4_0).unwrap();
        vec![std::fs::read(st).unwrap(), std::fs::read(gguf).unwrap()]
    }

    fn parse_model(bytes: &[u8]) -> Result<PatchNet, ModelError> {
        let set = WeightSet::from_bytes(Path::new("fuzzed"), bytes, &Device::Cpu)?;
        set.expect_kind(PATCHNET_KIND)?;
        let cfg: PatchNetConfig = set.parse_config()?;
        PatchNet::from_weight_set(&cfg, &set)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn truncated_bytes_are_an_error_never_a_panic(which in 0usize..2, frac in 0.0f64..1.0) {
            let files = valid_files();
            let bytes = &files[which];
            // GGUF pads each tensor to 32 bytes: cutting only trailing padding leaves a valid file.
            let len = ((bytes.len() - 32) as f64 * frac) as usize;
            prop_assert!(parse_model(&bytes[..len]).is_err());
        }

        #[test]
        fn corrupted_bytes_never_panic(which in 0usize..2, frac in 0.0f64..1.0, value: u8, run in 1usize..9) {
            let mut bytes = valid_files().swap_remove(which);
            let at = (bytes.len() as f64 * frac) as usize;
            let end = (at + run).min(bytes.len());
            for b in &mut bytes[at..end] {
                *b = value;
            }
            // A flipped weight byte may still load; what must never happen is a panic.
            let _ = parse_model(&bytes);
        }
    }
}
