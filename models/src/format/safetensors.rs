//! The safetensors side of the weight files: float checkpoints as the trainer writes them, with the model
//! kind and config JSON in `__metadata__`.

use super::set::Stored;
use super::{bad_file, FileFormat, WeightSet, CONFIG_KEY, KIND_KEY};
use crate::ModelError;
use candle_core::safetensors::Load;
use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;
use std::path::Path;

impl WeightSet {
    pub(super) fn from_safetensors(
        path: &Path,
        bytes: &[u8],
        device: &Device,
    ) -> Result<Self, ModelError> {
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
}

/// Writes a net's (dequantised) tensors as an f32 safetensors checkpoint with its kind and config
/// (serialised to JSON here): what every net's `save_safetensors` does.
pub fn write_checkpoint<C: serde::Serialize>(
    tensors: Vec<(String, Tensor)>,
    cfg: &C,
    kind: &str,
    path: &Path,
) -> Result<(), ModelError> {
    let config_json = serde_json::to_string(cfg).map_err(|e| ModelError::BadConfig {
        path: path.to_path_buf(),
        key: CONFIG_KEY.into(),
        expected: format!("a serialisable {kind} config"),
        found: e.to_string(),
    })?;
    write_safetensors(&tensors.into_iter().collect(), &config_json, kind, path)
}

/// Writes float tensors as safetensors with the model kind and config JSON in `__metadata__`. Tensors are
/// written as f32 in name order.
pub fn write_safetensors(
    named: &HashMap<String, Tensor>,
    config_json: &str,
    kind: &str,
    path: &Path,
) -> Result<(), ModelError> {
    let mut names: Vec<&String> = named.keys().collect();
    names.sort();
    let mut tensors = Vec::with_capacity(names.len());
    for name in names {
        let t = named[name].to_dtype(DType::F32)?.contiguous()?;
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
