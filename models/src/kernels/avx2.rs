//! The AVX2 kernel: `vpmaddubsw` multiplies 32 u8 activations by 32 i8 weights into pairwise i16 sums
//! (at most 2·127·128 in size: no saturation), `vpmaddwd` by ones adds those pairs into i32 lanes.
//!
//! Register blocking: four activation rows against one group of 16 weight rows (two vectors of 8 output
//! channels) make eight accumulators; each step of four columns loads the group's 64 packed bytes once and
//! broadcasts four bytes of each activation row. Every accumulator lane is one output channel, so the sums
//! need no horizontal reduction.
#![allow(unsafe_code)]
// The register-blocked loops index small fixed-size arrays by row and half on purpose.
#![allow(clippy::needless_range_loop)]

use super::{Int8Kernel, Weights, GROUP};
use std::arch::x86_64::*;

/// Activation rows per register block.
const ROWS: usize = 4;
/// Output channels per vector.
const LANES: usize = 8;

/// `scales.len()` activation rows (`codes`, `w.kp` each) against all of `w`'s rows into `out` (`w.n` per
/// row).
///
/// # Panics
/// When the CPU lacks AVX2 or the shapes disagree.
pub(super) fn rows(codes: &[u8], scales: &[f32], w: &Weights<'_>, relu: bool, out: &mut [f32]) {
    super::check_entry(Int8Kernel::Avx2, codes, scales, w, out);
    // SAFETY: the CPU has AVX2, and the shapes the kernel's pointer arithmetic relies on were checked:
    // `codes` holds `scales.len()` rows of `kp` (a multiple of 4) codes, `packed` `np · kp` codes, `scales`
    // and `bias` `np` values (`np` a multiple of 16, `np − 16 < n ≤ np`), and `out` `scales.len() · n`
    // values.
    unsafe { rows_impl(codes, scales, w, relu, out) }
}

#[target_feature(enable = "avx2")]
unsafe fn rows_impl(codes: &[u8], scales: &[f32], w: &Weights<'_>, relu: bool, out: &mut [f32]) {
    row_blocks!(block::<ROWS>(codes, scales, w, relu, out));
}

/// Activation rows `r0 .. r0 + R` against weight group `g`.
///
/// # Safety
/// AVX2 present, the shapes of [`rows`], `r0 + R ≤ scales.len()` and `g < np / 16`.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn block<const R: usize>(
    codes: &[u8],
    scales: &[f32],
    w: &Weights<'_>,
    relu: bool,
    out: &mut [f32],
    r0: usize,
    g: usize,
) {
    let (kp, n) = (w.kp, w.n);
    // SAFETY (all pointer arithmetic below): rows r0 + r < scales.len(), so (r0 + r)·kp + q + 4 ≤
    // codes.len(); group g < np / 16, so g·16·kp + 16·q + 64 ≤ np·kp = packed.len(); output columns
    // col .. col + 8 ≤ np index scales and bias, and a full store happens only when col + 8 ≤ n.
    let a = unsafe { codes.as_ptr().add(r0 * kp) };
    let wp = unsafe { w.packed.as_ptr().add(g * GROUP * kp) };
    let ones = _mm256_set1_epi16(1);
    let mut acc = [[_mm256_setzero_si256(); 2]; R];
    let mut q = 0;
    while q < kp {
        let (w0, w1) = unsafe {
            (
                _mm256_loadu_si256(wp.add(GROUP * q).cast()),
                _mm256_loadu_si256(wp.add(GROUP * q + 32).cast()),
            )
        };
        for r in 0..R {
            let quad = unsafe { a.add(r * kp + q).cast::<i32>().read_unaligned() };
            let av = _mm256_set1_epi32(quad);
            // u8 × i8 → pairwise i16 sums → the four products of each output channel in one i32 lane.
            let p0 = _mm256_madd_epi16(_mm256_maddubs_epi16(av, w0), ones);
            let p1 = _mm256_madd_epi16(_mm256_maddubs_epi16(av, w1), ones);
            acc[r][0] = _mm256_add_epi32(acc[r][0], p0);
            acc[r][1] = _mm256_add_epi32(acc[r][1], p1);
        }
        q += 4;
    }
    let zero = _mm256_setzero_ps();
    for r in 0..R {
        let row = r0 + r;
        let sa = _mm256_set1_ps(scales[row]);
        for h in 0..2 {
            let col = g * GROUP + h * LANES;
            if col >= n {
                break;
            }
            let (sw, bias) = unsafe {
                (
                    _mm256_loadu_ps(w.scales.as_ptr().add(col)),
                    _mm256_loadu_ps(w.bias.as_ptr().add(col)),
                )
            };
            // The scalar kernel's expression, operation for operation (no FMA): bit-identical outputs.
            let mut y = _mm256_add_ps(
                _mm256_mul_ps(_mm256_cvtepi32_ps(acc[r][h]), _mm256_mul_ps(sa, sw)),
                bias,
            );
            if relu {
                y = _mm256_max_ps(y, zero);
            }
            if col + LANES <= n {
                unsafe { _mm256_storeu_ps(out.as_mut_ptr().add(row * n + col), y) };
            } else {
                let mut tmp = [0f32; LANES];
                unsafe { _mm256_storeu_ps(tmp.as_mut_ptr(), y) };
                out[row * n + col..row * n + n].copy_from_slice(&tmp[..n - col]);
            }
        }
    }
}
