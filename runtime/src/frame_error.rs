//! What can go wrong turning bytes into a frame: [`FrameError`], the frame size limit every source checks, and
//! the fallible allocation of frame buffers (an error instead of an abort when the memory is not there).

/// Largest frame any source may produce, in pixels: 8192×8192 (64 Mpx, 192 MiB of RGB per frame, and the
/// pipeline holds several). Sizes are checked against it wherever a source learns them (URI, image header,
/// negotiated camera format) before any buffer is allocated.
pub const MAX_FRAME_PIXELS: u64 = 8192 * 8192;

/// Largest side of a frame, in pixels, so a strip within [`MAX_FRAME_PIXELS`] cannot be absurdly long either.
pub const MAX_FRAME_SIDE_PX: u32 = 16_384;

/// `Ok` when a `width`×`height` frame is within [`MAX_FRAME_PIXELS`] and [`MAX_FRAME_SIDE_PX`]; otherwise an
/// error naming `what` (the source or file), the size and the limit.
pub fn check_frame_size(what: &str, width: u32, height: u32) -> Result<(), FrameError> {
    let pixels = u64::from(width) * u64::from(height);
    if pixels > MAX_FRAME_PIXELS || width > MAX_FRAME_SIDE_PX || height > MAX_FRAME_SIDE_PX {
        return Err(FrameError::TooLarge {
            what: what.to_string(),
            width,
            height,
        });
    }
    Ok(())
}

/// A zeroed buffer of `len` bytes, or an error instead of an abort when the memory is not there.
pub fn try_zeroed(len: usize) -> Result<Vec<u8>, FrameError> {
    let mut buf = Vec::new();
    try_resize(&mut buf, len)?;
    Ok(buf)
}

/// Resizes `buf` to `len` bytes (new bytes zero), reserving the memory fallibly: an error instead of an abort.
pub fn try_resize(buf: &mut Vec<u8>, len: usize) -> Result<(), FrameError> {
    if len > buf.len() {
        buf.try_reserve_exact(len - buf.len())
            .map_err(|e| FrameError::OutOfMemory {
                bytes: len,
                message: e.to_string(),
            })?;
    }
    // Within the reserved capacity: cannot allocate.
    buf.resize(len, 0);
    Ok(())
}
/// Why a buffer could not become a frame.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FrameError {
    #[error("frame is {width}×{height}: zero-sized frames are not allowed")]
    ZeroSize { width: u32, height: u32 },
    #[error("frame {width}×{height} {what} has {found} bytes, expected {expected}")]
    WrongLength {
        what: &'static str,
        width: u32,
        height: u32,
        found: usize,
        expected: usize,
    },
    #[error("frame {width}×{height} YUYV has an odd width: YUYV packs pixel pairs")]
    OddWidth { width: u32, height: u32 },
    #[error("MJPEG frame of {bytes} bytes could not be decoded: {message}")]
    Jpeg { bytes: usize, message: String },
    #[error(
        "frame size changed mid-stream from {from_width}×{from_height} to {to_width}×{to_height}"
    )]
    SizeChanged {
        from_width: u32,
        from_height: u32,
        to_width: u32,
        to_height: u32,
    },
    #[error("image {path} could not be read: {message}")]
    Image { path: String, message: String },
    #[error(
        "{what}: frame size {width}×{height} ({} px) is over the limit of {MAX_FRAME_PIXELS} px (8192×8192) \
         and {MAX_FRAME_SIDE_PX} px a side",
        u64::from(*width) * u64::from(*height)
    )]
    TooLarge {
        what: String,
        width: u32,
        height: u32,
    },
    #[error("a sample of {what} could not be read: {message}")]
    Sample { what: String, message: String },
    #[error("a frame buffer of {bytes} bytes could not be allocated: {message}")]
    OutOfMemory { bytes: usize, message: String },
}

impl FrameError {
    /// A short stable name of the kind of fault, for counters and once-per-kind logging.
    pub fn kind(&self) -> &'static str {
        match self {
            FrameError::ZeroSize { .. } => "zero_size",
            FrameError::WrongLength { .. } => "wrong_length",
            FrameError::OddWidth { .. } => "odd_width",
            FrameError::Jpeg { .. } => "corrupt_jpeg",
            FrameError::SizeChanged { .. } => "size_changed",
            FrameError::Image { .. } => "unreadable_image",
            FrameError::TooLarge { .. } => "too_large",
            FrameError::Sample { .. } => "unreadable_sample",
            FrameError::OutOfMemory { .. } => "out_of_memory",
        }
    }
}
