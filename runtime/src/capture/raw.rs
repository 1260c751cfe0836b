//! Raw camera buffers to frames: [`RawDecoder`] decodes buffers of the negotiated format and size, and
//! [`SequenceTracker`] turns buffer sequence numbers into kernel-drop counts.

use super::convert::{mjpeg_to_rgb, yuyv_to_rgb};
use super::uri::PixelFormat;
use crate::frame::{Frame, FrameError};

/// Counts frames the driver dropped from gaps in buffer sequence numbers. A sequence that goes backwards
/// (streaming restarted after a reconnect) starts counting afresh instead of reading as a huge gap.
#[derive(Debug, Clone, Default)]
pub struct SequenceTracker {
    last: Option<u32>,
    dropped: u64,
}

impl SequenceTracker {
    /// Records a buffer's sequence number and returns how many frames were skipped before it.
    pub fn observe(&mut self, sequence: u32) -> u64 {
        let gap = match self.last {
            Some(last) if sequence > last => u64::from(sequence - last - 1),
            _ => 0,
        };
        self.last = Some(sequence);
        self.dropped += gap;
        gap
    }

    /// Forget the last sequence number (streaming restarts from 0 after a reopen).
    pub fn restart(&mut self) {
        self.last = None;
    }

    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

/// Turns raw buffers of the negotiated format and size into frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawDecoder {
    pub format: PixelFormat,
    pub width: u32,
    pub height: u32,
}

impl RawDecoder {
    /// Decodes `bytes` (exactly the `bytesused` of the buffer) into a new frame. MJPEG frames whose own size
    /// differs from the negotiated one are `SizeChanged`: the pipeline's buffers were sized at start.
    pub fn decode(&self, bytes: &[u8], index: u64) -> Result<Frame, FrameError> {
        self.decode_into(bytes, index, Vec::new())
    }

    /// [`decode`](Self::decode) into `rgb` (a pooled buffer: its memory is reused when its capacity fits).
    pub fn decode_into(
        &self,
        bytes: &[u8],
        index: u64,
        mut rgb: Vec<u8>,
    ) -> Result<Frame, FrameError> {
        match self.format {
            PixelFormat::Yuyv => yuyv_to_rgb(bytes, self.width, self.height, &mut rgb)?,
            PixelFormat::Mjpeg => {
                let (width, height) = mjpeg_to_rgb(bytes, &mut rgb)?;
                if (width, height) != (self.width, self.height) {
                    return Err(FrameError::SizeChanged {
                        from_width: self.width,
                        from_height: self.height,
                        to_width: width,
                        to_height: height,
                    });
                }
            }
        }
        Frame::from_rgb(index, self.width, self.height, rgb)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn sequence_gaps_count_kernel_drops_and_restarts_do_not() {
        let mut tracker = SequenceTracker::default();
        let gaps: Vec<u64> = [0, 1, 2, 5, 6, 0, 1, 4]
            .iter()
            .map(|&s| tracker.observe(s))
            .collect();
        assert_eq!(gaps, [0, 0, 0, 2, 0, 0, 0, 2]);
        assert_eq!(tracker.dropped(), 4);
    }

    #[test]
    fn raw_decoder_reports_size_changes_of_mjpeg_frames() {
        let rgb = vec![200u8; 32 * 16 * 3];
        let mut jpeg = Vec::new();
        image::codecs::jpeg::JpegEncoder::new(&mut jpeg)
            .encode(&rgb, 32, 16, image::ExtendedColorType::Rgb8)
            .unwrap();
        let decoder = RawDecoder {
            format: PixelFormat::Mjpeg,
            width: 64,
            height: 48,
        };
        assert_eq!(
            decoder.decode(&jpeg, 0).unwrap_err(),
            FrameError::SizeChanged {
                from_width: 64,
                from_height: 48,
                to_width: 32,
                to_height: 16
            }
        );
        let same = RawDecoder {
            width: 32,
            height: 16,
            ..decoder
        };
        assert_eq!(same.decode(&jpeg, 7).unwrap().index, 7);
    }
}
