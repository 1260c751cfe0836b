//! Raw camera buffers to RGB: packed YUYV (BT.601, limited range, integer maths) and MJPEG (zune-jpeg, with the
//! standard Huffman tables put back into frames that omit them). Capture calls these on every frame, so they
//! write into the caller's buffer and only resize it when the frame size changes.

use std::borrow::Cow;

use zune_jpeg::zune_core::bytestream::ZCursor;
use zune_jpeg::zune_core::colorspace::ColorSpace;
use zune_jpeg::zune_core::options::DecoderOptions;
use zune_jpeg::JpegDecoder;

use crate::frame::{check_frame_size, try_resize, FrameError, MAX_FRAME_SIDE_PX};

/// Converts packed YUYV 4:2:2 (`Y0 U Y1 V` per pixel pair) to RGB using BT.601 limited-range coefficients in
/// 8.8 fixed point. `rgb_out` is resized only when its length differs from `width * height * 3`.
pub fn yuyv_to_rgb(
    yuyv: &[u8],
    width: u32,
    height: u32,
    rgb_out: &mut Vec<u8>,
) -> Result<(), FrameError> {
    if width == 0 || height == 0 {
        return Err(FrameError::ZeroSize { width, height });
    }
    if !width.is_multiple_of(2) {
        return Err(FrameError::OddWidth { width, height });
    }
    check_frame_size("YUYV frame", width, height)?;
    let pixels = width as usize * height as usize;
    let expected = pixels * 2;
    if yuyv.len() != expected {
        return Err(FrameError::WrongLength {
            what: "YUYV",
            width,
            height,
            found: yuyv.len(),
            expected,
        });
    }
    if rgb_out.len() != pixels * 3 {
        try_resize(rgb_out, pixels * 3)?;
    }
    for (pair, out) in yuyv.chunks_exact(4).zip(rgb_out.chunks_exact_mut(6)) {
        let d = i32::from(pair[1]) - 128;
        let e = i32::from(pair[3]) - 128;
        // Chroma terms are shared by the two pixels of a pair: compute them once.
        let r_chroma = 409 * e + 128;
        let g_chroma = -100 * d - 208 * e + 128;
        let b_chroma = 516 * d + 128;
        for (y, px) in [pair[0], pair[2]].into_iter().zip(out.chunks_exact_mut(3)) {
            let c = 298 * (i32::from(y) - 16);
            px[0] = clamp_u8((c + r_chroma) >> 8);
            px[1] = clamp_u8((c + g_chroma) >> 8);
            px[2] = clamp_u8((c + b_chroma) >> 8);
        }
    }
    Ok(())
}

#[inline]
fn clamp_u8(v: i32) -> u8 {
    v.clamp(0, 255) as u8
}

/// Runs a zune-jpeg call, turning a panic inside the decoder into an error. zune-jpeg 0.5.15 (the latest)
/// panics on some malformed scans (an out-of-range store in its AVX2 IDCT, found by the `mjpeg` fuzz target;
/// the inputs are in tests/fuzz-corpus/mjpeg/crash-*): a camera or file that sends such bytes must cost one
/// bad frame, not the process. The panic's message still reaches stderr through the panic hook.
pub(crate) fn without_decoder_panic<T>(
    call: impl FnOnce() -> Result<T, String>,
) -> Result<T, String> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(call)) {
        Ok(result) => result,
        Err(payload) => {
            let why = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "no message".to_string());
            Err(format!("the JPEG decoder failed on malformed data ({why})"))
        }
    }
}

