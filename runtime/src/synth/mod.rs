//! Synthetic traffic scenes with known boxes: the source behind `synthetic://`, the training and evaluation
//! data generator, and the benchmark's frames. A scene is a procedural road (or a real photo with its signs
//! painted out) seen by a pinhole camera, with 0–4 signs on roadside poles at heights and sizes consistent
//! with perspective, then camera effects (exposure, vignetting, sensor noise, JPEG). Everything is
//! deterministic from `(split, seed)`; train and eval use disjoint seeds, sign crops and photos.

mod background;
mod camera;
mod photo;
mod signs;
mod sprite;

pub use signs::{gtsrb_class_names, BUNDLED_EVAL_PER_CLASS, BUNDLED_PER_CLASS, GTSRB_CLASSES};

use crate::frame::{BoxPx, TruthBox};
use background::{Layout, NoiseBank};
use camera::{encode_jpeg, finish};
use photo::Photo;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use signs::{CropSet, Pictogram};
use sprite::{Placement, Sprite};
use std::path::{Path, PathBuf};

/// A generated frame and the signs in it.
#[derive(Debug, Clone)]
pub struct Scene {
    pub width: u32,
    pub height: u32,
    /// Row-major RGB8, `width * height * 3` bytes.
    pub rgb: Vec<u8>,
    /// Boxes of the visible signs with their GTSRB class (hard negatives are not listed).
    pub truth: Vec<TruthBox>,
}

/// Which data a scene belongs to; the two never share a seed stream, a sign crop or a photo.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    Train,
    Eval,
}

impl Split {
    fn tag(self) -> u8 {
        match self {
            Split::Train => 0x54,
            Split::Eval => 0x45,
        }
    }
}

/// What to generate.
#[derive(Debug, Clone, PartialEq)]
pub struct SceneConfig {
    pub width: u32,
    pub height: u32,
    pub split: Split,
    /// At most this many (truth) signs per frame.
    pub max_signs: usize,
    /// Fraction of frames with no truth sign at all.
    pub empty_fraction: f64,
    /// Long side of a sign in frame pixels, sampled log-uniformly in `[min, max]`.
    pub sign_side_px: (f32, f32),
    /// Chance that a frame also shows a sign with no GTSRB class (not in the truth list).
    pub hard_negative_fraction: f64,
    /// Chance that a sign is partly hidden by a branch or post in front of it.
    pub occlusion_fraction: f64,
    /// Chance that a sign comes from a drawing rather than a photo crop, where its class has a drawing.
    pub pictogram_fraction: f64,
    /// Chance of a photo background when photos were given.
    pub photo_fraction: f64,
    /// Whole-frame JPEG re-encode quality range (inclusive); `None` skips the re-encode.
    pub jpeg_quality: Option<(u8, u8)>,
}

impl Default for SceneConfig {
    fn default() -> Self {
        Self {
            width: 1280,
            height: 960,
            split: Split::Eval,
            max_signs: 4,
            empty_fraction: 0.15,
            sign_side_px: (12.0, 160.0),
            hard_negative_fraction: 0.3,
            occlusion_fraction: 0.15,
            pictogram_fraction: 0.4,
            photo_fraction: 0.35,
            jpeg_quality: Some((55, 90)),
        }
    }
}

/// Why a generator could not be built or a set not written.
#[derive(Debug, thiserror::Error)]
pub enum SynthError {
    #[error(
        "scene size {width}×{height} is too small, at least 64×64 (320×240 or more recommended)"
    )]
    TooSmall { width: u32, height: u32 },
    #[error("scene config: {message}")]
    Config { message: String },
    #[error("{path}: {message}")]
    Io { path: String, message: String },
    #[error("GTSRB data {what}: {image_bytes} image bytes for {labels} labels, expected {expected_image_bytes} (32×32×3 per label)")]
    GtsrbLayout {
        what: String,
        image_bytes: usize,
        labels: usize,
        expected_image_bytes: usize,
    },
    #[error("GTSRB data {what}: label {label} at index {index}, expected a class 0–42")]
    GtsrbLabel {
        what: String,
        index: usize,
        label: u8,
    },
    #[error("GTSRB data {what}: no crop of class {class}, every class 0–42 needs at least one")]
    GtsrbMissingClass { what: String, class: usize },
    #[error("bundled asset {what}: {message}")]
    Asset { what: String, message: String },
    #[error("{path} line {line}: {message}")]
    Csv {
        path: String,
        line: usize,
        message: String,
    },
    #[error("image {path}: {message}")]
    Image { path: String, message: String },
}

