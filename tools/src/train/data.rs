//! Training inputs read from the shared data folder: GTSRB crops (raw `N×32×32×3` u8 plus one label byte
//! each) and the annotated real road photos of `scenes/`. Everything here is a training/eval input passed by
//! path; nothing at run time reads it.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

/// Side of a GTSRB crop in pixels.
pub const GTSRB_SIDE_PX: usize = 32;
const GTSRB_BYTES_PER_IMAGE: usize = GTSRB_SIDE_PX * GTSRB_SIDE_PX * 3;

/// GTSRB crops held as raw RGB bytes, `images.len() == labels.len() * 3072`.
#[derive(Debug, Clone, Default)]
pub struct GtsrbSet {
    pub images: Vec<u8>,
    pub labels: Vec<u8>,
}

impl GtsrbSet {
    /// Reads `<dir>/gtsrb/{split}_images.u8` and `{split}_labels.u8` (`split` = `train` | `test`).
    pub fn load(data_dir: &Path, split: &str) -> anyhow::Result<Self> {
        let images_path = data_dir.join("gtsrb").join(format!("{split}_images.u8"));
        let labels_path = data_dir.join("gtsrb").join(format!("{split}_labels.u8"));
        let images = std::fs::read(&images_path)
            .with_context(|| format!("reading GTSRB images {}", images_path.display()))?;
        let labels = std::fs::read(&labels_path)
            .with_context(|| format!("reading GTSRB labels {}", labels_path.display()))?;
        Self::from_bytes(images, labels)
            .with_context(|| format!("GTSRB {split} set in {}", data_dir.display()))
    }

    /// Checks the byte counts and the label range.
    pub fn from_bytes(images: Vec<u8>, labels: Vec<u8>) -> anyhow::Result<Self> {
        if images.len() != labels.len() * GTSRB_BYTES_PER_IMAGE {
            bail!(
                "GTSRB images have {} bytes, expected {} ({} labels × {GTSRB_BYTES_PER_IMAGE})",
                images.len(),
                labels.len() * GTSRB_BYTES_PER_IMAGE,
                labels.len()
            );
        }
        if let Some((i, &bad)) = labels
            .iter()
            .enumerate()
            .find(|(_, &l)| l as usize >= saccade_models::NUM_SIGN_CLASSES)
        {
            bail!(
                "GTSRB label {i} is {bad}, expected 0..{}",
                saccade_models::NUM_SIGN_CLASSES
            );
        }
        Ok(Self { images, labels })
    }

    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Raw HWC RGB bytes of image `i`.
    pub fn image(&self, i: usize) -> &[u8] {
        &self.images[i * GTSRB_BYTES_PER_IMAGE..(i + 1) * GTSRB_BYTES_PER_IMAGE]
    }
}

/// One annotated box of a real photo, in photo pixels (`max` exclusive after loading).
#[derive(Debug, Clone, PartialEq)]
pub struct PhotoBox {
    pub class: String,
    pub gtsrb_class_id: Option<usize>,
    pub xmin_px: f32,
    pub ymin_px: f32,
    pub xmax_px: f32,
    pub ymax_px: f32,
}

impl PhotoBox {
    /// Traffic lights are annotated in the photos but are not signs: the glance net must neither be pushed
    /// towards nor away from them.
    pub fn is_sign(&self) -> bool {
        self.class != "trafficlight"
    }
}

/// One real photo and its boxes.
#[derive(Debug, Clone)]
pub struct Photo {
    pub path: PathBuf,
    pub width_px: usize,
    pub height_px: usize,
    pub boxes: Vec<PhotoBox>,
}

/// Reads `scenes/annotations.csv` and groups boxes per photo, in file-name order.
pub fn load_photo_annotations(data_dir: &Path) -> anyhow::Result<Vec<Photo>> {
    let csv_path = data_dir.join("scenes").join("annotations.csv");
    let text = std::fs::read_to_string(&csv_path)
        .with_context(|| format!("reading {}", csv_path.display()))?;
    parse_photo_annotations(&text, &data_dir.join("scenes").join("images"))
        .with_context(|| format!("parsing {}", csv_path.display()))
}

