//! Tests of the evaluation: annotations, matching into reports, sweeps, intervals, misses, GTSRB.
#![allow(clippy::unwrap_used)]

use super::*;
use crate::cmd::eval::{eval, EvalArgs};
use crate::cmd::eval_classifier::{eval_classifier, EvalClassifierArgs};
use std::collections::HashSet;
use std::path::{Path, PathBuf};

use candle_core::Device;
use saccade_models::patchnet::PatchNet;
use saccade_runtime::frame::{BoxPx, Frame};
use saccade_runtime::metrics::PipelineMetrics;

use crate::engine::StrategyArgs;
use crate::matching::{tally_frame, DetectionEntry, SizeBucket, Tally, TruthEntry};

const HEADER: &str = "file,width,height,class,gtsrb_class_id,xmin,ymin,xmax,ymax\n";

fn counts(tp: u64, fp: u64, fn_: u64) -> crate::matching::Counts {
    crate::matching::Counts {
        tp,
        fp,
        fn_,
        ..Default::default()
    }
}

#[test]
fn bootstrap_intervals_hold_the_point_estimate_and_narrow_with_more_frames() {
    // Frames alternate between a found sign and a missed one: recall 0.5 overall.
    let frames = |n: usize| -> Vec<_> {
        (0..n)
            .map(|i| {
                if i % 2 == 0 {
                    counts(1, 0, 0)
                } else {
                    counts(0, 1, 1)
                }
            })
            .collect()
    };
    let few = bootstrap_intervals(&frames(10), BOOTSTRAP_RESAMPLES);
    let many = bootstrap_intervals(&frames(400), BOOTSTRAP_RESAMPLES);
    for ci in [few, many] {
        assert!(ci.recall[0] <= 0.5 && 0.5 <= ci.recall[1], "{ci:?}");
        assert!(ci.precision[0] <= 0.5 && 0.5 <= ci.precision[1], "{ci:?}");
        assert!(ci.f1[0] <= ci.f1[1]);
    }
    let width = |ci: Intervals95| ci.recall[1] - ci.recall[0];
    assert!(width(many) < width(few) / 3.0, "{few:?} vs {many:?}");
    assert!(width(few) > 0.2, "{few:?}");
    // Reproducible: a fixed seed.
    assert_eq!(few, bootstrap_intervals(&frames(10), BOOTSTRAP_RESAMPLES));
    // Identical frames leave no uncertainty; no frames give zero-count scores, not a panic.
    let same = bootstrap_intervals(&[counts(2, 1, 1); 5], 200);
    assert_eq!(same.recall, [0.667, 0.667]);
    assert_eq!(bootstrap_intervals(&[], 200).resamples, 0);
}

#[test]
fn annotations_parse_with_inclusive_corners_and_empty_class_id() {
    let text =
        format!("{HEADER}a.jpg,400,300,speedlimit,,10,20,29,39\nb.jpg,400,300,stop,14,0,0,0,0\n");
    let rows = parse_annotations(&text, Path::new("ann.csv")).unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].gtsrb_class_id, None);
    assert_eq!(rows[0].bbox, BoxPx::new(10.0, 20.0, 30.0, 40.0));
    assert_eq!(rows[1].gtsrb_class_id, Some(14));
    assert_eq!(rows[1].bbox.area(), 1.0);
}

