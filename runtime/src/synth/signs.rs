//! Where sign images come from: GTSRB crops (bundled test-set sample, or a raw `.u8` file by path for
//! training) and German sign drawings rendered once with resvg. Drawings without a GTSRB class are hard
//! negatives: drawn into scenes but never listed as truth.

use super::sprite::{self, SignShape, Sprite, GTSRB_SIDE_PX};
use super::SynthError;
use std::path::Path;

/// GTSRB classes (the classifier's 43 sign outputs).
pub const GTSRB_CLASSES: usize = 43;
const CROP_BYTES: usize = GTSRB_SIDE_PX * GTSRB_SIDE_PX * 3;
/// Long side, in pixels, at which drawings are rendered and cached (mip levels cover smaller sizes).
const PICTOGRAM_RENDER_PX: f32 = 128.0;

const BUNDLED_IMAGES: &[u8] = include_bytes!("../../assets/gtsrb/test_sample_images.u8");
const BUNDLED_LABELS: &[u8] = include_bytes!("../../assets/gtsrb/test_sample_labels.u8");
const CLASSES_CSV: &str = include_str!("../../assets/gtsrb/classes.csv");
const PICTOGRAM_INDEX: &str = include_str!("../../assets/pictograms/index.csv");

/// Bundled crops per class; the first [`BUNDLED_EVAL_PER_CLASS`] of each class serve evaluation, the rest a
/// training fallback, so the two splits never share a crop.
pub const BUNDLED_PER_CLASS: usize = 10;
pub const BUNDLED_EVAL_PER_CLASS: usize = 8;

macro_rules! pictogram_files {
    ($($name:literal),* $(,)?) => {
        &[$(($name, include_bytes!(concat!("../../assets/pictograms/", $name)) as &[u8])),*]
    };
}

const PICTOGRAM_SVGS: &[(&str, &[u8])] = pictogram_files!(
    "DE_101.svg",
    "DE_1010_50.svg",
    "DE_102.svg",
    "DE_103_10.svg",
    "DE_103_20.svg",
    "DE_108_10.svg",
    "DE_110_10.svg",
    "DE_136_10.svg",
    "DE_138_10.svg",
    "DE_142_10.svg",
    "DE_205.svg",
    "DE_206.svg",
    "DE_215.svg",
    "DE_220_10.svg",
    "DE_220_20.svg",
    "DE_222.svg",
    "DE_224.svg",
    "DE_237.svg",
    "DE_239.svg",
    "DE_240.svg",
    "DE_241_30.svg",
    "DE_250.svg",
    "DE_251.svg",
    "DE_253.svg",
    "DE_254.svg",
    "DE_259.svg",
    "DE_260.svg",
    "DE_262__5_5__.svg",
    "DE_263__8__.svg",
    "DE_264__2__.svg",
    "DE_265__3_8__.svg",
    "DE_267.svg",
    "DE_268.svg",
    "DE_269.svg",
    "DE_274_10.svg",
    "DE_274_100.svg",
    "DE_274_110.svg",
    "DE_274_120.svg",
    "DE_274_130.svg",
    "DE_274_20.svg",
    "DE_274_30.svg",
    "DE_274_40.svg",
    "DE_274_50.svg",
    "DE_274_60.svg",
    "DE_274_70.svg",
    "DE_274_80.svg",
    "DE_274_90.svg",
    "DE_276.svg",
    "DE_277.svg",
    "DE_278_30.svg",
    "DE_278_50.svg",
    "DE_278_80.svg",
    "DE_283.svg",
    "DE_286.svg",
    "DE_301.svg",
    "DE_306.svg",
    "DE_307.svg",
);

/// GTSRB class names by id, from the bundled `classes.csv`.
pub fn gtsrb_class_names() -> Vec<String> {
    let mut names = vec![String::new(); GTSRB_CLASSES];
    for line in CLASSES_CSV.lines().skip(1) {
        if let Some((id, name)) = line.split_once(',') {
            if let Ok(id) = id.trim().parse::<usize>() {
                if id < GTSRB_CLASSES {
                    names[id] = name.trim().to_string();
                }
            }
        }
    }
    names
}

