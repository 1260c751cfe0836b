//! Training-time building blocks in NHWC layout: a 3×3 'same' convolution as one matrix product over an
//! im2col, followed by bias, ReLU and 2×2 max-pooling fused into one op, each with a hand-written backward
//! pass on the CPU.
//!
//! Why: candle's CPU conv2d backward (a transposed convolution for the input, and a convolution whose kernel
//! is the whole gradient map for the weights) took six times its forward pass at the classifier's shapes,
//! and its max_pool2d backward scales a window's unique maximum by 1/4. Here the convolution's backward is
//! two matrix products plus a col2im, and bias, ReLU and max-pooling take one pass each way, routing the
//! gradient to the window's first maximum.
//! On other devices the same functions are built from candle tensor ops (views, cat, max), which are
//! device-agnostic but slower on the CPU.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, DType, Layout, Shape, Tensor};
use candle_nn::Conv2d;

/// One convolution block of the patch classifier in NHWC layout: 3×3 'same' convolution with the kernel
/// `(o, c, 3, 3)` and bias of `conv`, ReLU, 2×2 max-pooling; `(b, h, w, c)` → `(b, h/2, w/2, o)`.
///
/// The convolution is one matrix product: the nine shifted views of the zero-padded input side by side
/// (columns ordered dy, dx, c) times the kernel laid out to match. On the CPU, bias, ReLU and pooling are
/// one fused op (ReLU and max commute, and the bias is the same over a window).
pub(crate) fn conv_block_nhwc(x: &Tensor, conv: &Conv2d) -> candle_core::Result<Tensor> {
    let (b, h, w, c) = x.dims4()?;
    let weight = conv.weight();
    let o = weight.dim(0)?;
    let columns = im2col3x3(x)?.reshape((b * h * w, 9 * c))?;
    let kernel = weight.permute((2, 3, 1, 0))?.reshape((9 * c, o))?;
    let y = columns.matmul(&kernel)?.reshape((b, h, w, o))?;
    let bias = match conv.bias() {
        Some(bias) => bias.clone(),
        None => Tensor::zeros(o, y.dtype(), y.device())?,
    };
    if h % 2 != 0 || w % 2 != 0 {
        candle_core::bail!("a conv block needs an even height and width, got {h}×{w}");
    }
    if y.device().is_cpu() && y.dtype() == DType::F32 {
        return y.apply_op2(&bias.contiguous()?, BiasReluPool2::default());
    }
    max_pool2_nhwc(&y.broadcast_add(&bias)?.relu()?)
}

/// `(b, h, w, c)` → `(b, h, w, 9c)`: for every pixel its 3×3 neighbourhood (zero outside the image),
/// ordered dy, dx, c.
pub(crate) fn im2col3x3(x: &Tensor) -> candle_core::Result<Tensor> {
    if x.device().is_cpu() && x.dtype() == DType::F32 {
        return x.contiguous()?.apply_op1(Im2Col3x3);
    }
    let (_, h, w, _) = x.dims4()?;
    let padded = x.pad_with_zeros(1, 1, 1)?.pad_with_zeros(2, 1, 1)?;
    let mut views = Vec::with_capacity(9);
    for dy in 0..3 {
        for dx in 0..3 {
            views.push(padded.narrow(1, dy, h)?.narrow(2, dx, w)?);
        }
    }
    Tensor::cat(&views, 3)
}

/// 2×2 max-pooling with stride 2 of an NHWC tensor `(b, h, w, c)` → `(b, h/2, w/2, c)`, from tensor ops.
fn max_pool2_nhwc(x: &Tensor) -> candle_core::Result<Tensor> {
    let (b, h, w, c) = x.dims4()?;
    x.reshape((b, h / 2, 2, w / 2, 2, c))?.max(4)?.max(2)
}

/// The contiguous f32 data of a CPU storage.
fn f32_data<'a>(storage: &'a CpuStorage, layout: &Layout) -> candle_core::Result<&'a [f32]> {
    let CpuStorage::F32(data) = storage else {
        candle_core::bail!("expected f32 data");
    };
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => candle_core::bail!("expected a contiguous tensor"),
    }
}

