//! `dir://PATH?fps=N&loop=true`: replays the JPEG and PNG files of a folder as frames, for evaluation and demos.
//! Files are taken in *natural* name order (`frame2.png` before `frame10.png`: runs of digits compare as
//! numbers, everything else byte by byte), each at its own size. A file that cannot be read or decoded is
//! reported as a bad frame and the replay goes on. The folder is listed once, at open.

use std::cmp::Ordering;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::source::{Capture, FrameSource, QueuePolicy};
use super::source_error::SourceError;
use crate::frame::{check_frame_size, try_resize, Frame, FrameError, MAX_FRAME_SIDE_PX};

/// Options of a folder replay, parsed from its URI by `capture::uri`.
#[derive(Debug, Clone, PartialEq)]
pub struct DirOptions {
    pub path: PathBuf,
    /// Pace frames at this rate (`None`: as fast as the consumer takes them).
    pub fps: Option<f64>,
    /// Start again from the first file after the last instead of ending.
    pub loop_forever: bool,
}

pub struct DirSource {
    uri: String,
    options: DirOptions,
    files: Vec<PathBuf>,
    next_file: usize,
    next_index: u64,
    /// Pacing is against a fixed start so that slow decodes do not accumulate drift.
    paced_from: Option<Instant>,
    paced_frames: u64,
}

/// Extensions we decode, compared case-insensitively.
const IMAGE_EXTENSIONS: [&str; 3] = ["jpg", "jpeg", "png"];

impl DirSource {
    /// Lists the folder; fails, naming the path, when it is missing, unreadable or holds no JPEG/PNG file.
    pub fn open(uri: &str, options: DirOptions) -> Result<Self, SourceError> {
        let entries =
            std::fs::read_dir(&options.path).map_err(|reason| SourceError::FolderUnreadable {
                uri: uri.to_string(),
                folder: options.path.clone(),
                reason,
            })?;
        let mut files: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|entry| entry.path())
            .filter(|path| is_image_file(path))
            .collect();
        if files.is_empty() {
            return Err(SourceError::FolderEmpty {
                uri: uri.to_string(),
                folder: options.path.clone(),
            });
        }
        files.sort_by(|a, b| natural_cmp(&file_name(a), &file_name(b)));
        Ok(Self {
            uri: uri.to_string(),
            options,
            files,
            next_file: 0,
            next_index: 0,
            paced_from: None,
            paced_frames: 0,
        })
    }

    /// The files in replay order.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    fn wait_for_slot(&mut self) {
        let Some(fps) = self.options.fps else {
            return;
        };
        let start = *self.paced_from.get_or_insert_with(Instant::now);
        let due = start + Duration::from_secs_f64(self.paced_frames as f64 / fps);
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        self.paced_frames += 1;
    }
}

/// Decodes an image file to RGB, having checked the size its header gives against the frame cap first: a file
/// that claims an absurd size is refused before its pixels are allocated. JPEG files (by their first bytes)
/// go to zune-jpeg directly, the decoder the `image` crate wraps, with the same lenient options, but one read
/// and one header parse instead of two and straight into the frame's buffer (see `docs/bench/jpeg.md`);
/// other formats go through `image`.
pub fn decode_image(path: &Path) -> Result<image::RgbImage, FrameError> {
    let unreadable = |e: image::ImageError| FrameError::Image {
        path: path.display().to_string(),
        message: e.to_string(),
    };
    let mut reader = image::ImageReader::open(path)
        .map_err(|e| unreadable(e.into()))?
        .with_guessed_format()
        .map_err(|e| unreadable(e.into()))?;
    if reader.format() == Some(image::ImageFormat::Jpeg) {
        let jpeg = std::fs::read(path).map_err(|e| unreadable(e.into()))?;
        return decode_jpeg_file(path, &jpeg);
    }
    let (width, height) = image::ImageReader::open(path)
        .map_err(|e| unreadable(e.into()))?
        .into_dimensions()
        .map_err(unreadable)?;
    check_frame_size(&format!("image {}", path.display()), width, height)?;
    // The same limits again, in case the file changed between the two reads.
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_FRAME_SIDE_PX);
    limits.max_image_height = Some(MAX_FRAME_SIDE_PX);
    reader.limits(limits);
    Ok(reader.decode().map_err(unreadable)?.into_rgb8())
}

/// The JPEG file `path` (its bytes `jpeg`) decoded to RGB: by libjpeg-turbo when the `turbojpeg` feature
/// is on (about 12 % faster on the real frames, `docs/bench/jpeg.md`), else, or when libjpeg-turbo refuses
/// the file, by zune-jpeg, lenient as the `image` crate decodes (a truncated scan keeps what was decoded),
/// any colour space converted to RGB.
pub(super) fn decode_jpeg_file(path: &Path, jpeg: &[u8]) -> Result<image::RgbImage, FrameError> {
    #[cfg(feature = "turbojpeg")]
    if let Some(image) = decode_jpeg_turbo(jpeg)? {
        return Ok(image);
    }
    decode_jpeg_zune(path, jpeg)
}

