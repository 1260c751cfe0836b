//! The aarch64 kernels. Activation codes are 0..=127, so they read as i8 as well as u8 and both kernels
//! multiply signed by signed.
//!
//! - With the dot-product extension (`rows_dot`): `sdot` (by element) adds the four products of four
//!   weight rows' 4 bytes with one broadcast 4-byte lane of an activation vector into each i32 lane. The
//!   `vdotq_laneq_s32` intrinsic is not stable in this Rust, so the instruction is written with `asm!`.
//!   Four activation rows against one group of 16 weight rows (four vectors of four output channels) make
//!   16 accumulators.
//! - Without it (`rows`): `smull`/`smlal` multiply two column quads into i16 lanes (two products each,
//!   within ±2·127·128: no overflow) and `sadalp` widens and adds adjacent pairs into i32; a final `addp`
//!   of the two halves gives each output channel's sum. Two activation rows against one group.
//!
//! Both read the packed weights, so every accumulator lane is one output channel, in column order.
#![allow(unsafe_code)]
// The register-blocked loops index small fixed-size arrays by row and vector on purpose.
#![allow(clippy::needless_range_loop)]

use super::{Int8Kernel, Weights, GROUP};
use core::arch::aarch64::*;

/// Output channels per vector.
const LANES: usize = 4;
/// Vectors per weight group.
const VECS: usize = GROUP / LANES;

/// `scales.len()` activation rows (`codes`, `w.kp` each) against all of `w`'s rows into `out` (`w.n` per
/// row), with `sdot`.
///
/// # Panics
/// When the CPU lacks the dot-product extension or the shapes disagree.
pub(super) fn rows_dot(codes: &[u8], scales: &[f32], w: &Weights<'_>, relu: bool, out: &mut [f32]) {
    super::check_entry(Int8Kernel::NeonDot, codes, scales, w, out);
    // SAFETY: the CPU has NEON and dotprod, and the shapes the kernel's pointer arithmetic relies on were
    // checked: `codes` holds `scales.len()` rows of `kp` (a multiple of 32) codes, `packed` `np · kp`
    // codes, `scales` and `bias` `np` values (`np` a multiple of 16, `np − 16 < n ≤ np`), and `out`
    // `scales.len() · n` values.
    unsafe { rows_dot_impl(codes, scales, w, relu, out) }
}

/// [`rows_dot`] without the dot-product extension.
///
/// # Panics
/// When the CPU lacks NEON or the shapes disagree.
pub(super) fn rows(codes: &[u8], scales: &[f32], w: &Weights<'_>, relu: bool, out: &mut [f32]) {
    super::check_entry(Int8Kernel::Neon, codes, scales, w, out);
    // SAFETY: as in `rows_dot`, with NEON present.
    unsafe { rows_impl(codes, scales, w, relu, out) }
}

#[target_feature(enable = "neon,dotprod")]
unsafe fn rows_dot_impl(
    codes: &[u8],
    scales: &[f32],
    w: &Weights<'_>,
    relu: bool,
    out: &mut [f32],
) {
    const ROWS: usize = 4;
    row_blocks!(block::<ROWS, Dot>(codes, scales, w, relu, out));
}

#[target_feature(enable = "neon")]
unsafe fn rows_impl(codes: &[u8], scales: &[f32], w: &Weights<'_>, relu: bool, out: &mut [f32]) {
    const ROWS: usize = 2;
    row_blocks!(block::<ROWS, Mull>(codes, scales, w, relu, out));
}

/// Activation rows `r0 .. r0 + R` against weight group `g`: the kernel's integer sums ([`BlockSums`]),
/// then scaled, biased and stored. Both kernels' block; inlined into each kernel's `#[target_feature]`
/// function (NEON itself is part of every aarch64 target).
///
/// # Safety
/// The CPU runs `S`'s instructions, the shapes of [`rows_dot`] hold, `r0 + R ≤ scales.len()` and
/// `g < np / 16`.
#[inline(always)]
unsafe fn block<const R: usize, S: BlockSums>(
    codes: &[u8],
    scales: &[f32],
    w: &Weights<'_>,
    relu: bool,
    out: &mut [f32],
    r0: usize,
    g: usize,
) {
    let kp = w.kp;
    // SAFETY: rows r0 + r < scales.len() start inside `codes`; group g < np / 16 starts inside `packed`.
    let a = unsafe { codes.as_ptr().add(r0 * kp).cast::<i8>() };
    let wp = unsafe { w.packed.as_ptr().add(g * GROUP * kp) };
    // SAFETY: the CPU runs `S`; `a` holds R rows of kp codes and `wp` the group's 16 · kp packed bytes.
    let sums = unsafe { S::sums::<R>(a, wp, kp) };
    for r in 0..R {
        for v in 0..VECS {
            // SAFETY: the shapes of `rows_dot`.
            unsafe {
                store(
                    sums[r][v],
                    scales,
                    w,
                    relu,
                    out,
                    r0 + r,
                    g * GROUP + v * LANES,
                )
            };
        }
    }
}