/// Parses the annotation CSV (`file,width,height,class,gtsrb_class_id,xmin,ymin,xmax,ymax`, inclusive corners).
pub fn parse_photo_annotations(text: &str, image_dir: &Path) -> anyhow::Result<Vec<Photo>> {
    let mut photos: Vec<Photo> = Vec::new();
    for (line_no, line) in text.lines().enumerate().skip(1) {
        if line.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        if fields.len() != 9 {
            bail!("line {}: {} fields, expected 9", line_no + 1, fields.len());
        }
        let num = |i: usize| -> anyhow::Result<f32> {
            fields[i]
                .parse::<f32>()
                .with_context(|| format!("line {}: field {i} is `{}`", line_no + 1, fields[i]))
        };
        let (width_px, height_px) = (num(1)? as usize, num(2)? as usize);
        let gtsrb_class_id = if fields[4].is_empty() {
            None
        } else {
            Some(num(4)? as usize)
        };
        let bbox = PhotoBox {
            class: fields[3].to_string(),
            gtsrb_class_id,
            xmin_px: num(5)?,
            ymin_px: num(6)?,
            // Inclusive corner → exclusive.
            xmax_px: num(7)? + 1.0,
            ymax_px: num(8)? + 1.0,
        };
        let path = image_dir.join(fields[0]);
        match photos.last_mut() {
            Some(last) if last.path == path => last.boxes.push(bbox),
            _ => photos.push(Photo {
                path,
                width_px,
                height_px,
                boxes: vec![bbox],
            }),
        }
    }
    photos.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(photos)
}

/// Decodes a photo to packed RGB bytes `(width, height, rgb)`.
pub fn read_rgb(path: &Path) -> anyhow::Result<(usize, usize, Vec<u8>)> {
    let img = image::open(path)
        .with_context(|| format!("decoding {}", path.display()))?
        .to_rgb8();
    let (w, h) = img.dimensions();
    Ok((w as usize, h as usize, img.into_raw()))
}

/// Splits items deterministically into (train, held-out): items whose index is a multiple of `every` are
/// held out, the same rule the scene generator uses for its photo split (every 5th file is evaluation-only).
pub fn split_every<T: Clone>(items: &[T], every: usize) -> (Vec<T>, Vec<T>) {
    let mut train = Vec::new();
    let mut held = Vec::new();
    for (i, item) in items.iter().enumerate() {
        if every > 0 && i % every == 0 {
            held.push(item.clone());
        } else {
            train.push(item.clone());
        }
    }
    (train, held)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn gtsrb_rejects_wrong_byte_count_and_bad_labels() {
        assert!(GtsrbSet::from_bytes(vec![0; 3071], vec![1]).is_err());
        assert!(GtsrbSet::from_bytes(vec![0; 3072], vec![43]).is_err());
        let set = GtsrbSet::from_bytes(vec![7; 6144], vec![1, 42]).unwrap();
        assert_eq!(set.len(), 2);
        assert_eq!(set.image(1).len(), 3072);
    }

    #[test]
    fn annotations_group_per_photo_and_make_max_exclusive() {
        let csv = "file,width,height,class,gtsrb_class_id,xmin,ymin,xmax,ymax\n\
                   a.jpg,400,300,stop,14,10,20,29,39\n\
                   a.jpg,400,300,trafficlight,,1,2,3,4\n\
                   b.jpg,300,400,speedlimit,,5,5,14,14\n";
        let photos = parse_photo_annotations(csv, Path::new("/x")).unwrap();
        assert_eq!(photos.len(), 2);
        assert_eq!(photos[0].boxes.len(), 2);
        assert_eq!(photos[0].boxes[0].gtsrb_class_id, Some(14));
        assert_eq!(photos[0].boxes[0].xmax_px, 30.0);
        assert!(!photos[0].boxes[1].is_sign());
        assert!(parse_photo_annotations("h\na.jpg,1,2\n", Path::new("/x")).is_err());
    }

    #[test]
    fn split_every_holds_out_one_in_n() {
        let (train, held) = split_every(&(0..10).collect::<Vec<_>>(), 5);
        assert_eq!(held, vec![0, 5]);
        assert_eq!(train.len(), 8);
    }
}
