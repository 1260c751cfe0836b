//! German sign drawings (`pictograms/*.svg`) as classifier training input: drawings with a GTSRB class are
//! extra positives, drawings without one (speed limit 40, no parking, one-way …) are hard negatives that
//! teach the classifier that not every round red sign is a GTSRB class. Each is rendered once with resvg and
//! composited onto a background with the runtime's framing (the sign fills 50–90 % of the square patch).

use std::path::Path;

use anyhow::{bail, Context};
use rand::Rng;

use super::augment::{crop_square, photometric};

/// Side of the rendered drawing in pixels (larger than any training patch, so compositing only shrinks).
const RENDER_SIDE_PX: usize = 96;

/// A rendered drawing: premultiplied RGBA, `RENDER_SIDE_PX²`, and its class (`None` = hard negative).
#[derive(Debug, Clone)]
pub struct Pictogram {
    pub file: String,
    pub class_id: Option<usize>,
    pub side_px: usize,
    pub rgba: Vec<u8>,
}

/// Renders every drawing listed in `<data>/pictograms/index.csv`.
pub fn load_pictograms(data_dir: &Path) -> anyhow::Result<Vec<Pictogram>> {
    let dir = data_dir.join("pictograms");
    let index_path = dir.join("index.csv");
    let index = std::fs::read_to_string(&index_path)
        .with_context(|| format!("reading {}", index_path.display()))?;
    let options = resvg::usvg::Options::default();
    let mut out = Vec::new();
    for (line_no, line) in index.lines().enumerate().skip(1) {
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        if fields.len() < 2 || fields[0].is_empty() {
            continue;
        }
        let class_id = if fields[1].is_empty() {
            None
        } else {
            let id: usize = fields[1].parse().with_context(|| {
                format!(
                    "{} line {}: class `{}` is not a number",
                    index_path.display(),
                    line_no + 1,
                    fields[1]
                )
            })?;
            if id >= saccade_models::NUM_SIGN_CLASSES {
                bail!(
                    "{} line {}: class {id}, expected 0..{}",
                    index_path.display(),
                    line_no + 1,
                    saccade_models::NUM_SIGN_CLASSES
                );
            }
            Some(id)
        };
        let svg_path = dir.join(fields[0]);
        let svg =
            std::fs::read(&svg_path).with_context(|| format!("reading {}", svg_path.display()))?;
        let tree = resvg::usvg::Tree::from_data(&svg, &options)
            .with_context(|| format!("parsing {}", svg_path.display()))?;
        let size = tree.size();
        let scale = RENDER_SIDE_PX as f32 / size.width().max(size.height());
        let mut pixmap =
            resvg::tiny_skia::Pixmap::new(RENDER_SIDE_PX as u32, RENDER_SIDE_PX as u32)
                .context("allocating a pictogram canvas")?;
        // Centre the drawing in the square canvas.
        let dx = (RENDER_SIDE_PX as f32 - size.width() * scale) / 2.0;
        let dy = (RENDER_SIDE_PX as f32 - size.height() * scale) / 2.0;
        resvg::render(
            &tree,
            resvg::tiny_skia::Transform::from_row(scale, 0.0, 0.0, scale, dx, dy),
            &mut pixmap.as_mut(),
        );
        out.push(Pictogram {
            file: fields[0].to_string(),
            class_id,
            side_px: RENDER_SIDE_PX,
            rgba: pixmap.data().to_vec(),
        });
    }
    Ok(out)
}

/// Composites `picto` onto the square `background` (packed RGB u8, `bg_side²`) so that it fills `fill` of the
/// side, shifted by up to ±8 % of the side, and returns the `out_side²` CHW f32 patch after photometric
/// augmentation.
pub fn composite_patch<R: Rng>(
    picto: &Pictogram,
    background: &[u8],
    bg_side: usize,
    out_side: usize,
    rng: &mut R,
) -> Vec<f32> {
    let mut canvas = background.to_vec();
    let fill = rng.random_range(0.5f32..0.9);
    let sign_px = fill * bg_side as f32;
    let jitter = 0.08 * bg_side as f32;
    let x0 = (bg_side as f32 - sign_px) / 2.0 + rng.random_range(-jitter..jitter);
    let y0 = (bg_side as f32 - sign_px) / 2.0 + rng.random_range(-jitter..jitter);
    let scale = picto.side_px as f32 / sign_px;
    for y in 0..bg_side {
        let py = ((y as f32 + 0.5 - y0) * scale) as isize;
        if py < 0 || py >= picto.side_px as isize {
            continue;
        }
        for x in 0..bg_side {
            let px = ((x as f32 + 0.5 - x0) * scale) as isize;
            if px < 0 || px >= picto.side_px as isize {
                continue;
            }
            let s = (py as usize * picto.side_px + px as usize) * 4;
            let alpha = picto.rgba[s + 3] as f32 / 255.0;
            let d = (y * bg_side + x) * 3;
            for c in 0..3 {
                // Premultiplied source over opaque destination.
                let v = picto.rgba[s + c] as f32 + canvas[d + c] as f32 * (1.0 - alpha);
                canvas[d + c] = v.clamp(0.0, 255.0) as u8;
            }
        }
    }
    let mut out = crop_square(
        &canvas,
        bg_side,
        bg_side,
        0.0,
        0.0,
        bg_side as f32,
        out_side,
    );
    photometric(&mut out, rng);
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn opaque_pictogram_covers_the_centre_of_the_patch() {
        let picto = Pictogram {
            file: "red.svg".into(),
            class_id: Some(14),
            side_px: 8,
            rgba: [255u8, 0, 0, 255].repeat(64),
        };
        let background = vec![0u8; 64 * 64 * 3];
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let patch = composite_patch(&picto, &background, 64, 32, &mut rng);
        let centre = 16 * 32 + 16;
        // Red dominates green at the centre whatever the photometric change did.
        assert!(
            patch[centre] > 0.3 && patch[32 * 32 + centre] < 0.05,
            "{}",
            patch[centre]
        );
        // A corner stays background.
        assert!(patch[0] < 0.05);
    }
}
