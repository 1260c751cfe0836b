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

/// GTSRB class 27, "pedestrians" (German sign 133), which has no drawing among the pictograms.
const PEDESTRIANS_CLASS: usize = 27;

/// Renders every drawing listed in `<data>/pictograms/index.csv`; with `composed`, also the drawings
/// [`composed_drawings`] builds from them.
pub fn load_pictograms(data_dir: &Path, composed: bool) -> anyhow::Result<Vec<Pictogram>> {
    let dir = data_dir.join("pictograms");
    let index_path = dir.join("index.csv");
    let index = std::fs::read_to_string(&index_path)
        .with_context(|| format!("reading {}", index_path.display()))?;
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
        out.push(Pictogram {
            file: fields[0].to_string(),
            class_id,
            side_px: RENDER_SIDE_PX,
            rgba: render_svg(&svg).with_context(|| format!("rendering {}", svg_path.display()))?,
        });
    }
    if composed {
        for (name, class_id, svg) in composed_drawings(&dir)? {
            out.push(Pictogram {
                rgba: render_svg(svg.as_bytes()).with_context(|| format!("rendering {name}"))?,
                file: name,
                class_id,
                side_px: RENDER_SIDE_PX,
            });
        }
    }
    Ok(out)
}

/// Renders an SVG document centred in a `RENDER_SIDE_PX²` premultiplied RGBA canvas.
fn render_svg(svg: &[u8]) -> anyhow::Result<Vec<u8>> {
    let tree = resvg::usvg::Tree::from_data(svg, &resvg::usvg::Options::default())
        .context("parsing the SVG")?;
    let size = tree.size();
    let scale = RENDER_SIDE_PX as f32 / size.width().max(size.height());
    let mut pixmap = resvg::tiny_skia::Pixmap::new(RENDER_SIDE_PX as u32, RENDER_SIDE_PX as u32)
        .context("allocating a pictogram canvas")?;
    // Centre the drawing in the square canvas.
    let dx = (RENDER_SIDE_PX as f32 - size.width() * scale) / 2.0;
    let dy = (RENDER_SIDE_PX as f32 - size.height() * scale) / 2.0;
    resvg::render(
        &tree,
        resvg::tiny_skia::Transform::from_row(scale, 0.0, 0.0, scale, dx, dy),
        &mut pixmap.as_mut(),
    );
    Ok(pixmap.data().to_vec())
}

/// The `<path …/>` elements of an SVG document, in order.
fn svg_paths(svg: &str) -> Vec<&str> {
    let mut paths = Vec::new();
    let mut rest = svg;
    while let Some(start) = rest.find("<path") {
        let Some(len) = rest[start..].find("/>") else {
            break;
        };
        paths.push(&rest[start..start + len + 2]);
        rest = &rest[start + len + 2..];
    }
    paths
}