/// How a kernel sums one register block: `R` activation rows against one group of 16 packed weight rows.
trait BlockSums {
    /// The i32 sums of `R` activation rows (`a`, `kp` codes each) with the group's packed weights (`wp`):
    /// `[r][v]` holds row `r`'s sums for the group's output channels `4v .. 4v + 4`.
    ///
    /// # Safety
    /// The CPU runs the kernel's instructions; `a .. a + R · kp` and `wp .. wp + 16 · kp` readable, `kp` a
    /// multiple of 16.
    unsafe fn sums<const R: usize>(
        a: *const i8,
        wp: *const i8,
        kp: usize,
    ) -> [[int32x4_t; VECS]; R];
}

/// The dot-product kernel's block: `sdot`.
struct Dot;

impl BlockSums for Dot {
    #[target_feature(enable = "neon,dotprod")]
    #[inline]
    unsafe fn sums<const R: usize>(
        a: *const i8,
        wp: *const i8,
        kp: usize,
    ) -> [[int32x4_t; VECS]; R] {
        // SAFETY (pointer arithmetic): r·kp + k + 16 ≤ R·kp for k < kp (kp a multiple of 16), and
        // 16·k + 256 ≤ 16·kp.
        let mut acc = [[vdupq_n_s32(0); VECS]; R];
        let mut k = 0;
        while k < kp {
            // Four column quads of each activation row, one per `sdot` lane.
            let mut av = [vdupq_n_s8(0); R];
            for r in 0..R {
                av[r] = unsafe { vld1q_s8(a.add(r * kp + k)) };
            }
            let wq = unsafe { wp.add(GROUP * k) };
            unsafe {
                dot_quad::<0, R>(&mut acc, &av, wq);
                dot_quad::<1, R>(&mut acc, &av, wq.add(4 * GROUP));
                dot_quad::<2, R>(&mut acc, &av, wq.add(8 * GROUP));
                dot_quad::<3, R>(&mut acc, &av, wq.add(12 * GROUP));
            }
            k += 16;
        }
        acc
    }
}

/// One column quad (the activation vectors' lane `L`) against the group's 64 packed bytes at `wq`.
///
/// # Safety
/// NEON and dotprod present; `wq .. wq + 64` readable.
#[target_feature(enable = "neon,dotprod")]
#[inline]
unsafe fn dot_quad<const L: i32, const R: usize>(
    acc: &mut [[int32x4_t; VECS]; R],
    av: &[int8x16_t; R],
    wq: *const i8,
) {
    let mut wv = [vdupq_n_s8(0); VECS];
    for v in 0..VECS {
        wv[v] = unsafe { vld1q_s8(wq.add(v * 16)) };
    }
    for r in 0..R {
        for v in 0..VECS {
            acc[r][v] = unsafe { sdot_lane::<L>(acc[r][v], wv[v], av[r]) };
        }
    }
}

/// `acc[i] += Σ_j w[4i + j] · a[4L + j]` (i8 × i8 → i32).
///
/// # Safety
/// NEON and dotprod present.
#[target_feature(enable = "neon,dotprod")]
#[inline]
unsafe fn sdot_lane<const L: i32>(acc: int32x4_t, w: int8x16_t, a: int8x16_t) -> int32x4_t {
    let mut acc = acc;
    // SAFETY: one register-only instruction, which the CPU has (dotprod); L is 0..=3 at every call.
    unsafe {
        core::arch::asm!(
            "sdot {acc:v}.4s, {w:v}.16b, {a:v}.4b[{lane}]",
            acc = inout(vreg) acc,
            w = in(vreg) w,
            a = in(vreg) a,
            lane = const L,
            options(pure, nomem, nostack, preserves_flags),
        );
    }
    acc
}

