//! Training-time building blocks in NHWC layout, each with a hand-written backward pass on the CPU:
//! 3×3 convolutions (stride 1 or more) as one matrix product over an im2col; bias and ReLU as one op;
//! (batch normalisation,) scale, shift, ReLU and 2×2 max-pooling as one op; 1×1 heads as matrix products.
//!
//! Why: candle's CPU conv2d backward (a transposed convolution for the input, and a convolution whose kernel
//! is the whole gradient map for the weights) took six times its forward pass at the classifier's shapes,
//! and its max_pool2d backward scales a window's unique maximum by 1/4. Here the convolution's backward is
//! two matrix products plus a col2im, and bias, ReLU and max-pooling take one pass each way, routing the
//! gradient to the window's first maximum.
//! On other devices the same functions are built from candle tensor ops (views, cat, max), which are
//! device-agnostic but slower on the CPU.

use std::sync::{Arc, Mutex};

use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, Layout, Shape, Tensor};
use candle_nn::Conv2d;

/// Momentum of the running batch-norm statistics (weight of the newest batch).
const BN_MOMENTUM: f64 = 0.1;
/// Added to the variance before the square root.
pub(crate) const BN_EPS: f64 = 1e-5;

/// Batch normalisation of one convolution's outputs while training: learned scale and shift, and running
/// statistics of the pre-activations (mean and biased variance per channel) for folding the normalisation
/// into the convolution afterwards.
#[derive(Debug, Clone)]
pub(crate) struct BatchNorm {
    pub gamma: Tensor,
    pub beta: Tensor,
    pub running: Arc<Mutex<RunningStats>>,
}

/// Running per-channel mean and (biased) variance; start at 0 and 1.
#[derive(Debug, Clone)]
pub(crate) struct RunningStats {
    pub mean: Vec<f32>,
    pub var: Vec<f32>,
}

impl RunningStats {
    pub(crate) fn new(channels: usize) -> Self {
        Self {
            mean: vec![0.0; channels],
            var: vec![1.0; channels],
        }
    }

