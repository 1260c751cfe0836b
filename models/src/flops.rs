//! Analytic cost of the networks, layer by layer: a multiply-add counts as 2 FLOPs; bias adds,
//! activations and pooling are not counted (they are a few percent and memory-bound, not compute-bound).
//! The runtime's budget and the CLI's reports use these numbers through `mflops()` / `mflops_per_patch()`.

/// Cost of one layer of a network.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerCost {
    pub name: String,
    pub flops: u64,
}

/// Output side of a convolution along one axis.
pub fn conv_out_side_px(in_side_px: usize, kernel: usize, stride: usize, padding: usize) -> usize {
    let padded = in_side_px.saturating_add(padding.saturating_mul(2));
    if stride == 0 || padded < kernel {
        return 0;
    }
    (padded - kernel) / stride + 1
}

/// FLOPs of a dense 2-D convolution producing an `out_height × out_width` map.
pub fn conv2d_flops(
    in_channels: usize,
    out_channels: usize,
    kernel: usize,
    out_height: usize,
    out_width: usize,
) -> u64 {
    2 * (in_channels * kernel * kernel) as u64 * (out_channels * out_height * out_width) as u64
}

/// FLOPs of a fully-connected layer on one input vector.
pub fn linear_flops(in_dim: usize, out_dim: usize) -> u64 {
    2 * (in_dim as u64) * (out_dim as u64)
}

/// Sum of layer costs in MFLOPs.
pub fn total_mflops(costs: &[LayerCost]) -> f64 {
    costs.iter().map(|c| c.flops as f64).sum::<f64>() / 1e6
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conv_flops_match_hand_count() {
        // 3→32 channels, 3×3 kernel, 32×32 output: 27 MACs per output value, 32·32·32 outputs.
        assert_eq!(conv2d_flops(3, 32, 3, 32, 32), 2 * 27 * 32 * 32 * 32);
        assert_eq!(conv2d_flops(3, 32, 3, 32, 32), 1_769_472);
    }

    #[test]
    fn linear_flops_match_hand_count() {
        assert_eq!(linear_flops(1024, 256), 524_288);
        assert_eq!(linear_flops(256, 44), 22_528);
    }

    #[test]
    fn conv_out_side_handles_stride_padding_and_degenerate_input() {
        assert_eq!(conv_out_side_px(320, 3, 2, 1), 160);
        assert_eq!(conv_out_side_px(240, 3, 2, 1), 120);
        assert_eq!(conv_out_side_px(40, 3, 1, 1), 40);
        assert_eq!(conv_out_side_px(1, 3, 1, 0), 0);
        assert_eq!(conv_out_side_px(10, 3, 0, 0), 0);
    }
}
