//! Hard examples for the patch net, mined the way a detector is bootstrapped: the shipped detector (glance,
//! patch net and fitted `topk` settings) runs over the GTSDB *training* frames with a low score threshold.
//! Every region it examined or reported that holds no sign becomes a background sample (hard negatives: the
//! red boards, tail lights and other-country signs that the glance points at and the patch net half
//! believes). Every examined patch that holds a sign's centre becomes a sample of that sign (hard positives:
//! the framings the glance really produces — off-centre, too wide, the sign cut by the patch's edge — with
//! the sign's true box as the box head's target, so the second look learns to recentre on it).

use std::path::Path;

use anyhow::Context;
use saccade_runtime::focus::StrategyConfigs;
use saccade_runtime::frame::{BoxPx, Frame};
use saccade_runtime::metrics::PipelineMetrics;

use super::gtsdb::GtsdbFrame;
use crate::engine::{self, ModelArgs, StrategyArgs};

/// A square of `context` × the larger side of `b`, around its centre.
pub fn square_around(b: &BoxPx, context: f32) -> BoxPx {
    let (cx, cy) = b.centre();
    BoxPx::centred_square(cx, cy, b.width().max(b.height()).max(1.0) * context)
}

/// What [`mine`] found.
#[derive(Debug, Default)]
pub struct Mined {
    /// `(frame index, region)` of every examined patch and every detection (framed as the second look frames
    /// a sign, 1.3 × its side) that holds no sign.
    pub negatives: Vec<(usize, BoxPx)>,
    /// `(frame index, region, sign index)` of every examined patch whose region holds a sign's centre (the
    /// sign whose centre is nearest the patch's).
    pub positives: Vec<(usize, BoxPx, usize)>,
}

/// The sign of `frame` whose centre lies inside `region` (half-open) nearest the region's centre.
pub fn sign_centred_in(frame: &GtsdbFrame, region: &BoxPx) -> Option<usize> {
    let (rx, ry) = region.centre();
    frame
        .signs
        .iter()
        .enumerate()
        .filter_map(|(k, s)| {
            let (cx, cy) = s.bbox.centre();
            let inside =
                region.xmin <= cx && cx < region.xmax && region.ymin <= cy && cy < region.ymax;
            inside.then(|| (k, (cx - rx).powi(2) + (cy - ry).powi(2)))
        })
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(k, _)| k)
}

/// Runs `topk` of the detector in `weights_dir` (its fitted settings, `min_score` 0.05) over `frames` and
/// returns its hard negatives and hard positives ([`Mined`]).
pub fn mine(frames: &[GtsdbFrame], weights_dir: &Path) -> anyhow::Result<Mined> {
    let models = engine::load_models(&ModelArgs {
        weights_dir: Some(weights_dir.to_path_buf()),
        glance_weights: None,
        classifier_weights: None,
        dtype: saccade_models::QuantDtype::Q8_0,
    })
    .with_context(|| format!("loading the mining detector from {}", weights_dir.display()))?;
    let mut configs = crate::settings::effective_configs(&StrategyConfigs::default(), weights_dir)?;
    configs.topk.detect.min_score = 0.05;
    let strategy = StrategyArgs {
        strategy: saccade_runtime::focus::StrategyKind::TopK,
        max_patches: 16,
        deadline_ms: None,
    };
    let mut processor = engine::build_processor_exact(&models, &strategy, &configs)?;
    let metrics = PipelineMetrics::default();
    let mut out = Mined::default();
    for (i, f) in frames.iter().enumerate() {
        let frame = Frame::from_rgb(
            i as u64,
            f.width_px as u32,
            f.height_px as u32,
            f.rgb.clone(),
        )
        .with_context(|| format!("GTSDB frame {}", f.file))?;
        let done = processor
            .process(frame, &metrics)
            .map_err(|e| anyhow::anyhow!("mining on {}: {e}", f.file))?;
        for p in &done.outcome.patches {
            if p.bbox.area() <= 0.0 {
                continue;
            }
            if let Some(k) = sign_centred_in(f, &p.bbox) {
                out.positives.push((i, p.bbox, k));
            }
        }
        let regions = done.outcome.patches.iter().map(|p| p.bbox).chain(
            done.outcome
                .detections
                .iter()
                .map(|d| square_around(&d.bbox, 1.3)),
        );
        for region in regions {
            if region.area() > 0.0 && f.holds_no_sign(&region) {
                out.negatives.push((i, region));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::train::gtsdb::SignBox;

    #[test]
    fn a_region_on_a_sign_is_not_a_negative_and_one_beside_it_is() {
        let frame = GtsdbFrame {
            file: "f.jpg".into(),
            width_px: 100,
            height_px: 100,
            rgb: vec![0; 100 * 100 * 3],
            signs: vec![SignBox {
                bbox: BoxPx::new(40.0, 40.0, 60.0, 60.0),
                class_id: 14,
            }],
        };
        assert!(!frame.holds_no_sign(&BoxPx::new(35.0, 35.0, 65.0, 65.0)));
        // Covering a quarter of the sign is still "on" it.
        assert!(!frame.holds_no_sign(&BoxPx::new(50.0, 50.0, 80.0, 80.0)));
        assert!(frame.holds_no_sign(&BoxPx::new(58.0, 0.0, 90.0, 30.0)));
        // Centre (50, 50): inside a patch reaching past it, not inside one ending on it (half-open).
        assert_eq!(
            sign_centred_in(&frame, &BoxPx::new(45.0, 45.0, 90.0, 90.0)),
            Some(0)
        );
        assert_eq!(
            sign_centred_in(&frame, &BoxPx::new(0.0, 0.0, 50.0, 50.0)),
            None
        );
        let sq = square_around(&BoxPx::new(0.0, 0.0, 10.0, 20.0), 1.5);
        assert_eq!(sq.to_array(), [-10.0, -5.0, 20.0, 25.0]);
    }
}
