//! The weight dtypes `saccade quantize` writes, their names, and the fallback when a shape does not allow one.

use candle_core::quantized::GgmlDType;
use std::fmt;
use std::str::FromStr;

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

pub(crate) fn ggml_name(dtype: GgmlDType) -> String {
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

/// Picks the dtype a tensor can take: `requested` if its inner dimension is a multiple of the block,
/// else the next in Q4K/Q4_0 → Q8_0 → f32, with a note saying why.
pub(crate) fn dtype_for(
    name: &str,
    shape: &[usize],
    requested: QuantDtype,
) -> (QuantDtype, Option<String>) {
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