/// The contiguous f32 values of a tensor, copied.
fn f32_values(t: &Tensor) -> candle_core::Result<Vec<f32>> {
    t.contiguous()?.flatten_all()?.to_vec1::<f32>()
}

/// Calls `f(dst_offset, src_offset)` for each in-image neighbour of every pixel: `dst` indexes the im2col
/// row in units of `c`, `src` the pixel in units of `c`.
fn for_each_tap(b: usize, h: usize, w: usize, mut f: impl FnMut(usize, usize)) {
    for bi in 0..b {
        for y in 0..h {
            for x in 0..w {
                let row = ((bi * h + y) * w + x) * 9;
                for dy in 0..3 {
                    let Some(sy) = (y + dy).checked_sub(1).filter(|&sy| sy < h) else {
                        continue;
                    };
                    for dx in 0..3 {
                        let Some(sx) = (x + dx).checked_sub(1).filter(|&sx| sx < w) else {
                            continue;
                        };
                        f(row + dy * 3 + dx, (bi * h + sy) * w + sx);
                    }
                }
            }
        }
    }
}

struct Im2Col3x3;

impl CustomOp1 for Im2Col3x3 {
    fn name(&self) -> &'static str {
        "im2col3x3-nhwc"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (b, h, w, c) = layout.shape().dims4()?;
        let x = f32_data(storage, layout)?;
        let mut out = vec![0f32; b * h * w * 9 * c];
        for_each_tap(b, h, w, |dst, src| {
            out[dst * c..(dst + 1) * c].copy_from_slice(&x[src * c..(src + 1) * c]);
        });
        Ok((CpuStorage::F32(out), Shape::from((b, h, w, 9 * c))))
    }

    /// col2im: every input pixel collects the gradient of each im2col entry it was copied to.
    fn bwd(
        &self,
        arg: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let (b, h, w, c) = arg.dims4()?;
        let g = f32_values(grad)?;
        let mut out = vec![0f32; b * h * w * c];
        for_each_tap(b, h, w, |dst, src| {
            for (o, v) in out[src * c..(src + 1) * c]
                .iter_mut()
                .zip(&g[dst * c..(dst + 1) * c])
            {
                *o += v;
            }
        });
        Ok(Some(Tensor::from_vec(out, (b, h, w, c), arg.device())?))
    }
}

/// relu(max over each 2×2 window of y + bias): the bias is the same for the four values of a window, so
/// the window's maximum of `y` is taken first. Remembers where each maximum was for the backward pass.
#[derive(Default)]
struct BiasReluPool2 {
    /// Index into `y` of each output's window maximum, in output order.
    argmax: std::sync::Mutex<Vec<usize>>,
}