/// Decodes one MJPEG frame (a baseline JPEG, possibly without its DHT segment, as many UVC cameras send) into
/// `rgb_out`, resized only when its length differs. Returns `(width, height)`.
pub fn mjpeg_to_rgb(jpeg: &[u8], rgb_out: &mut Vec<u8>) -> Result<(u32, u32), FrameError> {
    let bad = |message: String| FrameError::Jpeg {
        bytes: jpeg.len(),
        message,
    };
    let patched = with_default_huffman_tables(jpeg).map_err(|m| bad(m.to_string()))?;
    let options = DecoderOptions::default()
        .jpeg_set_out_colorspace(ColorSpace::RGB)
        .set_max_width(MAX_FRAME_SIDE_PX as usize)
        .set_max_height(MAX_FRAME_SIDE_PX as usize)
        // Strict mode turns truncated scans into errors instead of silently grey-filled frames.
        .set_strict_mode(true);
    let mut decoder = JpegDecoder::new_with_options(ZCursor::new(patched.as_ref()), options);
    without_decoder_panic(|| decoder.decode_headers().map_err(|e| e.to_string())).map_err(bad)?;
    let info = decoder
        .info()
        .ok_or_else(|| bad("no image information after the headers".to_string()))?;
    let (width, height) = (u32::from(info.width), u32::from(info.height));
    if width == 0 || height == 0 {
        return Err(FrameError::ZeroSize { width, height });
    }
    // From the header, before the output buffer exists: a corrupt or hostile header allocates nothing.
    check_frame_size(
        &format!("MJPEG frame of {} bytes", jpeg.len()),
        width,
        height,
    )?;
    let expected = width as usize * height as usize * 3;
    let size = decoder
        .output_buffer_size()
        .ok_or_else(|| bad("no output size after the headers".to_string()))?;
    if size != expected {
        return Err(bad(format!(
            "decoder wants {size} output bytes for {width}×{height}, expected {expected} (RGB)"
        )));
    }
    if rgb_out.len() != expected {
        try_resize(rgb_out, expected)?;
    }
    without_decoder_panic(|| {
        decoder
            .decode_into(rgb_out.as_mut_slice())
            .map_err(|e| e.to_string())
    })
    .map_err(bad)?;
    Ok((width, height))
}