/// Generates scenes; cheap to call from several threads (`&self`).
pub struct SceneGenerator {
    config: SceneConfig,
    noise: NoiseBank,
    crops: CropSet,
    pictograms: Vec<Pictogram>,
    /// Pictogram indices per GTSRB class, and of the hard negatives.
    pictograms_by_class: Vec<Vec<usize>>,
    negatives: Vec<usize>,
    photos: Vec<Photo>,
}

impl std::fmt::Debug for SceneGenerator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SceneGenerator")
            .field("config", &self.config)
            .field("pictograms", &self.pictograms.len())
            .field("photos", &self.photos.len())
            .finish()
    }
}

/// Real signs are 0.6–0.9 m across (long side): with the camera this sets how far away a sign of a given
/// pixel size stands.
const SIGN_SIDE_M: (f32, f32) = (0.6, 0.9);

/// Everything a scene is made of before camera effects: used by `generate` and by tests that check where
/// sign pixels went.
struct Composition {
    /// Background with poles, before any sign (tests compare it with `with_signs`).
    #[cfg_attr(not(test), allow(dead_code))]
    background: Vec<u8>,
    with_signs: Vec<u8>,
    truth: Vec<TruthBox>,
    /// Boxes of hard negatives, drawn but not truth.
    #[cfg_attr(not(test), allow(dead_code))]
    negatives: Vec<BoxPx>,
}

impl SceneGenerator {
    /// A generator on the bundled assets (evaluation crops for `Split::Eval`, the disjoint training
    /// remainder for `Split::Train`; use [`SceneGenerator::with_gtsrb`] for real training).
    pub fn new(config: SceneConfig) -> Result<Self, SynthError> {
        if config.width < 64 || config.height < 64 {
            return Err(SynthError::TooSmall {
                width: config.width,
                height: config.height,
            });
        }
        crate::frame::check_frame_size("scene", config.width, config.height).map_err(|e| {
            SynthError::Config {
                message: e.to_string(),
            }
        })?;
        let (min_px, max_px) = config.sign_side_px;
        if !(min_px >= 4.0 && max_px >= min_px) {
            return Err(SynthError::Config {
                message: format!("sign_side_px ({min_px}, {max_px}) must satisfy 4 <= min <= max"),
            });
        }
        if !(0.0..=1.0).contains(&config.empty_fraction) {
            return Err(SynthError::Config {
                message: format!("empty_fraction {} is outside 0–1", config.empty_fraction),
            });
        }
        if let Some((lo, hi)) = config.jpeg_quality {
            if lo == 0 || lo > hi || hi > 100 {
                return Err(SynthError::Config {
                    message: format!("jpeg_quality ({lo}, {hi}) must satisfy 1 <= lo <= hi <= 100"),
                });
            }
        }
        let pictograms = signs::render_pictograms()?;
        let mut pictograms_by_class = vec![Vec::new(); GTSRB_CLASSES];
        let mut negatives = Vec::new();
        for (i, p) in pictograms.iter().enumerate() {
            match p.class_id {
                Some(c) if c < GTSRB_CLASSES => pictograms_by_class[c].push(i),
                _ => negatives.push(i),
            }
        }
        Ok(Self {
            crops: CropSet::bundled(config.split == Split::Eval)?,
            config,
            noise: NoiseBank::new(),
            pictograms,
            pictograms_by_class,
            negatives,
            photos: Vec::new(),
        })
    }

    /// Uses GTSRB crops from raw files (`*_images.u8`, `*_labels.u8`) instead of the bundled sample:
    /// training passes the train files here, so its signs never overlap the evaluation crops.
    pub fn with_gtsrb(mut self, images_u8: &Path, labels_u8: &Path) -> Result<Self, SynthError> {
        self.crops = CropSet::from_files(images_u8, labels_u8)?;
        Ok(self)
    }

