//! Snapshots: for a detection at or above `min_score`, a JPEG crop of the sign (with a margin) and the
//! annotated frame (`annotate.rs`), at most one per class and source every `min_interval_s`. The folder is
//! kept under `max_mb`: the oldest snapshots are removed first. Files are written whole or not at all.
//!
//! Names: `<source>-<frame>-<class>-crop.jpg` and `<source>-<frame>-<class>-frame.jpg`, where `<source>` is
//! the source's index in the run.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use image::RgbImage;
use saccade_runtime::pipeline::ProcessedFrame;

/// `[snapshots]` in the config; `--snapshots DIR` sets `dir`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SnapshotConfig {
    /// Folder of the snapshots (absent: none).
    pub dir: Option<PathBuf>,
    /// Detections below this score take no snapshot.
    pub min_score: f32,
    /// At most one snapshot per class and source in this many seconds.
    pub min_interval_s: f64,
    /// Margin around the sign in the crop, as a fraction of the box's side.
    pub margin: f32,
    /// The folder is pruned, oldest first, to stay under this many MiB.
    pub max_mb: f64,
    /// JPEG quality, 1..=100.
    pub quality: u8,
}

impl Default for SnapshotConfig {
    fn default() -> Self {
        Self {
            dir: None,
            min_score: 0.5,
            min_interval_s: 10.0,
            margin: 0.25,
            max_mb: 512.0,
            quality: 90,
        }
    }
}

impl SnapshotConfig {
    pub fn validate(&self) -> anyhow::Result<()> {
        if !(0.0..=1.0).contains(&self.min_score) {
            bail!(
                "key `snapshots.min_score` is {}, expected 0..=1",
                self.min_score
            );
        }
        if !(self.min_interval_s.is_finite() && self.min_interval_s >= 0.0) {
            bail!(
                "key `snapshots.min_interval_s` is {}, expected a number ≥ 0",
                self.min_interval_s
            );
        }
        if !(0.0..=10.0).contains(&self.margin) {
            bail!("key `snapshots.margin` is {}, expected 0..=10", self.margin);
        }
        if !(self.max_mb.is_finite() && self.max_mb > 0.0) {
            bail!(
                "key `snapshots.max_mb` is {}, expected a number > 0",
                self.max_mb
            );
        }
        if !(1..=100).contains(&self.quality) {
            bail!(
                "key `snapshots.quality` is {}, expected 1..=100",
                self.quality
            );
        }
        Ok(())
    }
}

/// Writes snapshots into one folder for every source of a run (shared behind a mutex).
pub struct Snapshots {
    dir: PathBuf,
    config: SnapshotConfig,
    /// When each (source, class) last took a snapshot.
    last: HashMap<(usize, usize), Instant>,
    /// Files in the folder, oldest first, with their sizes.
    files: VecDeque<(PathBuf, u64)>,
    bytes: u64,
}

