//! Frames to evaluate: their pixels (a file or a synthetic scene) and their truth boxes, and how each is decoded.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context};
use saccade_models::class_name;
use saccade_runtime::capture::dir::natural_cmp;
use saccade_runtime::frame::{Frame, TruthBox};

use super::annotations::*;
use crate::matching::TruthEntry;

/// A frame to evaluate: where it comes from and its truth.
#[derive(Debug, Clone)]
pub struct EvalItem {
    pub name: String,
    pub source: FrameData,
    /// Size the annotations expect, checked against the decoded image.
    pub expected_size_px: Option<(u32, u32)>,
    pub truth: Vec<TruthEntry>,
}

impl EvalItem {
    /// Bytes of pixels the bench holds for this item: in-memory scenes, and files once the throughput run
    /// has decoded them (their annotated size, else a 1280×960 frame).
    pub fn bytes_held(&self) -> u64 {
        match &self.source {
            FrameData::Rgb { rgb, .. } => rgb.len() as u64,
            FrameData::File(_) => self
                .expected_size_px
                .map_or(1280 * 960 * 3, |(w, h)| u64::from(w) * u64::from(h) * 3),
        }
    }
}

/// Pixels in memory (synthetic scenes) or a file decoded when its turn comes (keeps RSS to one frame).
#[derive(Debug, Clone)]
pub enum FrameData {
    File(PathBuf),
    Rgb {
        width: u32,
        height: u32,
        rgb: Vec<u8>,
    },
}

pub(crate) fn is_image_file(path: &Path) -> bool {
    path.is_file()
        && path.extension().and_then(|e| e.to_str()).is_some_and(|e| {
            ["jpg", "jpeg", "png"]
                .iter()
                .any(|x| e.eq_ignore_ascii_case(x))
        })
}

/// The frames of `images` in natural order with their boxes from `rows`; a file named in the CSV but missing
/// from the folder is an error.
pub fn items_from_folder(images: &Path, rows: &[AnnotationRow]) -> anyhow::Result<Vec<EvalItem>> {
    let entries = std::fs::read_dir(images)
        .with_context(|| format!("listing frames folder {}", images.display()))?;
    let mut names: Vec<String> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| is_image_file(p))
        .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    let mut by_file: BTreeMap<&str, Vec<&AnnotationRow>> = BTreeMap::new();
    for row in rows {
        by_file.entry(row.file.as_str()).or_default().push(row);
    }
    for file in by_file.keys() {
        if !names.iter().any(|n| n == file) {
            bail!(
                "annotations name `{file}`, which is not a .jpg/.jpeg/.png file in {}",
                images.display()
            );
        }
    }
    ensure!(
        !names.is_empty(),
        "{} has no .jpg, .jpeg or .png file",
        images.display()
    );
    names.sort_by(|a, b| natural_cmp(a, b));
    Ok(names
        .into_iter()
        .map(|name| {
            let rows = by_file.get(name.as_str()).map(Vec::as_slice).unwrap_or(&[]);
            EvalItem {
                source: FrameData::File(images.join(&name)),
                expected_size_px: rows.first().map(|r| (r.width_px, r.height_px)),
                truth: rows
                    .iter()
                    .map(|r| TruthEntry {
                        bbox: r.bbox,
                        class_name: r.class.clone(),
                        class_id: r.gtsrb_class_id,
                    })
                    .collect(),
                name,
            }
        })
        .collect())
}

/// Truth boxes of a synthetic scene, named by their GTSRB class.
pub fn truth_from_boxes(boxes: &[TruthBox]) -> Vec<TruthEntry> {
    boxes
        .iter()
        .map(|t| TruthEntry {
            bbox: t.bbox,
            class_name: t.class_id.map_or("unknown", class_name).to_string(),
            class_id: t.class_id,
        })
        .collect()
}

/// Decodes (or copies) the frame; its capture clock starts now, so latency is that of glance + focus.
/// Decodes `item` (checking a file against the size its annotations give) as frame number `index`.
pub(crate) fn load_frame(index: u64, item: &EvalItem) -> anyhow::Result<Frame> {
    let frame = match &item.source {
        FrameData::File(path) => {
            // Header size checked against the frame cap before the pixels are decoded.
            let image = saccade_runtime::capture::dir::decode_image(path)
                .with_context(|| format!("decoding frame {}", path.display()))?;
            let (w, h) = image.dimensions();
            if let Some((ew, eh)) = item.expected_size_px {
                ensure!(
                    (w, h) == (ew, eh),
                    "frame {} is {w}×{h}, but its annotations say {ew}×{eh}",
                    path.display()
                );
            }
            Frame::from_rgb(index, w, h, image.into_raw())
                .with_context(|| format!("frame {}", path.display()))?
        }
        FrameData::Rgb { width, height, rgb } => {
            Frame::from_rgb(index, *width, *height, rgb.clone())
                .with_context(|| format!("frame {}", item.name))?
        }
    };
    let mut frame = frame;
    frame.file = Some(item.name.clone());
    Ok(frame)
}