    /// Adds photo backgrounds from a scenes `annotations.csv` and its image folder. Photos are split by
    /// position in the sorted file list: every 5th file is evaluation-only, the rest training-only.
    pub fn with_photos(
        mut self,
        annotations_csv: &Path,
        images_dir: &Path,
    ) -> Result<Self, SynthError> {
        let text = std::fs::read_to_string(annotations_csv).map_err(|e| SynthError::Io {
            path: annotations_csv.display().to_string(),
            message: e.to_string(),
        })?;
        let mut by_file: std::collections::BTreeMap<String, Vec<[u32; 4]>> = Default::default();
        for (i, line) in text.lines().enumerate().skip(1) {
            if line.trim().is_empty() {
                continue;
            }
            let fields: Vec<&str> = line.split(',').collect();
            if fields.len() != 9 {
                return Err(SynthError::Csv {
                    path: annotations_csv.display().to_string(),
                    line: i + 1,
                    message: format!(
                        "{} fields, expected 9 (file,width,height,class,gtsrb_class_id,xmin,ymin,xmax,ymax)",
                        fields.len()
                    ),
                });
            }
            let mut b = [0u32; 4];
            for (k, v) in fields[5..9].iter().enumerate() {
                b[k] = v.trim().parse().map_err(|_| SynthError::Csv {
                    path: annotations_csv.display().to_string(),
                    line: i + 1,
                    message: format!("box coordinate `{v}` is not a non-negative integer"),
                })?;
            }
            by_file
                .entry(fields[0].trim().to_string())
                .or_default()
                .push(b);
        }
        let eval = self.config.split == Split::Eval;
        self.photos = by_file
            .into_iter()
            .enumerate()
            .filter(|(i, _)| (i % 5 == 0) == eval)
            .map(|(_, (file, boxes_px))| Photo {
                path: images_dir.join(file),
                boxes_px,
            })
            .collect();
        Ok(self)
    }

    pub fn config(&self) -> &SceneConfig {
        &self.config
    }

    /// The scene for `seed` (same seed, same config and inputs → identical bytes).
    pub fn generate(&self, seed: u64) -> Scene {
        let mut rng = rng_for(self.config.split, seed);
        let composition = self.compose(&mut rng);
        let mut rgb = composition.with_signs;
        finish(
            &mut rng,
            &mut rgb,
            self.config.width,
            self.config.height,
            self.config.jpeg_quality,
        );
        Scene {
            width: self.config.width,
            height: self.config.height,
            rgb,
            truth: composition.truth,
        }
    }