#[test]
fn annotation_errors_name_file_line_column_and_value() {
    let text = format!("{HEADER}a.jpg,400,300,stop,14,0,0,5,5\na.jpg,400,300,stop,14,x1,0,5,5\n");
    let err = parse_annotations(&text, Path::new("ann.csv"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("ann.csv line 3, column `xmin`: `x1`"), "{err}");
    let err = parse_annotations(
        &format!("{HEADER}a.jpg,400,300,stop,99,0,0,5,5\n"),
        Path::new("ann.csv"),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("column `gtsrb_class_id`: `99`"), "{err}");
    let err = parse_annotations("file,width\n", Path::new("ann.csv"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("no column `height`"), "{err}");
    let err = parse_annotations(
        &format!("{HEADER}a.jpg,400,300,stop\n"),
        Path::new("ann.csv"),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("line 2: 4 fields, expected 9"), "{err}");
}

#[test]
fn folder_items_include_frames_without_boxes_and_reject_missing_files() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["f10.png", "f2.png"] {
        image::RgbImage::new(8, 6)
            .save(dir.path().join(name))
            .unwrap();
    }
    let text = format!("{HEADER}f10.png,8,6,stop,14,0,0,3,3\n");
    let rows = parse_annotations(&text, Path::new("a.csv")).unwrap();
    let items = items_from_folder(dir.path(), &rows).unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(items[0].name, "f2.png");
    assert!(items[0].truth.is_empty());
    assert_eq!(items[1].truth.len(), 1);
    let text = format!("{HEADER}missing.png,8,6,stop,14,0,0,3,3\n");
    let rows = parse_annotations(&text, Path::new("a.csv")).unwrap();
    let err = items_from_folder(dir.path(), &rows)
        .unwrap_err()
        .to_string();
    assert!(err.contains("missing.png"), "{err}");
}

#[test]
fn frame_size_must_match_its_annotations() {
    let dir = tempfile::tempdir().unwrap();
    image::RgbImage::new(8, 6)
        .save(dir.path().join("a.png"))
        .unwrap();
    let text = format!("{HEADER}a.png,16,6,stop,14,0,0,3,3\n");
    let rows = parse_annotations(&text, Path::new("a.csv")).unwrap();
    let items = items_from_folder(dir.path(), &rows).unwrap();
    let err = load_frame(0, &items[0]).unwrap_err().to_string();
    assert!(
        err.contains("is 8×6, but its annotations say 16×6"),
        "{err}"
    );
}

#[test]
fn gtsrb_set_rejects_bad_sizes_and_labels() {
    assert!(GtsrbTest::from_bytes(vec![0; 3072 * 2], vec![1, 2]).is_ok());
    let err = GtsrbTest::from_bytes(vec![0; 3071], vec![1])
        .unwrap_err()
        .to_string();
    assert!(err.contains("3071 bytes"), "{err}");
    let err = GtsrbTest::from_bytes(vec![0; 3072], vec![1, 2])
        .unwrap_err()
        .to_string();
    assert!(err.contains("2 labels for 1 images"), "{err}");
    let err = GtsrbTest::from_bytes(vec![0; 3072], vec![43])
        .unwrap_err()
        .to_string();
    assert!(err.contains("label 0 is 43"), "{err}");
}

#[test]
fn gtsrb_chw_keeps_pixels_at_native_side_and_resamples_otherwise() {
    let mut images = vec![0u8; 3072];
    images[0] = 255; // red of pixel (0, 0)
    images[3071] = 51; // blue of pixel (31, 31)
    let set = GtsrbTest::from_bytes(images, vec![0]).unwrap();
    let mut out = Vec::new();
    gtsrb_chw(&set, 0, 32, &mut out);
    assert_eq!(out.len(), 3 * 1024);
    assert_eq!(out[0], 1.0);
    assert!((out[2 * 1024 + 1023] - 0.2).abs() < 1e-6);
    let mut out = Vec::new();
    gtsrb_chw(&set, 0, 16, &mut out);
    assert_eq!(out.len(), 3 * 256);
    assert!(out.iter().all(|v| (0.0..=1.0).contains(v)));
}

#[test]
fn report_counts_signs_per_size_bucket_and_tells_glance_from_focus_misses() {
    // Inclusive CSV corners: 0..=30 is a 31 px (small) sign, 100..=131 a 32 px (medium) one, 200..=299 a
    // 100 px (large) one; the traffic light is ignored.
    let text = format!(
        "{HEADER}a.png,400,300,stop,14,0,0,30,30\na.png,400,300,stop,14,100,100,131,110\n\
         a.png,400,300,yield,13,200,100,299,150\na.png,400,300,trafficlight,,0,200,9,209\n"
    );
    let rows = parse_annotations(&text, Path::new("a.csv")).unwrap();
    let truth: Vec<TruthEntry> = rows
        .iter()
        .map(|r| TruthEntry {
            bbox: r.bbox,
            class_name: r.class.clone(),
            class_id: r.gtsrb_class_id,
        })
        .collect();
    let buckets: Vec<SizeBucket> = truth.iter().map(|t| SizeBucket::of_box(&t.bbox)).collect();
    assert_eq!(
        buckets[..3],
        [SizeBucket::Small, SizeBucket::Medium, SizeBucket::Large]
    );
    // Focus looks at the small sign (and misses it) and at the large one (and finds it); the medium sign
    // is never looked at.
    let patches = [
        BoxPx::new(0.0, 0.0, 64.0, 64.0),
        BoxPx::new(224.0, 96.0, 288.0, 160.0),
    ];
    let detections = [
        DetectionEntry {
            bbox: BoxPx::new(200.0, 100.0, 300.0, 151.0),
            score: 0.9,
            class_id: 13,
            class_name: "yield".to_string(),
        },
        DetectionEntry {
            bbox: BoxPx::new(0.0, 200.0, 10.0, 210.0),
            score: 0.8,
            class_id: 26,
            class_name: "traffic signals".to_string(),
        },
    ];
    let ignored: HashSet<String> = ["trafficlight".to_string()].into();
    let tally = tally_frame(&truth, &detections, &patches, &ignored);
    let report = build_report(
        "topk",
        &PipelineMetrics::default(),
        &tally,
        Vec::new(),
        bootstrap_intervals(&[tally.overall], 1),
        0.0,
        0.0,
    );
    assert_eq!((report.tp, report.fp, report.fn_), (1, 0, 2));
    assert_eq!(report.signs, 3);
    assert_eq!(report.looked_at, 2);
    assert_eq!(report.looked_at_share, Some(0.667));
    assert_eq!(report.found_when_looked_at, 1);
    let v = serde_json::to_value(&report).unwrap();
    let expect = |bucket: &str, counts: [u64; 4], recall: f64, share: f64| {
        let b = &v["by_size"][bucket];
        let got =
            ["signs", "found", "looked_at", "found_when_looked_at"].map(|k| b[k].as_u64().unwrap());
        assert_eq!(got, counts, "{bucket}: {b}");
        assert_eq!(b["recall"].as_f64(), Some(recall), "{bucket}: {b}");
        assert_eq!(b["looked_at_share"].as_f64(), Some(share), "{bucket}: {b}");
    };
    expect("small", [1, 0, 1, 0], 0.0, 1.0);
    expect("medium", [1, 0, 0, 0], 0.0, 0.0);
    expect("large", [1, 1, 1, 1], 1.0, 1.0);
    let human = report.human();
    assert!(
        human.contains("glance misses 1 (not looked at, not found), focus misses 1"),
        "{human}"
    );
    for row in ["small <32", "medium 32–96", "large >96", "all"] {
        assert!(human.contains(row), "no row `{row}` in {human}");
    }
}

#[test]
fn report_without_signs_has_no_rates_for_them() {
    let report = build_report(
        "topk",
        &PipelineMetrics::default(),
        &Tally::default(),
        Vec::new(),
        bootstrap_intervals(&[], 1),
        0.0,
        0.0,
    );
    let v = serde_json::to_value(&report).unwrap();
    assert_eq!(v["signs"], 0);
    assert!(v["looked_at_share"].is_null(), "{v}");
    for bucket in ["small", "medium", "large"] {
        assert!(v["by_size"][bucket]["recall"].is_null(), "{v}");
        assert!(v["by_size"][bucket]["looked_at_share"].is_null(), "{v}");
    }
}

/// Two small frames of different sizes, one annotated, one not.
pub(crate) fn small_annotated_folder(dir: &Path) -> (PathBuf, PathBuf) {
    let images = dir.join("frames");
    std::fs::create_dir_all(&images).unwrap();
    let mut a = image::RgbImage::from_pixel(96, 64, image::Rgb([90, 120, 90]));
    for y in 10..26 {
        for x in 30..46 {
            a.put_pixel(x, y, image::Rgb([220, 20, 20]));
        }
    }
    a.save(images.join("a.png")).unwrap();
    image::RgbImage::from_pixel(80, 80, image::Rgb([40, 40, 40]))
        .save(images.join("b.png"))
        .unwrap();
    let csv = dir.join("ann.csv");
    std::fs::write(
        &csv,
        format!("{HEADER}a.png,96,64,stop,14,30,10,45,25\na.png,96,64,trafficlight,,0,0,5,5\n"),
    )
    .unwrap();
    (images, csv)
}

#[test]
fn rescaled_frames_keep_their_boxes_on_the_same_pixels() {
    let (w, h) = (40u32, 20u32);
    let mut rgb = vec![10u8; (w * h * 3) as usize];
    for y in 4..10 {
        for x in 20..30 {
            rgb[((y * w + x) * 3) as usize] = 250;
        }
    }
    let frame = Frame::from_rgb(3, w, h, rgb).unwrap();
    let truth = vec![TruthEntry {
        bbox: BoxPx::new(20.0, 4.0, 30.0, 10.0),
        class_name: "stop".into(),
        class_id: Some(14),
    }];
    let (big, t) = rescale_frame(frame, &truth, 80, 50).unwrap();
    assert_eq!((big.width, big.height, big.index), (80, 50, 3));
    let b = t[0].bbox;
    assert_eq!(b.to_array(), [40.0, 10.0, 60.0, 25.0]);
    let (cx, cy) = b.centre();
    assert!(big.pixel(cx as u32, cy as u32)[0] > 200);
    assert!(big.pixel(5, 5)[0] < 50);
}

#[test]
fn eval_runs_real_nets_on_frames_of_any_size_and_writes_stable_json_keys() {
    let dir = tempfile::tempdir().unwrap();
    let models = write_random_models(dir.path());
    let (images, annotations) = small_annotated_folder(dir.path());
    let json = dir.path().join("eval.json");
    eval(EvalArgs {
        images,
        annotations,
        json: Some(json.display().to_string()),
        ignore_classes: vec!["trafficlight".to_string()],
        split: EvalSplit::All,
        strategy_config: None,
        sweep: false,
        rescale: None,
        limit: None,
        misses: None,
        strategy: StrategyArgs {
            strategy: saccade_runtime::focus::StrategyKind::TopK,
            max_patches: 8,
            deadline_ms: None,
        },
        models,
    })
    .unwrap();
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap();
    for key in [
        "strategy",
        "frames",
        "precision",
        "recall",
        "f1",
        "class_accuracy",
        "p50_ms",
        "p99_ms",
        "patches_per_frame",
        "pixel_fraction",
        "mflops_per_frame",
        "early_exit_rate",
        "peak_rss_mb",
        "stages",
        "per_class",
        "signs",
        "looked_at",
        "looked_at_share",
        "found_when_looked_at",
        "by_size",
        "split",
        "strategy_config",
        "strategy_settings",
        "score_sweep",
        "best_f1",
    ] {
        assert!(v.get(key).is_some(), "missing {key} in {v}");
    }
    // One stop sign (16 px, small) counts; the ignored traffic light does not.
    assert_eq!(v["signs"], 1);
    assert_eq!(v["by_size"]["small"]["signs"], 1);
    assert_eq!(v["by_size"]["medium"]["signs"], 0);
    assert_eq!(v["by_size"]["large"]["signs"], 0);
    let small = &v["by_size"]["small"];
    for key in ["found", "looked_at", "found_when_looked_at"] {
        assert!(small[key].as_u64().unwrap() <= 1, "{key} in {small}");
    }
    assert_eq!(small["found"].as_u64(), Some(1 - v["fn"].as_u64().unwrap()));
    assert_eq!(v["frames"], 2);
    assert_eq!(v["strategy"], "topk");
    // The ignored traffic light is neither found nor missed: only the stop sign can be a FN.
    assert!(v["fn"].as_u64().unwrap() <= 1);
    for key in [
        "precision",
        "recall",
        "f1",
        "pixel_fraction",
        "early_exit_rate",
    ] {
        let x = v[key].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&x), "{key} = {x}");
    }
    assert!(v["mflops_per_frame"].as_f64().unwrap() > 0.0);
    assert!(v["stages"]["total"]["p50_ms"].as_f64().unwrap() > 0.0);
    assert_eq!(v["split"], "all");
    assert!(v["strategy_config"].is_null(), "{v}");
    assert_eq!(v["strategy_settings"]["k"], 6, "the topk section: {v}");
    assert_eq!(v["score_sweep"].as_array().unwrap().len(), 24);
    // Every detection scores ≥ 0.05 (the default min_score is 0.5), so the lowest threshold repeats the
    // main numbers.
    for key in ["tp", "fp", "fn"] {
        assert_eq!(v["score_sweep"][0][key], v[key], "{key}");
    }
    let best = v["best_f1"]["f1"].as_f64().unwrap();
    assert!(best >= v["f1"].as_f64().unwrap(), "{v}");
}

