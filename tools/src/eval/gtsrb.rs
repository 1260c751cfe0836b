//! The GTSRB test crops in memory, and each crop as the classifier's CHW input.

use std::path::Path;

use anyhow::{bail, ensure, Context};
use saccade_models::NUM_SIGN_CLASSES;

/// GTSRB crops in memory: N×32×32×3 RGB and N labels.
pub struct GtsrbTest {
    pub images: Vec<u8>,
    pub labels: Vec<u8>,
}

pub const GTSRB_SIDE_PX: usize = 32;

impl std::fmt::Debug for GtsrbTest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GtsrbTest")
            .field("images", &self.len())
            .finish()
    }
}

impl GtsrbTest {
    pub fn from_bytes(images: Vec<u8>, labels: Vec<u8>) -> anyhow::Result<Self> {
        let per_image = GTSRB_SIDE_PX * GTSRB_SIDE_PX * 3;
        ensure!(
            images.len().is_multiple_of(per_image),
            "images hold {} bytes, expected a multiple of {per_image} (32×32×3)",
            images.len()
        );
        let n = images.len() / per_image;
        ensure!(
            labels.len() == n,
            "{} labels for {n} images, expected one label per image",
            labels.len()
        );
        if let Some((i, l)) = labels
            .iter()
            .enumerate()
            .find(|(_, l)| **l as usize >= NUM_SIGN_CLASSES)
        {
            bail!("label {i} is {l}, expected a GTSRB class id 0–42");
        }
        Ok(Self { images, labels })
    }

    pub fn load(dir: &Path) -> anyhow::Result<Self> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read(&path).with_context(|| format!("reading {}", path.display()))
        };
        Self::from_bytes(read("test_images.u8")?, read("test_labels.u8")?)
            .with_context(|| format!("GTSRB test set in {}", dir.display()))
    }

    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
}

/// Image `i` of `set` as CHW f32 in 0..1 at `side` px (bilinear when the net's input is not 32 px).
pub(crate) fn gtsrb_chw(set: &GtsrbTest, i: usize, side: usize, out: &mut Vec<f32>) {
    let per_image = GTSRB_SIDE_PX * GTSRB_SIDE_PX * 3;
    let image = &set.images[i * per_image..(i + 1) * per_image];
    let plane = side * side;
    let start = out.len();
    out.resize(start + 3 * plane, 0.0);
    let scale = GTSRB_SIDE_PX as f32 / side as f32;
    let max = (GTSRB_SIDE_PX - 1) as f32;
    for y in 0..side {
        let sy = ((y as f32 + 0.5) * scale - 0.5).clamp(0.0, max);
        let (y0, fy) = (sy.floor() as usize, sy.fract());
        let y1 = (y0 + 1).min(GTSRB_SIDE_PX - 1);
        for x in 0..side {
            let sx = ((x as f32 + 0.5) * scale - 0.5).clamp(0.0, max);
            let (x0, fx) = (sx.floor() as usize, sx.fract());
            let x1 = (x0 + 1).min(GTSRB_SIDE_PX - 1);
            for c in 0..3 {
                let px = |xx: usize, yy: usize| image[(yy * GTSRB_SIDE_PX + xx) * 3 + c] as f32;
                let top = px(x0, y0) * (1.0 - fx) + px(x1, y0) * fx;
                let bottom = px(x0, y1) * (1.0 - fx) + px(x1, y1) * fx;
                out[start + c * plane + y * side + x] = (top * (1.0 - fy) + bottom * fy) / 255.0;
            }
        }
    }
}
