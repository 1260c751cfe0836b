//! The few tensor ops of the nets' two ends (input normalisation, softmax) on plain slices, for the
//! allocation-free entry points ([`crate::PatchClassifier::classify_into`], [`crate::GlanceNet::glance_into`]).
//!
//! Each computes what candle's CPU kernels compute, in the same order: a sum is accumulated the way candle's
//! AVX2 reduction does it (32 running lanes over whole runs of 32 values, folded pairwise, then the tail in
//! order), so on an x86-64 CPU with AVX2 both paths give the same bits, and elsewhere (candle's scalar sum)
//! they differ by rounding only.

use crate::input_norm::PER_PATCH_STD_FLOOR;

/// Sum of `x` in the order of candle's AVX2 `vec_sum` (4 registers of 8 lanes).
pub(crate) fn candle_sum(x: &[f32]) -> f32 {
    const EPR: usize = 8;
    const STEP: usize = 32;
    let np = x.len() & !(STEP - 1);
    let mut acc = [[0f32; EPR]; STEP / EPR];
    for run in x[..np].chunks_exact(STEP) {
        for (reg, values) in acc.iter_mut().zip(run.chunks_exact(EPR)) {
            for (a, v) in reg.iter_mut().zip(values) {
                *a += v;
            }
        }
    }
    // Registers pairwise: (0 + 1) + (2 + 3).
    let lanes: [f32; EPR] =
        std::array::from_fn(|l| (acc[0][l] + acc[1][l]) + (acc[2][l] + acc[3][l]));
    // High half onto the low half, then two horizontal adds.
    let t: [f32; 4] = std::array::from_fn(|l| lanes[l] + lanes[l + 4]);
    let mut sum = (t[0] + t[1]) + (t[2] + t[3]);
    for v in &x[np..] {
        sum += v;
    }
    sum
}

/// `(shift, divisor)` of one patch's `per_patch` normalisation, `(v − shift) / divisor`, as candle's
/// `normalise_per_patch` computes it: the mean, the standard deviation of the centred values, floored at
/// [`PER_PATCH_STD_FLOOR`].
pub(crate) fn per_patch_shift_divisor(patch: &[f32], squares: &mut Vec<f32>) -> (f32, f32) {
    // candle's mean: the sum times 1/n (an f64 scale applied in f32).
    let inv_n = (1f64 / patch.len().max(1) as f64) as f32;
    let mean = candle_sum(patch) * inv_n;
    squares.clear();
    squares.extend(patch.iter().map(|v| {
        let c = v - mean;
        c * c
    }));
    let std = (candle_sum(squares) * inv_n).sqrt();
    let floor = PER_PATCH_STD_FLOOR as f32;
    // candle's `maximum`: the floor only where the deviation is below it.
    (mean, if std < floor { floor } else { std })
}

/// Softmax of `logits` appended to `out`, as candle's `softmax_last_dim` computes one row.
pub(crate) fn softmax_extend(logits: &[f32], out: &mut Vec<f32>) {
    let start = out.len();
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    out.extend(logits.iter().map(|v| (v - max).exp()));
    let row = &mut out[start..];
    let sum = candle_sum(row);
    for v in row {
        *v /= sum;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    #[test]
    fn sums_and_softmax_match_candle_for_awkward_lengths() {
        for n in [1usize, 7, 31, 32, 33, 44, 100, 3072] {
            let x: Vec<f32> = (0..n)
                .map(|i| ((i * 7919) % 1000) as f32 / 997.0 - 0.3)
                .collect();
            let t = Tensor::from_slice(&x, (1, n), &Device::Cpu).unwrap();
            let want = t
                .sum_keepdim(1)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()[0];
            let got = candle_sum(&x);
            assert!(
                (want - got).abs() <= 1e-5 * want.abs().max(1.0),
                "n = {n}: {want} vs {got}"
            );
            let want = candle_nn::ops::softmax_last_dim(&t)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            let mut got = Vec::new();
            softmax_extend(&x, &mut got);
            for (a, b) in want.iter().zip(&got) {
                assert!((a - b).abs() <= 1e-7, "n = {n}: {a} vs {b}");
            }
        }
    }
}
