//! Every training op against candle's own tensor ops, in value and gradient.

use super::*;
use crate::testutil::{flat, max_abs_diff, random_tensor};
use candle_core::Var;
use candle_nn::Module;

/// The CPU ops against the device-agnostic tensor-op versions, in value and gradient.
fn check_against_tensor_ops(
    op: impl Fn(&Tensor) -> candle_core::Result<Tensor>,
    reference: impl Fn(&Tensor) -> candle_core::Result<Tensor>,
    shape: &[usize],
) {
    let x = Var::from_tensor(&random_tensor(shape, -1.0, 1.0, 5)).unwrap();
    let got = op(x.as_tensor()).unwrap();
    let want = reference(x.as_tensor()).unwrap();
    assert_eq!(got.dims(), want.dims());
    assert_eq!(flat(&got), flat(&want));
    let weights = random_tensor(got.dims(), -1.0, 1.0, 6);
    let grad = |y: &Tensor| {
        let grads = crate::testutil::weighted_grads(y, &weights);
        flat(grads.get(x.as_tensor()).unwrap())
    };
    assert!(max_abs_diff(&grad(&got), &grad(&want)) <= 1e-5);
}

#[test]
fn im2col_matches_padded_views_in_value_and_gradient() {
    for stride in [1, 2, 3] {
        for shape in [[2, 5, 4, 3], [1, 1, 1, 2], [1, 6, 7, 2]] {
            check_against_tensor_ops(
                |x| im2col3x3(x, stride),
                |x| im2col3x3_tensor_ops(x, stride),
                &shape,
            );
        }
    }
}

/// The strided conv + ReLU and the 1×1 head against candle's conv2d: values, and gradients against
/// the same graph with candle's broadcast add and ReLU.
#[test]
fn strided_conv_relu_and_head_match_candle() {
    let (varmap, vb) = crate::testutil::varmap_builder();
    let cfg = candle_nn::Conv2dConfig {
        padding: 1,
        stride: 2,
        ..Default::default()
    };
    let conv = candle_nn::conv2d(3, 4, 3, cfg, vb.pp("c")).unwrap();
    let head = candle_nn::conv2d(4, 2, 1, Default::default(), vb.pp("h")).unwrap();
    // Even sides: candle's own conv2d backward fails on odd ones at stride 2.
    let x = random_tensor(&[2, 3, 8, 6], -1.0, 1.0, 16);
    let want = head
        .forward(&conv.forward(&x).unwrap().relu().unwrap())
        .unwrap();
    let nhwc = x.permute((0, 2, 3, 1)).unwrap();
    let got = conv1x1_nhwc_to_nchw(&conv3x3_relu_nhwc(&nhwc, &conv, 2).unwrap(), &head).unwrap();
    assert_eq!(got.dims(), want.dims());
    assert!(max_abs_diff(&flat(&got), &flat(&want)) <= 1e-5);
    let weights = random_tensor(got.dims(), -1.0, 1.0, 17);
    let grads_got = crate::testutil::weighted_grads(&got, &weights);
    let grads_want = crate::testutil::weighted_grads(&want, &weights);
    for var in varmap.all_vars() {
        let a = flat(grads_got.get(var.as_tensor()).unwrap());
        let b = flat(grads_want.get(var.as_tensor()).unwrap());
        assert!(max_abs_diff(&a, &b) <= 1e-4, "gradient of {:?}", var.dims());
    }
}

