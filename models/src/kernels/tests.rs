//! Every kernel this CPU runs against the portable reference, bit for bit: the one test of the instruction
//! set paths (selected by `.ci/run` under qemu with the name filter `int8`).

use super::*;
use proptest::prelude::*;

/// Deterministic values in `lo..hi`.
fn lcg(seed: u64, n: usize, lo: f32, hi: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            lo + (hi - lo) * ((s >> 40) as f32 / (1u64 << 24) as f32)
        })
        .collect()
}

proptest! {
    /// Every kernel this CPU runs gives exactly the scalar reference's outputs, on shapes with partial
    /// register blocks (m not a multiple of 4), partial groups (n not a multiple of 8 or 16), padded inner
    /// dims (k not a multiple of 32 or 64), extreme codes (activations up to 127, weights down to −128 as a
    /// Q8_0 file may hold) and both activations.
    #[test]
    fn every_int8_kernel_matches_the_scalar_reference_exactly(
        m in 1usize..12,
        n in 1usize..70,
        k in 1usize..300,
        relu: bool,
        seed: u64,
        extreme: bool,
    ) {
        let (kp, np) = (k.div_ceil(BLOCK) * BLOCK, padded_rows(n));
        let mut codes = vec![0i8; np * kp];
        let values = lcg(seed, n * k, -128.0, 128.0);
        for (r, row) in codes.chunks_exact_mut(kp).take(n).enumerate() {
            for (c, code) in row[..k].iter_mut().enumerate() {
                *code = if extreme {
                    if r % 2 == 0 { -128 } else { 127 }
                } else {
                    values[r * k + c].clamp(-128.0, 127.0) as i8
                };
            }
        }
        let mut scales = lcg(seed + 1, np, 1e-4, 1e-2);
        let mut bias = lcg(seed + 2, np, -50.0, 50.0);
        scales[n..].fill(0.0);
        bias[n..].fill(0.0);
        let packed = pack(&codes, np, kp);
        let w = Weights { n, np, k, kp, codes: &codes, packed: &packed, scales: &scales, bias: &bias };
        let mut act = vec![0u8; m * kp];
        let act_values = lcg(seed + 3, m * k, 0.0, 128.0);
        for (r, row) in act.chunks_exact_mut(kp).enumerate() {
            for (c, code) in row[..k].iter_mut().enumerate() {
                *code = if extreme { 127 } else { act_values[r * k + c].min(127.0) as u8 };
            }
        }
        let act_scales = lcg(seed + 4, m, 1e-3, 1e-1);
        let mut want = vec![0f32; m * n];
        scalar::rows(&act, &act_scales, &w, relu, &mut want);
        for kernel in Int8Kernel::available() {
            let mut got = vec![f32::NAN; m * n];
            rows(kernel, &act, &act_scales, &w, relu, &mut got);
            for (i, (g, r)) in got.iter().zip(&want).enumerate() {
                prop_assert!(g == r, "{} ({},{},{}) output {}: {} vs scalar {}", kernel, m, n, k, i, g, r);
            }
        }
    }
}
