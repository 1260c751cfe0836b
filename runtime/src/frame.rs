//! Frames and boxes: the unit that moves through the pipeline, and the geometry every stage shares.

use std::time::{Instant, SystemTime};

pub use crate::frame_error::{
    check_frame_size, try_resize, try_zeroed, FrameError, MAX_FRAME_PIXELS, MAX_FRAME_SIDE_PX,
};
use crate::pool::FramePool;

/// An axis-aligned box in frame pixels, `[xmin, ymin, xmax, ymax)` (max exclusive), as f32.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct BoxPx {
    pub xmin: f32,
    pub ymin: f32,
    pub xmax: f32,
    pub ymax: f32,
}

impl BoxPx {
    pub fn new(xmin: f32, ymin: f32, xmax: f32, ymax: f32) -> Self {
        Self {
            xmin,
            ymin,
            xmax,
            ymax,
        }
    }
    pub fn width(&self) -> f32 {
        (self.xmax - self.xmin).max(0.0)
    }
    pub fn height(&self) -> f32 {
        (self.ymax - self.ymin).max(0.0)
    }
    pub fn area(&self) -> f32 {
        self.width() * self.height()
    }
    pub fn centre(&self) -> (f32, f32) {
        ((self.xmin + self.xmax) * 0.5, (self.ymin + self.ymax) * 0.5)
    }
    /// The square of side `side` centred on `(cx, cy)` (not clipped to any frame).
    pub fn centred_square(cx: f32, cy: f32, side: f32) -> Self {
        let half = side / 2.0;
        Self::new(cx - half, cy - half, cx + half, cy + half)
    }
    /// Area of the overlap of the two boxes (0 when they do not overlap).
    pub fn intersection_area(&self, other: &BoxPx) -> f32 {
        let ix = (self.xmax.min(other.xmax) - self.xmin.max(other.xmin)).max(0.0);
        let iy = (self.ymax.min(other.ymax) - self.ymin.max(other.ymin)).max(0.0);
        ix * iy
    }
    /// Intersection over union; 0 when either box is empty.
    pub fn iou(&self, other: &BoxPx) -> f32 {
        let inter = self.intersection_area(other);
        let union = self.area() + other.area() - inter;
        if union <= 0.0 {
            0.0
        } else {
            inter / union
        }
    }
    /// `[xmin, ymin, xmax, ymax]`, the order events and annotations use.
    pub fn to_array(&self) -> [f32; 4] {
        [self.xmin, self.ymin, self.xmax, self.ymax]
    }
}

/// A sign whose box and class are known (synthetic frames, annotated replays).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TruthBox {
    pub bbox: BoxPx,
    /// GTSRB class id, `None` for a sign that counts for localisation only.
    pub class_id: Option<usize>,
}

/// One RGB frame, 8 bits per channel, row-major, `width * height * 3` bytes.
#[derive(Debug, Clone)]
pub struct Frame {
    /// Position in the source's stream, from 0, counting frames the source produced (not dropped ones).
    pub index: u64,
    pub width: u32,
    pub height: u32,
    pub rgb: Vec<u8>,
    /// When the frame was captured (monotonic, for latency).
    pub captured_at: Instant,
    /// Wall-clock capture time (for events).
    pub captured_wall: SystemTime,
    /// File name for replay sources.
    pub file: Option<String>,
    /// The stream's own presentation timestamp, nanoseconds from its start (video files, RTSP streams).
    pub pts_ns: Option<u64>,
    /// Known boxes, when the source knows them (synthetic frames).
    pub truth: Vec<TruthBox>,
    /// Where `rgb` goes back when the frame is dropped (frames from pooled sources).
    pool: Option<FramePool>,
}

impl Drop for Frame {
    fn drop(&mut self) {
        if let Some(pool) = self.pool.take() {
            pool.give(std::mem::take(&mut self.rgb));
        }
    }
}

impl Frame {
    /// A frame from raw RGB bytes; fails if the length does not match the size.
    pub fn from_rgb(index: u64, width: u32, height: u32, rgb: Vec<u8>) -> Result<Self, FrameError> {
        let expected = width as usize * height as usize * 3;
        if width == 0 || height == 0 {
            return Err(FrameError::ZeroSize { width, height });
        }
        if rgb.len() != expected {
            return Err(FrameError::WrongLength {
                what: "RGB",
                width,
                height,
                found: rgb.len(),
                expected,
            });
        }
        Ok(Self {
            index,
            width,
            height,
            rgb,
            captured_at: Instant::now(),
            captured_wall: SystemTime::now(),
            file: None,
            pts_ns: None,
            truth: Vec::new(),
            pool: None,
        })
    }

    /// The frame hands its RGB buffer back to `pool` when dropped (and so does each clone); `None` keeps it
    /// unpooled, for sources that run with or without a pool.
    pub fn with_pool(mut self, pool: Option<&FramePool>) -> Self {
        self.pool = pool.cloned();
        self
    }

    /// The pixel at (x, y) as `[r, g, b]`; callers keep x < width, y < height.
    pub fn pixel(&self, x: u32, y: u32) -> [u8; 3] {
        let i = (y as usize * self.width as usize + x as usize) * 3;
        [self.rgb[i], self.rgb[i + 1], self.rgb[i + 2]]
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn frames_up_to_the_cap_pass_and_one_pixel_more_is_refused_with_size_and_limit() {
        assert!(check_frame_size("test", 8192, 8192).is_ok());
        assert!(check_frame_size("test", 16_384, 4096).is_ok());
        assert!(check_frame_size("test", 1, 1).is_ok());
        let err = check_frame_size("source synthetic://", 8192, 8193)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("source synthetic://")
                && err.contains("8192×8193")
                && err.contains("67117056 px")
                && err.contains("limit of 67108864 px"),
            "{err}"
        );
    }

    #[test]
    fn a_long_strip_is_refused_by_the_side_limit() {
        let err = check_frame_size("strip", 16_385, 2).unwrap_err();
        assert_eq!(err.kind(), "too_large");
        assert!(err.to_string().contains("16385×2"), "{err}");
    }

    #[test]
    fn sizes_that_overflow_32_bits_are_counted_in_64() {
        let err = check_frame_size("huge", 100_000, 100_000)
            .unwrap_err()
            .to_string();
        assert!(err.contains("10000000000 px"), "{err}");
    }

    #[test]
    fn an_impossible_buffer_is_an_error_not_an_abort() {
        let err = try_zeroed(usize::MAX).unwrap_err();
        assert_eq!(err.kind(), "out_of_memory");
        assert!(err.to_string().contains(&usize::MAX.to_string()), "{err}");
        assert_eq!(try_zeroed(12).unwrap(), vec![0; 12]);
        let mut buf = vec![7u8; 4];
        try_resize(&mut buf, 6).unwrap();
        assert_eq!(buf, [7, 7, 7, 7, 0, 0]);
    }
}