/// The DHT segment of the JPEG spec's Annex K.3 (tables K.3–K.6: luminance/chrominance DC and AC), which
/// MJPEG frames from UVC cameras leave out (AVI1 / OpenDML convention).
const ANNEX_K_DHT: [u8; 420] = {
    const DC_LUMA_BITS: [u8; 16] = [0, 1, 5, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0];
    const DC_CHROMA_BITS: [u8; 16] = [0, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0];
    const DC_VALUES: [u8; 12] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11];
    const AC_LUMA_BITS: [u8; 16] = [0, 2, 1, 3, 3, 2, 4, 3, 5, 5, 4, 4, 0, 0, 1, 0x7D];
    const AC_LUMA_VALUES: [u8; 162] = [
        0x01, 0x02, 0x03, 0x00, 0x04, 0x11, 0x05, 0x12, 0x21, 0x31, 0x41, 0x06, 0x13, 0x51, 0x61,
        0x07, 0x22, 0x71, 0x14, 0x32, 0x81, 0x91, 0xA1, 0x08, 0x23, 0x42, 0xB1, 0xC1, 0x15, 0x52,
        0xD1, 0xF0, 0x24, 0x33, 0x62, 0x72, 0x82, 0x09, 0x0A, 0x16, 0x17, 0x18, 0x19, 0x1A, 0x25,
        0x26, 0x27, 0x28, 0x29, 0x2A, 0x34, 0x35, 0x36, 0x37, 0x38, 0x39, 0x3A, 0x43, 0x44, 0x45,
        0x46, 0x47, 0x48, 0x49, 0x4A, 0x53, 0x54, 0x55, 0x56, 0x57, 0x58, 0x59, 0x5A, 0x63, 0x64,
        0x65, 0x66, 0x67, 0x68, 0x69, 0x6A, 0x73, 0x74, 0x75, 0x76, 0x77, 0x78, 0x79, 0x7A, 0x83,
        0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8A, 0x92, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99,
        0x9A, 0xA2, 0xA3, 0xA4, 0xA5, 0xA6, 0xA7, 0xA8, 0xA9, 0xAA, 0xB2, 0xB3, 0xB4, 0xB5, 0xB6,
        0xB7, 0xB8, 0xB9, 0xBA, 0xC2, 0xC3, 0xC4, 0xC5, 0xC6, 0xC7, 0xC8, 0xC9, 0xCA, 0xD2, 0xD3,
        0xD4, 0xD5, 0xD6, 0xD7, 0xD8, 0xD9, 0xDA, 0xE1, 0xE2, 0xE3, 0xE4, 0xE5, 0xE6, 0xE7, 0xE8,
        0xE9, 0xEA, 0xF1, 0xF2, 0xF3, 0xF4, 0xF5, 0xF6, 0xF7, 0xF8, 0xF9, 0xFA,
    ];
    const AC_CHROMA_BITS: [u8; 16] = [0, 2, 1, 2, 4, 4, 3, 4, 7, 5, 4, 4, 0, 1, 2, 0x77];
    const AC_CHROMA_VALUES: [u8; 162] = [
        0x00, 0x01, 0x02, 0x03, 0x11, 0x04, 0x05, 0x21, 0x31, 0x06, 0x12, 0x41, 0x51, 0x07, 0x61,
        0x71, 0x13, 0x22, 0x32, 0x81, 0x08, 0x14, 0x42, 0x91, 0xA1, 0xB1, 0xC1, 0x09, 0x23, 0x33,
        0x52, 0xF0, 0x15, 0x62, 0x72, 0xD1, 0x0A, 0x16, 0x24, 0x34, 0xE1, 0x25, 0xF1, 0x17, 0x18,
        0x19, 0x1A, 0x26, 0x27, 0x28, 0x29, 0x2A, 0x35, 0x36, 0x37, 0x38, 0x39, 0x3A, 0x43, 0x44,
        0x45, 0x46, 0x47, 0x48, 0x49, 0x4A, 0x53, 0x54, 0x55, 0x56, 0x57, 0x58, 0x59, 0x5A, 0x63,
        0x64, 0x65, 0x66, 0x67, 0x68, 0x69, 0x6A, 0x73, 0x74, 0x75, 0x76, 0x77, 0x78, 0x79, 0x7A,
        0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8A, 0x92, 0x93, 0x94, 0x95, 0x96, 0x97,
        0x98, 0x99, 0x9A, 0xA2, 0xA3, 0xA4, 0xA5, 0xA6, 0xA7, 0xA8, 0xA9, 0xAA, 0xB2, 0xB3, 0xB4,
        0xB5, 0xB6, 0xB7, 0xB8, 0xB9, 0xBA, 0xC2, 0xC3, 0xC4, 0xC5, 0xC6, 0xC7, 0xC8, 0xC9, 0xCA,
        0xD2, 0xD3, 0xD4, 0xD5, 0xD6, 0xD7, 0xD8, 0xD9, 0xDA, 0xE2, 0xE3, 0xE4, 0xE5, 0xE6, 0xE7,
        0xE8, 0xE9, 0xEA, 0xF2, 0xF3, 0xF4, 0xF5, 0xF6, 0xF7, 0xF8, 0xF9, 0xFA,
    ];
    let mut out = [0u8; 420];
    // Marker, then the segment length, which counts itself but not the marker: 420 - 2.
    out[0] = 0xFF;
    out[1] = 0xC4;
    out[2] = 0x01;
    out[3] = 0xA2;
    let mut at = 4;
    // (class << 4 | table id, BITS, HUFFVAL) in Annex K order.
    let tables: [(u8, &[u8; 16], &[u8]); 4] = [
        (0x00, &DC_LUMA_BITS, &DC_VALUES),
        (0x10, &AC_LUMA_BITS, &AC_LUMA_VALUES),
        (0x01, &DC_CHROMA_BITS, &DC_VALUES),
        (0x11, &AC_CHROMA_BITS, &AC_CHROMA_VALUES),
    ];
    let mut t = 0;
    while t < tables.len() {
        let (class_id, bits, values) = tables[t];
        out[at] = class_id;
        at += 1;
        let mut i = 0;
        while i < 16 {
            out[at] = bits[i];
            at += 1;
            i += 1;
        }
        let mut i = 0;
        while i < values.len() {
            out[at] = values[i];
            at += 1;
            i += 1;
        }
        t += 1;
    }
    assert!(at == 420, "Annex K DHT segment must be exactly 420 bytes");
    out
};

