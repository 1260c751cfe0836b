//! Camera effects on a finished scene: exposure, contrast and white balance, vignetting, sensor noise and a
//! JPEG round trip.

use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// Camera effects on the whole frame: exposure/contrast/white balance (one LUT per channel), vignetting,
/// sensor noise, then a JPEG round trip.
pub(crate) fn finish(
    rng: &mut ChaCha8Rng,
    rgb: &mut [u8],
    width: u32,
    height: u32,
    jpeg_quality: Option<(u8, u8)>,
) {
    let gain = rng.random_range(0.75f32..1.2);
    let contrast = rng.random_range(0.85f32..1.15);
    let white = [
        rng.random_range(0.94f32..1.06),
        1.0,
        rng.random_range(0.94f32..1.06),
    ];
    let mut lut = [[0u8; 256]; 3];
    for (k, table) in lut.iter_mut().enumerate() {
        for (v, out) in table.iter_mut().enumerate() {
            let x = v as f32 / 255.0;
            let y = ((x - 0.5) * contrast + 0.5) * gain * white[k];
            *out = (y * 255.0).round().clamp(0.0, 255.0) as u8;
        }
    }
    let vignette = rng.random_range(0.0f32..0.35);
    let noise_sigma = rng.random_range(1.0f32..5.0);
    let mut state: u64 = rng.random::<u64>() | 1;
    let (cx, cy) = (width as f32 * 0.5, height as f32 * 0.5);
    let inv_r2 = 1.0 / (cx * cx + cy * cy);
    for y in 0..height as usize {
        let dy2 = (y as f32 + 0.5 - cy).powi(2);
        let row = &mut rgb[y * width as usize * 3..(y + 1) * width as usize * 3];
        for x in 0..width as usize {
            let dx = x as f32 + 0.5 - cx;
            let fall = 1.0 - vignette * (dx * dx + dy2) * inv_r2;
            for (k, table) in lut.iter().enumerate() {
                // xorshift64*: per-pixel noise from one cheap stream, seeded by the scene RNG.
                state ^= state >> 12;
                state ^= state << 25;
                state ^= state >> 27;
                let r = state.wrapping_mul(0x2545_F491_4F6C_DD1D);
                let u1 = (r >> 40) as f32 / (1u64 << 24) as f32;
                let u2 = ((r >> 16) & 0xFF_FFFF) as f32 / (1u64 << 24) as f32;
                // Sum of two uniforms: a cheap bell-shaped noise with unit-ish spread.
                let n = (u1 + u2 - 1.0) * 2.45 * noise_sigma;
                let o = x * 3 + k;
                let v = table[row[o] as usize] as f32 * fall + n;
                row[o] = v.round().clamp(0.0, 255.0) as u8;
            }
        }
    }
    if let Some((lo, hi)) = jpeg_quality {
        let quality = rng.random_range(lo..=hi);
        if let Ok(jpeg) = encode_jpeg(rgb, width, height, quality) {
            if let Ok(decoded) =
                image::load_from_memory_with_format(&jpeg, image::ImageFormat::Jpeg)
            {
                let decoded = decoded.to_rgb8();
                if decoded.as_raw().len() == rgb.len() {
                    rgb.copy_from_slice(decoded.as_raw());
                }
            }
        }
    }
}

/// The frame as a JPEG of `quality`.
pub(crate) fn encode_jpeg(
    rgb: &[u8],
    width: u32,
    height: u32,
    quality: u8,
) -> Result<Vec<u8>, image::ImageError> {
    let mut out = Vec::new();
    let encoder = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, quality);
    image::ImageEncoder::write_image(encoder, rgb, width, height, image::ExtendedColorType::Rgb8)?;
    Ok(out)
}
