//! An 8-bit integer matrix product for the patch classifier's and the glance net's Q8_0 weights on the CPU.
//!
//! candle's Q8_0 `QMatMul` scales every 32-value block of both operands separately, so its inner loop
//! converts each block's integer sum to float and multiplies it by two scales; on this CPU class that made it
//! 5–10× slower than f32 sgemm at the classifier's shapes. Here a weight row (one output channel) has one
//! scale for all its blocks, and an activation row has one scale too, so the whole inner dimension is summed
//! in integers and converted once:
//!
//! `y[r, n] = sa[r] · sw[n] · Σ_k qa[r, k] · qw[n, k]`, with `qa ∈ [0, 127]` (u8) and `qw ∈ [−128, 127]` (i8).
//!
//! Activations must be non-negative — every layer that uses this follows a ReLU — and are capped at 127, so
//! they fit u8 and i8 alike: x86 multiplies u8 by i8 directly (`vpmaddubsw`, whose pairwise i16 sums stay
//! within ±2·127·128 and never saturate, or AVX-512 VNNI's `vpdpbusd`, which sums in i32), and aarch64 treats
//! them as signed (`sdot`, or `smull`/`smlal` pairs whose i16 sums fit for the same reason). Weights in a GGUF
//! Q8_0 tensor whose blocks share one scale per row (what `saccade quantize` writes for these layers) load
//! exactly; other Q8_0 tensors are re-quantised per row at load.
//!
//! # Kernels
//! The inner loops live in `crate::kernels`, one per instruction set ([`Int8Kernel`]); [`Int8Kernel::best`]
//! picks the fastest one the CPU runs and [`matmul_with`] forces one. [`Int8Matrix`] keeps the codes both
//! row-major (for the scalar reference) and in the SIMD kernels' packed layout. Large products split their
//! rows over a pool of parked helper threads (`pool.rs`), started once.

use std::borrow::Cow;

use candle_core::quantized::{GgmlDType, QStorage, QTensor};
use candle_core::{Device, Result};
use half::f16;

mod pool;

use crate::kernels::{self, names, pack, padded_rows, Weights};
pub use crate::kernels::{choose, Int8Kernel, UnknownKernel, BLOCK, KERNEL_ENV};

/// Largest activation code: fits i8, and 2·127·128 fits an i16 pair sum.
const ACT_MAX: f32 = 127.0;
const WEIGHT_MAX: f32 = 127.0;
/// Work below this many multiply-adds runs on the calling thread alone.
const PARALLEL_MIN_MACS: usize = 1 << 20;

/// A weight matrix `(n, k)` as i8 codes with one scale per row, and the layer's bias. Rows are zero-padded
/// to `kp` (a multiple of [`BLOCK`]) and there are `np` of them (`n` rounded up to 16, the kernels' column
/// group; the extra rows are zero). `packed` holds the same codes in the SIMD kernels' layout (see the
/// module docs).
#[derive(Debug, Clone, PartialEq)]
pub struct Int8Matrix {
    n: usize,
    np: usize,
    k: usize,
    kp: usize,
    codes: Vec<i8>,
    packed: Vec<i8>,
    scales: Vec<f32>,
    bias: Vec<f32>,
}

/// `k` rounded up to a whole number of blocks.
pub fn padded(k: usize) -> usize {
    k.div_ceil(BLOCK) * BLOCK
}

/// Column order that turns a `(c, dy, dx)`-flattened 3×3 kernel row into `(dy, dx, c)`.
pub(crate) fn taps_last_to_channels_last(c: usize) -> Vec<usize> {
    let mut order = Vec::with_capacity(9 * c);
    for tap in 0..9 {
        for ch in 0..c {
            order.push(ch * 9 + tap);
        }
    }
    order
}

