//! Naive reference implementations (explicit loops over plain `Vec<f32>`) and fixtures that the unit
//! tests of the layers and models compare candle's kernels against.

#![allow(clippy::unwrap_used)]

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Uniform random values in `lo..hi`, reproducible from `seed`.
pub fn random_vec(len: usize, lo: f32, hi: f32, seed: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..len).map(|_| rng.random_range(lo..hi)).collect()
}

pub fn random_tensor(shape: &[usize], lo: f32, hi: f32, seed: u64) -> Tensor {
    let len = shape.iter().product();
    Tensor::from_vec(random_vec(len, lo, hi, seed), shape, &Device::Cpu).unwrap()
}

/// A fresh `VarMap`-backed builder, as the trainer uses (random init from candle's initialisers).
pub fn varmap_builder() -> (VarMap, VarBuilder<'static>) {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    (varmap, vb)
}

/// Dense 2-D convolution, NCHW, zero padding.
#[allow(clippy::too_many_arguments)]
pub fn naive_conv2d(
    x: &[f32],
    (b, c_in, h, w): (usize, usize, usize, usize),
    weight: &[f32],
    bias: &[f32],
    c_out: usize,
    k: usize,
    stride: usize,
    pad: usize,
) -> (Vec<f32>, (usize, usize, usize, usize)) {
    let h_out = (h + 2 * pad - k) / stride + 1;
    let w_out = (w + 2 * pad - k) / stride + 1;
    let mut out = vec![0f32; b * c_out * h_out * w_out];
    for n in 0..b {
        for o in 0..c_out {
            for y in 0..h_out {
                for xo in 0..w_out {
                    let mut acc = bias[o] as f64;
                    for i in 0..c_in {
                        for ky in 0..k {
                            for kx in 0..k {
                                let iy = (y * stride + ky) as isize - pad as isize;
                                let ix = (xo * stride + kx) as isize - pad as isize;
                                if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                                    continue;
                                }
                                let xv = x[((n * c_in + i) * h + iy as usize) * w + ix as usize];
                                let wv = weight[((o * c_in + i) * k + ky) * k + kx];
                                acc += xv as f64 * wv as f64;
                            }
                        }
                    }
                    out[((n * c_out + o) * h_out + y) * w_out + xo] = acc as f32;
                }
            }
        }
    }
    (out, (b, c_out, h_out, w_out))
}

/// 2×2 max pooling with stride 2 (odd trailing rows/columns dropped, as candle does).
pub fn naive_maxpool2(
    x: &[f32],
    (b, c, h, w): (usize, usize, usize, usize),
) -> (Vec<f32>, (usize, usize, usize, usize)) {
    let (ho, wo) = (h / 2, w / 2);
    let mut out = vec![f32::NEG_INFINITY; b * c * ho * wo];
    for n in 0..b {
        for ch in 0..c {
            for y in 0..ho {
                for xo in 0..wo {
                    let mut m = f32::NEG_INFINITY;
                    for dy in 0..2 {
                        for dx in 0..2 {
                            m = m.max(x[((n * c + ch) * h + 2 * y + dy) * w + 2 * xo + dx]);
                        }
                    }
                    out[((n * c + ch) * ho + y) * wo + xo] = m;
                }
            }
        }
    }
    (out, (b, c, ho, wo))
}

/// `y = x · Wᵀ + b` for `x` `(rows, in_dim)`, `W` `(out_dim, in_dim)`.
pub fn naive_linear(
    x: &[f32],
    rows: usize,
    weight: &[f32],
    bias: &[f32],
    out_dim: usize,
) -> Vec<f32> {
    let in_dim = weight.len() / out_dim;
    let mut out = vec![0f32; rows * out_dim];
    for r in 0..rows {
        for o in 0..out_dim {
            let mut acc = bias[o] as f64;
            for i in 0..in_dim {
                acc += x[r * in_dim + i] as f64 * weight[o * in_dim + i] as f64;
            }
            out[r * out_dim + o] = acc as f32;
        }
    }
    out
}

pub fn relu(x: &mut [f32]) {
    for v in x {
        *v = v.max(0.0);
    }
}

pub fn flat(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Replaces every variable of `varmap` (in name order) by seeded values, uniform ±1/sqrt(fan_in) (±0.1 for
/// vectors), so a test's network does not depend on candle's unseeded initialiser.
pub fn seed_vars(varmap: &VarMap, seed: u64) {
    let data = varmap.data().lock().unwrap();
    let mut named: Vec<_> = data.iter().collect();
    named.sort_by(|a, b| a.0.cmp(b.0));
    for (i, (_, var)) in named.into_iter().enumerate() {
        let dims = var.dims().to_vec();
        let bound = if dims.len() > 1 {
            1.0 / (dims.iter().skip(1).product::<usize>() as f32).sqrt()
        } else {
            0.1
        };
        var.set(&random_tensor(&dims, -bound, bound, seed + i as u64))
            .unwrap();
    }
}

/// Gradients of `sum(y · weights)`: a scalar loss that weighs every entry of `y` differently.
pub fn weighted_grads(y: &Tensor, weights: &Tensor) -> candle_core::backprop::GradStore {
    y.mul(weights)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap()
}

/// Sets every batch-norm scale and shift of `varmap` (names containing `.bn.`, in name order) to seeded values
/// in ±1.5 (both signs, away from 1 and 0, so every path is exercised), the n-th from seed `first_seed + n`.
/// Returns how many it set.
pub fn set_batch_norm_params(varmap: &VarMap, first_seed: u64) -> usize {
    let data = varmap.data().lock().unwrap();
    // In name order: HashMap order would give each run different values.
    let mut named: Vec<_> = data.iter().filter(|(n, _)| n.contains(".bn.")).collect();
    named.sort_by(|a, b| a.0.cmp(b.0));
    for (n, (_, var)) in named.iter().enumerate() {
        var.set(&random_tensor(var.dims(), -1.5, 1.5, first_seed + n as u64))
            .unwrap();
    }
    named.len()
}

/// relu(batch norm of an NCHW `y` with its own statistics over batch and space, then `norm`'s scale and
/// shift), from candle tensor ops: the reference for the training graph's batch normalisation.
pub fn batch_norm_relu_nchw(y: &Tensor, norm: &crate::train_ops::BatchNorm) -> Tensor {
    let c = y.dim(1).unwrap();
    let stat = |t: &Tensor| {
        t.mean_keepdim(0)
            .unwrap()
            .mean_keepdim(2)
            .unwrap()
            .mean_keepdim(3)
            .unwrap()
    };
    let centred = y.broadcast_sub(&stat(y)).unwrap();
    let var = stat(&centred.sqr().unwrap());
    centred
        .broadcast_div(&(var + crate::train_ops::BN_EPS).unwrap().sqrt().unwrap())
        .unwrap()
        .broadcast_mul(&norm.gamma.reshape((1, c, 1, 1)).unwrap())
        .unwrap()
        .broadcast_add(&norm.beta.reshape((1, c, 1, 1)).unwrap())
        .unwrap()
        .relu()
        .unwrap()
}