/// im2col times the laid-out kernel is candle's conv2d with padding 1, at strides 1 and 2.
#[test]
fn im2col_matmul_is_a_strided_convolution() {
    let kernel = random_tensor(&[4, 3, 3, 3], -1.0, 1.0, 14);
    let x = random_tensor(&[2, 3, 9, 6], -1.0, 1.0, 15);
    for stride in [1, 2] {
        let want = x.conv2d(&kernel, 1, stride, 1, 1).unwrap();
        let (ho, wo) = (conv3x3_out_side(9, stride), conv3x3_out_side(6, stride));
        assert_eq!(want.dims(), &[2, 4, ho, wo]);
        let got = im2col3x3(&x.permute((0, 2, 3, 1)).unwrap(), stride)
            .unwrap()
            .reshape((2 * ho * wo, 27))
            .unwrap()
            .matmul(
                &kernel
                    .permute((2, 3, 1, 0))
                    .unwrap()
                    .reshape((27, 4))
                    .unwrap(),
            )
            .unwrap()
            .reshape((2, ho, wo, 4))
            .unwrap()
            .permute((0, 3, 1, 2))
            .unwrap();
        assert!(max_abs_diff(&flat(&got), &flat(&want)) <= 1e-5);
    }
}

/// The fused CPU block against the same block from candle tensor ops, in value and gradient (of the
/// input, the kernel and the bias).
#[test]
fn conv_block_matches_tensor_ops_in_value_and_gradient() {
    let (varmap, vb) = crate::testutil::varmap_builder();
    let conv = candle_nn::conv2d(3, 5, 3, Default::default(), vb.pp("c")).unwrap();
    crate::testutil::seed_vars(&varmap, 200);
    let x = Var::from_tensor(&random_tensor(&[2, 6, 4, 3], -1.0, 1.0, 7)).unwrap();
    let got = conv_block_nhwc(x.as_tensor(), &conv).unwrap();
    let y = im2col3x3_tensor_ops(x.as_tensor(), 1)
        .unwrap()
        .reshape((48, 27))
        .unwrap()
        .matmul(
            &conv
                .weight()
                .permute((2, 3, 1, 0))
                .unwrap()
                .reshape((27, 5))
                .unwrap(),
        )
        .unwrap()
        .reshape((2, 6, 4, 5))
        .unwrap();
    let want = max_pool2_nhwc(
        &y.broadcast_add(conv.bias().unwrap())
            .unwrap()
            .relu()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(got.dims(), &[2, 3, 2, 5]);
    assert!(max_abs_diff(&flat(&got), &flat(&want)) <= 1e-5);
    // Some outputs must be clipped by the ReLU and some not, or the test would miss a branch.
    let values = flat(&got);
    assert!(values.contains(&0.0) && values.iter().any(|&v| v > 0.0));
    let weights = random_tensor(got.dims(), -1.0, 1.0, 8);
    let grads_got = crate::testutil::weighted_grads(&got, &weights);
    let grads_want = crate::testutil::weighted_grads(&want, &weights);
    let mut tensors = vec![x.as_tensor().clone()];
    tensors.extend(varmap.all_vars().iter().map(|v| v.as_tensor().clone()));
    for t in tensors {
        let a = flat(grads_got.get(&t).unwrap());
        let b = flat(grads_want.get(&t).unwrap());
        assert!(max_abs_diff(&a, &b) <= 1e-5, "gradient of {:?}", t.dims());
    }
}

/// The CPU batch-norm and scale/bias/ReLU/pool ops against their tensor-op versions (used on other
/// devices): values, gradients of input, scale and shift, and the running statistics.
#[test]
fn batch_norm_ops_match_tensor_ops() {
    let y = Var::from_tensor(&random_tensor(&[2, 4, 6, 3], -1.0, 2.0, 10)).unwrap();
    let scale = Var::from_tensor(&random_tensor(&[3], -1.5, 1.5, 11)).unwrap();
    let shift = Var::from_tensor(&random_tensor(&[3], -0.5, 0.5, 12)).unwrap();
    let run = |cpu_ops: bool| {
        let running = Mutex::new(RunningStats::new(3));
        let rows = y.as_tensor().reshape((48, 3)).unwrap();
        let normalised = if cpu_ops {
            rows.apply_op1(NormaliseColumns {
                running: Arc::new(Mutex::new(RunningStats::new(3))),
                inv_std: Mutex::new(Vec::new()),
            })
            .unwrap()
        } else {
            normalise_columns_tensor_ops(&rows, &running).unwrap()
        };
        let normalised = normalised.reshape((2, 4, 6, 3)).unwrap();
        let out = if cpu_ops {
            scale_bias_relu_pool2(&normalised, scale.as_tensor(), shift.as_tensor())
        } else {
            scale_bias_relu_pool2_tensor_ops(&normalised, scale.as_tensor(), shift.as_tensor())
        }
        .unwrap();
        let weights = random_tensor(out.dims(), -1.0, 1.0, 13);
        let grads = crate::testutil::weighted_grads(&out, &weights);
        let g = |t: &Tensor| flat(grads.get(t).unwrap());
        (
            flat(&out),
            [g(y.as_tensor()), g(scale.as_tensor()), g(shift.as_tensor())],
        )
    };
    let (got, got_grads) = run(true);
    let (want, want_grads) = run(false);
    assert!(max_abs_diff(&got, &want) <= 1e-5);
    assert!(got.contains(&0.0) && got.iter().any(|&v| v > 0.0));
    for (a, b) in got_grads.iter().zip(&want_grads) {
        assert!(max_abs_diff(a, b) <= 1e-4, "{a:?} vs {b:?}");
    }
    // Running statistics: one update with momentum 0.1 from (0, 1).
    let running = Mutex::new(RunningStats::new(3));
    let rows = y.as_tensor().reshape((48, 3)).unwrap();
    normalise_columns_tensor_ops(&rows, &running).unwrap();
    let op_running = Arc::new(Mutex::new(RunningStats::new(3)));
    rows.apply_op1(NormaliseColumns {
        running: op_running.clone(),
        inv_std: Mutex::new(Vec::new()),
    })
    .unwrap();
    let (a, b) = (running.lock().unwrap(), op_running.lock().unwrap());
    assert!(max_abs_diff(&a.mean, &b.mean) <= 1e-6 && max_abs_diff(&a.var, &b.var) <= 1e-6);
    assert!(a.mean.iter().all(|m| m.abs() > 1e-4) && a.var.iter().all(|v| *v != 1.0));
}

#[test]
fn conv_block_passes_a_tied_windows_gradient_once_and_rejects_odd_sides() {
    let (_varmap, vb) = crate::testutil::varmap_builder();
    let conv = candle_nn::conv2d(1, 1, 3, Default::default(), vb.pp("c")).unwrap();
    // A zero kernel makes every pre-activation equal to the bias: a four-way tie per window.
    let zero = Tensor::zeros((1, 1, 3, 3), DType::F32, &candle_core::Device::Cpu).unwrap();
    let one = Tensor::ones(1, DType::F32, &candle_core::Device::Cpu).unwrap();
    let conv = candle_nn::Conv2d::new(zero, Some(one), *conv.config());
    let x = Var::from_tensor(&random_tensor(&[1, 2, 2, 1], 0.0, 1.0, 9)).unwrap();
    let bias = Var::from_tensor(conv.bias().unwrap()).unwrap();
    let conv = candle_nn::Conv2d::new(
        conv.weight().clone(),
        Some(bias.as_tensor().clone()),
        *conv.config(),
    );
    let y = conv_block_nhwc(x.as_tensor(), &conv).unwrap();
    assert_eq!(flat(&y), vec![1.0]);
    // d y / d bias is 1: the gradient goes to one of the four tied values, not to each.
    let grads = y.sum_all().unwrap().backward().unwrap();
    assert_eq!(flat(grads.get(bias.as_tensor()).unwrap()), vec![1.0]);
    let odd = Tensor::zeros((1, 3, 2, 1), DType::F32, &candle_core::Device::Cpu).unwrap();
    let err = conv_block_nhwc(&odd, &conv).unwrap_err().to_string();
    assert!(err.contains("3×2"), "{err}");
}
