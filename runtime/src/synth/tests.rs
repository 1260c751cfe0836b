//! Specifications of the scene generator: determinism, truth boxes that match the pixels, disjoint splits,
//! the empty-frame rate, odd sizes, photo backgrounds and the annotated-set writer.

use super::*;

fn small(split: Split) -> SceneConfig {
    SceneConfig {
        width: 320,
        height: 240,
        split,
        sign_side_px: (10.0, 60.0),
        ..SceneConfig::default()
    }
}

#[test]
fn same_seed_gives_identical_bytes_and_different_seeds_differ() {
    let generator = SceneGenerator::new(small(Split::Eval)).unwrap();
    let a = generator.generate(7);
    let b = generator.generate(7);
    let c = generator.generate(8);
    assert_eq!(a.rgb, b.rgb);
    assert_eq!(a.truth, b.truth);
    assert_ne!(a.rgb, c.rgb);
    assert_eq!(a.rgb.len(), 320 * 240 * 3);
}

#[test]
fn train_and_eval_never_share_a_seed_stream() {
    let train = SceneGenerator::new(small(Split::Train)).unwrap();
    let eval = SceneGenerator::new(small(Split::Eval)).unwrap();
    for seed in 0..4 {
        assert_ne!(
            train.generate(seed).rgb,
            eval.generate(seed).rgb,
            "seed {seed}"
        );
    }
    let mut first_words = std::collections::HashSet::new();
    for seed in 0..200u64 {
        for split in [Split::Train, Split::Eval] {
            let word: u64 = rng_for(split, seed).random();
            assert!(
                first_words.insert(word),
                "{split:?} seed {seed} repeats a stream"
            );
        }
    }
}

#[test]
fn truth_boxes_lie_inside_the_frame_and_cover_the_changed_pixels() {
    let generator = SceneGenerator::new(SceneConfig {
        occlusion_fraction: 0.0,
        ..small(Split::Eval)
    })
    .unwrap();
    let (w, h) = (320usize, 240usize);
    let mut signs_seen = 0;
    for seed in 0..40 {
        let mut rng = rng_for(Split::Eval, seed);
        let c = generator.compose(&mut rng);
        let boxes: Vec<BoxPx> = c
            .truth
            .iter()
            .map(|t| t.bbox)
            .chain(c.negatives.iter().copied())
            .collect();
        for t in &c.truth {
            let b = t.bbox;
            assert!(
                b.xmin >= 0.0 && b.ymin >= 0.0 && b.xmax <= w as f32 && b.ymax <= h as f32,
                "{b:?}"
            );
            assert!(b.width() >= 4.0 && b.height() >= 4.0, "{b:?}");
            assert!(t.class_id.is_some_and(|c| c < GTSRB_CLASSES));
            let mut changed = 0usize;
            for y in b.ymin as usize..b.ymax as usize {
                for x in b.xmin as usize..b.xmax as usize {
                    let i = (y * w + x) * 3;
                    changed += usize::from(c.background[i..i + 3] != c.with_signs[i..i + 3]);
                }
            }
            assert!(
                changed as f32 >= 0.3 * b.area(),
                "seed {seed}: {changed} px changed in {b:?}"
            );
            signs_seen += 1;
        }
        for y in 0..h {
            for x in 0..w {
                let i = (y * w + x) * 3;
                // A blurred sign leaves a faint halo beyond its half-coverage box; a real change is not faint.
                let strong = (0..3).any(|k| c.background[i + k].abs_diff(c.with_signs[i + k]) > 32);
                if strong {
                    let (xf, yf) = (x as f32 + 0.5, y as f32 + 0.5);
                    let inside = boxes.iter().any(|b| {
                        xf >= b.xmin - 1.5
                            && xf <= b.xmax + 1.5
                            && yf >= b.ymin - 1.5
                            && yf <= b.ymax + 1.5
                    });
                    assert!(
                        inside,
                        "seed {seed}: pixel ({x},{y}) changed outside every sign box {boxes:?}"
                    );
                }
            }
        }
    }
    assert!(signs_seen > 40, "only {signs_seen} signs in 40 frames");
}

#[test]
fn empty_frames_come_at_roughly_the_configured_rate() {
    let generator = SceneGenerator::new(SceneConfig {
        empty_fraction: 0.3,
        ..small(Split::Eval)
    })
    .unwrap();
    let n = 120;
    let empty = (0..n)
        .filter(|&seed| {
            generator
                .compose(&mut rng_for(Split::Eval, seed))
                .truth
                .is_empty()
        })
        .count();
    let rate = empty as f64 / n as f64;
    assert!(
        (0.18..0.45).contains(&rate),
        "empty rate {rate}, configured 0.3"
    );
}

