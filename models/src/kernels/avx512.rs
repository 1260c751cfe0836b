//! The AVX-512 VNNI kernel: `vpdpbusd` multiplies 64 u8 activations by 64 i8 weights and adds each group of
//! four products into an i32 lane, with no intermediate i16 (so nothing to saturate).
//!
//! Register blocking: four activation rows against two groups of 16 weight rows (32 output channels) make
//! eight accumulators; each step of four columns loads two weight vectors (the packed layout's 64 bytes per
//! group) and broadcasts four bytes of each activation row, then issues eight `vpdpbusd`. Every accumulator
//! lane is one output channel, so the sums need no horizontal reduction.
#![allow(unsafe_code)]
// The register-blocked loops index small fixed-size arrays by row and group on purpose.
#![allow(clippy::needless_range_loop)]

use super::{Int8Kernel, Weights, GROUP};
use std::arch::x86_64::*;

/// Activation rows per register block.
const ROWS: usize = 4;
/// Weight groups (of [`GROUP`] rows) per register block.
const GROUPS: usize = 2;

/// `scales.len()` activation rows (`codes`, `w.kp` each) against all of `w`'s rows into `out` (`w.n` per
/// row).
///
/// # Panics
/// When the CPU lacks AVX-512 VNNI or the shapes disagree.
pub(super) fn rows(codes: &[u8], scales: &[f32], w: &Weights<'_>, relu: bool, out: &mut [f32]) {
    super::check_entry(Int8Kernel::Avx512Vnni, codes, scales, w, out);
    // SAFETY: the CPU has avx512f, avx512bw and avx512vnni, and the shapes the kernel's pointer arithmetic
    // relies on were checked: `codes` holds `scales.len()` rows of `kp` (a multiple of 4) codes, `packed`
    // `np · kp` codes, `scales` and `bias` `np` values (`np` a multiple of 16, `np − 16 < n ≤ np`), and
    // `out` `scales.len() · n` values.
    unsafe { rows_impl(codes, scales, w, relu, out) }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn rows_impl(codes: &[u8], scales: &[f32], w: &Weights<'_>, relu: bool, out: &mut [f32]) {
    let m = scales.len();
    let groups = w.np / GROUP;
    let mut g = 0;
    // Group pairs outermost: their weights (2 · 16 · kp bytes) stay in L1 while the activation rows stream.
    while g < groups {
        let pair = groups - g >= GROUPS;
        let mut r = 0;
        while r < m {
            let four = m - r >= ROWS;
            // SAFETY: r + R ≤ m and g + C ≤ groups for each instantiation.
            unsafe {
                match (four, pair) {
                    (true, true) => block::<ROWS, GROUPS>(codes, scales, w, relu, out, r, g),
                    (true, false) => block::<ROWS, 1>(codes, scales, w, relu, out, r, g),
                    (false, true) => block::<1, GROUPS>(codes, scales, w, relu, out, r, g),
                    (false, false) => block::<1, 1>(codes, scales, w, relu, out, r, g),
                }
            }
            r += if four { ROWS } else { 1 };
        }
        g += if pair { GROUPS } else { 1 };
    }
}

/// Activation rows `r0 .. r0 + R` against weight groups `g0 .. g0 + C`.
///
/// # Safety
/// AVX-512 VNNI present, the shapes of [`rows`], `r0 + R ≤ scales.len()` and `g0 + C ≤ np / 16`.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
#[inline]
#[allow(clippy::too_many_arguments)]
unsafe fn block<const R: usize, const C: usize>(
    codes: &[u8],
    scales: &[f32],
    w: &Weights<'_>,
    relu: bool,
    out: &mut [f32],
    r0: usize,
    g0: usize,
) {
    let (kp, n) = (w.kp, w.n);
    // SAFETY (all pointer arithmetic below): rows r0 + r < scales.len(), so (r0 + r)·kp + q + 4 ≤
    // codes.len(); groups g0 + c < np / 16, so (g0 + c)·16·kp + 16·q + 64 ≤ np·kp = packed.len(); output
    // columns col .. col + 16 ≤ np index scales and bias, and the store writes only columns < n.
    let a = unsafe { codes.as_ptr().add(r0 * kp) };
    let wp = unsafe { w.packed.as_ptr().add(g0 * GROUP * kp) };
    let mut acc = [[_mm512_setzero_si512(); C]; R];
    let mut q = 0;
    while q < kp {
        let mut wv = [_mm512_setzero_si512(); C];
        for c in 0..C {
            wv[c] = unsafe { _mm512_loadu_si512(wp.add(c * GROUP * kp + GROUP * q).cast()) };
        }
        for r in 0..R {
            let quad = unsafe { a.add(r * kp + q).cast::<i32>().read_unaligned() };
            let av = _mm512_set1_epi32(quad);
            for c in 0..C {
                acc[r][c] = _mm512_dpbusd_epi32(acc[r][c], av, wv[c]);
            }
        }
        q += 4;
    }
    let zero = _mm512_setzero_ps();
    for r in 0..R {
        let row = r0 + r;
        let sa = _mm512_set1_ps(scales[row]);
        for c in 0..C {
            let col = (g0 + c) * GROUP;
            debug_assert!(col < n);
            let (sw, bias) = unsafe {
                (
                    _mm512_loadu_ps(w.scales.as_ptr().add(col)),
                    _mm512_loadu_ps(w.bias.as_ptr().add(col)),
                )
            };
            // The scalar kernel's expression, operation for operation (no FMA): bit-identical outputs.
            let mut y = _mm512_add_ps(
                _mm512_mul_ps(_mm512_cvtepi32_ps(acc[r][c]), _mm512_mul_ps(sa, sw)),
                bias,
            );
            if relu {
                y = _mm512_max_ps(y, zero);
            }
            let dst = unsafe { out.as_mut_ptr().add(row * n + col) };
            let left = n - col;
            if left >= GROUP {
                unsafe { _mm512_storeu_ps(dst, y) };
            } else {
                unsafe { _mm512_mask_storeu_ps(dst, (1u16 << left) - 1, y) };
            }
        }
    }
}
