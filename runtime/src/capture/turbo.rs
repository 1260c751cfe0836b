//! JPEG decoding with libjpeg-turbo (the `turbojpeg` cargo feature; libjpeg-turbo 3 is built from the
//! crate's bundled source, which needs `cmake` and `nasm`), optionally DCT-scaled: at 1/2, 1/4 or 1/8 the
//! decoder skips the inverse DCT's high frequencies instead of decoding full size and shrinking.
//!
//! What the product decodes with, and why: see the JPEG decoders section of `docs/bench/jpeg.md`.

pub use turbojpeg::Decompressor;
use turbojpeg::{Image, PixelFormat, ScalingFactor};

use crate::frame::{check_frame_size, try_resize, FrameError};

/// Decodes `jpeg` to RGB at `1/denom` of its size (`denom` 1, 2, 4 or 8) into `rgb_out`, resized only when
/// its length differs. The header's full size is checked against the frame cap before anything is
/// allocated. Returns the decoded `(width, height)`.
pub fn turbo_to_rgb(
    decompressor: &mut Decompressor,
    jpeg: &[u8],
    denom: usize,
    rgb_out: &mut Vec<u8>,
) -> Result<(u32, u32), FrameError> {
    let bad = |message: String| FrameError::Jpeg {
        bytes: jpeg.len(),
        message,
    };
    let factor = match denom {
        1 => ScalingFactor::ONE,
        2 => ScalingFactor::ONE_HALF,
        4 => ScalingFactor::ONE_QUARTER,
        8 => ScalingFactor::ONE_EIGHTH,
        other => {
            return Err(bad(format!(
                "DCT scale 1/{other}: expected 1/1, 1/2, 1/4 or 1/8"
            )))
        }
    };
    let header = decompressor
        .read_header(jpeg)
        .map_err(|e| bad(e.to_string()))?;
    let (width, height) = (header.width as u32, header.height as u32);
    if width == 0 || height == 0 {
        return Err(FrameError::ZeroSize { width, height });
    }
    check_frame_size(&format!("JPEG of {} bytes", jpeg.len()), width, height)?;
    decompressor
        .set_scaling_factor(factor)
        .map_err(|e| bad(e.to_string()))?;
    let scaled = header.scaled(factor);
    let expected = scaled.width * scaled.height * 3;
    if rgb_out.len() != expected {
        try_resize(rgb_out, expected)?;
    }
    decompressor
        .decompress(
            jpeg,
            Image {
                pixels: rgb_out.as_mut_slice(),
                width: scaled.width,
                pitch: scaled.width * 3,
                height: scaled.height,
                format: PixelFormat::RGB,
            },
        )
        .map_err(|e| bad(e.to_string()))?;
    Ok((scaled.width as u32, scaled.height as u32))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::super::dir::decode_image;

    fn sample() -> PathBuf {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tools/samples");
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "jpg"))
            .collect();
        files.sort();
        files.remove(0)
    }

    /// Folder files decode with libjpeg-turbo under this feature: the same size as zune-jpeg's decode and
    /// the same pixels within the IDCTs' rounding.
    #[test]
    fn folder_jpegs_decode_with_libjpeg_turbo_like_zune_jpeg() {
        let path = sample();
        let jpeg = std::fs::read(&path).unwrap();
        let turbo = decode_image(&path).unwrap();
        let mut decompressor = super::Decompressor::new().unwrap();
        let mut direct = Vec::new();
        let (w, h) = super::turbo_to_rgb(&mut decompressor, &jpeg, 1, &mut direct).unwrap();
        assert_eq!((turbo.width(), turbo.height()), (w, h));
        assert_eq!(
            turbo.as_raw(),
            &direct,
            "decode_image did not use libjpeg-turbo"
        );
        let zune = image::load_from_memory(&jpeg).unwrap().into_rgb8();
        assert_eq!(zune.dimensions(), (w, h));
        let mean_diff = zune
            .as_raw()
            .iter()
            .zip(turbo.as_raw())
            .map(|(&a, &b)| (a as f64 - b as f64).abs())
            .sum::<f64>()
            / direct.len() as f64;
        assert!(mean_diff < 1.5, "mean |zune − turbo| = {mean_diff}");
    }

    /// A cut file still decodes to a frame of its full size, as without the feature (libjpeg-turbo refuses
    /// it, zune-jpeg then keeps what was decoded).
    #[test]
    fn a_truncated_folder_jpeg_still_decodes() {
        let jpeg = std::fs::read(sample()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let cut = dir.path().join("cut.jpg");
        std::fs::write(&cut, &jpeg[..jpeg.len() * 2 / 3]).unwrap();
        let image = decode_image(&cut).unwrap();
        let full = image::load_from_memory(&jpeg).unwrap();
        assert_eq!(image.dimensions(), (full.width(), full.height()));
    }
}