    fn compose(&self, rng: &mut ChaCha8Rng) -> Composition {
        let (width, height) = (self.config.width, self.config.height);
        let mut rgb = vec![0u8; width as usize * height as usize * 3];
        let mut layout = None;
        if !self.photos.is_empty() && rng.random_bool(self.config.photo_fraction.clamp(0.0, 1.0)) {
            let photo = &self.photos[rng.random_range(0..self.photos.len())];
            // An unreadable photo falls back to a procedural background: the run goes on.
            if let Ok(img) = image::open(&photo.path) {
                let img = img.to_rgb8();
                if img.width() >= 8 && img.height() >= 8 {
                    layout = Some(photo::photo(
                        rng,
                        &img,
                        &photo.boxes_px,
                        width,
                        height,
                        &mut rgb,
                    ));
                }
            }
        }
        let layout = match layout {
            Some(l) => l,
            None => background::procedural(rng, &self.noise, width, height, &mut rgb),
        };

        let n_signs = if rng.random_bool(self.config.empty_fraction) {
            0
        } else {
            rng.random_range(1..=self.config.max_signs.max(1))
        };
        let n_negatives =
            usize::from(rng.random_bool(self.config.hard_negative_fraction.clamp(0.0, 1.0)))
                + usize::from(
                    rng.random_bool(self.config.hard_negative_fraction.clamp(0.0, 1.0) * 0.3),
                );

        // Choose every sign first, then draw far to near so nearer poles and signs cover farther ones.
        let mut planned: Vec<PlannedSign> = Vec::new();
        for k in 0..n_signs + n_negatives {
            let negative = k >= n_signs;
            let (sprite, class_id) = if negative {
                if self.negatives.is_empty() {
                    continue;
                }
                let p = &self.pictograms[self.negatives[rng.random_range(0..self.negatives.len())]];
                (SpriteRef::Pictogram(&p.sprite), None)
            } else {
                let class = rng.random_range(0..GTSRB_CLASSES);
                let drawings = &self.pictograms_by_class[class];
                if !drawings.is_empty()
                    && rng.random_bool(self.config.pictogram_fraction.clamp(0.0, 1.0))
                {
                    let p = &self.pictograms[drawings[rng.random_range(0..drawings.len())]];
                    (SpriteRef::Pictogram(&p.sprite), Some(class))
                } else {
                    let count = self.crops.count(class);
                    match self.crops.sprite(class, rng.random_range(0..count.max(1))) {
                        Some(s) => (SpriteRef::Crop(s), Some(class)),
                        None => continue,
                    }
                }
            };
            if let Some(p) = self.place(rng, &layout, sprite, class_id, &planned) {
                planned.push(p);
            }
        }
        planned.sort_by(|a, b| b.depth_m.total_cmp(&a.depth_m));

        let mut truth = Vec::new();
        let mut negatives = Vec::new();
        for p in &planned {
            background::draw_pole(
                &mut rgb,
                width,
                height,
                &background::Pole {
                    centre_x_px: p.pole_x_px,
                    width_px: p.pole_width_px,
                    top_y_px: p.pole_top_y_px,
                    bottom_y_px: p.pole_foot_y_px,
                    colour: p.pole_colour,
                },
            );
        }
        let with_poles = rgb.clone();
        for p in &planned {
            let Some(b) = sprite::paste(&mut rgb, width, height, p.sprite.get(), &p.placement)
            else {
                continue;
            };
            let bbox = BoxPx::new(b[0] as f32, b[1] as f32, b[2] as f32, b[3] as f32);
            if p.occlude {
                draw_occluder(rng, &mut rgb, width, height, &bbox);
            }
            match p.class_id {
                Some(class_id) => truth.push(TruthBox {
                    bbox,
                    class_id: Some(class_id),
                }),
                None => negatives.push(bbox),
            }
        }
        Composition {
            background: with_poles,
            with_signs: rgb,
            truth,
            negatives,
        }
    }

