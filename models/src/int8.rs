//! An 8-bit integer matrix product for the patch classifier's Q8_0 weights on the CPU.
//!
//! candle's Q8_0 `QMatMul` scales every 32-value block of both operands separately, so its inner loop
//! converts each block's integer sum to float and multiplies it by two scales; on this CPU class that made it
//! 5–10× slower than f32 sgemm at the classifier's shapes. Here a weight row (one output channel) has one
//! scale for all its blocks, and an activation row has one scale too, so the whole inner dimension is summed
//! in integers and converted once:
//!
//! `y[r, n] = sa[r] · sw[n] · Σ_k qa[r, k] · qw[n, k]`, with `qa ∈ [0, 127]` (u8) and `qw ∈ [−127, 127]` (i8).
//!
//! Activations must be non-negative — every layer that uses this follows a ReLU — which lets the AVX2 kernel
//! multiply u8 by i8 with `vpmaddubsw` directly; capping them at 127 keeps its pairwise i16 sums below
//! 2·127·127 = 32,258, so they never saturate. Weights in a GGUF Q8_0 tensor whose blocks share one scale per
//! row (what `saccade quantize` writes for these layers) load exactly; other Q8_0 tensors are re-quantised per
//! row at load.

use std::borrow::Cow;

use candle_core::quantized::{GgmlDType, QStorage, QTensor};
use candle_core::{Device, Result};
use half::f16;

/// Inner dimension granularity: one Q8_0 block, and one AVX2 register of bytes.
pub const BLOCK: usize = 32;
/// Largest activation code: 2·127·127 fits an i16 pair sum.
const ACT_MAX: f32 = 127.0;
const WEIGHT_MAX: f32 = 127.0;
/// Work below this many multiply-adds runs on the calling thread alone.
const PARALLEL_MIN_MACS: usize = 1 << 20;

/// A weight matrix `(n, k)` as i8 codes with one scale per row, and the layer's bias. Rows are zero-padded
/// to `kp` (a multiple of [`BLOCK`]) and there are `np` of them (`n` rounded up to 8, the kernel's column
/// group; the extra rows are zero).
#[derive(Debug, Clone, PartialEq)]
pub struct Int8Matrix {
    n: usize,
    np: usize,
    k: usize,
    kp: usize,
    codes: Vec<i8>,
    scales: Vec<f32>,
    bias: Vec<f32>,
}

/// `k` rounded up to a whole number of blocks.
pub fn padded(k: usize) -> usize {
    k.div_ceil(BLOCK) * BLOCK
}

impl Int8Matrix {
    /// Quantises a row-major `(n, k)` f32 matrix: scale = row max |w| / 127 (rounded to f16, as GGUF stores
    /// it), code = round(w / scale).
    pub fn quantize(w: &[f32], n: usize, k: usize) -> Self {
        assert_eq!(w.len(), n * k, "weight length {} for ({n}, {k})", w.len());
        let (kp, np) = (padded(k), n.div_ceil(8) * 8);
        let mut codes = vec![0i8; np * kp];
        let mut scales = vec![0f32; np];
        for (row, (out, scale)) in w
            .chunks_exact(k)
            .zip(codes.chunks_exact_mut(kp).zip(scales.iter_mut()))
        {
            let max = row.iter().fold(0f32, |m, v| m.max(v.abs()));
            let d = f16::from_f32(max / WEIGHT_MAX).to_f32();
            *scale = d;
            if d > 0.0 {
                let inv = 1.0 / d;
                for (o, v) in out.iter_mut().zip(row) {
                    *o = (v * inv).round().clamp(-WEIGHT_MAX, WEIGHT_MAX) as i8;
                }
            }
        }
        Self {
            n,
            np,
            k,
            kp,
            codes,
            scales,
            bias: vec![0.0; np],
        }
    }