#[test]
fn full_hd_frames_have_signs_of_the_configured_sizes() {
    let generator = SceneGenerator::new(SceneConfig {
        width: 1920,
        height: 1080,
        ..SceneConfig::default()
    })
    .unwrap();
    let mut sides = Vec::new();
    for seed in 0..3 {
        let scene = generator.generate(seed);
        assert_eq!(scene.rgb.len(), 1920 * 1080 * 3);
        for t in &scene.truth {
            assert!(t.bbox.xmax <= 1920.0 && t.bbox.ymax <= 1080.0);
            sides.push(t.bbox.width().max(t.bbox.height()));
        }
    }
    assert!(!sides.is_empty());
    assert!(
        sides.iter().all(|&s| (6.0..=175.0).contains(&s)),
        "{sides:?}"
    );
}

#[test]
fn too_small_or_inconsistent_configs_are_refused() {
    let err = SceneGenerator::new(SceneConfig {
        width: 32,
        ..SceneConfig::default()
    })
    .unwrap_err();
    assert!(err.to_string().contains("32×960"), "{err}");
    assert!(SceneGenerator::new(SceneConfig {
        sign_side_px: (50.0, 20.0),
        ..SceneConfig::default()
    })
    .is_err());
    let err = SceneGenerator::new(SceneConfig {
        width: 100_000,
        height: 100_000,
        ..SceneConfig::default()
    })
    .unwrap_err();
    assert!(err.to_string().contains("100000×100000"), "{err}");
}

#[test]
fn photo_backgrounds_paint_out_the_annotated_sign() {
    let dir = tempfile::tempdir().unwrap();
    let mut img = image::RgbImage::from_pixel(120, 90, image::Rgb([90, 110, 90]));
    for y in 30..60 {
        for x in 40..70 {
            img.put_pixel(x, y, image::Rgb([240, 10, 10]));
        }
    }
    img.save(dir.path().join("road0.jpg")).unwrap();
    let csv = dir.path().join("annotations.csv");
    std::fs::write(
        &csv,
        "file,width,height,class,gtsrb_class_id,xmin,ymin,xmax,ymax\nroad0.jpg,120,90,stop,14,40,30,69,59\n",
    )
    .unwrap();
    // One photo sits at position 0 of the sorted list: an evaluation photo.
    let generator = SceneGenerator::new(SceneConfig {
        photo_fraction: 1.0,
        empty_fraction: 1.0,
        hard_negative_fraction: 0.0,
        jpeg_quality: None,
        ..small(Split::Eval)
    })
    .unwrap()
    .with_photos(&csv, dir.path())
    .unwrap();
    assert_eq!(generator.photos.len(), 1);
    let scene = generator.generate(1);
    assert!(scene.truth.is_empty());
    let red = scene
        .rgb
        .chunks(3)
        .filter(|p| p[0] > 170 && p[1] < 80 && p[2] < 80)
        .count();
    assert_eq!(red, 0, "the photo's sign must be painted out");
    let mean_green = scene.rgb.chunks(3).map(|p| p[1] as f64).sum::<f64>() / (320.0 * 240.0);
    assert!(
        (70.0..150.0).contains(&mean_green),
        "background is not the photo: mean green {mean_green}"
    );

    let train = SceneGenerator::new(small(Split::Train))
        .unwrap()
        .with_photos(&csv, dir.path())
        .unwrap();
    assert!(
        train.photos.is_empty(),
        "an evaluation photo leaked into training"
    );
}

#[test]
fn bad_photo_csv_names_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("a.csv");
    std::fs::write(&csv, "header\nroad0.jpg,1,2,stop,14,a,b,c,d\n").unwrap();
    let err = SceneGenerator::new(small(Split::Eval))
        .unwrap()
        .with_photos(&csv, dir.path())
        .unwrap_err();
    assert!(err.to_string().contains("line 2"), "{err}");
}

