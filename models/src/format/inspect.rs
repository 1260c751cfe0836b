//! What a weight file holds, listed without building a model (so it works on files a model rejects).

use super::{FileFormat, WeightSet};
use crate::ModelError;
use candle_core::Device;
use std::fmt;
use std::path::{Path, PathBuf};

/// One tensor in an [`Inspection`] or a `QuantizeReport`.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorEntry {
    pub name: String,
    pub shape: Vec<usize>,
    pub dtype: String,
    pub bytes: usize,
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