/// Drawings of GTSRB classes that the pictograms lack, composed from pictograms that share their parts:
/// "pedestrians" (sign 133, GTSRB class 27) is the red warning triangle of "children" (`DE_136_10.svg`: white
/// field, red border, outline; its figures left out) with the walking figure of "no pedestrians"
/// (`DE_259.svg`, its last path) scaled into the triangle. Without one, GTSRB's 240 training crops of class 27
/// are its only positives, while the pedestrian figure appears in a hard negative (`DE_259`), and the
/// classifier answered "background" for 24 of class 27's 60 test images.
pub fn composed_drawings(dir: &Path) -> anyhow::Result<Vec<(String, Option<usize>, String)>> {
    let read = |name: &str| {
        let path = dir.join(name);
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
    };
    let (frame_svg, figure_svg) = (read("DE_136_10.svg")?, read("DE_259.svg")?);
    let (frame, figure) = (svg_paths(&frame_svg), svg_paths(&figure_svg));
    let (Some(open_end), true, Some(walker)) = (
        frame_svg.find("<path"),
        frame.len() >= 3,
        figure.last().filter(|_| figure.len() > 3),
    ) else {
        bail!(
            "composing the pedestrians drawing: expected DE_136_10.svg with at least 3 paths (found {}) and \
             DE_259.svg with more than 3 (found {})",
            frame.len(),
            figure.len()
        );
    };
    // DE_259's figure is centred near (300, 295) of its 601-unit square; the triangle's field is centred near
    // (423, 470) of DE_136_10's 847×744 view box. 0.9 gives the figure about 45 % of the triangle's height.
    let scale = 0.9;
    let (tx, ty) = (423.0 - scale * 300.0, 470.0 - scale * 295.0);
    let svg = format!(
        "{}{}<g transform=\"matrix({scale} 0 0 {scale} {tx:.1} {ty:.1})\">{walker}</g></svg>",
        &frame_svg[..open_end],
        frame[..3].concat()
    );
    Ok(vec![(
        "composed:DE_133 (DE_136_10 triangle + DE_259 figure)".into(),
        Some(PEDESTRIANS_CLASS),
        svg,
    )])
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

    /// The composed pedestrians drawing renders as a red triangle with a dark figure in its white field.
    #[test]
    fn composed_pedestrians_drawing_is_a_triangle_with_a_figure() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/pictograms");
        if !dir.join("DE_259.svg").exists() {
            eprintln!(
                "skipped: {} is not here (a fresh clone has no ../shared)",
                dir.display()
            );
            return;
        }
        let drawings = composed_drawings(&dir).unwrap();
        assert_eq!(drawings.len(), 1);
        assert_eq!(drawings[0].1, Some(27));
        let rgba = render_svg(drawings[0].2.as_bytes()).unwrap();
        let n = RENDER_SIDE_PX;
        let px = |x: usize, y: usize| &rgba[(y * n + x) * 4..(y * n + x) * 4 + 4];
        // Red border low on the left edge of the triangle; transparent corner above it.
        let border_row = (n * 80) / 100;
        let red = (0..n / 2).any(|x| {
            let p = px(x, border_row);
            p[3] > 200 && p[0] > 150 && p[1] < 80
        });
        assert!(red, "no red border on row {border_row}");
        assert_eq!(px(2, 2)[3], 0);
        // The figure: dark pixels in the middle of the field, white pixels beside them.
        let field: Vec<&[u8]> = (n * 45 / 100..n * 80 / 100)
            .flat_map(|y| (n * 35 / 100..n * 65 / 100).map(move |x| (x, y)))
            .map(|(x, y)| px(x, y))
            .collect();
        let dark = field
            .iter()
            .filter(|p| p[3] > 200 && p[0] < 60 && p[1] < 60)
            .count();
        let white = field
            .iter()
            .filter(|p| p[0] > 200 && p[1] > 200 && p[2] > 200)
            .count();
        assert!(
            dark > field.len() / 20 && white > field.len() / 4,
            "dark {dark}, white {white} of {}",
            field.len()
        );
    }

    /// The composition keeps the frame's first three paths and the figure's last one, placed by a transform;
    /// drawings of another structure are refused with the counts found.
    #[test]
    fn composed_drawing_takes_the_frame_and_the_last_figure_path() {
        let dir = tempfile::tempdir().unwrap();
        let frame = r##"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 847 744"><path d="M0 0H847V744Z" fill="#fff"/><path d="M0 0H10V10Z" fill="red"/><path d="M5 5H9V9Z"/><path id="kids" d="M400 400H450V450Z"/></svg>"##;
        let figure = |n: usize| {
            let paths: String = (0..n)
                .map(|i| format!(r#"<path id="p{i}" d="M250 250H350V350Z"/>"#))
                .collect();
            format!(
                r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 601 601">{paths}</svg>"#
            )
        };
        std::fs::write(dir.path().join("DE_136_10.svg"), frame).unwrap();
        std::fs::write(dir.path().join("DE_259.svg"), figure(5)).unwrap();
        let drawings = composed_drawings(dir.path()).unwrap();
        let svg = &drawings[0].2;
        assert!(
            svg.starts_with("<svg") && svg.ends_with("</g></svg>"),
            "{svg}"
        );
        assert!(svg.contains("fill=\"#fff\"") && svg.contains("red") && svg.contains("M5 5H9V9Z"));
        assert!(
            !svg.contains("kids") && !svg.contains("p3") && svg.contains(r#"id="p4""#),
            "{svg}"
        );
        assert!(svg.contains("<g transform=\"matrix(0.9 0 0 0.9"), "{svg}");
        let rgba = render_svg(svg.as_bytes()).unwrap();
        assert!(
            rgba.chunks(4).any(|p| p[3] == 255 && p[0] < 50),
            "the figure is drawn in black"
        );
        std::fs::write(dir.path().join("DE_259.svg"), figure(2)).unwrap();
        let err = composed_drawings(dir.path()).unwrap_err().to_string();
        assert!(err.contains("found 4") && err.contains("found 2"), "{err}");
        assert!(render_svg(b"<svg").is_err());
    }

    #[test]
    fn svg_paths_finds_every_path_in_order() {
        let svg = r#"<svg><path d="M0 0"/><g><path d="M1 1" style="x"/></g></svg>"#;
        assert_eq!(
            svg_paths(svg),
            [r#"<path d="M0 0"/>"#, r#"<path d="M1 1" style="x"/>"#]
        );
        assert!(svg_paths("<svg></svg>").is_empty());
    }

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