#[test]
fn annotated_set_has_one_jpeg_per_scene_and_rows_for_its_signs() {
    let dir = tempfile::tempdir().unwrap();
    let generator = SceneGenerator::new(small(Split::Eval)).unwrap();
    generator.write_annotated_set(dir.path(), 3, 100).unwrap();
    let names = gtsrb_class_names();
    let csv = std::fs::read_to_string(dir.path().join("annotations.csv")).unwrap();
    let rows: Vec<&str> = csv.lines().skip(1).collect();
    let expected: usize = (0..3)
        .map(|i| generator.generate(100 + i).truth.len())
        .sum();
    assert_eq!(rows.len(), expected);
    for row in rows {
        let f: Vec<&str> = row.split(',').collect();
        assert_eq!(f.len(), 9);
        let id: usize = f[4].parse().unwrap();
        assert_eq!(f[3], names[id]);
        let xmax: u32 = f[7].parse().unwrap();
        assert!(xmax < 320);
    }
    for i in 1..=3 {
        let img = image::open(dir.path().join(format!("{i:04}.jpg"))).unwrap();
        assert_eq!((img.width(), img.height()), (320, 240));
    }
}

/// Writes the eight synthetic scenes the demo used before it ran on real frames (seeds 1001–1008) into
/// `$SYNTH_SAMPLES_DIR` (default: a `synthetic-samples` folder in the system's temp dir), never into
/// `tools/samples/`, which holds the real GTSDB demo frames:
/// `cargo test -p saccade-runtime --release --lib synth::tests::write_demo_samples -- --ignored`
#[test]
#[ignore]
fn write_demo_samples() {
    let out = std::env::var_os("SYNTH_SAMPLES_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("synthetic-samples"));
    std::fs::create_dir_all(&out).unwrap();
    let generator = SceneGenerator::new(SceneConfig::default()).unwrap();
    generator
        .write_annotated_set(&out, 8, DEMO_FIRST_SEED)
        .unwrap();
}

/// Writes the three examples of `docs/synthetic/` (demo seeds 1001, 1004, 1007 at 640×480) and, when
/// `$SYNTH_PREVIEW_DIR` is set, full-size PNGs of the eight demo scenes there:
/// `cargo test -p saccade-runtime --lib synth::tests::write_docs_examples -- --ignored`
#[test]
#[ignore]
fn write_docs_examples() {
    let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/synthetic");
    std::fs::create_dir_all(&docs).unwrap();
    let generator = SceneGenerator::new(SceneConfig::default()).unwrap();
    let preview = std::env::var("SYNTH_PREVIEW_DIR").ok();
    for k in 0..8u64 {
        let seed = DEMO_FIRST_SEED + k;
        let s = generator.generate(seed);
        let img = image::RgbImage::from_raw(s.width, s.height, s.rgb).unwrap();
        if let Some(dir) = &preview {
            img.save(Path::new(dir).join(format!("demo_{seed}.png")))
                .unwrap();
        }
        if k % 3 == 0 {
            let small =
                image::imageops::resize(&img, 640, 480, image::imageops::FilterType::Triangle);
            let jpeg = encode_jpeg(small.as_raw(), 640, 480, 88).unwrap();
            std::fs::write(docs.join(format!("example_{seed}.jpg")), jpeg).unwrap();
        }
    }
}

/// Writes PNGs of a few scenes to `$SYNTH_PREVIEW_DIR` for looking at them.
#[test]
#[ignore]
fn write_previews() {
    let Ok(dir) = std::env::var("SYNTH_PREVIEW_DIR") else {
        return;
    };
    let generator = SceneGenerator::new(SceneConfig::default()).unwrap();
    for seed in 0..6 {
        let s = generator.generate(seed);
        image::RgbImage::from_raw(s.width, s.height, s.rgb)
            .unwrap()
            .save(Path::new(&dir).join(format!("scene_{seed}.png")))
            .unwrap();
        eprintln!("seed {seed}: {:?}", s.truth);
    }
}

/// Prints the time to generate one 1280×960 scene:
/// `cargo test -p saccade-runtime --release --lib synth::tests::time_generation -- --ignored --nocapture`
#[test]
#[ignore]
fn time_generation() {
    let started = std::time::Instant::now();
    let generator = SceneGenerator::new(SceneConfig::default()).unwrap();
    eprintln!(
        "generator start (pictograms rendered): {:.1} ms",
        started.elapsed().as_secs_f64() * 1e3
    );
    let mut times_ms = Vec::new();
    for seed in 0..20 {
        let t = std::time::Instant::now();
        let scene = generator.generate(seed);
        times_ms.push(t.elapsed().as_secs_f64() * 1e3);
        assert_eq!(scene.rgb.len(), 1280 * 960 * 3);
    }
    times_ms.sort_by(f64::total_cmp);
    eprintln!(
        "1280×960 scene: median {:.1} ms, max {:.1} ms over 20 seeds",
        times_ms[10], times_ms[19]
    );
}

const DEMO_FIRST_SEED: u64 = 1001;