    fn update(&mut self, mean: &[f32], var: &[f32]) {
        for (r, m) in self.mean.iter_mut().zip(mean) {
            *r = ((1.0 - BN_MOMENTUM) * *r as f64 + BN_MOMENTUM * *m as f64) as f32;
        }
        for (r, v) in self.var.iter_mut().zip(var) {
            *r = ((1.0 - BN_MOMENTUM) * *r as f64 + BN_MOMENTUM * *v as f64) as f32;
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> candle_core::Result<std::sync::MutexGuard<'_, T>> {
    m.lock()
        .map_err(|_| candle_core::Error::Msg("a training op's state lock is poisoned".into()))
}

impl BatchNorm {
    /// Scale 1 and shift 0 from `vb` (`gamma`, `beta`), running statistics 0 and 1.
    pub(crate) fn new(channels: usize, vb: candle_nn::VarBuilder) -> candle_core::Result<Self> {
        Ok(Self {
            gamma: vb.get_with_hints(channels, "gamma", candle_nn::Init::Const(1.0))?,
            beta: vb.get_with_hints(channels, "beta", candle_nn::Init::Const(0.0))?,
            running: Arc::new(Mutex::new(RunningStats::new(channels))),
        })
    }

    /// The convolution that computes this normalisation of `conv`'s output (without its bias) with the
    /// running statistics: kernel · k and bias β − mean · k per output channel, k = γ / sqrt(var + eps).
    pub(crate) fn fold_into(&self, conv: &Conv2d) -> candle_core::Result<Conv2d> {
        let device = conv.weight().device();
        let stats = lock(&self.running)?.clone();
        let o = stats.mean.len();
        let mean = Tensor::from_vec(stats.mean, o, device)?;
        let var = Tensor::from_vec(stats.var, o, device)?;
        let k = self.gamma.detach().div(&(var + BN_EPS)?.sqrt()?)?;
        let weight = conv
            .weight()
            .detach()
            .broadcast_mul(&k.reshape((o, 1, 1, 1))?.to_dtype(conv.weight().dtype())?)?;
        let bias = self.beta.detach().sub(&mean.mul(&k)?)?;
        Ok(Conv2d::new(weight, Some(bias), *conv.config()))
    }
}

/// `(b, h, w, c)` → `(b, ho, wo, o)`: the 3×3 convolution with padding 1, `stride` and the kernel
/// `(o, c, 3, 3)` of `conv`, without bias, as one matrix product: the input's 3×3 neighbourhoods side by
/// side (columns ordered dy, dx, c, zero outside the image) times the kernel laid out to match.
fn conv3x3_matmul(x: &Tensor, conv: &Conv2d, stride: usize) -> candle_core::Result<Tensor> {
    let (b, h, w, c) = x.dims4()?;
    let weight = conv.weight();
    let o = weight.dim(0)?;
    let (ho, wo) = (conv3x3_out_side(h, stride), conv3x3_out_side(w, stride));
    let columns = im2col3x3(x, stride)?.reshape((b * ho * wo, 9 * c))?;
    let kernel = weight.permute((2, 3, 1, 0))?.reshape((9 * c, o))?;
    columns.matmul(&kernel)?.reshape((b, ho, wo, o))
}

/// The input side check of the pooled conv blocks.
fn ensure_even(x: &Tensor) -> candle_core::Result<()> {
    let (_, h, w, _) = x.dims4()?;
    if h % 2 != 0 || w % 2 != 0 {
        candle_core::bail!("a conv block needs an even height and width, got {h}×{w}");
    }
    Ok(())
}

/// [`NormaliseColumns`] from tensor ops, for devices other than the CPU.
fn normalise_columns_tensor_ops(
    rows: &Tensor,
    running: &Mutex<RunningStats>,
) -> candle_core::Result<Tensor> {
    let mean = rows.mean_keepdim(0)?;
    let centred = rows.broadcast_sub(&mean)?;
    let var = centred.sqr()?.mean_keepdim(0)?;
    lock(running)?.update(
        &mean.flatten_all()?.to_vec1::<f32>()?,
        &var.flatten_all()?.to_vec1::<f32>()?,
    );
    centred.broadcast_div(&(var + BN_EPS)?.sqrt()?)
}

/// [`ScaleBiasReluPool2`] from tensor ops, for devices other than the CPU.
fn scale_bias_relu_pool2_tensor_ops(
    y: &Tensor,
    scale: &Tensor,
    bias: &Tensor,
) -> candle_core::Result<Tensor> {
    max_pool2_nhwc(&y.broadcast_mul(scale)?.broadcast_add(bias)?.relu()?)
}

/// relu(maxpool2(y · scale + bias)) of an NHWC `y`, one fused op on the CPU.
fn scale_bias_relu_pool2(y: &Tensor, scale: &Tensor, bias: &Tensor) -> candle_core::Result<Tensor> {
    if y.device().is_cpu() && y.dtype() == DType::F32 {
        return y.contiguous()?.apply_op3(
            &scale.contiguous()?,
            &bias.contiguous()?,
            ScaleBiasReluPool2::default(),
        );
    }
    scale_bias_relu_pool2_tensor_ops(y, scale, bias)
}

/// relu(conv3x3(x) + bias) with padding 1 and `stride` of an NHWC tensor: `(b, h, w, c)` →
/// `(b, ho, wo, o)`, the convolution as one matrix product over the im2col, bias and ReLU one fused op on
/// the CPU. `conv`'s own stride is not read: the caller passes the layer's.
pub(crate) fn conv3x3_relu_nhwc(
    x: &Tensor,
    conv: &Conv2d,
    stride: usize,
) -> candle_core::Result<Tensor> {
    let y = conv3x3_matmul(x, conv, stride)?;
    let (b, ho, wo, o) = y.dims4()?;
    let rows = y.reshape((b * ho * wo, o))?;
    let rows = match conv.bias() {
        Some(bias) => bias_relu(&rows, bias)?,
        None => rows.relu()?,
    };
    rows.reshape((b, ho, wo, o))
}

/// relu(bn(conv3x3(x))) with padding 1 and `stride` of an NHWC tensor, batch normalisation with the batch's
/// statistics (updating the running ones), then `norm`'s scale and shift; the convolution's bias is not
/// used (the normalisation would remove it). `(b, h, w, c)` → `(b, ho, wo, o)`.
pub(crate) fn conv3x3_bn_relu_nhwc(
    x: &Tensor,
    conv: &Conv2d,
    stride: usize,
    norm: &BatchNorm,
) -> candle_core::Result<Tensor> {
    let y = conv3x3_matmul(x, conv, stride)?;
    let (b, ho, wo, o) = y.dims4()?;
    let rows = normalise_columns(&y.reshape((b * ho * wo, o))?, &norm.running)?;
    bias_relu(&rows.broadcast_mul(&norm.gamma)?, &norm.beta)?.reshape((b, ho, wo, o))
}

/// relu(rows + bias) of `(n, c)` rows and a `(c)` bias, one fused op on the CPU.
fn bias_relu(rows: &Tensor, bias: &Tensor) -> candle_core::Result<Tensor> {
    if rows.device().is_cpu() && rows.dtype() == DType::F32 {
        return rows.contiguous()?.apply_op2(&bias.contiguous()?, BiasRelu);
    }
    rows.broadcast_add(bias)?.relu()
}

/// Each column of `(n, c)` rows minus its mean over the rows, divided by its standard deviation (biased
/// variance plus eps); records the batch's statistics in `running`. One op with an analytic backward on the
/// CPU.
fn normalise_columns(
    rows: &Tensor,
    running: &Arc<Mutex<RunningStats>>,
) -> candle_core::Result<Tensor> {
    if rows.device().is_cpu() && rows.dtype() == DType::F32 {
        return rows.contiguous()?.apply_op1(NormaliseColumns {
            running: running.clone(),
            inv_std: Mutex::new(Vec::new()),
        });
    }
    normalise_columns_tensor_ops(rows, running)
}

/// 1×1 convolution of an NHWC tensor `(b, h, w, c)` → NCHW `(b, o, h, w)` (the layout the heads' maps
/// are read in), as one matrix product.
pub(crate) fn conv1x1_nhwc_to_nchw(x: &Tensor, conv: &Conv2d) -> candle_core::Result<Tensor> {
    let (b, h, w, c) = x.dims4()?;
    let o = conv.weight().dim(0)?;
    let kernel = conv.weight().reshape((o, c))?.t()?;
    let mut y = x.reshape((b * h * w, c))?.matmul(&kernel)?;
    if let Some(bias) = conv.bias() {
        y = y.broadcast_add(bias)?;
    }
    y.reshape((b, h, w, o))?.permute((0, 3, 1, 2))?.contiguous()
}

/// One convolution block of the patch classifier in NHWC layout: 3×3 'same' convolution with the kernel
/// `(o, c, 3, 3)` and bias of `conv`, ReLU, 2×2 max-pooling; `(b, h, w, c)` → `(b, h/2, w/2, o)`.
/// On the CPU, bias, ReLU and pooling are one fused op.
pub(crate) fn conv_block_nhwc(x: &Tensor, conv: &Conv2d) -> candle_core::Result<Tensor> {
    ensure_even(x)?;
    let y = conv3x3_matmul(x, conv, 1)?;
    let o = y.dim(3)?;
    let bias = match conv.bias() {
        Some(bias) => bias.clone(),
        None => Tensor::zeros(o, y.dtype(), y.device())?,
    };
    let scale = Tensor::ones(o, y.dtype(), y.device())?;
    scale_bias_relu_pool2(&y, &scale, &bias)
}

/// The same block with batch normalisation (batch statistics) between the convolution and the ReLU; the
/// convolution's bias is not used (the normalisation would remove it). Updates the running statistics.
pub(crate) fn conv_bn_block_nhwc(
    x: &Tensor,
    conv: &Conv2d,
    norm: &BatchNorm,
) -> candle_core::Result<Tensor> {
    ensure_even(x)?;
    let y = conv3x3_matmul(x, conv, 1)?;
    let (b, h, w, o) = y.dims4()?;
    let normalised = normalise_columns(&y.reshape((b * h * w, o))?, &norm.running)?;
    scale_bias_relu_pool2(&normalised.reshape((b, h, w, o))?, &norm.gamma, &norm.beta)
}

/// Output side of a 3×3 convolution with padding 1 and `stride` over `side` pixels.
pub(crate) fn conv3x3_out_side(side: usize, stride: usize) -> usize {
    (side + 2 - 3) / stride + 1
}

/// `(b, h, w, c)` → `(b, ho, wo, 9c)`: for every output pixel of a 3×3 convolution with padding 1 and
/// `stride`, its input neighbourhood (zero outside the image), ordered dy, dx, c.
pub(crate) fn im2col3x3(x: &Tensor, stride: usize) -> candle_core::Result<Tensor> {
    if stride == 0 {
        candle_core::bail!("im2col stride must be at least 1");
    }
    if x.device().is_cpu() && x.dtype() == DType::F32 {
        return x.contiguous()?.apply_op1(Im2Col3x3 { stride });
    }
    im2col3x3_tensor_ops(x, stride)
}

/// [`Im2Col3x3`] from tensor ops (strided views of the padded input), for devices other than the CPU.
fn im2col3x3_tensor_ops(x: &Tensor, stride: usize) -> candle_core::Result<Tensor> {
    let (b, h, w, c) = x.dims4()?;
    let (ho, wo) = (conv3x3_out_side(h, stride), conv3x3_out_side(w, stride));
    // Padded by one in front and enough behind that every strided view fits.
    let padded = x
        .pad_with_zeros(1, 1, 1 + stride)?
        .pad_with_zeros(2, 1, 1 + stride)?;
    let mut views = Vec::with_capacity(9);
    for dy in 0..3 {
        for dx in 0..3 {
            let view = padded
                .narrow(1, dy, ho * stride)?
                .narrow(2, dx, wo * stride)?
                .reshape((b, ho, stride, wo, stride, c))?
                .narrow(2, 0, 1)?
                .narrow(4, 0, 1)?
                .reshape((b, ho, wo, c))?;
            views.push(view);
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

/// Calls `f(dst, src)` for each in-image neighbour of every output pixel of a 3×3, padding-1 convolution
/// with `stride` over `(b, h, w)`: `dst` indexes the im2col row in units of `c`, `src` the input pixel in
/// units of `c`.
fn for_each_tap(b: usize, h: usize, w: usize, stride: usize, mut f: impl FnMut(usize, usize)) {
    let (ho, wo) = (conv3x3_out_side(h, stride), conv3x3_out_side(w, stride));
    for bi in 0..b {
        for y in 0..ho {
            for x in 0..wo {
                let row = ((bi * ho + y) * wo + x) * 9;
                for dy in 0..3 {
                    let Some(sy) = (y * stride + dy).checked_sub(1).filter(|&sy| sy < h) else {
                        continue;
                    };
                    for dx in 0..3 {
                        let Some(sx) = (x * stride + dx).checked_sub(1).filter(|&sx| sx < w) else {
                            continue;
                        };
                        f(row + dy * 3 + dx, (bi * h + sy) * w + sx);
                    }
                }
            }
        }
    }
}

struct Im2Col3x3 {
    stride: usize,
}

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
        let (ho, wo) = (
            conv3x3_out_side(h, self.stride),
            conv3x3_out_side(w, self.stride),
        );
        let x = f32_data(storage, layout)?;
        let mut out = vec![0f32; b * ho * wo * 9 * c];
        for_each_tap(b, h, w, self.stride, |dst, src| {
            out[dst * c..(dst + 1) * c].copy_from_slice(&x[src * c..(src + 1) * c]);
        });
        Ok((CpuStorage::F32(out), Shape::from((b, ho, wo, 9 * c))))
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
        for_each_tap(b, h, w, self.stride, |dst, src| {
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

/// relu(rows + bias) of `(n, c)` rows and a `(c)` bias.
struct BiasRelu;

impl CustomOp2 for BiasRelu {
    fn name(&self) -> &'static str {
        "bias-relu"
    }

    fn cpu_fwd(
        &self,
        y_storage: &CpuStorage,
        y_layout: &Layout,
        bias_storage: &CpuStorage,
        bias_layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (n, c) = y_layout.shape().dims2()?;
        let y = f32_data(y_storage, y_layout)?;
        let bias = f32_data(bias_storage, bias_layout)?;
        if bias.len() != c {
            candle_core::bail!("bias has {} values for {c} channels", bias.len());
        }
        let mut out = Vec::with_capacity(n * c);
        for row in y.chunks_exact(c) {
            out.extend(row.iter().zip(bias).map(|(v, b)| (v + b).max(0.0)));
        }
        Ok((CpuStorage::F32(out), Shape::from((n, c))))
    }

    /// The gradient passes where the output is above zero, to the rows and (summed) to the bias.
    fn bwd(
        &self,
        y: &Tensor,
        bias: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let c = bias.dim(0)?;
        let out = f32_values(res)?;
        let mut g = f32_values(grad)?;
        let mut grad_bias = vec![0f64; c];
        for (i, (g, o)) in g.iter_mut().zip(&out).enumerate() {
            if *o > 0.0 {
                grad_bias[i % c] += *g as f64;
            } else {
                *g = 0.0;
            }
        }
        let grad_bias: Vec<f32> = grad_bias.into_iter().map(|v| v as f32).collect();
        Ok((
            Some(Tensor::from_vec(g, y.shape(), y.device())?),
            Some(Tensor::from_vec(grad_bias, c, bias.device())?),
        ))
    }
}

/// relu(max over each 2×2 window of y·scale + bias): scale and bias are the same for the four values of
/// a window, so the window's maximum of `y` (its minimum where the scale is negative) is picked first.
/// Remembers each pick for the backward pass.
#[derive(Default)]
struct ScaleBiasReluPool2 {
    /// Index into `y` of each output's pick, in output order, and the value there.
    picks: Mutex<Vec<(usize, f32)>>,
}

impl CustomOp3 for ScaleBiasReluPool2 {
    fn name(&self) -> &'static str {
        "scale-bias-relu-pool2-nhwc"
    }

    fn cpu_fwd(
        &self,
        y_storage: &CpuStorage,
        y_layout: &Layout,
        scale_storage: &CpuStorage,
        scale_layout: &Layout,
        bias_storage: &CpuStorage,
        bias_layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (b, h, w, c) = y_layout.shape().dims4()?;
        let y = f32_data(y_storage, y_layout)?;
        let scale = f32_data(scale_storage, scale_layout)?;
        let bias = f32_data(bias_storage, bias_layout)?;
        if scale.len() != c || bias.len() != c {
            candle_core::bail!(
                "scale and bias have {} and {} values for {c} channels",
                scale.len(),
                bias.len()
            );
        }
        let (oh, ow) = (h / 2, w / 2);
        let mut picks = Vec::with_capacity(b * oh * ow * c);
        let mut out = Vec::with_capacity(b * oh * ow * c);
        for bi in 0..b {
            for oy in 0..oh {
                for ox in 0..ow {
                    let corner = ((bi * h + 2 * oy) * w + 2 * ox) * c;
                    let taps = [corner + c, corner + w * c, corner + (w + 1) * c];
                    for ch in 0..c {
                        let mut best = corner + ch;
                        for &t in &taps {
                            let better = if scale[ch] >= 0.0 {
                                y[t + ch] > y[best]
                            } else {
                                y[t + ch] < y[best]
                            };
                            if better {
                                best = t + ch;
                            }
                        }
                        picks.push((best, y[best]));
                        out.push((y[best] * scale[ch] + bias[ch]).max(0.0));
                    }
                }
            }
        }
        *lock(&self.picks)? = picks;
        Ok((CpuStorage::F32(out), Shape::from((b, oh, ow, c))))
    }

    /// An output above zero passes its gradient to its window's pick, to the scale and to the bias; an
    /// output clipped by the ReLU passes none.
    fn bwd(
        &self,
        y: &Tensor,
        scale: &Tensor,
        bias: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let c = bias.dim(0)?;
        let scale_values = f32_values(scale)?;
        let out = f32_values(res)?;
        let g = f32_values(grad)?;
        let picks = lock(&self.picks)?;
        let mut grad_y = vec![0f32; y.elem_count()];
        let mut grad_scale = vec![0f32; c];
        let mut grad_bias = vec![0f32; c];
        for (i, ((&(at, value), &o), &g)) in picks.iter().zip(&out).zip(&g).enumerate() {
            if o > 0.0 {
                let ch = i % c;
                grad_y[at] = g * scale_values[ch];
                grad_scale[ch] += g * value;
                grad_bias[ch] += g;
            }
        }
        Ok((
            Some(Tensor::from_vec(grad_y, y.shape(), y.device())?),
            Some(Tensor::from_vec(grad_scale, c, scale.device())?),
            Some(Tensor::from_vec(grad_bias, c, bias.device())?),
        ))
    }
}

/// Batch normalisation without scale and shift of `(n, c)` rows: each column to zero mean and unit
/// (biased) variance over the batch. Feeds the batch's statistics into the running ones.
struct NormaliseColumns {
    running: Arc<Mutex<RunningStats>>,
    /// 1/sqrt(var + eps) per column, for the backward pass.
    inv_std: Mutex<Vec<f32>>,
}

impl CustomOp1 for NormaliseColumns {
    fn name(&self) -> &'static str {
        "batch-norm-columns"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (n, c) = layout.shape().dims2()?;
        if n == 0 {
            candle_core::bail!("batch norm over an empty batch");
        }
        let y = f32_data(storage, layout)?;
        let mut sum = vec![0f64; c];
        for row in y.chunks_exact(c) {
            for (s, v) in sum.iter_mut().zip(row) {
                *s += *v as f64;
            }
        }
        let mean: Vec<f64> = sum.iter().map(|s| s / n as f64).collect();
        let mut sq = vec![0f64; c];
        for row in y.chunks_exact(c) {
            for ((s, v), m) in sq.iter_mut().zip(row).zip(&mean) {
                let d = *v as f64 - m;
                *s += d * d;
            }
        }
        let var: Vec<f64> = sq.iter().map(|s| s / n as f64).collect();
        let inv_std: Vec<f32> = var
            .iter()
            .map(|v| (1.0 / (v + BN_EPS).sqrt()) as f32)
            .collect();
        let mean_f32: Vec<f32> = mean.iter().map(|&m| m as f32).collect();
        let mut out = Vec::with_capacity(y.len());
        for row in y.chunks_exact(c) {
            for ((v, m), k) in row.iter().zip(&mean_f32).zip(&inv_std) {
                out.push((v - m) * k);
            }
        }
        let var_f32: Vec<f32> = var.iter().map(|&v| v as f32).collect();
        lock(&self.running)?.update(&mean_f32, &var_f32);
        *lock(&self.inv_std)? = inv_std;
        Ok((CpuStorage::F32(out), Shape::from((n, c))))
    }

    /// dy = inv_std · (g − mean(g) − x̂ · mean(g · x̂)), per column.
    fn bwd(
        &self,
        _arg: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let (n, c) = res.dims2()?;
        let x_hat = f32_values(res)?;
        let g = f32_values(grad)?;
        let inv_std = lock(&self.inv_std)?;
        let mut sum_g = vec![0f64; c];
        let mut sum_gx = vec![0f64; c];
        for (gr, xr) in g.chunks_exact(c).zip(x_hat.chunks_exact(c)) {
            for ch in 0..c {
                sum_g[ch] += gr[ch] as f64;
                sum_gx[ch] += (gr[ch] * xr[ch]) as f64;
            }
        }
        let mean_g: Vec<f32> = sum_g.iter().map(|s| (s / n as f64) as f32).collect();
        let mean_gx: Vec<f32> = sum_gx.iter().map(|s| (s / n as f64) as f32).collect();
        let mut out = Vec::with_capacity(g.len());
        for (gr, xr) in g.chunks_exact(c).zip(x_hat.chunks_exact(c)) {
            for ch in 0..c {
                out.push(inv_std[ch] * (gr[ch] - mean_g[ch] - xr[ch] * mean_gx[ch]));
            }
        }
        Ok(Some(Tensor::from_vec(out, (n, c), res.device())?))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