impl CustomOp2 for BiasReluPool2 {
    fn name(&self) -> &'static str {
        "bias-relu-pool2-nhwc"
    }

    fn cpu_fwd(
        &self,
        y_storage: &CpuStorage,
        y_layout: &Layout,
        bias_storage: &CpuStorage,
        bias_layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (b, h, w, c) = y_layout.shape().dims4()?;
        let y = f32_data(y_storage, y_layout)?;
        let bias = f32_data(bias_storage, bias_layout)?;
        if bias.len() != c {
            candle_core::bail!("bias has {} values for {c} channels", bias.len());
        }
        let (oh, ow) = (h / 2, w / 2);
        let mut argmax = Vec::with_capacity(b * oh * ow * c);
        let mut out = Vec::with_capacity(b * oh * ow * c);
        for bi in 0..b {
            for oy in 0..oh {
                for ox in 0..ow {
                    let corner = ((bi * h + 2 * oy) * w + 2 * ox) * c;
                    let taps = [corner + c, corner + w * c, corner + (w + 1) * c];
                    for (ch, bias) in bias.iter().enumerate() {
                        let mut best = corner + ch;
                        for &t in &taps {
                            if y[t + ch] > y[best] {
                                best = t + ch;
                            }
                        }
                        argmax.push(best);
                        out.push((y[best] + bias).max(0.0));
                    }
                }
            }
        }
        *self
            .argmax
            .lock()
            .map_err(|_| candle_core::Error::Msg("poisoned".into()))? = argmax;
        Ok((CpuStorage::F32(out), Shape::from((b, oh, ow, c))))
    }

    /// An output above zero passes its gradient to its window's maximum and to the bias; an output
    /// clipped by the ReLU passes none.
    fn bwd(
        &self,
        y: &Tensor,
        bias: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let c = bias.dim(0)?;
        let out = f32_values(res)?;
        let g = f32_values(grad)?;
        let argmax = self
            .argmax
            .lock()
            .map_err(|_| candle_core::Error::Msg("poisoned".into()))?;
        let mut grad_y = vec![0f32; y.elem_count()];
        let mut grad_bias = vec![0f32; c];
        for (i, ((&at, &o), &g)) in argmax.iter().zip(&out).zip(&g).enumerate() {
            if o > 0.0 {
                grad_y[at] = g;
                grad_bias[i % c] += g;
            }
        }
        Ok((
            Some(Tensor::from_vec(grad_y, y.shape(), y.device())?),
            Some(Tensor::from_vec(grad_bias, c, bias.device())?),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{flat, max_abs_diff, random_tensor};
    use candle_core::Var;

    /// The CPU ops against the device-agnostic tensor-op versions, in value and gradient.
    fn check_against_tensor_ops(
        op: fn(&Tensor) -> candle_core::Result<Tensor>,
        reference: fn(&Tensor) -> candle_core::Result<Tensor>,
        shape: &[usize],
    ) {
        let x = Var::from_tensor(&random_tensor(shape, -1.0, 1.0, 5)).unwrap();
        let got = op(x.as_tensor()).unwrap();
        let want = reference(x.as_tensor()).unwrap();
        assert_eq!(got.dims(), want.dims());
        assert_eq!(flat(&got), flat(&want));
        let weights = random_tensor(got.dims(), -1.0, 1.0, 6);
        let grad = |y: &Tensor| {
            let grads = y
                .mul(&weights)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            flat(grads.get(x.as_tensor()).unwrap())
        };
        assert!(max_abs_diff(&grad(&got), &grad(&want)) <= 1e-5);
    }

    fn im2col_reference(x: &Tensor) -> candle_core::Result<Tensor> {
        // The non-CPU branch of im2col3x3.
        let (_, h, w, _) = x.dims4()?;
        let padded = x.pad_with_zeros(1, 1, 1)?.pad_with_zeros(2, 1, 1)?;
        let mut views = Vec::new();
        for dy in 0..3 {
            for dx in 0..3 {
                views.push(padded.narrow(1, dy, h)?.narrow(2, dx, w)?);
            }
        }
        Tensor::cat(&views, 3)
    }

    #[test]
    fn im2col_matches_padded_views_in_value_and_gradient() {
        check_against_tensor_ops(im2col3x3, im2col_reference, &[2, 5, 4, 3]);
        check_against_tensor_ops(im2col3x3, im2col_reference, &[1, 1, 1, 2]);
    }

    /// The fused CPU block against the same block from candle tensor ops, in value and gradient (of the
    /// input, the kernel and the bias).
    #[test]
    fn conv_block_matches_tensor_ops_in_value_and_gradient() {
        let (varmap, vb) = crate::testutil::varmap_builder();
        let conv = candle_nn::conv2d(3, 5, 3, Default::default(), vb.pp("c")).unwrap();
        let x = Var::from_tensor(&random_tensor(&[2, 6, 4, 3], -1.0, 1.0, 7)).unwrap();
        let got = conv_block_nhwc(x.as_tensor(), &conv).unwrap();
        let y = im2col_reference(x.as_tensor())
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
        assert!(values.iter().any(|&v| v == 0.0) && values.iter().any(|&v| v > 0.0));
        let weights = random_tensor(got.dims(), -1.0, 1.0, 8);
        let grads_got = got
            .mul(&weights)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let grads_want = want
            .mul(&weights)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let mut tensors = vec![x.as_tensor().clone()];
        tensors.extend(varmap.all_vars().iter().map(|v| v.as_tensor().clone()));
        for t in tensors {
            let a = flat(grads_got.get(&t).unwrap());
            let b = flat(grads_want.get(&t).unwrap());
            assert!(max_abs_diff(&a, &b) <= 1e-5, "gradient of {:?}", t.dims());
        }
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
}