/// Where the default tables must go, if they are missing: `None` when the stream has a DHT segment before its
/// first SOS, `Some(offset)` of the first SOF (or SOS) marker otherwise.
fn dht_insertion_offset(jpeg: &[u8]) -> Result<Option<usize>, &'static str> {
    if jpeg.len() < 4 || jpeg[0] != 0xFF || jpeg[1] != 0xD8 {
        return Err("does not start with an SOI marker (FF D8)");
    }
    let mut first_frame_marker = None;
    let mut at = 2;
    loop {
        if at < jpeg.len() && jpeg[at] != 0xFF {
            return Err("expected a marker between header segments");
        }
        // Markers may be preceded by any number of 0xFF fill bytes.
        while at < jpeg.len() && jpeg[at] == 0xFF {
            at += 1;
        }
        let Some(&marker) = jpeg.get(at) else {
            return Err("ends inside the header segments");
        };
        let marker_start = at - 1;
        at += 1;
        match marker {
            0xC4 => return Ok(None),
            0xDA => return Ok(Some(first_frame_marker.unwrap_or(marker_start))),
            0xD9 => return Err("reaches EOI before any scan"),
            // Stand-alone markers carry no length.
            0x01 | 0xD0..=0xD7 => {}
            _ => {
                // SOF0..SOF15 except DHT (C4), JPG (C8) and DAC (CC): tables may still follow it.
                if matches!(marker, 0xC0..=0xCF) && marker != 0xC8 && marker != 0xCC {
                    first_frame_marker.get_or_insert(marker_start);
                }
                let len_bytes = jpeg.get(at..at + 2).ok_or("ends inside a segment length")?;
                let len = usize::from(u16::from_be_bytes([len_bytes[0], len_bytes[1]]));
                if len < 2 {
                    return Err("has a segment length below 2");
                }
                at += len;
            }
        }
    }
}

/// The frame, with the Annex K DHT inserted before its first SOF/SOS when it has no DHT of its own (as ffmpeg's
/// mjpeg decoder does); borrowed unchanged otherwise.
pub fn with_default_huffman_tables(jpeg: &[u8]) -> Result<Cow<'_, [u8]>, &'static str> {
    match dht_insertion_offset(jpeg)? {
        None => Ok(Cow::Borrowed(jpeg)),
        Some(offset) => {
            let mut patched = Vec::with_capacity(jpeg.len() + ANNEX_K_DHT.len());
            patched.extend_from_slice(&jpeg[..offset]);
            patched.extend_from_slice(&ANNEX_K_DHT);
            patched.extend_from_slice(&jpeg[offset..]);
            Ok(Cow::Owned(patched))
        }
    }
}

/// The same JPEG without its DHT segments: what a UVC camera sends. Used by tests and the fault injector.
pub fn strip_huffman_tables(jpeg: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(jpeg.len());
    if jpeg.len() < 2 {
        out.extend_from_slice(jpeg);
        return out;
    }
    out.extend_from_slice(&jpeg[..2]);
    let mut at = 2;
    while at + 4 <= jpeg.len() && jpeg[at] == 0xFF {
        let marker = jpeg[at + 1];
        if marker == 0xDA {
            break;
        }
        let len = usize::from(u16::from_be_bytes([jpeg[at + 2], jpeg[at + 3]]));
        let end = (at + 2 + len).min(jpeg.len());
        if marker != 0xC4 {
            out.extend_from_slice(&jpeg[at..end]);
        }
        at = end;
    }
    out.extend_from_slice(&jpeg[at.min(jpeg.len())..]);
    out
}