impl Int8Matrix {
    /// The view the kernels read.
    fn view(&self) -> Weights<'_> {
        Weights {
            n: self.n,
            np: self.np,
            k: self.k,
            kp: self.kp,
            codes: &self.codes,
            packed: &self.packed,
            scales: &self.scales,
            bias: &self.bias,
        }
    }

    /// Quantises a row-major `(n, k)` f32 matrix: scale = row max |w| / 127 (rounded to f16, as GGUF stores
    /// it), code = round(w / scale).
    pub fn quantize(w: &[f32], n: usize, k: usize) -> Self {
        assert_eq!(w.len(), n * k, "weight length {} for ({n}, {k})", w.len());
        let (kp, np) = (padded(k), padded_rows(n));
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
        Self::from_parts(n, k, kp, codes, scales)
    }

    /// The matrix of `np · kp` row-major codes and `np` scales (rows past `n` zero), with a zero bias.
    fn from_parts(n: usize, k: usize, kp: usize, codes: Vec<i8>, scales: Vec<f32>) -> Self {
        let np = padded_rows(n);
        let packed = pack(&codes, np, kp);
        Self {
            n,
            np,
            k,
            kp,
            codes,
            packed,
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
        let np = padded_rows(n);
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
        Ok(Self::from_parts(n, k, kp, codes, scales))
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
            packed: pack(&codes, self.np, self.kp),
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

/// Name of the kernel [`matmul`] uses, for reports.
pub fn kernel_name() -> &'static str {
    Int8Kernel::best().name()
}

/// `out[r, c] = act(sa[r]·sw[c]·Σ qa·qw + bias[c])` for all `m × n`, on all cores for large products, with
/// [`Int8Kernel::best`]. `out` is row-major `(m, n)`; `relu` clamps negatives to zero.
pub fn matmul(a: &QuantRows, w: &Int8Matrix, relu: bool, out: &mut [f32]) {
    matmul_with(Int8Kernel::best(), a, w, relu, out);
}

/// Most threads one large product splits over (0: all cores): the thread budget's per-op share, so N sources'
/// products do not each start a thread per core (docs/THREADS.md).
static MAX_THREADS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Caps the threads of every later large product at `n` (0: all cores).
pub fn set_max_threads(n: usize) {
    MAX_THREADS.store(n, std::sync::atomic::Ordering::Relaxed);
}

/// The threads a large product uses now: the cores, capped by [`set_max_threads`]. The core count is read once
/// (std reads the affinity mask and cgroup quota files on every `available_parallelism` call, and this runs
/// on every product).
pub fn max_threads() -> usize {
    let cores = cores();
    match MAX_THREADS.load(std::sync::atomic::Ordering::Relaxed) {
        0 => cores,
        cap => cap.min(cores),
    }
}

/// The cores, read once.
fn cores() -> usize {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// [`matmul`] with a given kernel.
///
/// # Panics
/// When this CPU does not run `kernel` (pick one from [`Int8Kernel::available`]), or the shapes disagree.
pub fn matmul_with(kernel: Int8Kernel, a: &QuantRows, w: &Int8Matrix, relu: bool, out: &mut [f32]) {
    check(kernel, a, w, out);
    if a.m == 0 || w.n == 0 {
        return;
    }
    let threads = max_threads();
    let macs = a.m * w.n * w.kp;
    if threads <= 1 || macs < PARALLEL_MIN_MACS || a.m < 2 * threads {
        matmul_rows(kernel, a, 0, w, relu, out);
        return;
    }
    let rows_per = a.m.div_ceil(threads);
    pool::for_each_chunk_mut(out, rows_per * w.n, cores() - 1, &|i, chunk| {
        matmul_rows(kernel, a, i * rows_per, w, relu, chunk);
    });
}

/// [`matmul_with`] on the calling thread only, whatever the size: for callers that are parallel already,
/// and for timing one kernel.
pub fn matmul_on_this_thread(
    kernel: Int8Kernel,
    a: &QuantRows,
    w: &Int8Matrix,
    relu: bool,
    out: &mut [f32],
) {
    check(kernel, a, w, out);
    if a.m > 0 && w.n > 0 {
        matmul_rows(kernel, a, 0, w, relu, out);
    }
}

fn check(kernel: Int8Kernel, a: &QuantRows, w: &Int8Matrix, out: &[f32]) {
    assert!(
        kernel.is_available(),
        "int8 kernel {kernel} is not available on this CPU (available: {})",
        names(&Int8Kernel::available())
    );
    assert_eq!(a.kp, w.kp, "inner dims {} vs {}", a.kp, w.kp);
    assert_eq!(out.len(), a.m * w.n, "output length for ({}, {})", a.m, w.n);
    assert!(
        a.codes.len() == a.m * a.kp && a.scales.len() == a.m,
        "activation rows: {} codes and {} scales for ({}, {})",
        a.codes.len(),
        a.scales.len(),
        a.m,
        a.kp
    );
}

/// Rows `row0 .. row0 + out.len() / n` of the product.
fn matmul_rows(
    kernel: Int8Kernel,
    a: &QuantRows,
    row0: usize,
    w: &Int8Matrix,
    relu: bool,
    out: &mut [f32],
) {
    let rows = out.len() / w.n;
    let codes = &a.codes[row0 * a.kp..(row0 + rows) * a.kp];
    let scales = &a.scales[row0..row0 + rows];
    kernels::rows(kernel, codes, scales, &w.view(), relu, out);
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {

    #[test]
    fn the_thread_cap_never_exceeds_the_cores_and_zero_means_all() {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        set_max_threads(1);
        assert_eq!(max_threads(), 1);
        set_max_threads(cores + 5);
        assert_eq!(max_threads(), cores);
        set_max_threads(0);
        assert_eq!(max_threads(), cores);
    }

    use super::*;
    use crate::kernels::GROUP;
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

    /// Every kernel sums the same integers exactly and finishes with the same float operations, so outputs
    /// match exactly (`==`: a ReLU may give 0.0 for −0.0).
    fn assert_same(got: &[f32], want: &[f32], what: &str) {
        assert_eq!(got.len(), want.len());
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!(g == w, "{what}: output {i} is {g}, scalar {w}");
        }
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
        matmul_on_this_thread(Int8Kernel::Scalar, &qa, &qw, false, &mut scalar);
        assert_same(&got, &scalar, &format!("best ({m},{n},{k})"));
        for kernel in Int8Kernel::available() {
            let mut forced = vec![0f32; m * n];
            matmul_with(kernel, &qa, &qw, false, &mut forced);
            assert_same(&forced, &scalar, &format!("{kernel} ({m},{n},{k})"));
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

    #[test]
    fn kernel_names_round_trip_and_bad_overrides_fall_back_to_the_best() {
        for kernel in Int8Kernel::ALL {
            assert_eq!(kernel.name().parse::<Int8Kernel>(), Ok(kernel));
            assert_eq!(kernel.to_string(), kernel.name());
        }
        assert_eq!(" AVX2 ".parse::<Int8Kernel>(), Ok(Int8Kernel::Avx2));
        let available = [Int8Kernel::Avx2, Int8Kernel::Scalar];
        // No override, or a blank one: the fastest, silently.
        assert_eq!(choose(None, &available), (Int8Kernel::Avx2, None));
        assert_eq!(choose(Some("  "), &available), (Int8Kernel::Avx2, None));
        // An available one is taken.
        assert_eq!(
            choose(Some("scalar"), &available),
            (Int8Kernel::Scalar, None)
        );
        // Unknown, or known but not on this CPU: the fastest, with a message naming the value and the
        // available kernels.
        for bad in ["avx3", "neondot", "avx512vnni", "1", "scalar,avx2"] {
            let (kernel, warning) = choose(Some(bad), &available);
            assert_eq!(kernel, Int8Kernel::Avx2, "{bad}");
            let warning = warning.unwrap();
            assert!(warning.contains(KERNEL_ENV), "{warning}");
            assert!(warning.contains(bad), "{warning}");
            assert!(
                warning.contains("available here: avx2, scalar"),
                "{warning}"
            );
        }
        // Whatever this CPU is, the detected list ends with the reference and starts with `best` (unless
        // the environment overrides it).
        let here = Int8Kernel::available();
        assert_eq!(here.last(), Some(&Int8Kernel::Scalar));
        if std::env::var_os(KERNEL_ENV).is_none() {
            assert_eq!(Int8Kernel::best(), here[0]);
        }
        assert!(here.contains(&Int8Kernel::best()));
        assert_eq!(kernel_name(), Int8Kernel::best().name());
    }

    #[test]
    fn packed_layout_puts_four_columns_of_sixteen_rows_side_by_side() {
        let (n, k) = (20, 40);
        let w: Vec<f32> = (0..n * k).map(|i| (i % 251) as f32 - 125.0).collect();
        let qw = Int8Matrix::quantize(&w, n, k);
        assert_eq!((qw.np, qw.kp), (32, 64));
        for row in 0..qw.np {
            for col in 0..qw.kp {
                let (g, j, q, b) = (row / GROUP, row % GROUP, col / 4, col % 4);
                let at = g * GROUP * qw.kp + q * 4 * GROUP + j * 4 + b;
                assert_eq!(qw.packed[at], qw.codes[row * qw.kp + col], "({row}, {col})");
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