/// libjpeg-turbo's decode of `jpeg` (one decompressor per thread, made on first use); `None` when it refuses
/// the bytes (zune-jpeg then tries, leniently). A size over the frame cap is an error at once.
#[cfg(feature = "turbojpeg")]
fn decode_jpeg_turbo(jpeg: &[u8]) -> Result<Option<image::RgbImage>, FrameError> {
    use std::cell::RefCell;
    thread_local! {
        static DECOMPRESSOR: RefCell<Option<super::turbo::Decompressor>> = const { RefCell::new(None) };
    }
    DECOMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            *slot = super::turbo::Decompressor::new().ok();
        }
        let Some(decompressor) = slot.as_mut() else {
            return Ok(None);
        };
        let mut rgb = Vec::new();
        match super::turbo::turbo_to_rgb(decompressor, jpeg, 1, &mut rgb) {
            Ok((width, height)) => Ok(image::RgbImage::from_raw(width, height, rgb)),
            Err(
                e @ (FrameError::TooLarge { .. }
                | FrameError::ZeroSize { .. }
                | FrameError::OutOfMemory { .. }),
            ) => Err(e),
            Err(_) => Ok(None),
        }
    })
}

/// zune-jpeg's decode of the JPEG file `path` (its bytes `jpeg`): see [`decode_jpeg_file`].
fn decode_jpeg_zune(path: &Path, jpeg: &[u8]) -> Result<image::RgbImage, FrameError> {
    use zune_jpeg::zune_core::bytestream::ZCursor;
    use zune_jpeg::zune_core::colorspace::ColorSpace;
    use zune_jpeg::zune_core::options::DecoderOptions;
    let unreadable = |message: String| FrameError::Image {
        path: path.display().to_string(),
        message,
    };
    let options = DecoderOptions::default()
        .jpeg_set_out_colorspace(ColorSpace::RGB)
        .set_max_width(MAX_FRAME_SIDE_PX as usize)
        .set_max_height(MAX_FRAME_SIDE_PX as usize)
        .set_strict_mode(false);
    let mut decoder = zune_jpeg::JpegDecoder::new_with_options(ZCursor::new(jpeg), options);
    super::convert::without_decoder_panic(|| {
        decoder
            .decode_headers()
            .map_err(|e| format!("JPEG header: {e}"))
    })
    .map_err(unreadable)?;
    let (width, height) = decoder
        .dimensions()
        .map(|(w, h)| (w as u32, h as u32))
        .ok_or_else(|| unreadable("no image size after the JPEG headers".into()))?;
    if width == 0 || height == 0 {
        return Err(FrameError::ZeroSize { width, height });
    }
    // From the header, before the pixels exist.
    check_frame_size(&format!("image {}", path.display()), width, height)?;
    let expected = width as usize * height as usize * 3;
    match decoder.output_buffer_size() {
        Some(size) if size == expected => {}
        other => {
            return Err(unreadable(format!(
                "the JPEG decoder wants {other:?} output bytes for {width}×{height}, expected {expected} (RGB)"
            )))
        }
    }
    let mut rgb = Vec::new();
    try_resize(&mut rgb, expected)?;
    super::convert::without_decoder_panic(|| {
        decoder
            .decode_into(&mut rgb)
            .map_err(|e| format!("JPEG data: {e}"))
    })
    .map_err(unreadable)?;
    image::RgbImage::from_raw(width, height, rgb).ok_or_else(|| {
        unreadable(format!(
            "{expected} decoded bytes do not make a {width}×{height} RGB image"
        ))
    })
}

fn is_image_file(path: &Path) -> bool {
    path.is_file()
        && path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| IMAGE_EXTENSIONS.iter().any(|x| e.eq_ignore_ascii_case(x)))
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Natural order: digit runs compare by value (then by length, so `01` sorts after `1`), other bytes as bytes.
pub fn natural_cmp(a: &str, b: &str) -> Ordering {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        if a[i].is_ascii_digit() && b[j].is_ascii_digit() {
            let (a_end, b_end) = (digit_run_end(a, i), digit_run_end(b, j));
            let (a_digits, b_digits) = (&a[i..a_end], &b[j..b_end]);
            let a_trim = trim_leading_zeros(a_digits);
            let b_trim = trim_leading_zeros(b_digits);
            let by_value = a_trim.len().cmp(&b_trim.len()).then(a_trim.cmp(b_trim));
            let ord = by_value.then(a_digits.len().cmp(&b_digits.len()));
            if ord != Ordering::Equal {
                return ord;
            }
            (i, j) = (a_end, b_end);
        } else {
            let ord = a[i].cmp(&b[j]);
            if ord != Ordering::Equal {
                return ord;
            }
            i += 1;
            j += 1;
        }
    }
    (a.len() - i).cmp(&(b.len() - j))
}

