//! The `--misses` CSV: every missed sign and false detection, with the nearest box of the other kind.

use std::collections::HashSet;

use saccade_runtime::frame::BoxPx;

use super::stats::*;

/// Header of [`misses_csv`].
pub const MISSES_HEADER: &str =
    "frame,kind,class,xmin,ymin,xmax,ymax,side_px,looked_at,nearest_iou,nearest_class,nearest_score";

/// One CSV row per missed sign (`kind` = `glance-miss` when no examined patch held its centre, else
/// `focus-miss`) and per false positive (`kind` = `fp`, `looked_at` empty), each with the detection (for a
/// miss) or truth box (for a false positive) it overlaps most, if any. Ignored classes are left out, as in the tally.
pub fn misses_csv(
    names: &[&str],
    frames: &[ScoredFrame],
    examined: &[Vec<BoxPx>],
    ignored: &HashSet<String>,
) -> String {
    use crate::matching::{
        found_flags, is_looked_at, match_detections, Verdict, IOU_MATCH_THRESHOLD,
    };
    use std::fmt::Write as _;
    let mut out = format!("{MISSES_HEADER}\n");
    let csv_text = |t: &str| {
        if t.contains([',', '"', '\n']) {
            format!("\"{}\"", t.replace('"', "\"\""))
        } else {
            t.to_string()
        }
    };
    for ((name, frame), patches) in names.iter().zip(frames).zip(examined) {
        let verdicts = match_detections(
            &frame.truth,
            &frame.detections,
            ignored,
            IOU_MATCH_THRESHOLD,
        );
        let found = found_flags(&verdicts, frame.truth.len());
        for (t, entry) in frame.truth.iter().enumerate() {
            if found[t] || ignored.contains(&entry.class_name) {
                continue;
            }
            let looked = is_looked_at(&entry.bbox, patches);
            let nearest = nearest_by_iou(&entry.bbox, &frame.detections, |d| &d.bbox);
            let kind = if looked { "focus-miss" } else { "glance-miss" };
            write_box_columns(
                &mut out,
                name,
                kind,
                &csv_text(&entry.class_name),
                &entry.bbox,
            );
            match nearest {
                Some((iou, d)) => {
                    let _ = writeln!(
                        out,
                        "{looked},{iou:.3},{},{:.3}",
                        csv_text(&d.class_name),
                        d.score
                    );
                }
                None => {
                    let _ = writeln!(out, "{looked},,,");
                }
            }
        }
        for (d, v) in frame.detections.iter().zip(&verdicts) {
            if *v != Verdict::FalsePositive {
                continue;
            }
            let nearest = nearest_by_iou(&d.bbox, &frame.truth, |t| &t.bbox);
            write_box_columns(&mut out, name, "fp", &csv_text(&d.class_name), &d.bbox);
            match nearest {
                Some((iou, t)) => {
                    let _ = writeln!(out, ",{iou:.3},{},{:.3}", csv_text(&t.class_name), d.score);
                }
                None => {
                    let _ = writeln!(out, ",,,{:.3}", d.score);
                }
            }
        }
    }
    out
}

/// The item of `items` whose box overlaps `bbox` most (IoU > 0), with that IoU.
pub(crate) fn nearest_by_iou<'a, T>(
    bbox: &BoxPx,
    items: &'a [T],
    box_of: impl Fn(&T) -> &BoxPx,
) -> Option<(f32, &'a T)> {
    items
        .iter()
        .map(|item| (bbox.iou(box_of(item)), item))
        .filter(|(iou, _)| *iou > 0.0)
        .max_by(|a, b| a.0.total_cmp(&b.0))
}

/// `frame,kind,class,xmin,ymin,xmax,ymax,side_px,` of a [`misses_csv`] row.
pub(crate) fn write_box_columns(out: &mut String, frame: &str, kind: &str, class: &str, b: &BoxPx) {
    use std::fmt::Write as _;
    let _ = write!(
        out,
        "{frame},{kind},{class},{:.0},{:.0},{:.0},{:.0},{:.0},",
        b.xmin,
        b.ymin,
        b.xmax,
        b.ymax,
        b.width().max(b.height()),
    );
}