/// Raw 32×32 RGB crops grouped by class.
#[derive(Debug, Clone)]
pub(crate) struct CropSet {
    images: Vec<u8>,
    /// Crop indices per class.
    by_class: Vec<Vec<usize>>,
}

impl CropSet {
    /// From raw bytes (N × 32 × 32 × 3, labels N bytes), keeping the crops `keep(class_rank, class)` accepts,
    /// where `class_rank` counts the crops of that class seen so far.
    fn from_bytes(
        what: &str,
        images: &[u8],
        labels: &[u8],
        keep: impl Fn(usize) -> bool,
    ) -> Result<Self, SynthError> {
        if !images.len().is_multiple_of(CROP_BYTES) || images.len() / CROP_BYTES != labels.len() {
            return Err(SynthError::GtsrbLayout {
                what: what.to_string(),
                image_bytes: images.len(),
                labels: labels.len(),
                expected_image_bytes: labels.len() * CROP_BYTES,
            });
        }
        let mut by_class = vec![Vec::new(); GTSRB_CLASSES];
        let mut seen = [0usize; GTSRB_CLASSES];
        for (i, &label) in labels.iter().enumerate() {
            let class = label as usize;
            if class >= GTSRB_CLASSES {
                return Err(SynthError::GtsrbLabel {
                    what: what.to_string(),
                    index: i,
                    label,
                });
            }
            if keep(seen[class]) {
                by_class[class].push(i);
            }
            seen[class] += 1;
        }
        if let Some(class) = by_class.iter().position(|v| v.is_empty()) {
            return Err(SynthError::GtsrbMissingClass {
                what: what.to_string(),
                class,
            });
        }
        Ok(Self {
            images: images.to_vec(),
            by_class,
        })
    }

    /// The bundled test-set sample: crops of rank < 8 per class for evaluation, the rest for training.
    pub fn bundled(eval: bool) -> Result<Self, SynthError> {
        Self::from_bytes(
            "bundled GTSRB sample",
            BUNDLED_IMAGES,
            BUNDLED_LABELS,
            |rank| (rank < BUNDLED_EVAL_PER_CLASS) == eval,
        )
    }

    pub fn from_files(images_path: &Path, labels_path: &Path) -> Result<Self, SynthError> {
        let images = std::fs::read(images_path).map_err(|e| SynthError::Io {
            path: images_path.display().to_string(),
            message: e.to_string(),
        })?;
        let labels = std::fs::read(labels_path).map_err(|e| SynthError::Io {
            path: labels_path.display().to_string(),
            message: e.to_string(),
        })?;
        Self::from_bytes(&images_path.display().to_string(), &images, &labels, |_| {
            true
        })
    }

    pub fn count(&self, class: usize) -> usize {
        self.by_class.get(class).map_or(0, Vec::len)
    }

    /// The sprite of the `k`-th crop of `class`.
    pub fn sprite(&self, class: usize, k: usize) -> Option<Sprite> {
        let index = *self.by_class.get(class)?.get(k)?;
        let crop = self
            .images
            .get(index * CROP_BYTES..(index + 1) * CROP_BYTES)?;
        Some(sprite::sprite_from_gtsrb_crop(
            crop,
            SignShape::of_gtsrb_class(class),
        ))
    }
}

/// A drawing rendered once at start.
#[derive(Debug, Clone)]
pub(crate) struct Pictogram {
    /// Bundled file name, for test failures and debugging.
    #[cfg_attr(not(test), allow(dead_code))]
    pub file: &'static str,
    pub class_id: Option<usize>,
    pub sprite: Sprite,
}

