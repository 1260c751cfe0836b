//! Image operations shared by the stages (placeholder until the focus branch lands: box-average resize and CHW).

/// Resize RGB8 `src` (sw×sh) into `dst` (dw×dh) by averaging the source pixels under each target pixel.
pub fn resize_rgb_bilinear(src: &[u8], sw: usize, sh: usize, dst: &mut [u8], dw: usize, dh: usize) {
    for y in 0..dh {
        let y0 = y * sh / dh;
        let y1 = ((y + 1) * sh / dh).max(y0 + 1).min(sh);
        for x in 0..dw {
            let x0 = x * sw / dw;
            let x1 = ((x + 1) * sw / dw).max(x0 + 1).min(sw);
            let mut acc = [0u32; 3];
            for yy in y0..y1 {
                for xx in x0..x1 {
                    let i = (yy * sw + xx) * 3;
                    acc[0] += src[i] as u32;
                    acc[1] += src[i + 1] as u32;
                    acc[2] += src[i + 2] as u32;
                }
            }
            let n = ((y1 - y0) * (x1 - x0)) as u32;
            let o = (y * dw + x) * 3;
            for c in 0..3 {
                dst[o + c] = ((acc[c] + n / 2) / n) as u8;
            }
        }
    }
}

/// RGB8 interleaved → planar CHW f32 in 0..1.
pub fn rgb_to_chw_f32(rgb: &[u8], w: usize, h: usize, out: &mut [f32]) {
    let plane = w * h;
    for i in 0..plane {
        for c in 0..3 {
            out[c * plane + i] = rgb[i * 3 + c] as f32 / 255.0;
        }
    }
}
