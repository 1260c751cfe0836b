//! One fully-connected layer type for float and quantised weights, so each model file is written once.
//!
//! Training builds [`QLinear`] from a `VarBuilder` (the weight is the `VarMap`'s `Var`, so gradients flow);
//! loading a GGUF file builds it from a [`QTensor`] (Q8_0, Q4_0, Q4K) and the forward pass goes through
//! candle's quantised matmul. Float weights (f32, or f16 widened to f32 at load) use a plain matmul.

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{DType, Module, Result, Tensor};
use std::sync::Arc;

/// `y = x · Wᵀ + b` with `W` float or quantised.
///
/// # Shapes
/// weight `(out_dim, in_dim)`, bias `(out_dim)`; input `(b, in_dim)` → output `(b, out_dim)`.
#[derive(Debug, Clone)]
pub struct QLinear {
    weight: QMatMul,
    bias: Option<Tensor>,
    in_dim: usize,
    out_dim: usize,
    /// Storage dtype of the weight as it came from the file or the VarBuilder (for `describe`).
    weight_dtype: GgmlDType,
}

impl QLinear {
    /// Float layer whose weight and bias come from `vb` (`weight`, `bias`), initialised like
    /// `candle_nn::linear` when `vb` is backed by a `VarMap`.
    pub fn new(in_dim: usize, out_dim: usize, vb: candle_nn::VarBuilder) -> Result<Self> {
        let weight = vb.get_with_hints(
            (out_dim, in_dim),
            "weight",
            candle_nn::init::DEFAULT_KAIMING_NORMAL,
        )?;
        let bound = 1.0 / (in_dim as f64).sqrt();
        let bias = vb.get_with_hints(
            out_dim,
            "bias",
            candle_nn::Init::Uniform {
                lo: -bound,
                up: bound,
            },
        )?;
        Self::from_tensor(weight, Some(bias))
    }

    /// Float layer from an explicit `(out_dim, in_dim)` weight (f32; f16 is widened so matmuls stay f32).
    pub fn from_tensor(weight: Tensor, bias: Option<Tensor>) -> Result<Self> {
        let (out_dim, in_dim) = weight.dims2()?;
        let weight_dtype = match weight.dtype() {
            DType::F16 => GgmlDType::F16,
            _ => GgmlDType::F32,
        };
        let weight = if weight.dtype() == DType::F32 {
            weight
        } else {
            weight.to_dtype(DType::F32)?
        };
        Self::check_bias(&bias, out_dim)?;
        Ok(Self {
            weight: QMatMul::Tensor(weight),
            bias,
            in_dim,
            out_dim,
            weight_dtype,
        })
    }

    /// Layer from a GGUF tensor of shape `(out_dim, in_dim)`; f32/f16 tensors become float matmuls.
    pub fn from_qtensor(weight: Arc<QTensor>, bias: Option<Tensor>) -> Result<Self> {
        let (out_dim, in_dim) = weight.shape().dims2()?;
        let weight_dtype = weight.dtype();
        Self::check_bias(&bias, out_dim)?;
        let weight = match weight_dtype {
            // f16 is a storage format here: widening once at load keeps the hot path in f32 sgemm.
            GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16 => {
                QMatMul::Tensor(weight.dequantize(&weight.device())?)
            }
            _ => QMatMul::from_arc(weight)?,
        };
        Ok(Self {
            weight,
            bias,
            in_dim,
            out_dim,
            weight_dtype,
        })
    }

    fn check_bias(bias: &Option<Tensor>, out_dim: usize) -> Result<()> {
        if let Some(bias) = bias {
            if bias.dims() != [out_dim] {
                candle_core::bail!(
                    "linear bias has shape {:?}, expected [{out_dim}]",
                    bias.dims()
                );
            }
        }
        Ok(())
    }

    pub fn in_dim(&self) -> usize {
        self.in_dim
    }

    pub fn out_dim(&self) -> usize {
        self.out_dim
    }

    /// Storage dtype of the weight (F32, F16, Q8_0, Q4_0, Q4K).
    pub fn weight_dtype(&self) -> GgmlDType {
        self.weight_dtype
    }

    /// The weight as an f32 `(out_dim, in_dim)` tensor (dequantised if needed), for saving and tests.
    pub fn weight_f32(&self) -> Result<Tensor> {
        match &self.weight {
            QMatMul::Tensor(w) => Ok(w.clone()),
            QMatMul::TensorF16(w) => w.to_dtype(DType::F32),
            QMatMul::QTensor(q) => q.dequantize(&q.device()),
        }
    }

    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }
}

impl Module for QLinear {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        if xs.rank() != 2 || xs.dim(1)? != self.in_dim {
            candle_core::bail!(
                "linear {}→{} got input of shape {:?}, expected (b, {})",
                self.in_dim,
                self.out_dim,
                xs.dims(),
                self.in_dim
            );
        }
        // QMatMul's quantised kernel requires a contiguous input.
        let xs = xs.contiguous()?;
        // (b, in) -> (b, out)
        let ys = self.weight.forward(&xs)?;
        match &self.bias {
            Some(bias) => ys.broadcast_add(bias),
            None => Ok(ys),
        }
    }
}
