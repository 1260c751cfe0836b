//! The names of the focus strategies as a type: what `--strategy`, `strategy = "…"` in a config and the
//! events spell, parsed once.

use std::fmt;
use std::str::FromStr;

/// One of the focus strategies `strategy_by_name` builds.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(try_from = "String", into = "&'static str")]
pub enum StrategyKind {
    TopK,
    GfNet,
    Zoom,
    Coarse2Fine,
    FullRes,
    Downsample,
    GlanceOnly,
}

/// A name that is not one of [`StrategyKind::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown focus strategy `{0}`, expected one of: topk, gfnet, zoom, coarse2fine, fullres, downsample, glance-only")]
pub struct ParseStrategyKindError(pub String);

impl StrategyKind {
    /// Every strategy, in the order benchmarks list them (that of `STRATEGY_NAMES`).
    pub const ALL: [StrategyKind; 7] = [
        Self::TopK,
        Self::GfNet,
        Self::Zoom,
        Self::Coarse2Fine,
        Self::FullRes,
        Self::Downsample,
        Self::GlanceOnly,
    ];

    /// The name used by `--strategy`, configs and events.
    pub fn name(self) -> &'static str {
        match self {
            Self::TopK => "topk",
            Self::GfNet => "gfnet",
            Self::Zoom => "zoom",
            Self::Coarse2Fine => "coarse2fine",
            Self::FullRes => "fullres",
            Self::Downsample => "downsample",
            Self::GlanceOnly => "glance-only",
        }
    }

    /// Windows the strategy classifies at once: the sliding-window baselines batch 256 regardless of the
    /// patch limit; the others at most `max_patches`.
    pub fn batch_patches(self, max_patches: usize) -> usize {
        match self {
            Self::FullRes | Self::Downsample => 256.max(max_patches),
            _ => max_patches,
        }
    }
}

impl fmt::Display for StrategyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for StrategyKind {
    type Err = ParseStrategyKindError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| ParseStrategyKindError(s.to_string()))
    }
}

impl TryFrom<String> for StrategyKind {
    type Error = ParseStrategyKindError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<StrategyKind> for &'static str {
    fn from(kind: StrategyKind) -> Self {
        kind.name()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_round_trips_through_its_name_in_the_order_of_strategy_names() {
        let names: Vec<&str> = StrategyKind::ALL.iter().map(|k| k.name()).collect();
        assert_eq!(
            names,
            [
                "topk",
                "gfnet",
                "zoom",
                "coarse2fine",
                "fullres",
                "downsample",
                "glance-only"
            ]
        );
        for kind in StrategyKind::ALL {
            assert_eq!(kind.to_string().parse::<StrategyKind>().unwrap(), kind);
            let json = serde_json::to_string(&kind).unwrap();
            assert_eq!(json, format!("\"{kind}\""));
            assert_eq!(serde_json::from_str::<StrategyKind>(&json).unwrap(), kind);
        }
        let err = "stare".parse::<StrategyKind>().unwrap_err().to_string();
        assert!(
            err.contains("stare") && err.contains("glance-only"),
            "{err}"
        );
    }
}