/// RGB to YUYV with the inverse BT.601 limited-range matrix; the chroma of a pair is the mean of its two
/// pixels. Used to build test and fault buffers, not on the capture path.
pub fn rgb_to_yuyv(rgb: &[u8], width: u32, height: u32) -> Result<Vec<u8>, FrameError> {
    if width == 0 || height == 0 {
        return Err(FrameError::ZeroSize { width, height });
    }
    if !width.is_multiple_of(2) {
        return Err(FrameError::OddWidth { width, height });
    }
    let expected = width as usize * height as usize * 3;
    if rgb.len() != expected {
        return Err(FrameError::WrongLength {
            what: "RGB",
            width,
            height,
            found: rgb.len(),
            expected,
        });
    }
    let mut out = Vec::with_capacity(width as usize * height as usize * 2);
    for pair in rgb.chunks_exact(6) {
        let (y0, u0, v0) = yuv_from_rgb(pair[0], pair[1], pair[2]);
        let (y1, u1, v1) = yuv_from_rgb(pair[3], pair[4], pair[5]);
        out.extend_from_slice(&[
            y0,
            (u16::from(u0) + u16::from(u1)).div_ceil(2) as u8,
            y1,
            (u16::from(v0) + u16::from(v1)).div_ceil(2) as u8,
        ]);
    }
    Ok(out)
}