    /// Sets the bias added to every output row (`n` values).
    pub fn with_bias(mut self, bias: &[f32]) -> Self {
        assert_eq!(bias.len(), self.n, "bias length");
        self.bias[..self.n].copy_from_slice(bias);
        self
    }

    /// From a Q8_0 tensor `(n, kp)`: exact when each row's blocks share one scale, re-quantised per row
    /// otherwise. The first `k` columns are the matrix (the rest is padding).
    pub fn from_q8_0(q: &QTensor, k: usize) -> Result<Self> {
        let (n, kp) = q.shape().dims2()?;
        if q.dtype() != GgmlDType::Q8_0 || kp % BLOCK != 0 || k > kp {
            candle_core::bail!(
                "int8 weights need a Q8_0 (n, k) tensor with k a multiple of {BLOCK}, got {:?} {:?} for k = {k}",
                q.dtype(),
                q.shape()
            );
        }
        let data = q.data()?;
        let blocks_per_row = kp / BLOCK;
        let block_bytes = 2 + BLOCK;
        if data.len() != n * blocks_per_row * block_bytes {
            candle_core::bail!("Q8_0 tensor {:?} has {} bytes", q.shape(), data.len());
        }
        let np = n.div_ceil(8) * 8;
        let mut codes = vec![0i8; np * kp];
        let mut scales = vec![0f32; np];
        let mut uniform = true;
        for r in 0..n {
            let row =
                &data[r * blocks_per_row * block_bytes..(r + 1) * blocks_per_row * block_bytes];
            let mut row_scale = None;
            for (b, block) in row.chunks_exact(block_bytes).enumerate() {
                let d = f16::from_le_bytes([block[0], block[1]]).to_f32();
                let all_zero = block[2..].iter().all(|&c| c == 0);
                match row_scale {
                    _ if all_zero => {}
                    None => row_scale = Some(d),
                    Some(s) if s == d => {}
                    Some(_) => uniform = false,
                }
                for (i, &c) in block[2..].iter().enumerate() {
                    codes[r * kp + b * BLOCK + i] = c as i8;
                }
            }
            scales[r] = row_scale.unwrap_or(0.0);
        }
        if !uniform {
            // Blocks with their own scales: go through f32 and give each row one scale.
            let full = q
                .dequantize(&Device::Cpu)?
                .flatten_all()?
                .to_vec1::<f32>()?;
            let cut: Vec<f32> = full
                .chunks_exact(kp)
                .flat_map(|row| row[..k].iter().copied())
                .collect();
            return Ok(Self::quantize(&cut, n, k));
        }
        Ok(Self {
            n,
            np,
            k,
            kp,
            codes,
            scales,
            bias: vec![0.0; np],
        })
    }

    /// The matrix as a Q8_0 tensor `(n, kp)` whose blocks carry their row's scale: what GGUF files store.
    pub fn to_q8_0(&self) -> Result<QTensor> {
        let mut data = Vec::with_capacity(self.n * self.kp / BLOCK * (2 + BLOCK));
        for (row, &d) in self
            .codes
            .chunks_exact(self.kp)
            .zip(&self.scales)
            .take(self.n)
        {
            for block in row.chunks_exact(BLOCK) {
                data.extend_from_slice(&f16::from_f32(d).to_le_bytes());
                data.extend(block.iter().map(|&c| c as u8));
            }
        }
        let storage = QStorage::from_data(Cow::Owned(data), &Device::Cpu, GgmlDType::Q8_0)?;
        QTensor::new(storage, (self.n, self.kp))
    }

    /// Dequantised `(n, k)` row-major values.
    pub fn dequantize(&self) -> Vec<f32> {
        self.codes
            .chunks_exact(self.kp)
            .zip(&self.scales)
            .take(self.n)
            .flat_map(|(row, &d)| row[..self.k].iter().map(move |&c| c as f32 * d))
            .collect()
    }