#[test]
fn eval_applies_the_strategy_config_file_and_keeps_only_the_split() {
    let dir = tempfile::tempdir().unwrap();
    let models = write_random_models(dir.path());
    let images = dir.path().join("frames");
    std::fs::create_dir_all(&images).unwrap();
    for name in ["00005.png", "00006.png", "00011.png", "00600.png", "a.png"] {
        image::RgbImage::from_pixel(64, 48, image::Rgb([90, 120, 90]))
            .save(images.join(name))
            .unwrap();
    }
    let annotations = dir.path().join("ann.csv");
    std::fs::write(
        &annotations,
        format!("{HEADER}00600.png,64,48,stop,14,0,0,9,9\n"),
    )
    .unwrap();
    let settings = dir.path().join("mine.toml");
    std::fs::write(&settings, "[topk]\nk = 2\nmin_score = 0.05\n").unwrap();
    let json = dir.path().join("eval.json");
    let args = EvalArgs {
        images,
        annotations,
        json: Some(json.display().to_string()),
        ignore_classes: Vec::new(),
        split: EvalSplit::Validation,
        strategy_config: Some(settings.clone()),
        sweep: true,
        rescale: None,
        limit: None,
        misses: None,
        strategy: StrategyArgs {
            strategy: saccade_runtime::focus::StrategyKind::TopK,
            max_patches: 8,
            deadline_ms: None,
        },
        models,
    };
    eval(args.clone()).unwrap();
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(v["split"], "validation");
    assert_eq!(v["frames"], 2, "00005 and 00011: {v}");
    assert_eq!(v["strategy_config"], settings.display().to_string());
    assert_eq!(v["strategy_settings"]["k"], 2);
    assert_eq!(v["strategy_settings"]["min_score"], 0.05);
    std::fs::write(&settings, "[topk]\nkk = 2\n").unwrap();
    let err = format!("{:#}", eval(args).unwrap_err());
    assert!(
        err.contains("mine.toml") && err.contains("`topk.kk`"),
        "{err}"
    );
}

