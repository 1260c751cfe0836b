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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::testutil::{flat, max_abs_diff, naive_linear, random_tensor, varmap_builder};
    use candle_core::Device;

    #[test]
    fn float_linear_matches_naive_reference() {
        let (rows, in_dim, out_dim) = (5, 96, 17);
        let w = random_tensor(&[out_dim, in_dim], -1.0, 1.0, 1);
        let b = random_tensor(&[out_dim], -1.0, 1.0, 2);
        let x = random_tensor(&[rows, in_dim], -1.0, 1.0, 3);
        let layer = QLinear::from_tensor(w.clone(), Some(b.clone())).unwrap();
        let got = flat(&layer.forward(&x).unwrap());
        let want = naive_linear(&flat(&x), rows, &flat(&w), &flat(&b), out_dim);
        assert!(max_abs_diff(&got, &want) <= 1e-4);
    }

    /// Q8_0 rounds each weight and (inside candle's kernel) each activation to 1/254 of its 32-block's
    /// max magnitude, and stores the block scale as f16 (relative error ≤ 2⁻¹¹). Summing those roundings
    /// over the inner dimension gives a hard bound per output, which this test checks exactly.
    #[test]
    fn q8_0_linear_stays_within_the_rounding_bound() {
        let (rows, in_dim, out_dim) = (4, 256, 44);
        let w = random_tensor(&[out_dim, in_dim], -1.0, 1.0, 4);
        let b = random_tensor(&[out_dim], -1.0, 1.0, 5);
        let x = random_tensor(&[rows, in_dim], -1.0, 1.0, 6);
        let q = QTensor::quantize(&w, GgmlDType::Q8_0).unwrap();
        let layer = QLinear::from_qtensor(Arc::new(q), Some(b.clone())).unwrap();
        assert_eq!(layer.weight_dtype(), GgmlDType::Q8_0);
        let got = flat(&layer.forward(&x).unwrap());
        let (xs, ws) = (flat(&x), flat(&w));
        let want = naive_linear(&xs, rows, &ws, &flat(&b), out_dim);
        let block_max = |v: &[f32], i: usize| {
            let start = i / 32 * 32;
            v[start..start + 32]
                .iter()
                .fold(0f32, |m, a| m.max(a.abs()))
        };
        for r in 0..rows {
            for o in 0..out_dim {
                let mut bound = 0f32;
                for i in 0..in_dim {
                    let xv = xs[r * in_dim + i];
                    let wv = ws[o * in_dim + i];
                    let dx = block_max(&xs[r * in_dim..(r + 1) * in_dim], i) / 254.0;
                    let dw = block_max(&ws[o * in_dim..(o + 1) * in_dim], i) / 254.0;
                    bound += xv.abs() * dw + wv.abs() * dx + dx * dw + 2e-3 * (xv * wv).abs();
                }
                let err = (got[r * out_dim + o] - want[r * out_dim + o]).abs();
                assert!(
                    err <= bound + 1e-5,
                    "row {r} out {o}: error {err} > bound {bound}"
                );
            }
        }
        // Random errors cancel: the typical error is far below the worst case.
        assert!(max_abs_diff(&got, &want) < 0.1);
    }

    #[test]
    fn f16_qtensor_becomes_a_float_matmul() {
        let w = random_tensor(&[8, 64], -1.0, 1.0, 7);
        let x = random_tensor(&[3, 64], -1.0, 1.0, 8);
        let q = QTensor::quantize(&w, GgmlDType::F16).unwrap();
        let layer = QLinear::from_qtensor(Arc::new(q), None).unwrap();
        assert_eq!(layer.weight_dtype(), GgmlDType::F16);
        let got = flat(&layer.forward(&x).unwrap());
        let want = naive_linear(&flat(&x), 3, &flat(&w), &[0.0; 8], 8);
        // f16 keeps 11 significant bits: |Δw| ≤ 2⁻¹¹ per weight, 64 terms of |x| ≤ 1.
        assert!(max_abs_diff(&got, &want) <= 64.0 * 2f32.powi(-11));
    }

    #[test]
    fn varmap_linear_is_trainable() {
        let (varmap, vb) = varmap_builder();
        let layer = QLinear::new(16, 4, vb.pp("fc")).unwrap();
        assert_eq!(varmap.all_vars().len(), 2);
        let x = random_tensor(&[8, 16], -1.0, 1.0, 9);
        let before = flat(&layer.weight_f32().unwrap());
        let mut sgd =
            <candle_nn::optim::SGD as candle_nn::Optimizer>::new(varmap.all_vars(), 0.1).unwrap();
        let loss = layer
            .forward(&x)
            .unwrap()
            .sqr()
            .unwrap()
            .mean_all()
            .unwrap();
        candle_nn::Optimizer::backward_step(&mut sgd, &loss).unwrap();
        let after = flat(&layer.weight_f32().unwrap());
        assert!(
            max_abs_diff(&before, &after) > 0.0,
            "SGD did not move the weight"
        );
    }

    #[test]
    fn wrong_input_width_is_an_error_not_a_panic() {
        let layer = QLinear::from_tensor(
            Tensor::zeros((4, 8), DType::F32, &Device::Cpu).unwrap(),
            None,
        )
        .unwrap();
        let x = Tensor::zeros((2, 7), DType::F32, &Device::Cpu).unwrap();
        assert!(layer.forward(&x).is_err());
        let bias = Tensor::zeros(5, DType::F32, &Device::Cpu).unwrap();
        let w = Tensor::zeros((4, 8), DType::F32, &Device::Cpu).unwrap();
        assert!(QLinear::from_tensor(w, Some(bias)).is_err());
    }
}
