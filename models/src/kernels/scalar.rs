//! The portable reference kernel: plain Rust over the row-major codes (not the packed copy), so the SIMD
//! kernels are checked against an independent reading of the weights.

use super::Weights;

/// The final float step every kernel computes the same way (no FMA): `sum · (sa · sw) + bias`, then ReLU.
pub(super) fn finish(sum: i32, sa: f32, sw: f32, bias: f32, relu: bool) -> f32 {
    let v = sum as f32 * (sa * sw) + bias;
    if relu {
        v.max(0.0)
    } else {
        v
    }
}

/// `scales.len()` activation rows (`codes`, `kp` each) against all of `w`'s rows into `out` (`n` per row).
pub(super) fn rows(codes: &[u8], scales: &[f32], w: &Weights<'_>, relu: bool, out: &mut [f32]) {
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
