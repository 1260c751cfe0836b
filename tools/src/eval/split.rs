//! Which frames of an annotated folder an evaluation keeps: all, or one part of the GTSDB split.

use std::path::Path;

use anyhow::ensure;

use super::items::*;
use crate::train::gtsdb::{split_of, GtsdbSplit};

/// Which frames of a folder `saccade eval` keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EvalSplit {
    /// Every frame of the folder, whatever its name.
    All,
    /// GTSDB training frames the nets learn from.
    Train,
    /// GTSDB training frames held out for fitting thresholds and choosing models.
    Validation,
    /// GTSDB test frames: for measuring only.
    Test,
}

impl EvalSplit {
    pub fn name(self) -> &'static str {
        match self {
            EvalSplit::All => "all",
            EvalSplit::Train => "train",
            EvalSplit::Validation => "validation",
            EvalSplit::Test => "test",
        }
    }

    /// Whether the frame file `name` belongs to this split: with `All` every frame; otherwise frames whose
    /// stem is a GTSDB frame number of the split (`00417.jpg` → 417).
    pub fn keeps(self, name: &str) -> bool {
        let wanted = match self {
            EvalSplit::All => return true,
            EvalSplit::Train => GtsdbSplit::Train,
            EvalSplit::Validation => GtsdbSplit::Validation,
            EvalSplit::Test => GtsdbSplit::Test,
        };
        Path::new(name)
            .file_stem()
            .and_then(|stem| stem.to_str())
            .and_then(|stem| stem.parse::<u32>().ok())
            .is_some_and(|n| split_of(n) == wanted)
    }
}

/// The items of `split`, in their order; none left is an error naming the folder.
pub fn select_split(
    items: Vec<EvalItem>,
    split: EvalSplit,
    images: &Path,
) -> anyhow::Result<Vec<EvalItem>> {
    let total = items.len();
    let kept: Vec<EvalItem> = items
        .into_iter()
        .filter(|item| split.keeps(&item.name))
        .collect();
    ensure!(
        !kept.is_empty(),
        "none of the {total} frames in {} is in the {} split (GTSDB frame numbers as file names, e.g. 00005.jpg)",
        images.display(),
        split.name()
    );
    Ok(kept)
}