/// The plain NEON kernel's block: `smull`/`smlal` + `sadalp`.
struct Mull;

impl BlockSums for Mull {
    #[target_feature(enable = "neon")]
    #[inline]
    unsafe fn sums<const R: usize>(
        a: *const i8,
        wp: *const i8,
        kp: usize,
    ) -> [[int32x4_t; VECS]; R] {
        // SAFETY (pointer arithmetic): r·kp + q + 8 ≤ R·kp for q < kp (kp a multiple of 8), and
        // 16·q + 128 ≤ 16·kp.
        // Per vector: the sums of its first two and last two output channels, two i32 lanes each.
        let mut lo = [[vdupq_n_s32(0); VECS]; R];
        let mut hi = [[vdupq_n_s32(0); VECS]; R];
        let mut q = 0;
        while q < kp {
            // Two column quads per step: their products fit one i16 lane together.
            let mut w0 = [vdupq_n_s8(0); VECS];
            let mut w1 = [vdupq_n_s8(0); VECS];
            for v in 0..VECS {
                unsafe {
                    w0[v] = vld1q_s8(wp.add(GROUP * q + 16 * v));
                    w1[v] = vld1q_s8(wp.add(GROUP * (q + 4) + 16 * v));
                }
            }
            for r in 0..R {
                let (x0, x1) = unsafe {
                    let p = a.add(r * kp + q).cast::<i32>();
                    (p.read_unaligned(), p.add(1).read_unaligned())
                };
                let a0 = vreinterpretq_s8_s32(vdupq_n_s32(x0));
                let a1 = vreinterpretq_s8_s32(vdupq_n_s32(x1));
                for v in 0..VECS {
                    let pl = vmlal_s8(
                        vmull_s8(vget_low_s8(w0[v]), vget_low_s8(a0)),
                        vget_low_s8(w1[v]),
                        vget_low_s8(a1),
                    );
                    let ph = vmlal_high_s8(vmull_high_s8(w0[v], a0), w1[v], a1);
                    lo[r][v] = vpadalq_s16(lo[r][v], pl);
                    hi[r][v] = vpadalq_s16(hi[r][v], ph);
                }
            }
            q += 8;
        }
        let mut sums = [[vdupq_n_s32(0); VECS]; R];
        for r in 0..R {
            for v in 0..VECS {
                sums[r][v] = vpaddq_s32(lo[r][v], hi[r][v]);
            }
        }
        sums
    }
}

/// Output columns `col .. col + 4` (those below `n`) of `row` from their integer sums.
///
/// # Safety
/// NEON present; `row < scales.len()`, `col + 4 ≤ np`, `out` holds `scales.len() · n` values.
#[target_feature(enable = "neon")]
#[inline]
unsafe fn store(
    sums: int32x4_t,
    scales: &[f32],
    w: &Weights<'_>,
    relu: bool,
    out: &mut [f32],
    row: usize,
    col: usize,
) {
    let n = w.n;
    if col >= n {
        return;
    }
    // SAFETY: col + 4 ≤ np = scales.len() = bias.len(); the full store only when col + 4 ≤ n.
    let (sw, bias) = unsafe {
        (
            vld1q_f32(w.scales.as_ptr().add(col)),
            vld1q_f32(w.bias.as_ptr().add(col)),
        )
    };
    let sa = vdupq_n_f32(scales[row]);
    // The scalar kernel's expression, operation for operation (no FMA): bit-identical outputs.
    let mut y = vaddq_f32(vmulq_f32(vcvtq_f32_s32(sums), vmulq_f32(sa, sw)), bias);
    if relu {
        y = vmaxq_f32(y, vdupq_n_f32(0.0));
    }
    if col + LANES <= n {
        unsafe { vst1q_f32(out.as_mut_ptr().add(row * n + col), y) };
    } else {
        let mut tmp = [0f32; LANES];
        unsafe { vst1q_f32(tmp.as_mut_ptr(), y) };
        out[row * n + col..row * n + n].copy_from_slice(&tmp[..n - col]);
    }
}
