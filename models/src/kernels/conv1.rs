//! The first convolution of both nets on the CPU's integer path: 3×3, padding 1, 3 input channels, in f32.
//! Its 27 taps are too few for the integer kernels' whole blocks and its normalised input is signed, so it is
//! a direct convolution over a zero-bordered image with the bias and ReLU fused, writing NHWC. Not candle's
//! sgemm over an im2col: its multi-megabyte tensors per call (the im2col, the product, its copy out) cost
//! more in fresh pages and thread hand-offs than the arithmetic once the pipeline's other stages run between
//! calls.

// `unsafe` only to call the instruction-set copies of the safe body, after checking the CPU has them.
#![allow(unsafe_code)]

use crate::flops::conv_out_side_px;

/// Taps of conv1: 3 channels × 3 × 3.
const CONV1_TAPS: usize = 27;
/// conv1's output channels per block of the f32 kernel: the shipped glance net's 16 (the patch net's 32 make two blocks), whose running sums stay in
/// four SSE registers while the 27 taps are unrolled.
const LANES: usize = 16;

/// conv1 in f32: 3×3, padding 1, on the normalised image.
#[derive(Debug)]
pub(crate) struct Conv1 {
    pub(crate) c_out: usize,
    pub(crate) stride: usize,
    /// `c_out / LANES` (rounded up) blocks of 27 taps in `(c, dy, dx)` order, each tap the weights of the
    /// block's output channels (zero past `c_out`).
    weights: Vec<[[f32; LANES]; CONV1_TAPS]>,
    /// One per block, zero past `c_out`.
    bias: Vec<[f32; LANES]>,
}

/// One `(3, h, w)` NCHW image with each value mapped by `normalise` (as the float net normalises its input),
/// with a border of one zero (the float net's padding, after normalisation) around each plane:
/// `(3, h + 2, w + 2)`, what [`Conv1::forward`] reads.
pub(crate) fn pad_zero_border(
    image: &[f32],
    h: usize,
    w: usize,
    padded: &mut Vec<f32>,
    normalise: impl Fn(f32) -> f32,
) {
    let (hp, wp) = (h + 2, w + 2);
    padded.clear();
    padded.resize(3 * hp * wp, 0.0);
    for (src, dst) in image
        .chunks_exact(h * w)
        .zip(padded.chunks_exact_mut(hp * wp))
    {
        for (src_line, dst_line) in src.chunks_exact(w).zip(dst.chunks_exact_mut(wp).skip(1)) {
            for (d, &s) in dst_line[1..=w].iter_mut().zip(src_line) {
                *d = normalise(s);
            }
        }
    }
}

impl Conv1 {
    /// From the float kernel `(c_out, 3, 3, 3)` and bias, flattened.
    pub(crate) fn new(kernel: &[f32], bias: &[f32], c_out: usize, stride: usize) -> Self {
        let blocks = c_out.div_ceil(LANES);
        let mut weights = vec![[[0f32; LANES]; CONV1_TAPS]; blocks];
        let mut block_bias = vec![[0f32; LANES]; blocks];
        for (o, (taps, &b)) in kernel.chunks_exact(CONV1_TAPS).zip(bias).enumerate() {
            let (block, lane) = (o / LANES, o % LANES);
            block_bias[block][lane] = b;
            for (t, &v) in taps.iter().enumerate() {
                weights[block][t][lane] = v;
            }
        }
        Self {
            c_out,
            stride,
            weights,
            bias: block_bias,
        }
    }

