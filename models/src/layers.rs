//! One table of layers per net: each layer's name, kind (convolution or fully-connected), shape from the
//! config, output map and the config key its width pins. The tensor specs, the config checks, the costs, the
//! construction from a `VarBuilder`, the loading from a weight file and the saving all walk the same table
//! (candle's `VarBuilder` style), so a layer is described once.

use crate::flops::{conv2d_flops, linear_flops, LayerCost};
use crate::format::{ConfigCheck, TensorRole, TensorSpec, WeightSet};
use crate::linear::QLinear;
use crate::ModelError;
use candle_core::{DType, Tensor};
use candle_nn::{Conv2d, Conv2dConfig, VarBuilder};

/// What a layer computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerKind {
    /// A square convolution with bias: kernel side, stride and padding.
    Conv {
        kernel: usize,
        stride: usize,
        padding: usize,
    },
    /// A fully-connected layer with bias.
    Linear,
}

/// One layer of a net, with the sizes its config implies.
#[derive(Debug, Clone, PartialEq)]
pub struct Layer {
    /// Prefix of its tensors (`{name}.weight`, `{name}.bias`).
    pub name: &'static str,
    pub kind: LayerKind,
    pub inputs: usize,
    pub outputs: usize,
    /// Output map `(height, width)` of a convolution, for its cost (unused for a linear layer).
    pub out_hw: (usize, usize),
    /// The config key its `outputs` come from, checked against the weight's first dimension.
    pub config_key: Option<&'static str>,
}

impl Layer {
    /// A convolution from `inputs` to `outputs` channels with an `out_hw` output map.
    pub fn conv(
        name: &'static str,
        (kernel, stride, padding): (usize, usize, usize),
        (inputs, outputs): (usize, usize),
        out_hw: (usize, usize),
    ) -> Self {
        Self {
            name,
            kind: LayerKind::Conv {
                kernel,
                stride,
                padding,
            },
            inputs,
            outputs,
            out_hw,
            config_key: None,
        }
    }

    /// A fully-connected layer from `inputs` to `outputs` values.
    pub fn linear(name: &'static str, inputs: usize, outputs: usize) -> Self {
        Self {
            name,
            kind: LayerKind::Linear,
            inputs,
            outputs,
            out_hw: (1, 1),
            config_key: None,
        }
    }

    /// The layer with `outputs` pinned by the config key `key`.
    pub fn keyed(self, key: &'static str) -> Self {
        Self {
            config_key: Some(key),
            ..self
        }
    }

    /// The length of one weight row: a convolution's `inputs · kernel²` taps, a fully-connected layer's
    /// `inputs`.
    pub fn row_len(&self) -> usize {
        match self.kind {
            LayerKind::Conv { kernel, .. } => self.inputs * kernel * kernel,
            LayerKind::Linear => self.inputs,
        }
    }

    /// A convolution's stride (1 for a fully-connected layer).
    pub fn stride(&self) -> usize {
        match self.kind {
            LayerKind::Conv { stride, .. } => stride,
            LayerKind::Linear => 1,
        }
    }

    /// The weight's name.
    pub fn weight(&self) -> String {
        format!("{}.weight", self.name)
    }

    /// The bias's name.
    pub fn bias(&self) -> String {
        format!("{}.bias", self.name)
    }

    /// The weight's and the bias's specs.
    pub fn specs(&self) -> [TensorSpec; 2] {
        let (shape, role) = match self.kind {
            LayerKind::Conv { kernel, .. } => (
                vec![self.outputs, self.inputs, kernel, kernel],
                TensorRole::ConvWeight,
            ),
            LayerKind::Linear => (vec![self.outputs, self.inputs], TensorRole::LinearWeight),
        };
        [
            TensorSpec::new(self.weight(), shape, role),
            TensorSpec::new(self.bias(), vec![self.outputs], TensorRole::Bias),
        ]
    }

    /// The analytic cost of one forward pass over one input.
    pub fn cost(&self) -> LayerCost {
        let flops = match self.kind {
            LayerKind::Conv { kernel, .. } => conv2d_flops(
                self.inputs,
                self.outputs,
                kernel,
                self.out_hw.0,
                self.out_hw.1,
            ),
            LayerKind::Linear => linear_flops(self.inputs, self.outputs),
        };
        LayerCost {
            name: self.name.into(),
            flops,
        }
    }

    /// candle's convolution settings of a convolution layer.
    pub fn conv_config(&self) -> Conv2dConfig {
        match self.kind {
            LayerKind::Conv {
                stride, padding, ..
            } => Conv2dConfig {
                padding,
                stride,
                ..Default::default()
            },
            LayerKind::Linear => Conv2dConfig::default(),
        }
    }

    /// A new convolution's variables from `vb` (training, or stored float tensors).
    pub fn new_conv(&self, vb: &VarBuilder) -> candle_core::Result<Conv2d> {
        let kernel = match self.kind {
            LayerKind::Conv { kernel, .. } => kernel,
            LayerKind::Linear => 1,
        };
        candle_nn::conv2d(
            self.inputs,
            self.outputs,
            kernel,
            self.conv_config(),
            vb.pp(self.name),
        )
    }

    /// A new fully-connected layer's variables from `vb`.
    pub fn new_linear(&self, vb: &VarBuilder) -> candle_core::Result<QLinear> {
        QLinear::new(self.inputs, self.outputs, vb.pp(self.name))
    }

    /// The convolution stored in a validated weight file.
    pub fn load_conv(&self, set: &WeightSet) -> Result<Conv2d, ModelError> {
        set.conv(self.name, self.conv_config())
    }

    /// The fully-connected layer stored in a validated weight file.
    pub fn load_linear(&self, set: &WeightSet) -> Result<QLinear, ModelError> {
        set.linear(self.name)
    }

    /// A convolution's tensors in f32, weight then bias, for saving.
    pub fn conv_tensors(
        &self,
        conv: &Conv2d,
        out: &mut Vec<(String, Tensor)>,
    ) -> candle_core::Result<()> {
        out.push((self.weight(), conv.weight().to_dtype(DType::F32)?));
        if let Some(bias) = conv.bias() {
            out.push((self.bias(), bias.to_dtype(DType::F32)?));
        }
        Ok(())
    }

    /// A fully-connected layer's tensors in f32 (dequantised), weight then bias, for saving.
    pub fn linear_tensors(
        &self,
        fc: &QLinear,
        out: &mut Vec<(String, Tensor)>,
    ) -> candle_core::Result<()> {
        out.push((self.weight(), fc.weight_f32()?));
        if let Some(bias) = fc.bias() {
            out.push((self.bias(), bias.to_dtype(DType::F32)?));
        }
        Ok(())
    }
}

/// Every tensor of a table, in file order.
pub fn tensor_specs(layers: &[Layer]) -> Vec<TensorSpec> {
    layers.iter().flat_map(Layer::specs).collect()
}

/// The config checks of a table's keyed layers (each on the weight's first dimension), in layer order.
pub fn config_checks(layers: &[Layer]) -> Vec<ConfigCheck> {
    layers
        .iter()
        .filter_map(|l| {
            l.config_key
                .map(|key| ConfigCheck::new(key, l.weight(), 0, l.outputs))
        })
        .collect()
}

/// The cost of every layer of a table.
pub fn layer_costs(layers: &[Layer]) -> Vec<LayerCost> {
    layers.iter().map(Layer::cost).collect()
}