fn digit_run_end(s: &[u8], start: usize) -> usize {
    s[start..]
        .iter()
        .position(|c| !c.is_ascii_digit())
        .map_or(s.len(), |n| start + n)
}

fn trim_leading_zeros(digits: &[u8]) -> &[u8] {
    let first = digits
        .iter()
        .position(|&c| c != b'0')
        .unwrap_or(digits.len());
    &digits[first..]
}

impl FrameSource for DirSource {
    fn next_frame(&mut self) -> Capture {
        if self.next_file >= self.files.len() {
            if !self.options.loop_forever {
                return Capture::End;
            }
            self.next_file = 0;
        }
        let Some(path) = self.files.get(self.next_file).cloned() else {
            return Capture::End;
        };
        self.next_file += 1;
        self.wait_for_slot();
        let name = file_name(&path);
        let image = match decode_image(&path) {
            Ok(image) => image,
            Err(e) => return Capture::Bad(e),
        };
        let (width, height) = image.dimensions();
        match Frame::from_rgb(self.next_index, width, height, image.into_raw()) {
            Ok(mut frame) => {
                self.next_index += 1;
                frame.file = Some(name);
                Capture::Frame(frame)
            }
            Err(e) => Capture::Bad(e),
        }
    }

    fn uri(&self) -> &str {
        &self.uri
    }

    fn default_policy(&self) -> QueuePolicy {
        QueuePolicy::Lossless
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn write_png(dir: &Path, name: &str, w: u32, h: u32, rgb: [u8; 3]) {
        let img = image::RgbImage::from_pixel(w, h, image::Rgb(rgb));
        img.save(dir.join(name)).unwrap();
    }

    fn options(path: &Path) -> DirOptions {
        DirOptions {
            path: path.to_path_buf(),
            fps: None,
            loop_forever: false,
        }
    }

    #[test]
    fn replays_images_of_any_size_in_natural_order_then_ends() {
        let dir = tempfile::tempdir().unwrap();
        write_png(dir.path(), "frame10.png", 8, 6, [0, 0, 255]);
        write_png(dir.path(), "frame2.png", 20, 10, [0, 255, 0]);
        write_png(dir.path(), "frame1.PNG", 4, 4, [255, 0, 0]);
        image::RgbImage::from_pixel(16, 16, image::Rgb([200, 200, 200]))
            .save(dir.path().join("frame3.jpg"))
            .unwrap();
        std::fs::write(dir.path().join("notes.txt"), "not an image").unwrap();
        let mut source = DirSource::open("dir://t", options(dir.path())).unwrap();
        let mut seen = Vec::new();
        loop {
            match source.next_frame() {
                Capture::Frame(f) => seen.push((
                    f.index,
                    f.file.clone().unwrap(),
                    f.width,
                    f.height,
                    f.pixel(0, 0),
                )),
                Capture::Bad(e) => panic!("unexpected bad frame {e}"),
                Capture::End => break,
            }
        }
        let names: Vec<_> = seen.iter().map(|s| s.1.as_str()).collect();
        assert_eq!(
            names,
            ["frame1.PNG", "frame2.png", "frame3.jpg", "frame10.png"]
        );
        assert_eq!(seen[1], (1, "frame2.png".to_string(), 20, 10, [0, 255, 0]));
        assert_eq!((seen[3].2, seen[3].3), (8, 6));
        assert!(matches!(source.next_frame(), Capture::End), "stays ended");
        assert_eq!(source.default_policy(), QueuePolicy::Lossless);
    }

    #[test]
    fn corrupt_file_is_a_bad_frame_and_the_replay_continues() {
        let dir = tempfile::tempdir().unwrap();
        write_png(dir.path(), "a.png", 4, 4, [1, 2, 3]);
        std::fs::write(dir.path().join("b.jpg"), b"\xFF\xD8garbage").unwrap();
        write_png(dir.path(), "c.png", 4, 4, [4, 5, 6]);
        let mut source = DirSource::open("dir://t", options(dir.path())).unwrap();
        assert!(matches!(source.next_frame(), Capture::Frame(f) if f.index == 0));
        match source.next_frame() {
            Capture::Bad(FrameError::Image { path, .. }) => assert!(path.ends_with("b.jpg")),
            other => panic!("expected a bad image, got {other:?}"),
        }
        assert!(
            matches!(source.next_frame(), Capture::Frame(f) if f.index == 1 && f.pixel(0, 0) == [4, 5, 6])
        );
        assert!(matches!(source.next_frame(), Capture::End));
    }

    /// A small real JPEG whose baseline SOF claims `width`×`height`.
    fn jpeg_claiming(width: u16, height: u16) -> Vec<u8> {
        let mut jpeg = Vec::new();
        image::RgbImage::from_pixel(16, 16, image::Rgb([9, 9, 9]))
            .write_to(
                &mut std::io::Cursor::new(&mut jpeg),
                image::ImageFormat::Jpeg,
            )
            .unwrap();
        let sof = jpeg.windows(2).position(|m| m == [0xFF, 0xC0]).unwrap();
        // FF C0, length (2), precision (1), height (2), width (2).
        jpeg[sof + 5..sof + 7].copy_from_slice(&height.to_be_bytes());
        jpeg[sof + 7..sof + 9].copy_from_slice(&width.to_be_bytes());
        jpeg
    }

    #[test]
    fn a_file_whose_header_claims_a_huge_frame_is_a_bad_frame_naming_it_and_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        write_png(dir.path(), "a.png", 4, 4, [1, 2, 3]);
        std::fs::write(dir.path().join("b.jpg"), jpeg_claiming(12_000, 12_000)).unwrap();
        write_png(dir.path(), "c.png", 4, 4, [4, 5, 6]);
        let mut source = DirSource::open("dir://t", options(dir.path())).unwrap();
        assert!(matches!(source.next_frame(), Capture::Frame(f) if f.index == 0));
        match source.next_frame() {
            Capture::Bad(e) => {
                assert_eq!(e.kind(), "too_large", "{e}");
                let message = e.to_string();
                assert!(
                    message.contains("b.jpg")
                        && message.contains("12000×12000")
                        && message.contains("limit of 67108864 px"),
                    "{message}"
                );
            }
            other => panic!("expected a refused frame, got {other:?}"),
        }
        assert!(matches!(source.next_frame(), Capture::Frame(f) if f.index == 1));
    }