fn yuv_from_rgb(r: u8, g: u8, b: u8) -> (u8, u8, u8) {
    let (r, g, b) = (i32::from(r), i32::from(g), i32::from(b));
    let y = ((66 * r + 129 * g + 25 * b + 128) >> 8) + 16;
    let u = ((-38 * r - 74 * g + 112 * b + 128) >> 8) + 128;
    let v = ((112 * r - 94 * g - 18 * b + 128) >> 8) + 128;
    (clamp_u8(y), clamp_u8(u), clamp_u8(v))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The malformed JPEGs that made zune-jpeg panic (found by the `mjpeg` AFL target): an error each, in
    /// both decoders saccade runs (MJPEG frames and folder files), and no panic.
    #[test]
    fn jpegs_that_panic_the_decoder_are_errors() {
        let corpus =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fuzz-corpus/mjpeg");
        let mut crashes = 0;
        for entry in std::fs::read_dir(corpus).unwrap() {
            let path = entry.unwrap().path();
            if !path
                .file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("crash-")
            {
                continue;
            }
            crashes += 1;
            let bytes = std::fs::read(&path).unwrap();
            let mut rgb = Vec::new();
            let err = mjpeg_to_rgb(&bytes, &mut rgb).unwrap_err();
            assert_eq!(err.kind(), "corrupt_jpeg", "{}: {err}", path.display());
            let caught = without_decoder_panic(|| -> Result<(), String> { panic!("inside") });
            assert!(caught.unwrap_err().contains("inside"));
            let _ = super::super::dir::decode_jpeg_file(&path, &bytes);
        }
        assert!(crashes >= 3, "the crash inputs are missing");
    }

    const PRIMARIES: [[u8; 3]; 5] = [
        [255, 0, 0],
        [0, 255, 0],
        [0, 0, 255],
        [255, 255, 255],
        [0, 0, 0],
    ];

    fn yuv(rgb: [u8; 3]) -> (u8, u8, u8) {
        yuv_from_rgb(rgb[0], rgb[1], rgb[2])
    }

    fn assert_close(found: &[u8], expected: &[u8], tolerance: i16, what: &str) {
        for (i, (&f, &e)) in found.iter().zip(expected).enumerate() {
            assert!(
                (i16::from(f) - i16::from(e)).abs() <= tolerance,
                "{what}: byte {i} is {f}, expected {e} ±{tolerance}"
            );
        }
    }

    #[test]
    fn yuyv_of_primaries_decodes_to_their_rgb_within_two() {
        // Studio-swing values from the BT.601 tables, not from our own encoder.
        let table: [([u8; 3], [u8; 3]); 5] = [
            ([255, 0, 0], [81, 90, 240]),
            ([0, 255, 0], [145, 54, 34]),
            ([0, 0, 255], [41, 240, 110]),
            ([255, 255, 255], [235, 128, 128]),
            ([0, 0, 0], [16, 128, 128]),
        ];
        for (rgb, [y, u, v]) in table {
            let yuyv: Vec<u8> = [y, u, y, v].repeat(4 * 2 / 2);
            let mut out = Vec::new();
            yuyv_to_rgb(&yuyv, 4, 2, &mut out).unwrap();
            assert_eq!(out.len(), 4 * 2 * 3);
            for px in out.chunks_exact(3) {
                assert_close(px, &rgb, 2, &format!("YUYV {y},{u},{v}"));
            }
        }
    }

    #[test]
    fn rgb_to_yuyv_matches_the_bt601_table() {
        assert_eq!(yuv([255, 255, 255]), (235, 128, 128));
        assert_eq!(yuv([0, 0, 0]), (16, 128, 128));
    }

    #[test]
    fn yuyv_to_rgb_keeps_the_buffer_when_the_size_is_unchanged() {
        let yuyv = vec![128u8; 64 * 48 * 2];
        let mut out = Vec::new();
        yuyv_to_rgb(&yuyv, 64, 48, &mut out).unwrap();
        let ptr = out.as_ptr();
        yuyv_to_rgb(&yuyv, 64, 48, &mut out).unwrap();
        assert_eq!(out.as_ptr(), ptr, "steady state must not reallocate");
    }

    #[test]
    fn yuyv_to_rgb_rejects_bad_sizes_with_the_values() {
        let mut out = Vec::new();
        let err = yuyv_to_rgb(&vec![0; 1_843_199], 1280, 720, &mut out).unwrap_err();
        assert_eq!(
            err.to_string(),
            "frame 1280×720 YUYV has 1843199 bytes, expected 1843200"
        );
        assert_eq!(
            yuyv_to_rgb(&[0; 6], 3, 1, &mut out).unwrap_err(),
            FrameError::OddWidth {
                width: 3,
                height: 1
            }
        );
        assert_eq!(
            yuyv_to_rgb(&[], 0, 960, &mut out).unwrap_err(),
            FrameError::ZeroSize {
                width: 0,
                height: 960
            }
        );
    }

    /// Eight 8×8-aligned blocks of flat primaries, encoded at high quality with `image`.
    fn test_jpeg() -> (Vec<u8>, Vec<u8>, u32, u32) {
        let (w, h) = (80u32, 32u32);
        let mut rgb = Vec::with_capacity((w * h * 3) as usize);
        for _y in 0..h {
            for x in 0..w {
                rgb.extend_from_slice(&PRIMARIES[(x / 16) as usize]);
            }
        }
        let mut jpeg = Vec::new();
        let mut encoder = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 95);
        encoder
            .encode(&rgb, w, h, image::ExtendedColorType::Rgb8)
            .unwrap();
        (jpeg, rgb, w, h)
    }

    /// Compares block centres only: chroma subsampling blurs colours across block edges.
    fn assert_blocks_close(decoded: &[u8], expected: &[u8], w: u32, h: u32) {
        for block in 0..5u32 {
            let (x, y) = (block * 16 + 8, h / 2);
            let i = ((y * w + x) * 3) as usize;
            assert_close(
                &decoded[i..i + 3],
                &expected[i..i + 3],
                8,
                &format!("block {block}"),
            );
        }
    }

    #[test]
    fn jpeg_from_image_decodes_to_its_colours_within_eight() {
        let (jpeg, rgb, w, h) = test_jpeg();
        let mut out = Vec::new();
        assert_eq!(mjpeg_to_rgb(&jpeg, &mut out).unwrap(), (w, h));
        assert_blocks_close(&out, &rgb, w, h);
    }

    #[test]
    fn jpeg_without_huffman_tables_decodes_to_the_same_pixels() {
        let (jpeg, _, w, h) = test_jpeg();
        let stripped = strip_huffman_tables(&jpeg);
        assert!(
            stripped.len() < jpeg.len(),
            "the encoder wrote DHT segments"
        );
        assert_eq!(
            dht_insertion_offset(&jpeg),
            Ok(None),
            "tables present: nothing inserted"
        );
        let at = dht_insertion_offset(&stripped).unwrap().unwrap();
        assert_eq!(
            &stripped[at..at + 2],
            &[0xFF, 0xC0],
            "inserted before the baseline SOF"
        );
        let (mut with, mut without) = (Vec::new(), Vec::new());
        mjpeg_to_rgb(&jpeg, &mut with).unwrap();
        assert_eq!(mjpeg_to_rgb(&stripped, &mut without).unwrap(), (w, h));
        assert_eq!(with, without);
    }

    #[test]
    fn annex_k_segment_is_well_formed() {
        assert_eq!(&ANNEX_K_DHT[..2], &[0xFF, 0xC4]);
        assert_eq!(
            usize::from(u16::from_be_bytes([ANNEX_K_DHT[2], ANNEX_K_DHT[3]])),
            ANNEX_K_DHT.len() - 2
        );
    }

    /// `jpeg` with its baseline SOF claiming `width`×`height` (the scan data stays that of the real image).
    fn with_claimed_size(jpeg: &[u8], width: u16, height: u16) -> Vec<u8> {
        let mut out = jpeg.to_vec();
        let sof = out
            .windows(2)
            .position(|m| m == [0xFF, 0xC0])
            .expect("a baseline SOF marker");
        // FF C0, length (2), precision (1), height (2), width (2).
        out[sof + 5..sof + 7].copy_from_slice(&height.to_be_bytes());
        out[sof + 7..sof + 9].copy_from_slice(&width.to_be_bytes());
        out
    }

    #[test]
    fn a_jpeg_header_claiming_a_huge_frame_is_refused_before_any_allocation() {
        let (jpeg, _, _, _) = test_jpeg();
        let huge = with_claimed_size(&jpeg, 12_000, 12_000);
        let mut out = Vec::new();
        let err = mjpeg_to_rgb(&huge, &mut out).unwrap_err();
        assert_eq!(err.kind(), "too_large", "{err}");
        let message = err.to_string();
        assert!(
            message.contains("12000×12000") && message.contains("limit of 67108864 px"),
            "{message}"
        );
        assert_eq!(out.capacity(), 0, "the output buffer was allocated");
        // Past the side limit the decoder's own header check refuses it, still without output.
        let wide = with_claimed_size(&jpeg, 20_000, 8);
        assert!(mjpeg_to_rgb(&wide, &mut out).is_err());
        assert_eq!(out.capacity(), 0);
    }

    #[test]
    fn a_yuyv_frame_over_the_cap_is_refused_before_its_length_is_checked() {
        let mut out = Vec::new();
        let err = yuyv_to_rgb(&[0; 8], 10_000, 10_000, &mut out).unwrap_err();
        assert_eq!(err.kind(), "too_large", "{err}");
        assert_eq!(out.capacity(), 0);
    }

    #[test]
    fn truncated_and_garbage_jpegs_are_errors() {
        let (jpeg, _, _, _) = test_jpeg();
        let mut out = Vec::new();
        for cut in [0, 1, 2, 3, 10, jpeg.len() / 2, jpeg.len() - 40] {
            assert!(
                mjpeg_to_rgb(&jpeg[..cut], &mut out).is_err(),
                "a JPEG cut at {cut} of {} bytes must not decode",
                jpeg.len()
            );
        }
        let err = mjpeg_to_rgb(b"not a jpeg at all", &mut out).unwrap_err();
        assert_eq!(err.kind(), "corrupt_jpeg");
        assert!(err.to_string().contains("17 bytes"), "{err}");
    }

    /// `cargo test -p saccade-runtime --release --lib capture::convert -- --ignored --nocapture`
    #[test]
    #[ignore = "timing, run in release"]
    fn conversion_time_at_1280_by_960() {
        let (w, h) = (1280u32, 960u32);
        // Smooth gradients with a little texture: JPEG sizes like a camera's, not like noise.
        let rgb: Vec<u8> = (0..w * h * 3)
            .map(|i| {
                let (px, c) = (i / 3, i % 3);
                let (x, y) = (px % w, px / w);
                ((x / 5 + y / 4 * (c + 1) + (x ^ y) % 9) % 256) as u8
            })
            .collect();
        let yuyv = rgb_to_yuyv(&rgb, w, h).unwrap();
        let mut jpeg = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 85)
            .encode(&rgb, w, h, image::ExtendedColorType::Rgb8)
            .unwrap();
        let stripped = strip_huffman_tables(&jpeg);
        let mut out = Vec::new();
        let median_ms = |f: &mut dyn FnMut()| {
            f();
            let mut times: Vec<f64> = (0..15)
                .map(|_| {
                    let t = std::time::Instant::now();
                    f();
                    t.elapsed().as_secs_f64() * 1e3
                })
                .collect();
            times.sort_by(f64::total_cmp);
            times[times.len() / 2]
        };
        let yuyv_ms = median_ms(&mut || yuyv_to_rgb(&yuyv, w, h, &mut out).unwrap());
        let mjpeg_ms = median_ms(&mut || {
            mjpeg_to_rgb(&jpeg, &mut out).unwrap();
        });
        let stripped_ms = median_ms(&mut || {
            mjpeg_to_rgb(&stripped, &mut out).unwrap();
        });
        eprintln!(
            "1280×960: YUYV→RGB {yuyv_ms:.2} ms, MJPEG→RGB {mjpeg_ms:.2} ms ({} bytes), \
             MJPEG without DHT {stripped_ms:.2} ms (×{:.2})",
            jpeg.len(),
            stripped_ms / mjpeg_ms
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn mjpeg_never_panics_on_random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let mut out = Vec::new();
            let _ = mjpeg_to_rgb(&bytes, &mut out);
        }

        #[test]
        fn mjpeg_never_panics_on_truncated_or_flipped_frames(cut in 0usize..4096, flip in 0usize..4096, bit in 0u8..8) {
            let (mut jpeg, _, _, _) = test_jpeg();
            let flip = flip % jpeg.len();
            jpeg[flip] ^= 1 << bit;
            let cut = cut % (jpeg.len() + 1);
            let mut out = Vec::new();
            let _ = mjpeg_to_rgb(&jpeg[..cut], &mut out);
            let _ = mjpeg_to_rgb(&strip_huffman_tables(&jpeg[..cut]), &mut out);
        }

        #[test]
        fn yuyv_round_trips_flat_pairs(r in any::<u8>(), g in any::<u8>(), b in any::<u8>()) {
            let rgb = [r, g, b, r, g, b].repeat(4);
            let yuyv = rgb_to_yuyv(&rgb, 4, 2).unwrap();
            let mut out = Vec::new();
            yuyv_to_rgb(&yuyv, 4, 2, &mut out).unwrap();
            // Limited range quantises to ~219 levels of luma: a few steps of error are expected.
            for (&o, &e) in out.iter().zip(&rgb) {
                prop_assert!((i16::from(o) - i16::from(e)).abs() <= 4, "{o} vs {e}");
            }
        }

        #[test]
        fn yuyv_never_panics_on_any_length(len in 0usize..512, w in 0u32..40, h in 0u32..40) {
            let mut out = Vec::new();
            let _ = yuyv_to_rgb(&vec![7u8; len], w, h, &mut out);
        }
    }
}