/// Renders every bundled drawing listed in `index.csv`.
pub(crate) fn render_pictograms() -> Result<Vec<Pictogram>, SynthError> {
    let options = resvg::usvg::Options::default();
    let mut out = Vec::new();
    for (line_no, line) in PICTOGRAM_INDEX.lines().enumerate().skip(1) {
        let mut fields = line.split(',');
        let (Some(file), Some(class)) = (fields.next(), fields.next()) else {
            continue;
        };
        let class_id = if class.trim().is_empty() {
            None
        } else {
            let id: usize = class.trim().parse().map_err(|_| SynthError::Asset {
                what: format!("pictograms/index.csv line {}", line_no + 1),
                message: format!("class `{class}` is not a number 0–42 or empty"),
            })?;
            Some(id)
        };
        let Some(&(name, svg)) = PICTOGRAM_SVGS.iter().find(|(n, _)| *n == file.trim()) else {
            return Err(SynthError::Asset {
                what: format!("pictograms/{file}"),
                message: "listed in index.csv but not bundled".to_string(),
            });
        };
        let tree = resvg::usvg::Tree::from_data(svg, &options).map_err(|e| SynthError::Asset {
            what: format!("pictograms/{name}"),
            message: e.to_string(),
        })?;
        let size = tree.size();
        let scale = PICTOGRAM_RENDER_PX / size.width().max(size.height());
        let (w, h) = (
            (size.width() * scale).ceil() as u32,
            (size.height() * scale).ceil() as u32,
        );
        let mut pixmap =
            resvg::tiny_skia::Pixmap::new(w.max(1), h.max(1)).ok_or_else(|| SynthError::Asset {
                what: format!("pictograms/{name}"),
                message: format!("cannot allocate a {w}×{h} canvas"),
            })?;
        resvg::render(
            &tree,
            resvg::tiny_skia::Transform::from_scale(scale, scale),
            &mut pixmap.as_mut(),
        );
        let sprite = sprite::sprite_from_premultiplied(
            pixmap.width() as usize,
            pixmap.height() as usize,
            pixmap.data(),
        )
        .ok_or_else(|| SynthError::Asset {
            what: format!("pictograms/{name}"),
            message: "renders fully transparent".to_string(),
        })?;
        out.push(Pictogram {
            file: name,
            class_id,
            sprite,
        });
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn bundled_crops_split_eight_eval_and_two_train_per_class() {
        let eval = CropSet::bundled(true).unwrap();
        let train = CropSet::bundled(false).unwrap();
        for class in 0..GTSRB_CLASSES {
            assert_eq!(eval.count(class), BUNDLED_EVAL_PER_CLASS);
            assert_eq!(
                train.count(class),
                BUNDLED_PER_CLASS - BUNDLED_EVAL_PER_CLASS
            );
            for i in &eval.by_class[class] {
                assert!(!train.by_class[class].contains(i));
            }
        }
    }

    #[test]
    fn every_indexed_pictogram_renders_and_classes_are_in_range() {
        let pictograms = render_pictograms().unwrap();
        assert_eq!(pictograms.len(), PICTOGRAM_SVGS.len());
        assert!(pictograms.iter().filter(|p| p.class_id.is_some()).count() >= 27);
        assert!(pictograms
            .iter()
            .all(|p| p.class_id.is_none_or(|c| c < GTSRB_CLASSES)));
        for p in &pictograms {
            let l = &p.sprite.levels[0];
            assert!(
                l.width.max(l.height) >= 100,
                "{} is {}×{}",
                p.file,
                l.width,
                l.height
            );
        }
    }

    #[test]
    fn class_names_cover_all_classes() {
        let names = gtsrb_class_names();
        assert_eq!(names[14], "stop");
        assert!(names.iter().all(|n| !n.is_empty() && !n.contains(',')));
    }

    #[test]
    fn wrong_gtsrb_length_is_reported_with_sizes() {
        let err = CropSet::from_bytes("x", &[0u8; 3000], &[1], |_| true).unwrap_err();
        assert!(err.to_string().contains("3000"), "{err}");
    }
}