    /// Puts a sign on a pole beside the road at a depth that gives it the sampled pixel size; `None` if no
    /// spot clear of the other signs was found.
    fn place<'a>(
        &self,
        rng: &mut ChaCha8Rng,
        layout: &Layout,
        sprite: SpriteRef<'a>,
        class_id: Option<usize>,
        others: &[PlannedSign<'a>],
    ) -> Option<PlannedSign<'a>> {
        let (w, h) = (self.config.width as f32, self.config.height as f32);
        let (min_px, max_px) = self.config.sign_side_px;
        let max_px = max_px.min(w.min(h) / 3.0).max(min_px);
        let aspect = sprite.get().aspect();
        for _ in 0..12 {
            let side_px = (rng.random_range(min_px.ln()..=max_px.ln())).exp();
            let side_m = rng.random_range(SIGN_SIDE_M.0..SIGN_SIDE_M.1);
            let depth_m = layout.focal_px * side_m / side_px;
            let right = rng.random_bool(0.7);
            let mut lateral_m = if right {
                layout.road_right_m + rng.random_range(0.3..2.5)
            } else {
                layout.road_left_m - rng.random_range(0.3..2.5)
            };
            // Signs stand between the road and the walls/trees beside it.
            lateral_m = lateral_m.clamp(
                layout.structure_left_m + 0.5,
                layout.structure_right_m - 0.5,
            );
            let height_m = rng.random_range(1.8..3.2);
            let (sign_w_px, sign_h_px) = if aspect >= 1.0 {
                (side_px, side_px / aspect)
            } else {
                (side_px * aspect, side_px)
            };
            let (mut cx, cy) = layout.project(lateral_m, height_m, depth_m);
            // Near signs project off-frame on a wide road: slide them in as if the road were narrower.
            let margin = sign_w_px * 0.5 + 2.0;
            if cx < margin || cx > w - margin {
                cx = cx.clamp(margin, (w - margin).max(margin));
                lateral_m = (cx - layout.vanishing_x_px) * depth_m / layout.focal_px;
            }
            let (_, foot_y) = layout.project(lateral_m, 0.0, depth_m);
            if cy - sign_h_px * 0.5 < 1.0 || cy + sign_h_px * 0.5 > h - 1.0 {
                continue;
            }
            let bbox = BoxPx::new(
                cx - sign_w_px * 0.5,
                cy - sign_h_px * 0.5,
                cx + sign_w_px * 0.5,
                cy + sign_h_px * 0.5,
            );
            let grown = grow(&bbox, 0.25);
            if others
                .iter()
                .any(|o| grow(&o.nominal, 0.25).iou(&grown) > 0.0)
            {
                continue;
            }
            let yaw = rng.random_range(-0.35f32..0.35);
            let squeeze = yaw.cos();
            let keystone = yaw.sin() * 0.15;
            let roll = rng.random_range(-0.07f32..0.07);
            let (hw, hh) = (sign_w_px * 0.5 * squeeze, sign_h_px * 0.5);
            let corners_local = [
                (-hw, -hh * (1.0 - keystone)),
                (hw, -hh * (1.0 + keystone)),
                (hw, hh * (1.0 + keystone)),
                (-hw, hh * (1.0 - keystone)),
            ];
            let (sin, cos) = roll.sin_cos();
            let corners_frame_px =
                corners_local.map(|(x, y)| (cx + x * cos - y * sin, cy + x * sin + y * cos));
            let shade = rng.random_range(0.65f32..1.15);
            let pole_width_px = (layout.focal_px * 0.07 / depth_m).max(1.0);
            let grey = rng.random_range(90.0f32..170.0);
            return Some(PlannedSign {
                sprite,
                class_id,
                depth_m,
                nominal: bbox,
                placement: Placement {
                    corners_frame_px,
                    gain: shade,
                    offset: rng.random_range(-10.0..20.0),
                    blur_levels: if rng.random_bool(0.3) {
                        rng.random_range(0.3..1.3)
                    } else {
                        0.0
                    },
                },
                occlude: rng.random_bool(self.config.occlusion_fraction.clamp(0.0, 1.0)),
                pole_x_px: cx,
                pole_width_px,
                pole_top_y_px: cy,
                pole_foot_y_px: foot_y.min(h + 1.0),
                pole_colour: [grey, grey, grey * 1.03],
            });
        }
        None
    }

    /// Writes `count` scenes as `NNNN.jpg` (quality 92, numbered from 1) and one `annotations.csv` in the
    /// scenes format (`file,width,height,class,gtsrb_class_id,xmin,ymin,xmax,ymax`, inclusive corners,
    /// class = GTSRB class name), seeds `first_seed..first_seed + count`.
    pub fn write_annotated_set(
        &self,
        dir: &Path,
        count: u64,
        first_seed: u64,
    ) -> Result<(), SynthError> {
        let io = |path: &Path, e: std::io::Error| SynthError::Io {
            path: path.display().to_string(),
            message: e.to_string(),
        };
        std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
        let names = gtsrb_class_names();
        let mut csv = String::from("file,width,height,class,gtsrb_class_id,xmin,ymin,xmax,ymax\n");
        for i in 0..count {
            let scene = self.generate(first_seed.wrapping_add(i));
            let file = format!("{:04}.jpg", i + 1);
            let path: PathBuf = dir.join(&file);
            let jpeg = encode_jpeg(&scene.rgb, scene.width, scene.height, 92).map_err(|e| {
                SynthError::Image {
                    path: path.display().to_string(),
                    message: e.to_string(),
                }
            })?;
            std::fs::write(&path, jpeg).map_err(|e| io(&path, e))?;
            for t in &scene.truth {
                let class_id = t.class_id.unwrap_or(0);
                let name = names.get(class_id).map_or("unknown", String::as_str);
                let b = &t.bbox;
                csv.push_str(&format!(
                    "{file},{},{},{name},{class_id},{},{},{},{}\n",
                    scene.width,
                    scene.height,
                    b.xmin.floor() as i64,
                    b.ymin.floor() as i64,
                    (b.xmax.ceil() as i64 - 1).max(b.xmin.floor() as i64),
                    (b.ymax.ceil() as i64 - 1).max(b.ymin.floor() as i64),
                ));
            }
        }
        let csv_path = dir.join("annotations.csv");
        std::fs::write(&csv_path, csv).map_err(|e| io(&csv_path, e))
    }
}