fn frames_with_names(dir: &Path, names: &[&str]) -> Vec<EvalItem> {
    for name in names {
        image::RgbImage::new(8, 6).save(dir.join(name)).unwrap();
    }
    items_from_folder(dir, &[]).unwrap()
}

#[test]
fn split_keeps_the_gtsdb_frames_of_that_split_only() {
    let dir = tempfile::tempdir().unwrap();
    let items = frames_with_names(dir.path(), &["00005.png", "00006.png", "00600.png"]);
    let kept = |split| -> Vec<String> {
        select_split(items.clone(), split, dir.path())
            .unwrap()
            .into_iter()
            .map(|i| i.name)
            .collect()
    };
    assert_eq!(kept(EvalSplit::Validation), ["00005.png"]);
    assert_eq!(kept(EvalSplit::Test), ["00600.png"]);
    assert_eq!(kept(EvalSplit::Train), ["00006.png"]);
    assert_eq!(kept(EvalSplit::All).len(), 3);
}

#[test]
fn split_skips_frames_whose_stem_is_not_a_number_unless_all() {
    let dir = tempfile::tempdir().unwrap();
    let items = frames_with_names(dir.path(), &["frame.png", "00005b.png", "00599.jpg"]);
    let names = |split| -> Vec<String> {
        select_split(items.clone(), split, dir.path())
            .map(|kept| kept.into_iter().map(|i| i.name).collect())
            .unwrap_or_default()
    };
    assert_eq!(names(EvalSplit::Validation), ["00599.jpg"]);
    assert_eq!(names(EvalSplit::All).len(), 3);
    let err = select_split(items.clone(), EvalSplit::Test, dir.path())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("none of the 3 frames") && err.contains("test split"),
        "{err}"
    );
}