    /// relu(conv1(image) + bias) of an `(h, w)` image given as [`pad_zero_border`] leaves it, into `out`
    /// (NHWC, `ho · wo · c_out`). On the calling thread: splitting it over the two cores of the reference
    /// CPU measured no faster. The same arithmetic in the same order on every path, so every path gives the
    /// same bits; the wider paths only hold more of a block's lanes per instruction (the default x86-64
    /// target compiles to 4-lane SSE2).
    pub(crate) fn forward(&self, padded: &[f32], hw: (usize, usize), out: &mut [f32]) {
        match Path::detected() {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `Path::detected` returns `Avx512` only when the CPU has AVX-512F.
            Path::Avx512 => unsafe { self.forward_avx512(padded, hw, out) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `Path::detected` returns `Avx2` only when the CPU has AVX2.
            Path::Avx2 => unsafe { self.forward_avx2(padded, hw, out) },
            Path::Portable => self.forward_portable(padded, hw, out),
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn forward_avx512(&self, padded: &[f32], hw: (usize, usize), out: &mut [f32]) {
        self.forward_portable(padded, hw, out);
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn forward_avx2(&self, padded: &[f32], hw: (usize, usize), out: &mut [f32]) {
        self.forward_portable(padded, hw, out);
    }

    /// The body of every path: inlined into each so it compiles for that path's instruction set.
    #[inline(always)]
    fn forward_portable(&self, padded: &[f32], (h, w): (usize, usize), out: &mut [f32]) {
        let (hp, wp) = (h + 2, w + 2);
        let wo = conv_out_side_px(w, 3, self.stride, 1);
        for (r, out_row) in out.chunks_exact_mut(wo * self.c_out).enumerate() {
            // Padded rows y0 ..= y0 + 2 and columns x0 ..= x0 + 2: at most h + 1 and w + 1.
            let y0 = r * self.stride;
            for (ox, px) in out_row.chunks_exact_mut(self.c_out).enumerate() {
                let x0 = ox * self.stride;
                let mut taps = [0f32; CONV1_TAPS];
                for (channel, plane) in taps.chunks_exact_mut(9).zip(padded.chunks_exact(hp * wp)) {
                    for (dy, tap_row) in channel.chunks_exact_mut(3).enumerate() {
                        let start = (y0 + dy) * wp + x0;
                        tap_row.copy_from_slice(&plane[start..start + 3]);
                    }
                }
                for ((out_block, block), bias) in
                    px.chunks_mut(LANES).zip(&self.weights).zip(&self.bias)
                {
                    let mut acc = *bias;
                    for (&v, tap_weights) in taps.iter().zip(block) {
                        for (a, &wv) in acc.iter_mut().zip(tap_weights) {
                            *a += v * wv;
                        }
                    }
                    for (o, a) in out_block.iter_mut().zip(acc) {
                        *o = a.max(0.0);
                    }
                }
            }
        }
    }
}

/// The instruction set [`Conv1::forward`] runs on, detected once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Path {
    #[cfg(target_arch = "x86_64")]
    Avx512,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    Portable,
}

impl Path {
    fn detected() -> Path {
        static DETECTED: std::sync::OnceLock<Path> = std::sync::OnceLock::new();
        *DETECTED.get_or_init(|| {
            #[cfg(target_arch = "x86_64")]
            {
                if std::arch::is_x86_feature_detected!("avx512f") {
                    return Path::Avx512;
                }
                if std::arch::is_x86_feature_detected!("avx2") {
                    return Path::Avx2;
                }
            }
            Path::Portable
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// The direct convolution against a plain six-loop reference with zero padding, stride 1 and 2, with
    /// more output channels than one block and fewer than two.
    #[test]
    fn direct_conv1_matches_the_textbook_convolution() {
        let (h, w, c_out) = (7usize, 9usize, 20usize);
        let image: Vec<f32> = (0..3 * h * w)
            .map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0)
            .collect();
        let kernel: Vec<f32> = (0..c_out * 27)
            .map(|i| ((i * 53 % 89) as f32 / 44.0) - 1.0)
            .collect();
        let bias: Vec<f32> = (0..c_out).map(|o| o as f32 * 0.1 - 1.0).collect();
        for stride in [1usize, 2] {
            let conv = Conv1::new(&kernel, &bias, c_out, stride);
            let mut padded = Vec::new();
            pad_zero_border(&image, h, w, &mut padded, |v| v);
            let (ho, wo) = (
                conv_out_side_px(h, 3, stride, 1),
                conv_out_side_px(w, 3, stride, 1),
            );
            let mut out = vec![0.0; ho * wo * c_out];
            conv.forward(&padded, (h, w), &mut out);
            for y in 0..ho {
                for x in 0..wo {
                    for o in 0..c_out {
                        let mut want = bias[o];
                        for c in 0..3 {
                            for dy in 0..3 {
                                for dx in 0..3 {
                                    let (yy, xx) = (
                                        (y * stride + dy) as i64 - 1,
                                        (x * stride + dx) as i64 - 1,
                                    );
                                    if yy < 0 || xx < 0 || yy >= h as i64 || xx >= w as i64 {
                                        continue;
                                    }
                                    want += kernel[o * 27 + c * 9 + dy * 3 + dx]
                                        * image[c * h * w + yy as usize * w + xx as usize];
                                }
                            }
                        }
                        let got = out[(y * wo + x) * c_out + o];
                        assert!(
                            (got - want.max(0.0)).abs() < 1e-4,
                            "stride {stride} ({y}, {x}, {o}): {got} vs {want}"
                        );
                    }
                }
            }
        }
    }

    /// Every path this CPU has gives the portable path's bits.
    #[test]
    fn every_path_gives_the_same_bits() {
        let (h, w, c_out) = (13usize, 11usize, 32usize);
        let image: Vec<f32> = (0..3 * h * w)
            .map(|i| ((i * 29 % 97) as f32 / 48.0) - 1.0)
            .collect();
        let kernel: Vec<f32> = (0..c_out * 27)
            .map(|i| ((i * 61 % 83) as f32 / 41.0) - 1.0)
            .collect();
        let bias: Vec<f32> = (0..c_out).map(|o| o as f32 * 0.05 - 0.8).collect();
        let conv = Conv1::new(&kernel, &bias, c_out, 1);
        let mut padded = Vec::new();
        pad_zero_border(&image, h, w, &mut padded, |v| v);
        let mut want = vec![0.0; h * w * c_out];
        conv.forward_portable(&padded, (h, w), &mut want);
        let mut got = vec![0.0; h * w * c_out];
        conv.forward(&padded, (h, w), &mut got);
        assert_eq!(got, want, "dispatched path {:?}", Path::detected());
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2") {
                let mut avx2 = vec![0.0; h * w * c_out];
                unsafe { conv.forward_avx2(&padded, (h, w), &mut avx2) };
                assert_eq!(avx2, want);
            }
            if std::arch::is_x86_feature_detected!("avx512f") {
                let mut avx512 = vec![0.0; h * w * c_out];
                unsafe { conv.forward_avx512(&padded, (h, w), &mut avx512) };
                assert_eq!(avx512, want);
            }
        }
    }
}