impl Snapshots {
    /// Creates the folder and takes stock of the `.jpg` files already in it (oldest first), pruning at once
    /// when they are over the cap.
    pub fn open(config: &SnapshotConfig) -> anyhow::Result<Option<Self>> {
        let Some(dir) = config.dir.clone() else {
            return Ok(None);
        };
        config.validate()?;
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("creating snapshot folder {}", dir.display()))?;
        let mut found = Vec::new();
        for entry in std::fs::read_dir(&dir)
            .with_context(|| format!("reading snapshot folder {}", dir.display()))?
            .flatten()
        {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "jpg") {
                if let Ok(meta) = entry.metadata() {
                    let modified = meta.modified().unwrap_or(std::time::UNIX_EPOCH);
                    found.push((modified, path, meta.len()));
                }
            }
        }
        found.sort();
        let mut snapshots = Self {
            dir,
            config: config.clone(),
            last: HashMap::new(),
            bytes: found.iter().map(|f| f.2).sum(),
            files: found.into_iter().map(|(_, p, n)| (p, n)).collect(),
        };
        snapshots.prune();
        Ok(Some(snapshots))
    }

    fn cap_bytes(&self) -> u64 {
        (self.config.max_mb * 1024.0 * 1024.0) as u64
    }

    /// Removes the oldest files until the folder is under the cap.
    fn prune(&mut self) {
        while self.bytes > self.cap_bytes() {
            let Some((path, len)) = self.files.pop_front() else {
                break;
            };
            if let Err(e) = std::fs::remove_file(&path) {
                tracing::warn!(path = %path.display(), error = %e, "could not remove an old snapshot");
            }
            self.bytes = self.bytes.saturating_sub(len);
        }
    }

    /// Takes the snapshots `done` calls for at `now`; returns how many files were written.
    pub fn take(
        &mut self,
        source: usize,
        done: &ProcessedFrame,
        now: Instant,
    ) -> anyhow::Result<usize> {
        let interval = Duration::from_secs_f64(self.config.min_interval_s);
        let mut frame_jpeg: Option<Vec<u8>> = None;
        let mut written = 0;
        for det in &done.outcome.detections {
            if det.score < self.config.min_score {
                continue;
            }
            let key = (source, det.class_id);
            if let Some(last) = self.last.get(&key) {
                if now.saturating_duration_since(*last) < interval {
                    continue;
                }
            }
            self.last.insert(key, now);
            let f = &done.frame;
            let stem = format!("{source}-{:06}-{:02}", f.index, det.class_id);
            let image = RgbImage::from_raw(f.width, f.height, f.rgb.clone())
                .context("frame buffer does not match its size")?;
            let b = det.bbox;
            let (mw, mh) = (
                b.width() * self.config.margin,
                b.height() * self.config.margin,
            );
            let x0 = (b.xmin - mw).floor().clamp(0.0, f.width as f32 - 1.0) as u32;
            let y0 = (b.ymin - mh).floor().clamp(0.0, f.height as f32 - 1.0) as u32;
            let x1 = ((b.xmax + mw).ceil() as u32).clamp(x0 + 1, f.width);
            let y1 = ((b.ymax + mh).ceil() as u32).clamp(y0 + 1, f.height);
            let crop = image::imageops::crop_imm(&image, x0, y0, x1 - x0, y1 - y0).to_image();
            self.write(&format!("{stem}-crop.jpg"), &self.encode(&crop)?)?;
            let jpeg = match frame_jpeg.take() {
                Some(j) => j,
                None => {
                    let mut annotated = image;
                    crate::annotate::annotate(&mut annotated, &done.glance, &done.outcome);
                    self.encode(&annotated)?
                }
            };
            self.write(&format!("{stem}-frame.jpg"), &jpeg)?;
            frame_jpeg = Some(jpeg);
            written += 2;
        }
        Ok(written)
    }

    fn encode(&self, image: &RgbImage) -> anyhow::Result<Vec<u8>> {
        let mut out = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, self.config.quality)
            .encode_image(image)
            .context("encoding a snapshot JPEG")?;
        Ok(out)
    }

    fn write(&mut self, name: &str, bytes: &[u8]) -> anyhow::Result<()> {
        let path = self.dir.join(name);
        crate::output::write_whole_file(&path, bytes)
            .with_context(|| format!("writing snapshot {}", path.display()))?;
        self.bytes += bytes.len() as u64;
        self.files.push_back((path, bytes.len() as u64));
        self.prune();
        Ok(())
    }

    /// The folder's files and their total size, oldest first.
    pub fn stock(&self) -> (usize, u64) {
        (self.files.len(), self.bytes)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use saccade_models::GlanceMap;
    use saccade_runtime::focus::{Detection, FocusOutcome};
    use saccade_runtime::frame::{BoxPx, Frame};

    fn done(index: u64, detections: Vec<Detection>) -> ProcessedFrame {
        let frame = Frame::from_rgb(index, 64, 48, vec![100; 64 * 48 * 3]).unwrap();
        ProcessedFrame::new(
            frame,
            GlanceMap::default(),
            FocusOutcome {
                detections,
                ..FocusOutcome::default()
            },
            1.0,
        )
    }

    fn det(class_id: usize, score: f32) -> Detection {
        Detection {
            class_id,
            class_name: "sign",
            score,
            bbox: BoxPx::new(10.0, 10.0, 30.0, 30.0),
        }
    }

    #[test]
    fn snapshots_are_rate_limited_per_class_and_pruned_to_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        let config = SnapshotConfig {
            dir: Some(dir.path().join("snaps")),
            min_interval_s: 10.0,
            max_mb: 0.004,
            ..SnapshotConfig::default()
        };
        let mut snaps = Snapshots::open(&config).unwrap().unwrap();
        let t0 = Instant::now();
        // Two classes above the score and one below: 2 × (crop + frame).
        let n = snaps
            .take(0, &done(0, vec![det(1, 0.9), det(2, 0.8), det(3, 0.1)]), t0)
            .unwrap();
        assert_eq!(n, 4);
        // Class 1 again within the interval: nothing; after it: one more pair.
        assert_eq!(snaps.take(0, &done(1, vec![det(1, 0.9)]), t0).unwrap(), 0);
        // Another source has its own limit.
        assert_eq!(snaps.take(1, &done(1, vec![det(1, 0.9)]), t0).unwrap(), 2);
        let later = t0 + Duration::from_secs(11);
        assert_eq!(
            snaps.take(0, &done(2, vec![det(1, 0.9)]), later).unwrap(),
            2
        );
        let crop = image::open(dir.path().join("snaps/0-000000-01-crop.jpg"));
        // The crop may be pruned already; when it is there it is the box with its margin: 30×30.
        if let Ok(crop) = crop {
            assert_eq!((crop.width(), crop.height()), (30, 30));
        }
        let (files, bytes) = snaps.stock();
        assert!(bytes <= (0.004 * 1024.0 * 1024.0) as u64, "{bytes}");
        let on_disk = std::fs::read_dir(dir.path().join("snaps")).unwrap().count();
        assert_eq!(on_disk, files);
        assert!(dir.path().join("snaps/0-000002-01-frame.jpg").exists());
    }
}