    /// The same matrix with its columns reordered: new column `j` is old column `order[j]`. Exact (codes
    /// move, scales stay).
    pub fn permute_columns(&self, order: &[usize]) -> Self {
        assert_eq!(order.len(), self.k);
        let mut codes = vec![0i8; self.np * self.kp];
        for (dst, src) in codes
            .chunks_exact_mut(self.kp)
            .zip(self.codes.chunks_exact(self.kp))
        {
            for (j, &o) in order.iter().enumerate() {
                dst[j] = src[o];
            }
        }
        Self {
            codes,
            ..self.clone()
        }
    }

    pub fn rows(&self) -> usize {
        self.n
    }
    pub fn padded_cols(&self) -> usize {
        self.kp
    }
}

/// Activation rows quantised to u8 codes with one scale per row, reused across calls.
#[derive(Debug, Default, Clone)]
pub struct QuantRows {
    pub m: usize,
    pub kp: usize,
    pub codes: Vec<u8>,
    pub scales: Vec<f32>,
}

impl QuantRows {
    /// Makes room for `m` rows of `kp` codes (padding is zero); keeps the allocation across calls.
    pub fn reset(&mut self, m: usize, kp: usize) {
        self.m = m;
        self.kp = kp;
        self.codes.clear();
        self.codes.resize(m * kp, 0);
        self.scales.clear();
        self.scales.resize(m, 0.0);
    }

    /// Quantises a row-major `(m, k)` matrix of non-negative values, one scale per row.
    pub fn quantize(&mut self, x: &[f32], m: usize, k: usize) {
        assert_eq!(x.len(), m * k);
        self.reset(m, padded(k));
        for ((row, codes), scale) in x
            .chunks_exact(k)
            .zip(self.codes.chunks_exact_mut(self.kp))
            .zip(self.scales.iter_mut())
        {
            *scale = quantise_u8(row, &mut codes[..k]);
        }
    }
}

/// Quantises non-negative values (negatives count as 0) to u8 codes 0..=127 with one scale, which it returns:
/// `value ≈ code · scale`. All codes and the scale are 0 when nothing is positive.
pub fn quantise_u8(src: &[f32], dst: &mut [u8]) -> f32 {
    assert_eq!(src.len(), dst.len());
    let max = src.iter().fold(0f32, |a, &v| a.max(v));
    if max > 0.0 {
        let inv = ACT_MAX / max;
        for (c, &v) in dst.iter_mut().zip(src) {
            // v ≥ 0: adding 0.5 and truncating rounds to nearest.
            *c = (v.max(0.0) * inv + 0.5).min(ACT_MAX) as u8;
        }
    } else {
        dst.fill(0);
    }
    max / ACT_MAX
}

/// `out[r, c] = act(sa[r]·sw[c]·Σ qa·qw + bias[c])` for all `m × n`, on all cores for large products.
/// `out` is row-major `(m, n)`; `relu` clamps negatives to zero.
pub fn matmul(a: &QuantRows, w: &Int8Matrix, relu: bool, out: &mut [f32]) {
    assert_eq!(a.kp, w.kp, "inner dims {} vs {}", a.kp, w.kp);
    assert_eq!(out.len(), a.m * w.n, "output length for ({}, {})", a.m, w.n);
    if a.m == 0 || w.n == 0 {
        return;
    }
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let macs = a.m * w.n * w.kp;
    if threads <= 1 || macs < PARALLEL_MIN_MACS || a.m < 2 * threads {
        matmul_rows(a, 0, w, relu, out);
        return;
    }
    let rows_per = a.m.div_ceil(threads);
    std::thread::scope(|scope| {
        let mut chunks = out.chunks_mut(rows_per * w.n).enumerate();
        let first = chunks.next();
        for (i, chunk) in chunks {
            scope.spawn(move || matmul_rows(a, i * rows_per, w, relu, chunk));
        }
        if let Some((_, chunk)) = first {
            matmul_rows(a, 0, w, relu, chunk);
        }
    });
}

