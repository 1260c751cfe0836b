//! The annotations CSV: one row per sign (file, frame size, class, box), parsed with errors naming line and column.

use std::path::Path;

use anyhow::{bail, ensure, Context};
use saccade_models::NUM_SIGN_CLASSES;
use saccade_runtime::frame::BoxPx;

/// One row of an annotations CSV.
#[derive(Debug, Clone, PartialEq)]
pub struct AnnotationRow {
    pub file: String,
    pub width_px: u32,
    pub height_px: u32,
    pub class: String,
    pub gtsrb_class_id: Option<usize>,
    /// Box in frame pixels, exclusive right/bottom edge (the CSV's inclusive corners + 1).
    pub bbox: BoxPx,
}

pub(crate) const CSV_COLUMNS: [&str; 9] = [
    "file",
    "width",
    "height",
    "class",
    "gtsrb_class_id",
    "xmin",
    "ymin",
    "xmax",
    "ymax",
];

/// Parses an annotations CSV (columns by header name, any order, extra columns ignored). Errors name the file,
/// the 1-based line, the column and the value.
pub fn parse_annotations(text: &str, path: &Path) -> anyhow::Result<Vec<AnnotationRow>> {
    let shown = path.display();
    let mut lines = text.lines().enumerate();
    let Some((_, header)) = lines.next() else {
        bail!(
            "{shown}: empty file, expected a header `{}`",
            CSV_COLUMNS.join(",")
        );
    };
    let names: Vec<&str> = header.split(',').map(str::trim).collect();
    let mut index = [0usize; 9];
    for (slot, column) in index.iter_mut().zip(CSV_COLUMNS) {
        *slot = names.iter().position(|n| *n == column).with_context(|| {
            format!(
                "{shown} line 1: no column `{column}` in header `{header}`, expected `{}`",
                CSV_COLUMNS.join(",")
            )
        })?;
    }
    let mut rows = Vec::new();
    for (i, line) in lines {
        let line_no = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        ensure!(
            fields.len() == names.len(),
            "{shown} line {line_no}: {} fields, expected {} like the header",
            fields.len(),
            names.len()
        );
        let field = |k: usize| fields[index[k]];
        let bad = |k: usize, expected: &str| {
            anyhow::anyhow!(
                "{shown} line {line_no}, column `{}`: `{}` is not {expected}",
                CSV_COLUMNS[k],
                field(k)
            )
        };
        let size = |k: usize| -> anyhow::Result<u32> {
            field(k)
                .parse::<u32>()
                .ok()
                .filter(|v| *v > 0)
                .ok_or_else(|| bad(k, "a positive integer"))
        };
        let coord = |k: usize| -> anyhow::Result<f32> {
            field(k)
                .parse::<f32>()
                .ok()
                .filter(|v| v.is_finite())
                .ok_or_else(|| bad(k, "a number"))
        };
        let file = field(0).to_string();
        ensure!(
            !file.is_empty(),
            "{shown} line {line_no}, column `file`: empty"
        );
        let (width_px, height_px) = (size(1)?, size(2)?);
        let gtsrb_class_id = match field(4) {
            "" => None,
            s => Some(
                s.parse::<usize>()
                    .ok()
                    .filter(|id| *id < NUM_SIGN_CLASSES)
                    .ok_or_else(|| bad(4, "empty or a GTSRB class id 0–42"))?,
            ),
        };
        let (xmin, ymin, xmax, ymax) = (coord(5)?, coord(6)?, coord(7)?, coord(8)?);
        ensure!(
            xmin <= xmax && ymin <= ymax,
            "{shown} line {line_no}: box ({xmin}, {ymin})–({xmax}, {ymax}) has its max corner before its min corner"
        );
        rows.push(AnnotationRow {
            file,
            width_px,
            height_px,
            class: field(3).to_string(),
            gtsrb_class_id,
            bbox: BoxPx::new(xmin, ymin, xmax + 1.0, ymax + 1.0),
        });
    }
    Ok(rows)
}
