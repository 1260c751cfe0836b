//! The GGUF side of the weight files: reading (every tensor's extent checked against the file before candle
//! reads it), the per-role quantisation rule, and writing.

use super::set::Stored;
use super::{
    bad_file, conv_q8_0_shape, dtype_for, ggml_name, FileFormat, QuantDtype, TensorRole,
    TensorSpec, WeightSet,
};
use super::{CONFIG_KEY, FALLBACKS_KEY, KIND_KEY, REQUESTED_DTYPE_KEY};
use crate::int8::Int8Matrix;
use crate::ModelError;
use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

impl WeightSet {
    pub(super) fn from_gguf(
        path: &Path,
        bytes: &[u8],
        device: &Device,
    ) -> Result<Self, ModelError> {
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
}

/// A model tensor quantised for a GGUF file by its role: biases f32; conv kernels f32 when `dtype` is f32,
/// Q8_0 with one scale per output row (flattened to `(out, in · 9)`) for 3×3 kernels with whole blocks when
/// `dtype` is Q8_0, else f16; fully-connected weights in `dtype`, falling back where the shape does not allow
/// it (the note says why). `output` names the file in errors.
pub fn quantise_for_role(
    spec: &TensorSpec,
    t: &Tensor,
    dtype: QuantDtype,
    output: &Path,
) -> Result<(QTensor, super::TensorEntry, Option<String>), ModelError> {
    let t = t.clone();
    let mut fallback = None;
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
            fallback = note;
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
    let entry = super::TensorEntry {
        name: spec.name.clone(),
        shape,
        dtype: ggml_name(target),
        bytes: q.storage_size_in_bytes(),
    };
    Ok((q, entry, fallback))
}

/// Writes `tensors` as a GGUF file with string metadata; returns the file's size in bytes.
pub fn write_gguf(
    output: &Path,
    meta: &[(&str, String)],
    tensors: &[(String, QTensor)],
) -> Result<usize, ModelError> {
    let meta_values: Vec<(&str, gguf_file::Value)> = meta
        .iter()
        .map(|(k, v)| (*k, gguf_file::Value::String(v.clone())))
        .collect();
    let meta: Vec<(&str, &gguf_file::Value)> = meta_values.iter().map(|(k, v)| (*k, v)).collect();
    let tensor_refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(n, q)| (n.as_str(), q)).collect();
    let mut buffer = std::io::Cursor::new(Vec::new());
    gguf_file::write(&mut buffer, &meta, &tensor_refs)
        .map_err(|e| bad_file(output, format!("writing GGUF: {e}")))?;
    let bytes = buffer.into_inner();
    std::fs::write(output, &bytes).map_err(|source| ModelError::Io {
        path: output.to_path_buf(),
        source,
    })?;
    Ok(bytes.len())
}