    #[test]
    fn loop_starts_again_and_fps_paces_frames() {
        let dir = tempfile::tempdir().unwrap();
        write_png(dir.path(), "a.png", 2, 2, [0, 0, 0]);
        write_png(dir.path(), "b.png", 2, 2, [9, 9, 9]);
        let mut opts = options(dir.path());
        opts.loop_forever = true;
        opts.fps = Some(100.0);
        let mut source = DirSource::open("dir://t", opts).unwrap();
        let start = Instant::now();
        let mut files = Vec::new();
        for _ in 0..5 {
            let Capture::Frame(f) = source.next_frame() else {
                panic!("a looping replay never ends")
            };
            files.push(f.file.clone().unwrap());
        }
        assert_eq!(files, ["a.png", "b.png", "a.png", "b.png", "a.png"]);
        // Five frames at 100 fps: the fifth is due 40 ms after the first.
        assert!(
            start.elapsed() >= Duration::from_millis(40),
            "{:?}",
            start.elapsed()
        );
    }

    #[test]
    fn empty_or_missing_folder_is_an_error_naming_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let err = DirSource::open("dir://t", options(dir.path()))
            .err()
            .unwrap();
        assert!(
            err.to_string().contains(&dir.path().display().to_string()),
            "{err}"
        );
        let missing = dir.path().join("nope");
        let err = DirSource::open("dir://t", options(&missing)).err().unwrap();
        assert!(err.to_string().contains("nope"), "{err}");
    }

    #[test]
    fn natural_order_examples() {
        let mut names = vec!["img10", "img2", "img02", "img1", "a", "img", "b1x"];
        names.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(names, ["a", "b1x", "img", "img1", "img2", "img02", "img10"]);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn natural_order_is_a_total_order(a in "[a-c0-9]{0,6}", b in "[a-c0-9]{0,6}", c in "[a-c0-9]{0,6}") {
            prop_assert_eq!(natural_cmp(&a, &b), natural_cmp(&b, &a).reverse());
            prop_assert_eq!(natural_cmp(&a, &b) == Ordering::Equal, a == b);
            if natural_cmp(&a, &b) != Ordering::Greater && natural_cmp(&b, &c) != Ordering::Greater {
                prop_assert_ne!(natural_cmp(&a, &c), Ordering::Greater);
            }
        }

        #[test]
        fn numbered_frames_sort_by_number(n in 0u32..100_000, m in 0u32..100_000) {
            prop_assert_eq!(natural_cmp(&format!("f{n}.png"), &format!("f{m}.png")), n.cmp(&m));
        }
    }
}
