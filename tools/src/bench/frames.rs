//! The bench's frames: the shipped real frames, any annotated folder, or synthetic scenes.

use std::path::{Path, PathBuf};

use anyhow::Context;
use saccade_runtime::synth::{SceneConfig, SceneGenerator};

use super::{DEFAULT_SYNTHETIC_FRAMES, FIRST_SEED};
use crate::cmd::bench::BenchArgs;
use crate::eval::{
    items_from_folder, parse_annotations, select_split, truth_from_boxes, EvalItem, EvalSplit,
    FrameData,
};

/// The real frames shipped for the bench (`benches/gtsdb-test/` of the checkout).
pub fn default_frames_dir() -> PathBuf {
    let tools = Path::new(env!("CARGO_MANIFEST_DIR"));
    tools
        .parent()
        .unwrap_or(tools)
        .join("benches")
        .join("gtsdb-test")
}

/// `path` relative to the working directory when it lies below it (so reports name no machine's folders).
pub(crate) fn shown(path: &Path) -> String {
    std::env::current_dir()
        .ok()
        .and_then(|cwd| path.strip_prefix(cwd).ok().map(Path::to_path_buf))
        .unwrap_or_else(|| path.to_path_buf())
        .display()
        .to_string()
}

/// The benchmark's synthetic frames: `count` held-out scenes from fixed seeds.
pub fn synthetic_items(count: usize) -> anyhow::Result<Vec<EvalItem>> {
    let generator = SceneGenerator::new(SceneConfig::default())
        .context("building the synthetic scene generator")?;
    Ok((0..count as u64)
        .map(|i| {
            let seed = FIRST_SEED + i;
            let scene = generator.generate(seed);
            EvalItem {
                name: format!("synthetic-eval-{seed}"),
                expected_size_px: None,
                truth: truth_from_boxes(&scene.truth),
                source: FrameData::Rgb {
                    width: scene.width,
                    height: scene.height,
                    rgb: scene.rgb,
                },
            }
        })
        .collect())
}

/// The frames of the run and a line saying where they come from.
pub(crate) fn bench_items(args: &BenchArgs) -> anyhow::Result<(String, Vec<EvalItem>)> {
    if args.synthetic {
        let n = args.frames.unwrap_or(DEFAULT_SYNTHETIC_FRAMES);
        let source = format!(
            "synthetic 1280×960 eval scenes, seeds {FIRST_SEED}..{}",
            FIRST_SEED + n as u64
        );
        return Ok((source, synthetic_items(n)?));
    }
    let (images, annotations, shipped) = match (&args.images, &args.annotations) {
        (Some(i), Some(a)) => (i.clone(), a.clone(), false),
        _ => {
            let dir = default_frames_dir();
            (dir.clone(), dir.join("annotations.csv"), true)
        }
    };
    let text = std::fs::read_to_string(&annotations).with_context(|| {
        if shipped {
            format!(
                "reading the bench's real frames' annotations {} (pass --images DIR --annotations CSV, or --synthetic)",
                annotations.display()
            )
        } else {
            format!("reading annotations {}", annotations.display())
        }
    })?;
    let rows = parse_annotations(&text, &annotations)?;
    let mut items = select_split(items_from_folder(&images, &rows)?, args.split, &images)?;
    if let Some(n) = args.frames {
        items.truncate(n);
    }
    let what = if shipped {
        "real GTSDB test frames shipped with saccade"
    } else {
        "annotated frames"
    };
    let split = match args.split {
        EvalSplit::All => String::new(),
        s => format!(", {} split", s.name()),
    };
    Ok((
        format!(
            "{} ({what}{split}; annotations {})",
            shown(&images),
            shown(&annotations)
        ),
        items,
    ))
}