/// A sign's image: borrowed from the drawing cache or built for this frame from a crop.
enum SpriteRef<'a> {
    Pictogram(&'a Sprite),
    Crop(Sprite),
}

impl SpriteRef<'_> {
    fn get(&self) -> &Sprite {
        match self {
            SpriteRef::Pictogram(s) => s,
            SpriteRef::Crop(s) => s,
        }
    }
}

struct PlannedSign<'a> {
    sprite: SpriteRef<'a>,
    class_id: Option<usize>,
    depth_m: f32,
    nominal: BoxPx,
    placement: Placement,
    occlude: bool,
    pole_x_px: f32,
    pole_width_px: f32,
    pole_top_y_px: f32,
    pole_foot_y_px: f32,
    pole_colour: [f32; 3],
}

fn grow(b: &BoxPx, fraction: f32) -> BoxPx {
    let (dx, dy) = (b.width() * fraction, b.height() * fraction);
    BoxPx::new(b.xmin - dx, b.ymin - dy, b.xmax + dx, b.ymax + dy)
}

/// The RNG of one scene: the split is part of the ChaCha key, so train and eval streams never coincide,
/// whatever the seeds.
fn rng_for(split: Split, seed: u64) -> ChaCha8Rng {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    key[8] = split.tag();
    key[9..16].copy_from_slice(b"saccade");
    ChaCha8Rng::from_seed(key)
}

/// A branch or a thin post in front of part of a sign (inside the sign's box, never more than about a third).
fn draw_occluder(rng: &mut ChaCha8Rng, rgb: &mut [u8], width: u32, height: u32, b: &BoxPx) {
    let size = b.width().max(b.height());
    let (cx, cy) = b.centre();
    let branch = rng.random_bool(0.6);
    let colour: [f32; 3] = if branch {
        [
            rng.random_range(40.0..70.0),
            rng.random_range(45.0..80.0),
            30.0,
        ]
    } else {
        let g = rng.random_range(70.0..150.0);
        [g, g, g]
    };
    let angle: f32 = if branch {
        rng.random_range(-0.8f32..0.8)
    } else {
        std::f32::consts::FRAC_PI_2 + rng.random_range(-0.05f32..0.05)
    };
    let (dir_x, dir_y) = (angle.cos(), angle.sin());
    // The line passes off-centre so most of the sign stays visible.
    let offset =
        size * rng.random_range(0.25..0.42) * if rng.random_bool(0.5) { 1.0 } else { -1.0 };
    let (ox, oy) = (cx - dir_y * offset, cy + dir_x * offset);
    let half_thickness = (size * rng.random_range(0.04..0.1)).max(0.7);
    let x0 = b.xmin.floor().max(0.0) as u32;
    let x1 = (b.xmax.ceil().max(0.0) as u32).min(width);
    let y0 = b.ymin.floor().max(0.0) as u32;
    let y1 = (b.ymax.ceil().max(0.0) as u32).min(height);
    for y in y0..y1 {
        for x in x0..x1 {
            let (px, py) = (x as f32 + 0.5 - ox, y as f32 + 0.5 - oy);
            let distance = (px * dir_y - py * dir_x).abs();
            let mut cover = (half_thickness - distance + 0.5).clamp(0.0, 1.0);
            if branch {
                // Leaves: a ragged fringe along the branch.
                let along = px * dir_x + py * dir_y;
                let ragged = ((along * 0.9).sin() * 0.5 + 0.5) * half_thickness * 1.5;
                cover = cover.max((half_thickness + ragged - distance).clamp(0.0, 1.0) * 0.9);
            }
            if cover <= 0.0 {
                continue;
            }
            let i = (y as usize * width as usize + x as usize) * 3;
            for k in 0..3 {
                let v = rgb[i + k] as f32 * (1.0 - cover) + colour[k] * cover;
                rgb[i + k] = v.clamp(0.0, 255.0) as u8;
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