fn truth_at(x: f32) -> TruthEntry {
    TruthEntry {
        bbox: BoxPx::new(x, 10.0, x + 40.0, 50.0),
        class_name: "stop".to_string(),
        class_id: Some(14),
    }
}

fn detection_at(x: f32, score: f32) -> DetectionEntry {
    DetectionEntry {
        bbox: BoxPx::new(x, 10.0, x + 40.0, 50.0),
        score,
        class_id: 14,
        class_name: "stop".to_string(),
    }
}

#[test]
fn misses_csv_tells_glance_misses_from_focus_misses_and_lists_false_positives() {
    // Frame a: sign at 100 found; sign at 300 inside an examined patch but not found; sign at 600 never
    // looked at. Frame b: no sign, one false positive.
    let frames = [
        ScoredFrame {
            truth: vec![truth_at(100.0), truth_at(300.0), truth_at(600.0)],
            detections: vec![detection_at(100.0, 0.9), detection_at(320.0, 0.4)],
        },
        ScoredFrame {
            truth: Vec::new(),
            detections: vec![detection_at(50.0, 0.7)],
        },
    ];
    let examined = vec![
        vec![
            BoxPx::new(80.0, 0.0, 160.0, 80.0),
            BoxPx::new(280.0, 0.0, 360.0, 80.0),
        ],
        Vec::new(),
    ];
    let csv = misses_csv(&["a.jpg", "b.jpg"], &frames, &examined, &HashSet::new());
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], MISSES_HEADER);
    // The detection at 320 overlaps the sign at 300 with IoU 20·40 / (2·1600 − 800) = 1/3: a miss that
    // was looked at, and a false positive.
    assert_eq!(
        &lines[1..],
        [
            "a.jpg,focus-miss,stop,300,10,340,50,40,true,0.333,stop,0.400",
            "a.jpg,glance-miss,stop,600,10,640,50,40,false,,,",
            "a.jpg,fp,stop,320,10,360,50,40,,0.333,stop,0.400",
            "b.jpg,fp,stop,50,10,90,50,40,,,,0.700",
        ]
    );
    let ignored: HashSet<String> = ["stop".to_string()].into();
    let csv = misses_csv(&["a.jpg", "b.jpg"], &frames, &examined, &ignored);
    assert!(!csv.contains("miss"), "{csv}");
}