/// Rows `row0 .. row0 + out.len() / n` of the product.
fn matmul_rows(a: &QuantRows, row0: usize, w: &Int8Matrix, relu: bool, out: &mut [f32]) {
    let rows = out.len() / w.n;
    let codes = &a.codes[row0 * a.kp..(row0 + rows) * a.kp];
    let scales = &a.scales[row0..row0 + rows];
    #[cfg(target_arch = "x86_64")]
    {
        #[allow(unsafe_code)]
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // The crate's only unsafe code (with the kernel itself): SIMD intrinsics need it.
            // SAFETY: AVX2 is present, and the shapes were checked: `codes` holds `rows` rows of `kp` (a
            // multiple of 32) codes, `w` has `np` (a multiple of 8) rows of `kp` codes, scales and bias `np`
            // values, and `out` `rows × n` values.
            unsafe { avx2::rows(codes, scales, w, relu, out) };
            return;
        }
    }
    rows_scalar(codes, scales, w, relu, out);
}

fn finish(sum: i32, sa: f32, sw: f32, bias: f32, relu: bool) -> f32 {
    let v = sum as f32 * (sa * sw) + bias;
    if relu {
        v.max(0.0)
    } else {
        v
    }
}

fn rows_scalar(codes: &[u8], scales: &[f32], w: &Int8Matrix, relu: bool, out: &mut [f32]) {
    let kp = w.kp;
    for ((arow, &sa), orow) in codes
        .chunks_exact(kp)
        .zip(scales)
        .zip(out.chunks_exact_mut(w.n))
    {
        for (c, o) in orow.iter_mut().enumerate() {
            let sum: i32 = arow
                .iter()
                .zip(&w.codes[c * kp..(c + 1) * kp])
                .map(|(&x, &y)| i32::from(x) * i32::from(y))
                .sum();
            *o = finish(sum, sa, w.scales[c], w.bias[c], relu);
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod avx2 {
    use super::Int8Matrix;
    use std::arch::x86_64::*;

    /// One activation row against eight weight rows at a time: the eight weight rows (8 × kp bytes) stay in
    /// L1 while the activation row streams, and the eight sums come out as one vector.
    ///
    /// # Safety
    /// Needs AVX2. `codes.len() = scales.len() · w.kp`, `out.len() = scales.len() · w.n`.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn rows(codes: &[u8], scales: &[f32], w: &Int8Matrix, relu: bool, out: &mut [f32]) {
        let (kp, n, np) = (w.kp, w.n, w.np);
        debug_assert!(kp % 32 == 0 && np % 8 == 0 && w.codes.len() == np * kp);
        debug_assert!(codes.len() == scales.len() * kp && out.len() == scales.len() * n);
        let ones = _mm256_set1_epi16(1);
        let zero = _mm256_setzero_ps();
        let wp = w.codes.as_ptr();
        for (r, &sa) in scales.iter().enumerate() {
            // SAFETY (all pointer arithmetic below): row r < scales.len(), so r·kp + k + 32 ≤ codes.len();
            // weight rows g + j < np, so (g + j)·kp + k + 32 ≤ np·kp; g + 8 ≤ np for scales and bias;
            // the output store is full only when g + 8 ≤ n.
            let ap = unsafe { codes.as_ptr().add(r * kp) };
            let sa = _mm256_set1_ps(sa);
            let mut g = 0;
            while g < np {
                let mut acc = [_mm256_setzero_si256(); 8];
                let mut k = 0;
                while k < kp {
                    let x = unsafe { _mm256_loadu_si256(ap.add(k) as *const __m256i) };
                    for (j, acc_j) in acc.iter_mut().enumerate() {
                        let wv = unsafe {
                            _mm256_loadu_si256(wp.add((g + j) * kp + k) as *const __m256i)
                        };
                        // u8 × i8 → pairwise i16 sums (≤ 2·127·127: no saturation) → pairwise i32 sums.
                        let p = _mm256_madd_epi16(_mm256_maddubs_epi16(x, wv), ones);
                        *acc_j = _mm256_add_epi32(*acc_j, p);
                    }
                    k += 32;
                }
                // [a0 a1 b0 b1 | a0' a1' b0' b1'] style pairwise sums, then the two 128-bit halves added:
                // the eight dot products in column order.
                let h01 = _mm256_hadd_epi32(acc[0], acc[1]);
                let h23 = _mm256_hadd_epi32(acc[2], acc[3]);
                let h45 = _mm256_hadd_epi32(acc[4], acc[5]);
                let h67 = _mm256_hadd_epi32(acc[6], acc[7]);
                let q0 = _mm256_hadd_epi32(h01, h23);
                let q1 = _mm256_hadd_epi32(h45, h67);
                let sums = _mm256_add_epi32(
                    _mm256_permute2x128_si256::<0x20>(q0, q1),
                    _mm256_permute2x128_si256::<0x31>(q0, q1),
                );
                let (sw, bias) = unsafe {
                    (
                        _mm256_loadu_ps(w.scales.as_ptr().add(g)),
                        _mm256_loadu_ps(w.bias.as_ptr().add(g)),
                    )
                };
                let mut y = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sums), _mm256_mul_ps(sa, sw), bias);
                if relu {
                    y = _mm256_max_ps(y, zero);
                }
                if g + 8 <= n {
                    unsafe { _mm256_storeu_ps(out.as_mut_ptr().add(r * n + g), y) };
                } else {
                    let mut tmp = [0f32; 8];
                    unsafe { _mm256_storeu_ps(tmp.as_mut_ptr(), y) };
                    out[r * n + g..r * n + n].copy_from_slice(&tmp[..n - g]);
                }
                g += 8;
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn lcg(seed: u64, n: usize, lo: f32, hi: f32) -> Vec<f32> {
        let mut s = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                lo + (hi - lo) * ((s >> 40) as f32 / (1u64 << 24) as f32)
            })
            .collect()
    }

    fn naive(x: &[f32], w: &[f32], bias: &[f32], m: usize, n: usize, k: usize) -> Vec<f32> {
        let mut out = vec![0f32; m * n];
        for r in 0..m {
            for c in 0..n {
                let mut s = bias[c];
                for i in 0..k {
                    s += x[r * k + i] * w[c * k + i];
                }
                out[r * n + c] = s;
            }
        }
        out
    }

    /// Rounding bound: each weight is off by ≤ half its row's step, each activation by ≤ half its row's
    /// step (+ f16 rounding of the weight scale, ≤ 2⁻¹¹ relative).
    fn check_against_naive(m: usize, n: usize, k: usize, seed: u64) {
        let x = lcg(seed, m * k, 0.0, 2.0);
        let w = lcg(seed + 1, n * k, -0.5, 0.5);
        let bias = lcg(seed + 2, n, -1.0, 1.0);
        let want = naive(&x, &w, &bias, m, n, k);
        let qw = Int8Matrix::quantize(&w, n, k).with_bias(&bias);
        let mut qa = QuantRows::default();
        qa.quantize(&x, m, k);
        let mut got = vec![0f32; m * n];
        matmul(&qa, &qw, false, &mut got);
        let mut scalar = vec![0f32; m * n];
        rows_scalar(&qa.codes, &qa.scales, &qw, false, &mut scalar);
        for (g, s) in got.iter().zip(&scalar) {
            // Same integer sums; only the float rounding of the last step may differ (FMA).
            assert!(
                (g - s).abs() <= 1e-4 * (1.0 + s.abs()),
                "vector {g} vs scalar {s}"
            );
        }
        for r in 0..m {
            let xmax = x[r * k..(r + 1) * k].iter().fold(0f32, |a, &v| a.max(v));
            for c in 0..n {
                let wrow = &w[c * k..(c + 1) * k];
                let wmax = wrow.iter().fold(0f32, |a, &v| a.max(v.abs()));
                let (dx, dw) = (xmax / 127.0 / 2.0, wmax / 127.0 / 2.0 + wmax * 1e-3);
                let bound: f32 = (0..k)
                    .map(|i| x[r * k + i].abs() * dw + wrow[i].abs() * dx + dx * dw)
                    .sum();
                let err = (got[r * n + c] - want[r * n + c]).abs();
                assert!(
                    err <= bound + 1e-4,
                    "({m},{n},{k}) r{r} c{c}: {err} > {bound}"
                );
            }
        }
    }

    #[test]
    fn int8_matmul_matches_the_float_product_within_the_rounding_bound() {
        // Column groups not a multiple of 8, padding (k not a multiple of 32),
        // and a product big enough to be split across threads.
        for &(m, n, k) in &[
            (1, 1, 5),
            (3, 3, 27),
            (5, 44, 256),
            (9, 7, 288),
            (256, 64, 576),
            (40, 256, 2048),
        ] {
            check_against_naive(m, n, k, (m * 1000 + n * 10 + k) as u64);
        }
    }

    #[test]
    fn relu_clamps_negative_outputs() {
        let (m, n, k) = (6, 5, 96);
        let x = lcg(1, m * k, 0.0, 1.0);
        let w = lcg(2, n * k, -1.0, 1.0);
        let qw = Int8Matrix::quantize(&w, n, k);
        let mut qa = QuantRows::default();
        qa.quantize(&x, m, k);
        let mut out = vec![0f32; m * n];
        matmul(&qa, &qw, true, &mut out);
        assert!(out.iter().all(|&v| v >= 0.0));
        assert!(out.iter().any(|&v| v > 0.0));
    }

    #[test]
    fn q8_0_round_trip_is_exact_and_mixed_scales_are_requantised() {
        let (n, k) = (4, 64);
        let w = lcg(3, n * k, -1.0, 1.0);
        let qw = Int8Matrix::quantize(&w, n, k);
        let back = Int8Matrix::from_q8_0(&qw.to_q8_0().unwrap(), k).unwrap();
        assert_eq!(back, qw);
        // candle's own Q8_0 scales each block: still loads, within one step of the values.
        let t = candle_core::Tensor::from_vec(w.clone(), (n, k), &Device::Cpu).unwrap();
        let q = QTensor::quantize(&t, GgmlDType::Q8_0).unwrap();
        let re = Int8Matrix::from_q8_0(&q, k).unwrap();
        for (a, b) in re.dequantize().iter().zip(&w) {
            assert!((a - b).abs() <= 2.0 / 127.0, "{a} vs {b}");
        }
    }

    #[test]
    fn column_permutation_moves_codes_exactly() {
        let (n, k) = (3, 40);
        let w = lcg(4, n * k, -1.0, 1.0);
        let qw = Int8Matrix::quantize(&w, n, k);
        let order: Vec<usize> = (0..k).rev().collect();
        let p = qw.permute_columns(&order).dequantize();
        let d = qw.dequantize();
        for r in 0..n {
            for j in 0..k {
                assert_eq!(p[r * k + j], d[r * k + order[j]]);
            }
        }
    }

    proptest! {
        /// Activation codes stay in 0..=127 (the no-saturation condition of the kernel) whatever the input,
        /// negatives and NaN-free extremes included, and a row's largest value maps to 127.
        #[test]
        fn activation_codes_never_exceed_127(values in proptest::collection::vec(-1e6f32..1e6, 1..100)) {
            let mut q = QuantRows::default();
            let k = values.len();
            q.quantize(&values, 1, k);
            prop_assert!(q.codes.iter().all(|&c| c <= 127));
            let max = values.iter().fold(0f32, |a, &v| a.max(v));
            if max > 0.0 {
                prop_assert!(q.codes[..k].contains(&127));
            }
        }
    }
}
