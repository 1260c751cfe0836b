//! The registry of model kinds: which model a weight file holds ([`GLANCENET_KIND`], [`PATCHNET_KIND`]), and
//! loading, saving and quantising a file by its kind. The only module that names both models; the file
//! format (`crate::format`) knows none, and each model describes its own tensors.

use crate::format::{
    quantise_for_role, write_gguf, write_safetensors, QuantDtype, TensorEntry, TensorSpec,
    WeightSet, CONFIG_KEY, FALLBACKS_KEY, KIND_KEY, REQUESTED_DTYPE_KEY,
};
use crate::glancenet::{GlanceNetConfig, GlanceNetModel, GLANCENET_KIND};
use crate::patchnet::{PatchNet, PatchNetConfig, PATCHNET_KIND};
use crate::ModelError;
use candle_core::{Device, Tensor};
use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

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
            expected: known_kinds(),
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
    write_safetensors(varmap_tensors, config_json, kind, path)
}

/// The kinds the registry knows, for error messages.
fn known_kinds() -> String {
    format!("`{PATCHNET_KIND}` or `{GLANCENET_KIND}`")
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
    match set.kind_as(&known_kinds())? {
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
        other => Err(set.bad_config(KIND_KEY, &known_kinds(), &format!("`{other}`"))),
    }
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
    let kind = set.kind_as(&known_kinds())?.to_string();
    let config_json = set.config_json()?.to_string();
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
        let (q, entry, note) = quantise_for_role(spec, &t, dtype, output)?;
        fallbacks.extend(note);
        entries.push(entry);
        qtensors.push((spec.name.clone(), q));
    }
    let output_file_bytes = write_gguf(
        output,
        &[
            (KIND_KEY, kind),
            (CONFIG_KEY, config_json),
            (REQUESTED_DTYPE_KEY, dtype.to_string()),
            (FALLBACKS_KEY, fallbacks.join("\n")),
        ],
        &qtensors,
    )?;
    Ok(QuantizeReport {
        input: input.to_path_buf(),
        output: output.to_path_buf(),
        requested: dtype,
        tensors: entries,
        fallbacks,
        input_file_bytes: set.file_bytes(),
        output_file_bytes,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