#[test]
fn score_sweep_drops_detections_below_each_threshold() {
    // Frame 1: one sign found at score 0.9. Frame 2: no sign, a false positive at score 0.3.
    let frames = [
        ScoredFrame {
            truth: vec![truth_at(100.0)],
            detections: vec![detection_at(100.0, 0.9)],
        },
        ScoredFrame {
            truth: Vec::new(),
            detections: vec![detection_at(300.0, 0.3)],
        },
    ];
    let sweep = score_sweep(&frames, &HashSet::new());
    assert_eq!(sweep.len(), 24);
    let at = |t: f64| {
        sweep
            .iter()
            .find(|p| (p.threshold - t).abs() < 1e-9)
            .unwrap()
    };
    assert_eq!(at(0.5).precision, 1.0);
    assert_eq!((at(0.5).tp, at(0.5).fp, at(0.5).fn_), (1, 0, 0));
    assert_eq!(at(0.25).precision, 0.5);
    assert_eq!((at(0.25).tp, at(0.25).fp, at(0.25).fn_), (1, 1, 0));
    // A detection scoring exactly the threshold counts.
    assert_eq!(at(0.3).fp, 1);
    assert_eq!(at(0.35).fp, 0);
    // Above the true positive's score nothing is found.
    assert_eq!((at(0.95).tp, at(0.95).fn_), (0, 1));
    assert_eq!(at(0.95).recall, 0.0);
    let mut tally = Tally::default();
    for f in &frames {
        tally.add(&tally_frame(&f.truth, &f.detections, &[], &HashSet::new()));
    }
    let ci95 = bootstrap_intervals(&[tally.overall], 1);
    let report = build_report(
        "topk",
        &PipelineMetrics::default(),
        &tally,
        sweep,
        ci95,
        0.0,
        0.0,
    );
    // The main numbers are the unfiltered ones; the best F1 is the highest threshold reaching F1 1.
    assert_eq!(report.precision, 0.5);
    assert_eq!(
        report.best_f1,
        BestF1 {
            threshold: 0.9,
            precision: 1.0,
            recall: 1.0,
            f1: 1.0
        }
    );
    let table = report.sweep_table();
    assert_eq!(table.lines().count(), 25, "{table}");
    assert!(
        table.contains("0.90  1.000  1.000  1.000     1     0     0  ← best F1"),
        "{table}"
    );
    let v = serde_json::to_value(&report).unwrap();
    assert_eq!(v["score_sweep"][9]["threshold"], 0.5);
    assert_eq!(v["score_sweep"][9]["fn"], 0);
    assert_eq!(v["best_f1"]["threshold"], 0.9);
}

