//! The annotations CSV: one row per sign (file, frame size, class, box), parsed with errors naming line and column.

use std::path::{Path, PathBuf};

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

/// What is wrong with an annotations CSV: every variant names the file, and the line, column and value
/// where there is one.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AnnotationError {
    #[error("{}: empty file, expected a header `{}`", path.display(), CSV_COLUMNS.join(","))]
    EmptyFile { path: PathBuf },
    #[error(
        "{} line 1: no column `{column}` in header `{header}`, expected `{}`",
        path.display(),
        CSV_COLUMNS.join(",")
    )]
    MissingColumn {
        path: PathBuf,
        column: &'static str,
        header: String,
    },
    #[error("{} line {line}: {found} fields, expected {expected} like the header", path.display())]
    FieldCount {
        path: PathBuf,
        line: usize,
        found: usize,
        expected: usize,
    },
    #[error("{} line {line}, column `{column}`: `{value}` is not {expected}", path.display())]
    BadValue {
        path: PathBuf,
        line: usize,
        column: &'static str,
        value: String,
        expected: &'static str,
    },
    #[error("{} line {line}, column `file`: empty", path.display())]
    EmptyFileName { path: PathBuf, line: usize },
    #[error(
        "{} line {line}: box ({xmin}, {ymin})–({xmax}, {ymax}) has its max corner before its min corner",
        path.display()
    )]
    InvertedBox {
        path: PathBuf,
        line: usize,
        xmin: f32,
        ymin: f32,
        xmax: f32,
        ymax: f32,
    },
}

/// Parses an annotations CSV (columns by header name, any order, extra columns ignored). Errors name the file,
/// the 1-based line, the column and the value.
pub fn parse_annotations(text: &str, path: &Path) -> Result<Vec<AnnotationRow>, AnnotationError> {
    let path_buf = || path.to_path_buf();
    let mut lines = text.lines().enumerate();
    let Some((_, header)) = lines.next() else {
        return Err(AnnotationError::EmptyFile { path: path_buf() });
    };
    let names: Vec<&str> = header.split(',').map(str::trim).collect();
    let mut index = [0usize; 9];
    for (slot, column) in index.iter_mut().zip(CSV_COLUMNS) {
        *slot = names.iter().position(|n| *n == column).ok_or_else(|| {
            AnnotationError::MissingColumn {
                path: path_buf(),
                column,
                header: header.to_string(),
            }
        })?;
    }
    let mut rows = Vec::new();
    for (i, line) in lines {
        let line_no = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        if fields.len() != names.len() {
            return Err(AnnotationError::FieldCount {
                path: path_buf(),
                line: line_no,
                found: fields.len(),
                expected: names.len(),
            });
        }
        let field = |k: usize| fields[index[k]];
        let bad = |k: usize, expected: &'static str| AnnotationError::BadValue {
            path: path_buf(),
            line: line_no,
            column: CSV_COLUMNS[k],
            value: field(k).to_string(),
            expected,
        };
        let size = |k: usize| -> Result<u32, AnnotationError> {
            field(k)
                .parse::<u32>()
                .ok()
                .filter(|v| *v > 0)
                .ok_or_else(|| bad(k, "a positive integer"))
        };
        let coord = |k: usize| -> Result<f32, AnnotationError> {
            field(k)
                .parse::<f32>()
                .ok()
                .filter(|v| v.is_finite())
                .ok_or_else(|| bad(k, "a number"))
        };
        let file = field(0).to_string();
        if file.is_empty() {
            return Err(AnnotationError::EmptyFileName {
                path: path_buf(),
                line: line_no,
            });
        }
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
        if xmin > xmax || ymin > ymax {
            return Err(AnnotationError::InvertedBox {
                path: path_buf(),
                line: line_no,
                xmin,
                ymin,
                xmax,
                ymax,
            });
        }
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