#[test]
fn score_sweep_uses_the_ignore_set_of_the_main_numbers() {
    let mut light = truth_at(100.0);
    light.class_name = "trafficlight".to_string();
    let frames = [ScoredFrame {
        truth: vec![light],
        detections: vec![detection_at(100.0, 0.9)],
    }];
    let ignored: HashSet<String> = ["trafficlight".to_string()].into();
    let sweep = score_sweep(&frames, &ignored);
    assert!(sweep.iter().all(|p| (p.tp, p.fp, p.fn_) == (0, 0, 0)));
    let sweep = score_sweep(&frames, &HashSet::new());
    assert_eq!((sweep[0].tp, sweep[0].fp), (1, 0));
}

#[test]
fn eval_classifier_reports_accuracy_in_unit_interval() {
    let dir = tempfile::tempdir().unwrap();
    write_random_models(dir.path());
    let mut images = vec![0u8; 3072 * 5];
    for (i, b) in images.iter_mut().enumerate() {
        *b = (i * 7 % 251) as u8;
    }
    std::fs::write(dir.path().join("test_images.u8"), images).unwrap();
    std::fs::write(dir.path().join("test_labels.u8"), [0u8, 1, 2, 14, 42]).unwrap();
    let json = dir.path().join("cls.json");
    eval_classifier(EvalClassifierArgs {
        data: dir.path().to_path_buf(),
        weights: Some(dir.path().join("patchnet.safetensors")),
        batch: 2,
        limit: None,
        json: Some(json.display().to_string()),
    })
    .unwrap();
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap();
    assert_eq!(v["images"], 5);
    let acc = v["accuracy"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&acc));
    assert_eq!(v["per_class_accuracy"].as_object().unwrap().len(), 5);
    assert!(v["ms_per_patch"].as_f64().unwrap() > 0.0);
}

#[test]
fn top_confusions_count_errors_most_frequent_first() {
    let labels = [27u8, 27, 27, 27, 21, 21, 1, 1];
    let predicted = [27usize, 43, 43, 11, 11, 21, 1, 2];
    let top = top_confusions(&labels, &predicted, 3);
    let pairs: Vec<(&str, &str, usize)> = top
        .iter()
        .map(|c| (&c.true_class[..2], &c.predicted[..2], c.count))
        .collect();
    // 27 → 43 twice first; then the single errors by class ids: 1 → 2, 21 → 11 (27 → 11 cut off).
    assert_eq!(pairs, [("27", "43", 2), ("01", "02", 1), ("21", "11", 1)]);
    assert!(top[0].predicted.ends_with("background"), "{:?}", top[0]);
    assert!(top_confusions(&labels, &labels.map(usize::from), 3).is_empty());
}

#[test]
fn classifier_accuracy_agrees_with_the_trainers_gtsrb_accuracy() {
    let dir = tempfile::tempdir().unwrap();
    write_random_models(dir.path());
    let model = PatchNet::load(&dir.path().join("patchnet.safetensors"), &Device::Cpu).unwrap();
    let n = 40;
    let images: Vec<u8> = (0..n * 3072).map(|i| (i * 13 % 256) as u8).collect();
    let labels: Vec<u8> = (0..n).map(|i| (i % 43) as u8).collect();
    let set = GtsrbTest::from_bytes(images.clone(), labels.clone()).unwrap();
    let (predicted, _, _) = evaluate_classifier(&model, &set, 7, &Device::Cpu).unwrap();
    let report = classifier_report(&model, Path::new("w"), &set, &predicted, 7, 0.0, 0.0);
    let (accuracy, _) =
        crate::train::gtsrb_accuracy(&model, &images, &labels, &Device::Cpu).unwrap();
    assert_eq!(
        report.correct,
        (accuracy * n as f64).round() as usize,
        "{} vs {accuracy}",
        report.accuracy
    );
    assert!(
        (report.accuracy - accuracy).abs() < 1e-5,
        "{} vs {accuracy}",
        report.accuracy
    );
}
